//! The chart's rendered configuration runs the real binaries: each
//! container's args and environment (as `helm template` renders them, with
//! the ConfigMaps written where they would be mounted) start `winston
//! controller` and `winston proxy`. The controller runs as its own
//! ServiceAccount (kubeconfig impersonation after `helm install`), so the
//! RBAC the chart grants is proven sufficient for a Tenant's whole life:
//! children created, status written, Lease held, deletion finalized.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chart_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chart_support::{documents, install, render_release};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::Value;
use support::{TestNamespace, control_plane, eventually};
use winston::api::{CreditLedger, Tenant, TenantInstance};

const WAIT: Duration = Duration::from_secs(30);

/// The tests of this binary share one control plane, and the first runs a
/// cluster-wide controller that would serve the second's "elsewhere"
/// namespace: they take turns.
static ONE_CONTROLLER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MOUNT_ROOT: &str = "/etc/winston/";

/// Stands in for the kubelet: what one rendered container would see.
struct Pod {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The address its probes are served on.
    probe_addr: String,
    /// Where the pod serves its clients (the proxy's tenant port).
    serve_addr: String,
}

/// Builds the container `name` of `docs` as a local process environment:
/// ConfigMap volumes written under `files` (the rendered paths rewritten to
/// it), downward-API fields filled in, `secrets` for secretKeyRefs (optional
/// keys that are absent are left out, as the kubelet does), and the listen
/// address moved to a free loopback port.
fn pod(docs: &[Value], deployment: &str, files: &Path, namespace: &str, secrets: &BTreeMap<&str, String>) -> Pod {
    let d = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == deployment).unwrap();
    let spec = &d["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let local = |s: &str| s.replace(MOUNT_ROOT, &format!("{}/", files.display()));
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
        let Some(cm) = volume["configMap"]["name"].as_str() else { continue };
        let data = &docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm).unwrap()["data"];
        let dir = Path::new(&local(mount["mountPath"].as_str().unwrap())).to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        for (key, text) in data.as_object().unwrap() {
            let text = local(text.as_str().unwrap());
            // Upstream-key Secret volumes: a stand-in key at every path the catalog names.
            for key_file in text.lines().filter_map(|l| l.trim().strip_prefix("api_key_file: ")) {
                let path = Path::new(key_file.trim_matches('"')).to_path_buf();
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, "upstream-key\n").unwrap();
            }
            std::fs::write(dir.join(key), text).unwrap();
        }
    }
    let port = winston::devenv::free_port().unwrap();
    let probe_addr = format!("127.0.0.1:{port}");
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            local(v)
        } else if let Some(field) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match field {
                "metadata.namespace" => namespace.to_string(),
                "metadata.name" => format!("{deployment}-pod-1"),
                other => panic!("unexpected fieldRef {other}"),
            }
        } else {
            let key = &e["valueFrom"]["secretKeyRef"];
            let secret = format!("{}/{}", key["name"].as_str().unwrap(), key["key"].as_str().unwrap());
            match secrets.get(secret.as_str()) {
                Some(v) => v.clone(),
                None if key["optional"] == Value::Bool(true) => continue,
                None => panic!("{deployment} needs Secret key {secret}"),
            }
        };
        env.insert(name, value);
    }
    // Probes go to the admin listener (the controller's metrics address, the
    // proxy's admin port); the proxy's tenant port is a second one.
    let serve_addr = format!("127.0.0.1:{}", winston::devenv::free_port().unwrap());
    for (listen, addr) in [
        ("WINSTON_METRICS_ADDR", &probe_addr),
        ("WINSTON_PROXY_ADMIN_LISTEN", &probe_addr),
        ("WINSTON_PROXY_LISTEN", &serve_addr),
    ] {
        if env.contains_key(listen) {
            env.insert(listen.into(), addr.clone());
        }
    }
    let args = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    Pod { args, env, probe_addr, serve_addr }
}

/// The pod's process (killed on drop), logging to `log`.
struct Process(Child, std::path::PathBuf);

impl Process {
    fn start(pod: &Pod, kubeconfig: Option<&Path>, log: std::path::PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_winston"));
        c.args(&pod.args).envs(&pod.env).stdout(file.try_clone().unwrap()).stderr(Stdio::from(file));
        // As in the pod: no kubeconfig unless the test provides the ServiceAccount's.
        c.env_remove("KUBECONFIG");
        if let Some(k) = kubeconfig {
            c.env("KUBECONFIG", k);
        }
        Self(c.spawn().unwrap(), log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            eprintln!("=== {} ===\n{}", self.1.display(), std::fs::read_to_string(&self.1).unwrap_or_default());
        }
    }
}

async fn ready(addr: &str, what: &str) {
    eventually(what, WAIT, || async {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// The test kubeconfig, acting as `user` (impersonation; the admin certificate authenticates).
fn impersonating_kubeconfig(user: &str, path: &Path) {
    let mut kc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap()).unwrap();
    for u in kc["users"].as_array_mut().unwrap() {
        u["user"].as_object_mut().unwrap().insert("as".into(), user.into());
    }
    std::fs::write(path, serde_saphyr::to_string(&kc).unwrap()).unwrap();
}

/// A release `helm install`ed with `values` into a fresh namespace, beside a
/// PostgreSQL and the platform emulator, and the chart rendered with the
/// same values plus the emulator's base URLs: what the pods would run.
struct Release {
    ns: TestNamespace,
    name: String,
    dir: tempfile::TempDir,
    // Before `pg`: fields drop in order, and the emulator uses the database.
    _emu: winston::emulator::Running,
    pg: winston::devenv::postgres::TempPostgres,
    docs: Vec<Value>,
    secrets: BTreeMap<&'static str, String>,
}

/// `controller.extraEnv` for provisioning a Tenant to Ready on the emulator
/// within a test's patience: health checks go to the agents the emulator
/// serves, and the platforms' request budgets are the emulator's, not the
/// real platforms' (Railway's 16 a minute would make the test take minutes).
fn to_ready_env(base: &str) -> Vec<String> {
    let mut env = vec![
        ("WINSTON_HEALTH_BASE_URL".to_string(), format!("{base}{}", winston::emulator::apps::APPS_PATH)),
        // The emulated agents answer on loopback, which health checks refuse otherwise.
        ("WINSTON_OUTBOUND_ALLOW_CIDRS".to_string(), "127.0.0.0/8".to_string()),
    ];
    for p in ["RAILWAY", "NEON", "VERCEL", "SUPABASE", "RESEND"] {
        env.push((format!("WINSTON_{p}_RATE_PER_MINUTE"), "100000".into()));
        env.push((format!("WINSTON_{p}_BURST"), "1000".into()));
    }
    env.iter()
        .enumerate()
        .flat_map(|(i, (k, v))| {
            [format!("controller.extraEnv[{i}].name={k}"), format!("--set-string=controller.extraEnv[{i}].value={v}")]
        })
        .collect()
}

/// As described on [`Release`]; `to_ready` adds [`to_ready_env`] to the rendering.
async fn release(prefix: &str, values: &[&str], to_ready: bool) -> Release {
    let ns = TestNamespace::new(prefix).await;
    let name = format!("r{}", &ns.name[ns.name.len() - 8..]);
    install(&name, &ns.name, values);
    let dir = tempfile::tempdir().unwrap();
    let pg = winston::devenv::postgres::TempPostgres::start().unwrap();
    // The platforms are the emulator, configured the way an operator would:
    // base URLs in values, tokens in the referenced Secret.
    winston::telemetry::install_crypto_provider();
    let emu = winston::emulator::spawn(winston::emulator::EmulatorConfig {
        postgres_url: Some(pg.url("postgres")),
        ..winston::emulator::EmulatorConfig::default()
    })
    .await
    .unwrap();
    let base = emu.base();
    let sets: Vec<String> = [
        ("railway", winston::emulator::RAILWAY_PATH),
        ("neon", winston::emulator::NEON_PATH),
        ("vercel", winston::emulator::VERCEL_PATH),
        ("supabase", winston::emulator::SUPABASE_PATH),
        ("resend", winston::emulator::RESEND_PATH),
    ]
    .iter()
    .map(|(p, path)| format!("platforms.baseUrls.{p}={base}{path}"))
    .chain(if to_ready { to_ready_env(&base) } else { Vec::new() })
    .collect();
    let sets: Vec<&str> = sets.iter().map(String::as_str).chain(values.iter().copied()).collect();
    let docs = documents(&render_release(&name, &ns.name, &sets));
    let token = winston::emulator::DEFAULT_TOKEN.to_string();
    let secrets = BTreeMap::from([
        ("winston-database/url", pg.url("postgres")),
        ("winston-platform-tokens/railway", token.clone()),
        ("winston-platform-tokens/neon", token.clone()),
        ("winston-platform-tokens/vercel", token.clone()),
        ("winston-platform-tokens/supabase", token.clone()),
        ("winston-platform-tokens/resend", token),
    ]);
    Release { ns, name, dir, _emu: emu, pg, docs, secrets }
}

impl Release {
    /// The controller pod, running as the chart's ServiceAccount for it.
    async fn controller(&self) -> Process {
        let name = format!("{}-winston-controller", self.name);
        let controller = pod(&self.docs, &name, &self.dir.path().join("controller"), &self.ns.name, &self.secrets);
        assert_eq!(controller.args, ["controller"]);
        let kubeconfig = self.dir.path().join("kubeconfig");
        impersonating_kubeconfig(&format!("system:serviceaccount:{}:{name}", self.ns.name), &kubeconfig);
        let process = Process::start(&controller, Some(&kubeconfig), self.dir.path().join("controller.log"));
        ready(&controller.probe_addr, "controller /readyz").await;
        let leases: Api<Lease> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        eventually("the leader Lease held by the pod", WAIT, || async {
            let lease = leases.get_opt("winston-controller").await.unwrap()?;
            let holder = lease.spec?.holder_identity?;
            (holder == format!("{name}-pod-1")).then_some(())
        })
        .await;
        process
    }

    /// Fails when the controller was refused anything by the API server.
    fn assert_never_forbidden(&self) {
        let log = std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap();
        assert!(!log.contains("forbidden"), "the controller was refused something:\n{log}");
    }
}

fn tenant(name: &str) -> Tenant {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name},
        "spec": {"displayName": "Acme", "contactEmail": "ops@acme.example", "plan": "starter"}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_pods_run_and_the_controller_needs_no_more_than_its_rbac() {
    let _turn = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let r = release("chart-run", &[], false).await;
    let tenants_ns = TestNamespace::new("chart-run-tenants").await;
    let (ns, release, dir, pg, docs, secrets) = (&r.ns, &r.name, &r.dir, &r.pg, &r.docs, &r.secrets);

    // The proxy: catalog, upstream keys and database exactly as mounted and referenced.
    let proxy = pod(docs, &format!("{release}-winston-proxy"), &dir.path().join("proxy"), &ns.name, secrets);
    assert_eq!(proxy.args, ["proxy"]);
    let _proxy = Process::start(&proxy, None, dir.path().join("proxy.log"));
    ready(&proxy.probe_addr, "proxy /readyz").await;
    // It serves the chart's model catalog to a tenant key (issued in the ledger it migrated).
    let ledger = winston::ledger::Ledger::connect(&pg.url("postgres"), 2).await.unwrap();
    ledger.ensure_account("shop/acme").await.unwrap();
    let key = ledger.issue_key("shop/acme", "chart-test").await.unwrap().plaintext;
    let http = reqwest::Client::new();
    let models = eventually("the proxy to accept the new key", WAIT, || async {
        let r = http.get(format!("http://{}/v1/models", proxy.serve_addr)).bearer_auth(&key).send().await.ok()?;
        if r.status().is_success() { r.text().await.ok() } else { None }
    })
    .await;
    assert!(models.contains("claude-sonnet-4-5") && models.contains("kimi-k2"), "{models}");

    // The controller, as its ServiceAccount.
    let _controller = r.controller().await;

    // A Tenant's life under exactly the chart's RBAC.
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &tenants_ns.name);
    tenants.create(&PostParams::default(), &tenant("acme")).await.unwrap();
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &tenants_ns.name);
    let ledgers: Api<CreditLedger> = Api::namespaced(ns.client.clone(), &tenants_ns.name);
    eventually("TenantInstance acme-0", WAIT, || async { instances.get_opt("acme-0").await.unwrap() }).await;
    eventually("CreditLedger acme", WAIT, || async { ledgers.get_opt("acme").await.unwrap() }).await;
    eventually("Tenant status and finalizer", WAIT, || async {
        let t = tenants.get("acme").await.unwrap();
        (t.status.is_some_and(|s| s.phase.is_some()) && !t.metadata.finalizers.unwrap_or_default().is_empty())
            .then_some(())
    })
    .await;
    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    eventually("the Tenant finalized and gone", WAIT * 4, || async {
        tenants.get_opt("acme").await.unwrap().is_none().then_some(())
    })
    .await;
    r.assert_never_forbidden();
}

/// The per-namespace mode: the controller watches the listed namespaces
/// only, with a Role in each, and provisions a Tenant there to Ready; a
/// Tenant elsewhere is not its business and stays untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tenant_namespaces_the_controller_serves_them_with_roles_there_only() {
    let _turn = ONE_CONTROLLER_AT_A_TIME.lock().await;
    let shop = TestNamespace::new("chart-run-shop").await;
    let clinic = TestNamespace::new("chart-run-clinic").await;
    let elsewhere = TestNamespace::new("chart-run-elsewhere").await;
    let list = format!("controller.tenantNamespaces={{{},{}}}", shop.name, clinic.name);
    let r = release("chart-run-list", &[&list], true).await;
    let _controller = r.controller().await;

    let api = |ns: &TestNamespace| -> Api<Tenant> { Api::namespaced(r.ns.client.clone(), &ns.name) };
    api(&elsewhere).create(&PostParams::default(), &tenant("stray")).await.unwrap();
    let tenants = api(&clinic);
    tenants.create(&PostParams::default(), &tenant("acme")).await.unwrap();
    eventually("Tenant acme Ready in a listed namespace", WAIT * 4, || async {
        let t = tenants.get("acme").await.unwrap();
        t.status.is_some_and(|s| winston::api::conditions::is_true(&s.conditions, "Ready")).then_some(())
    })
    .await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(r.ns.client.clone(), &clinic.name);
    assert!(
        secrets.get_opt("acme-0-credentials").await.unwrap().is_some(),
        "credentials Secret in the tenant namespace"
    );

    let stray = api(&elsewhere).get("stray").await.unwrap();
    assert!(
        stray.status.is_none() && stray.metadata.finalizers.is_none(),
        "an unlisted namespace was touched: {stray:?}"
    );
    let instances: Api<TenantInstance> = Api::namespaced(r.ns.client.clone(), &elsewhere.name);
    assert!(instances.get_opt("stray-0").await.unwrap().is_none(), "an instance was created in an unlisted namespace");

    tenants.delete("acme", &DeleteParams::default()).await.unwrap();
    eventually("the Tenant finalized and gone", WAIT * 4, || async {
        tenants.get_opt("acme").await.unwrap().is_none().then_some(())
    })
    .await;
    // Nothing is left for the next test's controller, which watches every
    // namespace (the control plane runs no namespace controller, so the
    // namespaces themselves stay): the stray Tenant has no finalizer.
    api(&elsewhere).delete("stray", &DeleteParams::default()).await.unwrap();
    r.assert_never_forbidden();
}
