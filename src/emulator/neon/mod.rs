//! The Neon API v2 emulator for what Winston uses: projects created with
//! their default branch, read_write endpoint, role and database; connection
//! URIs; and asynchronous operations (`running` until `--async-delay-ms` has
//! passed, then `finished`).
//!
//! The role and database are created for real in the backing PostgreSQL,
//! so the returned connection URI works. Real names carry a per-branch
//! suffix (`<name>_<branch key>`) because one PostgreSQL server stands in
//! for many Neon projects; the URI uses the real names. Deleting a project
//! drops what it created.
//!
//! # As strict as Neon where Winston depends on it
//! - **Personal API keys** (tokens starting with [`PERSONAL_TOKEN_PREFIX`])
//!   must name `org_id` on `GET /projects` (query) and `POST /projects`
//!   (body), else 400 `org_id is required`
//!   (<https://neon.com/docs/cli/api>); `GET /users/me/organizations` lists
//!   their one organization, [`PERSONAL_ORG_ID`]. Other tokens act as
//!   organization keys and need no `org_id`.
//! - **Failed operations are retried**: with a `fail_deployment` fault armed
//!   for `neon`, every operation of the next project creation is `failed`
//!   (`failures_count` 1, `error` and `retry_at` set) for `--async-delay-ms`,
//!   then `running` for as long again, then `finished`; the branch stays busy
//!   throughout (<https://schemas.apis.io/schemas/neon/neon-operation/>:
//!   `failures_count` counts failures that were retried).
//! - **Repeated deletes** of a project answer 204 with an empty body.
//! - **`limit` bounds** of list endpoints as Neon's v2 OpenAPI declares
//!   them (`GET /projects`: 1..=400, default 10; `GET
//!   /projects/{id}/operations`: 1..=1000, default 10): out of bounds is a
//!   400, not clamped, and a page holds at most `limit` items, the rest
//!   behind `pagination.cursor`.
//! - **423 Locked on a conflicting operation**: deleting a project while one
//!   of its operations has not finished (its creation's, for
//!   `--async-delay-ms`) answers 423 with Neon's message, as Neon refuses to
//!   schedule an operation beside a running one; the caller retries.
//! - **Deletes are atomic like creates**: a delete finishes even when the
//!   caller disconnects, and the real databases and roles are dropped before
//!   the project is forgotten and before the answer is sent.
//!
//! # Known differences from Neon
//! - Deleting a project is immediate (Neon keeps it restorable for a while
//!   and runs `delete_tenant`).
//! - Project deletion is the only mutation of an existing project, so it is
//!   the only request that can meet a 423 without an armed `locked` fault
//!   (which answers 423 on any operation); branches, roles and databases
//!   have no endpoints of their own (so no branch inherits roles and
//!   databases: Winston uses only the default branch a project is created
//!   with, and its role and database).
//! - An out-of-bounds `limit` answers 400 with a message of the emulator's
//!   own; Neon's exact validation message was not confirmed.
//! - A list-after-create lag only when `list_lag_ms` is set.
use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod operations;

use super::Shared;
use super::context::{ALNUM_LOWER, Emulator, error_response, now_ms, random_string, rfc3339};
use crate::emulator::sql::quote_ident;
use crate::platform::Platform;

const P: Platform = Platform::Neon;

/// Bearer tokens starting with this act as Neon personal API keys.
pub const PERSONAL_TOKEN_PREFIX: &str = "personal-";

/// The one organization a personal key of the emulator belongs to.
pub const PERSONAL_ORG_ID: &str = "org-emulator-12345678";

fn personal_key(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.trim().strip_prefix("Bearer ").or_else(|| a.trim().strip_prefix("bearer ")))
        .is_some_and(|t| t.starts_with(PERSONAL_TOKEN_PREFIX))
}

fn org_id_required(headers: &HeaderMap) -> Response {
    error_response(P, 400, "", "org_id is required", headers)
}

/// The bounds of `limit` on `GET /projects` (Neon's v2 OpenAPI: minimum 1,
/// maximum 400, default 10).
pub const PROJECTS_LIMIT: (usize, usize, usize) = (1, 400, 10);

/// The bounds of `limit` on `GET /projects/{id}/operations` (minimum 1,
/// maximum 1000, default 10).
pub const OPERATIONS_LIMIT: (usize, usize, usize) = (1, 1000, 10);

/// `limit` checked against `(min, max, default)`: Neon validates query
/// parameters against its OpenAPI document and refuses a value out of
/// bounds with 400 rather than clamping it (the `Err` is that answer).
pub(super) fn page_limit(
    limit: Option<usize>,
    (min, max, default): (usize, usize, usize),
    headers: &HeaderMap,
) -> Result<usize, Box<Response>> {
    match limit {
        None => Ok(default),
        Some(l) if (min..=max).contains(&l) => Ok(l),
        Some(l) => Err(Box::new(error_response(
            P,
            400,
            "",
            &format!("request validation failed: limit {l} is out of range [{min}, {max}]"),
            headers,
        ))),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub region_id: String,
    pub pg_version: u64,
    pub store_passwords: bool,
    pub org_id: Option<String>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Branch {
    pub id: String,
    pub project_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    pub default: bool,
    pub protected: bool,
    /// Suffix of the real PostgreSQL names made for this branch.
    pub key: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub project_id: String,
    pub branch_id: String,
    pub kind: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Role {
    pub project_id: String,
    pub branch_id: String,
    pub name: String,
    pub password: String,
    pub real_name: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Database {
    pub id: u64,
    pub project_id: String,
    pub branch_id: String,
    pub name: String,
    pub owner_name: String,
    pub real_name: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub project_id: String,
    pub branch_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub action: String,
    pub created_ms: i64,
    /// Fails once (for the async delay) before Neon's retry runs it.
    #[serde(default)]
    pub fails: bool,
}

/// Every Neon object of the emulator.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NeonWorld {
    pub projects: BTreeMap<String, Project>,
    pub branches: BTreeMap<String, Branch>,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub roles: Vec<Role>,
    pub databases: Vec<Database>,
    pub operations: BTreeMap<String, Operation>,
    pub next_database_id: u64,
}

impl NeonWorld {
    /// Live objects per kind, for `/_emulator/objects`.
    #[must_use]
    pub fn objects(&self) -> Value {
        json!({
            "project": self.projects.values().map(|p| json!({"id": p.id, "name": p.name})).collect::<Vec<_>>(),
            "branch": self.branches.values().map(|b| json!({"id": b.id, "name": b.name, "project_id": b.project_id})).collect::<Vec<_>>(),
            "endpoint": self.endpoints.values().map(|e| json!({"id": e.id, "branch_id": e.branch_id})).collect::<Vec<_>>(),
            "role": self.roles.iter().map(|r| json!({"id": format!("{}/{}", r.branch_id, r.name), "name": r.name, "branch_id": r.branch_id})).collect::<Vec<_>>(),
            "database": self.databases.iter().map(|d| json!({"id": d.id, "name": d.name, "branch_id": d.branch_id})).collect::<Vec<_>>(),
        })
    }
}

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{pid}", get(get_project).delete(delete_project))
        .route("/projects/{pid}/connection_uri", get(operations::connection_uri))
        .route("/projects/{pid}/operations", get(operations::list_operations))
        .route("/projects/{pid}/operations/{oid}", get(operations::get_operation))
        .route("/users/me/organizations", get(list_organizations))
}

/// `GET /users/me/organizations`: the organizations of the key's user.
async fn list_organizations(State(emu): State<Shared>, headers: HeaderMap) -> Response {
    emu.guard(P, "getCurrentUserOrganizations", &headers, || async {
        Json(json!({"organizations": [{
            "id": PERSONAL_ORG_ID, "name": "Emulator", "handle": "emulator", "plan": "scale",
            "managed_by": "console", "created_at": rfc3339(0), "updated_at": rfc3339(0),
        }]}))
        .into_response()
    })
    .await
}

// ---------- wire shapes ----------

/// Status now: a failing operation is `failed` for one delay, then retried
/// (`running`) for another; every other one is `running` for one delay.
fn op_status(emu: &Emulator, o: &Operation) -> &'static str {
    let runs = if o.fails { 2.0 } else { 1.0 };
    if emu.elapsed(o.created_ms, runs) {
        "finished"
    } else if o.fails && !emu.elapsed(o.created_ms, 1.0) {
        "failed"
    } else {
        "running"
    }
}

fn op_done(emu: &Emulator, o: &Operation) -> bool {
    op_status(emu, o) == "finished"
}

fn op_json(emu: &Emulator, o: &Operation) -> Value {
    let status = op_status(emu, o);
    let delay = emu.config.async_delay_ms as i64;
    let took = if o.fails { 2 * delay } else { delay };
    let done = status == "finished";
    let mut v = json!({
        "id": o.id, "project_id": o.project_id, "branch_id": o.branch_id, "endpoint_id": o.endpoint_id,
        "action": o.action, "status": status, "failures_count": u64::from(o.fails),
        "created_at": rfc3339(o.created_ms), "updated_at": rfc3339(if done { o.created_ms + took } else { o.created_ms }),
        "total_duration_ms": if done { took } else { 0 },
    });
    if status == "failed" {
        v["error"] = json!("injected failure; the operation will be retried");
        v["retry_at"] = json!(rfc3339(o.created_ms + delay));
    }
    v
}

/// Neon's answer to a mutation on a project while one of its operations
/// has not finished (423 Locked; the caller retries).
const LOCKED_MESSAGE: &str = "project already has running conflicting operations, scheduling of new ones is prohibited";

/// Whether an operation of `project_id` has not finished (running, or failed
/// and waiting for its retry).
fn project_busy(emu: &Emulator, w: &NeonWorld, project_id: &str) -> bool {
    w.operations.values().any(|o| o.project_id == project_id && !op_done(emu, o))
}

fn busy(emu: &Emulator, w: &NeonWorld, branch_id: &str) -> bool {
    w.operations.values().any(|o| o.branch_id.as_deref() == Some(branch_id) && !op_done(emu, o))
}

fn project_json(emu: &Emulator, p: &Project) -> Value {
    json!({
        "id": p.id, "platform_id": "aws", "region_id": p.region_id, "name": p.name, "provisioner": "k8s-neonvm",
        "default_endpoint_settings": {"autoscaling_limit_min_cu": 0.25, "autoscaling_limit_max_cu": 0.25, "suspend_timeout_seconds": 0},
        "settings": {}, "pg_version": p.pg_version, "proxy_host": emu.pg_host, "branch_logical_size_limit": 0,
        "branch_logical_size_limit_bytes": 0, "store_passwords": p.store_passwords, "active_time": 0, "cpu_used_sec": 0,
        "creation_source": "console", "history_retention_seconds": 86400, "owner_id": "emulator",
        "org_id": p.org_id, "created_at": rfc3339(p.created_ms), "updated_at": rfc3339(p.created_ms),
    })
}

fn branch_json(emu: &Emulator, w: &NeonWorld, b: &Branch) -> Value {
    let state = if busy(emu, w, &b.id) { "init" } else { "ready" };
    json!({
        "id": b.id, "project_id": b.project_id, "parent_id": b.parent_id, "name": b.name,
        "current_state": state, "state_changed_at": rfc3339(b.created_ms), "logical_size": 0,
        "creation_source": "console", "default": b.default, "protected": b.protected, "cpu_used_sec": 0,
        "compute_time_seconds": 0, "active_time_seconds": 0, "written_data_bytes": 0, "data_transfer_bytes": 0,
        "created_at": rfc3339(b.created_ms), "updated_at": rfc3339(b.created_ms),
    })
}

fn endpoint_json(emu: &Emulator, w: &NeonWorld, e: &Endpoint) -> Value {
    let state = if busy(emu, w, &e.branch_id) { "init" } else { "active" };
    json!({
        "id": e.id, "host": emu.pg_host, "project_id": e.project_id, "branch_id": e.branch_id, "type": e.kind,
        "current_state": state, "pooler_enabled": false, "pooler_mode": "transaction", "suspend_timeout_seconds": 0,
        "disabled": false, "passwordless_access": true, "region_id": "aws-us-east-2", "autoscaling_limit_min_cu": 0.25,
        "autoscaling_limit_max_cu": 0.25, "provisioner": "k8s-neonvm", "settings": {}, "proxy_host": emu.pg_host,
        "creation_source": "console", "created_at": rfc3339(e.created_ms), "updated_at": rfc3339(e.created_ms),
    })
}

/// A role as the create answer shows it: the only place with its password.
fn role_json(r: &Role) -> Value {
    json!({"branch_id": r.branch_id, "name": r.name, "protected": false, "password": r.password,
        "created_at": rfc3339(r.created_ms), "updated_at": rfc3339(r.created_ms)})
}

fn database_json(d: &Database) -> Value {
    json!({"id": d.id, "branch_id": d.branch_id, "name": d.name, "owner_name": d.owner_name,
        "created_at": rfc3339(d.created_ms), "updated_at": rfc3339(d.created_ms)})
}

fn uri(emu: &Emulator, role: &Role, db: &Database) -> Value {
    json!({
        "connection_uri": format!("postgresql://{}:{}@{}:{}/{}", role.real_name, role.password, emu.pg_host, emu.pg_port, db.real_name),
        "connection_parameters": {"database": db.real_name, "password": role.password, "role": role.real_name,
            "host": emu.pg_host, "pooler_host": emu.pg_host},
    })
}

fn not_found(headers: &HeaderMap, what: &str) -> Response {
    error_response(P, 404, "", &format!("{what} not found"), headers)
}

fn new_op(
    w: &mut NeonWorld,
    project_id: &str,
    branch_id: Option<&str>,
    endpoint_id: Option<&str>,
    action: &str,
    fails: bool,
) -> Operation {
    let o = Operation {
        fails,
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project_id.into(),
        branch_id: branch_id.map(Into::into),
        endpoint_id: endpoint_id.map(Into::into),
        action: action.into(),
        created_ms: now_ms(),
    };
    w.operations.insert(o.id.clone(), o.clone());
    o
}

// ---------- the real PostgreSQL side ----------

async fn pg_create_role(emu: &Emulator, real: &str, password: &str) -> Result<(), String> {
    // The password is alphanumeric (generated here), so the literal is safe.
    emu.pg_exec(format!("CREATE ROLE {} LOGIN PASSWORD '{password}'", quote_ident(real))).await
}

async fn pg_drop(emu: &Emulator, databases: &[String], roles: &[String]) {
    for d in databases {
        if let Err(e) = emu.pg_exec(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(d))).await {
            tracing::warn!(error = %e, "failed to drop an emulated Neon database");
        }
    }
    for r in roles {
        if let Err(e) = emu.pg_exec(format!("DROP ROLE IF EXISTS {}", quote_ident(r))).await {
            tracing::warn!(error = %e, "failed to drop an emulated Neon role");
        }
    }
}

fn real_name(name: &str, key: &str) -> Result<String, String> {
    let real = format!("{name}_{key}");
    if name.is_empty() || real.len() > 63 {
        return Err(format!("name {name:?} must be 1..={} bytes in the emulator", 62 - key.len()));
    }
    Ok(real)
}

fn password() -> String {
    random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
}

/// The role `name` of a new branch, created for real in PostgreSQL.
async fn add_role(emu: &Emulator, branch: &Branch, name: &str) -> Result<Role, (u16, String)> {
    let real = real_name(name, &branch.key).map_err(|m| (400, m))?;
    let role = Role {
        project_id: branch.project_id.clone(),
        branch_id: branch.id.clone(),
        name: name.into(),
        password: password(),
        real_name: real.clone(),
        created_ms: now_ms(),
    };
    pg_create_role(emu, &real, &role.password).await.map_err(|m| (409, m))?;
    Ok(role)
}

/// The database `name` of a new branch owned by `owner`, created for real
/// in PostgreSQL (its id is given when it is stored).
async fn add_database(emu: &Emulator, branch: &Branch, name: &str, owner: &Role) -> Result<Database, (u16, String)> {
    let real = real_name(name, &branch.key).map_err(|m| (400, m))?;
    emu.create_database(&real, &owner.real_name).await.map_err(|m| (409, m))?;
    Ok(Database {
        id: 0,
        project_id: branch.project_id.clone(),
        branch_id: branch.id.clone(),
        name: name.into(),
        owner_name: owner.name.clone(),
        real_name: real,
        created_ms: now_ms(),
    })
}

/// The default branch a new project starts with.
fn default_branch(project_id: &str, name: String) -> Branch {
    Branch {
        id: format!("br-{}-{}", random_string(6, b"abcdefghijklmnopqrstuvwxyz"), random_string(8, ALNUM_LOWER)),
        project_id: project_id.into(),
        parent_id: None,
        name,
        default: true,
        protected: false,
        key: random_string(6, ALNUM_LOWER),
        created_ms: now_ms(),
    }
}

fn read_write_endpoint(b: &Branch) -> Endpoint {
    Endpoint {
        id: format!("ep-{}-{}", random_string(6, b"abcdefghijklmnopqrstuvwxyz"), random_string(8, ALNUM_LOWER)),
        project_id: b.project_id.clone(),
        branch_id: b.id.clone(),
        kind: "read_write".into(),
        created_ms: now_ms(),
    }
}

// ---------- projects ----------

/// The region ids Neon creates projects in (`GET /regions` on the
/// platform); any other `region_id` is refused with 400.
pub const REGION_IDS: [&str; 11] = [
    "aws-us-east-1",
    "aws-us-east-2",
    "aws-us-west-2",
    "aws-eu-central-1",
    "aws-eu-west-2",
    "aws-ap-southeast-1",
    "aws-ap-southeast-2",
    "aws-sa-east-1",
    "azure-eastus2",
    "azure-westus3",
    "azure-gwc",
];

/// `POST /projects`. Like the real platform, a create finishes even when the
/// caller disconnects mid-request (e.g. a controller killed by SIGKILL), so
/// the work runs in its own task instead of the request's future.
async fn create_project(State(emu): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let h = headers.clone();
    tokio::spawn(create_project_detached(emu, headers, body))
        .await
        .unwrap_or_else(|_| error_response(P, 500, "", "internal error", &h))
}

async fn create_project_detached(emu: Shared, headers: HeaderMap, body: Value) -> Response {
    emu.guard(P, "createProject", &headers, || async {
        let Some(p) = body.get("project").filter(|p| p.is_object()) else {
            return error_response(P, 400, "", "request body must contain \"project\"", &headers);
        };
        if personal_key(&headers) && p.get("org_id").and_then(Value::as_str).is_none() {
            return org_id_required(&headers);
        }
        let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(region) = s("region_id").filter(|r| !REGION_IDS.contains(&r.as_str())) {
            let message = format!("region_id \"{region}\" is not supported; supported: {}", REGION_IDS.join(", "));
            return error_response(P, 400, "", &message, &headers);
        }
        let id = format!(
            "{}-{}-{}",
            random_string(5, b"abcdefghijklmnopqrstuvwxyz"),
            random_string(4, b"abcdefghijklmnopqrstuvwxyz"),
            random_string(8, b"0123456789")
        );
        let project = Project {
            name: s("name").unwrap_or_else(|| id.clone()),
            id,
            region_id: s("region_id").unwrap_or_else(|| "aws-us-east-2".into()),
            pg_version: p.get("pg_version").and_then(Value::as_u64).unwrap_or(17),
            store_passwords: p.get("store_passwords").and_then(Value::as_bool).unwrap_or(true),
            org_id: s("org_id"),
            created_ms: now_ms(),
        };
        let bs = p.get("branch").cloned().unwrap_or(Value::Null);
        let db_name = bs.get("database_name").and_then(Value::as_str).unwrap_or("neondb").to_string();
        let role_name =
            bs.get("role_name").and_then(Value::as_str).map_or_else(|| format!("{db_name}_owner"), str::to_string);
        let branch = default_branch(&project.id, bs.get("name").and_then(Value::as_str).unwrap_or("main").to_string());
        let endpoint = read_write_endpoint(&branch);
        emu.touch(|w| {
            w.neon.projects.insert(project.id.clone(), project.clone());
            w.neon.branches.insert(branch.id.clone(), branch.clone());
        });
        let role = match add_role(&emu, &branch, &role_name).await {
            Ok(r) => r,
            Err(e) => return rollback_project(&emu, &project.id, &headers, e).await,
        };
        emu.touch(|w| w.neon.roles.push(role.clone()));
        let db = match add_database(&emu, &branch, &db_name, &role).await {
            Ok(d) => d,
            Err(e) => return rollback_project(&emu, &project.id, &headers, e).await,
        };
        let fails = emu.faults.take_failed_deployment(P);
        let out = emu.write(P, |w| {
            w.neon.next_database_id += 1;
            let db = Database { id: w.neon.next_database_id, ..db };
            w.neon.databases.push(db.clone());
            w.neon.endpoints.insert(endpoint.id.clone(), endpoint.clone());
            let ops = [
                new_op(&mut w.neon, &project.id, Some(&branch.id), None, "create_timeline", fails),
                new_op(&mut w.neon, &project.id, Some(&branch.id), Some(&endpoint.id), "start_compute", fails),
            ];
            Ok::<_, ()>(json!({
                "project": project_json(&emu, &project),
                "connection_uris": [uri(&emu, &role, &db)],
                "roles": [role_json(&role)],
                "databases": [database_json(&db)],
                "operations": ops.iter().map(|o| op_json(&emu, o)).collect::<Vec<_>>(),
                "branch": branch_json(&emu, &w.neon, &branch),
                "endpoints": [endpoint_json(&emu, &w.neon, &endpoint)],
            }))
        });
        match out {
            Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Err(()) => error_response(P, 500, "", "internal error", &headers),
        }
    })
    .await
}

async fn rollback_project(
    emu: &Emulator,
    project_id: &str,
    headers: &HeaderMap,
    (status, message): (u16, String),
) -> Response {
    remove_project(emu, project_id).await;
    error_response(P, status, "", &message, headers)
}

/// Removes a project and everything in it. The real databases and roles are
/// dropped first, so the project is only forgotten once nothing of it is
/// left in PostgreSQL (a crash in between leaves a project to delete again,
/// never an orphaned role).
async fn remove_project(emu: &Emulator, project_id: &str) -> Option<Project> {
    let (dbs, roles) = emu.read(|w| {
        let n = &w.neon;
        let dbs: Vec<String> =
            n.databases.iter().filter(|d| d.project_id == project_id).map(|d| d.real_name.clone()).collect();
        let roles: Vec<String> =
            n.roles.iter().filter(|r| r.project_id == project_id).map(|r| r.real_name.clone()).collect();
        (dbs, roles)
    });
    pg_drop(emu, &dbs, &roles).await;
    emu.touch(|w| {
        let n = &mut w.neon;
        let project = n.projects.remove(project_id);
        n.branches.retain(|_, b| b.project_id != project_id);
        n.endpoints.retain(|_, e| e.project_id != project_id);
        n.databases.retain(|d| d.project_id != project_id);
        n.roles.retain(|r| r.project_id != project_id);
        n.operations.retain(|_, o| o.project_id != project_id);
        project
    })
}

#[derive(Deserialize)]
struct ListQuery {
    search: Option<String>,
    org_id: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_projects(State(emu): State<Shared>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    emu.guard(P, "listProjects", &headers, || async {
        if personal_key(&headers) && q.org_id.is_none() {
            return org_id_required(&headers);
        }
        let limit = match page_limit(q.limit, PROJECTS_LIMIT, &headers) {
            Ok(l) => l,
            Err(refused) => return *refused,
        };
        let body = emu.read(|w| {
            let mut all: Vec<&Project> = w.neon.projects.values().collect();
            all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            let page: Vec<&Project> = all
                .into_iter()
                .filter(|p| q.search.as_deref().is_none_or(|s| p.name.contains(s) || p.id.contains(s)))
                .filter(|p| q.org_id.is_none() || p.org_id == q.org_id)
                .filter(|p| emu.listed(p.created_ms))
                .skip_while(|p| q.cursor.as_deref().is_some_and(|c| c != p.id))
                .skip(usize::from(q.cursor.is_some()))
                .take(limit)
                .collect();
            let cursor = page.last().map(|p| p.id.clone());
            json!({"projects": page.iter().map(|p| project_json(&emu, p)).collect::<Vec<_>>(), "pagination": {"cursor": cursor}})
        });
        Json(body).into_response()
    })
    .await
}

async fn get_project(State(emu): State<Shared>, headers: HeaderMap, Path(pid): Path<String>) -> Response {
    emu.guard(P, "getProject", &headers, || async {
        match emu.read(|w| w.neon.projects.get(&pid).map(|p| project_json(&emu, p))) {
            Some(p) => Json(json!({"project": p})).into_response(),
            None => not_found(&headers, "project"),
        }
    })
    .await
}

/// `DELETE /projects/{id}`. Like a create, it finishes even when the caller
/// disconnects mid-request, so it runs in its own task. A project already
/// gone answers 204 with an empty body, as Neon does.
async fn delete_project(State(emu): State<Shared>, headers: HeaderMap, Path(pid): Path<String>) -> Response {
    let h = headers.clone();
    tokio::spawn(delete_project_detached(emu, headers, pid))
        .await
        .unwrap_or_else(|_| error_response(P, 500, "", "internal error", &h))
}

async fn delete_project_detached(emu: Shared, headers: HeaderMap, pid: String) -> Response {
    emu.guard(P, "deleteProject", &headers, || async {
        if emu.read(|w| project_busy(&emu, &w.neon, &pid)) {
            return error_response(P, 423, "", LOCKED_MESSAGE, &headers);
        }
        match remove_project(&emu, &pid).await {
            Some(p) => {
                emu.count_mutation(P);
                Json(json!({"project": project_json(&emu, &p)})).into_response()
            }
            None => StatusCode::NO_CONTENT.into_response(),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_with_the_personal_prefix_are_personal_keys() {
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", v.parse().unwrap());
            h
        };
        assert!(personal_key(&h(&format!("Bearer {PERSONAL_TOKEN_PREFIX}alice"))));
        assert!(!personal_key(&h("Bearer winston-emulator")));
        assert!(!personal_key(&HeaderMap::new()));
    }
}
