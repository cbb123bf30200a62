//! The `migrations` step: the application's own SQL migrations and seed
//! data (`components.database.migrations.configMapRef`), applied in the
//! order of the ConfigMap's keys after Winston's tenant schema.
//!
//! Each file runs once, in its own transaction together with its record in
//! the tenant database's table `winston_app_migrations` (name, SHA-256
//! checksum, time), so a crash leaves a file either applied and recorded or
//! neither. A file recorded with another checksum stalls the step
//! (`MigrationChanged`): applied migrations never change. A failing file
//! stalls it with PostgreSQL's message and the character and line where it
//! located the error (`MigrationFailed`); nothing of the connection string
//! reaches the message. The set applied is recorded in
//! `status.appMigrations` (count, checksum, database identity), so a
//! steady-state pass reads the ConfigMap and never opens the database.
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgDatabaseError, PgErrorPosition, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::error::Redacted;
use super::progress::{self, Report};
use super::steps::{Pass, StepResult};
use super::{EngineError, schema};
use crate::api::StepName;
use crate::api::tenant_instance::AppMigrationsRecord;

/// The table that records what ran.
const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS winston_app_migrations (\
    name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())";

/// One SQL file of the set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub sql: String,
    pub checksum: String,
}

/// The files of a ConfigMap's data in key order (byte order), with checksums.
#[must_use]
pub fn files(data: &BTreeMap<String, String>) -> Vec<File> {
    data.iter()
        .map(|(name, sql)| File {
            name: name.clone(),
            sql: sql.clone(),
            checksum: format!("sha256:{}", hex::encode(Sha256::digest(sql.as_bytes()))),
        })
        .collect()
}

/// The checksum of the whole set (names and checksums in order).
#[must_use]
pub fn set_checksum(files: &[File]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(f.checksum.as_bytes());
        h.update([0]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// 1-based line of the 1-based character `position` in `sql`.
#[must_use]
pub fn line_of(sql: &str, position: usize) -> usize {
    sql.chars().take(position.saturating_sub(1)).filter(|c| *c == '\n').count() + 1
}

/// Runs the step.
///
/// # Errors
/// See [`EngineError`]: `MigrationsSource` (retried) for a missing or
/// empty ConfigMap, `AppMigration` / `AppMigrationChanged` (stall), and
/// `TenantDatabase` (retried) when the database does not answer.
pub async fn run(pass: &mut Pass<'_>) -> Result<StepResult, EngineError> {
    let Some(url) = pass.database_url.clone() else {
        return Ok(StepResult::Waiting("waiting for the database".into()));
    };
    let source = pass.ti.spec.stack.components.database.as_ref().and_then(|d| d.migrations.as_ref());
    let Some(name) = source.map(|m| m.config_map_ref.name.clone()) else {
        return Ok(StepResult::Done("no application migrations".into()));
    };
    let files = read(pass, &name).await?;
    let record = AppMigrationsRecord {
        count: i64::try_from(files.len()).unwrap_or(i64::MAX),
        checksum: set_checksum(&files),
        database: schema::target_of(&url),
    };
    let done = StepResult::Done(format!("{} application migrations from ConfigMap {name} applied", files.len()));
    if pass.rec.status.app_migrations.as_ref() == Some(&record) {
        return Ok(done);
    }
    // Files run inside this pass: say so before they start, so a long one
    // shows as this step working rather than as the previous step's wait.
    let working = format!("applying {} application migrations from ConfigMap {name}", files.len());
    progress::record(&mut pass.rec.status.steps, StepName::Migrations, &Report::Working(working), Utc::now());
    pass.rec.flush().await?;
    let timeout = Duration::from_secs(pass.engine.args.migration_statement_timeout_seconds.max(1));
    let applied = apply(&url, &files, timeout).await?;
    tracing::info!(instance = %pass.ti.name_any(), configmap = %name, applied, "application migrations applied");
    pass.rec.status.app_migrations = Some(record);
    Ok(done)
}

async fn read(pass: &Pass<'_>, name: &str) -> Result<Vec<File>, EngineError> {
    let api: Api<ConfigMap> =
        Api::namespaced(pass.secrets.clone().into_client(), &pass.ti.namespace().unwrap_or_default());
    let missing = |why: &str| EngineError::MigrationsSource { name: name.to_string(), why: why.to_string() };
    let cm = api.get_opt(name).await?.ok_or_else(|| missing("it does not exist in the Tenant's namespace"))?;
    let data = cm.data.unwrap_or_default();
    if data.is_empty() {
        return Err(missing("it has no data keys (one SQL file per key)"));
    }
    Ok(files(&data))
}

/// Applies the files not yet recorded, in order; returns how many ran.
/// Each statement runs (or waits on a lock) at most `timeout`.
///
/// # Errors
/// As [`run`].
pub async fn apply(url: &str, files: &[File], timeout: Duration) -> Result<usize, EngineError> {
    let unreachable = |doing: &'static str| move |e| EngineError::TenantDatabase { doing, error: Redacted(e) };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(schema::connect_options(url)?)
        .await
        .map_err(unreachable("connect to the tenant database"))?;
    let mut conn = pool.acquire().await.map_err(unreachable("connect to the tenant database"))?;
    let result = apply_on(&mut conn, files, timeout).await;
    drop(conn);
    pool.close().await;
    result
}

async fn apply_on(conn: &mut PgConnection, files: &[File], timeout: Duration) -> Result<usize, EngineError> {
    let unreachable = |doing: &'static str| move |e| EngineError::TenantDatabase { doing, error: Redacted(e) };
    // A statement that runs longer (or waits on a lock longer) is cancelled
    // and its file stalls the step with PostgreSQL's "canceling statement
    // due to statement timeout": a pass, and a deletion waiting for it,
    // is never held longer than that per file.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET statement_timeout = {0}; SET lock_timeout = {0}",
        timeout.as_millis()
    )))
    .execute(&mut *conn)
    .await
    .map_err(unreachable("set the migration timeouts"))?;
    sqlx::raw_sql(TABLE_DDL).execute(&mut *conn).await.map_err(unreachable("create winston_app_migrations"))?;
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT name, checksum FROM winston_app_migrations")
        .fetch_all(&mut *conn)
        .await
        .map_err(unreachable("read winston_app_migrations"))?;
    let recorded: BTreeMap<String, String> = rows.into_iter().collect();
    let mut ran = 0;
    for f in files {
        match recorded.get(&f.name) {
            Some(c) if *c == f.checksum => continue,
            Some(c) => {
                return Err(EngineError::AppMigrationChanged {
                    file: f.name.clone(),
                    applied: c.clone(),
                    now: f.checksum.clone(),
                });
            }
            None => {}
        }
        let mut tx = conn.begin().await.map_err(unreachable("begin a transaction"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(f.sql.clone())).execute(&mut *tx).await.map_err(|e| failed(f, e))?;
        // ON CONFLICT: a concurrent runner recorded it first; its
        // transaction ran the same file, ours rolls back.
        let inserted = sqlx::query(
            "INSERT INTO winston_app_migrations (name, checksum) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&f.name)
        .bind(&f.checksum)
        .execute(&mut *tx)
        .await
        .map_err(unreachable("record an application migration"))?;
        if inserted.rows_affected() == 1 {
            tx.commit().await.map_err(unreachable("commit an application migration"))?;
            ran += 1;
        } else {
            tx.rollback().await.map_err(unreachable("roll back a duplicate migration"))?;
        }
    }
    Ok(ran)
}

/// The error of a failed file: PostgreSQL's message and where in the file
/// it happened; anything but a database error is a retried outage.
fn failed(f: &File, e: sqlx::Error) -> EngineError {
    let sqlx::Error::Database(db) = &e else {
        return EngineError::TenantDatabase { doing: "apply an application migration", error: Redacted(e) };
    };
    let position = db.try_downcast_ref::<PgDatabaseError>().and_then(|p| match p.position() {
        Some(PgErrorPosition::Original(p)) => Some(p),
        _ => None,
    });
    EngineError::AppMigration {
        file: f.name.clone(),
        position,
        line: position.map(|p| line_of(&f.sql, p)),
        message: db.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_in_key_order_with_stable_checksums() {
        let data = BTreeMap::from([
            ("900_seed.sql".to_string(), "INSERT INTO t VALUES (1);".to_string()),
            ("001_schema.sql".to_string(), "CREATE TABLE t (id int);".to_string()),
        ]);
        let f = files(&data);
        assert_eq!(f.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["001_schema.sql", "900_seed.sql"]);
        assert_eq!(set_checksum(&f), set_checksum(&files(&data)));
        let mut changed = data.clone();
        changed.insert("900_seed.sql".into(), "INSERT INTO t VALUES (2);".into());
        assert_ne!(set_checksum(&f), set_checksum(&files(&changed)));
    }

    #[test]
    fn a_position_names_its_line() {
        let sql = "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nSELEC 1;";
        let p = sql.find("SELEC").unwrap() + 1;
        assert_eq!(line_of(sql, p), 3);
        assert_eq!(line_of(sql, 1), 1);
        let e = EngineError::AppMigration {
            file: "002.sql".into(),
            position: Some(p),
            line: Some(3),
            message: "syntax error at or near \"SELEC\"".into(),
        };
        assert!(e.to_string().contains("002.sql at character 51 (line 3)"), "{e}");
        assert_eq!(e.category(), "MigrationFailed");
    }
}
