//! The controller's own HTTP endpoints: `/healthz` (the process runs),
//! `/readyz` (the API server was reached), `/metrics` (Prometheus).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// What the probes report.
#[derive(Clone)]
pub struct Probes {
    /// Set once the API server answered.
    pub ready: Arc<AtomicBool>,
    /// Metrics to render.
    pub metrics: Metrics,
}

/// The router serving the probes and metrics.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

async fn readyz(State(p): State<Probes>) -> impl IntoResponse {
    if p.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(p): State<Probes>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], p.metrics.render())
}
