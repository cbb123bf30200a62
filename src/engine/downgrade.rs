//! Removal of a component the plan (its `features`) or the spec no longer
//! includes, from a live instance: after a downgrade from growth to free the
//! Vercel project goes, after `components.compute` is dropped the Railway
//! service goes, through the same deletion calls as teardown (by recorded
//! id, then by marker when a create was announced but not recorded). The
//! other components are left untouched. Their ids and URLs leave status
//! once the platform no longer has them.
//!
//! A database is never removed this way: its data would go with it. It is
//! deleted with the instance (`deletionPolicy: Delete`).
use super::record::Recorder;
use super::{Engine, EngineError};
use crate::api::{StepName, TenantInstance};
use crate::providers::Marker;

/// Removes what `step` created when the step is no longer wanted.
/// `Ok(None)`: nothing of it is left (the step is Skipped); `Ok(Some(m))`:
/// deletion issued, verified on a later pass (`m` says so).
///
/// # Errors
/// Platform failures and status writes, classified as every step's.
pub async fn remove(
    engine: &Engine,
    rec: &mut Recorder<'_>,
    ti: &TenantInstance,
    step: StepName,
) -> Result<Option<String>, EngineError> {
    let marker = Marker::new(ti.metadata.uid.as_deref().unwrap_or_default());
    let ext = rec.status.external.clone().unwrap_or_default();
    let unrecorded = rec.pending(step).is_some();
    match step {
        StepName::Frontend if ext.vercel.is_some() || unrecorded => {
            if !super::frontend::remove(engine, &marker, ext.vercel.as_ref()).await? {
                return Ok(Some("removing the Vercel project: the plan or spec no longer includes a frontend".into()));
            }
            forget(rec, step, |st| {
                st.external.get_or_insert_default().vercel = None;
                st.urls.get_or_insert_default().frontend = None;
            });
        }
        StepName::Service if ext.railway.is_some() || unrecorded => {
            let ids = ext.railway.clone().unwrap_or_default();
            if !super::teardown::delete_service(engine, &marker, &ids, unrecorded).await? {
                return Ok(Some("removing the Railway service: the plan or spec no longer includes compute".into()));
            }
            forget(rec, step, |st| {
                st.external.get_or_insert_default().railway = None;
                st.urls.get_or_insert_default().service = None;
            });
        }
        _ => return Ok(None),
    }
    rec.flush().await?;
    Ok(None)
}

/// Drops the ids, URL and announced create of a removed component.
fn forget(rec: &mut Recorder<'_>, step: StepName, clear: impl FnOnce(&mut crate::api::TenantInstanceStatus)) {
    clear(&mut rec.status);
    if rec.status.urls.as_ref().is_some_and(|u| u.service.is_none() && u.frontend.is_none()) {
        rec.status.urls = None;
    }
    rec.settle(step);
    tracing::info!(step = step.as_str(), "removed a component the plan or spec no longer includes");
}
