//! `TenantInstance` (short name `ti`): one deployed agent stack of a Tenant.
//! Its status is the provisioning record: steps with progress, the ids of
//! every external object, public URLs and the credentials Secret.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::shared::{AgentProfile, Phase, StackSpec, TenantRef};

/// One agent stack: database, agent service, optional frontend, credentials.
/// Normally created and updated by the Tenant controller, not by hand.
#[allow(clippy::duplicated_attributes)] // kube printcolumn(...) repeats `type_` by design
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "winston.dev",
    version = "v1alpha1",
    kind = "TenantInstance",
    namespaced,
    shortname = "ti",
    category = "winston",
    status = "TenantInstanceStatus",
    doc = "One deployed agent stack of a Tenant; its status records every provisioning step.",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.currentStep"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.urls.service"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 48").message("metadata.name: TenantInstance names are at most 48 characters (external names are derived from it)"),
    // `string(int)` is costed as unbounded by the API server; the ordinal is 0..=9.
    validation = Rule::new("self.metadata.name == self.spec.tenantRef.name + '-' + ['0','1','2','3','4','5','6','7','8','9'][self.spec.ordinal]").message(Message::Expression("'metadata.name: ' + self.metadata.name + ' must be ' + self.spec.tenantRef.name + '-' + ['0','1','2','3','4','5','6','7','8','9'][self.spec.ordinal] + ' (<tenant>-<ordinal>): instances are created by their Tenant'".into())),
)]
#[serde(rename_all = "camelCase")]
pub struct TenantInstanceSpec {
    /// The Tenant this instance serves. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.tenantRef is immutable"))]
    pub tenant_ref: TenantRef,
    /// Position of this instance among its Tenant's instances. Immutable.
    #[schemars(range(min = 0, max = 9))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.ordinal is immutable"))]
    pub ordinal: i32,
    /// Who the customer is.
    pub profile: AgentProfile,
    /// The Tenant's plan, components, `paused` and deletion policy.
    #[serde(flatten)]
    pub stack: StackSpec,
    /// What the website analyzer proposed (the Tenant's `status.profile`),
    /// set by the Tenant controller; the workspace uses it wherever
    /// `profile` says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_profile: Option<super::profile::WebsiteProfile>,
}

/// The provisioning steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StepName {
    /// Postgres database (Neon or Supabase).
    Database,
    /// Tenant migrations applied to that database.
    Schema,
    /// The application's own migrations and seed data.
    Migrations,
    /// The credentials Secret.
    Credentials,
    /// The agent's workspace files.
    Workspace,
    /// The application's admin user (Supabase Auth).
    AdminUser,
    /// The agent service (Railway).
    Service,
    /// The web frontend (Vercel).
    Frontend,
    /// The service answers its health path.
    Health,
    /// The welcome email.
    Notify,
}

impl StepName {
    /// Every step in execution order.
    pub const ALL: [StepName; 10] = [
        Self::Database,
        Self::Schema,
        Self::Migrations,
        Self::Credentials,
        Self::Workspace,
        Self::AdminUser,
        Self::Service,
        Self::Frontend,
        Self::Health,
        Self::Notify,
    ];

    /// The step's name as it appears in status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Schema => "schema",
            Self::Migrations => "migrations",
            Self::AdminUser => "adminUser",
            Self::Credentials => "credentials",
            Self::Workspace => "workspace",
            Self::Service => "service",
            Self::Frontend => "frontend",
            Self::Health => "health",
            Self::Notify => "notify",
        }
    }
}

/// Progress of one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StepState {
    /// Not started.
    #[default]
    Pending,
    /// Started; waiting on the platform.
    InProgress,
    /// Converged.
    Done,
    /// Failed; retried with backoff unless the Stalled condition says otherwise.
    Failed,
    /// Not wanted by the spec or plan.
    Skipped,
}

/// One line of progress a person can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Which step.
    pub name: StepName,
    /// Its state.
    pub state: StepState,
    /// How many times it was attempted.
    #[serde(default)]
    pub attempts: i32,
    /// When it first started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// What it is doing or why it failed (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Ids of the Neon objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NeonIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    /// An operation being waited on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

/// Ids of the Railway objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RailwayIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// Ids of the Vercel objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VercelIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

/// Ids of the Supabase objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SupabaseIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
    /// The Supabase Auth id of the application's admin user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user_id: Option<String>,
}

/// Ids of everything Winston created outside Kubernetes. Written right after
/// each create so a restarted controller adopts instead of duplicating.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalIds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neon: Option<NeonIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supabase: Option<SupabaseIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub railway: Option<RailwayIds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vercel: Option<VercelIds>,
    /// Id of the welcome email, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_email_id: Option<String>,
}

/// A create that was announced but whose result is not recorded yet. On
/// restart the controller looks the object up by `marker` before creating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingCreate {
    /// The step that is creating.
    pub step: StepName,
    /// The deterministic name or marker of the object being created.
    pub marker: String,
    /// When the create was announced.
    pub since: DateTime<Utc>,
}

/// Public URLs of the instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Urls {
    /// The agent service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The web frontend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
}

/// A Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name (a DNS subdomain).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// Observed state of a TenantInstance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantInstanceStatus {
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (Ready, Reconciling, Stalled) and one per step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The step being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// Progress of every step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// Ids of external objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalIds>,
    /// Creates announced but not yet recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingCreate>,
    /// Public URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    /// The Secret holding DATABASE_URL, the proxy API key and the gateway token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Hash of the rendered workspace files currently deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_hash: Option<String>,
    /// The skills the deployed workspace installs, and those waiting on a
    /// connector the Tenant has not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skills: Option<SkillsStatus>,
    /// The tenant schema version applied, and to which database, so a
    /// steady-state pass does not open the tenant's database (which would
    /// wake a scaled-to-zero Neon compute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaRecord>,
    /// The application migrations applied (count and checksum of the set)
    /// and to which database, so a steady-state pass does not open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_migrations: Option<AppMigrationsRecord>,
}

/// Which application migrations were applied to which database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMigrationsRecord {
    /// How many files the set had.
    pub count: i64,
    /// `sha256:` over the names and checksums of the set.
    pub checksum: String,
    /// `sha256:` of the database's host, port and name (no credentials).
    pub database: String,
}

/// Which tenant schema version was applied to which database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRecord {
    /// The newest tenant migration applied.
    pub version: i64,
    /// `sha256:` of the database's host, port and name (no credentials).
    pub database: String,
}

/// The skills of the deployed workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkillsStatus {
    /// Installed skills, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<String>,
    /// Skills selected for the plan and industry that wait on connectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<WaitingSkill>,
    /// Skills `persona.skills` names that are not installed, and why: no
    /// skill has the name, the plan does not offer it, or it is for other
    /// industries. The workspace step's message (`WorkspaceReady`) names
    /// them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_installed: Vec<NotInstalledSkill>,
}

/// A skill the persona asks for that the workspace does not install.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotInstalledSkill {
    /// The name as `persona.skills` gives it.
    pub skill: String,
    /// Why it is not installed.
    pub reason: SkillNotInstalledReason,
}

/// Why a skill `persona.skills` names is not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SkillNotInstalledReason {
    /// No skill has this name (a typo, or a skill Winston does not ship).
    UnknownSkill,
    /// The skill exists but the Tenant's plan does not offer it.
    NotInPlan,
    /// The skill exists and the plan offers it, but it is for other
    /// industries than the Tenant's.
    NotForIndustry,
}

impl SkillNotInstalledReason {
    /// In words, for messages.
    #[must_use]
    pub fn words(self, plan: &str) -> String {
        match self {
            Self::UnknownSkill => "no such skill".into(),
            Self::NotInPlan => format!("not in plan {plan}"),
            Self::NotForIndustry => "not for this industry".into(),
        }
    }
}

/// A skill that is installed once its connectors are present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingSkill {
    pub skill: String,
    /// Connector types it still needs, for example `pos`.
    pub connectors: Vec<String>,
}
