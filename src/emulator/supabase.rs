//! The Supabase Management API emulator: `POST /v1/projects` with the
//! current body (`V1CreateProjectBody` in the Management API OpenAPI
//! document: required `db_pass`, `name`, `organization_slug`; optional
//! `region_selection`, `desired_instance_size`, `template_url`;
//! `additionalProperties: false`), project status moving COMING_UP ->
//! ACTIVE_HEALTHY over `--async-delay-ms` (INIT_FAILED when a
//! `fail_deployment` fault is armed), API keys (legacy `anon` /
//! `service_role`, publishable and secret keys masked unless `reveal=true`,
//! and one key whose `api_key` is null, as the API answers for keys a scoped
//! token may not read: `ApiKeyResponse.api_key` is nullable), service
//! health, the Supavisor pooler configuration, list and delete.
//!
//! The project's database is real: each project gets a role
//! `postgres.<ref>` (the user name Supavisor uses) with the `db_pass` sent
//! at create and a database `postgres_<ref>` in the backing PostgreSQL, and
//! `GET /v1/projects/{ref}/config/database/pooler` reports that server's host
//! and port, so the connection a client builds from the pooler
//! configuration works. Deleting a project drops both before the project is
//! forgotten.
//!
//! Differences from the platform that remain:
//! - deprecated create fields (`organization_id`, `region`, `plan`,
//!   `kps_enabled`) are refused with 400 (the platform still accepts them):
//!   a client that regresses to them fails a test instead of a deprecation
//!   some day;
//! - `database.host` is `db.<ref>.supabase.co` like on the platform, and
//!   resolves nowhere: only the pooler endpoint is connectable;
//! - UNKNOWN and RESTARTING only after COMING_UP, when a `fail_deployment`
//!   fault names them (then ACTIVE_HEALTHY);
//! - the 120 requests/min per token ([`super::limits`], on by default)
//!   counts every request of the emulated Management API in one window,
//!   without the platform's separate limits for some endpoints;
//! - COMING_UP lasts `supabase_coming_up_ms` (default: the async delay),
//!   not the minutes it takes on the platform.
//!
//! Errors are `{"message": "..."}` (the spec declares no body; believed shape).
use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;
use super::context::{Emulator, error_response, now_ms, random_string, rfc3339};
use crate::emulator::sql::quote_ident;
use crate::platform::Platform;

const P: Platform = Platform::Supabase;
const HEALTH_SERVICES: [&str; 8] =
    ["auth", "db", "db_postgres_user", "pooler", "realtime", "rest", "storage", "pg_bouncer"];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: u64,
    pub reference: String,
    pub name: String,
    pub organization: String,
    pub region: String,
    pub instance_size: Option<String>,
    pub fail: bool,
    /// A state the project passes through after COMING_UP, for as long
    /// again, before ACTIVE_HEALTHY (`UNKNOWN`, `RESTARTING`).
    #[serde(default)]
    pub detour: Option<String>,
    pub keys: Vec<ApiKey>,
    pub created_ms: i64,
    /// The real role and database in the backing PostgreSQL.
    #[serde(default)]
    pub db_user: String,
    #[serde(default)]
    pub db_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub kind: String,
    /// `None` for a key the caller's token may not read (answered as null).
    pub key: Option<String>,
}

/// Every Supabase object of the emulator.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SupabaseWorld {
    pub projects: BTreeMap<String, Project>,
    pub next_id: u64,
}

impl SupabaseWorld {
    /// Live objects per kind, for `/_emulator/objects`.
    #[must_use]
    pub fn objects(&self) -> Value {
        json!({
            "project": self.projects.values().map(|p| json!({"id": p.reference, "name": p.name, "organization": p.organization})).collect::<Vec<_>>(),
        })
    }
}

pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/projects", get(list_projects).post(create_project))
        .route("/v1/projects/{reference}", get(get_project).delete(delete_project))
        .route("/v1/projects/{reference}/api-keys", get(api_keys))
        .route("/v1/projects/{reference}/health", get(health))
        .route("/v1/projects/{reference}/config/database/pooler", get(pooler))
}

fn err(status: u16, message: &str) -> Response {
    error_response(P, status, "", message, &HeaderMap::new())
}

fn status(emu: &Emulator, p: &Project) -> &'static str {
    let coming_up = emu.config.supabase_coming_up_ms.unwrap_or(emu.config.async_delay_ms) as i64;
    let age = now_ms() - p.created_ms;
    if age < coming_up {
        return "COMING_UP";
    }
    match p.detour.as_deref() {
        Some("UNKNOWN") if age < 2 * coming_up => "UNKNOWN",
        Some("RESTARTING") if age < 2 * coming_up => "RESTARTING",
        _ if p.fail => "INIT_FAILED",
        _ => "ACTIVE_HEALTHY",
    }
}

fn project_json(emu: &Emulator, p: &Project, with_database: bool) -> Value {
    let mut v = json!({"id": p.reference, "ref": p.reference, "organization_id": p.organization,
        "organization_slug": p.organization, "name": p.name, "region": p.region,
        "created_at": rfc3339(p.created_ms), "status": status(emu, p)});
    if with_database {
        v["database"] = json!({"host": format!("db.{}.supabase.co", p.reference), "version": "17.4.1.054",
            "postgres_engine": "17", "release_channel": "ga"});
    }
    v
}

fn new_keys(reference: &str) -> Vec<ApiKey> {
    let b64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let jwt = |role: &str| {
        format!(
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.{}-{role}-{reference}.{}",
            random_string(24, b64),
            random_string(43, b64)
        )
    };
    vec![
        ApiKey { id: "anon".into(), name: "anon".into(), kind: "legacy".into(), key: Some(jwt("anon")) },
        ApiKey {
            id: "service_role".into(),
            name: "service_role".into(),
            kind: "legacy".into(),
            key: Some(jwt("service_role")),
        },
        ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: "default".into(),
            kind: "publishable".into(),
            key: Some(format!("sb_publishable_{}", random_string(31, b64))),
        },
        ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: "default".into(),
            kind: "secret".into(),
            key: Some(format!("sb_secret_{}", random_string(31, b64))),
        },
        // A key the token may not read: the platform answers `api_key: null`.
        ApiKey { id: uuid::Uuid::new_v4().to_string(), name: "scoped".into(), kind: "secret".into(), key: None },
    ]
}

/// The fields of `V1CreateProjectBody` (`additionalProperties: false`).
const CREATE_FIELDS: [&str; 10] = [
    "db_pass",
    "name",
    "organization_slug",
    "region_selection",
    "desired_instance_size",
    "template_url",
    "organization_id",
    "region",
    "plan",
    "kps_enabled",
];
/// Fields the OpenAPI document marks `deprecated: true`; refused here.
const DEPRECATED_FIELDS: [&str; 4] = ["organization_id", "region", "plan", "kps_enabled"];

/// Creates the project's role (with the caller's `db_pass`) and database.
async fn pg_create(emu: &Emulator, user: &str, db: &str, password: &str) -> Result<(), String> {
    let literal = password.replace('\'', "''");
    emu.pg_exec(format!("CREATE ROLE {} LOGIN PASSWORD '{literal}'", quote_ident(user))).await?;
    if let Err(e) = emu.create_database(db, user).await {
        pg_drop(emu, None, user).await;
        return Err(e);
    }
    Ok(())
}

async fn pg_drop(emu: &Emulator, db: Option<&str>, user: &str) {
    if let Some(db) = db
        && let Err(e) = emu.pg_exec(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db))).await
    {
        tracing::warn!(error = %e, "failed to drop an emulated Supabase database");
    }
    if let Err(e) = emu.pg_exec(format!("DROP ROLE IF EXISTS {}", quote_ident(user))).await {
        tracing::warn!(error = %e, "failed to drop an emulated Supabase role");
    }
}

/// The region codes Supabase creates projects in (the `region_selection`
/// `specific` codes of the Management API); any other is refused with 400.
pub const REGIONS: [&str; 18] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-east-1",
];

fn region_of(selection: Option<&Value>) -> Result<String, String> {
    let Some(sel) = selection else { return Ok("us-east-1".into()) };
    let code = sel.get("code").and_then(Value::as_str).ok_or("region_selection.code must be provided")?;
    match (sel.get("type").and_then(Value::as_str), code) {
        (Some("smartGroup"), "americas") => Ok("us-east-1".into()),
        (Some("smartGroup"), "emea") => Ok("eu-central-1".into()),
        (Some("smartGroup"), "apac") => Ok("ap-southeast-1".into()),
        (Some("specific"), code) if REGIONS.contains(&code) => Ok(code.into()),
        (Some("specific"), code) => Err(format!(
            "region_selection.code must be one of the following values: {} (got {code})",
            REGIONS.join(", ")
        )),
        _ => Err(format!("region_selection must be {{type: specific|smartGroup, code}}, got {sel}")),
    }
}

/// `POST /v1/projects`. Like Neon's, a create finishes even when the
/// client goes away mid-request (the real role and database included).
async fn create_project(State(emu): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    tokio::spawn(create_project_detached(emu, headers, body))
        .await
        .unwrap_or_else(|_| err(500, "Failed to create project"))
}

async fn create_project_detached(emu: Shared, headers: HeaderMap, body: Value) -> Response {
    emu.guard(P, "createProject", &headers, || async {
        let Some(fields) = body.as_object() else { return err(400, "body must be an object") };
        if let Some(extra) = fields.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
            return err(400, &format!("property {extra} should not exist"));
        }
        if let Some(old) = fields.keys().find(|k| DEPRECATED_FIELDS.contains(&k.as_str())) {
            return err(400, &format!("{old} is deprecated: use organization_slug and region_selection"));
        }
        let s = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
        let Some(name) = s("name") else { return err(400, "name must be provided") };
        let Some(db_pass) = s("db_pass") else { return err(400, "db_pass must be provided") };
        let Some(organization) = s("organization_slug") else {
            return err(400, "organization_slug must be provided");
        };
        let region = match region_of(body.get("region_selection").filter(|v| !v.is_null())) {
            Ok(r) => r,
            Err(m) => return err(400, &m),
        };
        let reference = random_string(20, b"abcdefghijklmnopqrstuvwxyz");
        let (db_user, db_name) = (format!("postgres.{reference}"), format!("postgres_{reference}"));
        if let Err(e) = pg_create(&emu, &db_user, &db_name, &db_pass).await {
            tracing::warn!(error = %e, "failed to create an emulated Supabase database");
            return err(500, "Failed to create project");
        }
        // `fail_deployment` ends the project INIT_FAILED, or with a state
        // (UNKNOWN, RESTARTING) sends it through that state first.
        let end = emu.faults.take_deployment_end(P);
        let detour = end.clone().filter(|s| s == "UNKNOWN" || s == "RESTARTING");
        let fail = end.is_some() && detour.is_none();
        let out = emu.write(P, |w| {
            w.supabase.next_id += 1;
            let p = Project {
                id: w.supabase.next_id,
                keys: new_keys(&reference),
                reference: reference.clone(),
                name,
                organization,
                region,
                instance_size: s("desired_instance_size"),
                fail,
                detour,
                created_ms: now_ms(),
                db_user: db_user.clone(),
                db_name: db_name.clone(),
            };
            w.supabase.projects.insert(p.reference.clone(), p.clone());
            Ok::<_, ()>(project_json(&emu, &p, false))
        });
        match out {
            Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Err(()) => {
                pg_drop(&emu, Some(&db_name), &db_user).await;
                err(500, "Failed to create project")
            }
        }
    })
    .await
}

async fn list_projects(State(emu): State<Shared>, headers: HeaderMap) -> Response {
    emu.guard(P, "listProjects", &headers, || async {
        let all = emu.read(|w| {
            let listed = w.supabase.projects.values().filter(|p| emu.listed(p.created_ms));
            listed.map(|p| project_json(&emu, p, true)).collect::<Vec<_>>()
        });
        Json(all).into_response()
    })
    .await
}

async fn get_project(State(emu): State<Shared>, headers: HeaderMap, Path(reference): Path<String>) -> Response {
    emu.guard(P, "getProject", &headers, || async {
        match emu.read(|w| w.supabase.projects.get(&reference).map(|p| project_json(&emu, p, true))) {
            Some(v) => Json(v).into_response(),
            None => err(404, "Project not found"),
        }
    })
    .await
}

async fn delete_project(State(emu): State<Shared>, headers: HeaderMap, Path(reference): Path<String>) -> Response {
    emu.guard(P, "deleteProject", &headers, || async {
        // The real database goes first: a client killed mid-request leaves
        // the project listed (and the delete repeatable), never a role behind.
        let Some((db, user)) =
            emu.read(|w| w.supabase.projects.get(&reference).map(|p| (p.db_name.clone(), p.db_user.clone())))
        else {
            return err(404, "Project not found");
        };
        if !user.is_empty() {
            pg_drop(&emu, Some(&db), &user).await;
        }
        let out = emu.write(P, |w| {
            w.supabase_auth.forget(&reference);
            w.supabase.projects.remove(&reference).ok_or(())
        });
        match out {
            Ok(p) => Json(json!({"id": p.id, "ref": p.reference, "name": p.name})).into_response(),
            Err(()) => err(404, "Project not found"),
        }
    })
    .await
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.replace("%2C", ",")))
        .collect()
}

async fn api_keys(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    emu.guard(P, "apiKeys", &headers, || async {
        let reveal = query_pairs(raw.as_deref()).iter().any(|(k, v)| k == "reveal" && v == "true");
        emu.read(|w| {
            let Some(p) = w.supabase.projects.get(&reference) else { return err(404, "Project not found") };
            let ts = rfc3339(p.created_ms);
            let keys: Vec<Value> = p
                .keys
                .iter()
                .map(|k| {
                    // New-style secret keys are masked unless revealed; legacy JWTs are always shown.
                    let value = match &k.key {
                        Some(key) if k.kind == "secret" && !reveal => json!(format!("{}····", &key[..14])),
                        Some(key) => json!(key),
                        None => Value::Null,
                    };
                    let prefix = match &k.key {
                        Some(key) if k.kind != "legacy" => json!(&key[..key.len().min(18)]),
                        _ => Value::Null,
                    };
                    json!({"name": k.name, "api_key": value, "id": k.id, "type": k.kind, "prefix": prefix,
                        "description": null, "hash": null, "inserted_at": ts, "updated_at": ts, "secret_jwt_template": null})
                })
                .collect();
            Json(keys).into_response()
        })
    })
    .await
}

async fn health(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    emu.guard(P, "health", &headers, || async {
        let services: Vec<String> = query_pairs(raw.as_deref())
            .into_iter()
            .filter(|(k, _)| k == "services" || k == "services[]")
            .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
            .collect();
        if services.is_empty() {
            return err(400, "services must be provided");
        }
        if let Some(bad) = services.iter().find(|s| !HEALTH_SERVICES.contains(&s.as_str())) {
            return err(400, &format!("services must be one of {}: {bad}", HEALTH_SERVICES.join(", ")));
        }
        emu.read(|w| {
            let Some(p) = w.supabase.projects.get(&reference) else { return err(404, "Project not found") };
            let state = match status(&emu, p) {
                "ACTIVE_HEALTHY" => "ACTIVE_HEALTHY",
                "COMING_UP" => "COMING_UP",
                _ => "UNHEALTHY",
            };
            let out: Vec<Value> = services
                .iter()
                .map(|s| json!({"name": s, "healthy": state == "ACTIVE_HEALTHY", "status": state, "info": null}))
                .collect();
            Json(out).into_response()
        })
    })
    .await
}

/// `GET /v1/projects/{ref}/config/database/pooler`: one PRIMARY
/// `SupavisorConfigResponse` (`identifier`, `database_type`,
/// `is_using_scram_auth`, `db_user`, `db_host`, `db_port`, `db_name`,
/// `connection_string` with a `[YOUR-PASSWORD]` placeholder,
/// `default_pool_size`, `max_client_conn`, `pool_mode`), pointing at the
/// backing PostgreSQL.
async fn pooler(State(emu): State<Shared>, headers: HeaderMap, Path(reference): Path<String>) -> Response {
    emu.guard(P, "poolerConfig", &headers, || async {
        emu.read(|w| {
            let Some(p) = w.supabase.projects.get(&reference) else { return err(404, "Project not found") };
            let (host, port) = (&emu.pg_host, emu.pg_port);
            Json(json!([{
                "identifier": p.reference, "database_type": "PRIMARY", "is_using_scram_auth": true,
                "db_user": p.db_user, "db_host": host, "db_port": port, "db_name": p.db_name,
                "connection_string": format!("postgresql://{}:[YOUR-PASSWORD]@{host}:{port}/{}", p.db_user, p.db_name),
                "default_pool_size": 15, "max_client_conn": 200, "pool_mode": "session",
            }]))
            .into_response()
        })
    })
    .await
}
