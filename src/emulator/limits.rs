//! The platforms' published request limits beyond the emulator's global
//! per-platform window: Supabase's Management API allows 120 requests per
//! minute per token; Vercel limits endpoints separately (project creation,
//! deployment creation); Railway limits each token by plan, per hour and,
//! on paid plans, per second. Every limit is a fixed window counted per
//! token (and endpoint); a request over any of them answers 429 with the
//! platform's `x-ratelimit-*` headers and `Retry-After`, and is not counted.
//!
//! Sources: Supabase's Management API docs (120/min per user, headers
//! `X-RateLimit-Limit`, `-Remaining`, `-Reset` in seconds); Railway's
//! Public API reference (Free 100 RPH; Hobby 1000 RPH and 10 RPS; Pro
//! 10000 RPH and 50 RPS; `X-RateLimit-*` and `Retry-After` on 429); Vercel's
//! limits pages (deployments created per day: Hobby 100, Pro 6000).
//! Vercel's per-minute figures for deployment (60) and project creation
//! (100) are the defaults here but were not read from Vercel itself, so
//! they are configurable.
//!
//! # Vercel's per-day deployment budget
//! Vercel's limits page (<https://vercel.com/docs/limits>, "Deployments
//! Created per Day": Hobby 100, Pro 6000, Enterprise custom) caps
//! deployments per day beside the per-minute limits. Spent, Vercel answers
//! **402** (not 429) with code `api-deployments-free-per-day` on Hobby and
//! the message "Resource is limited - try again in 24 hours (more than 100,
//! code: \"api-deployments-free-per-day\")", and a `limit` object
//! `{total, remaining: 0, reset}` whose `reset` is epoch milliseconds
//! (reported in vercel/vercel#17426, which also observes that `reset` is
//! "now + 24 h" on each refused call; the emulator gives the end of its
//! fixed window). [`VercelPlan`] picks the figure; the Pro code
//! (`api-deployments-per-day`) was not confirmed from a public answer. The
//! day's length is configurable ([`PlatformLimits::vercel_day_s`]) so tests
//! need not wait a day.
//!
//! # What the emulator counts
//! Besides admitting, [`Counters`] counts per platform and limit the
//! refusals and the *early* ones: a refusal arriving more than
//! [`EARLY_GRACE_MS`] after an earlier refusal of the same counter in the
//! same window, i.e. a request sent after the client was told when the
//! window resets and before it did. A well-behaved client makes none
//! (a fresh process that never saw the first refusal can make one).
use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::context::now_ms;
use crate::platform::Platform;

/// At most `requests` in each window of `window_s` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub window_s: u64,
}

impl Limit {
    /// `requests` per minute.
    #[must_use]
    pub const fn per_minute(requests: u32) -> Self {
        Self { requests, window_s: 60 }
    }
}

/// A Railway workspace plan, which sets the token's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RailwayPlan {
    /// Free or trial: 100 requests per hour.
    Free,
    /// 1000 requests per hour, 10 per second.
    Hobby,
    /// 10000 requests per hour, 50 per second.
    #[default]
    Pro,
    /// No plan limit (Enterprise limits are custom; for load tests).
    Unlimited,
}

impl RailwayPlan {
    /// The plan's limits, hourly first.
    #[must_use]
    pub fn limits(self) -> Vec<Limit> {
        self.limits_with_hour(3600)
    }

    /// The plan's limits with the hourly window lasting `hour_s` seconds
    /// (tests scale an hour down so a spent budget resets in time).
    #[must_use]
    pub fn limits_with_hour(self, hour_s: u64) -> Vec<Limit> {
        let hour = |requests| Limit { requests, window_s: hour_s.max(1) };
        let second = |requests| Limit { requests, window_s: 1 };
        match self {
            Self::Free => vec![hour(100)],
            Self::Hobby => vec![hour(1000), second(10)],
            Self::Pro => vec![hour(10_000), second(50)],
            Self::Unlimited => vec![],
        }
    }
}

/// A Vercel plan, which sets the deployments created per day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VercelPlan {
    /// 100 deployments per day; refused with `api-deployments-free-per-day`.
    Hobby,
    /// 6000 deployments per day.
    #[default]
    Pro,
    /// No daily limit (Enterprise limits are custom; for load tests).
    Unlimited,
}

impl VercelPlan {
    /// Deployments a day, and the error code of the refusal.
    #[must_use]
    pub fn deployments_per_day(self) -> Option<(u32, &'static str)> {
        match self {
            Self::Hobby => Some((100, "api-deployments-free-per-day")),
            Self::Pro => Some((6000, "api-deployments-per-day")),
            Self::Unlimited => None,
        }
    }
}

/// The counter of Vercel's daily deployment budget (answered 402, not 429).
pub const VERCEL_DAILY_DEPLOYMENTS: &str = "deploymentsPerDay";

/// A refusal later than this after the first one of its window was sent
/// knowing the window's reset (see the module docs). Requests already in
/// flight when the first refusal is answered may reach the counter later
/// than that on a loaded machine, so the grace is generous; it also means
/// per-second windows cannot show early requests, only longer ones can.
pub const EARLY_GRACE_MS: i64 = 1000;

/// The published limits the emulator enforces (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformLimits {
    /// Supabase Management API requests per token; `None` = no limit.
    pub supabase: Option<Limit>,
    /// The Railway plan of every token.
    pub railway_plan: RailwayPlan,
    /// Vercel `POST /v*/projects` per token; `None` = no limit.
    pub vercel_project_creates: Option<Limit>,
    /// Vercel `POST /v*/deployments` per token; `None` = no limit.
    pub vercel_deployment_creates: Option<Limit>,
    /// How long the Railway plan's "hour" lasts, in seconds (3600).
    pub railway_hour_s: u64,
    /// The Vercel plan, for the deployments created per day.
    pub vercel_plan: VercelPlan,
    /// Overrides the plan's deployments per day (tests); `None` = the plan's.
    pub vercel_deployments_per_day: Option<u32>,
    /// How long Vercel's "day" lasts, in seconds (86400).
    pub vercel_day_s: u64,
}

impl Default for PlatformLimits {
    fn default() -> Self {
        Self {
            supabase: Some(Limit::per_minute(120)),
            railway_plan: RailwayPlan::Pro,
            vercel_project_creates: Some(Limit::per_minute(100)),
            vercel_deployment_creates: Some(Limit::per_minute(60)),
            railway_hour_s: 3600,
            vercel_plan: VercelPlan::Pro,
            vercel_deployments_per_day: None,
            vercel_day_s: 86_400,
        }
    }
}

impl PlatformLimits {
    /// No published limit (tests that drive the emulator as fast as it answers).
    #[must_use]
    pub fn none() -> Self {
        Self {
            supabase: None,
            railway_plan: RailwayPlan::Unlimited,
            vercel_project_creates: None,
            vercel_deployment_creates: None,
            railway_hour_s: 3600,
            vercel_plan: VercelPlan::Unlimited,
            vercel_deployments_per_day: None,
            vercel_day_s: 86_400,
        }
    }

    /// Vercel's deployments per day and the refusal's error code, if any.
    #[must_use]
    pub fn vercel_daily(&self) -> Option<(u32, &'static str)> {
        let (plan, code) = self.vercel_plan.deployments_per_day().unwrap_or((0, "api-deployments-per-day"));
        match self.vercel_deployments_per_day {
            Some(n) => Some((n, code)),
            None => (plan > 0).then_some((plan, code)),
        }
    }

    /// The limits a request for `platform`/`operation` counts against, each
    /// with the name of its counter.
    fn applying(&self, platform: Platform, operation: &str) -> Vec<(&'static str, Limit)> {
        match platform {
            Platform::Supabase => self.supabase.map(|l| ("management", l)).into_iter().collect(),
            Platform::Railway => {
                self.railway_plan.limits_with_hour(self.railway_hour_s).into_iter().map(|l| ("plan", l)).collect()
            }
            Platform::Vercel => match operation {
                "createProject" => self.vercel_project_creates.map(|l| ("createProject", l)).into_iter().collect(),
                "createDeployment" => {
                    let day = self.vercel_daily().map(|(requests, _)| {
                        (VERCEL_DAILY_DEPLOYMENTS, Limit { requests, window_s: self.vercel_day_s.max(1) })
                    });
                    self.vercel_deployment_creates.map(|l| ("createDeployment", l)).into_iter().chain(day).collect()
                }
                _ => vec![],
            },
            Platform::Neon | Platform::Resend => vec![],
        }
    }
}

/// What one admitted or refused request learns about its tightest limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets (at least 1).
    pub reset_s: u64,
}

/// A refused request: the exhausted limit's counter and standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The counter's name (e.g. [`VERCEL_DAILY_DEPLOYMENTS`]).
    pub counter: &'static str,
    pub standing: Standing,
}

/// Refusals of one platform's limit (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RefusalCount {
    /// Requests refused.
    pub refused: u64,
    /// Of those, sent after an earlier refusal told when the window resets.
    pub early: u64,
}

/// One counter: platform, limit name, token, window length in seconds.
type CounterKey = (Platform, &'static str, String, u64);

/// One fixed window: its start in seconds, the requests admitted in it, and
/// when (ms) its first refusal was answered.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_s: u64,
    admitted: u32,
    first_refusal_ms: Option<i64>,
}

#[derive(Debug, Default)]
struct State {
    windows: BTreeMap<CounterKey, Window>,
    refusals: BTreeMap<(Platform, &'static str), RefusalCount>,
}

/// The fixed-window counters per [`CounterKey`], and the refusals counted.
#[derive(Debug, Default)]
pub struct Counters {
    state: Mutex<State>,
}

impl Counters {
    /// Counts one request of `token` against every limit that applies:
    /// `Ok` with the tightest standing when all admit it (then it is
    /// counted in each), `Err` with the exhausted one otherwise (then it is
    /// counted in none, and counted as refused). `Ok(None)`: no published
    /// limit applies.
    ///
    /// # Errors
    /// The [`Refusal`] of the first exhausted limit.
    pub fn admit(
        &self,
        limits: &PlatformLimits,
        platform: Platform,
        operation: &str,
        token: &str,
    ) -> Result<Option<Standing>, Refusal> {
        let applying = limits.applying(platform, operation);
        if applying.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let now_s = (now / 1000) as u64;
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = &mut *guard;
        let mut standings = Vec::with_capacity(applying.len());
        for (counter, limit) in &applying {
            let window_s = limit.window_s.max(1);
            let start_s = now_s - now_s % window_s;
            let key = (platform, *counter, token.to_string(), limit.window_s);
            let w = state.windows.entry(key.clone()).or_insert(Window { start_s, admitted: 0, first_refusal_ms: None });
            if w.start_s != start_s {
                *w = Window { start_s, admitted: 0, first_refusal_ms: None };
            }
            let reset_s = (start_s + window_s - now_s).max(1);
            let remaining = limit.requests.saturating_sub(w.admitted);
            if remaining == 0 {
                let early = w.first_refusal_ms.is_some_and(|first| now - first > EARLY_GRACE_MS);
                w.first_refusal_ms.get_or_insert(now);
                let count = state.refusals.entry((platform, *counter)).or_default();
                count.refused += 1;
                count.early += u64::from(early);
                return Err(Refusal { counter, standing: Standing { limit: limit.requests, remaining: 0, reset_s } });
            }
            standings.push((key, Standing { limit: limit.requests, remaining: remaining - 1, reset_s }));
        }
        for (key, _) in &standings {
            if let Some(w) = state.windows.get_mut(key) {
                w.admitted += 1;
            }
        }
        Ok(standings.into_iter().map(|(_, s)| s).min_by_key(|s| s.remaining))
    }

    /// Refusals so far, per platform and limit name.
    #[must_use]
    pub fn refusals(&self) -> BTreeMap<(Platform, &'static str), RefusalCount> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).refusals.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_its_limit_then_refuses_without_counting() {
        let limits = PlatformLimits { supabase: Some(Limit::per_minute(2)), ..PlatformLimits::none() };
        let c = Counters::default();
        let first = c.admit(&limits, Platform::Supabase, "listProjects", "t").unwrap().unwrap();
        assert_eq!((first.limit, first.remaining), (2, 1));
        let second = c.admit(&limits, Platform::Supabase, "getProject", "t").unwrap().unwrap();
        assert_eq!(second.remaining, 0);
        let refused = c.admit(&limits, Platform::Supabase, "getProject", "t").unwrap_err().standing;
        assert_eq!((refused.remaining, refused.limit), (0, 2));
        assert!(refused.reset_s >= 1 && refused.reset_s <= 60, "{refused:?}");
        assert!(c.admit(&limits, Platform::Supabase, "x", "other").is_ok(), "limits are per token");
        assert_eq!(c.admit(&limits, Platform::Neon, "x", "t"), Ok(None));
    }

    #[test]
    fn vercel_limits_are_per_endpoint_and_railway_per_plan() {
        let limits = PlatformLimits { vercel_project_creates: Some(Limit::per_minute(1)), ..PlatformLimits::none() };
        let c = Counters::default();
        assert!(c.admit(&limits, Platform::Vercel, "createProject", "t").is_ok());
        assert!(c.admit(&limits, Platform::Vercel, "createProject", "t").is_err());
        assert_eq!(c.admit(&limits, Platform::Vercel, "getProject", "t"), Ok(None));
        assert_eq!(RailwayPlan::Free.limits(), vec![Limit { requests: 100, window_s: 3600 }]);
        assert_eq!(RailwayPlan::Pro.limits()[1], Limit { requests: 50, window_s: 1 });
    }

    #[test]
    fn a_refusal_after_the_first_one_of_its_window_counts_as_early() {
        let limits = PlatformLimits { supabase: Some(Limit::per_minute(1)), ..PlatformLimits::none() };
        let c = Counters::default();
        assert!(c.admit(&limits, Platform::Supabase, "x", "t").is_ok());
        assert!(c.admit(&limits, Platform::Supabase, "x", "t").is_err());
        // Within the grace: a request already in flight when the first refusal went out.
        assert!(c.admit(&limits, Platform::Supabase, "x", "t").is_err());
        let counted = c.refusals()[&(Platform::Supabase, "management")];
        assert_eq!((counted.refused, counted.early), (2, 0));
        std::thread::sleep(std::time::Duration::from_millis(EARLY_GRACE_MS as u64 + 50));
        if c.admit(&limits, Platform::Supabase, "x", "t").is_err() {
            // Still the same minute: sent after the client knew the reset.
            assert_eq!(c.refusals()[&(Platform::Supabase, "management")].early, 1);
        }
    }

    #[test]
    fn vercel_counts_deployments_per_day_beside_per_minute() {
        let limits = PlatformLimits {
            vercel_plan: VercelPlan::Hobby,
            vercel_deployments_per_day: Some(1),
            ..PlatformLimits::none()
        };
        assert_eq!(limits.vercel_daily(), Some((1, "api-deployments-free-per-day")));
        assert_eq!(PlatformLimits::default().vercel_daily().map(|d| d.0), Some(6000));
        assert_eq!(VercelPlan::Hobby.deployments_per_day().map(|d| d.0), Some(100));
        let c = Counters::default();
        assert!(c.admit(&limits, Platform::Vercel, "createDeployment", "t").is_ok());
        let refused = c.admit(&limits, Platform::Vercel, "createDeployment", "t").unwrap_err();
        assert_eq!(refused.counter, VERCEL_DAILY_DEPLOYMENTS);
        // The day's window ends at the next UTC midnight (windows are aligned
        // to the epoch): not a minute's, and not "more than an hour away",
        // which failed every day between 23:00 and midnight.
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let to_midnight = 86_400 - now_s % 86_400;
        assert!(
            refused.standing.reset_s.abs_diff(to_midnight) <= 2,
            "a day's window: {refused:?}, {to_midnight} s to midnight"
        );
        assert_eq!(c.admit(&limits, Platform::Vercel, "getDeployment", "t"), Ok(None));
        let scaled = PlatformLimits { railway_plan: RailwayPlan::Hobby, railway_hour_s: 60, ..PlatformLimits::none() };
        assert_eq!(scaled.applying(Platform::Railway, "q")[0].1, Limit { requests: 1000, window_s: 60 });
    }
}
