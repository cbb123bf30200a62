//! The skills the shipped configuration names exist as files: the built-in
//! plan catalog and the Helm chart's `plans` values alike.
#![allow(clippy::unwrap_used)]
use winston::plans::PlanCatalog;
use winston::skills::{Selection, SkillCatalog};

#[test]
fn every_skill_named_by_the_chart_values_has_a_file() {
    let values: serde_json::Value = serde_saphyr::from_str(include_str!("../charts/winston/values.yaml")).unwrap();
    let skills = SkillCatalog::builtin().unwrap();
    let plans = values["plans"].as_object().unwrap();
    assert!(plans.len() >= 4, "the chart's plans went missing");
    for (plan, p) in plans {
        for skill in p["skills"].as_array().unwrap() {
            let name = skill.as_str().unwrap();
            assert!(skills.get(name).is_some(), "values.yaml plan {plan} names {name}: no skills/{name}/SKILL.md");
        }
    }
}

#[test]
fn the_built_in_plans_select_no_unknown_skill_for_any_industry() {
    let skills = SkillCatalog::builtin().unwrap();
    let catalog = PlanCatalog::builtin();
    for (plan, p) in &catalog.plans {
        for industry in ["", "cannabis dispensary", "dental clinic", "italian restaurant"] {
            let industries = [industry];
            let who = Selection { plan, plan_skills: &p.skills, industries: &industries, connectors: &[] };
            let selected = skills.select(&who);
            assert!(selected.unknown.is_empty(), "{plan}: {:?}", selected.unknown);
            // Every skill is either installed or waiting, never both.
            for w in &selected.waiting {
                assert!(!selected.installed_names().contains(&w.skill.as_str()), "{plan}/{industry}: {}", w.skill);
            }
        }
    }
    // The system plan gets nothing.
    let system = catalog.get(winston::plans::SYSTEM_PLAN).unwrap();
    let who = Selection {
        plan: winston::plans::SYSTEM_PLAN,
        plan_skills: &system.skills,
        industries: &["cannabis"],
        connectors: &["pos"],
    };
    assert!(skills.select(&who).installed.is_empty());
}
