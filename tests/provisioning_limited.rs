//! The crash and fault storm of tests/provisioning.rs again, where the
//! platforms push back: the emulator enforces its published per-platform
//! limits (429 with the platform's headers and Retry-After), project lists
//! lag behind creates, and answers to creates are lost. What must still
//! hold, counted at the platforms: one project (and service) per tenant,
//! nothing left after teardown, no request sent before a window the
//! platform named had reset, and a bounded number of requests per tenant.
//!
//! Also Vercel's per-day deployment budget: once spent, a tenant reports
//! it and the client stops asking until the day resets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use kube::Api;
use kube::api::DeleteParams;
use provisioning_support::{Stack, apply_tenant, metric, ready};
use serde_json::{Value, json};
use support::{TestNamespace, eventually};
use winston::api::{Tenant, TenantInstance};
use winston::emulator::EmulatorConfig;
use winston::emulator::limits::{PlatformLimits, RailwayPlan, VERCEL_DAILY_DEPLOYMENTS, VercelPlan};

/// Projects created less than this ago are not listed yet.
const LIST_LAG_MS: u64 = 1500;

const FRONTEND: &str = "  components:\n    database: {provider: Neon}\n    compute: {provider: Railway}\n    frontend:\n      \
                        provider: Vercel\n      gitRepository: {repo: storm/site, ref: main}\n";

/// The emulator's default published limits, with Railway on its Free plan
/// (100 requests an hour) and that hour scaled to 20 seconds, so that
/// twelve tenants spend Railway's budget several times and wait for its
/// reset (up to 20 s) within the test; a client that did not honour
/// Retry-After would send into the refused window over and over.
fn limited(async_delay_ms: u64) -> EmulatorConfig {
    let limits = PlatformLimits { railway_plan: RailwayPlan::Free, railway_hour_s: 20, ..PlatformLimits::default() };
    EmulatorConfig { async_delay_ms, limits, list_lag_ms: LIST_LAG_MS, ..EmulatorConfig::default() }
}

/// The controller environment for a lagging emulator: a list settle window
/// longer than the lag, so a lost create is searched for once it is listed.
fn lagging_env(stack: &Stack) -> Vec<(String, String)> {
    stack.env_with(&[("WINSTON_LIST_SETTLE_SECONDS", &(LIST_LAG_MS / 1000 + 2).to_string())])
}

async fn marker_of(ns: &TestNamespace, name: &str) -> String {
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let uid = api.get(name).await.unwrap().metadata.uid.unwrap();
    format!("wn-{}", uid.replace('-', "").get(..12).unwrap())
}

/// `limits.<platform>.<limit>` of the emulator's objects: (refused, early).
fn refusals(objects: &Value, platform: &str, limit: &str) -> (u64, u64) {
    let c = &objects["limits"][platform][limit];
    (c["refused"].as_u64().unwrap_or(0), c["early"].as_u64().unwrap_or(0))
}

/// Every limit that refused something: (platform, limit, refused, early).
fn all_refusals(objects: &Value) -> Vec<(String, String, u64, u64)> {
    let mut out = Vec::new();
    for (platform, limits) in objects["limits"].as_object().into_iter().flatten() {
        for (limit, c) in limits.as_object().into_iter().flatten() {
            out.push((
                platform.clone(),
                limit.clone(),
                c["refused"].as_u64().unwrap_or(0),
                c["early"].as_u64().unwrap_or(0),
            ));
        }
    }
    out
}

/// Requests per tenant per platform, as numbers.
async fn per_tenant(stack: &Stack, tenants: usize) -> Vec<(&'static str, f64)> {
    let v = stack.objects().await;
    ["railway", "neon", "vercel", "resend"]
        .into_iter()
        .map(|p| (p, v[p]["requests"].as_f64().unwrap_or(0.0) / tenants as f64))
        .collect()
}

/// Twelve tenants (four with a Vercel frontend) under the published limits
/// and lagging lists, with the fault storm's faults (creates whose answers
/// are lost, 5xx, Neon 423, answers outlasting the client timeout, failed
/// deployments) and five SIGKILLs of the controller: each converges to exactly one object of each kind,
/// the platforms' 429s are honoured (no request inside a window already
/// refused, beyond one per fresh process), and teardown leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_fault_storm_under_published_limits_and_lagging_lists_converges_once() {
    const TENANTS: usize = 12;
    const KILLS: u64 = 5;
    let ns = TestNamespace::new("limstorm").await;
    let stack = Stack::start_with(limited(500)).await;
    for f in [
        json!({"platform": "railway", "operation": "projectCreate", "kind": "drop_response", "count": 2}),
        json!({"platform": "railway", "operation": "serviceCreate", "kind": "drop_response"}),
        json!({"platform": "neon", "operation": "createProject", "kind": "drop_response", "count": 2}),
        json!({"platform": "vercel", "operation": "createProject", "kind": "drop_response"}),
        json!({"platform": "railway", "operation": "serviceCreate", "kind": "server_error", "status": 503}),
        json!({"platform": "railway", "operation": "serviceInstanceDeployV2", "kind": "delay", "delay_ms": 2500}),
        json!({"platform": "railway", "kind": "fail_deployment"}),
        json!({"platform": "neon", "operation": "getConnectionUri", "kind": "locked", "count": 3}),
        json!({"platform": "neon", "operation": "getProject", "kind": "delay", "delay_ms": 2500}),
        json!({"platform": "vercel", "operation": "createEnv", "kind": "server_error", "status": 500}),
        json!({"platform": "vercel", "kind": "fail_deployment"}),
        json!({"platform": "resend", "operation": "sendEmail", "kind": "drop_response"}),
    ] {
        stack.fault(f).await;
    }
    let mut env = lagging_env(&stack);
    // Short client timeouts so the delayed answers count as timeouts.
    for p in ["RAILWAY", "NEON", "VERCEL"] {
        env.push((format!("WINSTON_{p}_TIMEOUT_MS"), "1500".into()));
    }
    let (mut ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    let frontend = |i: usize| i.is_multiple_of(3);
    for i in 0..TENANTS {
        apply_tenant(&ns, &format!("l{i}"), if frontend(i) { FRONTEND } else { "" });
    }
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    for round in 0..KILLS {
        let before = stack.mutations().await;
        let more = 2 + (round * 5 + 1) % 5;
        eventually(&format!("round {round}: platform writes before the kill"), Duration::from_secs(120), || {
            let stack = &stack;
            async move { (stack.mutations().await >= before + more).then_some(()) }
        })
        .await;
        ctl.kill();
        ctl = stack.controller_with(&ns.name, "a", &[], &env).0;
    }
    for i in 0..TENANTS {
        ready(&ns, &format!("l{i}-0"), Duration::from_secs(240)).await;
    }
    assert_eq!(stack.fault_count().await, 0, "faults never reached");
    for i in 0..TENANTS {
        let marker = marker_of(&ns, &format!("l{i}-0")).await;
        let mut kinds = vec![("neon", "project"), ("railway", "project"), ("railway", "service")];
        if frontend(i) {
            kinds.push(("vercel", "project"));
        }
        for (platform, kind) in kinds {
            assert_eq!(
                stack.count(platform, kind, &marker).await,
                1,
                "l{i}: {platform}/{kind}: {}",
                stack.objects().await
            );
        }
    }
    let costs = per_tenant(&stack, TENANTS).await;
    eprintln!("requests per tenant to Ready under published limits, lag and {KILLS} SIGKILLs: {costs:?}");
    let objects = stack.objects().await;
    let (railway_refused, _) = refusals(&objects, "railway", "plan");
    assert!(railway_refused > 0, "Railway's limits never pushed back: the storm proves nothing: {}", objects["limits"]);
    // A process learns a window's reset from its first refusal; only a
    // fresh one (after each kill) may send into a window already refused.
    for (platform, limit, refused, early) in all_refusals(&objects) {
        eprintln!("{platform}/{limit}: {refused} refused, {early} sent before the announced reset");
        assert!(early <= KILLS + 1, "{platform}/{limit}: {early} requests sent into a refused window");
    }
    // Without limits and lag this storm costs about 12 Railway, 21 Neon and
    // 6 Vercel requests per tenant (run with `PlatformLimits::none()`); the
    // bounds allow about four times that, which a client retrying 429s in a
    // loop would exceed many times over.
    for (platform, bound) in [("railway", 50.0), ("neon", 90.0), ("vercel", 25.0)] {
        let spent = costs.iter().find(|c| c.0 == platform).unwrap().1;
        assert!(spent < bound, "{platform}: {spent:.1} requests per tenant (bound {bound})");
    }

    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    for i in 0..TENANTS {
        tenants.delete(&format!("l{i}"), &DeleteParams::default()).await.unwrap();
    }
    eventually("every tenant gone", Duration::from_secs(240), || {
        let tenants = tenants.clone();
        async move { tenants.list(&Default::default()).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(stack.total_objects().await, 0, "left behind: {}", stack.objects().await);
    // Teardown ran under the same limits.
    for (platform, limit, refused, early) in all_refusals(&stack.objects().await) {
        eprintln!("after teardown {platform}/{limit}: {refused} refused, {early} sent before the announced reset");
        assert!(early <= KILLS + 1, "{platform}/{limit}: {early} requests sent into a refused window");
    }
    drop(api);
}

/// Vercel's day of deployments spent (Hobby, 402
/// `api-deployments-free-per-day`): the instance says so in its conditions
/// instead of retrying, and however many passes run, the client sends no
/// second deployment until the day resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_day_of_vercel_deployments_is_reported_and_not_retried() {
    let ns = TestNamespace::new("vday").await;
    let limits = PlatformLimits {
        vercel_plan: VercelPlan::Hobby,
        vercel_deployments_per_day: Some(0),
        ..PlatformLimits::none()
    };
    let stack = Stack::start_with(EmulatorConfig { async_delay_ms: 50, limits, ..EmulatorConfig::default() }).await;
    let (_ctl, addr) = stack.controller(&ns.name, "a", &["--resync-seconds", "1"]);
    apply_tenant(&ns, "day", FRONTEND);
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let cond = eventually("a condition naming the spent day", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let st = api.get("day-0").await.ok()?.status?;
            let found = st.conditions.iter().any(|c| c.message.contains("api-deployments-free-per-day"));
            found.then_some(st.conditions)
        }
    })
    .await;
    eprintln!("conditions: {cond:#?}");
    assert!(cond.iter().any(|c| c.type_ == "Ready" && c.status == "False" && c.message.contains("retry in")));
    // Passes forced by changes to the instance meet the spent quota too.
    let passes = "winston_reconciles_total{kind=\"TenantInstance\"}";
    let first = metric(&addr, passes).await;
    let mut poke = 0;
    eventually("five more passes", Duration::from_secs(60), || {
        poke += 1;
        let out = ns
            .kubectl(&["annotate", "--overwrite", "tenantinstance", "day-0", &format!("winston-test/poke={poke}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let addr = addr.clone();
        async move { (metric(&addr, passes).await >= first + 5.0).then_some(()) }
    })
    .await;
    let objects = stack.objects().await;
    let (refused, _) = refusals(&objects, "vercel", VERCEL_DAILY_DEPLOYMENTS);
    assert_eq!(refused, 1, "the client asked again before the day reset: {}", objects["limits"]);
    assert!(objects["vercel"]["objects"]["deployment"].as_array().is_none_or(Vec::is_empty));
}
