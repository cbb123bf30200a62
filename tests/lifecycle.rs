//! The lifecycle of an instance on a real kube-apiserver, a real PostgreSQL
//! and the platform emulator: a Tenant deleted and re-created under the
//! same name goes Ready again (its old Secret went before its finalizer),
//! teardown calls only the platforms the instance used, and a failing
//! instance is torn down at once, not after its backoff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use provisioning_support::{Stack, apply_tenant, ready};
use serde_json::json;
use support::{TestNamespace, eventually};
use winston::api::{Tenant, TenantInstance};

const READY_WITHIN: Duration = Duration::from_secs(90);
/// A finalizer of the test's that keeps a deleted instance readable after
/// Winston released its own.
const HOLD: &str = "test.winston.dev/hold";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_recreated_under_the_same_name_goes_ready() {
    let ns = TestNamespace::new("recreate").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "again", "");
    let old = ready(&ns, "again-0", READY_WITHIN).await;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let old_secret = secrets.get("again-0-credentials").await.unwrap().metadata.uid.unwrap();

    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let hold = json!({"metadata": {"finalizers": [winston::names::FINALIZER, HOLD]}});
    api.patch("again-0", &PatchParams::default(), &Patch::Merge(&hold)).await.unwrap();
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("again", &DeleteParams::default()).await.unwrap();
    // The moment Winston's finalizer is gone, the Secret is gone already.
    eventually("Winston's finalizer released", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let ti = api.get("again-0").await.ok()?;
            (!ti.metadata.finalizers?.iter().any(|f| f == winston::names::FINALIZER)).then_some(())
        }
    })
    .await;
    let left = secrets.get_opt("again-0-credentials").await.unwrap();
    assert!(left.is_none(), "credentials Secret left when the finalizer went: {left:?}");
    api.patch("again-0", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    eventually("the tenant and its instance gone", READY_WITHIN, || {
        let (api, tenants) = (api.clone(), tenants.clone());
        async move {
            (api.get_opt("again-0").await.ok()?.is_none() && tenants.get_opt("again").await.ok()?.is_none())
                .then_some(())
        }
    })
    .await;

    apply_tenant(&ns, "again", "");
    let new = ready(&ns, "again-0", READY_WITHIN).await;
    assert_ne!(new.metadata.uid, old.metadata.uid);
    let secret = secrets.get("again-0-credentials").await.unwrap();
    assert_ne!(secret.metadata.uid.unwrap(), old_secret);
}

/// A platform that refuses every token, counting the requests it gets.
async fn refusing_platform() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({"error": {"code": "forbidden"}})))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_calls_only_the_platforms_the_instance_used() {
    let ns = TestNamespace::new("unused").await;
    let stack = Stack::start(50).await;
    let (refusing, hits) = refusing_platform().await;
    let env = stack.env_with(&[
        ("WINSTON_VERCEL_TOKEN", "rejected-token"),
        ("WINSTON_SUPABASE_TOKEN", "rejected-token"),
        ("WINSTON_VERCEL_BASE_URL", &refusing),
        ("WINSTON_SUPABASE_BASE_URL", &refusing),
    ]);
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "lean", "");
    ready(&ns, "lean-0", READY_WITHIN).await;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let key = provisioning_support::secret_value(&ns, "lean-0-credentials", "WINSTON_API_KEY").await;
    assert!(stack.total_objects().await > 0);

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("lean", &DeleteParams::default()).await.unwrap();
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the tenant and its instance gone", READY_WITHIN, || {
        let (api, tenants) = (api.clone(), tenants.clone());
        async move {
            (api.get_opt("lean-0").await.ok()?.is_none() && tenants.get_opt("lean").await.ok()?.is_none()).then_some(())
        }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "requests to Vercel or Supabase");
    assert!(secrets.get_opt("lean-0-credentials").await.unwrap().is_none());
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let hash = winston::ledger::keys::hash_key(&key);
    assert!(ledger.active_keys().await.unwrap().iter().all(|k| k.hash != hash), "key not revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_is_torn_down_at_once() {
    let ns = TestNamespace::new("failing").await;
    let stack = Stack::start(50).await;
    let env = stack.env_with(&[("WINSTON_RESEND_TOKEN", "rejected-token")]);
    // Stalled instances retry after 300 s: a teardown that waited for that
    // (or for the failure backoff) would miss the bound below.
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "sick", "");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the instance stalled on the welcome email", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let st = api.get("sick-0").await.ok()?.status?;
            st.conditions.iter().any(|c| c.type_ == "Stalled" && c.status == "True").then_some(())
        }
    })
    .await;
    assert!(stack.total_objects().await > 0, "Neon and Railway objects exist");

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("sick", &DeleteParams::default()).await.unwrap();
    eventually("the failing tenant torn down promptly", Duration::from_secs(30), || {
        let (api, tenants) = (api.clone(), tenants.clone());
        async move {
            (api.get_opt("sick-0").await.ok()?.is_none() && tenants.get_opt("sick").await.ok()?.is_none()).then_some(())
        }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
}
