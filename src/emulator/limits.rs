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
use std::collections::BTreeMap;
use std::sync::Mutex;

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
        let hour = |requests| Limit { requests, window_s: 3600 };
        let second = |requests| Limit { requests, window_s: 1 };
        match self {
            Self::Free => vec![hour(100)],
            Self::Hobby => vec![hour(1000), second(10)],
            Self::Pro => vec![hour(10_000), second(50)],
            Self::Unlimited => vec![],
        }
    }
}

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
}

impl Default for PlatformLimits {
    fn default() -> Self {
        Self {
            supabase: Some(Limit::per_minute(120)),
            railway_plan: RailwayPlan::Pro,
            vercel_project_creates: Some(Limit::per_minute(100)),
            vercel_deployment_creates: Some(Limit::per_minute(60)),
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
        }
    }

    /// The limits a request for `platform`/`operation` counts against, each
    /// with the name of its counter.
    fn applying(&self, platform: Platform, operation: &str) -> Vec<(&'static str, Limit)> {
        match platform {
            Platform::Supabase => self.supabase.map(|l| ("management", l)).into_iter().collect(),
            Platform::Railway => self.railway_plan.limits().into_iter().map(|l| ("plan", l)).collect(),
            Platform::Vercel => match operation {
                "createProject" => self.vercel_project_creates.map(|l| ("createProject", l)).into_iter().collect(),
                "createDeployment" => {
                    self.vercel_deployment_creates.map(|l| ("createDeployment", l)).into_iter().collect()
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

/// One counter: platform, limit name, token, window length in seconds.
type CounterKey = (Platform, &'static str, String, u64);

/// The fixed-window counters: per [`CounterKey`], the window start in
/// seconds and the requests admitted in it.
#[derive(Debug, Default)]
pub struct Counters {
    windows: Mutex<BTreeMap<CounterKey, (u64, u32)>>,
}

impl Counters {
    /// Counts one request of `token` against every limit that applies:
    /// `Ok` with the tightest standing when all admit it (then it is
    /// counted in each), `Err` with the exhausted one otherwise (then it is
    /// counted in none). `Ok(None)`: no published limit applies.
    pub fn admit(
        &self,
        limits: &PlatformLimits,
        platform: Platform,
        operation: &str,
        token: &str,
    ) -> Result<Option<Standing>, Standing> {
        let applying = limits.applying(platform, operation);
        if applying.is_empty() {
            return Ok(None);
        }
        let now_s = (now_ms() / 1000) as u64;
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut standings = Vec::with_capacity(applying.len());
        for (counter, limit) in &applying {
            let start = now_s - now_s % limit.window_s.max(1);
            let entry = windows.entry((platform, *counter, token.to_string(), limit.window_s)).or_insert((start, 0));
            if entry.0 != start {
                *entry = (start, 0);
            }
            let reset_s = (start + limit.window_s.max(1) - now_s).max(1);
            let remaining = limit.requests.saturating_sub(entry.1);
            if remaining == 0 {
                return Err(Standing { limit: limit.requests, remaining: 0, reset_s });
            }
            standings.push((
                *counter,
                limit.window_s,
                Standing { limit: limit.requests, remaining: remaining - 1, reset_s },
            ));
        }
        for (counter, window_s, _) in &standings {
            if let Some(entry) = windows.get_mut(&(platform, *counter, token.to_string(), *window_s)) {
                entry.1 += 1;
            }
        }
        Ok(standings.into_iter().map(|(_, _, s)| s).min_by_key(|s| s.remaining))
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
        let refused = c.admit(&limits, Platform::Supabase, "getProject", "t").unwrap_err();
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
}
