//! The age-fair queue in front of a reconciler: at most `width` reconciles
//! of a kind run at once, and when one finishes the oldest object waiting
//! (by `creationTimestamp`, then by arrival) runs next.
//!
//! kube-runtime's own runner bounds concurrency too, but what it runs next
//! is whatever its delay queue pops (last in, first out within a timer
//! slot), so in a burst of 1,000 new Tenants an old one's next pass, or a
//! new one's first, could wait minutes. Here the runner is unbounded and
//! hands every due object to [`FairQueue::admit`] at once; this module
//! decides the order. Waiting costs a small future per object (the
//! reconcile itself is only built once admitted), and the number waiting is
//! the `winston_queue_depth{kind}` gauge.
//!
//! It leaves to kube-runtime what it does well: deduplicating triggers of
//! one object, never running one object twice at once, requeues and backoff.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::Resource;
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// Where a waiting object stands: older objects first, then first come.
type Place = (i64, u64);

/// An age-ordered admission queue of one kind.
pub struct FairQueue {
    kind: &'static str,
    width: usize,
    metrics: Metrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    arrivals: u64,
    waiting: BTreeMap<Place, oneshot::Sender<Permit>>,
}

/// The right to run one reconcile; the next oldest waiter runs when it drops.
pub struct Permit {
    /// `None` once the slot went back (a permit refused by a waiter that left).
    queue: Option<Arc<FairQueue>>,
}

impl FairQueue {
    /// A queue letting `width` reconciles of `kind` run at once (at least one).
    #[must_use]
    pub fn new(kind: &'static str, width: u16, metrics: Metrics) -> Arc<Self> {
        metrics.set_queue_depth(kind, 0);
        Arc::new(Self { kind, width: usize::from(width.max(1)), metrics, state: Mutex::new(State::default()) })
    }

    /// Waits until `obj` may be reconciled: at once while fewer than `width`
    /// run and nobody waits, else after every older object waiting.
    pub async fn admit<K: Resource>(self: &Arc<Self>, obj: &K) -> Permit {
        let (place, rx) = {
            let mut state = self.lock();
            if state.running < self.width && state.waiting.is_empty() {
                state.running += 1;
                return Permit { queue: Some(self.clone()) };
            }
            state.arrivals += 1;
            let place = (age_of(obj), state.arrivals);
            let (tx, rx) = oneshot::channel();
            state.waiting.insert(place, tx);
            self.metrics.set_queue_depth(self.kind, state.waiting.len());
            (place, rx)
        };
        let waiting = Waiting { queue: self, place };
        let permit = rx.await;
        drop(waiting);
        match permit {
            Ok(permit) => permit,
            // Only `release` removes a live waiter's sender, and it sends;
            // should that ever change, run anyway rather than wait forever.
            Err(_) => {
                self.lock().running += 1;
                Permit { queue: Some(self.clone()) }
            }
        }
    }

    /// Objects waiting for a slot.
    #[must_use]
    pub fn depth(&self) -> usize {
        self.lock().waiting.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot was freed: hands it to the oldest waiter still waiting, or
    /// gives it back.
    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        while let Some((_, tx)) = state.waiting.pop_first() {
            // A waiter whose reconcile was dropped meanwhile (shutdown) refuses it.
            match tx.send(Permit { queue: Some(self.clone()) }) {
                Ok(()) => {
                    self.metrics.set_queue_depth(self.kind, state.waiting.len());
                    return;
                }
                // Taken back without releasing again (the lock is held).
                Err(mut refused) => drop(refused.queue.take()),
            }
        }
        state.running = state.running.saturating_sub(1);
        self.metrics.set_queue_depth(self.kind, 0);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release();
        }
    }
}

/// Removes a waiter that stopped waiting (its future dropped) from the queue.
struct Waiting<'q> {
    queue: &'q Arc<FairQueue>,
    place: Place,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        if state.waiting.remove(&self.place).is_some() {
            self.queue.metrics.set_queue_depth(self.queue.kind, state.waiting.len());
        }
    }
}

/// Seconds since the epoch of the object's creation; an object not created
/// yet (never the case for a watched one) counts as the newest.
fn age_of<K: Resource>(obj: &K) -> i64 {
    obj.meta().creation_timestamp.as_ref().map_or(i64::MAX, |t| t.0.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tenant;
    use std::time::Duration;

    fn tenant(name: &str, created: i64) -> Tenant {
        let mut t: Tenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "Tenant",
            "metadata": { "name": name, "namespace": "ns" },
            "spec": { "displayName": "A", "contactEmail": "a@b.example", "plan": "starter" }
        }))
        .unwrap();
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        t
    }

    /// Lets every spawned task run until it blocks.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_oldest_waiter_runs_next_whatever_the_arrival_order() {
        let metrics = Metrics::default();
        let queue = FairQueue::new("Tenant", 1, metrics.clone());
        let first = queue.admit(&tenant("busy", 500)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        // A burst of new objects arrives first, the old one last.
        for (name, created) in [("new-1", 1_000), ("new-2", 1_001), ("new-3", 1_000), ("old", 10)] {
            let (queue, order) = (queue.clone(), order.clone());
            tokio::spawn(async move {
                let _permit = queue.admit(&tenant(name, created)).await;
                order.lock().unwrap().push(name);
            });
            settle().await;
        }
        assert_eq!(queue.depth(), 4);
        assert!(metrics.render().contains("winston_queue_depth{kind=\"Tenant\"} 4"), "{}", metrics.render());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), async {
            while order.lock().unwrap().len() < 4 {
                settle().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(*order.lock().unwrap(), ["old", "new-1", "new-3", "new-2"], "by age, then by arrival");
        assert_eq!(queue.depth(), 0);
        assert!(metrics.render().contains("winston_queue_depth{kind=\"Tenant\"} 0"));
    }

    #[tokio::test]
    async fn width_runs_at_once_and_a_dropped_waiter_gives_its_turn_away() {
        let queue = FairQueue::new("TenantInstance", 2, Metrics::default());
        let a = queue.admit(&tenant("a", 1)).await;
        let b = queue.admit(&tenant("b", 2)).await;
        assert_eq!(queue.depth(), 0, "two run at once");
        let gone = tokio::spawn({
            let queue = queue.clone();
            async move { queue.admit(&tenant("gone", 3)).await }
        });
        settle().await;
        let next = tokio::spawn({
            let queue = queue.clone();
            async move { queue.admit(&tenant("next", 4)).await }
        });
        settle().await;
        assert_eq!(queue.depth(), 2);
        gone.abort();
        settle().await;
        assert_eq!(queue.depth(), 1, "a cancelled waiter leaves the queue");
        drop(a);
        let permit = tokio::time::timeout(Duration::from_secs(5), next).await.unwrap().unwrap();
        assert_eq!(queue.depth(), 0);
        drop((permit, b));
        // Both slots free again: the next two run at once.
        let both = async { (queue.admit(&tenant("c", 5)).await, queue.admit(&tenant("d", 6)).await) };
        tokio::time::timeout(Duration::from_secs(5), both).await.expect("two slots free");
    }
}
