//! The provisioning engine: drives one TenantInstance through its steps
//! (database, schema, credentials, workspace, service, frontend, health,
//! notify) to Ready, and tears it down in reverse.
//!
//! Outline of a pass (see [`run`]): gate -> observe each wanted step in
//! order -> decide (pure rules in [`progress`] and [`wanted`]) -> act at
//! most what the step needs -> record status. Long platform operations are
//! polled by requeue, never awaited. The Kubernetes wiring (watch,
//! finalizer, leader election, Events, metrics) is the controller's; it
//! calls the engine with [`Deps`] and learns what happened from the
//! returned outcome and the [`Host`] hooks. The engine never imports the
//! controller. Platform detail is `providers`'.
pub mod admin_user;
pub mod connectors;
pub mod credentials;
pub mod deadline;
pub mod downgrade;
pub mod error;
pub mod external;
pub mod frontend;
pub mod history;
pub mod mail;
pub mod migrations;
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

use crate::api::TenantInstance;
use crate::ledger::Ledger;
use crate::plans::PlanCatalog;
use crate::providers::Providers;

pub use error::{Disposition, EngineError};

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
    /// The longest one statement of a tenant's application migrations may
    /// run or wait on a lock before PostgreSQL cancels it (the step then
    /// stalls, `MigrationFailed`, naming the file).
    #[arg(long, env = "WINSTON_MIGRATION_STATEMENT_TIMEOUT_SECONDS", default_value_t = 120)]
    pub migration_statement_timeout_seconds: u64,
    /// Path the agent service answers health checks on.
    #[arg(long, env = "WINSTON_HEALTH_PATH", default_value = "/healthz")]
    pub health_path: String,
    /// Send health checks to `<this>/<service host><health path>` instead of
    /// `https://<service host><health path>` (the emulator serves agent
    /// services there; leave unset with real platforms).
    #[arg(long, env = "WINSTON_HEALTH_BASE_URL")]
    pub health_base_url: Option<String>,
    /// GitHub organisations (or users) a Tenant's frontend repository may
    /// belong to; repeat or comma-separate. Empty refuses every frontend
    /// repository: Vercel builds whatever its GitHub integration can reach,
    /// the operator's private repositories included.
    #[arg(long = "frontend-github-org", env = "WINSTON_FRONTEND_GITHUB_ORGS", value_delimiter = ',')]
    pub frontend_github_orgs: Vec<String>,
    /// Sender of the welcome email.
    #[arg(long, env = "WINSTON_WELCOME_FROM", default_value = "Winston <welcome@winston.dev>")]
    pub welcome_from: String,
    /// Supabase organization slug for tenants on the Supabase database path.
    #[arg(long, env = "WINSTON_SUPABASE_ORGANIZATION")]
    pub supabase_organization: Option<String>,
    /// Reach project `<ref>`'s own APIs (Auth admin, and the URL the
    /// frontend is given) at `<this>/<ref>` instead of
    /// `https://<ref>.supabase.co` (the emulator serves them there; leave
    /// unset with the real platform).
    #[arg(long, env = "WINSTON_SUPABASE_PROJECT_BASE_URL")]
    pub supabase_project_base_url: Option<String>,
    /// Supabase region for new projects.
    #[arg(long, env = "WINSTON_SUPABASE_REGION", default_value = "us-east-1")]
    pub supabase_region: String,
    /// Seconds after an announced create during which a search by marker
    /// that finds nothing is not taken as "never created": project lists
    /// are eventually consistent, so a create whose answer was lost may not
    /// be listed yet, and creating again would duplicate it. The platforms
    /// publish no bound; 30 s is well above the lags seen in practice.
    #[arg(long, env = "WINSTON_LIST_SETTLE_SECONDS", default_value_t = 30)]
    pub list_settle_seconds: u64,
    /// Seconds between re-observations of a Ready instance (jittered +-10 %).
    #[arg(long, env = "WINSTON_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// Seconds between retries of a Stalled instance whose spec did not change.
    #[arg(long, env = "WINSTON_STALLED_RETRY_SECONDS", default_value_t = 300)]
    pub stalled_retry_seconds: u64,
    /// Seconds between polls of a running platform operation.
    #[arg(long, env = "WINSTON_POLL_MILLIS", default_value_t = 2000)]
    pub poll_millis: u64,
    /// Seconds an instance may take to become Ready before it is reported
    /// `ProgressDeadlineExceeded`, when neither its Tenant nor its plan
    /// sets one.
    #[arg(long, env = "WINSTON_PROVISIONING_DEADLINE_SECONDS", default_value_t = 1080)]
    pub provisioning_deadline_seconds: u64,
    /// Where a notification goes when an instance passes its provisioning
    /// deadline (none when unset).
    #[arg(long, env = "WINSTON_OPERATOR_EMAIL")]
    pub operator_email: Option<String>,
    /// Workspace versions kept per instance in the control database
    /// (`winston status --history`, `winston workspace diff`); older ones
    /// are pruned as new ones are recorded.
    #[arg(long, env = "WINSTON_CONFIG_HISTORY", default_value_t = crate::ledger::snapshots::DEFAULT_KEEP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub config_history: u32,
    /// Directory of email templates (`[<plan>.]<welcome|failure>.<subject|txt|html>`);
    /// the built-in ones when unset or for files it lacks.
    #[arg(long, env = "WINSTON_EMAIL_TEMPLATES")]
    pub email_templates: Option<std::path::PathBuf>,
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

/// Everything the steps call: platforms, the ledger, the plan catalog, the
/// settings. Built once per process and shared by every pass.
pub struct Engine {
    pub providers: Providers,
    pub ledger: Ledger,
    pub plans: Arc<PlanCatalog>,
    pub args: EngineArgs,
    /// Health checks: public addresses only, no redirects (see [`crate::outbound`]).
    pub http: crate::outbound::OutboundClient,
    /// The email templates (welcome, failure), loaded at start-up.
    pub mail: mail::Templates,
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

    /// Remembers that this process stalled `ti` at its current generation.
    pub(crate) fn remember_stall(&self, ti: &TenantInstance) {
        self.stalls_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(stall_key(ti));
    }

    /// Whether this process stalled `ti` at its current generation.
    pub(crate) fn saw_stall(&self, ti: &TenantInstance) -> bool {
        self.stalls_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&stall_key(ti))
    }
}

fn stall_key(ti: &TenantInstance) -> String {
    use kube::ResourceExt;
    format!("{}/{}", ti.uid().unwrap_or_default(), ti.metadata.generation.unwrap_or_default())
}

/// What the engine asks of the process that calls it: a metric and the
/// per-object failure memory. The controller implements it; the engine
/// never reaches for the controller's types.
pub trait Host: Send + Sync {
    /// A status write of a TenantInstance reached the API server.
    fn wrote_status(&self);
    /// Counts a failed pass of `ti` and returns how long to wait before the
    /// next one (exponential per object).
    fn backoff_after_failure(&self, ti: &TenantInstance) -> Duration;
    /// Forgets the failures of `ti` after a pass in which no step failed.
    fn reset_backoff(&self, ti: &TenantInstance);
    /// A step converged (`Done`) `seconds` after it started.
    fn step_converged(&self, step: crate::api::StepName, seconds: f64);
    /// An instance became Ready `seconds` after it was created or lost `Ready`.
    fn became_ready(&self, seconds: f64);
    /// The engine is about to write the Secret `namespace/name`.
    fn writing_secret(&self, namespace: &str, name: &str);
    /// That write ended: stored as `resource_version`, or failed (`None`);
    /// its watch event need not start a pass.
    fn wrote_secret(&self, namespace: &str, name: &str, resource_version: Option<&str>);
}

/// Runs `write` of the Secret `namespace/name`, telling `host` before and
/// after (the version stored), so that its watch event starts no other pass.
///
/// # Errors
/// The write's.
pub async fn write_secret(
    host: &dyn Host,
    namespace: &str,
    name: &str,
    write: impl std::future::Future<Output = kube::Result<k8s_openapi::api::core::v1::Secret>>,
) -> kube::Result<k8s_openapi::api::core::v1::Secret> {
    host.writing_secret(namespace, name);
    let result = write.await;
    let rv = result.as_ref().ok().and_then(|s| s.metadata.resource_version.clone());
    host.wrote_secret(namespace, name, rv.as_deref());
    result
}

/// Exactly what one call of the engine works with: the shared [`Engine`],
/// a Kubernetes client (the instance's status and Secrets) and the caller's
/// [`Host`].
pub struct Deps<'a> {
    pub engine: &'a Engine,
    pub client: kube::Client,
    pub host: &'a dyn Host,
}

/// The template values every email of `ti` may name, from its spec and
/// status (never a secret: the API key is added by the welcome email alone).
#[must_use]
pub fn mail_values(
    ti: &TenantInstance,
    plan: &str,
    proxy_url: &str,
    status: &crate::api::TenantInstanceStatus,
) -> mail::Values {
    use kube::ResourceExt;
    let p = &ti.spec.profile;
    let urls = status.urls.clone().unwrap_or_default();
    let mut v = mail::Values::default();
    v.set("display_name", p.display_name.clone())
        .set("agent_name", p.persona.as_ref().map_or_else(|| "Winston".to_string(), |x| x.name.clone()))
        .set("plan", plan)
        .set("proxy_url", proxy_url)
        .set("instance", ti.name_any());
    if let Some(u) = urls.frontend.clone().or_else(|| urls.service.clone()) {
        v.set("agent_url", u);
    }
    if let Some(u) = urls.service {
        v.set("service_url", u);
    }
    if let Some(u) = urls.frontend {
        v.set("frontend_url", u);
    }
    v
}
