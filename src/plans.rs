//! The plan catalog: credits per month, instance limit, resources, features
//! and skills of each plan. Configuration, not code: loaded from YAML (the
//! Helm chart's ConfigMap), with `config/plans.yaml` built in as default.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Plan name reserved for Winston's own LLM calls.
pub const SYSTEM_PLAN: &str = "system";

/// Errors loading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("failed to read the plan catalog {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("failed to parse the plan catalog: {0}")]
    Parse(#[from] serde_saphyr::Error),
    #[error("failed to validate the plan catalog: {0}")]
    Invalid(String),
}

/// Container resources of a plan's agent service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores, as a Kubernetes quantity string ("0.5", "2").
    pub cpu: String,
    /// Memory, as a Kubernetes quantity string ("512Mi").
    pub memory: String,
}

/// One plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Credits granted at the start of every monthly period.
    pub credits_per_month: i64,
    /// Most agent instances a Tenant on this plan gets.
    pub max_instances: i32,
    /// Resources of the agent service.
    pub resources: Resources,
    /// Components the plan allows (`database`, `compute`, `frontend`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Skills available to the agent.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Seconds an instance on this plan may take to become Ready before it
    /// is reported `ProgressDeadlineExceeded`; Winston's
    /// `--provisioning-deadline-seconds` when omitted. A Tenant's
    /// `spec.provisioningDeadlineSeconds` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_deadline_seconds: Option<u64>,
}

impl Plan {
    /// Whether the plan includes `feature`.
    #[must_use]
    pub fn allows(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

/// All plans by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCatalog {
    pub plans: BTreeMap<String, Plan>,
}

impl PlanCatalog {
    /// The built-in catalog (`config/plans.yaml`).
    ///
    /// # Panics
    /// Never: the built-in file is checked by a unit test.
    #[must_use]
    pub fn builtin() -> Self {
        #[allow(clippy::expect_used)]
        Self::parse(include_str!("../config/plans.yaml")).expect("built-in plan catalog is valid")
    }

    /// Parses and validates a catalog.
    ///
    /// # Errors
    /// Fails on invalid YAML, negative credits or instance limits.
    pub fn parse(yaml: &str) -> Result<Self, PlanError> {
        let catalog: Self = serde_saphyr::from_str(yaml)?;
        for (name, p) in &catalog.plans {
            if p.provisioning_deadline_seconds == Some(0) {
                return Err(PlanError::Invalid(format!("plan {name}: provisioningDeadlineSeconds must be positive")));
            }
            if p.credits_per_month < 0 || p.max_instances < 0 {
                return Err(PlanError::Invalid(format!("plan {name}: credits and instances must not be negative")));
            }
        }
        Ok(catalog)
    }

    /// Loads `path`, or the built-in catalog when `path` is `None`.
    ///
    /// # Errors
    /// As [`PlanCatalog::parse`], or when the file cannot be read.
    pub fn load(path: Option<&Path>) -> Result<Self, PlanError> {
        match path {
            None => Ok(Self::builtin()),
            Some(p) => {
                let yaml = std::fs::read_to_string(p)
                    .map_err(|source| PlanError::Read { path: p.display().to_string(), source })?;
                Self::parse(&yaml)
            }
        }
    }

    /// The plan called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.get(name)
    }

    /// Plan names, for error messages.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.plans.keys().map(String::as_str).filter(|n| *n != SYSTEM_PLAN).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_designed_plans() {
        let c = PlanCatalog::builtin();
        assert_eq!(c.get("free").map(|p| p.credits_per_month), Some(50_000));
        assert_eq!(c.get("starter").map(|p| p.credits_per_month), Some(500_000));
        assert_eq!(c.get("growth").map(|p| p.credits_per_month), Some(2_000_000));
        assert!(c.get("team").is_some() && c.get(SYSTEM_PLAN).is_some());
        assert!(!c.names().contains(&SYSTEM_PLAN));
    }

    #[test]
    fn negative_credits_are_refused() {
        let y = "plans:\n  x: {creditsPerMonth: -1, maxInstances: 1, resources: {cpu: '1', memory: 1Gi}}\n";
        assert!(matches!(PlanCatalog::parse(y), Err(PlanError::Invalid(_))));
    }
}
