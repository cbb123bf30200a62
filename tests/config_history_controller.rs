//! The configuration history through the real control plane and a real
//! `winston controller`: the version the emulated Railway service runs is
//! the newest kept; a spec change that changes the workspace adds exactly
//! one version, passes without a change add none, the history survives a
//! controller restart, `winston workspace diff` shows the changed line, and
//! deleting the Tenant forgets the instance's history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use provisioning_support::{Stack, apply_tenant, metric, ready};
use serde_json::json;
use support::{TestNamespace, eventually};
use winston::api::{Tenant, TenantInstance};
use winston::ledger::Ledger;

const READY_WITHIN: Duration = Duration::from_secs(90);

/// `(generation, hash)` of every row kept for `uid`, oldest first.
async fn kept(ledger: &Ledger, uid: &str) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT generation, workspace_hash FROM config_snapshots WHERE instance_uid = $1 ORDER BY id")
        .bind(uid)
        .fetch_all(ledger.pool())
        .await
        .unwrap()
}

/// The workspace hash the emulated service was deployed with.
async fn deployed_hash(stack: &Stack, ti: &TenantInstance) -> String {
    let ids = ti.status.as_ref().unwrap().external.as_ref().unwrap().railway.clone().unwrap();
    let q =
        "query v($p: String!, $e: String!, $s: String) { variables(projectId: $p, environmentId: $e, serviceId: $s) }";
    let vars = stack.railway(q, json!({"p": ids.project_id, "e": ids.environment_id, "s": ids.service_id})).await;
    vars["data"]["variables"]["WINSTON_WORKSPACE_HASH"].as_str().expect("a workspace hash").to_string()
}

/// Waits for `n` more reconciles of the controller serving metrics at `addr`.
async fn passes(addr: &str, n: f64) {
    let start = metric(addr, "winston_reconciles_total").await;
    eventually(&format!("{n} more reconciles"), Duration::from_secs(30), || async move {
        (metric(addr, "winston_reconciles_total").await >= start + n).then_some(())
    })
    .await;
}

/// Waits until the instance reconciled generation `g` and is Ready again.
async fn reconciled(api: &Api<TenantInstance>, name: &str, g: i64) -> TenantInstance {
    eventually(&format!("{name} Ready at generation {g}"), READY_WITHIN, || async move {
        let ti = api.get(name).await.ok()?;
        let st = ti.status.as_ref()?;
        let ready = winston::api::conditions::is_true(&st.conditions, "Ready");
        (ready && st.observed_generation == Some(g)).then_some(ti)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applied_workspace_version_is_kept_once_and_forgotten_on_teardown() {
    let ns = TestNamespace::new("history").await;
    let stack = Stack::start(100).await;
    winston::ledger::migrate(&stack.control_db).await.unwrap();
    let ledger = Ledger::connect(&stack.control_db, 2).await.unwrap();
    let (controller, addr) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);

    apply_tenant(&ns, "acme", "");
    let ti = ready(&ns, "acme-0", READY_WITHIN).await;
    let uid = ti.metadata.uid.clone().unwrap();
    let first = ti.status.as_ref().unwrap().workspace_hash.clone().unwrap();
    assert_eq!(deployed_hash(&stack, &ti).await, first);
    let g1 = ti.metadata.generation.unwrap();
    assert_eq!(kept(&ledger, &uid).await, [(g1, first.clone())]);

    // Passes without a change record nothing.
    passes(&addr, 4.0).await;
    assert_eq!(kept(&ledger, &uid).await.len(), 1);

    // A spec change that changes the workspace: exactly one more version,
    // the one the service now runs.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PatchParams::default();
    tenants.patch("acme", &pp, &Patch::Merge(json!({"spec": {"displayName": "Acme Bakery"}}))).await.unwrap();
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let changed = eventually("the instance's spec changed", READY_WITHIN, || async {
        let ti = instances.get("acme-0").await.ok()?;
        (ti.spec.profile.display_name == "Acme Bakery").then_some(ti)
    })
    .await;
    let g2 = changed.metadata.generation.unwrap();
    let ti = reconciled(&instances, "acme-0", g2).await;
    let second = ti.status.as_ref().unwrap().workspace_hash.clone().unwrap();
    assert_ne!(first, second);
    assert_eq!(deployed_hash(&stack, &ti).await, second);
    passes(&addr, 3.0).await;
    assert_eq!(kept(&ledger, &uid).await, [(g1, first.clone()), (g2, second.clone())]);

    // A restarted controller keeps the history and adds nothing to it.
    drop(controller);
    let (_controller, addr) = stack.controller(&ns.name, "b", &["--resync-seconds", "1"]);
    passes(&addr, 4.0).await;
    assert_eq!(kept(&ledger, &uid).await.len(), 2);

    // The command line shows the change.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["workspace", "diff", "acme", "-n", &ns.name])
        .env("WINSTON_DATABASE_URL", &stack.control_db)
        .output()
        .unwrap();
    let diff = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(diff.contains("-  \"displayName\": \"acme\",\n+  \"displayName\": \"Acme Bakery\",\n"), "{diff}");
    assert!(diff.contains("+++ b/USER.md"), "{diff}");

    // Deleting the Tenant deletes the instance and forgets its history.
    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    eventually("the instance gone", READY_WITHIN, || async {
        instances.get_opt("acme-0").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(kept(&ledger, &uid).await.is_empty());
}

/// The control database refusing the record (here: its table renamed away)
/// fails the service step after the platform already runs the new version;
/// the step is retried and, once the table is back, that version is kept
/// exactly once: a failed record loses nothing and duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_record_is_retried_until_the_applied_version_is_kept() {
    let ns = TestNamespace::new("histfail").await;
    let stack = Stack::start(100).await;
    winston::ledger::migrate(&stack.control_db).await.unwrap();
    let ledger = Ledger::connect(&stack.control_db, 2).await.unwrap();
    let (_controller, _addr) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);

    apply_tenant(&ns, "bolt", "");
    let ti = ready(&ns, "bolt-0", READY_WITHIN).await;
    let uid = ti.metadata.uid.clone().unwrap();
    assert_eq!(kept(&ledger, &uid).await.len(), 1);

    sqlx::query("ALTER TABLE config_snapshots RENAME TO config_snapshots_away").execute(ledger.pool()).await.unwrap();
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let patch = Patch::Merge(json!({"spec": {"displayName": "Bolt Bikes"}}));
    tenants.patch("bolt", &PatchParams::default(), &patch).await.unwrap();
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    // The platform runs the new workspace while its record keeps failing.
    let (new_hash, failed) = eventually("the new version deployed and its record failing", READY_WITHIN, || async {
        let ti = instances.get("bolt-0").await.ok()?;
        let st = ti.status.as_ref()?;
        let service = st.steps.iter().find(|s| s.name == winston::api::StepName::Service)?;
        let failing = service.state == winston::api::StepState::Failed;
        let hash = st.workspace_hash.clone()?;
        (ti.spec.profile.display_name == "Bolt Bikes" && failing && deployed_hash(&stack, &ti).await == hash)
            .then_some((hash, service.message.clone().unwrap_or_default()))
    })
    .await;
    assert!(!failed.contains(&stack.control_db), "no connection string in status: {failed}");

    sqlx::query("ALTER TABLE config_snapshots_away RENAME TO config_snapshots").execute(ledger.pool()).await.unwrap();
    let g = instances.get("bolt-0").await.unwrap().metadata.generation.unwrap();
    reconciled(&instances, "bolt-0", g).await;
    eventually("the applied version kept", READY_WITHIN, || async {
        (kept(&ledger, &uid).await.len() == 2).then_some(())
    })
    .await;
    let rows = kept(&ledger, &uid).await;
    assert_eq!(rows[1], (g, new_hash), "{rows:?}");
}
