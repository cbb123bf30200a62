//! The emulator's statements on its backing PostgreSQL (Neon's and
//! Supabase's real roles and databases): identifiers quoted, DDL run as is.
use sqlx::PgPool;

/// `s` as a quoted SQL identifier.
#[must_use]
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Runs `sql` (built from quoted identifiers and generated literals).
///
/// # Errors
/// PostgreSQL's message.
pub async fn exec(pg: &PgPool, sql: String) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pg).await.map(|_| ()).map_err(|e| e.to_string())
}
