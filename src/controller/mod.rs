//! `winston controller`: the reconcilers, wired to the API server with
//! leader election, bounded concurrency, probes, metrics and graceful
//! shutdown. Each kind's reconcile lives in its own module.
pub mod context;
pub mod credit_ledger;
pub mod credit_ledger_plan;
pub mod error;
pub mod failure;
pub mod finalizer;
pub mod gauges;
pub mod http;
pub mod instance;
pub mod leader;
pub mod metrics;
pub mod own_writes;
pub mod queue;
pub mod scope;
pub mod tenant;
pub mod tenant_plan;
pub mod website;
pub mod write;

pub use error::{Error, Result};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::runtime::controller::{Config as RuntimeConfig, Controller};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, reflector, watcher};
use tokio::sync::watch;

use k8s_openapi::api::core::v1::Secret;

use crate::api::{CreditLedger, Tenant, TenantInstance};
use crate::names;
use context::Context;
use leader::{Fence, LeaderElector, LeaseConfig, LeaseTiming};
use own_writes::OwnWrites;
use scope::{WatchScope, Watched};

/// Command-line / environment configuration of the controller.
#[derive(Clone, Debug, clap::Args)]
pub struct ControllerArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WINSTON_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Watch only these namespaces, comma-separated (together with
    /// `--namespace`: both). One watch per namespace and kind, so the
    /// controller needs permissions in these namespaces only.
    #[arg(long, env = "WINSTON_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
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
    /// Seconds the leader keeps trying to renew before it stops acting and
    /// exits (default: 2/3 of the lease duration).
    #[arg(long, env = "WINSTON_RENEW_DEADLINE_SECONDS")]
    pub renew_deadline_seconds: Option<u64>,
    /// Seconds between attempts to acquire or renew the lease (default:
    /// 2/15 of the lease duration).
    #[arg(long, env = "WINSTON_RETRY_PERIOD_SECONDS")]
    pub retry_period_seconds: Option<u64>,
    /// This replica's identity in the Lease (default: hostname plus a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Private networks health checks may reach besides public addresses
    /// (repeat or comma-separate; e.g. `127.0.0.0/8` for the emulator).
    #[arg(long, env = "WINSTON_OUTBOUND_ALLOW_CIDRS", value_delimiter = ',')]
    pub outbound_allow_cidr: Vec<ipnet::IpNet>,
    /// Model the website analyzer asks through Winston's proxy
    /// (`--proxy-url`) on the `system` account; empty turns analysis off.
    /// Needs `--database-url` (the system account lives in the ledger).
    #[arg(long, env = "WINSTON_ANALYZER_MODEL", default_value = "kimi-k2.6")]
    pub analyzer_model: String,
    #[command(flatten)]
    pub ledger: credit_ledger::LedgerArgs,
    #[command(flatten)]
    pub engine: crate::engine::EngineArgs,
}

/// Runs the controller until SIGTERM/SIGINT (exit 0) or until leadership is
/// lost: then the process exits at once with code 1, without draining, so
/// that only the new leader acts.
///
/// Outline: connect (API server, ledger, plans) -> serve probes -> wait for
/// leadership -> run the controllers until shutdown or loss of the lease ->
/// step down.
///
/// # Errors
/// When the API server cannot be reached, the probe port cannot be bound, or
/// the lease timing is invalid.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let config = kube::Config::infer().await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let elector = if args.leader_elect {
        Some(Arc::new(LeaderElector::new(Client::try_from(config.clone())?, lease_config(&args, &identity)?)))
    } else {
        None
    };
    // Every write of the controllers passes only while this replica leads.
    let client = leader::fenced_client(config, elector.as_ref().map_or_else(Fence::open, |e| e.fence()))?;
    let ledger = credit_ledger::connect(&args.ledger).await?;
    let plans = crate::plans::PlanCatalog::load(args.ledger.plans.as_deref())?;
    let metrics = metrics::Metrics::default();
    let ready = serve_probes(args.metrics_addr, metrics.clone()).await?;
    client.apiserver_version().await?;
    ready.store(true, Ordering::Relaxed);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let Some(mut lost) = lead(elector.as_ref(), &identity, &mut shutdown).await else { return Ok(()) };
    metrics.set_leader(true);

    let ctx = Arc::new(context(&args, client.clone(), metrics.clone(), identity, ledger, &plans).await?);
    let ledger_ctl = credit_ledger::LedgerController::new(&args.ledger, ctx.clone(), plans);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut controllers = tokio::spawn(run_controllers(client, args.clone(), ctx, ledger_ctl, stop_rx));
    tokio::select! {
        () = &mut shutdown => {},
        _ = lost.wait_for(|leading| !leading) => leader::exit_on_lost_lease(),
    }
    metrics.set_leader(false);
    let _ = stop_tx.send(true);
    // Draining keeps the lease; should it be lost meanwhile, stop at once.
    tokio::select! {
        _ = &mut controllers => {},
        _ = lost.wait_for(|leading| !leading) => leader::exit_on_lost_lease(),
    }
    step_down(elector).await
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` in the background;
/// the returned flag makes `/readyz` answer 200 once set.
async fn serve_probes(addr: SocketAddr, metrics: metrics::Metrics) -> anyhow::Result<Arc<AtomicBool>> {
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    let probes = http::Probes { ready: ready.clone(), metrics };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(probes)).await {
            tracing::error!(error = %e, "probe server stopped");
        }
    });
    Ok(ready)
}

/// The leader Lease from the flags: its namespace defaults to the pod's,
/// then the watched one, then `default`.
fn lease_config(args: &ControllerArgs, identity: &str) -> anyhow::Result<LeaseConfig> {
    let namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let timing = LeaseTiming::new(
        Duration::from_secs(args.lease_duration_seconds.max(2)),
        args.renew_deadline_seconds.map(Duration::from_secs),
        args.retry_period_seconds.map(Duration::from_secs),
    )?;
    Ok(LeaseConfig { name: args.lease_name.clone(), namespace, identity: identity.to_string(), timing })
}

/// Waits until this replica leads (at once without an elector). `None` when
/// `shutdown` comes first; otherwise a receiver that turns false when
/// leadership is lost.
async fn lead(
    elector: Option<&Arc<LeaderElector>>,
    identity: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<watch::Receiver<bool>> {
    let Some(e) = elector else { return Some(watch::channel(true).1) };
    tracing::info!(identity = %identity, "waiting for leadership");
    tokio::select! {
        rx = e.clone().acquire() => Some(rx),
        () = shutdown => None,
    }
}

/// The reconcile context: the ledger when a database is configured, and
/// then the provisioning engine too.
async fn context(
    args: &ControllerArgs,
    client: Client,
    metrics: metrics::Metrics,
    identity: String,
    ledger: Option<crate::ledger::Ledger>,
    plans: &crate::plans::PlanCatalog,
) -> anyhow::Result<Context> {
    let ctx =
        Context::new(client, metrics, Some(identity)).with_ledger(ledger.clone()).with_plans(Arc::new(plans.clone()));
    let Some(ledger) = ledger else {
        tracing::warn!("no --database-url: TenantInstances are not provisioned, only Tenants reconciled");
        return Ok(ctx);
    };
    let ctx = ctx.with_engine(Arc::new(build_engine(args, ledger.clone(), Arc::new(plans.clone()))?));
    if args.analyzer_model.trim().is_empty() {
        return Ok(ctx);
    }
    let analysis = website::WebsiteAnalysis::start(
        ledger,
        plans,
        &args.engine.proxy_url,
        args.analyzer_model.trim(),
        args.outbound_allow_cidr.clone(),
    )
    .await;
    match analysis {
        Ok(a) => Ok(ctx.with_analysis(Arc::new(a))),
        // A plan catalog of its own without `system`: websites are not analysed.
        Err(e @ website::SetupError::NoSystemPlan) => {
            tracing::warn!(error = %e, "websites are not analysed");
            Ok(ctx)
        }
        Err(e) => Err(e.into()),
    }
}

/// After the controllers stopped on shutdown: gives the lease up so a
/// standby takes over at once.
async fn step_down(elector: Option<Arc<LeaderElector>>) -> anyhow::Result<()> {
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
    let policy = crate::outbound::OutboundPolicy::new(args.outbound_allow_cidr.clone());
    let http = crate::outbound::OutboundClient::new(policy, Duration::from_secs(10))?;
    Ok(crate::engine::Engine {
        providers,
        ledger,
        plans,
        args: args.engine.clone(),
        http,
        mail: crate::engine::mail::Templates::load(args.engine.email_templates.as_deref())?,
        stalls_seen: Default::default(),
    })
}

/// The kinds the controllers watch, in the namespaces `--namespace` and
/// `--namespaces` name, or in all of them.
struct Apis {
    tenants: Watched<Tenant>,
    instances: Watched<TenantInstance>,
    ledgers: Watched<CreditLedger>,
    secrets: Watched<Secret>,
}

impl Apis {
    fn new(client: &Client, args: &ControllerArgs) -> Self {
        let scope = WatchScope::new(args.namespace.as_deref(), &args.namespaces);
        tracing::info!(%scope, "watching");
        Self {
            tenants: Watched::new(client, &scope),
            instances: Watched::new(client, &scope),
            ledgers: Watched::new(client, &scope),
            secrets: Watched::new(client, &scope),
        }
    }
}

/// Runs the Tenant controller, the TenantInstance controller (only with the
/// engine) and the CreditLedger controller (only with the ledger) until
/// `stop` turns true.
async fn run_controllers(
    client: Client,
    args: ControllerArgs,
    ctx: Arc<Context>,
    ledger_ctl: Option<Arc<credit_ledger::LedgerController>>,
    stop: watch::Receiver<bool>,
) {
    let apis = Apis::new(&client, &args);
    // kube-runtime's runner runs whatever is due at once; each kind's
    // `FairQueue` bounds how many run and picks the oldest next.
    let config = RuntimeConfig::default().concurrency(0);
    let width = args.max_concurrent_reconciles;
    let credit_ledgers = ledger_ctl.map(|state| {
        let (ledgers, tenants) = (apis.ledgers.clone(), apis.tenants.clone());
        tokio::spawn(credit_ledger::run(state, ledgers, tenants, args.max_concurrent_reconciles, stop.clone()))
    });
    let tenants = tenant_controller(&apis, config.clone(), width, ctx.clone(), stop.clone());
    if ctx.engine.is_some() {
        tokio::join!(tenants, instance_controller(&apis, config, width, ctx, stop));
    } else {
        tenants.await;
    }
    if let Some(task) = credit_ledgers {
        let _ = task.await;
    }
}

/// How long a Tenant's triggers gather before its reconcile runs: an
/// instance's pass writes its status a few times in quick succession (a
/// pending marker per create, then the pass's end), and the Tenant's own
/// writes come back as watch events. Gathered, they cost one reconcile that
/// sees the latest of everything instead of several, each of which could
/// rewrite the Tenant's status from a cache that had not caught up.
const TENANT_DEBOUNCE: Duration = Duration::from_millis(500);

/// The Tenant controller. Its child watches also feed the stores it reads
/// instead of listing children on every reconcile.
fn tenant_controller(
    apis: &Apis,
    config: RuntimeConfig,
    width: u16,
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let wc = watch_config();
    let (tenant_store, tenant_writer) = reflector::store();
    let (instance_store, instance_writer) = reflector::store();
    let (ledger_store, ledger_writer) = reflector::store();
    let _ = ctx.caches.set(context::ChildCaches {
        instances: instance_store.clone(),
        ledgers: ledger_store.clone(),
        tenants: tenant_store.clone(),
    });
    if let Some(caches) = ctx.caches.get() {
        ctx.metrics.gauges().watch_instances(caches.instances.clone());
    }
    // On a start the Tenants may be listed before their children: a pass
    // that saw no instance yet would write NotReady on a Ready Tenant (seen
    // on 76 of 1,000 at a restart). Passes wait until both child caches
    // are filled. One task waits on the stores and tells every pass through
    // a watch channel: kube-runtime's `Store::wait_until_ready` wakes only
    // the last of several concurrent waiters (at 1,000 Tenants, 499 passes
    // never ran).
    let (children_listed, listed) = watch::channel(false);
    let (instances, ledgers) = (instance_store.clone(), ledger_store.clone());
    tokio::spawn(async move {
        let _ = tokio::join!(instances.wait_until_ready(), ledgers.wait_until_ready());
        let _ = children_listed.send(true);
    });
    let queue = queue::FairQueue::new("Tenant", width, ctx.metrics.clone());
    let fresh = tenant_store.clone();
    let reconcile = move |tenant: Arc<Tenant>, ctx: Arc<Context>| {
        let (queue, fresh, mut listed) = (queue.clone(), fresh.clone(), listed.clone());
        async move {
            let _ = listed.wait_for(|done| *done).await;
            let _permit = queue.admit(&*tenant).await;
            // It may have waited: act on the latest the watch has seen.
            let tenant = fresh.get(&reflector::ObjectRef::from_obj(&*tenant)).unwrap_or(tenant);
            Box::pin(tenant::reconcile(tenant, ctx)).await
        }
    };
    // The event of this process's own status write starts no pass: the
    // children's events, and the pass's own requeue, cover what follows.
    let own = ctx.own_status.tenants.clone();
    let tenants = OwnWrites::foreign(own, cached(&apis.tenants, &wc, tenant_writer, &ctx, strip));
    Controller::for_stream(tenants, tenant_store)
        .with_config(config.debounce(TENANT_DEBOUNCE))
        .owns_stream(cached(&apis.instances, &wc, instance_writer, &ctx, summary_of_instance))
        .owns_stream(cached(&apis.ledgers, &wc, ledger_writer, &ctx, strip))
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, tenant::error_policy, ctx)
        .for_each(log_result)
}

/// The TenantInstance controller. An instance's own status writes do not
/// start another pass: a pass runs every step it can and requeues itself for
/// what it waits on. Spec changes, annotations (key rotation) and deletion
/// do, and so do changes of the Secrets it owns.
fn instance_controller(
    apis: &Apis,
    config: RuntimeConfig,
    width: u16,
    ctx: Arc<Context>,
    stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let (store, writer) = reflector::store();
    let deleting = |ti: &TenantInstance| ti.metadata.deletion_timestamp.as_ref().map(|_| 1);
    // A pass reads its instance fresh from the API server: the store keeps
    // what triggers and orders passes (metadata and spec), not the status.
    let changes = cached(&apis.instances, &watch_config(), writer, &ctx, |ti| {
        strip(ti);
        ti.status = None;
    })
    .predicate_filter(
        predicates::generation.combine(predicates::annotations).combine(deleting),
        PredicateConfig::default(),
    );
    let managed = format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY);
    let queue = queue::FairQueue::new("TenantInstance", width, ctx.metrics.clone());
    // A Secret changed by someone else (or deleted) starts a pass of its
    // instance; the event of the instance's own write does not.
    let touched = apis.secrets.metadata_touched(&watcher::Config::default().labels(&managed));
    let secrets = OwnWrites::foreign(ctx.own_secrets.clone(), touched);
    Controller::for_stream(changes, store)
        .with_config(config)
        .owns_stream(secrets)
        .graceful_shutdown_on(stopped(stop))
        .run(
            move |ti: Arc<TenantInstance>, ctx: Arc<Context>| {
                let queue = queue.clone();
                async move {
                    let _permit = queue.admit(&*ti).await;
                    Box::pin(instance::reconcile(ti, ctx)).await
                }
            },
            instance::error_policy,
            ctx,
        )
        .for_each(log_result)
}

fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Drops what no controller reads from a cached object: managedFields
/// (with server-side apply a large share of every object).
pub(crate) fn strip<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// What the Tenant controller reads of an instance: its spec (to compare
/// with the wanted one) and the summary of its status (phase, URL, current
/// step, the Ready / Reconciling / Stalled conditions, and the step
/// conditions that say the plan excludes a component, which the Tenant
/// shows as `ComponentsExcluded`). Its steps, external ids and other
/// per-step conditions are the instance controller's business; at 1,000
/// tenants they were most of this cache.
fn summary_of_instance(ti: &mut TenantInstance) {
    strip(ti);
    if let Some(st) = ti.status.as_mut() {
        st.steps = Vec::new();
        st.pending = Vec::new();
        st.external = None;
        let kept = [names::COND_READY, names::COND_RECONCILING, names::COND_STALLED];
        st.conditions.retain(|c| kept.contains(&c.type_.as_str()) || c.reason == names::reason::EXCLUDED_BY_PLAN);
    }
}

/// The objects of `watched` for a controller, cached in `writer`'s store
/// as `modify` leaves them (see [`strip`]). The failures of an object the
/// watch sees deleted are forgotten.
pub(crate) fn cached<K>(
    watched: &Watched<K>,
    wc: &watcher::Config,
    writer: reflector::store::Writer<K>,
    ctx: &Arc<Context>,
    modify: fn(&mut K),
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + failure::FailureKey
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let ctx = ctx.clone();
    // Touched, not applied: a deleted child must trigger its owner.
    watched
        .reflect(wc, writer, modify)
        .inspect_ok(move |event| failure::forget_deleted(ctx.failures(), event))
        .touched_objects()
}

pub(crate) async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(res: Result<T, E>) {
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
