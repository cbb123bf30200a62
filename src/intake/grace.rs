//! The grace period of `onCancel: Pause`: a cancelled tenant stays paused
//! until its `delete_due_at` (kept in the control database, so an intake
//! restart forgets nothing), then this sweep deletes it. Rows are taken
//! with `FOR UPDATE SKIP LOCKED`, so two replicas never delete one tenant
//! twice, and a row is marked done only in the transaction that deleted.
use std::time::Duration;

use super::metrics::Metrics;
use super::store::{Store, StoreError};
use super::tenants::{TenantError, Tenants};

/// Errors of one sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tenant(#[from] TenantError),
}

/// Deletes every Tenant whose grace period is over; returns how many.
///
/// # Errors
/// The database or the API server fails (the rows stay due; the next sweep retries).
pub async fn sweep(store: &Store, client: &kube::Client, metrics: &Metrics) -> Result<usize, SweepError> {
    let (mut tx, due) = store.due_deletions(50).await?;
    for row in &due {
        Tenants::new(client.clone(), &row.namespace).delete(&row.tenant).await?;
        Store::deletion_done(&mut tx, &row.subscription_id).await?;
        metrics.grace_deleted();
        tracing::info!(customer = %row.customer_id, tenant = %row.tenant, "grace period over: tenant deleted");
    }
    tx.commit().await.map_err(|e| SweepError::Store(StoreError::from_commit(e)))?;
    Ok(due.len())
}

/// Sweeps every `interval` until the task is dropped.
pub async fn run(store: Store, client: kube::Client, metrics: Metrics, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&store, &client, &metrics).await {
            tracing::warn!(error = %e, "grace-period sweep failed; retrying at the next interval");
        }
    }
}
