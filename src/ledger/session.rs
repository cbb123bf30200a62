//! A proxy process's session: the owner of the holds it takes.
//!
//! A live session holds the advisory lock `(LOCK_CLASS, owner)` on a
//! dedicated connection. PostgreSQL releases it the moment the process
//! dies (its connection closes), and from then on any proxy's sweeper, or
//! the next admission that meets one of its idempotency keys, releases the
//! dead session's holds at once instead of after their TTL
//! (`winston_owner_alive` in `migrations/control`). This needs a direct or
//! session-pooled connection: a transaction-pooling bouncer would drop the
//! lock between statements.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::RngExt;
use sqlx::{Connection, PgConnection};

use super::LedgerError;

/// The advisory-lock class of proxy sessions (`'WINS'`); the second key is the owner id.
pub const LOCK_CLASS: i32 = 0x5749_4E53;
/// How often the session checks that its lock connection is still there.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// A live proxy session. Dropping it (or the process dying) ends it.
pub struct ProxySession {
    owner: i32,
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ProxySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySession").field("owner", &self.owner).field("alive", &self.alive()).finish()
    }
}

impl ProxySession {
    /// Opens a session: a connection of its own to `database_url` that takes
    /// a free owner id's lock and keeps it (re-taking it after a lost
    /// connection) until the session is dropped.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn open(database_url: &str) -> Result<Self, LedgerError> {
        let (conn, owner) = lock_new(database_url).await?;
        let alive = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(keep(database_url.to_string(), conn, owner, Arc::clone(&alive)));
        Ok(Self { owner, alive, task })
    }

    /// The owner id stamped on this session's holds.
    #[must_use]
    pub fn owner(&self) -> i32 {
        self.owner
    }

    /// True while the session's lock is held.
    #[must_use]
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

impl Drop for ProxySession {
    fn drop(&mut self) {
        // Dropping the connection ends the lock.
        self.task.abort();
    }
}

async fn connect(database_url: &str) -> Result<PgConnection, LedgerError> {
    PgConnection::connect(database_url).await.map_err(LedgerError::Connect)
}

async fn lock_new(database_url: &str) -> Result<(PgConnection, i32), LedgerError> {
    let mut conn = connect(database_url).await?;
    loop {
        let owner = rand::rng().random_range(1..i32::MAX);
        if try_lock(&mut conn, owner).await? {
            return Ok((conn, owner));
        }
    }
}

async fn try_lock(conn: &mut PgConnection, owner: i32) -> Result<bool, LedgerError> {
    let (got,): (bool,) =
        sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)").bind(LOCK_CLASS).bind(owner).fetch_one(conn).await?;
    Ok(got)
}

async fn keep(database_url: String, conn: PgConnection, owner: i32, alive: Arc<AtomicBool>) {
    let mut slot = Some(conn);
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match slot.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if ok {
            continue;
        }
        alive.store(false, Ordering::Release);
        slot = None;
        match connect(&database_url).await {
            Ok(mut c) => match try_lock(&mut c, owner).await {
                Ok(true) => {
                    tracing::warn!(owner, "proxy session lock re-taken after a lost connection");
                    slot = Some(c);
                    alive.store(true, Ordering::Release);
                }
                Ok(false) => tracing::error!(owner, "failed to re-take the proxy session lock: held elsewhere"),
                Err(e) => tracing::warn!(owner, error = %e, "failed to re-take the proxy session lock"),
            },
            Err(e) => tracing::warn!(owner, error = %e, "failed to reconnect the proxy session"),
        }
    }
}
