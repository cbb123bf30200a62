//! `make demo-checkout` as CI would run it (`DEMO_EXIT=1`): a paid emulated
//! checkout becomes a Ready Tenant, the welcome email is shown, the upgrade
//! lands in place, the cancellation leaves no platform object and keeps the
//! ledger's account and usage, and the script exits 0 after stopping
//! everything it started.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_checkout_journey_runs_from_payment_to_cancellation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/demo-checkout"))
        .env("DEMO_EXIT", "1")
        .env("WINSTON_BIN", env!("CARGO_BIN_EXE_winston"))
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo-checkout failed:\n{stdout}\n{stderr}");
    for want in [
        "checkout to Ready in",
        "Subject: ",
        "To:      owner@acme-dental.example",
        "plan growth",
        "No resources found in demo namespace.",
        "checkout.session.completed | created",
        "customer.subscription.updated | updated",
        "customer.subscription.deleted | deleted",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    for platform in ["neon", "railway", "vercel", "supabase"] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(platform) && l.split_whitespace().count() == 2);
        assert_eq!(line.and_then(|l| l.split_whitespace().nth(1)), Some("0"), "{platform} objects left:\n{stdout}");
    }
    // The account row and the metered call outlive the Tenant.
    let usage = stdout.lines().skip_while(|l| !l.starts_with("usage_records")).nth(1).unwrap_or_default();
    let billed: Vec<i64> = usage.split(" | ").filter_map(|v| v.trim().parse().ok()).collect();
    assert!(billed.len() == 2 && billed[0] == 1 && billed[1] > 0, "usage after cancellation: {usage:?}\n{stdout}");
}
