//! Drives one external object through the provider contract
//! (observe -> create/update) with the crash-safety protocol: a pending
//! marker is persisted before every create, the id right after it, and an
//! object found by marker is adopted (searched for only when a create was
//! announced and its id never recorded). More than one match stalls; nothing is
//! ever deleted automatically. Nothing here waits for a platform: long
//! operations come back as [`Converged::Waiting`] and are polled by requeue.
use super::EngineError;
use super::record::Recorder;
use crate::api::StepName;
use crate::providers::{Applied, ExternalResource, Observation};

/// Where the object stands after one pass.
#[derive(Debug)]
pub enum Converged<O> {
    /// Exists and matches the spec.
    Ready { id: String, observed: O },
    /// Exists (or is being created) and a platform operation runs.
    Waiting { id: String, message: String },
}

/// One pass over the object of `step` whose recorded id is `known_id`.
/// `set_id` stores an id in the status (called with `None` to forget an id
/// whose object vanished). `may_create` is false while paused.
///
/// # Errors
/// Provider errors (classified by the caller), status write failures, and
/// `Stalled` for ambiguous markers or objects in a terminal failed state.
pub async fn converge<R, F>(
    resource: &R,
    spec: &R::Spec,
    step: StepName,
    marker: &str,
    known_id: Option<&str>,
    rec: &mut Recorder,
    mut set_id: F,
) -> Result<Converged<R::Observed>, EngineError>
where
    R: ExternalResource,
    F: FnMut(&mut Recorder, Option<&str>),
{
    let observed = if known_id.is_none() && rec.pending(step).is_none() {
        // No id and no create ever announced (announcing is a conditional
        // status write that precedes every create), so there is nothing to
        // adopt: skip the search, which on Railway pages through every
        // project of the workspace.
        Observation::Absent
    } else {
        resource.observe(spec, known_id).await?
    };
    match observed {
        Observation::Ambiguous { ids } => Err(EngineError::Stalled {
            reason: "AmbiguousObjects",
            message: format!(
                "{} objects carry marker {marker} on the {} step's platform ({}); Winston never deletes automatically: \
                 delete the extra ones by hand",
                ids.len(),
                step.as_str(),
                ids.join(", ")
            ),
        }),
        Observation::Failed { id, reason } => {
            remember(rec, step, &mut set_id, &id, known_id).await?;
            Err(EngineError::Failed(format!("{} {id} failed: {reason}", step.as_str())))
        }
        Observation::InProgress { id, operation_id } => {
            remember(rec, step, &mut set_id, &id, known_id).await?;
            Ok(Converged::Waiting { id, message: format!("waiting for operation {operation_id}") })
        }
        Observation::Ready { id, observed, up_to_date } => {
            remember(rec, step, &mut set_id, &id, known_id).await?;
            if up_to_date {
                return Ok(Converged::Ready { id, observed });
            }
            match resource.update(&id, spec).await? {
                Applied::Done => Ok(Converged::Waiting { id, message: "updated; verifying".into() }),
                Applied::InProgress { operation_id } => {
                    Ok(Converged::Waiting { id, message: format!("updating (operation {operation_id})") })
                }
            }
        }
        Observation::Absent => {
            if known_id.is_some() {
                // Deleted out of band (drift): forget the id, then recreate.
                set_id(rec, None);
            }
            rec.announce(step, marker).await?;
            let created = resource.create(spec).await?;
            set_id(rec, Some(&created.id));
            rec.settle(step);
            rec.flush().await?;
            let message = match created.operation_id {
                Some(op) => format!("created {}; waiting for operation {op}", created.id),
                None => format!("created {}", created.id),
            };
            Ok(Converged::Waiting { id: created.id, message })
        }
    }
}

/// Records an id that observe found (an adoption, or a new id) and clears
/// the step's pending marker; persists at once. A confirmed known id
/// changes nothing: a pending marker beside it belongs to the step's next
/// object (the Railway service after its project) and must survive until
/// that object is found or created.
async fn remember<F>(
    rec: &mut Recorder,
    step: StepName,
    set_id: &mut F,
    id: &str,
    known_id: Option<&str>,
) -> Result<(), EngineError>
where
    F: FnMut(&mut Recorder, Option<&str>),
{
    if known_id != Some(id) {
        set_id(rec, Some(id));
        rec.settle(step);
        rec.flush().await?;
    }
    Ok(())
}
