//! Tenant API keys: issued once in plaintext, stored only as SHA-256 hashes
//! with a short display prefix.
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Ledger, LedgerError};

/// Characters of the key kept in clear for display (`wsk_` + 8).
const PREFIX_LEN: usize = 12;

/// A freshly issued key. The plaintext exists only in this value.
pub struct IssuedKey {
    pub id: Uuid,
    pub prefix: String,
    /// The secret; hand it to the tenant once, never log it.
    pub plaintext: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey").field("id", &self.id).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// A key that currently authenticates, as the proxy's cache holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveKey {
    pub id: Uuid,
    pub account_id: String,
    pub hash: [u8; 32],
}

/// SHA-256 of a presented key. Keys carry 256 bits of randomness, so a fast
/// hash is enough (no password stretching needed).
#[must_use]
pub fn hash_key(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// A new random key (`wsk_` + 64 hex digits) that is not stored anywhere
/// yet: the caller keeps it (e.g. in a Secret) and then [`Ledger::register_key`]s it.
#[must_use]
pub fn generate_key() -> String {
    new_plaintext()
}

fn new_plaintext() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!("wsk_{}", hex::encode(raw))
}

impl Ledger {
    /// Issues a new key for `account` (which must exist). The plaintext is
    /// returned once and never stored.
    ///
    /// # Errors
    /// Fails on an unknown account or a database error.
    pub async fn issue_key(&self, account: &str, name: &str) -> Result<IssuedKey, LedgerError> {
        let plaintext = new_plaintext();
        let prefix = plaintext[..PREFIX_LEN].to_string();
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash)
             SELECT $1, id, $3, $4, $5 FROM accounts WHERE id = $2",
        )
        .bind(id)
        .bind(account)
        .bind(name)
        .bind(&prefix)
        .bind(hash_key(&plaintext).as_slice())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        }
        audit(&mut tx, account, "key_issued", serde_json::json!({"key_id": id, "prefix": prefix, "name": name}))
            .await?;
        tx.commit().await?;
        Ok(IssuedKey { id, prefix, plaintext })
    }

    /// Registers a key the caller generated and already stored (e.g. in the
    /// tenant's credentials Secret). Idempotent: registering the same key
    /// again changes nothing, so a crash between storing and registering is
    /// repaired by calling it again. Returns the key's id.
    ///
    /// # Errors
    /// Fails on an unknown account, a key revoked earlier, or a database error.
    pub async fn register_key(&self, account: &str, name: &str, plaintext: &str) -> Result<Uuid, LedgerError> {
        let hash = hash_key(plaintext);
        let existing: Option<(Uuid, String, bool)> =
            sqlx::query_as("SELECT id, account_id, revoked_at IS NOT NULL FROM api_keys WHERE key_hash = $1")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?;
        if let Some((id, owner, revoked)) = existing {
            if owner != account || revoked {
                return Err(LedgerError::KeyUnusable);
            }
            return Ok(id);
        }
        let id = Uuid::new_v4();
        let prefix = plaintext.get(..PREFIX_LEN).unwrap_or(plaintext).to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash)
             SELECT $1, id, $3, $4, $5 FROM accounts WHERE id = $2
             ON CONFLICT (key_hash) DO NOTHING",
        )
        .bind(id)
        .bind(account)
        .bind(name)
        .bind(&prefix)
        .bind(&hash[..])
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Lost a race with a concurrent registration of the same key, or
            // the account is unknown: re-read to tell which.
            tx.rollback().await?;
            return self.register_key_existing(account, &hash).await;
        }
        audit(&mut tx, account, "key_registered", serde_json::json!({"key_id": id, "name": name})).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn register_key_existing(&self, account: &str, hash: &[u8; 32]) -> Result<Uuid, LedgerError> {
        let row: Option<(Uuid, String)> =
            sqlx::query_as("SELECT id, account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some((id, owner)) if owner == account => Ok(id),
            Some(_) => Err(LedgerError::KeyUnusable),
            None => Err(LedgerError::UnknownAccount(account.to_string())),
        }
    }

    /// Revokes every active key of `account` named `name` except `keep`
    /// (a hash); returns how many were revoked. Used on rotation and when an
    /// instance is deleted (`keep` = `None`).
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn revoke_keys_named(
        &self,
        account: &str,
        name: &str,
        keep: Option<&[u8; 32]>,
    ) -> Result<u64, LedgerError> {
        let keep: Vec<u8> = keep.map(|k| k.to_vec()).unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_at = now()
             WHERE account_id = $1 AND name = $2 AND revoked_at IS NULL AND key_hash <> $3",
        )
        .bind(account)
        .bind(name)
        .bind(&keep)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            audit(&mut tx, account, "keys_revoked", serde_json::json!({"name": name, "count": n})).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Revokes every active key of `account` named `name` other than `keep`
    /// (a hash); returns how many were revoked. Made to run on every
    /// credentials pass: one statement (an UPDATE, with its audit entry
    /// written in the same statement only when a key was revoked) that
    /// changes nothing in the steady state.
    ///
    /// # Guarantees
    /// `keep` is never revoked by this call; a key of another name or
    /// account is never touched.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn revoke_other_keys(&self, account: &str, name: &str, keep: &[u8; 32]) -> Result<u64, LedgerError> {
        let (n,): (i64,) = sqlx::query_as(
            "WITH revoked AS (
                 UPDATE api_keys SET revoked_at = now()
                 WHERE account_id = $1 AND name = $2 AND key_hash <> $3 AND revoked_at IS NULL
                 RETURNING id
             ), audit AS (
                 INSERT INTO audit_log (account_id, action, detail)
                 SELECT $1, 'keys_revoked', jsonb_build_object('name', $2::text, 'count', count(*), 'reason', 'not current')
                 FROM revoked HAVING count(*) > 0
             )
             SELECT count(*) FROM revoked",
        )
        .bind(account)
        .bind(name)
        .bind(&keep[..])
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Revokes a key. Returns false when it was unknown or already revoked.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn revoke_key(&self, key_id: Uuid) -> Result<bool, LedgerError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING account_id",
        )
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((account,)) = row else {
            return Ok(false);
        };
        audit(&mut tx, &account, "key_revoked", serde_json::json!({"key_id": key_id})).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The account an unrevoked key (by hash) belongs to: the proxy's
    /// lookup for a key its cache has not loaded yet.
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn account_for_key(&self, hash: &[u8; 32]) -> Result<Option<String>, LedgerError> {
        Ok(sqlx::query_scalar("SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every unrevoked key (for the proxy's in-memory cache).
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, LedgerError> {
        let rows: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT id, account_id, key_hash FROM api_keys WHERE revoked_at IS NULL")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, account_id, hash)| Some(ActiveKey { id, account_id, hash: hash.try_into().ok()? }))
            .collect())
    }
}

/// Appends one audit entry inside the caller's transaction.
pub(super) async fn audit(
    tx: &mut sqlx::PgConnection,
    account: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO audit_log (account_id, action, detail) VALUES ($1, $2, $3)")
        .bind(account)
        .bind(action)
        .bind(sqlx::types::Json(detail))
        .execute(tx)
        .await?;
    Ok(())
}
