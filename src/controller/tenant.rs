//! The Tenant reconciler: fetch -> finalizer -> plan children (pure) ->
//! observe them -> apply what differs -> aggregate status (pure) -> write it
//! if it changed. Each phase is one function; the pure ones live in
//! `super::tenant_plan`.
//!
//! It owns one TenantInstance per wanted instance and one CreditLedger.
//! Provisioning itself is the TenantInstance reconciler's job; credits are
//! the CreditLedger reconciler's.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::failure;
use super::finalizer::{self, Finalized};
use super::tenant_plan::{self as plan, InstanceChange, LedgerChange};
use super::website;
use super::write;
use crate::api::{CreditLedger, Tenant, TenantInstance};
use crate::names;

const KIND: &str = "Tenant";
/// Resync period of a converged Tenant (changes of children trigger at once).
const RESYNC: Duration = Duration::from_secs(600);
/// How often a refused Tenant is judged again (from the watch cache).
const REFUSED_RECHECK: Duration = Duration::from_secs(30);
/// How often deletion progress is re-checked while children disappear.
const DELETE_POLL: Duration = Duration::from_secs(2);

/// Reconciles one Tenant.
///
/// # Errors
/// Any API failure; the error policy requeues with backoff.
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action> {
    let ns = tenant.namespace().ok_or(Error::InvalidObject("Tenant without namespace"))?;
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &ns);
    failure::measured(&ctx, KIND, &*tenant, async {
        match finalizer::ensure(&api, &tenant, &ctx.metrics, KIND).await? {
            Finalized::Live => apply(&tenant, &ctx).await,
            Finalized::Deleting => cleanup(&api, &tenant, &ctx).await,
            Finalized::Gone => Ok(Action::await_change()),
        }
    })
    .await
}

/// Decides what happens after a failed reconcile: an Event, a metric, and a
/// retry with per-object exponential backoff.
pub fn error_policy(tenant: Arc<Tenant>, error: &Error, ctx: Arc<Context>) -> Action {
    failure::requeue(&ctx, KIND, &*tenant, error)
}

/// A live Tenant: plan its instances -> observe them -> apply the changes
/// and delete the surplus -> the same for its ledger -> status. A child
/// write that fails is reported in status too (`Stalled` when the API server
/// refused it) before the error policy retries it.
async fn apply(tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let children = Children::of(tenant, ctx);
    let plan_entry = ctx.plans.as_ref().and_then(|p| p.get(&tenant.spec.stack.plan));
    let admission = plan::admission(tenant, plan_entry, &children.siblings(ctx).await?);
    if !admission.provision {
        return refuse(tenant, ctx, &children, admission.refusal.as_ref()).await;
    }
    let site = analyse_website(tenant, ctx).await;
    let finalized = ctx.engine.is_some();
    let desired = plan::desired_instances_within(tenant, admission.granted, site.fields(), finalized)?;
    let (listed, existing) = children.observe_instances(ctx, &desired).await?;
    let changes = plan::instance_changes(desired, &existing, &children.uid);
    let mut instances = listed;
    let written = children.write(ctx, changes, admission.granted, &mut instances).await;
    instances.retain(|o| o.spec.ordinal < tenant.spec.instances);
    match written {
        Ok(ledger) => {
            write_status(tenant, ctx, &instances, ledger.as_ref(), admission.refusal.as_ref(), Some(&site)).await?;
            let again = site.retry_in.map_or(jittered(RESYNC), |r| r.max(Duration::from_secs(1)).min(RESYNC));
            Ok(Action::requeue(again))
        }
        Err(error) => {
            let failure = plan::ChildFailure::of(&error);
            let shown = match children.observe_ledger(ctx).await {
                Ok(ledger) => write_status(tenant, ctx, &instances, ledger.as_ref(), Some(&failure), Some(&site)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = shown {
                tracing::warn!(tenant = %children.name, error = %e, "failed to show a failed child write in status");
            }
            Err(error)
        }
    }
}

/// A Tenant that is not provisioned (see [`plan::admission`]): its
/// children, if it has any from before, are left as they are; its status
/// says why, with one warning Event when it starts being refused. It is
/// looked at again soon, as nothing else triggers it when the Tenant it
/// clashes with goes away.
async fn refuse(
    tenant: &Tenant,
    ctx: &Context,
    children: &Children<'_>,
    refusal: Option<&plan::ChildFailure>,
) -> Result<Action> {
    let (instances, _) = children.observe_instances(ctx, &[]).await?;
    let ledger = children.observe_ledger(ctx).await?;
    let before = tenant.status.as_ref().and_then(|s| crate::api::conditions::find(&s.conditions, names::COND_STALLED));
    let newly = refusal.is_some_and(|r| before.is_none_or(|c| c.status != "True" || c.reason != r.reason));
    write_status(tenant, ctx, &instances, ledger.as_ref(), refusal, None).await?;
    if let Some(r) = refusal.filter(|_| newly) {
        ctx.event(&children.reference, true, r.reason, "Admit", r.message.clone()).await;
    }
    Ok(Action::requeue(jittered(REFUSED_RECHECK)))
}

/// A deleted Tenant: delete its own children, wait until they are gone,
/// then let it go.
async fn cleanup(api: &Api<Tenant>, tenant: &Tenant, ctx: &Context) -> Result<Action> {
    let children = Children::of(tenant, ctx);
    let (instances, ledger) = children.delete_all(ctx).await?;
    if !instances.is_empty() || ledger.is_some() {
        write_status(tenant, ctx, &instances, ledger.as_ref(), None, None).await?;
        return Ok(Action::requeue(DELETE_POLL));
    }
    finalizer::remove(api, tenant, &ctx.metrics, KIND).await?;
    if let (Some(analysis), Some(uid)) = (&ctx.analysis, tenant.metadata.uid.as_deref()) {
        analysis.forget_tenant(uid);
    }
    ctx.event(&tenant.object_ref(&()), false, "Deleted", "Cleanup", "All instances and the ledger are gone".into())
        .await;
    Ok(Action::await_change())
}

/// A Tenant's children where the API keeps them: its TenantInstances
/// (labelled with its name) and its CreditLedger (of its name).
struct Children<'a> {
    tenant: &'a Tenant,
    reference: ObjectReference,
    ns: String,
    name: String,
    uid: String,
    instances: Api<TenantInstance>,
    ledgers: Api<CreditLedger>,
}

impl<'a> Children<'a> {
    fn of(tenant: &'a Tenant, ctx: &Context) -> Self {
        let ns = tenant.namespace().unwrap_or_default();
        Self {
            tenant,
            reference: tenant.object_ref(&()),
            name: tenant.name_any(),
            uid: tenant.uid().unwrap_or_default(),
            instances: Api::namespaced(ctx.client.clone(), &ns),
            ledgers: Api::namespaced(ctx.client.clone(), &ns),
            ns,
        }
    }

    /// The Tenants of the namespace, from the watch cache (else a LIST):
    /// shared, not copied (every pass reads them all).
    async fn siblings(&self, ctx: &Context) -> Result<Vec<Arc<Tenant>>> {
        Ok(match ctx.caches.get() {
            Some(c) => {
                let ns = Some(self.ns.as_str());
                c.tenants.state().into_iter().filter(|t| t.metadata.namespace.as_deref() == ns).collect()
            }
            None => Api::<Tenant>::namespaced(self.instances.clone().into_client(), &self.ns)
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        })
    }

    fn selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{}={}", names::LABEL_TENANT, self.name))
    }

    /// The Tenant's instances as listed (from the watch cache when there is
    /// one), and every instance under a wanted name: the cache may lag
    /// behind a create, so a wanted name it lacks is read with a GET.
    async fn observe_instances(
        &self,
        ctx: &Context,
        desired: &[TenantInstance],
    ) -> Result<(Vec<TenantInstance>, Vec<TenantInstance>)> {
        let listed: Vec<TenantInstance> = match ctx.caches.get() {
            Some(c) => c
                .instances
                .state()
                .iter()
                .filter(|o| {
                    o.metadata.namespace.as_deref() == Some(self.ns.as_str())
                        && o.labels().get(names::LABEL_TENANT) == Some(&self.name)
                })
                .map(|o| (**o).clone())
                .collect(),
            None => self.instances.list(&self.selector()).await?.items,
        };
        let mut existing = listed.clone();
        for want in desired.iter().map(ResourceExt::name_any) {
            if !listed.iter().any(|o| o.name_any() == want)
                && let Some(o) = self.instances.get_opt(&want).await?
            {
                existing.push(o);
            }
        }
        Ok((listed, existing))
    }

    /// The writes of a live Tenant, in order: its instances' changes, the
    /// surplus deleted, its ledger synced. Stops at the first write that
    /// fails. `instances` (as listed) ends with each applied instance in
    /// place of what was listed under its name.
    async fn write(
        &self,
        ctx: &Context,
        changes: Vec<InstanceChange>,
        granted: i32,
        instances: &mut Vec<TenantInstance>,
    ) -> Result<Option<CreditLedger>> {
        let mut done = Vec::new();
        let result = async {
            self.apply_instances(ctx, changes, instances, &mut done).await?;
            self.delete_surplus(ctx, granted, instances).await?;
            self.sync_ledger(ctx, &mut done).await
        }
        .await;
        self.announce(ctx, done).await;
        result
    }

    /// One Event per kind of change (`Created`, `Updated`) naming every
    /// child it touched in this pass, as Kubernetes aggregates similar
    /// Events: a new Tenant's instance and ledger are one Event, not two.
    async fn announce(&self, ctx: &Context, done: Vec<(&'static str, String)>) {
        for reason in ["Created", "Updated"] {
            let children: Vec<&str> = done.iter().filter(|(r, _)| *r == reason).map(|(_, c)| c.as_str()).collect();
            if !children.is_empty() {
                let note = format!("{reason} {}", children.join(", "));
                ctx.event(&self.reference, false, reason, "ApplyChildren", note).await;
            }
        }
    }

    /// Applies `changes` in order, replacing each applied instance in
    /// `listed` and noting it in `done`.
    async fn apply_instances(
        &self,
        ctx: &Context,
        changes: Vec<InstanceChange>,
        listed: &mut Vec<TenantInstance>,
        done: &mut Vec<(&'static str, String)>,
    ) -> Result<()> {
        for change in changes {
            let (want, verb, reason) = match change {
                InstanceChange::Create(want) => (want, "create", "Created"),
                InstanceChange::Update(want) => (want, "update", "Updated"),
                InstanceChange::Refuse(name) => return Err(Error::Conflict { kind: "TenantInstance", name }),
            };
            let child = want.name_any();
            let applied = self
                .instances
                .patch(&child, &write::ssa(), &Patch::Apply(&want))
                .await
                .map_err(|source| Error::Child { verb, kind: "TenantInstance", name: child.clone(), source })?;
            ctx.metrics.wrote("TenantInstance", "spec");
            done.push((reason, format!("TenantInstance {child}")));
            listed.retain(|o| o.name_any() != child);
            listed.push(applied);
        }
        Ok(())
    }

    /// Deletes the instances the Tenant no longer wants.
    async fn delete_surplus(&self, ctx: &Context, granted: i32, observed: &[TenantInstance]) -> Result<()> {
        for extra in plan::surplus_instances(self.tenant, granted, observed) {
            // The cache may still show an instance that is already gone.
            match self.instances.delete(&extra.name_any(), &DeleteParams::background()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => continue,
                Err(source) => {
                    return Err(Error::Child {
                        verb: "delete",
                        kind: "TenantInstance",
                        name: extra.name_any(),
                        source,
                    });
                }
                Ok(_) => {}
            };
            ctx.metrics.wrote("TenantInstance", "delete");
            let note = format!("Deleted TenantInstance {} (no longer wanted)", extra.name_any());
            ctx.event(&self.reference, false, "Deleted", "DeleteInstance", note).await;
        }
        Ok(())
    }

    /// The Tenant's ledger as the watch cache (else a GET) shows it.
    async fn observe_ledger(&self, ctx: &Context) -> Result<Option<CreditLedger>> {
        let cached = ctx.caches.get().and_then(|c| c.ledgers.get(&ObjectRef::new(&self.name).within(&self.ns)));
        Ok(match cached {
            Some(l) => Some((*l).clone()),
            None => self.ledgers.get_opt(&self.name).await?,
        })
    }

    /// Brings the ledger to what the Tenant manages (and nothing more) and
    /// returns it as it now is; a created ledger is noted in `done`.
    async fn sync_ledger(&self, ctx: &Context, done: &mut Vec<(&'static str, String)>) -> Result<Option<CreditLedger>> {
        let observed = self.observe_ledger(ctx).await?;
        let body = match plan::ledger_change(self.tenant, observed.as_ref())? {
            LedgerChange::UpToDate => return Ok(observed),
            LedgerChange::Refuse => return Err(Error::Conflict { kind: "CreditLedger", name: self.name.clone() }),
            LedgerChange::Apply(body) => body,
        };
        let verb = if observed.is_some() { "update" } else { "create" };
        let applied = self
            .ledgers
            .patch(&self.name, &write::ssa(), &Patch::Apply(body))
            .await
            .map_err(|source| Error::Child { verb, kind: "CreditLedger", name: self.name.clone(), source })?;
        ctx.metrics.wrote("CreditLedger", "spec");
        if observed.is_none() {
            done.push(("Created", format!("CreditLedger {}", self.name)));
        }
        Ok(Some(applied))
    }

    /// Deletes every child the Tenant controls and returns those that still
    /// exist (being deleted).
    async fn delete_all(&self, ctx: &Context) -> Result<(Vec<TenantInstance>, Option<CreditLedger>)> {
        let own = |meta: &ObjectMeta| !plan::controlled_by_other(meta, &self.uid);
        let instances: Vec<TenantInstance> =
            self.instances.list(&self.selector()).await?.items.into_iter().filter(|o| own(&o.metadata)).collect();
        for o in instances.iter().filter(|o| o.metadata.deletion_timestamp.is_none()) {
            let name = o.name_any();
            self.instances.delete(&name, &DeleteParams::background()).await.map_err(|source| Error::Child {
                verb: "delete",
                kind: "TenantInstance",
                name,
                source,
            })?;
            ctx.metrics.wrote("TenantInstance", "delete");
        }
        let ledger = self.ledgers.get_opt(&self.name).await?.filter(|l| own(&l.metadata));
        if ledger.as_ref().is_some_and(|l| l.metadata.deletion_timestamp.is_none()) {
            self.ledgers.delete(&self.name, &DeleteParams::background()).await.map_err(|source| Error::Child {
                verb: "delete",
                kind: "CreditLedger",
                name: self.name.clone(),
                source,
            })?;
            ctx.metrics.wrote("CreditLedger", "delete");
        }
        Ok((instances, ledger))
    }
}

/// The website's profile for this pass (see [`website`]): analysed when
/// due and the controller has an analyzer, else as status shows it.
async fn analyse_website(tenant: &Tenant, ctx: &Context) -> website::Outcome {
    match (&ctx.analysis, website::due(tenant)) {
        (_, website::Due::NoWebsite) => website::Outcome::default(),
        (Some(analysis), _) => analysis.pass(tenant).await,
        (None, _) => website::Outcome {
            profile: tenant.status.as_ref().and_then(|s| s.profile.clone()),
            ..website::Outcome::default()
        },
    }
}

/// Writes the aggregated status when it changed, with an Event when `Ready`
/// flips. `site` sets the profile and the `WebsiteAnalyzed` condition; without
/// it (a refused or deleted Tenant) both stay as status shows them.
async fn write_status(
    tenant: &Tenant,
    ctx: &Context,
    instances: &[TenantInstance],
    ledger: Option<&CreditLedger>,
    failure: Option<&plan::ChildFailure>,
    site: Option<&website::Outcome>,
) -> Result<()> {
    let now = crate::api::time::now();
    let mut status = plan::status(tenant, instances, ledger, failure, &now);
    let existing = tenant.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match site {
        Some(site) => {
            status.profile.clone_from(&site.profile);
            if let Some(d) = site.desired() {
                status.conditions.extend(crate::api::conditions::merge(
                    existing,
                    &[d],
                    tenant.metadata.generation,
                    &now,
                ));
            }
        }
        None => status.conditions.extend(crate::api::conditions::find(existing, website::CONDITION).cloned()),
    }
    if write::status(ctx, &ctx.own_status.tenants, KIND, tenant, tenant.status.as_ref(), &status).await?
        && let Some((reason, message)) = plan::readiness_change(tenant.status.as_ref(), &status)
    {
        ctx.event(&tenant.object_ref(&()), false, reason, "Aggregate", message).await;
    }
    Ok(())
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + 0.1 * rand::random::<f64>())
}
