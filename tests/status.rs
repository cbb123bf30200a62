//! `winston status` against the real apiserver: the table and the detail
//! view from real objects, a missing tenant refused, `-w` redrawing when a
//! step finishes, and the same binary working as the kubectl plugin. Also
//! the controllers' status write itself (`winston::status_patch`): it
//! replaces the status whole and is refused when fenced by a stale version.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use support::{TestNamespace, Winston, control_plane, eventually};
use winston::api::{CreditLedger, Tenant, TenantInstance};

fn winston(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_winston"));
    c.args(args).env("KUBECONFIG", &control_plane().kubeconfig).env("NO_COLOR", "1");
    c
}

fn output(mut c: Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn steps(service_state: &str) -> serde_json::Value {
    serde_json::json!({"status": {
        "phase": "Provisioning",
        "steps": [
            {"name": "database", "state": "Done", "attempts": 1, "startedAt": "2026-11-23T09:00:01Z", "finishedAt": "2026-11-23T09:00:13Z"},
            {"name": "service", "state": service_state, "attempts": 2, "startedAt": "2026-11-23T09:00:13Z"},
            {"name": "frontend", "state": "Skipped"}
        ],
        "urls": {"service": "https://acme-0.up.railway.app"},
        "credentialsSecretRef": {"name": "acme-0-credentials"}
    }})
}

/// A Tenant `acme` with one instance and a ledger, statuses set as the controllers would.
async fn seed(ns: &TestNamespace) {
    let pp = PostParams::default();
    let status = PatchParams::default();
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let t = serde_json::from_value(serde_json::json!({"metadata": {"name": "acme"},
        "spec": {"displayName": "Acme Dental", "contactEmail": "ops@acme.example", "plan": "starter"}}))
    .unwrap();
    tenants.create(&pp, &t).await.unwrap();
    let body = serde_json::json!({"status": {"phase": "Provisioning", "readyInstances": "0/1",
        "credits": {"ledger": "acme", "balance": 500000, "usedThisPeriod": 0, "low": false, "exhausted": false}}});
    tenants.patch_status("acme", &status, &Patch::Merge(body)).await.unwrap();

    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let i = serde_json::from_value(serde_json::json!({"metadata": {"name": "acme-0"},
        "spec": {"tenantRef": {"name": "acme"}, "ordinal": 0, "plan": "starter",
                 "profile": {"displayName": "Acme Dental", "contactEmail": "ops@acme.example"}}}))
    .unwrap();
    instances.create(&pp, &i).await.unwrap();
    instances.patch_status("acme-0", &status, &Patch::Merge(steps("InProgress"))).await.unwrap();

    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);
    let l = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "acme"}, "spec": {"tenantRef": {"name": "acme"}}}),
    )
    .unwrap();
    ledgers.create(&pp, &l).await.unwrap();
    let body = serde_json::json!({"status": {"balance": 500000, "usedThisPeriod": 0, "allotment": 500000}});
    ledgers.patch_status("acme", &status, &Patch::Merge(body)).await.unwrap();
}

#[tokio::test]
async fn status_shows_the_table_the_detail_and_refuses_a_missing_tenant() {
    let ns = TestNamespace::new("status").await;
    seed(&ns).await;

    let (ok, table, err) = output(winston(&["status", "-n", &ns.name]));
    assert!(ok, "{err}");
    assert!(table.starts_with("TENANT "), "{table}");
    assert!(
        table.contains("acme    starter  Provisioning  0/1    ■■■■■□□□ 2/3  500,000  https://acme-0.up.railway.app"),
        "{table}"
    );

    let (ok, all, err) = output(winston(&["status", "-A"]));
    assert!(ok, "{err}");
    let row = all.lines().find(|l| l.starts_with(&format!("{} ", ns.name)));
    assert!(all.starts_with("NAMESPACE ") && row.is_some_and(|r| r.contains(" acme ")), "{all}");

    let (ok, detail, err) = output(winston(&["status", "acme", "-n", &ns.name]));
    assert!(ok, "{err}");
    for want in [
        "  Acme Dental · plan starter · Provisioning · 0/1 instances ready",
        "  credits  500,000 of 500,000 left · used 0 this period",
        "  acme-0  Provisioning  ■■■■■□□□ 2/3 steps",
        "    ✓ database  done     1 try     12.0s",
        "    ● service   running  2 tries   for ",
        "    – frontend  skipped",
        "    service      https://acme-0.up.railway.app",
        "    credentials  Secret acme-0-credentials",
    ] {
        assert!(detail.contains(want), "missing {want:?} in:\n{detail}");
    }

    let (ok, _, err) = output(winston(&["status", "nobody", "-n", &ns.name]));
    assert!(!ok && err.contains("failed to find Tenant \"nobody\""), "{err}");
}

#[tokio::test]
async fn watch_redraws_when_a_step_finishes_and_exits_once_ready() {
    let ns = TestNamespace::new("status-watch").await;
    seed(&ns).await;
    // Killed on drop, so a failing assertion leaves nothing running; stdout and stderr go to its log.
    let mut status =
        Winston::spawn(&["status", "acme", "-n", &ns.name, "-w", "--until-ready"], &format!("status-{}", ns.name));
    let log = status.log.clone();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the first frame", Duration::from_secs(20), || async { text().contains("● service").then_some(()) })
        .await;

    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut done = steps("Done");
    done["status"]["steps"][1]["finishedAt"] = "2026-11-23T09:01:13Z".into();
    instances.patch_status("acme-0", &PatchParams::default(), &Patch::Merge(done)).await.unwrap();
    eventually("a frame with the service done", Duration::from_secs(20), || async {
        text().contains("✓ service   done     2 tries   1m00s").then_some(())
    })
    .await;
    // Not a terminal: whole frames, each under a time stamp, only when something changed.
    assert!(text().matches("\n--- ").count() + usize::from(text().starts_with("--- ")) >= 2, "{}", text());

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let ready = serde_json::json!({"status": {"phase": "Ready", "readyInstances": "1/1"}});
    tenants.patch_status("acme", &PatchParams::default(), &Patch::Merge(ready)).await.unwrap();
    let exit = eventually("--until-ready to exit", Duration::from_secs(20), || {
        let exited = status.child.try_wait().unwrap();
        async move { exited }
    });
    assert!(exit.await.success());
    assert!(text().contains("plan starter · Ready · 1/1 instances ready"), "{}", text());
}

#[tokio::test]
async fn the_binary_is_the_kubectl_plugin_when_named_kubectl_winston() {
    let ns = TestNamespace::new("status-plugin").await;
    seed(&ns).await;
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_winston"), dir.path().join("kubectl-winston")).unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());

    let mut help = Command::new(dir.path().join("kubectl-winston"));
    help.args(["status", "--help"]);
    let (ok, out, err) = output(help);
    assert!(ok && out.contains("Usage: kubectl winston status"), "{out}{err}");

    // Through kubectl's own plugin discovery on PATH.
    let mut via_kubectl = control_plane().kubectl(&["winston", "status", "acme", "-n", &ns.name]);
    via_kubectl.env("PATH", &path).env("NO_COLOR", "1");
    let (ok, out, err) = output(via_kubectl);
    assert!(ok && out.contains("✓ database") && out.contains("Secret acme-0-credentials"), "{out}{err}");
}

/// The write every controller makes of a status it owns: the new status
/// replaces the stored one whole, so a field it no longer has is gone even
/// when another writer set it (the seed's merge patch here; server-side
/// apply would keep such a field forever), and a write fenced by a
/// resourceVersion the object has moved past is refused with 409 and
/// changes nothing: the engine's crash safety rests on that fence (a pass
/// computed from a stale read must not erase a stored id).
#[tokio::test]
async fn a_status_write_drops_what_it_no_longer_has_and_a_stale_fence_is_refused() {
    use winston::status_patch::{params, replace};
    let ns = TestNamespace::new("status-patch").await;
    seed(&ns).await;
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let seeded = instances.get("acme-0").await.unwrap();
    let mut status = seeded.status.clone().unwrap();
    assert!(status.urls.is_some() && status.credentials_secret_ref.is_some(), "{status:?}");
    let rv = seeded.metadata.resource_version.as_deref();
    let owned = instances.patch_status("acme-0", &params(), &replace(&status, rv).unwrap()).await.unwrap();

    // A stale fence: the object moves on (a label) before the write.
    status.urls = None;
    status.phase = Some(winston::api::Phase::Ready);
    let label = serde_json::json!({"metadata": {"labels": {"moved": "on"}}});
    let moved = instances.patch("acme-0", &PatchParams::default(), &Patch::Merge(label)).await.unwrap();
    let stale = replace(&status, owned.metadata.resource_version.as_deref()).unwrap();
    match instances.patch_status("acme-0", &params(), &stale).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        other => panic!("a stale fence must get 409, got {other:?}"),
    }
    assert_eq!(instances.get("acme-0").await.unwrap().status, owned.status, "a refused write changed the status");

    // The current fence: written, and the status is exactly the new one.
    let current = replace(&status, moved.metadata.resource_version.as_deref()).unwrap();
    let stored = instances.patch_status("acme-0", &params(), &current).await.unwrap();
    assert_eq!(stored.status.as_ref(), Some(&status), "the dropped field is gone");
    let managers = stored.metadata.managed_fields.unwrap_or_default();
    assert!(managers.iter().any(|m| m.manager.as_deref() == Some("winston")), "written as Winston's field manager");

    // Unfenced, onto an object that has no status yet.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let t = serde_json::from_value(serde_json::json!({"metadata": {"name": "bare"},
        "spec": {"displayName": "Bare", "contactEmail": "ops@bare.example", "plan": "starter"}}))
    .unwrap();
    tenants.create(&PostParams::default(), &t).await.unwrap();
    let want = winston::api::TenantStatus { ready_instances: Some("0/1".into()), ..Default::default() };
    let stored = tenants.patch_status("bare", &params(), &replace(&want, None).unwrap()).await.unwrap();
    assert_eq!(stored.status, Some(want));
}
