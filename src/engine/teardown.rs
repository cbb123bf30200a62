//! Deletion of an instance's external objects, in reverse step order, each
//! verified gone before the next. Objects created by a run that crashed
//! before recording their id are found by marker and deleted too, so
//! nothing is orphaned; the search by marker (on Railway a listing of every
//! project) runs only when the step's status still holds such an announced,
//! unrecorded create, or for frontends and Supabase (`unrecorded: true`).
use std::collections::BTreeMap;

use super::record::Recorder;
use super::{Engine, EngineError};
use crate::api::tenant_instance::{ExternalIds, RailwayIds};
use crate::api::{StepName, TenantInstance};
use crate::providers::neon::resources::{NeonProjectSpec, NeonProjects};
use crate::providers::railway::resources::{RailwayProjectSpec, RailwayProjects, RailwayServiceSpec, RailwayServices};
use crate::providers::{ExternalResource, Marker, Observation, ProviderError};

/// What `res` holds for `spec`: the object with the `known` id, and when
/// that is absent (or unknown) and `unrecorded`, whatever carries the marker.
async fn locate<R: ExternalResource>(
    res: &R,
    spec: &R::Spec,
    known: Option<&str>,
    unrecorded: bool,
) -> Result<Observation<R::Observed>, ProviderError> {
    if known.is_none() && !unrecorded {
        return Ok(Observation::Absent);
    }
    let obs = res.observe(spec, known).await?;
    if known.is_some() && unrecorded && matches!(obs, Observation::Absent) {
        return res.observe(spec, None).await;
    }
    Ok(obs)
}

/// Deletes what `res` finds for `spec` (by `known` id, then by marker when
/// `unrecorded`: a create may have happened whose id was never recorded).
/// Returns `true` once nothing is left.
pub(super) async fn remove<R: ExternalResource>(
    res: &R,
    spec: &R::Spec,
    known: Option<&str>,
    unrecorded: bool,
) -> Result<bool, EngineError> {
    let gone = |e: &ProviderError| e.category() == "not_found";
    let obs = match locate(res, spec, known, unrecorded).await {
        Err(e) if gone(&e) => return Ok(true),
        other => other?,
    };
    let ids = match obs {
        Observation::Absent => return Ok(true),
        // All of them carry our marker: on delete they are all ours to remove.
        Observation::Ambiguous { ids } => ids,
        Observation::InProgress { id, .. } | Observation::Ready { id, .. } | Observation::Failed { id, .. } => vec![id],
    };
    for id in ids {
        match res.delete(&id, spec).await {
            Err(e) if gone(&e) => {}
            other => {
                other?;
            }
        }
    }
    Ok(false)
}

/// One pass of deletion, in reverse step order (frontend, service,
/// database); `Ok(true)` when every external object is gone.
///
/// # Errors
/// Platform failures (the caller shows them as `DeleteBlocked`).
pub async fn delete_all(engine: &Engine, rec: &mut Recorder<'_>, ti: &TenantInstance) -> Result<bool, EngineError> {
    let marker = Marker::new(ti.metadata.uid.as_deref().unwrap_or_default());
    let ext = rec.status.external.clone().unwrap_or_default();
    if !super::frontend::remove(engine, &marker, ext.vercel.as_ref()).await? {
        return Ok(false);
    }
    forget(rec, |e| e.vercel.take().is_some()).await?;
    let unrecorded = rec.pending(StepName::Service).is_some();
    if !delete_service(engine, &marker, &ext.railway.clone().unwrap_or_default(), unrecorded).await? {
        return Ok(false);
    }
    forget(rec, |e| e.railway.take().is_some()).await?;
    let unrecorded = rec.pending(StepName::Database).is_some();
    if !delete_database(engine, &marker, &ext, unrecorded).await? {
        return Ok(false);
    }
    if let Some(e) = rec.status.external.as_mut() {
        e.neon = None;
        e.supabase = None;
    }
    rec.flush().await?;
    Ok(true)
}

/// Forgets ids of objects that are gone; writes the status only when
/// `take` removed something.
async fn forget(rec: &mut Recorder<'_>, take: impl FnOnce(&mut ExternalIds) -> bool) -> Result<(), EngineError> {
    if rec.status.external.as_mut().is_some_and(take) {
        rec.flush().await?;
    }
    Ok(())
}

/// The Railway service, then its project; `true` when both are gone.
async fn delete_service(
    engine: &Engine,
    marker: &Marker,
    ids: &RailwayIds,
    unrecorded: bool,
) -> Result<bool, EngineError> {
    let projects = RailwayProjects(engine.providers.railway.clone());
    let project_spec = RailwayProjectSpec { marker: marker.clone() };
    let (project_id, environment_id) =
        match locate(&projects, &project_spec, ids.project_id.as_deref(), unrecorded).await? {
            Observation::Ready { id, observed, .. } => (id, observed.environment_id),
            Observation::Ambiguous { ids } => {
                for id in ids {
                    projects.delete(&id, &project_spec).await?;
                }
                return Ok(false);
            }
            _ => return Ok(true),
        };
    let spec = RailwayServiceSpec {
        project_id: project_id.clone(),
        environment_id,
        marker: marker.clone(),
        image: String::new(),
        variables: BTreeMap::new(),
        target_port: None,
    };
    let services = RailwayServices(engine.providers.railway.clone());
    if !remove(&services, &spec, ids.service_id.as_deref(), unrecorded).await? {
        return Ok(false);
    }
    remove(&projects, &project_spec, Some(&project_id), unrecorded).await
}

/// The Supabase project, then the Neon project; `true` when both are gone.
async fn delete_database(
    engine: &Engine,
    marker: &Marker,
    ext: &ExternalIds,
    unrecorded: bool,
) -> Result<bool, EngineError> {
    if !super::supabase::remove(engine, marker, ext.supabase.as_ref()).await? {
        return Ok(false);
    }
    let spec = NeonProjectSpec::new(marker.clone(), &engine.args.neon_region, engine.args.postgres_version);
    let known = ext.neon.as_ref().and_then(|n| n.project_id.as_deref());
    remove(&NeonProjects(engine.providers.neon.clone()), &spec, known, unrecorded).await
}
