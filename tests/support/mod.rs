//! Shared harness of the integration tests: one real control plane
//! (etcd + kube-apiserver built by `tests/controlplane`) per test binary,
//! the CRDs installed once, a fresh namespace per test, state dumped when
//! a test fails, and every process cleaned up even when a test panics
//! (the control plane's watchdog follows this process).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Resource};
use kube::{Client, Config};
use serde::de::DeserializeOwned;

/// The control plane of this test binary.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// Project root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts (once per test binary) the control plane and installs the CRDs.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        winston::telemetry::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("winston-cp-{}", uuid::Uuid::new_v4().simple()));
        let out = Command::new(root().join("tests/controlplane/up.sh"))
            .arg(&dir)
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/controlplane/up.sh");
        assert!(out.status.success(), "control plane failed to start");
        let kubeconfig = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let cp = ControlPlane { dir, kubeconfig };
        let apply = cp
            .kubectl(&["apply", "--server-side", "--field-manager=winston-tests", "-f"])
            .arg(root().join("crds"))
            .output()
            .unwrap();
        assert!(apply.status.success(), "install CRDs: {}", String::from_utf8_lossy(&apply.stderr));
        let wait =
            cp.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]).output().unwrap();
        assert!(wait.status.success(), "CRDs not Established: {}", String::from_utf8_lossy(&wait.stderr));
        cp
    })
}

impl ControlPlane {
    /// A kubectl command pointed at this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl_bin());
        c.env("KUBECONFIG", &self.kubeconfig).args(args);
        c
    }

    /// A fresh client (clients are bound to the runtime that uses them, so
    /// each test makes its own).
    pub async fn client(&self) -> Client {
        let kc = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
        Client::try_from(config).unwrap()
    }
}

/// kubectl to use: `$KUBECTL`, else the newest versioned kubectl beside the
/// one on PATH (the machines ship several), else `kubectl`.
pub fn kubectl_bin() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return PathBuf::from(k);
    }
    let out = Command::new(root().join("scripts/kubectl-path")).output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => PathBuf::from("kubectl"),
    }
}

/// A namespace for one test; dumps everything in it when the test panics.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>`.
    pub async fn new(prefix: &str) -> Self {
        let cp = control_plane();
        let client = cp.client().await;
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        api.create(&Default::default(), &ns).await.unwrap();
        Self { name, client }
    }

    /// kubectl in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = control_plane().kubectl(args);
        c.args(["-n", &self.name]);
        c
    }

    /// Prints every Winston object, Secret name, Lease and Event of the namespace.
    pub fn dump(&self) {
        eprintln!("=== state of namespace {} ===", self.name);
        for what in ["winston", "leases", "events"] {
            if let Ok(o) = self.kubectl(&["get", what, "-o", "yaml"]).output() {
                eprintln!(
                    "--- {what} ---\n{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes (then panics
/// with `what`). The interval is short; the deadline is what bounds a test.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `winston` process (the real binary) that is killed when dropped.
pub struct Winston {
    pub child: Child,
    pub log: PathBuf,
}

impl Winston {
    /// Starts `winston <args>` against the test control plane, logging to a file.
    pub fn spawn(args: &[&str], log_name: &str) -> Self {
        Self::spawn_with_env(args, &[], log_name)
    }

    /// Like [`Winston::spawn`] with extra environment variables; the log
    /// file is appended to, so restarts of one role share one log.
    pub fn spawn_with_env(args: &[&str], env: &[(String, String)], log_name: &str) -> Self {
        let cp = control_plane();
        let log = cp.dir.join(format!("{log_name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_winston"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info,winston=debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Sends SIGKILL and waits: a crash at an arbitrary instant.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "winston did not stop within 30 s of SIGTERM:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Winston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("=== log of {} ===\n{}", self.log.display(), self.logs());
        }
    }
}

/// Starts `winston controller` restricted to `ns`, with its own lease and a
/// free probe port. Returns the process and the probe address.
pub fn controller(ns: &str, identity: &str, extra: &[&str]) -> (Winston, String) {
    let port = winston::devenv::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut args =
        vec!["controller", "--namespace", ns, "--lease-namespace", ns, "--metrics-addr", &addr, "--identity", identity];
    args.extend_from_slice(extra);
    (Winston::spawn(&args, &format!("controller-{ns}-{identity}")), addr)
}

/// Runs `cmd` with `input` on its stdin; returns (success, stdout + stderr).
pub fn run_with_stdin(mut cmd: Command, input: &str) -> (bool, String) {
    use std::io::Write as _;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Reads a file under the project root.
pub fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// Every version of one object the API server showed from now on, as a
/// watch delivers them (nothing is skipped between two polls).
pub struct History<K> {
    seen: Arc<Mutex<Vec<K>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> History<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    pub async fn of(api: &Api<K>, name: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (into, stream) = (seen.clone(), watcher(api.clone(), config));
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event {
                    into.lock().unwrap().push(o);
                }
            }
        });
        let history = Self { seen, task };
        eventually(&format!("the watch of {name} to start"), Duration::from_secs(60), || async {
            (!history.all().is_empty()).then_some(())
        })
        .await;
        history
    }

    pub fn all(&self) -> Vec<K> {
        self.seen.lock().unwrap().clone()
    }
}

impl<K> Drop for History<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `apiserver_request_total` series: what the API server itself counted.
pub struct ApiRequestCount {
    pub verb: String,
    pub resource: String,
    /// The HTTP status code (empty when the series has none).
    pub code: String,
    pub count: u64,
}

/// The API server's own request counts (`apiserver_request_total` from its
/// `/metrics`): what tests and the provisioning benchmark count writes with,
/// rather than what Winston believes it wrote.
pub async fn apiserver_requests(client: &Client) -> Vec<ApiRequestCount> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|line| {
            let label = |name: &str| {
                let key = format!("{name}=\"");
                let from = line.find(&key)? + key.len();
                Some(line[from..].split('"').next()?.to_string())
            };
            let count = line.rsplit(' ').next()?.parse::<f64>().ok()? as u64;
            Some(ApiRequestCount {
                verb: label("verb")?,
                resource: label("resource")?,
                code: label("code").unwrap_or_default(),
                count,
            })
        })
        .collect()
}
