//! Which steps an instance runs: the spec's components limited by what its
//! plan includes (`features` in the plan catalog). Pure.
use crate::api::shared::DatabaseProvider;
use crate::api::{StepName, TenantInstanceSpec};
use crate::plans::Plan;

/// Every step in order with whether it runs (`false` = Skipped).
#[must_use]
pub fn steps(spec: &TenantInstanceSpec, plan: &Plan) -> Vec<(StepName, bool)> {
    let c = &spec.stack.components;
    let database = c.database.is_some() && plan.allows("database");
    let service = c.compute.is_some() && plan.allows("compute");
    let supabase = database && on_supabase(spec);
    // A frontend needs a backend it can call: the agent service, or the
    // Supabase API of the tenant's own project (admission says the same).
    let frontend = (service || supabase) && c.frontend.is_some() && plan.allows("frontend");
    let migrations = database && c.database.as_ref().is_some_and(|d| d.migrations.is_some());
    let admin_user = supabase && c.database.as_ref().is_some_and(|d| d.admin_user.is_some());
    StepName::ALL
        .into_iter()
        .map(|s| {
            let on = match s {
                StepName::Database | StepName::Schema => database,
                StepName::Migrations => migrations,
                StepName::AdminUser => admin_user,
                StepName::Credentials | StepName::Workspace | StepName::Notify => true,
                StepName::Service | StepName::Health => service,
                StepName::Frontend => frontend,
            };
            (s, on)
        })
        .collect()
}

/// Whether the spec's database is a Supabase project (otherwise Neon, when
/// it has one).
#[must_use]
pub fn on_supabase(spec: &TenantInstanceSpec) -> bool {
    spec.stack.components.database.as_ref().is_some_and(|d| d.provider == DatabaseProvider::Supabase)
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

/// Why `step` is skipped when the spec asks for its component and the plan
/// does not include it: a message for the step and its condition, e.g.
/// "plan free does not include a frontend; upgrade the plan or remove
/// components.frontend". `None` when the step runs, or is skipped because
/// the spec does not ask for it (a plain skip).
#[must_use]
pub fn exclusion(spec: &TenantInstanceSpec, plan_name: &str, plan: &Plan, step: StepName) -> Option<String> {
    let component = match step {
        StepName::Database | StepName::Schema | StepName::Migrations | StepName::AdminUser => "database",
        StepName::Service | StepName::Health => "compute",
        StepName::Frontend => "frontend",
        StepName::Credentials | StepName::Workspace | StepName::Notify => return None,
    };
    excluded_by_plan(spec, plan).contains(&component).then(|| excluded_message(plan_name, component))
}

/// "plan free does not include a frontend; upgrade the plan or remove
/// components.frontend".
#[must_use]
pub fn excluded_message(plan_name: &str, component: &str) -> String {
    let what = match component {
        "database" => "a database",
        "compute" => "compute (the agent service)",
        "frontend" => "a frontend",
        other => other,
    };
    format!("plan {plan_name} does not include {what}; upgrade the plan or remove components.{component}")
}

/// What the spec asks for that no platform client of Winston's can honour,
/// as the message of a `RegionUnsupported` stall: Winston's Railway client
/// creates services in the platform's default region and sets no region,
/// so `components.compute.region` is refused rather than silently ignored.
/// (`components.database.region` is honoured on Neon and Supabase.)
#[must_use]
pub fn unsupported(spec: &TenantInstanceSpec) -> Option<String> {
    let region = spec.stack.components.compute.as_ref()?.region.as_ref()?;
    Some(format!(
        "components.compute.region \"{region}\" cannot be honoured: Winston creates Railway services in the \
         platform's default region; remove components.compute.region to provision"
    ))
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
                env: Vec::new(),
            });
        }
        TenantInstanceSpec {
            website_profile: None,
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
        assert_eq!(
            exclusion(&spec(true), "free", cat.get("free").unwrap(), StepName::Frontend).as_deref(),
            Some("plan free does not include a frontend; upgrade the plan or remove components.frontend")
        );
        assert_eq!(exclusion(&spec(false), "free", cat.get("free").unwrap(), StepName::Frontend), None, "not asked");
        assert_eq!(exclusion(&spec(true), "growth", cat.get("growth").unwrap(), StepName::Frontend), None);
        let growth = steps(&spec(true), cat.get("growth").unwrap());
        assert!(growth.contains(&(StepName::Frontend, true)));
        let none = steps(&spec(false), cat.get("growth").unwrap());
        assert!(none.contains(&(StepName::Frontend, false)));
        assert_eq!(none.len(), 10);
    }

    #[test]
    fn a_supabase_frontend_runs_without_compute_and_a_neon_one_does_not() {
        let growth = PlanCatalog::builtin();
        let growth = growth.get("growth").unwrap();
        let mut s = spec(true);
        s.stack.components.compute = None;
        let on = |s: &TenantInstanceSpec, step| steps(s, growth).contains(&(step, true));
        assert!(!on(&s, StepName::Frontend), "Neon alone is no backend for a frontend");
        let db = s.stack.components.database.as_mut().unwrap();
        db.provider = DatabaseProvider::Supabase;
        db.admin_user = Some(crate::api::shared::AdminUser::default());
        assert!(on(&s, StepName::Frontend) && on(&s, StepName::AdminUser));
        assert!(!on(&s, StepName::Service) && !on(&s, StepName::Health) && !on(&s, StepName::Migrations));
    }

    #[test]
    fn a_compute_region_is_refused_and_a_database_region_is_not() {
        let mut s = spec(false);
        assert_eq!(unsupported(&s), None);
        s.stack.components.database.as_mut().unwrap().region = Some("aws-eu-central-1".into());
        assert_eq!(unsupported(&s), None, "database regions are honoured");
        s.stack.components.compute.as_mut().unwrap().region = Some("europe-west4".into());
        let m = unsupported(&s).expect("refused");
        assert!(m.contains("europe-west4") && m.contains("remove components.compute.region"), "{m}");
    }
}
