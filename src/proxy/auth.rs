//! Tenant authentication: the presented key (`Authorization: Bearer` or
//! `x-api-key`) is hashed and looked up in an in-memory map of active keys,
//! refreshed from the ledger every few seconds so new and revoked keys take
//! effect without a restart and without a database round trip per request.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderMap, header};

use crate::ledger::{Ledger, hash_key};

/// Active key hashes -> account id.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<Arc<HashMap<[u8; 32], Arc<str>>>>,
    loaded: std::sync::atomic::AtomicBool,
}

impl KeyCache {
    /// The account a presented key belongs to, if the key is active.
    #[must_use]
    pub fn account_for(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let key = presented_key(headers)?;
        let map = self.keys.read().map(|g| Arc::clone(&g)).ok()?;
        map.get(&hash_key(key)).cloned()
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
