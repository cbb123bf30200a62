//! Intake's bookkeeping in Winston's control database (migration 0003):
//! processed event ids and, per subscription, the newest state applied.
//!
//! # Guarantees
//! Each event is handled inside one transaction that starts by inserting
//! its id. A concurrent delivery of the same id waits on the primary key
//! and then finds it taken; a delivery whose Tenant write failed rolls
//! back, leaving no trace, so Stripe's retry handles it afresh. The
//! subscription row is locked (`FOR UPDATE`) for the rest of the
//! transaction, so two events of one subscription are applied one after
//! the other and the `created` comparison cannot race.
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

/// The columns of a [`SubscriptionRow`] (a macro so queries stay `&'static str`).
macro_rules! select_row {
    () => {
        "SELECT subscription_id, customer_id, namespace, tenant, last_event_created, plan, ended, delete_due_at \
         FROM stripe_subscriptions"
    };
}

/// Errors of the control database.
#[derive(Debug, thiserror::Error)]
#[error("failed to {what} in the control database: {source}")]
pub struct StoreError {
    what: &'static str,
    source: sqlx::Error,
}

impl StoreError {
    /// A failed commit outside [`EventTx`].
    #[must_use]
    pub fn from_commit(source: sqlx::Error) -> Self {
        Self { what: "commit", source }
    }
}

fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError { what, source }
}

/// What intake remembers of one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub subscription_id: String,
    pub customer_id: String,
    pub namespace: String,
    pub tenant: String,
    /// `created` of the newest event applied; 0 before the first.
    pub last_event_created: i64,
    pub plan: Option<String>,
    pub ended: bool,
    pub delete_due_at: Option<DateTime<Utc>>,
}

/// The control database, as intake uses it.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects with up to `max_connections`.
    ///
    /// # Errors
    /// The database is unreachable.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        // The error of a bad URL is replaced: sqlx's could quote the URL and its password.
        let options: PgConnectOptions = url.parse().map_err(|_| StoreError {
            what: "parse the database URL",
            source: sqlx::Error::Protocol("invalid URL".into()),
        })?;
        // An acknowledged event must be recorded: commit synchronously whatever the server default.
        let options = options.options([("synchronous_commit", "on")]);
        let pool =
            PgPoolOptions::new().max_connections(max_connections).connect_with(options).await.map_err(db("connect"))?;
        Ok(Self { pool })
    }

    /// Applies Winston's control migrations (the same set `winston migrate` applies).
    ///
    /// # Errors
    /// A migration fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::ledger::migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError { what: "migrate", source: sqlx::Error::Migrate(Box::new(e)) })
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Starts handling `event_id`: `None` when it was processed already.
    ///
    /// # Errors
    /// The database fails.
    pub async fn begin(&self, event_id: &str, event_type: &str) -> Result<Option<EventTx>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin a transaction"))?;
        let inserted = sqlx::query(
            "INSERT INTO stripe_events (event_id, event_type, outcome) VALUES ($1, $2, 'processing') \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(event_type)
        .execute(&mut *tx)
        .await
        .map_err(db("record the event"))?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(EventTx { tx, event_id: event_id.to_string() }))
    }

    /// Subscriptions whose grace period is over, locked for this transaction
    /// (another replica skips them).
    ///
    /// # Errors
    /// The database fails.
    pub async fn due_deletions(
        &self,
        limit: i64,
    ) -> Result<(Transaction<'static, Postgres>, Vec<SubscriptionRow>), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("begin a transaction"))?;
        let rows = sqlx::query(concat!(
            select_row!(),
            " WHERE delete_due_at <= now() ORDER BY delete_due_at LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("read due deletions"))?;
        Ok((tx, rows.iter().map(row).collect()))
    }

    /// Marks a due deletion done inside the transaction of [`Store::due_deletions`].
    ///
    /// # Errors
    /// The database fails.
    pub async fn deletion_done(
        tx: &mut Transaction<'static, Postgres>,
        subscription_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE stripe_subscriptions SET delete_due_at = NULL, ended = true, updated_at = now() WHERE subscription_id = $1")
            .bind(subscription_id)
            .execute(&mut **tx)
            .await
            .map_err(db("mark a deletion done"))?;
        Ok(())
    }

    /// The row of `subscription_id` (tests and tools).
    ///
    /// # Errors
    /// The database fails.
    pub async fn subscription(&self, subscription_id: &str) -> Result<Option<SubscriptionRow>, StoreError> {
        let r = sqlx::query(concat!(select_row!(), " WHERE subscription_id = $1"))
            .bind(subscription_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read a subscription"))?;
        Ok(r.as_ref().map(row))
    }

    /// How many events were recorded as processed (tests and tools).
    ///
    /// # Errors
    /// The database fails.
    pub async fn processed_events(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM stripe_events").fetch_one(&self.pool).await.map_err(db("count events"))
    }
}

fn row(r: &sqlx::postgres::PgRow) -> SubscriptionRow {
    SubscriptionRow {
        subscription_id: r.get("subscription_id"),
        customer_id: r.get("customer_id"),
        namespace: r.get("namespace"),
        tenant: r.get("tenant"),
        last_event_created: r.get("last_event_created"),
        plan: r.get("plan"),
        ended: r.get("ended"),
        delete_due_at: r.get("delete_due_at"),
    }
}

/// One event being handled: commit it with [`EventTx::finish`] only after
/// the Tenant write succeeded; dropping it rolls everything back.
pub struct EventTx {
    tx: Transaction<'static, Postgres>,
    event_id: String,
}

impl EventTx {
    /// The row of `subscription_id`, created (for `customer_id`, `tenant`)
    /// when absent, and locked until this event is finished or dropped.
    ///
    /// # Errors
    /// The database fails.
    pub async fn lock_subscription(
        &mut self,
        subscription_id: &str,
        customer_id: &str,
        namespace: &str,
        tenant: &str,
    ) -> Result<SubscriptionRow, StoreError> {
        sqlx::query(
            "INSERT INTO stripe_subscriptions (subscription_id, customer_id, namespace, tenant) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (subscription_id) DO NOTHING",
        )
        .bind(subscription_id)
        .bind(customer_id)
        .bind(namespace)
        .bind(tenant)
        .execute(&mut *self.tx)
        .await
        .map_err(db("register a subscription"))?;
        let r = sqlx::query(concat!(select_row!(), " WHERE subscription_id = $1 FOR UPDATE"))
            .bind(subscription_id)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(db("lock a subscription"))?;
        Ok(row(&r))
    }

    /// Serialises this event with every other one that takes the same
    /// `(kind, key)` until it is finished or dropped (a transaction-scoped
    /// advisory lock: a crash releases it). Kinds used: `tenant` (every
    /// event of a customer's subscriptions) and `email` (lower-cased, so two
    /// customers' checkouts cannot both claim one address).
    ///
    /// # Errors
    /// The database fails.
    pub async fn lock_key(&mut self, kind: &str, key: &str) -> Result<(), StoreError> {
        // The two-int form keeps these keys apart from the proxy's one-bigint locks.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('winston-intake:' || $1), hashtext($2))")
            .bind(kind)
            .bind(key)
            .execute(&mut *self.tx)
            .await
            .map_err(db("take an intake lock"))?;
        Ok(())
    }

    /// Another subscription of `customer_id` (not `except`) that has not
    /// ended and has a plan, the most recently changed first.
    ///
    /// # Errors
    /// The database fails.
    pub async fn live_subscription_of(
        &mut self,
        customer_id: &str,
        except: &str,
    ) -> Result<Option<SubscriptionRow>, StoreError> {
        let r = sqlx::query(concat!(
            select_row!(),
            " WHERE customer_id = $1 AND subscription_id <> $2 AND NOT ended AND plan IS NOT NULL \
              ORDER BY updated_at DESC LIMIT 1"
        ))
        .bind(customer_id)
        .bind(except)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(db("find a live subscription"))?;
        Ok(r.as_ref().map(row))
    }

    /// Saves the subscription's new state.
    ///
    /// # Errors
    /// The database fails.
    pub async fn save_subscription(&mut self, s: &SubscriptionRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_subscriptions SET last_event_created = $2, plan = $3, ended = $4, delete_due_at = $5, \
             updated_at = now() WHERE subscription_id = $1",
        )
        .bind(&s.subscription_id)
        .bind(s.last_event_created)
        .bind(&s.plan)
        .bind(s.ended)
        .bind(s.delete_due_at)
        .execute(&mut *self.tx)
        .await
        .map_err(db("save a subscription"))?;
        Ok(())
    }

    /// Drops the pending grace-period deletion of every other subscription
    /// of `tenant`: the customer subscribed again before it was due.
    ///
    /// # Errors
    /// The database fails.
    pub async fn cancel_other_deletions(&mut self, tenant: &str, subscription_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE stripe_subscriptions SET delete_due_at = NULL, updated_at = now() \
             WHERE tenant = $1 AND subscription_id <> $2 AND delete_due_at IS NOT NULL",
        )
        .bind(tenant)
        .bind(subscription_id)
        .execute(&mut *self.tx)
        .await
        .map_err(db("cancel a pending deletion"))?;
        Ok(())
    }

    /// Records what was done and commits: from now on the event id is processed.
    ///
    /// # Errors
    /// The database fails (nothing is committed; Stripe's retry redoes the
    /// idempotent Tenant write).
    pub async fn finish(mut self, outcome: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE stripe_events SET outcome = $2, processed_at = now() WHERE event_id = $1")
            .bind(&self.event_id)
            .bind(outcome)
            .execute(&mut *self.tx)
            .await
            .map_err(db("record the outcome"))?;
        self.tx.commit().await.map_err(db("commit"))
    }
}
