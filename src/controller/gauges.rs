//! Gauges computed when `/metrics` is scraped, from what the leading
//! controller holds in memory: TenantInstances by state (from the watch
//! cache), and for every CreditLedger the credits its status mirrors and
//! how long ago this replica last mirrored it from the database.
//!
//! Computed at scrape time rather than set on events, they stay exact: an
//! object deleted from the cluster leaves the cache, and its series go with
//! it. A scrape costs one pass over the two caches (microseconds per
//! object). A replica that does not lead holds no cache and exports none of
//! these series, so alerts take the `max` over replicas.
//!
//! Cardinality: `winston_tenant_credits_used` and
//! `winston_tenant_credits_remaining` carry one series per CreditLedger
//! (one per tenant) each; every other gauge here is a handful of series.
//! The labels are `tenant_namespace` and `tenant`, not `namespace`, which
//! Prometheus sets to the namespace of the scraped pod.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::api::{CreditLedger, TenantInstance, conditions};
use crate::names::{self, reason};

/// What an instance is doing, as an operator counts it; each instance is
/// in exactly one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// `Ready=True`.
    Ready,
    /// Working towards Ready (steps running, waiting on a platform).
    Progressing,
    /// Its Tenant is paused and it is not Ready.
    Paused,
    /// `Stalled=True` for any reason but the deadline: needs a person.
    Stalled,
    /// `Stalled=True` with `ProgressDeadlineExceeded`: not Ready within its
    /// provisioning deadline (still retried).
    PastDeadline,
    /// Being torn down.
    Deleting,
}

impl InstanceState {
    /// Every state, so each is exported (as 0) even when no instance is in it.
    pub const ALL: [Self; 6] =
        [Self::Ready, Self::Progressing, Self::Paused, Self::Stalled, Self::PastDeadline, Self::Deleting];

    /// The `state` label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Stalled => "stalled",
            Self::PastDeadline => "past_deadline",
            Self::Deleting => "deleting",
        }
    }

    /// The state of `ti` from its status. A stall wins over everything
    /// (it is what needs a person, a blocked deletion included), then
    /// deletion, then Ready, then a pause.
    #[must_use]
    pub fn of(ti: &TenantInstance) -> Self {
        let conds = ti.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        if let Some(stall) = conditions::find(conds, names::COND_STALLED).filter(|c| c.status == "True") {
            return if stall.reason == reason::PROGRESS_DEADLINE_EXCEEDED { Self::PastDeadline } else { Self::Stalled };
        }
        if ti.metadata.deletion_timestamp.is_some() {
            return Self::Deleting;
        }
        if conditions::is_true(conds, names::COND_READY) {
            return Self::Ready;
        }
        let paused = conditions::find(conds, names::COND_RECONCILING).is_some_and(|c| c.reason == reason::PAUSED);
        if paused { Self::Paused } else { Self::Progressing }
    }
}

/// The scrape-time gauges; clones share one state.
#[derive(Clone, Default)]
pub struct Gauges {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    instances: OnceLock<Store<TenantInstance>>,
    ledgers: OnceLock<LedgerMirror>,
}

struct LedgerMirror {
    store: Store<CreditLedger>,
    /// When this replica started mirroring (unix seconds).
    started: f64,
    /// Last successful mirror of each ledger, by uid (unix seconds).
    last: Mutex<HashMap<String, f64>>,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauges")
            .field("instances", &self.inner.instances.get().is_some())
            .field("ledgers", &self.inner.ledgers.get().is_some())
            .finish()
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

impl Gauges {
    /// Counts TenantInstances from `store` (the leader's watch cache) from now on.
    pub fn watch_instances(&self, store: Store<TenantInstance>) {
        let _ = self.inner.instances.set(store);
    }

    /// Reports the CreditLedgers of `store` (the CreditLedger controller's
    /// cache) from now on; mirror ages count from this moment.
    pub fn watch_ledgers(&self, store: Store<CreditLedger>) {
        let _ = self.inner.ledgers.set(LedgerMirror { store, started: unix_now(), last: Mutex::default() });
    }

    /// Records that `ledger`'s status now shows what the database holds.
    pub fn mirrored(&self, ledger: &CreditLedger) {
        if let (Some(m), Some(uid)) = (self.inner.ledgers.get(), ledger.uid()) {
            m.last.lock().unwrap_or_else(PoisonError::into_inner).insert(uid, unix_now());
        }
    }
}

/// Counts per state of `instances`.
fn count_states<'a>(instances: impl Iterator<Item = &'a TenantInstance>) -> [i64; InstanceState::ALL.len()] {
    let mut counts = [0; InstanceState::ALL.len()];
    for ti in instances {
        let state = InstanceState::of(ti);
        if let Some(i) = InstanceState::ALL.iter().position(|s| *s == state) {
            counts[i] += 1;
        }
    }
    counts
}

/// Seconds since `ledger` was last mirrored by this replica; one never
/// mirrored counts from its creation or from when mirroring started,
/// whichever is later.
fn mirror_age(ledger: &CreditLedger, last: Option<f64>, started: f64, now: f64) -> f64 {
    let since = last.unwrap_or_else(|| {
        let created = ledger.metadata.creation_timestamp.as_ref().map_or(0.0, |t| t.0.as_millisecond() as f64 / 1e3);
        created.max(started)
    });
    (now - since).max(0.0)
}

impl LedgerMirror {
    /// The largest mirror age over the cached ledgers (0 with none); drops
    /// the records of ledgers that are gone.
    fn max_age(&self, ledgers: &[Arc<CreditLedger>], now: f64) -> f64 {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.retain(|uid, _| ledgers.iter().any(|l| l.uid().as_deref() == Some(uid)));
        ledgers
            .iter()
            .map(|l| mirror_age(l, l.uid().and_then(|u| last.get(&u).copied()), self.started, now))
            .fold(0.0, f64::max)
    }
}

fn encode_instances(encoder: &mut DescriptorEncoder, store: &Store<TenantInstance>) -> Result<(), std::fmt::Error> {
    let all = store.state();
    let counts = count_states(all.iter().map(AsRef::as_ref));
    let mut family = encoder.encode_descriptor(
        "instances",
        "TenantInstances by state (ready, progressing, paused, stalled, past_deadline, deleting), from the leader's cache",
        None,
        MetricType::Gauge,
    )?;
    for (state, count) in InstanceState::ALL.iter().zip(counts) {
        let labels = [("state", state.label())];
        ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_ledgers(encoder: &mut DescriptorEncoder, mirror: &LedgerMirror) -> Result<(), std::fmt::Error> {
    let ledgers = mirror.store.state();
    let age = ConstGauge::new(mirror.max_age(&ledgers, unix_now()));
    age.encode(encoder.encode_descriptor(
        "ledger_mirror_age_seconds",
        "Seconds since the least recently mirrored CreditLedger was last mirrored from the database (0 without ledgers)",
        None,
        MetricType::Gauge,
    )?)?;
    let figures: Vec<_> = ledgers
        .iter()
        .filter_map(|l| {
            let s = l.status.as_ref()?;
            let labels = vec![("tenant_namespace", l.namespace()?), ("tenant", l.spec.tenant_ref.name.clone())];
            Some((labels, s.used_this_period?, s.balance?))
        })
        .collect();
    if figures.is_empty() {
        return Ok(());
    }
    for (name, help, used) in [
        ("tenant_credits_used", "Credits used this period, per tenant, as its CreditLedger status mirrors them", true),
        ("tenant_credits_remaining", "Credits left, per tenant, as its CreditLedger status mirrors them", false),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, u, balance) in &figures {
            ConstGauge::new(if used { *u } else { *balance }).encode(family.encode_family(labels)?)?;
        }
    }
    Ok(())
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(store) = self.inner.instances.get() {
            encode_instances(&mut encoder, store)?;
        }
        if let Some(mirror) = self.inner.ledgers.get() {
            encode_ledgers(&mut encoder, mirror)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn instance(conds: &[(&str, &str, &str)], deleting: bool) -> TenantInstance {
        let conditions: Vec<Condition> = conds
            .iter()
            .map(|(t, s, r)| Condition {
                type_: (*t).into(),
                status: (*s).into(),
                reason: (*r).into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            })
            .collect();
        let mut ti: TenantInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
            "metadata": {"name": "a-0", "namespace": "shop"},
            "spec": {"tenantRef": {"name": "a"}, "ordinal": 0, "plan": "starter",
                     "profile": {"displayName": "A", "contactEmail": "ops@a.example"}}
        }))
        .unwrap();
        ti.status = Some(crate::api::TenantInstanceStatus { conditions, ..Default::default() });
        if deleting {
            ti.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        ti
    }

    #[test]
    fn each_instance_is_in_exactly_the_state_an_operator_expects() {
        let deadline = (names::COND_STALLED, "True", reason::PROGRESS_DEADLINE_EXCEEDED);
        let cases = [
            (instance(&[(names::COND_READY, "True", reason::READY)], false), InstanceState::Ready),
            (instance(&[(names::COND_READY, "False", reason::PROGRESSING)], false), InstanceState::Progressing),
            (instance(&[], false), InstanceState::Progressing),
            (instance(&[(names::COND_STALLED, "True", "Unauthorized")], false), InstanceState::Stalled),
            (instance(&[deadline, (names::COND_READY, "False", "x")], false), InstanceState::PastDeadline),
            (instance(&[(names::COND_STALLED, "False", reason::NOT_STALLED)], true), InstanceState::Deleting),
            // A blocked deletion needs a person: it counts as stalled.
            (instance(&[(names::COND_STALLED, "True", "DeleteBlocked")], true), InstanceState::Stalled),
            (instance(&[(names::COND_RECONCILING, "False", reason::PAUSED)], false), InstanceState::Paused),
            (
                instance(
                    &[(names::COND_RECONCILING, "False", reason::PAUSED), (names::COND_READY, "True", "x")],
                    false,
                ),
                InstanceState::Ready,
            ),
        ];
        for (ti, want) in &cases {
            assert_eq!(InstanceState::of(ti), *want, "{:?}", ti.status);
        }
        let counts = count_states(cases.iter().map(|(ti, _)| ti));
        assert_eq!(counts.iter().sum::<i64>(), cases.len() as i64, "every instance counted once");
        assert_eq!(counts, [2, 2, 1, 2, 1, 1]);
    }

    fn ledger(uid: &str, created: i64) -> CreditLedger {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
            "metadata": {"name": "a", "namespace": "shop", "uid": uid,
                         "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"tenantRef": {"name": "a"}},
            "status": {"balance": 40, "usedThisPeriod": 10}
        }))
        .unwrap()
    }

    #[test]
    fn mirror_age_counts_from_the_last_mirror_else_from_creation_or_start() {
        let old = ledger("u1", 1_000);
        assert_eq!(mirror_age(&old, Some(1_990.0), 1_500.0, 2_000.0), 10.0);
        // Never mirrored: from when mirroring started, not from an old creation.
        assert_eq!(mirror_age(&old, None, 1_500.0, 2_000.0), 500.0);
        // Created after mirroring started: from its creation.
        assert_eq!(mirror_age(&ledger("u2", 1_900), None, 1_500.0, 2_000.0), 100.0);
    }

    #[test]
    fn scrapes_export_states_as_zero_and_forget_deleted_ledgers() {
        let gauges = Gauges::default();
        let mut registry = prometheus_client::registry::Registry::with_prefix("winston");
        registry.register_collector(Box::new(gauges.clone()));
        let scrape = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        assert!(!scrape().contains("winston_instances"), "a replica that does not lead exports none");

        let (instances, mut iw) = kube::runtime::reflector::store::<TenantInstance>();
        iw.apply_watcher_event(&kube::runtime::watcher::Event::Apply(instance(&[], false)));
        gauges.watch_instances(instances);
        let (ledgers, mut lw) = kube::runtime::reflector::store::<CreditLedger>();
        let l = ledger("u1", 1_000);
        lw.apply_watcher_event(&kube::runtime::watcher::Event::Apply(l.clone()));
        gauges.watch_ledgers(ledgers);
        gauges.mirrored(&l);
        let text = scrape();
        assert!(text.contains("winston_instances{state=\"progressing\"} 1\n"), "{text}");
        assert!(text.contains("winston_instances{state=\"past_deadline\"} 0\n"), "{text}");
        assert!(text.contains("winston_tenant_credits_used{tenant_namespace=\"shop\",tenant=\"a\"} 10\n"), "{text}");
        assert!(
            text.contains("winston_tenant_credits_remaining{tenant_namespace=\"shop\",tenant=\"a\"} 40\n"),
            "{text}"
        );
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("winston_ledger_mirror_age_seconds "))
            .and_then(|v| v.parse().ok())
            .expect(&text);
        assert!((0.0..5.0).contains(&age), "just mirrored: {age}");

        lw.apply_watcher_event(&kube::runtime::watcher::Event::Delete(l));
        let text = scrape();
        assert!(!text.contains("winston_tenant_credits_used"), "a deleted ledger leaves no series: {text}");
        assert!(text.contains("winston_ledger_mirror_age_seconds 0.0\n"), "{text}");
        let m = gauges.inner.ledgers.get().unwrap();
        assert!(m.last.lock().unwrap().is_empty(), "its record is dropped");
    }
}
