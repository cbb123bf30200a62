//! The tenant's own database as the runtime uses it: conversations and
//! messages, memories (with PostgreSQL full-text search and a daily log),
//! skill switches and the LLM usage it saw. Every query is parameterised;
//! nothing here knows HTTP.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

/// Scope of the daily memory log (one row per UTC day, key `YYYY-MM-DD`).
pub const DAILY_SCOPE: &str = "daily";

/// The tenant migrations ([`crate::tenant_schema`], shared with the
/// engine's schema step).
#[must_use]
pub fn migrator() -> sqlx::migrate::Migrator {
    crate::tenant_schema::migrator()
}

/// Opens the tenant database (at most `max` connections).
///
/// # Errors
/// When the URL does not parse or the database is unreachable. The error
/// never repeats the URL.
pub async fn connect(database_url: &str, max: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One memory found by search.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Memory {
    pub id: i64,
    pub scope: String,
    pub key: String,
    pub content: String,
    pub rank: f32,
    pub updated_at: DateTime<Utc>,
}

/// Totals for `/status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Totals {
    pub conversations: i64,
    pub messages: i64,
    pub llm_calls: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// The tenant database.
#[derive(Clone, Debug)]
pub struct Store {
    pub pool: PgPool,
}

impl Store {
    /// Whether `id` names a conversation.
    pub async fn conversation_exists(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)")
            .bind(id)
            .fetch_one(&self.pool)
            .await
    }

    /// Starts a conversation on `channel` with its first message, in one
    /// transaction: a conversation is never left without it.
    pub async fn start_conversation_with(
        &self,
        id: Uuid,
        channel: &str,
        role: &str,
        content: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO conversations (id, channel) VALUES ($1, $2)")
            .bind(id)
            .bind(channel)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO messages (conversation_id, role, content) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(role)
            .bind(content)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The newest `limit` messages of a conversation, oldest first.
    pub async fn history(&self, id: Uuid, limit: i64) -> Result<Vec<Message>, sqlx::Error> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT role, content FROM (SELECT id, role, content FROM messages WHERE conversation_id = $1 \
             ORDER BY id DESC LIMIT $2) m ORDER BY id",
        )
        .bind(id)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(role, content)| Message { role, content }).collect())
    }

    /// Appends a message.
    pub async fn add_message(&self, id: Uuid, role: &str, content: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO messages (conversation_id, role, content) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(role)
            .bind(content)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records one LLM call as the proxy metered it; `credits` is what the
    /// proxy said it charged for this call.
    pub async fn record_usage(
        &self,
        request_id: &str,
        model: &str,
        tokens: (i64, i64),
        credits: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO usage (request_id, model, input_tokens, output_tokens, credits) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(request_id)
        .bind(model)
        .bind(tokens.0.max(0))
        .bind(tokens.1.max(0))
        .bind(credits.max(0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores (or replaces) the memory `scope`/`key`; returns its id.
    pub async fn remember(&self, scope: &str, key: &str, content: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO memories (scope, key, content) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, key) DO UPDATE SET content = EXCLUDED.content, updated_at = now() RETURNING id",
        )
        .bind(scope)
        .bind(key)
        .bind(content)
        .fetch_one(&self.pool)
        .await
    }

    /// Appends `line` to the daily log of `day`.
    pub async fn log_daily(&self, day: NaiveDate, line: &str) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO memories (scope, key, content) VALUES ($1, $2, $3) ON CONFLICT (scope, key) \
             DO UPDATE SET content = memories.content || E'\\n' || EXCLUDED.content, updated_at = now()",
        )
        .bind(DAILY_SCOPE)
        .bind(day.format("%Y-%m-%d").to_string())
        .bind(line)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The daily log of `day`, if anything happened.
    pub async fn daily(&self, day: NaiveDate) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT content FROM memories WHERE scope = $1 AND key = $2")
            .bind(DAILY_SCOPE)
            .bind(day.format("%Y-%m-%d").to_string())
            .fetch_optional(&self.pool)
            .await
    }

    /// Memories matching `q` (English full-text search over key and
    /// content), best first.
    pub async fn search(&self, q: &str, limit: i64) -> Result<Vec<Memory>, sqlx::Error> {
        let rows: Vec<(i64, String, String, String, f32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, scope, key, content, ts_rank(to_tsvector('english', key || ' ' || content), q) AS rank, updated_at \
             FROM memories, plainto_tsquery('english', $1) q \
             WHERE to_tsvector('english', key || ' ' || content) @@ q ORDER BY rank DESC, id LIMIT $2",
        )
        .bind(q)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, scope, key, content, rank, updated_at)| Memory { id, scope, key, content, rank, updated_at })
            .collect())
    }

    /// The switched skills: name -> enabled.
    pub async fn skill_settings(&self) -> Result<Vec<(String, bool)>, sqlx::Error> {
        sqlx::query_as("SELECT name, enabled FROM skill_settings ORDER BY name").fetch_all(&self.pool).await
    }

    /// Switches a skill on or off.
    pub async fn set_skill(&self, name: &str, enabled: bool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO skill_settings (name, enabled) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()",
        )
        .bind(name)
        .bind(enabled)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Totals for `/status`.
    pub async fn totals(&self) -> Result<Totals, sqlx::Error> {
        let (conversations, messages, llm_calls, input_tokens, output_tokens): (i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM messages), \
                 (SELECT count(*) FROM usage), (SELECT COALESCE(sum(input_tokens), 0)::bigint FROM usage), \
                 (SELECT COALESCE(sum(output_tokens), 0)::bigint FROM usage)",
            )
            .fetch_one(&self.pool)
            .await?;
        Ok(Totals { conversations, messages, llm_calls, input_tokens, output_tokens })
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}
