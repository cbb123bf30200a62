//! `winston emulator`: local stand-ins for Railway, Neon, Vercel, Supabase
//! and Resend on ONE loopback port, a path prefix per platform, speaking
//! the wire formats of `reference/provider-apis.md`.
//!
//! Test endpoints: `GET /_emulator/objects` (every live object per platform
//! and kind, plus the mutation counter per platform) and
//! `/_emulator/faults` (see [`faults`]). State is in memory and optionally
//! persisted to a JSON file. The mock LLM upstreams live in `llm.rs`, owned
//! by the proxy side; they are merged into [`router`] at the marked place.
pub mod context;
pub mod faults;
pub mod graphql;
pub mod neon;
pub mod railway;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};

pub use context::{DEFAULT_TOKEN, Emulator, EmulatorConfig, EmulatorError};

/// Path of the Railway GraphQL endpoint on the emulator.
pub const RAILWAY_PATH: &str = "/railway/graphql/v2";
/// Base path of the Neon API v2 on the emulator.
pub const NEON_PATH: &str = "/neon/api/v2";
/// Base path of the Vercel API on the emulator.
pub const VERCEL_PATH: &str = "/vercel";
/// Base path of the Supabase Management API on the emulator.
pub const SUPABASE_PATH: &str = "/supabase";
/// Base path of the Resend API on the emulator.
pub const RESEND_PATH: &str = "/resend";

/// Shared handler state.
pub type Shared = Arc<Emulator>;

/// The complete emulator: every platform under its prefix plus `/_emulator`.
pub fn router(emu: Shared) -> Router {
    let app = Router::new()
        .nest(NEON_PATH, neon::router())
        .route(RAILWAY_PATH, post(railway::graphql))
        .route("/_emulator/objects", get(objects))
        .route("/_emulator/faults", get(list_faults).post(arm_fault).delete(clear_faults))
        .with_state(emu);
    // MERGE POINT (mock LLM upstreams): the lead adds `.merge(llm::router(..))`
    // here; src/emulator/llm.rs serves `/anthropic/...` and `/openai/...`.
    app
}

/// Base URLs of every platform for an emulator at `addr`, as printed on start.
#[must_use]
pub fn base_urls(addr: SocketAddr) -> Value {
    let base = format!("http://{addr}");
    json!({
        "base": base,
        "railway": format!("{base}{RAILWAY_PATH}"),
        "neon": format!("{base}{NEON_PATH}"),
        "vercel": format!("{base}{VERCEL_PATH}"),
        "supabase": format!("{base}{SUPABASE_PATH}"),
        "resend": format!("{base}{RESEND_PATH}"),
        "objects": format!("{base}/_emulator/objects"),
        "faults": format!("{base}/_emulator/faults"),
    })
}

/// Serves the emulator on `listener` until the task is dropped.
///
/// # Errors
/// When the state file or backing PostgreSQL cannot be opened, or serving fails.
pub async fn serve(listener: tokio::net::TcpListener, config: EmulatorConfig) -> Result<(), EmulatorError> {
    let emu = Arc::new(Emulator::new(config).await?);
    axum::serve(listener, router(emu)).await?;
    Ok(())
}

/// A running in-process emulator (tests, demo): aborted on drop.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub emulator: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds 127.0.0.1:0 and serves in a background task.
///
/// # Errors
/// As [`serve`].
pub async fn spawn(config: EmulatorConfig) -> Result<Running, EmulatorError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let emulator = Arc::new(Emulator::new(config).await?);
    let app = router(emulator.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "emulator stopped");
        }
    });
    Ok(Running { addr, emulator, task })
}

/// Command-line options of `winston emulator`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 = pick a free one; the URLs are printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Accepted API token (repeatable); default `winston-emulator`.
    #[arg(long = "token", env = "WINSTON_EMULATOR_TOKENS", value_delimiter = ',')]
    pub tokens: Vec<String>,
    /// Milliseconds an asynchronous lifecycle takes (0 = instant).
    #[arg(long, default_value_t = 0)]
    pub async_delay_ms: u64,
    /// Superuser URL of the PostgreSQL where Neon roles and databases are created.
    #[arg(long, env = "WINSTON_EMULATOR_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// JSON file keeping the state across emulator restarts.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Requests per minute per platform before answering 429.
    #[arg(long, default_value_t = 100_000)]
    pub rate_limit_per_minute: u32,
}

/// Runs `winston emulator`: binds, prints the base URLs as one JSON line on
/// stdout, serves until killed.
///
/// # Errors
/// As [`serve`].
pub async fn run(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let config = EmulatorConfig {
        tokens: if args.tokens.is_empty() { vec![DEFAULT_TOKEN.into()] } else { args.tokens },
        async_delay_ms: args.async_delay_ms,
        postgres_url: args.postgres_url,
        state_file: args.state_file,
        rate_limit_per_minute: args.rate_limit_per_minute,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let emu = Arc::new(Emulator::new(config).await?);
    println!("{}", base_urls(listener.local_addr()?));
    axum::serve(listener, router(emu)).await?;
    Ok(())
}

/// `winston emulator` from a synchronous `main`: a multi-threaded runtime around [`run`].
///
/// # Errors
/// As [`run`].
pub fn main(args: EmulatorArgs) -> Result<(), EmulatorError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn objects(State(emu): State<Shared>) -> Json<Value> {
    let body = emu.read(|w| {
        let count = |p| w.mutations.get(&p).copied().unwrap_or(0);
        use crate::providers::Platform as P;
        json!({
            "neon": {"objects": w.neon.objects(), "mutations": count(P::Neon)},
            "railway": {"objects": w.railway.objects(), "mutations": count(P::Railway)},
        })
    });
    Json(body)
}

async fn list_faults(State(emu): State<Shared>) -> Json<Value> {
    Json(json!({"faults": emu.faults.list()}))
}

async fn arm_fault(State(emu): State<Shared>, Json(fault): Json<faults::Fault>) -> Json<Value> {
    emu.faults.arm(fault);
    Json(json!({"faults": emu.faults.list()}))
}

async fn clear_faults(State(emu): State<Shared>) -> Json<Value> {
    emu.faults.clear();
    Json(json!({"faults": []}))
}
