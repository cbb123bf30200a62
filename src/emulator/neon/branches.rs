//! Neon branches, endpoints, roles, databases, connection URIs and
//! operations. A new branch starts without roles and databases in the
//! emulator (real Neon copies the parent's; Winston always creates its own).

// Handlers return a ready `Response` as the error of their world closures:
// it is answered at once, so its size does not matter.
#![allow(clippy::result_large_err)]
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Branch, ListQuery, P, add_database, add_role, branch_json, database_json, endpoint_json, fail, new_branch,
    new_endpoint, new_op, not_found, op_json, pg_drop, role_json, uri,
};
use crate::emulator::Shared;
use crate::emulator::context::error_response;

pub(super) async fn create_branch(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    emu.guard(P, "createBranch", &headers, || async {
        let body = body.map(|Json(v)| v).unwrap_or(Value::Null);
        let spec = body.get("branch").cloned().unwrap_or(Value::Null);
        let kinds: Vec<String> = body
            .get("endpoints")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("type").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        if kinds.iter().any(|k| k != "read_write" && k != "read_only") {
            return error_response(P, 400, "", "endpoint type must be read_write or read_only", &headers);
        }
        let out = emu.write(P, |w| {
            if !w.neon.projects.contains_key(&pid) {
                return Err(not_found(&headers, "project"));
            }
            let parent = match spec.get("parent_id").and_then(Value::as_str) {
                Some(p) => w.neon.branches.get(p).filter(|b| b.project_id == pid).map(|b| b.id.clone()),
                None => w.neon.branches.values().find(|b| b.project_id == pid && b.default).map(|b| b.id.clone()),
            };
            let Some(parent) = parent else {
                return Err(error_response(P, 400, "", "parent branch not found", &headers));
            };
            let mut branch = new_branch(&pid, Some(parent), String::new(), false);
            branch.name = spec.get("name").and_then(Value::as_str).map_or_else(|| branch.id.clone(), str::to_string);
            branch.protected = spec.get("protected").and_then(Value::as_bool).unwrap_or(false);
            w.neon.branches.insert(branch.id.clone(), branch.clone());
            let mut ops = vec![new_op(&mut w.neon, &pid, Some(&branch.id), None, "create_branch")];
            let mut endpoints = Vec::new();
            for kind in &kinds {
                let e = new_endpoint(&branch, kind);
                w.neon.endpoints.insert(e.id.clone(), e.clone());
                ops.push(new_op(&mut w.neon, &pid, Some(&branch.id), Some(&e.id), "start_compute"));
                endpoints.push(e);
            }
            Ok(json!({
                "branch": branch_json(&emu, &w.neon, &branch),
                "endpoints": endpoints.iter().map(|e| endpoint_json(&emu, &w.neon, e)).collect::<Vec<_>>(),
                "operations": ops.iter().map(|o| op_json(&emu, o)).collect::<Vec<_>>(),
                "roles": [], "databases": [], "connection_uris": [],
            }))
        });
        match out {
            Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Err(r) => r,
        }
    })
    .await
}

pub(super) async fn list_branches(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    emu.guard(P, "listBranches", &headers, || async {
        let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
        emu.read(|w| {
            if !w.neon.projects.contains_key(&pid) {
                return not_found(&headers, "project");
            }
            let mut all: Vec<&Branch> = w.neon.branches.values().filter(|b| b.project_id == pid).collect();
            all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            let page: Vec<&Branch> = all
                .into_iter()
                .filter(|b| q.search.as_deref().is_none_or(|s| b.name.contains(s) || b.id.contains(s)))
                .skip_while(|b| q.cursor.as_deref().is_some_and(|c| c != b.id))
                .skip(usize::from(q.cursor.is_some()))
                .take(limit)
                .collect();
            let next = if page.len() == limit { page.last().map(|b| b.id.clone()) } else { None };
            Json(json!({
                "branches": page.iter().map(|b| branch_json(&emu, &w.neon, b)).collect::<Vec<_>>(),
                "annotations": {},
                "pagination": {"next": next, "sort_by": "updated_at", "sort_order": "desc"},
            }))
            .into_response()
        })
    })
    .await
}

pub(super) async fn get_branch(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "getBranch", &headers, || async {
        emu.read(|w| match w.neon.branches.get(&bid).filter(|b| b.project_id == pid) {
            Some(b) => Json(json!({"branch": branch_json(&emu, &w.neon, b), "annotation": {"object": {"type": "branch", "id": b.id}, "value": {}}}))
                .into_response(),
            None => not_found(&headers, "branch"),
        })
    })
    .await
}

pub(super) async fn delete_branch(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "deleteBranch", &headers, || async {
        let out = emu.write(P, |w| {
            let n = &mut w.neon;
            let Some(b) = n.branches.get(&bid).filter(|b| b.project_id == pid).cloned() else { return Err(None) };
            if b.default {
                return Err(Some(error_response(P, 400, "", "cannot delete the default branch", &headers)));
            }
            n.branches.remove(&bid);
            n.endpoints.retain(|_, e| e.branch_id != bid);
            let dbs: Vec<String> =
                n.databases.iter().filter(|d| d.branch_id == bid).map(|d| d.real_name.clone()).collect();
            let roles: Vec<String> =
                n.roles.iter().filter(|r| r.branch_id == bid).map(|r| r.real_name.clone()).collect();
            n.databases.retain(|d| d.branch_id != bid);
            n.roles.retain(|r| r.branch_id != bid);
            n.operations.retain(|_, o| o.branch_id.as_deref() != Some(&bid));
            let op = new_op(n, &pid, None, None, "delete_timeline");
            let mut body = json!({"branch": super::branch_json(&emu, n, &b), "operations": [op_json(&emu, &op)]});
            body["branch"]["current_state"] = json!("ready");
            Ok((body, dbs, roles))
        });
        match out {
            Ok((body, dbs, roles)) => {
                pg_drop(&emu, &dbs, &roles).await;
                Json(body).into_response()
            }
            // Already gone: safe to repeat.
            Err(None) => StatusCode::NO_CONTENT.into_response(),
            Err(Some(r)) => r,
        }
    })
    .await
}

pub(super) async fn list_endpoints(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "listBranchEndpoints", &headers, || async {
        emu.read(|w| {
            if w.neon.branches.get(&bid).is_none_or(|b| b.project_id != pid) {
                return not_found(&headers, "branch");
            }
            let eps: Vec<Value> = w
                .neon
                .endpoints
                .values()
                .filter(|e| e.branch_id == bid)
                .map(|e| endpoint_json(&emu, &w.neon, e))
                .collect();
            Json(json!({"endpoints": eps})).into_response()
        })
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct RoleBody {
    role: RoleSpec,
}

#[derive(Deserialize)]
struct RoleSpec {
    name: String,
}

pub(super) async fn create_role(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
    Json(body): Json<RoleBody>,
) -> Response {
    emu.guard(P, "createRole", &headers, || async {
        if body.role.name.len() > 63 {
            return error_response(P, 400, "", "role name must be at most 63 bytes", &headers);
        }
        let role = match add_role(&emu, &pid, &bid, &body.role.name).await {
            Ok(r) => r,
            Err(e) => return fail(&headers, e),
        };
        let body = emu.write(P, |w| {
            w.neon.roles.push(role.clone());
            let op = new_op(&mut w.neon, &pid, Some(&bid), None, "apply_config");
            Ok::<_, ()>(json!({"role": role_json(&role, true), "operations": [op_json(&emu, &op)]}))
        });
        match body {
            Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
            Err(()) => error_response(P, 500, "", "internal error", &headers),
        }
    })
    .await
}

pub(super) async fn list_roles(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "listRoles", &headers, || async {
        emu.read(|w| {
            if w.neon.branches.get(&bid).is_none_or(|b| b.project_id != pid) {
                return not_found(&headers, "branch");
            }
            let roles: Vec<Value> =
                w.neon.roles.iter().filter(|r| r.branch_id == bid).map(|r| role_json(r, false)).collect();
            Json(json!({"roles": roles})).into_response()
        })
    })
    .await
}

pub(super) async fn get_role(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
) -> Response {
    emu.guard(P, "getRole", &headers, || async {
        emu.read(|w| match w.neon.roles.iter().find(|r| r.project_id == pid && r.branch_id == bid && r.name == name) {
            Some(r) => Json(json!({"role": role_json(r, false)})).into_response(),
            None => not_found(&headers, "role"),
        })
    })
    .await
}

pub(super) async fn reveal_password(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
) -> Response {
    emu.guard(P, "revealRolePassword", &headers, || async {
        emu.read(|w| {
            let stored = w.neon.projects.get(&pid).is_some_and(|p| p.store_passwords);
            match w.neon.roles.iter().find(|r| r.project_id == pid && r.branch_id == bid && r.name == name) {
                Some(_) if !stored => error_response(P, 412, "", "passwords are not stored for this project", &headers),
                Some(r) => Json(json!({"password": r.password})).into_response(),
                None => not_found(&headers, "role"),
            }
        })
    })
    .await
}

pub(super) async fn delete_role(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
) -> Response {
    emu.guard(P, "deleteRole", &headers, || async {
        let out = emu.write(P, |w| {
            let n = &mut w.neon;
            let idx =
                n.roles.iter().position(|r| r.project_id == pid && r.branch_id == bid && r.name == name).ok_or(())?;
            if n.databases.iter().any(|d| d.branch_id == bid && d.owner_name == name) {
                return Ok(Err(error_response(P, 400, "", "role owns databases; delete them first", &headers)));
            }
            let role = n.roles.remove(idx);
            let op = new_op(n, &pid, Some(&bid), None, "apply_config");
            Ok(Ok((json!({"role": role_json(&role, false), "operations": [op_json(&emu, &op)]}), role.real_name)))
        });
        match out {
            Ok(Ok((body, real))) => {
                pg_drop(&emu, &[], &[real]).await;
                Json(body).into_response()
            }
            Ok(Err(r)) => r,
            Err(()) => not_found(&headers, "role"),
        }
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct DatabaseBody {
    database: DatabaseSpec,
}

#[derive(Deserialize)]
struct DatabaseSpec {
    name: Option<String>,
    owner_name: Option<String>,
}

pub(super) async fn create_database(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
    Json(body): Json<DatabaseBody>,
) -> Response {
    emu.guard(P, "createDatabase", &headers, || async {
        let (Some(name), Some(owner)) = (body.database.name.as_deref(), body.database.owner_name.as_deref()) else {
            return error_response(P, 400, "", "database.name and database.owner_name are required", &headers);
        };
        let db = match add_database(&emu, &pid, &bid, name, owner).await {
            Ok(d) => d,
            Err(e) => return fail(&headers, e),
        };
        let body = emu.write(P, |w| {
            w.neon.next_database_id += 1;
            let db = super::Database { id: w.neon.next_database_id, ..db };
            w.neon.databases.push(db.clone());
            let op = new_op(&mut w.neon, &pid, Some(&bid), None, "apply_config");
            Ok::<_, ()>(json!({"database": database_json(&db), "operations": [op_json(&emu, &op)]}))
        });
        match body {
            Ok(b) => (StatusCode::CREATED, Json(b)).into_response(),
            Err(()) => error_response(P, 500, "", "internal error", &headers),
        }
    })
    .await
}

pub(super) async fn list_databases(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "listDatabases", &headers, || async {
        emu.read(|w| {
            if w.neon.branches.get(&bid).is_none_or(|b| b.project_id != pid) {
                return not_found(&headers, "branch");
            }
            let dbs: Vec<Value> = w.neon.databases.iter().filter(|d| d.branch_id == bid).map(database_json).collect();
            Json(json!({"databases": dbs})).into_response()
        })
    })
    .await
}

pub(super) async fn get_database(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
) -> Response {
    emu.guard(P, "getDatabase", &headers, || async {
        emu.read(|w| {
            match w.neon.databases.iter().find(|d| d.project_id == pid && d.branch_id == bid && d.name == name) {
                Some(d) => Json(json!({"database": database_json(d)})).into_response(),
                None => not_found(&headers, "database"),
            }
        })
    })
    .await
}

pub(super) async fn update_database(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
    Json(body): Json<DatabaseBody>,
) -> Response {
    emu.guard(P, "updateDatabase", &headers, || async {
        let Some(owner) = body.database.owner_name.clone() else {
            return error_response(P, 400, "", "database.owner_name is required", &headers);
        };
        let found = emu.read(|w| {
            let d = w.neon.databases.iter().find(|d| d.project_id == pid && d.branch_id == bid && d.name == name)?;
            let r = w.neon.roles.iter().find(|r| r.branch_id == bid && r.name == owner).map(|r| r.real_name.clone());
            Some((d.real_name.clone(), r))
        });
        let Some((real_db, owner_real)) = found else { return not_found(&headers, "database") };
        let Some(owner_real) = owner_real else {
            return error_response(P, 400, "", "owner role does not exist", &headers);
        };
        let sql =
            format!("ALTER DATABASE {} OWNER TO {}", super::quote_ident(&real_db), super::quote_ident(&owner_real));
        if let Err(m) = super::pg_exec(&emu, sql).await {
            return error_response(P, 409, "", &m, &headers);
        }
        let out = emu.write(P, |w| {
            let d = w.neon.databases.iter_mut().find(|d| d.branch_id == bid && d.name == name).ok_or(())?;
            d.owner_name = owner.clone();
            let d = d.clone();
            let op = new_op(&mut w.neon, &pid, Some(&bid), None, "apply_config");
            Ok(json!({"database": database_json(&d), "operations": [op_json(&emu, &op)]}))
        });
        match out {
            Ok(b) => Json(b).into_response(),
            Err(()) => not_found(&headers, "database"),
        }
    })
    .await
}

pub(super) async fn delete_database(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, bid, name)): Path<(String, String, String)>,
) -> Response {
    emu.guard(P, "deleteDatabase", &headers, || async {
        let out = emu.write(P, |w| {
            let n = &mut w.neon;
            let idx = n
                .databases
                .iter()
                .position(|d| d.project_id == pid && d.branch_id == bid && d.name == name)
                .ok_or(())?;
            let db = n.databases.remove(idx);
            let op = new_op(n, &pid, Some(&bid), None, "apply_config");
            Ok((json!({"database": database_json(&db), "operations": [op_json(&emu, &op)]}), db.real_name))
        });
        match out {
            Ok((body, real)) => {
                pg_drop(&emu, &[real], &[]).await;
                Json(body).into_response()
            }
            Err(()) => not_found(&headers, "database"),
        }
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct UriQuery {
    database_name: Option<String>,
    role_name: Option<String>,
    branch_id: Option<String>,
    endpoint_id: Option<String>,
}

pub(super) async fn connection_uri(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(q): Query<UriQuery>,
) -> Response {
    emu.guard(P, "getConnectionUri", &headers, || async {
        let (Some(db_name), Some(role_name)) = (q.database_name.as_deref(), q.role_name.as_deref()) else {
            return error_response(P, 400, "", "database_name and role_name are required", &headers);
        };
        emu.read(|w| {
            let n = &w.neon;
            let branch = match (&q.branch_id, &q.endpoint_id) {
                (Some(b), _) => n.branches.get(b),
                (None, Some(e)) => n.endpoints.get(e).and_then(|e| n.branches.get(&e.branch_id)),
                (None, None) => n.branches.values().find(|b| b.project_id == pid && b.default),
            }
            .filter(|b| b.project_id == pid);
            let Some(branch) = branch else { return not_found(&headers, "branch") };
            if !n.endpoints.values().any(|e| e.branch_id == branch.id && e.kind == "read_write") {
                return not_found(&headers, "read_write endpoint");
            }
            let role = n.roles.iter().find(|r| r.branch_id == branch.id && r.name == role_name);
            let db = n.databases.iter().find(|d| d.branch_id == branch.id && d.name == db_name);
            match (role, db) {
                (Some(r), Some(d)) => Json(json!({"uri": uri(&emu, r, d)["connection_uri"]})).into_response(),
                (None, _) => not_found(&headers, "role"),
                (_, None) => not_found(&headers, "database"),
            }
        })
    })
    .await
}

pub(super) async fn list_operations(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    emu.guard(P, "listProjectOperations", &headers, || async {
        let limit = q.limit.unwrap_or(10).clamp(1, 1000);
        emu.read(|w| {
            if !w.neon.projects.contains_key(&pid) {
                return not_found(&headers, "project");
            }
            // Newest first, as the console shows them.
            let mut all: Vec<&super::Operation> = w.neon.operations.values().filter(|o| o.project_id == pid).collect();
            all.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
            let page: Vec<&super::Operation> = all
                .into_iter()
                .skip_while(|o| q.cursor.as_deref().is_some_and(|c| c != o.id))
                .skip(usize::from(q.cursor.is_some()))
                .take(limit)
                .collect();
            let cursor = page.last().map(|o| o.id.clone());
            Json(json!({"operations": page.iter().map(|o| op_json(&emu, o)).collect::<Vec<_>>(), "pagination": {"cursor": cursor}}))
                .into_response()
        })
    })
    .await
}

pub(super) async fn get_operation(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path((pid, oid)): Path<(String, String)>,
) -> Response {
    emu.guard(P, "getProjectOperation", &headers, || async {
        emu.read(|w| match w.neon.operations.get(&oid).filter(|o| o.project_id == pid) {
            Some(o) => Json(json!({"operation": op_json(&emu, o)})).into_response(),
            None => not_found(&headers, "operation"),
        })
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct EndpointBody {
    endpoint: EndpointSpec,
}

#[derive(Deserialize)]
struct EndpointSpec {
    branch_id: String,
    #[serde(rename = "type")]
    kind: String,
}

pub(super) async fn create_endpoint(
    State(emu): State<Shared>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    Json(body): Json<EndpointBody>,
) -> Response {
    emu.guard(P, "createProjectEndpoint", &headers, || async {
        let spec = body.endpoint;
        if spec.kind != "read_write" && spec.kind != "read_only" {
            return error_response(P, 400, "", "endpoint type must be read_write or read_only", &headers);
        }
        let out = emu.write(P, |w| {
            let Some(b) = w.neon.branches.get(&spec.branch_id).filter(|b| b.project_id == pid).cloned() else {
                return Err(not_found(&headers, "branch"));
            };
            if spec.kind == "read_write"
                && w.neon.endpoints.values().any(|e| e.branch_id == b.id && e.kind == "read_write")
            {
                return Err(error_response(P, 409, "", "branch already has a read_write endpoint", &headers));
            }
            let e = new_endpoint(&b, &spec.kind);
            w.neon.endpoints.insert(e.id.clone(), e.clone());
            let op = new_op(&mut w.neon, &pid, Some(&b.id), Some(&e.id), "start_compute");
            Ok(json!({"endpoint": endpoint_json(&emu, &w.neon, &e), "operations": [op_json(&emu, &op)]}))
        });
        match out {
            Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
            Err(r) => r,
        }
    })
    .await
}
