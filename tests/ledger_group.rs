//! Group commit against a real PostgreSQL: many holds and settlements share
//! one transaction and keep every money rule of one-at-a-time admission
//! (never overdraw, bill each request once, keys refused after completion),
//! and one bad operation never fails the others in its batch.
#![allow(clippy::unwrap_used)]
mod ledger_support;

use std::time::Duration;

use ledger_support::fresh_db;
use winston::ledger::{Grant, GroupCommit, HoldRequest, HoldShape, Ledger, LedgerError, Reservation, Usage};

fn usage(cost: i64) -> Usage {
    Usage { model: "m".into(), input_tokens: cost, cost, outcome: "complete".into(), ..Usage::default() }
}

fn hold<'a>(account: &'a str, key: Option<&'a str>, amount: i64) -> HoldRequest<'a> {
    HoldRequest { account, key, shape: HoldShape::fixed(amount), ttl: Duration::from_secs(60), owner: None }
}

/// `n` accounts `ns/<prefix><i>`, each granted `amount` credits.
async fn funded(l: &Ledger, prefix: &str, n: usize, amount: i64) -> Vec<String> {
    let accounts: Vec<String> = (0..n).map(|i| format!("ns/{prefix}{i}")).collect();
    for a in &accounts {
        l.ensure_account(a).await.unwrap();
        l.apply_grant(a, &Grant { id: format!("{a}/g"), amount, reason: String::new() }).await.unwrap();
    }
    accounts
}

/// Transactions that took holds: a reservation's `created_at` is its
/// transaction's start time, shared by every hold of one batch.
async fn hold_transactions(pool: &sqlx::PgPool, account: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(DISTINCT created_at) FROM reservations WHERE account_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_shares_commits_and_never_overdraws() {
    let db = fresh_db().await;
    let l = &db.ledger;
    l.ensure_account("ns/a").await.unwrap();
    l.apply_grant("ns/a", &Grant { id: "g".into(), amount: 10_000, reason: String::new() }).await.unwrap();
    let group = GroupCommit::start(l, 1, 256);

    let attempts =
        futures::future::join_all((0..200).map(|_| async { group.hold(&hold("ns/a", None, 90)).await })).await;
    let held: Vec<Reservation> = attempts.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    assert_eq!(held.len(), 111, "10,000 credits cover exactly 111 holds of 90");
    for r in &attempts {
        if let Err(e) = r {
            assert!(matches!(e, LedgerError::Insufficient { needed: 90, .. }), "{e}");
        }
    }
    let snapshot = l.snapshot("ns/a").await.unwrap();
    assert_eq!(snapshot.reserved, 111 * 90);
    let commits = hold_transactions(l.pool(), "ns/a").await;
    assert!(commits <= 20, "200 concurrent holds took {commits} transactions: they were not grouped");

    // Settled together, each for its own cost: billed once each, exactly.
    let settled = futures::future::join_all(held.iter().enumerate().map(|(i, r)| {
        let group = group.clone();
        async move { group.settle(r, &usage(i as i64 % 90)).await }
    }))
    .await;
    let billed: i64 = settled.iter().map(|s| s.as_ref().unwrap().credits).sum();
    let expected: i64 = (0..111).map(|i| i % 90).sum();
    assert_eq!(billed, expected);
    assert_eq!(l.usage_credits("ns/a").await.unwrap(), expected);
    let after = l.snapshot("ns/a").await.unwrap();
    assert_eq!((after.reserved, after.balance), (0, 10_000 - expected));
    // Settling them all again (a retry after a lost answer) bills nothing.
    let again = futures::future::join_all(held.iter().map(|r| async { group.settle(r, &usage(89)).await })).await;
    assert!(again.iter().all(|s| s.as_ref().unwrap().already_billed && s.as_ref().unwrap().credits == 0));
    assert_eq!(l.usage_credits("ns/a").await.unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_settlements_of_many_accounts_in_one_batch_keep_every_rule() {
    let db = fresh_db().await;
    let l = &db.ledger;
    let accounts = funded(l, "t", 6, 1_000).await;
    let group = GroupCommit::start(l, 2, 64);
    // Rounds of holds and settlements interleaved across accounts, one key
    // reused per account: the second use of a completed key is refused.
    for round in 0..5 {
        let holds = futures::future::join_all(accounts.iter().flat_map(|a| {
            let keyed = format!("key-{round}");
            let group = group.clone();
            let a = a.clone();
            (0..4).map(move |i| {
                let group = group.clone();
                let (a, keyed) = (a.clone(), keyed.clone());
                async move { group.hold(&hold(&a, (i == 0).then_some(keyed.as_str()), 50)).await }
            })
        }))
        .await;
        let held: Vec<Reservation> = holds.into_iter().map(Result::unwrap).collect();
        let settled = futures::future::join_all(held.iter().map(|r| async { group.settle(r, &usage(10)).await })).await;
        assert!(settled.iter().all(|s| s.as_ref().unwrap().credits == 10));
        for a in &accounts {
            match group.hold(&hold(a, Some(&format!("key-{round}")), 50)).await {
                Err(LedgerError::AlreadyCompleted { credits: 10, .. }) => {}
                other => panic!("a completed key was admitted again: {other:?}"),
            }
        }
    }
    for a in &accounts {
        let s = l.snapshot(a).await.unwrap();
        assert_eq!((s.reserved, s.balance), (0, 1_000 - 5 * 4 * 10), "{a}");
        assert_eq!(l.usage_credits(a).await.unwrap(), 5 * 4 * 10);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_operation_does_not_fail_its_batch() {
    let db = fresh_db().await;
    let l = &db.ledger;
    l.ensure_account("ns/a").await.unwrap();
    l.apply_grant("ns/a", &Grant { id: "g".into(), amount: 1_000, reason: String::new() }).await.unwrap();
    let group = GroupCommit::start(l, 1, 256);
    // A key PostgreSQL cannot store (a NUL byte) makes its statement fail;
    // it is sent among good holds, so it lands in a batch with them.
    let results = futures::future::join_all((0..40).map(|i| {
        let group = group.clone();
        async move {
            let key = if i == 20 { "bad\0key".to_string() } else { format!("k{i}") };
            group.hold(&hold("ns/a", Some(&key), 10)).await
        }
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        if i == 20 {
            assert!(matches!(r, Err(LedgerError::Db(_))), "the bad hold: {r:?}");
        } else {
            assert!(r.is_ok(), "hold {i} failed with its batch: {r:?}");
        }
    }
    let s = l.snapshot("ns/a").await.unwrap();
    assert_eq!(s.reserved, 39 * 10, "exactly the good holds are held");
    // Unknown accounts are answered as such, next to a good settlement.
    let good = results[0].as_ref().unwrap().clone();
    let stranger = Reservation { id: uuid::Uuid::new_v4(), account: "ns/nobody".into(), ..good.clone() };
    let (seven, seven_again) = (usage(7), usage(7));
    let (a, b) = tokio::join!(group.settle(&good, &seven), group.settle(&stranger, &seven_again));
    assert_eq!(a.unwrap().credits, 7);
    assert!(matches!(b, Err(LedgerError::UnknownAccount(_))), "{b:?}");
    assert!(matches!(group.hold(&hold("ns/nobody", None, 1)).await, Err(LedgerError::UnknownAccount(_))));
}

/// Every account's first hold of 100 at once, as this replica's owner.
async fn first_holds(
    leases: &winston::ledger::Leases,
    accounts: &[String],
    owner: i32,
) -> Vec<Result<Reservation, LedgerError>> {
    let requests: Vec<HoldRequest<'_>> = accounts
        .iter()
        .map(|account| HoldRequest {
            account,
            key: None,
            shape: winston::ledger::HoldShape::fixed(100),
            ttl: Duration::from_secs(60),
            owner: Some(owner),
        })
        .collect();
    futures::future::join_all(requests.iter().map(|r| leases.hold(r))).await
}

/// Defect (issue 18): every tenant coming back after a quiet spell took its
/// first credit lease in a transaction of its own, all at once, fighting the
/// batches for the same account rows (the proxy's 1,000 req/s tail). Takes
/// now go through the group commit: cold accounts share commits, each is
/// admitted against its own new lease, and a take that cannot be stored
/// fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_accounts_take_their_first_leases_in_shared_commits() {
    use winston::ledger::{LeaseSettings, Leases, ProxySession};
    let db = fresh_db().await;
    let l = &db.ledger;
    let accounts = funded(l, "c", 40, 1_000_000).await;
    let session = ProxySession::open(&db.url).await.unwrap();
    let owner = session.owner();
    let settings = LeaseSettings { idle: Duration::from_secs(600), ..LeaseSettings::default() };
    let leases = Leases::start(l, GroupCommit::start(l, 1, 256), Some(owner), settings);
    // 32 accounts' first requests at once.
    let held = first_holds(&leases, &accounts[..32], owner).await;
    let held: Vec<Reservation> = held.into_iter().map(Result::unwrap).collect();
    for (a, r) in accounts.iter().zip(&held) {
        assert!(r.lease.is_some(), "{a}'s first request was not admitted against its new lease");
        assert_eq!(r.available, 1_000_000 - 100, "{a}: the credits told remain are exact");
    }
    let (lease_rows, transactions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT created_at) FROM reservations WHERE request_id LIKE 'lease:%'")
            .fetch_one(l.pool())
            .await
            .unwrap();
    assert_eq!(lease_rows, 32, "one lease per account");
    assert!(transactions <= 8, "32 cold accounts took their leases in {transactions} transactions: not grouped");

    // A take PostgreSQL cannot store (an account id with a NUL byte) among
    // eight good ones fails alone.
    let mut more = accounts[32..].to_vec();
    more.insert(4, "ns/bad\0account".into());
    for (a, r) in more.iter().zip(first_holds(&leases, &more, owner).await) {
        if a.contains('\0') {
            assert!(matches!(r, Err(LedgerError::Db(_))), "the bad account: {r:?}");
        } else {
            let r = r.unwrap_or_else(|e| panic!("{a} failed with its batch: {e}"));
            assert!(r.lease.is_some(), "{a}'s first request was not admitted against its new lease");
        }
    }

    // Each is billed exactly once, and the leases go back whole.
    for r in &held {
        assert_eq!(leases.settle(r, &usage(10)).await.unwrap().credits, 10);
    }
    assert!(leases.return_all().await > 0);
    for a in &accounts[..32] {
        let s = l.snapshot(a).await.unwrap();
        assert_eq!((s.reserved, s.balance), (0, 1_000_000 - 10), "{a}");
        assert_eq!(l.usage_credits(a).await.unwrap(), 10, "{a}");
    }
}
