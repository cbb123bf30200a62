//! `winston controller` (the real binary) against a real kube-apiserver:
//! Tenants get owned children that follow updates, status aggregates them,
//! deletion runs the finalizer, a steady state writes nothing, and of two
//! replicas only the leader acts.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestNamespace, controller, eventually};
use winston::api::{CreditLedger, Tenant, TenantInstance};

const WAIT: Duration = Duration::from_secs(60);

fn tenant(name: &str, plan: &str, instances: i32) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "spec": { "displayName": "Acme", "contactEmail": format!("ops@{name}.example"), "plan": plan, "instances": instances }
    }))
    .unwrap()
}

/// Sum of every sample of `metric` (any labels) on the controller's /metrics.
async fn metric(addr: &str, metric: &str) -> f64 {
    let body = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_ready(addr: &str) {
    eventually("controller /readyz", WAIT, || async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

async fn set_instance_ready(api: &Api<TenantInstance>, name: &str, url: &str) {
    let status = json!({
        "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
        "status": {
            "phase": "Ready",
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Ready", "message": "",
                             "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            "urls": { "service": url }
        }
    });
    api.patch_status(name, &PatchParams::apply("test-instance-controller").force(), &Patch::Apply(status))
        .await
        .unwrap();
}

#[tokio::test]
async fn tenant_owns_children_that_follow_it_and_are_cleaned_up() {
    winston::telemetry::install_crypto_provider();
    let ns = TestNamespace::new("tenant").await;
    let (ctl, addr) = controller(&ns.name, "solo", &[]);
    wait_ready(&addr).await;
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &ns.name);

    let created = tenants.create(&PostParams::default(), &tenant("acme", "starter", 1)).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    // Children appear, controlled by the Tenant.
    let ti = eventually("TenantInstance acme-0", WAIT, || async { instances.get_opt("acme-0").await.unwrap() }).await;
    let owner = &ti.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Tenant", uid.as_str(), Some(true)));
    assert_eq!(ti.spec.stack.plan, "starter");
    let cl = eventually("CreditLedger acme", WAIT, || async { ledgers.get_opt("acme").await.unwrap() }).await;
    assert_eq!(cl.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    assert_eq!(cl.spec.tenant_ref.name, "acme");

    // Not Ready, with a reason, while the instance is not Ready; finalizer in place.
    let t = eventually("Tenant status", WAIT, || async {
        let t = tenants.get("acme").await.unwrap();
        t.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).is_some().then_some(t)
    })
    .await;
    let ready = t.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InstancesNotReady"), "{ready:?}");
    assert!(ready.message.contains("0/1"), "{}", ready.message);
    assert!(t.metadata.finalizers.as_ref().unwrap().contains(&"winston.dev/cleanup".to_string()));

    // Update: children follow (plan changes, a second instance appears).
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"plan": "growth", "instances": 2}})))
        .await
        .unwrap();
    eventually("instances follow the update", WAIT, || async {
        let a = instances.get_opt("acme-0").await.unwrap()?;
        let b = instances.get_opt("acme-1").await.unwrap()?;
        (a.spec.stack.plan == "growth" && b.spec.stack.plan == "growth" && b.spec.ordinal == 1).then_some(())
    })
    .await;

    // Aggregation: Ready once every instance is Ready, with the URL.
    set_instance_ready(&instances, "acme-0", "https://acme-0.example").await;
    set_instance_ready(&instances, "acme-1", "https://acme-1.example").await;
    let t = eventually("Tenant Ready", WAIT, || async {
        let t = tenants.get("acme").await.unwrap();
        let s = t.status.clone()?;
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(t)
    })
    .await;
    let s = t.status.unwrap();
    assert_eq!(s.ready_instances.as_deref(), Some("2/2"));
    assert_eq!(s.url.as_deref(), Some("https://acme-0.example"));
    assert_eq!(s.observed_generation, t.metadata.generation);

    // Steady state: a reconcile with nothing to change writes nothing.
    let writes_before = metric(&addr, "winston_kube_writes_total").await;
    let reconciles_before = metric(&addr, "winston_reconciles_total").await;
    tenants
        .patch("acme", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"touch": "1"}}})))
        .await
        .unwrap();
    eventually("a reconcile after the touch", WAIT, || async {
        (metric(&addr, "winston_reconciles_total").await > reconciles_before).then_some(())
    })
    .await;
    assert_eq!(metric(&addr, "winston_kube_writes_total").await, writes_before, "a no-op reconcile wrote to the API");

    // Scale down: the extra instance goes away.
    tenants.patch("acme", &PatchParams::default(), &Patch::Merge(json!({"spec": {"instances": 1}}))).await.unwrap();
    eventually("acme-1 deleted", WAIT, || async { instances.get_opt("acme-1").await.unwrap().is_none().then_some(()) })
        .await;

    // Events were recorded for the Tenant.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let reasons: Vec<String> =
        events.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.iter().any(|r| r == "Created") && reasons.iter().any(|r| r == "Ready"), "{reasons:?}");

    // Delete: the finalizer removes the children, then itself.
    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    eventually("Tenant gone", WAIT, || async { tenants.get_opt("acme").await.unwrap().is_none().then_some(()) }).await;
    assert!(instances.get_opt("acme-0").await.unwrap().is_none());
    assert!(ledgers.get_opt("acme").await.unwrap().is_none());

    let status = ctl.terminate();
    assert!(status.success(), "controller did not exit cleanly on SIGTERM: {status:?}");
}

#[tokio::test]
async fn of_two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    winston::telemetry::install_crypto_provider();
    let ns = TestNamespace::new("leader").await;
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let holder = |leases: Api<Lease>| async move {
        leases.get_opt("winston-controller").await.unwrap().and_then(|l| l.spec?.holder_identity)
    };

    let (first, first_addr) = controller(&ns.name, "first", &["--lease-duration-seconds", "4"]);
    eventually("first holds the lease", WAIT, || async {
        (holder(leases.clone()).await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let (second, second_addr) = controller(&ns.name, "second", &["--lease-duration-seconds", "4"]);
    wait_ready(&second_addr).await;

    tenants.create(&PostParams::default(), &tenant("one", "starter", 1)).await.unwrap();
    eventually("leader creates one-0", WAIT, || async { instances.get_opt("one-0").await.unwrap() }).await;
    assert!(metric(&first_addr, "winston_reconciles_total").await > 0.0);
    assert_eq!(metric(&second_addr, "winston_reconciles_total").await, 0.0, "the standby reconciled");
    assert_eq!(metric(&second_addr, "winston_leader").await, 0.0);
    assert_eq!(metric(&first_addr, "winston_leader").await, 1.0);

    // The leader stops gracefully and hands over; the standby acts.
    let status = first.terminate();
    assert!(status.success(), "leader did not exit cleanly: {status:?}");
    eventually("second holds the lease", WAIT, || async {
        (holder(leases.clone()).await.as_deref() == Some("second")).then_some(())
    })
    .await;
    tenants.create(&PostParams::default(), &tenant("two", "starter", 1)).await.unwrap();
    eventually("new leader creates two-0", WAIT, || async { instances.get_opt("two-0").await.unwrap() }).await;
    assert!(metric(&second_addr, "winston_reconciles_total").await > 0.0);
    drop(second);
}
