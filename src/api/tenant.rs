//! `Tenant` (short name `tn`): one customer. The Tenant controller owns its
//! TenantInstances and its CreditLedger and summarises them in status.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::{AgentProfile, Phase, StackSpec};

/// A customer of the business: who they are, which plan they bought, what
/// their agent is like and which components Winston provisions for them.
/// Its name is a DNS label of at most 40 characters.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) repeats `type_` by design
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "winston.dev",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    shortname = "tn",
    category = "winston",
    status = "TenantStatus",
    doc = "A customer: Winston provisions its database, agent service, optional frontend, credentials and credit ledger.",
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Instances", type_ = "string", json_path = ".status.readyInstances"),
    printcolumn(name = "Credits", type_ = "integer", json_path = ".status.credits.balance"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 40").message("metadata.name: Tenant names are at most 40 characters (Winston derives child and external names from it)"),
    validation = Rule::new("!has(self.spec.approved) || self.spec.approved || (has(oldSelf.spec.approved) && !oldSelf.spec.approved)").message("spec.approved cannot become false once the Tenant exists without it or approved: an approval cannot be withdrawn (set spec.paused to stop acting on it, or delete the Tenant)"),
    validation = Rule::new("!has(oldSelf.spec.approved) || oldSelf.spec.approved || has(self.spec.approved)").message("spec.approved: false cannot be removed: a Tenant declared for approval is approved with `winston approve` (or by setting spec.approved: true)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message(Message::Expression("'metadata.name: ' + self.metadata.name + ' is not a DNS label (lowercase letters, digits and -, no dots): its instances are named <tenant>-<n>'".into())),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Who the customer is; rendered into the agent's workspace.
    #[serde(flatten)]
    pub profile: AgentProfile,
    /// The plan, the components, `paused` and the deletion policy.
    #[serde(flatten)]
    pub stack: StackSpec,
    /// How many agent instances to run, 1 to 10 (default 1); the plan's
    /// `maxInstances` may allow fewer.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub instances: i32,
    /// Credit settings that override the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditOverrides>,
    /// Approval gate: `false` declares the Tenant awaiting an
    /// administrator's approval (status `AwaitingApproval`; nothing is
    /// created, no instance, no ledger, no platform call); setting it to
    /// `true` (one field in Git, or `winston approve <tenant>`) starts
    /// provisioning. Omitted: no approval needed. Once true (or omitted on
    /// an existing Tenant) it cannot become false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
}

impl TenantSpec {
    /// Whether the Tenant waits for an administrator's approval.
    #[must_use]
    pub fn awaiting_approval(&self) -> bool {
        self.approved == Some(false)
    }
}

fn one() -> i32 {
    1
}

/// Per-tenant overrides of the plan's credit settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditOverrides {
    /// Credits granted at the start of every period, instead of the plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub allotment_per_period: Option<i64>,
    /// Percentage of the allotment under which the ledger reports `Low`, 0 to
    /// 100; the ledger's default (20) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub low_balance_percent: Option<i32>,
}

/// Observed state of a Tenant, aggregated from its instances and ledger.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Ready instances over wanted instances, for example `1/1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<String>,
    /// Public URL of the first ready instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// One line per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceSummary>,
    /// The tenant's credits, mirrored from its CreditLedger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsSummary>,
    /// Who approved the Tenant and when (for Tenants declared with
    /// `spec.approved: false`). Recorded once: annotations changed later
    /// do not rewrite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
    /// What the website analyzer proposed from `spec.website` (see the
    /// `WebsiteAnalyzed` condition for a failed or pending analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<super::profile::ProfileStatus>,
}

/// An approval as the controller saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// Who approved: the user `winston approve` recorded in the annotation
    /// `winston.dev/approved-by`, else the field manager that set
    /// `spec.approved` (for example a GitOps controller).
    pub approved_by: String,
    /// When: the annotation `winston.dev/approved-at`, else when the
    /// controller first saw the approval.
    pub approved_at: String,
}

/// A TenantInstance as seen from its Tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    /// TenantInstance name.
    pub name: String,
    /// Its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Its public URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The step it is working on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
}

/// Credits as seen from the Tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditsSummary {
    /// Name of the CreditLedger.
    pub ledger: String,
    /// Credits left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// Credits used in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_this_period: Option<i64>,
    /// Whether the ledger reports Low.
    pub low: bool,
    /// Whether the ledger reports Exhausted.
    pub exhausted: bool,
}

impl Tenant {
    /// Name of the i-th TenantInstance of this tenant.
    #[must_use]
    pub fn instance_name(tenant: &str, ordinal: i32) -> String {
        format!("{tenant}-{ordinal}")
    }
}
