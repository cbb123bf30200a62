//! The Winston custom resources, version `v1alpha1`, group `winston.dev`.
//!
//! Types only: the schemas (with their admission-time validation) that
//! `winston crds` prints, and small pure helpers on them. Controllers live in
//! `crate::controller`.
pub mod conditions;
pub mod ledger;
pub mod shared;
pub mod tenant;
pub mod tenant_instance;

pub use ledger::{CreditLedger, CreditLedgerSpec, CreditLedgerStatus};
pub use shared::{AgentProfile, Components, DeletionPolicy, Persona, Phase, TenantRef, Tone};
pub use tenant::{Tenant, TenantSpec, TenantStatus};
pub use tenant_instance::{
    ExternalIds, PendingCreate, StepName, StepState, StepStatus, TenantInstance, TenantInstanceSpec,
    TenantInstanceStatus,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Every CRD Winston serves, in the order they should be installed.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Tenant::crd(), TenantInstance::crd(), CreditLedger::crd()]
}

/// The CRDs as one multi-document YAML stream (what `winston crds` prints).
///
/// # Errors
/// Fails only if a CRD cannot be serialised, which would be a bug.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

/// File name under `crds/` for a CRD (`<plural>.<group>.yaml`).
#[must_use]
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default())
}

/// Writes one `<name>.yaml` per CRD into `dir` (what `crds/` holds).
///
/// # Errors
/// Fails when the directory or a file cannot be written.
pub fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for crd in crds() {
        let path = dir.join(crd_file_name(&crd));
        std::fs::write(&path, serde_yaml_ng::to_string(&crd)?)?;
    }
    Ok(())
}
