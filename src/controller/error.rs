//! Errors of the controllers, each with a stable category used as Event
//! reason and metric label.
//!
//! Every error is transient from the controller's point of view: the
//! reconcile is retried with per-object backoff (`super::failure`). What no
//! retry can fix (a missing Tenant, an unknown plan, a ledger another object
//! owns) is not an error but a fact the pure plans turn into `Stalled`.
use thiserror::Error;

/// What went wrong in a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    #[error("failed to call the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("failed to read the object: {0}")]
    InvalidObject(&'static str),
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
            Self::InvalidObject(_) => "InvalidObject",
            Self::Conflict { .. } => "Conflict",
            Self::Ledger(_) => "LedgerError",
            Self::Engine(_) => "EngineError",
        }
    }
}

/// Result alias for the controllers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn categories_are_stable_camel_case() {
        let cases = [
            (Error::InvalidObject("Tenant without namespace"), "InvalidObject"),
            (Error::Conflict { kind: "CreditLedger", name: "acme".into() }, "Conflict"),
            (Error::Ledger(crate::ledger::LedgerError::UnknownAccount("a".into())), "LedgerError"),
            (Error::Engine("boom".into()), "EngineError"),
        ];
        for (error, category) in cases {
            assert_eq!(error.category(), category, "{error}");
            assert!(error.to_string().starts_with("failed to "), "{error}");
        }
    }
}
