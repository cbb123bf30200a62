//! Group commit: many requests' holds and settlements in one transaction.
//!
//! With durable commits (fsync, `synchronous_commit = on`) a commit costs a
//! WAL flush, and a hot account's row lock is held until that flush ends, so
//! one hold and one settlement per request, each committed alone, cap one
//! account at about one request per two flushes. Here every operation that
//! arrives while a transaction is running waits for the next one: a shard's
//! worker takes whatever is queued (up to `max_batch`), settles all of it in
//! one statement (`winston_settle` per row), then holds all of it in one
//! statement (`winston_reserve` per row, each seeing the holds before it),
//! commits once, and only then answers every caller. Under no load a batch
//! is one operation, so latency is what it was; under load the flushes are
//! shared. A batch of settlements alone (the usual one once requests run on
//! credit leases) is one statement, `winston_settle_batch`, that locks,
//! settles and commits in a single round trip. The money rules are the SQL
//! functions' and stay exactly as they are: a batch is the same sequence of
//! calls one transaction at a time.
//!
//! Accounts map to shards by hash, so one account's operations are always
//! in the same queue (their order is kept; no two of this process's
//! transactions wait on one account row), and a batch locks its account rows
//! in id order before anything else, so two proxies' batches cannot
//! deadlock on accounts. A batch that fails as a whole (deadlock with another writer,
//! lost connection) is rolled back and each of its operations is retried
//! alone, so one bad operation never fails its neighbours.
use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::money::HoldShape;
use super::reserve::{IDEMPOTENCY_WINDOW, ReserveRow, SettleRow, millis, settlement};
use super::{HoldRequest, Ledger, LedgerError, Reservation, Settlement, Usage};

/// How many operations one transaction takes at most.
pub const DEFAULT_MAX_BATCH: usize = 256;
/// How many operations may wait per shard before callers wait to enqueue.
const QUEUE: usize = 4096;

/// Hold and settle through shared commits. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    shards: Vec<mpsc::Sender<Op>>,
}

/// A hold request the worker owns.
#[derive(Debug)]
struct Hold {
    id: Uuid,
    account: String,
    key: Option<String>,
    shape: HoldShape,
    ttl: Duration,
    owner: Option<i32>,
}

impl Hold {
    fn request(&self) -> HoldRequest<'_> {
        HoldRequest {
            account: &self.account,
            key: self.key.as_deref(),
            shape: self.shape,
            ttl: self.ttl,
            owner: self.owner,
        }
    }
}

type HoldReply = oneshot::Sender<Result<Reservation, LedgerError>>;
type SettleReply = oneshot::Sender<Result<Settlement, LedgerError>>;

#[derive(Debug)]
enum Op {
    Hold(Hold, HoldReply),
    Settle(Box<(Reservation, Usage)>, SettleReply),
}

impl Op {
    fn account(&self) -> &str {
        match self {
            Self::Hold(h, _) => &h.account,
            Self::Settle(s, _) => &s.0.account,
        }
    }
}

impl GroupCommit {
    /// Starts `shards` workers over `ledger` (each uses one pooled
    /// connection while it commits), taking at most `max_batch` operations
    /// per transaction. Workers stop when every handle is dropped.
    #[must_use]
    pub fn start(ledger: &Ledger, shards: usize, max_batch: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(work(ledger.clone(), rx, max_batch.max(1)));
                tx
            })
            .collect();
        Self { shards }
    }

    /// [`Ledger::hold`], committed together with whatever else is waiting.
    ///
    /// # Errors
    /// As [`Ledger::hold`].
    pub async fn hold(&self, req: &HoldRequest<'_>) -> Result<Reservation, LedgerError> {
        req.validate()?;
        let hold = Hold {
            id: Uuid::new_v4(),
            account: req.account.to_string(),
            key: req.key.map(str::to_string),
            shape: req.shape,
            ttl: req.ttl,
            owner: req.owner,
        };
        let (tx, rx) = oneshot::channel();
        self.send(Op::Hold(hold, tx)).await?;
        rx.await.map_err(|_| stopped())?
    }

    /// [`Ledger::settle`], committed together with whatever else is waiting.
    ///
    /// # Errors
    /// As [`Ledger::settle`].
    pub async fn settle(&self, reservation: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Settle(Box::new((reservation.clone(), usage.clone())), tx)).await?;
        rx.await.map_err(|_| stopped())?
    }

    async fn send(&self, op: Op) -> Result<(), LedgerError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        op.account().hash(&mut h);
        let shard = usize::try_from(h.finish() % self.shards.len() as u64).unwrap_or(0);
        self.shards[shard].send(op).await.map_err(|_| stopped())
    }
}

/// The worker is gone (the runtime is shutting down).
fn stopped() -> LedgerError {
    LedgerError::Db(sqlx::Error::PoolClosed)
}

async fn work(ledger: Ledger, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let mut ops = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut ops, max_batch).await > 0 {
        run(&ledger, std::mem::take(&mut ops)).await;
    }
}

/// One batch: settlements first (they free credits), then holds, each
/// sorted by account, one commit; on failure each operation alone.
async fn run(ledger: &Ledger, ops: Vec<Op>) {
    let (mut settles, mut holds): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for op in ops {
        match op {
            Op::Hold(h, tx) => holds.push((h, tx)),
            Op::Settle(s, tx) => settles.push((*s, tx)),
        }
    }
    settles.sort_by(|a, b| a.0.0.account.cmp(&b.0.0.account));
    holds.sort_by(|a, b| a.0.account.cmp(&b.0.account));
    match commit(ledger, &settles, &holds).await {
        Ok((settled, held)) => {
            for ((s, tx), row) in settles.into_iter().zip(settled) {
                let _ = tx.send(settlement(&s.0, &s.1, row));
            }
            for ((h, tx), row) in holds.into_iter().zip(held) {
                let _ = tx.send(h.request().outcome(h.id, row));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, settles = settles.len(), holds = holds.len(),
                "group commit failed; retrying each operation alone");
            for (s, tx) in settles {
                let _ = tx.send(ledger.settle(&s.0, &s.1).await);
            }
            for (h, tx) in holds {
                let _ = tx.send(hold_alone(ledger, &h).await);
            }
        }
    }
}

/// The batch's statements in one transaction. Rows come back in the
/// batch's order (one per operation).
async fn commit(
    ledger: &Ledger,
    settles: &[((Reservation, Usage), SettleReply)],
    holds: &[(Hold, HoldReply)],
) -> Result<(Vec<Option<SettleRow>>, Vec<ReserveRow>), LedgerError> {
    if holds.is_empty() {
        // Settlements only, the usual batch once requests run on leases:
        // `winston_settle_batch` locks the accounts in id order, settles and,
        // as a statement of its own, commits: one round trip, not four
        // (BEGIN, lock, settle, COMMIT).
        let settled = settle_batch(&ledger.pool, settles.iter().map(|(s, _)| s)).await?;
        one_row_each(settled.len() == settles.len())?;
        return Ok((settled, Vec::new()));
    }
    let mut tx = ledger.pool.begin().await?;
    lock_accounts(
        &mut tx,
        settles.iter().map(|(s, _)| s.0.account.as_str()).chain(holds.iter().map(|(h, _)| h.account.as_str())),
    )
    .await?;
    let settled =
        if settles.is_empty() { Vec::new() } else { settle_batch(&mut *tx, settles.iter().map(|(s, _)| s)).await? };
    let held = if holds.is_empty() { Vec::new() } else { hold_batch(&mut tx, holds.iter().map(|(h, _)| h)).await? };
    one_row_each(settled.len() == settles.len() && held.len() == holds.len())?;
    tx.commit().await?;
    Ok((settled, held))
}

/// Fails a batch whose statements did not answer one row per operation.
fn one_row_each(ok: bool) -> Result<(), LedgerError> {
    if ok {
        return Ok(());
    }
    Err(LedgerError::Db(sqlx::Error::Protocol("a batch answered the wrong number of rows".into())))
}

/// Locks the batch's account rows in one global order (by id) before any
/// statement runs, so batches of different proxies that share accounts
/// queue instead of deadlocking.
async fn lock_accounts<'a>(
    tx: &mut sqlx::PgConnection,
    accounts: impl Iterator<Item = &'a str>,
) -> Result<(), LedgerError> {
    let mut ids: Vec<&str> = accounts.collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT 1 FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE").bind(ids).execute(tx).await?;
    Ok(())
}

async fn settle_batch<'a, 'e>(
    db: impl sqlx::PgExecutor<'e>,
    settles: impl Iterator<Item = &'a (Reservation, Usage)>,
) -> Result<Vec<Option<SettleRow>>, LedgerError> {
    let mut c = SettleColumns::default();
    for (r, u) in settles {
        c.push(r, u);
    }
    let rows: Vec<SettleBatchRow> = sqlx::query_as(
        "SELECT * FROM winston_settle_batch($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                            $6::int8[], $7::text[], $8::text[], $9::int8[], $10::int8[],
                                            $11::int8[], $12::bool[], $13::uuid[], $14::int8[])",
    )
    .bind(c.id)
    .bind(c.account)
    .bind(c.model)
    .bind(c.input)
    .bind(c.output)
    .bind(c.cost)
    .bind(c.outcome)
    .bind(c.key)
    .bind(c.cache_write)
    .bind(c.cache_read)
    .bind(c.tool_uses)
    .bind(c.estimated)
    .bind(c.lease)
    .bind(c.held)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(settle_row).collect())
}

async fn hold_batch<'a>(
    tx: &mut sqlx::PgConnection,
    holds: impl Iterator<Item = &'a Hold>,
) -> Result<Vec<ReserveRow>, LedgerError> {
    let mut c = HoldColumns::default();
    for h in holds {
        c.push(h);
    }
    let rows: Vec<ReserveRow> = sqlx::query_as(
        "SELECT r.* FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int4[], $5::int8[], $6::int8[],
                                $7::int8[], $8::int8[], $9::int8[])
                         WITH ORDINALITY AS b(account, id, key, owner, fixed, unit_milli, max_units, min_units,
                                              ttl_ms, ord)
         CROSS JOIN LATERAL winston_reserve(b.account, b.id, b.key, b.owner, b.fixed, b.unit_milli,
                                            b.max_units, b.min_units, b.ttl_ms, $10) r
         ORDER BY b.ord",
    )
    .bind(c.account)
    .bind(c.id)
    .bind(c.key)
    .bind(c.owner)
    .bind(c.fixed)
    .bind(c.unit_milli)
    .bind(c.max_units)
    .bind(c.min_units)
    .bind(c.ttl_ms)
    .bind(millis(IDEMPOTENCY_WINDOW))
    .fetch_all(tx)
    .await?;
    Ok(rows)
}

/// A hold retried alone under the id its batch gave it (a batch whose
/// commit was lost after all finds its hold taken: the id then conflicts
/// and the caller gets the database error; the hold is released with its
/// session or TTL like any abandoned hold).
async fn hold_alone(ledger: &Ledger, h: &Hold) -> Result<Reservation, LedgerError> {
    let mut tx = ledger.pool.begin().await?;
    let row = hold_batch(&mut tx, std::iter::once(h)).await?.pop();
    tx.commit().await?;
    let row = row.ok_or_else(|| LedgerError::Db(sqlx::Error::RowNotFound))?;
    h.request().outcome(h.id, row)
}

/// `winston_settle_any`'s columns as the LEFT JOIN returns them (all NULL
/// for an unknown account; the lease column is NULL for a direct hold).
type SettleBatchRow = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i32>, Option<i64>, Option<i64>);

fn settle_row(
    (debit, balance, reserved_after, allotment, pct, inserted, lease_left): SettleBatchRow,
) -> Option<SettleRow> {
    Some((debit?, balance?, reserved_after?, allotment?, pct?, inserted?, lease_left))
}

/// Settlements as column arrays for `unnest`.
#[derive(Default)]
struct SettleColumns {
    id: Vec<Uuid>,
    account: Vec<String>,
    model: Vec<String>,
    input: Vec<i64>,
    output: Vec<i64>,
    cost: Vec<i64>,
    outcome: Vec<String>,
    key: Vec<Option<String>>,
    cache_write: Vec<i64>,
    cache_read: Vec<i64>,
    tool_uses: Vec<i64>,
    estimated: Vec<bool>,
    lease: Vec<Option<Uuid>>,
    held: Vec<i64>,
}

impl SettleColumns {
    fn push(&mut self, r: &Reservation, u: &Usage) {
        self.id.push(r.id);
        self.account.push(r.account.clone());
        self.model.push(u.model.clone());
        self.input.push(u.input_tokens.max(0));
        self.output.push(u.output_tokens.max(0));
        self.cost.push(u.cost.max(0));
        self.outcome.push(u.outcome.clone());
        self.key.push(r.key.clone());
        self.cache_write.push(u.cache_write_tokens.max(0));
        self.cache_read.push(u.cache_read_tokens.max(0));
        self.tool_uses.push(u.tool_uses.max(0));
        self.estimated.push(u.estimated);
        self.lease.push(r.lease);
        self.held.push(r.amount);
    }
}

/// Holds as column arrays for `unnest`.
#[derive(Default)]
struct HoldColumns {
    account: Vec<String>,
    id: Vec<Uuid>,
    key: Vec<Option<String>>,
    owner: Vec<Option<i32>>,
    fixed: Vec<i64>,
    unit_milli: Vec<i64>,
    max_units: Vec<i64>,
    min_units: Vec<i64>,
    ttl_ms: Vec<i64>,
}

impl HoldColumns {
    fn push(&mut self, h: &Hold) {
        self.account.push(h.account.clone());
        self.id.push(h.id);
        self.key.push(h.key.clone());
        self.owner.push(h.owner);
        self.fixed.push(h.shape.fixed);
        self.unit_milli.push(h.shape.per_unit_milli);
        self.max_units.push(h.shape.max_units);
        self.min_units.push(h.shape.min_units);
        self.ttl_ms.push(millis(h.ttl));
    }
}
