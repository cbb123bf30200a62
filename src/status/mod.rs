//! `winston status [TENANT] [-n NS] [-A] [-w]`: a readable view of tenants,
//! their instances' provisioning steps (state, attempts, durations), URLs,
//! credentials Secret names and credits, once or live. Also the kubectl
//! plugin `kubectl winston status` (the binary installed or linked as
//! `kubectl-winston`). With `--history`, the configuration history of one
//! instance instead (see [`crate::history`]).
//!
//! Reads only (get/list/watch of the three kinds); writes nothing anywhere.
//! [`model`] gathers, [`render`] draws (pure), `fetch` talks to the API server.
mod fetch;
pub mod format;
pub mod model;
pub mod render;

use std::ffi::OsStr;
use std::path::Path;

/// Arguments of `winston status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Show this tenant in detail (steps, URLs, credentials, credits); all tenants as a table when omitted.
    pub tenant: Option<String>,
    /// Namespace to look in (default: the kubeconfig context's namespace).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "tenant")]
    pub all_namespaces: bool,
    /// Follow live: redraw as the objects change, until Ctrl-C.
    #[arg(short, long)]
    pub watch: bool,
    /// With -w: exit 0 as soon as every tenant shown is Ready (for scripts and demos).
    #[arg(long, requires = "watch")]
    pub until_ready: bool,
    /// List the workspace versions kept for one of the tenant's instances
    /// (generation, time, hash, files changed), from Winston's database.
    #[arg(long, requires = "tenant", conflicts_with = "watch")]
    pub history: bool,
    /// With --history: the instance's ordinal (instance `<tenant>-<N>`).
    #[arg(long, requires = "history", default_value_t = 0)]
    pub instance: i32,
    /// With --history: PostgreSQL URL of Winston's own database.
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<crate::ledger::DatabaseUrl>,
}

/// Errors of `winston status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("failed to connect to the Kubernetes API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("failed to read {what} from the Kubernetes API server: {source}")]
    Read { what: &'static str, source: kube::Error },
    #[error(
        "failed to find the Winston CRDs on this cluster; install them with `kubectl apply --server-side -f crds/` or the Helm chart"
    )]
    NotInstalled,
    #[error("failed to find Tenant {name:?} in namespace {namespace:?}")]
    NotFound { namespace: String, name: String },
    #[error("failed to write the view: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
}

impl StatusError {
    /// A stable, low-cardinality name.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Read { .. } => "read",
            Self::NotInstalled => "not_installed",
            Self::NotFound { .. } => "not_found",
            Self::Output(_) => "output",
            Self::History(e) => e.category(),
        }
    }
}

/// Which tenants to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant in one namespace.
    Namespace(String),
    /// One tenant.
    Tenant { namespace: String, name: String },
    /// Every namespace.
    All,
}

/// Runs the view against the cluster of the current kubeconfig (or in-cluster config).
///
/// # Errors
/// When the API server cannot be reached or read, a named tenant does not
/// exist (one-shot mode only: `-w` waits for it), or stdout fails.
pub async fn run(args: StatusArgs) -> Result<(), StatusError> {
    if let (true, Some(tenant)) = (args.history, &args.tenant) {
        let target = crate::history::Target {
            namespace: args.namespace,
            instance: args.instance,
            database_url: args.database_url,
        };
        return Ok(crate::history::list(tenant, target).await?);
    }
    let client = kube::Client::try_default().await.map_err(StatusError::Connect)?;
    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    let scope = match (args.all_namespaces, args.tenant) {
        (true, _) => Scope::All,
        (false, Some(name)) => Scope::Tenant { namespace, name },
        (false, None) => Scope::Namespace(namespace),
    };
    if args.watch { fetch::follow(client, scope, args.until_ready).await } else { fetch::once(client, scope).await }
}

/// The name to show in help and errors when the binary runs as the kubectl
/// plugin (`argv[0]` is `kubectl-winston`, e.g. through a symlink), so usage
/// reads `kubectl winston status`. `None` for a plain `winston`.
#[must_use]
pub fn plugin_bin_name(argv0: Option<&OsStr>) -> Option<&'static str> {
    let stem = Path::new(argv0?).file_stem()?;
    (stem == "kubectl-winston").then_some("kubectl winston")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_is_recognised_by_its_file_name_only() {
        for (argv0, want) in [
            ("kubectl-winston", Some("kubectl winston")),
            ("/usr/local/bin/kubectl-winston", Some("kubectl winston")),
            ("kubectl-winston.exe", Some("kubectl winston")),
            ("winston", None),
            ("/opt/kubectl-winston-old/winston", None),
        ] {
            assert_eq!(plugin_bin_name(Some(OsStr::new(argv0))), want, "{argv0}");
        }
        assert_eq!(plugin_bin_name(None), None);
    }
}
