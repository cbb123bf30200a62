//! `winston proxy`: the metered LLM proxy.
//!
//! Speaks the Anthropic Messages API (`POST /v1/messages`) and the
//! OpenAI-compatible chat completions API (`POST /v1/chat/completions`),
//! streaming and not, plus `GET /v1/models` and `/healthz`; `/healthz`,
//! `/readyz` and `/metrics` are served on a separate admin listener that is
//! not exposed to tenants. Every call is authenticated by a tenant key,
//! routed by model through the [`catalog`], admitted by a worst-case credit
//! hold in the [`crate::ledger`] whose output cap is written into the
//! upstream request, forwarded, metered from the upstream's own usage fields
//! ([`meter`]) and settled before the last byte reaches the client (see
//! `docs/proxy.md`). It never touches Kubernetes.
mod auth;
pub mod catalog;
pub mod errors;
mod forward;
pub mod meter;
mod metrics;
mod pdf;
pub mod pricing;
pub mod request;
mod stream;
pub mod transcripts;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use auth::KeyCache;
pub use catalog::{Catalog, CatalogError, Model, UpstreamKind};
pub use errors::Api;

use crate::ledger::{GroupCommit, LeaseSettings, Leases, Ledger, LedgerError, ProxySession};

/// How often the dead holds of other proxies are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often idempotency keys past their window are forgotten.
const FORGET_KEYS_EVERY: Duration = Duration::from_secs(60);
/// Expired transcript rows deleted per statement, and statements per
/// minute: bounded so a backlog never holds long locks.
const PRUNE_BATCH: i64 = 1000;
const PRUNE_BATCHES: usize = 20;
/// How often readiness is re-checked.
const READINESS_EVERY: Duration = Duration::from_secs(2);

/// Response header with the credits left to the tenant.
pub const CREDITS_REMAINING_HEADER: &str = "x-winston-credits-remaining";
/// Header (and, on a stream, SSE comment) with what this call was charged:
/// the credits of its usage record.
pub const CREDITS_CHARGED_HEADER: &str = "x-winston-credits-charged";
/// Response header present when the balance is under the low threshold.
pub const CREDITS_WARNING_HEADER: &str = "x-winston-credits-warning";
/// Request header carrying the client's idempotency key (retries reuse it).
/// Tracing headers such as `X-Request-Id` are not idempotency keys.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header with the output cap (tokens per choice) the proxy
/// reserved for and wrote into the upstream request.
pub const OUTPUT_CAP_HEADER: &str = "x-winston-output-cap";

/// Command-line arguments of `winston proxy`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Address to serve the LLM APIs on.
    #[arg(long, env = "WINSTON_PROXY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address to serve `/healthz`, `/readyz` and `/metrics` on (keep it off
    /// the tenants' path: the chart's Service names it `admin`).
    #[arg(long, env = "WINSTON_PROXY_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// PostgreSQL URL of Winston's own database (the ledger).
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
    pub database_url: crate::ledger::DatabaseUrl,
    /// Model catalog YAML (see `docs/proxy.md`).
    #[arg(long, env = "WINSTON_PROXY_CATALOG")]
    pub catalog: PathBuf,
    /// Apply the control migrations before serving.
    #[arg(long, env = "WINSTON_PROXY_MIGRATE")]
    pub migrate: bool,
    #[command(flatten)]
    pub settings: Settings,
}

/// Tunables of the proxy (all have production defaults).
#[derive(clap::Args, Debug, Clone)]
pub struct Settings {
    /// Largest accepted request body in bytes (413 above); Anthropic accepts
    /// 32 MB (images, PDFs).
    #[arg(long, env = "WINSTON_PROXY_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub body_limit: usize,
    /// Output cap (tokens per choice) reserved and written upstream when a
    /// request does not set `max_tokens`.
    #[arg(long, env = "WINSTON_PROXY_DEFAULT_MAX_TOKENS", default_value_t = 4096)]
    pub default_max_tokens: i64,
    /// Smallest output cap worth forwarding: when the balance cannot pay for
    /// the input and this many output tokens the request gets 402.
    #[arg(long, env = "WINSTON_PROXY_MIN_OUTPUT_TOKENS", default_value_t = 16)]
    pub min_output_tokens: i64,
    /// Backstop lifetime of a hold. A dead proxy's holds are released as soon
    /// as its session lock is gone; this only bounds what a hung one keeps.
    #[arg(long, env = "WINSTON_PROXY_RESERVATION_TTL_SECS", default_value_t = 900)]
    pub reservation_ttl_secs: u64,
    /// A streaming client that accepts no bytes for this long is treated as
    /// gone: the upstream is drained and billed, its hold settled.
    #[arg(long, env = "WINSTON_PROXY_CLIENT_STALL_SECS", default_value_t = 30)]
    pub client_stall_secs: u64,
    /// How often the API key cache is reloaded (new/revoked keys apply within this).
    #[arg(long, env = "WINSTON_PROXY_KEY_REFRESH_MS", default_value_t = 2000)]
    pub key_refresh_ms: u64,
    /// How long to keep reading an upstream stream after its client left.
    #[arg(long, env = "WINSTON_PROXY_DRAIN_SECS", default_value_t = 120)]
    pub drain_secs: u64,
    /// How long a graceful shutdown waits for open streams.
    #[arg(long, env = "WINSTON_PROXY_SHUTDOWN_GRACE_SECS", default_value_t = 300)]
    pub shutdown_grace_secs: u64,
    /// Maximum upstream request duration.
    #[arg(long, env = "WINSTON_PROXY_UPSTREAM_TIMEOUT_SECS", default_value_t = 600)]
    pub upstream_timeout_secs: u64,
    /// Ledger database connections.
    #[arg(long, env = "WINSTON_PROXY_DB_CONNECTIONS", default_value_t = 32)]
    pub db_connections: u32,
    /// Group-commit queues: holds and settlements that arrive while a
    /// transaction runs share the next commit (one WAL flush for many
    /// requests). Accounts are spread over the queues by hash; each queue
    /// has at most one transaction open.
    #[arg(long, env = "WINSTON_PROXY_COMMIT_QUEUES", default_value_t = 4)]
    pub commit_queues: usize,
    /// Most holds and settlements one commit takes.
    #[arg(long, env = "WINSTON_PROXY_COMMIT_BATCH", default_value_t = crate::ledger::DEFAULT_MAX_BATCH)]
    pub commit_batch: usize,
    /// Days a pushed transcript event is kept before the sweep deletes it.
    #[arg(long, env = "WINSTON_TRANSCRIPT_RETENTION_DAYS", default_value_t = transcripts::DEFAULT_RETENTION_DAYS)]
    pub transcript_retention_days: u32,
    /// Credit leases: this replica takes credit from a busy account in
    /// chunks of at most this many holds (one commit per chunk) and admits
    /// requests against the chunk without a commit of their own. 0 turns
    /// leases off: every request takes its own hold.
    #[arg(long, env = "WINSTON_PROXY_LEASE_HOLDS", default_value_t = 64)]
    pub lease_holds: i64,
    /// Most of an account's available credits one lease chunk may take, in
    /// %. Below the balance where that share would not cover one request,
    /// no lease is taken and requests hold exactly, shared by all replicas.
    #[arg(long, env = "WINSTON_PROXY_LEASE_SHARE_PCT", default_value_t = 10)]
    pub lease_share_pct: i64,
    /// A lease without a request for this long goes back to the account.
    #[arg(long, env = "WINSTON_PROXY_LEASE_IDLE_MS", default_value_t = 1000)]
    pub lease_idle_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            body_limit: 32 * 1024 * 1024,
            default_max_tokens: 4096,
            min_output_tokens: 16,
            reservation_ttl_secs: 900,
            client_stall_secs: 30,
            key_refresh_ms: 2000,
            drain_secs: 120,
            shutdown_grace_secs: 300,
            upstream_timeout_secs: 600,
            db_connections: 32,
            commit_queues: 4,
            commit_batch: crate::ledger::DEFAULT_MAX_BATCH,
            transcript_retention_days: transcripts::DEFAULT_RETENTION_DAYS,
            lease_holds: 64,
            lease_share_pct: 10,
            lease_idle_ms: 1000,
        }
    }
}

impl Settings {
    /// The credit-lease part of the settings.
    #[must_use]
    pub fn leases(&self) -> LeaseSettings {
        LeaseSettings {
            holds: self.lease_holds.max(0),
            share_pct: self.lease_share_pct.clamp(0, 100),
            idle: Duration::from_millis(self.lease_idle_ms.max(10)),
            ttl: Duration::from_secs(self.reservation_ttl_secs.max(1)),
        }
    }
}

/// Errors starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("failed to load the model catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("failed to open the ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("failed to serve: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to build the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl ProxyError {
    /// A stable, low-cardinality name.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Catalog(_) => "catalog",
            Self::Ledger(_) => "ledger",
            Self::Io(_) => "io",
            Self::Client(_) => "client",
        }
    }
}

/// Counts work that must finish before a graceful shutdown completes
/// (upstream streams, including drains after a client disconnected).
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while a stream is being read; dropping it ends the work item.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything a request handler needs.
pub(crate) struct ProxyState {
    pub(crate) ledger: Ledger,
    /// Holds (against this replica's credit leases when it can) and
    /// settlements, committed in groups.
    pub(crate) meter: Leases,
    /// The owner of every hold this process takes.
    pub(crate) session: ProxySession,
    /// Last result of the background readiness check.
    pub(crate) ready: AtomicBool,
    pub(crate) catalog: Catalog,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) client: reqwest::Client,
    pub(crate) settings: Settings,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) in_flight: Arc<InFlight>,
}

/// A configured proxy, ready to serve.
pub struct Proxy {
    state: Arc<ProxyState>,
}

impl Proxy {
    /// Builds the proxy over an open ledger, this process's session (the
    /// owner of its holds) and a loaded catalog.
    ///
    /// # Errors
    /// Fails when the upstream HTTP client cannot be built.
    pub fn new(
        ledger: Ledger,
        session: ProxySession,
        catalog: Catalog,
        settings: Settings,
    ) -> Result<Self, ProxyError> {
        crate::telemetry::install_crypto_provider();
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(settings.upstream_timeout_secs))
            .build()?;
        let group = GroupCommit::start(&ledger, settings.commit_queues, settings.commit_batch);
        let meter = Leases::start(&ledger, group, Some(session.owner()), settings.leases());
        let metrics = metrics::Metrics::default();
        let state = ProxyState {
            meter,
            ledger,
            session,
            ready: AtomicBool::new(false),
            catalog,
            keys: Arc::new(KeyCache::counting(metrics.key_lookups.clone())),
            client,
            settings,
            metrics,
            in_flight: Arc::new(InFlight::default()),
        };
        Ok(Self { state: Arc::new(state) })
    }

    /// The tenant-facing routes (for embedding; [`Proxy::serve`] adds the
    /// background tasks).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/messages", post(forward::anthropic))
            .route("/v1/chat/completions", post(forward::openai))
            .route("/v1/models", get(forward::models))
            .route(transcripts::TRANSCRIPTS_PATH, post(transcripts::ingest))
            .route("/healthz", get(|| async { "ok" }))
            .method_not_allowed_fallback(|| async {
                errors::route_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this path takes another method",
                )
            })
            .fallback(|| async {
                errors::route_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such path: the proxy serves POST /v1/messages, POST /v1/chat/completions and GET /v1/models",
                )
            })
            .with_state(Arc::clone(&self.state))
    }

    /// The operator-facing routes: probes and metrics. `/readyz` answers
    /// from the background check, never with a query per hit.
    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(Arc::clone(&self.state))
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting,
    /// lets open responses and upstream drains finish (bounded by
    /// `shutdown_grace_secs`) and returns. Runs the key-cache refresher and
    /// the reservation sweeper meanwhile.
    ///
    /// # Errors
    /// Fails when the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let st = &self.state;
        let admin = admin.map(|l| tokio::spawn(axum::serve(l, self.admin_router()).into_future()));
        let readiness = tokio::spawn(check_readiness(Arc::clone(st)));
        if let Err(e) = st.keys.refresh(&st.ledger).await {
            tracing::warn!(error = %e, "failed to load API keys at start; retrying in the background");
        }
        let refresher = tokio::spawn(
            Arc::clone(&st.keys)
                .refresh_loop(st.ledger.clone(), Duration::from_millis(st.settings.key_refresh_ms.max(50))),
        );
        let sweeper = tokio::spawn(sweep_reservations(st.ledger.clone()));
        tracing::info!(addr = %listener.local_addr()?, models = st.catalog.models.len(), "proxy listening");
        // Without TCP_NODELAY, Nagle holds small SSE frames back until the
        // client's delayed ACK (~40 ms on Linux) on every streamed response.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "failed to set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await;
        let grace = Duration::from_secs(st.settings.shutdown_grace_secs);
        if tokio::time::timeout(grace, st.in_flight.wait_idle()).await.is_err() {
            tracing::warn!("shutdown grace elapsed with upstream streams still open");
        }
        let returned = st.meter.return_all().await;
        if returned > 0 {
            tracing::info!(credits = returned, "gave the credit leases back");
        }
        refresher.abort();
        sweeper.abort();
        readiness.abort();
        if let Some(admin) = admin {
            admin.abort();
        }
        served?;
        Ok(())
    }
}

/// Releases the holds of proxies that died (their session lock is gone)
/// and forgets idempotency keys past their window and expired transcripts.
async fn sweep_reservations(ledger: Ledger) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_forget = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        match ledger.expire_reservations().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "released the holds of dead or expired requests"),
            Err(e) => tracing::warn!(error = %e, "failed to release dead holds"),
        }
        // Keys live 24 h: forgetting them once a minute is plenty, and keeps
        // a DELETE off the 2-second sweep.
        if last_forget.elapsed() >= FORGET_KEYS_EVERY {
            last_forget = tokio::time::Instant::now();
            if let Err(e) = ledger.forget_expired_keys().await {
                tracing::warn!(error = %e, "failed to forget expired idempotency keys");
            }
            match transcripts::prune(ledger.pool(), PRUNE_BATCH, PRUNE_BATCHES).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted expired transcripts"),
                Err(e) => tracing::warn!(error = %e, "failed to delete expired transcripts"),
            }
        }
    }
}

/// Refreshes the cached readiness: the ledger answers, the keys are loaded
/// and this process's session holds its lock.
async fn check_readiness(st: Arc<ProxyState>) {
    let mut tick = tokio::time::interval(READINESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let db = sqlx::query("SELECT 1").execute(st.ledger.pool()).await.is_ok();
        st.ready.store(db && st.keys.loaded() && st.session.alive(), Ordering::Release);
    }
}

async fn readyz(State(st): State<Arc<ProxyState>>) -> impl IntoResponse {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(st): State<Arc<ProxyState>>) -> impl IntoResponse {
    st.metrics.leases.observe(st.meter.stats());
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], st.metrics.render())
}

/// `winston proxy`: opens the ledger, loads the catalog and serves until
/// SIGTERM or Ctrl-C, then drains.
///
/// # Errors
/// Startup failures (catalog, database, listener).
pub async fn run(args: ProxyArgs) -> Result<(), ProxyError> {
    let catalog = Catalog::load(&args.catalog)?;
    let ledger = Ledger::connect(args.database_url.expose(), args.settings.db_connections).await?;
    if args.migrate {
        ledger.migrate().await?;
    }
    let session = ProxySession::open(args.database_url.expose()).await?;
    // A predecessor that died just before may have left holds behind.
    ledger.expire_reservations().await?;
    let listener = TcpListener::bind(args.listen).await?;
    let admin = TcpListener::bind(args.admin_listen).await?;
    Proxy::new(ledger, session, catalog, args.settings)?.serve(listener, Some(admin), shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining open streams");
}
