//! `CreditLedger` (short name `cl`): a tenant's credits. The spec declares
//! allotment and grants; Winston's Postgres ledger is the source of truth
//! and the status mirrors it at a bounded rate.
//!
//! One ledger per tenant, checked at admission: a ledger is named after its
//! Tenant, its `tenantRef` and `periodAnchor` never change. That the Tenant
//! really owns the ledger is checked by the controller (CEL cannot read
//! other objects).
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::TenantRef;

/// A tenant's credits: the allotment granted every period, one-off grants
/// (top-ups) and the thresholds that report Low and Exhausted.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) repeats `type_` by design
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "winston.dev",
    version = "v1alpha1",
    kind = "CreditLedger",
    namespaced,
    shortname = "cl",
    category = "winston",
    status = "CreditLedgerStatus",
    doc = "A tenant's LLM credits: allotment per period, grants and low-balance threshold. Named after its Tenant, which owns it; credits are a hard limit (calls are refused with 402 once they are gone).",
    validation = Rule::new("self.metadata.name == self.spec.tenantRef.name").message(
        "metadata.name must equal spec.tenantRef.name: a Tenant has exactly one CreditLedger, named after it (add grants to that ledger)"
    ),
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantRef.name"),
    printcolumn(name = "Balance", type_ = "integer", json_path = ".status.balance"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.usedThisPeriod"),
    printcolumn(name = "Low", type_ = "string", json_path = ".status.conditions[?(@.type==\"Low\")].status"),
    printcolumn(
        name = "Exhausted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Exhausted\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.periodAnchor) == has(oldSelf.periodAnchor) && (!has(self.periodAnchor) || self.periodAnchor == oldSelf.periodAnchor)"
).message(
    "spec.periodAnchor is set when the CreditLedger is created and cannot change (a new anchor would restart the period). To move a ledger to another anchor, re-create it with the new value (kubectl replace --force -f ledger.yaml): its account and balance are kept and the new anchor takes effect when the current period ends"
))]
pub struct CreditLedgerSpec {
    /// The Tenant whose LLM calls this ledger pays for; must equal
    /// metadata.name, and the Tenant must own the ledger (the Tenant
    /// controller creates it so). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.tenantRef is immutable"))]
    pub tenant_ref: TenantRef,
    /// Credits granted at the start of every period; the plan's allotment when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub allotment_per_period: Option<i64>,
    /// Start of the first period; periods are calendar months from this
    /// instant. Defaults to the Tenant's creation time. Set only when the
    /// ledger is created: it cannot be added, changed or removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_anchor: Option<DateTime<Utc>>,
    /// One-off credit grants (top-ups). Each id is credited exactly once,
    /// however often it is applied; a grant's amount cannot change later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub grants: Vec<Grant>,
    /// Percentage of the allotment under which the ledger reports `Low`, 0 to 100 (default 20).
    #[serde(default = "twenty")]
    #[schemars(range(min = 0, max = 100))]
    pub low_balance_percent: i32,
}

fn twenty() -> i32 {
    20
}

/// A one-off credit grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.credits == oldSelf.credits").message("a grant's credits cannot change once applied; add a grant with a new id instead"))]
pub struct Grant {
    /// Unique id (for example an invoice or checkout id); applying the same id twice credits once.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"))]
    pub id: String,
    /// Credits added: 1 to 1,000,000,000,000.
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub credits: i64,
    /// Why the grant was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub reason: Option<String>,
}

/// Observed state of a CreditLedger, mirrored from Winston's database.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditLedgerStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The ledger account this CreditLedger drives
    /// (`<namespace>/<tenant>/<tenant uid>`), recorded once, when it first
    /// acts. A Tenant created again under the same name has a new uid, hence
    /// a new ledger and a new account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Credits left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
    /// Credits used in the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_this_period: Option<i64>,
    /// The allotment in force this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allotment: Option<i64>,
    /// Start of the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<DateTime<Utc>>,
    /// End of the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<DateTime<Utc>>,
    /// Ready, Stalled, Low, Exhausted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
