//! `winston intake`: a paid Stripe checkout becomes a `Tenant`. Serves
//! `POST /stripe/webhook` (signed events) and turns each into at most one
//! idempotent Tenant write in its namespace: create on
//! `checkout.session.completed`, plan and pause on
//! `customer.subscription.updated` and `invoice.payment_failed`, delete (at
//! once or after a grace period) on `customer.subscription.deleted`.
//!
//! It provisions and credits nothing itself: the controller reconciles
//! the Tenants it writes. It uses `api` and `names` for the Tenant, `kube`
//! to write it, and its own tables in Winston's control database to handle
//! each event id once and never apply an older subscription state over a
//! newer one.
pub mod config;
pub mod event;
pub mod grace;
pub mod http;
pub mod metrics;
pub mod process;
pub mod signature;
pub mod store;
pub mod stripe_api;
pub mod tenants;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use config::{CancelPolicy, IntakeConfig};
pub use process::{Outcome, Processor};
pub use signature::SigningSecret;
pub use stripe_api::{ApiKey, StripeApi};

/// Command-line options of `winston intake`. Secrets come from the
/// environment (the chart fills it from Kubernetes Secrets), never flags.
#[derive(clap::Args, Debug, Clone)]
pub struct IntakeArgs {
    /// Address of the webhook listener (`POST /stripe/webhook`).
    #[arg(long, env = "WINSTON_INTAKE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "WINSTON_INTAKE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Namespace the Tenants are created in.
    #[arg(long, env = "WINSTON_INTAKE_NAMESPACE")]
    pub namespace: String,
    /// The intake configuration file (price -> plan map, cancellation policy).
    #[arg(long, env = "WINSTON_INTAKE_CONFIG")]
    pub config: PathBuf,
    /// PostgreSQL URL of Winston's control database.
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
    pub database_url: crate::ledger::DatabaseUrl,
    /// Apply the control-database migrations on start.
    #[arg(long)]
    pub migrate: bool,
    /// The webhook endpoint's signing secret (`whsec_...`).
    #[arg(long = "webhook-secret", env = "WINSTON_STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    pub webhook_secret: SigningSecret,
    /// The previous signing secret, accepted as well while a rotation is in progress.
    #[arg(long = "previous-webhook-secret", env = "WINSTON_STRIPE_WEBHOOK_SECRET_PREVIOUS", hide_env_values = true, value_parser = secret)]
    pub previous_webhook_secret: Option<SigningSecret>,
    /// Stripe API key that can read subscriptions (a restricted key is enough).
    #[arg(long = "stripe-api-key", env = "WINSTON_STRIPE_API_KEY", hide_env_values = true, value_parser = api_key)]
    pub stripe_api_key: ApiKey,
    /// Base URL of the Stripe API (the emulator's `/stripe` in tests and demos).
    #[arg(long, env = "WINSTON_STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// Accepted age (either way) of a signature's timestamp, in seconds.
    #[arg(long, default_value_t = signature::DEFAULT_TOLERANCE_SECS)]
    pub tolerance_secs: i64,
    /// How often due grace-period deletions are looked for, in seconds.
    #[arg(long, default_value_t = 30)]
    pub grace_sweep_secs: u64,
    /// Connections to the control database.
    #[arg(long, default_value_t = 4)]
    pub db_connections: u32,
}

// On a bad value clap prints these messages, never the value itself.
fn secret(s: &str) -> Result<SigningSecret, String> {
    if s.trim().is_empty() { Err("the signing secret is empty".into()) } else { Ok(SigningSecret::new(s)) }
}

fn api_key(s: &str) -> Result<ApiKey, String> {
    if s.trim().is_empty() { Err("the API key is empty".into()) } else { Ok(ApiKey::new(s)) }
}

/// Errors starting intake.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Stripe(#[from] stripe_api::StripeApiError),
    #[error("failed to build the Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("failed to serve: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `winston intake` until SIGTERM or Ctrl-C.
///
/// # Errors
/// [`IntakeError`] when the configuration, the database, the Kubernetes
/// client or a listener cannot be set up.
pub async fn run(args: IntakeArgs) -> Result<(), IntakeError> {
    let config = IntakeConfig::load(&args.config)?;
    let store = store::Store::connect(args.database_url.expose(), args.db_connections).await?;
    if args.migrate {
        store.migrate().await?;
    }
    let client = kube::Client::try_default().await?;
    let processor = Processor {
        config,
        namespace: args.namespace.clone(),
        store: store.clone(),
        tenants: tenants::Tenants::new(client.clone(), &args.namespace),
        stripe: StripeApi::new(&args.stripe_api_base, args.stripe_api_key.clone())?,
    };
    let secrets = std::iter::once(args.webhook_secret.clone()).chain(args.previous_webhook_secret.clone()).collect();
    let intake = Arc::new(http::Intake {
        processor,
        secrets,
        tolerance_secs: args.tolerance_secs,
        metrics: metrics::Metrics::default(),
    });
    let sweeper = tokio::spawn(grace::run(
        store,
        client,
        intake.metrics.clone(),
        Duration::from_secs(args.grace_sweep_secs.max(1)),
    ));
    let public = tokio::net::TcpListener::bind(args.listen).await?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen).await?;
    tracing::info!(listen = %public.local_addr()?, admin = %admin.local_addr()?, namespace = %args.namespace, "intake serving");
    let admin_router = http::admin_router(intake.clone());
    let admin_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, admin_router).await {
            tracing::error!(error = %e, "intake admin listener stopped");
        }
    });
    let result = axum::serve(public, http::router(intake)).with_graceful_shutdown(shutdown_signal()).await;
    sweeper.abort();
    admin_task.abort();
    result?;
    tracing::info!("intake stopped");
    Ok(())
}

async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "failed to listen for SIGTERM; only Ctrl-C stops intake");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
