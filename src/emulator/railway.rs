//! The Railway public GraphQL API emulator (`POST /railway/graphql/v2`):
//! projects with a default `production` environment, environments,
//! services from an image with variables, variable upserts (which redeploy
//! unless `skipDeploys`), deployments whose status advances
//! BUILDING -> DEPLOYING -> SUCCESS (or FAILED when a fault is armed) over
//! `--async-delay-ms`, service domains, and deletes.
//!
//! Resolver failures answer HTTP 200 with `errors[]`, as Railway does.
//!
//! # As strict as Railway
//! - Creating a service with a source deploys it by itself, as Railway
//!   does, and that first deployment is listed only after a quarter of
//!   `--async-delay-ms` (Railway starts it a moment after `serviceCreate`
//!   answers): a client that deploys because none is listed yet builds twice.
//! - Every token belongs to one workspace: the first configured token to
//!   [`EMULATOR_WORKSPACE`], the n-th (n > 0) to `<EMULATOR_WORKSPACE>-<n>`;
//!   `me { workspaces }` lists it. `projectCreate` without `workspaceId`
//!   creates in that workspace, while `projects` without `workspaceId`
//!   lists personal projects only (projects of no workspace).
//! - A project of another workspace, and every service, deployment or
//!   mutation under it, answers "Not Authorized", the message a rejected
//!   token gets too.
//! - A service `source.image` that is not a valid image reference
//!   (`[registry[:port]/]path[:tag][@algorithm:hex]`, the OCI distribution
//!   grammar) is refused by `serviceCreate` and `serviceInstanceUpdate`
//!   with an error, as Railway refuses it, instead of deploying.
//! - Deployments go QUEUED -> INITIALIZING -> BUILDING -> DEPLOYING ->
//!   SUCCESS over `--async-delay-ms` (FAILED when a `fail_deployment`
//!   fault is armed, CRASHED or SLEEPING when it names that state); the
//!   previous deployment of the instance stays live (SUCCESS) until the new
//!   one succeeds, and is REMOVED then.
//!
//! - Every query and mutation is validated against the part of the public
//!   schema the emulator serves ([`super::railway_schema`]): an unknown
//!   field or argument is a `GRAPHQL_VALIDATION_FAILED` error, not `null`.
//!
//! # Differences that remain
//! - Only that part of the schema is known: a real field the emulator does
//!   not serve is refused too. Argument and variable types are not checked.
//! - No WAITING or NEEDS_APPROVAL deployment; CRASHED comes at the end of
//!   the build, not after the service ran a while.
//! - Railway's per-plan limits ([`super::limits`], Pro by default: 10000
//!   requests an hour and 50 a second per token) are fixed windows; whether
//!   Railway's are fixed or sliding is not published.
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;
use super::context::{Emulator, World, now_ms, random_string, rfc3339};
use super::graphql::{self, Field};
use crate::platform::Platform;

const P: Platform = Platform::Railway;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub workspace_id: Option<String>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Environment {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub image: Option<String>,
    pub repo: Option<String>,
    pub created_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub project_id: String,
    pub service_id: String,
    pub environment_id: String,
    pub fail: bool,
    pub removed: bool,
    pub created_ms: i64,
    /// When the deployment starts and is listed (later than `created_ms`
    /// for the one Railway starts by itself after `serviceCreate`).
    #[serde(default)]
    pub visible_ms: i64,
    /// The newer deployment of the same instance that replaces this one
    /// once it succeeds.
    #[serde(default)]
    pub superseded_by: Option<String>,
    /// The state it ends in instead of SUCCESS / FAILED (CRASHED, SLEEPING).
    #[serde(default)]
    pub end_state: Option<String>,
}

impl Deployment {
    /// When its lifecycle started.
    fn start_ms(&self) -> i64 {
        self.visible_ms.max(self.created_ms)
    }
}

/// The workspace of the first configured token (see the module docs).
pub const EMULATOR_WORKSPACE: &str = "ws-emulator";

/// The workspace of the caller's token: `None` when it presents none we know.
fn caller_workspace(emu: &Emulator, headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let bearer =
        header("authorization").map(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")).unwrap_or(a));
    let presented = [bearer, header("project-access-token"), header("team-access-token")];
    let index = presented.into_iter().flatten().find_map(|p| emu.config.tokens.iter().position(|t| t == p))?;
    Some(if index == 0 { EMULATOR_WORKSPACE.to_string() } else { format!("{EMULATOR_WORKSPACE}-{index}") })
}

const NOT_AUTHORIZED: &str = "Not Authorized";

/// A project the caller may reach: its own workspace's, or a personal one.
fn reachable<'w>(w: &'w World, pid: &str, ws: &str) -> Result<&'w Project, String> {
    let p = w.railway.projects.get(pid).ok_or("Project not found")?;
    match p.workspace_id.as_deref() {
        Some(other) if other != ws => Err(NOT_AUTHORIZED.into()),
        _ => Ok(p),
    }
}

/// The project of a service the caller may reach.
fn reachable_service(w: &World, sid: &str, ws: &str) -> Result<(), String> {
    let svc = w.railway.services.get(sid).ok_or("Service not found")?;
    reachable(w, &svc.project_id, ws).map(|_| ())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Domain {
    pub id: String,
    pub domain: String,
    pub service_id: String,
    pub environment_id: String,
    pub target_port: Option<i64>,
    pub created_ms: i64,
}

/// Every Railway object of the emulator.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailwayWorld {
    pub projects: BTreeMap<String, Project>,
    pub environments: BTreeMap<String, Environment>,
    pub services: BTreeMap<String, Service>,
    /// Variables per `environment/service` (service empty = shared).
    pub variables: BTreeMap<String, BTreeMap<String, String>>,
    pub deployments: BTreeMap<String, Deployment>,
    pub domains: BTreeMap<String, Domain>,
}

impl RailwayWorld {
    /// Live objects per kind, for `/_emulator/objects`.
    #[must_use]
    pub fn objects(&self) -> Value {
        json!({
            "project": self.projects.values().map(|p| json!({"id": p.id, "name": p.name})).collect::<Vec<_>>(),
            "environment": self.environments.values().map(|e| json!({"id": e.id, "name": e.name, "project_id": e.project_id})).collect::<Vec<_>>(),
            "service": self.services.values().map(|s| json!({"id": s.id, "name": s.name, "project_id": s.project_id})).collect::<Vec<_>>(),
            "deployment": self.deployments.values().filter(|d| !d.removed && d.superseded_by.is_none()).map(|d| json!({"id": d.id, "service_id": d.service_id})).collect::<Vec<_>>(),
            // Every deployment ever started, replaced ones included: what Railway built.
            "deployment_started": self.deployments.values().map(|d| json!({"id": d.id, "service_id": d.service_id})).collect::<Vec<_>>(),
            "domain": self.domains.values().map(|d| json!({"id": d.id, "domain": d.domain, "service_id": d.service_id})).collect::<Vec<_>>(),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GqlRequest {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
}

/// `POST /railway/graphql/v2`.
pub(super) async fn graphql(State(emu): State<Shared>, headers: HeaderMap, Json(req): Json<GqlRequest>) -> Response {
    let parsed = graphql::parse(&req.query, req.operation_name.as_deref());
    let op_name = parsed.as_ref().ok().and_then(|o| o.fields.first()).map_or_else(String::new, |f| f.name.clone());
    emu.guard(P, &op_name, &headers, || async {
        let op = match parsed {
            Ok(op) => op,
            Err(e) => return gql_error(&format!("Syntax Error: {e}"), "GRAPHQL_PARSE_FAILED"),
        };
        let root = if op.mutation { "Mutation" } else { "Query" };
        if let Err(message) = super::railway_schema::validate(root, &op.fields) {
            return gql_error(&message, "GRAPHQL_VALIDATION_FAILED");
        }
        let vars = req.variables.unwrap_or(Value::Null);
        let ws = caller_workspace(&emu, &headers).unwrap_or_default();
        let mut data = serde_json::Map::new();
        for field in &op.fields {
            let args = field.arguments(&vars);
            let result = if op.mutation { mutate(&emu, &ws, field, &args) } else { query(&emu, &ws, field, &args) };
            match result {
                Ok(v) => {
                    data.insert(field.key().to_string(), graphql::project(&v, &field.selection));
                }
                Err(msg) => {
                    return Json(
                        json!({"data": null, "errors": [{"message": msg, "path": [field.key()], "locations": []}]}),
                    )
                    .into_response();
                }
            }
        }
        Json(json!({"data": data})).into_response()
    })
    .await
}

fn gql_error(message: &str, code: &str) -> Response {
    Json(json!({"data": null, "errors": [{"message": message, "extensions": {"code": code}}]})).into_response()
}

/// Whether `image` is a valid image reference: `name[:tag][@digest]`
/// where name is `[domain[:port]/]component(/component)*`, each component
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, a tag `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
/// and a digest `algorithm:hex` (at least 32 hex digits).
#[must_use]
pub fn valid_image_reference(image: &str) -> bool {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((algo, hex)) = d.split_once(':') else { return false };
        let algo_ok = algo
            .split(['-', '_', '+', '.'])
            .all(|p| p.starts_with(|c: char| c.is_ascii_alphabetic()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return false;
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let domain = parts.remove(0);
        let (host, port) = match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        };
        let host_ok = host.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return false;
        }
    }
    !parts.is_empty() && parts.iter().all(|c| path_component(c))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn path_component(c: &str) -> bool {
    let alnum = |ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit();
    if !c.starts_with(alnum) || !c.ends_with(alnum) || !c.chars().all(|ch| alnum(ch) || matches!(ch, '.' | '_' | '-')) {
        return false;
    }
    // Separators: one '.', one or two '_', or any run of '-', never mixed.
    let mut run = String::new();
    for ch in c.chars() {
        if alnum(ch) {
            let ok = run.is_empty() || run == "." || run == "_" || run == "__" || run.chars().all(|x| x == '-');
            if !ok {
                return false;
            }
            run.clear();
        } else {
            run.push(ch);
        }
    }
    true
}

/// The GraphQL error for a source image that is not a valid reference.
fn invalid_image(image: &str) -> String {
    format!("Invalid image reference \"{image}\": expected [registry/]name[:tag][@digest]")
}

fn s(args: &Value, k: &str) -> Option<String> {
    args.get(k).and_then(Value::as_str).map(str::to_string)
}

fn req(args: &Value, k: &str) -> Result<String, String> {
    s(args, k).ok_or_else(|| format!("Variable \"{k}\" of required type \"String!\" was not provided."))
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn connection(nodes: Vec<Value>) -> Value {
    let edges: Vec<Value> =
        nodes.into_iter().enumerate().map(|(i, n)| json!({"cursor": i.to_string(), "node": n})).collect();
    json!({"edges": edges, "pageInfo": {"hasNextPage": false, "hasPreviousPage": false, "startCursor": null, "endCursor": null}})
}

fn env_json(e: &Environment) -> Value {
    json!({"id": e.id, "name": e.name, "projectId": e.project_id, "isEphemeral": false, "createdAt": rfc3339(e.created_ms),
        "updatedAt": rfc3339(e.created_ms), "deletedAt": null})
}

fn service_json(w: &World, s: &Service) -> Value {
    let instances: Vec<Value> = w
        .railway
        .environments
        .values()
        .filter(|e| e.project_id == s.project_id)
        .map(|e| {
            json!({"id": format!("{}:{}", s.id, e.id), "serviceId": s.id, "environmentId": e.id, "serviceName": s.name,
            "source": {"image": s.image, "repo": s.repo}})
        })
        .collect();
    json!({"id": s.id, "name": s.name, "projectId": s.project_id, "icon": null, "templateServiceId": null,
        "createdAt": rfc3339(s.created_ms), "updatedAt": rfc3339(s.created_ms), "deletedAt": null,
        "serviceInstances": connection(instances)})
}

fn project_json(w: &World, p: &Project) -> Value {
    let envs: Vec<Value> = w.railway.environments.values().filter(|e| e.project_id == p.id).map(env_json).collect();
    let base =
        w.railway.environments.values().find(|e| e.project_id == p.id && e.name == "production").map(|e| e.id.clone());
    let services: Vec<Value> =
        w.railway.services.values().filter(|s| s.project_id == p.id).map(|s| service_json(w, s)).collect();
    json!({"id": p.id, "name": p.name, "description": p.description, "workspaceId": p.workspace_id, "teamId": p.workspace_id,
        "createdAt": rfc3339(p.created_ms), "updatedAt": rfc3339(p.created_ms), "deletedAt": null, "isPublic": false,
        "prDeploys": false, "baseEnvironmentId": base, "environments": connection(envs), "services": connection(services),
        "volumes": connection(Vec::new())})
}

/// The deployment's own lifecycle, ignoring what replaced it.
fn lifecycle_status(emu: &Emulator, d: &Deployment) -> &'static str {
    let start = d.start_ms();
    if d.removed {
        "REMOVED"
    } else if !emu.elapsed(start, 0.1) {
        "QUEUED"
    } else if !emu.elapsed(start, 0.2) {
        "INITIALIZING"
    } else if !emu.elapsed(start, 0.5) {
        "BUILDING"
    } else if !emu.elapsed(start, 1.0) {
        "DEPLOYING"
    } else {
        match d.end_state.as_deref() {
            Some("CRASHED") => "CRASHED",
            Some("SLEEPING") => "SLEEPING",
            _ if d.fail => "FAILED",
            _ => "SUCCESS",
        }
    }
}

/// A deployment that succeeded (SLEEPING: succeeded, then slept).
fn succeeded(status: &str) -> bool {
    matches!(status, "SUCCESS" | "SLEEPING")
}

/// The status Railway reports: a deployment stays live (its own status)
/// until the one that replaced it succeeds, then it is REMOVED.
pub(crate) fn deployment_status(emu: &Emulator, w: &World, d: &Deployment) -> &'static str {
    if replaced(emu, w, d) { "REMOVED" } else { lifecycle_status(emu, d) }
}

/// Whether a newer deployment of the instance succeeded (itself, or one
/// that replaced it in turn).
fn replaced(emu: &Emulator, w: &World, d: &Deployment) -> bool {
    d.superseded_by
        .as_ref()
        .and_then(|n| w.railway.deployments.get(n))
        .is_some_and(|n| succeeded(lifecycle_status(emu, n)) || replaced(emu, w, n))
}

/// Whether Railway already lists the deployment.
fn listed(d: &Deployment) -> bool {
    d.visible_ms <= now_ms()
}

fn deployment_json(emu: &Emulator, w: &World, d: &Deployment) -> Value {
    let status = deployment_status(emu, w, d);
    let domain =
        w.railway.domains.values().find(|x| x.service_id == d.service_id && x.environment_id == d.environment_id);
    let url = domain.map(|x| x.domain.clone());
    json!({"id": d.id, "status": status, "statusUpdatedAt": rfc3339(d.created_ms), "createdAt": rfc3339(d.created_ms),
        "updatedAt": rfc3339(d.created_ms), "url": url, "staticUrl": url, "serviceId": d.service_id,
        "environmentId": d.environment_id, "projectId": d.project_id, "meta": {}, "canRedeploy": status != "REMOVED",
        "canRollback": false, "deploymentStopped": false})
}

fn domain_json(d: &Domain) -> Value {
    json!({"id": d.id, "domain": d.domain, "suffix": "up.railway.app", "serviceId": d.service_id,
        "environmentId": d.environment_id, "targetPort": d.target_port, "syncStatus": "ACTIVE",
        "createdAt": rfc3339(d.created_ms), "updatedAt": rfc3339(d.created_ms), "deletedAt": null})
}

fn query(emu: &Emulator, caller: &str, f: &Field, a: &Value) -> Result<Value, String> {
    emu.read(|w| {
        let r = &w.railway;
        match f.name.as_str() {
            "me" => Ok(json!({"id": format!("user-{caller}"), "name": "Emulator", "email": "emulator@example.com",
                "workspaces": [{"id": caller, "name": caller}]})),
            "project" => reachable(w, &req(a, "id")?, caller).map(|p| project_json(w, p)),
            "projects" => {
                // Without a workspace: personal projects only.
                let ws = s(a, "workspaceId").or_else(|| s(a, "teamId"));
                if ws.as_deref().is_some_and(|ws| ws != caller) {
                    return Err(NOT_AUTHORIZED.into());
                }
                let mut ps: Vec<&Project> =
                    r.projects.values().filter(|p| p.workspace_id == ws && emu.listed(p.created_ms)).collect();
                ps.sort_by(|x, y| (x.created_ms, &x.id).cmp(&(y.created_ms, &y.id)));
                Ok(page(ps.into_iter().map(|p| project_json(w, p)).collect(), a))
            }
            "environments" => {
                let pid = req(a, "projectId")?;
                Ok(page(r.environments.values().filter(|e| e.project_id == pid).map(env_json).collect(), a))
            }
            "service" => {
                let sid = req(a, "id")?;
                reachable_service(w, &sid, caller)?;
                r.services.get(&sid).map(|s| service_json(w, s)).ok_or_else(|| "Service not found".into())
            }
            "variables" => {
                let key = format!("{}/{}", req(a, "environmentId")?, s(a, "serviceId").unwrap_or_default());
                Ok(json!(r.variables.get(&key).cloned().unwrap_or_default()))
            }
            "deployment" => {
                let d = r.deployments.get(&req(a, "id")?).filter(|d| listed(d)).ok_or("Deployment not found")?;
                reachable(w, &d.project_id, caller)?;
                Ok(deployment_json(emu, w, d))
            }
            "deployments" => {
                let input = a.get("input").cloned().unwrap_or(Value::Null);
                let m = |k: &str, v: &str| s(&input, k).is_none_or(|x| x == v);
                let include_deleted = input.get("includeDeleted").and_then(Value::as_bool).unwrap_or(false);
                let mut ds: Vec<&Deployment> = r
                    .deployments
                    .values()
                    .filter(|d| {
                        m("projectId", &d.project_id)
                            && m("serviceId", &d.service_id)
                            && m("environmentId", &d.environment_id)
                    })
                    .filter(|d| listed(d) && (include_deleted || deployment_status(emu, w, d) != "REMOVED"))
                    .collect();
                ds.sort_by(|x, y| (y.created_ms, &y.id).cmp(&(x.created_ms, &x.id)));
                Ok(page(ds.into_iter().map(|d| deployment_json(emu, w, d)).collect(), a))
            }
            "domains" => {
                let (env, svc) = (req(a, "environmentId")?, req(a, "serviceId")?);
                let ds: Vec<Value> = r
                    .domains
                    .values()
                    .filter(|d| d.environment_id == env && d.service_id == svc)
                    .map(domain_json)
                    .collect();
                Ok(json!({"serviceDomains": ds, "customDomains": []}))
            }
            other => Err(format!("Cannot query field \"{other}\" on type \"Query\".")),
        }
    })
}

/// Starts a deployment of the instance, listed after `lag_ms`.
fn new_deployment(
    emu: &Emulator,
    w: &mut World,
    service_id: &str,
    environment_id: &str,
    lag_ms: i64,
) -> Result<String, String> {
    let svc = w.railway.services.get(service_id).ok_or("Service not found")?;
    let now = now_ms();
    let end = emu.faults.take_deployment_end(P);
    let d = Deployment {
        id: id(),
        project_id: svc.project_id.clone(),
        service_id: service_id.into(),
        environment_id: environment_id.into(),
        fail: end.as_deref() == Some("FAILED"),
        end_state: end.filter(|s| s != "FAILED"),
        removed: false,
        created_ms: now,
        visible_ms: now + lag_ms,
        superseded_by: None,
    };
    // The new deployment replaces the previous ones of the same instance
    // once it succeeds; until then they stay live.
    for old in w.railway.deployments.values_mut() {
        if old.service_id == service_id && old.environment_id == environment_id && old.superseded_by.is_none() {
            old.superseded_by = Some(d.id.clone());
        }
    }
    let id = d.id.clone();
    w.railway.deployments.insert(id.clone(), d);
    Ok(id)
}

fn mutate(emu: &Emulator, caller: &str, f: &Field, a: &Value) -> Result<Value, String> {
    let input = a.get("input").cloned().unwrap_or(Value::Null);
    emu.write(P, |w| {
        let now = now_ms();
        guard_mutation(w, caller, f, a, &input)?;
        match f.name.as_str() {
            "projectCreate" => {
                let p = Project {
                    id: id(),
                    name: s(&input, "name")
                        .unwrap_or_else(|| format!("project-{}", random_string(6, super::context::ALNUM_LOWER))),
                    description: s(&input, "description"),
                    workspace_id: Some(caller.to_string()),
                    created_ms: now,
                };
                let env_name = s(&input, "defaultEnvironmentName").unwrap_or_else(|| "production".into());
                let e = Environment { id: id(), project_id: p.id.clone(), name: env_name, created_ms: now };
                w.railway.environments.insert(e.id.clone(), e);
                w.railway.projects.insert(p.id.clone(), p.clone());
                Ok(project_json(w, &p))
            }
            "projectUpdate" => {
                let p = w.railway.projects.get_mut(&req(a, "id")?).ok_or("Project not found")?;
                if let Some(n) = s(&input, "name") {
                    p.name = n;
                }
                if let Some(d) = s(&input, "description") {
                    p.description = Some(d);
                }
                let p = p.clone();
                Ok(project_json(w, &p))
            }
            "projectDelete" => {
                let pid = req(a, "id")?;
                w.railway.projects.remove(&pid).ok_or("Project not found")?;
                let envs: Vec<String> =
                    w.railway.environments.values().filter(|e| e.project_id == pid).map(|e| e.id.clone()).collect();
                let svcs: Vec<String> =
                    w.railway.services.values().filter(|s| s.project_id == pid).map(|s| s.id.clone()).collect();
                w.railway.environments.retain(|_, e| e.project_id != pid);
                w.railway.services.retain(|_, s| s.project_id != pid);
                w.railway.deployments.retain(|_, d| d.project_id != pid);
                w.railway.domains.retain(|_, d| !svcs.contains(&d.service_id));
                w.railway.variables.retain(|k, _| !envs.iter().any(|e| k.starts_with(&format!("{e}/"))));
                Ok(json!(true))
            }
            "environmentCreate" => {
                let pid = req(&input, "projectId")?;
                let name = req(&input, "name")?;
                if !w.railway.projects.contains_key(&pid) {
                    return Err("Project not found".into());
                }
                let e = Environment { id: id(), project_id: pid, name, created_ms: now };
                w.railway.environments.insert(e.id.clone(), e.clone());
                Ok(env_json(&e))
            }
            "serviceCreate" => {
                let pid = req(&input, "projectId")?;
                if !w.railway.projects.contains_key(&pid) {
                    return Err("Project not found".into());
                }
                let source = input.get("source").cloned().unwrap_or(Value::Null);
                if let Some(image) = s(&source, "image").filter(|i| !valid_image_reference(i)) {
                    return Err(invalid_image(&image));
                }
                let svc = Service {
                    id: id(),
                    project_id: pid.clone(),
                    name: s(&input, "name")
                        .unwrap_or_else(|| format!("service-{}", random_string(6, super::context::ALNUM_LOWER))),
                    image: s(&source, "image"),
                    repo: s(&source, "repo"),
                    created_ms: now,
                };
                w.railway.services.insert(svc.id.clone(), svc.clone());
                let env = match s(&input, "environmentId") {
                    Some(e) => Some(e),
                    None => w
                        .railway
                        .environments
                        .values()
                        .find(|e| e.project_id == pid && e.name == "production")
                        .map(|e| e.id.clone()),
                };
                if let (Some(env), Some(vars)) = (&env, input.get("variables").and_then(Value::as_object)) {
                    let map = w.railway.variables.entry(format!("{env}/{}", svc.id)).or_default();
                    for (k, v) in vars {
                        map.insert(k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string));
                    }
                }
                if let (Some(env), true) = (env, svc.image.is_some() || svc.repo.is_some()) {
                    let lag = (emu.config.async_delay_ms / 4) as i64;
                    new_deployment(emu, w, &svc.id, &env, lag)?;
                }
                Ok(service_json(w, &svc))
            }
            "serviceInstanceUpdate" => {
                let sid = req(a, "serviceId")?;
                if let Some(image) = input.get("source").and_then(|src| s(src, "image"))
                    && !valid_image_reference(&image)
                {
                    return Err(invalid_image(&image));
                }
                let svc = w.railway.services.get_mut(&sid).ok_or("Service not found")?;
                if let Some(src) = input.get("source") {
                    svc.image = s(src, "image");
                    svc.repo = s(src, "repo");
                }
                Ok(json!(true))
            }
            "serviceDelete" => {
                let sid = req(a, "id")?;
                w.railway.services.remove(&sid).ok_or("Service not found")?;
                w.railway.deployments.retain(|_, d| d.service_id != sid);
                w.railway.domains.retain(|_, d| d.service_id != sid);
                w.railway.variables.retain(|k, _| !k.ends_with(&format!("/{sid}")));
                Ok(json!(true))
            }
            "variableCollectionUpsert" | "variableUpsert" => {
                let pid = req(&input, "projectId")?;
                let env = req(&input, "environmentId")?;
                if w.railway.environments.get(&env).is_none_or(|e| e.project_id != pid) {
                    return Err("Environment not found".into());
                }
                let sid = s(&input, "serviceId");
                let vars: Vec<(String, String)> = if f.name == "variableUpsert" {
                    vec![(req(&input, "name")?, req(&input, "value")?)]
                } else {
                    let obj = input.get("variables").and_then(Value::as_object).ok_or("variables is required")?;
                    obj.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect()
                };
                let map = w.railway.variables.entry(format!("{env}/{}", sid.clone().unwrap_or_default())).or_default();
                if input.get("replace").and_then(Value::as_bool).unwrap_or(false) {
                    map.clear();
                }
                map.extend(vars);
                let skip = input.get("skipDeploys").and_then(Value::as_bool).unwrap_or(false);
                if let (false, Some(sid)) = (skip, sid) {
                    new_deployment(emu, w, &sid, &env, 0)?;
                }
                Ok(json!(true))
            }
            "serviceInstanceDeployV2" | "serviceInstanceDeploy" | "serviceInstanceRedeploy" => {
                let id = new_deployment(emu, w, &req(a, "serviceId")?, &req(a, "environmentId")?, 0)?;
                Ok(if f.name == "serviceInstanceDeployV2" { json!(id) } else { json!(true) })
            }
            "deploymentRemove" => {
                let d = w.railway.deployments.get_mut(&req(a, "id")?).ok_or("Deployment not found")?;
                d.removed = true;
                Ok(json!(true))
            }
            "serviceDomainCreate" => {
                let sid = req(&input, "serviceId")?;
                let env = req(&input, "environmentId")?;
                let svc = w.railway.services.get(&sid).ok_or("Service not found")?;
                let d = Domain {
                    id: id(),
                    domain: format!("{}-production-{}.up.railway.app", svc.name, random_string(4, b"0123456789abcdef")),
                    service_id: sid,
                    environment_id: env,
                    target_port: input.get("targetPort").and_then(Value::as_i64),
                    created_ms: now,
                };
                w.railway.domains.insert(d.id.clone(), d.clone());
                Ok(domain_json(&d))
            }
            "serviceDomainDelete" => {
                w.railway.domains.remove(&req(a, "id")?).ok_or("Domain not found")?;
                Ok(json!(true))
            }
            other => Err(format!("Cannot query field \"{other}\" on type \"Mutation\".")),
        }
    })
}

/// Refuses a mutation on another workspace's objects with "Not
/// Authorized", as Railway does.
fn guard_mutation(w: &World, caller: &str, f: &Field, a: &Value, input: &Value) -> Result<(), String> {
    let arg = |k: &str| s(a, k).or_else(|| s(input, k));
    match f.name.as_str() {
        "projectCreate" => match s(input, "workspaceId").or_else(|| s(input, "teamId")) {
            Some(ws) if ws != caller => Err(NOT_AUTHORIZED.into()),
            _ => Ok(()),
        },
        "projectUpdate" | "projectDelete" => reachable(w, &req(a, "id")?, caller).map(|_| ()),
        "serviceDelete" => reachable_service(w, &req(a, "id")?, caller),
        "serviceInstanceUpdate"
        | "serviceInstanceDeployV2"
        | "serviceInstanceDeploy"
        | "serviceInstanceRedeploy"
        | "serviceDomainCreate" => match arg("serviceId") {
            Some(sid) => reachable_service(w, &sid, caller),
            None => Ok(()),
        },
        _ => match arg("projectId") {
            Some(pid) if w.railway.projects.contains_key(&pid) => reachable(w, &pid, caller).map(|_| ()),
            _ => Ok(()),
        },
    }
}

/// A Relay connection over `nodes` honouring `first` and `after` (the
/// cursor is the node's `id`), with `pageInfo` telling whether more follow.
fn page(nodes: Vec<Value>, args: &Value) -> Value {
    let start = match args.get("after").and_then(Value::as_str) {
        Some(after) => nodes.iter().position(|n| n["id"].as_str() == Some(after)).map_or(nodes.len(), |i| i + 1),
        None => 0,
    };
    let first = args.get("first").and_then(Value::as_u64).map_or(usize::MAX, |n| n as usize);
    let total = nodes.len();
    let taken: Vec<Value> = nodes.into_iter().skip(start).take(first).collect();
    let end = start + taken.len();
    let cursor = |n: Option<&Value>| n.and_then(|n| n["id"].as_str()).map(str::to_string);
    let (start_cursor, end_cursor) = (cursor(taken.first()), cursor(taken.last()));
    let edges: Vec<Value> = taken.into_iter().map(|n| json!({"cursor": n["id"].clone(), "node": n})).collect();
    json!({"edges": edges, "pageInfo": {"hasNextPage": end < total, "hasPreviousPage": start > 0,
        "startCursor": start_cursor, "endCursor": end_cursor}})
}

#[cfg(test)]
mod tests {
    use super::valid_image_reference;

    #[test]
    fn image_references_follow_the_distribution_grammar() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for ok in [
            "nginx".to_string(),
            "nginx:1.27-alpine".into(),
            "ghcr.io/winston-dev/agent:1.4.0".into(),
            "localhost:5000/team/app".into(),
            "registry.example.com:443/a/b__c/d-e.f:v_1".into(),
            format!("ghcr.io/winston-dev/winston@{digest}"),
            format!("ghcr.io/winston-dev/winston:0.1.0@{digest}"),
        ] {
            assert!(valid_image_reference(&ok), "{ok}");
        }
        for bad in [
            "a::b@@c:",
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a//b",
            "a/b/",
            "a..b",
            "a___b",
            "ghcr.io/x@sha256:ab",
            "ghcr.io:/x",
            "x y",
        ] {
            assert!(!valid_image_reference(bad), "{bad}");
        }
    }
}
