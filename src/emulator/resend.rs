//! The Resend emulator: `POST /emails` (validated, deduplicated by
//! `Idempotency-Key` for 24 hours: the same key and payload answers the
//! original id without sending again; the same key with another payload is
//! 409 `invalid_idempotent_request`) and `GET /emails/{id}`. Nothing is
//! delivered: sent emails are listed in `/_emulator/objects`.
use std::collections::BTreeMap;

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

async fn send(State(emu): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    emu.guard(P, "sendEmail", &headers, || async {
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
        if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 256) {
            return error_response(P, 400, "invalid_idempotency_key", "The key must be between 1-256 chars.", &headers);
        }
        if let Err((status, code, message)) = validate(&body) {
            return error_response(P, status, code, &message, &headers);
        }
        let hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        let now = now_ms();
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
                Some(_) => Err(()),
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
            Err(()) => {
                return error_response(
                    P,
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload. Change your idempotency key or payload.",
                    &headers,
                );
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
