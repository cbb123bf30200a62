//! The instance's status as the engine's durable memory. Every write
//! carries the resourceVersion it was computed from, so a stale or
//! concurrent writer gets 409 and retries instead of erasing an id.
//!
//! Crash-safety protocol for creates (DESIGN.md 4): [`Recorder::announce`]
//! writes a pending marker before the create; the new id is stored by the
//! pass's next write (the next announce, or the one [`Recorder::flush`] at
//! the end of the pass), so a pass writes once per create plus once at its
//! end, not once per step. A controller killed before the id is stored
//! finds the pending marker and looks the object up by its marker before
//! creating anything: the marker, not the id, is the checkpoint.
use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Deps, EngineError, Host};
use crate::api::{PendingCreate, StepName, TenantInstance, TenantInstanceStatus};
use crate::names;

/// Working copy of the status plus what the API server last acknowledged.
pub struct Recorder<'a> {
    api: Api<TenantInstance>,
    name: String,
    resource_version: Option<String>,
    written: TenantInstanceStatus,
    /// The status being built; flushed when it differs from what is stored.
    pub status: TenantInstanceStatus,
    host: &'a dyn Host,
    writes: u32,
    /// How long an announced create may stay unlisted before it counts as
    /// never performed (`--list-settle-seconds`).
    list_settle: std::time::Duration,
}

impl<'a> Recorder<'a> {
    /// Starts from the freshly read `ti`; writes through `deps.client` and
    /// reports each write to `deps.host`.
    #[must_use]
    pub fn new(deps: &Deps<'a>, ti: &TenantInstance) -> Self {
        let status = ti.status.clone().unwrap_or_default();
        Self {
            api: Api::namespaced(deps.client.clone(), &ti.namespace().unwrap_or_default()),
            name: ti.name_any(),
            resource_version: ti.resource_version(),
            written: status.clone(),
            status,
            host: deps.host,
            writes: 0,
            list_settle: std::time::Duration::from_secs(deps.engine.args.list_settle_seconds),
        }
    }

    /// The caller's host (metrics, backoff, own writes).
    #[must_use]
    pub fn host(&self) -> &'a dyn Host {
        self.host
    }

    /// Status writes made by this recorder.
    #[must_use]
    pub fn writes(&self) -> u32 {
        self.writes
    }

    /// How long an announced create may stay unlisted before a search that
    /// finds nothing means it was never performed.
    #[must_use]
    pub fn list_settle(&self) -> std::time::Duration {
        self.list_settle
    }

    /// Whether `step` has an announced create that was not recorded yet.
    #[must_use]
    pub fn pending(&self, step: StepName) -> Option<&PendingCreate> {
        self.status.pending.iter().find(|p| p.step == step)
    }

    /// Records the intent to create `marker` for `step` and persists it
    /// before returning, under optimistic concurrency.
    ///
    /// # Errors
    /// 409 when the object changed since it was read (someone else acts).
    pub async fn announce(&mut self, step: StepName, marker: &str) -> Result<(), EngineError> {
        self.status.pending.retain(|p| p.step != step);
        self.status.pending.push(PendingCreate { step, marker: marker.to_string(), since: Utc::now() });
        self.flush().await
    }

    /// Clears the pending marker of `step` (in memory; the next flush stores it).
    pub fn settle(&mut self, step: StepName) {
        self.status.pending.retain(|p| p.step != step);
    }

    /// Writes the status when it differs from what is stored.
    ///
    /// # Errors
    /// API failures, including 409 on a concurrent change.
    pub async fn flush(&mut self) -> Result<(), EngineError> {
        if self.status == self.written {
            return Ok(());
        }
        let body = json!({
            "apiVersion": TenantInstance::api_version(&()),
            "kind": TenantInstance::kind(&()),
            "metadata": { "name": self.name, "resourceVersion": self.resource_version },
            "status": self.status,
        });
        let pp = PatchParams::apply(names::FIELD_MANAGER).force();
        let stored = self.api.patch_status(&self.name, &pp, &Patch::Apply(body)).await?;
        self.host.wrote_status();
        self.writes += 1;
        self.resource_version = stored.resource_version();
        self.written = self.status.clone();
        Ok(())
    }
}
