//! Real agent runtimes behind the emulated Railway services: for each
//! service whose image is the reference agent image and whose newest
//! deployment succeeded, the emulator runs `winston agent` as a local
//! process (bound to 127.0.0.1 on a port of its own, with the service's
//! variables as its environment and nothing of the emulator's), and
//! `/_emulator/apps/<domain>/...` reaches it ([`forward`]).
//!
//! A supervisor task compares what should run with what runs every
//! [`TICK`]: a new deployment restarts the runtime with the new variables
//! (keeping its transcript spool), a deleted service stops it, a runtime
//! that exited is started again after [`RESTART_AFTER`]. At most
//! `max` run at once, the oldest services first; a reference-image service
//! beyond the bound has no agent running, so it answers 503 naming the
//! bound (never the stand-in's healthy answer, which would let Winston's
//! health step pass on an agent that does not run). With runtimes off
//! (`agent_bin: None`, the benchmarks) every service gets the stand-in. Runtimes are
//! killed with the emulator: on drop, and by themselves when their parent
//! process is gone (`WINSTON_AGENT_PARENT_PID`).
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::context::{Emulator, World};
use super::railway::{Deployment, Service, deployment_status};

/// How often the supervisor looks at the world.
pub const TICK: Duration = Duration::from_millis(200);
/// Pause before a runtime that exited is started again.
pub const RESTART_AFTER: Duration = Duration::from_secs(5);
/// Largest request body forwarded to a runtime.
const FORWARD_LIMIT: usize = 1024 * 1024;
/// Environment passed through to runtimes besides the service's variables.
const PASS_THROUGH: [&str; 4] = ["PATH", "HOME", "RUST_LOG", "TMPDIR"];

/// Which services get a real runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The `winston` binary to run as `winston agent`; `None` turns real
    /// runtimes off (every service gets the stand-in).
    pub agent_bin: Option<PathBuf>,
    /// Image repositories that are the reference agent (any tag or digest).
    pub images: Vec<String>,
    /// Most runtimes at once.
    pub max: usize,
    /// Transcript push interval given to each runtime, in milliseconds.
    pub push_millis: u64,
}

/// The repository of the reference agent image (the Winston image, run
/// with the `agent` entrypoint).
pub const REFERENCE_IMAGE: &str = "ghcr.io/winston-dev/winston";

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { agent_bin: None, images: vec![REFERENCE_IMAGE.into()], max: 8, push_millis: 1000 }
    }
}

impl RuntimeConfig {
    /// True when `image` is one of [`RuntimeConfig::images`] (any tag or digest).
    #[must_use]
    pub fn is_reference(&self, image: &str) -> bool {
        let repo = image.split('@').next().unwrap_or(image);
        let repo = match repo.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repo,
        };
        self.images.iter().any(|i| i == repo)
    }
}

/// What should run for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    service_id: String,
    deployment_id: String,
    env: BTreeMap<String, String>,
}

struct Running {
    deployment_id: String,
    port: u16,
    child: tokio::process::Child,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    /// Service -> (deployment, when its runtime exited).
    exited: HashMap<String, (String, Instant)>,
    /// Runtimes started since the emulator started.
    started: u64,
}

/// The runtimes of one emulator.
pub struct Runtimes {
    config: RuntimeConfig,
    root: PathBuf,
    state: Mutex<State>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtimes").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Runtimes {
    #[must_use]
    pub fn new(config: RuntimeConfig) -> Self {
        let root = std::env::temp_dir().join(format!("winston-emulator-runtimes-{}", uuid::Uuid::new_v4().simple()));
        // Its client checks the runtimes' health: TLS needs a crypto provider.
        crate::telemetry::install_crypto_provider();
        Self { config, root, state: Mutex::new(State::default()), http: reqwest::Client::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The loopback port of the runtime serving `service_id`, if one runs.
    #[must_use]
    pub fn port_for(&self, service_id: &str) -> Option<u16> {
        self.lock().running.get(service_id).map(|r| r.port)
    }

    /// `{service id: port}` of every running runtime, and how many were
    /// started since the emulator started.
    #[must_use]
    pub fn report(&self) -> serde_json::Value {
        let st = self.lock();
        let running: BTreeMap<&String, u16> = st.running.iter().map(|(s, r)| (s, r.port)).collect();
        json!({"running": running, "started": st.started, "max": self.config.max})
    }

    /// Starts and stops runtimes so that they match `wanted`.
    fn reconcile(&self, wanted: &[Wanted]) {
        let Some(bin) = &self.config.agent_bin else { return };
        let mut st = self.lock();
        // Exited runtimes leave the table (and wait before a restart).
        let exited: Vec<String> = st
            .running
            .iter_mut()
            .filter_map(|(s, r)| matches!(r.child.try_wait(), Ok(Some(_))).then(|| s.clone()))
            .collect();
        for s in exited {
            if let Some(r) = st.running.remove(&s) {
                tracing::warn!(service = %s, "agent runtime exited; restarting it later");
                st.exited.insert(s, (r.deployment_id, Instant::now()));
            }
        }
        // Stop what is no longer wanted or was redeployed.
        let stale: Vec<String> = st
            .running
            .iter()
            .filter(|(s, r)| !wanted.iter().any(|w| &w.service_id == *s && w.deployment_id == r.deployment_id))
            .map(|(s, _)| s.clone())
            .collect();
        for s in stale {
            if let Some(mut r) = st.running.remove(&s) {
                let _ = r.child.start_kill();
                if !wanted.iter().any(|w| w.service_id == s) {
                    let _ = std::fs::remove_dir_all(self.root.join(&s));
                }
            }
        }
        st.exited.retain(|s, _| wanted.iter().any(|w| &w.service_id == s));
        for w in wanted {
            if st.running.len() >= self.config.max {
                break;
            }
            if st.running.contains_key(&w.service_id) {
                continue;
            }
            let waiting = st
                .exited
                .get(&w.service_id)
                .is_some_and(|(d, at)| *d == w.deployment_id && at.elapsed() < RESTART_AFTER);
            if waiting {
                continue;
            }
            match self.spawn(bin, w) {
                Ok(r) => {
                    tracing::info!(service = %w.service_id, port = r.port, "agent runtime started");
                    st.running.insert(w.service_id.clone(), r);
                    st.started += 1;
                }
                Err(e) => {
                    tracing::warn!(service = %w.service_id, error = %e, "failed to start an agent runtime");
                    st.exited.insert(w.service_id.clone(), (w.deployment_id.clone(), Instant::now()));
                }
            }
        }
    }

    fn spawn(&self, bin: &PathBuf, w: &Wanted) -> std::io::Result<Running> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let spool = self.root.join(&w.service_id);
        std::fs::create_dir_all(&spool)?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("agent").env_clear();
        for k in PASS_THROUGH {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(&w.env)
            .env("WINSTON_AGENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("WINSTON_AGENT_SPOOL_DIR", &spool)
            .env("WINSTON_AGENT_PUSH_MILLIS", self.config.push_millis.to_string())
            .env("WINSTON_AGENT_PARENT_PID", std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        Ok(Running { deployment_id: w.deployment_id.clone(), port, child })
    }

    /// Stops every runtime.
    pub fn stop_all(&self) {
        let mut st = self.lock();
        for (_, mut r) in st.running.drain() {
            let _ = r.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The reference-image services whose newest deployment succeeded, oldest
/// first, with that deployment.
fn candidates<'w>(emu: &Emulator, w: &'w World) -> Vec<(&'w Service, &'w Deployment)> {
    let cfg = &emu.runtimes.config;
    let mut services: Vec<&Service> =
        w.railway.services.values().filter(|s| s.image.as_deref().is_some_and(|i| cfg.is_reference(i))).collect();
    services.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    services
        .into_iter()
        .filter_map(|s| {
            let newest = w
                .railway
                .deployments
                .values()
                .filter(|d| d.service_id == s.id && !d.removed)
                .max_by_key(|d| (d.created_ms, d.id.clone()))?;
            (deployment_status(emu, w, newest) == "SUCCESS").then_some((s, newest))
        })
        .collect()
}

/// The services that should run a runtime now, oldest first, with the
/// environment they run with (shared variables, then the service's own).
fn wanted(emu: &Emulator, w: &World) -> Vec<Wanted> {
    candidates(emu, w)
        .into_iter()
        .map(|(s, d)| {
            let vars = |key: String| w.railway.variables.get(&key).cloned().unwrap_or_default();
            let mut env = vars(format!("{}/", d.environment_id));
            env.extend(vars(format!("{}/{}", d.environment_id, s.id)));
            Wanted { service_id: s.id.clone(), deployment_id: d.id.clone(), env }
        })
        .collect()
}

/// Who answers a request for an app's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// The real runtime on this loopback port.
    Runtime(u16),
    /// A runtime is due but not started yet: 503, so a health check waits
    /// for the real agent instead of passing on the stand-in.
    Starting,
    /// A reference-image service past the `max` oldest ones: no runtime
    /// slot, so no agent runs for it.
    NoSlot { max: usize },
    /// Today's stand-in answer (not the reference image, or runtimes off).
    StandIn,
}

/// Who answers for `domain`.
#[must_use]
pub fn route(emu: &Emulator, domain: &str) -> Route {
    if emu.runtimes.config.agent_bin.is_none() {
        return Route::StandIn;
    }
    let max = emu.runtimes.config.max;
    let (service, position) = emu.read(|w| {
        let service = service_of(w, domain);
        let position = service.as_ref().and_then(|svc| candidates(emu, w).into_iter().position(|(s, _)| &s.id == svc));
        (service, position)
    });
    let Some(service) = service else { return Route::StandIn };
    match (emu.runtimes.port_for(&service), position) {
        (Some(port), _) => Route::Runtime(port),
        (None, Some(p)) if p < max => Route::Starting,
        (None, Some(_)) => Route::NoSlot { max },
        (None, None) => Route::StandIn,
    }
}

/// Starts the supervisor when runtimes are on; it ends with the emulator.
pub fn supervise(emu: &std::sync::Arc<Emulator>) {
    if emu.runtimes.config.agent_bin.is_none() {
        return;
    }
    let weak: Weak<Emulator> = std::sync::Arc::downgrade(emu);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(emu) = weak.upgrade() else { return };
            let want = emu.read(|w| wanted(&emu, w));
            emu.runtimes.reconcile(&want);
        }
    });
}

/// The service that owns `domain`.
#[must_use]
pub fn service_of(w: &World, domain: &str) -> Option<String> {
    w.railway.domains.values().find(|d| d.domain == domain).map(|d| d.service_id.clone())
}

/// Forwards `req` to the runtime on `port` as `/<path>?<query>`, streaming
/// the answer back; 503 while the runtime does not answer yet.
pub async fn forward(rt: &Runtimes, port: u16, path: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("http://127.0.0.1:{port}/{path}{query}");
    let Ok(body) = axum::body::to_bytes(body, FORWARD_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({"error": "request body too large"}))).into_response();
    };
    let mut out = rt.http.request(parts.method, url).body(body);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let mut b = Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    b = b.header(k, v);
                }
            }
            b.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(_) => starting(),
    }
}

/// The answer while a runtime is due or starting.
#[must_use]
pub fn starting() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "starting"}))).into_response()
}

/// The answer of a reference-image service that got no runtime slot.
#[must_use]
pub fn no_slot(max: usize) -> Response {
    let message = format!("no agent runs: all {max} agent runtime slots are taken (raise --agent-runtimes)");
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "no_runtime_slot", "max": max, "message": message})))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::RuntimeConfig;

    #[test]
    fn the_reference_image_matches_with_any_tag_or_digest() {
        let c = RuntimeConfig::default();
        for yes in [
            "ghcr.io/winston-dev/winston",
            "ghcr.io/winston-dev/winston:0.1.0",
            "ghcr.io/winston-dev/winston@sha256:ab",
        ] {
            assert!(c.is_reference(yes), "{yes}");
        }
        for no in ["ghcr.io/winston-dev/agent:1.4.0", "ghcr.io/winston-dev/winston-agent", "localhost:5000/x"] {
            assert!(!c.is_reference(no), "{no}");
        }
    }
}
