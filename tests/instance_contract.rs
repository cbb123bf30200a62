//! The TenantInstance's own contract on a real kube-apiserver, a real
//! PostgreSQL and the platform emulator: an instance no Tenant controls, or
//! one on another plan than its Tenant's, is Stalled before any platform
//! call; a harmless edit of a serving tenant keeps its instance Ready while
//! it is Reconciling; a stall's reason is also Ready's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use provisioning_support::{Stack, apply_tenant, ready};
use serde_json::json;
use support::{History, TestNamespace, eventually};
use winston::api::{Phase, Tenant, TenantInstance, TenantInstanceStatus, conditions};

const WAIT: Duration = Duration::from_secs(60);
const READY_WITHIN: Duration = Duration::from_secs(120);

/// The condition `type_` of `st` as `(status, reason, message)`.
fn condition(st: &TenantInstanceStatus, type_: &str) -> (String, String, String) {
    let c: &Condition = conditions::find(&st.conditions, type_).unwrap_or_else(|| panic!("no {type_} in {st:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Waits until `name` is Stalled and returns its status.
async fn stalled(api: &Api<TenantInstance>, name: &str) -> TenantInstanceStatus {
    eventually(&format!("{name} Stalled"), WAIT, || async {
        let st = api.get_opt(name).await.ok()??.status?;
        conditions::is_true(&st.conditions, "Stalled").then_some(st)
    })
    .await
}

fn apply(ns: &TestNamespace, yaml: &str) {
    let (ok, out) = support::run_with_stdin(ns.kubectl(&["apply", "-f", "-"]), yaml);
    assert!(ok, "kubectl apply: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_its_tenant_does_not_control_on_its_plan_is_never_provisioned() {
    let ns = TestNamespace::new("contract-gate").await;
    let stack = Stack::start(0).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    // A paused starter Tenant: its own instance calls no platform either, so
    // the emulator must stay empty.
    apply_tenant(&ns, "own", "  paused: true\n");
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let owner = tenants.get("own").await.unwrap().controller_owner_ref(&()).unwrap();
    let profile = "profile: {displayName: X, contactEmail: ops@x.example}";
    // Hand-made: no owner at all.
    apply(
        &ns,
        &format!(
            "apiVersion: winston.dev/v1alpha1\nkind: TenantInstance\nmetadata:\n  name: stray-0\nspec:\n  \
             tenantRef: {{name: stray}}\n  ordinal: 0\n  plan: starter\n  {profile}\n"
        ),
    );
    // Controlled by the starter Tenant (not labelled, so its controller leaves
    // it be) but on plan team.
    let other_plan = json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
        "metadata": { "name": "own-1", "ownerReferences": [owner] },
        "spec": { "tenantRef": { "name": "own" }, "ordinal": 1, "plan": "team",
                  "profile": { "displayName": "X", "contactEmail": "ops@x.example" } }
    });
    apply(&ns, &other_plan.to_string());

    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, reason, says) in [
        ("stray-0", "NoTenantOwner", "create instances through a Tenant"),
        ("own-1", "PlanMismatch", "plan \"starter\""),
    ] {
        let st = stalled(&api, name).await;
        let (_, stall_reason, message) = condition(&st, "Stalled");
        assert_eq!(stall_reason, reason, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
        assert!(!message.contains(" { "), "{name}: Debug text: {message}");
        assert_eq!(condition(&st, "Ready"), ("False".into(), reason.into(), message.clone()), "{name}");
        assert_eq!(st.phase, Some(Phase::Failed), "{name}");
        assert!(st.external.is_none() && st.credentials_secret_ref.is_none(), "{name}: {st:?}");
    }
    // Nothing on any platform, no email, no key.
    let objects = stack.objects().await;
    assert_eq!(stack.total_objects().await, 0, "{objects}");
    assert_eq!(stack.mutations().await, 0, "{objects}");
    assert!(objects["resend"]["objects"]["email"].as_array().is_none_or(Vec::is_empty), "{objects}");
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE name IN ('stray-0', 'own-1')")
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "a key was registered for an instance that was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persona_edit_keeps_a_serving_instance_ready_while_it_reconciles() {
    let ns = TestNamespace::new("contract-edit").await;
    let stack = Stack::start(300).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "bea", "  persona:\n    name: Ava\n");
    let before = ready(&ns, "bea-0", READY_WITHIN).await;
    let old_hash = before.status.as_ref().unwrap().workspace_hash.clone();
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let history = History::of(&api, "bea-0").await;
    let from = history.all().len();

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants
        .patch("bea", &PatchParams::default(), &Patch::Merge(json!({"spec": {"persona": {"name": "Bea"}}})))
        .await
        .unwrap();
    let done = eventually("bea-0 converged on the edit", READY_WITHIN, || async {
        let ti = api.get("bea-0").await.ok()?;
        let st = ti.status.clone()?;
        let converged = ti.spec.profile.persona.as_ref()?.name == "Bea"
            && st.observed_generation == ti.metadata.generation
            && st.workspace_hash != old_hash
            && !conditions::is_true(&st.conditions, "Reconciling")
            && conditions::is_true(&st.conditions, "Ready");
        converged.then_some(ti)
    })
    .await;
    eventually("the watch to catch up", WAIT, || async {
        history.all().iter().any(|o| o.meta().resource_version == done.meta().resource_version).then_some(())
    })
    .await;

    let seen: Vec<TenantInstance> = history.all()[from..].to_vec();
    let mut reconciling = 0;
    for ti in &seen {
        let st = ti.status.as_ref().unwrap();
        let (ready, reason, message) = condition(st, "Ready");
        assert_eq!(ready, "True", "the serving instance left Ready during the edit: {reason}: {message}");
        assert_eq!(st.phase, Some(Phase::Ready), "an edit is not Degraded: {st:?}");
        if condition(st, "Reconciling").0 == "True" {
            reconciling += 1;
            assert_eq!(st.observed_generation, ti.metadata.generation, "Reconciling for an unobserved generation");
            let (_, _, message) = condition(st, "Reconciling");
            assert!(message.starts_with("working on step "), "{message}");
        }
    }
    assert!(reconciling > 0, "never Reconciling during the edit: {} versions seen", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_platform_token_is_the_reason_on_ready_too() {
    let ns = TestNamespace::new("contract-stall").await;
    let stack = Stack::start(0).await;
    let env = stack.env_with(&[("WINSTON_RAILWAY_TOKEN", "not-a-valid-token")]);
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "tok", "");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let st = stalled(&api, "tok-0").await;
    let (_, reason, message) = condition(&st, "Stalled");
    assert_eq!(reason, "Unauthorized", "{message}");
    assert_eq!(condition(&st, "Ready"), ("False".into(), reason, message.clone()));
    assert!(!message.contains("not-a-valid-token"), "the token leaked: {message}");
    assert_eq!(condition(&st, "Reconciling").0, "False");
}
