//! Error responses in each API's own envelope: Anthropic
//! `{"type":"error","error":{"type","message"}}`, OpenAI
//! `{"error":{"message","type","code"}}`.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

/// Why the proxy itself refused or failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    MissingKey,
    InvalidKey,
    TooLarge,
    MalformedJson,
    BadRequest,
    UnknownModel,
    InsufficientCredits,
    DuplicateRequest,
    LedgerUnavailable,
    UpstreamUnreachable,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MalformedJson | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::UnknownModel => StatusCode::NOT_FOUND,
            Self::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            Self::DuplicateRequest => StatusCode::CONFLICT,
            Self::LedgerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::BadRequest => "bad_request",
            Self::UnknownModel => "unknown_model",
            Self::InsufficientCredits => "insufficient_credits",
            Self::DuplicateRequest => "duplicate_request",
            Self::LedgerUnavailable => "ledger_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            Self::MissingKey | Self::InvalidKey => "authentication_error",
            Self::TooLarge => "request_too_large",
            Self::MalformedJson | Self::BadRequest => "invalid_request_error",
            Self::UnknownModel => "not_found_error",
            Self::InsufficientCredits => "billing_error",
            Self::DuplicateRequest => "conflict_error",
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
            Self::UnknownModel => ("invalid_request_error", "model_not_found"),
            Self::InsufficientCredits => ("insufficient_quota", "insufficient_credits"),
            Self::DuplicateRequest => ("invalid_request_error", "duplicate_request_id"),
            Self::LedgerUnavailable => ("server_error", "ledger_unavailable"),
            Self::UpstreamUnreachable => ("server_error", "upstream_unreachable"),
        }
    }

    /// The JSON error response for `api`.
    #[must_use]
    pub fn response(self, api: Api, message: &str) -> Response {
        let body = match api {
            Api::Anthropic => {
                json!({"type": "error", "error": {"type": self.anthropic_type(), "message": message}})
            }
            Api::Openai => {
                let (kind, code) = self.openai_type();
                json!({"error": {"message": message, "type": kind, "code": code}})
            }
        };
        (self.status(), Json(body)).into_response()
    }
}
