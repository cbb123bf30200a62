//! Errors of the controllers, each with a stable category used as Event
//! reason and metric label.
//!
//! Every error is retried with per-object backoff (`super::failure`). What no
//! retry can fix (a missing Tenant, an unknown plan, a ledger another object
//! owns, a child the API server refuses) is also a fact the pure plans turn
//! into `Stalled`. Messages are written for people: they become Event notes
//! and condition messages, so an API error shows the API server's words,
//! never the client's `Debug` output.
use thiserror::Error;

use crate::api::conditions::{api_error_message, is_refusal};

/// What went wrong in a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    #[error("failed to call the Kubernetes API: {}", api_error_message(.0))]
    Kube(#[from] kube::Error),
    /// A write of a child object (`verb` is `create`, `update` or `delete`).
    #[error("failed to {verb} {kind} {name}: {}", api_error_message(.source))]
    Child { verb: &'static str, kind: &'static str, name: String, source: kube::Error },
    #[error("failed to read the object: {0}")]
    InvalidObject(&'static str),
    #[error("failed to update the credit ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The engine's own typed error; its category is the engine's.
    #[error("{0}")]
    Engine(#[source] crate::engine::EngineError),
    #[error("failed to take ownership of {kind} {name}: it is controlled by another owner")]
    Conflict { kind: &'static str, name: String },
}

impl Error {
    /// Whether no retry fixes this error without a change elsewhere (the
    /// API server refused a child, or another owner holds its name).
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::Child { source, .. } => is_refusal(source),
            Self::Conflict { .. } => true,
            Self::Kube(_) | Self::InvalidObject(_) | Self::Ledger(_) | Self::Engine(_) => false,
        }
    }

    /// A stable CamelCase category for Events and metric labels.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApiError",
            Self::Child { source, .. } if is_refusal(source) => "ChildRefused",
            Self::Child { .. } => "KubeApiError",
            Self::InvalidObject(_) => "InvalidObject",
            Self::Conflict { .. } => "Conflict",
            Self::Ledger(_) => "LedgerError",
            Self::Engine(e) => e.category(),
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
            (Error::Engine(crate::engine::EngineError::NoTenantOwner { instance: "a-0".into() }), "NoTenantOwner"),
        ];
        for (error, category) in cases {
            assert_eq!(error.category(), category, "{error}");
            assert!(error.to_string().starts_with("failed to "), "{error}");
        }
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"status": "Failure", "code": code, "message": message}))
                .expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_are_written_for_people_with_what_failed() {
        let quota = "tenantinstances.winston.dev \"acme-0\" is forbidden: exceeded quota: q";
        let refused = Error::Child {
            verb: "create",
            kind: "TenantInstance",
            name: "acme-0".into(),
            source: api_error(403, quota),
        };
        assert_eq!(refused.to_string(), format!("failed to create TenantInstance acme-0: {quota}"));
        assert_eq!((refused.category(), refused.is_terminal()), ("ChildRefused", true));
        let busy = Error::Child {
            verb: "update",
            kind: "CreditLedger",
            name: "acme".into(),
            source: api_error(429, "slow down"),
        };
        assert_eq!((busy.category(), busy.is_terminal()), ("KubeApiError", false));
        let kube = Error::Kube(api_error(500, "etcd is gone"));
        assert_eq!(kube.to_string(), "failed to call the Kubernetes API: etcd is gone");
        for e in [refused, busy, kube] {
            assert!(!e.to_string().contains("Status {") && !e.to_string().contains("code:"), "{e}");
        }
    }
}
