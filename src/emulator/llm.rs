//! A mock LLM upstream speaking the Anthropic Messages API (under
//! `/anthropic`) and the OpenAI-compatible chat completions API (under
//! `/openai`), streaming and not, with usage in the real field shapes, and
//! counting what it generated ([`MockStats`], also `GET /_mock/stats`) so
//! tests can hold a meter against the upstream's own count.
//!
//! It generates text, not intelligence: the reply is `n` one-token words.
//! Input tokens are counted deterministically ([`count_input_tokens`]), so
//! tests know the exact usage to expect. Reported usage equals what was
//! emitted unless the request asks otherwise. Each request can pick its
//! behaviour with headers or a `mock` object in the JSON body (the body form
//! survives a proxy that does not forward unknown headers):
//!
//! | header                                 | body field                         | effect |
//! |----------------------------------------|------------------------------------|--------|
//! | `x-mock-tag`                           | `mock.tag`                         | the [`MockStats`] tag the request counts under (default `""`) |
//! | `x-mock-output-tokens`                 | `mock.output_tokens`               | tokens to generate per choice (capped by `max_tokens`) |
//! | `x-mock-ignore-max-tokens`             | `mock.ignore_max_tokens`           | `true`: generate `output_tokens` even beyond the cap (a misbehaving upstream) |
//! | `x-mock-omit-usage`                    | `mock.omit_usage`                  | `true`: no `usage` block, no `message_delta` usage, no OpenAI usage chunk |
//! | `x-mock-cache-creation-input-tokens`   | `mock.cache_creation_input_tokens` | cache-write tokens to report |
//! | `x-mock-cache-read-input-tokens`       | `mock.cache_read_input_tokens`     | cache-read tokens to report (OpenAI: `cached_tokens`, inside `prompt_tokens`) |
//! | `x-mock-web-search-requests`           | `mock.web_search_requests`         | Anthropic `usage.server_tool_use.web_search_requests` |
//! | `x-mock-latency-ms`                    | `mock.latency_ms`                  | delay before the response starts |
//! | `x-mock-token-delay-ms`                | `mock.token_delay_ms`              | delay between streamed tokens |
//! | `x-mock-error`                         | `mock.error`                       | `401` (the provider refuses the caller's key), `429` (with `retry-after`), `529`, `500`, `midstream` (an `error` event after half the tokens), `cut` (the response just ends after half the tokens or half the body) |
//! | `x-mock-analyzer-malformed`            | `mock.analyzer_malformed`          | `true`: an analyzer request gets a malformed profile |
//!
//! A non-streamed request from Winston's website analyzer (its system prompt
//! carries [`ANALYZER_MARKER`]) is answered with a business profile derived
//! from the page text it carries (see `llm/analyzer.rs`).
//!
//! Requests are checked as strictly as the real APIs check them: an output
//! cap (`max_tokens`, OpenAI also `max_completion_tokens`) must be an
//! integer >= 1, Anthropic requires `max_tokens`, OpenAI refuses both caps
//! at once and an `n` outside 1..=128. OpenAI's `n` generates that many
//! choices, each up to the cap.
//!
//! Mounting it inside `winston emulator` is left to the emulator module.
mod analyzer;
mod stats;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub use analyzer::ANALYZER_MARKER;
pub use stats::{Generated, MAX_TOKENS_KEPT, MockStats, StatsReport};
use stats::{Meter, Start};

/// Path of the stats snapshot ([`StatsReport`] as JSON).
pub const STATS_PATH: &str = "/_mock/stats";

/// How the mock behaves when a request does not say otherwise.
#[derive(Clone, Debug)]
pub struct LlmMockConfig {
    /// Delay before each response starts.
    pub latency: Duration,
    /// Delay between streamed tokens.
    pub token_delay: Duration,
    /// Tokens generated when the request does not ask for a count.
    pub default_output_tokens: u64,
    /// When set, requests must carry this key (`x-api-key` or bearer).
    pub api_key: Option<String>,
    /// Model ids listed by `GET /v1/models` (any model id is accepted).
    pub models: Vec<String>,
    /// How many analyzer requests get a malformed profile before the mock
    /// answers them well (tests of the analyzer's retry).
    pub analyzer_malformed: u64,
}

impl Default for LlmMockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            default_output_tokens: 16,
            api_key: None,
            models: vec!["claude-sonnet-4-5".into(), "claude-opus-4-1".into(), "kimi-k2.6".into()],
            analyzer_malformed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

struct Mock {
    config: LlmMockConfig,
    next_id: AtomicU64,
    stats: Arc<MockStats>,
    /// Analyzer requests still to answer malformed.
    analyzer_malformed: AtomicU64,
}

/// The mock's routes: `POST /anthropic/v1/messages`, `POST
/// /openai/v1/chat/completions`, `GET /anthropic/v1/models`, `GET
/// /openai/v1/models`, `GET /_mock/stats`.
pub fn router(config: LlmMockConfig) -> Router {
    router_with_stats(config).0
}

/// [`router`], and the counters its handlers write.
pub fn router_with_stats(config: LlmMockConfig) -> (Router, Arc<MockStats>) {
    let stats = Arc::new(MockStats::default());
    let analyzer_malformed = AtomicU64::new(config.analyzer_malformed);
    let mock = Arc::new(Mock { config, next_id: AtomicU64::new(1), stats: stats.clone(), analyzer_malformed });
    let router = Router::new()
        .route("/anthropic/v1/messages", post(anthropic_messages))
        .route("/openai/v1/chat/completions", post(openai_chat))
        .route("/anthropic/v1/models", get(anthropic_models))
        .route("/openai/v1/models", get(openai_models))
        .route(STATS_PATH, get(stats_report))
        // Anthropic accepts request bodies up to 32 MB (images, PDFs).
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(mock);
    (router, stats)
}

/// Serves [`router`] on `listener` until the task is dropped or aborted.
///
/// # Errors
/// Fails when accepting connections fails.
pub async fn serve(listener: TcpListener, config: LlmMockConfig) -> std::io::Result<()> {
    serve_router(listener, router(config)).await
}

/// Serves [`router_with_stats`] on `listener` in a background task; abort
/// the handle to stop it.
pub async fn serve_with_stats(
    listener: TcpListener,
    config: LlmMockConfig,
) -> (tokio::task::JoinHandle<std::io::Result<()>>, Arc<MockStats>) {
    let (router, stats) = router_with_stats(config);
    (tokio::spawn(serve_router(listener, router)), stats)
}

async fn serve_router(listener: TcpListener, router: Router) -> std::io::Result<()> {
    // Real providers stream without Nagle delays; so does the mock.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
}

/// Input tokens of a request body as the mock counts them: every string in
/// `system` and `messages` (string content or `text` of content blocks)
/// counts `ceil(bytes / 4)`; at least 1.
#[must_use]
pub fn count_input_tokens(body: &Value) -> u64 {
    fn text_tokens(v: &Value) -> u64 {
        match v {
            Value::String(s) => (s.len() as u64).div_ceil(4),
            Value::Array(items) => items.iter().map(text_tokens).sum(),
            Value::Object(o) => o.get("text").or_else(|| o.get("content")).map_or(0, text_tokens),
            _ => 0,
        }
    }
    let system = body.get("system").map_or(0, text_tokens);
    let messages = body.get("messages").map_or(0, text_tokens);
    (system + messages).max(1)
}

/// A refusal in the API's error shape.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// OpenAI's `param`: the request field at fault.
    param: Option<&'static str>,
    /// OpenAI's `code`.
    code: Option<&'static str>,
}

impl ApiError {
    fn invalid(param: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message,
            param: Some(param),
            code: Some(code),
        }
    }

    fn response(&self, api: Api, request_id: &str) -> Response {
        let body = match api {
            Api::Anthropic => json!({
                "type": "error", "error": {"type": self.kind, "message": self.message}, "request_id": request_id
            }),
            Api::OpenAi => json!({
                "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
            }),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// What the request asked to go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Answer with this status instead of generating.
    Status(u16),
    /// An `error` event after half the tokens.
    Midstream,
    /// The response just ends after half the tokens (or half the body).
    Cut,
}

impl Fault {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "401" => Some(Self::Status(401)),
            "429" => Some(Self::Status(429)),
            "529" => Some(Self::Status(529)),
            "500" => Some(Self::Status(500)),
            "midstream" => Some(Self::Midstream),
            "cut" => Some(Self::Cut),
            _ => None,
        }
    }
}

fn status_error(api: Api, status: u16) -> ApiError {
    let (kind, message, code) = match (api, status) {
        (Api::Anthropic, 401) => ("authentication_error", "invalid x-api-key", None),
        (Api::Anthropic, 429) => ("rate_limit_error", "Number of requests has exceeded your rate limit", None),
        (Api::Anthropic, 529) => ("overloaded_error", "Overloaded", None),
        (Api::Anthropic, _) => ("api_error", "Internal server error", None),
        (Api::OpenAi, 401) => (
            "invalid_request_error",
            "Incorrect API key provided: sk-proj-****************************abcd",
            Some("invalid_api_key"),
        ),
        (Api::OpenAi, 429) => ("requests", "Rate limit reached for requests", Some("rate_limit_exceeded")),
        (Api::OpenAi, 529) => ("server_error", "The engine is currently overloaded, please try again later", None),
        (Api::OpenAi, _) => ("server_error", "The server had an error while processing your request", None),
    };
    ApiError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        kind,
        message: message.into(),
        param: None,
        code,
    }
}

/// What one request asked the mock to do.
struct Plan {
    /// Tokens each choice generates.
    per_choice: u64,
    /// Choices to generate (OpenAI `n`; 1 on Anthropic).
    choices: u64,
    stop: &'static str,
    latency: Duration,
    token_delay: Duration,
    /// A fault that breaks this response (`midstream` only breaks a stream
    /// with tokens in it; `cut` breaks every response).
    broken: Option<Fault>,
    omit_usage: bool,
    stream: bool,
    start: Start,
}

fn directive(headers: &HeaderMap, body: &Value, header_name: &str, field: &str) -> Option<String> {
    headers.get(header_name).and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| {
        body.get("mock").and_then(|m| m.get(field)).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    })
}

fn fault(headers: &HeaderMap, body: &Value) -> Option<Fault> {
    directive(headers, body, "x-mock-error", "error").and_then(|e| Fault::parse(&e))
}

fn plan(config: &LlmMockConfig, api: Api, headers: &HeaderMap, body: &Value, cap: Option<u64>, choices: u64) -> Plan {
    let num = |h, f| directive(headers, body, h, f).and_then(|v| v.parse::<u64>().ok());
    let flag = |h, f| directive(headers, body, h, f).is_some_and(|v| v == "true" || v == "1");
    let wanted = num("x-mock-output-tokens", "output_tokens").unwrap_or(config.default_output_tokens);
    let per_choice = if flag("x-mock-ignore-max-tokens", "ignore_max_tokens") {
        wanted
    } else {
        cap.map_or(wanted, |m| wanted.min(m))
    };
    let fault = fault(headers, body);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let broken = fault.filter(|f| match f {
        Fault::Midstream => stream && per_choice > 0,
        Fault::Cut => true,
        Fault::Status(_) => false,
    });
    let omit_usage = flag("x-mock-omit-usage", "omit_usage");
    let web_search = num("x-mock-web-search-requests", "web_search_requests").unwrap_or(0);
    Plan {
        per_choice,
        choices,
        stop: if per_choice < wanted { "max_tokens" } else { "end_turn" },
        latency: num("x-mock-latency-ms", "latency_ms").map_or(config.latency, Duration::from_millis),
        token_delay: num("x-mock-token-delay-ms", "token_delay_ms").map_or(config.token_delay, Duration::from_millis),
        broken,
        omit_usage,
        stream,
        start: Start {
            input_tokens: count_input_tokens(body),
            cache_creation_input_tokens: num("x-mock-cache-creation-input-tokens", "cache_creation_input_tokens")
                .unwrap_or(0),
            cache_read_input_tokens: num("x-mock-cache-read-input-tokens", "cache_read_input_tokens").unwrap_or(0),
            web_search_requests: if api == Api::Anthropic { web_search } else { 0 },
            usage_omitted: omit_usage,
            interrupted: broken.is_some(),
        },
    }
}

impl Plan {
    /// Tokens each choice emits before the stream ends.
    fn emitted_per_choice(&self) -> u64 {
        if self.broken.is_some() { self.per_choice / 2 } else { self.per_choice }
    }

    /// OpenAI `prompt_tokens`: cached input is part of it.
    fn prompt_tokens(&self) -> u64 {
        self.start
            .input_tokens
            .saturating_add(self.start.cache_creation_input_tokens)
            .saturating_add(self.start.cache_read_input_tokens)
    }

    fn finish_reason(&self) -> &'static str {
        if self.stop == "max_tokens" { "length" } else { "stop" }
    }
}

fn authorized(config: &LlmMockConfig, headers: &HeaderMap) -> bool {
    let Some(want) = &config.api_key else {
        return true;
    };
    let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    });
    presented == Some(want.as_str())
}

/// An optional integer field in `1..=max`: absent (or OpenAI `null`) is `None`.
fn positive_integer(api: Api, body: &Value, field: &'static str, max: u64) -> Result<Option<u64>, ApiError> {
    let value = match body.get(field) {
        None => return Ok(None),
        Some(Value::Null) if api == Api::OpenAi => return Ok(None),
        Some(v) => v,
    };
    if !(value.is_u64() || value.is_i64()) {
        let message = format!("{field}: Input should be a valid integer, got {value}");
        return Err(ApiError::invalid(field, "invalid_type", message));
    }
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ if max == u64::MAX => {
            let message = format!("{field}: Input should be greater than or equal to 1, got {value}");
            Err(ApiError::invalid(field, "integer_below_min_value", message))
        }
        _ => {
            let message = format!("{field}: Input should be between 1 and {max}, got {value}");
            Err(ApiError::invalid(field, "integer_out_of_range", message))
        }
    }
}

/// The output cap and the number of choices, checked as the API checks them.
fn limits(api: Api, body: &Value) -> Result<(Option<u64>, u64), ApiError> {
    match api {
        Api::Anthropic => {
            if body.get("max_completion_tokens").is_some() {
                return Err(ApiError::invalid(
                    "max_completion_tokens",
                    "extra_forbidden",
                    "max_completion_tokens: Extra inputs are not permitted".into(),
                ));
            }
            let cap = positive_integer(api, body, "max_tokens", u64::MAX)?;
            if cap.is_none() {
                return Err(ApiError::invalid("max_tokens", "missing", "max_tokens: Field required".into()));
            }
            Ok((cap, 1))
        }
        Api::OpenAi => {
            let max_tokens = positive_integer(api, body, "max_tokens", u64::MAX)?;
            let max_completion = positive_integer(api, body, "max_completion_tokens", u64::MAX)?;
            if max_tokens.is_some() && max_completion.is_some() {
                return Err(ApiError::invalid(
                    "max_tokens",
                    "invalid_value",
                    "max_tokens and max_completion_tokens cannot both be set; use max_completion_tokens".into(),
                ));
            }
            let n = positive_integer(api, body, "n", 128)?.unwrap_or(1);
            Ok((max_tokens.or(max_completion), n))
        }
    }
}

/// Parses and checks a request common to both APIs.
fn admit(mock: &Mock, api: Api, headers: &HeaderMap, body: Option<&Value>, meter: &Meter) -> Result<Plan, ApiError> {
    if !authorized(&mock.config, headers) {
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: if api == Api::Anthropic { "authentication_error" } else { "invalid_request_error" },
            message: "invalid x-api-key".into(),
            param: None,
            code: Some("invalid_api_key"),
        });
    }
    let body = body.ok_or_else(|| ApiError::invalid("body", "invalid_json", "body is not valid JSON".into()))?;
    let (cap, choices) = limits(api, body)?;
    if body.get("model").and_then(Value::as_str).is_none() {
        return Err(ApiError::invalid("model", "missing", "model: Field required".into()));
    }
    meter.admitted(cap);
    if let Some(Fault::Status(status)) = fault(headers, body) {
        return Err(status_error(api, status));
    }
    Ok(plan(&mock.config, api, headers, body, cap, choices))
}

fn word(i: u64) -> String {
    format!("w{i} ")
}

/// One piece of a response body and the output tokens it carries.
struct Frame {
    bytes: Bytes,
    tokens: u64,
}

impl Frame {
    fn control(bytes: impl Into<Bytes>) -> Self {
        Self { bytes: bytes.into(), tokens: 0 }
    }
}

type Frames = Box<dyn Iterator<Item = Frame> + Send>;

async fn anthropic_messages(State(mock): State<Arc<Mock>>, headers: HeaderMap, raw: Bytes) -> Response {
    generate(&mock, Api::Anthropic, &headers, &raw).await
}

async fn openai_chat(State(mock): State<Arc<Mock>>, headers: HeaderMap, raw: Bytes) -> Response {
    generate(&mock, Api::OpenAi, &headers, &raw).await
}

async fn generate(mock: &Mock, api: Api, headers: &HeaderMap, raw: &Bytes) -> Response {
    let seq = mock.next_id.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("req_mock{seq:016}");
    let body: Option<Value> = serde_json::from_slice(raw).ok();
    let tag = directive(headers, body.as_ref().unwrap_or(&Value::Null), "x-mock-tag", "tag").unwrap_or_default();
    let meter = mock.stats.meter(&tag);
    meter.request();
    let mut resp = match admit(mock, api, headers, body.as_ref(), &meter) {
        Err(e) => e.response(api, &request_id),
        Ok(plan) => {
            if !plan.latency.is_zero() {
                tokio::time::sleep(plan.latency).await;
            }
            let body = body.unwrap_or(Value::Null);
            let model = body.get("model").cloned().unwrap_or(Value::Null);
            meter.started(plan.start);
            match (api, plan.stream) {
                (_, false) if analyzer::is_request(&body) => {
                    analyzer_reply(mock, api, headers, &plan, &body, seq, &meter)
                }
                (Api::Anthropic, false) => {
                    let (json, texts) = anthropic_message(&plan, &format!("msg_mock{seq:016}"), &model);
                    json_response(&json, &texts, plan.broken == Some(Fault::Cut), &meter)
                }
                (Api::Anthropic, true) => {
                    sse_response(anthropic_frames(&plan, format!("msg_mock{seq:016}"), model), plan.token_delay, meter)
                }
                (Api::OpenAi, false) => {
                    let (json, texts) = openai_completion(&plan, &format!("chatcmpl-mock{seq:016}"), &model);
                    json_response(&json, &texts, plan.broken == Some(Fault::Cut), &meter)
                }
                (Api::OpenAi, true) => {
                    let include_usage =
                        body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
                    let frames = openai_frames(&plan, format!("chatcmpl-mock{seq:016}"), model, include_usage);
                    sse_response(frames, plan.token_delay, meter)
                }
            }
        }
    };
    let name = if api == Api::Anthropic { "request-id" } else { "x-request-id" };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// A profile for Winston's website analyzer (see `llm/analyzer.rs`).
fn analyzer_reply(
    mock: &Mock,
    api: Api,
    headers: &HeaderMap,
    plan: &Plan,
    body: &Value,
    seq: u64,
    meter: &Meter,
) -> Response {
    let asked =
        directive(headers, body, "x-mock-analyzer-malformed", "analyzer_malformed").is_some_and(|v| v == "true");
    let queued =
        mock.analyzer_malformed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
    let cap = ["max_tokens", "max_completion_tokens"].iter().find_map(|f| body.get(*f).and_then(Value::as_u64));
    let (text, tokens, capped) = analyzer::answer(body, asked || queued, cap);
    meter.output(tokens);
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let json = match api {
        Api::Anthropic => json!({
            "id": format!("msg_mock{seq:016}"), "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": if capped { "max_tokens" } else { "end_turn" }, "stop_sequence": null,
            "usage": anthropic_usage(plan, tokens),
        }),
        Api::OpenAi => json!({
            "id": format!("chatcmpl-mock{seq:016}"), "object": "chat.completion",
            "created": chrono::Utc::now().timestamp(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": if capped { "length" } else { "stop" }}],
            "usage": openai_usage(plan, tokens),
        }),
    };
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

fn anthropic_usage(plan: &Plan, output_tokens: u64) -> Value {
    let mut usage = json!({
        "input_tokens": plan.start.input_tokens,
        "cache_creation_input_tokens": plan.start.cache_creation_input_tokens,
        "cache_read_input_tokens": plan.start.cache_read_input_tokens,
        "output_tokens": output_tokens,
    });
    if plan.start.web_search_requests > 0 {
        usage["server_tool_use"] = json!({"web_search_requests": plan.start.web_search_requests});
    }
    usage
}

fn openai_usage(plan: &Plan, completion_tokens: u64) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens(),
        "completion_tokens": completion_tokens,
        "total_tokens": plan.prompt_tokens().saturating_add(completion_tokens),
        "prompt_tokens_details": {"cached_tokens": plan.start.cache_read_input_tokens},
    })
}

/// A non-streamed message and the text it carries.
fn anthropic_message(plan: &Plan, id: &str, model: &Value) -> (Value, Vec<String>) {
    let text: String = (0..plan.per_choice).map(word).collect();
    let mut message = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": plan.stop, "stop_sequence": null,
    });
    if !plan.omit_usage {
        message["usage"] = anthropic_usage(plan, plan.per_choice);
    }
    (message, vec![text])
}

/// A non-streamed chat completion and the text of each choice.
fn openai_completion(plan: &Plan, id: &str, model: &Value) -> (Value, Vec<String>) {
    let text: String = (0..plan.per_choice).map(word).collect();
    let choices: Vec<Value> = (0..plan.choices)
        .map(|c| json!({"index": c, "message": {"role": "assistant", "content": text}, "finish_reason": plan.finish_reason()}))
        .collect();
    let mut completion = json!({
        "id": id, "object": "chat.completion", "created": chrono::Utc::now().timestamp(), "model": model,
        "choices": choices,
    });
    if !plan.omit_usage {
        completion["usage"] = openai_usage(plan, plan.per_choice.saturating_mul(plan.choices));
    }
    let texts = (0..plan.choices).map(|_| text.clone()).collect();
    (completion, texts)
}

/// A JSON body; when `cut`, only its first half is sent and the connection
/// is closed, and only the words wholly sent count as emitted.
fn json_response(value: &Value, texts: &[String], cut: bool, meter: &Meter) -> Response {
    let serialized = value.to_string();
    let sent = if cut { serialized.len() / 2 } else { serialized.len() };
    meter.output(words_within(&serialized, texts, sent));
    if !cut {
        return ([(header::CONTENT_TYPE, "application/json")], serialized).into_response();
    }
    let full_length = serialized.len();
    let half = Bytes::from(serialized).slice(..sent);
    // Ending the body short of its content-length makes the server drop the
    // connection: the client sees a truncated body, as after a crash. The
    // pause between lets the server flush the headers and the half first.
    let chunks = futures::stream::unfold(Some(half), |half| async move {
        match half {
            Some(half) => Some((Ok::<_, Infallible>(half), None)),
            None => {
                tokio::task::yield_now().await;
                None
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, full_length)
        .body(Body::from_stream(chunks))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Output words of `texts` (in body order) that end within `body[..sent]`.
fn words_within(body: &str, texts: &[String], sent: usize) -> u64 {
    let mut from = 0;
    let mut words = 0;
    for text in texts.iter().filter(|t| !t.is_empty()) {
        let Some(start) = body.get(from..).and_then(|rest| rest.find(text.as_str())).map(|p| p + from) else {
            continue;
        };
        let mut end = start;
        for w in text.split_inclusive(' ') {
            end += w.len();
            if end > sent {
                return words;
            }
            words += 1;
        }
        from = end;
    }
    words
}

fn sse(event: &str, data: &Value) -> Frame {
    Frame::control(format!("event: {event}\ndata: {data}\n\n"))
}

fn anthropic_frames(plan: &Plan, id: String, model: Value) -> Frames {
    let mut start_usage = anthropic_usage(plan, 1);
    if let Some(u) = start_usage.as_object_mut() {
        u.remove("server_tool_use");
    }
    let head = [
        sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse("ping", &json!({"type": "ping"})),
    ];
    let tokens = (0..plan.emitted_per_choice()).map(|i| {
        let delta =
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}});
        Frame { tokens: 1, ..sse("content_block_delta", &delta) }
    });
    let tail = match plan.broken {
        Some(Fault::Midstream) => {
            vec![sse(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            )]
        }
        Some(Fault::Cut) => vec![],
        _ => {
            let mut delta =
                json!({"type": "message_delta", "delta": {"stop_reason": plan.stop, "stop_sequence": null}});
            if !plan.omit_usage {
                let mut usage = json!({"output_tokens": plan.per_choice});
                if plan.start.web_search_requests > 0 {
                    usage["server_tool_use"] = json!({"web_search_requests": plan.start.web_search_requests});
                }
                delta["usage"] = usage;
            }
            vec![
                sse("content_block_stop", &json!({"type": "content_block_stop", "index": 0})),
                sse("message_delta", &delta),
                sse("message_stop", &json!({"type": "message_stop"})),
            ]
        }
    };
    Box::new(head.into_iter().chain(tokens).chain(tail))
}

fn openai_frames(plan: &Plan, id: String, model: Value, include_usage: bool) -> Frames {
    let created = chrono::Utc::now().timestamp();
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Frame::control(format!("data: {c}\n\n"))
    };
    let choices = plan.choices;
    let head: Vec<Frame> = (0..choices)
        .map(|c| {
            chunk(json!([{"index": c, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), None)
        })
        .collect();
    let tail = match plan.broken {
        Some(Fault::Midstream) => {
            let err = json!({"error": {"message": "The engine is currently overloaded", "type": "engine_overloaded_error", "param": null, "code": null}});
            vec![Frame::control(format!("data: {err}\n\n"))]
        }
        Some(Fault::Cut) => vec![],
        _ => {
            let mut tail: Vec<Frame> = (0..choices)
                .map(|c| chunk(json!([{"index": c, "delta": {}, "finish_reason": plan.finish_reason()}]), None))
                .collect();
            if include_usage && !plan.omit_usage {
                tail.push(chunk(json!([]), Some(openai_usage(plan, plan.per_choice.saturating_mul(choices)))));
            }
            tail.push(Frame::control(Bytes::from_static(b"data: [DONE]\n\n")));
            tail
        }
    };
    let tokens =
        (0..plan.emitted_per_choice()).flat_map(move |i| (0..choices).map(move |c| (i, c))).map(move |(i, c)| Frame {
            tokens: 1,
            ..chunk(json!([{"index": c, "delta": {"content": word(i)}, "finish_reason": null}]), None)
        });
    Box::new(head.into_iter().chain(tokens).chain(tail))
}

/// Streams `frames`, waiting `token_delay` before each token frame and
/// counting a frame's tokens when it is handed to the response.
fn sse_response(frames: Frames, token_delay: Duration, meter: Meter) -> Response {
    let stream = futures::stream::unfold((frames, meter), move |(mut frames, meter)| async move {
        let frame = frames.next()?;
        if frame.tokens > 0 && !token_delay.is_zero() {
            tokio::time::sleep(token_delay).await;
        }
        meter.output(frame.tokens);
        Some((Ok::<_, Infallible>(frame.bytes), (frames, meter)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn stats_report(State(mock): State<Arc<Mock>>) -> Json<StatsReport> {
    Json(mock.stats.report())
}

async fn anthropic_models(State(mock): State<Arc<Mock>>) -> Json<Value> {
    let data: Vec<Value> = mock
        .config
        .models
        .iter()
        .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}))
        .collect();
    Json(
        json!({"data": data, "has_more": false, "first_id": mock.config.models.first(), "last_id": mock.config.models.last()}),
    )
}

async fn openai_models(State(mock): State<Arc<Mock>>) -> Json<Value> {
    let data: Vec<Value> = mock
        .config
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_767_225_600, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
