//! Tenant authentication: the presented key (`Authorization: Bearer` or
//! `x-api-key`) is hashed and looked up in an in-memory map of active keys,
//! refreshed from the ledger every few seconds so new and revoked keys take
//! effect without a restart and without a database round trip per request.
//!
//! A key issued after the last refresh must work at once (a controller
//! registers a tenant's key and its agent calls straight away), so a miss is
//! looked up in the ledger by hash and, when active, added to the map. What
//! an attacker presenting random keys can cost is bounded: at most
//! [`MISS_LOOKUPS`] lookups run at a time (a miss beyond that is refused
//! without one), and a hash found unknown is not looked up again for
//! [`MISS_TTL`].
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::ledger::{Ledger, hash_key};

/// Most ledger lookups of unknown keys in flight at once.
pub const MISS_LOOKUPS: usize = 4;
/// How long a hash found unknown is answered from memory.
pub const MISS_TTL: Duration = Duration::from_secs(1);
/// Most remembered unknown hashes (the memory is cleared when full).
const MAX_MISSES: usize = 10_000;
/// Longest presented key that is looked up at all.
const MAX_KEY_LEN: usize = 256;

/// Active key hashes -> account id.
pub struct KeyCache {
    keys: RwLock<Arc<HashMap<[u8; 32], Arc<str>>>>,
    loaded: std::sync::atomic::AtomicBool,
    misses: Mutex<HashMap<[u8; 32], Instant>>,
    lookups: tokio::sync::Semaphore,
    looked_up: prometheus_client::metrics::counter::Counter,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::counting(prometheus_client::metrics::counter::Counter::default())
    }
}

impl KeyCache {
    /// An empty cache that counts its ledger lookups on `looked_up`.
    #[must_use]
    pub fn counting(looked_up: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            keys: RwLock::default(),
            loaded: std::sync::atomic::AtomicBool::default(),
            misses: Mutex::default(),
            lookups: tokio::sync::Semaphore::new(MISS_LOOKUPS),
            looked_up,
        }
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Arc<str>> {
        let map = self.keys.read().map(|g| Arc::clone(&g)).ok()?;
        map.get(hash).cloned()
    }

    /// The account a presented key belongs to: from the cache, else from
    /// the ledger (bounded, see the module docs). A database error is a miss.
    pub async fn resolve(&self, ledger: &Ledger, headers: &HeaderMap) -> Option<Arc<str>> {
        let key = presented_key(headers)?;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return None;
        }
        let hash = hash_key(key);
        if let Some(account) = self.cached(&hash) {
            return Some(account);
        }
        if self.recently_missed(&hash) {
            return None;
        }
        let _permit = self.lookups.try_acquire().ok()?;
        self.looked_up.inc();
        match ledger.account_for_key(&hash).await {
            Ok(Some(account)) => {
                let account: Arc<str> = Arc::from(account);
                if let Ok(mut guard) = self.keys.write() {
                    let mut map = HashMap::clone(&guard);
                    map.insert(hash, Arc::clone(&account));
                    *guard = Arc::new(map);
                }
                Some(account)
            }
            Ok(None) => {
                let mut misses = self.misses.lock().unwrap_or_else(PoisonError::into_inner);
                if misses.len() >= MAX_MISSES {
                    misses.clear();
                }
                misses.insert(hash, Instant::now() + MISS_TTL);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to look up an API key missing from the cache");
                None
            }
        }
    }

    fn recently_missed(&self, hash: &[u8; 32]) -> bool {
        let mut misses = self.misses.lock().unwrap_or_else(PoisonError::into_inner);
        match misses.get(hash) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                misses.remove(hash);
                false
            }
            None => false,
        }
    }

    /// True once the first load from the ledger succeeded.
    #[must_use]
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Replaces the map with the ledger's current active keys.
    ///
    /// # Errors
    /// Database errors (the previous map stays in use).
    pub async fn refresh(&self, ledger: &Ledger) -> Result<(), crate::ledger::LedgerError> {
        let active = ledger.active_keys().await?;
        let map: HashMap<[u8; 32], Arc<str>> = active.into_iter().map(|k| (k.hash, Arc::from(k.account_id))).collect();
        if let Ok(mut guard) = self.keys.write() {
            *guard = Arc::new(map);
        }
        self.loaded.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Refreshes every `interval` until the task is aborted.
    pub async fn refresh_loop(self: Arc<Self>, ledger: Ledger, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh(&ledger).await {
                tracing::warn!(error = %e, "failed to refresh the API key cache; keeping the previous keys");
            }
        }
    }
}

/// The key from `x-api-key` or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
