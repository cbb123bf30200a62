//! Error responses in each API's own envelope, as the official APIs shape
//! them (<https://docs.anthropic.com/en/api/errors>, OpenAI's error object):
//! - Anthropic: `{"type":"error","error":{"type","message"},"request_id":"req_..."}`
//!   with the same id in a `request-id` header; overloaded is 529;
//! - OpenAI: `{"error":{"message","type","param","code"}}`, `param` null
//!   unless a field is known to be at fault.
//!
//! Also the in-stream error event each API ends a broken SSE stream with
//! ([`stream_error_frame`]). Which refusal applies is the caller's decision.
use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// Which client-facing API a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Anthropic,
    Openai,
}

impl Api {
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }
}

/// Response header carrying the Anthropic request id.
pub const REQUEST_ID_HEADER: &str = "request-id";

/// Why the proxy itself refused or failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MissingKey,
    InvalidKey,
    TooLarge,
    MalformedJson,
    /// A `Content-Encoding` the proxy does not decode (gzip, br, ...).
    UnsupportedEncoding,
    BadRequest,
    /// A field the official API would refuse (see [`super::request::Invalid`]).
    InvalidRequest,
    UnknownModel,
    InsufficientCredits,
    /// The same request id is in flight.
    DuplicateRequest,
    /// An `Idempotency-Key` whose request already completed.
    AlreadyCompleted,
    /// The ledger is unavailable or overloaded.
    LedgerUnavailable,
    UpstreamUnreachable,
}

impl Refusal {
    /// The HTTP status on `api` (the ledger being unavailable is Anthropic's
    /// 529 "overloaded", OpenAI's 503).
    #[must_use]
    pub fn status(self, api: Api) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MalformedJson | Self::BadRequest | Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::UnknownModel => StatusCode::NOT_FOUND,
            Self::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Self::DuplicateRequest | Self::AlreadyCompleted => StatusCode::CONFLICT,
            Self::LedgerUnavailable => match api {
                Api::Anthropic => StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                Api::Openai => StatusCode::SERVICE_UNAVAILABLE,
            },
            Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable label for metrics.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::TooLarge => "too_large",
            Self::MalformedJson => "malformed_json",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::BadRequest => "bad_request",
            Self::InvalidRequest => "invalid_request",
            Self::UnknownModel => "unknown_model",
            Self::InsufficientCredits => "insufficient_credits",
            Self::DuplicateRequest => "duplicate_request",
            Self::AlreadyCompleted => "already_completed",
            Self::LedgerUnavailable => "ledger_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            Self::MissingKey | Self::InvalidKey => "authentication_error",
            Self::TooLarge => "request_too_large",
            // Anthropic uses invalid_request_error for 4xx statuses it has no
            // type of its own for, 409 included.
            Self::MalformedJson
            | Self::UnsupportedEncoding
            | Self::BadRequest
            | Self::InvalidRequest
            | Self::DuplicateRequest
            | Self::AlreadyCompleted => "invalid_request_error",
            Self::UnknownModel => "not_found_error",
            Self::InsufficientCredits => "billing_error",
            Self::LedgerUnavailable => "overloaded_error",
            Self::UpstreamUnreachable => "api_error",
        }
    }

    fn openai_type(self) -> (&'static str, &'static str) {
        match self {
            Self::MissingKey => ("invalid_request_error", "missing_api_key"),
            Self::InvalidKey => ("invalid_request_error", "invalid_api_key"),
            Self::TooLarge => ("invalid_request_error", "request_too_large"),
            Self::MalformedJson | Self::BadRequest => ("invalid_request_error", "invalid_request"),
            Self::UnsupportedEncoding => ("invalid_request_error", "unsupported_content_encoding"),
            Self::InvalidRequest => ("invalid_request_error", "invalid_value"),
            Self::UnknownModel => ("invalid_request_error", "model_not_found"),
            Self::InsufficientCredits => ("insufficient_quota", "insufficient_credits"),
            Self::DuplicateRequest => ("invalid_request_error", "duplicate_request_id"),
            Self::AlreadyCompleted => ("invalid_request_error", "already_completed"),
            Self::LedgerUnavailable => ("server_error", "ledger_unavailable"),
            Self::UpstreamUnreachable => ("server_error", "upstream_unreachable"),
        }
    }

    /// The error object inside the envelope (`error` of either API).
    fn error_object(self, api: Api, message: &str, param: Option<&str>) -> Value {
        match api {
            Api::Anthropic => json!({"type": self.anthropic_type(), "message": message}),
            Api::Openai => {
                let (kind, code) = self.openai_type();
                json!({"message": message, "type": kind, "param": param, "code": code})
            }
        }
    }

    /// The JSON error body for `api`. `request_id` is used on Anthropic only
    /// (OpenAI's error object has no such field); `param` on OpenAI only.
    #[must_use]
    pub fn body(self, api: Api, message: &str, param: Option<&str>, request_id: &str) -> Value {
        let error = self.error_object(api, message, param);
        match api {
            Api::Anthropic => json!({"type": "error", "error": error, "request_id": request_id}),
            Api::Openai => json!({"error": error}),
        }
    }

    /// The JSON error response for `api` with a fresh request id.
    #[must_use]
    pub fn response(self, api: Api, message: &str) -> Response {
        self.response_with(api, message, None, &new_request_id())
    }

    /// As [`Refusal::response`], naming the field at fault.
    #[must_use]
    pub fn response_with_param(self, api: Api, message: &str, param: Option<&str>) -> Response {
        self.response_with(api, message, param, &new_request_id())
    }

    /// The full response with a given request id (Anthropic: in the body and
    /// the `request-id` header, so logs and the client agree).
    #[must_use]
    pub fn response_with(self, api: Api, message: &str, param: Option<&str>, request_id: &str) -> Response {
        let mut resp = (self.status(api), Json(self.body(api, message, param, request_id))).into_response();
        if api == Api::Anthropic
            && let Ok(v) = HeaderValue::from_str(request_id)
        {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        resp
    }
}

/// A refusal of the path or method itself, before any API is known: in
/// OpenAI's error shape (the one both SDKs can read a message from).
#[must_use]
pub fn route_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    (status, Json(body)).into_response()
}

/// The 400 for a request the analysis refused, naming its field.
#[must_use]
pub fn invalid(api: Api, why: &super::request::Invalid) -> Response {
    Refusal::InvalidRequest.response_with_param(api, &why.message, why.param.as_deref())
}

/// A fresh request id in Anthropic's style (`req_` and 32 hex digits).
#[must_use]
pub fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// The SSE event that ends a stream in error, in `api`'s shape: Anthropic
/// `event: error` with `{"type":"error","error":{...}}`, OpenAI a `data:`
/// line with `{"error":{...}}`. The relay sends it when the upstream stream
/// breaks off or passes what was reserved, so an SDK raises instead of
/// taking a truncated answer for a finished one.
#[must_use]
pub fn stream_error_frame(api: Api, kind: Refusal, message: &str) -> Bytes {
    let error = kind.error_object(api, message, None);
    match api {
        Api::Anthropic => Bytes::from(format!("event: error\ndata: {}\n\n", json!({"type": "error", "error": error}))),
        Api::Openai => Bytes::from(format!("data: {}\n\n", json!({"error": error}))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::UpstreamKind;
    use crate::proxy::meter::Meter;

    const ALL: [Refusal; 13] = [
        Refusal::MissingKey,
        Refusal::InvalidKey,
        Refusal::TooLarge,
        Refusal::MalformedJson,
        Refusal::UnsupportedEncoding,
        Refusal::BadRequest,
        Refusal::InvalidRequest,
        Refusal::UnknownModel,
        Refusal::InsufficientCredits,
        Refusal::DuplicateRequest,
        Refusal::AlreadyCompleted,
        Refusal::LedgerUnavailable,
        Refusal::UpstreamUnreachable,
    ];

    #[test]
    fn statuses_and_labels() {
        let cases: &[(Refusal, u16, u16, &str)] = &[
            (Refusal::InvalidRequest, 400, 400, "invalid_request"),
            (Refusal::AlreadyCompleted, 409, 409, "already_completed"),
            (Refusal::DuplicateRequest, 409, 409, "duplicate_request"),
            (Refusal::LedgerUnavailable, 529, 503, "ledger_unavailable"),
            (Refusal::InsufficientCredits, 402, 402, "insufficient_credits"),
            (Refusal::UpstreamUnreachable, 502, 502, "upstream_unreachable"),
            (Refusal::UnsupportedEncoding, 415, 415, "unsupported_encoding"),
        ];
        // The code the docs promise (it was `idempotency_key_reused`).
        assert_eq!(Refusal::AlreadyCompleted.body(Api::Openai, "m", None, "r")["error"]["code"], "already_completed");
        for (r, anthropic, openai, label) in cases {
            assert_eq!(r.status(Api::Anthropic).as_u16(), *anthropic, "{r:?}");
            assert_eq!(r.status(Api::Openai).as_u16(), *openai, "{r:?}");
            assert_eq!(r.label(), *label);
        }
        let labels: std::collections::BTreeSet<_> = ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), ALL.len(), "labels are distinct");
    }

    #[test]
    fn bodies_have_the_official_fields() {
        for r in ALL {
            let o = r.body(Api::Openai, "m", Some("max_tokens"), "req_1");
            let e = o["error"].as_object().unwrap();
            assert_eq!(e.keys().map(String::as_str).collect::<Vec<_>>(), ["code", "message", "param", "type"], "{o}");
            assert_eq!(o["error"]["param"], "max_tokens");
            assert!(r.body(Api::Openai, "m", None, "req_1")["error"]["param"].is_null());
            let a = r.body(Api::Anthropic, "m", Some("max_tokens"), "req_1");
            assert_eq!(a["type"], "error");
            assert_eq!(a["request_id"], "req_1");
            assert_eq!(a["error"].as_object().unwrap().len(), 2, "{a}");
            assert_eq!(a["error"]["message"], "m");
        }
        assert_eq!(
            Refusal::LedgerUnavailable.body(Api::Anthropic, "m", None, "r")["error"]["type"],
            "overloaded_error"
        );
    }

    #[tokio::test]
    async fn responses_carry_the_request_id_in_header_and_body() {
        let resp = Refusal::InvalidRequest.response_with(Api::Anthropic, "bad", Some("n"), "req_abc");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[REQUEST_ID_HEADER], "req_abc");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["request_id"], "req_abc");

        let resp = Refusal::LedgerUnavailable.response(Api::Anthropic, "x");
        assert_eq!(resp.status().as_u16(), 529);
        let id = resp.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_string();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["request_id"], id.as_str());

        let why = super::super::request::Invalid { message: "n: bad".into(), param: Some("n".into()) };
        let resp = invalid(Api::Openai, &why);
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(!resp.headers().contains_key(REQUEST_ID_HEADER));
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["error"]["param"].as_str(), v["error"]["message"].as_str()), (Some("n"), Some("n: bad")));
    }

    #[test]
    fn stream_error_frames_are_errors_to_each_api() {
        let a = stream_error_frame(Api::Anthropic, Refusal::UpstreamUnreachable, "cut \"off\"");
        let text = std::str::from_utf8(&a).unwrap();
        assert!(text.starts_with("event: error\ndata: {") && text.ends_with("}\n\n"), "{text}");
        let v: Value = serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v, json!({"type": "error", "error": {"type": "api_error", "message": "cut \"off\""}}));
        // The meter sees it as an upstream error, as a client SDK would.
        let mut m = Meter::new(UpstreamKind::Anthropic);
        m.observe_frame(&a);
        assert!(m.upstream_error);

        let o = stream_error_frame(Api::Openai, Refusal::InsufficientCredits, "over the reservation");
        let text = std::str::from_utf8(&o).unwrap();
        assert!(text.starts_with("data: {") && text.ends_with("}\n\n") && !text.contains("event:"), "{text}");
        let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert!(v["error"]["param"].is_null() && v["error"]["code"] == "insufficient_credits");
        let mut m = Meter::new(UpstreamKind::Openai);
        m.observe_frame(&o);
        assert!(m.upstream_error);
    }
}
