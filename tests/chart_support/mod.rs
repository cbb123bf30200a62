//! Helpers of the chart tests: helm (found or built by `scripts/helm-path`)
//! with its state kept out of the user's home, rendering, installing, and
//! running commands with their output captured.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{TestNamespace, control_plane, root};

/// The helm binary (`scripts/helm-path`: installed, cached or built once).
pub fn helm_bin() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(root().join("scripts/helm-path")).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "scripts/helm-path failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// helm with its state directories kept out of the user's home.
pub fn helm(args: &[&str]) -> Command {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap()).path();
    let mut c = Command::new(helm_bin());
    c.current_dir(root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args);
    c
}

/// Runs `cmd` (optionally feeding `stdin`); returns (success, stdout + stderr).
pub fn run(mut cmd: Command, stdin: Option<&str>) -> (bool, String) {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `helm template` of the chart into `namespace` with extra `--set` values
/// (an entry starting with `--` is passed as is, e.g. `--set-string=k=v`).
pub fn render(namespace: &str, sets: &[&str]) -> String {
    render_release("winston", namespace, sets)
}

/// As [`render`], for the release called `release`.
pub fn render_release(release: &str, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", release, "charts/winston", "--namespace", namespace];
    for s in sets {
        if s.starts_with("--") {
            args.push(s);
        } else {
            args.extend(["--set", s]);
        }
    }
    let (ok, out) = run(helm(&args), None);
    assert!(ok, "helm template {sets:?} failed:\n{out}");
    out
}

/// The documents of a multi-document YAML stream (empty ones dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).unwrap().into_iter().filter(|v| !v.is_null()).collect()
}

pub fn kind_name(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_string(),
        doc["metadata"]["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// `kubectl apply --dry-run=server` of `yaml` into `ns`.
pub fn dry_run(ns: &TestNamespace, yaml: &str) -> (bool, String) {
    run(ns.kubectl(&["apply", "--dry-run=server", "-f", "-"]), Some(yaml))
}

/// Installs the chart as `release` into `ns` with `sets`; returns the output.
pub fn install(release: &str, ns: &str, sets: &[&str]) -> String {
    let kubeconfig = control_plane().kubeconfig.display().to_string();
    let mut args = vec!["install", release, "charts/winston", "--namespace", ns, "--kubeconfig", &kubeconfig];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, out) = run(helm(&args), None);
    assert!(ok, "helm install {release} {sets:?} failed:\n{out}");
    out
}
