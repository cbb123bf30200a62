//! Drives one external object through the provider contract
//! (observe -> create/update) with the crash-safety protocol: a pending
//! marker is persisted before every create, the id right after it, and an
//! object found by marker is adopted (searched for only when a create was
//! announced and its id never recorded). More than one match stalls; nothing is
//! ever deleted automatically. Nothing here waits for a platform: long
//! operations come back as [`Converged::Waiting`] and are polled by requeue.
//!
//! Where each object's id lives in the status is said once, by its [`Slot`].
use super::EngineError;
use super::record::Recorder;
use crate::api::StepName;
use crate::api::tenant_instance::{ExternalIds, NeonIds, RailwayIds, SupabaseIds, VercelIds};
use crate::providers::{Applied, ExternalResource, Observation};

/// Where the object stands after one pass.
#[derive(Debug)]
pub enum Converged<O> {
    /// Exists and matches the spec.
    Ready { id: String, observed: O },
    /// Exists (or is being created) and a platform operation runs.
    Waiting { id: String, message: String },
}

/// One kind of external object of an instance: the step that owns it,
/// where its id lives in `status.external`, and whether a failed object is
/// deployed again.
pub struct Slot {
    pub step: StepName,
    /// The recorded id.
    pub get: fn(&ExternalIds) -> Option<&str>,
    /// Records an id (`None` forgets it), resetting what belonged to the old one.
    pub set: fn(&mut ExternalIds, Option<&str>),
    /// A failed object (a failed deployment) is asked to deploy again, once
    /// per backoff period since the failure still fails the pass.
    pub redeploy: bool,
}

impl Slot {
    /// The id recorded in `ext` (a status's `external`).
    #[must_use]
    pub fn known(&self, ext: Option<&ExternalIds>) -> Option<String> {
        ext.and_then(self.get).map(str::to_string)
    }
}

/// Records the project `id` in a platform's `ids`; a different project
/// makes every other id of that platform stale, so they are reset.
fn renew<T: Default>(ids: &mut Option<T>, id: Option<&str>, project: fn(&mut T) -> &mut Option<String>) {
    let ids = ids.get_or_insert_default();
    if project(ids).as_deref() != id {
        *ids = T::default();
        *project(ids) = id.map(str::to_string);
    }
}

/// The Neon project of the `database` step.
pub const NEON_PROJECT: Slot = Slot {
    step: StepName::Database,
    get: |e| e.neon.as_ref()?.project_id.as_deref(),
    set: |e, id| renew(&mut e.neon, id, |n: &mut NeonIds| &mut n.project_id),
    redeploy: false,
};

/// The Supabase project of the `database` step.
pub const SUPABASE_PROJECT: Slot = Slot {
    step: StepName::Database,
    get: |e| e.supabase.as_ref()?.project_ref.as_deref(),
    set: |e, id| e.supabase = id.map(|i| SupabaseIds { project_ref: Some(i.to_string()) }),
    redeploy: false,
};

/// The Railway project of the `service` step.
pub const RAILWAY_PROJECT: Slot = Slot {
    step: StepName::Service,
    get: |e| e.railway.as_ref()?.project_id.as_deref(),
    set: |e, id| renew(&mut e.railway, id, |r: &mut RailwayIds| &mut r.project_id),
    redeploy: false,
};

/// The Railway service of the `service` step; a new service forgets the
/// old one's deployment and domain.
pub const RAILWAY_SERVICE: Slot = Slot {
    step: StepName::Service,
    get: |e| e.railway.as_ref()?.service_id.as_deref(),
    set: |e, id| {
        let ids = e.railway.get_or_insert_default();
        if ids.service_id.as_deref() != id {
            ids.service_id = id.map(str::to_string);
            ids.deployment_id = None;
            ids.domain = None;
        }
    },
    redeploy: true,
};

/// The Vercel project of the `frontend` step.
pub const VERCEL_PROJECT: Slot = Slot {
    step: StepName::Frontend,
    get: |e| e.vercel.as_ref()?.project_id.as_deref(),
    set: |e, id| renew(&mut e.vercel, id, |v: &mut VercelIds| &mut v.project_id),
    redeploy: true,
};

/// The welcome email of the `notify` step.
pub const WELCOME_EMAIL: Slot = Slot {
    step: StepName::Notify,
    get: |e| e.welcome_email_id.as_deref(),
    set: |e, id| e.welcome_email_id = id.map(str::to_string),
    redeploy: false,
};

/// One pass over the object in `slot` carrying `marker`: observe, then
/// adopt, update or create.
///
/// # Errors
/// Provider errors (classified by the caller), status write failures,
/// `AmbiguousObjects` for more than one object with the marker and
/// `ObjectFailed` for an object in a terminal failed state (after asking
/// for a redeploy when the slot says so).
pub async fn converge<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    slot: &Slot,
    marker: &str,
    rec: &mut Recorder<'_>,
) -> Result<Converged<R::Observed>, EngineError> {
    let known = slot.known(rec.status.external.as_ref());
    let known = known.as_deref();
    match observe(resource, spec, slot, known, rec).await? {
        Observation::Absent => create(resource, spec, slot, marker, known, rec).await,
        Observation::Ambiguous { ids } => {
            Err(EngineError::AmbiguousObjects { step: slot.step, marker: marker.to_string(), ids })
        }
        Observation::Failed { id, reason } => {
            remember(rec, slot, &id, known).await?;
            if slot.redeploy {
                resource.update(&id, spec).await?;
            }
            Err(EngineError::ObjectFailed { step: slot.step, id, reason, redeploying: slot.redeploy })
        }
        Observation::InProgress { id, operation_id } => {
            remember(rec, slot, &id, known).await?;
            Ok(Converged::Waiting { id, message: format!("waiting for operation {operation_id}") })
        }
        Observation::Ready { id, observed, up_to_date } => {
            remember(rec, slot, &id, known).await?;
            if up_to_date {
                return Ok(Converged::Ready { id, observed });
            }
            update(resource, spec, id).await
        }
    }
}

/// What the platform holds for the slot. With no id and no create ever
/// announced (announcing is a conditional status write that precedes every
/// create) there is nothing to adopt: the search, which on Railway pages
/// through every project of the workspace, is skipped.
async fn observe<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    slot: &Slot,
    known: Option<&str>,
    rec: &Recorder<'_>,
) -> Result<Observation<R::Observed>, EngineError> {
    if known.is_none() && rec.pending(slot.step).is_none() {
        return Ok(Observation::Absent);
    }
    Ok(resource.observe(spec, known).await?)
}

/// Announces, creates and records a new object (forgetting a known id whose
/// object was deleted out of band).
async fn create<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    slot: &Slot,
    marker: &str,
    known: Option<&str>,
    rec: &mut Recorder<'_>,
) -> Result<Converged<R::Observed>, EngineError> {
    if known.is_some() {
        (slot.set)(rec.status.external.get_or_insert_default(), None);
    }
    rec.announce(slot.step, marker).await?;
    let created = resource.create(spec).await?;
    (slot.set)(rec.status.external.get_or_insert_default(), Some(&created.id));
    rec.settle(slot.step);
    rec.flush().await?;
    let message = match created.operation_id {
        Some(op) => format!("created {}; waiting for operation {op}", created.id),
        None => format!("created {}", created.id),
    };
    Ok(Converged::Waiting { id: created.id, message })
}

/// Brings a drifted object back to the spec.
async fn update<R: ExternalResource>(
    resource: &R,
    spec: &R::Spec,
    id: String,
) -> Result<Converged<R::Observed>, EngineError> {
    let message = match resource.update(&id, spec).await? {
        Applied::Done => "updated; verifying".to_string(),
        Applied::InProgress { operation_id } => format!("updating (operation {operation_id})"),
    };
    Ok(Converged::Waiting { id, message })
}

/// Records an id that observe found (an adoption, or a new id) and clears
/// the step's pending marker; persists at once. A confirmed known id
/// changes nothing: a pending marker beside it belongs to the step's next
/// object (the Railway service after its project) and must survive until
/// that object is found or created.
async fn remember(rec: &mut Recorder<'_>, slot: &Slot, id: &str, known: Option<&str>) -> Result<(), EngineError> {
    if known != Some(id) {
        (slot.set)(rec.status.external.get_or_insert_default(), Some(id));
        rec.settle(slot.step);
        rec.flush().await?;
    }
    Ok(())
}
