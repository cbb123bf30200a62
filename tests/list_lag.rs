//! Eventually consistent project lists against the crash-safety protocol: a
//! create whose answer is lost is searched for by marker, and the search
//! may not list the new project yet. The engine waits out the list settle
//! window before creating again, so the platform ends with one project,
//! and without the window (the test that proves this one can fail) with two.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod provisioning_support;
mod support;

use std::time::Duration;

use provisioning_support::{Stack, apply_tenant, ready};
use serde_json::json;
use support::TestNamespace;
use winston::api::TenantInstance;
use winston::emulator::EmulatorConfig;

const WITHIN: Duration = Duration::from_secs(120);
/// Longer than the first retry after a failed pass (1-1.2 s) plus a pass.
const LAG_MS: u64 = 4000;

fn marker(ti: &TenantInstance) -> String {
    let uid = ti.metadata.uid.clone().unwrap();
    format!("wn-{}", uid.replace('-', "").get(..12).unwrap())
}

/// Provisions one tenant whose Neon and Railway project creates lose their
/// answers, on lists that lag `LAG_MS`, with `settle` seconds of list
/// settle window; returns (Neon projects, Railway projects) with its marker.
async fn lost_creates_with_settle(ns: &str, settle: &str) -> (usize, usize) {
    let ns = TestNamespace::new(ns).await;
    let stack =
        Stack::start_with(EmulatorConfig { async_delay_ms: 50, list_lag_ms: LAG_MS, ..EmulatorConfig::default() })
            .await;
    for platform_op in [("neon", "createProject"), ("railway", "projectCreate")] {
        stack.fault(json!({"platform": platform_op.0, "operation": platform_op.1, "kind": "drop_response"})).await;
    }
    let env = stack.env_with(&[("WINSTON_LIST_SETTLE_SECONDS", settle)]);
    let (_ctl, _) = stack.controller_with(&ns.name, "a", &[], &env);
    apply_tenant(&ns, "laggy", "");
    let ti = ready(&ns, "laggy-0", WITHIN).await;
    let marker = marker(&ti);
    assert_eq!(
        stack.fault_count().await,
        0,
        "every dropped answer was consumed (the creates really lost their answers)"
    );
    (stack.count("neon", "project", &marker).await, stack.count("railway", "project", &marker).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_on_a_lagging_list_is_adopted_not_duplicated() {
    let (neon, railway) = lost_creates_with_settle("lagok", "8").await;
    assert_eq!((neon, railway), (1, 1), "one Neon and one Railway project");
}

/// The same run with no settle window duplicates both projects: the search
/// right after the lost answer finds nothing and the engine creates again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_settle_window_the_lagging_list_duplicates() {
    let (neon, railway) = lost_creates_with_settle("lagdup", "0").await;
    assert_eq!((neon, railway), (2, 2), "the duplicates the settle window prevents");
}
