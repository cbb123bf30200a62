//! Railway objects behind the [`ExternalResource`] contract: a project per
//! instance (named after the [`Marker`], its description carrying the
//! marker value, verified before a project found by name is adopted or
//! deleted) and the agent service inside it (named after the marker, found
//! only inside that verified project).
use std::collections::BTreeMap;

use super::{DeploymentPhase, RailwayClient, RailwayDeployment, RailwayProject, RailwayService, ServiceSnapshot};
use crate::platform::Platform;
use crate::providers::{
    Applied, Created, ExternalResource, Marker, Observation, ProviderError, find_by_id_or_marker, only_marked,
};

/// The environment every Winston service runs in.
pub const ENVIRONMENT: &str = "production";

/// How long a new service without any deployment is waited on: Railway
/// starts the first deployment of a service created with a source by
/// itself, a moment after `serviceCreate` answers. Deploying because none
/// is listed yet would build twice; after this grace a service still
/// without one is deployed by `update`.
pub const FIRST_DEPLOY_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether `service` was created less than [`FIRST_DEPLOY_GRACE`] ago
/// (an unreadable `createdAt` counts as old).
fn awaits_first_deploy(service: &RailwayService) -> bool {
    let Some(created) = service.created_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
        return false;
    };
    let age = chrono::Utc::now().signed_duration_since(created);
    age.to_std().map_or(true, |age| age < FIRST_DEPLOY_GRACE)
}

/// A project per instance.
#[derive(Clone, Debug)]
pub struct RailwayProjectSpec {
    pub marker: Marker,
}

/// What a project observation reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RailwayProjectState {
    pub project: RailwayProject,
    /// The id of the [`ENVIRONMENT`] environment.
    pub environment_id: String,
}

/// [`ExternalResource`] for [`RailwayProjectSpec`].
#[derive(Clone, Debug)]
pub struct RailwayProjects(pub RailwayClient);

impl ExternalResource for RailwayProjects {
    type Spec = RailwayProjectSpec;
    type Observed = RailwayProjectState;

    async fn observe(
        &self,
        spec: &RailwayProjectSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<RailwayProjectState>, ProviderError> {
        let name = spec.marker.name();
        let by_id = |id| self.0.get_project(id);
        let by_marker = async {
            let found = self.0.find_projects(&name).await?;
            let carries = |p: &RailwayProject| p.description.as_deref().is_some_and(|d| spec.marker.is_in(d));
            Ok(only_marked(Platform::Railway, &spec.marker, found, |p| &p.id, carries))
        };
        let project = match find_by_id_or_marker(known_id, by_id, by_marker, |p: &RailwayProject| &p.id).await? {
            Ok(project) => project,
            Err(settled) => return Ok(settled),
        };
        let env = project.environments.iter().find(|e| e.name == ENVIRONMENT).map(|e| e.id.clone());
        let up_to_date = env.is_some();
        Ok(Observation::Ready {
            id: project.id.clone(),
            observed: RailwayProjectState { environment_id: env.unwrap_or_default(), project },
            up_to_date,
        })
    }

    async fn create(&self, spec: &RailwayProjectSpec) -> Result<Created, ProviderError> {
        let p = self.0.create_project(&spec.marker.name(), &spec.marker.value()).await?;
        Ok(Created { id: p.id, operation_id: None })
    }

    /// Adds the `production` environment when it is missing.
    async fn update(&self, id: &str, _spec: &RailwayProjectSpec) -> Result<Applied, ProviderError> {
        if !self.0.environments(id).await?.iter().any(|e| e.name == ENVIRONMENT) {
            self.0.create_environment(id, ENVIRONMENT).await?;
        }
        Ok(Applied::Done)
    }

    async fn delete(&self, id: &str, _spec: &RailwayProjectSpec) -> Result<Applied, ProviderError> {
        self.0.delete_project(id).await?;
        Ok(Applied::Done)
    }
}

/// The agent service of one instance.
#[derive(Clone, Debug)]
pub struct RailwayServiceSpec {
    pub project_id: String,
    pub environment_id: String,
    pub marker: Marker,
    /// Container image, e.g. `ghcr.io/acme/agent:1.2`.
    pub image: String,
    /// Every variable the service needs (set at creation; compared on observe).
    pub variables: BTreeMap<String, String>,
    /// Port the generated domain routes to.
    pub target_port: Option<u16>,
}

/// What a service observation reports.
#[derive(Clone, Debug, PartialEq)]
pub struct RailwayServiceState {
    pub service: RailwayService,
    /// The newest deployment (`None` before the first deploy).
    pub deployment: Option<RailwayDeployment>,
    /// `*.up.railway.app` host, once generated.
    pub domain: Option<String>,
    /// `https://<domain>`, once generated.
    pub url: Option<String>,
}

/// [`ExternalResource`] for [`RailwayServiceSpec`].
#[derive(Clone, Debug)]
pub struct RailwayServices(pub RailwayClient);

/// What differs between a snapshot and the spec: (variables, image).
fn differs(snap: &ServiceSnapshot, spec: &RailwayServiceSpec) -> (bool, bool) {
    let vars_differ = spec.variables.iter().any(|(k, v)| snap.variables.get(k) != Some(v));
    (vars_differ, snap.image.as_deref() != Some(spec.image.as_str()))
}

impl ExternalResource for RailwayServices {
    type Spec = RailwayServiceSpec;
    type Observed = RailwayServiceState;

    /// `InProgress` while the newest deployment builds (operation id = the
    /// deployment id), `Failed` when it failed, otherwise `Ready`;
    /// `up_to_date` is false when a variable or the image differs from the
    /// spec, the domain is missing, or nothing was ever deployed.
    async fn observe(
        &self,
        spec: &RailwayServiceSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<RailwayServiceState>, ProviderError> {
        // Only the id is looked up here: the snapshot below reads the rest.
        let by_id = |id: &str| std::future::ready(Ok(Some(id.to_string())));
        let by_marker = async {
            let found = self.0.find_services(&spec.project_id, &spec.marker.name()).await?;
            Ok(found.into_iter().map(|s| s.id).collect())
        };
        let id = match find_by_id_or_marker(known_id, by_id, by_marker, String::as_str).await? {
            Ok(id) => id,
            Err(settled) => return Ok(settled),
        };
        let Some(snap) = self.0.service_snapshot(&spec.project_id, &spec.environment_id, &id).await? else {
            return Ok(Observation::Absent);
        };
        match snap.deployment.as_ref().map(RailwayDeployment::phase) {
            Some(DeploymentPhase::InProgress) => {
                let operation_id = snap.deployment.map(|d| d.id).unwrap_or_default();
                return Ok(Observation::InProgress { id, operation_id });
            }
            Some(DeploymentPhase::Failed) => {
                let status = snap.deployment.map(|d| d.status).unwrap_or_default();
                return Ok(Observation::Failed { id, reason: format!("deployment ended {status}") });
            }
            None if awaits_first_deploy(&snap.service) => {
                let operation_id = format!("first deployment of service {id}");
                return Ok(Observation::InProgress { id, operation_id });
            }
            Some(DeploymentPhase::Succeeded) | None => {}
        }
        let (vars_differ, image_differs) = differs(&snap, spec);
        let domain = snap.domains.into_iter().next().map(|d| d.domain);
        let up_to_date = snap.deployment.is_some() && domain.is_some() && !vars_differ && !image_differs;
        let observed = RailwayServiceState {
            url: domain.as_ref().map(|d| format!("https://{d}")),
            domain,
            deployment: snap.deployment,
            service: snap.service,
        };
        Ok(Observation::Ready { id, observed, up_to_date })
    }

    /// Creates the service from its image with every variable, and
    /// generates its domain. Railway deploys a service created with a
    /// source by itself, a moment later: nothing is deployed here, and
    /// `observe` waits for that deployment ([`FIRST_DEPLOY_GRACE`]), which
    /// a listing right after the create may not show yet.
    async fn create(&self, spec: &RailwayServiceSpec) -> Result<Created, ProviderError> {
        let c = &self.0;
        let svc = c
            .create_service(&spec.project_id, &spec.environment_id, &spec.marker.name(), &spec.image, &spec.variables)
            .await?;
        c.create_domain(&svc.id, &spec.environment_id, spec.target_port).await?;
        Ok(Created { id: svc.id, operation_id: None })
    }

    /// Writes changed variables with `skipDeploys`, switches the image,
    /// generates a missing domain, then redeploys once when anything that
    /// needs a deploy changed or the last deployment failed.
    async fn update(&self, id: &str, spec: &RailwayServiceSpec) -> Result<Applied, ProviderError> {
        let c = &self.0;
        let Some(snap) = c.service_snapshot(&spec.project_id, &spec.environment_id, id).await? else {
            return Err(ProviderError::NotFound { platform: Platform::Railway, message: format!("service {id}") });
        };
        let (vars_differ, image_differs) = differs(&snap, spec);
        if vars_differ {
            c.upsert_variables(&spec.project_id, &spec.environment_id, id, &spec.variables, true).await?;
        }
        if image_differs {
            c.set_service_image(id, &spec.environment_id, &spec.image).await?;
        }
        if snap.domains.is_empty() {
            c.create_domain(id, &spec.environment_id, spec.target_port).await?;
        }
        let needs_deploy = vars_differ
            || image_differs
            || snap.deployment.as_ref().is_none_or(|d| d.phase() == DeploymentPhase::Failed);
        if needs_deploy {
            return Ok(Applied::InProgress { operation_id: c.deploy(id, &spec.environment_id).await? });
        }
        Ok(Applied::Done)
    }

    async fn delete(&self, id: &str, spec: &RailwayServiceSpec) -> Result<Applied, ProviderError> {
        self.0.delete_service(id, Some(&spec.environment_id)).await?;
        Ok(Applied::Done)
    }
}
