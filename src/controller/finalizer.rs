//! Adding and removing Winston's finalizer. Each patch carries the object's
//! resourceVersion, so a concurrent change by someone else fails it (409,
//! retried) instead of being overwritten.
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::Result;
use super::metrics::Metrics;
use crate::names::FINALIZER;

/// Where an object stands with respect to our finalizer.
#[derive(Debug, PartialEq, Eq)]
pub enum Finalized {
    /// Not being deleted; the finalizer is in place.
    Live,
    /// Being deleted and still carrying our finalizer: clean up.
    Deleting,
    /// Being deleted and our finalizer is already gone: nothing to do.
    Gone,
}

/// Adds the finalizer to a live object that lacks it.
///
/// # Errors
/// When the patch fails (including a concurrent change of the list).
pub async fn ensure<K>(api: &Api<K>, obj: &K, metrics: &Metrics, kind: &'static str) -> Result<Finalized>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let has = obj.finalizers().iter().any(|f| f == FINALIZER);
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(if has { Finalized::Deleting } else { Finalized::Gone });
    }
    if !has {
        let mut list = obj.finalizers().to_vec();
        list.push(FINALIZER.to_string());
        write(api, obj, list).await?;
        metrics.wrote(kind, "finalizer");
    }
    Ok(Finalized::Live)
}

/// Removes the finalizer after cleanup finished.
///
/// # Errors
/// When the patch fails (including a concurrent change of the list).
pub async fn remove<K>(api: &Api<K>, obj: &K, metrics: &Metrics, kind: &'static str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let list = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    write(api, obj, list).await?;
    metrics.wrote(kind, "finalizer");
    Ok(())
}

async fn write<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": obj.resource_version() } });
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}
