//! The provisioning engine end to end on a real kube-apiserver, a real
//! PostgreSQL and the platform emulator: a Tenant goes Ready with exactly one
//! object of each kind, its credentials work, a steady state writes nothing,
//! drift is repaired, and deletion leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;
use provisioning_support::{Stack, apply_tenant, metric, ready, role_and_tables, secret_value};
use serde_json::json;
use support::{TestNamespace, eventually};
use winston::api::{StepState, Tenant, TenantInstance};

const READY_WITHIN: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_goes_ready_steady_state_writes_nothing_and_deletion_cleans_up() {
    let ns = TestNamespace::new("prov").await;
    let stack = Stack::start(300).await;
    let (_ctl, addr) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);
    apply_tenant(&ns, "bella", "");

    let ti = ready(&ns, "bella-0", READY_WITHIN).await;
    let st = ti.status.clone().unwrap();
    let uid = ti.metadata.uid.clone().unwrap();
    let marker = format!("wn-{}", uid.replace('-', "").get(..12).unwrap());
    for (platform, kind) in [("neon", "project"), ("railway", "project"), ("railway", "service")] {
        assert_eq!(stack.count(platform, kind, &marker).await, 1, "{platform}/{kind}: {}", stack.objects().await);
    }
    assert!(st.steps.iter().all(|s| matches!(s.state, StepState::Done | StepState::Skipped)), "{:?}", st.steps);
    assert!(st.urls.as_ref().and_then(|u| u.service.clone()).unwrap().starts_with("https://"));
    let secret = st.credentials_secret_ref.clone().unwrap().name;
    let emails = stack.objects().await["resend"]["objects"]["email"].as_array().unwrap().len();
    assert_eq!(emails, 1, "exactly one welcome email");

    // The Secret's DATABASE_URL opens the tenant's database with its tables.
    let url = secret_value(&ns, &secret, "DATABASE_URL").await;
    let (_, tables) = role_and_tables(&url).await;
    for t in ["conversations", "memories", "messages", "usage"] {
        assert!(tables.contains(&t.to_string()), "{t} missing in {tables:?}");
    }
    // The key in the Secret is registered (hashed) with the tenant's account.
    let key = secret_value(&ns, &secret, "WINSTON_API_KEY").await;
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let hash = winston::ledger::keys::hash_key(&key);
    let keys = ledger.active_keys().await.unwrap();
    let account = tenant_account(&ns, "bella").await;
    assert!(keys.iter().any(|k| k.hash == hash && k.account_id == account));

    // Steady state: several resyncs later nothing was written anywhere.
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let rv = api.get("bella-0").await.unwrap().metadata.resource_version;
    let mutations = stack.mutations().await;
    let start = metric(&addr, "winston_reconciles_total").await;
    eventually("three more reconciles", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { (metric(&addr, "winston_reconciles_total").await >= start + 3.0).then_some(()) }
    })
    .await;
    assert_eq!(api.get("bella-0").await.unwrap().metadata.resource_version, rv, "status rewritten at rest");
    assert_eq!(stack.mutations().await, mutations, "platform written at rest");

    // Deleting the Tenant removes every external object, then the instance.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("bella", &DeleteParams::default()).await.unwrap();
    eventually("the tenant and its instance gone", READY_WITHIN, || {
        let (api, tenants) = (api.clone(), tenants.clone());
        async move {
            (api.get_opt("bella-0").await.ok()?.is_none() && tenants.get_opt("bella").await.ok()?.is_none())
                .then_some(())
        }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
    assert!(ledger.active_keys().await.unwrap().iter().all(|k| k.hash != hash), "key not revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_deleted_out_of_band_is_recreated() {
    let ns = TestNamespace::new("drift").await;
    let stack = Stack::start(100).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);
    apply_tenant(&ns, "drift", "");
    let ti = ready(&ns, "drift-0", READY_WITHIN).await;
    let old = ti.status.unwrap().external.unwrap().railway.unwrap().service_id.unwrap();
    let r = stack.railway("mutation($id: String!) { serviceDelete(id: $id) }", json!({"id": old})).await;
    assert!(r["errors"].is_null(), "{r}");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let new = eventually("a new service recorded and Ready", READY_WITHIN, || {
        let api = api.clone();
        let old = old.clone();
        async move {
            let ti = api.get("drift-0").await.ok()?;
            let st = ti.status?;
            let id = st.external?.railway?.service_id?;
            (id != old && winston::api::conditions::is_true(&st.conditions, "Ready")).then_some(id)
        }
    })
    .await;
    let marker = format!("wn-{}", ti.metadata.uid.unwrap().replace('-', "").get(..12).unwrap());
    assert_eq!(stack.count("railway", "service", &marker).await, 1);
    assert_ne!(new, old);
}

/// One pass creates the database, the Railway project and its service
/// with a single status write before them (the first announce stores the
/// markers of all three). Here that pass loses its last write, the one
/// with the ids: the instance is changed under it while the service's
/// create is held, so the write gets 409, which leaves what a crash at that
/// point leaves (markers, no ids). The next pass must find all three by
/// their marker and create none of them again (counted on the platform).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_under_markers_stored_ahead_are_found_after_the_pass_loses_its_ids() {
    let ns = TestNamespace::new("ahead").await;
    let stack = Stack::start(0).await;
    stack.fault(json!({"platform": "railway", "operation": "serviceCreate", "kind": "delay", "delay_ms": 4000})).await;
    // The production settle window: the stored-ahead markers stand for
    // the creates (a quarter of a 1 s window could lapse before them).
    let (_ctl, _) = stack.controller(&ns.name, "a", &["--list-settle-seconds", "30"]);
    apply_tenant(&ns, "ahead", "");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let (marker, held) = eventually("the Railway project created, its service's create held", READY_WITHIN, || {
        let (api, stack) = (api.clone(), &stack);
        async move {
            let ti = api.get_opt("ahead-0").await.ok()??;
            let marker = format!("wn-{}", ti.metadata.uid.as_ref()?.replace('-', "").get(..12)?);
            (stack.count("railway", "project", &marker).await == 1).then_some((marker, ti))
        }
    })
    .await;
    assert_eq!(stack.count("railway", "service", &marker).await, 0, "the service's create is held");
    let st = held.status.unwrap();
    let pending: Vec<_> = st.pending.iter().map(|p| p.step).collect();
    assert!(
        pending.contains(&winston::api::StepName::Service)
            && st.external.as_ref().is_none_or(|e| e.railway.is_none() && e.neon.is_none()),
        "one write before the creates, with the markers and no ids: {pending:?} {:?}",
        st.external
    );
    let touch = json!({"metadata": {"annotations": {"test.winston.dev/touched": "1"}}});
    api.patch("ahead-0", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&touch)).await.unwrap();

    let ti = ready(&ns, "ahead-0", READY_WITHIN).await;
    for (platform, kind) in [("neon", "project"), ("railway", "project"), ("railway", "service")] {
        assert_eq!(stack.count(platform, kind, &marker).await, 1, "{platform}/{kind}: {}", stack.objects().await);
    }
    let st = ti.status.unwrap();
    assert!(st.pending.is_empty(), "no marker left: {:?}", st.pending);
    assert_eq!(stack.fault_count().await, 0, "the held create was reached");
}

/// Markers of the instance `<tenant>-0`.
/// The ledger account of the Tenant `name` (keyed by its uid).
async fn tenant_account(ns: &TestNamespace, name: &str) -> String {
    let t = Api::<Tenant>::namespaced(ns.client.clone(), &ns.name).get(name).await.unwrap();
    winston::names::ledger_account(&ns.name, name, &t.metadata.uid.unwrap())
}

async fn marker_of(ns: &TestNamespace, name: &str) -> String {
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let uid = api.get(name).await.unwrap().metadata.uid.unwrap();
    format!("wn-{}", uid.replace('-', "").get(..12).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tenants_converge_without_duplicates_through_ten_sigkills() {
    const TENANTS: usize = 20;
    let ns = TestNamespace::new("crash").await;
    let stack = Stack::start(1000).await;
    let (mut ctl, _) = stack.controller(&ns.name, "a", &[]);
    for i in 0..TENANTS {
        apply_tenant(&ns, &format!("t{i}"), "");
    }
    // Kill the controller at varied points of the work: after 1..=6 more
    // platform writes each time, then restart it (same identity, so it
    // takes its own Lease back at once).
    for round in 0..10u64 {
        let before = stack.mutations().await;
        let more = 1 + (round * 7 + 3) % 6;
        let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
        eventually(
            &format!("round {round}: platform writes (or all Ready) before the kill"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                let stack = &stack;
                async move {
                    if stack.mutations().await >= before + more {
                        return Some(());
                    }
                    let list = api.list(&Default::default()).await.ok()?;
                    let all_ready = list.items.len() == TENANTS
                        && list.items.iter().all(|ti| {
                            ti.status
                                .as_ref()
                                .is_some_and(|s| winston::api::conditions::is_true(&s.conditions, "Ready"))
                        });
                    all_ready.then_some(())
                }
            },
        )
        .await;
        ctl.kill();
        ctl = stack.controller(&ns.name, "a", &[]).0;
    }
    for i in 0..TENANTS {
        ready(&ns, &format!("t{i}-0"), Duration::from_secs(240)).await;
    }
    for i in 0..TENANTS {
        let marker = marker_of(&ns, &format!("t{i}-0")).await;
        for (platform, kind) in [("neon", "project"), ("railway", "project"), ("railway", "service")] {
            assert_eq!(stack.count(platform, kind, &marker).await, 1, "t{i}: {platform}/{kind}");
        }
    }
    // Ready does not wait for the welcome email; Resend's 2/s and the retries after each SIGKILL
    // pace them (one CI run needed more than 60 s; why exactly is not established).
    let emails = eventually("a welcome email per tenant", Duration::from_secs(180), || async {
        let v = stack.objects().await["resend"]["objects"]["email"].as_array().cloned().unwrap_or_default();
        (v.len() >= TENANTS).then_some(v.len())
    })
    .await;
    assert_eq!(emails, TENANTS, "one welcome email per tenant");
    eprintln!("requests per tenant to Ready through ten SIGKILLs: {}", stack.requests_per_tenant(TENANTS).await);

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    for i in 0..TENANTS {
        tenants.delete(&format!("t{i}"), &DeleteParams::default()).await.unwrap();
    }
    eventually("every tenant gone", Duration::from_secs(240), || {
        let tenants = tenants.clone();
        async move { tenants.list(&Default::default()).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_keeps_objects_and_paused_calls_no_platform() {
    let ns = TestNamespace::new("orphan").await;
    let stack = Stack::start(50).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "keep", "  deletionPolicy: Orphan\n");
    ready(&ns, "keep-0", READY_WITHIN).await;
    let marker = marker_of(&ns, "keep-0").await;

    // Paused: a spec change that would redeploy makes no platform call.
    let mutations = stack.mutations().await;
    apply_tenant(&ns, "keep", "  deletionPolicy: Orphan\n  paused: true\n  industry: Dentistry\n");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually("the instance reports Paused", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let st = api.get("keep-0").await.ok()?.status?;
            st.conditions.iter().any(|c| c.type_ == "Reconciling" && c.reason == "Paused").then_some(())
        }
    })
    .await;
    assert_eq!(stack.mutations().await, mutations, "a paused instance called a platform");

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("keep", &DeleteParams::default()).await.unwrap();
    eventually("the tenant gone", READY_WITHIN, || {
        let tenants = tenants.clone();
        async move { tenants.get_opt("keep").await.ok()?.is_none().then_some(()) }
    })
    .await;
    for (platform, kind) in [("neon", "project"), ("railway", "project"), ("railway", "service")] {
        assert_eq!(stack.count(platform, kind, &marker).await, 1, "Orphan removed {platform}/{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_stalls_and_a_fixed_token_recovers_without_touching_the_tenant() {
    let ns = TestNamespace::new("auth").await;
    let stack = Stack::start(50).await;
    let env = stack.env_with(&[("WINSTON_RAILWAY_TOKEN", "not-a-valid-token")]);
    let (bad, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "auth", "");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let stalled = eventually("Stalled with the platform's message", READY_WITHIN, || {
        let api = api.clone();
        async move {
            let st = api.get("auth-0").await.ok()?.status?;
            let c = st.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?.clone();
            Some((c, st.phase))
        }
    })
    .await;
    assert_eq!(stalled.0.reason, "Unauthorized", "{:?}", stalled.0);
    assert!(stalled.0.message.contains("railway"), "{}", stalled.0.message);
    assert!(!stalled.0.message.contains("not-a-valid-token"), "the token leaked: {}", stalled.0.message);
    assert_eq!(stalled.1, Some(winston::api::Phase::Failed));
    let generation = api.get("auth-0").await.unwrap().metadata.generation;

    // The operator fixes the token and the controller restarts with it.
    bad.kill();
    let (_good, _) = stack.controller(&ns.name, "a", &[]);
    let ti = ready(&ns, "auth-0", READY_WITHIN).await;
    assert_eq!(ti.metadata.generation, generation, "the Tenant was not touched");
}

/// Every fault the platforms are known for, armed before three tenants (one
/// with a Vercel frontend) are applied: 429 storms with Retry-After, 5xx,
/// Neon 423, a failed Railway and Vercel deployment, requests that outlast
/// the client timeout, and creates performed whose answer is lost. Every
/// fault is consumed, every tenant goes Ready, and each object exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_platform_faults_converges_without_duplicates() {
    let ns = TestNamespace::new("storm").await;
    let stack = Stack::start(50).await;
    let faults = [
        json!({"platform": "railway", "kind": "rate_limit", "count": 8, "retry_after_secs": 1}),
        json!({"platform": "railway", "operation": "projectCreate", "kind": "server_error", "status": 502, "count": 2}),
        json!({"platform": "railway", "operation": "projectCreate", "kind": "drop_response"}),
        json!({"platform": "railway", "operation": "serviceCreate", "kind": "server_error", "status": 503}),
        json!({"platform": "railway", "operation": "serviceCreate", "kind": "drop_response"}),
        json!({"platform": "railway", "operation": "serviceInstanceDeployV2", "kind": "delay", "delay_ms": 2500}),
        json!({"platform": "railway", "kind": "fail_deployment"}),
        json!({"platform": "neon", "kind": "rate_limit", "count": 4, "retry_after_secs": 1}),
        json!({"platform": "neon", "operation": "createProject", "kind": "server_error", "status": 500}),
        json!({"platform": "neon", "operation": "createProject", "kind": "drop_response", "count": 2}),
        json!({"platform": "neon", "operation": "getConnectionUri", "kind": "locked", "count": 3}),
        json!({"platform": "neon", "operation": "getProject", "kind": "delay", "delay_ms": 2500}),
        json!({"platform": "vercel", "kind": "rate_limit", "count": 3, "retry_after_secs": 1}),
        json!({"platform": "vercel", "operation": "createProject", "kind": "drop_response"}),
        json!({"platform": "vercel", "operation": "createEnv", "kind": "server_error", "status": 500}),
        json!({"platform": "vercel", "kind": "fail_deployment"}),
        json!({"platform": "resend", "operation": "sendEmail", "kind": "server_error", "status": 500, "count": 2}),
        json!({"platform": "resend", "operation": "sendEmail", "kind": "drop_response"}),
    ];
    for f in faults {
        stack.fault(f).await;
    }
    // Short client timeouts so the delayed answers count as timeouts.
    let mut env = stack.env(winston::emulator::DEFAULT_TOKEN);
    for p in ["RAILWAY", "NEON", "VERCEL", "RESEND"] {
        env.push((format!("WINSTON_{p}_TIMEOUT_MS"), "1500".into()));
    }
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "s1", "");
    apply_tenant(&ns, "s2", "");
    let frontend = "  components:\n    database: {provider: Neon}\n    compute: {provider: Railway}\n    frontend:\n      \
                    provider: Vercel\n      gitRepository: {repo: storm/site, ref: main}\n";
    apply_tenant(&ns, "s3", frontend);

    for name in ["s1-0", "s2-0", "s3-0"] {
        ready(&ns, name, Duration::from_secs(180)).await;
    }
    let left: serde_json::Value =
        reqwest::get(format!("{}/_emulator/faults", stack.emu.base())).await.unwrap().json().await.unwrap();
    assert_eq!(left["faults"], json!([]), "faults never reached: {left}");
    for name in ["s1-0", "s2-0", "s3-0"] {
        let marker = marker_of(&ns, name).await;
        for (platform, kind) in [("neon", "project"), ("railway", "project"), ("railway", "service")] {
            assert_eq!(stack.count(platform, kind, &marker).await, 1, "{name}: {platform}/{kind}");
        }
    }
    let marker = marker_of(&ns, "s3-0").await;
    assert_eq!(stack.count("vercel", "project", &marker).await, 1, "{}", stack.objects().await);
    // Ready does not wait for the welcome email (a failed email never makes
    // an instance unready): under Resend's 2/s and the storm's send faults
    // the last one may still be retrying.
    let emails = eventually("three welcome emails", Duration::from_secs(60), || async {
        let v = stack.objects().await["resend"]["objects"]["email"].as_array().cloned().unwrap_or_default();
        (v.len() >= 3).then_some(v)
    })
    .await;
    let keys: std::collections::BTreeSet<String> = emails.iter().map(|e| e["idempotency_key"].to_string()).collect();
    assert_eq!((emails.len(), keys.len()), (3, 3), "exactly one welcome email per tenant: {emails:?}");
    eprintln!("requests per tenant to Ready through the fault storm: {}", stack.requests_per_tenant(3).await);
}

/// Drift checks of Ready instances draw on a platform's budget at background
/// priority: when the budget is short they give way, and the instance stays
/// Ready with no status written instead of flapping to Reconciling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_checks_yield_to_a_short_budget_without_touching_status() {
    let ns = TestNamespace::new("budget").await;
    let stack = Stack::start(0).await;
    let (ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "calm", "");
    ready(&ns, "calm-0", READY_WITHIN).await;
    ctl.kill();

    // Railway allows one request a second (a bucket of 4); a drift check
    // needs 2 and a pass comes every second, so some checks must give way.
    let env = stack.env_with(&[("WINSTON_RAILWAY_RATE_PER_MINUTE", "60"), ("WINSTON_RAILWAY_BURST", "4")]);
    let (_ctl, addr) = stack.controller_with(&ns.name, "a", &["--resync-seconds", "1"], &env);
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let rv = api.get("calm-0").await.unwrap().metadata.resource_version;
    let railway = |v: &serde_json::Value| v["railway"]["requests"].as_u64().unwrap();
    let passes = "winston_reconciles_total{kind=\"TenantInstance\"}";
    let (before, first) = (railway(&stack.objects().await), metric(&addr, passes).await);
    eventually("twelve drift passes", Duration::from_secs(60), || {
        let addr = addr.clone();
        async move { (metric(&addr, passes).await >= first + 12.0).then_some(()) }
    })
    .await;
    let spent = railway(&stack.objects().await) - before;
    let done = metric(&addr, passes).await - first;
    let ti = api.get("calm-0").await.unwrap();
    assert_eq!(ti.metadata.resource_version, rv, "a throttled drift check rewrote status: {:?}", ti.status);
    assert!(winston::api::conditions::is_true(&ti.status.unwrap().conditions, "Ready"));
    // Some checks were cut short by the budget (a full one makes 2 calls).
    assert!((spent as f64) < 1.5 * done, "{spent} Railway calls in {done} passes: nothing gave way");
}

/// A deletion is never starved by its neighbours polling their deployments.
/// Railway allows one request a second (a bucket of 4) and two instances
/// poll their building deployments every 200 ms (2 calls a pass, ten times
/// what the budget gives); one of them is deleted meanwhile. Its teardown
/// makes several calls per pass and restarts from the top when one is
/// refused: if the polls drew on the whole budget, the teardown would be
/// refused again and again (as it was, for minutes, under Railway's real
/// 16 a minute). Polls take a slot only while more than half the bucket is
/// left, so the teardown is never refused, the polls lose nothing, and the
/// neighbour still goes Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_neighbours_never_starve_a_deletion_of_its_budget() {
    let ns = TestNamespace::new("starve").await;
    // Deployments build for 15 s.
    let stack = Stack::start(15_000).await;
    let env = stack.env_with(&[("WINSTON_RAILWAY_RATE_PER_MINUTE", "60"), ("WINSTON_RAILWAY_BURST", "4")]);
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "gone", "");
    apply_tenant(&ns, "slow", "");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    // Both services exist and their steps wait on the deployment: from now
    // on their passes only poll. (Before, a neighbour whose poll was refused
    // recorded the refusal and converged at full priority again: the two
    // rarely settled there together.)
    let deploying = |name: &'static str| {
        let (api, ns, stack) = (api.clone(), &ns, &stack);
        async move {
            let ti = api.get_opt(name).await.ok()??;
            let step = ti.status?.steps.into_iter().find(|s| s.name == winston::api::StepName::Service)?;
            let polled = step.message?.starts_with("service: waiting for operation");
            let marker = marker_of(ns, name).await;
            (step.state == StepState::InProgress && polled && stack.count("railway", "service", &marker).await == 1)
                .then_some(marker)
        }
    };
    let marker = eventually("both deployments building", READY_WITHIN, || async {
        deploying("slow-0").await?;
        deploying("gone-0").await
    })
    .await;

    let history = support::History::of(&api, "gone-0").await;
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    tenants.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("gone-0 deleted", READY_WITHIN, || async { api.get_opt("gone-0").await.ok()?.is_none().then_some(()) })
        .await;
    for (platform, kind) in [("railway", "project"), ("railway", "service"), ("neon", "project")] {
        assert_eq!(stack.count(platform, kind, &marker).await, 0, "{platform}/{kind} left behind");
    }
    // What the teardown reported, in every status it wrote.
    let refused: Vec<String> = history
        .all()
        .into_iter()
        .flat_map(|ti| ti.status.map(|s| s.conditions).unwrap_or_default())
        .filter(|c| ["Deleting", "DeleteBlocked"].contains(&c.reason.as_str()) && c.message.contains("rate limited"))
        .map(|c| c.message)
        .collect();
    assert!(refused.is_empty(), "the teardown was refused by the budget: {refused:?}");
    ready(&ns, "slow-0", READY_WITHIN).await;
}

/// Annotating an instance with `winston.dev/rotate-credentials=<any new
/// value>` rotates its API key and gateway token: the Secret gets new ones,
/// the new key is registered and the old one revoked; a new value rotates again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotation_rotates_the_credentials_once() {
    let ns = TestNamespace::new("rotate").await;
    let stack = Stack::start(0).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "rot", "");
    let ti = ready(&ns, "rot-0", READY_WITHIN).await;
    let secret = ti.status.unwrap().credentials_secret_ref.unwrap().name;
    let old = secret_value(&ns, &secret, "WINSTON_API_KEY").await;

    let annotate = |value: &str| {
        let out = ns
            .kubectl(&[
                "annotate",
                "--overwrite",
                "tenantinstance",
                "rot-0",
                &format!("{}={value}", winston::engine::credentials::ROTATE_ANNOTATION),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    annotate("r1");
    let new = eventually("a new key in the Secret", READY_WITHIN, || {
        let (ns, secret, old) = (&ns, secret.clone(), old.clone());
        async move {
            let key = secret_value(ns, &secret, "WINSTON_API_KEY").await;
            (key != old).then_some(key)
        }
    })
    .await;
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let hashes = |keys: Vec<winston::ledger::keys::ActiveKey>| keys.into_iter().map(|k| k.hash).collect::<Vec<_>>();
    let active = hashes(ledger.active_keys().await.unwrap());
    assert!(active.contains(&winston::ledger::keys::hash_key(&new)), "the new key is not registered");
    assert!(!active.contains(&winston::ledger::keys::hash_key(&old)), "the old key was not revoked");
    ready(&ns, "rot-0", READY_WITHIN).await;

    // A new value rotates again.
    annotate("r2");
    eventually("another new key in the Secret", READY_WITHIN, || {
        let (ns, secret, new) = (&ns, secret.clone(), new.clone());
        async move { (secret_value(ns, &secret, "WINSTON_API_KEY").await != new).then_some(()) }
    })
    .await;
}

/// The instance's own writes of its credentials Secret do not start
/// another pass (the provisioning benchmark shows one pass per instance,
/// two before), but a Secret deleted or edited by someone else still does:
/// repaired within seconds, long before the ten-minute resync. Once
/// deleted (a new key, registered, the old one revoked), then with a key
/// removed by hand (the same key back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_secret_deleted_or_edited_by_hand_is_repaired_at_once() {
    let ns = TestNamespace::new("secret-repair").await;
    let stack = Stack::start(0).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "sr", "");
    let ti = ready(&ns, "sr-0", READY_WITHIN).await;
    let secret = ti.status.unwrap().credentials_secret_ref.unwrap().name;
    let old = secret_value(&ns, &secret, "WINSTON_API_KEY").await;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);

    secrets.delete(&secret, &Default::default()).await.unwrap();
    let new = eventually("the deleted Secret back", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        let secret = secret.clone();
        async move {
            let s = secrets.get_opt(&secret).await.ok()??;
            Some(String::from_utf8(s.data?.get("WINSTON_API_KEY")?.0.clone()).unwrap())
        }
    })
    .await;
    assert_ne!(new, old, "a re-created Secret carries a new key");
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let active: Vec<_> = ledger.active_keys().await.unwrap().into_iter().map(|k| k.hash).collect();
    assert!(active.contains(&winston::ledger::keys::hash_key(&new)), "the new key is not registered");
    assert!(!active.contains(&winston::ledger::keys::hash_key(&old)), "the old key was not revoked");

    let patch = serde_json::json!({"data": {"DATABASE_URL": null}});
    secrets.patch(&secret, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    eventually("the removed key back", Duration::from_secs(30), || {
        let secrets = secrets.clone();
        let secret = secret.clone();
        async move {
            let data = secrets.get(&secret).await.ok()?.data?;
            data.contains_key("DATABASE_URL").then_some(())
        }
    })
    .await;
    assert_eq!(secret_value(&ns, &secret, "WINSTON_API_KEY").await, new, "an edit keeps the key");
}

/// Defect 8 of issue 10: a crash between "new key written" and "old key
/// revoked" left the old key valid forever. Every pass now revokes every key
/// of the instance other than the one in its Secret; and a Secret key the
/// ledger can no longer use (revoked behind Winston's back) is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pass_revokes_stray_keys_and_replaces_an_unusable_one() {
    use winston::ledger::keys::{generate_key, hash_key};
    let ns = TestNamespace::new("stray").await;
    let stack = Stack::start(0).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);
    apply_tenant(&ns, "tidy", "");
    let ti = ready(&ns, "tidy-0", READY_WITHIN).await;
    let secret = ti.status.unwrap().credentials_secret_ref.unwrap().name;
    let current = secret_value(&ns, &secret, "WINSTON_API_KEY").await;
    let account = tenant_account(&ns, "tidy").await;
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let active = || async { ledger.active_keys().await.unwrap().into_iter().map(|k| k.hash).collect::<Vec<_>>() };
    assert!(active().await.contains(&hash_key(&current)));

    // The state a crash mid-rotation leaves: a second active key under the
    // instance's name in the same account (and one of another name, which
    // is not the instance's business).
    let stray = generate_key();
    ledger.register_key(&account, "tidy-0", &stray).await.unwrap();
    let other = generate_key();
    ledger.register_key(&account, "tidy-console", &other).await.unwrap();
    assert!(active().await.contains(&hash_key(&stray)));
    eventually("the stray key revoked by a pass", READY_WITHIN, || async {
        (!active().await.contains(&hash_key(&stray))).then_some(())
    })
    .await;
    let now = active().await;
    assert!(now.contains(&hash_key(&current)), "the Secret's key must stay active");
    assert!(now.contains(&hash_key(&other)), "a key of another name was revoked");
    assert_eq!(secret_value(&ns, &secret, "WINSTON_API_KEY").await, current, "the Secret's key changed");

    // The Secret's key revoked behind Winston's back (say it leaked): the
    // instance gets a new one instead of failing every pass.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(&hash_key(&current)[..])
        .execute(ledger.pool())
        .await
        .unwrap();
    let replaced = eventually("a new key in the Secret", READY_WITHIN, || {
        let (ns, secret, current) = (&ns, secret.clone(), current.clone());
        async move {
            let key = secret_value(ns, &secret, "WINSTON_API_KEY").await;
            (key != current).then_some(key)
        }
    })
    .await;
    eventually("the new key registered", READY_WITHIN, || async {
        active().await.contains(&hash_key(&replaced)).then_some(())
    })
    .await;
    assert!(!active().await.contains(&hash_key(&current)));
}

/// An instance that no Tenant controls cannot bill anybody: its credentials
/// step stalls with a clear reason and no key is registered for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_a_tenant_owner_registers_no_key() {
    let ns = TestNamespace::new("ownerless").await;
    let stack = Stack::start(0).await;
    let (_ctl, _) = stack.controller(&ns.name, "a", &[]);
    let yaml = "apiVersion: winston.dev/v1alpha1\nkind: TenantInstance\nmetadata:\n  name: stray-0\nspec:\n  \
                tenantRef: {name: stray}\n  ordinal: 0\n  plan: starter\n  \
                profile: {displayName: Stray, contactEmail: ops@stray.example}\n";
    let (ok, out) = support::run_with_stdin(ns.kubectl(&["apply", "-f", "-"]), yaml);
    assert!(ok, "kubectl apply: {out}");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let stalled = eventually("the instance stalls for want of a Tenant", READY_WITHIN, || async {
        let st = api.get("stray-0").await.ok()?.status?;
        let c = winston::api::conditions::find(&st.conditions, "Stalled")?.clone();
        (c.status == "True" && c.reason == "NoTenantOwner").then_some(c)
    })
    .await;
    assert!(stalled.message.contains("Tenant"), "{}", stalled.message);
    let ledger = winston::ledger::Ledger::connect(&stack.control_db, 1).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM api_keys WHERE name = 'stray-0'").fetch_one(ledger.pool()).await.unwrap();
    assert_eq!(n, 0, "a key was registered for an instance nobody pays for");
}

/// Audit: a Neon region and an agent image the platforms refuse reached
/// Ready on the emulator. Now the emulator refuses them as the platforms do
/// and the instance stalls (`Rejected`, phase Failed) with the platform's
/// message naming the value, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_or_image_the_platform_refuses_stalls_the_instance() {
    let ns = TestNamespace::new("refused").await;
    let stack = Stack::start(50).await;
    let _ctl = stack.controller(&ns.name, "a", &[]);
    apply_tenant(&ns, "mars", "  components:\n    database: {region: mars-north-1}\n");
    apply_tenant(&ns, "badimg", "  components:\n    compute: {image: \"a::b@@c:\"}\n");
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    for (name, step, value) in [("mars-0", "database", "mars-north-1"), ("badimg-0", "service", "a::b@@c:")] {
        let (stalled, phase) = eventually(&format!("{name} Stalled"), READY_WITHIN, || {
            let api = api.clone();
            async move {
                let st = api.get(name).await.ok()?.status?;
                let c = st.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?.clone();
                Some((c, st.phase))
            }
        })
        .await;
        assert_eq!(stalled.reason, "Rejected", "{stalled:?}");
        assert!(stalled.message.contains(step) && stalled.message.contains(value), "{}", stalled.message);
        assert_eq!(phase, Some(winston::api::Phase::Failed));
    }
}
