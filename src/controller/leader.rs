//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas
//! never both act. Every write carries the Lease's resourceVersion
//! (optimistic concurrency): of two candidates racing for an expired lease,
//! exactly one wins.
//!
//! A replica that fails to renew before its lease expires must stop acting;
//! [`LeaderElector::run`] reports that through the returned future.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Timing of the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease object name.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (pod name + random suffix).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews (must be well under `lease_duration`).
    pub renew_every: Duration,
    /// How often a standby retries.
    pub retry_every: Duration,
}

/// Acquires and keeps a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

/// Result of one acquire-or-renew attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease.
    Leading,
    /// Someone else holds a valid lease.
    Standby,
}

impl LeaderElector {
    /// An elector for `cfg` using `client`.
    #[must_use]
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &cfg.namespace), cfg }
    }

    /// Tries once to acquire or renew the lease.
    ///
    /// # Errors
    /// Fails on API errors other than a lost race (409), which is `Standby`.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.cfg.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.cfg.identity.as_str());
        if !ours {
            let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(secs));
            let expired = spec.renew_time.as_ref().is_none_or(|t| t.0 + SignedDuration::from_secs(duration) < now.0);
            if held && !expired {
                return Ok(Attempt::Standby);
            }
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(now);
        match self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(e) if is_conflict(&e) => Ok(Attempt::Standby),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so a standby takes over at once (best effort).
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "failed to release the leader lease");
        }
    }

    /// Waits until this replica leads, then keeps renewing in the background.
    /// The returned receiver flips to `false` when leadership is lost (a
    /// renewal could not be made before the lease would expire).
    ///
    /// # Errors
    /// Never fails: API errors while waiting are logged and retried.
    pub async fn acquire(self: std::sync::Arc<Self>) -> watch::Receiver<bool> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => break,
                Ok(Attempt::Standby) => tracing::debug!(lease = %self.cfg.name, "standing by: another replica leads"),
                Err(e) => tracing::warn!(error = %e, "failed to acquire the leader lease; retrying"),
            }
            tokio::time::sleep(self.cfg.retry_every).await;
        }
        tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired leadership");
        let (tx, rx) = watch::channel(true);
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(me.cfg.renew_every).await;
                match me.try_acquire_or_renew().await {
                    Ok(Attempt::Leading) => last_renewal = tokio::time::Instant::now(),
                    Ok(Attempt::Standby) => {
                        tracing::error!("lost the leader lease to another replica");
                        let _ = tx.send(false);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "failed to renew the leader lease");
                        // Step down before the lease can expire under us.
                        if last_renewal.elapsed() + me.cfg.renew_every >= me.cfg.lease_duration {
                            let _ = tx.send(false);
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        rx
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
