//! A Supabase tenant end to end on a real kube-apiserver, a real PostgreSQL
//! and the platform emulator: it goes Ready through the pooler endpoint the
//! emulated platform reports (its database is real), and a project that
//! fails to initialise stalls the instance instead of being retried forever.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use kube::Api;
use kube::api::DeleteParams;
use provisioning_support::{Stack, apply_tenant, pg, ready, role_and_tables, secret_value};
use serde_json::json;
use support::{TestNamespace, eventually};
use winston::api::{Tenant, TenantInstance};

const WITHIN: Duration = Duration::from_secs(90);
const SUPABASE: &str = "  components:\n    database:\n      provider: Supabase\n";

fn marker(ti: &TenantInstance) -> String {
    let uid = ti.metadata.uid.clone().unwrap();
    format!("wn-{}", uid.replace('-', "").get(..12).unwrap())
}

async fn role_exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&pg().url("postgres")).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(name).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n == 1
}

/// Fails on the old engine: it connected to `db.<ref>.supabase.co`, which
/// resolves nowhere, so the schema step retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supabase_tenant_goes_ready_and_deletion_drops_its_database() {
    let ns = TestNamespace::new("supa").await;
    let stack = Stack::start(300).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "north", SUPABASE);

    let ti = ready(&ns, "north-0", WITHIN).await;
    let marker = marker(&ti);
    assert_eq!(stack.count("supabase", "project", &marker).await, 1, "{}", stack.objects().await);
    assert_eq!(stack.count("neon", "project", &marker).await, 0, "no Neon project for a Supabase tenant");

    // The Secret's DATABASE_URL opens the project's database with its tables.
    let secret = ti.status.clone().unwrap().credentials_secret_ref.unwrap().name;
    let url = secret_value(&ns, &secret, "DATABASE_URL").await;
    assert!(!url.contains(".supabase.co"), "the direct host was used: {url}");
    let (who, tables) = role_and_tables(&url).await;
    assert!(who.starts_with("postgres."), "{who}");
    for t in ["conversations", "memories", "messages", "usage"] {
        assert!(tables.contains(&t.to_string()), "{t} missing in {tables:?}");
    }

    // Deleting the Tenant removes the project and its real role.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("north", &DeleteParams::default()).await.unwrap();
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the instance gone", WITHIN, || {
        let api = api.clone();
        async move { api.get_opt("north-0").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
    assert!(!role_exists(&who).await, "the project's role outlived it");
}

/// Fails on the old engine: INIT_FAILED was retried forever (Progressing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_in_init_failed_stalls_with_the_platform_status() {
    let ns = TestNamespace::new("supafail").await;
    let stack = Stack::start(50).await;
    stack.fault(json!({"platform": "supabase", "kind": "fail_deployment"})).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "broken", SUPABASE);

    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let (stalled, ti) = eventually("Stalled on INIT_FAILED", WITHIN, || {
        let api = api.clone();
        async move {
            let ti = api.get("broken-0").await.ok()?;
            let c = ti.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?.clone();
            Some((c, ti))
        }
    })
    .await;
    assert_eq!(stalled.reason, "ObjectFailed", "{stalled:?}");
    assert!(stalled.message.contains("INIT_FAILED"), "{}", stalled.message);
    assert_eq!(ti.status.unwrap().phase, Some(winston::api::Phase::Failed));
    assert_eq!(stack.count("supabase", "project", &marker(&api.get("broken-0").await.unwrap())).await, 1);
}
