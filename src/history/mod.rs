//! The configuration history from the command line: `winston status
//! TENANT --history` lists the workspace versions kept for one of the
//! tenant's instances, `winston workspace diff TENANT [FROM] [TO]` shows
//! what changed between two of them.
//!
//! Reads the control database only (the versions are the engine's,
//! recorded through `ledger::snapshots`); the cluster is asked nothing but,
//! when `-n` is not given, the kubeconfig's namespace. [`view`] draws.
pub mod view;

use std::io::Write as _;

use crate::ledger::snapshots::Snapshot;
use crate::ledger::{DatabaseUrl, Ledger, LedgerError};

/// Which instance's history, and where it is kept.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Namespace of the tenant (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The instance's ordinal (instance `<tenant>-<N>`).
    #[arg(long, default_value_t = 0)]
    pub instance: i32,
    /// PostgreSQL URL of Winston's own database, where the history is kept.
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
}

/// Arguments of `winston workspace`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkspaceArgs {
    #[command(subcommand)]
    pub command: WorkspaceCommand,
}

/// Subcommands of `winston workspace`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum WorkspaceCommand {
    /// Show a unified diff per file between two kept workspace versions
    /// (default: the last two).
    Diff {
        /// The tenant.
        tenant: String,
        /// The version to compare from: an index from `winston status TENANT --history`
        /// (1 = oldest kept) or a hash prefix (at least 6 hex digits).
        from: Option<String>,
        /// The version to compare to (default: the newest).
        to: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// Errors of the history commands.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("failed to read the configuration history: WINSTON_DATABASE_URL (or --database-url) is required")]
    NoDatabase,
    #[error("failed to find the namespace in the kubeconfig (give -n): {0}")]
    Namespace(#[source] kube::config::InferConfigError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("failed to find a kept workspace version of instance {instance} in namespace {namespace:?}")]
    Empty { namespace: String, instance: String },
    #[error(transparent)]
    Select(#[from] view::SelectError),
    #[error("failed to write the view: {0}")]
    Output(#[from] std::io::Error),
}

impl HistoryError {
    /// A stable, low-cardinality name.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoDatabase => "no_database",
            Self::Namespace(_) => "namespace",
            Self::Ledger(e) => e.category(),
            Self::Empty { .. } => "not_found",
            Self::Select(_) => "bad_selector",
            Self::Output(_) => "output",
        }
    }
}

/// Prints the kept versions of instance `target.instance` of `tenant`.
///
/// # Errors
/// No database URL, an unreadable database, no version kept, or stdout.
pub async fn list(tenant: &str, target: Target) -> Result<(), HistoryError> {
    let (title, versions) = load(tenant, target).await?;
    std::io::stdout().write_all(view::list(&title, &versions).as_bytes())?;
    Ok(())
}

/// Runs `winston workspace`.
///
/// # Errors
/// As [`list`], and selectors that pick no version.
pub async fn run(args: WorkspaceArgs) -> Result<(), HistoryError> {
    match args.command {
        WorkspaceCommand::Diff { tenant, from, to, target } => {
            let (_, versions) = load(&tenant, target).await?;
            let (a, b) = view::pick(&versions, from.as_deref(), to.as_deref())?;
            std::io::stdout().write_all(view::diff(&versions, a, b).as_bytes())?;
            Ok(())
        }
    }
}

/// The instance's versions (oldest first) and a title naming it.
async fn load(tenant: &str, target: Target) -> Result<(String, Vec<Snapshot>), HistoryError> {
    let url = target.database_url.ok_or(HistoryError::NoDatabase)?;
    let namespace = match target.namespace {
        Some(ns) => ns,
        None => kube::Config::infer().await.map_err(HistoryError::Namespace)?.default_namespace,
    };
    let ledger = Ledger::connect(url.expose(), 1).await?;
    let versions = ledger.snapshots(&namespace, tenant, target.instance).await;
    ledger.pool().close().await;
    let versions = versions?;
    let instance = versions.last().map_or_else(|| format!("{tenant}-{}", target.instance), |v| v.instance.clone());
    if versions.is_empty() {
        return Err(HistoryError::Empty { namespace, instance });
    }
    Ok((format!("{namespace}/{instance}"), versions))
}
