//! A mock LLM upstream speaking the Anthropic Messages API (under
//! `/anthropic`) and the OpenAI-compatible chat completions API (under
//! `/openai`), streaming and not, with usage in the real field shapes.
//!
//! It generates text, not intelligence: the reply is `n` one-token words.
//! Input tokens are counted deterministically ([`count_input_tokens`]), so
//! tests know the exact usage to expect. Each request can pick its behaviour
//! with headers or a `mock` object in the JSON body (the body form survives a
//! proxy that does not forward unknown headers):
//!
//! | header                 | body field            | effect |
//! |------------------------|-----------------------|--------|
//! | `x-mock-output-tokens` | `mock.output_tokens`  | tokens to generate (capped by `max_tokens`) |
//! | `x-mock-latency-ms`    | `mock.latency_ms`     | delay before the response starts |
//! | `x-mock-token-delay-ms`| `mock.token_delay_ms` | delay between streamed tokens |
//! | `x-mock-error`         | `mock.error`          | `429` (with `retry-after`), `529`, `500`, `midstream` (an `error` event after half the tokens) |
//!
//! Mounting it inside `winston emulator` is left to the emulator module.
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

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
}

impl Default for LlmMockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            default_output_tokens: 16,
            api_key: None,
            models: vec!["claude-sonnet-4-5".into(), "claude-opus-4-1".into(), "kimi-k2.6".into()],
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
}

/// The mock's routes: `POST /anthropic/v1/messages`, `POST
/// /openai/v1/chat/completions`, `GET /anthropic/v1/models`, `GET /openai/v1/models`.
pub fn router(config: LlmMockConfig) -> Router {
    let mock = Arc::new(Mock { config, next_id: AtomicU64::new(1) });
    Router::new()
        .route("/anthropic/v1/messages", post(anthropic_messages))
        .route("/openai/v1/chat/completions", post(openai_chat))
        .route("/anthropic/v1/models", get(anthropic_models))
        .route("/openai/v1/models", get(openai_models))
        .with_state(mock)
}

/// Serves [`router`] on `listener` until the task is dropped or aborted.
///
/// # Errors
/// Fails when accepting connections fails.
pub async fn serve(listener: TcpListener, config: LlmMockConfig) -> std::io::Result<()> {
    // Real providers stream without Nagle delays; so does the mock.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(config)).await
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

/// What one request asked the mock to do.
struct Plan {
    output_tokens: u64,
    stop: &'static str,
    latency: Duration,
    token_delay: Duration,
    error: Option<String>,
}

fn directive(headers: &HeaderMap, body: &Value, header_name: &str, field: &str) -> Option<String> {
    headers.get(header_name).and_then(|v| v.to_str().ok()).map(str::to_string).or_else(|| {
        body.get("mock").and_then(|m| m.get(field)).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    })
}

fn plan(config: &LlmMockConfig, headers: &HeaderMap, body: &Value, max_tokens: Option<u64>) -> Plan {
    let num = |h, f| directive(headers, body, h, f).and_then(|v| v.parse::<u64>().ok());
    let wanted = num("x-mock-output-tokens", "output_tokens").unwrap_or(config.default_output_tokens);
    let output_tokens = max_tokens.map_or(wanted, |m| wanted.min(m));
    Plan {
        output_tokens,
        stop: if output_tokens < wanted { "max_tokens" } else { "end_turn" },
        latency: num("x-mock-latency-ms", "latency_ms").map_or(config.latency, Duration::from_millis),
        token_delay: num("x-mock-token-delay-ms", "token_delay_ms").map_or(config.token_delay, Duration::from_millis),
        error: directive(headers, body, "x-mock-error", "error"),
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

fn error_response(api: Api, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = match api {
        Api::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
        }
        Api::OpenAi => json!({"error": {"message": message, "type": kind}}),
    };
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    resp
}

/// A status error asked for by the request, if any (`midstream` is handled while streaming).
fn injected_error(api: Api, error: Option<&str>) -> Option<Response> {
    let (status, kind, message) = match error? {
        "429" => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "Number of requests has exceeded your rate limit"),
        "529" => (StatusCode::from_u16(529).ok()?, "overloaded_error", "Overloaded"),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error"),
        _ => return None,
    };
    Some(error_response(api, status, kind, message))
}

/// Parses and checks a request common to both APIs.
fn admit(mock: &Mock, api: Api, headers: &HeaderMap, raw: &Bytes) -> Result<(Value, Plan), Box<Response>> {
    let fail = |status, kind, message| Box::new(error_response(api, status, kind, message));
    if !authorized(&mock.config, headers) {
        let kind = if api == Api::Anthropic { "authentication_error" } else { "incorrect_api_key_error" };
        return Err(fail(StatusCode::UNAUTHORIZED, kind, "invalid x-api-key"));
    }
    let bad = |message| fail(StatusCode::BAD_REQUEST, "invalid_request_error", message);
    let body: Value = serde_json::from_slice(raw).map_err(|_| bad("body is not valid JSON"))?;
    let max_tokens = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64);
    if api == Api::Anthropic && max_tokens.is_none() {
        return Err(bad("max_tokens: Field required"));
    }
    if body.get("model").and_then(Value::as_str).is_none() {
        return Err(bad("model: Field required"));
    }
    let plan = plan(&mock.config, headers, &body, max_tokens);
    if let Some(resp) = injected_error(api, plan.error.as_deref()) {
        return Err(Box::new(resp));
    }
    Ok((body, plan))
}

fn word(i: u64) -> String {
    format!("w{i} ")
}

async fn anthropic_messages(State(mock): State<Arc<Mock>>, headers: HeaderMap, raw: Bytes) -> Response {
    let (body, plan) = match admit(&mock, Api::Anthropic, &headers, &raw) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    tokio::time::sleep(plan.latency).await;
    let id = format!("msg_mock{:016}", mock.next_id.fetch_add(1, Ordering::Relaxed));
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let input = count_input_tokens(&body);
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let text: String = (0..plan.output_tokens).map(word).collect();
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": plan.stop, "stop_sequence": null,
            "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": plan.output_tokens}
        }))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let frame = |event: &str, data: Value| Bytes::from(format!("event: {event}\ndata: {data}\n\n"));
        let mut frames = vec![
            frame(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ),
            frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            frame("ping", json!({"type": "ping"})),
        ];
        for f in frames.drain(..) {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        for i in 0..plan.output_tokens {
            if plan.error.as_deref() == Some("midstream") && i == plan.output_tokens / 2 {
                let _ = tx
                    .send(frame(
                        "error",
                        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                    ))
                    .await;
                return;
            }
            tokio::time::sleep(plan.token_delay).await;
            let delta =
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}});
            if tx.send(frame("content_block_delta", delta)).await.is_err() {
                return;
            }
        }
        for f in [
            frame("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            frame(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": plan.stop, "stop_sequence": null},
                "usage": {"output_tokens": plan.output_tokens}}),
            ),
            frame("message_stop", json!({"type": "message_stop"})),
        ] {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    sse_response(rx)
}

async fn openai_chat(State(mock): State<Arc<Mock>>, headers: HeaderMap, raw: Bytes) -> Response {
    let (body, plan) = match admit(&mock, Api::OpenAi, &headers, &raw) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    tokio::time::sleep(plan.latency).await;
    let id = format!("chatcmpl-mock{:016}", mock.next_id.fetch_add(1, Ordering::Relaxed));
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let input = count_input_tokens(&body);
    let finish = if plan.stop == "max_tokens" { "length" } else { "stop" };
    let usage = json!({"prompt_tokens": input, "completion_tokens": plan.output_tokens, "total_tokens": input + plan.output_tokens});
    let created = chrono::Utc::now().timestamp();
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        let text: String = (0..plan.output_tokens).map(word).collect();
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": usage
        }))
        .into_response();
    }
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let chunk = |choices: Value, usage: Option<Value>| {
            let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices});
            if include_usage {
                c["usage"] = usage.unwrap_or(Value::Null);
            }
            Bytes::from(format!("data: {c}\n\n"))
        };
        let first =
            chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), None);
        if tx.send(first).await.is_err() {
            return;
        }
        for i in 0..plan.output_tokens {
            if plan.error.as_deref() == Some("midstream") && i == plan.output_tokens / 2 {
                let err = json!({"error": {"message": "The engine is currently overloaded", "type": "engine_overloaded_error"}});
                let _ = tx.send(Bytes::from(format!("data: {err}\n\n"))).await;
                return;
            }
            tokio::time::sleep(plan.token_delay).await;
            let c = chunk(json!([{"index": 0, "delta": {"content": word(i)}, "finish_reason": null}]), None);
            if tx.send(c).await.is_err() {
                return;
            }
        }
        let mut tail = vec![chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]), None)];
        if include_usage {
            tail.push(chunk(json!([]), Some(usage)));
        }
        tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
        for f in tail {
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    sse_response(rx)
}

fn sse_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
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
