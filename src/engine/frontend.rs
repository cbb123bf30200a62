//! The `frontend` step on Vercel: one project per instance (named after the
//! marker) built from the Tenant's git repository, with the agent's URL and
//! gateway token as environment, polled until READY with its alias.
use std::collections::BTreeMap;

use super::external::{Converged, Object};
use super::steps::{Pass, StepResult};
use super::{Engine, EngineError};
use crate::api::tenant_instance::VercelIds;
use crate::providers::Marker;
use crate::providers::vercel::GitSource;
use crate::providers::vercel::resources::{VercelFrontendSpec, VercelFrontends};

fn spec(pass: &Pass<'_>) -> Result<VercelFrontendSpec, EngineError> {
    let f =
        pass.ti.spec.stack.components.frontend.as_ref().ok_or(EngineError::InvalidSpec("no frontend in the spec"))?;
    let (org, repo) =
        f.git_repository.repo.split_once('/').ok_or(EngineError::InvalidSpec("frontend repo is not org/repo"))?;
    if !org_allowed(&pass.engine.args.frontend_github_orgs, org) {
        return Err(EngineError::RepositoryNotAllowed { repo: f.git_repository.repo.clone(), org: org.into() });
    }
    let creds = pass.credentials.as_ref().ok_or(EngineError::MissingInput("credentials step did not run"))?;
    let mut env = BTreeMap::new();
    if let Some(url) = &pass.service_url {
        env.insert("NEXT_PUBLIC_AGENT_URL".to_string(), url.clone());
    }
    env.insert("AGENT_GATEWAY_TOKEN".to_string(), creds.gateway_token.clone());
    Ok(VercelFrontendSpec {
        marker: pass.marker.clone(),
        framework: f.framework.clone(),
        git: GitSource {
            provider: "github".into(),
            org: org.into(),
            repo: repo.into(),
            git_ref: f.git_repository.git_ref.clone().unwrap_or_else(|| "main".into()),
        },
        env,
    })
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
    let spec = spec(pass)?;
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
