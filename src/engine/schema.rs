//! The `schema` step: the tenant migrations (`migrations/tenant`: memories,
//! conversations, messages, usage) applied to the tenant's own database.
//! sqlx records what ran in `_sqlx_migrations` and takes an advisory lock,
//! so reapplying is a read and two runs never race.
use std::borrow::Cow;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;

use super::EngineError;

/// The embedded tenant migrations, in version order.
#[must_use]
pub fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        Cow::Borrowed("agent"),
        MigrationType::Simple,
        include_str!("../../migrations/tenant/0001_agent.sql").into_sql_str(),
        false,
    )])
}

/// Identifies the database behind `database_url` without its credentials:
/// `sha256:` over host, port and database name.
#[must_use]
pub fn target_of(database_url: &str) -> String {
    use sha2::{Digest, Sha256};
    let (host, port, db) = match database_url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => (o.get_host().to_string(), o.get_port(), o.get_database().unwrap_or_default().to_string()),
        Err(_) => (String::new(), 0, String::new()),
    };
    format!("sha256:{}", hex::encode(Sha256::digest(format!("{host}:{port}/{db}"))))
}

/// How many tenant migrations exist.
#[must_use]
pub fn latest_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every pending tenant migration to `database_url`; returns how
/// many were newly applied.
///
/// # Errors
/// `Retryable` when the database is unreachable (a fresh Neon endpoint may
/// take a moment); `Stalled` when a migration itself fails.
pub async fn apply(database_url: &str) -> Result<usize, EngineError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
        .map_err(|e| EngineError::Retryable(format!("failed to connect to the tenant database: {}", redact(&e))))?;
    let applied_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'public' AND tablename = '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .map_err(|e| EngineError::Retryable(format!("failed to read the tenant database: {}", redact(&e))))?;
    let before = if applied_before > 0 {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .map_err(|e| EngineError::Retryable(format!("failed to read applied migrations: {}", redact(&e))))?
    } else {
        0
    };
    let result = migrator().run(&pool).await;
    pool.close().await;
    result.map_err(|e| EngineError::Stalled {
        reason: "MigrationFailed",
        message: format!("failed to apply the tenant migrations: {e}"),
    })?;
    Ok(usize::try_from(latest_version() - before).unwrap_or(0))
}

/// sqlx errors can echo the connection string; keep only the kind.
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        sqlx::Error::Tls(_) => "TLS error".into(),
        _ => "connection error".into(),
    }
}
