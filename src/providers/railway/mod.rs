//! Railway public GraphQL API client: projects and environments, services
//! from an image with variables, bulk variable upserts (`skipDeploys`),
//! deployments (`serviceInstanceDeployV2` + `deployment(id)` polling),
//! service domains and deletes.
//!
//! Railway answers resolver, validation and auth failures as HTTP 200 with
//! GraphQL `errors[]`; [`RailwayClient::gql`] turns those into the same
//! typed [`ProviderError`]s the REST platforms produce ("Not Authorized"
//! with a working token is `Forbidden`: another workspace's object).
//! Projects are created in and searched from one workspace
//! ([`RailwayClient::workspace`]). A 429 with a
//! non-JSON body (Railway's edge) is tolerated by the HTTP layer.
//!
//! # Driving it (provisioning engine)
//! 1. [`resources::RailwayProjects`] with a [`resources::RailwayProjectSpec`]
//!    (marker): observe -> create when `Absent`. `Ready` carries the project
//!    id and the id of its `production` environment.
//! 2. [`resources::RailwayServices`] with a [`resources::RailwayServiceSpec`]
//!    (project + environment ids from step 1, marker, image, variables,
//!    port): observe -> create when `Absent` (creates the service with every
//!    variable and generates the domain; Railway deploys it by itself) ->
//!    while `InProgress` requeue and observe again (the operation id is the
//!    deployment id, or the wait for Railway's first deployment) ->
//!    `Ready` carries the service id, the deployment and the public URL;
//!    `up_to_date: false` -> `update` (variables with `skipDeploys`, image,
//!    missing domain, then one redeploy) -> `Failed` with the deployment's
//!    status: `update` redeploys.
//! 3. `delete` the service, then the project.
pub mod resources;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::PlatformConfig;
use super::error::{ProviderError, not_found_to_none};
use super::http::{Http, decode};
use crate::platform::Platform;

const P: Platform = Platform::Railway;

/// A Railway project with its environments.
#[derive(Clone, Debug, PartialEq)]
pub struct RailwayProject {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub environments: Vec<RailwayEnvironment>,
}

/// An environment of a project.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RailwayEnvironment {
    pub id: String,
    pub name: String,
}

/// A service (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RailwayService {
    pub id: String,
    pub name: String,
    pub project_id: String,
    /// RFC 3339; read by the snapshot (a new service's first deployment
    /// is Railway's own, see [`resources::FIRST_DEPLOY_GRACE`]).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A deployment as `deployment(id)` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RailwayDeployment {
    pub id: String,
    /// `DeploymentStatus`: BUILDING, CRASHED, DEPLOYING, FAILED, INITIALIZING,
    /// NEEDS_APPROVAL, QUEUED, REMOVED, REMOVING, SKIPPED, SLEEPING, SUCCESS, WAITING.
    pub status: String,
    #[serde(default)]
    pub url: Option<String>,
    pub service_id: String,
    pub environment_id: String,
}

/// How a deployment status settles (the classification is ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeploymentPhase {
    InProgress,
    Succeeded,
    Failed,
}

impl RailwayDeployment {
    /// SUCCESS and SLEEPING succeeded; FAILED, CRASHED, REMOVED and SKIPPED
    /// failed; everything else (including NEEDS_APPROVAL and unknown new
    /// values) is still in progress.
    #[must_use]
    pub fn phase(&self) -> DeploymentPhase {
        match self.status.as_str() {
            "SUCCESS" | "SLEEPING" => DeploymentPhase::Succeeded,
            "FAILED" | "CRASHED" | "REMOVED" | "SKIPPED" => DeploymentPhase::Failed,
            _ => DeploymentPhase::InProgress,
        }
    }
}

/// A generated `*.up.railway.app` domain.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RailwayDomain {
    pub id: String,
    pub domain: String,
    #[serde(default)]
    pub target_port: Option<i64>,
}

/// Everything an observation of one service needs, read in ONE request
/// (Railway's hourly budget is small).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSnapshot {
    pub service: RailwayService,
    /// The image of the service's instance in the environment.
    pub image: Option<String>,
    /// The newest deployment in the environment.
    pub deployment: Option<RailwayDeployment>,
    pub domains: Vec<RailwayDomain>,
    pub variables: BTreeMap<String, String>,
}

/// The Railway client. Cloning shares the connection pool, the budget and
/// the workspace once discovered.
#[derive(Clone, Debug)]
pub struct RailwayClient {
    http: Http,
    /// Where projects are created and listed: configured, or discovered.
    workspace_id: Arc<Mutex<Option<String>>>,
}

fn nodes(connection: &Value) -> Vec<Value> {
    connection
        .get("edges")
        .and_then(Value::as_array)
        .map(|edges| edges.iter().filter_map(|e| e.get("node").cloned()).collect())
        .unwrap_or_default()
}

/// Classifies a GraphQL error (answered with HTTP 200). Railway gives no
/// stable codes, so the message decides: auth messages are `Unauthorized`
/// (reported as 401), "not found" is `NotFound`, rate-limit wording is
/// `RateLimited`, internal failures are `Server` (500), anything else is a
/// terminal `Invalid` (400).
#[must_use]
pub fn classify_graphql_error(message: &str) -> ProviderError {
    let m = message.to_ascii_lowercase();
    let message = message.to_string();
    if m.contains("not authorized")
        || m.contains("unauthorized")
        || m.contains("two factor authentication")
        || m.contains("project token not found")
    {
        ProviderError::Unauthorized { platform: P, status: 401, message }
    } else if m.contains("not found") {
        ProviderError::NotFound { platform: P, message }
    } else if m.contains("rate limit") || m.contains("too many requests") {
        ProviderError::RateLimited { platform: P, retry_after: None, message }
    } else if m.contains("internal") || m.contains("problem processing request") {
        ProviderError::Server { platform: P, status: 500, message }
    } else {
        ProviderError::Invalid { platform: P, status: 400, message }
    }
}

const PROJECT_FIELDS: &str = "id name description environments { edges { node { id name } } }";

fn project_from(v: Value) -> Result<RailwayProject, ProviderError> {
    let environments =
        nodes(&v["environments"]).into_iter().map(|e| decode(P, e, "environment")).collect::<Result<_, _>>()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(RailwayProject {
        id: s("id").ok_or_else(|| ProviderError::Decode { platform: P, message: "project without id".into() })?,
        name: s("name").unwrap_or_default(),
        description: s("description"),
        environments,
    })
}

impl RailwayClient {
    /// A client for `config` (base URL = the full GraphQL endpoint);
    /// `workspace_id` scopes new projects and project listings.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig, workspace_id: Option<String>) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)?, workspace_id: Arc::new(Mutex::new(workspace_id)) })
    }

    /// The workspace projects are created in and listed from: the
    /// configured one, else the only workspace of the token's user
    /// (`me { workspaces { id } }`), remembered. Both calls need it: a
    /// project created without `workspaceId` lands in a workspace, while
    /// `projects` without it lists personal projects only, so a search by
    /// marker would miss a project whose creation answer was lost.
    ///
    /// # Errors
    /// [`ProviderError::Invalid`] when the user has no or several
    /// workspaces (set `WINSTON_RAILWAY_WORKSPACE_ID`); any other error.
    pub async fn workspace(&self) -> Result<String, ProviderError> {
        if let Some(w) = self.workspace_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(w);
        }
        let data = match self.gql("query me { me { workspaces { id name } } }", json!({})).await {
            // A workspace token cannot read `me`: it must be told its workspace.
            Err(ProviderError::Unauthorized { status, message, .. }) => {
                let message = format!("{message} (a workspace token needs WINSTON_RAILWAY_WORKSPACE_ID)");
                return Err(ProviderError::Unauthorized { platform: P, status, message });
            }
            other => other?,
        };
        let ids: Vec<&str> = data
            .pointer("/me/workspaces")
            .and_then(Value::as_array)
            .map(|ws| ws.iter().filter_map(|w| w["id"].as_str()).collect())
            .unwrap_or_default();
        let [id] = ids.as_slice() else {
            return Err(ProviderError::Invalid {
                platform: P,
                status: 400,
                message: format!(
                    "the token's user belongs to {} workspaces; set WINSTON_RAILWAY_WORKSPACE_ID",
                    ids.len()
                ),
            });
        };
        let id = (*id).to_string();
        *self.workspace_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id.clone());
        Ok(id)
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// Runs one GraphQL operation and returns its `data`.
    ///
    /// # Errors
    /// HTTP-level failures as usual; GraphQL `errors[]` classified by
    /// [`classify_graphql_error`]; `data: null` without errors is `Decode`.
    pub async fn gql(&self, query: &str, variables: Value) -> Result<Value, ProviderError> {
        match self.gql_once(query, variables).await {
            Err(ProviderError::Unauthorized { message, .. }) if self.token_works().await => {
                Err(ProviderError::Forbidden { platform: P, message })
            }
            other => other,
        }
    }

    /// One GraphQL request, errors classified by [`classify_graphql_error`].
    async fn gql_once(&self, query: &str, variables: Value) -> Result<Value, ProviderError> {
        let body = json!({"query": query, "variables": variables});
        let reply = self.http.send(Method::POST, "", &[], Some(&body), &[]).await?.body;
        if let Some(first) = reply.get("errors").and_then(Value::as_array).and_then(|e| e.first()) {
            let message = first.get("message").and_then(Value::as_str).unwrap_or("unknown GraphQL error");
            return Err(classify_graphql_error(message));
        }
        match reply.get("data") {
            Some(d) if !d.is_null() => Ok(d.clone()),
            _ => Err(ProviderError::Decode { platform: P, message: "GraphQL answer without data".into() }),
        }
    }

    /// Railway answers "Not Authorized" both to a rejected token and to a
    /// valid one asking for a resource outside its reach (another
    /// workspace's project). One probe tells them apart: the token can list
    /// its own workspace (or, with none known yet, read `me`).
    async fn token_works(&self) -> bool {
        let known = self.workspace_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let probe = match known {
            Some(w) => {
                let q = "query probe($workspaceId: String) { projects(workspaceId: $workspaceId, first: 1) { edges { node { id } } } }";
                self.gql_once(q, json!({"workspaceId": w})).await
            }
            None => self.gql_once("query probe { me { id } }", json!({})).await,
        };
        probe.is_ok()
    }

    /// `projectCreate`: a project with its default `production` environment.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_project(&self, name: &str, description: &str) -> Result<RailwayProject, ProviderError> {
        let q = format!(
            "mutation projectCreate($input: ProjectCreateInput!) {{ projectCreate(input: $input) {{ {PROJECT_FIELDS} }} }}"
        );
        let input = json!({"name": name, "description": description, "defaultEnvironmentName": "production",
            "workspaceId": self.workspace().await?});
        let mut data = self.gql(&q, json!({"input": input})).await?;
        project_from(data["projectCreate"].take())
    }

    /// `project(id)`; `None` when it does not exist.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_project(&self, id: &str) -> Result<Option<RailwayProject>, ProviderError> {
        let q = format!("query project($id: String!) {{ project(id: $id) {{ {PROJECT_FIELDS} }} }}");
        not_found_to_none(async { project_from(self.gql(&q, json!({"id": id})).await?["project"].take()) }.await)
    }

    /// Every project of the [`RailwayClient::workspace`] named exactly
    /// `name` (all pages of `projects(workspaceId:)`).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn find_projects(&self, name: &str) -> Result<Vec<RailwayProject>, ProviderError> {
        let workspace = self.workspace().await?;
        let q = format!(
            "query projects($workspaceId: String, $after: String) {{ projects(workspaceId: $workspaceId, first: 100, after: $after) {{ edges {{ node {{ {PROJECT_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        );
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // Cursor pagination, not a retry: each turn reads the next page and
        // the loop ends on the last one; a failed page fails the whole call
        // (retrying is the caller's requeue).
        loop {
            let data = self.gql(&q, json!({"workspaceId": workspace, "after": after})).await?;
            let conn = &data["projects"];
            for node in nodes(conn) {
                let p = project_from(node)?;
                if p.name == name {
                    out.push(p);
                }
            }
            let next = conn.pointer("/pageInfo/endCursor").and_then(Value::as_str).map(str::to_string);
            if !conn.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool).unwrap_or(false)
                || next.is_none()
                || next == after
            {
                return Ok(out);
            }
            after = next;
        }
    }

    /// `projectDelete`; false when it was already gone.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_project(&self, id: &str) -> Result<bool, ProviderError> {
        let q = "mutation projectDelete($id: String!) { projectDelete(id: $id) }";
        Ok(not_found_to_none(self.gql(q, json!({"id": id})).await)?.is_some())
    }

    /// `environmentCreate`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_environment(&self, project: &str, name: &str) -> Result<RailwayEnvironment, ProviderError> {
        let q = "mutation environmentCreate($input: EnvironmentCreateInput!) { environmentCreate(input: $input) { id name } }";
        let mut data = self.gql(q, json!({"input": {"projectId": project, "name": name}})).await?;
        decode(P, data["environmentCreate"].take(), "environment")
    }

    /// `environments(projectId)`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn environments(&self, project: &str) -> Result<Vec<RailwayEnvironment>, ProviderError> {
        let q = "query environments($projectId: String!) { environments(projectId: $projectId) { edges { node { id name } } } }";
        let data = self.gql(q, json!({"projectId": project})).await?;
        nodes(&data["environments"]).into_iter().map(|e| decode(P, e, "environment")).collect()
    }

    /// `serviceCreate` from `image` with every variable set at creation, so
    /// the first build already has them.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_service(
        &self,
        project: &str,
        environment: &str,
        name: &str,
        image: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<RailwayService, ProviderError> {
        let q = "mutation serviceCreate($input: ServiceCreateInput!) { serviceCreate(input: $input) { id name projectId } }";
        let input = json!({"projectId": project, "environmentId": environment, "name": name,
            "source": {"image": image}, "variables": variables});
        let mut data = self.gql(q, json!({"input": input})).await?;
        decode(P, data["serviceCreate"].take(), "service")
    }

    /// `service(id)`; `None` when it does not exist.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_service(&self, id: &str) -> Result<Option<RailwayService>, ProviderError> {
        let q = "query service($id: String!) { service(id: $id) { id name projectId } }";
        not_found_to_none(async { decode(P, self.gql(q, json!({"id": id})).await?["service"].take(), "service") }.await)
    }

    /// The services of `project` named exactly `name`.
    ///
    /// # Errors
    /// Any [`ProviderError`] (a missing project is `NotFound`).
    pub async fn find_services(&self, project: &str, name: &str) -> Result<Vec<RailwayService>, ProviderError> {
        let q =
            "query project($id: String!) { project(id: $id) { services { edges { node { id name projectId } } } } }";
        let data = self.gql(q, json!({"id": project})).await?;
        let all: Vec<RailwayService> = nodes(&data["project"]["services"])
            .into_iter()
            .map(|s| decode(P, s, "service"))
            .collect::<Result<_, _>>()?;
        Ok(all.into_iter().filter(|s| s.name == name).collect())
    }

    /// The image the service's instance in `environment` runs, if any.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn service_image(&self, service: &str, environment: &str) -> Result<Option<String>, ProviderError> {
        let q = "query service($id: String!) { service(id: $id) { serviceInstances { edges { node { environmentId source { image } } } } } }";
        let data = self.gql(q, json!({"id": service})).await?;
        Ok(nodes(&data["service"]["serviceInstances"])
            .into_iter()
            .find(|i| i["environmentId"].as_str() == Some(environment))
            .and_then(|i| i.pointer("/source/image").and_then(Value::as_str).map(str::to_string)))
    }

    /// The service, its image, newest deployment, domains and variables in
    /// `environment`, as one GraphQL request; `None` when the service does
    /// not exist.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn service_snapshot(
        &self,
        project: &str,
        environment: &str,
        service: &str,
    ) -> Result<Option<ServiceSnapshot>, ProviderError> {
        let q = "query snapshot($id: String!, $projectId: String!, $environmentId: String!, $input: DeploymentListInput!) { \
            service(id: $id) { id name projectId createdAt serviceInstances { edges { node { environmentId source { image } } } } } \
            deployments(input: $input, first: 1) { edges { node { id status url serviceId environmentId } } } \
            domains(projectId: $projectId, environmentId: $environmentId, serviceId: $id) { serviceDomains { id domain targetPort } } \
            variables(projectId: $projectId, environmentId: $environmentId, serviceId: $id) }";
        let vars = json!({"id": service, "projectId": project, "environmentId": environment,
            "input": {"projectId": project, "environmentId": environment, "serviceId": service}});
        let Some(mut data) = not_found_to_none(self.gql(q, vars).await)? else { return Ok(None) };
        let image = nodes(&data["service"]["serviceInstances"])
            .into_iter()
            .find(|i| i["environmentId"].as_str() == Some(environment))
            .and_then(|i| i.pointer("/source/image").and_then(Value::as_str).map(str::to_string));
        Ok(Some(ServiceSnapshot {
            image,
            deployment: nodes(&data["deployments"])
                .into_iter()
                .next()
                .map(|d| decode(P, d, "deployment"))
                .transpose()?,
            domains: decode(P, data["domains"]["serviceDomains"].take(), "domains")?,
            variables: decode(P, data["variables"].take(), "variables")?,
            service: decode(P, data["service"].take(), "service")?,
        }))
    }

    /// `serviceInstanceUpdate` to run `image` (takes effect on the next deploy).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn set_service_image(&self, service: &str, environment: &str, image: &str) -> Result<(), ProviderError> {
        let q = "mutation serviceInstanceUpdate($serviceId: String!, $environmentId: String, $input: ServiceInstanceUpdateInput!) { serviceInstanceUpdate(serviceId: $serviceId, environmentId: $environmentId, input: $input) }";
        self.gql(q, json!({"serviceId": service, "environmentId": environment, "input": {"source": {"image": image}}}))
            .await?;
        Ok(())
    }

    /// `serviceDelete`; false when it was already gone.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_service(&self, id: &str, environment: Option<&str>) -> Result<bool, ProviderError> {
        let q = "mutation serviceDelete($id: String!, $environmentId: String) { serviceDelete(id: $id, environmentId: $environmentId) }";
        Ok(not_found_to_none(self.gql(q, json!({"id": id, "environmentId": environment})).await)?.is_some())
    }

    /// `variableCollectionUpsert` for the service (merge, not replace).
    /// With `skip_deploys` Railway does not redeploy for this change.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn upsert_variables(
        &self,
        project: &str,
        environment: &str,
        service: &str,
        variables: &BTreeMap<String, String>,
        skip_deploys: bool,
    ) -> Result<(), ProviderError> {
        let q = "mutation variableCollectionUpsert($input: VariableCollectionUpsertInput!) { variableCollectionUpsert(input: $input) }";
        let input = json!({"projectId": project, "environmentId": environment, "serviceId": service,
            "variables": variables, "replace": false, "skipDeploys": skip_deploys});
        self.gql(q, json!({"input": input})).await?;
        Ok(())
    }

    /// `variables(projectId, environmentId, serviceId)`: the service's variables.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn variables(
        &self,
        project: &str,
        environment: &str,
        service: &str,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let q = "query variables($projectId: String!, $environmentId: String!, $serviceId: String) { variables(projectId: $projectId, environmentId: $environmentId, serviceId: $serviceId) }";
        let mut data =
            self.gql(q, json!({"projectId": project, "environmentId": environment, "serviceId": service})).await?;
        decode(P, data["variables"].take(), "variables")
    }

    /// `serviceInstanceDeployV2`: starts a deployment and returns its id.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn deploy(&self, service: &str, environment: &str) -> Result<String, ProviderError> {
        let q = "mutation serviceInstanceDeployV2($serviceId: String!, $environmentId: String!) { serviceInstanceDeployV2(serviceId: $serviceId, environmentId: $environmentId) }";
        let data = self.gql(q, json!({"serviceId": service, "environmentId": environment})).await?;
        data["serviceInstanceDeployV2"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ProviderError::Decode { platform: P, message: "deployment id is not a string".into() })
    }

    /// `deployment(id)`; `None` when it does not exist.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn deployment(&self, id: &str) -> Result<Option<RailwayDeployment>, ProviderError> {
        let q = "query deployment($id: String!) { deployment(id: $id) { id status url serviceId environmentId } }";
        not_found_to_none(
            async { decode(P, self.gql(q, json!({"id": id})).await?["deployment"].take(), "deployment") }.await,
        )
    }

    /// The newest deployment of the service in `environment`, if any.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn latest_deployment(
        &self,
        project: &str,
        environment: &str,
        service: &str,
    ) -> Result<Option<RailwayDeployment>, ProviderError> {
        let q = "query deployments($input: DeploymentListInput!) { deployments(input: $input, first: 1) { edges { node { id status url serviceId environmentId } } } }";
        let input = json!({"projectId": project, "environmentId": environment, "serviceId": service});
        let data = self.gql(q, json!({"input": input})).await?;
        nodes(&data["deployments"]).into_iter().next().map(|d| decode(P, d, "deployment")).transpose()
    }

    /// `serviceDomainCreate`: a generated `*.up.railway.app` domain.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_domain(
        &self,
        service: &str,
        environment: &str,
        target_port: Option<u16>,
    ) -> Result<RailwayDomain, ProviderError> {
        let q = "mutation serviceDomainCreate($input: ServiceDomainCreateInput!) { serviceDomainCreate(input: $input) { id domain targetPort } }";
        let input = json!({"serviceId": service, "environmentId": environment, "targetPort": target_port});
        let mut data = self.gql(q, json!({"input": input})).await?;
        decode(P, data["serviceDomainCreate"].take(), "domain")
    }

    /// `domains(...)`: the service's generated domains.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn domains(
        &self,
        project: &str,
        environment: &str,
        service: &str,
    ) -> Result<Vec<RailwayDomain>, ProviderError> {
        let q = "query domains($projectId: String!, $environmentId: String!, $serviceId: String!) { domains(projectId: $projectId, environmentId: $environmentId, serviceId: $serviceId) { serviceDomains { id domain targetPort } } }";
        let mut data =
            self.gql(q, json!({"projectId": project, "environmentId": environment, "serviceId": service})).await?;
        decode(P, data["domains"]["serviceDomains"].take(), "domains")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_errors_are_classified_by_message() {
        for (m, cat, retry) in [
            ("Not Authorized", "unauthorized", false),
            ("Two Factor Authentication Required", "unauthorized", false),
            ("Project not found", "not_found", false),
            ("Problem processing request", "server_error", true),
            ("Variable \"input\" of required type was not provided.", "invalid", false),
        ] {
            let e = classify_graphql_error(m);
            assert_eq!((e.category(), e.is_retryable()), (cat, retry), "{m}");
            assert!(e.to_string().contains(m));
        }
    }

    #[test]
    fn deployment_statuses_settle_as_documented() {
        let d = |s: &str| RailwayDeployment {
            id: "d".into(),
            status: s.into(),
            url: None,
            service_id: "s".into(),
            environment_id: "e".into(),
        };
        for s in ["SUCCESS", "SLEEPING"] {
            assert_eq!(d(s).phase(), DeploymentPhase::Succeeded);
        }
        for s in ["FAILED", "CRASHED", "REMOVED", "SKIPPED"] {
            assert_eq!(d(s).phase(), DeploymentPhase::Failed);
        }
        for s in ["BUILDING", "DEPLOYING", "INITIALIZING", "QUEUED", "WAITING", "REMOVING", "NEEDS_APPROVAL", "NEW"] {
            assert_eq!(d(s).phase(), DeploymentPhase::InProgress);
        }
    }
}
