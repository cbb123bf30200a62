//! The ledger's error type.

/// Everything a ledger operation can fail with. Messages never carry secrets
/// (no keys, no connection strings).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("failed to connect to the ledger database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("failed to migrate the ledger database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("failed to query the ledger database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("failed to find ledger account {0:?}")]
    UnknownAccount(String),
    #[error("failed to reserve {needed} credits: only {available} available")]
    Insufficient {
        needed: i64,
        available: i64,
        /// The balance is under the account's low threshold.
        low: bool,
    },
    #[error("failed to reserve: idempotency key {0:?} is in flight")]
    InFlight(String),
    #[error("failed to reserve: idempotency key {key:?} already completed (billed {credits} credits)")]
    AlreadyCompleted { key: String, credits: i64 },
    #[error("failed to register the key: it was revoked or belongs to another account")]
    KeyUnusable,
    #[error("failed to accept amount {0}: credits must not be negative")]
    InvalidAmount(i64),
    #[error("failed to read or write a configuration snapshot's files: {0}")]
    Snapshot(#[source] serde_json::Error),
}

impl LedgerError {
    /// The database connection was lost: the server ended the session
    /// (SQLSTATE class 57P, a restart or `pg_terminate_backend`; the server
    /// says so before it reads the next statement, so that statement did
    /// not run), the connection failed (class 08) or the socket did. Every
    /// ledger operation is safe to send again on another connection: a
    /// settlement is idempotent, a hold or lease that did commit unseen
    /// conflicts on its id and is released with its owner's session.
    #[must_use]
    pub fn connection_lost(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Io(_)) => true,
            Self::Db(sqlx::Error::Database(d)) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
            _ => false,
        }
    }

    /// A stable, low-cardinality name for metrics and events.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Migrate(_) => "migrate",
            Self::Db(_) => "database",
            Self::UnknownAccount(_) => "unknown_account",
            Self::Insufficient { .. } => "insufficient_credits",
            Self::InFlight(_) => "in_flight",
            Self::AlreadyCompleted { .. } => "already_completed",
            Self::InvalidAmount(_) => "invalid_amount",
            Self::KeyUnusable => "key_unusable",
            Self::Snapshot(_) => "snapshot",
        }
    }
}
