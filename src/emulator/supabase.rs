//! The Supabase Management API emulator: `POST /v1/projects` accepting both
//! the current body (`organization_slug`, `region` or `region_selection`,
//! `desired_instance_size`) and the older one (`organization_id`, `region`,
//! `plan`), project status moving COMING_UP -> ACTIVE_HEALTHY over
//! `--async-delay-ms` (INIT_FAILED when a `fail_deployment` fault is armed),
//! API keys (legacy `anon` / `service_role` plus publishable and secret
//! keys, masked unless `reveal=true`), service health, list and delete.
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
    pub keys: Vec<ApiKey>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub key: String,
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
}

fn err(status: u16, message: &str) -> Response {
    error_response(P, status, "", message, &HeaderMap::new())
}

fn status(emu: &Emulator, p: &Project) -> &'static str {
    if !emu.elapsed(p.created_ms, 1.0) {
        "COMING_UP"
    } else if p.fail {
        "INIT_FAILED"
    } else {
        "ACTIVE_HEALTHY"
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
        ApiKey { id: "anon".into(), name: "anon".into(), kind: "legacy".into(), key: jwt("anon") },
        ApiKey {
            id: "service_role".into(),
            name: "service_role".into(),
            kind: "legacy".into(),
            key: jwt("service_role"),
        },
        ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: "default".into(),
            kind: "publishable".into(),
            key: format!("sb_publishable_{}", random_string(31, b64)),
        },
        ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: "default".into(),
            kind: "secret".into(),
            key: format!("sb_secret_{}", random_string(31, b64)),
        },
    ]
}

async fn create_project(State(emu): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    emu.guard(P, "createProject", &headers, || async {
        let s = |k: &str| body.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_string);
        let Some(name) = s("name") else { return err(400, "name must be provided") };
        if s("db_pass").is_none() {
            return err(400, "db_pass must be provided");
        }
        // Current spec: organization_slug; older spec: organization_id. Either is accepted.
        let Some(organization) = s("organization_slug").or_else(|| s("organization_id")) else {
            return err(400, "organization_slug must be provided");
        };
        let selection = body.get("region_selection").filter(|v| !v.is_null());
        if s("region").is_some() && selection.is_some() {
            return err(400, "region and region_selection cannot both be provided");
        }
        let region = match (s("region"), selection) {
            (Some(r), _) => r,
            (None, Some(sel)) => match sel.get("code").and_then(Value::as_str) {
                Some("americas") | None => "us-east-1".into(),
                Some("emea") => "eu-central-1".into(),
                Some("apac") => "ap-southeast-1".into(),
                Some(code) => code.into(),
            },
            (None, None) => "us-east-1".into(),
        };
        let fail = emu.faults.take_failed_deployment(P);
        let out = emu.write(P, |w| {
            w.supabase.next_id += 1;
            let reference = random_string(20, b"abcdefghijklmnopqrstuvwxyz");
            let p = Project {
                id: w.supabase.next_id,
                keys: new_keys(&reference),
                reference,
                name,
                organization,
                region,
                instance_size: s("desired_instance_size"),
                fail,
                created_ms: now_ms(),
            };
            w.supabase.projects.insert(p.reference.clone(), p.clone());
            Ok::<_, ()>(project_json(&emu, &p, false))
        });
        match out {
            Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Err(()) => err(500, "Failed to create project"),
        }
    })
    .await
}

async fn list_projects(State(emu): State<Shared>, headers: HeaderMap) -> Response {
    emu.guard(P, "listProjects", &headers, || async {
        let all = emu.read(|w| w.supabase.projects.values().map(|p| project_json(&emu, p, true)).collect::<Vec<_>>());
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
        let out = emu.write(P, |w| w.supabase.projects.remove(&reference).ok_or(()));
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
                    let value = if k.kind == "secret" && !reveal { format!("{}····", &k.key[..14]) } else { k.key.clone() };
                    let prefix = if k.kind == "legacy" { Value::Null } else { json!(&k.key[..k.key.len().min(18)]) };
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
