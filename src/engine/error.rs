//! Why a step did not converge, kept typed up to the one place that decides
//! what to do about it ([`super::run`]): each error keeps its source and
//! has a stable [`EngineError::category`] (Stalled reason, metric label)
//! and a [`Disposition`] (requeue soon, back off, stall, or give the pass
//! up to a concurrent writer). Both come from one table, so they cannot
//! disagree.
use std::time::Duration;

use crate::api::StepName;
use crate::ledger::LedgerError;
use crate::providers::ProviderError;

/// What a pass does about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Our own optimistic status write lost (409): the pass ends at once and
    /// the caller's error policy retries from a fresh read.
    Conflict,
    /// A platform asked us to slow down or wait for its own operation: not a
    /// failure (DESIGN.md: 429 is never a failure), just a later retry.
    Throttle,
    /// Worth retrying with per-object backoff.
    Retry,
    /// Blocked until the spec or the platform credentials change: the
    /// instance is Stalled with the category as reason.
    Stall,
}

/// Why a step (or a teardown) did not converge in this pass.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A platform call failed; the provider's error says which and how.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Shown as the API server's own words, never the client's debug text.
    #[error("failed to call the Kubernetes API: {}", crate::api::conditions::api_error_message(.0))]
    Kube(#[from] kube::Error),
    #[error("failed to use the ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The tenant database did not answer (a fresh endpoint may take a moment).
    #[error("failed to {doing}: {error}")]
    TenantDatabase { doing: &'static str, error: Redacted },
    /// The tenant database URL a platform handed out cannot be parsed.
    #[error("failed to parse the tenant database URL")]
    InvalidDatabaseUrl,
    /// A tenant migration itself failed.
    #[error("failed to apply the tenant migrations: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// A platform object is in a terminal failed state (e.g. a failed
    /// deployment); `redeploying` when the pass asked the platform to try again
    /// (retried), otherwise nothing will change it and the instance stalls.
    #[error("failed to bring up {} object {id}: {reason}{}", .step.as_str(), if *.redeploying { "; redeploying" } else { "" })]
    ObjectFailed { step: StepName, id: String, reason: String, redeploying: bool },
    /// More than one platform object carries the instance's marker.
    #[error(
        "failed to tell which object is ours: {} objects carry marker {marker} on the {} step's platform ({}); \
         Winston never deletes automatically: delete the extra ones by hand",
        .ids.len(), .step.as_str(), .ids.join(", ")
    )]
    AmbiguousObjects { step: StepName, marker: String, ids: Vec<String> },
    /// The instance has no controlling Tenant whose account its key could bill.
    #[error(
        "failed to find the Tenant that controls TenantInstance {instance} (an ownerReference of kind Tenant with \
         controller: true), so its API key could not bill anybody; create instances through a Tenant"
    )]
    NoTenantOwner { instance: String },
    /// The instance carries another plan than the Tenant that controls it
    /// (or the reserved plan `system`): provisioning it would bypass the
    /// Tenant's plan.
    #[error(
        "failed to accept plan \"{plan}\" on TenantInstance {instance}: {why}; an instance carries its Tenant's plan: \
         change the plan on the Tenant (which updates its instances), or delete this instance"
    )]
    PlanMismatch { instance: String, plan: String, why: String },
    /// A Secret the step writes exists and belongs to someone else.
    #[error("failed to take Secret {name}: it exists and is not owned by this instance; rename or delete it")]
    SecretConflict { name: String },
    /// A Secret the engine wrote earlier lacks a value it needs.
    #[error("failed to read Secret {name}: it lacks {missing}")]
    MalformedSecret { name: String, missing: &'static str },
    /// The Supabase database path is asked for but not configured.
    #[error("failed to use the Supabase database provider: it needs WINSTON_SUPABASE_ORGANIZATION on the controller")]
    SupabaseNotConfigured,
    /// The frontend's repository belongs to an organisation the operator
    /// did not allow (`--frontend-github-org`).
    #[error(
        "failed to accept frontend repository {repo}: organisation {org} is not on the controller's \
         --frontend-github-org list (WINSTON_FRONTEND_GITHUB_ORGS); nothing was created on Vercel"
    )]
    RepositoryNotAllowed { repo: String, org: String },
    /// The spec asks for something that cannot be built as written.
    #[error("failed to read the spec: {0}")]
    InvalidSpec(&'static str),
    /// A step ran without the result of a step before it.
    #[error("failed to run the step: {0}")]
    MissingInput(&'static str),
    /// The application migrations' ConfigMap is missing or unusable.
    #[error("failed to read the application migrations from ConfigMap {name}: {why}")]
    MigrationsSource { name: String, why: String },
    /// An application migration failed in the database; `position` is the
    /// 1-based character in the file where PostgreSQL located the error.
    #[error(
        "failed to apply application migration {file}{}: {message}; fix the file (or add a new one) and the step retries",
        .position.map(|p| format!(" at character {p} (line {})", .line.unwrap_or(0))).unwrap_or_default()
    )]
    AppMigration { file: String, position: Option<usize>, line: Option<usize>, message: String },
    /// An application migration that was applied has changed since.
    #[error(
        "failed to accept application migration {file}: it was applied with checksum {applied} and now has {now};          applied migrations never change: restore it and add the change as a new key"
    )]
    AppMigrationChanged { file: String, applied: String, now: String },
    /// A frontend variable names a Secret key that does not exist.
    #[error("failed to read frontend variable {variable}: Secret {secret} has no key {key} in the Tenant's namespace")]
    EnvSecretMissing { variable: String, secret: String, key: String },
    /// Two or more connector Secret keys become one service variable (the
    /// message names the keys, never a value).
    #[error("failed to deliver the connectors: {0}")]
    ConnectorVariableCollision(String),
    /// The Supabase project did not report a key a step needs.
    #[error("failed to read the Supabase project's {0} key (the Management API token may not reveal it)")]
    SupabaseKeyMissing(&'static str),
}

impl EngineError {
    /// One table: the category and what to do about the error.
    fn class(&self) -> (&'static str, Disposition) {
        use Disposition::{Conflict, Retry, Stall};
        match self {
            Self::Provider(e) => provider_class(e),
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => ("Conflict", Conflict),
            Self::Kube(_) => ("KubeApiError", Retry),
            Self::Ledger(_) => ("LedgerError", Retry),
            Self::TenantDatabase { .. } => ("TenantDatabaseUnavailable", Retry),
            Self::InvalidDatabaseUrl => ("InvalidDatabaseUrl", Stall),
            Self::Migration(_) => ("MigrationFailed", Stall),
            // Terminal and nothing to retry (no redeploy asked): a human decides.
            Self::ObjectFailed { redeploying: false, .. } => ("ObjectFailed", Stall),
            Self::ObjectFailed { .. } => ("ObjectFailed", Retry),
            Self::AmbiguousObjects { .. } => ("AmbiguousObjects", Stall),
            Self::NoTenantOwner { .. } => ("NoTenantOwner", Stall),
            Self::PlanMismatch { .. } => ("PlanMismatch", Stall),
            Self::SecretConflict { .. } => ("SecretConflict", Stall),
            Self::MalformedSecret { .. } => ("MalformedSecret", Retry),
            Self::SupabaseNotConfigured => ("SupabaseNotConfigured", Stall),
            Self::RepositoryNotAllowed { .. } => ("RepositoryNotAllowed", Stall),
            Self::InvalidSpec(_) => ("InvalidSpec", Retry),
            Self::MissingInput(_) => ("MissingInput", Retry),
            Self::MigrationsSource { .. } => ("MigrationsSourceMissing", Retry),
            Self::AppMigration { .. } => ("MigrationFailed", Stall),
            Self::AppMigrationChanged { .. } => ("MigrationChanged", Stall),
            Self::SupabaseKeyMissing(_) => ("SupabaseKeyMissing", Retry),
            Self::EnvSecretMissing { .. } => ("EnvSecretMissing", Retry),
            // Renaming a key is a person's decision: retried on a spec
            // change or every --stalled-retry-seconds.
            Self::ConnectorVariableCollision(_) => ("ConnectorVariableCollision", Stall),
        }
    }

    /// A stable CamelCase name: the Stalled reason when the error stalls,
    /// the metric label when a pass fails with it.
    #[must_use]
    pub fn category(&self) -> &'static str {
        self.class().0
    }

    /// Whether the pass retries soon, backs off, stalls or gives up to a
    /// concurrent writer.
    #[must_use]
    pub fn disposition(&self) -> Disposition {
        self.class().1
    }

    /// How long the platform asked us to wait, if it did.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Provider(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Provider errors a retry cannot fix stall (the operator must fix a token
/// or the spec); throttling waits; the rest backs off.
fn provider_class(e: &ProviderError) -> (&'static str, Disposition) {
    use Disposition::{Retry, Stall, Throttle};
    match e {
        ProviderError::Unauthorized { .. } => ("Unauthorized", Stall),
        ProviderError::NotFound { .. } => ("NotFound", Stall),
        ProviderError::Forbidden { .. } => ("Forbidden", Stall),
        ProviderError::Invalid { .. } => ("Rejected", Stall),
        ProviderError::RateLimited { .. } | ProviderError::Locked { .. } | ProviderError::CircuitOpen { .. } => {
            ("Throttled", Throttle)
        }
        ProviderError::Network { .. }
        | ProviderError::Timeout { .. }
        | ProviderError::Server { .. }
        | ProviderError::Decode { .. } => ("PlatformUnavailable", Retry),
    }
}

/// A tenant-database error whose text can echo the connection string (and
/// with it the tenant's password): kept for inspection, shown only by kind.
pub struct Redacted(pub sqlx::Error);

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            sqlx::Error::Database(d) => f.write_str(d.message()),
            sqlx::Error::Io(io) => write!(f, "{io}"),
            sqlx::Error::PoolTimedOut => f.write_str("timed out"),
            sqlx::Error::Tls(_) => f.write_str("TLS error"),
            _ => f.write_str("connection error"),
        }
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redacted({self})")
    }
}

impl std::error::Error for Redacted {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    fn provider(status: u16) -> EngineError {
        ProviderError::from_status(Platform::Railway, status, "nope".into(), None).into()
    }

    #[test]
    fn categories_decide_stall_throttle_and_retry() {
        let mismatch = EngineError::PlanMismatch { instance: "a-0".into(), plan: "team".into(), why: "x".into() };
        let rows: [(EngineError, &str, Disposition); 11] = [
            (mismatch, "PlanMismatch", Disposition::Stall),
            (provider(401), "Unauthorized", Disposition::Stall),
            (provider(404), "NotFound", Disposition::Stall),
            (provider(400), "Rejected", Disposition::Stall),
            (provider(429), "Throttled", Disposition::Throttle),
            (provider(423), "Throttled", Disposition::Throttle),
            (provider(503), "PlatformUnavailable", Disposition::Retry),
            (EngineError::NoTenantOwner { instance: "a-0".into() }, "NoTenantOwner", Disposition::Stall),
            (EngineError::InvalidDatabaseUrl, "InvalidDatabaseUrl", Disposition::Stall),
            (
                EngineError::ObjectFailed {
                    step: StepName::Service,
                    id: "s".into(),
                    reason: "x".into(),
                    redeploying: true,
                },
                "ObjectFailed",
                Disposition::Retry,
            ),
            (
                EngineError::ObjectFailed {
                    step: StepName::Database,
                    id: "p".into(),
                    reason: "project status INIT_FAILED".into(),
                    redeploying: false,
                },
                "ObjectFailed",
                Disposition::Stall,
            ),
        ];
        for (e, category, disposition) in rows {
            assert_eq!((e.category(), e.disposition()), (category, disposition), "{e}");
            assert!(e.to_string().starts_with("failed"), "{e}");
        }
    }

    #[test]
    fn a_kubernetes_error_reads_as_the_api_servers_words() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden", "message": "tenants.winston.dev \"a\" is forbidden"
        }))
        .expect("status");
        let e = EngineError::Kube(kube::Error::Api(Box::new(status)));
        assert_eq!(e.to_string(), "failed to call the Kubernetes API: tenants.winston.dev \"a\" is forbidden");
    }

    #[test]
    fn a_tenant_database_error_never_shows_its_text() {
        let e = EngineError::TenantDatabase {
            doing: "connect to the tenant database",
            error: Redacted(sqlx::Error::Configuration("postgresql://u:secret@h/db".into())),
        };
        assert_eq!(e.to_string(), "failed to connect to the tenant database: connection error");
        assert!(!format!("{e:?}").contains("secret"), "{e:?}");
    }
}
