//! What a failed reconcile does, in one place: a metric labelled with the
//! error's category, a warning log line, a Warning Event whose reason is
//! that category, and a requeue after a per-object exponential backoff.
//!
//! The failure counts behind the backoff are keyed by object
//! ([`FailureKey`]): a successful reconcile forgets them, and so does the
//! watch when it sees the object deleted ([`forget_deleted`]), so the map
//! holds only objects that exist and last failed. Conditions are not
//! touched here: an error is transient; what no retry fixes is a fact the
//! pure plans report as `Stalled`.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use crate::api::{CreditLedger, Tenant, TenantInstance};

/// Consecutive failures per object key.
#[derive(Debug, Default)]
pub struct Failures {
    counts: Mutex<HashMap<String, u32>>,
}

impl Failures {
    /// Counts one more failure of `key` and returns how many there are now.
    pub fn record(&self, key: &str) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets the failures of `key` (it succeeded, or it is gone).
    pub fn forget(&self, key: &str) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// How many objects have failures on record.
    #[must_use]
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no object has failures on record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Backoff after `failures` consecutive failures; `jitter` in [0, 1):
/// exponential from 1 s to 5 min, with up to 20 % jitter.
#[must_use]
pub fn backoff_for(failures: u32, jitter: f64) -> Duration {
    let base = 1u64 << failures.saturating_sub(1).min(9);
    let capped = base.min(300) as f64;
    Duration::from_secs_f64(capped * (1.0 + 0.2 * jitter.clamp(0.0, 1.0)))
}

/// The key under which an object's failures are counted; one per kind the
/// controller reconciles, so the compiler keeps the list complete.
pub trait FailureKey {
    /// The key of this object.
    fn failure_key(&self) -> String;
}

impl FailureKey for Tenant {
    fn failure_key(&self) -> String {
        object_key(self)
    }
}

impl FailureKey for CreditLedger {
    fn failure_key(&self) -> String {
        object_key(self)
    }
}

impl FailureKey for TenantInstance {
    /// By uid: the key the TenantInstance reconciler and the engine count under.
    fn failure_key(&self) -> String {
        format!("ti/{}", self.uid().unwrap_or_default())
    }
}

fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs one reconcile `pass` of `obj`: counts and times it as `kind`, and
/// forgets the object's failures when it succeeds.
///
/// # Errors
/// Those of `pass`, unchanged.
pub async fn measured<K: FailureKey>(
    ctx: &Context,
    kind: &'static str,
    obj: &K,
    pass: impl Future<Output = Result<Action>>,
) -> Result<Action> {
    let started = Instant::now();
    let result = pass.await;
    ctx.metrics.reconciled(kind, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&obj.failure_key());
    }
    result
}

/// The error policy of a reconciler: records the failure of `obj` (metric,
/// log line, Warning Event with the error's category as reason) and
/// requeues it after its backoff.
pub fn requeue<K>(ctx: &Arc<Context>, kind: &'static str, obj: &K, error: &Error) -> Action
where
    K: Resource<DynamicType = ()> + FailureKey,
{
    let category = error.category();
    ctx.metrics.failed(kind, category);
    let key = obj.failure_key();
    let wait = ctx.backoff(&key);
    tracing::warn!(kind, object = %key, category, error = %error, retry_in = ?wait, "reconcile failed");
    let (ctx, reference, note) = (ctx.clone(), obj.object_ref(&()), error.to_string());
    tokio::spawn(async move { ctx.event(&reference, true, category, "Reconcile", note).await });
    Action::requeue(wait)
}

/// Forgets the failures of `event`'s object when the event is its deletion
/// (a deleted object is never reconciled again, so nothing else would).
pub fn forget_deleted<K: FailureKey>(failures: &Failures, event: &watcher::Event<K>) {
    if let watcher::Event::Delete(obj) = event {
        failures.forget(&obj.failure_key());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_for(1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_for(4, 0.0), Duration::from_secs(8));
        assert_eq!(backoff_for(50, 0.0), Duration::from_secs(300));
        assert!(backoff_for(3, 0.99) < Duration::from_secs(5));
    }

    fn ledger(name: &str, uid: &str) -> CreditLedger {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "CreditLedger",
            "metadata": { "name": name, "namespace": "ns", "uid": uid },
            "spec": { "tenantRef": { "name": name } }
        }))
        .expect("ledger")
    }

    fn instance(uid: &str) -> TenantInstance {
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "Tenant",
            "metadata": { "name": "acme", "namespace": "ns", "uid": "uid-1" },
            "spec": { "displayName": "Acme", "contactEmail": "ops@acme.example", "plan": "free" }
        }))
        .expect("tenant");
        let mut ti = super::super::tenant_plan::desired_instances(&tenant).expect("instances").remove(0);
        ti.metadata.uid = Some(uid.into());
        ti
    }

    #[test]
    fn failures_count_up_and_are_forgotten() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b")), (1, 2, 1));
        f.forget("a");
        assert_eq!((f.len(), f.record("a")), (1, 1));
    }

    #[test]
    fn keys_name_the_kind_and_the_object() {
        assert_eq!(ledger("acme", "uid-1").failure_key(), "CreditLedger/ns/acme");
        assert_eq!(instance("uid-7").failure_key(), "ti/uid-7");
    }

    #[test]
    fn a_deleted_object_is_pruned_and_a_live_one_kept() {
        let f = Failures::default();
        let (acme, other) = (ledger("acme", "uid-1"), ledger("other", "uid-2"));
        let ti = instance("uid-7");
        for key in [acme.failure_key(), other.failure_key(), ti.failure_key()] {
            f.record(&key);
        }
        forget_deleted(&f, &watcher::Event::Apply(other.clone()));
        forget_deleted(&f, &watcher::Event::InitApply(other.clone()));
        assert_eq!(f.len(), 3, "only deletions prune");
        forget_deleted(&f, &watcher::Event::Delete(acme));
        forget_deleted(&f, &watcher::Event::Delete(ti));
        assert_eq!(f.len(), 1);
        assert_eq!(f.record(&other.failure_key()), 2, "the live object keeps its count");
    }
}
