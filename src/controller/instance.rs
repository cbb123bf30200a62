//! The TenantInstance reconciler: fresh read -> finalizer -> the engine's
//! pass (apply or teardown) -> Events, metrics -> requeue. Everything about
//! steps lives in `crate::engine`; this module only wires it to the API
//! server and lends it the controller's metrics and backoff as its
//! [`engine::Host`].
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::finalizer::{self, Finalized};
use crate::api::TenantInstance;
use crate::engine::run::Notice;
use crate::engine::{self, Deps, EngineError};

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
    let deps = Deps { engine: &engine, client: ctx.client.clone(), host: &*ctx };
    let result = match state {
        Finalized::Live => run(&deps, &ctx, &ti).await,
        Finalized::Deleting => cleanup(&deps, &ctx, &api, &ti).await,
        Finalized::Gone => Ok(Action::await_change()),
    };
    ctx.metrics.reconciled(KIND, started.elapsed().as_secs_f64());
    result
}

async fn run(deps: &Deps<'_>, ctx: &Context, ti: &TenantInstance) -> Result<Action> {
    let outcome = engine::run::apply(deps, ti).await.map_err(into_error)?;
    publish(ctx, ti, outcome.notices).await;
    if let Some(category) = outcome.failed {
        ctx.metrics.failed(KIND, category);
    }
    Ok(outcome.action)
}

async fn cleanup(deps: &Deps<'_>, ctx: &Context, api: &Api<TenantInstance>, ti: &TenantInstance) -> Result<Action> {
    let outcome = engine::run::teardown(deps, ti).await.map_err(into_error)?;
    publish(ctx, ti, outcome.notices).await;
    if !outcome.gone {
        return Ok(outcome.action);
    }
    // The Secrets go before the finalizer: an instance re-created under the
    // same name must not find the old credentials (garbage collection may
    // lag, or not run at all).
    if !engine::teardown::delete_secrets(deps, ti).await.map_err(into_error)? {
        return Ok(Action::requeue(deps.engine.poll()));
    }
    finalizer::remove(api, ti, &ctx.metrics, KIND).await?;
    // The watch forgets the provisioning failures once the object is gone;
    // the deletion's own are forgotten here.
    ctx.succeeded(&backoff_key(ti));
    ctx.event(&ti.object_ref(&()), false, "Deleted", "Cleanup", "external objects removed".into()).await;
    Ok(outcome.action)
}

async fn publish(ctx: &Context, ti: &TenantInstance, notices: Vec<Notice>) {
    let reference = ti.object_ref(&());
    for n in notices {
        ctx.event(&reference, n.warning, n.reason, n.action, n.note).await;
    }
}

/// A Kubernetes failure keeps the controller's own variant (its category
/// tells a 409 from a refusal); every other engine error travels typed.
fn into_error(e: EngineError) -> Error {
    match e {
        EngineError::Kube(k) => Error::Kube(k),
        other => Error::Engine(other),
    }
}

/// The per-object backoff key of an instance. Deletion counts its failures
/// apart: an instance that was failing for a while (backoff grown towards
/// 5 minutes) starts its teardown at once, and a teardown that fails
/// retries after a second, not after the failures of provisioning.
fn backoff_key(ti: &TenantInstance) -> String {
    let uid = ti.uid().unwrap_or_default();
    if ti.meta().deletion_timestamp.is_some() { format!("ti/{uid}/deleting") } else { format!("ti/{uid}") }
}

impl engine::Host for Context {
    fn wrote_status(&self) {
        self.metrics.wrote(KIND, "status");
    }

    fn backoff_after_failure(&self, ti: &TenantInstance) -> Duration {
        self.backoff(&backoff_key(ti))
    }

    fn reset_backoff(&self, ti: &TenantInstance) {
        self.succeeded(&backoff_key(ti));
    }

    fn step_converged(&self, step: crate::api::StepName, seconds: f64) {
        self.metrics.step_converged(step.as_str(), seconds);
    }

    fn became_ready(&self, seconds: f64) {
        self.metrics.became_ready(seconds);
    }

    fn writing_secret(&self, namespace: &str, name: &str) {
        self.own_secrets.writing(namespace, name);
    }

    fn wrote_secret(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        self.own_secrets.wrote(namespace, name, resource_version);
    }
}

/// Failed reconciles: metric, warning log, per-object backoff.
pub fn error_policy(ti: Arc<TenantInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.category());
    let wait = ctx.backoff(&backoff_key(&ti));
    tracing::warn!(instance = %ti.name_any(), category = error.category(), error = %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}
