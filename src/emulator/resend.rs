//! The Resend emulator: `POST /emails` (validated, deduplicated by
//! `Idempotency-Key` for 24 hours: the same key and payload answers the
//! original id without sending again; the same key with another payload is
//! 409 `invalid_idempotent_request`) and `GET /emails/{id}`. Nothing is
//! delivered: sent emails are listed in `/_emulator/objects`.
//!
//! # As strict as Resend (its errors and usage-limits pages)
//! - Every request of a team (its API key) draws on a bucket of
//!   `resend_per_second` requests (default 2), refilled continuously; past
//!   it, 429 `rate_limit_exceeded` with `ratelimit-*` and `retry-after`.
//! - An unknown key is 403 `invalid_api_key`; no key is 401 `missing_api_key`.
//! - While a send with an `Idempotency-Key` is in progress
//!   (`resend_send_ms`), another with the same key is 409
//!   `concurrent_idempotent_requests`.
//! - Past `resend_daily_quota` emails in a UTC day, 429 `daily_quota_exceeded`.
//!
//! # Differences that remain
//! - No monthly quota, no `restricted_api_key`, no test-mode recipient rule.
//! - A team is one token (Resend groups several keys under one team).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Shared;
use super::context::{error_response, now_ms, rfc3339};
use crate::platform::Platform;

const P: Platform = Platform::Resend;
const DEDUP_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Email {
    pub id: String,
    pub request: Value,
    pub idempotency_key: Option<String>,
    pub payload_hash: String,
    pub created_ms: i64,
}

/// Every email the emulator accepted.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResendWorld {
    pub emails: BTreeMap<String, Email>,
}

impl ResendWorld {
    /// Sent emails, for `/_emulator/objects`.
    #[must_use]
    pub fn objects(&self) -> Value {
        json!({
            "email": self.emails.values().map(|e| json!({"id": e.id, "to": e.request.get("to"),
                "subject": e.request.get("subject"), "idempotency_key": e.idempotency_key})).collect::<Vec<_>>(),
        })
    }
}

/// One Resend team's request bucket and today's sent emails.
#[derive(Debug)]
struct Team {
    tokens: f64,
    at: std::time::Instant,
    day: i64,
    sent_today: u32,
}

impl Team {
    fn new(tokens: f64) -> Self {
        Self { tokens, at: std::time::Instant::now(), day: now_ms() / DAY_MS, sent_today: 0 }
    }
}

/// Refill a request may arrive early by (timer and clock granularity): a
/// client paced by the same bucket is never refused for a millisecond.
const EARLY_S: f64 = 0.01;

/// Per-team limits (transient, never persisted): request buckets, daily
/// email counts and the idempotency keys of sends in progress.
#[derive(Debug, Default)]
pub struct TeamLimits {
    teams: Mutex<BTreeMap<String, Team>>,
    in_flight: Mutex<BTreeSet<String>>,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

impl TeamLimits {
    fn teams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Team>> {
        self.teams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one request from `team`'s bucket of `per_second`: the whole
    /// requests left, or the seconds to wait.
    ///
    /// # Errors
    /// The seconds until a request is admitted again.
    pub fn admit(&self, team: &str, per_second: u32) -> Result<u32, u64> {
        let now = std::time::Instant::now();
        let rate = f64::from(per_second.max(1));
        let mut teams = self.teams();
        let t = teams.entry(team.to_string()).or_insert_with(|| Team::new(rate));
        t.tokens = (t.tokens + now.saturating_duration_since(t.at).as_secs_f64() * rate).min(rate);
        t.at = now;
        if t.tokens + EARLY_S * rate < 1.0 {
            return Err(((1.0 - t.tokens) / rate).ceil().max(1.0) as u64);
        }
        t.tokens = (t.tokens - 1.0).max(0.0);
        Ok(t.tokens.floor() as u32)
    }

    /// Counts one email `team` sends today; `false` once `quota` is reached.
    fn take_quota(&self, team: &str, quota: Option<u32>) -> bool {
        let now = now_ms();
        let mut teams = self.teams();
        let t = teams.entry(team.to_string()).or_insert_with(|| Team::new(0.0));
        if t.day != now / DAY_MS {
            (t.day, t.sent_today) = (now / DAY_MS, 0);
        }
        if quota.is_some_and(|q| t.sent_today >= q) {
            return false;
        }
        t.sent_today += 1;
        true
    }

    /// Marks a send with `key` in progress; `None` when one already is.
    fn begin(&self, key: &str) -> Option<InFlight<'_>> {
        self.keys().insert(key.to_string()).then(|| InFlight { limits: self, key: key.to_string() })
    }
}

/// A send in progress: its key is released when it ends, however it ends.
struct InFlight<'a> {
    limits: &'a TeamLimits,
    key: String,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.limits.keys().remove(&self.key);
    }
}

pub(super) fn router() -> Router<Shared> {
    Router::new().route("/emails", post(send)).route("/emails/{id}", get(get_email))
}

fn recipients(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Resend's validation, in its error codes.
fn validate(body: &Value) -> Result<(), (u16, &'static str, String)> {
    let s = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    for field in ["from", "subject"] {
        if s(field).is_none() {
            return Err((422, "missing_required_field", format!("Missing `{field}` field.")));
        }
    }
    let Some(to) = recipients(body.get("to")).filter(|t| !t.is_empty()) else {
        return Err((422, "missing_required_field", "Missing `to` field.".into()));
    };
    if to.len() > 50 {
        return Err((422, "validation_error", "Too many recipients: `to` accepts at most 50.".into()));
    }
    if s("html").is_none() && s("text").is_none() && body.get("template").is_none() {
        return Err((422, "missing_required_field", "Missing `html` or `text` field.".into()));
    }
    let from = s("from").unwrap_or_default();
    let address = from.rsplit_once('<').map_or(from, |(_, a)| a.trim_end_matches('>'));
    if !address.contains('@') || to.iter().any(|t| !t.contains('@')) {
        return Err((
            422,
            "invalid_from_address",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.".into(),
        ));
    }
    Ok(())
}

/// Why a send was refused after validation.
enum Refusal {
    KeyReused,
    Quota,
}

async fn send(State(emu): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    emu.guard(P, "sendEmail", &headers, || async {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
        if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256) {
            return error_response(P, 400, "invalid_idempotency_key", "The key must be between 1-256 chars.", &headers);
        }
        if let Err((status, code, message)) = validate(&body) {
            return error_response(P, status, code, &message, &headers);
        }
        let team = super::context::bearer(&headers);
        let _in_flight = match key.as_deref().map(|k| emu.resend_teams.begin(&format!("{team}\n{k}"))) {
            Some(None) => {
                return error_response(
                    P,
                    409,
                    "concurrent_idempotent_requests",
                    "Same idempotency key used while original request is still in progress.",
                    &headers,
                );
            }
            Some(Some(guard)) => Some(guard),
            None => None,
        };
        if emu.config.resend_send_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(emu.config.resend_send_ms)).await;
        }
        let hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        let now = now_ms();
        let quota = emu.config.resend_daily_quota;
        // Look-up and insert under one lock, so two sends with one key cannot both deliver.
        let outcome = emu.touch(|w| {
            let previous = key.as_ref().and_then(|k| {
                w.resend
                    .emails
                    .values()
                    .find(|e| e.idempotency_key.as_ref() == Some(k) && now - e.created_ms < DEDUP_WINDOW_MS)
            });
            match previous {
                Some(e) if e.payload_hash == hash => Ok((e.id.clone(), false)),
                Some(_) => Err(Refusal::KeyReused),
                None if !emu.resend_teams.take_quota(&team, quota) => Err(Refusal::Quota),
                None => {
                    let email = Email {
                        id: uuid::Uuid::new_v4().to_string(),
                        request: body.clone(),
                        idempotency_key: key.clone(),
                        payload_hash: hash.clone(),
                        created_ms: now,
                    };
                    let id = email.id.clone();
                    w.resend.emails.insert(id.clone(), email);
                    Ok((id, true))
                }
            }
        });
        let id = match outcome {
            Ok((id, sent)) => {
                if sent {
                    emu.count_mutation(P);
                }
                id
            }
            Err(Refusal::KeyReused) => {
                return error_response(
                    P,
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload. Change your idempotency key or payload.",
                    &headers,
                );
            }
            Err(Refusal::Quota) => {
                let mut resp = error_response(
                    P,
                    429,
                    "daily_quota_exceeded",
                    "You have reached your daily email sending quota.",
                    &headers,
                );
                let to_midnight = (DAY_MS - now.rem_euclid(DAY_MS)) / 1000;
                if let Ok(v) = axum::http::HeaderValue::from_str(&to_midnight.max(1).to_string()) {
                    resp.headers_mut().insert("retry-after", v);
                }
                return resp;
            }
        };
        Json(json!({"id": id})).into_response()
    })
    .await
}

async fn get_email(State(emu): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    emu.guard(P, "getEmail", &headers, || async {
        emu.read(|w| match w.resend.emails.get(&id) {
            Some(e) => {
                let r = &e.request;
                let list = |k: &str| recipients(r.get(k)).map_or(Value::Null, |v| json!(v));
                Json(json!({"object": "email", "id": e.id, "to": list("to"), "from": r.get("from"),
                    "created_at": rfc3339(e.created_ms), "subject": r.get("subject"), "html": r.get("html"),
                    "text": r.get("text"), "bcc": list("bcc"), "cc": list("cc"), "reply_to": list("reply_to"),
                    "last_event": "delivered", "scheduled_at": r.get("scheduled_at"), "tags": r.get("tags")}))
                .into_response()
            }
            None => error_response(P, 404, "not_found", "Email not found", &headers),
        })
    })
    .await
}
