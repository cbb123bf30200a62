//! `winston emulator` as a process: it prints the base URLs, serves the
//! platforms and the mock LLM upstreams, stops on SIGTERM, and its state
//! file carries objects across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use winston::providers::railway::resources::{RailwayProjectSpec, RailwayProjects};
use winston::providers::{ExternalResource, Marker, Observation, Providers, ProvidersConfig};

const TOKEN: &str = "process-test-token";

/// Starts the emulator and returns it with the printed `NAME=url` lines.
fn start(state: &std::path::Path) -> (Child, Vec<(String, String)>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--token", TOKEN, "--async-delay-ms", "0", "--state-file"])
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut vars = Vec::new();
    loop {
        let line = lines.next().expect("emulator exited before it was ready").unwrap();
        if line.starts_with("# winston emulator ready") {
            break;
        }
        let (k, v) = line.split_once('=').unwrap();
        vars.push((k.to_string(), v.to_string()));
    }
    (child, vars)
}

fn var<'a>(vars: &'a [(String, String)], name: &str) -> &'a str {
    &vars.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("{name} not printed")).1
}

/// The clients pointed at the printed `WINSTON_<PLATFORM>_BASE_URL`s.
fn config(vars: &[(String, String)]) -> ProvidersConfig {
    let mut c = ProvidersConfig::with_base_urls(
        |p| var(vars, &format!("WINSTON_{}_BASE_URL", p.as_str().to_uppercase())).to_string(),
        TOKEN,
    );
    c.supabase_organization = Some("winston-emulator".into());
    c
}

fn stop(mut child: Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "emulator exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("emulator ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serves_prints_urls_stops_on_sigterm_and_keeps_state_across_restarts() {
    winston::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (child, vars) = start(&state);
    for name in [
        "WINSTON_RAILWAY_BASE_URL",
        "WINSTON_NEON_BASE_URL",
        "WINSTON_VERCEL_BASE_URL",
        "WINSTON_SUPABASE_BASE_URL",
        "WINSTON_RESEND_BASE_URL",
        "WINSTON_MOCK_ANTHROPIC_BASE_URL",
        "WINSTON_MOCK_OPENAI_BASE_URL",
    ] {
        assert!(var(&vars, name).starts_with("http://127.0.0.1:"), "{name}");
    }

    let marker = Marker::new(&uuid::Uuid::new_v4().to_string());
    let spec = RailwayProjectSpec { marker };
    let projects = RailwayProjects(Providers::new(&config(&vars)).unwrap().railway);
    let id = projects.create(&spec).await.unwrap().id;

    // The mock LLM upstream answers on the same port.
    let http = reqwest::Client::new();
    let r: serde_json::Value = http
        .post(format!("{}/v1/messages", var(&vars, "WINSTON_MOCK_ANTHROPIC_BASE_URL")))
        .json(&serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["usage"]["output_tokens"], 5, "{r}");
    stop(child);

    // A restarted emulator still has the project; the client adopts it.
    let (child, vars) = start(&state);
    let projects = RailwayProjects(Providers::new(&config(&vars)).unwrap().railway);
    assert_eq!(projects.observe(&spec, None).await.unwrap().id(), Some(id.as_str()));
    assert!(matches!(projects.observe(&spec, Some(&id)).await.unwrap(), Observation::Ready { .. }));
    stop(child);
}
