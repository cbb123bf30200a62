//! Admission and settlement: reserve the worst case before an LLM call,
//! settle to the actual usage after it, release on failure, expire holds a
//! crashed proxy left behind.
//!
//! Lock order everywhere is "reservation row, then account row" (reserve
//! only inserts a new reservation, which waits on nothing), so settlement,
//! release and the sweeper cannot deadlock each other.
use std::time::Duration;

use uuid::Uuid;

use super::{Ledger, LedgerError, money};

/// An open hold on credits for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: Uuid,
    pub account: String,
    pub request_id: String,
    pub amount: i64,
    /// Balance (owned credits) when the hold was taken.
    pub balance: i64,
    /// Credits still available to other requests after this hold.
    pub available: i64,
    pub allotment: i64,
    pub low_threshold_pct: i32,
}

/// What a request actually consumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Credits per token for this model.
    pub multiplier: i64,
    /// Short label stored with the record (`complete`, `client_disconnected`, ...).
    pub outcome: String,
}

/// The result of settling one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Credits debited by this call (0 when the request id was already billed).
    pub credits: i64,
    /// True when a usage record for this request id existed already.
    pub already_billed: bool,
    /// Owned credits after settlement.
    pub balance: i64,
    /// Credits available to new requests after settlement.
    pub available: i64,
    pub allotment: i64,
    pub low_threshold_pct: i32,
}

impl Settlement {
    /// True when the balance is under the account's low threshold.
    #[must_use]
    pub fn low(&self) -> bool {
        money::is_low(self.balance, self.allotment, self.low_threshold_pct)
    }
}

impl Reservation {
    /// True when the balance left for others is under the low threshold.
    #[must_use]
    pub fn low(&self) -> bool {
        money::is_low(self.available, self.allotment, self.low_threshold_pct)
    }
}

impl Ledger {
    /// Holds `amount` credits for `request_id` until settled, released or
    /// `ttl` has passed. Atomic: one conditional `UPDATE`, so concurrent
    /// reservations can never together exceed the balance.
    ///
    /// # Errors
    /// [`LedgerError::Insufficient`] when the available balance cannot cover
    /// `amount`; [`LedgerError::DuplicateRequest`] when the same request id
    /// holds a reservation already; unknown account; database errors.
    pub async fn reserve(
        &self,
        account: &str,
        request_id: &str,
        amount: i64,
        ttl: Duration,
    ) -> Result<Reservation, LedgerError> {
        if amount < 0 {
            return Err(LedgerError::InvalidAmount(amount));
        }
        let id = Uuid::new_v4();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let row: Result<Option<(i64, i64, i64, i32)>, sqlx::Error> = sqlx::query_as(
            "WITH acc AS (
                 UPDATE accounts SET reserved = reserved + $3
                 WHERE id = $1 AND period_credits + granted_credits - reserved >= $3
                 RETURNING period_credits + granted_credits AS balance,
                           period_credits + granted_credits - reserved AS available,
                           allotment, low_threshold_pct
             ), ins AS (
                 INSERT INTO reservations (id, account_id, request_id, amount, expires_at)
                 SELECT $4, $1, $2, $3, now() + $5 * interval '1 millisecond' FROM acc
             )
             SELECT balance, available, allotment, low_threshold_pct FROM acc",
        )
        .bind(account)
        .bind(request_id)
        .bind(amount)
        .bind(id)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await;
        match row {
            Ok(Some((balance, available, allotment, low_threshold_pct))) => Ok(Reservation {
                id,
                account: account.to_string(),
                request_id: request_id.to_string(),
                amount,
                balance,
                available,
                allotment,
                low_threshold_pct,
            }),
            Ok(None) => {
                let snap = self.snapshot(account).await?;
                Err(LedgerError::Insufficient { needed: amount, available: snap.available })
            }
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                Err(LedgerError::DuplicateRequest(request_id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Settles `reservation` to `usage` atomically: inserts the usage record
    /// (unique per account and request id), drops the hold and debits the
    /// actual cost, clamped so the balance never goes below zero and other
    /// open holds stay covered ([`money::chargeable`]; the period allotment
    /// is spent before granted credits, [`money::split_debit`]). Idempotent:
    /// settling a request id that was already billed debits nothing and only
    /// drops the hold. Works even after the hold expired (the debit is then
    /// limited to what is free).
    ///
    /// One statement, so one round trip and the account row is locked only
    /// while it runs: a busy account settles thousands of requests a second.
    ///
    /// # Errors
    /// Unknown account; database errors (nothing is changed then).
    pub async fn settle(&self, reservation: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
        let cost = money::cost(usage.input_tokens, usage.output_tokens, usage.multiplier);
        let row: Option<(i64, i64, i64, i64, i32, i64)> = sqlx::query_as(
            "WITH r AS (
                 DELETE FROM reservations WHERE id = $1 RETURNING amount
             ), a AS (
                 SELECT id, period_credits, granted_credits, allotment, low_threshold_pct,
                        GREATEST(reserved - COALESCE((SELECT amount FROM r), 0), 0) AS reserved_after
                 FROM accounts WHERE id = $2 FOR UPDATE
             ), c AS (
                 SELECT a.*, LEAST($7::bigint,
                                   GREATEST(period_credits + granted_credits - reserved_after, 0),
                                   GREATEST(period_credits + granted_credits, 0)) AS charge
                 FROM a
             ), ins AS (
                 INSERT INTO usage_records
                     (account_id, request_id, model, input_tokens, output_tokens, cost, credits, outcome)
                 SELECT $2, $3, $4, $5, $6, $7, charge, $8 FROM c
                 ON CONFLICT DO NOTHING
                 RETURNING credits
             ), d AS (
                 SELECT c.*, COALESCE((SELECT credits FROM ins), 0) AS debit,
                        (SELECT count(*) FROM ins) AS inserted
                 FROM c
             )
             UPDATE accounts acc SET
                 period_credits = acc.period_credits - LEAST(d.debit, GREATEST(acc.period_credits, 0)),
                 granted_credits = acc.granted_credits - (d.debit - LEAST(d.debit, GREATEST(acc.period_credits, 0))),
                 reserved = d.reserved_after,
                 used_this_period = acc.used_this_period + d.debit,
                 updated_at = now()
             FROM d WHERE acc.id = d.id
             RETURNING d.debit, acc.period_credits + acc.granted_credits, d.reserved_after,
                       d.allotment, d.low_threshold_pct, d.inserted",
        )
        .bind(reservation.id)
        .bind(&reservation.account)
        .bind(&reservation.request_id)
        .bind(&usage.model)
        .bind(usage.input_tokens.max(0))
        .bind(usage.output_tokens.max(0))
        .bind(cost)
        .bind(&usage.outcome)
        .fetch_optional(&self.pool)
        .await?;
        let Some((credits, balance, reserved_after, allotment, low_threshold_pct, inserted)) = row else {
            return Err(LedgerError::UnknownAccount(reservation.account.clone()));
        };
        Ok(Settlement {
            credits,
            already_billed: inserted == 0,
            balance,
            available: (balance - reserved_after).max(0),
            allotment,
            low_threshold_pct,
        })
    }

    /// Drops the hold without charging (upstream error, refused request).
    /// Returns the credits now available, or `None` when the hold was
    /// already gone (settled, released or expired).
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

    /// Releases every hold whose expiry has passed (a proxy crashed or lost
    /// its database connection mid-request). Returns how many were released.
    ///
    /// # Errors
    /// Database errors.
    pub async fn expire_reservations(&self) -> Result<u64, LedgerError> {
        let (n,): (i64,) = sqlx::query_as(
            "WITH r AS (DELETE FROM reservations WHERE expires_at < now() RETURNING account_id, amount),
                  s AS (SELECT account_id, sum(amount)::bigint AS amount FROM r GROUP BY account_id),
                  u AS (UPDATE accounts a SET reserved = GREATEST(a.reserved - s.amount, 0)
                        FROM s WHERE a.id = s.account_id RETURNING 1)
             SELECT count(*) FROM r",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
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
