//! Prometheus metrics of `winston intake` on `/metrics`. Labels are fixed
//! strings: the event type (the four handled ones, else `other`), the
//! outcome, the signature refusal reason, the error category.
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every intake metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    events: Family<EventLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    failures: Family<ReasonLabel, Counter>,
    grace_deletions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("winston_intake");
        let events = Family::<EventLabel, Counter>::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let grace_deletions = Counter::default();
        registry.register("events", "Stripe events answered 2xx, by type and outcome", events.clone());
        registry.register("signature_refusals", "Deliveries refused for their signature, by reason", refused.clone());
        registry.register("failures", "Deliveries answered 500 (Stripe retries), by error category", failures.clone());
        registry.register("grace_deletions", "Tenants deleted when their grace period ended", grace_deletions.clone());
        Self { registry: Arc::new(registry), events, refused, failures, grace_deletions }
    }
}

/// The metric label of an event type: the handled ones by name, else `other`.
#[must_use]
pub fn type_label(kind: &str) -> &'static str {
    match kind {
        "checkout.session.completed" => "checkout.session.completed",
        "customer.subscription.updated" => "customer.subscription.updated",
        "customer.subscription.deleted" => "customer.subscription.deleted",
        "invoice.payment_failed" => "invoice.payment_failed",
        _ => "other",
    }
}

impl Metrics {
    pub fn event(&self, kind: &str, outcome: &'static str) {
        self.events.get_or_create(&EventLabel { r#type: type_label(kind), outcome }).inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn failed(&self, category: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason: category }).inc();
    }

    pub fn grace_deleted(&self) {
        self.grace_deletions.inc();
    }

    /// The OpenMetrics text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
