//! The pure middle of the Tenant reconcile: which children a Tenant wants
//! and what its status is, computed from objects without any IO.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Resource;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use std::borrow::Borrow;
use std::collections::BTreeMap;

use crate::api::conditions::{self, Desired};
use crate::api::shared::Phase;
use crate::api::tenant::{ApprovalRecord, CreditsSummary, InstanceSummary};
use crate::api::{CreditLedger, Tenant, TenantInstance, TenantInstanceSpec, TenantRef, TenantStatus};
use crate::names::{self, reason};

/// Labels every child of `tenant` carries.
#[must_use]
pub fn child_labels(tenant: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string()),
        (names::LABEL_TENANT.to_string(), tenant.to_string()),
    ])
}

/// The owner reference that makes `tenant` the controller of a child.
///
/// # Errors
/// Fails when the Tenant has no name or uid (it was not read from the API).
pub fn owner_ref(tenant: &Tenant) -> Result<OwnerReference, super::Error> {
    tenant.controller_owner_ref(&()).ok_or(super::Error::InvalidObject("Tenant without name or uid"))
}

/// The TenantInstances `tenant` wants, ordinal 0..spec.instances.
///
/// # Errors
/// As [`owner_ref`].
pub fn desired_instances(tenant: &Tenant) -> Result<Vec<TenantInstance>, super::Error> {
    let site = tenant.status.as_ref().and_then(|s| s.profile.as_ref()).map(|p| &p.fields);
    desired_instances_within(tenant, tenant.spec.instances, site, true)
}

/// The TenantInstances `tenant` gets when `granted` of them are allowed
/// (see [`admission`]): ordinal 0..min(spec.instances, granted). With
/// `finalized` (an instance controller runs to remove it), each is born
/// with the cleanup finalizer: one write fewer per instance than adding it
/// on the first pass. Every apply carries it, so server-side apply never
/// drops it; without an instance controller it would only block deletion.
///
/// # Errors
/// As [`owner_ref`].
pub fn desired_instances_within(
    tenant: &Tenant,
    granted: i32,
    site: Option<&crate::api::WebsiteProfile>,
    finalized: bool,
) -> Result<Vec<TenantInstance>, super::Error> {
    let name = tenant.metadata.name.clone().ok_or(super::Error::InvalidObject("Tenant without name"))?;
    let owner = owner_ref(tenant)?;
    Ok((0..tenant.spec.instances.max(1).min(granted))
        .map(|ordinal| {
            let mut labels = child_labels(&name);
            labels.insert(names::LABEL_INSTANCE_ORDINAL.to_string(), ordinal.to_string());
            let mut ti = TenantInstance::new(
                &Tenant::instance_name(&name, ordinal),
                TenantInstanceSpec {
                    tenant_ref: TenantRef { name: name.clone() },
                    ordinal,
                    profile: tenant.spec.profile.clone(),
                    stack: tenant.spec.stack.clone(),
                    website_profile: site.cloned(),
                },
            );
            ti.metadata = ObjectMeta {
                name: ti.metadata.name.clone(),
                namespace: tenant.metadata.namespace.clone(),
                labels: Some(labels),
                owner_references: Some(vec![owner.clone()]),
                finalizers: finalized.then(|| vec![names::FINALIZER.to_string()]),
                ..ObjectMeta::default()
            };
            ti
        })
        .collect())
}

/// Whether `observed` already matches `desired` in everything the Tenant
/// controller manages (spec, labels, controller reference).
#[must_use]
pub fn instance_up_to_date(desired: &TenantInstance, observed: &TenantInstance) -> bool {
    desired.spec == observed.spec
        && labels_contain(&observed.metadata, desired.metadata.labels.as_ref())
        && has_owner(&observed.metadata, desired.metadata.owner_references.as_deref())
}

/// The fields of the CreditLedger that the Tenant controller manages, as a
/// server-side apply body. Grants and anything else a person sets on the
/// ledger belong to them and are never touched.
///
/// # Errors
/// As [`owner_ref`].
pub fn desired_ledger(tenant: &Tenant) -> Result<Value, super::Error> {
    let name = tenant.metadata.name.clone().ok_or(super::Error::InvalidObject("Tenant without name"))?;
    let mut spec = json!({ "tenantRef": { "name": name } });
    if let Some(c) = &tenant.spec.credits {
        if let Some(a) = c.allotment_per_period {
            spec["allotmentPerPeriod"] = json!(a);
        }
        if let Some(p) = c.low_balance_percent {
            spec["lowBalancePercent"] = json!(p);
        }
    }
    Ok(json!({
        "apiVersion": CreditLedger::api_version(&()),
        "kind": CreditLedger::kind(&()),
        "metadata": {
            "name": name,
            "labels": child_labels(&name),
            "ownerReferences": [owner_ref(tenant)?],
        },
        "spec": spec,
    }))
}

/// Whether `observed` already matches what [`desired_ledger`] would apply.
///
/// # Errors
/// As [`owner_ref`].
pub fn ledger_up_to_date(tenant: &Tenant, observed: &CreditLedger) -> Result<bool, super::Error> {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let credits = tenant.spec.credits.clone().unwrap_or_default();
    let owner = owner_ref(tenant)?;
    Ok(observed.spec.tenant_ref.name == name
        && observed.spec.allotment_per_period == credits.allotment_per_period
        && credits.low_balance_percent.is_none_or(|p| p == observed.spec.low_balance_percent)
        && labels_contain(&observed.metadata, Some(&child_labels(name)))
        && has_owner(&observed.metadata, Some(&[owner])))
}

fn labels_contain(meta: &ObjectMeta, want: Option<&BTreeMap<String, String>>) -> bool {
    let have = meta.labels.clone().unwrap_or_default();
    want.into_iter().flatten().all(|(k, v)| have.get(k) == Some(v))
}

fn has_owner(meta: &ObjectMeta, want: Option<&[OwnerReference]>) -> bool {
    let have = meta.owner_references.clone().unwrap_or_default();
    want.into_iter().flatten().all(|w| have.iter().any(|h| h.uid == w.uid && h.controller == w.controller))
}

/// Whether a child is controlled by a different object than `tenant`
/// (a name clash Winston must not resolve by overwriting).
#[must_use]
pub fn controlled_by_other(meta: &ObjectMeta, tenant_uid: &str) -> bool {
    meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid != tenant_uid)
}

/// What the Tenant controller does about one wanted TenantInstance.
#[derive(Clone, Debug)]
pub enum InstanceChange {
    /// It does not exist: apply it.
    Create(TenantInstance),
    /// It exists, is not being deleted, and differs in what the Tenant
    /// manages: apply it.
    Update(TenantInstance),
    /// Its name is taken by an object another owner controls: stop there.
    Refuse(String),
}

/// The changes that bring the instances to `desired`, in ordinal order; an
/// instance that already matches needs none. `existing` is every instance
/// observed under a wanted name.
#[must_use]
pub fn instance_changes(
    desired: Vec<TenantInstance>,
    existing: &[TenantInstance],
    tenant_uid: &str,
) -> Vec<InstanceChange> {
    desired
        .into_iter()
        .filter_map(|want| {
            let name = want.metadata.name.as_deref().unwrap_or_default();
            match existing.iter().find(|o| o.metadata.name.as_deref() == Some(name)) {
                None => Some(InstanceChange::Create(want)),
                Some(o) if controlled_by_other(&o.metadata, tenant_uid) => {
                    Some(InstanceChange::Refuse(name.to_string()))
                }
                // Being deleted: left to finish (a finalizer cannot be
                // added back to it), created again once it is gone.
                Some(o) if o.metadata.deletion_timestamp.is_some() => None,
                Some(o) if instance_up_to_date(&want, o) => None,
                Some(_) => Some(InstanceChange::Update(want)),
            }
        })
        .collect()
}

/// The instances of `observed` the Tenant no longer gets (ordinal at or
/// beyond `granted`: `spec.instances` lowered, or a plan whose
/// `maxInstances` is lower) that are its own and not already being deleted.
pub fn surplus_instances<'a>(
    tenant: &Tenant,
    granted: i32,
    observed: &'a [TenantInstance],
) -> impl Iterator<Item = &'a TenantInstance> {
    let (wanted, uid) = (tenant.spec.instances.min(granted), tenant.metadata.uid.clone().unwrap_or_default());
    observed.iter().filter(move |o| {
        o.spec.ordinal >= wanted && !controlled_by_other(&o.metadata, &uid) && o.metadata.deletion_timestamp.is_none()
    })
}

/// What the plan and the namespace allow a Tenant (pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Whether the Tenant is provisioned at all (instances and ledger).
    pub provision: bool,
    /// How many instances it gets: `spec.instances`, or fewer when the
    /// plan's `maxInstances` is lower.
    pub granted: i32,
    /// Why it gets less than it asks for, shown as `Stalled`.
    pub refusal: Option<ChildFailure>,
}

/// Judges `tenant` by its plan (`None`: not in the catalog, judged by the
/// instances) and the other Tenants of its namespace.
///
/// # Guarantees
/// - Two Tenants with one contact email (compared without case): the one
///   created first (then: the smaller name) is provisioned; the other is
///   not, with reason `DuplicateContactEmail`. The message names the
///   other Tenant, never the address.
/// - `spec.instances` above the plan's `maxInstances`: only `maxInstances`
///   instances exist (surplus ones are deleted), reason `PlanLimitExceeded`.
#[must_use]
pub fn admission<T: Borrow<Tenant>>(tenant: &Tenant, plan: Option<&crate::plans::Plan>, siblings: &[T]) -> Admission {
    if tenant.spec.awaiting_approval() {
        // Nothing at all until approved: no instance, no ledger, no
        // platform call. The status says so (see `Facts::awaiting`).
        return Admission { provision: false, granted: 0, refusal: None };
    }
    if let Some(first) = earlier_with_same_email(tenant, siblings) {
        let message = format!(
            "contact email already used by Tenant {first} (created earlier): this Tenant is not provisioned; \
             give it another contact email or delete one of them"
        );
        let refusal = ChildFailure { reason: reason::DUPLICATE_CONTACT_EMAIL, message, terminal: true };
        return Admission { provision: false, granted: 0, refusal: Some(refusal) };
    }
    let asked = tenant.spec.instances.max(1);
    match plan {
        Some(p) if asked > p.max_instances => {
            let (plan, max) = (&tenant.spec.stack.plan, p.max_instances);
            let message = format!(
                "spec.instances is {asked} but plan \"{plan}\" allows at most {max}: only {max} provisioned \
                 (lower spec.instances or choose a larger plan)"
            );
            let refusal = ChildFailure { reason: reason::PLAN_LIMIT_EXCEEDED, message, terminal: true };
            Admission { provision: true, granted: max, refusal: Some(refusal) }
        }
        _ => Admission { provision: true, granted: asked, refusal: None },
    }
}

/// The name of the first Tenant in `siblings` (same namespace, not being
/// deleted) with `tenant`'s contact email that precedes it by creation
/// time, then by name.
///
/// Every pass of every Tenant reads all its siblings, so the comparison
/// allocates nothing for ASCII addresses (1,000 Tenants: millions of them).
fn earlier_with_same_email<T: Borrow<Tenant>>(tenant: &Tenant, siblings: &[T]) -> Option<String> {
    let email = tenant.spec.profile.contact_email.trim();
    fn key(t: &Tenant) -> (Option<k8s_openapi::jiff::Timestamp>, Option<&str>) {
        (t.metadata.creation_timestamp.as_ref().map(|c| c.0), t.metadata.name.as_deref())
    }
    siblings
        .iter()
        .map(Borrow::borrow)
        .filter(|o| o.metadata.namespace == tenant.metadata.namespace && o.metadata.uid != tenant.metadata.uid)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| same_email(o.spec.profile.contact_email.trim(), email))
        .filter(|o| key(o) < key(tenant))
        .min_by_key(|o| key(o))
        .and_then(|o| o.metadata.name.clone())
}

/// Whether two trimmed addresses are equal once lowercased (for ASCII, the
/// same answer without building the lowercase strings).
fn same_email(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase()
}

/// What the Tenant controller does about its CreditLedger.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerChange {
    /// It matches what the Tenant manages.
    UpToDate,
    /// Apply this body (it is missing or differs).
    Apply(Value),
    /// Its name is taken by an object another owner controls.
    Refuse,
}

/// The change that brings the observed ledger to what `tenant` wants.
///
/// # Errors
/// As [`owner_ref`].
pub fn ledger_change(tenant: &Tenant, observed: Option<&CreditLedger>) -> Result<LedgerChange, super::Error> {
    let uid = tenant.metadata.uid.clone().unwrap_or_default();
    Ok(match observed {
        Some(l) if controlled_by_other(&l.metadata, &uid) => LedgerChange::Refuse,
        Some(l) if ledger_up_to_date(tenant, l)? => LedgerChange::UpToDate,
        _ => LedgerChange::Apply(desired_ledger(tenant)?),
    })
}

/// The Event reason and message when `Ready` flips between `before` and
/// `after`; `None` when it did not.
#[must_use]
pub fn readiness_change(before: Option<&TenantStatus>, after: &TenantStatus) -> Option<(&'static str, String)> {
    let was_ready = before.is_some_and(|s| conditions::is_true(&s.conditions, names::COND_READY));
    let is_ready = conditions::is_true(&after.conditions, names::COND_READY);
    (was_ready != is_ready).then(|| {
        let message =
            conditions::find(&after.conditions, names::COND_READY).map(|c| c.message.clone()).unwrap_or_default();
        (if is_ready { "Ready" } else { "NotReady" }, message)
    })
}

/// A write to a child that did not go through in this reconcile, as the
/// Tenant's status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildFailure {
    /// Condition reason: `ChildRefused` or `Conflict` when no retry fixes
    /// it, `Progressing` when it is retried.
    pub reason: &'static str,
    /// For people, for example `failed to create TenantInstance acme-0:
    /// <the API server's message>`.
    pub message: String,
    /// No retry fixes it without a change elsewhere: the Tenant is `Stalled`.
    pub terminal: bool,
}

impl ChildFailure {
    /// The failure `error` reports.
    #[must_use]
    pub fn of(error: &super::Error) -> Self {
        let terminal = error.is_terminal();
        let reason = match error {
            super::Error::Conflict { .. } => reason::CONFLICT,
            _ if terminal => reason::CHILD_REFUSED,
            _ => reason::PROGRESSING,
        };
        Self { reason, message: error.to_string(), terminal }
    }
}

/// The Tenant's status, aggregated from its instances and ledger and the
/// child write that failed in this reconcile, if one did.
///
/// # Guarantees
/// - `Ready` says whether every wanted instance serves (is `Ready`); a
///   Tenant whose instances serve stays `Ready` while they converge to a
///   new spec, and is `Reconciling` meanwhile.
/// - `Stalled` (and a `Ready=False` with the same reason) carries what no
///   retry fixes: a child the API server refused, a name another owner
///   holds, or the reason and message of every stalled instance.
/// - `Reconciling` is `False` while stalled, so kstatus says `Failed`, not
///   `InProgress`.
#[must_use]
pub fn status(
    tenant: &Tenant,
    instances: &[TenantInstance],
    ledger: Option<&CreditLedger>,
    failure: Option<&ChildFailure>,
    now: &Time,
) -> TenantStatus {
    let wanted = tenant.spec.instances.max(1);
    let summaries = instance_summaries(instances, wanted);
    let facts = Facts::of(tenant, instances, &summaries, failure, wanted);
    let existing = tenant.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    TenantStatus {
        phase: Some(facts.phase(&summaries)),
        observed_generation: tenant.metadata.generation,
        conditions: conditions::merge(
            existing,
            &facts.conditions(tenant.spec.stack.paused),
            tenant.metadata.generation,
            now,
        ),
        ready_instances: Some(format!("{}/{wanted}", facts.ready)),
        url: summaries.iter().find(|s| s.ready).and_then(|s| s.url.clone()),
        credits: ledger.map(credits_summary),
        instances: summaries,
        approval: approval(tenant, now),
        profile: tenant.status.as_ref().and_then(|s| s.profile.clone()),
    }
}

/// Who approved `tenant` and when, once `spec.approved` is true: the
/// annotations `winston approve` writes, else the field manager that set
/// `spec.approved` and the time of its write (a GitOps controller's
/// apply).
///
/// # Guarantees
/// A record seen before (in `status.approval`) is kept as it was: the
/// annotations, which anyone who may edit the Tenant can change, only fill
/// the first record and never rewrite who approved or when.
#[must_use]
pub fn approval(tenant: &Tenant, now: &Time) -> Option<ApprovalRecord> {
    if tenant.spec.approved != Some(true) {
        return None;
    }
    if let Some(previous) = tenant.status.as_ref().and_then(|s| s.approval.clone()) {
        return Some(previous);
    }
    let annotations = tenant.metadata.annotations.as_ref();
    let annotated = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
    let manager =
        tenant.metadata.managed_fields.iter().flatten().find(|m| {
            m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:approved")).is_some())
        });
    let approved_by = annotated(names::ANNOTATION_APPROVED_BY)
        .or_else(|| manager.and_then(|m| m.manager.clone()))
        .unwrap_or_else(|| "unknown".into());
    let approved_at = annotated(names::ANNOTATION_APPROVED_AT)
        .or_else(|| manager.and_then(|m| m.time.as_ref()).map(|t| t.0.to_string()))
        .unwrap_or_else(|| now.0.to_string());
    Some(ApprovalRecord { approved_by, approved_at })
}

/// One summary per wanted instance, by name.
fn instance_summaries(instances: &[TenantInstance], wanted: i32) -> Vec<InstanceSummary> {
    let mut summaries: Vec<InstanceSummary> = instances
        .iter()
        .filter(|i| i.spec.ordinal < wanted)
        .map(|i| {
            let st = i.status.clone().unwrap_or_default();
            InstanceSummary {
                name: i.metadata.name.clone().unwrap_or_default(),
                phase: st.phase,
                ready: conditions::is_true(&st.conditions, names::COND_READY),
                url: st.urls.and_then(|u| u.service),
                current_step: st.current_step,
            }
        })
        .collect();
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    summaries
}

fn credits_summary(ledger: &CreditLedger) -> CreditsSummary {
    let st = ledger.status.clone().unwrap_or_default();
    CreditsSummary {
        ledger: ledger.metadata.name.clone().unwrap_or_default(),
        balance: st.balance,
        used_this_period: st.used_this_period,
        low: conditions::is_true(&st.conditions, names::COND_LOW),
        exhausted: conditions::is_true(&st.conditions, names::COND_EXHAUSTED),
    }
}

/// Whether `instance` has not yet converged to the spec it was given: its
/// controller has not observed its generation (kstatus' own rule; an
/// instance that reports no `observedGeneration` is not judged by it) or
/// says it is `Reconciling`.
fn converging(instance: &TenantInstance) -> bool {
    let Some(st) = instance.status.as_ref() else { return false };
    let unobserved = st.observed_generation.is_some() && st.observed_generation != instance.metadata.generation;
    unobserved || conditions::is_true(&st.conditions, names::COND_RECONCILING)
}

/// What a Tenant awaiting approval says in its conditions.
const AWAITING_MESSAGE: &str = "spec.approved is false: nothing is provisioned until an administrator approves \
     (set spec.approved to true, or run `winston approve <tenant>`)";

/// What blocks the Tenant until something outside changes.
struct Blocker {
    reason: String,
    message: String,
}

/// What the Tenant's status is computed from.
struct Facts {
    /// `spec.approved` is false: nothing is provisioned.
    awaiting: bool,
    wanted: i32,
    ready: usize,
    all_ready: bool,
    /// What no retry fixes, in this order: the child write the API server
    /// refused, then every `Stalled` instance with its reason and message.
    blockers: Vec<Blocker>,
    /// A child write that failed and is retried.
    retrying: Option<String>,
    deleting: bool,
    /// Wanted instances that exist and are not ready.
    waiting: Vec<String>,
    /// Wanted instances that are ready but still converging to their spec.
    converging: Vec<String>,
    /// Wanted instances that do not exist yet.
    missing: usize,
    /// What the plan leaves out of the spec, as the instances report it
    /// (their step conditions with reason `ExcludedByPlan`), once each.
    excluded: Vec<String>,
}

impl Facts {
    fn of(
        tenant: &Tenant,
        instances: &[TenantInstance],
        summaries: &[InstanceSummary],
        failure: Option<&ChildFailure>,
        wanted: i32,
    ) -> Self {
        let ready = summaries.iter().filter(|s| s.ready).count();
        let wanted_instances = || instances.iter().filter(|i| i.spec.ordinal < wanted);
        let refused =
            failure.filter(|f| f.terminal).map(|f| Blocker { reason: f.reason.into(), message: f.message.clone() });
        let stalled = wanted_instances().filter_map(|i| {
            let c = conditions::find(&i.status.as_ref()?.conditions, names::COND_STALLED)?;
            (c.status == "True").then(|| Blocker {
                reason: c.reason.clone(),
                message: format!("{}: {}", i.metadata.name.clone().unwrap_or_default(), c.message),
            })
        });
        let is_ready = |name: &str| summaries.iter().any(|s| s.ready && s.name == name);
        Self {
            awaiting: tenant.spec.awaiting_approval(),
            wanted,
            ready,
            all_ready: i32::try_from(ready).unwrap_or(i32::MAX) >= wanted,
            blockers: refused.into_iter().chain(stalled).collect(),
            retrying: failure.filter(|f| !f.terminal).map(|f| f.message.clone()),
            deleting: tenant.metadata.deletion_timestamp.is_some(),
            waiting: summaries.iter().filter(|s| !s.ready).map(|s| s.name.clone()).collect(),
            converging: wanted_instances()
                .filter(|i| converging(i))
                .filter_map(|i| i.metadata.name.clone())
                .filter(|n| is_ready(n))
                .collect(),
            missing: usize::try_from(wanted).unwrap_or(0).saturating_sub(summaries.len()),
            excluded: excluded(wanted_instances()),
        }
    }

    fn phase(&self, summaries: &[InstanceSummary]) -> Phase {
        if self.deleting {
            Phase::Deleting
        } else if self.awaiting {
            Phase::AwaitingApproval
        } else if self.all_ready {
            Phase::Ready
        } else if !self.blockers.is_empty() {
            Phase::Failed
        } else if summaries.iter().any(|s| s.phase == Some(Phase::Degraded)) {
            Phase::Degraded
        } else if summaries.iter().any(|s| s.phase.is_some_and(|p| p != Phase::Pending)) {
            Phase::Provisioning
        } else {
            Phase::Pending
        }
    }

    fn not_ready_message(&self) -> String {
        let mut m = format!("{}/{} instances ready", self.ready, self.wanted);
        if !self.waiting.is_empty() {
            m.push_str(&format!("; waiting for {}", self.waiting.join(", ")));
        }
        if self.missing > 0 {
            m.push_str(&format!("; {} not created yet", self.missing));
        }
        m
    }

    /// Why the Tenant is still at work while nothing blocks it: a retried
    /// write, instances not ready, instances converging to a new spec.
    fn progress_message(&self) -> Option<String> {
        let mut parts: Vec<String> = self.retrying.iter().map(|m| format!("{m}; retrying")).collect();
        if !self.all_ready {
            parts.push(self.not_ready_message());
        } else if !self.converging.is_empty() {
            parts.push(format!("{} serving, updating to the current spec", self.converging.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    fn blocked_message(&self) -> String {
        self.blockers.iter().map(|b| b.message.as_str()).collect::<Vec<_>>().join("; ")
    }

    /// `Ready`, `Reconciling` and `Stalled`, and `ComponentsExcluded` while
    /// the plan leaves out a component the spec asks for.
    fn conditions(&self, paused: bool) -> Vec<Desired<'_>> {
        let first_blocker = self.blockers.first();
        let ready = if self.deleting {
            Desired::new(names::COND_READY, false, reason::DELETING, "tenant is being deleted")
        } else if self.awaiting {
            Desired::new(names::COND_READY, false, reason::AWAITING_APPROVAL, AWAITING_MESSAGE)
        } else if self.all_ready {
            Desired::new(
                names::COND_READY,
                true,
                reason::READY,
                format!("{}/{} instances ready", self.ready, self.wanted),
            )
        } else if let Some(b) = first_blocker {
            Desired::new(names::COND_READY, false, &b.reason, self.blocked_message())
        } else {
            Desired::new(names::COND_READY, false, reason::INSTANCES_NOT_READY, self.not_ready_message())
        };
        let reconciling = if self.deleting {
            Desired::new(names::COND_RECONCILING, true, reason::DELETING, "tearing down instances and ledger")
        } else if self.awaiting {
            Desired::new(names::COND_RECONCILING, false, reason::AWAITING_APPROVAL, AWAITING_MESSAGE)
        } else if paused {
            Desired::new(names::COND_RECONCILING, false, reason::PAUSED, "spec.paused is true")
        } else if let (None, Some(m)) = (first_blocker, self.progress_message()) {
            Desired::new(names::COND_RECONCILING, true, reason::PROGRESSING, m)
        } else {
            Desired::new(names::COND_RECONCILING, false, reason::IDLE, "")
        };
        let stalled = match first_blocker {
            None => Desired::new(names::COND_STALLED, false, reason::NOT_STALLED, ""),
            Some(b) => Desired::new(names::COND_STALLED, true, &b.reason, self.blocked_message()),
        };
        let mut out = vec![ready, reconciling, stalled];
        if !self.excluded.is_empty() && !self.deleting {
            let message = self.excluded.join("; ");
            out.push(Desired::new(names::COND_COMPONENTS_EXCLUDED, true, reason::EXCLUDED_BY_PLAN, message));
        }
        out
    }
}

/// The messages of the instances' step conditions that say the plan
/// excludes a component, each once, in order.
fn excluded<'i>(instances: impl Iterator<Item = &'i TenantInstance>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in instances.filter_map(|i| i.status.as_ref()).flat_map(|s| s.conditions.iter()) {
        if c.reason == reason::EXCLUDED_BY_PLAN && !out.contains(&c.message) {
            out.push(c.message.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::AgentProfile;
    use crate::api::tenant_instance::{TenantInstanceStatus, Urls};
    use crate::api::{StackSpec, TenantSpec};

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("time"))
    }

    fn tenant(instances: i32) -> Tenant {
        let mut t = Tenant::new(
            "acme",
            TenantSpec {
                profile: AgentProfile {
                    display_name: "Acme".into(),
                    contact_email: "ops@acme.test".into(),
                    ..AgentProfile::default()
                },
                stack: StackSpec { plan: "starter".into(), ..StackSpec::default() },
                instances,
                credits: None,
                approved: None,
            },
        );
        t.metadata.namespace = Some("ns".into());
        t.metadata.uid = Some("uid-1".into());
        t.metadata.generation = Some(3);
        t
    }

    fn ready(mut ti: TenantInstance, url: &str) -> TenantInstance {
        ti.status = Some(TenantInstanceStatus {
            phase: Some(Phase::Ready),
            conditions: conditions::merge(&[], &[Desired::new(names::COND_READY, true, "Ready", "")], Some(1), &now()),
            urls: Some(Urls { service: Some(url.into()), frontend: None }),
            ..TenantInstanceStatus::default()
        });
        ti
    }

    fn created(mut t: Tenant, name: &str, uid: &str, at: i64, email: &str) -> Tenant {
        t.metadata.name = Some(name.into());
        t.metadata.uid = Some(uid.into());
        t.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(at).expect("time")));
        t.spec.profile.contact_email = email.into();
        t
    }

    #[test]
    fn the_later_tenant_with_one_contact_email_is_not_provisioned() {
        let first = created(tenant(1), "first", "u1", 100, "Ops@Acme.test");
        let later = created(tenant(1), "later", "u2", 200, "ops@acme.test");
        let same_time = created(tenant(1), "aaa", "u3", 200, "ops@acme.test");
        let other = created(tenant(1), "other", "u4", 50, "someone@else.test");
        let all = [first.clone(), later.clone(), same_time.clone(), other.clone()];
        let plan = crate::plans::PlanCatalog::builtin();
        let starter = plan.get("starter");
        assert_eq!(admission(&first, starter, &all), Admission { provision: true, granted: 1, refusal: None });
        let refused = admission(&later, starter, &all);
        assert!(!refused.provision && refused.granted == 0);
        let r = refused.refusal.expect("refusal");
        assert_eq!((r.reason, r.terminal), (reason::DUPLICATE_CONTACT_EMAIL, true));
        assert!(r.message.contains("Tenant first"), "{}", r.message);
        assert!(!r.message.to_lowercase().contains("acme.test"), "the address stays out: {}", r.message);
        // Same creation second: the smaller name goes first.
        assert!(!admission(&same_time, starter, &all).provision);
        let only_later = [later.clone(), same_time.clone()];
        assert!(admission(&same_time, starter, &only_later).provision, "aaa < later");
        assert!(!admission(&later, starter, &only_later).provision);
        // A Tenant being deleted no longer holds the address.
        let mut leaving = first;
        leaving.metadata.deletion_timestamp = Some(now());
        assert!(admission(&later, starter, &[leaving, later.clone()]).provision);
        assert!(admission(&other, starter, &all).provision);
    }

    #[test]
    fn contact_emails_match_trimmed_and_lowercased_ascii_or_not() {
        for (a, b, same) in [
            ("ops@acme.test", "OPS@Acme.Test", true),
            ("ops@acme.test", "ops@acme.tesT", true),
            ("ops@acme.test", "ops@acme.tes", false),
            ("ops@acme.test", "opz@acme.test", false),
            ("Émile@acme.test", "émile@ACME.test", true),
            ("émile@acme.test", "emile@acme.test", false),
            ("ÉMILE@acme.test", "Émile@acme.test", true),
        ] {
            assert_eq!(same_email(a, b), same, "{a} vs {b}");
            assert_eq!(same_email(a, b), a.to_lowercase() == b.to_lowercase(), "{a} vs {b}: as to_lowercase says");
        }
        let first = created(tenant(1), "first", "u1", 100, "  Émile@Acme.test ");
        let later = created(tenant(1), "later", "u2", 200, "émile@acme.test");
        let starter = crate::plans::PlanCatalog::builtin();
        assert!(!admission(&later, starter.get("starter"), &[first, later.clone()]).provision);
    }

    #[test]
    fn instances_beyond_the_plan_limit_are_refused_and_surplus() {
        let catalog = crate::plans::PlanCatalog::builtin();
        let t = tenant(3);
        let a = admission::<Tenant>(&t, catalog.get("starter"), &[]);
        assert!(a.provision);
        assert_eq!(a.granted, 1);
        let r = a.refusal.clone().expect("refusal");
        assert_eq!(r.reason, reason::PLAN_LIMIT_EXCEEDED);
        assert!(r.message.contains("spec.instances is 3") && r.message.contains("at most 1"), "{}", r.message);
        let d = desired_instances_within(&t, a.granted, None, true).expect("desired");
        assert_eq!(d.len(), 1, "nothing beyond the limit");
        let three = desired_instances(&t).expect("desired");
        let surplus: Vec<_> =
            surplus_instances(&t, a.granted, &three).filter_map(|o| o.metadata.name.clone()).collect();
        assert_eq!(surplus, ["acme-1", "acme-2"], "a downgrade removes the instances the plan no longer allows");
        let s = status(&t, &d, None, a.refusal.as_ref(), &now());
        assert_eq!(condition(&s, names::COND_STALLED).1, reason::PLAN_LIMIT_EXCEEDED);
        assert_eq!(condition(&s, names::COND_READY).0, "False");
        assert_eq!(
            admission::<Tenant>(&t, catalog.get("growth"), &[]),
            Admission { provision: true, granted: 3, refusal: None }
        );
        assert_eq!(admission::<Tenant>(&t, None, &[]).granted, 3, "an unknown plan is judged by the instances");
    }

    #[test]
    fn wants_one_owned_instance_per_ordinal_with_labels() {
        let t = tenant(2);
        let d = desired_instances(&t).expect("desired");
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].metadata.name.as_deref(), Some("acme-1"));
        assert_eq!(d[1].spec.ordinal, 1);
        let owner = &d[0].metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Tenant", "uid-1", Some(true)));
        assert_eq!(d[0].metadata.labels.as_ref().expect("labels")[names::LABEL_TENANT], "acme");
        assert!(instance_up_to_date(&d[0], &d[0]));
        let mut changed = d[0].clone();
        changed.spec.stack.plan = "growth".into();
        assert!(!instance_up_to_date(&d[0], &changed));
    }

    #[test]
    fn a_component_the_plan_excludes_is_named_on_the_tenant_once() {
        let t = tenant(2);
        let d = desired_instances(&t).expect("desired");
        let s = status(&t, &[ready(d[0].clone(), "https://a")], None, None, &now());
        assert!(conditions::find(&s.conditions, names::COND_COMPONENTS_EXCLUDED).is_none(), "nothing excluded");
        let why =
            "plan starter does not include compute (the agent service); upgrade the plan or remove components.compute";
        let excluding = |ti: &TenantInstance| {
            let mut ti = ready(ti.clone(), "https://a");
            let st = ti.status.as_mut().expect("status");
            for step in ["ServiceReady", "HealthReady"] {
                st.conditions.extend(conditions::merge(
                    &[],
                    &[Desired::new(step, true, reason::EXCLUDED_BY_PLAN, why)],
                    Some(1),
                    &now(),
                ));
            }
            ti
        };
        let s = status(&t, &[excluding(&d[0]), excluding(&d[1])], None, None, &now());
        let c = conditions::find(&s.conditions, names::COND_COMPONENTS_EXCLUDED).expect("named on the Tenant");
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("True", "ExcludedByPlan", why));
        assert!(conditions::is_true(&s.conditions, names::COND_READY), "an excluded component does not block");
    }

    #[test]
    fn not_ready_with_reason_until_every_instance_is_ready() {
        let t = tenant(2);
        let d = desired_instances(&t).expect("desired");
        let s = status(&t, &[ready(d[0].clone(), "https://a"), d[1].clone()], None, None, &now());
        let r = conditions::find(&s.conditions, names::COND_READY).expect("ready");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", reason::INSTANCES_NOT_READY));
        assert!(r.message.contains("1/2") && r.message.contains("acme-1"), "{}", r.message);
        assert_eq!(s.phase, Some(Phase::Provisioning));
        assert_eq!(s.url.as_deref(), Some("https://a"));

        let s = status(&t, &[ready(d[0].clone(), "https://a"), ready(d[1].clone(), "https://b")], None, None, &now());
        assert!(conditions::is_true(&s.conditions, names::COND_READY));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.ready_instances.as_deref(), Some("2/2"));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn missing_children_are_reported_and_status_is_stable() {
        let mut t = tenant(1);
        let s = status(&t, &[], None, None, &now());
        assert!(
            conditions::find(&s.conditions, names::COND_READY).expect("ready").message.contains("1 not created yet")
        );
        t.status = Some(s.clone());
        let later = Time(now().0 + k8s_openapi::jiff::SignedDuration::from_secs(60));
        assert_eq!(status(&t, &[], None, None, &later), s, "recomputing unchanged facts must not change status");
    }

    #[test]
    fn ledger_body_owns_only_managed_fields() {
        let mut t = tenant(1);
        let body = desired_ledger(&t).expect("body");
        assert_eq!(body["spec"], json!({"tenantRef": {"name": "acme"}}));
        t.spec.credits =
            Some(crate::api::tenant::CreditOverrides { allotment_per_period: Some(5), low_balance_percent: None });
        let body = desired_ledger(&t).expect("body");
        assert_eq!(body["spec"]["allotmentPerPeriod"], json!(5));
        assert!(body["spec"].get("grants").is_none());
    }

    fn owned_by(mut ti: TenantInstance, uid: &str) -> TenantInstance {
        let refs = ti.metadata.owner_references.as_mut().expect("refs");
        refs[0].uid = uid.into();
        ti
    }

    fn kinds(changes: &[InstanceChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                InstanceChange::Create(t) => format!("create {}", t.metadata.name.as_deref().unwrap_or_default()),
                InstanceChange::Update(t) => format!("update {}", t.metadata.name.as_deref().unwrap_or_default()),
                InstanceChange::Refuse(name) => format!("refuse {name}"),
            })
            .collect()
    }

    #[test]
    fn instances_are_born_with_the_cleanup_finalizer_when_an_instance_controller_runs() {
        for ti in desired_instances(&tenant(2)).expect("desired") {
            assert_eq!(ti.metadata.finalizers, Some(vec![names::FINALIZER.to_string()]));
        }
        for ti in desired_instances_within(&tenant(2), 2, None, false).expect("desired") {
            assert_eq!(ti.metadata.finalizers, None);
        }
    }

    #[test]
    fn instance_changes_create_update_skip_and_refuse_in_order() {
        let t = tenant(3);
        let d = desired_instances(&t).expect("desired");
        let mut stale = d[1].clone();
        stale.spec.stack.plan = "growth".into();
        let mut leaving = stale.clone();
        leaving.metadata.deletion_timestamp = Some(now());
        let rows: [(&str, Vec<TenantInstance>, Vec<&str>); 5] = [
            ("one drifted but being deleted", vec![d[0].clone(), leaving, d[2].clone()], vec![]),
            ("nothing exists", vec![], vec!["create acme-0", "create acme-1", "create acme-2"]),
            ("all current", d.clone(), vec![]),
            ("one drifted", vec![d[0].clone(), stale, d[2].clone()], vec!["update acme-1"]),
            (
                "a name another owner controls",
                vec![owned_by(d[0].clone(), "uid-9"), d[2].clone()],
                vec!["refuse acme-0", "create acme-1"],
            ),
        ];
        for (row, existing, want) in rows {
            assert_eq!(kinds(&instance_changes(d.clone(), &existing, "uid-1")), want, "{row}");
        }
    }

    #[test]
    fn surplus_is_own_live_instances_beyond_the_count() {
        let t = tenant(1);
        let three = desired_instances(&tenant(3)).expect("desired");
        let mut deleting = three[2].clone();
        deleting.metadata.deletion_timestamp = Some(now());
        let foreign = owned_by(three[1].clone(), "uid-9");
        let observed = [three[0].clone(), three[1].clone(), deleting.clone(), foreign];
        let names: Vec<_> = surplus_instances(&t, 1, &observed).filter_map(|o| o.metadata.name.clone()).collect();
        assert_eq!(names, ["acme-1"]);
        assert_eq!(surplus_instances(&t, 1, &[three[0].clone(), deleting]).count(), 0);
    }

    #[test]
    fn the_ledger_is_applied_when_missing_or_drifted_and_refused_when_foreign() {
        let t = tenant(1);
        let body = desired_ledger(&t).expect("body");
        assert_eq!(ledger_change(&t, None).expect("plan"), LedgerChange::Apply(body.clone()));
        let mut current: CreditLedger = serde_json::from_value(body.clone()).expect("ledger");
        assert_eq!(ledger_change(&t, Some(&current)).expect("plan"), LedgerChange::UpToDate);
        current.spec.allotment_per_period = Some(9);
        assert_eq!(ledger_change(&t, Some(&current)).expect("plan"), LedgerChange::Apply(body));
        current.metadata.owner_references.as_mut().expect("refs")[0].uid = "uid-9".into();
        assert_eq!(ledger_change(&t, Some(&current)).expect("plan"), LedgerChange::Refuse);
    }

    #[test]
    fn an_event_only_when_ready_flips() {
        let t = tenant(1);
        let d = desired_instances(&t).expect("desired");
        let pending = status(&t, &d, None, None, &now());
        let ready = status(&t, &[ready(d[0].clone(), "https://a")], None, None, &now());
        assert_eq!(readiness_change(None, &pending), None);
        assert_eq!(readiness_change(Some(&pending), &ready), Some(("Ready", "1/1 instances ready".to_string())));
        assert_eq!(readiness_change(Some(&ready), &ready), None);
        assert_eq!(readiness_change(Some(&ready), &pending).map(|(r, _)| r), Some("NotReady"));
    }

    fn with_conditions(
        mut ti: TenantInstance,
        generation: i64,
        observed: i64,
        conds: &[Desired<'_>],
    ) -> TenantInstance {
        ti.metadata.generation = Some(generation);
        let st = ti.status.get_or_insert_default();
        st.observed_generation = Some(observed);
        st.conditions = conditions::merge(&st.conditions, conds, Some(observed), &now());
        ti
    }

    fn condition(s: &TenantStatus, type_: &str) -> (String, String, String) {
        let c = conditions::find(&s.conditions, type_).expect(type_);
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(json!({"status": "Failure", "code": code, "message": message})).expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn a_stalled_instance_gives_the_tenant_its_reason_and_message() {
        let t = tenant(1);
        let d = desired_instances(&t).expect("desired");
        let stalled = with_conditions(
            d[0].clone(),
            1,
            1,
            &[
                Desired::new(names::COND_READY, false, "Unauthorized", "step service: railway refused the token"),
                Desired::new(names::COND_STALLED, true, "Unauthorized", "step service: railway refused the token"),
            ],
        );
        let s = status(&t, &[stalled], None, None, &now());
        let want = ("Unauthorized".to_string(), "acme-0: step service: railway refused the token".to_string());
        let (r, s_) = (condition(&s, names::COND_READY), condition(&s, names::COND_STALLED));
        assert_eq!((r.0.as_str(), (r.1, r.2)), ("False", want.clone()));
        assert_eq!((s_.0.as_str(), (s_.1, s_.2)), ("True", want));
        assert_eq!(condition(&s, names::COND_RECONCILING).0, "False", "kstatus must say Failed, not InProgress");
        assert_eq!(s.phase, Some(Phase::Failed));
    }

    #[test]
    fn a_refused_child_stalls_the_tenant_and_a_transient_failure_is_retried() {
        let t = tenant(1);
        let refused = super::super::Error::Child {
            verb: "create",
            kind: "TenantInstance",
            name: "acme-0".into(),
            source: api_error(403, "tenantinstances.winston.dev \"acme-0\" is forbidden: exceeded quota: q"),
        };
        let failure = ChildFailure::of(&refused);
        assert_eq!((failure.reason, failure.terminal), (reason::CHILD_REFUSED, true));
        let s = status(&t, &[], None, Some(&failure), &now());
        let msg = "failed to create TenantInstance acme-0: tenantinstances.winston.dev \"acme-0\" is forbidden: \
                   exceeded quota: q";
        assert_eq!(condition(&s, names::COND_STALLED), ("True".into(), reason::CHILD_REFUSED.into(), msg.into()));
        assert_eq!(condition(&s, names::COND_READY), ("False".into(), reason::CHILD_REFUSED.into(), msg.into()));
        assert_eq!(condition(&s, names::COND_RECONCILING).0, "False");
        assert_eq!(s.phase, Some(Phase::Failed));

        let conflict =
            ChildFailure::of(&super::super::Error::Conflict { kind: "TenantInstance", name: "acme-0".into() });
        assert_eq!((conflict.reason, conflict.terminal), (reason::CONFLICT, true));

        let transient = super::super::Error::Child {
            verb: "update",
            kind: "TenantInstance",
            name: "acme-0".into(),
            source: api_error(500, "etcdserver: request timed out"),
        };
        let failure = ChildFailure::of(&transient);
        assert!(!failure.terminal);
        let d = desired_instances(&t).expect("desired");
        let s = status(&t, &[ready(d[0].clone(), "https://a")], None, Some(&failure), &now());
        assert_eq!(condition(&s, names::COND_STALLED).0, "False");
        assert_eq!(condition(&s, names::COND_READY).0, "True", "the instance still serves");
        let (status_, reason_, message) = condition(&s, names::COND_RECONCILING);
        assert_eq!((status_.as_str(), reason_.as_str()), ("True", reason::PROGRESSING));
        assert!(message.starts_with("failed to update TenantInstance acme-0: etcdserver"), "{message}");
        assert!(message.contains("retrying"), "{message}");
    }

    #[test]
    fn a_serving_tenant_stays_ready_while_its_instances_converge() {
        let mut t = tenant(1);
        let d = desired_instances(&t).expect("desired");
        let serving = |generation, observed, reconciling| {
            with_conditions(
                ready(d[0].clone(), "https://a"),
                generation,
                observed,
                &[
                    Desired::new(names::COND_READY, true, reason::READY, ""),
                    Desired::new(names::COND_RECONCILING, reconciling, reason::PROGRESSING, ""),
                ],
            )
        };
        let converged = status(&t, &[serving(1, 1, false)], None, None, &now());
        assert_eq!(condition(&converged, names::COND_RECONCILING).0, "False");
        t.status = Some(converged);
        // The Tenant updated the instance's spec; its controller has not seen it yet...
        let s = status(&t, &[serving(2, 1, false)], None, None, &now());
        assert_eq!(condition(&s, names::COND_READY).0, "True");
        let (r, _, message) = condition(&s, names::COND_RECONCILING);
        assert_eq!(r, "True");
        assert!(message.contains("acme-0"), "{message}");
        assert_eq!(s.phase, Some(Phase::Ready), "converging is not Degraded");
        assert_eq!(readiness_change(t.status.as_ref(), &s), None, "no NotReady Event for an edit");
        // ...then works on it while still serving...
        let s = status(&t, &[serving(2, 2, true)], None, None, &now());
        assert_eq!(
            (condition(&s, names::COND_READY).0, condition(&s, names::COND_RECONCILING).0),
            ("True".into(), "True".into())
        );
        // ...and is done.
        let s = status(&t, &[serving(2, 2, false)], None, None, &now());
        assert_eq!(condition(&s, names::COND_RECONCILING).0, "False");
        // An instance that reports no observedGeneration is not judged by it.
        let s = status(&t, &[ready(d[0].clone(), "https://a")], None, None, &now());
        assert_eq!(condition(&s, names::COND_RECONCILING).0, "False");
    }

    #[test]
    fn a_tenant_awaiting_approval_gets_nothing_and_says_so() {
        let mut t = tenant(1);
        t.spec.approved = Some(false);
        let a = admission::<Tenant>(&t, None, &[]);
        assert_eq!((a.provision, a.granted, a.refusal.is_none()), (false, 0, true));
        let s = status(&t, &[], None, None, &now());
        assert_eq!(s.phase, Some(Phase::AwaitingApproval));
        assert_eq!(condition(&s, "Ready").0, "False");
        assert_eq!(condition(&s, "Ready").1, reason::AWAITING_APPROVAL);
        assert_eq!(condition(&s, "Reconciling").0, "False", "kstatus: not in progress, nothing to do");
        assert_eq!(condition(&s, "Stalled").0, "False", "waiting for a person is not a failure");
        assert_eq!(s.approval, None);

        t.spec.approved = Some(true);
        assert!(admission::<Tenant>(&t, None, &[]).provision);
        let mut annotated = t.clone();
        annotated.metadata.annotations = Some(BTreeMap::from([
            (names::ANNOTATION_APPROVED_BY.to_string(), "alice".to_string()),
            (names::ANNOTATION_APPROVED_AT.to_string(), "2026-12-02T15:00:00Z".to_string()),
        ]));
        let rec = approval(&annotated, &now()).unwrap();
        assert_eq!((rec.approved_by.as_str(), rec.approved_at.as_str()), ("alice", "2026-12-02T15:00:00Z"));
        // A flip in Git: the field manager that set spec.approved, at its write time.
        let mut gitops = t.clone();
        gitops.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({
                "manager": "argocd-controller", "operation": "Apply", "time": "2026-12-02T14:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:approved": {}}}
            }))
            .unwrap(),
        ]);
        let rec = approval(&gitops, &now()).unwrap();
        assert_eq!(rec.approved_by, "argocd-controller");
        assert_eq!(rec.approved_at, "2026-12-02T14:00:00Z");
        // Once recorded it stays as it was.
        gitops.status = Some(TenantStatus { approval: Some(rec.clone()), ..TenantStatus::default() });
        gitops.metadata.managed_fields = None;
        assert_eq!(approval(&gitops, &now()), Some(rec));
    }

    #[test]
    fn annotations_written_later_do_not_rewrite_a_recorded_approval() {
        let mut t = tenant(1);
        t.spec.approved = Some(true);
        let rec = ApprovalRecord { approved_by: "alice".into(), approved_at: "2026-12-02T15:00:00Z".into() };
        t.status = Some(TenantStatus { approval: Some(rec.clone()), ..TenantStatus::default() });
        // Someone with edit rights on the Tenant claims it afterwards.
        t.metadata.annotations = Some(BTreeMap::from([
            (names::ANNOTATION_APPROVED_BY.to_string(), "mallory".to_string()),
            (names::ANNOTATION_APPROVED_AT.to_string(), "2020-01-01T00:00:00Z".to_string()),
        ]));
        assert_eq!(approval(&t, &now()), Some(rec.clone()));
        // Only one of them, too.
        t.metadata.annotations =
            Some(BTreeMap::from([(names::ANNOTATION_APPROVED_BY.to_string(), "mallory".to_string())]));
        assert_eq!(approval(&t, &now()), Some(rec.clone()));
        // And the status the controller writes carries the first record.
        assert_eq!(status(&t, &[], None, None, &now()).approval, Some(rec));
    }
}
