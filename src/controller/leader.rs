//! Leader election with a `coordination.k8s.io/v1` Lease, with client-go's
//! semantics (`tools/leaderelection`), so that two replicas never both act.
//!
//! - **Expiry by local observation.** A candidate takes over a Lease held by
//!   another replica only once the Lease's record (holder, times, duration,
//!   transitions) has stayed unchanged for `leaseDurationSeconds`, measured on
//!   the candidate's own monotonic clock from when it first saw that record
//!   (client-go's `observedTime`). The timestamps in the Lease are written
//!   for people and never compared with the local clock, so clock skew
//!   between nodes does not matter; only their rates must roughly agree.
//! - **Bounded renewal.** The leader renews every retry period. Each attempt
//!   is bounded by the renew deadline, counted from the start of the last
//!   successful renewal: a hung connection, an unreachable API server or a
//!   paused process cannot keep it leading past that instant.
//! - **A fence on every write.** The controllers' client ([`fenced_client`])
//!   refuses every write once the renew deadline has passed, on its own
//!   clock, before any task has noticed: a process resumed after a pause
//!   writes nothing, whatever task runs first.
//! - **Stop at once.** On loss the elector closes the fence and reports it;
//!   the controller then exits (non-zero) without draining its reconciles,
//!   because the new leader may already act ([`exit_on_lost_lease`]).
//! - **Optimistic concurrency.** Every write of the Lease carries the
//!   resourceVersion it was read at: of two candidates racing for an expired
//!   Lease, exactly one wins.
//!
//! Why this is enough: the leader acts only until `s + renewDeadline`, `s`
//! being the start of its last successful renewal. Any candidate saw that
//! renewal after `s` and waits `leaseDuration > renewDeadline` from then.
//!
//! Not a crate: `kube-leader-election` judges expiry by comparing the
//! Lease's renewTime with the local clock and has no renew deadline;
//! `kube-lease-manager` absorbs skew with a grace period and builds on an
//! older kube. Neither fences writes.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use http::{Method, Request};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;
use kube::{Api, Client};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service};

/// client-go's `JitterFactor`: a candidate waits between 1 and 2.2 retry
/// periods between attempts, so that candidates do not move in step.
const JITTER: f64 = 1.2;

/// How long a lease lasts, how long the leader keeps trying to renew it,
/// how often anyone tries (client-go's `LeaseDuration`, `RenewDeadline`,
/// `RetryPeriod`; defaults 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long candidates wait, after they last saw the Lease change,
    /// before they take it over. Written to the Lease in whole seconds.
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal the leader
    /// stops acting when it could not renew.
    pub renew_deadline: Duration,
    /// The wait between attempts to acquire or renew.
    pub retry_period: Duration,
}

/// Lease timings that cannot keep one leader.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid leader-election timing: {0}")]
pub struct InvalidTiming(&'static str);

impl LeaseTiming {
    /// The timing for `lease_duration`; what is not given keeps client-go's
    /// ratios (renew deadline 2/3 of the lease, retry period 2/15).
    ///
    /// # Errors
    /// Unless lease duration > renew deadline > 1.2 retry periods > 0
    /// (client-go's rules), with a lease of at least one second.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Option<Duration>,
        retry_period: Option<Duration>,
    ) -> Result<Self, InvalidTiming> {
        let timing = Self {
            lease_duration,
            renew_deadline: renew_deadline.unwrap_or(lease_duration * 2 / 3),
            retry_period: retry_period.unwrap_or(lease_duration * 2 / 15),
        };
        if lease_duration.as_secs() < 1 {
            return Err(InvalidTiming("the lease duration must be at least one second"));
        }
        if timing.lease_duration <= timing.renew_deadline {
            return Err(InvalidTiming("the lease duration must be longer than the renew deadline"));
        }
        if timing.retry_period.is_zero() {
            return Err(InvalidTiming("the retry period must be positive"));
        }
        if timing.renew_deadline.as_secs_f64() <= JITTER * timing.retry_period.as_secs_f64() {
            return Err(InvalidTiming("the renew deadline must be longer than 1.2 retry periods"));
        }
        Ok(timing)
    }

    /// The lease duration as written to the Lease.
    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// A candidate's wait before its next attempt.
    fn jittered_retry(&self) -> Duration {
        self.retry_period.mul_f64(1.0 + rand::random::<f64>() * JITTER)
    }
}

/// Which Lease, who this replica is, and the timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease object name.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (pod name + random suffix).
    pub identity: String,
    /// Durations of the election.
    pub timing: LeaseTiming,
}

/// What a Lease says about its holder (client-go's `LeaderElectionRecord`).
/// Compared whole: any change restarts a candidate's observation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The holder; `None` when nobody holds the Lease (also for an empty string).
    pub holder: Option<String>,
    /// How long candidates wait after a change before taking over.
    pub lease_duration_seconds: i32,
    /// When the holder acquired it (informational, holder's clock).
    pub acquire_time: Option<MicroTime>,
    /// When the holder last renewed it (informational, holder's clock).
    pub renew_time: Option<MicroTime>,
    /// How often the Lease changed hands.
    pub transitions: i32,
}

impl Record {
    /// The record of `lease`.
    #[must_use]
    pub fn of(lease: &Lease) -> Self {
        let Some(spec) = lease.spec.as_ref() else { return Self::default() };
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// Writes this record into `lease`, keeping the spec fields it does not
    /// cover.
    fn write_into(self, lease: &mut Lease) {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = self.holder;
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.acquire_time = self.acquire_time;
        spec.renew_time = self.renew_time;
        spec.lease_transitions = Some(self.transitions);
    }
}

/// The last record a replica saw and when it first saw it, on its own
/// monotonic clock (client-go's `observedRecord` and `observedTime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The record.
    pub record: Record,
    /// When this replica first saw it.
    pub at: Instant,
}

impl Observed {
    /// The observation after reading `record` at `now`: it restarts only
    /// when the record changed since `previous`.
    #[must_use]
    pub fn next(previous: Option<Self>, record: Record, now: Instant) -> Self {
        match previous {
            Some(p) if p.record == record => p,
            _ => Self { record, at: now },
        }
    }

    /// Whether the holder's claim still stands at `now`: the record changed
    /// less than its lease duration ago (client-go's `isLeaseValid`).
    #[must_use]
    pub fn valid_at(&self, now: Instant) -> bool {
        let duration = Duration::from_secs(u64::try_from(self.record.lease_duration_seconds).unwrap_or(0));
        self.at + duration > now
    }
}

/// What one attempt does (client-go's `tryAcquireOrRenew`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// Another replica's claim stands: write nothing.
    Standby,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or its holder let it lapse: take it over.
    TakeOver,
}

/// The step for `identity` given what it observed of the Lease (`None`: no
/// Lease) at `now`.
#[must_use]
pub fn decide(identity: &str, observed: Option<&Observed>, now: Instant) -> Step {
    let Some(observed) = observed else { return Step::Create };
    match observed.record.holder.as_deref() {
        Some(holder) if holder == identity => Step::Renew,
        Some(_) if observed.valid_at(now) => Step::Standby,
        _ => Step::TakeOver,
    }
}

/// The record `identity` writes for `step`, given the current one: a
/// renewal keeps the acquire time and the transitions, a takeover counts a
/// transition. `wall_now` is informational only.
#[must_use]
pub fn next_record(
    step: Step,
    identity: &str,
    current: Option<&Record>,
    timing: &LeaseTiming,
    wall_now: &MicroTime,
) -> Record {
    let transitions = current.map_or(0, |c| c.transitions);
    let (acquire_time, transitions) = match step {
        Step::Renew => (current.and_then(|c| c.acquire_time.clone()), transitions),
        Step::TakeOver => (Some(wall_now.clone()), transitions.saturating_add(1)),
        Step::Create | Step::Standby => (Some(wall_now.clone()), transitions),
    };
    Record {
        holder: Some(identity.to_string()),
        lease_duration_seconds: timing.lease_seconds(),
        acquire_time,
        renew_time: Some(wall_now.clone()),
        transitions,
    }
}

/// Until when this replica may write to the Kubernetes API. Cheap to clone;
/// every clone sees the same window. It closes by itself when its instant
/// passes, before any task notices.
#[derive(Clone, Debug)]
pub struct Fence(Arc<FenceState>);

#[derive(Debug)]
struct FenceState {
    origin: Instant,
    /// Nanoseconds after `origin` until which writes pass (0: none pass).
    until: AtomicU64,
}

impl Fence {
    /// A fence that never closes (no leader election).
    #[must_use]
    pub fn open() -> Self {
        Self(Arc::new(FenceState { origin: Instant::now(), until: AtomicU64::new(u64::MAX) }))
    }

    /// A fence that lets nothing through until it is extended.
    #[must_use]
    pub fn closed() -> Self {
        Self(Arc::new(FenceState { origin: Instant::now(), until: AtomicU64::new(0) }))
    }

    /// Whether writes pass now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.is_open_at(Instant::now())
    }

    /// Whether writes pass at `now`.
    #[must_use]
    pub fn is_open_at(&self, now: Instant) -> bool {
        self.nanos(now) < self.0.until.load(Ordering::Acquire)
    }

    /// Lets writes through until `until` (never shortens the window).
    pub fn extend_to(&self, until: Instant) {
        self.0.until.fetch_max(self.nanos(until), Ordering::AcqRel);
    }

    /// Lets no write through any more.
    pub fn close(&self) {
        self.0.until.store(0, Ordering::Release);
    }

    fn nanos(&self, at: Instant) -> u64 {
        // Past u64 nanoseconds (584 years) the window is open for good anyway.
        u64::try_from(at.saturating_duration_since(self.0.origin).as_nanos()).unwrap_or(u64::MAX - 1)
    }
}

/// A write refused by the [`Fence`].
#[derive(Debug, thiserror::Error)]
#[error("refused to write to the Kubernetes API: this replica does not hold the leader lease")]
pub struct NotLeading;

/// Wraps a client's service so that writes (every method but GET, HEAD and
/// OPTIONS) fail with [`NotLeading`] while the fence is closed, without
/// reaching the API server. Reads and watches pass.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced { inner, fence: self.0.clone() }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let write = is_write(req.method());
        if write && !self.fence.is_open() {
            tracing::warn!(method = %req.method(), uri = %req.uri(), "refused a write: not the leader");
            return Box::pin(std::future::ready(Err(NotLeading.into())));
        }
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let call = self.inner.call(req);
        let fence = self.fence.clone();
        Box::pin(async move {
            // Checked again when first polled, right before the request goes
            // out: behind the client's buffer the call is made by another
            // task, and a pause between the two (a stopped or starved
            // process) must not let a write out after the window closed.
            if write && !fence.is_open() {
                tracing::warn!(%method, %uri, "refused a write: not the leader");
                return Err(NotLeading.into());
            }
            call.await.map_err(Into::into)
        })
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A client for `config` whose writes pass only while `fence` is open.
/// kube retries throttled requests (429, 503, 504; up to 15 times, honouring
/// Retry-After); that retry runs outside the fence here, so each retry is
/// checked again instead of slipping out after the lease was lost.
///
/// # Errors
/// When kube cannot build a client for `config` (TLS, credentials).
pub fn fenced_client(mut config: kube::Config, fence: Fence) -> Result<Client, kube::Error> {
    let retry = std::mem::replace(&mut config.default_retry, false);
    let fenced = ClientBuilder::try_from(config)?.with_layer(&FenceLayer(fence));
    if !retry {
        return Ok(fenced.build());
    }
    // Retry needs a cloneable service; the buffer makes the boxed stack one.
    Ok(fenced.with_layer(&BufferLayer::new(1024)).with_layer(&RetryLayer::new(RetryPolicy::server_retry())).build())
}

/// Ends the process at once with exit code 1, after the lease was lost.
/// Running reconciles are not drained: their platform calls can take tens of
/// seconds while the new leader already acts on the same objects.
pub fn exit_on_lost_lease() -> ! {
    tracing::error!("lost the leader lease; exiting at once so that only the new leader acts");
    std::process::exit(1)
}

/// Result of one acquire-or-renew attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease.
    Leading,
    /// Someone else holds a valid lease (or won the race for it).
    Standby,
}

/// Acquires and keeps a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The last observation; held for a whole attempt so that attempts and
    /// the release never interleave.
    observed: Mutex<Option<Observed>>,
    released: AtomicBool,
    fence: Fence,
}

impl LeaderElector {
    /// An elector for `cfg` using `client` (a client of its own: never a
    /// fenced one, which would refuse the very renewal that extends it).
    #[must_use]
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Mutex::new(None),
            released: AtomicBool::new(false),
            fence: Fence::closed(),
        }
    }

    /// The fence that is open while this replica leads; give it to
    /// [`fenced_client`] for the controllers' client.
    #[must_use]
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Tries once to acquire or renew the lease. On success the fence opens
    /// until the renew deadline, counted from the start of this attempt.
    ///
    /// # Errors
    /// Fails on API errors other than a lost race (409), which is `Standby`.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let mut observed = self.observed.lock().await;
        if self.released.load(Ordering::Acquire) {
            return Ok(Attempt::Standby);
        }
        let found = self.api.get_opt(&self.cfg.name).await?;
        let now = Instant::now();
        *observed = found.as_ref().map(|lease| Observed::next(observed.take(), Record::of(lease), now));
        let step = decide(&self.cfg.identity, observed.as_ref(), now);
        if step == Step::Standby {
            return Ok(Attempt::Standby);
        }
        let current = observed.as_ref().map(|o| &o.record);
        let record = next_record(step, &self.cfg.identity, current, &self.cfg.timing, &MicroTime(Timestamp::now()));
        let written = match found {
            Some(mut lease) => {
                record.write_into(&mut lease);
                self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await
            }
            None => {
                let mut lease = Lease {
                    metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..ObjectMeta::default() },
                    spec: None,
                };
                record.write_into(&mut lease);
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(lease) => {
                *observed = Some(Observed { record: Record::of(&lease), at: Instant::now() });
                // Under the lock: a release cannot slip between the write and this.
                self.fence.extend_to(started + self.cfg.timing.renew_deadline);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Attempt::Standby),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so a standby takes over at once (best effort,
    /// bounded by the renew deadline). Closes the fence first and stops the
    /// renewals, which would otherwise take the released lease back.
    pub async fn release(&self) {
        let observed = self.observed.lock().await;
        self.released.store(true, Ordering::Release);
        self.fence.close();
        let give_up = async {
            let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else { return Ok(()) };
            if Record::of(&lease).holder.as_deref() != Some(self.cfg.identity.as_str()) {
                return Ok(());
            }
            // As client-go: nobody holds it, and it lasts a second.
            let now = MicroTime(Timestamp::now());
            let transitions = observed.as_ref().map_or(0, |o| o.record.transitions);
            let record = Record {
                holder: None,
                lease_duration_seconds: 1,
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                transitions,
            };
            record.write_into(&mut lease);
            self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await.map(|_| ())
        };
        match tokio::time::timeout(self.cfg.timing.renew_deadline, give_up).await {
            Ok(Ok(())) => tracing::info!(lease = %self.cfg.name, "released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "failed to release the leader lease"),
            Err(_) => tracing::warn!("failed to release the leader lease in time"),
        }
    }

    /// Waits until this replica leads (each attempt bounded by the renew
    /// deadline, a jittered retry period apart; the fence opens with the
    /// lease), then keeps renewing in the background. The returned receiver turns `false` when
    /// leadership is lost; by then the fence is closed.
    pub async fn acquire(self: Arc<Self>) -> watch::Receiver<bool> {
        let timing = self.cfg.timing;
        let renewed = loop {
            let started = Instant::now();
            match tokio::time::timeout(timing.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => break started,
                Ok(Ok(Attempt::Standby)) => {
                    tracing::debug!(lease = %self.cfg.name, "standing by: another replica leads");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "failed to acquire the leader lease; retrying"),
                Err(_) => tracing::warn!("an attempt to acquire the leader lease timed out; retrying"),
            }
            tokio::time::sleep(timing.jittered_retry()).await;
        };
        tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leadership");
        let (tx, rx) = watch::channel(true);
        tokio::spawn(self.renew(renewed, tx));
        rx
    }

    /// Renews every retry period until the renew deadline (from the start
    /// of the last successful renewal) passes without one, or another
    /// replica holds the lease; then closes the fence and reports the loss.
    async fn renew(self: Arc<Self>, mut renewed: Instant, leading: watch::Sender<bool>) {
        let timing = self.cfg.timing;
        let reason = loop {
            let deadline = renewed + timing.renew_deadline;
            tokio::time::sleep_until((Instant::now() + timing.retry_period).min(deadline)).await;
            if leading.is_closed() || self.released.load(Ordering::Acquire) {
                return;
            }
            let started = Instant::now();
            if started >= deadline {
                break "no renewal succeeded before the renew deadline";
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => renewed = started,
                Ok(Ok(Attempt::Standby)) if self.released.load(Ordering::Acquire) => return,
                Ok(Ok(Attempt::Standby)) => break "another replica holds the lease",
                Ok(Err(e)) => tracing::warn!(error = %e, "failed to renew the leader lease; retrying"),
                Err(_) => break "the renewal did not finish before the renew deadline",
            }
        };
        self.fence.close();
        tracing::error!(lease = %self.cfg.name, reason, "lost the leader lease");
        let _ = leading.send(false);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ME: &str = "me";

    fn timing(lease: u64, renew_ms: u64, retry_ms: u64) -> LeaseTiming {
        LeaseTiming {
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_millis(renew_ms),
            retry_period: Duration::from_millis(retry_ms),
        }
    }

    fn wall(secs: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(secs).unwrap())
    }

    fn record(holder: Option<&str>, secs: i32, renewed: i64) -> Record {
        Record {
            holder: holder.map(String::from),
            lease_duration_seconds: secs,
            acquire_time: Some(wall(0)),
            renew_time: Some(wall(renewed)),
            transitions: 3,
        }
    }

    #[test]
    fn timing_keeps_client_go_ratios_and_refuses_what_cannot_keep_one_leader() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let invalid = |why| Err(InvalidTiming(why));
        // (what, lease, renew deadline, retry period) -> timing or refusal.
        type Given = (&'static str, Duration, Option<Duration>, Option<Duration>);
        let rows: Vec<(Given, Result<LeaseTiming, InvalidTiming>)> = vec![
            (("client-go defaults", s(15), None, None), Ok(timing(15, 10_000, 2_000))),
            (("short lease, same ratios", s(6), None, None), Ok(timing(6, 4_000, 800))),
            (("explicit", s(4), Some(s(2)), Some(s(1))), Ok(timing(4, 2_000, 1_000))),
            (
                ("deadline not under the lease", s(4), Some(s(4)), None),
                invalid("the lease duration must be longer than the renew deadline"),
            ),
            (
                ("retry too close to the deadline", s(4), Some(s(2)), Some(ms(1_700))),
                invalid("the renew deadline must be longer than 1.2 retry periods"),
            ),
            (("no retry period", s(4), None, Some(s(0))), invalid("the retry period must be positive")),
            (
                ("sub-second lease", ms(900), Some(ms(500)), Some(ms(100))),
                invalid("the lease duration must be at least one second"),
            ),
        ];
        for ((what, lease, renew, retry), want) in rows {
            assert_eq!(LeaseTiming::new(lease, renew, retry), want, "{what}");
        }
    }

    #[test]
    fn decide_acquires_renews_or_stands_by_by_local_observation_only() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // The record's renewTime is the holder's clock: far in the past or
        // future, it must not change the decision.
        let rows: Vec<(&str, Option<Record>, Instant, Step)> = vec![
            ("no Lease", None, at(0), Step::Create),
            ("ours, just seen", Some(record(Some(ME), 15, 0)), at(0), Step::Renew),
            ("ours, seen long ago", Some(record(Some(ME), 15, 0)), at(100), Step::Renew),
            ("another's, seen 14 s ago", Some(record(Some("other"), 15, 0)), at(14), Step::Standby),
            ("another's, seen 15 s ago", Some(record(Some("other"), 15, 0)), at(15), Step::TakeOver),
            ("another's, renewTime in 1970, seen now", Some(record(Some("other"), 15, 1)), at(0), Step::Standby),
            (
                "another's, renewTime in 2100, unchanged 16 s",
                Some(record(Some("other"), 15, 4_102_444_800)),
                at(16),
                Step::TakeOver,
            ),
            ("released (no holder)", Some(record(None, 1, 0)), at(0), Step::TakeOver),
            ("another's, zero duration", Some(record(Some("other"), 0, 0)), at(0), Step::TakeOver),
        ];
        for (what, record, now, want) in rows {
            let observed = record.map(|record| Observed { record, at: t0 });
            assert_eq!(decide(ME, observed.as_ref(), now), want, "{what}");
        }
    }

    #[test]
    fn an_observation_restarts_only_when_the_record_changes() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(9);
        let first = Observed::next(None, record(Some("other"), 15, 10), t0);
        let rows: Vec<(&str, Record, Instant)> = vec![
            ("unchanged: keeps the first sighting", record(Some("other"), 15, 10), t0),
            ("renewed: restarts", record(Some("other"), 15, 11), later),
            ("renewTime went backwards: still a change", record(Some("other"), 15, 9), later),
            ("new holder: restarts", record(Some("third"), 15, 10), later),
            ("duration changed: restarts", record(Some("other"), 20, 10), later),
        ];
        for (what, seen, want_at) in rows {
            let next = Observed::next(Some(first.clone()), seen.clone(), later);
            assert_eq!(next, Observed { record: seen, at: want_at }, "{what}");
        }
        assert_eq!(first.at, t0, "a first sighting starts the observation");
    }

    #[test]
    fn next_record_keeps_acquire_time_on_renewal_and_counts_takeovers() {
        let t = timing(15, 10_000, 2_000);
        let current = record(Some("other"), 15, 5);
        // (what, step, current record) -> (acquire time, transitions).
        type Given<'a> = (&'a str, Step, Option<&'a Record>);
        type Want = (Option<MicroTime>, i32);
        let rows: Vec<(Given, Want)> = vec![
            (("create", Step::Create, None), (Some(wall(50)), 0)),
            (("renew", Step::Renew, Some(&current)), (Some(wall(0)), 3)),
            (("take over", Step::TakeOver, Some(&current)), (Some(wall(50)), 4)),
        ];
        for ((what, step, current), (acquire, transitions)) in rows {
            let next = next_record(step, ME, current, &t, &wall(50));
            assert_eq!(next.holder.as_deref(), Some(ME), "{what}");
            assert_eq!(next.lease_duration_seconds, 15, "{what}");
            assert_eq!(next.renew_time, Some(wall(50)), "{what}");
            assert_eq!((next.acquire_time, next.transitions), (acquire, transitions), "{what}");
        }
    }

    #[test]
    fn the_leader_stops_writing_before_any_candidate_may_take_over() {
        // The leader's last successful renewal started at `s`; a candidate
        // saw the record it wrote at some `o >= s` (here: at once, the worst
        // case) and takes over at the first attempt where the observation
        // is no longer valid. The fence must be shut by then.
        for t in [timing(15, 10_000, 2_000), timing(6, 4_000, 800), timing(2, 1_300, 200)] {
            let s = Instant::now();
            let fence = Fence::closed();
            fence.extend_to(s + t.renew_deadline);
            let seen = Observed { record: record(Some("leader"), t.lease_seconds(), 0), at: s };
            let mut now = s;
            while decide("candidate", Some(&seen), now) == Step::Standby {
                now += Duration::from_millis(10);
            }
            assert!(!fence.is_open_at(now), "{t:?}: the fence is still open when the candidate takes over");
            assert!(fence.is_open_at(s + t.renew_deadline - Duration::from_millis(1)), "{t:?}");
        }
    }

    #[test]
    fn a_fence_opens_for_a_window_and_closes_by_itself() {
        let t0 = Instant::now();
        let fence = Fence::closed();
        assert!(!fence.is_open_at(t0));
        fence.extend_to(t0 + Duration::from_secs(10));
        assert!(fence.is_open_at(t0 + Duration::from_secs(9)));
        assert!(!fence.is_open_at(t0 + Duration::from_secs(10)), "closed at the deadline");
        fence.extend_to(t0 + Duration::from_secs(5));
        assert!(fence.is_open_at(t0 + Duration::from_secs(9)), "a stale extension never shortens the window");
        fence.close();
        assert!(!fence.is_open_at(t0));
        assert!(Fence::open().is_open_at(t0 + Duration::from_secs(1_000_000)));
    }

    /// A minimal API server for one Lease, with resourceVersions, that can
    /// be made to hang; it also records the method of every request.
    #[derive(Clone, Default)]
    struct FakeApi {
        lease: Arc<std::sync::Mutex<Option<Lease>>>,
        version: Arc<AtomicU64>,
        hang: Arc<AtomicBool>,
        requests: Arc<std::sync::Mutex<Vec<Method>>>,
    }

    type Reply = http::Response<kube::client::Body>;

    impl FakeApi {
        fn reply(status: u16, body: &impl serde::Serialize) -> Reply {
            let body = serde_json::to_vec(body).unwrap();
            http::Response::builder().status(status).body(kube::client::Body::from(body)).unwrap()
        }

        fn status(code: u16, reason: &str) -> Reply {
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": reason, "code": code, "message": reason,
            });
            Self::reply(code, &status)
        }

        fn handle(&self, method: &Method, body: &[u8]) -> Reply {
            let mut stored = self.lease.lock().unwrap();
            let current = stored.as_ref().and_then(|l| l.metadata.resource_version.clone());
            let mut lease: Lease = match *method {
                Method::GET => {
                    return stored.as_ref().map_or_else(|| Self::status(404, "NotFound"), |l| Self::reply(200, l));
                }
                Method::POST if stored.is_some() => return Self::status(409, "AlreadyExists"),
                Method::POST | Method::PUT => serde_json::from_slice(body).unwrap(),
                _ => return Self::status(405, "MethodNotAllowed"),
            };
            if *method == Method::PUT && lease.metadata.resource_version != current {
                return Self::status(409, "Conflict");
            }
            let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
            lease.metadata.resource_version = Some(version.to_string());
            *stored = Some(lease.clone());
            Self::reply(200, &lease)
        }

        fn client(&self) -> Client {
            ClientBuilder::new(self.clone(), "default").build()
        }
    }

    impl Service<Request<kube::client::Body>> for FakeApi {
        type Response = Reply;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

        fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
            let api = self.clone();
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                api.requests.lock().unwrap().push(parts.method.clone());
                if api.hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                let body = body.collect_bytes().await?;
                Ok(api.handle(&parts.method, &body))
            })
        }
    }

    fn elector(api: &FakeApi, identity: &str, t: LeaseTiming) -> Arc<LeaderElector> {
        let cfg =
            LeaseConfig { name: "lease".into(), namespace: "default".into(), identity: identity.into(), timing: t };
        Arc::new(LeaderElector::new(api.client(), cfg))
    }

    async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("timed out after {limit:?}: {what}"))
    }

    #[tokio::test]
    async fn a_hung_renewal_ends_leadership_at_the_renew_deadline() {
        let t = timing(1, 600, 100);
        let api = FakeApi::default();
        let leader = elector(&api, "a", t);
        let mut leading = within(Duration::from_secs(5), "acquire", leader.clone().acquire()).await;
        let acquired = Instant::now();
        assert!(leader.fence().is_open());
        api.hang.store(true, Ordering::SeqCst);
        within(Duration::from_secs(5), "loss", leading.wait_for(|l| !l)).await.unwrap();
        let lost_after = acquired.elapsed();
        assert!(!leader.fence().is_open(), "the fence is open after the loss");
        assert!(lost_after <= t.renew_deadline + Duration::from_millis(200), "lost only after {lost_after:?}");
    }

    #[tokio::test]
    async fn a_candidate_waits_a_lease_duration_after_the_last_change_whatever_the_renew_time_says() {
        let t = timing(1, 600, 100);
        let api = FakeApi::default();
        // Another replica holds it and wrote a renewTime far in the past by
        // our clock: a clock-comparing elector would take over at once.
        let mut lease =
            Lease { metadata: ObjectMeta { name: Some("lease".into()), ..ObjectMeta::default() }, spec: None };
        record(Some("other"), 1, 1).write_into(&mut lease);
        api.handle(&Method::POST, &serde_json::to_vec(&lease).unwrap());

        let candidate = elector(&api, "b", t);
        let started = Instant::now();
        assert_eq!(candidate.try_acquire_or_renew().await.unwrap(), Attempt::Standby);
        let mut leading = within(Duration::from_secs(5), "takeover", candidate.clone().acquire()).await;
        assert!(started.elapsed() >= t.lease_duration, "took over after {:?}", started.elapsed());
        assert!(*leading.borrow_and_update());
        let held = Record::of(api.lease.lock().unwrap().as_ref().unwrap());
        assert_eq!((held.holder.as_deref(), held.transitions), (Some("b"), 4));
    }

    #[tokio::test]
    async fn the_standby_loses_the_race_and_release_hands_over_at_once() {
        let t = timing(1, 600, 100);
        let api = FakeApi::default();
        let a = elector(&api, "a", t);
        let b = elector(&api, "b", t);
        let _leading = within(Duration::from_secs(5), "a acquires", a.clone().acquire()).await;
        assert_eq!(b.try_acquire_or_renew().await.unwrap(), Attempt::Standby);
        a.release().await;
        assert!(!a.fence().is_open(), "a released the lease but may still write");
        let started = Instant::now();
        let _b_leading = within(Duration::from_secs(5), "b acquires", b.clone().acquire()).await;
        assert!(started.elapsed() < t.lease_duration, "b waited out a released lease");
        tokio::time::sleep(t.retry_period * 3).await;
        let held = Record::of(api.lease.lock().unwrap().as_ref().unwrap());
        assert_eq!(held.holder.as_deref(), Some("b"), "a renewed a lease it had released");
    }

    #[tokio::test]
    async fn the_fence_refuses_writes_but_lets_reads_and_watches_through() {
        let api = FakeApi::default();
        let fence = Fence::closed();
        let client = ClientBuilder::new(api.clone(), "default").with_layer(&FenceLayer(fence.clone())).build();
        let send = |method: Method| {
            let client = client.clone();
            async move {
                let req = Request::builder()
                    .method(method)
                    .uri("/apis/coordination.k8s.io/v1/namespaces/default/leases/lease");
                client.send(req.body(kube::client::Body::from(b"{}".to_vec())).unwrap()).await
            }
        };
        let refused = send(Method::PUT).await.unwrap_err();
        assert!(refused.to_string().contains("does not hold the leader lease"), "{refused}");
        assert!(send(Method::DELETE).await.is_err());
        assert!(send(Method::GET).await.is_ok());
        assert_eq!(*api.requests.lock().unwrap(), vec![Method::GET], "a refused write reached the server");
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        let _ = send(Method::PATCH).await;
        assert_eq!(api.requests.lock().unwrap().last(), Some(&Method::PATCH));
    }

    /// A write let through while the window was open but not yet sent when
    /// it closed (the process paused in between) is refused, unsent.
    #[tokio::test]
    async fn a_write_called_in_the_window_but_sent_after_it_is_refused() {
        let api = FakeApi::default();
        let fence = Fence::closed();
        fence.extend_to(Instant::now() + Duration::from_secs(60));
        let mut fenced = FenceLayer(fence.clone()).layer(api.clone());
        let req = |method: Method| {
            Request::builder()
                .method(method)
                .uri("/apis/coordination.k8s.io/v1/namespaces/default/leases/lease")
                .body(kube::client::Body::from(b"{}".to_vec()))
        };
        let write = fenced.call(req(Method::POST).unwrap());
        let read = fenced.call(req(Method::GET).unwrap());
        // The window closes (its deadline passes) before they are polled.
        fence.close();
        let refused = write.await.unwrap_err();
        assert!(refused.to_string().contains("does not hold the leader lease"), "{refused}");
        assert!(read.await.is_ok());
        assert_eq!(*api.requests.lock().unwrap(), vec![Method::GET], "the late write reached the server");
    }
}
