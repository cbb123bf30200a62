//! The runtime's small endpoints: gateway-token auth, memory, skills,
//! health and status. Chat lives in [`super::chat`].
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AgentState;
use super::error::{ApiError, parse_json};

/// Longest memory key, scope and search query, in bytes.
const MAX_KEY: usize = 200;
/// Most search results one call returns.
const MAX_RESULTS: i64 = 50;

/// The token presented in `Authorization: Bearer` or `x-gateway-token`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get("x-gateway-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in time independent of where the values differ: both sides are
/// hashed to 32 bytes first, so neither the position of the first
/// difference nor the length of the expected token shows in the timing.
#[must_use]
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: only callers with the gateway token get through.
pub async fn require_token(State(st): State<Arc<AgentState>>, req: Request, next: Next) -> Response {
    match presented(req.headers()) {
        Some(t) if !t.is_empty() && tokens_match(t, st.gateway_token.expose()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMemory {
    content: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

fn bounded(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    super::error::no_nul(what, v)?;
    if v.trim().is_empty() {
        return Err(ApiError::BadRequest(format!("`{what}` must not be empty")));
    }
    if v.len() > max {
        return Err(ApiError::BadRequest(format!("`{what}` is longer than {max} bytes")));
    }
    Ok(())
}

/// `POST /api/memory`: `{"content", "key"?, "scope"?}`; the same scope and
/// key replace the memory. Also noted in the day's log.
pub async fn remember(
    State(st): State<Arc<AgentState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|r| ApiError::from_body(&r, st.body_limit))?;
    let m: NewMemory = parse_json(&body)?;
    bounded("content", &m.content, st.body_limit)?;
    let scope = m.scope.unwrap_or_else(|| "global".into());
    let key = m.key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    bounded("scope", &scope, MAX_KEY)?;
    bounded("key", &key, MAX_KEY)?;
    if scope == super::store::DAILY_SCOPE {
        return Err(ApiError::BadRequest("the `daily` scope is the runtime's own log".into()));
    }
    let id = st.store.remember(&scope, &key, &m.content).await.map_err(|e| ApiError::db(&e))?;
    st.store
        .log_daily(Utc::now().date_naive(), &format!("remembered {scope}/{key}"))
        .await
        .map_err(|e| ApiError::db(&e))?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "scope": scope, "key": key}))).into_response())
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/memory/search?q=...&limit=`: full-text search, best first.
pub async fn search(
    State(st): State<Arc<AgentState>>,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|_| {
        ApiError::BadRequest("the query must be `q` (text) and optionally `limit` (a whole number)".into())
    })?;
    let text = q.q.unwrap_or_default();
    bounded("q", &text, MAX_KEY)?;
    let limit = q.limit.unwrap_or(10).clamp(1, MAX_RESULTS);
    let found = st.store.search(&text, limit).await.map_err(|e| ApiError::db(&e))?;
    Ok(Json(json!({"query": text, "results": found})))
}

/// `GET /api/memory/daily/{date}` (`YYYY-MM-DD` or `today`).
pub async fn daily(
    State(st): State<Arc<AgentState>>,
    date: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(date) = date.map_err(|_| bad_path())?;
    let day = if date == "today" {
        Utc::now().date_naive()
    } else {
        NaiveDate::parse_from_str(&date, "%Y-%m-%d")
            .map_err(|_| ApiError::BadRequest("the date must be YYYY-MM-DD or `today`".into()))?
    };
    let log = st.store.daily(day).await.map_err(|e| ApiError::db(&e))?;
    let entries: Vec<&str> = log.as_deref().map(|l| l.lines().collect()).unwrap_or_default();
    Ok(Json(json!({"date": day.format("%Y-%m-%d").to_string(), "entries": entries})))
}

/// The workspace's skills with their switch: on unless switched off.
pub async fn skill_states(st: &AgentState) -> Result<Vec<(super::workspace::Skill, bool)>, ApiError> {
    let set = st.store.skill_settings().await.map_err(|e| ApiError::db(&e))?;
    Ok(st
        .workspace
        .skills()
        .into_iter()
        .map(|s| {
            let on = set.iter().find(|(n, _)| *n == s.name).is_none_or(|(_, e)| *e);
            (s, on)
        })
        .collect())
}

/// `GET /api/skills`.
pub async fn skills(State(st): State<Arc<AgentState>>) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = skill_states(&st)
        .await?
        .into_iter()
        .map(|(s, on)| json!({"name": s.name, "description": s.description, "enabled": on}))
        .collect();
    Ok(Json(json!({"skills": list})))
}

/// `POST /api/skills/{name}/{enable|disable}`.
pub async fn switch_skill(
    State(st): State<Arc<AgentState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((name, action)) = path.map_err(|_| bad_path())?;
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return Err(ApiError::NotFound("use /api/skills/{name}/enable or /disable".into())),
    };
    if !st.workspace.skills().iter().any(|s| s.name == name) {
        return Err(ApiError::NotFound("this agent's workspace has no skill by that name".into()));
    }
    st.store.set_skill(&name, enabled).await.map_err(|e| ApiError::db(&e))?;
    Ok(Json(json!({"name": name, "enabled": enabled})))
}

/// `GET /health` (and `/healthz`): 200 while the runtime can answer chats,
/// 503 when its database is away. Open to the platform's health checks.
pub async fn health(State(st): State<Arc<AgentState>>) -> Response {
    let db = st.store.ping().await;
    let pending = st.spool.pending().await.ok();
    let push = st.push_status();
    let channel = if db { "ready" } else { "degraded" };
    let body = json!({
        "status": if db { "ok" } else { "degraded" },
        "instance": st.instance,
        "workspace_hash": st.workspace_hash,
        "database": if db { "ok" } else { "unreachable" },
        "channels": {"api": {"state": channel}},
        "transcripts": {
            "pending": pending,
            "last_push_ok": push.last_ok,
            "last_error": push.last_error,
            "failing_seconds": push.failing_since.map(|t| t.elapsed().as_secs()),
        },
    });
    let code = if db { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `GET /status`: messages, tokens and the credits left as the proxy last
/// reported them (`null` before the first LLM call).
pub async fn status(State(st): State<Arc<AgentState>>) -> Result<Json<Value>, ApiError> {
    let totals = st.store.totals().await.map_err(|e| ApiError::db(&e))?;
    let credits = st.credits_remaining.load(Ordering::Acquire);
    let pending = st.spool.pending().await.map_err(|_| ApiError::Spool)?;
    Ok(Json(json!({
        "instance": st.instance,
        "model": st.llm.model(),
        "conversations": totals.conversations,
        "messages": totals.messages,
        "llm_calls": totals.llm_calls,
        "tokens": {"input": totals.input_tokens, "output": totals.output_tokens},
        "credits_remaining": (credits != super::UNKNOWN).then_some(credits),
        "transcripts_pending": pending,
        "uptime_seconds": st.started.elapsed().as_secs(),
    })))
}

/// Any other path: a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see docs/runtime-contract.md".into())
}

/// A known path asked with another method: a JSON 405.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A path segment that is not valid UTF-8 once decoded (`%FF`).
fn bad_path() -> ApiError {
    ApiError::BadRequest("the path is not valid UTF-8 text".into())
}

#[cfg(test)]
mod tests {
    use super::tokens_match;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(tokens_match("wgt_abc", "wgt_abc"));
        assert!(!tokens_match("wgt_abd", "wgt_abc"));
        assert!(!tokens_match("wgt_ab", "wgt_abc"));
        assert!(!tokens_match("", "wgt_abc"));
    }
}
