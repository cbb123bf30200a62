//! Deletion of an instance's external objects, in reverse step order, each
//! verified gone before the next, and then of the Kubernetes Secrets the
//! instance created. Objects created by a run that crashed before recording
//! their id are found by marker and deleted too, so nothing is orphaned.
//!
//! Only the platforms the instance used are called: one with a recorded id,
//! or one the step's status still holds an announced, unrecorded create for
//! (the pending marker; for the database step, on the platform the spec
//! names). An instance that never had a frontend makes no Vercel request,
//! one on Neon no Supabase request, so an install without an account on a
//! platform (or with a rejected token) still deletes the tenants that never
//! used it. The search by marker (on Railway a listing of every project)
//! runs only for such an announced create or when a known id is not found.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::record::Recorder;
use super::{Deps, Engine, EngineError};
use crate::api::shared::DatabaseProvider;
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

/// The platforms an instance used, read from its status: a recorded id or
/// an announced create (pending marker) of the step that owns the object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    pub vercel: bool,
    pub railway: bool,
    pub supabase: bool,
    pub neon: bool,
}

impl Used {
    /// What `ext` records and `pending` announces; a pending database create
    /// is on the platform `database` names (pure).
    #[must_use]
    pub fn of(ext: &ExternalIds, pending: impl Fn(StepName) -> bool, database: DatabaseProvider) -> Self {
        let db_pending = pending(StepName::Database);
        Self {
            vercel: ext.vercel.is_some() || pending(StepName::Frontend),
            railway: ext.railway.is_some() || pending(StepName::Service),
            supabase: ext.supabase.is_some() || (db_pending && database == DatabaseProvider::Supabase),
            neon: ext.neon.is_some() || (db_pending && database != DatabaseProvider::Supabase),
        }
    }
}

/// One pass of deletion, in reverse step order (frontend, service,
/// database), calling only the platforms the instance used (see [`Used`]);
/// `Ok(true)` when every external object is gone.
///
/// # Errors
/// Platform failures (the caller shows them as `DeleteBlocked`).
pub async fn delete_all(engine: &Engine, rec: &mut Recorder<'_>, ti: &TenantInstance) -> Result<bool, EngineError> {
    let marker = Marker::new(ti.metadata.uid.as_deref().unwrap_or_default());
    let ext = rec.status.external.clone().unwrap_or_default();
    let database = ti.spec.stack.components.database.as_ref().map(|d| d.provider).unwrap_or_default();
    let used = Used::of(&ext, |step| rec.pending(step).is_some(), database);
    if used.vercel && !super::frontend::remove(engine, &marker, ext.vercel.as_ref()).await? {
        return Ok(false);
    }
    forget(rec, |e| e.vercel.take().is_some()).await?;
    let unrecorded = rec.pending(StepName::Service).is_some();
    if used.railway && !delete_service(engine, &marker, &ext.railway.clone().unwrap_or_default(), unrecorded).await? {
        return Ok(false);
    }
    forget(rec, |e| e.railway.take().is_some()).await?;
    let unrecorded = rec.pending(StepName::Database).is_some();
    if !delete_database(engine, &marker, &ext, used, unrecorded).await? {
        return Ok(false);
    }
    if let Some(e) = rec.status.external.as_mut() {
        e.neon = None;
        e.supabase = None;
    }
    rec.flush().await?;
    Ok(true)
}

/// Deletes the Secrets `ti` created (its credentials and, on Supabase, its
/// database password) and verifies they are gone: `Ok(true)` once none is
/// left. Run after the external objects are gone and the key revoked, and
/// before the finalizer is released, so that a TenantInstance re-created
/// under the same name never meets the old Secret (garbage collection may
/// not have run, or not run at all). A Secret of that name owned by
/// someone else is left alone.
///
/// # Errors
/// Kubernetes failures.
pub async fn delete_secrets(deps: &Deps<'_>, ti: &TenantInstance) -> Result<bool, EngineError> {
    let secrets: Api<Secret> = Api::namespaced(deps.client.clone(), &ti.namespace().unwrap_or_default());
    let mut gone = true;
    for name in [
        super::credentials::secret_name(&ti.name_any()),
        super::supabase::password_secret_name(&ti.name_any()),
        super::admin_user::secret_name(&ti.name_any()),
    ] {
        gone &= super::credentials::delete_owned(&secrets, &name, ti).await?;
    }
    Ok(gone)
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
pub(super) async fn delete_service(
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

/// The Supabase project, then the Neon project, each only when `used`;
/// `true` when both are gone.
async fn delete_database(
    engine: &Engine,
    marker: &Marker,
    ext: &ExternalIds,
    used: Used,
    unrecorded: bool,
) -> Result<bool, EngineError> {
    if used.supabase && !super::supabase::remove(engine, marker, ext.supabase.as_ref()).await? {
        return Ok(false);
    }
    if !used.neon {
        return Ok(true);
    }
    let spec = NeonProjectSpec::new(marker.clone(), &engine.args.neon_region, engine.args.postgres_version);
    let known = ext.neon.as_ref().and_then(|n| n.project_id.as_deref());
    remove(&NeonProjects(engine.providers.neon.clone()), &spec, known, unrecorded).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tenant_instance::{NeonIds, SupabaseIds, VercelIds};

    #[test]
    fn only_the_platforms_an_instance_used_are_called() {
        let neon = ExternalIds { neon: Some(NeonIds::default()), ..ExternalIds::default() };
        let railway = ExternalIds { railway: Some(RailwayIds::default()), ..neon.clone() };
        let all = ExternalIds {
            vercel: Some(VercelIds::default()),
            supabase: Some(SupabaseIds::default()),
            ..railway.clone()
        };
        let none = |_: StepName| false;
        let only = |s: StepName| move |p: StepName| p == s;
        let (n, s) = (DatabaseProvider::Neon, DatabaseProvider::Supabase);
        // (ids, pending step, database provider, expected)
        let rows: [(&ExternalIds, Option<StepName>, DatabaseProvider, Used); 8] = [
            (&ExternalIds::default(), None, n, Used::default()),
            (&neon, None, n, Used { neon: true, ..Used::default() }),
            (&railway, None, n, Used { neon: true, railway: true, ..Used::default() }),
            (&all, None, n, Used { neon: true, railway: true, vercel: true, supabase: true }),
            (
                &railway,
                Some(StepName::Frontend),
                n,
                Used { neon: true, railway: true, vercel: true, ..Used::default() },
            ),
            (&neon, Some(StepName::Service), n, Used { neon: true, railway: true, ..Used::default() }),
            (&ExternalIds::default(), Some(StepName::Database), n, Used { neon: true, ..Used::default() }),
            (&ExternalIds::default(), Some(StepName::Database), s, Used { supabase: true, ..Used::default() }),
        ];
        for (i, (ext, pending, db, want)) in rows.into_iter().enumerate() {
            let got = match pending {
                None => Used::of(ext, none, db),
                Some(step) => Used::of(ext, only(step), db),
            };
            assert_eq!(got, want, "row {i}");
        }
    }
}
