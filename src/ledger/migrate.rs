//! The control-database migrations, embedded in the binary so `winston
//! migrate` needs no files beside it.
use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Ledger, LedgerError};

/// The embedded `migrations/control` set, in version order.
#[must_use]
pub fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("ledger"),
        MigrationType::Simple,
        include_str!("../../migrations/control/0001_ledger.sql").into_sql_str(),
        false,
    )])
}

/// Connects to `database_url` and applies every pending control migration.
/// Safe to run repeatedly and concurrently (sqlx takes an advisory lock).
///
/// # Errors
/// Fails when the database is unreachable or a migration fails.
pub async fn migrate(database_url: &str) -> Result<(), LedgerError> {
    let ledger = Ledger::connect(database_url, 2).await?;
    ledger.migrate().await?;
    ledger.pool().close().await;
    Ok(())
}
