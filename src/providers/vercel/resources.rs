//! The tenant frontend on Vercel behind the [`ExternalResource`] contract:
//! one project named after the [`Marker`] (Vercel names are unique per
//! scope, so the name is the marker and lookups are never ambiguous), its
//! environment variables and its production deployment.
//!
//! Vercel projects have no description or metadata: the full marker lives
//! in the plain variable [`MARKER_ENV`], created with the project in one
//! call, and a project found by name is adopted or deleted only when that
//! variable holds this instance's marker (the short name is 48 bits of the
//! UID, and a project named by hand carries no marker at all).
//!
//! Env values are write-only in practice (encrypted), so each variable's
//! `comment` carries `winston:sha256:<hash of the value>` and drift is found
//! by comparing hashes. Each deployment's `meta.winstonSpec` carries the hash
//! of the env and git source it was built from.
use std::collections::BTreeMap;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{DeploymentPhase, EnvInput, GitSource, VercelClient, VercelDeployment, VercelProject};
use crate::platform::Platform;
use crate::providers::{
    Applied, Created, ExternalResource, Marker, Observation, ProviderError, find_by_id_or_marker, only_marked,
};

/// The deployment target Winston deploys to.
pub const TARGET: &str = "production";

/// The plain variable holding the instance's full marker (`winston:<uid>`).
pub const MARKER_ENV: &str = "WINSTON_MARKER";

/// The frontend of one instance.
#[derive(Clone, Debug)]
pub struct VercelFrontendSpec {
    pub marker: Marker,
    /// e.g. `nextjs`; `None` lets Vercel detect it.
    pub framework: Option<String>,
    pub git: GitSource,
    /// Variables for the production and preview targets.
    pub env: BTreeMap<String, String>,
    /// The Vercel type of a variable of `env`: `plain` (readable, e.g. a
    /// public URL) or `sensitive` (write-only, never readable again);
    /// `encrypted` for a variable not listed.
    pub kinds: BTreeMap<String, &'static str>,
}

impl VercelFrontendSpec {
    fn value_hash(value: &str) -> String {
        format!("winston:sha256:{}", hex::encode(Sha256::digest(value.as_bytes())))
    }

    /// The type of variable `key`.
    fn kind(&self, key: &str) -> &'static str {
        self.kinds.get(key).copied().unwrap_or("encrypted")
    }

    /// The comment that identifies what was written: the value's hash, and
    /// for a type other than `encrypted` the type too, so a changed type
    /// is rewritten like a changed value.
    fn comment(&self, key: &str, value: &str) -> String {
        match self.kind(key) {
            "encrypted" => Self::value_hash(value),
            kind => Self::value_hash(&format!("{kind}:{value}")),
        }
    }

    /// The hash of everything a deployment is built from.
    #[must_use]
    pub fn spec_hash(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.env {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        for part in [&self.git.provider, &self.git.org, &self.git.repo, &self.git.git_ref] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// [`MARKER_ENV`]: plain, so its value is listed back and verified.
    fn marker_input(&self) -> EnvInput {
        EnvInput {
            key: MARKER_ENV.into(),
            value: self.marker.value(),
            kind: "plain".into(),
            target: vec!["production".into(), "preview".into()],
            comment: None,
        }
    }

    fn env_inputs(&self) -> Vec<EnvInput> {
        self.env
            .iter()
            .map(|(k, v)| EnvInput {
                key: k.clone(),
                value: v.clone(),
                kind: self.kind(k).into(),
                target: vec!["production".into(), "preview".into()],
                comment: Some(self.comment(k, v)),
            })
            .collect()
    }
}

/// What a frontend observation reports.
#[derive(Clone, Debug, PartialEq)]
pub struct VercelFrontendState {
    pub project: VercelProject,
    /// The newest production deployment, as `GET /v13/deployments/{id}`
    /// reports it (list items carry no aliases).
    pub deployment: Option<VercelDeployment>,
    /// `https://<first alias>` once READY with the alias assigned and listed.
    pub url: Option<String>,
}

/// [`ExternalResource`] for [`VercelFrontendSpec`].
#[derive(Clone, Debug)]
pub struct VercelFrontends(pub VercelClient);

impl VercelFrontends {
    async fn env_current(&self, project_id: &str, spec: &VercelFrontendSpec) -> Result<bool, ProviderError> {
        let listed = self.0.list_env(project_id).await?;
        Ok(spec.env.iter().all(|(k, v)| {
            let want = spec.comment(k, v);
            listed.iter().any(|e| &e.key == k && e.comment.as_deref() == Some(want.as_str()))
        }))
    }

    /// Whether the project's [`MARKER_ENV`] holds exactly `marker`.
    async fn carries_marker(&self, project_id: &str, marker: &Marker) -> Result<bool, ProviderError> {
        let listed = self.0.list_env(project_id).await?;
        Ok(listed.iter().any(|e| e.key == MARKER_ENV && e.value.as_deref().is_some_and(|v| marker.is_in(v))))
    }

    async fn write_env(&self, project_id: &str, spec: &VercelFrontendSpec) -> Result<(), ProviderError> {
        let failed = self.0.upsert_env(project_id, &spec.env_inputs()).await?;
        if failed.is_empty() {
            return Ok(());
        }
        let message = failed.iter().map(|f| format!("{} ({}): {}", f.key, f.code, f.message)).collect::<Vec<_>>();
        Err(ProviderError::Invalid {
            platform: Platform::Vercel,
            status: 400,
            message: format!("environment variables refused: {}", message.join("; ")),
        })
    }

    async fn deploy(&self, project: &VercelProject, spec: &VercelFrontendSpec) -> Result<String, ProviderError> {
        let meta = json!({"winstonUid": spec.marker.uid(), "winstonSpec": spec.spec_hash()});
        Ok(self.0.create_deployment(&project.name, &spec.git, Some(TARGET), &meta).await?.id)
    }
}

impl ExternalResource for VercelFrontends {
    type Spec = VercelFrontendSpec;
    type Observed = VercelFrontendState;

    async fn observe(
        &self,
        spec: &VercelFrontendSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<VercelFrontendState>, ProviderError> {
        // Vercel names are unique per scope: the marker lookup is one read
        // by name, and one env listing to verify the full marker.
        let by_id = |id| self.0.get_project(id);
        let by_marker = async {
            let Some(named) = self.0.get_project(&spec.marker.name()).await? else { return Ok(Vec::new()) };
            let marked = self.carries_marker(&named.id, &spec.marker).await?;
            Ok(only_marked(Platform::Vercel, &spec.marker, vec![named], |p| &p.id, |_| marked))
        };
        let project = match find_by_id_or_marker(known_id, by_id, by_marker, |p: &VercelProject| &p.id).await? {
            Ok(project) => project,
            Err(settled) => return Ok(settled),
        };
        let id = project.id.clone();
        let deployment = self.0.latest_deployment(&id, TARGET).await?;
        match deployment.as_ref().map(VercelDeployment::phase) {
            Some(DeploymentPhase::InProgress) => {
                let operation_id = deployment.map(|d| d.id).unwrap_or_default();
                return Ok(Observation::InProgress { id, operation_id });
            }
            Some(DeploymentPhase::Failed(reason)) => return Ok(Observation::Failed { id, reason }),
            Some(DeploymentPhase::Ready) | None => {}
        }
        let built_from_spec = deployment
            .as_ref()
            .is_some_and(|d| d.meta.get("winstonSpec").and_then(|v| v.as_str()) == Some(spec.spec_hash().as_str()));
        let up_to_date = built_from_spec && self.env_current(&id, spec).await?;
        let url = deployment.as_ref().and_then(|d| d.alias.first()).map(|a| format!("https://{a}"));
        Ok(Observation::Ready { id, observed: VercelFrontendState { project, deployment, url }, up_to_date })
    }

    /// Creates the project linked to the git repository, writes every
    /// variable in one bulk upsert, and starts the production deployment
    /// (the operation id). Refused variables fail the call with their
    /// messages; the project then exists and `update` finishes it.
    async fn create(&self, spec: &VercelFrontendSpec) -> Result<Created, ProviderError> {
        let marker = [spec.marker_input()];
        let project =
            self.0.create_project(&spec.marker.name(), spec.framework.as_deref(), Some(&spec.git), &marker).await?;
        self.write_env(&project.id, spec).await?;
        let deployment = self.deploy(&project, spec).await?;
        Ok(Created { id: project.id, operation_id: Some(deployment) })
    }

    /// Upserts changed variables, then deploys once when variables were
    /// rewritten or the newest deployment was not built from this spec or failed.
    async fn update(&self, id: &str, spec: &VercelFrontendSpec) -> Result<Applied, ProviderError> {
        let Some(project) = self.0.get_project(id).await? else {
            return Err(ProviderError::NotFound { platform: Platform::Vercel, message: format!("project {id}") });
        };
        let env_stale = !self.env_current(id, spec).await?;
        if env_stale {
            self.write_env(id, spec).await?;
        }
        let last = self.0.latest_deployment(id, TARGET).await?;
        let current = last.as_ref().is_some_and(|d| {
            !matches!(d.phase(), DeploymentPhase::Failed(_))
                && d.meta.get("winstonSpec").and_then(|v| v.as_str()) == Some(spec.spec_hash().as_str())
        });
        // Rewritten variables only reach the site through a new build.
        if current && !env_stale {
            return Ok(Applied::Done);
        }
        Ok(Applied::InProgress { operation_id: self.deploy(&project, spec).await? })
    }

    async fn delete(&self, id: &str, _spec: &VercelFrontendSpec) -> Result<Applied, ProviderError> {
        self.0.delete_project(id).await?;
        Ok(Applied::Done)
    }
}
