//! Prometheus metrics of the controller process, exposed on `/metrics`.
//! Labels are stable strings (kind, result, error category), never `Debug`.
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    kind: &'static str,
    category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

/// Buckets of provisioning durations: seconds to the 18-minute default
/// deadline and beyond.
const PROVISIONING_BUCKETS: [f64; 13] =
    [0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1080.0, 1800.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabel {
    kind: &'static str,
    what: &'static str,
}

/// All controller metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<ErrorLabel, Counter>,
    duration: Family<KindLabel, Histogram>,
    writes: Family<WriteLabel, Counter>,
    leader: Gauge<i64, AtomicI64>,
    step_duration: Family<StepLabel, Histogram>,
    to_ready: Histogram,
    queue_depth: Family<KindLabel, Gauge<i64, AtomicI64>>,
    /// Instances by state, ledger mirror age and credits per tenant, computed per scrape.
    gauges: super::gauges::Gauges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("winston");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        let writes = Family::<WriteLabel, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        registry.register("reconcile_failures", "Failed reconciles, by kind and error category", failures.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration, by kind", duration.clone());
        registry.register("kube_writes", "Writes to the Kubernetes API, by kind and what was written", writes.clone());
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        let step_duration =
            Family::<StepLabel, Histogram>::new_with_constructor(|| Histogram::new(PROVISIONING_BUCKETS));
        let to_ready = Histogram::new(PROVISIONING_BUCKETS);
        registry.register(
            "provisioning_step_duration_seconds",
            "Seconds from a provisioning step's start to Done, by step",
            step_duration.clone(),
        );
        registry.register(
            "provisioning_duration_seconds",
            "Seconds from a TenantInstance's creation (or loss of Ready) to Ready",
            to_ready.clone(),
        );
        let queue_depth = Family::<KindLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "queue_depth",
            "Objects due for a reconcile and waiting for a free slot, by kind (oldest run first)",
            queue_depth.clone(),
        );
        let gauges = super::gauges::Gauges::default();
        registry.register_collector(Box::new(gauges.clone()));
        Self {
            registry: Arc::new(registry),
            reconciles,
            failures,
            duration,
            writes,
            leader,
            step_duration,
            to_ready,
            queue_depth,
            gauges,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile.
    pub fn reconciled(&self, kind: &'static str, seconds: f64) {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        self.duration.get_or_create(&KindLabel { kind }).observe(seconds);
    }

    /// Records a failed reconcile.
    pub fn failed(&self, kind: &'static str, category: &'static str) {
        self.failures.get_or_create(&ErrorLabel { kind, category }).inc();
    }

    /// Records a write to the Kubernetes API (`what`: spec, status, delete, finalizer).
    pub fn wrote(&self, kind: &'static str, what: &'static str) {
        self.writes.get_or_create(&WriteLabel { kind, what }).inc();
    }

    /// Records a provisioning step that converged after `seconds`.
    pub fn step_converged(&self, step: &'static str, seconds: f64) {
        self.step_duration.get_or_create(&StepLabel { step }).observe(seconds);
    }

    /// Records an instance that became Ready after `seconds`.
    pub fn became_ready(&self, seconds: f64) {
        self.to_ready.observe(seconds);
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets how many objects of `kind` wait for a reconcile slot.
    pub fn set_queue_depth(&self, kind: &'static str, waiting: usize) {
        self.queue_depth.get_or_create(&KindLabel { kind }).set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The gauges computed from the leader's caches at each scrape.
    #[must_use]
    pub fn gauges(&self) -> &super::gauges::Gauges {
        &self.gauges
    }

    /// The registry in the OpenMetrics text format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioning_histograms_are_exported() {
        let m = Metrics::default();
        m.step_converged("database", 1.5);
        m.became_ready(42.0);
        let text = m.render();
        assert!(
            text.contains("winston_provisioning_step_duration_seconds_bucket{le=\"2.5\",step=\"database\"} 1"),
            "{text}"
        );
        assert!(text.contains("winston_provisioning_duration_seconds_count 1"), "{text}");
        assert!(text.contains("winston_provisioning_duration_seconds_sum 42.0"), "{text}");
    }
}
