//! The provisioning engine: drives one TenantInstance through its steps
//! (database, schema, credentials, workspace, service, frontend, health,
//! notify) to Ready, and tears it down in reverse.
//!
//! Outline of a pass (see [`run`]): observe each wanted step in order ->
//! decide (pure rules in [`progress`] and [`wanted`]) -> apply at most what
//! the step needs -> record status. Long platform operations are polled by
//! requeue, never awaited. The Kubernetes wiring (watch, finalizer, leader
//! election) is the controller's; platform detail is `providers`'.
pub mod credentials;
pub mod external;
pub mod frontend;
pub mod progress;
pub mod record;
pub mod run;
pub mod schema;
pub mod steps;
pub mod supabase;
pub mod teardown;
pub mod wanted;
pub mod workspace;

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{Ledger, LedgerError};
use crate::plans::PlanCatalog;
use crate::providers::{ProviderError, Providers};

/// Engine configuration (flattened into `winston controller`'s flags).
#[derive(Clone, Debug, clap::Args)]
pub struct EngineArgs {
    /// Base URL of `winston proxy` as tenants' agents reach it.
    #[arg(long, env = "WINSTON_PROXY_URL", default_value = "http://winston-proxy.winston-system:8080")]
    pub proxy_url: String,
    /// Agent image when a Tenant names none.
    #[arg(long, env = "WINSTON_AGENT_IMAGE", default_value = "ghcr.io/winston-dev/agent:1.4.0")]
    pub agent_image: String,
    /// Neon region when a Tenant names none.
    #[arg(long, env = "WINSTON_NEON_REGION", default_value = "aws-us-east-2")]
    pub neon_region: String,
    /// PostgreSQL major version when a Tenant names none.
    #[arg(long, env = "WINSTON_POSTGRES_VERSION", default_value_t = 16)]
    pub postgres_version: u64,
    /// Path the agent service answers health checks on.
    #[arg(long, env = "WINSTON_HEALTH_PATH", default_value = "/healthz")]
    pub health_path: String,
    /// Send health checks to `<this>/<service host><health path>` instead of
    /// `https://<service host><health path>` (the emulator serves agent
    /// services there; leave unset with real platforms).
    #[arg(long, env = "WINSTON_HEALTH_BASE_URL")]
    pub health_base_url: Option<String>,
    /// Sender of the welcome email.
    #[arg(long, env = "WINSTON_WELCOME_FROM", default_value = "Winston <welcome@winston.dev>")]
    pub welcome_from: String,
    /// Supabase organization slug for tenants on the Supabase database path.
    #[arg(long, env = "WINSTON_SUPABASE_ORGANIZATION")]
    pub supabase_organization: Option<String>,
    /// Supabase region for new projects.
    #[arg(long, env = "WINSTON_SUPABASE_REGION", default_value = "us-east-1")]
    pub supabase_region: String,
    /// Seconds between re-observations of a Ready instance (jittered +-10 %).
    #[arg(long, env = "WINSTON_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// Seconds between retries of a Stalled instance whose spec did not change.
    #[arg(long, env = "WINSTON_STALLED_RETRY_SECONDS", default_value_t = 300)]
    pub stalled_retry_seconds: u64,
    /// Seconds between polls of a running platform operation.
    #[arg(long, env = "WINSTON_POLL_MILLIS", default_value_t = 2000)]
    pub poll_millis: u64,
}

impl EngineArgs {
    /// The arguments' defaults (for tests and embedding).
    #[must_use]
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: EngineArgs,
        }
        Wrap::parse_from(["winston"]).args
    }
}

/// Everything the steps call: platforms, the ledger, the plan catalog.
pub struct Engine {
    pub providers: Providers,
    pub ledger: Ledger,
    pub plans: Arc<PlanCatalog>,
    pub args: EngineArgs,
    pub http: reqwest::Client,
    /// Stalls this process recorded (`uid/generation`): only those wait for
    /// `--stalled-retry-seconds`; a restarted controller (e.g. with a fixed
    /// token) retries every stalled instance once at once.
    pub stalls_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Engine {
    /// Poll interval of running operations.
    #[must_use]
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.args.poll_millis.max(50))
    }

    /// The first look at an operation that just started: an eighth of the poll.
    #[must_use]
    pub fn first_poll(&self) -> Duration {
        (self.poll() / 8).max(Duration::from_millis(50))
    }
}

/// Why a step did not converge in this pass.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("failed to call the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("failed to use the ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Worth retrying with backoff.
    #[error("{0}")]
    Retryable(String),
    /// A platform object failed (e.g. a deployment); retried with backoff.
    #[error("{0}")]
    Failed(String),
    /// Blocked until the spec or the platform credentials change.
    #[error("{message}")]
    Stalled { reason: &'static str, message: String },
    #[error("failed to read the object: {0}")]
    Invalid(&'static str),
}

impl EngineError {
    /// Terminal errors stall the instance instead of retrying quickly.
    #[must_use]
    pub fn stalled(&self) -> Option<(&'static str, String)> {
        match self {
            Self::Stalled { reason, message } => Some((reason, message.clone())),
            Self::Provider(e) if !e.is_retryable() => Some((
                match e.category() {
                    "unauthorized" => "Unauthorized",
                    "not_found" => "NotFound",
                    _ => "Rejected",
                },
                e.to_string(),
            )),
            _ => None,
        }
    }

    /// How long the platform asked us to wait, if it did.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Provider(e) => e.retry_after(),
            _ => None,
        }
    }

    /// A platform asked us to slow down or wait for its own operation: not a
    /// failure (DESIGN.md: 429 is never a failure), just a later retry.
    #[must_use]
    pub fn is_throttle(&self) -> bool {
        matches!(self, Self::Provider(e) if matches!(e.category(), "rate_limited" | "locked" | "circuit_open"))
    }

    /// Whether this is a 409 from our own optimistic status write.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}
