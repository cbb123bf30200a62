//! `POST /v1/transcripts`: agent runtimes push their session events here
//! (JSONL, one event per line) with the tenant key; they land in
//! `session_transcripts` under the key's account.
//!
//! # Guarantees
//! - Idempotent: an event is stored once per `(account, id)` however often
//!   its batch is sent; the answer counts it as a duplicate.
//! - Partial failure is per line: a malformed line is named in `rejected`
//!   (0-based line number and reason) and the rest of the batch is stored.
//!   A line PostgreSQL cannot hold (a NUL character, `\u0000`, anywhere in
//!   it) is such a line too; should the database still refuse a line's
//!   content, the batch is stored line by line and only the refused lines
//!   are named, so no line's content can fail the whole batch.
//!   The answer is 200 whenever the batch was read; the runtime deletes its
//!   copy only then.
//! - Bounded: a batch over [`MAX_BATCH_BYTES`] or [`MAX_BATCH_LINES`] gets
//!   413 and nothing is stored; a line over [`MAX_LINE_BYTES`] is rejected.
//! - Kept for `--transcript-retention-days` (90 by default); [`prune`]
//!   deletes expired rows in bounded batches, on one proxy replica at a time.
//!
//! Push, not polling the platform's logs: see docs/runtime-contract.md.
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::ProxyState;

/// Path of the endpoint.
pub const TRANSCRIPTS_PATH: &str = "/v1/transcripts";
/// Largest accepted batch body.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most lines in one batch.
pub const MAX_BATCH_LINES: usize = 1000;
/// Largest accepted line.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Longest event or session id.
const MAX_ID: usize = 128;
/// Roles an event may have.
const ROLES: [&str; 4] = ["user", "assistant", "system", "tool"];
/// Transcripts are kept this many days unless configured otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Advisory lock (bigint form, so it cannot meet the two-key locks of the
/// proxy sessions) that lets one replica prune at a time.
const PRUNE_LOCK: i64 = 0x5749_4e53_5452_4e53; // "WINSTRNS"

/// A line ready to store.
struct Row {
    /// 0-based number of the line within the batch.
    line: usize,
    session_id: String,
    event_id: String,
    hash: Vec<u8>,
    entry: String,
    at: DateTime<Utc>,
}

/// True when a string or key anywhere in `v` holds a NUL character, which
/// neither PostgreSQL's `text` nor its `jsonb` can store.
fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Checks line number `n`; the reason is for the pushing runtime's operator.
fn parse_line(n: usize, line: &[u8]) -> Result<Row, &'static str> {
    if line.len() > MAX_LINE_BYTES {
        return Err("the line is longer than 262144 bytes");
    }
    let v: Value = serde_json::from_slice(line).map_err(|_| "not a JSON object")?;
    if holds_nul(&v) {
        return Err("the line holds a NUL character (\\u0000), which cannot be stored");
    }
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let id =
        field("id").filter(|s| !s.is_empty() && s.len() <= MAX_ID).ok_or("`id` must be a string of 1-128 bytes")?;
    let session = field("session_id")
        .filter(|s| !s.is_empty() && s.len() <= MAX_ID)
        .ok_or("`session_id` must be a string of 1-128 bytes")?;
    field("role").filter(|r| ROLES.contains(r)).ok_or("`role` must be user, assistant, system or tool")?;
    if !v.get("content").is_some_and(Value::is_string) {
        return Err("`content` must be a string");
    }
    let at = field("at")
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or("`at` must be an RFC 3339 timestamp")?
        .with_timezone(&Utc);
    Ok(Row {
        line: n,
        session_id: session.to_string(),
        event_id: id.to_string(),
        hash: Sha256::digest(line).to_vec(),
        entry: v.to_string(),
        at,
    })
}

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

/// `POST /v1/transcripts`.
pub(super) async fn ingest(State(st): State<Arc<ProxyState>>, headers: HeaderMap, body: Body) -> Response {
    let Some(account) = st.keys.resolve(&st.ledger, &headers).await else {
        return refuse(StatusCode::UNAUTHORIZED, "authentication_error", "a valid tenant API key is required");
    };
    let Ok(raw) = axum::body::to_bytes(body, MAX_BATCH_BYTES).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!("a batch may hold at most {MAX_BATCH_BYTES} bytes; send smaller batches"),
        );
    };
    let lines: Vec<&[u8]> = raw.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).collect();
    if lines.len() > MAX_BATCH_LINES {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!("a batch may hold at most {MAX_BATCH_LINES} lines; send smaller batches"),
        );
    }
    let mut rows = Vec::with_capacity(lines.len());
    let mut rejected = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(i, line) {
            Ok(r) => rows.push(r),
            Err(reason) => rejected.push(json!({"line": i, "error": reason})),
        }
    }
    let days = st.settings.transcript_retention_days;
    match store_per_line(st.ledger.pool(), &account, &rows, days).await {
        Ok((accepted, refused)) => {
            let duplicates = (rows.len() - refused.len()) as u64 - accepted;
            rejected.extend(refused.iter().map(|n| json!({"line": n, "error": UNSTORABLE})));
            rejected.sort_by_key(|r| r["line"].as_u64());
            Json(json!({"accepted": accepted, "duplicates": duplicates, "rejected": rejected})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "failed to store transcripts");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "overloaded_error", "transcripts cannot be stored right now; retry")
        }
    }
}

/// Why a line the database refused was not stored.
const UNSTORABLE: &str = "the database cannot store this line's content";

/// True when the database refused the data itself (SQLSTATE class 22, data
/// exception, or 54, a limit exceeded), not when it is away.
fn refused_data(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
}

/// Stores `rows` in one statement; when the database refuses some line's
/// data, stores them one by one instead. Returns how many were new and the
/// line numbers of the rows refused.
///
/// # Errors
/// Database errors other than refused data (nothing of the batch is stored).
async fn store_per_line(
    pool: &PgPool,
    account: &str,
    rows: &[Row],
    retention_days: u32,
) -> Result<(u64, Vec<usize>), sqlx::Error> {
    match store(pool, account, rows, retention_days).await {
        Err(e) if refused_data(&e) => {}
        other => return other.map(|n| (n, Vec::new())),
    }
    let (mut accepted, mut refused) = (0, Vec::new());
    for row in rows {
        match store(pool, account, std::slice::from_ref(row), retention_days).await {
            Ok(n) => accepted += n,
            Err(e) if refused_data(&e) => {
                tracing::warn!(line = row.line, "the database refused a transcript line");
                refused.push(row.line);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((accepted, refused))
}

/// Stores `rows` for `account`, skipping events already stored; returns
/// how many were new.
///
/// # Errors
/// Database errors (nothing of the batch is stored then).
async fn store(pool: &PgPool, account: &str, rows: &[Row], retention_days: u32) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sessions: Vec<&str> = rows.iter().map(|r| r.session_id.as_str()).collect();
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.hash.as_slice()).collect();
    let entries: Vec<&str> = rows.iter().map(|r| r.entry.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let done = sqlx::query(
        "INSERT INTO session_transcripts (account_id, session_id, event_id, line_hash, entry, occurred_at, expires_at) \
         SELECT $1, s, e, h, j::jsonb, o, now() + make_interval(days => $7) \
         FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::timestamptz[]) AS t(s, e, h, j, o) \
         ON CONFLICT DO NOTHING",
    )
    .bind(account)
    .bind(&sessions)
    .bind(&ids)
    .bind(&hashes)
    .bind(&entries)
    .bind(&ats)
    .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes expired transcripts, at most `batch` rows per statement and
/// `max_batches` statements per call, only while holding the prune lock
/// (another replica pruning makes this a no-op); returns the rows deleted.
///
/// # Errors
/// Database errors (what was deleted before stays deleted).
pub async fn prune(pool: &PgPool, batch: i64, max_batches: usize) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for _ in 0..max_batches {
        let mut tx = pool.begin().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(PRUNE_LOCK).fetch_one(&mut *tx).await?;
        if !locked {
            return Ok(deleted);
        }
        let n = sqlx::query(
            "DELETE FROM session_transcripts WHERE id IN (SELECT id FROM session_transcripts \
             WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(batch.max(1))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += n;
        if n < batch.max(1) as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// Writes the transcripts of `tenant` as JSONL to `out`, oldest first.
/// `tenant` is an account id or its `<namespace>/<tenant>` prefix.
///
/// # Errors
/// Database or write errors.
pub async fn export(
    pool: &PgPool,
    tenant: &str,
    since: Option<DateTime<Utc>>,
    out: &mut (impl std::io::Write + Send),
) -> Result<u64, ExportError> {
    let prefix = format!("{}/", tenant.trim_end_matches('/'));
    let mut rows = sqlx::query_scalar::<_, String>(
        "SELECT entry::text FROM session_transcripts \
         WHERE (account_id = $1 OR left(account_id, length($2)) = $2) AND ($3::timestamptz IS NULL OR occurred_at >= $3) \
         ORDER BY occurred_at, id",
    )
    .bind(tenant)
    .bind(&prefix)
    .bind(since)
    .fetch(pool);
    let mut n = 0;
    while let Some(line) = rows.try_next().await? {
        writeln!(out, "{line}")?;
        n += 1;
    }
    Ok(n)
}

/// Errors of the `winston transcripts` commands.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("failed to read transcripts: {0}")]
    Database(#[from] sqlx::Error),
    #[error("failed to write transcripts: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to open the database: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// `winston transcripts`: operator access to the stored transcripts.
#[derive(clap::Args, Debug, Clone)]
pub struct TranscriptsArgs {
    /// PostgreSQL URL of Winston's own database.
    #[arg(long, env = "WINSTON_DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<crate::ledger::DatabaseUrl>,
    #[command(subcommand)]
    pub command: TranscriptsCommand,
}

/// What to do with the transcripts.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TranscriptsCommand {
    /// Print a tenant's transcripts as JSONL, oldest first.
    Export {
        /// `<namespace>/<tenant>` (or a full account id).
        tenant: String,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
    },
    /// Delete expired transcripts now (the proxy also does so every minute).
    Prune {
        /// Rows per DELETE.
        #[arg(long, default_value_t = 1000)]
        batch: i64,
    },
}

/// Runs `winston transcripts`.
///
/// # Errors
/// Database or output errors.
pub async fn run(args: TranscriptsArgs) -> Result<(), ExportError> {
    let Some(url) = args.database_url else {
        return Err(ExportError::Io(std::io::Error::other("WINSTON_DATABASE_URL (or --database-url) is required")));
    };
    let ledger = crate::ledger::Ledger::connect(url.expose(), 2).await?;
    match args.command {
        TranscriptsCommand::Export { tenant, since } => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            export(ledger.pool(), &tenant, since, &mut out).await?;
            std::io::Write::flush(&mut out)?;
        }
        TranscriptsCommand::Prune { batch } => {
            let n = prune(ledger.pool(), batch, usize::MAX).await?;
            println!("deleted {n} expired transcript events");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_field_by_field() {
        let good = br#"{"id":"e1","session_id":"s1","role":"user","content":"hi","channel":"api","at":"2026-12-01T10:00:00Z"}"#;
        let row = parse_line(0, good).expect("valid");
        assert_eq!((row.event_id.as_str(), row.session_id.as_str()), ("e1", "s1"));
        for (bad, why) in [
            (&b"not json"[..], "JSON"),
            (br#"{"session_id":"s","role":"user","content":"x","at":"2026-12-01T10:00:00Z"}"#, "`id`"),
            (br#"{"id":"e","session_id":"s","role":"boss","content":"x","at":"2026-12-01T10:00:00Z"}"#, "`role`"),
            (br#"{"id":"e","session_id":"s","role":"user","content":"x","at":"yesterday"}"#, "`at`"),
            (br#"{"id":"e","session_id":"s","role":"user","content":7,"at":"2026-12-01T10:00:00Z"}"#, "`content`"),
            (br#"{"id":"e","session_id":"s","role":"user","content":"a\u0000b","at":"2026-12-01T10:00:00Z"}"#, "NUL"),
            (br#"{"id":"e\u0000","session_id":"s","role":"user","content":"x","at":"2026-12-01T10:00:00Z"}"#, "NUL"),
            (br#"{"id":"e","session_id":"s","role":"user","content":"x","tool_calls":[{"a\u0000":1}],"at":"2026-12-01T10:00:00Z"}"#, "NUL"),
        ] {
            let e = parse_line(3, bad).err().expect("rejected");
            assert!(e.contains(why), "{e}");
        }
    }
}
