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
    /// Streams still being read (including drains after a client left).
    pub open_streams: Gauge,
    /// Time from request arrival to upstream response headers, seconds.
    pub upstream_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("winston_proxy");
        let requests = Family::<Labels, Counter>::default();
        let credits = Counter::default();
        let open_streams = Gauge::default();
        let upstream_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("requests", "LLM requests by API and outcome", requests.clone());
        registry.register("credits_debited", "Credits debited from tenant ledgers", credits.clone());
        registry.register("open_streams", "Upstream streams being read", open_streams.clone());
        registry.register("upstream_seconds", "Time to upstream response headers", upstream_seconds.clone());
        Self { registry, requests, credits, open_streams, upstream_seconds }
    }
}

impl Metrics {
    /// Counts one finished request.
    pub fn request(&self, api: &'static str, outcome: &'static str) {
        self.requests.get_or_create(&vec![("api", api), ("outcome", outcome)]).inc();
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
