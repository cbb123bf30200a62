//! One function per step. Each observes first, changes only what differs,
//! and returns `Done` or `Waiting`; errors are classified by [`EngineError`].
//! Values found on the way (the database URL, the credentials, the
//! workspace, the service URL) are carried in [`Pass`] for later steps.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::credentials::{self, Credentials};
use super::external::{self, Converged, Object};
use super::mail::Kind;
use super::record::Recorder;
use super::workspace::{self, Workspace};
use super::{Deps, Engine, EngineError, schema, wanted};
use crate::api::shared::DatabaseProvider;
use crate::api::tenant_instance::{NeonIds, RailwayIds, SchemaRecord, SecretRef};
use crate::api::{StepName, StepState, TenantInstance};
use crate::outbound::OutboundError;
use crate::plans::Plan;
use crate::providers::neon::resources::{NeonProjectSpec, NeonProjects};
use crate::providers::railway::resources::{
    RailwayProjectSpec, RailwayProjectState, RailwayProjects, RailwayServiceSpec, RailwayServiceState, RailwayServices,
};
use crate::providers::resend::{Email, ResendEmails, WelcomeEmail};
use crate::providers::{ExternalResource, Marker};

/// What a step reports when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum StepResult {
    Done(String),
    Waiting(String),
}

/// One reconcile pass over an instance.
pub struct Pass<'a> {
    pub engine: &'a Engine,
    pub ti: &'a TenantInstance,
    pub plan_name: &'a str,
    pub plan: &'a Plan,
    pub rec: Recorder<'a>,
    pub secrets: Api<Secret>,
    pub marker: Marker,
    pub database_url: Option<String>,
    pub credentials: Option<Credentials>,
    pub workspace: Option<Workspace>,
    pub service_url: Option<String>,
    /// The Supabase project's API, once the database step found it Ready.
    pub supabase: Option<super::supabase::ProjectApi>,
}

impl<'a> Pass<'a> {
    /// A pass over `ti` on `plan`, recording into `rec`; nothing found yet.
    #[must_use]
    pub fn new(deps: &Deps<'a>, ti: &'a TenantInstance, plan: &'a Plan, rec: Recorder<'a>) -> Self {
        Self {
            engine: deps.engine,
            ti,
            plan_name: &ti.spec.stack.plan,
            plan,
            rec,
            secrets: Api::namespaced(deps.client.clone(), &ti.namespace().unwrap_or_default()),
            marker: Marker::new(&ti.uid().unwrap_or_default()),
            database_url: None,
            credentials: None,
            workspace: None,
            service_url: None,
            supabase: None,
        }
    }

    /// Runs `step`.
    ///
    /// # Errors
    /// See [`EngineError`].
    pub async fn run(&mut self, step: StepName) -> Result<StepResult, EngineError> {
        match step {
            StepName::Database => self.database().await,
            StepName::Schema => self.schema().await,
            StepName::Migrations => super::migrations::run(self).await,
            StepName::AdminUser => super::admin_user::run(self).await,
            StepName::Credentials => self.credentials().await,
            StepName::Workspace => Ok(self.workspace()),
            StepName::Service => self.service().await,
            StepName::Frontend => super::frontend::run(self).await,
            StepName::Health => self.health().await,
            StepName::Notify => self.notify().await,
        }
    }

    /// Converges `object` (see [`external::converge`]).
    pub(super) async fn converge<R: ExternalResource>(
        &mut self,
        resource: &R,
        spec: &R::Spec,
        object: Object,
    ) -> Result<Converged<R::Observed>, EngineError> {
        external::converge(resource, spec, object, &self.marker.name(), &mut self.rec).await
    }

    /// The id of `object` recorded in the status.
    pub(super) fn known(&self, object: Object) -> Option<String> {
        object.known(self.rec.status.external.as_ref())
    }

    fn neon_ids(&mut self) -> &mut NeonIds {
        self.rec.status.external.get_or_insert_default().neon.get_or_insert_default()
    }

    fn railway_ids(&mut self) -> &mut RailwayIds {
        self.rec.status.external.get_or_insert_default().railway.get_or_insert_default()
    }

    async fn database(&mut self) -> Result<StepResult, EngineError> {
        let db = self.ti.spec.stack.components.database.clone().unwrap_or_default();
        if db.provider == DatabaseProvider::Supabase {
            return super::supabase::run(self).await;
        }
        let region = db.region.clone().unwrap_or_else(|| self.engine.args.neon_region.clone());
        let pg = db.postgres_version.and_then(|v| u64::try_from(v).ok()).unwrap_or(self.engine.args.postgres_version);
        let spec = NeonProjectSpec::new(self.marker.clone(), &region, pg);
        let res = NeonProjects(self.engine.providers.neon.clone());
        let (project_id, uri) = match self.converge(&res, &spec, Object::NeonProject).await? {
            Converged::Waiting { message, .. } => return Ok(StepResult::Waiting(message)),
            Converged::Ready { id, observed } => (id, observed.connection_uri),
        };
        // Right after creation the endpoint may not serve a URI yet: wait, don't stall.
        let Some(uri) = uri else {
            return Ok(StepResult::Waiting("waiting for the database endpoint".into()));
        };
        let ids = self.neon_ids();
        ids.role_name = Some(spec.role_name.clone());
        ids.database_name = Some(spec.database_name.clone());
        self.database_url = Some(uri.expose().to_string());
        Ok(StepResult::Done(format!("Neon project {project_id} ({region}, PostgreSQL {pg})")))
    }

    async fn schema(&mut self) -> Result<StepResult, EngineError> {
        let Some(url) = self.database_url.clone() else {
            return Ok(StepResult::Waiting("waiting for the database".into()));
        };
        let record = SchemaRecord { version: schema::latest_version(), database: schema::target_of(&url) };
        let done = StepResult::Done(format!("tenant schema at version {}", record.version));
        if self.rec.status.schema.as_ref() == Some(&record) {
            return Ok(done);
        }
        let applied = schema::apply(&url).await?;
        tracing::info!(instance = %self.ti.name_any(), applied, version = record.version, "tenant schema applied");
        self.rec.status.schema = Some(record);
        Ok(done)
    }

    async fn credentials(&mut self) -> Result<StepResult, EngineError> {
        let (creds, outcome) = credentials::converge(
            &self.secrets,
            self.rec.host(),
            &self.engine.ledger,
            self.ti,
            self.database_url.as_deref(),
            &self.engine.args.proxy_url,
        )
        .await?;
        self.credentials = Some(creds);
        let name = credentials::secret_name(&self.ti.name_any());
        self.rec.status.credentials_secret_ref = Some(SecretRef { name: name.clone() });
        // A pass that changed nothing keeps the step's message ("created",
        // "rotated"): rewording it would be a status write at rest (the
        // Secret's own creation starts such a pass).
        let kept = self.rec.status.steps.iter().find(|s| s.name == StepName::Credentials && s.state == StepState::Done);
        if let (credentials::Outcome::Unchanged, Some(message)) = (&outcome, kept.and_then(|s| s.message.clone())) {
            return Ok(StepResult::Done(message));
        }
        Ok(StepResult::Done(format!("Secret {name} {}", outcome.verb())))
    }

    fn workspace(&mut self) -> StepResult {
        let w = workspace::render(&self.ti.name_any(), &self.ti.spec, self.plan_name, self.plan);
        let hash = w.hash();
        let files = w.files.len();
        self.rec.status.workspace_hash = Some(hash.clone());
        let mut message = format!("{files} files rendered ({})", &hash[..19.min(hash.len())]);
        if !w.skills.not_installed.is_empty() {
            let skipped: Vec<String> = w
                .skills
                .not_installed
                .iter()
                .map(|s| format!("{} ({})", s.skill, s.reason.words(self.plan_name)))
                .collect();
            message.push_str(&format!("; persona.skills not installed: {}", skipped.join(", ")));
        }
        self.rec.status.skills = Some(w.skills.clone());
        self.workspace = Some(w);
        StepResult::Done(message)
    }

    /// The agent service: its Railway project first, then the service in it.
    async fn service(&mut self) -> Result<StepResult, EngineError> {
        let connectors = match super::connectors::variables(&self.secrets, &self.ti.spec.stack.connectors).await? {
            Ok(v) => v,
            Err(super::connectors::Undelivered::Waiting(waiting)) => return Ok(StepResult::Waiting(waiting)),
            Err(super::connectors::Undelivered::Collision(message)) => {
                return Err(EngineError::ConnectorVariableCollision(message));
            }
        };
        let (project_id, environment_id) = match self.railway_project().await? {
            Converged::Waiting { message, .. } => return Ok(StepResult::Waiting(format!("project: {message}"))),
            Converged::Ready { id, observed } => (id, observed.environment_id),
        };
        self.railway_ids().environment_id = Some(environment_id.clone());
        let spec = self.service_spec(project_id, environment_id, connectors)?;
        let services = RailwayServices(self.engine.providers.railway.clone());
        match self.converge(&services, &spec, Object::RailwayService).await? {
            Converged::Waiting { message, .. } => Ok(StepResult::Waiting(format!("service: {message}"))),
            Converged::Ready { id, observed } => {
                // The platform runs this workspace now: keep it in the history
                // before the step is Done (see `history`).
                let ws = self.workspace.as_ref().ok_or(EngineError::MissingInput("workspace step did not run"))?;
                super::history::record(&self.engine.ledger, self.ti, ws, self.engine.args.config_history).await?;
                Ok(self.service_deployed(&id, observed))
            }
        }
    }

    async fn railway_project(&mut self) -> Result<Converged<RailwayProjectState>, EngineError> {
        let spec = RailwayProjectSpec { marker: self.marker.clone() };
        let projects = RailwayProjects(self.engine.providers.railway.clone());
        self.converge(&projects, &spec, Object::RailwayProject).await
    }

    fn service_spec(
        &self,
        project_id: String,
        environment_id: String,
        connectors: BTreeMap<String, String>,
    ) -> Result<RailwayServiceSpec, EngineError> {
        let compute = self.ti.spec.stack.components.compute.as_ref();
        let image = compute.and_then(|c| c.image.clone()).unwrap_or_else(|| self.engine.args.agent_image.clone());
        Ok(RailwayServiceSpec {
            project_id,
            environment_id,
            marker: self.marker.clone(),
            image,
            variables: self.service_variables(connectors)?,
            target_port: Some(AGENT_PORT),
        })
    }

    /// Records what a deployed service answers on.
    fn service_deployed(&mut self, id: &str, observed: RailwayServiceState) -> StepResult {
        let ids = self.railway_ids();
        ids.deployment_id = observed.deployment.as_ref().map(|d| d.id.clone());
        ids.domain.clone_from(&observed.domain);
        // The URL is known from here on: the welcome email of this very pass
        // carries it (a retried send must repeat the same payload).
        if let Some(domain) = &observed.domain {
            self.rec.status.urls.get_or_insert_default().service = Some(format!("https://{domain}"));
        }
        self.service_url.clone_from(&observed.url);
        let url = observed.url.unwrap_or_default();
        StepResult::Done(format!("Railway service {id} deployed at {url}"))
    }

    /// The variables the agent service runs with: credentials, the
    /// workspace bundle and its hash (a workspace change is a variable change,
    /// which redeploys), plan resources, and the connectors' variables (see
    /// [`super::connectors`]).
    fn service_variables(&self, connectors: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, EngineError> {
        let creds = self.credentials.as_ref().ok_or(EngineError::MissingInput("credentials step did not run"))?;
        let ws = self.workspace.as_ref().ok_or(EngineError::MissingInput("workspace step did not run"))?;
        let mut v = connectors;
        v.extend(creds.variables());
        v.insert("WINSTON_WORKSPACE".into(), ws.bundle());
        v.insert("WINSTON_WORKSPACE_HASH".into(), ws.hash());
        v.insert("WINSTON_INSTANCE".into(), self.ti.name_any());
        v.insert("WINSTON_PLAN".into(), self.plan_name.to_string());
        v.insert("WINSTON_CPU".into(), self.plan.resources.cpu.clone());
        v.insert("WINSTON_MEMORY".into(), self.plan.resources.memory.clone());
        v.insert("PORT".into(), AGENT_PORT.to_string());
        Ok(v)
    }

    async fn health(&mut self) -> Result<StepResult, EngineError> {
        let Some(host) =
            self.rec.status.external.as_ref().and_then(|e| e.railway.as_ref()).and_then(|r| r.domain.clone())
        else {
            return Ok(StepResult::Waiting("waiting for the service domain".into()));
        };
        let path = &self.engine.args.health_path;
        let url = match &self.engine.args.health_base_url {
            Some(base) => format!("{}/{host}{path}", base.trim_end_matches('/')),
            None => format!("https://{host}{path}"),
        };
        match self.engine.http.get(&url).await {
            Ok(r) if r.status().is_success() => Ok(StepResult::Done(format!("{host}{path} answered {}", r.status()))),
            Ok(r) => Ok(StepResult::Waiting(format!("{host}{path} answered {}", r.status()))),
            Err(OutboundError::Timeout { .. }) => Ok(StepResult::Waiting(format!("{host}{path} timed out"))),
            Err(e @ (OutboundError::Refused { .. } | OutboundError::Unsupported { .. })) => {
                Ok(StepResult::Waiting(e.to_string()))
            }
            Err(_) => Ok(StepResult::Waiting(format!("{host}{path} is not reachable yet"))),
        }
    }

    /// The welcome email, exactly once: Resend deduplicates on the
    /// Idempotency-Key (the instance UID) and the id is kept in status.
    async fn notify(&mut self) -> Result<StepResult, EngineError> {
        if let Some(id) = self.known(Object::WelcomeEmail) {
            return Ok(StepResult::Done(format!("welcome email {id} sent")));
        }
        let spec = self.welcome_email().await?;
        let res = ResendEmails(self.engine.providers.resend.clone());
        let (Converged::Ready { id, .. } | Converged::Waiting { id, .. }) =
            self.converge(&res, &spec, Object::WelcomeEmail).await?;
        Ok(StepResult::Done(format!("welcome email {id} sent")))
    }

    /// The welcome email from the plan's template: `admin-welcome` when the
    /// stack has an application admin user, else `welcome`. Secrets (the
    /// API key from the credentials step, the admin's temporary password
    /// from its Secret) are read only when the template asks for them.
    async fn welcome_email(&self) -> Result<WelcomeEmail, EngineError> {
        let mail = &self.engine.mail;
        let admin = wanted::steps(&self.ti.spec, self.plan).contains(&(StepName::AdminUser, true));
        let kind = if admin { Kind::AdminWelcome } else { Kind::Welcome };
        let mut values = super::mail_values(self.ti, self.plan_name, &self.engine.args.proxy_url, &self.rec.status);
        if let Some(c) = &self.credentials
            && mail.asks_for(kind, self.plan_name, "api_key")
        {
            values.set("api_key", c.api_key.clone());
        }
        if admin {
            values.set("admin_email", super::admin_user::admin_email(self));
            if mail.asks_for(kind, self.plan_name, "temporary_password") {
                values.set("temporary_password", super::admin_user::password(self).await?);
            }
        }
        let message = mail.render(kind, self.plan_name, &values);
        Ok(WelcomeEmail {
            marker: self.marker.clone(),
            email: Email {
                from: self.engine.args.welcome_from.clone(),
                to: vec![self.ti.spec.profile.contact_email.clone()],
                subject: message.subject,
                html: Some(message.html).filter(|h| !h.trim().is_empty()),
                text: Some(message.text).filter(|t| !t.trim().is_empty()),
                tags: Vec::new(),
            },
        })
    }
}

/// Port the agent listens on inside its container.
pub const AGENT_PORT: u16 = 8080;
