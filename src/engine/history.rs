//! Keeps the configuration history: the workspace version the agent
//! service runs is recorded in the control database once the platform
//! holds it, and forgotten when the instance is torn down. The rows
//! themselves are `ledger::snapshots`'.
//!
//! # When a version is recorded
//! In the service step, after the platform confirmed the service runs with
//! the workspace (its variables up to date) and before the step is `Done`.
//! A failed write (the control database unreachable) fails the step, which
//! is retried like any `LedgerError`: the next pass finds the service up to
//! date and records again, so a crash between the platform write and the
//! record loses no version, and the record being idempotent per hash
//! duplicates none. The engine already depends on the control database
//! (the credentials step registers the agent's key there), so this adds no
//! new way for provisioning to stop.
use kube::ResourceExt;

use super::EngineError;
use super::workspace::Workspace;
use crate::api::TenantInstance;
use crate::ledger::Ledger;
use crate::ledger::snapshots::{NewSnapshot, Recorded};

/// Records `ws` as the version `ti`'s service runs, keeping `keep` versions.
///
/// # Errors
/// Ledger failures (retried by the caller's step).
pub async fn record(ledger: &Ledger, ti: &TenantInstance, ws: &Workspace, keep: u32) -> Result<Recorded, EngineError> {
    let (uid, namespace, name) = (ti.uid().unwrap_or_default(), ti.namespace().unwrap_or_default(), ti.name_any());
    let hash = ws.hash();
    let snapshot = NewSnapshot {
        instance_uid: &uid,
        namespace: &namespace,
        instance: &name,
        tenant: &ti.spec.tenant_ref.name,
        ordinal: ti.spec.ordinal,
        generation: ti.metadata.generation.unwrap_or_default(),
        workspace_hash: &hash,
        files: &ws.files,
    };
    let recorded = ledger.record_snapshot(&snapshot, keep).await?;
    if let Recorded::Inserted { pruned } = recorded {
        tracing::info!(instance = %name, hash = %hash, pruned, "workspace version recorded");
    }
    Ok(recorded)
}

/// Forgets `ti`'s history: its versions go with it (retention ends at
/// teardown, whatever the deletion policy; the history describes the
/// instance object, and a re-created instance starts a new one).
///
/// # Errors
/// Ledger failures (the teardown is retried).
pub async fn forget(ledger: &Ledger, ti: &TenantInstance) -> Result<(), EngineError> {
    let Some(uid) = ti.uid() else { return Ok(()) };
    let gone = ledger.delete_snapshots(&uid).await?;
    tracing::debug!(instance = %ti.name_any(), gone, "workspace history forgotten");
    Ok(())
}
