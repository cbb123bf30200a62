//! The tenant database's schema (`migrations/tenant`), one list for both
//! of its writers: the engine's `schema` step applies it when an instance
//! is provisioned, and the reference agent runtime applies it when it
//! starts. Both run sqlx's migrator over the same `_sqlx_migrations` table,
//! which refuses a database holding a version its list lacks, so the list
//! must be shared, never copied.
use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The embedded tenant migrations, in version order.
#[must_use]
pub fn migrator() -> Migrator {
    let m = |version, name, sql: &'static str| {
        Migration::new(version, Cow::Borrowed(name), MigrationType::Simple, sql.into_sql_str(), false)
    };
    Migrator::with_migrations(vec![
        m(1, "agent", include_str!("../migrations/tenant/0001_agent.sql")),
        m(2, "agent runtime", include_str!("../migrations/tenant/0002_agent_runtime.sql")),
    ])
}
