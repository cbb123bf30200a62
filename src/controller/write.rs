//! The writes every reconciler makes the same way: server-side apply of
//! children as Winston's field manager, status replaced whole (see
//! [`crate::status_patch`]) and only when it changed, each write counted in
//! the metrics.
use kube::api::PatchParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::Result;
use super::own_writes::OwnWrites;
use crate::{names, status_patch};

/// Server-side apply as Winston's field manager, taking over fields another
/// manager set.
#[must_use]
pub fn ssa() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

/// Writes `status` to `obj` (of `kind`), replacing its status whole, unless
/// `current` already equals it. Returns whether it wrote. The write is
/// recorded in `own`, so its own watch event does not start another pass.
///
/// # Errors
/// When the API server refuses the patch.
pub async fn status<K, S>(
    ctx: &Context,
    own: &OwnWrites,
    kind: &'static str,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool>
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
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = status_patch::replace(status, None).map_err(kube::Error::SerdeError)?;
    own.writing(&ns, &name);
    let stored = api.patch_status(&name, &status_patch::params(), &patch).await;
    own.wrote(&ns, &name, stored.as_ref().ok().and_then(|o| o.meta().resource_version.as_deref()));
    stored?;
    ctx.metrics.wrote(kind, "status");
    Ok(true)
}
