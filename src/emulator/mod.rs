//! `winston emulator`: local stand-ins for Railway, Neon, Vercel, Supabase
//! and Resend on ONE loopback port, a path prefix per platform, speaking
//! the wire formats of `reference/provider-apis.md`.
//!
//! Test endpoints: `GET /_emulator/objects` (every live object per platform
//! and kind, plus per platform the accepted writes and all authorized
//! requests) and
//! `/_emulator/faults` (see [`faults`]). State is in memory and optionally
//! persisted to a JSON file. The mock LLM upstreams ([`llm`]: Anthropic
//! under `/anthropic`, OpenAI-compatible under `/openai`, what they generated
//! at `GET /_mock/stats`) are served by the same router, and so are sample
//! business websites for the analyzer ([`sites`], under `/sites`).
pub mod apps;
pub mod context;
pub mod db_pool;
pub mod faults;
pub mod graphql;
pub mod limits;
pub mod llm;
pub mod neon;
pub mod railway;
pub mod railway_schema;
pub mod resend;
pub mod runtimes;
pub mod sites;
pub mod sql;
pub mod stripe;
pub mod stripe_delivery;
pub mod supabase;
pub mod supabase_auth;
pub mod vercel;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use crate::platform::Platform;
pub use context::{DEFAULT_TOKEN, Emulator, EmulatorConfig, EmulatorError};

/// Base path of the mock Anthropic Messages API (`{base}/v1/messages`).
pub const ANTHROPIC_PATH: &str = "/anthropic";
/// Base path of the mock OpenAI-compatible API (`{base}/v1/chat/completions`).
pub const OPENAI_PATH: &str = "/openai";
/// Path of the Railway GraphQL endpoint on the emulator.
pub const RAILWAY_PATH: &str = "/railway/graphql/v2";
/// Base path of the Neon API v2 on the emulator.
pub const NEON_PATH: &str = "/neon/api/v2";
/// Base path of the Vercel API on the emulator.
pub const VERCEL_PATH: &str = "/vercel";
/// Base path of the Supabase Management API on the emulator.
pub const SUPABASE_PATH: &str = "/supabase";
/// The running agent runtimes: `{"running": {service id: port}, "started", "max"}`.
pub const RUNTIMES_PATH: &str = "/_emulator/runtimes";
/// Base path under which each Supabase project's own APIs (Auth) are
/// served, as `{base}/<ref>/auth/v1/...` (the stand-in for `https://<ref>.supabase.co`).
pub const SUPABASE_PROJECTS_PATH: &str = "/supabase-projects";
/// Base path of the Resend API on the emulator.
pub const RESEND_PATH: &str = "/resend";

/// Where `platform` is served on the emulator: one of the `*_PATH` constants.
#[must_use]
pub fn platform_path(platform: Platform) -> &'static str {
    match platform {
        Platform::Railway => RAILWAY_PATH,
        Platform::Neon => NEON_PATH,
        Platform::Vercel => VERCEL_PATH,
        Platform::Supabase => SUPABASE_PATH,
        Platform::Resend => RESEND_PATH,
    }
}

/// Shared handler state.
pub type Shared = Arc<Emulator>;

/// The complete emulator: every platform under its prefix plus `/_emulator`.
pub fn router(emu: Shared) -> Router {
    router_with_llm_stats(emu).0
}

/// [`router`], and the counters of its mock LLM upstreams.
pub fn router_with_llm_stats(emu: Shared) -> (Router, Arc<llm::MockStats>) {
    let (llm, llm_stats) = llm::router_with_stats(emu.config.llm.clone());
    let router = Router::new()
        .nest(NEON_PATH, neon::router())
        .route(RAILWAY_PATH, post(railway::graphql))
        .nest(VERCEL_PATH, vercel::router())
        .nest(RESEND_PATH, resend::router())
        .nest(SUPABASE_PATH, supabase::router())
        .nest(
            stripe::STRIPE_PATH,
            stripe::router(stripe::StripeEmulator::new(&emu.config.stripe, emu.config.tokens.clone())),
        )
        .nest(SUPABASE_PROJECTS_PATH, supabase_auth::router())
        .route("/_emulator/objects", get(objects))
        .route(RUNTIMES_PATH, get(|State(emu): State<Shared>| async move { Json(emu.runtimes.report()) }))
        .route(&format!("{}/{{host}}/{{*path}}", apps::APPS_PATH), any(apps::app))
        .route("/_emulator/faults", get(list_faults).post(arm_fault).delete(clear_faults))
        .with_state(emu)
        .merge(llm)
        .merge(sites::router());
    (router, llm_stats)
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
        "supabase_projects": format!("{base}{SUPABASE_PROJECTS_PATH}"),
        "resend": format!("{base}{RESEND_PATH}"),
        "anthropic": format!("{base}{ANTHROPIC_PATH}"),
        "openai": format!("{base}{OPENAI_PATH}"),
        "stripe": format!("{base}{}", stripe::STRIPE_PATH),
        "llm_stats": format!("{base}{}", llm::STATS_PATH),
        "objects": format!("{base}/_emulator/objects"),
        "faults": format!("{base}/_emulator/faults"),
        "apps": format!("{base}{}", apps::APPS_PATH),
        "sites": format!("{base}{}", sites::SITES_PATH),
    })
}

/// Serves the emulator on `listener` until the task is dropped.
///
/// # Errors
/// When the state file or backing PostgreSQL cannot be opened, or serving fails.
pub async fn serve(listener: tokio::net::TcpListener, config: EmulatorConfig) -> Result<(), EmulatorError> {
    let emu = Arc::new(Emulator::new(config).await?);
    runtimes::supervise(&emu);
    axum::serve(listener, router(emu)).await?;
    Ok(())
}

/// A running in-process emulator (tests, demo): aborted on drop.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub emulator: Shared,
    /// What the mock LLM upstreams generated.
    pub llm_stats: Arc<llm::MockStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of `platform` on this emulator (what a client's
    /// `base_url` is set to).
    #[must_use]
    pub fn platform_url(&self, platform: Platform) -> String {
        format!("{}{}", self.base(), platform_path(platform))
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
    runtimes::supervise(&emulator);
    let (app, llm_stats) = router_with_llm_stats(emulator.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "emulator stopped");
        }
    });
    Ok(Running { addr, emulator, llm_stats, task })
}

/// Command-line options of `winston emulator`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 = pick a free one; the URLs are printed).
    #[arg(long, env = "WINSTON_EMULATOR_LISTEN", default_value = "127.0.0.1:4010")]
    pub listen: SocketAddr,
    /// Accepted API token (repeatable or comma-separated); default `winston-emulator`.
    #[arg(long = "token", env = "WINSTON_EMULATOR_TOKENS", value_delimiter = ',', hide_env_values = true)]
    pub tokens: Vec<String>,
    /// Milliseconds an asynchronous lifecycle takes to settle (Neon
    /// operations, Railway deployments, Vercel builds, Supabase projects);
    /// 0 = instant, for benchmarks.
    #[arg(long, env = "WINSTON_EMULATOR_ASYNC_DELAY_MS", default_value_t = 0)]
    pub async_delay_ms: u64,
    /// Superuser URL of the PostgreSQL where Neon roles and databases are
    /// created for real (without it, Neon URIs point nowhere).
    #[arg(long, env = "WINSTON_EMULATOR_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Empty databases to create at start, so that new projects claim one
    /// instead of copying the template while being measured (benchmarks).
    #[arg(long, env = "WINSTON_EMULATOR_DATABASE_POOL", default_value_t = 0)]
    pub database_pool: usize,
    /// JSON file keeping the state across emulator restarts.
    #[arg(long, env = "WINSTON_EMULATOR_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Requests per minute per platform before answering 429.
    #[arg(long, default_value_t = 100_000)]
    pub rate_limit_per_minute: u32,
    /// Delay before each mock LLM response starts, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub llm_latency_ms: u64,
    /// Delay between streamed mock LLM tokens, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub llm_token_delay_ms: u64,
    /// Tokens a mock LLM reply has when the request does not ask for a count.
    #[arg(long, default_value_t = 16)]
    pub llm_output_tokens: u64,
    /// Key the mock LLM upstreams require (`x-api-key` or bearer); any key when unset.
    #[arg(long, env = "WINSTON_EMULATOR_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Webhook endpoint the Stripe emulator delivers events to (more can be
    /// added with `POST /stripe/v1/webhook_endpoints`).
    #[arg(long, env = "WINSTON_EMULATOR_STRIPE_WEBHOOK_URL", requires = "stripe_webhook_secret")]
    pub stripe_webhook_url: Option<String>,
    /// Signing secret of that endpoint (`whsec_...`).
    #[arg(long, env = "WINSTON_EMULATOR_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,
    /// Wait before a failed Stripe delivery is retried, doubled each time, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub stripe_retry_base_ms: u64,
    /// Attempts per Stripe event and endpoint, the first included.
    #[arg(long, default_value_t = 8)]
    pub stripe_max_attempts: u32,
    /// Most real agent runtimes (`winston agent` processes) at once; 0 = none.
    #[arg(long, env = "WINSTON_EMULATOR_AGENT_RUNTIMES", default_value_t = 8)]
    pub agent_runtimes: usize,
    /// Image repositories run as the reference agent (comma-separated).
    #[arg(long = "agent-image", env = "WINSTON_EMULATOR_AGENT_IMAGES", value_delimiter = ',', default_value = runtimes::REFERENCE_IMAGE)]
    pub agent_images: Vec<String>,
    /// Resend requests per second per team (Resend's published default: 2).
    #[arg(long, default_value_t = 2)]
    pub resend_per_second: u32,
    /// Emails a Resend team may send per UTC day (none by default).
    #[arg(long)]
    pub resend_daily_quota: Option<u32>,
    /// Milliseconds before a new project shows in project lists (eventual
    /// consistency; it can be read by id at once).
    #[arg(long, default_value_t = 0)]
    pub list_lag_ms: u64,
    /// Milliseconds a new Supabase project stays COMING_UP (default: the
    /// async delay; the real platform takes minutes: `make demo` scales it).
    #[arg(long, env = "WINSTON_EMULATOR_SUPABASE_COMING_UP_MS")]
    pub supabase_coming_up_ms: Option<u64>,
    /// Railway plan whose published limits every token gets.
    #[arg(long, value_enum, default_value_t = limits::RailwayPlan::Pro)]
    pub railway_plan: limits::RailwayPlan,
    /// Supabase Management API requests per minute per token (Supabase: 120); 0 = no limit.
    #[arg(long, default_value_t = 120)]
    pub supabase_per_minute: u32,
    /// Vercel project creations per minute per token; 0 = no limit.
    #[arg(long, default_value_t = 100)]
    pub vercel_project_creates_per_minute: u32,
    /// Vercel plan whose deployments per day every token gets (Hobby 100, Pro 6000).
    #[arg(long, value_enum, default_value_t = limits::VercelPlan::Pro)]
    pub vercel_plan: limits::VercelPlan,
    /// Vercel deployment creations per minute per token; 0 = no limit.
    #[arg(long, default_value_t = 60)]
    pub vercel_deployment_creates_per_minute: u32,
}

impl EmulatorArgs {
    /// The emulator configuration these options describe.
    #[must_use]
    pub fn config(&self) -> EmulatorConfig {
        EmulatorConfig {
            tokens: if self.tokens.is_empty() { vec![DEFAULT_TOKEN.into()] } else { self.tokens.clone() },
            async_delay_ms: self.async_delay_ms,
            postgres_url: self.postgres_url.clone(),
            database_pool: self.database_pool,
            state_file: self.state_file.clone(),
            rate_limit_per_minute: self.rate_limit_per_minute,
            llm: llm::LlmMockConfig {
                latency: std::time::Duration::from_millis(self.llm_latency_ms),
                token_delay: std::time::Duration::from_millis(self.llm_token_delay_ms),
                default_output_tokens: self.llm_output_tokens,
                api_key: self.llm_api_key.clone(),
                ..llm::LlmMockConfig::default()
            },
            stripe: stripe::StripeConfig {
                webhook: self.stripe_webhook_url.clone().zip(self.stripe_webhook_secret.clone()),
                delivery: stripe_delivery::DeliveryConfig {
                    retry_base: std::time::Duration::from_millis(self.stripe_retry_base_ms),
                    max_attempts: self.stripe_max_attempts,
                },
            },
            runtimes: runtimes::RuntimeConfig {
                agent_bin: (self.agent_runtimes > 0).then(std::env::current_exe).and_then(Result::ok),
                images: self.agent_images.clone(),
                max: self.agent_runtimes,
                ..runtimes::RuntimeConfig::default()
            },
            resend_per_second: self.resend_per_second,
            resend_daily_quota: self.resend_daily_quota,
            resend_send_ms: 0,
            list_lag_ms: self.list_lag_ms,
            supabase_coming_up_ms: self.supabase_coming_up_ms,
            limits: limits::PlatformLimits {
                supabase: per_minute(self.supabase_per_minute),
                railway_plan: self.railway_plan,
                vercel_project_creates: per_minute(self.vercel_project_creates_per_minute),
                vercel_deployment_creates: per_minute(self.vercel_deployment_creates_per_minute),
                vercel_plan: self.vercel_plan,
                ..limits::PlatformLimits::default()
            },
        }
    }
}

/// A per-minute limit; 0 = none.
fn per_minute(requests: u32) -> Option<limits::Limit> {
    (requests > 0).then(|| limits::Limit::per_minute(requests))
}

/// The start banner: one `WINSTON_<PLATFORM>_BASE_URL=<url>` line per
/// platform (the variables the controller reads for its platform clients,
/// so the output can be sourced by a shell), the LLM upstreams, the
/// test endpoints, and a final `ready` line.
#[must_use]
pub fn banner(addr: SocketAddr) -> String {
    let urls = base_urls(addr);
    let mut out = String::new();
    for key in ["railway", "neon", "vercel", "supabase", "resend", "anthropic", "openai", "objects", "faults"] {
        let url = urls[key].as_str().unwrap_or_default();
        let name = match key {
            "objects" | "faults" => format!("WINSTON_EMULATOR_{}_URL", key.to_uppercase()),
            "anthropic" | "openai" => format!("WINSTON_MOCK_{}_BASE_URL", key.to_uppercase()),
            _ => format!("WINSTON_{}_BASE_URL", key.to_uppercase()),
        };
        out.push_str(&format!("{name}={url}\n"));
    }
    out.push_str(&format!("WINSTON_STRIPE_API_BASE={}\n", urls["stripe"].as_str().unwrap_or_default()));
    out.push_str(&format!("# winston emulator ready on http://{addr}\n"));
    out
}

/// Runs `winston emulator`: binds, prints [`banner`] on stdout, serves until
/// SIGTERM or Ctrl-C, then stops accepting and finishes open requests.
///
/// # Errors
/// As [`serve`].
pub async fn run(args: EmulatorArgs) -> Result<(), EmulatorError> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let emu = Arc::new(Emulator::new(args.config()).await?);
    runtimes::supervise(&emu);
    print!("{}", banner(listener.local_addr()?));
    {
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    axum::serve(listener, router(emu.clone())).with_graceful_shutdown(shutdown_signal()).await?;
    emu.runtimes.stop_all();
    tracing::info!("emulator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "failed to listen for SIGTERM; only Ctrl-C stops the emulator");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn objects(State(emu): State<Shared>) -> Json<Value> {
    use Platform as P;
    let mut body = emu.read(|w| {
        let count = |p| w.mutations.get(&p).copied().unwrap_or(0);
        let req = |p| emu.requests(p);
        json!({
            "neon": {"objects": w.neon.objects(), "mutations": count(P::Neon), "requests": req(P::Neon)},
            "railway": {"objects": w.railway.objects(), "mutations": count(P::Railway), "requests": req(P::Railway)},
            "vercel": {"objects": w.vercel.objects(), "mutations": count(P::Vercel), "requests": req(P::Vercel)},
            "resend": {"objects": w.resend.objects(), "mutations": count(P::Resend), "requests": req(P::Resend)},
            "supabase": {"objects": w.supabase.objects(), "mutations": count(P::Supabase), "requests": req(P::Supabase)},
            "supabase_auth": {"objects": w.supabase_auth.objects()},
        })
    });
    // Refusals by the published limits: `limits.<platform>.<limit>.{refused, early}`.
    for ((platform, counter), count) in emu.refusals() {
        body["limits"][platform.to_string()][counter] = json!(count);
    }
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
