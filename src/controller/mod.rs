//! `winston controller`: the reconcilers, wired to the API server with
//! leader election, bounded concurrency, probes, metrics and graceful
//! shutdown. Each kind's reconcile lives in its own module.
pub mod context;
pub mod credit_ledger;
pub mod credit_ledger_plan;
pub mod error;
pub mod finalizer;
pub mod http;
pub mod instance;
pub mod leader;
pub mod metrics;
pub mod tenant;
pub mod tenant_plan;

pub use error::{Error, Result};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Config as RuntimeConfig, Controller};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use kube::{Api, Client, ResourceExt};

use k8s_openapi::api::core::v1::Secret;

use crate::api::{CreditLedger, Tenant, TenantInstance};
use crate::names;
use context::Context;
use leader::{LeaderElector, LeaseConfig};

/// Command-line / environment configuration of the controller.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WINSTON_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "WINSTON_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Most reconciles running at once (per kind).
    #[arg(long, env = "WINSTON_MAX_CONCURRENT_RECONCILES", default_value_t = 8)]
    pub max_concurrent_reconciles: u16,
    /// Elect a leader with a Lease so only one replica acts.
    #[arg(long, env = "WINSTON_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, then the watch namespace, then `default`).
    #[arg(long, env = "WINSTON_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "WINSTON_LEASE_NAME", default_value = crate::names::LEADER_LEASE)]
    pub lease_name: String,
    /// Seconds a lease stays valid without renewal.
    #[arg(long, env = "WINSTON_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// This replica's identity in the Lease (default: hostname plus a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    #[command(flatten)]
    pub ledger: credit_ledger::LedgerArgs,
    #[command(flatten)]
    pub engine: crate::engine::EngineArgs,
}

/// Runs the controller until SIGTERM/SIGINT (exit 0) or until leadership is
/// lost (error: the process must restart rather than act without the lease).
///
/// # Errors
/// When the API server cannot be reached, the probe port cannot be bound, or
/// leadership is lost.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let ledger = credit_ledger::connect(&args.ledger).await?;
    let plans = crate::plans::PlanCatalog::load(args.ledger.plans.as_deref())?;
    let metrics = metrics::Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let probes = http::Probes { ready: ready.clone(), metrics: metrics.clone() };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(probes)).await {
            tracing::error!(error = %e, "probe server stopped");
        }
    });

    client.apiserver_version().await?;
    ready.store(true, Ordering::Relaxed);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let elector = args.leader_elect.then(|| {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let duration = Duration::from_secs(args.lease_duration_seconds.max(2));
        Arc::new(LeaderElector::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace,
                identity: identity.clone(),
                lease_duration: duration,
                renew_every: duration / 3,
                retry_every: (duration / 5).max(Duration::from_millis(500)),
            },
        ))
    });

    let mut lost = match &elector {
        Some(e) => {
            tracing::info!(identity = %identity, "waiting for leadership");
            tokio::select! {
                rx = e.clone().acquire() => rx,
                () = &mut shutdown => return Ok(()),
            }
        }
        None => tokio::sync::watch::channel(true).1,
    };
    metrics.set_leader(true);

    let mut ctx = Context::new(client.clone(), metrics.clone(), Some(identity)).with_ledger(ledger.clone());
    if let Some(ledger) = ledger {
        ctx = ctx.with_engine(Arc::new(build_engine(&args, ledger, Arc::new(plans.clone()))?));
    } else {
        tracing::warn!("no --database-url: TenantInstances are not provisioned, only Tenants reconciled");
    }
    let ctx = Arc::new(ctx);
    let ledger_ctl = credit_ledger::LedgerController::new(&args.ledger, ctx.clone(), plans);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let controllers = tokio::spawn(run_controllers(client, args.clone(), ctx, ledger_ctl, stop_rx));

    let lost_leadership = tokio::select! {
        () = &mut shutdown => false,
        _ = lost.wait_for(|leading| !leading) => true,
    };
    metrics.set_leader(false);
    let _ = stop_tx.send(true);
    let _ = controllers.await;
    if lost_leadership {
        anyhow::bail!("failed to keep the leader lease; exiting so that only the new leader acts");
    }
    if let Some(e) = elector {
        e.release().await;
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The provisioning engine from the flags and `WINSTON_<PLATFORM>_*` environment.
fn build_engine(
    args: &ControllerArgs,
    ledger: crate::ledger::Ledger,
    plans: Arc<crate::plans::PlanCatalog>,
) -> anyhow::Result<crate::engine::Engine> {
    let providers = crate::providers::Providers::new(&crate::providers::ProvidersConfig::from_env())?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    Ok(crate::engine::Engine {
        providers,
        ledger,
        plans,
        args: args.engine.clone(),
        http,
        stalls_seen: Default::default(),
    })
}

async fn run_controllers(
    client: Client,
    args: ControllerArgs,
    ctx: Arc<Context>,
    ledger_ctl: Option<Arc<credit_ledger::LedgerController>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (tenants, instances, ledgers): (Api<Tenant>, Api<TenantInstance>, Api<CreditLedger>) = match &args.namespace {
        Some(ns) => {
            (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns), Api::namespaced(client, ns))
        }
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let wc = watcher::Config::default().any_semantic();
    let config = RuntimeConfig::default().concurrency(args.max_concurrent_reconciles);
    let credit_ledgers = ledger_ctl.map(|state| {
        let (ledgers, tenants, stop) = (ledgers.clone(), tenants.clone(), stop.clone());
        tokio::spawn(credit_ledger::run(state, ledgers, tenants, args.max_concurrent_reconciles, stop))
    });
    let secrets: Api<Secret> = match &args.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut stop2 = stop.clone();
    let (tenant_store, tenant_store_writer) = reflector::store();
    // The Tenant controller's child watches feed stores it reads instead of
    // listing children on every reconcile.
    let (instance_store, instance_writer) = reflector::store();
    let (ledger_store, ledger_writer) = reflector::store();
    let _ = ctx.caches.set(context::ChildCaches { instances: instance_store, ledgers: ledger_store });
    // Cached without managedFields, which the Tenant controller never reads.
    let instance_events = cached(instances.clone(), &wc, instance_writer);
    let ledger_events = cached(ledgers, &wc, ledger_writer);
    let tenant_ctl = Controller::for_stream(cached(tenants, &wc, tenant_store_writer), tenant_store)
        .with_config(config.clone())
        .owns_stream(instance_events)
        .owns_stream(ledger_events)
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(tenant::reconcile, tenant::error_policy, ctx.clone())
        .for_each(log_result);
    if ctx.engine.is_none() {
        tenant_ctl.await;
        if let Some(task) = credit_ledgers {
            let _ = task.await;
        }
        return;
    }
    // An instance's own status writes do not start another pass: a pass
    // runs every step it can and requeues itself for what it waits on. Spec
    // changes, annotations (key rotation) and deletion do.
    let (instance_ctl_store, instance_ctl_writer) = reflector::store();
    let deleting = |ti: &TenantInstance| ti.metadata.deletion_timestamp.as_ref().map(|_| 1);
    let instance_changes = cached(instances, &wc, instance_ctl_writer).predicate_filter(
        predicates::generation.combine(predicates::annotations).combine(deleting),
        PredicateConfig::default(),
    );
    let instance_ctl = Controller::for_stream(instance_changes, instance_ctl_store)
        .with_config(config)
        .owns(secrets, watcher::Config::default().labels(&format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY)))
        .graceful_shutdown_on(async move {
            let _ = stop2.wait_for(|s| *s).await;
        })
        .run(instance::reconcile, instance::error_policy, ctx)
        .for_each(log_result);
    tokio::join!(tenant_ctl, instance_ctl);
    if let Some(task) = credit_ledgers {
        let _ = task.await;
    }
}

/// The objects of `api` for a controller, cached in `writer`'s store
/// without managedFields (never read; with server-side apply they are a
/// large share of every object).
pub(crate) fn cached<K>(
    api: Api<K>,
    wc: &watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    // Touched, not applied: a deleted child must trigger its owner.
    reflector(writer, watcher(api, wc.clone()).modify(|o| o.managed_fields_mut().clear()))
        .default_backoff()
        .touched_objects()
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(res: Result<T, E>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "controller event");
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "failed to listen for SIGTERM; only Ctrl-C stops the controller");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested; finishing running reconciles");
}

fn default_identity() -> String {
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "winston".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
