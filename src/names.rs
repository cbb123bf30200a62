//! Every identity string Winston uses toward Kubernetes, in one place: the
//! API group, finalizer, field manager, label keys, condition types and
//! reasons. Code refers to these constants, never to string literals.

/// API group of every Winston custom resource.
pub const GROUP: &str = "winston.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Category so `kubectl get winston` lists every Winston resource.
pub const CATEGORY: &str = "winston";

/// Finalizer that guards external cleanup.
pub const FINALIZER: &str = "winston.dev/cleanup";
/// Field manager for every server-side apply Winston makes.
pub const FIELD_MANAGER: &str = "winston";
/// Component name in Events (`source.component` / `reportingController`).
pub const CONTROLLER_NAME: &str = "winston-controller";
/// Default name of the leader-election Lease.
pub const LEADER_LEASE: &str = "winston-controller";

/// The ledger account of the Tenant `tenant` (uid `tenant_uid`) in
/// `namespace`: `<namespace>/<tenant>/<uid>`. Every part of Winston that
/// bills or credits a tenant (the CreditLedger controller, the credentials
/// of its instances) names the account with this function and nothing else.
///
/// # Guarantees
/// The uid makes the account belong to one Tenant object: a Tenant deleted
/// and created again under the same name is a new customer with a new
/// account (fresh balance, its own grants), and the old account's history
/// stays as it was.
#[must_use]
pub fn ledger_account(namespace: &str, tenant: &str, tenant_uid: &str) -> String {
    format!("{namespace}/{tenant}/{tenant_uid}")
}

/// Label on every object Winston creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "winston";
/// Label naming the Tenant a child belongs to.
pub const LABEL_TENANT: &str = "winston.dev/tenant";
/// Label carrying the ordinal of a TenantInstance within its Tenant.
pub const LABEL_INSTANCE_ORDINAL: &str = "winston.dev/instance-ordinal";
/// Annotation `winston approve` sets on a Tenant: who approved it.
pub const ANNOTATION_APPROVED_BY: &str = "winston.dev/approved-by";
/// Annotation `winston approve` sets on a Tenant: when (RFC 3339).
pub const ANNOTATION_APPROVED_AT: &str = "winston.dev/approved-at";

/// kstatus condition: the resource is fully converged.
pub const COND_READY: &str = "Ready";
/// kstatus condition: the controller is working towards the desired state.
pub const COND_RECONCILING: &str = "Reconciling";
/// kstatus condition: progress is blocked until something outside changes.
pub const COND_STALLED: &str = "Stalled";
/// Tenant condition, present (`True`) only while the plan excludes a
/// component the spec asks for; its message says which and what to do.
pub const COND_COMPONENTS_EXCLUDED: &str = "ComponentsExcluded";
/// CreditLedger condition: balance under the low-balance threshold.
pub const COND_LOW: &str = "Low";
/// CreditLedger condition: no credits left.
pub const COND_EXHAUSTED: &str = "Exhausted";

/// Condition reasons (CamelCase, stable: used as Event reasons and metric labels).
pub mod reason {
    /// Everything the resource owns is ready.
    pub const READY: &str = "Ready";
    /// Children exist but are not all ready yet.
    pub const INSTANCES_NOT_READY: &str = "InstancesNotReady";
    /// Children are being created or updated.
    pub const PROGRESSING: &str = "Progressing";
    /// The resource is being deleted.
    pub const DELETING: &str = "Deleting";
    /// `spec.stack.paused` is set.
    pub const PAUSED: &str = "Paused";
    /// Nothing blocks progress.
    pub const NOT_STALLED: &str = "NotStalled";
    /// Nothing is in progress.
    pub const IDLE: &str = "Idle";
    /// A child object is owned by someone else.
    pub const CONFLICT: &str = "Conflict";
    /// Tenant: the API server refused a write of a child (invalid, forbidden, over quota).
    pub const CHILD_REFUSED: &str = "ChildRefused";
    /// Waiting for the first status from a controller.
    pub const PENDING: &str = "Pending";
    /// CreditLedger: the balance is under the low-balance threshold.
    pub const BELOW_THRESHOLD: &str = "BelowThreshold";
    /// CreditLedger: the balance is at or over the low-balance threshold.
    pub const ABOVE_THRESHOLD: &str = "AboveThreshold";
    /// CreditLedger: nothing is left to spend; the proxy answers 402.
    pub const NO_CREDITS_LEFT: &str = "NoCreditsLeft";
    /// CreditLedger: credits are left to spend.
    pub const CREDITS_AVAILABLE: &str = "CreditsAvailable";
    /// CreditLedger: the Tenant it names does not exist (nothing is billed or credited).
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    /// CreditLedger: the Tenant it names exists but is not its controller
    /// (nothing is billed or credited).
    pub const NOT_OWNED: &str = "NotOwned";
    /// CreditLedger: its owner changed since it recorded its account in
    /// status (nothing is billed or credited).
    pub const ACCOUNT_CHANGED: &str = "AccountChanged";
    /// CreditLedger: the Tenant's plan is not in the plan catalog.
    pub const UNKNOWN_PLAN: &str = "UnknownPlan";
    /// CreditLedger: `spec.periodAnchor` lies in the future.
    pub const PERIOD_NOT_STARTED: &str = "PeriodNotStarted";
    /// Tenant: `spec.instances` is more than the plan's `maxInstances`
    /// (only the plan's number of instances exist).
    pub const PLAN_LIMIT_EXCEEDED: &str = "PlanLimitExceeded";
    /// Tenant: an earlier Tenant in the namespace has the same contact
    /// email; this one is not provisioned.
    pub const DUPLICATE_CONTACT_EMAIL: &str = "DuplicateContactEmail";
    /// TenantInstance: not Ready within its provisioning deadline (still retried).
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// TenantInstance: the spec names a region the platform client cannot honour.
    pub const REGION_UNSUPPORTED: &str = "RegionUnsupported";
    /// A component the spec asks for is not included in the plan: the
    /// TenantInstance's step condition (e.g. `FrontendReady`, `True`, the
    /// step skipped) and the Tenant's `ComponentsExcluded` condition.
    pub const EXCLUDED_BY_PLAN: &str = "ExcludedByPlan";
    /// A Tenant declared with `spec.approved: false` waits for approval.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
}
