//! State shared by every reconcile: the API client, the Event recorder,
//! metrics, Winston's ledger database and per-object failure counts for
//! exponential backoff (kept and pruned by `super::failure`).
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::failure::{self, Failures};
use super::metrics::Metrics;
use crate::ledger::Ledger;
use crate::names;

/// Shared reconcile context.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Winston's own database (credit ledger, API keys); `None` when the
    /// controller runs without `--database-url`.
    pub ledger: Option<Ledger>,
    /// The provisioning engine (absent without a control database).
    pub engine: Option<std::sync::Arc<crate::engine::Engine>>,
    /// Caches of the children the Tenant controller reads on every
    /// reconcile, filled by the watches that also trigger it (a LIST per
    /// reconcile costs the API server O(instances) each time).
    pub caches: std::sync::OnceLock<ChildCaches>,
    /// The plan catalog (instance limits); `None` judges no plan limit.
    pub plans: Option<std::sync::Arc<crate::plans::PlanCatalog>>,
    /// The website analyzer and the system account (absent without a
    /// control database or with an empty `--analyzer-model`).
    pub analysis: Option<std::sync::Arc<super::website::WebsiteAnalysis>>,
    /// Warnings, aggregated into series as Kubernetes' own components do
    /// (kube-runtime keeps each for six minutes to count its repeats).
    recorder: Recorder,
    reporter: Reporter,
    failures: Failures,
    /// Credentials Secrets as this process last wrote them: their watch
    /// events do not start another pass of their instance.
    pub own_secrets: std::sync::Arc<super::own_writes::OwnWrites>,
    /// Tenants and CreditLedgers as this process last wrote their status:
    /// the watch event of that write does not start another pass of them.
    pub own_status: OwnStatus,
}

/// The status writes of each kind whose own watch events are dropped (one
/// map per kind: a Tenant and its ledger share a name).
#[derive(Debug, Default)]
pub struct OwnStatus {
    pub tenants: std::sync::Arc<super::own_writes::OwnWrites>,
    pub ledgers: std::sync::Arc<super::own_writes::OwnWrites>,
}

/// Reflector stores of TenantInstances and CreditLedgers.
#[derive(Clone)]
pub struct ChildCaches {
    pub instances: kube::runtime::reflector::Store<crate::api::TenantInstance>,
    pub ledgers: kube::runtime::reflector::Store<crate::api::CreditLedger>,
    /// Every watched Tenant (contact emails must be unique per namespace).
    pub tenants: kube::runtime::reflector::Store<crate::api::Tenant>,
}

impl Context {
    /// A context reporting Events as `instance` of the Winston controller.
    #[must_use]
    pub fn new(client: Client, metrics: Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter { controller: names::CONTROLLER_NAME.into(), instance };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            metrics,
            ledger: None,
            engine: None,
            caches: std::sync::OnceLock::new(),
            plans: None,
            analysis: None,
            failures: Failures::default(),
            own_secrets: std::sync::Arc::default(),
            own_status: OwnStatus::default(),
        }
    }

    /// The same context with access to Winston's ledger database.
    #[must_use]
    pub fn with_ledger(mut self, ledger: Option<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The same context with the plan catalog.
    #[must_use]
    pub fn with_plans(mut self, plans: std::sync::Arc<crate::plans::PlanCatalog>) -> Self {
        self.plans = Some(plans);
        self
    }

    /// The same context with the provisioning engine.
    #[must_use]
    pub fn with_engine(mut self, engine: std::sync::Arc<crate::engine::Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The same context with the website analyzer.
    #[must_use]
    pub fn with_analysis(mut self, analysis: std::sync::Arc<super::website::WebsiteAnalysis>) -> Self {
        self.analysis = Some(analysis);
        self
    }

    /// Publishes an Event about `object`. Failing to publish is logged, never fatal.
    ///
    /// A warning that repeats (a step failing on every retry) becomes one
    /// Event with a growing series count. A normal Event marks a milestone
    /// (children created, converged, Ready) that does not repeat, and
    /// Kubernetes' series would keep the first note of a repeat anyway: it
    /// is published without the recorder's cache, which at 1,000 tenants
    /// held 4,000 milestones (about 15 MiB) for six minutes.
    pub async fn event(&self, object: &ObjectReference, warning: bool, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        let published = if warning {
            self.recorder.publish(&ev, object).await
        } else {
            Recorder::new(self.client.clone(), self.reporter.clone()).publish(&ev, object).await
        };
        if let Err(e) = published {
            tracing::warn!(error = %e, reason, "failed to publish an Event");
        }
    }

    /// Records a failure of `key` and returns how long to wait before the
    /// next attempt: exponential from 1 s to 5 min, with up to 20 % jitter.
    pub fn backoff(&self, key: &str) -> Duration {
        failure::backoff_for(self.failures.record(key), rand::random::<f64>())
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        self.failures.forget(key);
    }

    /// The per-object failure counts (pruned as the watches see deletions).
    #[must_use]
    pub fn failures(&self) -> &Failures {
        &self.failures
    }
}
