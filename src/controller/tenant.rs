//! The Tenant reconciler: fetch -> finalizer -> plan children (pure) ->
//! apply what differs -> aggregate status (pure) -> write it if it changed.
//!
//! It owns one TenantInstance per wanted instance and one CreditLedger.
//! Provisioning itself is the TenantInstance reconciler's job; credits are
//! the CreditLedger reconciler's.
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::error::{Error, Result};
use super::finalizer::{self, Finalized};
use super::tenant_plan as plan;
use crate::api::conditions;
use crate::api::{CreditLedger, Tenant, TenantInstance};
use crate::names;

const KIND: &str = "Tenant";
/// Resync period of a converged Tenant (changes of children trigger at once).
const RESYNC: Duration = Duration::from_secs(600);
/// How often deletion progress is re-checked while children disappear.
const DELETE_POLL: Duration = Duration::from_secs(2);

/// Reconciles one Tenant.
///
/// # Errors
/// Any API failure; the error policy requeues with backoff.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = tenant.namespace().ok_or(Error::InvalidObject("Tenant without namespace"))?;
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &ns);
    let result = match finalizer::ensure(&api, &tenant, &ctx.metrics, KIND).await? {
        Finalized::Live => apply(&tenant, &ctx).await,
        Finalized::Deleting => cleanup(&api, &tenant, &ctx).await,
        Finalized::Gone => Ok(Action::await_change()),
    };
    ctx.metrics.reconciled(KIND, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&key(&tenant));
    }
    result
}

/// Decides what happens after a failed reconcile: an Event, a metric, and a
/// retry with per-object exponential backoff.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(KIND, error.category());
    let wait = ctx.backoff(&key(&tenant));
    tracing::warn!(tenant = %key(&tenant), category = error.category(), error = %error, retry_in = ?wait, "reconcile failed");
    let reference = tenant.object_ref(&());
    let (reason, note) = (error.category(), error.to_string());
    let ctx2 = ctx.clone();
    tokio::spawn(async move { ctx2.event(&reference, true, reason, "Reconcile", note).await });
    Action::requeue(wait)
}

fn key(t: &Tenant) -> String {
    format!("{}/{}", t.namespace().unwrap_or_default(), t.name_any())
}

async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let uid = tenant.uid().unwrap_or_default();
    let instances: Api<TenantInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let ledgers: Api<CreditLedger> = Api::namespaced(ctx.client.clone(), &ns);
    let ssa = PatchParams::apply(names::FIELD_MANAGER).force();
    let selector = ListParams::default().labels(&format!("{}={name}", names::LABEL_TENANT));

    // Instances: create or update what differs, delete what is no longer wanted.
    let mut observed = match ctx.caches.get() {
        Some(c) => c
            .instances
            .state()
            .iter()
            .filter(|o| {
                o.namespace().as_deref() == Some(ns.as_str())
                    && o.labels().get(names::LABEL_TENANT).map(String::as_str) == Some(name.as_str())
            })
            .map(|o| (**o).clone())
            .collect(),
        None => instances.list(&selector).await?.items,
    };
    let desired = plan::desired_instances(tenant)?;
    for want in &desired {
        let child = want.name_any();
        let existing = match observed.iter().find(|o| o.name_any() == child) {
            Some(o) => Some(o.clone()),
            None => instances.get_opt(&child).await?,
        };
        if let Some(o) = &existing {
            if plan::controlled_by_other(&o.metadata, &uid) {
                return Err(Error::Conflict { kind: "TenantInstance", name: child });
            }
            if plan::instance_up_to_date(want, o) {
                continue;
            }
        }
        let applied = instances.patch(&child, &ssa, &Patch::Apply(want)).await?;
        ctx.metrics.wrote("TenantInstance", "spec");
        let verb = if existing.is_some() { "Updated" } else { "Created" };
        ctx.event(&tenant.object_ref(&()), false, verb, "ApplyInstance", format!("{verb} TenantInstance {child}"))
            .await;
        observed.retain(|o| o.name_any() != child);
        observed.push(applied);
    }
    for extra in observed
        .iter()
        .filter(|o| o.spec.ordinal >= tenant.spec.instances && !plan::controlled_by_other(&o.metadata, &uid))
    {
        if extra.metadata.deletion_timestamp.is_none() {
            // The cache may still show an instance that is already gone.
            match instances.delete(&extra.name_any(), &DeleteParams::background()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                other => other?,
            };
            ctx.metrics.wrote("TenantInstance", "delete");
            ctx.event(
                &tenant.object_ref(&()),
                false,
                "Deleted",
                "DeleteInstance",
                format!("Deleted TenantInstance {} (no longer wanted)", extra.name_any()),
            )
            .await;
        }
    }
    observed.retain(|o| o.spec.ordinal < tenant.spec.instances);

    // Ledger: apply only the fields the Tenant manages.
    let cached = ctx.caches.get().and_then(|c| c.ledgers.get(&ObjectRef::new(&name).within(&ns)));
    let mut ledger = match cached {
        Some(l) => Some((*l).clone()),
        None => ledgers.get_opt(&name).await?,
    };
    if ledger.as_ref().is_some_and(|l| plan::controlled_by_other(&l.metadata, &uid)) {
        return Err(Error::Conflict { kind: "CreditLedger", name });
    }
    let ledger_current = match &ledger {
        Some(l) => plan::ledger_up_to_date(tenant, l)?,
        None => false,
    };
    if !ledger_current {
        let created = ledger.is_none();
        ledger = Some(ledgers.patch(&name, &ssa, &Patch::Apply(plan::desired_ledger(tenant)?)).await?);
        ctx.metrics.wrote("CreditLedger", "spec");
        if created {
            ctx.event(&tenant.object_ref(&()), false, "Created", "ApplyLedger", format!("Created CreditLedger {name}"))
                .await;
        }
    }

    write_status(tenant, ctx, &observed, ledger.as_ref()).await?;
    Ok(Action::requeue(jittered(RESYNC)))
}

async fn cleanup(api: &Api<Tenant>, tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let ns = tenant.namespace().unwrap_or_default();
    let name = tenant.name_any();
    let instances: Api<TenantInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let ledgers: Api<CreditLedger> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("{}={name}", names::LABEL_TENANT));
    let uid = tenant.uid().unwrap_or_default();

    let remaining: Vec<TenantInstance> = instances
        .list(&selector)
        .await?
        .items
        .into_iter()
        .filter(|o| !plan::controlled_by_other(&o.metadata, &uid))
        .collect();
    for o in remaining.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
        instances.delete(&o.name_any(), &DeleteParams::background()).await?;
        ctx.metrics.wrote("TenantInstance", "delete");
    }
    let ledger = ledgers.get_opt(&name).await?.filter(|l| !plan::controlled_by_other(&l.metadata, &uid));
    if ledger.as_ref().is_some_and(|l| l.metadata.deletion_timestamp.is_none()) {
        ledgers.delete(&name, &DeleteParams::background()).await?;
        ctx.metrics.wrote("CreditLedger", "delete");
    }
    if !remaining.is_empty() || ledger.is_some() {
        write_status(tenant, ctx, &remaining, ledger.as_ref()).await?;
        return Ok(Action::requeue(DELETE_POLL));
    }
    finalizer::remove(api, tenant, &ctx.metrics, KIND).await?;
    ctx.event(&tenant.object_ref(&()), false, "Deleted", "Cleanup", "All instances and the ledger are gone".into())
        .await;
    Ok(Action::await_change())
}

async fn write_status(
    tenant: &Tenant,
    ctx: &Context,
    instances: &[TenantInstance],
    ledger: Option<&CreditLedger>,
) -> Result<()> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = plan::status(tenant, instances, ledger, &now);
    if tenant.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let was_ready = tenant.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, names::COND_READY));
    let is_ready = conditions::is_true(&status.conditions, names::COND_READY);
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());
    let body = json!({ "apiVersion": Tenant::api_version(&()), "kind": KIND, "status": status });
    api.patch_status(&tenant.name_any(), &PatchParams::apply(names::FIELD_MANAGER).force(), &Patch::Apply(body))
        .await?;
    ctx.metrics.wrote(KIND, "status");
    if was_ready != is_ready {
        let msg =
            conditions::find(&status.conditions, names::COND_READY).map(|c| c.message.clone()).unwrap_or_default();
        let reason = if is_ready { "Ready" } else { "NotReady" };
        ctx.event(&tenant.object_ref(&()), false, reason, "Aggregate", msg).await;
    }
    Ok(())
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + 0.1 * rand::random::<f64>())
}
