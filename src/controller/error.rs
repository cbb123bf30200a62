//! Errors of the controllers, each with a stable category used as Event
//! reason and metric label.
use thiserror::Error;

/// What went wrong in a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    #[error("failed to call the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("failed to run the finalizer: {0}")]
    Finalizer(String),
    #[error("failed to read the object: {0}")]
    InvalidObject(&'static str),
    #[error("failed to serialise an object: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("failed to update the credit ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("failed to provision: {0}")]
    Engine(String),
    #[error("failed to take ownership of {kind} {name}: it is controlled by another owner")]
    Conflict { kind: &'static str, name: String },
}

impl Error {
    /// A stable CamelCase category for Events and metric labels.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Finalizer(_) => "FinalizerError",
            Self::InvalidObject(_) => "InvalidObject",
            Self::Serialize(_) => "SerializeError",
            Self::Conflict { .. } => "Conflict",
            Self::Ledger(_) => "LedgerError",
            Self::Engine(_) => "EngineError",
        }
    }
}

impl<E: std::error::Error + 'static> From<kube::runtime::finalizer::Error<E>> for Error {
    fn from(e: kube::runtime::finalizer::Error<E>) -> Self {
        Self::Finalizer(e.to_string())
    }
}

/// Result alias for the controllers.
pub type Result<T, E = Error> = std::result::Result<T, E>;
