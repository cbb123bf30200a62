//! Request admission and forwarding. A request goes through named phases:
//!
//! 1. **admit** (on the client's connection): authenticate, read the body
//!    within its limit, parse, route by model, check it against the API's
//!    rules and the catalog's allow-lists ([`super::request`]), take a hold
//!    fitted to the balance ([`crate::ledger::Ledger::hold`]), and write the
//!    output cap the hold pays for into the upstream request;
//! 2. **forward** (a task of its own, so a client that goes away does not
//!    strand the hold): call the upstream, then relay a stream
//!    ([`super::stream`]) or complete a unary answer;
//! 3. **settle**: bill what the upstream reported (estimated where it did
//!    not) before the answer's last byte goes out, or release the hold when
//!    nothing was generated.
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
use super::pricing::Tokens;
use super::request::{self, Analyzed};
use super::{
    CREDITS_CHARGED_HEADER, CREDITS_REMAINING_HEADER, CREDITS_WARNING_HEADER, IDEMPOTENCY_KEY_HEADER,
    OUTPUT_CAP_HEADER, ProxyState, stream,
};
use crate::ledger::{HoldRequest, LedgerError, Reservation, Settlement, Usage};

/// Largest non-streaming upstream body the proxy reads.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Longest idempotency key accepted (Stripe allows 255).
const MAX_IDEMPOTENCY_KEY: usize = 255;

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
    if let Err(refused) = authenticate(&st, &headers).await {
        return refused.response(api);
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
    pub analyzed: Analyzed,
    /// The upstream request body, with the reserved limits written in.
    pub body: Bytes,
    /// The client's headers the upstream needs (`anthropic-version`, `anthropic-beta`).
    pub client_headers: HeaderMap,
    /// True when the proxy asked an OpenAI stream for usage the client did
    /// not want; the usage chunk is then filtered out again.
    pub hide_usage_chunk: bool,
    pub started: Instant,
}

impl Admitted {
    /// The output tokens (all choices together) the hold pays for.
    pub fn output_allowance(&self) -> i64 {
        self.reservation.units.saturating_mul(self.analyzed.choices.max(1))
    }

    /// The usage record for `tokens`, priced from the catalog.
    pub fn usage(&self, mut tokens: Tokens, outcome: &str, estimated: bool) -> Usage {
        let mut estimated = estimated;
        if tokens.input + tokens.cache_write + tokens.cache_read == 0 {
            // Cut before the upstream reported its input: bill the estimate, never zero.
            tokens.input = self.analyzed.input_estimate;
            estimated = true;
        }
        Usage {
            model: self.model.id.clone(),
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cache_write_tokens: tokens.cache_write,
            cache_read_tokens: tokens.cache_read,
            tool_uses: tokens.server_tool_uses.values().sum(),
            cost: self.model.prices.cost(&tokens),
            outcome: outcome.to_string(),
            estimated,
        }
    }
}

/// Why admission stopped, ready to be answered in the client's API shape.
pub(super) struct Refused {
    refusal: Refusal,
    message: String,
    param: Option<String>,
    /// Credits left and whether the balance is low, for the credit headers.
    credits: Option<(i64, bool)>,
}

impl Refused {
    fn new(refusal: Refusal, message: impl Into<String>) -> Self {
        Self { refusal, message: message.into(), param: None, credits: None }
    }

    fn response(self, api: Api) -> Response {
        let mut resp = self.refusal.response_with_param(api, &self.message, self.param.as_deref());
        if let Some((remaining, low)) = self.credits {
            credit_headers(resp.headers_mut(), remaining, low, None);
        }
        resp
    }
}

async fn handle(st: Arc<ProxyState>, api: Api, headers: HeaderMap, body: Body) -> Response {
    let admitted = match admit(&st, api, &headers, body).await {
        Ok(a) => a,
        Err(refused) => {
            st.metrics.request(api.label(), refused.refusal.label());
            return refused.response(api);
        }
    };
    // From here the request runs in a task of its own: a client that goes
    // away drops this handler, not the task, which settles or releases the
    // hold as soon as the upstream answers instead of leaving it to expire.
    // The task counts as work in flight, so a graceful shutdown waits for
    // it (and its settlement) even when its client has already gone.
    let guard = st.in_flight.enter();
    let task = forward(Arc::clone(&st), admitted);
    match tokio::spawn(async move {
        let _guard = guard;
        task.await
    })
    .await
    {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(error = %e, "the forwarding task failed");
            Refusal::UpstreamUnreachable.response(api, "the proxy failed to forward the request")
        }
    }
}

/// Phase 1: everything that can refuse the request before it costs anything.
async fn admit(st: &ProxyState, api: Api, headers: &HeaderMap, body: Body) -> Result<Admitted, Refused> {
    let started = Instant::now();
    let account = authenticate(st, headers).await?;
    if headers.get(header::CONTENT_ENCODING).is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity")) {
        return Err(Refused::new(
            Refusal::UnsupportedEncoding,
            "Content-Encoding is not supported: send the JSON body uncompressed",
        ));
    }
    let mut request = read_json(st, body).await?;
    let model = route(st, api, &request)?.clone();
    let analyzed = request::analyze(api, headers, &request, &model, st.settings.default_max_tokens)
        .map_err(|e| Refused { refusal: Refusal::InvalidRequest, message: e.message, param: e.param, credits: None })?;
    let key = idempotency_key(headers)?;
    let reservation = hold(st, &account, key.as_deref(), &model, &analyzed).await?;
    request::write_limits(api, &mut request, &analyzed, reservation.units, &model);
    let hide_usage_chunk = ask_for_usage(api, analyzed.streaming, &mut request);
    let body = match serde_json::to_vec(&request) {
        Ok(v) => Bytes::from(v),
        Err(_) => {
            release(st, &reservation).await;
            return Err(Refused::new(Refusal::BadRequest, "failed to re-encode the request"));
        }
    };
    Ok(Admitted {
        api,
        model,
        reservation,
        analyzed,
        body,
        client_headers: upstream_request_headers(headers),
        hide_usage_chunk,
        started,
    })
}

async fn authenticate(st: &ProxyState, headers: &HeaderMap) -> Result<Arc<str>, Refused> {
    st.keys.resolve(&st.ledger, headers).await.ok_or_else(|| {
        if !headers.contains_key("x-api-key") && !headers.contains_key(header::AUTHORIZATION) {
            Refused::new(Refusal::MissingKey, "missing API key: send `x-api-key` or `Authorization: Bearer`")
        } else {
            Refused::new(Refusal::InvalidKey, "invalid API key")
        }
    })
}

async fn read_json(st: &ProxyState, body: Body) -> Result<Value, Refused> {
    let raw = axum::body::to_bytes(body, st.settings.body_limit).await.map_err(|e| {
        if is_length_limit(&e) {
            Refused::new(Refusal::TooLarge, format!("request body exceeds {} bytes", st.settings.body_limit))
        } else {
            Refused::new(Refusal::BadRequest, "failed to read the request body")
        }
    })?;
    let request: Value = serde_json::from_slice(&raw)
        .map_err(|_| Refused::new(Refusal::MalformedJson, "request body is not valid JSON"))?;
    if !request.is_object() {
        return Err(Refused::new(Refusal::MalformedJson, "request body must be a JSON object"));
    }
    Ok(request)
}

fn route<'a>(st: &'a ProxyState, api: Api, request: &Value) -> Result<&'a Model, Refused> {
    let Some(model_id) = request.get("model").and_then(Value::as_str) else {
        return Err(Refused {
            param: Some("model".into()),
            ..Refused::new(Refusal::InvalidRequest, "model: field required")
        });
    };
    let Some(model) = st.catalog.models.get(model_id) else {
        return Err(Refused::new(Refusal::UnknownModel, format!("model {model_id:?} is not available")));
    };
    let served_here = match api {
        Api::Anthropic => model.kind == UpstreamKind::Anthropic,
        Api::Openai => model.kind == UpstreamKind::Openai,
    };
    if !served_here {
        let other = if model.kind == UpstreamKind::Anthropic { "/v1/messages" } else { "/v1/chat/completions" };
        return Err(Refused {
            param: Some("model".into()),
            ..Refused::new(Refusal::InvalidRequest, format!("model {model_id:?} is served on {other}"))
        });
    }
    Ok(model)
}

/// The client's `Idempotency-Key`. Tracing headers (`X-Request-Id`) are
/// deliberately not keys: SDKs set them per attempt for correlation.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        Refused::new(
            Refusal::BadRequest,
            format!("the Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let key = v.to_str().map_err(|_| bad())?.trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Takes the hold, fitted to the balance; the refusals say what was needed
/// and what is left.
async fn hold(
    st: &ProxyState,
    account: &str,
    key: Option<&str>,
    model: &Model,
    analyzed: &Analyzed,
) -> Result<Reservation, Refused> {
    let min_output = st.settings.min_output_tokens.clamp(1, analyzed.requested_output.max(1));
    let shape = model.prices.hold_shape(analyzed, min_output);
    let req = HoldRequest {
        account,
        key,
        shape,
        ttl: Duration::from_secs(st.settings.reservation_ttl_secs),
        owner: Some(st.session.owner()),
    };
    st.meter.hold(&req).await.map_err(|e| match e {
        LedgerError::Insufficient { needed, available, low } => Refused {
            credits: Some((available, low)),
            ..Refused::new(
                Refusal::InsufficientCredits,
                format!(
                    "insufficient credits: this request needs at least {needed} credits (its input and \
                     {min_output} output tokens of {}) and {available} are available",
                    model.id
                ),
            )
        },
        LedgerError::UnknownAccount(_) => Refused {
            credits: Some((0, false)),
            ..Refused::new(Refusal::InsufficientCredits, "insufficient credits: the account has no ledger")
        },
        LedgerError::InFlight(_) => Refused::new(
            Refusal::DuplicateRequest,
            "a request with this Idempotency-Key is in flight; wait for it or use a new key",
        ),
        LedgerError::AlreadyCompleted { credits, .. } => Refused::new(
            Refusal::AlreadyCompleted,
            format!(
                "a request with this Idempotency-Key already completed (billed {credits} credits); \
                 send a new key for a new request"
            ),
        ),
        other => {
            tracing::error!(error = %other, "failed to reserve credits");
            Refused::new(Refusal::LedgerUnavailable, "the credit ledger is unavailable; retry later")
        }
    })
}

/// OpenAI streams carry usage only when asked (`stream_options.include_usage`);
/// asks for it and returns true when the client did not, so the usage chunk
/// is hidden from it again.
fn ask_for_usage(api: Api, streaming: bool, request: &mut Value) -> bool {
    let wanted = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    if api != Api::Openai || !streaming || wanted {
        return false;
    }
    request["stream_options"] = json!({"include_usage": true});
    true
}

fn upstream_request_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in ["anthropic-version", "anthropic-beta"] {
        if let Some(v) = client.get(name) {
            out.insert(name, v.clone());
        }
    }
    out
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

/// Phase 2: call the upstream and hand its answer on.
async fn forward(st: Arc<ProxyState>, a: Admitted) -> Response {
    st.metrics.admitted(a.started.elapsed());
    let upstream = match send_upstream(&st, &a).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(model = %a.model.id, error = %e, "failed to reach the upstream");
            let available = release(&st, &a.reservation).await;
            st.metrics.request(a.api.label(), Refusal::UpstreamUnreachable.label());
            let mut resp = Refusal::UpstreamUnreachable.response(a.api, "failed to reach the model provider");
            credit_headers(resp.headers_mut(), available, a.reservation.low(), Some(&a.reservation));
            return resp;
        }
    };
    st.metrics.upstream_seconds.observe(a.started.elapsed().as_secs_f64());
    if !upstream.status().is_success() {
        return pass_through_error(&st, &a, upstream).await;
    }
    if a.analyzed.streaming {
        return stream::relay(st, a, upstream);
    }
    complete_unary(&st, a, upstream).await
}

async fn send_upstream(st: &ProxyState, a: &Admitted) -> Result<reqwest::Response, reqwest::Error> {
    let model = &a.model;
    let mut req =
        st.client.post(model.endpoint()).header(header::CONTENT_TYPE, "application/json").body(a.body.clone());
    match model.kind {
        UpstreamKind::Anthropic => {
            let version =
                a.client_headers.get("anthropic-version").cloned().unwrap_or(HeaderValue::from_static("2023-06-01"));
            req = req.header("anthropic-version", version);
            if let Some(beta) = a.client_headers.get("anthropic-beta") {
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

/// Sets `X-Winston-Credits-Remaining`, the output cap the hold paid for
/// (when there is one) and, only when the balance is under the low
/// threshold, the warning header.
pub(super) fn credit_headers(headers: &mut HeaderMap, remaining: i64, low: bool, r: Option<&Reservation>) {
    headers.insert(HeaderName::from_static(CREDITS_REMAINING_HEADER), HeaderValue::from(remaining.max(0)));
    if let Some(r) = r
        && r.units > 0
    {
        headers.insert(HeaderName::from_static(OUTPUT_CAP_HEADER), HeaderValue::from(r.units));
    }
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
/// on a database error the sweeper releases it once this process is gone).
pub(super) async fn release(st: &ProxyState, r: &Reservation) -> i64 {
    match st.meter.release(r).await {
        Ok(Some(available)) => available,
        Ok(None) => r.available,
        Err(e) => {
            tracing::warn!(error = %e, "failed to release a reservation; it will expire");
            r.available
        }
    }
}

/// Settles with a few quick retries: the response is held back until the
/// usage record is committed, so a transient database error must not lose
/// it. Counts credits, what went unbilled and estimated usage.
pub(super) async fn settle_durably(st: &ProxyState, r: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
    let retry =
        backon::ExponentialBuilder::default().with_min_delay(Duration::from_millis(20)).with_max_times(5).with_jitter();
    let started = Instant::now();
    let settled = backon::Retryable::retry(|| st.meter.settle(r, usage), retry)
        .when(|e| matches!(e, LedgerError::Db(_)))
        .notify(|e, wait| tracing::warn!(error = %e, ?wait, "failed to settle; retrying"))
        .await;
    st.metrics.settlement_took(started.elapsed());
    let settled = settled?;
    st.metrics.settled(&settled, usage);
    Ok(settled)
}

/// An upstream error status: pass it through unchanged and charge nothing
/// (the upstream generated nothing).
async fn pass_through_error(st: &ProxyState, a: &Admitted, upstream: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The provider refused Winston's own credentials, not the tenant's
        // key: passed through, an SDK would tell the tenant its key is bad
        // (and the body may quote part of the provider key).
        let available = release(st, &a.reservation).await;
        tracing::error!(model = %a.model.id, status = status.as_u16(), "the model provider refused the proxy's upstream credentials");
        st.metrics.request(a.api.label(), "upstream_auth");
        let mut resp = Refusal::UpstreamUnreachable
            .response(a.api, "the model provider refused the proxy's credentials; the operator has to fix them");
        credit_headers(resp.headers_mut(), available, a.reservation.low(), Some(&a.reservation));
        return resp;
    }
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    let body = upstream.bytes().await.unwrap_or_default();
    let available = release(st, &a.reservation).await;
    st.metrics.request(a.api.label(), "upstream_error");
    let mut resp = (status, body).into_response();
    resp.headers_mut().extend(headers);
    credit_headers(resp.headers_mut(), available, a.reservation.low(), Some(&a.reservation));
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

/// A non-streaming success: read it whole, meter (estimating what the
/// upstream did not report), settle, then answer.
async fn complete_unary(st: &ProxyState, a: Admitted, upstream: reqwest::Response) -> Response {
    let mut headers = HeaderMap::new();
    upstream_headers(upstream.headers(), &mut headers);
    let Ok(body) = read_bounded(upstream).await else {
        // The upstream answered 200: a non-streaming answer is generated
        // whole before it is sent, so whatever cut it (the connection, or
        // an answer past the read limit) came after the provider's cost.
        // How much is unknown; the hold is its bound, so the hold is
        // billed (as an estimate), else a tenant could repeat an answer too
        // big to read and never pay for it.
        let usage = a.usage(Tokens { output: a.output_allowance(), ..Tokens::default() }, "upstream_cut", true);
        st.metrics.request(a.api.label(), "upstream_cut");
        let (available, charged) = match settle_durably(st, &a.reservation, &usage).await {
            Ok(s) => (s.available, s.credits),
            Err(e) => {
                tracing::error!(error = %e, "failed to record the usage of a cut answer");
                st.metrics.request(a.api.label(), "ledger_unavailable");
                return Refusal::LedgerUnavailable.response(a.api, "failed to record usage, retry later");
            }
        };
        let mut resp = Refusal::UpstreamUnreachable.response(
            a.api,
            "the model provider's response was cut off or too large to read; it was billed at the reserved maximum",
        );
        credit_headers(resp.headers_mut(), available, a.reservation.low(), Some(&a.reservation));
        resp.headers_mut().insert(HeaderName::from_static(CREDITS_CHARGED_HEADER), HeaderValue::from(charged));
        return resp;
    };
    let mut meter = Meter::new(a.model.kind);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        meter.observe_body(&v);
    }
    let outcome = if meter.has_final_usage() { "complete" } else { "usage_missing" };
    let usage = a.usage(meter.tokens(), outcome, meter.estimated());
    match settle_durably(st, &a.reservation, &usage).await {
        Ok(s) => {
            st.metrics.request(a.api.label(), outcome);
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut().extend(headers);
            credit_headers(resp.headers_mut(), s.available, s.low(), Some(&a.reservation));
            resp.headers_mut().insert(HeaderName::from_static(CREDITS_CHARGED_HEADER), HeaderValue::from(s.credits));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to record usage; withholding the response");
            st.metrics.request(a.api.label(), "ledger_unavailable");
            Refusal::LedgerUnavailable.response(a.api, "failed to record usage; the response was withheld, retry later")
        }
    }
}
