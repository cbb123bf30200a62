//! The control-database migrations, embedded in the binary so `winston
//! migrate` needs no files beside it.
use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::{Ledger, LedgerError};

/// The embedded `migrations/control` set, in version order.
#[must_use]
pub fn migrator() -> Migrator {
    let migration = |version, name, sql: &'static str| {
        Migration::new(version, Cow::Borrowed(name), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        migration(1, "ledger", include_str!("../../migrations/control/0001_ledger.sql")),
        migration(2, "meter integrity", include_str!("../../migrations/control/0002_meter_integrity.sql")),
        migration(3, "stripe events", include_str!("../../migrations/control/0003_stripe_events.sql")),
        migration(4, "transcripts", include_str!("../../migrations/control/0004_transcripts.sql")),
        migration(5, "group commit", include_str!("../../migrations/control/0005_group_commit.sql")),
        migration(6, "config snapshots", include_str!("../../migrations/control/0006_config_snapshots.sql")),
        migration(7, "credit leases", include_str!("../../migrations/control/0007_credit_leases.sql")),
        migration(8, "settle batch", include_str!("../../migrations/control/0008_settle_batch.sql")),
        migration(9, "live owners", include_str!("../../migrations/control/0009_live_owners.sql")),
        migration(10, "commit batch", include_str!("../../migrations/control/0010_commit_batch.sql")),
    ])
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
