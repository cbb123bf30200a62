//! The Winston custom resources, version `v1alpha1`, group `winston.dev`.
//!
//! Types only: the schemas (with their admission-time validation) that
//! `winston crds` prints, and small pure helpers on them. Controllers live in
//! `crate::controller`.
pub mod conditions;
pub mod ledger;
pub mod profile;
pub mod shared;
pub mod tenant;
pub mod tenant_instance;
pub mod time;

pub use ledger::{CreditLedger, CreditLedgerSpec, CreditLedgerStatus};
pub use profile::{ProfileStatus, WebsiteProfile};
pub use shared::{AgentProfile, Components, Connector, DeletionPolicy, Persona, Phase, StackSpec, TenantRef, Tone};
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
    vec![Tenant::crd(), bound_name(TenantInstance::crd(), 48), CreditLedger::crd()]
}

/// Declares `metadata.name`'s length limit in the schema (the only metadata
/// a CRD schema may restrict), so CEL rules that read the name are costed
/// for names of that size instead of unbounded strings. The CEL rules beside
/// it keep the messages a person reads.
fn bound_name(mut crd: CustomResourceDefinition, max_length: i64) -> CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else { continue };
        let name = JSONSchemaProps { type_: Some("string".into()), max_length: Some(max_length), ..Default::default() };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_string(), name)].into()),
            ..Default::default()
        };
        schema.properties.get_or_insert_with(Default::default).insert("metadata".into(), metadata);
    }
    crd
}

/// The CRDs as one multi-document YAML stream (what `winston crds` prints).
///
/// # Errors
/// Fails only if a CRD cannot be serialised, which would be a bug.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
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
        std::fs::write(&path, serde_saphyr::to_string(&crd)?)?;
    }
    Ok(())
}
