//! The controller's own writes of objects it also watches, so that the
//! watch event of its own write does not start another pass.
//!
//! An instance owns its credentials Secret and is reconciled when the
//! Secret changes (someone deleted or edited it). The Secret's creation by
//! the instance's own pass came back as such a change and cost every new
//! instance a second pass: three reads, five platform requests and a
//! connection to the tenant's database, for nothing.
//!
//! A write is announced before it is sent ([`OwnWrites::writing`]) and
//! settled with the resourceVersion the API server gave it
//! ([`OwnWrites::wrote`]); the watch event carrying exactly that version is
//! dropped, once. The event can arrive before the write's answer (it did
//! for a quarter of 1,000 new instances): an event for an object with a
//! write in flight waits for that write to settle, up to
//! [`SETTLE_WAIT`]. Any other version (a change by someone else, a deletion,
//! which has its own version), a failed write, or a write that does not
//! settle in time still triggers: nothing is missed, at worst a pass is
//! spared.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use tokio::sync::watch;

/// How long an event waits for the answer of a write in flight.
pub const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// What is known of this process's last write of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Write {
    InFlight,
    Stored(String),
    Failed,
}

type Key = (String, String);

/// (namespace, name) -> this process's last write of it.
#[derive(Debug)]
pub struct OwnWrites {
    last: Mutex<HashMap<Key, watch::Sender<Write>>>,
    settle_wait: Duration,
}

impl Default for OwnWrites {
    fn default() -> Self {
        Self::with_settle_wait(SETTLE_WAIT)
    }
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_string(), name.to_string())
}

impl OwnWrites {
    /// Events wait at most `settle_wait` for a write in flight.
    #[must_use]
    pub fn with_settle_wait(settle_wait: Duration) -> Self {
        Self { last: Mutex::new(HashMap::new()), settle_wait }
    }

    /// Announces a write of `namespace/name` about to be sent.
    pub fn writing(&self, namespace: &str, name: &str) {
        let (tx, _) = watch::channel(Write::InFlight);
        if let Some(old) = self.lock().insert(key(namespace, name), tx) {
            // Whoever waited on the previous write decides without it.
            old.send_replace(Write::Failed);
        }
    }

    /// Settles the write of `namespace/name`: stored as `resource_version`,
    /// or failed (`None`).
    pub fn wrote(&self, namespace: &str, name: &str, resource_version: Option<&str>) {
        let mut last = self.lock();
        let k = key(namespace, name);
        match resource_version {
            // Nothing to remember; whoever waits on it decides without it.
            None => {
                if let Some(tx) = last.remove(&k) {
                    tx.send_replace(Write::Failed);
                }
            }
            Some(rv) => {
                last.entry(k)
                    .or_insert_with(|| watch::channel(Write::InFlight).0)
                    .send_replace(Write::Stored(rv.to_string()));
            }
        }
    }

    /// Whether `meta` is the object as this process last wrote it (then
    /// forgotten: a re-list showing it again triggers as usual). Waits for
    /// a write in flight to settle, at most the settle wait.
    pub async fn is_own(&self, meta: &ObjectMeta) -> bool {
        let (Some(ns), Some(name), Some(rv)) = (&meta.namespace, &meta.name, &meta.resource_version) else {
            return false;
        };
        let k = key(ns, name);
        let Some(mut rx) = self.lock().get(&k).map(watch::Sender::subscribe) else { return false };
        let settled = match tokio::time::timeout(self.settle_wait, rx.wait_for(|w| *w != Write::InFlight)).await {
            Ok(Ok(w)) => w.clone(),
            _ => return false,
        };
        if settled != Write::Stored(rv.clone()) {
            return false;
        }
        let mut last = self.lock();
        // Forget it, unless a newer write took its place meanwhile.
        if last.get(&k).is_some_and(|tx| *tx.borrow() == settled) {
            last.remove(&k);
        }
        true
    }

    /// Objects remembered (their events not seen yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `events` without the watch events of this process's own writes
    /// recorded in `own`: what is left are changes by someone else.
    pub fn foreign<K, E>(own: Arc<Self>, events: impl Stream<Item = Result<K, E>>) -> impl Stream<Item = Result<K, E>>
    where
        K: Resource,
    {
        events.try_filter(move |o| {
            let (own, meta) = (own.clone(), o.meta().clone());
            async move { !own.is_own(&meta).await }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, watch::Sender<Write>>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn meta(ns: &str, name: &str, rv: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(rv.into()),
            ..ObjectMeta::default()
        }
    }

    #[tokio::test]
    async fn only_the_exact_version_written_is_own_and_only_once() {
        let own = OwnWrites::default();
        assert!(!own.is_own(&meta("a", "s", "5")).await, "nothing written yet");
        own.writing("a", "s");
        own.wrote("a", "s", Some("5"));
        assert!(!own.is_own(&meta("a", "s", "6")).await, "a later change by someone else");
        assert!(!own.is_own(&meta("b", "s", "5")).await, "another namespace");
        assert!(!own.is_own(&meta("a", "t", "5")).await, "another name");
        assert!(own.is_own(&meta("a", "s", "5")).await);
        assert!(!own.is_own(&meta("a", "s", "5")).await, "a re-list shows it again: that triggers");
        assert!(own.is_empty());
    }

    #[tokio::test]
    async fn a_newer_write_replaces_the_older_one() {
        let own = OwnWrites::default();
        own.writing("a", "s");
        own.wrote("a", "s", Some("5"));
        own.writing("a", "s");
        own.wrote("a", "s", Some("7"));
        assert!(!own.is_own(&meta("a", "s", "5")).await, "the event of the first write, already overtaken");
        assert!(own.is_own(&meta("a", "s", "7")).await);
    }

    /// `is_own` of version `rv` of `a/s`, asked in a task of its own.
    fn spawn_is_own(own: &Arc<OwnWrites>, rv: &'static str) -> tokio::task::JoinHandle<bool> {
        let own = own.clone();
        tokio::spawn(async move { own.is_own(&meta("a", "s", rv)).await })
    }

    #[tokio::test]
    async fn an_event_ahead_of_its_answer_waits_for_it() {
        let own = Arc::new(OwnWrites::default());
        own.writing("a", "s");
        let early = spawn_is_own(&own, "5");
        let other = spawn_is_own(&own, "4");
        tokio::task::yield_now().await;
        own.wrote("a", "s", Some("5"));
        assert!(early.await.unwrap(), "the event of the write, seen before its answer");
        assert!(!other.await.unwrap(), "a version the write did not make");
    }

    #[tokio::test]
    async fn a_failed_write_owns_no_event() {
        let own = Arc::new(OwnWrites::default());
        own.writing("a", "s");
        let waiting = spawn_is_own(&own, "5");
        tokio::task::yield_now().await;
        own.wrote("a", "s", None);
        assert!(!waiting.await.unwrap());
        assert!(own.is_empty());
    }

    #[tokio::test]
    async fn a_write_that_never_answers_lets_its_event_trigger_after_the_settle_wait() {
        let own = OwnWrites::with_settle_wait(Duration::from_millis(50));
        own.writing("a", "s");
        let started = tokio::time::Instant::now();
        assert!(!own.is_own(&meta("a", "s", "5")).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
