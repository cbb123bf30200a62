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
        Self { registry: Arc::new(registry), reconciles, failures, duration, writes, leader }
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

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
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
