//! Which steps an instance runs: the spec's components limited by what its
//! plan includes (`features` in the plan catalog). Pure.
use crate::api::{StepName, TenantInstanceSpec};
use crate::plans::Plan;

/// Every step in order with whether it runs (`false` = Skipped).
#[must_use]
pub fn steps(spec: &TenantInstanceSpec, plan: &Plan) -> Vec<(StepName, bool)> {
    let c = &spec.stack.components;
    let database = c.database.is_some() && plan.allows("database");
    let service = c.compute.is_some() && plan.allows("compute");
    let frontend = service && c.frontend.is_some() && plan.allows("frontend");
    StepName::ALL
        .into_iter()
        .map(|s| {
            let on = match s {
                StepName::Database | StepName::Schema => database,
                StepName::Credentials | StepName::Workspace | StepName::Notify => true,
                StepName::Service | StepName::Health => service,
                StepName::Frontend => frontend,
            };
            (s, on)
        })
        .collect()
}

/// Why a component the spec asks for is skipped, if the plan excludes it.
#[must_use]
pub fn excluded_by_plan(spec: &TenantInstanceSpec, plan: &Plan) -> Vec<&'static str> {
    let c = &spec.stack.components;
    let mut out = Vec::new();
    if c.database.is_some() && !plan.allows("database") {
        out.push("database");
    }
    if c.compute.is_some() && !plan.allows("compute") {
        out.push("compute");
    }
    if c.frontend.is_some() && !plan.allows("frontend") {
        out.push("frontend");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::{FrontendComponent, GitSource};
    use crate::api::{AgentProfile, Components, StackSpec, TenantRef};
    use crate::plans::PlanCatalog;

    fn spec(frontend: bool) -> TenantInstanceSpec {
        let mut components = Components::default();
        if frontend {
            components.frontend = Some(FrontendComponent {
                provider: Default::default(),
                git_repository: GitSource { repo: "a/b".into(), git_ref: None },
                framework: None,
            });
        }
        TenantInstanceSpec {
            tenant_ref: TenantRef { name: "t".into() },
            ordinal: 0,
            profile: AgentProfile::default(),
            stack: StackSpec { plan: "free".into(), components, ..StackSpec::default() },
        }
    }

    #[test]
    fn plan_features_limit_components() {
        let cat = PlanCatalog::builtin();
        let free = steps(&spec(true), cat.get("free").unwrap());
        assert!(free.contains(&(StepName::Database, true)));
        assert!(free.contains(&(StepName::Frontend, false)), "free has no frontend");
        assert_eq!(excluded_by_plan(&spec(true), cat.get("free").unwrap()), ["frontend"]);
        let growth = steps(&spec(true), cat.get("growth").unwrap());
        assert!(growth.contains(&(StepName::Frontend, true)));
        let none = steps(&spec(false), cat.get("growth").unwrap());
        assert!(none.contains(&(StepName::Frontend, false)));
        assert_eq!(none.len(), 8);
    }
}
