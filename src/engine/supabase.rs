//! The `database` step on Supabase (when `components.database.provider` is
//! Supabase): one project per instance named after the marker, polled to
//! ACTIVE_HEALTHY, then reached through the PRIMARY Supavisor pooler
//! endpoint the platform reports. A project in a terminal failed state
//! (INIT_FAILED and the like) stalls the instance with the platform's status
//! in the message: Winston never deletes a project on its own. Winston chooses the database password; it is stored in
//! Secret `<instance>-database` BEFORE the project is created, so a crash
//! between the two never loses the only copy.
use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Resource, ResourceExt};
use rand::Rng;

use super::external::{Converged, Object};
use super::steps::{Pass, StepResult};
use super::{Engine, EngineError};
use crate::api::tenant_instance::SupabaseIds;
use crate::names;
use crate::providers::supabase::{SupabaseProjectSpec, SupabaseProjects};
use crate::providers::{Marker, Secret};

const PASSWORD_KEY: &str = "POSTGRES_PASSWORD";

/// What the later steps need of a Ready project: where its APIs answer and
/// its keys (the anon key is public by design; the service-role key is a
/// secret and only ever leaves as a sensitive variable or an auth header).
#[derive(Clone, Debug)]
pub struct ProjectApi {
    /// `https://<ref>.supabase.co` (or the emulator's stand-in).
    pub url: String,
    pub anon_key: Option<Secret>,
    pub service_role_key: Option<Secret>,
}

/// Where project `reference` serves its APIs.
#[must_use]
pub fn project_url(engine: &Engine, reference: &str, reported: &str) -> String {
    match &engine.args.supabase_project_base_url {
        Some(base) => format!("{}/{reference}", base.trim_end_matches('/')),
        None => reported.to_string(),
    }
}

/// The name of the Secret holding the database password of `instance`.
#[must_use]
pub fn password_secret_name(instance: &str) -> String {
    format!("{instance}-database")
}

async fn password(pass: &Pass<'_>) -> Result<String, EngineError> {
    let name = password_secret_name(&pass.ti.name_any());
    stored_once(pass, &name, PASSWORD_KEY, || {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        hex::encode(raw)
    })
    .await
}

/// The value under `key` of the instance's Secret `name`, generated once:
/// a new value is written to the Secret (owned by the instance) before
/// anyone uses it, and a Secret created meanwhile by another writer wins,
/// so every caller uses one value for the Secret's lifetime.
///
/// # Errors
/// Kubernetes failures; `MalformedSecret` when the Secret lacks `key`.
pub(super) async fn stored_once(
    pass: &Pass<'_>,
    name: &str,
    key: &'static str,
    generate: impl Fn() -> String,
) -> Result<String, EngineError> {
    for _ in 0..2 {
        if let Some(s) = pass.secrets.get_opt(name).await? {
            let v = s.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).to_string());
            return v.ok_or(EngineError::MalformedSecret { name: name.to_string(), missing: key });
        }
        let value = generate();
        let secret = owned_secret(pass, name, key, &value, None);
        let ns = pass.ti.namespace().unwrap_or_default();
        match super::write_secret(pass.rec.host(), &ns, name, pass.secrets.create(&PostParams::default(), &secret))
            .await
        {
            Ok(_) => return Ok(value),
            // Created meanwhile: read the winner's value.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(EngineError::MalformedSecret { name: name.to_string(), missing: key })
}

/// Secret `name` owned by the instance, holding `value` under `key`.
pub(super) fn owned_secret(
    pass: &Pass<'_>,
    name: &str,
    key: &str,
    value: &str,
    annotations: Option<BTreeMap<String, String>>,
) -> KubeSecret {
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pass.ti.namespace(),
            labels: Some(BTreeMap::from([(names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string())])),
            annotations,
            owner_references: pass.ti.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(key.to_string(), ByteString(value.as_bytes().to_vec()))])),
        ..KubeSecret::default()
    }
}

/// The project spec; `region` is the Tenant's `components.database.region`
/// (honoured, never ignored), else `--supabase-region`.
fn spec(engine: &Engine, marker: &Marker, pw: &str, region: Option<&str>) -> Result<SupabaseProjectSpec, EngineError> {
    let organization = engine.args.supabase_organization.clone().ok_or(EngineError::SupabaseNotConfigured)?;
    Ok(SupabaseProjectSpec {
        marker: marker.clone(),
        organization,
        region: region.map_or_else(|| engine.args.supabase_region.clone(), str::to_string),
        db_pass: Secret::new(pw),
        instance_size: None,
    })
}

/// Converges the Supabase project and sets the pass's database URL.
///
/// # Errors
/// See [`EngineError`].
pub async fn run(pass: &mut Pass<'_>) -> Result<StepResult, EngineError> {
    let pw = password(pass).await?;
    let region = pass.ti.spec.stack.components.database.as_ref().and_then(|d| d.region.as_deref());
    let spec = spec(pass.engine, &pass.marker, &pw, region)?;
    let res = SupabaseProjects(pass.engine.providers.supabase.clone());
    match pass.converge(&res, &spec, Object::SupabaseProject).await? {
        Converged::Waiting { message, .. } => Ok(StepResult::Waiting(format!("supabase: {message}"))),
        Converged::Ready { id, observed } => {
            // The PRIMARY pooler endpoint the platform reports (IPv4, unlike
            // the direct host); the direct host only when it reports none.
            pass.database_url = Some(observed.pooler.as_ref().map_or_else(
                || {
                    let host = observed
                        .project
                        .database
                        .as_ref()
                        .map_or_else(|| format!("db.{id}.supabase.co"), |d| d.host.clone());
                    format!("postgresql://postgres:{pw}@{host}:5432/postgres")
                },
                |p| p.url(&pw),
            ));
            let url = project_url(pass.engine, &id, &observed.api_url);
            pass.supabase = Some(ProjectApi {
                url: url.clone(),
                anon_key: observed.anon_key.clone(),
                service_role_key: observed.service_role_key.clone(),
            });
            Ok(StepResult::Done(format!("Supabase project {id} ({url})")))
        }
    }
}

/// Deletes the Supabase project (by ref, then by marker); `true` when gone.
///
/// # Errors
/// Platform failures.
pub async fn remove(engine: &Engine, marker: &Marker, ids: Option<&SupabaseIds>) -> Result<bool, EngineError> {
    let Ok(spec) = spec(engine, marker, "", None) else {
        return Ok(ids.and_then(|i| i.project_ref.as_ref()).is_none());
    };
    let res = SupabaseProjects(engine.providers.supabase.clone());
    let known = ids.and_then(|s| s.project_ref.as_deref());
    super::teardown::remove(&res, &spec, known, true).await
}
