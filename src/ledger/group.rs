//! Group commit: many requests' holds and settlements in one transaction.
//!
//! With durable commits (fsync, `synchronous_commit = on`) a commit costs a
//! WAL flush, and a hot account's row lock is held until that flush ends, so
//! one hold and one settlement per request, each committed alone, cap one
//! account at about one request per two flushes. Here every operation that
//! arrives while a transaction is running waits for the next one: a shard's
//! worker takes whatever is queued (up to `max_batch`) and sends all of it
//! as one statement, `winston_commit_batch`, that locks the batch's
//! accounts, settles every settlement (`winston_settle_any` per row), then
//! holds every hold (`winston_reserve` per row, each seeing the holds before
//! it), then takes every credit-lease take (`winston_lease_take` per row)
//! and commits once: one round trip to the database. Only then is every
//! caller answered. Under no load a batch is one operation, so latency is
//! what it was; under load the flushes are shared. The money rules are the
//! SQL functions' and stay exactly as they are: a batch is the same sequence
//! of calls one transaction at a time.
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

/// A credit-lease take (`winston_lease_take`), for [`super::Leases`].
#[derive(Clone, Debug)]
pub(super) struct Take {
    pub account: String,
    pub lease: Uuid,
    pub owner: Option<i32>,
    /// Grow the existing row (false: insert it).
    pub exists: bool,
    pub want: i64,
    pub min: i64,
    pub share_pct: i64,
    pub ttl: Duration,
}

/// `(granted, balance, available after, allotment, pct)`: one row of
/// `winston_lease_take` (none when the account is unknown).
pub(super) type TakeRow = (i64, i64, i64, i64, i32);

type HoldReply = oneshot::Sender<Result<Reservation, LedgerError>>;
type SettleReply = oneshot::Sender<Result<Settlement, LedgerError>>;
type TakeReply = oneshot::Sender<Result<Option<TakeRow>, LedgerError>>;

#[derive(Debug)]
enum Op {
    Hold(Hold, HoldReply),
    Settle(Box<(Reservation, Usage)>, SettleReply),
    Take(Take, TakeReply),
}

impl Op {
    fn account(&self) -> &str {
        match self {
            Self::Hold(h, _) => &h.account,
            Self::Settle(s, _) => &s.0.account,
            Self::Take(t, _) => &t.account,
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

    /// `winston_lease_take`, committed together with whatever else is
    /// waiting (in the account's queue, so after its settlements so far).
    ///
    /// # Errors
    /// Database errors.
    pub(super) async fn take(&self, take: Take) -> Result<Option<TakeRow>, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Take(take, tx)).await?;
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

/// One batch: settlements first (they free credits), then holds, then
/// lease takes, one commit; on failure each operation alone.
async fn run(ledger: &Ledger, ops: Vec<Op>) {
    let mut batch = Batch::default();
    for op in ops {
        match op {
            Op::Hold(h, tx) => batch.holds.push((h, tx)),
            Op::Settle(s, tx) => batch.settles.push((*s, tx)),
            Op::Take(t, tx) => batch.takes.push((t, tx)),
        }
    }
    let Batch { settles, holds, takes } = batch;
    let attempt = || {
        commit_batch(ledger, settles.iter().map(|(s, _)| s), holds.iter().map(|(h, _)| h), takes.iter().map(|(t, _)| t))
    };
    let mut done = attempt().await;
    // Pooled connections are not pinged before each use (a round trip per
    // batch): one the server cut while it sat in the pool fails its first
    // statement and is dropped, so the batch goes again on the next, at
    // most once per connection the pool can hold.
    let mut lost = 0;
    while done.as_ref().is_err_and(LedgerError::connection_lost)
        && lost <= ledger.pool().options().get_max_connections()
    {
        lost += 1;
        done = attempt().await;
    }
    match done {
        Ok(Rows { settled, held, taken }) => {
            for ((s, tx), row) in settles.into_iter().zip(settled) {
                let _ = tx.send(settlement(&s.0, &s.1, row));
            }
            for ((h, tx), row) in holds.into_iter().zip(held) {
                let _ = tx.send(h.request().outcome(h.id, row));
            }
            for ((_, tx), row) in takes.into_iter().zip(taken) {
                let _ = tx.send(Ok(row));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, settles = settles.len(), holds = holds.len(), takes = takes.len(),
                "group commit failed; retrying each operation alone");
            for (s, tx) in settles {
                let _ = tx.send(ledger.settle(&s.0, &s.1).await);
            }
            for (h, tx) in holds {
                let _ = tx.send(hold_alone(ledger, &h).await);
            }
            for (t, tx) in takes {
                let taken = commit_batch(ledger, std::iter::empty(), std::iter::empty(), std::iter::once(&t)).await;
                let _ = tx.send(taken.map(|mut rows| rows.taken.pop().flatten()));
            }
        }
    }
}

/// One batch's operations with their callers, by kind.
#[derive(Default)]
struct Batch {
    settles: Vec<((Reservation, Usage), SettleReply)>,
    holds: Vec<(Hold, HoldReply)>,
    takes: Vec<(Take, TakeReply)>,
}

/// What `winston_commit_batch` answered, in the batch's order.
struct Rows {
    settled: Vec<Option<SettleRow>>,
    held: Vec<ReserveRow>,
    taken: Vec<Option<TakeRow>>,
}

/// Fails a batch whose statement did not answer one row per operation.
fn one_row_each(ok: bool) -> Result<(), LedgerError> {
    if ok {
        return Ok(());
    }
    Err(LedgerError::Db(sqlx::Error::Protocol("a batch answered the wrong number of rows".into())))
}

/// The batch in one statement, `winston_commit_batch`: it locks the
/// batch's accounts in id order, settles, holds, takes and, as a statement
/// of its own, commits: one round trip (not BEGIN, lock, each kind, COMMIT).
async fn commit_batch<'a>(
    ledger: &Ledger,
    settles: impl Iterator<Item = &'a (Reservation, Usage)>,
    holds: impl Iterator<Item = &'a Hold>,
    takes: impl Iterator<Item = &'a Take>,
) -> Result<Rows, LedgerError> {
    let mut c = SettleColumns::default();
    for (r, u) in settles {
        c.push(r, u);
    }
    let mut h = HoldColumns::default();
    for hold in holds {
        h.push(hold);
    }
    let mut t = TakeColumns::default();
    for take in takes {
        t.push(take);
    }
    let (n_settles, n_holds, n_takes) = (c.id.len(), h.id.len(), t.lease.len());
    let rows: Vec<BatchRow> = sqlx::query_as(
        "SELECT * FROM winston_commit_batch($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                            $6::int8[], $7::text[], $8::text[], $9::int8[], $10::int8[],
                                            $11::int8[], $12::bool[], $13::uuid[], $14::int8[],
                                            $15::text[], $16::uuid[], $17::text[], $18::int4[], $19::int8[],
                                            $20::int8[], $21::int8[], $22::int8[], $23::int8[], $24,
                                            $25::text[], $26::uuid[], $27::int4[], $28::bool[], $29::int8[],
                                            $30::int8[], $31::int8[], $32::int8[])",
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
    .bind(h.account)
    .bind(h.id)
    .bind(h.key)
    .bind(h.owner)
    .bind(h.fixed)
    .bind(h.unit_milli)
    .bind(h.max_units)
    .bind(h.min_units)
    .bind(h.ttl_ms)
    .bind(millis(IDEMPOTENCY_WINDOW))
    .bind(t.account)
    .bind(t.lease)
    .bind(t.owner)
    .bind(t.exists)
    .bind(t.want)
    .bind(t.min)
    .bind(t.share_pct)
    .bind(t.ttl_ms)
    .fetch_all(ledger.pool())
    .await?;
    one_row_each(rows.len() == n_settles + n_holds + n_takes)?;
    let mut rows = rows.into_iter();
    let settled = rows.by_ref().take(n_settles).map(|r| r.settle).collect();
    let held: Option<Vec<ReserveRow>> = rows.by_ref().take(n_holds).map(|r| r.hold).collect();
    let held = held.ok_or_else(|| LedgerError::Db(sqlx::Error::Protocol("a hold answered no outcome".into())))?;
    let taken = rows.map(|r| r.take).collect();
    Ok(Rows { settled, held, taken })
}

/// A hold retried alone under the id its batch gave it (a batch whose
/// commit was lost after all finds its hold taken: the id then conflicts
/// and the caller gets the database error; the hold is released with its
/// session or TTL like any abandoned hold).
async fn hold_alone(ledger: &Ledger, h: &Hold) -> Result<Reservation, LedgerError> {
    let mut rows = commit_batch(ledger, std::iter::empty(), std::iter::once(h), std::iter::empty()).await?;
    let row = rows.held.pop().ok_or_else(|| LedgerError::Db(sqlx::Error::RowNotFound))?;
    h.request().outcome(h.id, row)
}

/// One row of `winston_commit_batch`: a settlement's seven columns (all
/// NULL for an unknown account; the lease column is NULL for a direct
/// hold), a hold's eight (`winston_reserve`'s) or a take's five.
struct BatchRow {
    settle: Option<SettleRow>,
    hold: Option<ReserveRow>,
    take: Option<TakeRow>,
}

impl sqlx::FromRow<'_, sqlx::postgres::PgRow> for BatchRow {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let settle = match (
            row.try_get::<Option<i64>, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
            row.try_get::<Option<i64>, _>(2)?,
            row.try_get::<Option<i64>, _>(3)?,
            row.try_get::<Option<i32>, _>(4)?,
            row.try_get::<Option<i64>, _>(5)?,
        ) {
            (Some(debit), Some(balance), Some(reserved), Some(allotment), Some(pct), Some(inserted)) => {
                Some((debit, balance, reserved, allotment, pct, inserted, row.try_get(6)?))
            }
            _ => None,
        };
        let hold = match row.try_get::<Option<String>, _>(7)? {
            Some(outcome) => Some((
                outcome,
                row.try_get(8)?,
                row.try_get(9)?,
                row.try_get(10)?,
                row.try_get(11)?,
                row.try_get(12)?,
                row.try_get(13)?,
                row.try_get(14)?,
            )),
            None => None,
        };
        let take = match row.try_get::<Option<i64>, _>(15)? {
            Some(granted) => Some((granted, row.try_get(16)?, row.try_get(17)?, row.try_get(18)?, row.try_get(19)?)),
            None => None,
        };
        Ok(Self { settle, hold, take })
    }
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

/// Lease takes as column arrays for `unnest`.
#[derive(Default)]
struct TakeColumns {
    account: Vec<String>,
    lease: Vec<Uuid>,
    owner: Vec<Option<i32>>,
    exists: Vec<bool>,
    want: Vec<i64>,
    min: Vec<i64>,
    share_pct: Vec<i64>,
    ttl_ms: Vec<i64>,
}

impl TakeColumns {
    fn push(&mut self, t: &Take) {
        self.account.push(t.account.clone());
        self.lease.push(t.lease);
        self.owner.push(t.owner);
        self.exists.push(t.exists);
        self.want.push(t.want);
        self.min.push(t.min);
        self.share_pct.push(t.share_pct);
        self.ttl_ms.push(millis(t.ttl));
    }
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
