//! The `frontend` step on Vercel: one project per instance (named after the
//! marker) built from the Tenant's git repository, polled until READY with
//! its alias. Its environment says what the frontend talks to:
//! - with an agent service: `NEXT_PUBLIC_AGENT_URL` and `AGENT_GATEWAY_TOKEN`;
//! - with a Supabase database (the agency stack): `NEXT_PUBLIC_SUPABASE_URL`
//!   and `NEXT_PUBLIC_SUPABASE_ANON_KEY` as plain variables (public by
//!   design: the browser uses them), `SUPABASE_SERVICE_ROLE_KEY` as a
//!   sensitive (write-only) one, and `AGENCY_NAME` (the display name);
//! - the Tenant's own `components.frontend.env`: literals as plain
//!   variables, Secret references as sensitive ones.
//!
//! Any change of a value or type rewrites the variables and deploys once.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::external::{Converged, Object};
use super::steps::{Pass, StepResult};
use super::{Engine, EngineError};
use crate::api::shared::FrontendEnvVar;
use crate::api::tenant_instance::VercelIds;
use crate::providers::Marker;
use crate::providers::vercel::GitSource;
use crate::providers::vercel::resources::{VercelFrontendSpec, VercelFrontends};

/// The variables and their Vercel types.
#[derive(Debug, Default)]
struct Env {
    values: BTreeMap<String, String>,
    kinds: BTreeMap<String, &'static str>,
}

impl Env {
    fn put(&mut self, key: &str, value: String, kind: &'static str) {
        self.values.insert(key.to_string(), value);
        if kind != "encrypted" {
            self.kinds.insert(key.to_string(), kind);
        }
    }
}

/// The Supabase variables; `None` while the project's API is not known yet.
fn supabase_env(pass: &Pass<'_>, env: &mut Env) -> Result<bool, EngineError> {
    let Some(api) = &pass.supabase else { return Ok(false) };
    let anon = api.anon_key.as_ref().ok_or(EngineError::SupabaseKeyMissing("anon"))?;
    let service = api.service_role_key.as_ref().ok_or(EngineError::SupabaseKeyMissing("service_role"))?;
    env.put("NEXT_PUBLIC_SUPABASE_URL", api.url.clone(), "plain");
    env.put("NEXT_PUBLIC_SUPABASE_ANON_KEY", anon.expose().to_string(), "plain");
    env.put("SUPABASE_SERVICE_ROLE_KEY", service.expose().to_string(), "sensitive");
    env.put("AGENCY_NAME", pass.ti.spec.profile.display_name.clone(), "plain");
    Ok(true)
}

/// The Tenant's extra variables (Secret values read from its namespace).
async fn extra_env(pass: &Pass<'_>, extra: &[FrontendEnvVar], env: &mut Env) -> Result<(), EngineError> {
    let secrets: &Api<Secret> = &pass.secrets;
    for e in extra {
        match (&e.value, &e.value_from) {
            (Some(v), _) => env.put(&e.name, v.clone(), "plain"),
            (None, Some(r)) => {
                let missing = || EngineError::EnvSecretMissing {
                    variable: e.name.clone(),
                    secret: r.secret.clone(),
                    key: r.key.clone(),
                };
                let s = secrets.get_opt(&r.secret).await?.ok_or_else(missing)?;
                let v = s.data.as_ref().and_then(|d| d.get(&r.key)).ok_or_else(missing)?;
                env.put(&e.name, String::from_utf8_lossy(&v.0).to_string(), "sensitive");
            }
            (None, None) => {
                return Err(EngineError::InvalidSpec("a frontend variable has neither value nor valueFrom"));
            }
        }
    }
    Ok(())
}

/// The frontend's spec; `None` while a backend it needs is not known yet.
async fn spec(pass: &Pass<'_>) -> Result<Option<VercelFrontendSpec>, EngineError> {
    let c = &pass.ti.spec.stack.components;
    let f = c.frontend.as_ref().ok_or(EngineError::InvalidSpec("no frontend in the spec"))?;
    let (org, repo) =
        f.git_repository.repo.split_once('/').ok_or(EngineError::InvalidSpec("frontend repo is not org/repo"))?;
    if !org_allowed(&pass.engine.args.frontend_github_orgs, org) {
        return Err(EngineError::RepositoryNotAllowed { repo: f.git_repository.repo.clone(), org: org.into() });
    }
    let mut env = Env::default();
    if c.compute.is_some() {
        let creds = pass.credentials.as_ref().ok_or(EngineError::MissingInput("credentials step did not run"))?;
        if let Some(url) = &pass.service_url {
            env.put("NEXT_PUBLIC_AGENT_URL", url.clone(), "encrypted");
        }
        env.put("AGENT_GATEWAY_TOKEN", creds.gateway_token.clone(), "encrypted");
    }
    if super::wanted::on_supabase(&pass.ti.spec) && !supabase_env(pass, &mut env)? {
        return Ok(None);
    }
    extra_env(pass, &f.env, &mut env).await?;
    Ok(Some(VercelFrontendSpec {
        marker: pass.marker.clone(),
        framework: f.framework.clone(),
        git: GitSource {
            provider: "github".into(),
            org: org.into(),
            repo: repo.into(),
            git_ref: f.git_repository.git_ref.clone().unwrap_or_else(|| "main".into()),
        },
        env: env.values,
        kinds: env.kinds,
    }))
}

/// Whether `org` is on the operator's list (GitHub names are case-insensitive).
fn org_allowed(allowed: &[String], org: &str) -> bool {
    allowed.iter().any(|a| a.trim().eq_ignore_ascii_case(org))
}

/// Converges the frontend; a failed deployment is redeployed. A repository
/// of an organisation not on `--frontend-github-org` is refused before any
/// Vercel call.
///
/// # Errors
/// See [`EngineError`].
pub async fn run(pass: &mut Pass<'_>) -> Result<StepResult, EngineError> {
    let Some(spec) = spec(pass).await? else {
        return Ok(StepResult::Waiting("frontend: waiting for the Supabase project's API".into()));
    };
    let res = VercelFrontends(pass.engine.providers.vercel.clone());
    match pass.converge(&res, &spec, Object::VercelProject).await? {
        Converged::Waiting { message, .. } => Ok(StepResult::Waiting(format!("frontend: {message}"))),
        Converged::Ready { id, observed } => {
            let ids = pass.rec.status.external.get_or_insert_default().vercel.get_or_insert_default();
            ids.deployment_id = observed.deployment.as_ref().map(|d| d.id.clone());
            pass.rec.status.urls.get_or_insert_default().frontend.clone_from(&observed.url);
            Ok(StepResult::Done(format!("Vercel project {id} live at {}", observed.url.unwrap_or_default())))
        }
    }
}

/// Deletes the frontend (by id, then by marker); `true` when gone.
///
/// # Errors
/// Platform failures.
pub async fn remove(engine: &Engine, marker: &Marker, ids: Option<&VercelIds>) -> Result<bool, EngineError> {
    let res = VercelFrontends(engine.providers.vercel.clone());
    let spec = VercelFrontendSpec {
        marker: marker.clone(),
        framework: None,
        git: GitSource { provider: "github".into(), org: String::new(), repo: String::new(), git_ref: String::new() },
        env: BTreeMap::new(),
        kinds: BTreeMap::new(),
    };
    let known = ids.and_then(|v| v.project_id.as_deref());
    super::teardown::remove(&res, &spec, known, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_organisations_are_allowed() {
        let allowed = vec!["Bella-Bistro".to_string(), " storm ".to_string()];
        assert!(org_allowed(&allowed, "bella-bistro") && org_allowed(&allowed, "storm"));
        assert!(!org_allowed(&allowed, "operator-private") && !org_allowed(&allowed, "bella"));
        assert!(!org_allowed(&[], "bella-bistro"), "an empty list refuses every repository");
    }
}
