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
//! canceled, blocked, deleted, alias error): `update` redeploys. `delete`
//! removes the project with its env and deployments.
//!
//! # Wire facts this client relies on (Vercel SDK models, `@vercel/sdk`)
//! - `GET /v6/deployments` items (`operations.Deployments`) carry `uid`,
//!   `state` / `readyState` and `aliasAssigned` but **no `alias`**: the
//!   frontend URL is read from `GET /v13/deployments/{id}` only
//!   ([`VercelClient::latest_deployment`] lists, then reads the one found).
//! - List states (`GetDeploymentsState`): `BUILDING | ERROR | INITIALIZING |
//!   QUEUED | READY | CANCELED | DELETED`; `BLOCKED` is reported too (a
//!   deployment refused before building, e.g. by git author protection).
//! - `GET /v9/projects/{id}/env` answers `{envs, pagination: {count, next,
//!   prev}}` (`FilterProjectEnvsResponseBody2`); the next page is asked with
//!   `until=<pagination.next>`, the last page has `next: null`. Each
//!   variable's `target` is an array **or a single string**
//!   (`FilterProjectEnvsTarget1` is one of `production | preview |
//!   development`).
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
    /// Vercel answers an array or, for one target, a single string
    /// (`FilterProjectEnvsTarget1`); both decode to a list.
    #[serde(default, deserialize_with = "string_or_list")]
    pub target: Vec<String>,
    #[serde(default)]
    pub comment: Option<String>,
    /// In clear for `plain` variables only (ciphertext or empty otherwise).
    #[serde(default)]
    pub value: Option<String>,
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        None(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(ts) => ts,
        OneOrMany::None(()) => Vec::new(),
    })
}

/// The most env pages read in one listing (a loop guard: Vercel's cursor
/// always moves, a broken one must not spin forever).
const MAX_ENV_PAGES: usize = 200;

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
    /// `QUEUED | INITIALIZING | BUILDING | READY` on the way, `ERROR |
    /// CANCELED | BLOCKED | DELETED` when it ended without serving.
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
    /// READY with the alias assigned and listed, and no alias error.
    Ready,
    Failed(String),
}

/// The `readyState` values a deployment ends in without serving: terminal,
/// so a new deployment is needed. `BLOCKED` never builds, `CANCELED` was
/// stopped, `DELETED` was removed (by hand or by retention).
pub const FAILED_STATES: [&str; 4] = ["ERROR", "CANCELED", "BLOCKED", "DELETED"];

impl VercelDeployment {
    /// ERROR / CANCELED / BLOCKED / DELETED, failed checks and alias errors
    /// fail; done means READY with `aliasAssigned`, no `aliasError` and the
    /// alias listed (Vercel may report READY a moment before the alias is
    /// assigned), not merely READY. QUEUED, INITIALIZING, BUILDING and any
    /// state Vercel adds later are in progress.
    #[must_use]
    pub fn phase(&self) -> DeploymentPhase {
        let assigned = match &self.alias_assigned {
            Value::Bool(b) => *b,
            Value::Number(_) => true,
            _ => false,
        };
        if FAILED_STATES.contains(&self.ready_state.as_str()) {
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
        if self.ready_state == "READY" && assigned && !self.alias.is_empty() {
            DeploymentPhase::Ready
        } else {
            DeploymentPhase::InProgress
        }
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
    // A deployment still uploading has no URL yet.
    if v.get("url").is_some_and(Value::is_null) {
        v["url"] = json!("");
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

    /// `POST /v11/projects`, with `environment` created in the same call
    /// (`environmentVariables`: key, value, type and target; Vercel's create
    /// body has no comment), so a project never exists without them.
    ///
    /// # Errors
    /// Any [`ProviderError`] (a taken name is `Invalid` with status 409).
    pub async fn create_project(
        &self,
        name: &str,
        framework: Option<&str>,
        git: Option<&GitSource>,
        environment: &[EnvInput],
    ) -> Result<VercelProject, ProviderError> {
        let mut body = json!({"name": name, "framework": framework});
        if let Some(g) = git {
            body["gitRepository"] = json!({"type": g.provider, "repo": format!("{}/{}", g.org, g.repo)});
        }
        if !environment.is_empty() {
            let vars: Vec<Value> = environment
                .iter()
                .map(|e| json!({"key": e.key, "value": e.value, "type": e.kind, "target": e.target}))
                .collect();
            body["environmentVariables"] = Value::Array(vars);
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

    /// `GET /v9/projects/{id}/env`, every page: follows `pagination.next`
    /// (as `until`) until it is null, so a project with many variables is
    /// seen whole.
    ///
    /// # Errors
    /// Any [`ProviderError`]; `Decode` when the cursor never ends.
    pub async fn list_env(&self, project: &str) -> Result<Vec<VercelEnv>, ProviderError> {
        let path = format!("/v9/projects/{}/env", segment(project));
        let mut all = Vec::new();
        let mut until: Option<String> = None;
        for _ in 0..MAX_ENV_PAGES {
            let q: Vec<(&str, String)> = until.iter().map(|u| ("until", u.clone())).collect();
            let body = self.call(Method::GET, &path, &q, None).await?;
            let page: Vec<VercelEnv> = decode(P, body.get("envs").cloned().unwrap_or(json!([])), "envs")?;
            all.extend(page);
            let next = match body.pointer("/pagination/next") {
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            };
            if next.is_none() || next == until {
                return Ok(all);
            }
            until = next;
        }
        Err(ProviderError::Decode {
            platform: P,
            message: format!("env list of {project}: more than {MAX_ENV_PAGES} pages"),
        })
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

    /// The newest deployment of `project_id` for `target`, if any, as
    /// `GET /v13/deployments/{id}` reports it: the `/v6/deployments` list
    /// only names it (`uid`), its items carry no `alias`.
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
        let Some(item) = list.into_iter().next() else { return Ok(None) };
        let listed = deployment_from(item)?;
        // Gone between the two reads (deleted): report what the list said.
        Ok(Some(self.get_deployment(&listed.id).await?.unwrap_or(listed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(state: &str, assigned: Value, alias_error: Value) -> VercelDeployment {
        serde_json::from_value(json!({"id": "dpl_1", "url": "u", "readyState": state, "aliasAssigned": assigned,
            "aliasError": alias_error, "errorMessage": "boom", "alias": ["site.vercel.app"]}))
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

    #[test]
    fn every_readystate_has_its_phase() {
        for (state, failed) in [
            ("QUEUED", false),
            ("INITIALIZING", false),
            ("BUILDING", false),
            ("ERROR", true),
            ("CANCELED", true),
            ("BLOCKED", true),
            ("DELETED", true),
        ] {
            let phase = d(state, Value::Null, Value::Null).phase();
            assert_eq!(matches!(phase, DeploymentPhase::Failed(ref m) if m.contains(state)), failed, "{state}");
            assert_eq!(phase == DeploymentPhase::InProgress, !failed, "{state}");
        }
    }

    #[test]
    fn ready_without_its_alias_yet_is_in_progress() {
        let mut ready = d("READY", json!(true), Value::Null);
        ready.alias.clear();
        assert_eq!(ready.phase(), DeploymentPhase::InProgress);
    }

    #[test]
    fn list_items_decode_from_uid_and_state() {
        let item = json!({"uid": "dpl_9", "name": "n", "url": null, "state": "BLOCKED", "type": "LAMBDAS",
            "creator": {"uid": "u"}, "inspectorUrl": "https://vercel.com/x", "aliasAssigned": null});
        let dep = deployment_from(item).unwrap();
        assert_eq!((dep.id.as_str(), dep.ready_state.as_str(), dep.alias.len()), ("dpl_9", "BLOCKED", 0));
    }

    #[test]
    fn env_target_is_a_list_or_one_string() {
        let envs: Vec<VercelEnv> = serde_json::from_value(json!([
            {"id": "1", "key": "A", "type": "plain", "target": ["production", "preview"]},
            {"id": "2", "key": "B", "type": "plain", "target": "development"},
            {"id": "3", "key": "C", "type": "plain", "target": null},
            {"id": "4", "key": "D", "type": "plain"},
        ]))
        .unwrap();
        let targets: Vec<&[String]> = envs.iter().map(|e| e.target.as_slice()).collect();
        assert_eq!(targets[0], ["production", "preview"]);
        assert_eq!(targets[1], ["development"]);
        assert!(targets[2].is_empty() && targets[3].is_empty());
    }
}
