//! Types shared by more than one kind: references, phases, the deletion
//! policy and the agent's profile and components (copied from a Tenant into
//! each of its TenantInstances).
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to the Tenant (in the same namespace) that an object serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRef {
    /// Name of the Tenant in the same namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
}

/// What happens to external objects (database, service, frontend) when the
/// owning resource is deleted: `Delete` (the default: the tenant's database
/// and its data are destroyed) or `Orphan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete every external object, verifying each is gone (default).
    #[default]
    Delete,
    /// Leave external objects in place; only Kubernetes objects are removed.
    Orphan,
}

/// Lifecycle phase, for people and `kubectl get`. Conditions are the
/// machine-readable truth; the phase summarises them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet acted upon.
    #[default]
    Pending,
    /// Steps are running.
    Provisioning,
    /// Everything is provisioned and healthy.
    Ready,
    /// Was Ready; something is now unhealthy or drifting and being repaired.
    Degraded,
    /// Blocked on a terminal error (see the Stalled condition).
    Failed,
    /// Being torn down.
    Deleting,
    /// Declared with `spec.approved: false`: nothing is provisioned until
    /// the field is set to true.
    AwaitingApproval,
}

impl Phase {
    /// The phase as it appears in YAML.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Provisioning => "Provisioning",
            Self::Ready => "Ready",
            Self::Degraded => "Degraded",
            Self::Failed => "Failed",
            Self::Deleting => "Deleting",
            Self::AwaitingApproval => "AwaitingApproval",
        }
    }
}

/// The tone the agent speaks in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Tone {
    #[default]
    Friendly,
    Professional,
    Playful,
    Formal,
    Concise,
}

/// Who the agent is: its name, tone, what it can do and which skills it loads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persona {
    /// The agent's name as customers see it (for example "Ava"): 1 to 40
    /// characters of plain text on one line (no `<`, `>` or control characters).
    #[schemars(length(min = 1, max = 40))]
    #[x_kube(validation = Rule::new(r"self.trim() == self && !self.matches('[<>\x00-\x1F\x7F]')").message("the agent's name must be plain text on one line: no '<', '>', control characters or surrounding blanks"))]
    pub name: String,
    /// The agent's tone of voice.
    #[serde(default)]
    pub tone: Tone,
    /// Plain-language capabilities ("book appointments", "answer billing
    /// questions"): at most 20, each 1 to 200 characters on one line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 200)))]
    #[x_kube(validation = Rule::new(r"self.all(c, !c.matches('[\x00-\x1F\x7F]'))").message("each capability must be one line of text without control characters"))]
    pub capabilities: Vec<String>,
    /// Skills to install in the agent's workspace, by name. The plan (and
    /// the industry) decide which skills are available; a name that is
    /// unknown, not in the plan or not for the industry is not installed
    /// and is reported in the instance's `status.skills.notInstalled` and
    /// its `WorkspaceReady` message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 30),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub skills: Vec<String>,
}

/// Which database platform holds the tenant's data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DatabaseProvider {
    /// A Neon project (serverless Postgres); the default.
    #[default]
    Neon,
    /// A Supabase project.
    Supabase,
}

/// The tenant's Postgres database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.provider == oldSelf.provider").message("components.database.provider is immutable: changing it would strand the tenant's data; create a new Tenant instead"))]
#[x_kube(validation = Rule::new("has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)").message("components.database.region is immutable: a database cannot move region; create a new Tenant in the new region and move the data"))]
#[x_kube(validation = Rule::new("!has(oldSelf.adminUser) || !has(self.adminUser) || self.adminUser == oldSelf.adminUser").message("components.database.adminUser cannot change once set: the admin user was created in Supabase Auth with that email and is not updated from here; change the email in the application (or create a new Tenant)"))]
#[x_kube(validation = Rule::new("!has(self.adminUser) || (has(self.provider) && self.provider == 'Supabase')").message("components.database.adminUser needs provider Supabase: the admin user is created through Supabase Auth"))]
#[x_kube(validation = Rule::new("!has(self.postgresVersion) || !has(self.provider) || self.provider == 'Neon'").message("components.database.postgresVersion applies to Neon only: Supabase picks the major version of a new project"))]
#[x_kube(validation = Rule::new("has(self.postgresVersion) == has(oldSelf.postgresVersion) && (!has(self.postgresVersion) || self.postgresVersion == oldSelf.postgresVersion)").message("components.database.postgresVersion is immutable: a database's major version cannot change in place (a downgrade never can); create a new Tenant with the version and move the data"))]
pub struct DatabaseComponent {
    /// Database platform: `Neon` (default) or `Supabase`. Immutable.
    #[serde(default)]
    pub provider: DatabaseProvider,
    /// Platform region id (for example `aws-us-east-2` on Neon, `eu-central-1`
    /// on Supabase), honoured on both; Winston's `--neon-region` or
    /// `--supabase-region` when omitted. Immutable once the Tenant exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9][-a-z0-9]*$"))]
    pub region: Option<String>,
    /// Major PostgreSQL version, 14 to 17; Winston's configured default
    /// (`--postgres-version`, 16) when omitted. Neon only. Immutable once the Tenant exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 14, max = 17))]
    pub postgres_version: Option<i32>,
    /// The application's own SQL migrations and seed data, applied in order
    /// (after Winston's tenant schema) and recorded in the tenant database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<AppMigrations>,
    /// An initial admin user of the application, created through the
    /// Supabase Auth admin API with a temporary password that the welcome
    /// email delivers once. Supabase only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<AdminUser>,
}

/// Where the application's migrations come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMigrations {
    /// A ConfigMap in the Tenant's namespace: each key is one SQL file
    /// (for example `001_schema.sql`, `900_seed.sql`), applied in the keys'
    /// byte order, each once, in its own transaction. A file that was
    /// applied must not change (its checksum is recorded); add a new key
    /// instead.
    pub config_map_ref: LocalObjectRef,
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// The application's first administrator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminUser {
    /// The admin's sign-in email; the Tenant's `contactEmail` when omitted.
    /// Fixed once set: the user is created with it and never updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(r#"self.matches("^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:[.][A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")"#).message("must be an email address such as admin@example.com"))]
    pub email: Option<String>,
}

/// Which platform runs the agent service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComputeProvider {
    /// A Railway service; the default.
    #[default]
    Railway,
}

/// The agent service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeComponent {
    /// Compute platform.
    #[serde(default)]
    pub provider: ComputeProvider,
    /// Container image of the agent; Winston's configured default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9][a-z0-9._/:@-]*$"))]
    pub image: Option<String>,
    /// Platform region id. Not supported yet: Winston places Railway
    /// services in the platform's default region, so an instance whose
    /// Tenant sets it is not provisioned (Stalled, reason `RegionUnsupported`)
    /// rather than placed elsewhere than asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9][-a-z0-9]*$"))]
    pub region: Option<String>,
}

/// Which platform hosts the optional web frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FrontendProvider {
    /// A Vercel project; the default.
    #[default]
    Vercel,
}

/// A Git repository the frontend is built from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSource {
    /// Repository as `owner/name`.
    #[schemars(length(min = 3, max = 200), regex(pattern = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"))]
    pub repo: String,
    /// Branch, tag or commit to deploy (letters, digits, `.`, `_`, `-`, `/`;
    /// no `..`); `main` when omitted.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"))]
    #[x_kube(validation = Rule::new("!self.contains('..') && !self.endsWith('/') && !self.endsWith('.lock')").message("ref must be a git branch, tag or commit name such as main, v1.2.0 or 4f2a9c1 (no spaces, '..' or shell characters)"))]
    pub git_ref: Option<String>,
}

/// The optional web frontend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrontendComponent {
    /// Frontend platform.
    #[serde(default)]
    pub provider: FrontendProvider,
    /// Where the frontend's source lives.
    pub git_repository: GitSource,
    /// Framework preset (for example `nextjs`); detected by the platform when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9][-a-z0-9]*$"))]
    pub framework: Option<String>,
    /// Extra environment variables of the frontend, beside the ones Winston
    /// sets (the Supabase URL and keys, `AGENCY_NAME`, the agent's URL):
    /// each a literal `value` (a plain variable) or a `valueFrom` Secret key
    /// (a sensitive variable). At most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['NEXT_PUBLIC_SUPABASE_URL', 'NEXT_PUBLIC_SUPABASE_ANON_KEY', 'SUPABASE_SERVICE_ROLE_KEY', 'AGENCY_NAME', 'NEXT_PUBLIC_AGENT_URL', 'AGENT_GATEWAY_TOKEN', 'WINSTON_MARKER']))").message("components.frontend.env must not set NEXT_PUBLIC_SUPABASE_URL, NEXT_PUBLIC_SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, AGENCY_NAME, NEXT_PUBLIC_AGENT_URL, AGENT_GATEWAY_TOKEN or WINSTON_MARKER: Winston sets them"))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f.name == e.name))").message("components.frontend.env names must be unique"))]
    pub env: Vec<FrontendEnvVar>,
}

/// One extra frontend variable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)").message("set exactly one of value and valueFrom"))]
pub struct FrontendEnvVar {
    /// Variable name: letters, digits and `_`, not starting with a digit.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// A literal value, written as a plain (readable) variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// A key of a Secret in the Tenant's namespace, written as a sensitive
    /// (write-only) variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<SecretKeyRef>,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub secret: String,
    /// The key in it.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Which components a tenant wants. An omitted component is not provisioned;
/// when `components` itself is omitted the tenant gets a database and a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.frontend) || has(self.compute) || (has(self.database) && has(self.database.provider) && self.database.provider == 'Supabase')").message("components.frontend needs a backend it can call: components.compute (the agent service) or a database with provider Supabase (its API serves the browser); a Neon database alone has no API a browser may call, so add compute or use Supabase"))]
#[x_kube(validation = Rule::new("has(self.database) || has(self.compute) || has(self.frontend)").message("components must name at least one of database, compute and frontend; omit components for a database and an agent service"))]
#[x_kube(validation = Rule::new("!has(self.compute) || has(self.compute.image) || has(self.database)").message("components.compute without an image runs Winston's agent, which keeps conversations and memory in the tenant's database: add components.database, or set compute.image to an image that needs none"))]
#[x_kube(validation = Rule::new("!has(oldSelf.database) || has(self.database)").message("components.database cannot be removed once the Tenant has one: that would strand the tenant's data; delete the Tenant to remove its database"))]
pub struct Components {
    /// The tenant's Postgres database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseComponent>,
    /// The agent service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeComponent>,
    /// The optional web frontend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendComponent>,
}

impl Default for Components {
    fn default() -> Self {
        Self {
            database: Some(DatabaseComponent::default()),
            compute: Some(ComputeComponent::default()),
            frontend: None,
        }
    }
}

/// Everything about the customer that the agent's workspace is rendered
/// from. A Tenant's fields, copied into each TenantInstance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentProfile {
    /// The customer's name as shown to people: 1 to 100 characters of text on
    /// one line, without surrounding blanks.
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new(r"self.trim() == self && !self.matches('[\x00-\x1F\x7F]')").message("displayName must be one line of text without control characters or surrounding blanks"))]
    pub display_name: String,
    /// Where the welcome email goes: a plain address such as ops@example.com
    /// (no display name, no `<` or `>`), at most 254 characters.
    #[schemars(length(min = 3, max = 254))]
    #[x_kube(validation = Rule::new(r#"self.matches("^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:[.][A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")"#).message("must be an email address such as ops@example.com"))]
    pub contact_email: String,
    /// The customer's public website: an http(s) URL without user:password@,
    /// at most 2048 characters. Winston fetches it only from public addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != '' && !self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')").message("must be an http(s) URL such as https://example.com, without user:password@"))]
    pub website: Option<String>,
    /// The customer's industry (for example "dental clinic"): one line of text, at most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new(r"self.trim() == self && !self.matches('[\x00-\x1F\x7F]')").message("industry must be one line of text without control characters or surrounding blanks"))]
    pub industry: Option<String>,
    /// Who the agent is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<Persona>,
}

/// What a Tenant buys and how Winston treats its stack: the plan, the
/// components, `paused` and the deletion policy. A Tenant's, copied as it
/// is into each of its TenantInstances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StackSpec {
    /// Plan name from Winston's plan catalog (for example free, starter,
    /// growth, team). Decides resources, features, skills and monthly credits.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    #[x_kube(validation = Rule::new("self != 'system'").message("plan 'system' is reserved for Winston's own LLM calls"))]
    pub plan: String,
    /// Which components to provision. Defaults to a database and an agent service.
    #[serde(default)]
    pub components: Components,
    /// When true Winston stops acting on this stack (no platform calls),
    /// keeping everything as it is. Default false.
    #[serde(default)]
    pub paused: bool,
    /// What happens to external objects when the object is deleted: `Delete`
    /// (default: the database, its data, the service and the frontend are
    /// destroyed) or `Orphan` (they are left in place).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Seconds an instance may take from creation (or from losing `Ready`)
    /// to `Ready` before it is reported `Stalled` with reason
    /// `ProgressDeadlineExceeded` (it keeps retrying at the stalled
    /// interval). 1 to 86400; the plan's `provisioningDeadlineSeconds`,
    /// else Winston's `--provisioning-deadline-seconds` (1080) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub provisioning_deadline_seconds: Option<i64>,
    /// Connectors to the business's own systems (for example its
    /// point-of-sale system), each a type and a Secret of this namespace
    /// holding its credentials. The instance receives the Secret's keys as
    /// variables `WINSTON_CONNECTOR_<TYPE>_<KEY>` (upper case, other
    /// characters as `_`; keys that would give one variable stall the
    /// instance with `ConnectorVariableCollision`); skills that require a
    /// connector type are installed only when it is listed. Values never
    /// appear in status, events or the workspace files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub connectors: Vec<Connector>,
}

/// One connector: its type and the Secret holding its credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    /// The connector type skills name in `requires`, for example `pos`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z][a-z0-9-]*$"))]
    pub type_: String,
    /// The Secret (same namespace) whose keys become the variables.
    pub secret_ref: super::tenant_instance::SecretRef,
}
