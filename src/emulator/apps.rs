//! The agent services themselves, as the emulator runs them: a request to
//! `/_emulator/apps/<railway domain>/<path>` reaches the service that owns
//! the domain and answers 200 while a deployment of it is live (SUCCESS;
//! the previous one stays live while a newer one builds), 503 before the
//! first succeeds or after it failed, 404 for an unknown domain. Winston's
//! health step is pointed here with `WINSTON_HEALTH_BASE_URL` because
//! `*.up.railway.app` does not resolve on a machine without the platform.
//! A service deployed from the reference agent image is answered by its
//! real `winston agent` process instead ([`super::runtimes`]), and one
//! that got no runtime slot answers 503.
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;
use super::railway::deployment_status;

/// Path prefix of the emulated agent services.
pub const APPS_PATH: &str = "/_emulator/apps";

/// `/_emulator/apps/{host}/{*path}`, any method: the service's real agent
/// runtime when one runs ([`super::runtimes`]), else the stand-in answer.
pub async fn app(State(emu): State<Shared>, Path((host, path)): Path<(String, String)>, req: Request) -> Response {
    match super::runtimes::route(&emu, &host) {
        super::runtimes::Route::Runtime(port) => {
            return super::runtimes::forward(&emu.runtimes, port, &path, req).await;
        }
        super::runtimes::Route::Starting => return super::runtimes::starting(),
        super::runtimes::Route::NoSlot { max } => return super::runtimes::no_slot(max),
        super::runtimes::Route::StandIn => {}
    }
    let status = emu.read(|w| {
        let domain = w.railway.domains.values().find(|d| d.domain == host)?;
        let statuses: Vec<(i64, &'static str)> = w
            .railway
            .deployments
            .values()
            .filter(|d| d.service_id == domain.service_id && d.environment_id == domain.environment_id && !d.removed)
            .map(|d| (d.created_ms, deployment_status(&emu, w, d)))
            .collect();
        // The live deployment serves while a newer one builds.
        if statuses.iter().any(|(_, s)| matches!(*s, "SUCCESS" | "SLEEPING")) {
            return Some("SUCCESS");
        }
        statuses.into_iter().max_by_key(|(created, _)| *created).map(|(_, s)| s)
    });
    match status {
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no service serves {host}")}))).into_response(),
        Some("SUCCESS") => Json(json!({"status": "ok", "host": host, "path": format!("/{path}")})).into_response(),
        Some(s) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": s.to_lowercase(), "host": host}))).into_response()
        }
    }
}
