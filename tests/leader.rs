//! Leader election of `winston controller` (the real binary) against a real
//! kube-apiserver: a leader frozen with SIGSTOP is replaced once its lease
//! expires, and once resumed, with a Tenant waiting that nobody handled
//! yet and its Lease requests hanging, it writes nothing and exits at once.
//!
//! Writes are counted outside the replicas: each replica reaches the API
//! server only through its own proxy in this test (plain HTTP in, the
//! test's credentials out), which records every request that is not a
//! read, with the instant it arrived. The proxy can also hold a replica's
//! Lease requests, as a hung connection would.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{TestNamespace, Winston, control_plane, eventually};
use winston::api::{Tenant, TenantInstance};

const WAIT: Duration = Duration::from_secs(60);
/// The lease: 6 s, so a renew deadline of 4 s and a retry period of 0.8 s.
const LEASE_FLAGS: &[&str] = &["--lease-duration-seconds", "6"];
const RENEW_DEADLINE: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_millis(800);
/// "At once": a resumed replica past its deadline stops within this (it
/// takes milliseconds; the bound leaves room for a loaded machine).
const AT_ONCE: Duration = Duration::from_secs(2);

fn tenant(name: &str) -> Tenant {
    serde_json::from_value(json!({
        "apiVersion": "winston.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": { "name": name },
        "spec": { "displayName": "Acme", "contactEmail": format!("ops@{name}.example"), "plan": "starter", "instances": 1 }
    }))
    .unwrap()
}

/// What one replica's proxy saw (its writes) and does (hold its Lease requests).
#[derive(Clone, Default)]
struct Tap {
    writes: Arc<Mutex<Vec<(Instant, String)>>>,
    hold_leases: Arc<AtomicBool>,
}

impl Tap {
    fn record(&self, method: &Method, uri: &http::Uri) {
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            self.writes.lock().unwrap().push((Instant::now(), format!("{method} {uri}")));
        }
    }

    fn all(&self) -> Vec<String> {
        self.since(None)
    }

    fn since(&self, from: impl Into<Option<Instant>>) -> Vec<String> {
        let from = from.into();
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| from.is_none_or(|f| *at >= f))
            .map(|(_, w)| w.clone())
            .collect()
    }
}

/// Forwards one request to the API server as the test's admin, streaming
/// the answer back (watches included).
async fn forward(State((client, tap)): State<(Client, Tap)>, req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    tap.record(&parts.method, &parts.uri);
    if tap.hold_leases.load(Ordering::SeqCst) && parts.uri.path().contains("/leases") {
        tokio::time::sleep(WAIT).await;
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut upstream = http::Request::builder().method(parts.method).uri(parts.uri);
    for name in [CONTENT_TYPE, ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            upstream = upstream.header(name, value);
        }
    }
    match client.send(upstream.body(kube::client::Body::from(body.to_vec())).unwrap()).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let mut out = axum::response::Response::new(axum::body::Body::new(body));
            *out.status_mut() = parts.status;
            if let Some(value) = parts.headers.get(CONTENT_TYPE) {
                out.headers_mut().insert(CONTENT_TYPE, value.clone());
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// One controller replica behind its own counting proxy.
struct Replica {
    process: Winston,
    tap: Tap,
}

impl Replica {
    async fn start(ns: &TestNamespace, identity: &str) -> Self {
        let tap = Tap::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(forward).with_state((ns.client.clone(), tap.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let cp = control_plane();
        let kubeconfig = cp.dir.join(format!("kubeconfig-{}-{identity}", ns.name));
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{ "name": "proxy", "cluster": { "server": format!("http://{proxy}") } }],
            "users": [{ "name": "proxy", "user": {} }],
            "contexts": [{ "name": "proxy", "context": { "cluster": "proxy", "user": "proxy", "namespace": ns.name } }],
            "current-context": "proxy",
        });
        std::fs::write(&kubeconfig, serde_json::to_vec(&config).unwrap()).unwrap();
        let process = spawn_controller(&ns.name, identity, kubeconfig);
        Self { process, tap }
    }

    /// Sends `signal` (STOP, CONT) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.process.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }

    /// Waits at most `limit` for the process to exit.
    async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `winston controller` for `ns` through `kubeconfig` (support's spawn
/// always points at the control plane itself).
fn spawn_controller(ns: &str, identity: &str, kubeconfig: PathBuf) -> Winston {
    let cp = control_plane();
    let log = cp.dir.join(format!("controller-{ns}-{identity}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let metrics = format!("127.0.0.1:{}", winston::devenv::free_port().unwrap());
    let child = Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["controller", "--namespace", ns, "--lease-namespace", ns, "--metrics-addr", &metrics])
        .args(["--identity", identity])
        .args(LEASE_FLAGS)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,winston=debug")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Winston { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_once_resumed_writes_nothing_and_exits() {
    winston::telemetry::install_crypto_provider();
    let ns = TestNamespace::new("frozen").await;
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    let tenants: Api<Tenant> = Api::namespaced(ns.client.clone(), &ns.name);
    let instances: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    let holds = |identity: &'static str| {
        let leases = leases.clone();
        move || {
            let leases = leases.clone();
            async move {
                let lease = leases.get_opt(winston::names::LEADER_LEASE).await.unwrap()?;
                (lease.spec?.holder_identity.as_deref() == Some(identity)).then_some(())
            }
        }
    };

    let mut a = Replica::start(&ns, "a").await;
    eventually("a holds the lease", WAIT, holds("a")).await;
    let b = Replica::start(&ns, "b").await;
    tenants.create(&PostParams::default(), &tenant("one")).await.unwrap();
    eventually("the leader creates one-0", WAIT, || async { instances.get_opt("one-0").await.unwrap() }).await;
    assert!(!a.tap.all().is_empty(), "the proxy counted none of the leader's writes");
    assert_eq!(b.tap.all(), Vec::<String>::new(), "the standby wrote");

    // Freeze the leader: the standby takes over only once the lease expired.
    a.signal("STOP");
    let frozen = Instant::now();
    eventually("b takes the lease over", WAIT, holds("b")).await;
    let waited = frozen.elapsed();
    assert!(waited >= RENEW_DEADLINE, "b took over {waited:?} after a froze, while a could still act");
    assert!(b.tap.all().iter().any(|w| w.contains("/leases/")), "b's takeover was not counted: {:?}", b.tap.all());

    // The new leader acts; the frozen one has these events waiting for it.
    let two = tenants.create(&PostParams::default(), &tenant("two")).await.unwrap();
    let child = eventually("b creates two-0", WAIT, || async { instances.get_opt("two-0").await.unwrap() }).await;
    assert_eq!(child.owner_references()[0].uid, two.uid().unwrap());

    // Work that nobody has done yet waits for the resumed replica: the new
    // leader is paused too, briefly (well within its renew deadline).
    b.signal("STOP");
    let b_frozen = Instant::now();
    tenants.create(&PostParams::default(), &tenant("three")).await.unwrap();

    // Resumed, the old leader writes nothing and exits at once, even though
    // its Lease requests now hang.
    a.tap.hold_leases.store(true, Ordering::SeqCst);
    let resumed = Instant::now();
    a.signal("CONT");
    let status = a.exited_within(AT_ONCE).await;
    b.signal("CONT");
    let b_paused = b_frozen.elapsed();
    let late = a.tap.since(resumed);
    assert!(late.is_empty(), "a wrote after it was resumed without the lease: {late:?}");
    let status = status.unwrap_or_else(|| panic!("a did not exit within {AT_ONCE:?} of being resumed"));
    assert!(!status.success(), "a exited cleanly after losing the lease: {status:?}");
    assert!(a.process.logs().contains("lost the leader lease"), "a exited for another reason:\n{}", a.process.logs());

    // The new leader, paused for less than its renew deadline (counted from
    // a renewal up to a retry period before the pause), still leads and acts.
    assert!(b_paused < RENEW_DEADLINE - RETRY_PERIOD, "b was paused for {b_paused:?}: too long to keep leading");
    eventually("b creates three-0", WAIT, || async { instances.get_opt("three-0").await.unwrap() }).await;
    eventually("b still holds the lease", WAIT, holds("b")).await;
}
