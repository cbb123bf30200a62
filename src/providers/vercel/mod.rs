//! Vercel REST API client: projects, bulk environment variables (with
//! their partial-failure answers), deployments from a git source polled to
//! READY with the alias assigned, and deletes. Every call carries the
//! optional `teamId` scope.
//!
//! # Driving it (provisioning engine)
//! [`resources::VercelFrontends`] with a [`resources::VercelFrontendSpec`]
//! (marker, git source, framework, env): observe -> create when `Absent`
//! (project, env in bulk, one production deployment; the operation id is
//! the deployment id) -> while `InProgress` requeue and observe again ->
//! `Ready` carries the project, the deployment and the public URL (its
//! first alias); `up_to_date: false` (env or git source changed) ->
//! `update` (env upsert, then one new deployment) -> `Failed` (build error,
//! canceled, alias error): `update` redeploys. `delete` removes the project
//! with its env and deployments.
pub mod resources;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::PlatformConfig;
use super::error::{ProviderError, not_found_to_none};
use super::http::{Http, decode, segment};
use crate::platform::Platform;

const P: Platform = Platform::Vercel;

/// A project (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VercelProject {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub framework: Option<String>,
}

/// An environment variable as listed (the value is not read back).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VercelEnv {
    pub id: String,
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub target: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// One variable to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvInput {
    pub key: String,
    pub value: String,
    /// `plain | encrypted | sensitive`.
    #[serde(rename = "type")]
    pub kind: String,
    pub target: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A variable Vercel refused inside an otherwise successful bulk answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFailure {
    pub key: String,
    pub code: String,
    pub message: String,
}

/// The git source of a deployment (GitHub form `{type, org, repo, ref}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSource {
    #[serde(rename = "type")]
    pub provider: String,
    pub org: String,
    pub repo: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
}

/// A deployment as `GET /v13/deployments/{id}` reports it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VercelDeployment {
    pub id: String,
    pub url: String,
    /// `QUEUED | BUILDING | ERROR | INITIALIZING | READY | CANCELED`.
    pub ready_state: String,
    #[serde(default)]
    pub alias: Vec<String>,
    /// A boolean, a timestamp or null depending on the API version.
    #[serde(default)]
    pub alias_assigned: Value,
    #[serde(default)]
    pub alias_error: Option<Value>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub checks_conclusion: Option<String>,
    #[serde(default)]
    pub meta: Value,
}

/// How a deployment settles (the Terraform provider's rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentPhase {
    InProgress,
    /// READY with the alias assigned and no alias error.
    Ready,
    Failed(String),
}

impl VercelDeployment {
    /// ERROR / CANCELED, failed checks and alias errors fail; done means
    /// READY with `aliasAssigned` and no `aliasError`, not merely READY.
    #[must_use]
    pub fn phase(&self) -> DeploymentPhase {
        let assigned = match &self.alias_assigned {
            Value::Bool(b) => *b,
            Value::Number(_) => true,
            _ => false,
        };
        if matches!(self.ready_state.as_str(), "ERROR" | "CANCELED") {
            let why = self.error_message.clone().or_else(|| self.error_code.clone()).unwrap_or_default();
            return DeploymentPhase::Failed(format!("deployment {}: {why}", self.ready_state));
        }
        if self.checks_conclusion.as_deref() == Some("failed") {
            return DeploymentPhase::Failed("deployment checks failed".into());
        }
        if let Some(e) = self.alias_error.as_ref().filter(|e| !e.is_null()) {
            return DeploymentPhase::Failed(format!(
                "alias error: {}",
                super::http::error_message(&json!({"error": e}))
            ));
        }
        if self.ready_state == "READY" && assigned { DeploymentPhase::Ready } else { DeploymentPhase::InProgress }
    }
}

/// The Vercel client. Cloning shares the connection pool and budget.
#[derive(Clone, Debug)]
pub struct VercelClient {
    http: Http,
    team_id: Option<String>,
}

/// Decodes a deployment from `GET /v13/deployments/{id}` or from the
/// `/v6/deployments` list, whose items name the id `uid` and the state `state`.
fn deployment_from(mut v: Value) -> Result<VercelDeployment, ProviderError> {
    for (want, old) in [("id", "uid"), ("readyState", "state")] {
        if v.get(want).is_none()
            && let Some(x) = v.get(old).cloned()
        {
            v[want] = x;
        }
    }
    decode(P, v, "deployment")
}

impl VercelClient {
    /// A client for `config` (base URL `https://api.vercel.com`), scoped to
    /// `team_id` when given.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig, team_id: Option<String>) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)?, team_id })
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let mut q: Vec<(&str, String)> = extra.to_vec();
        if let Some(t) = &self.team_id {
            q.push(("teamId", t.clone()));
        }
        Ok(self.http.send(method, path, &q, body, &[]).await?.body)
    }

    /// `POST /v11/projects`.
    ///
    /// # Errors
    /// Any [`ProviderError`] (a taken name is `Invalid` with status 409).
    pub async fn create_project(
        &self,
        name: &str,
        framework: Option<&str>,
        git: Option<&GitSource>,
    ) -> Result<VercelProject, ProviderError> {
        let mut body = json!({"name": name, "framework": framework});
        if let Some(g) = git {
            body["gitRepository"] = json!({"type": g.provider, "repo": format!("{}/{}", g.org, g.repo)});
        }
        decode(P, self.call(Method::POST, "/v11/projects", &[], Some(&body)).await?, "project")
    }

    /// `GET /v10/projects/{idOrName}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_project(&self, id_or_name: &str) -> Result<Option<VercelProject>, ProviderError> {
        let path = format!("/v10/projects/{}", segment(id_or_name));
        not_found_to_none(async { decode(P, self.call(Method::GET, &path, &[], None).await?, "project") }.await)
    }

    /// `DELETE /v9/projects/{idOrName}` (env and deployments go with it);
    /// false when it was already gone.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_project(&self, id_or_name: &str) -> Result<bool, ProviderError> {
        let path = format!("/v9/projects/{}", segment(id_or_name));
        Ok(not_found_to_none(self.call(Method::DELETE, &path, &[], None).await)?.is_some())
    }

    /// `POST /v10/projects/{id}/env?upsert=true` with all `vars` in one
    /// array. Vercel may accept some and refuse others in a 2xx answer: the
    /// refused ones are returned, not raised.
    ///
    /// # Errors
    /// Any [`ProviderError`] for the call as a whole.
    pub async fn upsert_env(&self, project: &str, vars: &[EnvInput]) -> Result<Vec<EnvFailure>, ProviderError> {
        let path = format!("/v10/projects/{}/env", segment(project));
        let body = serde_json::to_value(vars)
            .map_err(|e| ProviderError::Decode { platform: P, message: format!("env body: {e}") })?;
        let reply = self.call(Method::POST, &path, &[("upsert", "true".into())], Some(&body)).await?;
        let failed = reply.get("failed").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(failed
            .iter()
            .map(|f| {
                let e = f.get("error").unwrap_or(f);
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                EnvFailure {
                    key: e.get("envVarKey").or_else(|| e.get("key")).and_then(Value::as_str).unwrap_or_default().into(),
                    code: s("code"),
                    message: s("message"),
                }
            })
            .collect())
    }

    /// `GET /v9/projects/{id}/env`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn list_env(&self, project: &str) -> Result<Vec<VercelEnv>, ProviderError> {
        let path = format!("/v9/projects/{}/env", segment(project));
        decode(P, self.call(Method::GET, &path, &[], None).await?.get("envs").cloned().unwrap_or(json!([])), "envs")
    }

    /// `POST /v13/deployments` from `git` for `project` (`target` e.g.
    /// `production`; `meta` is stored on the deployment and read back).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_deployment(
        &self,
        project: &str,
        git: &GitSource,
        target: Option<&str>,
        meta: &Value,
    ) -> Result<VercelDeployment, ProviderError> {
        let body = json!({"name": project, "project": project, "gitSource": git, "target": target, "meta": meta});
        let q = [("skipAutoDetectionConfirmation", "1".to_string())];
        deployment_from(self.call(Method::POST, "/v13/deployments", &q, Some(&body)).await?)
    }

    /// `GET /v13/deployments/{idOrUrl}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_deployment(&self, id: &str) -> Result<Option<VercelDeployment>, ProviderError> {
        let path = format!("/v13/deployments/{}", segment(id));
        not_found_to_none(async { deployment_from(self.call(Method::GET, &path, &[], None).await?) }.await)
    }

    /// The newest deployment of `project_id` for `target`, if any.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn latest_deployment(
        &self,
        project_id: &str,
        target: &str,
    ) -> Result<Option<VercelDeployment>, ProviderError> {
        let q = [("projectId", project_id.to_string()), ("target", target.to_string()), ("limit", "1".to_string())];
        let body = self.call(Method::GET, "/v6/deployments", &q, None).await?;
        let list: Vec<Value> = decode(P, body.get("deployments").cloned().unwrap_or(json!([])), "deployments")?;
        list.into_iter().next().map(deployment_from).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(state: &str, assigned: Value, alias_error: Value) -> VercelDeployment {
        serde_json::from_value(json!({"id": "dpl_1", "url": "u", "readyState": state, "aliasAssigned": assigned,
            "aliasError": alias_error, "errorMessage": "boom"}))
        .unwrap()
    }

    #[test]
    fn ready_means_alias_assigned_without_alias_error() {
        assert_eq!(d("READY", json!(true), Value::Null).phase(), DeploymentPhase::Ready);
        assert_eq!(d("READY", json!(1_767_225_600_000_u64), Value::Null).phase(), DeploymentPhase::Ready);
        assert_eq!(d("READY", json!(false), Value::Null).phase(), DeploymentPhase::InProgress);
        assert_eq!(d("BUILDING", Value::Null, Value::Null).phase(), DeploymentPhase::InProgress);
        assert!(
            matches!(d("ERROR", Value::Null, Value::Null).phase(), DeploymentPhase::Failed(m) if m.contains("boom"))
        );
        assert!(matches!(d("CANCELED", Value::Null, Value::Null).phase(), DeploymentPhase::Failed(_)));
        let alias_err = json!({"code": "cert_missing", "message": "no cert"});
        assert!(
            matches!(d("READY", json!(true), alias_err).phase(), DeploymentPhase::Failed(m) if m.contains("no cert"))
        );
    }
}
