//! Reads on a Neon project: the connection URI of a role and database and
//! the project's asynchronous operations.
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ListQuery, Operation, P, not_found, op_json, uri};
use crate::emulator::Shared;
use crate::emulator::context::error_response;

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
        let limit = match super::page_limit(q.limit, super::OPERATIONS_LIMIT, &headers) {
            Ok(l) => l,
            Err(refused) => return *refused,
        };
        emu.read(|w| {
            if !w.neon.projects.contains_key(&pid) {
                return not_found(&headers, "project");
            }
            // Newest first, as the console shows them.
            let mut all: Vec<&Operation> = w.neon.operations.values().filter(|o| o.project_id == pid).collect();
            all.sort_by(|a, b| (b.created_ms, &b.id).cmp(&(a.created_ms, &a.id)));
            let page: Vec<&Operation> = all
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
