//! `make demo` as CI runs it (`DEMO_EXIT=1`): the whole system comes up,
//! the example Tenant goes Ready, one LLM call is metered, a chat with the
//! tenant's real agent is answered, metered and transcribed, the tenant's
//! website profile and configuration history are shown, and the script
//! exits 0 after stopping everything it started.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_demo_reaches_ready_meters_a_call_and_exits_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/demo"))
        .env("DEMO_EXIT", "1")
        .env("WINSTON_BIN", env!("CARGO_BIN_EXE_winston"))
        .current_dir(root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("is Ready in namespace demo"), "{stdout}");
    let credits = stdout.lines().find(|l| l.trim_start().starts_with("Credits:")).unwrap();
    let nums: Vec<i64> = credits.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.len(), 2, "{credits}");
    assert!(nums[1] < nums[0], "credits did not go down: {credits}");
    // The customer's exchange with the real agent, metered and transcribed.
    let reply = stdout.lines().find(|l| l.trim_start().starts_with("Agent reply:")).unwrap();
    assert!(reply.contains("round trip"), "{reply}");
    let agent = stdout.lines().find(|l| l.trim_start().starts_with("Agent credits:")).unwrap();
    let nums: Vec<i64> = agent.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert!(nums.len() == 2 && nums[1] < nums[0], "the agent's call was not metered: {agent}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("user ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("assistant ")), "{stdout}");
    // The example Tenant was profiled from the emulator's sample site, and
    // the point-of-sale connector the demo adds is one more kept version.
    let line = |prefix: &str| stdout.lines().find(|l| l.trim_start().starts_with(prefix)).unwrap_or_default();
    assert!(line("Profile:").contains("Green Leaf Dispensary (cannabis"), "{stdout}");
    assert!(line("Analysis:").contains("through the proxy on the system account"), "{stdout}");
    assert!(line("Skills:").contains("social-media"), "{stdout}");
    assert!(stdout.contains("Configuration history of demo/green-leaf-0: 2 version(s) kept"), "{stdout}");
    assert!(line("Last change:").contains("skills/inventory-lookup/SKILL.md"), "{stdout}");
}
