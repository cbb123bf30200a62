//! The instance's status as the engine's durable memory. Every write
//! carries the resourceVersion it was computed from, so a stale or
//! concurrent writer gets 409 and retries instead of erasing an id.
//!
//! Crash-safety protocol for creates (DESIGN.md 4): [`Recorder::announce`]
//! writes a pending marker before the create; the new id is stored by the
//! pass's next write (the next announce, or the one [`Recorder::flush`] at
//! the end of the pass). A controller killed before the id is stored
//! finds the pending marker and looks the object up by its marker before
//! creating anything: the marker, not the id, is the checkpoint.
//!
//! The first announce of a pass also stores the markers of every later
//! step that may create (see [`Recorder::plan_creates`]): their creates
//! then go ahead without a write of their own, so a pass that creates a
//! database, a Railway project and its service writes twice (that announce
//! and the pass's end), not four times. Until this pass tries an object
//! stored so ("fresh"), it knows nothing was created under that marker: no
//! search, no settle wait. A marker whose step this pass never reached is
//! taken back by the pass's last write ([`Recorder::drop_untried`]); one
//! left by a crash is searched for, as any announced create. A fresh
//! create goes ahead without a write only while its marker is younger than
//! a quarter of the list-settle window, so the window a crash leaves still
//! counts from at most that long before the create.
use chrono::Utc;
use kube::{Api, ResourceExt};

use super::external::Object;
use super::{Deps, EngineError, Host};
use crate::api::{PendingCreate, StepName, TenantInstance, TenantInstanceStatus};
use crate::status_patch;

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
    /// The objects each wanted step may create, in step order.
    creates: Vec<(StepName, &'static [Object])>,
    /// Objects whose step's marker is stored ahead of them and that this
    /// pass has not tried to create yet.
    fresh: Vec<Object>,
    /// Steps whose marker was stored ahead and none of whose objects was
    /// tried yet.
    untried: Vec<StepName>,
    /// Events a step asks the pass to publish (after its own transitions).
    pub notices: Vec<super::run::Notice>,
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
            creates: Vec::new(),
            fresh: Vec::new(),
            untried: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// The objects the pass's wanted steps may create, in step order: an
    /// announce stores the markers of the steps after its own with it.
    pub fn plan_creates(&mut self, creates: Vec<(StepName, &'static [Object])>) {
        self.creates = creates;
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

    /// The announced create that may have made `object` and is not recorded
    /// yet: its step's pending marker, unless this pass stored that marker
    /// ahead of the object and has not tried to create it (then nothing was
    /// created under it).
    #[must_use]
    pub fn pending_for(&self, object: Object) -> Option<&PendingCreate> {
        if self.fresh.contains(&object) {
            return None;
        }
        self.pending(object.step())
    }

    /// Records the intent to create `marker` for `step` and persists it
    /// before returning, under optimistic concurrency.
    ///
    /// # Errors
    /// 409 when the object changed since it was read (someone else acts).
    pub async fn announce(&mut self, object: Object, marker: &str) -> Result<(), EngineError> {
        let step = object.step();
        self.untried.retain(|s| *s != step);
        if let Some(i) = self.fresh.iter().position(|o| *o == object) {
            self.fresh.remove(i);
            if self.stored_ahead(step, marker) {
                return Ok(());
            }
        }
        let since = Utc::now();
        self.status.pending.retain(|p| p.step != step);
        self.status.pending.push(PendingCreate { step, marker: marker.to_string(), since });
        self.announce_ahead(object, marker, since);
        self.flush().await
    }

    /// Whether the stored status holds `step`'s `marker` (stored ahead by
    /// an earlier announce of this pass) and it is young enough to stand
    /// for a create made now.
    fn stored_ahead(&self, step: StepName, marker: &str) -> bool {
        let stored = self.written.pending.iter().find(|p| p.step == step && p.marker == marker);
        let in_memory = self.pending(step).is_some_and(|p| p.marker == marker);
        let young =
            |since: chrono::DateTime<Utc>| (Utc::now() - since).to_std().unwrap_or_default() < self.list_settle / 4;
        in_memory && stored.is_some_and(|p| young(p.since))
    }

    /// With the announce of `object`: the objects after it that its step
    /// and the later steps may create and that have no id yet become fresh,
    /// and each later step without a marker gets one.
    fn announce_ahead(&mut self, object: Object, marker: &str, since: chrono::DateTime<Utc>) {
        let step = object.step();
        let Some(at) = self.creates.iter().position(|(s, _)| *s == step) else { return };
        let mut steps = Vec::new();
        let mut fresh = Vec::new();
        for &(s, objects) in &self.creates[at..] {
            let next =
                if s == step { objects.iter().position(|o| *o == object).map_or(objects.len(), |i| i + 1) } else { 0 };
            let ext = self.status.external.as_ref();
            let unknown: Vec<Object> =
                objects[next..].iter().copied().filter(|o| o.known(ext).is_none() && !self.fresh.contains(o)).collect();
            if unknown.is_empty() || (s != step && self.pending(s).is_some()) {
                continue;
            }
            if s != step {
                steps.push(s);
            }
            fresh.extend(unknown);
        }
        for s in &steps {
            self.status.pending.push(PendingCreate { step: *s, marker: marker.to_string(), since });
        }
        self.untried.extend(steps);
        self.fresh.extend(fresh);
    }

    /// Takes back the markers stored ahead for steps this pass never tried
    /// (in memory; the pass's last write stores it).
    pub fn drop_untried(&mut self) {
        let untried = std::mem::take(&mut self.untried);
        self.status.pending.retain(|p| !untried.contains(&p.step));
        self.fresh.clear();
    }

    /// Clears the pending marker of `step` (in memory; the next flush stores it).
    pub fn settle(&mut self, step: StepName) {
        self.status.pending.retain(|p| p.step != step);
    }

    /// `object` was created or found: its step's marker is cleared unless
    /// another object of the step still follows under it (the Railway
    /// service after its project).
    pub fn settled(&mut self, object: Object) {
        if !object.leads() {
            self.settle(object.step());
        }
    }

    /// Writes the status when it differs from what is stored.
    ///
    /// # Errors
    /// API failures, including 409 on a concurrent change.
    pub async fn flush(&mut self) -> Result<(), EngineError> {
        if self.status == self.written {
            return Ok(());
        }
        let patch =
            status_patch::replace(&self.status, self.resource_version.as_deref()).map_err(kube::Error::SerdeError)?;
        let stored = self.api.patch_status(&self.name, &status_patch::params(), &patch).await?;
        self.host.wrote_status();
        self.writes += 1;
        self.resource_version = stored.resource_version();
        self.written = self.status.clone();
        Ok(())
    }
}
