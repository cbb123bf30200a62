//! Supabase Auth (GoTrue) of each emulated project, under
//! `/supabase-projects/<ref>/auth/v1` (the stand-in for
//! `https://<ref>.supabase.co/auth/v1`):
//! - `POST /admin/users` `{email, password, email_confirm, user_metadata}`
//!   -> the user; 422 `email_exists` when the address is registered;
//! - `GET /admin/users?page=&per_page=` -> `{"users": [...], "aud"}`
//!   (pages from 1, default 50 per page) and `GET /admin/users/{id}`;
//! - `PUT /admin/users/{id}` `{password?, email_confirm?, user_metadata?}`
//!   -> the user (GoTrue's admin update: a new password replaces the old,
//!   `user_metadata` is merged key by key, a `null` value removes a key);
//!   404 `user_not_found`, 422 `weak_password`;
//! - `POST /token?grant_type=password` `{email, password}` -> a session,
//!   400 `invalid_credentials` otherwise (so a test can prove a password).
//!
//! Admin calls need the project's `service_role` key as `apikey` and as the
//! bearer token (401 otherwise), like the platform; sign-in takes the anon
//! key. A project that is not ACTIVE_HEALTHY answers 503. Passwords are kept
//! as SHA-256 hashes and never returned. Armed faults for platform
//! `supabase` and operations `createUser`, `listUsers`, `getUser`, `updateUser` apply.
use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Shared;
use super::context::{now_ms, rfc3339};
use super::faults::FaultKind;
use crate::platform::Platform;

const P: Platform = Platform::Supabase;

/// One user of one project.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_sha256: String,
    pub email_confirmed: bool,
    pub user_metadata: Value,
    pub created_ms: i64,
}

/// Users per project ref.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthWorld {
    pub projects: BTreeMap<String, Vec<User>>,
}

impl AuthWorld {
    /// Live users, for `/_emulator/objects` (no password hashes).
    #[must_use]
    pub fn objects(&self) -> Value {
        let users: Vec<Value> = self
            .projects
            .iter()
            .flat_map(|(r, us)| {
                us.iter().map(move |u| {
                    json!({"id": u.id, "name": u.email, "project": r,
                "email_confirmed": u.email_confirmed, "user_metadata": u.user_metadata})
                })
            })
            .collect();
        json!({"user": users})
    }

    /// Forgets the users of a deleted project.
    pub fn forget(&mut self, reference: &str) {
        self.projects.remove(reference);
    }
}

/// The routes, to be nested under the projects' base path.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/{reference}/auth/v1/admin/users", post(create_user).get(list_users))
        .route("/{reference}/auth/v1/admin/users/{id}", get(get_user).put(update_user))
        .route("/{reference}/auth/v1/token", post(token))
}

fn gotrue_error(status: u16, code: &str, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (s, axum::Json(json!({"code": status, "error_code": code, "msg": message}))).into_response()
}

fn sha(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn user_json(u: &User) -> Value {
    json!({"id": u.id, "aud": "authenticated", "role": "authenticated", "email": u.email,
        "email_confirmed_at": u.email_confirmed.then(|| rfc3339(u.created_ms)),
        "app_metadata": {"provider": "email", "providers": ["email"]}, "user_metadata": u.user_metadata,
        "identities": [], "created_at": rfc3339(u.created_ms), "updated_at": rfc3339(u.created_ms),
        "is_anonymous": false})
}

/// Which project key a call must carry.
#[derive(Clone, Copy)]
enum Needs {
    ServiceRole,
    Anon,
}

/// Checks the project and its key, then applies an armed fault: `None` to
/// go on, or the answer to give. A dropped answer is reported by `true`.
async fn admit(emu: &Shared, reference: &str, headers: &HeaderMap, needs: Needs, op: &str) -> Result<bool, Response> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_string);
    let project = emu.read(|w| w.supabase.projects.get(reference).cloned());
    let Some(p) = project else { return Err(gotrue_error(404, "not_found", "project not found")) };
    if p.fail || !emu.elapsed(p.created_ms, 1.0) {
        return Err(gotrue_error(503, "service_unavailable", "project is not healthy yet"));
    }
    let name = match needs {
        Needs::ServiceRole => "service_role",
        Needs::Anon => "anon",
    };
    let key = p.keys.iter().find(|k| k.name == name).and_then(|k| k.key.clone()).unwrap_or_default();
    let bearer =
        header("authorization").map(|a| a.trim_start_matches("Bearer ").trim_start_matches("bearer ").to_string());
    let apikey_ok = header("apikey").as_deref() == Some(key.as_str());
    let bearer_ok = matches!(needs, Needs::Anon) || bearer.as_deref() == Some(key.as_str());
    if key.is_empty() || !apikey_ok || !bearer_ok {
        return Err(gotrue_error(401, "no_authorization", "This endpoint requires a valid service_role key"));
    }
    let mut dropped = false;
    if let Some(f) = emu.faults.take_request(P, op) {
        match f.kind {
            FaultKind::RateLimit => return Err(gotrue_error(429, "over_request_rate_limit", "rate limit exceeded")),
            FaultKind::ServerError | FaultKind::Locked => {
                return Err(gotrue_error(f.status.unwrap_or(500), "unexpected_failure", "injected server error"));
            }
            FaultKind::Delay => tokio::time::sleep(Duration::from_millis(f.delay_ms.unwrap_or(5_000))).await,
            FaultKind::DropResponse => dropped = true,
            FaultKind::FailDeployment => {}
        }
    }
    Ok(dropped)
}

/// The answer, or a broken connection when the fault said so.
fn answer(dropped: bool, resp: Response) -> Response {
    if !dropped {
        return resp;
    }
    let failing = futures::stream::once(async { Err::<bytes::Bytes, _>(std::io::Error::other("response dropped")) });
    (resp.status(), Body::from_stream(failing)).into_response()
}

async fn create_user(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let dropped = match admit(&emu, &reference, &headers, Needs::ServiceRole, "createUser").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let email = body.get("email").and_then(Value::as_str).unwrap_or_default().trim().to_lowercase();
    let password = body.get("password").and_then(Value::as_str).unwrap_or_default();
    if !email.contains('@') {
        return gotrue_error(400, "validation_failed", "Unable to validate email address: invalid format");
    }
    if password.len() < 6 {
        return gotrue_error(422, "weak_password", "Password should be at least 6 characters.");
    }
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.clone(),
        password_sha256: sha(password),
        email_confirmed: body.get("email_confirm").and_then(Value::as_bool).unwrap_or(false),
        user_metadata: body.get("user_metadata").cloned().unwrap_or_else(|| json!({})),
        created_ms: now_ms(),
    };
    let out = emu.write(P, |w| {
        let users = w.supabase_auth.projects.entry(reference.clone()).or_default();
        if users.iter().any(|u| u.email == email) {
            return Err(());
        }
        users.push(user.clone());
        Ok(())
    });
    match out {
        Ok(()) => answer(dropped, axum::Json(user_json(&user)).into_response()),
        Err(()) => gotrue_error(422, "email_exists", "A user with this email address has already been registered"),
    }
}

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list_users(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(q): Query<Page>,
) -> Response {
    let dropped = match admit(&emu, &reference, &headers, Needs::ServiceRole, "listUsers").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (page, per_page) = (q.page.unwrap_or(1).max(1), q.per_page.unwrap_or(50).clamp(1, 1000));
    let (users, total) = emu.read(|w| {
        let all = w.supabase_auth.projects.get(&reference).cloned().unwrap_or_default();
        let page: Vec<Value> = all.iter().skip((page - 1) * per_page).take(per_page).map(user_json).collect();
        (page, all.len())
    });
    let mut resp = axum::Json(json!({"users": users, "aud": "authenticated"})).into_response();
    if let Ok(v) = total.to_string().parse() {
        resp.headers_mut().insert("x-total-count", v);
    }
    answer(dropped, resp)
}

async fn get_user(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((reference, id)): Path<(String, String)>,
) -> Response {
    let dropped = match admit(&emu, &reference, &headers, Needs::ServiceRole, "getUser").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let user =
        emu.read(|w| w.supabase_auth.projects.get(&reference).and_then(|us| us.iter().find(|u| u.id == id).cloned()));
    match user {
        Some(u) => answer(dropped, axum::Json(user_json(&u)).into_response()),
        None => gotrue_error(404, "user_not_found", "User not found"),
    }
}

async fn update_user(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((reference, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let dropped = match admit(&emu, &reference, &headers, Needs::ServiceRole, "updateUser").await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let password = body.get("password").and_then(Value::as_str);
    if password.is_some_and(|p| p.len() < 6) {
        return gotrue_error(422, "weak_password", "Password should be at least 6 characters.");
    }
    let updated = emu.write(P, |w| {
        let users = w.supabase_auth.projects.get_mut(&reference).ok_or(())?;
        let user = users.iter_mut().find(|u| u.id == id).ok_or(())?;
        if let Some(p) = password {
            user.password_sha256 = sha(p);
        }
        if body.get("email_confirm").and_then(Value::as_bool) == Some(true) {
            user.email_confirmed = true;
        }
        if let Some(meta) = body.get("user_metadata").and_then(Value::as_object) {
            if !user.user_metadata.is_object() {
                user.user_metadata = json!({});
            }
            if let Some(current) = user.user_metadata.as_object_mut() {
                for (k, v) in meta {
                    if v.is_null() {
                        current.remove(k);
                    } else {
                        current.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Ok(user.clone())
    });
    match updated {
        Ok(u) => answer(dropped, axum::Json(user_json(&u)).into_response()),
        Err(()) => gotrue_error(404, "user_not_found", "User not found"),
    }
}

async fn token(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Err(r) = admit(&emu, &reference, &headers, Needs::Anon, "signIn").await {
        return r;
    }
    let email = body.get("email").and_then(Value::as_str).unwrap_or_default().trim().to_lowercase();
    let hash = sha(body.get("password").and_then(Value::as_str).unwrap_or_default());
    let user = emu.read(|w| {
        w.supabase_auth.projects.get(&reference).and_then(|us| us.iter().find(|u| u.email == email).cloned())
    });
    match user {
        Some(u) if u.password_sha256 == hash && u.email_confirmed => axum::Json(json!({
            "access_token": uuid::Uuid::new_v4().to_string(), "token_type": "bearer", "expires_in": 3600,
            "refresh_token": uuid::Uuid::new_v4().simple().to_string(), "user": user_json(&u)}))
        .into_response(),
        _ => gotrue_error(400, "invalid_credentials", "Invalid login credentials"),
    }
}
