//! Admission and settlement: hold the worst case before an LLM call (sized
//! to what the balance can pay), settle to the actual usage after it,
//! release on failure, and release the holds of proxies that died.
//!
//! Admission is one call of the `winston_reserve` SQL function (one round
//! trip): it checks the client's idempotency key, sizes the hold, takes it
//! and claims the key under the account's row lock, so concurrent requests
//! can never together hold more than the balance, and a key that completed
//! never reaches the upstream again.
//!
//! Lock order everywhere is "account row, then reservation / key rows"
//! inside `winston_reserve`, and "reservation row, then account row" in
//! settlement and release, which only touch a reservation no admission
//! waits on; the sweeper deletes reservations first, then updates accounts.
use std::time::Duration;

use uuid::Uuid;

use super::money::{self, HoldShape};
use super::{Ledger, LedgerError};

/// How long a completed idempotency key keeps refusing a replay (Stripe's
/// window); afterwards the same key starts a new request.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// One admission request.
#[derive(Clone, Debug)]
pub struct HoldRequest<'a> {
    pub account: &'a str,
    /// The client's `Idempotency-Key`, if any.
    pub key: Option<&'a str>,
    pub shape: HoldShape,
    /// Backstop lifetime of the hold (a live owner's hold is released at
    /// settlement; a dead owner's by the sweeper, long before this).
    pub ttl: Duration,
    /// The proxy session taking the hold ([`super::ProxySession::owner`]).
    pub owner: Option<i32>,
}

/// An open hold on credits for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The request's id (also its usage record's id).
    pub id: Uuid,
    pub account: String,
    /// The client's idempotency key, if it sent one.
    pub key: Option<String>,
    pub amount: i64,
    /// The output cap per choice the hold pays for (at most the asked one).
    pub units: i64,
    /// Balance (owned credits) when the hold was taken.
    pub balance: i64,
    /// Credits still available to other requests after this hold.
    pub available: i64,
    pub allotment: i64,
    pub low_threshold_pct: i32,
    /// The replica's credit lease this hold was taken against in memory
    /// ([`super::Leases`]); `None` for a hold of its own in the database.
    pub lease: Option<Uuid>,
}

impl Reservation {
    /// True when the balance is under the account's low threshold.
    #[must_use]
    pub fn low(&self) -> bool {
        money::is_low(self.balance, self.allotment, self.low_threshold_pct)
    }
}

/// What a request actually consumed, as the upstream reported it (or as
/// estimated when it did not), and what that is worth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    /// Server tool uses (web searches, ...), all kinds together.
    pub tool_uses: i64,
    /// Credits the usage is worth at the model's prices.
    pub cost: i64,
    /// Short label stored with the record (`complete`, `client_disconnected`, ...).
    pub outcome: String,
    /// True when a count was estimated because the upstream did not report it.
    pub estimated: bool,
}

/// The result of settling one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Credits debited by this call (0 when the request was already billed).
    pub credits: i64,
    /// What the usage was worth; `cost - credits` went unbilled (0 unless the
    /// upstream exceeded the hold and the balance could not pay the rest).
    pub cost: i64,
    /// True when a usage record for this request existed already.
    pub already_billed: bool,
    /// Owned credits after settlement.
    pub balance: i64,
    /// Credits available to new requests after settlement.
    pub available: i64,
    pub allotment: i64,
    pub low_threshold_pct: i32,
    /// For a hold taken against a lease: the lease's credits after this
    /// settlement (`None` when the lease is gone, or for a direct hold).
    pub lease_left: Option<i64>,
}

impl Settlement {
    /// True when the balance is under the account's low threshold.
    #[must_use]
    pub fn low(&self) -> bool {
        money::is_low(self.balance, self.allotment, self.low_threshold_pct)
    }

    /// Credits the usage was worth that could not be billed.
    #[must_use]
    pub fn unbilled(&self) -> i64 {
        if self.already_billed { 0 } else { (self.cost - self.credits).max(0) }
    }
}

/// `(outcome, amount, units, balance, available, allotment, pct, prior credits)`:
/// one row of `winston_reserve`.
pub(super) type ReserveRow = (String, i64, i64, i64, i64, i64, i32, Option<i64>);

/// `(debit, balance, reserved after, allotment, pct, inserted, lease left)`:
/// one row of `winston_settle_any` (none when the account is unknown).
pub(super) type SettleRow = (i64, i64, i64, i64, i32, i64, Option<i64>);

/// Milliseconds for SQL interval arithmetic (saturating).
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl HoldRequest<'_> {
    /// Refuses a shape no hold can be taken for.
    pub(super) fn validate(&self) -> Result<(), LedgerError> {
        let s = self.shape;
        if s.fixed < 0 || s.per_unit_milli < 0 || s.max_units < s.min_units || s.min_units < 0 {
            return Err(LedgerError::InvalidAmount(s.fixed.min(s.per_unit_milli).min(s.min_units)));
        }
        Ok(())
    }

    /// What `winston_reserve` answered for this request, taken under `id`.
    pub(super) fn outcome(&self, id: Uuid, row: ReserveRow) -> Result<Reservation, LedgerError> {
        let (outcome, amount, units, balance, available, allotment, low_threshold_pct, prior) = row;
        let key = || self.key.unwrap_or_default().to_string();
        match outcome.as_str() {
            "reserved" => Ok(Reservation {
                id,
                account: self.account.to_string(),
                key: self.key.map(str::to_string),
                amount,
                units,
                balance,
                available,
                allotment,
                low_threshold_pct,
                lease: None,
            }),
            "insufficient" => Err(LedgerError::Insufficient {
                needed: amount,
                available,
                low: money::is_low(balance, allotment, low_threshold_pct),
            }),
            "completed" => Err(LedgerError::AlreadyCompleted { key: key(), credits: prior.unwrap_or(0) }),
            "in_flight" => Err(LedgerError::InFlight(key())),
            _ => Err(LedgerError::UnknownAccount(self.account.to_string())),
        }
    }
}

/// What `winston_settle` answered for settling `reservation` to `usage`.
pub(super) fn settlement(
    reservation: &Reservation,
    usage: &Usage,
    row: Option<SettleRow>,
) -> Result<Settlement, LedgerError> {
    let Some((credits, balance, reserved_after, allotment, low_threshold_pct, inserted, lease_left)) = row else {
        return Err(LedgerError::UnknownAccount(reservation.account.clone()));
    };
    Ok(Settlement {
        credits,
        cost: usage.cost.max(0),
        already_billed: inserted == 0,
        balance,
        available: (balance - reserved_after).max(0),
        allotment,
        low_threshold_pct,
        lease_left,
    })
}

impl Ledger {
    /// Holds credits for one request: refuses a key that completed or is in
    /// flight with a live owner, lowers the output cap to what the balance
    /// can pay, and takes the hold, atomically.
    ///
    /// # Errors
    /// [`LedgerError::Insufficient`] when not even `min_units` fit;
    /// [`LedgerError::AlreadyCompleted`] / [`LedgerError::InFlight`] for a
    /// reused key; unknown account; database errors.
    pub async fn hold(&self, req: &HoldRequest<'_>) -> Result<Reservation, LedgerError> {
        req.validate()?;
        let id = Uuid::new_v4();
        let s = req.shape;
        let row: ReserveRow = sqlx::query_as("SELECT * FROM winston_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(req.account)
            .bind(id)
            .bind(req.key)
            .bind(req.owner)
            .bind(s.fixed)
            .bind(s.per_unit_milli)
            .bind(s.max_units)
            .bind(s.min_units)
            .bind(millis(req.ttl))
            .bind(millis(IDEMPOTENCY_WINDOW))
            .fetch_one(&self.pool)
            .await?;
        req.outcome(id, row)
    }

    /// Holds exactly `amount` credits under the idempotency key `key` (a
    /// convenience over [`Ledger::hold`] for callers without an output cap).
    ///
    /// # Errors
    /// As [`Ledger::hold`].
    pub async fn reserve(
        &self,
        account: &str,
        key: &str,
        amount: i64,
        ttl: Duration,
    ) -> Result<Reservation, LedgerError> {
        if amount < 0 {
            return Err(LedgerError::InvalidAmount(amount));
        }
        self.hold(&HoldRequest { account, key: Some(key), shape: HoldShape::fixed(amount), ttl, owner: None }).await
    }

    /// Settles `reservation` to `usage` atomically (`winston_settle`):
    /// inserts the usage record (unique per request), marks its idempotency
    /// key completed, drops the hold and debits `usage.cost`, up to what the
    /// hold committed plus what is free beyond other open holds
    /// ([`money::chargeable`]). The period allotment is spent before granted
    /// credits; a hold stays a commitment when the allotment is lowered
    /// under it meanwhile (the period is then overspent, its remaining
    /// credits stay 0), so the balance never goes below zero and a
    /// downgrade never turns held usage into free usage. Idempotent:
    /// settling a request that was already billed debits nothing and only
    /// drops the hold. Works even after the hold was released (the debit is
    /// then limited to what is free).
    ///
    /// One statement, so one round trip and the account row is locked only
    /// while it runs; [`super::GroupCommit`] settles many in one commit.
    ///
    /// # Errors
    /// Unknown account; database errors (nothing is changed then).
    pub async fn settle(&self, reservation: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
        let row: Option<SettleRow> = sqlx::query_as(
            "SELECT * FROM winston_settle_any($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(reservation.id)
        .bind(reservation.lease)
        .bind(reservation.amount)
        .bind(&reservation.account)
        .bind(&usage.model)
        .bind(usage.input_tokens.max(0))
        .bind(usage.output_tokens.max(0))
        .bind(usage.cost.max(0))
        .bind(&usage.outcome)
        .bind(reservation.key.as_deref())
        .bind(usage.cache_write_tokens.max(0))
        .bind(usage.cache_read_tokens.max(0))
        .bind(usage.tool_uses.max(0))
        .bind(usage.estimated)
        .fetch_optional(&self.pool)
        .await?;
        settlement(reservation, usage, row)
    }

    /// Drops the hold without charging (upstream error, refused request);
    /// its idempotency key is free again. Returns the credits now
    /// available, or `None` when the hold was already gone (settled,
    /// released or swept).
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, reservation: &Reservation) -> Result<Option<i64>, LedgerError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "WITH r AS (DELETE FROM reservations WHERE id = $1 RETURNING account_id, amount)
             UPDATE accounts a SET reserved = GREATEST(a.reserved - r.amount, 0)
             FROM r WHERE a.id = r.account_id
             RETURNING GREATEST(a.period_credits + a.granted_credits - a.reserved, 0)",
        )
        .bind(reservation.id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(a,)| a))
    }

    /// Releases every hold whose owner died (its session lock is gone) or
    /// whose backstop expiry has passed. Returns how many were released.
    /// The live sessions are read once (`winston_live_owners`: one read of
    /// `pg_locks`, which stalls every lock taken meanwhile), not per row.
    ///
    /// # Errors
    /// Database errors.
    pub async fn expire_reservations(&self) -> Result<u64, LedgerError> {
        let (n,): (i64,) = sqlx::query_as(
            "WITH live AS MATERIALIZED (SELECT winston_live_owners() AS owner),
                  r AS (DELETE FROM reservations
                        WHERE expires_at < now()
                           OR (owner IS NOT NULL AND owner NOT IN (SELECT owner FROM live))
                        RETURNING account_id, amount),
                  s AS (SELECT account_id, sum(amount)::bigint AS amount FROM r GROUP BY account_id),
                  u AS (UPDATE accounts a SET reserved = GREATEST(a.reserved - s.amount, 0)
                        FROM s WHERE a.id = s.account_id RETURNING 1)
             SELECT count(*) FROM r",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Forgets idempotency keys whose window has passed (bounded batch).
    /// Returns how many were removed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn forget_expired_keys(&self) -> Result<u64, LedgerError> {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN
                 (SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT 10000)",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Sum of credits debited for `account` across all usage records.
    ///
    /// # Errors
    /// Database errors.
    pub async fn usage_credits(&self, account: &str) -> Result<i64, LedgerError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COALESCE(sum(credits), 0)::bigint FROM usage_records WHERE account_id = $1")
                .bind(account)
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }
}
