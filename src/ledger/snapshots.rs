//! Configuration history (the seeds' `config_snapshots`): every workspace
//! version applied to an instance's agent service, kept in the control
//! database with its rendered files, a bounded number per instance.
//!
//! The engine records a version once the platform holds it
//! ([`Ledger::record_snapshot`]); `winston status --history` and `winston
//! workspace diff` read them ([`Ledger::snapshots`]); teardown forgets them
//! ([`Ledger::delete_snapshots`]). What a version is and when it counts as
//! applied is the engine's business; this module only keeps rows.
//!
//! # Guarantees
//! - Recording is idempotent per version: when the instance's newest row
//!   already has the hash, nothing is written, so a retried step (a crash
//!   between the platform write and this one, a resync) never duplicates a
//!   version. A return to an older version (A, B, A) is a new version.
//! - Concurrent recorders of one instance are serialised by a transaction
//!   advisory lock on its uid, so two racing passes cannot both insert.
//! - The bound holds after every commit: rows beyond the newest `keep` are
//!   deleted in the transaction that inserted the new one.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Ledger, LedgerError};

/// The history kept per instance when the caller does not say otherwise.
pub const DEFAULT_KEEP: u32 = 20;

/// A version to record: which instance, which spec generation, which files.
#[derive(Clone, Debug)]
pub struct NewSnapshot<'a> {
    /// The TenantInstance's uid: a re-created instance starts a new history.
    pub instance_uid: &'a str,
    pub namespace: &'a str,
    pub instance: &'a str,
    pub tenant: &'a str,
    pub ordinal: i32,
    pub generation: i64,
    pub workspace_hash: &'a str,
    pub files: &'a BTreeMap<String, String>,
}

/// What [`Ledger::record_snapshot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A new row; `pruned` older rows were deleted to keep the bound.
    Inserted { pruned: u64 },
    /// The newest row already had this hash: nothing written.
    Unchanged,
}

/// One kept version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Increasing in recording order (per database, not per instance).
    pub id: i64,
    pub instance_uid: String,
    pub instance: String,
    pub generation: i64,
    pub workspace_hash: String,
    pub recorded_at: DateTime<Utc>,
    pub files: BTreeMap<String, String>,
}

type Row = (i64, String, String, i64, String, DateTime<Utc>, String);

impl Ledger {
    /// Records `s` as the instance's newest version unless it already is,
    /// keeping at most `keep` versions (at least one).
    ///
    /// # Errors
    /// Database failures; nothing is written then (one transaction).
    pub async fn record_snapshot(&self, s: &NewSnapshot<'_>, keep: u32) -> Result<Recorded, LedgerError> {
        let files = serde_json::to_string(s.files).map_err(LedgerError::Snapshot)?;
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('config_snapshots/' || $1, 0))")
            .bind(s.instance_uid)
            .execute(&mut *tx)
            .await?;
        let newest: Option<String> = sqlx::query_scalar(
            "SELECT workspace_hash FROM config_snapshots WHERE instance_uid = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(s.instance_uid)
        .fetch_optional(&mut *tx)
        .await?;
        if newest.as_deref() == Some(s.workspace_hash) {
            tx.commit().await?;
            return Ok(Recorded::Unchanged);
        }
        sqlx::query(
            "INSERT INTO config_snapshots \
             (instance_uid, namespace, instance, tenant, ordinal, generation, workspace_hash, files) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(s.instance_uid)
        .bind(s.namespace)
        .bind(s.instance)
        .bind(s.tenant)
        .bind(s.ordinal)
        .bind(s.generation)
        .bind(s.workspace_hash)
        .bind(files)
        .execute(&mut *tx)
        .await?;
        // The id of the oldest row to keep; NULL (nothing pruned) while fewer exist.
        let pruned = sqlx::query(
            "DELETE FROM config_snapshots WHERE instance_uid = $1 AND id < (\
               SELECT id FROM config_snapshots WHERE instance_uid = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        )
        .bind(s.instance_uid)
        .bind(i64::from(keep.max(1)) - 1)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Recorded::Inserted { pruned })
    }

    /// The kept versions of instance `ordinal` of `tenant` in `namespace`,
    /// oldest first. Only the newest instance of that name counts: rows of
    /// an earlier instance re-created under the same name (kept when its
    /// teardown could not forget them) are left out.
    ///
    /// # Errors
    /// Database failures, or a row whose files do not parse.
    pub async fn snapshots(&self, namespace: &str, tenant: &str, ordinal: i32) -> Result<Vec<Snapshot>, LedgerError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, instance_uid, instance, generation, workspace_hash, recorded_at, files \
               FROM config_snapshots \
              WHERE instance_uid = (SELECT instance_uid FROM config_snapshots \
                                     WHERE namespace = $1 AND tenant = $2 AND ordinal = $3 \
                                     ORDER BY id DESC LIMIT 1) \
              ORDER BY id",
        )
        .bind(namespace)
        .bind(tenant)
        .bind(ordinal)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(snapshot).collect()
    }

    /// Forgets every version of the instance `instance_uid` (on teardown);
    /// returns how many rows went. Forgetting an unknown instance is a no-op.
    ///
    /// # Errors
    /// Database failures.
    pub async fn delete_snapshots(&self, instance_uid: &str) -> Result<u64, LedgerError> {
        let done = sqlx::query("DELETE FROM config_snapshots WHERE instance_uid = $1")
            .bind(instance_uid)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

fn snapshot(
    (id, instance_uid, instance, generation, workspace_hash, recorded_at, files): Row,
) -> Result<Snapshot, LedgerError> {
    let files = serde_json::from_str(&files).map_err(LedgerError::Snapshot)?;
    Ok(Snapshot { id, instance_uid, instance, generation, workspace_hash, recorded_at, files })
}
