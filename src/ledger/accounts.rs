//! Accounts, grants, period resets and balance snapshots.
use chrono::{DateTime, Utc};

use super::keys::audit;
use super::{Balance, Grant, Ledger, LedgerError, Period};

impl Ledger {
    /// Creates the account if it does not exist (no credits, no period yet).
    ///
    /// # Errors
    /// Fails on a database error.
    pub async fn ensure_account(&self, account: &str) -> Result<(), LedgerError> {
        sqlx::query("INSERT INTO accounts (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets the low-balance warning threshold (percent of the allotment).
    ///
    /// # Errors
    /// Fails on an unknown account or a database error.
    pub async fn set_low_threshold(&self, account: &str, pct: i32) -> Result<(), LedgerError> {
        let done = sqlx::query("UPDATE accounts SET low_threshold_pct = $2, updated_at = now() WHERE id = $1")
            .bind(account)
            .bind(pct.clamp(0, 100))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        }
        Ok(())
    }

    /// Credits `grant` to `account` unless a grant with the same id was ever
    /// applied. Returns whether credits were added by this call.
    ///
    /// # Errors
    /// Fails on an unknown account, a non-positive amount or a database error.
    pub async fn apply_grant(&self, account: &str, grant: &Grant) -> Result<bool, LedgerError> {
        if grant.amount <= 0 {
            return Err(LedgerError::InvalidAmount(grant.amount));
        }
        let mut tx = self.pool.begin().await?;
        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
            .bind(account)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        }
        let inserted = sqlx::query(
            "INSERT INTO grants (id, account_id, amount, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&grant.id)
        .bind(account)
        .bind(grant.amount)
        .bind(&grant.reason)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE accounts SET granted_credits = granted_credits + $2, updated_at = now() WHERE id = $1")
            .bind(account)
            .bind(grant.amount)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            account,
            "grant_applied",
            serde_json::json!({"grant_id": grant.id, "amount": grant.amount, "reason": grant.reason}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Applies every grant in `grants` idempotently; returns how many were new.
    ///
    /// # Errors
    /// As [`Ledger::apply_grant`]; grants before the failing one stay applied.
    pub async fn sync_grants(&self, account: &str, grants: &[Grant]) -> Result<usize, LedgerError> {
        if grants.is_empty() {
            return Ok(0);
        }
        // One read finds the grants already applied, so a steady state costs
        // one query and takes no lock; `apply_grant` stays the arbiter.
        let ids: Vec<&str> = grants.iter().map(|g| g.id.as_str()).collect();
        let known: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM grants WHERE id = ANY($1)").bind(&ids).fetch_all(&self.pool).await?;
        let known: std::collections::HashSet<String> = known.into_iter().map(|(id,)| id).collect();
        let mut applied = 0;
        for grant in grants.iter().filter(|g| !known.contains(&g.id)) {
            if self.apply_grant(account, grant).await? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Starts `period` with `allotment` credits, exactly once per period start:
    /// the remaining allotment is replaced (unused allotment does not carry
    /// over; granted credits do) and `used_this_period` restarts at zero.
    /// A period that is not newer than the current one changes nothing.
    /// Returns whether this call performed the reset.
    ///
    /// # Errors
    /// Fails on an unknown account, a negative allotment or a database error.
    pub async fn ensure_period(&self, account: &str, period: Period, allotment: i64) -> Result<bool, LedgerError> {
        if allotment < 0 {
            return Err(LedgerError::InvalidAmount(allotment));
        }
        let mut tx = self.pool.begin().await?;
        let current: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT period_start FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((current_start,)) = current else {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        };
        if current_start.is_some_and(|c| c >= period.start) {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO period_resets (account_id, period_start, period_end, allotment) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(account)
        .bind(period.start)
        .bind(period.end)
        .bind(allotment)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE accounts SET allotment = $2, period_spent = 0, used_this_period = 0,
                 period_start = $3, period_end = $4, updated_at = now() WHERE id = $1",
        )
        .bind(account)
        .bind(allotment)
        .bind(period.start)
        .bind(period.end)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            account,
            "period_reset",
            serde_json::json!({"period_start": period.start, "period_end": period.end, "allotment": allotment}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Changes the allotment of the current period (a plan change or a new
    /// `allotmentPerPeriod` mid-period). The period's remaining credits are
    /// derived, `max(allotment - spent from it, 0)`, so what was spent stays
    /// spent: no sequence of changes returns credits (1,000 -> 10 -> 1,000
    /// after spending 900 leaves 100), and `used_this_period` is kept.
    /// Returns whether anything changed: an account without a period yet, or
    /// already at `allotment`, is left alone (so repeating it is a no-op).
    ///
    /// # Errors
    /// Fails on an unknown account, a negative allotment or a database error.
    pub async fn set_allotment(&self, account: &str, allotment: i64) -> Result<bool, LedgerError> {
        if allotment < 0 {
            return Err(LedgerError::InvalidAmount(allotment));
        }
        let mut tx = self.pool.begin().await?;
        let current: Option<(i64, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT allotment, period_start FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((previous, start)) = current else {
            return Err(LedgerError::UnknownAccount(account.to_string()));
        };
        if start.is_none() || previous == allotment {
            return Ok(false);
        }
        sqlx::query("UPDATE accounts SET allotment = $2, updated_at = now() WHERE id = $1")
            .bind(account)
            .bind(allotment)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, account, "allotment_changed", serde_json::json!({"from": previous, "to": allotment})).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every account whose balance or period changed at or after `since`
    /// (all accounts when `None`), with the database's clock at the time of
    /// the query. Cheap enough to poll every few seconds: it reads one table
    /// and returns only recently touched rows. Reservations do not count as
    /// changes (they do not move the balance).
    ///
    /// # Errors
    /// Database errors.
    pub async fn changed_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<(DateTime<Utc>, Vec<Balance>), LedgerError> {
        let (now,): (DateTime<Utc>,) = sqlx::query_as("SELECT now()").fetch_one(&self.pool).await?;
        let rows: Vec<SnapshotRow> = sqlx::query_as(
            "SELECT id, period_credits, granted_credits, reserved, used_this_period, allotment, low_threshold_pct,
                    period_start, period_end FROM accounts WHERE $1::timestamptz IS NULL OR updated_at >= $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok((now, rows.into_iter().map(balance_from_row).collect()))
    }

    /// The account's balance, reservations and period.
    ///
    /// # Errors
    /// Fails on an unknown account or a database error.
    pub async fn snapshot(&self, account: &str) -> Result<Balance, LedgerError> {
        let row: Option<SnapshotRow> = sqlx::query_as(
            "SELECT id, period_credits, granted_credits, reserved, used_this_period, allotment, low_threshold_pct,
                    period_start, period_end FROM accounts WHERE id = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        row.map(balance_from_row).ok_or_else(|| LedgerError::UnknownAccount(account.to_string()))
    }
}

/// `(id, period_credits, granted_credits, reserved, used, allotment, pct, start, end)`.
type SnapshotRow = (String, i64, i64, i64, i64, i64, i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn balance_from_row(row: SnapshotRow) -> Balance {
    let (account, period, granted, reserved, used, allotment, pct, start, end) = row;
    let balance = period.saturating_add(granted);
    Balance {
        account,
        balance,
        reserved,
        available: balance.saturating_sub(reserved).max(0),
        used_this_period: used,
        allotment,
        low_threshold_pct: pct,
        period_start: start,
        period_end: end,
    }
}
