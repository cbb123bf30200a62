//! Prometheus metrics of the proxy, served on `/metrics`.
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Counters and histograms; cheap to update from request paths.
pub struct Metrics {
    registry: Registry,
    /// Requests by API and outcome (`ok`, `upstream_error`, a refusal label, ...).
    pub requests: Family<Labels, Counter>,
    /// Credits debited.
    pub credits: Counter,
    /// Credits the upstream's usage was worth that could not be billed
    /// (the upstream went past the hold and the balance could not pay the
    /// rest). The meter's integrity promise is that this stays 0.
    pub unbilled: Counter,
    /// Settled requests whose usage was estimated because the upstream did
    /// not report it (cut streams, missing usage blocks).
    pub estimated: Counter,
    /// Streams still being read (including drains after a client left).
    pub open_streams: Gauge,
    /// Time from request arrival to upstream response headers, seconds.
    pub upstream_seconds: Histogram,
    /// Ledger lookups of presented keys the key cache did not hold.
    pub key_lookups: Counter,
    /// The proxy's own time in a request, by phase: `admission` (arrival
    /// to the upstream request leaving: key, body, hold) and `settlement`
    /// (the usage record's commit, which the answer's last byte waits for).
    /// What a client sees added to a direct call is the sum of both.
    added_seconds: Family<Labels, Histogram>,
    /// Credit leases of this replica, refreshed from the ledger's
    /// [`crate::ledger::LeaseStats`] whenever the metrics are rendered.
    pub leases: LeaseMetrics,
}

/// How much admission ran against credit leases instead of a commit each.
#[derive(Clone, Default)]
pub struct LeaseMetrics {
    /// Requests admitted against a lease (no commit of their own).
    pub holds: Counter,
    /// Lease chunks taken (one commit each).
    pub takes: Counter,
    /// Credits given back to accounts (idle, pressure, shutdown).
    pub returned: Counter,
    /// Credits this replica's leases hold now.
    pub leased: Gauge,
}

impl LeaseMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("lease_holds", "Requests admitted against a credit lease", self.holds.clone());
        registry.register("lease_takes", "Credit lease chunks taken from accounts", self.takes.clone());
        registry.register("lease_returned_credits", "Credits given back from leases", self.returned.clone());
        registry.register("leased_credits", "Credits held by this replica's leases", self.leased.clone());
    }

    /// Brings the series up to `stats` (counters only move forward).
    pub fn observe(&self, stats: crate::ledger::LeaseStats) {
        let forward = |c: &Counter, to: u64| c.inc_by(to.saturating_sub(c.get()));
        forward(&self.holds, stats.holds);
        forward(&self.takes, stats.takes);
        forward(&self.returned, stats.returned);
        self.leased.set(stats.leased);
    }
}

/// The phases of [`Metrics::added_seconds`], each exported from the start.
const PHASES: [&str; 2] = ["admission", "settlement"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("winston_proxy");
        let requests = Family::<Labels, Counter>::default();
        let credits = Counter::default();
        let unbilled = Counter::default();
        let estimated = Counter::default();
        let open_streams = Gauge::default();
        let upstream_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("requests", "LLM requests by API and outcome", requests.clone());
        registry.register("credits_debited", "Credits debited from tenant ledgers", credits.clone());
        registry.register(
            "unbilled_credits",
            "Credits of upstream usage that could not be billed (must stay 0)",
            unbilled.clone(),
        );
        registry.register("estimated_usage", "Settled requests whose usage was estimated", estimated.clone());
        registry.register("open_streams", "Upstream streams being read", open_streams.clone());
        registry.register("upstream_seconds", "Time to upstream response headers", upstream_seconds.clone());
        let key_lookups = Counter::default();
        registry.register("key_lookups", "Ledger lookups of API keys missing from the cache", key_lookups.clone());
        // 50 us to about 1.6 s: the goal is a p99 under 1 ms.
        let added_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.00005, 2.0, 16)));
        for phase in PHASES {
            let _ = added_seconds.get_or_create(&vec![("phase", phase)]);
        }
        registry.register(
            "added_seconds",
            "The proxy's own time in a request by phase (admission, settlement)",
            added_seconds.clone(),
        );
        let leases = LeaseMetrics::default();
        leases.register(&mut registry);
        Self {
            registry,
            requests,
            credits,
            unbilled,
            estimated,
            open_streams,
            upstream_seconds,
            key_lookups,
            added_seconds,
            leases,
        }
    }
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, api: &'static str, outcome: &'static str) {
        self.requests.get_or_create(&vec![("api", api), ("outcome", outcome)]).inc();
    }

    /// Counts one settlement: credits debited, credits that went unbilled,
    /// and whether the usage was estimated.
    pub fn settled(&self, s: &crate::ledger::Settlement, usage: &crate::ledger::Usage) {
        self.credits.inc_by(u64::try_from(s.credits).unwrap_or(0));
        let unbilled = s.unbilled();
        if unbilled > 0 {
            self.unbilled.inc_by(u64::try_from(unbilled).unwrap_or(0));
            tracing::warn!(unbilled, model = %usage.model, "upstream usage exceeded what the balance could pay");
        }
        if usage.estimated && !s.already_billed {
            self.estimated.inc();
        }
    }

    /// Records the time from a request's arrival until its upstream call.
    pub fn admitted(&self, took: std::time::Duration) {
        self.added_seconds.get_or_create(&vec![("phase", PHASES[0])]).observe(took.as_secs_f64());
    }

    /// Records the time a settlement held the answer back.
    pub fn settlement_took(&self, took: std::time::Duration) {
        self.added_seconds.get_or_create(&vec![("phase", PHASES[1])]).observe(took.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_added_time_phases_are_exported_before_any_request() {
        let m = Metrics::default();
        let text = m.render();
        for phase in PHASES {
            assert!(text.contains(&format!("winston_proxy_added_seconds_count{{phase=\"{phase}\"}} 0\n")), "{text}");
        }
        m.admitted(std::time::Duration::from_micros(300));
        m.settlement_took(std::time::Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("winston_proxy_added_seconds_bucket{le=\"0.0004\",phase=\"admission\"} 1\n"), "{text}");
        assert!(text.contains("winston_proxy_added_seconds_bucket{le=\"0.0016\",phase=\"settlement\"} 0\n"), "{text}");
        assert!(text.contains("winston_proxy_added_seconds_bucket{le=\"0.0032\",phase=\"settlement\"} 1\n"), "{text}");
    }
}
