//! `winston agent`: the reference agent runtime, the program a tenant's
//! service runs (the contract it honours is `docs/runtime-contract.md`).
//!
//! It serves a small HTTP API behind the tenant's gateway token: chat
//! ([`chat`]) answered by an LLM through Winston's proxy with the tenant's
//! key, memory with full-text search and a daily log, skills from the
//! workspace, health and status ([`api`]). Conversations, memories and
//! usage live in the tenant's own database ([`store`]). Every turn is also
//! a transcript: events are spooled on disk ([`spool`]) and pushed to the
//! proxy ([`push`]), deleted locally only once acknowledged.
//!
//! It sits beside the proxy: it reaches LLMs and Winston only over HTTP and
//! imports neither Kubernetes nor the controllers or the engine.
mod api;
mod chat;
pub mod config;
pub mod error;
pub mod llm;
pub mod push;
pub mod spool;
pub mod store;
pub mod workspace;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use api::tokens_match;
pub use config::{AgentArgs, Secret};

/// `credits_remaining` before the proxy reported anything.
const UNKNOWN: i64 = i64::MIN;

/// Errors starting or running the runtime.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Only the kind of failure: a driver message could quote the URL.
    #[error("failed to open the tenant database (check DATABASE_URL): {0}")]
    Database(&'static str),
    #[error("failed to apply the tenant migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("failed to read the workspace: {0}")]
    Workspace(#[from] workspace::WorkspaceError),
    #[error("failed to open the transcript spool: {0}")]
    Spool(std::io::Error),
    #[error("failed to build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("failed to serve: {0}")]
    Io(#[from] std::io::Error),
}

impl AgentError {
    /// A stable, low-cardinality name.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Migrate(_) => "migrate",
            Self::Workspace(_) => "workspace",
            Self::Spool(_) => "spool",
            Self::Client(_) => "client",
            Self::Io(_) => "io",
        }
    }
}

/// Everything a handler needs.
pub struct AgentState {
    pub(crate) store: store::Store,
    pub(crate) workspace: workspace::Workspace,
    pub(crate) workspace_hash: Option<String>,
    pub(crate) instance: String,
    pub(crate) llm: llm::Llm,
    pub(crate) spool: spool::Spool,
    pub(crate) gateway_token: Secret,
    pub(crate) body_limit: usize,
    pub(crate) history: i64,
    /// Credits left as the proxy last reported them ([`UNKNOWN`] before).
    pub(crate) credits_remaining: AtomicI64,
    pub(crate) started: Instant,
    /// How the push rounds went.
    push: Mutex<PushStatus>,
}

/// How transcript delivery is going, for `/health`.
#[derive(Clone, Debug, Default)]
pub(crate) struct PushStatus {
    /// Whether the last round succeeded (`None` before the first).
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    /// Since when every round failed (`None` while delivery works), so a
    /// backlog stuck for long shows.
    pub failing_since: Option<Instant>,
}

impl AgentState {
    fn push_status(&self) -> PushStatus {
        self.push.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn set_push_status(&self, r: Result<(), String>) {
        if let Ok(mut g) = self.push.lock() {
            *g = match r {
                Ok(()) => PushStatus { last_ok: Some(true), ..PushStatus::default() },
                Err(e) => PushStatus {
                    last_ok: Some(false),
                    last_error: Some(e),
                    failing_since: Some(g.failing_since.unwrap_or_else(Instant::now)),
                },
            };
        }
    }
}

/// A started runtime: database open and migrated, workspace read, spool open.
pub struct Agent {
    state: Arc<AgentState>,
    pusher: Arc<push::Pusher>,
    push_every: Duration,
    parent_pid: Option<u32>,
}

impl Agent {
    /// Opens everything `args` names.
    ///
    /// # Errors
    /// [`AgentError`] for the part that failed; never with a secret in it.
    pub async fn start(args: AgentArgs) -> Result<Self, AgentError> {
        crate::telemetry::install_crypto_provider();
        let workspace = workspace::Workspace::decode(args.workspace.as_deref())?;
        let pool = store::connect(args.database_url.expose(), 8)
            .await
            .map_err(|e| AgentError::Database(connect_failure(&e)))?;
        store::migrator().run(&pool).await?;
        let spool =
            spool::Spool::open(&args.spool_path(), args.batch_lines.clamp(1, 1000)).map_err(AgentError::Spool)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()?;
        let llm = llm::Llm::new(http.clone(), &args.proxy_url, args.api_key.clone(), &args.model, args.max_tokens);
        let pusher = push::Pusher::new(http, &args.proxy_url, args.api_key.clone());
        let state = AgentState {
            store: store::Store { pool },
            workspace,
            workspace_hash: args.workspace_hash.clone(),
            instance: args.instance.clone(),
            llm,
            spool,
            gateway_token: args.gateway_token.clone(),
            body_limit: args.body_limit,
            history: args.history,
            credits_remaining: AtomicI64::new(UNKNOWN),
            started: Instant::now(),
            push: Mutex::new(PushStatus::default()),
        };
        Ok(Self {
            state: Arc::new(state),
            pusher: Arc::new(pusher),
            push_every: Duration::from_millis(args.push_millis.max(10)),
            parent_pid: args.parent_pid,
        })
    }

    /// The HTTP API: `/health` and `/healthz` open, the rest behind the
    /// gateway token; bodies above the limit get a JSON 413, an unknown path
    /// a JSON 404 and a known one asked with another method a JSON 405.
    pub fn router(&self) -> Router {
        let st = Arc::clone(&self.state);
        let guarded = Router::new()
            .route("/api/chat", post(chat::chat))
            .route("/api/memory", post(api::remember))
            .route("/api/memory/search", get(api::search))
            .route("/api/memory/daily/{date}", get(api::daily))
            .route("/api/skills", get(api::skills))
            .route("/api/skills/{name}/{action}", post(api::switch_skill))
            .route("/status", get(api::status))
            .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&st), api::require_token));
        Router::new()
            .route("/health", get(api::health))
            .route("/healthz", get(api::health))
            .merge(guarded)
            .fallback(api::not_found)
            .method_not_allowed_fallback(api::method_not_allowed)
            .layer(DefaultBodyLimit::max(st.body_limit))
            .with_state(st)
    }

    /// Delivers what is spooled now (one round); for tests and shutdown.
    ///
    /// # Errors
    /// As [`push::Pusher::round`].
    pub async fn push_now(&self) -> Result<usize, push::PushError> {
        self.pusher.round(&self.state.spool).await
    }

    /// Serves on `listener` until `shutdown` resolves (or the parent named
    /// by `--parent-pid` is gone), pushing transcripts in the background,
    /// then makes one last push attempt.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AgentError> {
        let pushing = tokio::spawn(push_loop(Arc::clone(&self.state), Arc::clone(&self.pusher), self.push_every));
        tracing::info!(addr = %listener.local_addr()?, instance = %self.state.instance, "agent listening");
        let parent = self.parent_pid;
        let stop = async move {
            tokio::select! {
                () = shutdown => {},
                () = parent_gone(parent) => tracing::info!("parent process gone; stopping"),
            }
        };
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(stop).await;
        pushing.abort();
        if let Err(e) = self.push_now().await {
            tracing::warn!(error = %e, "transcripts stay spooled until the next start");
        }
        served?;
        Ok(())
    }
}

/// What kind of connection failure `e` is, in words that quote nothing.
fn connect_failure(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "the URL is not a valid PostgreSQL URL",
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => "the server is not reachable",
        sqlx::Error::Tls(_) => "the TLS handshake failed",
        sqlx::Error::Database(_) => "the server refused the connection (role, password or database)",
        _ => "the connection failed",
    }
}

async fn push_loop(st: Arc<AgentState>, pusher: Arc<push::Pusher>, every: Duration) {
    let mut failures = 0u32;
    loop {
        tokio::time::sleep(push::backoff(every, failures)).await;
        match pusher.round(&st.spool).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(events = n, "transcripts delivered");
                }
                failures = 0;
                st.set_push_status(Ok(()));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "transcripts kept in the spool; retrying");
                st.set_push_status(Err(e.to_string()));
            }
        }
    }
}

/// Resolves once `pid` is no longer this process's parent (never without one).
async fn parent_gone(pid: Option<u32>) {
    let Some(pid) = pid else { return std::future::pending().await };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if std::os::unix::process::parent_id() != pid {
            return;
        }
    }
}

/// `winston agent`: starts and serves until SIGTERM or Ctrl-C.
///
/// # Errors
/// Startup failures (database, workspace, spool, listener).
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let addr = args.listen_addr();
    let agent = Agent::start(args).await?;
    let listener = TcpListener::bind(addr).await?;
    agent.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

impl Agent {
    /// Credits the proxy last reported (`None` before the first LLM call).
    #[must_use]
    pub fn credits_remaining(&self) -> Option<i64> {
        let c = self.state.credits_remaining.load(Ordering::Acquire);
        (c != UNKNOWN).then_some(c)
    }
}
