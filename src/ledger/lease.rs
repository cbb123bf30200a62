//! Credit leases: admission without a durable commit per request.
//!
//! A replica takes credit from an account in chunks (one commit per chunk,
//! `winston_lease_take`), and admits requests against its chunk in memory.
//! The chunk is an ordinary reservation row owned by the replica's
//! [`super::ProxySession`], so:
//!
//! - it never exceeds what the account has available when taken (the row
//!   lock and `reserved` do what they do for any hold), and no other replica
//!   can spend it;
//! - when the replica dies its session lock goes and any proxy's sweeper
//!   ([`Ledger::expire_reservations`]) gives the whole lease back at once,
//!   exactly as it does a dead proxy's holds;
//! - a request admitted against it is settled through the group commit
//!   before its response completes (`winston_settle_any`), which moves the
//!   cost from the lease to the debit: usage records still equal debits and
//!   the durability promise is unchanged. A lease-backed hold is a
//!   commitment exactly like a direct hold.
//!
//! Fairness between replicas (one tenant with little credit must be served
//! by every replica until its balance is really spent):
//!
//! - a lease never takes more than `share_pct` % of what the account has
//!   available beyond every other reservation, and none is taken when that
//!   share would not cover one hold of the request that asked: a low balance
//!   is served by exact per-request holds ([`GroupCommit::hold`]), shared by
//!   all replicas as before leases existed;
//! - a replica gives back the unused part of its lease as soon as a
//!   settlement shows the account under that threshold ("pressure") or
//!   over-committed, and all of it after `idle` without a request;
//! - a replica whose own direct hold is refused first gives back its own
//!   unused lease and tries once more.
//!
//! So a replica refuses with 402 while credit sits in another replica's
//! lease only until that replica's next settlement or `idle`, and then for
//! at most `share_pct` % of what was available when that lease was taken.
//!
//! Requests with an idempotency key always take a direct hold: the key is
//! claimed in the same statement as the hold.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::group::Take;
use super::reserve::millis;
use super::{GroupCommit, HoldRequest, Ledger, LedgerError, Reservation, Settlement, Usage};

/// How leases are sized and returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// A chunk covers at most this many holds of the size of the request
    /// that asked for it; 0 turns leases off (every request holds directly).
    pub holds: i64,
    /// Most of the account's available credits one chunk may take, in %.
    pub share_pct: i64,
    /// A lease without a request for this long goes back to the account.
    pub idle: Duration,
    /// Backstop expiry of the lease row, refreshed while the replica lives.
    pub ttl: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self { holds: 64, share_pct: 10, idle: Duration::from_secs(1), ttl: Duration::from_secs(900) }
    }
}

/// What this replica's leases did so far (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Requests admitted against a lease, without a commit.
    pub holds: u64,
    /// Chunks taken (each one commit).
    pub takes: u64,
    /// Credits given back to accounts (idle, pressure, shutdown).
    pub returned: u64,
    /// Credits this replica's leases hold now.
    pub leased: i64,
}

/// Holds, settlements and releases for a proxy replica: against its lease
/// in memory when it can, through the group commit otherwise. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leases {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    meter: GroupCommit,
    ledger: Ledger,
    owner: Option<i32>,
    settings: LeaseSettings,
    book: Mutex<Book>,
    holds: AtomicU64,
    takes: AtomicU64,
    returned: AtomicU64,
}

/// Every lease this replica has, and which one each account admits against.
#[derive(Debug, Default)]
struct Book {
    leases: HashMap<Uuid, Slot>,
    current: HashMap<String, Uuid>,
}

/// One lease as this replica knows it (it alone changes the row while it lives).
#[derive(Debug)]
struct Slot {
    account: String,
    /// Credits the lease row holds.
    size: i64,
    /// Credits of holds admitted against it and not yet settled or released.
    outstanding: i64,
    /// The row exists (a first take committed).
    in_db: bool,
    /// A take is running.
    taking: bool,
    /// Admits nothing more and takes no more (gone or suspect): given back
    /// once nothing is outstanding on it, or `idle` after it was retired
    /// (a hold whose settlement failed is never settled here).
    retired: Option<Instant>,
    /// No take before this instant (a take was refused or pressure was seen).
    quiet_until: Instant,
    last_used: Instant,
    refreshed: Instant,
    /// The account as the last commit saw it.
    view: View,
}

#[derive(Clone, Copy, Debug, Default)]
struct View {
    balance: i64,
    /// Available to others: balance minus every reservation, leases included.
    available: i64,
    allotment: i64,
    pct: i32,
}

impl Slot {
    fn new(account: &str, now: Instant) -> Self {
        Self {
            account: account.to_string(),
            size: 0,
            outstanding: 0,
            in_db: false,
            taking: false,
            retired: None,
            quiet_until: now,
            last_used: now,
            refreshed: now,
            view: View::default(),
        }
    }

    fn free(&self) -> i64 {
        (self.size - self.outstanding).max(0)
    }
}

/// What [`Inner::admit`] decided.
enum Admission {
    /// Admitted against the account's lease.
    Held(Reservation),
    /// The account has no lease: the caller takes its first one, then admits.
    TakeFirst(Take),
    /// Hold directly (a lease may be growing in the background).
    Direct,
}

impl Leases {
    /// Starts the replica's leases over `meter`, owned by `owner` (its
    /// session; without one, leases are off: nothing could recover them),
    /// and the background task that refreshes and returns them.
    #[must_use]
    pub fn start(ledger: &Ledger, meter: GroupCommit, owner: Option<i32>, settings: LeaseSettings) -> Self {
        let inner = Arc::new(Inner {
            meter,
            ledger: ledger.clone(),
            owner,
            settings,
            book: Mutex::default(),
            holds: AtomicU64::new(0),
            takes: AtomicU64::new(0),
            returned: AtomicU64::new(0),
        });
        if inner.enabled() {
            tokio::spawn(tend(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Holds credit for one request: against this replica's lease when it
    /// covers the request's full cap, otherwise directly (one commit, fitted
    /// to the balance), growing the lease in the background meanwhile.
    ///
    /// An account without a lease takes its first one in place of the
    /// direct hold (one commit either way) and admits against it: the
    /// credits the request is told remain are then exact, never off by a
    /// lease that committed while a direct hold ran.
    ///
    /// # Errors
    /// As [`Ledger::hold`].
    pub async fn hold(&self, req: &HoldRequest<'_>) -> Result<Reservation, LedgerError> {
        let mut admission = self.inner.admit(req);
        if let Admission::TakeFirst(take) = admission {
            let _ = self.inner.spawn_take(take).await;
            admission = self.inner.admit(req);
        }
        match admission {
            Admission::Held(r) => return Ok(r),
            // The take granted nothing and its quiet time is already over
            // (a slow pass): this one runs in the background, like growth,
            // so every take that marked the slot finishes and clears it.
            Admission::TakeFirst(take) => drop(self.inner.spawn_take(take)),
            Admission::Direct => {}
        }
        let held = match self.inner.meter.hold(req).await {
            Err(LedgerError::Insufficient { .. }) if self.inner.give_back_free(req.account).await > 0 => {
                self.inner.meter.hold(req).await
            }
            other => other,
        };
        held.map(|mut r| {
            r.available += self.inner.own_free(&r.account);
            r
        })
    }

    /// Settles through the group commit (before the response completes, as
    /// for any hold) and books what a lease-backed hold consumed.
    ///
    /// # Errors
    /// As [`Ledger::settle`].
    pub async fn settle(&self, reservation: &Reservation, usage: &Usage) -> Result<Settlement, LedgerError> {
        let settled = self.inner.meter.settle(reservation, usage).await;
        self.inner.after_settle(reservation, settled.as_ref().ok());
        settled.map(|mut s| {
            s.available += self.inner.own_free(&reservation.account);
            s
        })
    }

    /// Drops a hold without charging: in memory for a lease-backed hold,
    /// in the database otherwise. Returns the credits available afterwards
    /// (`None` when the direct hold was already gone).
    ///
    /// # Errors
    /// Database errors (direct holds only).
    pub async fn release(&self, reservation: &Reservation) -> Result<Option<i64>, LedgerError> {
        match reservation.lease {
            Some(id) => Ok(Some(self.inner.release_in_memory(id, reservation.amount))),
            None => {
                let left = self.inner.ledger.release(reservation).await?;
                Ok(left.map(|a| a + self.inner.own_free(&reservation.account)))
            }
        }
    }

    /// Gives every lease back (graceful shutdown, after the last request).
    /// Returns the credits given back.
    pub async fn return_all(&self) -> i64 {
        let gone: Vec<(Uuid, String)> = {
            let mut book = self.inner.lock();
            book.current.clear();
            book.leases.drain().filter(|(_, s)| s.in_db).map(|(id, s)| (id, s.account)).collect()
        };
        let mut total = 0;
        for (id, account) in gone {
            total += self.inner.give_back(&account, id, i64::MAX).await;
        }
        total
    }

    /// What the leases did so far and hold now.
    #[must_use]
    pub fn stats(&self) -> LeaseStats {
        let leased = self.inner.lock().leases.values().map(|s| s.size).sum();
        LeaseStats {
            holds: self.inner.holds.load(Ordering::Relaxed),
            takes: self.inner.takes.load(Ordering::Relaxed),
            returned: self.inner.returned.load(Ordering::Relaxed),
            leased,
        }
    }
}

impl Inner {
    fn enabled(&self) -> bool {
        self.settings.holds > 0 && self.settings.share_pct > 0 && self.owner.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Credits of `account`'s current lease no hold uses: available to
    /// this replica's next requests although the database counts them reserved.
    fn own_free(&self, account: &str) -> i64 {
        let book = self.lock();
        book.current.get(account).and_then(|id| book.leases.get(id)).map_or(0, |s| if s.in_db { s.free() } else { 0 })
    }

    /// The in-memory admission: the full cap's hold against the account's
    /// current lease, and a background take when the lease runs low (the
    /// caller's own take when the account has none yet).
    fn admit(self: &Arc<Self>, req: &HoldRequest<'_>) -> Admission {
        if !self.enabled() || req.key.is_some() || req.owner != self.owner || req.validate().is_err() {
            return Admission::Direct;
        }
        let need = req.shape.worst_case();
        let now = Instant::now();
        let mut book = self.lock();
        let id = *book.current.entry(req.account.to_string()).or_insert_with(Uuid::new_v4);
        let slot = book.leases.entry(id).or_insert_with(|| Slot::new(req.account, now));
        slot.last_used = now;
        let admitted = (slot.retired.is_none() && slot.in_db && slot.free() >= need).then(|| {
            slot.outstanding += need;
            Reservation {
                id: Uuid::new_v4(),
                account: req.account.to_string(),
                key: None,
                amount: need,
                units: req.shape.max_units,
                balance: slot.view.balance,
                available: slot.view.available + slot.free(),
                allotment: slot.view.allotment,
                low_threshold_pct: slot.view.pct,
                lease: Some(id),
            }
        });
        let want = need.saturating_mul(self.settings.holds).max(1);
        let refill = slot.retired.is_none() && !slot.taking && now >= slot.quiet_until && slot.free() < want / 2;
        let mut first = None;
        if refill {
            slot.taking = true;
            let take = Take {
                account: req.account.to_string(),
                lease: id,
                owner: self.owner,
                exists: slot.in_db,
                want: want - slot.free(),
                min: need,
                share_pct: self.settings.share_pct,
                ttl: self.settings.ttl,
            };
            if take.exists {
                drop(self.spawn_take(take));
            } else {
                first = Some(take);
            }
        }
        drop(book);
        match (admitted, first) {
            (Some(r), _) => {
                self.holds.fetch_add(1, Ordering::Relaxed);
                Admission::Held(r)
            }
            (None, Some(take)) => Admission::TakeFirst(take),
            (None, None) => Admission::Direct,
        }
    }

    /// Runs `take` on its own task: a caller that goes away (a client
    /// disconnecting mid-request) must not leave it half booked, with the
    /// slot marked taking for ever and the row reserved until its expiry.
    fn spawn_take(self: &Arc<Self>, take: Take) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(self);
        tokio::spawn(async move { inner.take(take).await })
    }

    /// Takes or grows a lease by up to `want` (at least `min`, one hold),
    /// through the group commit: in the account's queue (after its
    /// settlements so far) and in one commit with whatever else is waiting,
    /// so a burst of accounts taking their first lease at once (every
    /// tenant back after a quiet spell) shares commits instead of running a
    /// transaction each, all of them fighting the batches for the same rows.
    async fn take(self: Arc<Self>, take: Take) {
        let id = take.lease;
        let row = self.meter.take(take).await;
        let now = Instant::now();
        let mut book = self.lock();
        let Some(slot) = book.leases.get_mut(&id) else {
            return;
        };
        slot.taking = false;
        let mut gone = false;
        match row {
            Ok(Some((granted, balance, available, allotment, pct))) => {
                slot.view = View { balance, available, allotment, pct };
                if granted > 0 {
                    slot.size += granted;
                    slot.in_db = true;
                    slot.refreshed = now;
                    self.takes.fetch_add(1, Ordering::Relaxed);
                } else if granted < 0 {
                    gone = true;
                } else {
                    slot.quiet_until = now + self.settings.idle;
                }
            }
            Ok(None) => slot.quiet_until = now + self.settings.idle,
            Err(e) => {
                tracing::warn!(error = %e, "failed to take a credit lease; holding per request meanwhile");
                slot.quiet_until = now + self.settings.idle;
            }
        }
        if gone {
            retire(&mut book, id, now);
        }
    }

    fn release_in_memory(&self, id: Uuid, amount: i64) -> i64 {
        let mut book = self.lock();
        match book.leases.get_mut(&id) {
            Some(slot) => {
                slot.outstanding = (slot.outstanding - amount).max(0);
                slot.view.available + slot.free()
            }
            None => 0,
        }
    }

    /// Books a settlement: what a lease-backed hold consumed leaves the
    /// lease; a lease found gone or a settlement whose effect is unknown
    /// retires it; pressure on the account gives back what is unused.
    fn after_settle(self: &Arc<Self>, r: &Reservation, settled: Option<&Settlement>) {
        let now = Instant::now();
        let mut book = self.lock();
        if let Some(id) = r.lease
            && let Some(slot) = book.leases.get_mut(&id)
        {
            match settled {
                Some(s) if !s.already_billed && s.lease_left.is_some() => {
                    slot.outstanding = (slot.outstanding - r.amount).max(0);
                    slot.size = (slot.size - s.credits.min(r.amount)).max(0);
                }
                // Gone (swept), or an earlier attempt may have committed
                // unseen: this lease's size is no longer known here.
                Some(_) => {
                    slot.outstanding = (slot.outstanding - r.amount).max(0);
                    retire(&mut book, id, now);
                }
                // Failed: the caller may retry this settlement, so its hold
                // stays outstanding; the lease admits nothing more.
                None => retire(&mut book, id, now),
            }
        }
        let Some(s) = settled else { return };
        let Some(&id) = book.current.get(&r.account) else { return };
        let Some(slot) = book.leases.get_mut(&id) else { return };
        slot.view =
            View { balance: s.balance, available: s.available, allotment: s.allotment, pct: s.low_threshold_pct };
        // What a new chunk could take would not cover this request: the
        // account is low (or over-committed), so what sits unused here may
        // be what another replica needs.
        let under_pressure = s.available.saturating_mul(self.settings.share_pct) / 100 < r.amount;
        if under_pressure {
            slot.quiet_until = now + self.settings.idle;
            let free = slot.free();
            if free > 0 && slot.in_db {
                slot.size -= free;
                let (inner, account) = (Arc::clone(self), r.account.clone());
                tokio::spawn(async move { inner.give_back(&account, id, free).await });
            }
        }
    }

    /// Gives back the unused part of `account`'s current lease; returns it.
    async fn give_back_free(&self, account: &str) -> i64 {
        let (id, free) = {
            let mut book = self.lock();
            let Some(&id) = book.current.get(account) else { return 0 };
            let Some(slot) = book.leases.get_mut(&id) else { return 0 };
            let free = if slot.in_db { slot.free() } else { 0 };
            slot.size -= free;
            slot.quiet_until = Instant::now() + self.settings.idle;
            (id, free)
        };
        if free == 0 {
            return 0;
        }
        self.give_back(account, id, free).await
    }

    /// `winston_lease_return`: up to `amount` of lease `id` back to the account.
    async fn give_back(&self, account: &str, id: Uuid, amount: i64) -> i64 {
        let back: Result<(i64,), sqlx::Error> = sqlx::query_as("SELECT winston_lease_return($1, $2, $3)")
            .bind(account)
            .bind(id)
            .bind(amount)
            .fetch_one(self.ledger.pool())
            .await;
        match back {
            Ok((n,)) => {
                self.returned.fetch_add(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
                n
            }
            Err(e) => {
                // The row stays reserved until this replica's session ends
                // or the lease's expiry: never spendable twice.
                tracing::warn!(error = %e, "failed to give back a credit lease");
                0
            }
        }
    }

    /// One pass of the background task: idle and retired leases with
    /// nothing outstanding go back; live ones are kept from expiring.
    async fn tend_once(&self) {
        let now = Instant::now();
        let (back, refresh) = {
            let mut book = self.lock();
            let idle = self.settings.idle;
            let done: Vec<Uuid> = book
                .leases
                .iter()
                .filter(|(_, s)| {
                    let retired_long = s.retired.is_some_and(|at| now.duration_since(at) >= idle);
                    !s.taking
                        && (retired_long
                            || (s.outstanding == 0 && (s.retired.is_some() || now.duration_since(s.last_used) >= idle)))
                })
                .map(|(id, _)| *id)
                .collect();
            let mut back = Vec::new();
            for id in done {
                if let Some(s) = book.leases.remove(&id) {
                    if book.current.get(&s.account) == Some(&id) {
                        book.current.remove(&s.account);
                    }
                    if s.in_db {
                        back.push((s.account, id));
                    }
                }
            }
            let refresh: Vec<Uuid> = book
                .leases
                .iter_mut()
                .filter(|(_, s)| s.in_db && now.duration_since(s.refreshed) >= self.settings.ttl / 3)
                .map(|(id, s)| {
                    s.refreshed = now;
                    *id
                })
                .collect();
            (back, refresh)
        };
        for (account, id) in back {
            self.give_back(&account, id, i64::MAX).await;
        }
        if !refresh.is_empty() {
            let done = sqlx::query("SELECT winston_lease_refresh($1, $2)")
                .bind(&refresh)
                .bind(millis(self.settings.ttl))
                .execute(self.ledger.pool())
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "failed to refresh credit leases");
            }
        }
    }
}

/// Stops admitting against lease `id` and taking more for it. It stays the
/// account's current lease (so the account holds directly meanwhile, which
/// damps a failing database instead of taking lease after lease) until the
/// background task gives it back; the next request then starts a new one.
fn retire(book: &mut Book, id: Uuid, now: Instant) {
    if let Some(slot) = book.leases.get_mut(&id) {
        slot.retired.get_or_insert(now);
    }
}

/// The background task: runs while any [`Leases`] handle lives.
async fn tend(inner: std::sync::Weak<Inner>) {
    let every = inner
        .upgrade()
        .map(|i| (i.settings.idle / 4).clamp(Duration::from_millis(20), Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.tend_once().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_never_offers_more_than_it_holds_beyond_its_holds() {
        let mut s = Slot::new("a", Instant::now());
        assert_eq!(s.free(), 0);
        s.size = 100;
        s.outstanding = 30;
        assert_eq!(s.free(), 70);
        s.outstanding = 130;
        assert_eq!(s.free(), 0);
    }

    #[test]
    fn a_retired_lease_admits_nothing_and_keeps_its_first_retirement_time() {
        let mut book = Book::default();
        let id = Uuid::new_v4();
        let t0 = Instant::now();
        book.leases.insert(id, Slot { size: 1_000, in_db: true, ..Slot::new("a", t0) });
        book.current.insert("a".into(), id);
        retire(&mut book, id, t0);
        retire(&mut book, id, t0 + Duration::from_secs(5));
        assert_eq!(book.leases[&id].retired, Some(t0));
        assert_eq!(book.current.get("a"), Some(&id));
    }
}
