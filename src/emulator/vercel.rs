//! The Vercel REST API emulator: projects (`/v11` and `/v8` create, `/v9`
//! and `/v10` read, `/v8` and `/v9` delete), bulk environment variables with
//! `upsert` and per-item partial failures, deployments from a git source
//! (`/v13/deployments` and the older `/v12/now/deployments`) whose
//! `readyState` moves QUEUED -> INITIALIZING -> BUILDING -> READY over
//! `--async-delay-ms`, or ERROR when a `fail_deployment` fault is armed.
//!
//! Every call may carry `?teamId=` (or `?slug=`); objects are scoped to it.
//! Errors use Vercel's `{"error": {"code", "message"}}` envelope.
//!
//! # As strict as Vercel (`@vercel/sdk` models)
//! - `GET /v6/deployments` items have the list shape (`operations.Deployments`):
//!   `uid`, `name`, `url`, `created`, `state`, `readyState`, `type`,
//!   `creator`, `meta`, `target`, `aliasAssigned`, `aliasError`,
//!   `createdAt`, `buildingAt`, `ready`, `inspectorUrl`; no `id`, no
//!   `alias`. Only `GET /v13/deployments/{id}` lists the aliases.
//! - A READY deployment gets its alias a moment later: for
//!   [`VercelOptions::alias_lag_ms`] (default a quarter of the async delay)
//!   it is READY with `aliasAssigned: false` and no alias.
//! - [`VercelOptions::next_deployment_state`] makes the next deployment end
//!   `BLOCKED`, `CANCELED`, `DELETED` or `ERROR` instead of READY.
//! - Env lists are paginated ([`VercelOptions::env_page_size`], default 20)
//!   with `pagination.next` asked back as `until`, and a variable with one
//!   target lists it as a string (`FilterProjectEnvsTarget1`) unless
//!   [`VercelOptions::string_targets`] is off.
//!
//! - `environmentVariables` in the project create body are created with
//!   the project, all or none (an invalid one refuses the create).
//! - Every 429 carries `x-ratelimit-limit`, `-remaining` (0) and `-reset`
//!   (epoch seconds) with `Retry-After`.
//!
//! Options are read and changed (JSON merge) at `GET`/`PUT
//! /vercel/_emulator/options`; this endpoint needs no token.
//!
//! # Differences that remain
//! - `pagination.next` is an opaque position, not a timestamp.
//! - Per-endpoint limits only on project creation and deployment creation
//!   ([`super::limits`]; per-minute defaults are configurable, not read from
//!   Vercel); every other call shares the emulator's global window.
//! - Deployments per day ([`super::limits::VercelPlan`]: Hobby 100, Pro
//!   6000) answer 402 with the plan's code and a `limit.reset` at the end of
//!   a fixed day window; Vercel was seen to answer "now + 24 h" on every
//!   refused call instead. Project count limits (Hobby: 200 projects) are
//!   not emulated.
//! - No `PATCH /v12/deployments/{id}/cancel`; canceled deployments come
//!   from the option only.

// Handlers return a ready `Response` as the error of their world closures:
// it is answered at once, so its size does not matter.
#![allow(clippy::result_large_err)]
use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;
use super::context::{ALNUM_LOWER, Emulator, error_response, now_ms, random_string};
use crate::platform::Platform;

const P: Platform = Platform::Vercel;
const ENV_TYPES: [&str; 5] = ["plain", "encrypted", "sensitive", "secret", "system"];
const TARGETS: [&str; 3] = ["production", "preview", "development"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub framework: Option<String>,
    pub git_repository: Option<Value>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvVar {
    pub id: String,
    pub project_id: String,
    pub key: String,
    pub value: String,
    pub kind: String,
    pub target: Vec<String>,
    pub comment: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub url: String,
    pub target: Option<String>,
    pub alias: String,
    pub git_source: Value,
    pub meta: Value,
    pub fail: bool,
    /// The state the deployment ends in instead of READY (the option).
    #[serde(default)]
    pub end_state: Option<String>,
    pub created_ms: i64,
}

/// How strict the Vercel emulator is; see the module docs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct VercelOptions {
    /// Time between READY and the alias being assigned; `None` = a
    /// quarter of `--async-delay-ms`.
    pub alias_lag_ms: Option<u64>,
    /// Variables per env list page.
    pub env_page_size: usize,
    /// List a variable with one target as `"target": "<t>"`.
    pub string_targets: bool,
    /// The next deployment created ends in this state (consumed once):
    /// `BLOCKED | CANCELED | DELETED | ERROR`.
    pub next_deployment_state: Option<String>,
}

impl Default for VercelOptions {
    fn default() -> Self {
        Self { alias_lag_ms: None, env_page_size: 20, string_targets: true, next_deployment_state: None }
    }
}

/// States a deployment may be told to end in.
const END_STATES: [&str; 4] = ["BLOCKED", "CANCELED", "DELETED", "ERROR"];

/// Every Vercel object of the emulator.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VercelWorld {
    pub projects: BTreeMap<String, Project>,
    pub envs: BTreeMap<String, EnvVar>,
    pub deployments: BTreeMap<String, Deployment>,
    pub options: VercelOptions,
}

impl VercelWorld {
    /// Live objects per kind, for `/_emulator/objects`.
    #[must_use]
    pub fn objects(&self) -> Value {
        json!({
            "project": self.projects.values().map(|p| json!({"id": p.id, "name": p.name, "team_id": p.team})).collect::<Vec<_>>(),
            "env": self.envs.values().map(|e| json!({"id": e.id, "key": e.key, "project_id": e.project_id})).collect::<Vec<_>>(),
            "deployment": self.deployments.values().map(|d| json!({"id": d.id, "project_id": d.project_id})).collect::<Vec<_>>(),
        })
    }

    fn project(&self, team: Option<&str>, id_or_name: &str) -> Option<&Project> {
        self.projects.values().find(|p| p.team.as_deref() == team && (p.id == id_or_name || p.name == id_or_name))
    }
}

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/v11/projects", post(create_project))
        .route("/v8/projects", post(create_project))
        .route("/v9/projects/{id}", get(get_project).delete(delete_project))
        .route("/v10/projects/{id}", get(get_project))
        .route("/v8/projects/{id}", axum::routing::delete(delete_project))
        .route("/v10/projects/{id}/env", post(create_env).get(list_env))
        .route("/v9/projects/{id}/env", get(list_env))
        .route("/v8/projects/{id}/env", get(list_env))
        .route("/v13/deployments", post(create_deployment))
        .route("/v12/now/deployments", post(create_deployment))
        .route("/v13/deployments/{id}", get(get_deployment).delete(delete_deployment))
        .route("/v6/deployments", get(list_deployments))
        .route("/_emulator/options", get(get_options).put(set_options))
}

async fn get_options(State(emu): State<Shared>) -> Response {
    emu.read(|w| Json(json!(w.vercel.options)).into_response())
}

/// Merges the given fields into the options; unknown fields or values are a 400.
async fn set_options(State(emu): State<Shared>, Json(patch): Json<Value>) -> Response {
    emu.touch(|w| {
        let mut merged = json!(w.vercel.options);
        if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                m.insert(k.clone(), v.clone());
            }
        }
        let parsed = serde_json::from_value::<VercelOptions>(merged).map_err(|e| e.to_string()).and_then(|o| {
            match o.next_deployment_state.as_deref() {
                Some(s) if !END_STATES.contains(&s) => {
                    Err(format!("nextDeploymentState must be one of {END_STATES:?}"))
                }
                _ if o.env_page_size == 0 => Err("envPageSize must be positive".into()),
                _ => Ok(o),
            }
        });
        match parsed {
            Ok(o) => {
                w.vercel.options = o;
                Json(json!(w.vercel.options)).into_response()
            }
            Err(e) => err(400, "bad_request", &e),
        }
    })
}

/// `teamId` / `slug` and the other query parameters Vercel endpoints take.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Scope {
    team_id: Option<String>,
    slug: Option<String>,
    upsert: Option<String>,
    decrypt: Option<String>,
    project_id: Option<String>,
    limit: Option<usize>,
    target: Option<String>,
    until: Option<String>,
}

impl Scope {
    fn team(&self) -> Option<&str> {
        self.team_id.as_deref().or(self.slug.as_deref())
    }
}

fn err(status: u16, code: &str, message: &str) -> Response {
    error_response(P, status, code, message, &HeaderMap::new())
}

fn project_json(p: &Project) -> Value {
    let link = p.git_repository.as_ref().map(|g| {
        let repo = g.get("repo").and_then(Value::as_str).unwrap_or_default();
        let (org, name) = repo.split_once('/').unwrap_or(("", repo));
        json!({"type": g.get("type").cloned().unwrap_or(json!("github")), "repo": name, "org": org,
            "repoId": 0, "productionBranch": "main", "deployHooks": [], "createdAt": p.created_ms})
    });
    json!({"id": p.id, "name": p.name, "accountId": p.team.clone().unwrap_or_else(|| "emulator-user".into()),
        "framework": p.framework, "link": link, "createdAt": p.created_ms, "updatedAt": p.created_ms,
        "nodeVersion": "22.x", "live": false, "latestDeployments": [], "targets": {}})
}

fn env_json(e: &EnvVar, decrypt: bool, string_targets: bool) -> Value {
    // Encrypted values come back as ciphertext unless decrypted; sensitive ones never.
    let value = match e.kind.as_str() {
        "plain" => e.value.clone(),
        "encrypted" if decrypt => e.value.clone(),
        "sensitive" => String::new(),
        _ => format!("enc:{}", random_string(24, ALNUM_LOWER)),
    };
    let target = match e.target.as_slice() {
        [one] if string_targets => json!(one),
        many => json!(many),
    };
    json!({"id": e.id, "key": e.key, "value": value, "type": e.kind, "target": target, "comment": e.comment,
        "configurationId": null, "gitBranch": null, "createdAt": e.created_ms, "updatedAt": e.updated_ms,
        "createdBy": "emulator", "decrypted": decrypt && e.kind == "encrypted"})
}

fn ready_state(emu: &Emulator, d: &Deployment) -> &'static str {
    if !emu.elapsed(d.created_ms, 0.1) {
        "QUEUED"
    } else if !emu.elapsed(d.created_ms, 0.2) {
        "INITIALIZING"
    } else if !emu.elapsed(d.created_ms, 1.0) {
        "BUILDING"
    } else if d.fail {
        "ERROR"
    } else if let Some(end) = d.end_state.as_deref() {
        END_STATES.iter().find(|s| **s == end).copied().unwrap_or("ERROR")
    } else {
        "READY"
    }
}

/// When a READY deployment gets its alias: the configured lag after READY.
fn alias_assigned(emu: &Emulator, options: &VercelOptions, d: &Deployment) -> bool {
    let delay = emu.config.async_delay_ms;
    let lag = options.alias_lag_ms.unwrap_or(delay / 4);
    ready_state(emu, d) == "READY" && now_ms() - d.created_ms >= (delay + lag) as i64
}

/// The fields a deployment has in both shapes.
fn deployment_common(emu: &Emulator, options: &VercelOptions, d: &Deployment) -> (&'static str, bool, Value) {
    let state = ready_state(emu, d);
    let ready = state == "READY";
    let assigned = alias_assigned(emu, options, d);
    let ready_at = d.created_ms + emu.config.async_delay_ms as i64;
    let common = json!({"url": d.url, "name": d.name, "readyState": state, "state": state, "target": d.target,
        "aliasAssigned": assigned, "aliasError": null,
        "checksConclusion": if ready { json!("succeeded") } else { Value::Null },
        "createdAt": d.created_ms, "buildingAt": d.created_ms, "ready": if ready { json!(ready_at) } else { Value::Null },
        "meta": d.meta, "creator": {"uid": "emulator", "username": "emulator"}, "type": "LAMBDAS"});
    (state, assigned, common)
}

/// `GET /v13/deployments/{id}`: the full object, aliases included.
fn deployment_json(emu: &Emulator, options: &VercelOptions, d: &Deployment) -> Value {
    let (state, assigned, mut v) = deployment_common(emu, options, d);
    let failed = state == "ERROR";
    let error = match state {
        "ERROR" => Some(("BUILD_FAILED", "The build failed (injected by the emulator)")),
        "BLOCKED" => Some(("DEPLOYMENT_BLOCKED", "The deployment was blocked (set by the emulator)")),
        "CANCELED" => Some(("DEPLOYMENT_CANCELED", "The deployment was canceled (set by the emulator)")),
        "DELETED" => Some(("DEPLOYMENT_DELETED", "The deployment was deleted (set by the emulator)")),
        _ => None,
    };
    let extra = json!({"id": d.id, "uid": d.id, "projectId": d.project_id, "status": state,
        "alias": if assigned { vec![d.alias.clone()] } else { Vec::new() },
        "errorCode": error.map(|e| e.0), "errorMessage": error.map(|e| e.1),
        "gitSource": d.git_source, "public": false, "version": 2, "readyStateReason": if failed { json!("build") } else { Value::Null }});
    if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(x.clone());
    }
    v
}

/// A `GET /v6/deployments` item (`operations.Deployments`): `uid`, no `id`, no `alias`.
fn deployment_list_item(emu: &Emulator, options: &VercelOptions, d: &Deployment) -> Value {
    let (_, _, mut v) = deployment_common(emu, options, d);
    let extra = json!({"uid": d.id, "created": d.created_ms, "source": "git",
        "inspectorUrl": format!("https://vercel.com/emulator/{}/{}", d.name, d.id.trim_start_matches("dpl_"))});
    if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(x.clone());
    }
    v
}

async fn create_project(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Scope>,
    Json(body): Json<Value>,
) -> Response {
    emu.guard(P, "createProject", &headers, || async {
        let Some(name) = body.get("name").and_then(Value::as_str).filter(|n| valid_project_name(n)) else {
            return err(
                400,
                "bad_request",
                "Invalid request: `name` must be 1-100 lowercase letters, digits, '.', '_' or '-'",
            );
        };
        // `environmentVariables` are created with the project, all or none.
        let mut envs = Vec::new();
        for item in body.get("environmentVariables").and_then(Value::as_array).into_iter().flatten() {
            match check_env(item) {
                Ok(e) => envs.push(e),
                Err(e) => {
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("invalid variable");
                    return err(400, "bad_request", message);
                }
            }
        }
        let out = emu.write(P, |w| {
            if w.vercel.project(q.team(), name).is_some() {
                return Err(err(409, "conflict", "A project with this name already exists."));
            }
            let p = Project {
                id: format!(
                    "prj_{}",
                    random_string(28, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                ),
                name: name.into(),
                team: q.team().map(str::to_string),
                framework: body.get("framework").and_then(Value::as_str).map(str::to_string),
                git_repository: body.get("gitRepository").filter(|g| g.is_object()).cloned(),
                created_ms: now_ms(),
            };
            let now = now_ms();
            for NewEnv { key, value, kind, target, comment } in envs {
                let id = random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
                let e = EnvVar {
                    id,
                    project_id: p.id.clone(),
                    key,
                    value,
                    kind,
                    target,
                    comment,
                    created_ms: now,
                    updated_ms: now,
                };
                w.vercel.envs.insert(e.id.clone(), e);
            }
            w.vercel.projects.insert(p.id.clone(), p.clone());
            Ok(project_json(&p))
        });
        out.map_or_else(|r| r, |v| Json(v).into_response())
    })
    .await
}

fn valid_project_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 100
        && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

async fn get_project(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
) -> Response {
    emu.guard(P, "getProject", &headers, || async {
        emu.read(|w| match w.vercel.project(q.team(), &id) {
            Some(p) => Json(project_json(p)).into_response(),
            None => err(404, "not_found", "Project not found"),
        })
    })
    .await
}

async fn delete_project(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
) -> Response {
    emu.guard(P, "deleteProject", &headers, || async {
        let out = emu.write(P, |w| {
            let pid = w.vercel.project(q.team(), &id).map(|p| p.id.clone()).ok_or(())?;
            w.vercel.projects.remove(&pid);
            // Environment variables and deployments go with the project.
            w.vercel.envs.retain(|_, e| e.project_id != pid);
            w.vercel.deployments.retain(|_, d| d.project_id != pid);
            Ok::<_, ()>(())
        });
        match out {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(()) => err(404, "not_found", "Project not found"),
        }
    })
    .await
}

/// One valid requested variable.
struct NewEnv {
    key: String,
    value: String,
    kind: String,
    target: Vec<String>,
    comment: Option<String>,
}

/// Checks one requested variable; the error is Vercel's `failed[].error`.
fn check_env(item: &Value) -> Result<NewEnv, Value> {
    let key = item.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
    let fail = |code: &str, message: String| json!({"code": code, "message": message, "key": key, "envVarKey": key});
    let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return Err(fail(
            "invalid_key",
            format!(
                "The name of your Environment Variable ({key}) is invalid: only letters, digits and underscores, not starting with a digit."
            ),
        ));
    }
    let Some(value) = item.get("value").and_then(Value::as_str) else {
        return Err(fail("missing_value", format!("The Environment Variable {key} is missing a value.")));
    };
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("encrypted");
    if !ENV_TYPES.contains(&kind) {
        return Err(fail("invalid_type", format!("Invalid type {kind} for Environment Variable {key}.")));
    }
    let target: Vec<String> = match item.get("target") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if target.is_empty() || target.iter().any(|t| !TARGETS.contains(&t.as_str())) {
        return Err(fail("invalid_target", format!("Invalid target for Environment Variable {key}.")));
    }
    let comment = item.get("comment").and_then(Value::as_str).map(str::to_string);
    Ok(NewEnv { key: key.clone(), value: value.to_string(), kind: kind.to_string(), target, comment })
}

async fn create_env(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
    Json(body): Json<Value>,
) -> Response {
    emu.guard(P, "createEnv", &headers, || async {
        let upsert = q.upsert.as_deref() == Some("true");
        let single = body.is_object();
        let items: Vec<Value> = if single { vec![body.clone()] } else { body.as_array().cloned().unwrap_or_default() };
        let out = emu.write(P, |w| {
            let pid = w.vercel.project(q.team(), &id).map(|p| p.id.clone()).ok_or_else(|| err(404, "not_found", "Project not found"))?;
            let (mut created, mut failed) = (Vec::new(), Vec::new());
            for item in &items {
                let NewEnv { key, value, kind, target, comment } = match check_env(item) {
                    Ok(v) => v,
                    Err(e) => {
                        failed.push(json!({"error": e}));
                        continue;
                    }
                };
                let now = now_ms();
                let existing = w.vercel.envs.values_mut().find(|e| e.project_id == pid && e.key == key && e.target.iter().any(|t| target.contains(t)));
                match existing {
                    Some(e) if upsert => {
                        (e.value, e.kind, e.target, e.comment, e.updated_ms) = (value, kind, target, comment, now);
                        created.push(env_json(e, false, false));
                    }
                    Some(_) => failed.push(json!({"error": {"code": "ENV_CONFLICT", "message": format!("A variable with the name `{key}` already exists for the target."), "key": key, "envVarKey": key, "target": target}})),
                    None => {
                        let e = EnvVar { id: random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"), project_id: pid.clone(), key, value, kind, target, comment, created_ms: now, updated_ms: now };
                        created.push(env_json(&e, false, false));
                        w.vercel.envs.insert(e.id.clone(), e);
                    }
                }
            }
            if single && created.is_empty() {
                let e = failed.first().and_then(|f| f.get("error")).cloned().unwrap_or(Value::Null);
                let code = e.get("code").and_then(Value::as_str).unwrap_or("bad_request");
                return Err(err(400, code, e.get("message").and_then(Value::as_str).unwrap_or("invalid")));
            }
            let created = if single { created.pop().unwrap_or(Value::Null) } else { Value::Array(created) };
            Ok(json!({"created": created, "failed": failed}))
        });
        out.map_or_else(|r| r, |v| (StatusCode::CREATED, Json(v)).into_response())
    })
    .await
}

async fn list_env(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
) -> Response {
    emu.guard(P, "listEnv", &headers, || async {
        let decrypt = q.decrypt.as_deref() == Some("true");
        emu.read(|w| {
            let Some(p) = w.vercel.project(q.team(), &id) else { return err(404, "not_found", "Project not found") };
            let mut envs: Vec<&EnvVar> = w
                .vercel
                .envs
                .values()
                .filter(|e| e.project_id == p.id && q.target.as_deref().is_none_or(|t| e.target.iter().any(|x| x == t)))
                .collect();
            envs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            // `until` is the position `pagination.next` handed out.
            let start = match q.until.as_deref().map(str::parse::<usize>) {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(_)) => return err(400, "bad_request", "Invalid request: `until` must be a number."),
            };
            let size = w.vercel.options.env_page_size.max(1);
            let page: Vec<Value> = envs
                .iter()
                .skip(start)
                .take(size)
                .map(|e| env_json(e, decrypt, w.vercel.options.string_targets))
                .collect();
            let next = (start + size < envs.len()).then_some(start + size);
            let prev = (start > 0).then(|| start.saturating_sub(size));
            Json(json!({"envs": page, "pagination": {"count": page.len(), "next": next, "prev": prev}})).into_response()
        })
    })
    .await
}

async fn create_deployment(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Scope>,
    Json(body): Json<Value>,
) -> Response {
    emu.guard(P, "createDeployment", &headers, || async {
        let Some(name) = body.get("name").and_then(Value::as_str) else {
            return err(400, "bad_request", "Invalid request: missing required property `name`.");
        };
        let git = body.get("gitSource").filter(|g| g.is_object()).cloned();
        if git.is_none() && body.get("files").is_none() && body.get("deploymentId").is_none() {
            return err(400, "missing_files", "Missing files: a deployment needs `gitSource` or `files`.");
        }
        let project_ref = body.get("project").and_then(Value::as_str).unwrap_or(name).to_string();
        let fail = emu.faults.take_failed_deployment(P);
        let out = emu.write(P, |w| {
            let p = w
                .vercel
                .project(q.team(), &project_ref)
                .cloned()
                .ok_or_else(|| err(404, "not_found", "Project not found"))?;
            let target = body.get("target").and_then(Value::as_str).map(str::to_string);
            let slug = q.team().unwrap_or("emulator");
            let alias = match target.as_deref() {
                Some("production") => format!("{}.vercel.app", p.name),
                _ => format!(
                    "{}-git-{}-{slug}.vercel.app",
                    p.name,
                    git.as_ref().and_then(|g| g.get("ref")).and_then(Value::as_str).unwrap_or("main")
                ),
            };
            let d = Deployment {
                id: format!(
                    "dpl_{}",
                    random_string(28, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                ),
                project_id: p.id.clone(),
                name: p.name.clone(),
                url: format!("{}-{}-{slug}.vercel.app", p.name, random_string(9, ALNUM_LOWER)),
                target,
                alias,
                git_source: git.clone().unwrap_or(Value::Null),
                meta: body.get("meta").cloned().unwrap_or_else(|| json!({})),
                fail,
                end_state: w.vercel.options.next_deployment_state.take(),
                created_ms: now_ms(),
            };
            w.vercel.deployments.insert(d.id.clone(), d.clone());
            Ok(deployment_json(&emu, &w.vercel.options, &d))
        });
        out.map_or_else(|r| r, |v| Json(v).into_response())
    })
    .await
}

/// Vercel's answer when the day's deployments are spent: 402 with the
/// plan's code, the message Vercel's CLI prints, and the `limit` object
/// whose `reset` is epoch milliseconds (see [`super::limits`]). No
/// `Retry-After`: it is not a 429.
pub fn daily_limit_refusal(standing: super::limits::Standing, code: &str) -> Response {
    let reset_ms = now_ms() + standing.reset_s as i64 * 1000;
    let message =
        format!("Resource is limited - try again in 24 hours (more than {}, code: \"{code}\")", standing.limit);
    let body = json!({"error": {"code": code, "message": message,
        "limit": {"total": standing.limit, "remaining": 0, "reset": reset_ms}}});
    (StatusCode::PAYMENT_REQUIRED, Json(body)).into_response()
}

async fn get_deployment(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
) -> Response {
    emu.guard(P, "getDeployment", &headers, || async {
        emu.read(|w| {
            let found = w.vercel.deployments.values().find(|d| {
                (d.id == id || d.url == id)
                    && w.vercel.projects.get(&d.project_id).is_some_and(|p| p.team.as_deref() == q.team())
            });
            match found {
                Some(d) => Json(deployment_json(&emu, &w.vercel.options, d)).into_response(),
                None => err(404, "not_found", "The deployment could not be found."),
            }
        })
    })
    .await
}

async fn list_deployments(State(emu): State<Shared>, headers: HeaderMap, Query(q): Query<Scope>) -> Response {
    emu.guard(P, "listDeployments", &headers, || async {
        emu.read(|w| {
            let mut ds: Vec<&Deployment> = w
                .vercel
                .deployments
                .values()
                .filter(|d| q.project_id.as_deref().is_none_or(|p| d.project_id == p))
                .filter(|d| w.vercel.projects.get(&d.project_id).is_some_and(|p| p.team.as_deref() == q.team()))
                .filter(|d| q.target.as_deref().is_none_or(|t| d.target.as_deref() == Some(t)))
                .collect();
            ds.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
            let limit = q.limit.unwrap_or(20).clamp(1, 100);
            let page: Vec<Value> =
                ds.iter().take(limit).map(|d| deployment_list_item(&emu, &w.vercel.options, d)).collect();
            Json(json!({"deployments": page, "pagination": {"count": page.len(), "next": null, "prev": null}}))
                .into_response()
        })
    })
    .await
}

async fn delete_deployment(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Scope>,
) -> Response {
    emu.guard(P, "deleteDeployment", &headers, || async {
        let out = emu.write(P, |w| {
            let d = w
                .vercel
                .deployments
                .values()
                .find(|d| {
                    d.id == id && w.vercel.projects.get(&d.project_id).is_some_and(|p| p.team.as_deref() == q.team())
                })
                .map(|d| d.id.clone())
                .ok_or(())?;
            w.vercel.deployments.remove(&d);
            Ok::<_, ()>(d)
        });
        match out {
            Ok(uid) => Json(json!({"uid": uid, "state": "DELETED"})).into_response(),
            Err(()) => err(404, "not_found", "The deployment could not be found."),
        }
    })
    .await
}
