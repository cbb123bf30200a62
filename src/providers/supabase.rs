//! Supabase Management API client: projects (created with the current
//! body only), status polling to ACTIVE_HEALTHY, service health, API keys,
//! the Supavisor pooler configuration, list and delete; plus the project
//! behind the [`ExternalResource`] contract (the alternative database
//! provider).
//!
//! Wire facts, from the Management API OpenAPI document
//! (`supabase/supabase`, `apps/docs/spec/api_v1_openapi.json`):
//! - `V1CreateProjectBody` requires `db_pass`, `name`, `organization_slug`;
//!   `organization_id` ("Deprecated: Use `organization_slug` instead"),
//!   `region` ("Use region_selection instead"), `plan` and `kps_enabled`
//!   are deprecated; "only one of region or region_selection can be
//!   specified"; `region_selection` is `{type: "specific", code}` or
//!   `{type: "smartGroup", code: americas|emea|apac}`.
//! - `ApiKeyResponse.api_key` is nullable (a key the token may not read).
//! - `GET /v1/projects/{ref}/config/database/pooler` answers a list of
//!   `SupavisorConfigResponse` (`database_type` PRIMARY | READ_REPLICA,
//!   `db_user`, `db_host`, `db_port`, `db_name`, ...); the Supabase CLI
//!   connects through the PRIMARY one. The direct host
//!   `db.<ref>.supabase.co` (`database.host`) is IPv6-only on the platform.
//!
//! # Driving it (provisioning engine)
//! [`SupabaseProjects`] with a [`SupabaseProjectSpec`] (marker, org slug,
//! region, database password): observe -> create when `Absent` -> while
//! `InProgress` (status COMING_UP and the like; the operation id is the
//! project ref) requeue and observe again -> `Ready` carries the ref, the
//! API URL, the PRIMARY pooler endpoint and the `anon` / `service_role`
//! keys -> `Failed` on INIT_FAILED and other failed states (terminal: the
//! engine stalls). `delete` removes it.
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{PlatformConfig, Secret};
use super::error::{ProviderError, not_found_to_none};
use super::http::{Http, decode, segment};
use super::{Applied, Created, ExternalResource, Marker, Observation, find_by_id_or_marker, only_marked};
use crate::platform::Platform;

const P: Platform = Platform::Supabase;

/// A project (unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SupabaseProject {
    /// The project ref: 20 lowercase letters.
    #[serde(rename = "ref")]
    pub reference: String,
    pub name: String,
    #[serde(default)]
    pub organization_id: Option<String>,
    #[serde(default)]
    pub organization_slug: Option<String>,
    pub region: String,
    /// INACTIVE, ACTIVE_HEALTHY, ACTIVE_UNHEALTHY, COMING_UP, UNKNOWN,
    /// GOING_DOWN, INIT_FAILED, REMOVED, RESTORING, UPGRADING, PAUSING,
    /// RESTORE_FAILED, RESTARTING, PAUSE_FAILED, RESIZING.
    pub status: String,
    #[serde(default)]
    pub database: Option<SupabaseDatabase>,
}

/// The project's database as `GET /v1/projects/{ref}` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SupabaseDatabase {
    pub host: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// How a project status settles (the classification is ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectPhase {
    InProgress,
    Healthy,
    Failed,
}

impl SupabaseProject {
    /// ACTIVE_HEALTHY is healthy; INIT_FAILED, RESTORE_FAILED, PAUSE_FAILED,
    /// REMOVED and INACTIVE (paused) need a human; everything else
    /// (including ACTIVE_UNHEALTHY and unknown new values) may still settle.
    #[must_use]
    pub fn phase(&self) -> ProjectPhase {
        match self.status.as_str() {
            "ACTIVE_HEALTHY" => ProjectPhase::Healthy,
            "INIT_FAILED" | "RESTORE_FAILED" | "PAUSE_FAILED" | "REMOVED" | "INACTIVE" => ProjectPhase::Failed,
            _ => ProjectPhase::InProgress,
        }
    }
}

/// One API key; the value is a [`Secret`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiKey {
    pub name: String,
    /// `legacy | publishable | secret`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Null for a key the token may not read (`ApiKeyResponse.api_key` is
    /// nullable in the OpenAPI document).
    #[serde(default)]
    pub api_key: Option<Secret>,
}

/// One Supavisor pooler endpoint (`SupavisorConfigResponse`; unknown fields ignored).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PoolerConfig {
    /// `PRIMARY | READ_REPLICA`.
    pub database_type: String,
    pub db_user: String,
    pub db_host: String,
    pub db_port: u16,
    pub db_name: String,
    /// `transaction | session`.
    #[serde(default)]
    pub pool_mode: Option<String>,
}

impl PoolerConfig {
    /// The connection URL with `password` (percent-encoded) filled in.
    #[must_use]
    pub fn url(&self, password: &str) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!(
            "postgresql://{}:{}@{}:{}/{}",
            enc(&self.db_user),
            enc(password),
            self.db_host,
            self.db_port,
            enc(&self.db_name)
        )
    }
}

/// One service's health.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ServiceHealth {
    pub name: String,
    /// `COMING_UP | ACTIVE_HEALTHY | UNHEALTHY`.
    pub status: String,
}

/// The Supabase client. Cloning shares the connection pool and budget.
#[derive(Clone, Debug)]
pub struct SupabaseClient {
    http: Http,
}

impl SupabaseClient {
    /// A client for `config` (base URL `https://api.supabase.com`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &PlatformConfig) -> Result<Self, ProviderError> {
        Ok(Self { http: Http::new(P, config)? })
    }

    /// The HTTP layer (budget inspection).
    #[must_use]
    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        Ok(self.http.send(Method::GET, path, query, None, &[]).await?.body)
    }

    /// `POST /v1/projects` with the current fields only: `organization_slug`
    /// and `region_selection: {type: "specific", code: region}` (never the
    /// deprecated `organization_id` / `region`; see the module docs).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn create_project(
        &self,
        name: &str,
        organization: &str,
        region: &str,
        db_pass: &Secret,
        instance_size: Option<&str>,
    ) -> Result<SupabaseProject, ProviderError> {
        let mut body = json!({"name": name, "db_pass": db_pass.expose(), "organization_slug": organization,
            "region_selection": {"type": "specific", "code": region}});
        if let Some(size) = instance_size {
            body["desired_instance_size"] = json!(size);
        }
        decode(P, self.http.send(Method::POST, "/v1/projects", &[], Some(&body), &[]).await?.body, "project")
    }

    /// `GET /v1/projects/{ref}`; `None` when absent.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn get_project(&self, reference: &str) -> Result<Option<SupabaseProject>, ProviderError> {
        let found = not_found_to_none(self.get(&format!("/v1/projects/{}", segment(reference)), &[]).await)?;
        found.map(|v| decode(P, v, "project")).transpose()
    }

    /// `GET /v1/projects` (no pagination on this endpoint).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn list_projects(&self) -> Result<Vec<SupabaseProject>, ProviderError> {
        decode(P, self.get("/v1/projects", &[]).await?, "projects")
    }

    /// `DELETE /v1/projects/{ref}`; false when it was already gone.
    ///
    /// # Errors
    /// Any [`ProviderError`] but not-found.
    pub async fn delete_project(&self, reference: &str) -> Result<bool, ProviderError> {
        let path = format!("/v1/projects/{}", segment(reference));
        Ok(not_found_to_none(self.http.send(Method::DELETE, &path, &[], None, &[]).await)?.is_some())
    }

    /// `GET /v1/projects/{ref}/api-keys?reveal=true`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn api_keys(&self, reference: &str) -> Result<Vec<ApiKey>, ProviderError> {
        let path = format!("/v1/projects/{}/api-keys", segment(reference));
        decode(P, self.get(&path, &[("reveal", "true".into())]).await?, "api keys")
    }

    /// `GET /v1/projects/{ref}/config/database/pooler`.
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn pooler_config(&self, reference: &str) -> Result<Vec<PoolerConfig>, ProviderError> {
        let path = format!("/v1/projects/{}/config/database/pooler", segment(reference));
        decode(P, self.get(&path, &[]).await?, "pooler config")
    }

    /// `GET /v1/projects/{ref}/health?services=..` for `services` (e.g. `db`, `auth`, `rest`).
    ///
    /// # Errors
    /// Any [`ProviderError`].
    pub async fn health(&self, reference: &str, services: &[&str]) -> Result<Vec<ServiceHealth>, ProviderError> {
        let q: Vec<(&str, String)> = services.iter().map(|s| ("services", (*s).to_string())).collect();
        decode(P, self.get(&format!("/v1/projects/{}/health", segment(reference)), &q).await?, "health")
    }
}

/// A Supabase project named [`Marker::labelled_name`]: Supabase projects
/// have no description or metadata, so the name carries the full marker,
/// verified before a project found by name is adopted or deleted.
#[derive(Clone, Debug)]
pub struct SupabaseProjectSpec {
    pub marker: Marker,
    /// Organization slug.
    pub organization: String,
    /// e.g. `us-east-1`.
    pub region: String,
    /// The database password, chosen by Winston.
    pub db_pass: Secret,
    pub instance_size: Option<String>,
}

/// What a project observation reports once ACTIVE_HEALTHY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupabaseProjectState {
    pub project: SupabaseProject,
    /// `https://<ref>.supabase.co`.
    pub api_url: String,
    /// The `anon` key (legacy JWT), if the project has one.
    pub anon_key: Option<Secret>,
    /// The `service_role` key (legacy JWT), if the project has one.
    pub service_role_key: Option<Secret>,
    /// The PRIMARY pooler endpoint, where the database is reached.
    pub pooler: Option<PoolerConfig>,
}

/// [`ExternalResource`] for [`SupabaseProjectSpec`].
#[derive(Clone, Debug)]
pub struct SupabaseProjects(pub SupabaseClient);

impl ExternalResource for SupabaseProjects {
    type Spec = SupabaseProjectSpec;
    type Observed = SupabaseProjectState;

    async fn observe(
        &self,
        spec: &SupabaseProjectSpec,
        known_id: Option<&str>,
    ) -> Result<Observation<SupabaseProjectState>, ProviderError> {
        let by_id = |id| self.0.get_project(id);
        let by_marker = async {
            let named = self.0.list_projects().await?.into_iter().filter(|p| {
                spec.marker.names(&p.name)
                    && [&p.organization_slug, &p.organization_id]
                        .iter()
                        .any(|o| o.as_deref() == Some(&spec.organization))
            });
            let carries = |p: &SupabaseProject| spec.marker.is_in(&p.name);
            Ok(only_marked(P, &spec.marker, named.collect(), |p| &p.reference, carries))
        };
        let found = find_by_id_or_marker(known_id, by_id, by_marker, |p: &SupabaseProject| &p.reference).await?;
        let project = match found {
            Ok(project) => project,
            Err(settled) => return Ok(settled),
        };
        let id = project.reference.clone();
        match project.phase() {
            ProjectPhase::InProgress => return Ok(Observation::InProgress { operation_id: id.clone(), id }),
            ProjectPhase::Failed => {
                return Ok(Observation::Failed { reason: format!("project status {}", project.status), id });
            }
            ProjectPhase::Healthy => {}
        }
        let keys = self.0.api_keys(&id).await?;
        let key = |name: &str| keys.iter().find(|k| k.name == name).and_then(|k| k.api_key.clone());
        let pooler = self.0.pooler_config(&id).await?.into_iter().find(|p| p.database_type == "PRIMARY");
        let observed = SupabaseProjectState {
            pooler,
            api_url: format!("https://{id}.supabase.co"),
            anon_key: key("anon"),
            service_role_key: key("service_role"),
            project,
        };
        let up_to_date = observed.project.region == spec.region;
        Ok(Observation::Ready { id, observed, up_to_date })
    }

    /// Creates the project; the operation id is its ref (poll its status).
    async fn create(&self, spec: &SupabaseProjectSpec) -> Result<Created, ProviderError> {
        let p = self
            .0
            .create_project(
                &spec.marker.labelled_name(),
                &spec.organization,
                &spec.region,
                &spec.db_pass,
                spec.instance_size.as_deref(),
            )
            .await?;
        Ok(Created { operation_id: Some(p.reference.clone()), id: p.reference })
    }

    /// The region of a project cannot change.
    async fn update(&self, id: &str, spec: &SupabaseProjectSpec) -> Result<Applied, ProviderError> {
        Err(ProviderError::Invalid {
            platform: P,
            status: 400,
            message: format!("project {id} cannot move to region {}; delete and recreate it", spec.region),
        })
    }

    async fn delete(&self, id: &str, _spec: &SupabaseProjectSpec) -> Result<Applied, ProviderError> {
        self.0.delete_project(id).await?;
        Ok(Applied::Done)
    }
}
