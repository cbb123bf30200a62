//! The TenantInstance reconciler: fresh read -> finalizer -> the engine's
//! pass (apply or teardown) -> requeue. Everything about steps lives in
//! `crate::engine`; this module only wires it to the API server.
use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::finalizer::{self, Finalized};
use crate::api::TenantInstance;
use crate::engine::{self, Engine, EngineError};

const KIND: &str = "TenantInstance";

/// Reconciles one TenantInstance.
///
/// # Errors
/// API failures (409 on a concurrent change included); the error policy
/// requeues with backoff.
pub async fn reconcile(cached: Arc<TenantInstance>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = cached.namespace().ok_or(Error::InvalidObject("TenantInstance without namespace"))?;
    let engine = ctx.engine.clone().ok_or(Error::InvalidObject("the provisioning engine is not configured"))?;
    let api: Api<TenantInstance> = Api::namespaced(ctx.client.clone(), &ns);
    // Read fresh: the watch cache may predate our own last status write, and
    // acting on a stale status could repeat a create.
    let Some(mut ti) = api.get_opt(&cached.name_any()).await? else { return Ok(Action::await_change()) };
    let state = finalizer::ensure(&api, &ti, &ctx.metrics, KIND).await?;
    if state == Finalized::Live && !ti.finalizers().iter().any(|f| f == crate::names::FINALIZER) {
        // The finalizer was just added: continue from the object as stored.
        let Some(fresh) = api.get_opt(&ti.name_any()).await? else { return Ok(Action::await_change()) };
        ti = fresh;
    }
    let result = match state {
        Finalized::Live => run(&engine, &ctx, api, &ti).await,
        Finalized::Deleting => cleanup(&engine, &ctx, api, &ti).await,
        Finalized::Gone => Ok(Action::await_change()),
    };
    ctx.metrics.reconciled(KIND, started.elapsed().as_secs_f64());
    result
}

async fn run(engine: &Engine, ctx: &Context, api: Api<TenantInstance>, ti: &TenantInstance) -> Result<Action> {
    let outcome = engine::run::apply(engine, ctx, api, ti).await.map_err(into_error)?;
    if outcome.failed {
        ctx.metrics.failed(KIND, "StepFailed");
    }
    Ok(outcome.action)
}

async fn cleanup(engine: &Engine, ctx: &Context, api: Api<TenantInstance>, ti: &TenantInstance) -> Result<Action> {
    let (done, action) = engine::run::teardown(engine, ctx, api.clone(), ti).await.map_err(into_error)?;
    if done {
        finalizer::remove(&api, ti, &ctx.metrics, KIND).await?;
        ctx.event(&ti.object_ref(&()), false, "Deleted", "Cleanup", "external objects removed".into()).await;
    }
    Ok(action)
}

fn into_error(e: EngineError) -> Error {
    match e {
        EngineError::Kube(k) => Error::Kube(k),
        other => Error::Engine(other.to_string()),
    }
}

/// Failed reconciles: metric, warning log, per-object backoff.
pub fn error_policy(ti: Arc<TenantInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.category());
    let key = format!("ti/{}", ti.uid().unwrap_or_default());
    let wait = ctx.backoff(&key);
    tracing::warn!(instance = %ti.name_any(), category = error.category(), error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
