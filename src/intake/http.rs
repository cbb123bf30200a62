//! Intake's HTTP surface: `POST /stripe/webhook` on the public listener;
//! `/healthz`, `/readyz` (database and API server answer) and `/metrics`
//! on the admin listener, which is never exposed to Stripe.
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::event::Event;
use super::metrics::Metrics;
use super::process::Processor;
use super::signature::{self, SigningSecret};

/// Path Stripe delivers to.
pub const WEBHOOK_PATH: &str = "/stripe/webhook";

/// What the handlers share.
pub struct Intake {
    pub processor: Processor,
    pub secrets: Vec<SigningSecret>,
    pub tolerance_secs: i64,
    pub metrics: Metrics,
}

/// The public router: the webhook only.
pub fn router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Stripe delivers with POST")
        })
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "not_found", "no such path; Stripe delivers to /stripe/webhook")
        })
        .with_state(intake)
}

/// The admin router: probes and metrics.
pub fn admin_router(intake: Arc<Intake>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(intake)
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

async fn webhook(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            intake.metrics.refused("unreadable_body");
            return error(e.status(), "invalid_request", &e.body_text());
        }
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = signature::verify(header, &body, &intake.secrets, now, intake.tolerance_secs) {
        intake.metrics.refused(e.category());
        tracing::warn!(reason = e.category(), "refused a webhook delivery: {e}");
        return error(StatusCode::BAD_REQUEST, "invalid_signature", &e.to_string());
    }
    let event: Event = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            intake.metrics.refused("invalid_payload");
            tracing::warn!("refused a signed delivery that is not a Stripe event: {e}");
            return error(StatusCode::BAD_REQUEST, "invalid_payload", "the body is not a Stripe event");
        }
    };
    match intake.processor.process(&event).await {
        Ok(outcome) => {
            intake.metrics.event(&event.kind, outcome.label());
            tracing::info!(event = %event.id, r#type = %event.kind, outcome = outcome.label(), "stripe event handled");
            (StatusCode::OK, Json(json!({"received": true, "outcome": outcome.label()}))).into_response()
        }
        Err(e) => {
            intake.metrics.failed(e.category());
            tracing::warn!(event = %event.id, r#type = %event.kind, category = e.category(), error = %e, "stripe event not handled; Stripe will retry");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.category(), "the event could not be handled now; retry later")
        }
    }
}

async fn readyz(State(intake): State<Arc<Intake>>) -> Response {
    if intake.processor.store.ping().await && intake.processor.tenants.reachable().await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(intake): State<Arc<Intake>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], intake.metrics.render())
}
