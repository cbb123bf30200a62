//! The CreditLedger reconciler: the only bridge between Kubernetes and
//! Winston's credit ledger in PostgreSQL.
//!
//! Reconcile: fetch -> the owning Tenant (cache, confirmed by a GET before
//! refusing) -> its account `<namespace>/<tenant>/<tenant uid>` (pure; a
//! ledger its Tenant does not own touches no account) -> low threshold ->
//! spec grants (idempotent by id) -> allotment (spec, else the Tenant's plan;
//! pure) -> the period containing now (pure) -> start it once the stored
//! period is over -> snapshot -> status (pure) -> server-side apply only when
//! it changed.
//!
//! Mirroring is bounded: every ledger is re-read every `--ledger-resync-seconds`
//! (and at its period's end), and writes happen only when something changed.
//! The proxy never talks to Kubernetes, so flips of `Low` / `Exhausted` are
//! found by [`watch_flips`]: one query every `--ledger-poll-ms` for accounts
//! touched since the last poll, which triggers a reconcile of exactly the
//! ledgers whose flags differ from what status shows. A flip therefore
//! reaches status within one poll interval plus one reconcile.
//!
//! Deleting a CreditLedger leaves its account in the database (money history
//! is kept; the ledger the Tenant controller creates again resumes the same
//! account, since the account follows the Tenant's uid, not the ledger).
//! Spending, reservations and 402s are the proxy's and the ledger's business.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::channel::mpsc;
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};

use super::context::Context;
use super::credit_ledger_plan::{self as plan, Flags, Observed, Term};
use super::error::{Error, Result};
use super::own_writes::OwnWrites;
use super::{failure, write};
use crate::api::{CreditLedger, Tenant};
use crate::ledger::{Balance, DatabaseUrl, Ledger};
use crate::plans::PlanCatalog;

const KIND: &str = "CreditLedger";
/// Database connections of the controller (reconciles are few and short).
const DB_CONNECTIONS: u32 = 4;
/// How far back each flip poll looks beyond the previous one, so a
/// transaction that committed just after a poll (its `updated_at` is its
/// start time) is still seen by the next.
const POLL_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Command-line / environment configuration of the ledger side of the controller.
#[derive(Clone, Debug, clap::Args)]
pub struct LedgerArgs {
    /// PostgreSQL URL of Winston's own database. Without it CreditLedgers are
    /// not reconciled (the Tenant controller still runs).
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// Plan catalog YAML (default: the built-in `config/plans.yaml`).
    #[arg(long, env = "WINSTON_PLANS")]
    pub plans: Option<PathBuf>,
    /// Seconds between two mirrors of a ledger's balance into its status.
    #[arg(long, env = "WINSTON_LEDGER_RESYNC_SECONDS", default_value_t = 30)]
    pub ledger_resync_seconds: u64,
    /// Milliseconds between two polls for Low/Exhausted flips (the latency bound of a flip).
    #[arg(long, env = "WINSTON_LEDGER_POLL_MS", default_value_t = 2000)]
    pub ledger_poll_ms: u64,
}

/// What status last showed for one account, so a poll can tell a flip.
struct Mirrored {
    object: ObjectRef<CreditLedger>,
    flags: Flags,
    /// Flags a reconcile was already triggered for (not re-triggered every poll).
    triggered: Option<Flags>,
}

/// State of the CreditLedger reconciler.
pub struct LedgerController {
    base: Arc<Context>,
    ledger: Ledger,
    plans: PlanCatalog,
    resync: Duration,
    poll: Duration,
    mirrored: Mutex<HashMap<String, Mirrored>>,
    /// Tenants as the watch last saw them (a ledger needs its Tenant's plan
    /// on every resync; reading the cache spares the API server a GET).
    tenants: std::sync::OnceLock<reflector::Store<Tenant>>,
}

/// Connects to Winston's database and applies the control migrations (safe
/// with several replicas: sqlx serialises them with an advisory lock).
/// `None`, with a warning, when `--database-url` is not set.
///
/// # Errors
/// When the database is unreachable or a migration fails.
pub async fn connect(args: &LedgerArgs) -> Result<Option<Ledger>, crate::ledger::LedgerError> {
    let Some(url) = &args.database_url else {
        tracing::warn!("no --database-url: CreditLedgers will not be reconciled");
        return Ok(None);
    };
    let ledger = Ledger::connect(url.expose(), DB_CONNECTIONS).await?;
    ledger.migrate().await?;
    tracing::info!("control database migrated");
    Ok(Some(ledger))
}

impl LedgerController {
    /// The reconciler's state over the ledger in `base`; `None` when the
    /// controller runs without a database.
    #[must_use]
    pub fn new(args: &LedgerArgs, base: Arc<Context>, plans: PlanCatalog) -> Option<Arc<Self>> {
        Some(Arc::new(Self {
            ledger: base.ledger.clone()?,
            base,
            plans,
            resync: Duration::from_secs(args.ledger_resync_seconds.max(1)),
            poll: Duration::from_millis(args.ledger_poll_ms.max(50)),
            mirrored: Mutex::default(),
            tenants: std::sync::OnceLock::new(),
        }))
    }

    /// The ledger database handle (shared with the rest of the controller).
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn remember(&self, account: String, object: ObjectRef<CreditLedger>, flags: Flags) {
        let mut m = self.mirrored.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(account, Mirrored { object, flags, triggered: None });
    }

    fn forget(&self, account: &str) {
        self.mirrored.lock().unwrap_or_else(PoisonError::into_inner).remove(account);
    }

    /// The ledger to reconcile when `flags` of `account` differ from its status.
    fn flipped(&self, account: &str, flags: Flags) -> Option<ObjectRef<CreditLedger>> {
        let mut m = self.mirrored.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = m.get_mut(account)?;
        if entry.flags == flags || entry.triggered == Some(flags) {
            return None;
        }
        entry.triggered = Some(flags);
        Some(entry.object.clone())
    }
}

/// Runs the CreditLedger controller (and its flip poller) until `stop` turns
/// true. Tenants trigger the ledger of the same name, whose allotment may
/// come from the Tenant's plan.
pub async fn run(
    state: Arc<LedgerController>,
    ledgers: super::scope::Watched<CreditLedger>,
    tenants: super::scope::Watched<Tenant>,
    concurrency: u16,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let (flips_tx, flips_rx) = mpsc::unbounded();
    let poller = tokio::spawn(watch_flips(state.clone(), flips_tx));
    let wc = watcher::Config::default().any_semantic();
    let (tenant_store, tenant_writer) = reflector::store();
    let _ = state.tenants.set(tenant_store);
    // Cached without managedFields, which no reconcile reads: kept, they
    // were a quarter of the controller's heap at 1,000 tenants.
    let (ledger_store, ledger_writer) = reflector::store();
    state.base.metrics.gauges().watch_ledgers(ledger_store.clone());
    // The event of this process's own status write starts no pass.
    let own = state.base.own_status.ledgers.clone();
    let changes = OwnWrites::foreign(own, super::cached(&ledgers, &wc, ledger_writer, &state.base, super::strip));
    Controller::for_stream(changes, ledger_store)
        .with_config(RuntimeConfig::default().concurrency(concurrency))
        // A ledger depends on its Tenant's spec (the plan), not its status.
        .watches_stream(
            super::cached(&tenants, &wc, tenant_writer, &state.base, super::strip)
                .predicate_filter(predicates::generation, PredicateConfig::default()),
            |t| Some(ObjectRef::new(&t.name_any()).within(&t.namespace().unwrap_or_default())),
        )
        .reconcile_on(flips_rx)
        .graceful_shutdown_on(super::stopped(stop))
        .run(reconcile, error_policy, state)
        .for_each(super::log_result)
        .await;
    poller.abort();
}

/// Polls the ledger for accounts whose `Low` / `Exhausted` differ from what
/// their status shows and triggers their reconcile. One indexed-free read of
/// recently updated account rows per interval.
async fn watch_flips(state: Arc<LedgerController>, flips: mpsc::UnboundedSender<ObjectRef<CreditLedger>>) {
    let mut tick = tokio::time::interval(state.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since = None;
    loop {
        tick.tick().await;
        match state.ledger.changed_since(since).await {
            Ok((now, accounts)) => {
                since = Some(now - POLL_OVERLAP);
                for b in &accounts {
                    if let Some(object) = state.flipped(&b.account, Flags::of(b)) {
                        tracing::debug!(account = %b.account, "Low/Exhausted flipped; reconciling its ledger");
                        if flips.unbounded_send(object).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "failed to poll the ledger for Low/Exhausted flips"),
        }
    }
}

/// Reconciles one CreditLedger.
///
/// # Errors
/// Kubernetes or ledger failures; the error policy requeues with backoff.
pub async fn reconcile(cl: Arc<CreditLedger>, state: Arc<LedgerController>) -> Result<Action> {
    let ns = cl.namespace().ok_or(Error::InvalidObject("CreditLedger without namespace"))?;
    failure::measured(&state.base, KIND, &*cl, async {
        if cl.metadata.deletion_timestamp.is_none() {
            return sync(&cl, &ns, &state).await;
        }
        if let Some(account) = cl.status.as_ref().and_then(|s| s.account.as_deref()) {
            state.forget(account);
        }
        Ok(Action::await_change())
    })
    .await
}

/// Decides what happens after a failed reconcile: an Event, a metric, and a
/// retry with per-object exponential backoff.
pub fn error_policy(cl: Arc<CreditLedger>, error: &Error, state: Arc<LedgerController>) -> Action {
    failure::requeue(&state.base, KIND, &*cl, error)
}

/// The account `cl` drives and its Tenant, or why it may drive none. The
/// watch cache answers the steady state; a refusal is confirmed by a GET,
/// so a cache that lags behind a re-created Tenant never refuses a ledger.
async fn bind(
    cl: &CreditLedger,
    ns: &str,
    state: &LedgerController,
) -> Result<Result<(String, Tenant), plan::Blocked>> {
    let name = &cl.spec.tenant_ref.name;
    let cached = state.tenants.get().and_then(|s| s.get(&ObjectRef::new(name).within(ns)));
    if let Some(t) = cached
        && let Ok(account) = plan::account_of(cl, &t)
    {
        return Ok(Ok((account, (*t).clone())));
    }
    let tenants: Api<Tenant> = Api::namespaced(state.base.client.clone(), ns);
    let Some(tenant) = tenants.get_opt(name).await? else {
        return Ok(Err(plan::tenant_not_found(cl)));
    };
    Ok(plan::account_of(cl, &tenant).map(|account| (account, tenant)))
}

/// A live ledger: bind it to its account -> observe the account -> apply
/// its settings and grants -> plan the term (pure) -> start or adjust the
/// period -> snapshot -> status -> remember what status shows.
async fn sync(cl: &CreditLedger, ns: &str, state: &LedgerController) -> Result<Action> {
    let (account, tenant) = match bind(cl, ns, state).await? {
        Ok(bound) => bound,
        Err(blocked) => {
            write_status(cl, state, &Observed::Unbound(blocked)).await?;
            state.base.metrics.gauges().mirrored(cl);
            return Ok(Action::requeue(state.resync));
        }
    };
    // The steady state (every resync) only reads: each write below is
    // skipped when the snapshot shows it is done. The ledger's own checks
    // stay the arbiter, so a stale snapshot costs at most a no-op call.
    state.ledger.ensure_account(&account).await?;
    let before = state.ledger.snapshot(&account).await?;
    apply_settings(cl, state, &account, &before).await?;
    let now = Utc::now();
    let term = plan::term(cl, &tenant, &state.plans, now);
    apply_term(cl, state, &account, &before, &term, now).await?;
    let balance = state.ledger.snapshot(&account).await?;
    let flags = Flags::of(&balance);
    let next = term.requeue_after(&balance, now, state.resync);
    write_status(cl, state, &term.observed(account.clone(), balance)).await?;
    state.base.metrics.gauges().mirrored(cl);
    state.remember(account, ObjectRef::from_obj(cl), flags);
    Ok(Action::requeue(next))
}

/// The low-balance threshold and the spec's grants (each credited once).
async fn apply_settings(cl: &CreditLedger, state: &LedgerController, account: &str, before: &Balance) -> Result<()> {
    let spec = &cl.spec;
    if before.low_threshold_pct != spec.low_balance_percent.clamp(0, 100) {
        state.ledger.set_low_threshold(account, spec.low_balance_percent).await?;
    }
    let applied = state.ledger.sync_grants(account, &plan::ledger_grants(account, &spec.grants)).await?;
    if applied > 0 {
        let note = format!("Credited {applied} new grant(s)");
        state.base.event(&cl.object_ref(&()), false, "GrantApplied", "ApplyGrants", note).await;
    }
    Ok(())
}

/// In an active term: starts the period once the stored one is over, or
/// else sets the current period's allotment when it changed.
async fn apply_term(
    cl: &CreditLedger,
    state: &LedgerController,
    account: &str,
    before: &Balance,
    term: &Term,
    now: DateTime<Utc>,
) -> Result<()> {
    let Term::Active { period, allotment } = *term else { return Ok(()) };
    let (ledger, reference) = (&state.ledger, cl.object_ref(&()));
    let reset = plan::period_due(before, now) && ledger.ensure_period(account, period, allotment).await?;
    if reset {
        let note = format!("Started the period {} with {allotment} credits", period.start.to_rfc3339());
        state.base.event(&reference, false, "PeriodStarted", "ResetPeriod", note).await;
    }
    if !reset && before.allotment != allotment && ledger.set_allotment(account, allotment).await? {
        let note = format!("Allotment of the current period is now {allotment} credits");
        state.base.event(&reference, false, "AllotmentChanged", "SetAllotment", note).await;
    }
    Ok(())
}

/// Writes the status for `observed` when it differs from what `cl` shows,
/// with one Warning Event when the ledger starts being refused (not one per
/// reconcile while it stays so).
async fn write_status(cl: &CreditLedger, state: &LedgerController, observed: &Observed) -> Result<()> {
    let ctx = &state.base;
    let status = plan::status(cl, observed, &crate::api::time::now());
    if write::status(ctx, &ctx.own_status.ledgers, KIND, cl, cl.status.as_ref(), &status).await?
        && let Observed::Unbound(blocked) = observed
        && plan::refused_anew(cl.status.as_ref(), blocked)
    {
        ctx.event(&cl.object_ref(&()), true, blocked.reason, "Bind", blocked.message.clone()).await;
    }
    Ok(())
}
