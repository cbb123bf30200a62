//! The writes every reconciler makes the same way: server-side apply as
//! Winston's field manager, status written only when it changed, each write
//! counted in the metrics.
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::context::Context;
use super::error::Result;
use crate::names;

/// Server-side apply as Winston's field manager, taking over fields another
/// manager set.
#[must_use]
pub fn ssa() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

/// Writes `status` to `obj` (of `kind`) by server-side apply, unless
/// `current` already equals it. Returns whether it wrote.
///
/// # Errors
/// When the API server refuses the patch.
pub async fn status<K, S>(ctx: &Context, kind: &'static str, obj: &K, current: Option<&S>, status: &S) -> Result<bool>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let body = json!({ "apiVersion": K::api_version(&()), "kind": kind, "status": status });
    api.patch_status(&obj.name_any(), &ssa(), &Patch::Apply(body)).await?;
    ctx.metrics.wrote(kind, "status");
    Ok(true)
}
