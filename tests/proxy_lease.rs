//! Credit leases under attack (issue 18): a replica admits requests against
//! a chunk of credit it took in one commit. These tests try to make that
//! lose or strand money:
//!
//! - two `winston proxy` processes race on one account with a small
//!   balance: every generation the mock upstream counted is billed exactly,
//!   nothing is overdrawn, and neither replica refuses while the balance
//!   could still pay, beyond the documented bound (see `docs/proxy-leases.md`);
//! - a replica holding a lease is SIGKILLed: the lease comes back as soon
//!   as its session lock is gone (not after its TTL) and the balance is
//!   exactly the start minus what was billed;
//! - the period rolls over while a lease is open: the new period is billed
//!   exactly and nothing from the old one leaks into it.
#![allow(clippy::unwrap_used)]
mod proxy_support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use proxy_support::*;
use serde_json::json;
use winston::emulator::llm::{LlmMockConfig, MockStats};
use winston::ledger::{Grant, Ledger, Period};
use winston::proxy::Settings;

const TAG: &str = "lease";
/// Output cap per request: the full hold is its input plus this.
const MAX_TOKENS: i64 = 1000;
/// What the mock generates per request (when the cap allows).
const OUTPUT: i64 = 200;
/// The catalog's `--min-output-tokens` default: the least cap forwarded.
const MIN_OUTPUT: i64 = 16;

struct Replica {
    child: Child,
    url: String,
    admin: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    db: TestDb,
    stats: Arc<MockStats>,
    catalog: std::path::PathBuf,
    key: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn setup(credits: i64) -> Setup {
    let db = fresh_db().await;
    let (mock, stats) =
        start_counting_mock(LlmMockConfig { api_key: Some("k".into()), ..LlmMockConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k").unwrap();
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(&catalog, catalog_yaml(&mock, &dir.path().join("key"))).unwrap();
    db.ledger.ensure_account(ACCOUNT).await.unwrap();
    let grant = Grant { id: "lease-test".into(), amount: credits, reason: String::new() };
    db.ledger.apply_grant(ACCOUNT, &grant).await.unwrap();
    let key = db.ledger.issue_key(ACCOUNT, "lease").await.unwrap().plaintext;
    Setup { db, stats, catalog, key, http: reqwest::Client::new(), _dir: dir }
}

async fn replica(s: &Setup, lease_idle_ms: u64) -> Replica {
    let port = winston::devenv::free_port().unwrap();
    let admin_port = winston::devenv::free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}"), "--database-url", &s.db.url])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--catalog")
        .arg(&s.catalog)
        // The production TTL: a dead replica's lease must come back through
        // its lost session, not by expiring.
        .args(["--reservation-ttl-secs", "900", "--key-refresh-ms", "200"])
        .args(["--lease-idle-ms", &lease_idle_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = Replica { child, url: format!("http://127.0.0.1:{port}"), admin: format!("http://127.0.0.1:{admin_port}") };
    let http = &s.http;
    let ready = eventually(30, || async {
        http.get(format!("{}/readyz", r.admin)).send().await.is_ok_and(|x| x.status() == 200)
    })
    .await;
    assert!(ready, "replica did not become ready");
    r
}

/// One Kimi (1 credit per token) request without an idempotency key, so
/// it may be admitted against the replica's lease. Returns the status.
async fn call(http: &reqwest::Client, url: &str, key: &str) -> u16 {
    call_told(http, url, key).await.0
}

/// As [`call`], with the least hold a 402 says the request needs.
async fn call_told(http: &reqwest::Client, url: &str, key: &str) -> (u16, Option<i64>) {
    let body = json!({"model": KIMI, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "lease"}],
        "mock": {"output_tokens": OUTPUT, "tag": TAG}});
    let r = http.post(format!("{url}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let needed =
        text.split("needs at least ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok());
    (status, needed)
}

async fn metric(http: &reqwest::Client, admin: &str, name: &str) -> f64 {
    let text = http.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The money rules after everything settled: one usage record per
/// generation the upstream counted, billed exactly what it generated, no
/// overdraw, and debits equal to usage.
async fn assert_exact(ledger: &Ledger, stats: &MockStats, start: i64) -> (i64, i64) {
    let g = stats.tag(TAG);
    let (credits, records, cost): (i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(credits),0)::bigint, count(*), COALESCE(sum(cost),0)::bigint FROM usage_records",
    )
    .fetch_one(ledger.pool())
    .await
    .unwrap();
    assert_eq!(records as u64, g.generations, "usage records differ from upstream generations");
    let generated = (g.input_tokens + g.output_tokens) as i64 * KIMI_X;
    assert_eq!(credits, generated, "billed differs from what the upstream generated");
    assert_eq!(cost, credits, "usage went unbilled");
    let b = ledger.snapshot(ACCOUNT).await.unwrap();
    assert!(b.balance >= 0, "overdrawn: {b:?}");
    assert_eq!(start - b.balance, credits, "debits differ from usage: {b:?}");
    (credits, b.balance)
}

/// The least a request costs to admit: its input and the minimum cap.
fn input_tokens() -> i64 {
    let body = json!({"model": KIMI, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "lease"}]});
    winston::emulator::llm::count_input_tokens(&body) as i64
}

#[tokio::test]
async fn two_replicas_spend_a_small_balance_to_the_end_and_bill_every_generation() {
    const START: i64 = 60_000;
    const WORKERS_PER_REPLICA: usize = 4;
    let s = setup(START).await;
    let replicas = [replica(&s, 300).await, replica(&s, 300).await];
    let full_hold = input_tokens() + MAX_TOKENS;
    let min_hold = input_tokens() + MIN_OUTPUT;
    // Phase 1: both replicas race until every worker has been refused.
    // At each refusal the ledger's balance is read: the bound says what
    // can still be unspent then (see docs/proxy-leases.md).
    let refused_at: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut workers = Vec::new();
    for r in &replicas {
        for _ in 0..WORKERS_PER_REPLICA {
            let (http, url, key, ledger) = (s.http.clone(), r.url.clone(), s.key.clone(), s.db.ledger.clone());
            let refused_at = refused_at.clone();
            workers.push(tokio::spawn(async move {
                let mut ok = 0;
                loop {
                    match call(&http, &url, &key).await {
                        200 => ok += 1,
                        402 => {
                            let balance = ledger.snapshot(ACCOUNT).await.unwrap().balance;
                            refused_at.lock().unwrap().push(balance);
                            return ok;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
            }));
        }
    }
    let mut served = Vec::new();
    for w in workers {
        served.push(w.await.unwrap());
    }
    println!("served per worker: {served:?}; balance at each first 402: {:?}", refused_at.lock().unwrap());
    assert!(served.iter().all(|n| *n > 0), "a worker was never served: {served:?}");
    // Bound: at a refusal, what is unspent is at most every worker's hold
    // in flight plus the other replica's lease, which never exceeds
    // `--lease-share-pct` (10 %) of what was available when it was taken.
    let bound = START / 10 + (2 * WORKERS_PER_REPLICA as i64) * full_hold + min_hold;
    for b in refused_at.lock().unwrap().iter() {
        assert!(*b <= bound, "refused with {b} credits left (bound {bound})");
    }
    // Phase 2: once idle, both leases go back, and then a refusal means
    // the balance really cannot pay the least request: each replica is
    // asked in turn until both refuse with nothing held anywhere.
    let returned = eventually(10, || async { s.db.ledger.snapshot(ACCOUNT).await.unwrap().reserved == 0 }).await;
    assert!(returned, "the idle replicas kept their leases");
    let needed = loop {
        let mut needed = Vec::new();
        for r in &replicas {
            if let (402, Some(n)) = call_told(&s.http, &r.url, &s.key).await {
                needed.push(n);
            }
        }
        if needed.len() == replicas.len() {
            break needed.into_iter().min().unwrap();
        }
    };
    let (_, balance) = assert_exact(&s.db.ledger, &s.stats, START).await;
    assert!(balance < needed, "both replicas refuse while {balance} credits could pay a request of {needed}");
    assert!(needed < full_hold, "a refusal asked for {needed}, not the least cap's hold (full hold {full_hold})");
    let leased: f64 = metric(&s.http, &replicas[0].admin, "winston_proxy_lease_holds_total").await
        + metric(&s.http, &replicas[1].admin, "winston_proxy_lease_holds_total").await;
    assert!(leased > 0.0, "no request was admitted against a lease: the test proved nothing");
}

#[tokio::test]
async fn a_killed_replicas_lease_comes_back_with_its_session() {
    const START: i64 = 10_000_000;
    let s = setup(START).await;
    // A long idle time: the lease is still held when the replica dies.
    let mut r = replica(&s, 600_000).await;
    let leased = eventually(30, || async {
        call(&s.http, &r.url, &s.key).await == 200
            && metric(&s.http, &r.admin, "winston_proxy_lease_holds_total").await > 0.0
    })
    .await;
    assert!(leased, "the replica never admitted against a lease");
    // No request in flight: all that is reserved is the lease.
    let b = s.db.ledger.snapshot(ACCOUNT).await.unwrap();
    assert!(b.reserved > 0, "no lease held: {b:?}");
    let (holds,): (i64,) = sqlx::query_as("SELECT count(*) FROM reservations WHERE request_id NOT LIKE 'lease:%'")
        .fetch_one(s.db.ledger.pool())
        .await
        .unwrap();
    assert_eq!(holds, 0);
    r.child.kill().unwrap();
    r.child.wait().unwrap();
    // Any proxy's sweep (here the one it runs) gives the lease back as soon
    // as the dead replica's session lock is gone, long before its 900 s TTL.
    let ledger = s.db.ledger.clone();
    let back = eventually(10, || {
        let ledger = ledger.clone();
        async move {
            ledger.expire_reservations().await.unwrap();
            ledger.snapshot(ACCOUNT).await.unwrap().reserved == 0
        }
    })
    .await;
    assert!(back, "the dead replica's lease outlived it");
    let (credits, balance) = assert_exact(&s.db.ledger, &s.stats, START).await;
    assert_eq!(balance, START - credits);
    // The credit is spendable again by a new replica.
    let next = replica(&s, 600_000).await;
    assert_eq!(call(&s.http, &next.url, &s.key).await, 200);
}

/// December 2026 (the harness's period is November).
fn december() -> Period {
    Period {
        start: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
    }
}

#[tokio::test]
async fn a_period_rollover_with_an_open_lease_bills_the_new_period_exactly() {
    const ALLOTMENT: i64 = 1_000_000;
    let settings = Settings { lease_idle_ms: 600_000, ..test_settings() };
    let mut h = harness(ALLOTMENT, settings).await;
    let body = json!({"model": KIMI, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "lease"}],
        "mock": {"output_tokens": OUTPUT, "tag": TAG}});
    let leased = eventually(30, || async {
        h.openai(&body).send().await.unwrap().status() == 200 && h.metric("winston_proxy_lease_holds_total").await > 0.0
    })
    .await;
    assert!(leased, "no request was admitted against a lease");
    let before = h.balance().await;
    assert!(before.reserved > 0, "the lease is not open: {before:?}");
    let (old_period, _) = h.usage().await;
    // The harness's period is November 2026: December starts afresh.
    assert!(h.db.ledger.ensure_period(ACCOUNT, december(), ALLOTMENT).await.unwrap());
    let after_reset = h.balance().await;
    assert_eq!((after_reset.balance, after_reset.used_this_period), (ALLOTMENT, 0));
    for _ in 0..20 {
        assert_eq!(h.openai(&body).send().await.unwrap().status(), 200);
    }
    let (all, records) = h.usage().await;
    let b = h.balance().await;
    assert_eq!(b.used_this_period, all - old_period, "the new period's usage differs from its records");
    assert_eq!(b.balance, ALLOTMENT - b.used_this_period);
    let g = h.upstream.tag(TAG);
    assert_eq!(records as u64, g.generations);
    assert_eq!(all, (g.input_tokens + g.output_tokens) as i64 * KIMI_X);
    // A graceful shutdown gives the lease back.
    h.shutdown().await;
    assert_eq!(h.balance().await.reserved, 0, "the lease outlived a graceful shutdown");
}
