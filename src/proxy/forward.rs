//! Request admission and non-streaming forwarding: authenticate, bound and
//! parse the body, route by model, reserve the worst case, call the
//! upstream, then settle (or release on an upstream error) before answering.
//! Streaming responses are handed to [`super::stream`].
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::catalog::{Model, UpstreamKind};
use super::errors::{Api, Refusal};
use super::meter::Meter;
use super::{CREDITS_REMAINING_HEADER, CREDITS_WARNING_HEADER, ProxyState, REQUEST_ID_HEADERS, stream};
use crate::ledger::{LedgerError, Reservation, Settlement, Usage, money};

/// Largest non-streaming upstream body the proxy reads.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Longest client request id accepted.
const MAX_REQUEST_ID: usize = 200;

pub(super) async fn anthropic(State(st): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(st, Api::Anthropic, headers, body).await
}

pub(super) async fn openai(State(st): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    handle(st, Api::Openai, headers, body).await
}

/// `GET /v1/models`: the catalog, in Anthropic shape when the client sends
/// `anthropic-version`, else in OpenAI shape.
pub(super) async fn models(State(st): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    let api = if headers.contains_key("anthropic-version") { Api::Anthropic } else { Api::Openai };
    if st.keys.account_for(&headers).is_none() {
        return Refusal::InvalidKey.response(api, "invalid or missing API key");
    }
    let ids: Vec<&String> = st.catalog.models.keys().collect();
    let body = match api {
        Api::Anthropic => json!({
            "data": ids.iter().map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            "has_more": false, "first_id": ids.first(), "last_id": ids.last()
        }),
        Api::Openai => json!({
            "object": "list",
            "data": ids.iter().map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "winston"})).collect::<Vec<_>>()
        }),
    };
    axum::Json(body).into_response()
}

/// One admitted request on its way to the upstream.
pub(super) struct Admitted {
    pub api: Api,
    pub model: Model,
    pub reservation: Reservation,
    pub input_estimate: i64,
}

async fn handle(st: Arc<ProxyState>, api: Api, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let refuse = |r: Refusal, message: &str| {
        st.metrics.request(api.label(), r.label());
        r.response(api, message)
    };
    let Some(account) = st.keys.account_for(&headers) else {
        let missing = !headers.contains_key("x-api-key") && !headers.contains_key(header::AUTHORIZATION);
        return if missing {
            refuse(Refusal::MissingKey, "missing API key: send `x-api-key` or `Authorization: Bearer`")
        } else {
            refuse(Refusal::InvalidKey, "invalid API key")
        };
    };
    let raw = match axum::body::to_bytes(body, st.settings.body_limit).await {
        Ok(raw) => raw,
        Err(e) if is_length_limit(&e) => {
            return refuse(Refusal::TooLarge, &format!("request body exceeds {} bytes", st.settings.body_limit));
        }
        Err(_) => return refuse(Refusal::BadRequest, "failed to read the request body"),
    };
    let Ok(mut request) = serde_json::from_slice::<Value>(&raw) else {
        return refuse(Refusal::MalformedJson, "request body is not valid JSON");
    };
    if !request.is_object() {
        return refuse(Refusal::MalformedJson, "request body must be a JSON object");
    }
    let Some(model_id) = request.get("model").and_then(Value::as_str) else {
        return refuse(Refusal::BadRequest, "model: field required");
    };
    let Some(model) = st.catalog.models.get(model_id) else {
        return refuse(Refusal::UnknownModel, &format!("model {model_id:?} is not available"));
    };
    let endpoint_kind = match api {
        Api::Anthropic => UpstreamKind::Anthropic,
        Api::Openai => UpstreamKind::Openai,
    };
    if model.kind != endpoint_kind {
        let other = if model.kind == UpstreamKind::Anthropic { "/v1/messages" } else { "/v1/chat/completions" };
        return refuse(Refusal::BadRequest, &format!("model {model_id:?} is served on {other}"));
    }
    let request_id = match client_request_id(&headers) {
        Ok(Some(id)) => id,
        Ok(None) => uuid::Uuid::new_v4().to_string(),
        Err(()) => {
            return refuse(Refusal::BadRequest, "request id header is too long or not text");
        }
    };
    let streaming = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_i64))
        .unwrap_or(st.settings.default_max_tokens)
        .max(0);
    let max_tokens = model.max_output_tokens.map_or(max_tokens, |cap| max_tokens.min(cap));
    // Upper-bound guess at the input: real tokenizers average about 4 bytes
    // per token on English; 3 keeps a margin. Settlement clamps anyway.
    let input_estimate = i64::try_from(raw.len().div_ceil(3)).unwrap_or(i64::MAX);
    let amount = money::cost(input_estimate, max_tokens, model.multiplier);
    let ttl = Duration::from_secs(st.settings.reservation_ttl_secs);
    let reservation = match st.ledger.reserve(&account, &request_id, amount, ttl).await {
        Ok(r) => r,
        Err(LedgerError::Insufficient { needed, available, .. }) => {
            let mut resp = refuse(
                Refusal::InsufficientCredits,
                &format!(
                    "insufficient credits: this request may cost up to {needed} credits and {available} are available"
                ),
            );
            credit_headers(resp.headers_mut(), available, true, None);
            return resp;
        }
        Err(LedgerError::UnknownAccount(_)) => {
            let mut resp = refuse(Refusal::InsufficientCredits, "insufficient credits: the account has no ledger");
            credit_headers(resp.headers_mut(), 0, true, None);
            return resp;
        }
        Err(LedgerError::InFlight(_) | LedgerError::AlreadyCompleted { .. }) => {
            return refuse(Refusal::DuplicateRequest, "a request with this id is already in flight");
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to reserve credits");
            return refuse(Refusal::LedgerUnavailable, "the credit ledger is unavailable; retry later");
        }
    };
    let mut hide_usage_chunk = false;
    let upstream_body: Bytes = if api == Api::Openai && streaming && !wants_usage(&request) {
        // Without this the stream carries no usage at all; the extra chunk is
        // filtered out again for this client.
        request["stream_options"] = json!({"include_usage": true});
        hide_usage_chunk = true;
        match serde_json::to_vec(&request) {
            Ok(v) => Bytes::from(v),
            Err(_) => raw,
        }
    } else {
        raw
    };
    let admitted = Admitted { api, model: model.clone(), reservation, input_estimate };
    let upstream = match send_upstream(&st, &admitted.model, &headers, upstream_body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(model = %admitted.model.id, error = %e, "failed to reach the upstream");
            let available = release(&st, &admitted.reservation).await;
            let mut resp = refuse(Refusal::UpstreamUnreachable, "failed to reach the model provider");
            credit_headers(resp.headers_mut(), available, false, Some(&admitted.reservation));
            return resp;
        }
    };
    st.metrics.upstream_seconds.observe(started.elapsed().as_secs_f64());
    if !upstream.status().is_success() {
        return pass_through_error(&st, &admitted, upstream).await;
    }
    if streaming {
        return stream::relay(st, admitted, upstream, hide_usage_chunk);
    }
    complete_unary(&st, admitted, upstream).await
}

fn wants_usage(request: &Value) -> bool {
    request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
}

fn client_request_id(headers: &HeaderMap) -> Result<Option<String>, ()> {
    for name in REQUEST_ID_HEADERS {
        if let Some(v) = headers.get(name) {
            let s = v.to_str().map_err(|_| ())?.trim();
            if s.is_empty() || s.len() > MAX_REQUEST_ID {
                return Err(());
            }
            return Ok(Some(s.to_string()));
        }
    }
    Ok(None)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

async fn send_upstream(
    st: &ProxyState,
    model: &Model,
    client_headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut req = st.client.post(model.endpoint()).header(header::CONTENT_TYPE, "application/json").body(body);
    match model.kind {
        UpstreamKind::Anthropic => {
            let version =
                client_headers.get("anthropic-version").cloned().unwrap_or(HeaderValue::from_static("2023-06-01"));
            req = req.header("anthropic-version", version);
            if let Some(beta) = client_headers.get("anthropic-beta") {
                req = req.header("anthropic-beta", beta.clone());
            }
            if let Some(key) = &model.key {
                req = req.header("x-api-key", key.expose());
            }
        }
        UpstreamKind::Openai => {
            if let Some(key) = &model.key {
                req = req.bearer_auth(key.expose());
            }
        }
    }
    req.send().await
}

/// Copies the upstream headers a client may rely on (content type, request
/// id, rate limits).
pub(super) fn upstream_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let n = name.as_str();
        let relevant = n == "content-type"
            || n == "retry-after"
            || n == "request-id"
            || n == "x-request-id"
            || n.starts_with("anthropic-ratelimit-")
            || n.starts_with("x-ratelimit-");
        if relevant {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sets `X-Winston-Credits-Remaining` and, when `low`, the warning header.
pub(super) fn credit_headers(headers: &mut HeaderMap, remaining: i64, low: bool, r: Option<&Reservation>) {
    headers.insert(HeaderName::from_static(CREDITS_REMAINING_HEADER), HeaderValue::from(remaining.max(0)));
    if low {
        let text = match r {
            Some(r) => format!(
                "low balance: {} credits left, under {}% of the {}-credit allotment",
                remaining.max(0),
                r.low_threshold_pct,
                r.allotment
            ),
            None => format!("low balance: {} credits left", remaining.max(0)),
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(HeaderName::from_static(CREDITS_WARNING_HEADER), v);
        }
    }
}

/// Releases a hold, returning what is available afterwards (best effort:
/// on a database error the hold expires by itself).
pub(super) async fn release(st: &ProxyState, r: &Reservation) -> i64 {
    match st.ledger.release(r).await {
        Ok(Some(available)) => available,
        Ok(None) => r.available,
        Err(e) => {
            tracing::warn!(error = %e, "failed to release a reservation; it will expire");
            r.available
        }
    }
}

/// Settles with a few quick retries: the response is held back until the
/// usage record is committed, so a transient database error must not lose it.
pub(super) async fn settle_durably(st: &ProxyState, r: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
    let mut delay = Duration::from_millis(20);
    let mut attempt = 0;
    loop {
        match st.ledger.settle(r, usage).await {
            Ok(s) => {
                st.metrics.credits.inc_by(u64::try_from(s.credits).unwrap_or(0));
                return Ok(s);
            }
            Err(e @ LedgerError::Db(_)) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "failed to settle; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An upstream error status: pass it through unchanged and charge nothing.
async fn pass_through_error(st: &ProxyState, a: &Admitted, upstream: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    let body = upstream.bytes().await.unwrap_or_default();
    let available = release(st, &a.reservation).await;
    st.metrics.request(a.api.label(), "upstream_error");
    let mut resp = (status, body).into_response();
    resp.headers_mut().extend(headers);
    credit_headers(
        resp.headers_mut(),
        available,
        money::is_low(available, a.reservation.allotment, a.reservation.low_threshold_pct),
        Some(&a.reservation),
    );
    resp
}

async fn read_bounded(mut upstream: reqwest::Response) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    while let Some(chunk) = upstream.chunk().await.map_err(|_| ())? {
        if out.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err(());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A non-streaming success: read it whole, meter, settle, then answer.
async fn complete_unary(st: &ProxyState, a: Admitted, upstream: reqwest::Response) -> Response {
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    let Ok(body) = read_bounded(upstream).await else {
        let available = release(st, &a.reservation).await;
        let mut resp = Refusal::UpstreamUnreachable.response(a.api, "the model provider's response was cut off");
        st.metrics.request(a.api.label(), "upstream_cut");
        credit_headers(resp.headers_mut(), available, false, Some(&a.reservation));
        return resp;
    };
    let mut meter = Meter::new(a.model.kind);
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    if let Some(v) = &parsed {
        meter.observe_body(v);
    }
    let (mut input, output) = meter.billable();
    let outcome = if meter.has_final_usage() { "complete" } else { "usage_missing" };
    if !meter.has_final_usage() {
        input = a.input_estimate;
    }
    let usage = Usage {
        model: a.model.id.clone(),
        input_tokens: input,
        output_tokens: output,
        cost: money::cost(input, output, a.model.multiplier),
        outcome: outcome.into(),
        ..Usage::default()
    };
    match settle_durably(st, &a.reservation, &usage).await {
        Ok(s) => {
            st.metrics.request(a.api.label(), outcome);
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut().extend(headers);
            credit_headers(resp.headers_mut(), s.available, s.low(), Some(&a.reservation));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to record usage; withholding the response");
            st.metrics.request(a.api.label(), "ledger_unavailable");
            Refusal::LedgerUnavailable.response(a.api, "failed to record usage; the response was withheld, retry later")
        }
    }
}
