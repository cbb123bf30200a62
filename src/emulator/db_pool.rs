//! Databases made before they are asked for.
//!
//! A real platform creates a tenant's database on its own machines; the
//! emulator creates it in the PostgreSQL next to everything else, and
//! `CREATE DATABASE` copies the whole template (about 7.5 MiB, some 60-90 ms
//! of one core here). A benchmark that wants the platforms instant
//! (`benches/provisioning.rs`) asks for a pool: that many empty databases are
//! created when the emulator starts, and a project created later takes one
//! by renaming it and handing it to the project's role (two catalog updates,
//! no copy). Once the pool is empty, databases are created as before. The
//! database a project gets is the same either way: empty, made from
//! `template1`, owned by the project's role.
use std::sync::{Mutex, PoisonError};

use sqlx::PgPool;

use super::sql::{exec, quote_ident};

/// How many pool databases are created at once (the emulator's connection
/// pool has four connections).
const CREATING_AT_ONCE: usize = 4;

/// The unclaimed databases.
#[derive(Debug, Default)]
pub struct DatabasePool {
    spare: Mutex<Vec<String>>,
}

impl DatabasePool {
    /// Creates `n` empty databases in `pg`.
    ///
    /// # Errors
    /// A `CREATE DATABASE` failed (the ones made so far stay in the pool's
    /// PostgreSQL; it is a throwaway cluster).
    pub async fn fill(pg: &PgPool, n: usize) -> Result<Self, String> {
        let prefix = format!("winston_spare_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}_{i}")).collect();
        for chunk in names.chunks(CREATING_AT_ONCE) {
            let creates = chunk.iter().map(|name| exec(pg, format!("CREATE DATABASE {}", quote_ident(name))));
            for result in futures::future::join_all(creates).await {
                result?;
            }
        }
        Ok(Self { spare: Mutex::new(names) })
    }

    /// Unclaimed databases left.
    #[must_use]
    pub fn len(&self) -> usize {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no database is left.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self) -> Option<String> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    /// Makes database `name` owned by `owner` in `pg`: a spare one renamed
    /// when the pool has one, else a new one.
    ///
    /// # Errors
    /// PostgreSQL's message when neither worked.
    pub async fn create(&self, pg: &PgPool, name: &str, owner: &str) -> Result<(), String> {
        if let Some(spare) = self.take() {
            match exec(pg, format!("ALTER DATABASE {} RENAME TO {}", quote_ident(&spare), quote_ident(name))).await {
                Ok(()) => {
                    let owned =
                        exec(pg, format!("ALTER DATABASE {} OWNER TO {}", quote_ident(name), quote_ident(owner))).await;
                    if owned.is_err() {
                        // As a failed CREATE DATABASE: nothing is left behind.
                        let _ = exec(pg, format!("DROP DATABASE IF EXISTS {}", quote_ident(name))).await;
                    }
                    return owned;
                }
                // The name is taken (or the spare is gone): create as usual.
                Err(e) => tracing::debug!(error = %e, "a spare database could not be claimed"),
            }
        }
        exec(pg, format!("CREATE DATABASE {} OWNER {}", quote_ident(name), quote_ident(owner))).await
    }
}
