//! The request budget of one platform, shared by every caller in the
//! process: a token bucket sized to the platform's published limit, a pause
//! when the platform says `Retry-After`, and a circuit breaker that stops
//! calling after repeated 5xx answers.
//!
//! Callers never sleep long while holding a reconcile slot: `acquire` waits
//! at most `max_wait` and otherwise returns a retryable error carrying the
//! wait, so the reconcile can requeue instead. Retrying is left to callers.
//!
//! Background work (drift checks of Ready instances, polls of operations
//! in motion), marked by running it inside [`background`], has the lower
//! priority: it never waits to start, and it starts only while more than
//! half the bucket is left, so the other half always stays for
//! provisioning, updates and deletions. Once started, its further calls
//! have normal priority: a unit of work that makes several calls (and would
//! start over from the first if refused midway) always gets to finish
//! instead of spending a slot on its first call again and again.
use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ProviderError;
use crate::platform::Platform;

/// Limits of one platform's budget.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Sustained requests per minute (the platform's published limit).
    pub per_minute: u32,
    /// Bucket size: requests that may go out back to back.
    pub burst: u32,
    /// Consecutive 5xx answers that open the circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit refuses calls before letting one probe through.
    pub breaker_cooldown_ms: u64,
    /// Longest wait `acquire` spends sleeping before giving the wait back to the caller.
    pub max_wait_ms: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { per_minute: 600, burst: 10, breaker_threshold: 5, breaker_cooldown_ms: 30_000, max_wait_ms: 2_000 }
    }
}

impl BudgetConfig {
    /// The published limits (see reference/provider-apis.md): Neon 700/min
    /// with bursts of 40/s, Railway Hobby 1000/h with 10/s, Vercel a
    /// conservative 100/min (per-endpoint numbers are unpublished), Supabase
    /// 120/min, Resend 2/s.
    #[must_use]
    pub fn published(platform: Platform) -> Self {
        let (per_minute, burst) = match platform {
            Platform::Neon => (700, 40),
            Platform::Railway => (16, 10),
            Platform::Vercel => (100, 10),
            Platform::Supabase => (120, 10),
            Platform::Resend => (120, 2),
        };
        Self { per_minute, burst, ..Self::default() }
    }
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    /// No request before this instant (Retry-After).
    paused_until: Option<Instant>,
    consecutive_5xx: u32,
    /// Circuit open until this instant; after it one probe goes through.
    open_until: Option<Instant>,
    probing: bool,
}

tokio::task_local! {
    /// Inside [`background`]: whether the work got its first slot yet.
    static BACKGROUND: Cell<bool>;
}

/// Runs `work` with background priority for the first call it makes on
/// any budget; its later calls have normal priority.
pub async fn background<F: std::future::Future>(work: F) -> F::Output {
    BACKGROUND.scope(Cell::new(false), work).await
}

/// Background work that has not started yet.
fn in_background() -> bool {
    BACKGROUND.try_with(|started| !started.get()).unwrap_or(false)
}

/// Background work took its first slot: the rest of it goes at normal priority.
fn started() {
    let _ = BACKGROUND.try_with(|started| started.set(true));
}

/// A shared per-platform request budget. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Budget {
    platform: Platform,
    config: BudgetConfig,
    state: Mutex<State>,
}

/// What a reservation attempt decided.
enum Decision {
    Go,
    Wait(Duration),
    Open(Duration),
}

impl Budget {
    /// A full bucket with a closed circuit.
    #[must_use]
    pub fn new(platform: Platform, config: BudgetConfig) -> Self {
        let state = State {
            tokens: f64::from(config.burst.max(1)),
            refilled: Instant::now(),
            paused_until: None,
            consecutive_5xx: 0,
            open_until: None,
            probing: false,
        };
        Self { platform, config, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters
        // inconsistent in a way that matters, so poisoning is ignored.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decide(&self, now: Instant, background: bool) -> Decision {
        let mut s = self.lock();
        if let Some(until) = s.open_until {
            if now < until {
                return Decision::Open(until - now);
            }
            if s.probing {
                return Decision::Open(Duration::from_millis(self.config.breaker_cooldown_ms.max(1)));
            }
        }
        if let Some(until) = s.paused_until {
            if now < until {
                return Decision::Wait(until - now);
            }
            s.paused_until = None;
        }
        let rate = f64::from(self.config.per_minute.max(1)) / 60.0;
        let burst = f64::from(self.config.burst.max(1));
        let elapsed = now.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * rate).min(burst);
        s.refilled = now;
        // Background work leaves the lower half of the bucket to the rest.
        let needed = if background { 1.0 + (burst / 2.0).floor() } else { 1.0 };
        if s.tokens >= needed {
            s.tokens -= 1.0;
            if s.open_until.is_some() {
                s.probing = true;
            }
            Decision::Go
        } else {
            Decision::Wait(Duration::from_secs_f64((needed - s.tokens) / rate))
        }
    }

    /// Takes one request slot, sleeping at most `max_wait_ms` for it (not
    /// at all for the first slot of [`background`] work).
    ///
    /// # Errors
    /// `RateLimited` (with the wait) when the bucket or a Retry-After pause
    /// needs longer; `CircuitOpen` while the breaker is open.
    pub async fn acquire(&self) -> Result<(), ProviderError> {
        let background = in_background();
        let max_wait = if background { Duration::ZERO } else { Duration::from_millis(self.config.max_wait_ms) };
        let deadline = Instant::now() + max_wait;
        // A token-bucket wait, not a retry (so not `backon`): nothing is sent
        // until a slot is free, each turn sleeps exactly until the bucket
        // refills (or the Retry-After pause ends) and re-checks, because
        // other callers may have taken the slot meanwhile. It never outlasts
        // `max_wait`; a longer wait goes back to the caller as `RateLimited`.
        loop {
            match self.decide(Instant::now(), background) {
                Decision::Go => {
                    started();
                    return Ok(());
                }
                Decision::Open(retry_after) => {
                    return Err(ProviderError::CircuitOpen { platform: self.platform, retry_after });
                }
                Decision::Wait(wait) => {
                    if Instant::now() + wait > deadline {
                        return Err(ProviderError::RateLimited {
                            platform: self.platform,
                            retry_after: Some(self.retry_wait(wait)),
                            message: "local request budget exhausted".into(),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// How long a refused caller waits before its next pass: at least
    /// `wait`, and until half the bucket is back when the bucket (not a
    /// platform's pause) refused it. A pass makes several calls in a row (a
    /// teardown reads, then deletes); requeued after one call's refill, it
    /// would spend that one token on its first call and be refused on the
    /// next, every time, and never finish.
    fn retry_wait(&self, wait: Duration) -> Duration {
        let s = self.lock();
        if s.paused_until.is_some_and(|u| u > Instant::now()) {
            return wait;
        }
        let rate = f64::from(self.config.per_minute.max(1)) / 60.0;
        let target = (f64::from(self.config.burst.max(1)) / 2.0).ceil();
        let refill = Duration::from_secs_f64((target - s.tokens).max(0.0) / rate);
        wait.max(refill)
    }

    /// Records the platform's `Retry-After`: nobody calls before it passes.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut s = self.lock();
        if s.paused_until.is_none_or(|u| u < until) {
            s.paused_until = Some(until);
        }
    }

    /// Records the outcome of a call: a 5xx (or no answer) counts toward
    /// opening the circuit, any answer below 500 closes it.
    pub fn record(&self, server_failure: bool) {
        let mut s = self.lock();
        s.probing = false;
        if server_failure {
            s.consecutive_5xx += 1;
            if s.consecutive_5xx >= self.config.breaker_threshold.max(1) {
                s.open_until = Some(Instant::now() + Duration::from_millis(self.config.breaker_cooldown_ms));
                tracing::warn!(platform = %self.platform, failures = s.consecutive_5xx, "circuit opened");
            }
        } else {
            if s.open_until.is_some() {
                tracing::info!(platform = %self.platform, "circuit closed");
            }
            s.consecutive_5xx = 0;
            s.open_until = None;
        }
    }

    /// True while the breaker refuses calls.
    #[must_use]
    pub fn circuit_open(&self) -> bool {
        self.lock().open_until.is_some_and(|u| Instant::now() < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_minute: u32, burst: u32) -> BudgetConfig {
        BudgetConfig { per_minute, burst, breaker_threshold: 3, breaker_cooldown_ms: 60_000, max_wait_ms: 0 }
    }

    #[tokio::test]
    async fn bucket_allows_burst_then_reports_the_wait() {
        let b = Budget::new(Platform::Neon, cfg(60, 3));
        for _ in 0..3 {
            b.acquire().await.unwrap();
        }
        let e = b.acquire().await.unwrap_err();
        assert_eq!(e.category(), "rate_limited");
        // Not one token's refill (1 s) but half the bucket's (2 of 3 tokens):
        // the next pass can make more than one call.
        let wait = e.retry_after().unwrap();
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2), "{wait:?}");
    }

    /// A pass that needs two calls in a row (read, then delete) and is
    /// retried when told finishes: it is not requeued after one token's
    /// refill only to spend it on its first call and be refused again.
    #[tokio::test]
    async fn a_refused_pass_of_several_calls_finishes_on_its_retry() {
        let b = Budget::new(Platform::Railway, cfg(600, 4));
        for _ in 0..4 {
            b.acquire().await.unwrap();
        }
        let wait = b.acquire().await.unwrap_err().retry_after().unwrap();
        tokio::time::sleep(wait).await;
        b.acquire().await.unwrap();
        b.acquire().await.unwrap();
    }

    #[tokio::test]
    async fn background_work_leaves_half_the_bucket_and_never_waits() {
        let mut c = cfg(60, 10);
        c.max_wait_ms = 5_000;
        let b = Budget::new(Platform::Railway, c);
        // Background work starts while more than half the bucket is left.
        for _ in 0..5 {
            background(b.acquire()).await.unwrap();
        }
        let started = Instant::now();
        let e = background(b.acquire()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "background work waited");
        assert_eq!(e.category(), "rate_limited");
        assert!(e.retry_after().unwrap() > Duration::from_millis(900), "{e:?}");
        // The other half is still there for foreground work.
        for _ in 0..5 {
            b.acquire().await.unwrap();
        }
    }

    #[tokio::test]
    async fn started_background_work_finishes_at_normal_priority() {
        // 100 a second, a bucket of 4, waits up to a second.
        let mut c = cfg(6000, 4);
        c.max_wait_ms = 1_000;
        let b = Budget::new(Platform::Railway, c);
        // Five calls of one unit of background work: the first needs more
        // than half the bucket (3 of 4), the others take what is left and
        // wait for a refill like any caller.
        background(async {
            for _ in 0..5 {
                b.acquire().await.unwrap();
            }
        })
        .await;
        // A new unit does not start on a bucket under half; it may once the
        // budget's wait has passed.
        let e = background(b.acquire()).await.unwrap_err();
        assert_eq!(e.category(), "rate_limited");
        tokio::time::sleep(e.retry_after().unwrap()).await;
        background(async {
            b.acquire().await.unwrap();
            b.acquire().await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn retry_after_pauses_every_caller() {
        let b = Budget::new(Platform::Vercel, cfg(6000, 100));
        b.pause_for(Duration::from_secs(30));
        let e = b.acquire().await.unwrap_err();
        assert!(e.retry_after().unwrap() > Duration::from_secs(29));
    }

    #[tokio::test]
    async fn repeated_server_errors_open_the_circuit_and_a_success_closes_it() {
        let b = Budget::new(Platform::Railway, cfg(6000, 100));
        b.record(true);
        b.record(true);
        assert!(!b.circuit_open());
        b.acquire().await.unwrap();
        b.record(true);
        assert!(b.circuit_open());
        assert_eq!(b.acquire().await.unwrap_err().category(), "circuit_open");
        b.record(false);
        assert!(!b.circuit_open());
        b.acquire().await.unwrap();
    }

    #[tokio::test]
    async fn after_cooldown_exactly_one_probe_goes_through() {
        let mut c = cfg(6000, 100);
        c.breaker_threshold = 1;
        c.breaker_cooldown_ms = 0;
        let b = Budget::new(Platform::Neon, c);
        b.record(true);
        b.acquire().await.unwrap();
        assert_eq!(b.acquire().await.unwrap_err().category(), "circuit_open");
        b.record(false);
        b.acquire().await.unwrap();
    }
}
