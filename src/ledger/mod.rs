//! Credit accounting on PostgreSQL (Winston's own database, `migrations/control`).
//!
//! The ledger is the source of truth for money-like data: accounts, grants,
//! period allotments, reservations, usage records and tenant API keys. It knows
//! nothing about Kubernetes (the CreditLedger controller calls this API) nor
//! about HTTP (the proxy calls it); it only guarantees the money rules:
//!
//! - credits are integers (`i64`), never floating point;
//! - the spendable balance never goes below zero, under any concurrency:
//!   admission is one SQL function call under the account's row lock
//!   ([`Ledger::hold`]), alone or many in one commit ([`GroupCommit`]);
//! - a grant id credits once, a period resets once, a request id is billed
//!   once ([`Ledger::settle`] is idempotent per `(account, request id)`);
//! - holds belong to a live proxy session ([`ProxySession`]): a dead
//!   process's holds come back at once ([`Ledger::expire_reservations`]);
//! - a replica may admit requests in memory against a credit lease taken
//!   from the account in chunks ([`Leases`]); a lease is a hold like any
//!   other (same owner, same recovery), never more than was available;
//! - an idempotency key that completed is never admitted again within its
//!   window ([`Ledger::hold`]);
//! - the period's credits are derived (allotment minus what was spent from
//!   it), so no sequence of allotment changes mints credits.
mod accounts;
mod error;
mod group;
pub mod keys;
mod lease;
mod migrate;
pub mod money;
mod reserve;
mod session;
pub mod snapshots;

pub use error::LedgerError;
pub use group::{DEFAULT_MAX_BATCH, GroupCommit};
pub use keys::{ActiveKey, IssuedKey, hash_key};
pub use lease::{LeaseSettings, LeaseStats, Leases};
pub use migrate::{migrate, migrator};
pub use money::HoldShape;
pub use reserve::{HoldRequest, IDEMPOTENCY_WINDOW, Reservation, Settlement, Usage};
pub use session::ProxySession;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A pooled connection idle this long is pinged before it is handed out.
const PING_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A PostgreSQL connection URL as given on the command line. It may carry a
/// password, so `Debug` never shows it; [`DatabaseUrl::expose`] is the only
/// way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL itself, for connecting. Never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// Connection options for Winston's database: every connection commits
/// synchronously whatever the server's default, because the durability
/// promise (an acknowledged response is recorded) rests on it.
///
/// # Errors
/// When the URL cannot be parsed (the error does not repeat it).
pub fn connect_options(database_url: &str) -> Result<PgConnectOptions, LedgerError> {
    let options: PgConnectOptions = database_url.parse().map_err(LedgerError::Connect)?;
    Ok(options.options([("synchronous_commit", "on")]))
}

/// Handle on the ledger database. Cheap to clone (the pool is shared).
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: PgPool,
}

/// A credit grant as declared by its writer; `id` must be unique forever
/// (e.g. `"<namespace>/<ledger>/<grant name>"`), which makes applying it idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub amount: i64,
    pub reason: String,
}

/// A billing period `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A point-in-time view of one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub account: String,
    /// Credits owned: remaining period allotment plus remaining granted credits.
    pub balance: i64,
    /// Credits held by open reservations.
    pub reserved: i64,
    /// `balance - reserved`: what a new request may reserve.
    pub available: i64,
    /// Credits debited since the current period started.
    pub used_this_period: i64,
    /// The allotment the current period started with.
    pub allotment: i64,
    pub low_threshold_pct: i32,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

impl Balance {
    /// True when the balance is under `low_threshold_pct` % of the allotment.
    #[must_use]
    pub fn low(&self) -> bool {
        money::is_low(self.balance, self.allotment, self.low_threshold_pct)
    }

    /// True when nothing is left to spend.
    #[must_use]
    pub fn exhausted(&self) -> bool {
        self.balance <= 0
    }
}

impl Ledger {
    /// Wraps an existing pool (migrations are not run).
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Connects with a pool of at most `max_connections`.
    ///
    /// # Errors
    /// Fails when the database cannot be reached.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, LedgerError> {
        let options = connect_options(database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            // sqlx pings every connection it hands out by default: a round
            // trip before every statement, on the proxy's money path. Only a
            // connection that sat idle for a while is checked; one cut
            // sooner fails its first statement and is dropped, and the
            // group commit sends its batch again on another
            // (`LedgerError::connection_lost`).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(LedgerError::Connect)?;
        Ok(Self { pool })
    }

    /// The underlying pool (for tests and tooling).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the embedded `migrations/control` to this database.
    ///
    /// # Errors
    /// Fails when a migration fails or the applied history diverges.
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        migrator().run(&self.pool).await.map_err(LedgerError::Migrate)
    }
}

#[cfg(test)]
mod tests {
    use super::DatabaseUrl;

    #[test]
    fn database_urls_never_show_in_debug() {
        let url = DatabaseUrl::from("postgres://winston:hunter2@db/winston".to_string());
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.expose(), "postgres://winston:hunter2@db/winston");
    }
}
