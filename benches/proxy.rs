//! `make bench`, proxy part: what `winston proxy` costs on the request path.
//!
//! Starts a throwaway PostgreSQL (with production's durability when run by
//! `make bench`, which sets `WINSTON_PG_DURABLE=1`: fsync and synchronous
//! commit on, so each settlement waits for its WAL flush; the settings are
//! printed), the mock LLM upstream in this process and the real `winston proxy`
//! binary as its own process, all on 127.0.0.1. Then, in one run:
//!
//! - open-loop fixed-rate load (500, 1,000 and 2,000 requests/s) of
//!   non-streaming `POST /v1/messages`, once straight at the mock and once
//!   through the proxy (spread over 32 tenants, as in a deployment): p50/p99
//!   of each and the difference (added latency);
//! - the same for streaming requests, measuring time to the first byte;
//! - the highest throughput with metering on (closed loop, 64 in flight),
//!   over 32 tenants and for a single tenant (whose ledger row every request
//!   locks: the per-tenant ceiling);
//! - the proxy's resident memory, and a check that every proxied response
//!   that succeeded has exactly one usage record;
//! - the disk's flush latency (8 KiB write + fdatasync, what one WAL flush
//!   costs at least), the floor under any durable commit;
//! - LiteLLM's proxy (pinned, installed by `scripts/litellm-baseline` into
//!   `~/.cache/winston`, no database) on the same mock, same load, same
//!   run, when it can be installed; skipped with a note otherwise.
//!
//! The figures are merged into `target/bench/summary.json`.
//!
//! The load generator is this file: tokio tasks started on a fixed schedule
//! (open loop: a slow response never delays the next send), sending with
//! reqwest (hyper underneath) over keep-alive connections. Latency runs from
//! the moment a request is dispatched to the last byte of its response; the
//! generator's own lag behind its schedule is printed so a run where it could
//! not keep up is visible. Everything is bounded in time (about 2 minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "support/summary.rs"]
mod summary;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{Datelike, TimeZone, Utc};
use tokio::net::TcpListener;
use winston::devenv::postgres::TempPostgres;
use winston::emulator::llm::{LlmMockConfig, serve};
use winston::ledger::{Ledger, Period};

/// Tenants the load is spread over (round robin over their keys), as in a
/// deployment; the single-tenant ceiling is measured separately.
const TENANTS: usize = 32;
const MODEL: &str = "claude-sonnet-4-5";
const RATES: [u64; 3] = [500, 1_000, 2_000];
const PHASE: Duration = Duration::from_secs(8);
const STREAM_RATE: u64 = 500;
const THROUGHPUT_PHASE: Duration = Duration::from_secs(6);
const IN_FLIGHT: usize = 64;

/// Where a request goes.
#[derive(Clone)]
struct Target {
    url: String,
    /// Tenant keys used in turn (none: a direct call).
    keys: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    body: Bytes,
    streaming: bool,
}

/// One request's outcome.
struct Sample {
    ok: bool,
    /// Dispatch to last byte.
    total: Duration,
    /// Dispatch to first body byte.
    first_byte: Duration,
    /// How late the dispatch was against the schedule.
    lag: Duration,
}

fn main() {
    // `cargo test --all-targets` (make test) runs bench targets too, without
    // `--bench`: a 90-second load run in a debug build is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("proxy benchmark: run it with `make bench` (cargo bench --bench proxy)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    winston::telemetry::install_crypto_provider();
    let wall = Instant::now();
    println!("winston proxy benchmark");
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "load generator: open-loop fixed-rate schedule on tokio tasks, reqwest 0.13 (hyper 1) keep-alive client, \
         in this process; latency from dispatch to last byte"
    );

    // The ledger database, with durable commits as in production.
    let pg = TempPostgres::start().expect("start PostgreSQL");
    pg.create_database("bench").expect("create database");
    let url = pg.url("bench");
    winston::ledger::migrate(&url).await.expect("migrate");
    let ledger = Ledger::connect(&url, 4).await.expect("connect");
    let pool = ledger.pool().clone();
    let setting = |name: &'static str| {
        let pool = pool.clone();
        async move {
            let (v,): (String,) = sqlx::query_as(name).fetch_one(&pool).await.expect("show setting");
            v
        }
    };
    println!(
        "postgres: 15 (throwaway cluster), fsync={}, synchronous_commit={}: a usage record is committed before the \
         last byte leaves the proxy; with fsync on, each commit also waits for one WAL flush of the disk",
        setting("SHOW fsync").await,
        setting("SHOW synchronous_commit").await
    );
    let fsync = flush_latency(&std::env::temp_dir());
    println!(
        "disk flush (8 KiB write + fdatasync, pg_test_fsync's test): mean {:.2} ms, p99 {:.2} ms: no durable commit \
         (and so no request that waits for one) is faster",
        fsync.0, fsync.1
    );
    let segments = warm_wal(&pool).await;
    println!(
        "WAL warmed as on a running server: {segments} segment files after a checkpoint recycled them (a fresh \
         cluster instead creates, zero-fills and flushes a new 16 MiB segment each time one fills, and every commit \
         waits meanwhile)"
    );
    let now = Utc::now();
    let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().expect("month start");
    let period = Period { start, end: start + chrono::Duration::days(40) };
    let mut keys = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let account = winston::names::ledger_account("bench", &format!("tenant-{i}"), &format!("uid-{i}"));
        ledger.ensure_account(&account).await.expect("account");
        ledger.ensure_period(&account, period, 1_000_000_000_000_000).await.expect("allotment");
        keys.push(ledger.issue_key(&account, "bench").await.expect("key").plaintext);
    }
    let one_tenant = Arc::new(keys[..1].to_vec());
    let all_tenants = Arc::new(keys);

    // The mock upstream (no artificial latency) and the proxy process.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let mock = format!("http://{}", listener.local_addr().expect("mock addr"));
    tokio::spawn(serve(listener, LlmMockConfig { default_output_tokens: 16, ..LlmMockConfig::default() }));
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(
        &catalog,
        format!("models:\n  {MODEL}:\n    kind: anthropic\n    base_url: {mock}/anthropic\n    multiplier: 5\n"),
    )
    .expect("write catalog");
    let port = winston::devenv::free_port().expect("free port");
    let proxy_url = format!("http://127.0.0.1:{port}");
    let admin_port = winston::devenv::free_port().expect("free port");
    let mut proxy = ProxyProcess::spawn(port, admin_port, &url, &catalog, dir.path());
    let client = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(10)).build().expect("client");
    wait_ready(&client, &format!("http://127.0.0.1:{admin_port}"), &mut proxy).await;
    let idle_rss = proxy.rss_kib();

    let body = |stream: bool| {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "model": MODEL, "max_tokens": 64, "stream": stream,
                "messages": [{"role": "user", "content": "Hello! Which table is free at eight tonight?"}]
            }))
            .expect("body"),
        )
    };
    let direct = |streaming| Target {
        url: format!("{mock}/anthropic/v1/messages"),
        keys: Arc::new(Vec::new()),
        next: Arc::default(),
        body: body(streaming),
        streaming,
    };
    let proxied_for = |streaming, keys: &Arc<Vec<String>>| Target {
        url: format!("{proxy_url}/v1/messages"),
        keys: keys.clone(),
        next: Arc::default(),
        body: body(streaming),
        streaming,
    };
    let proxied = |streaming| proxied_for(streaming, &all_tenants);
    let proxied_ok = Arc::new(AtomicU64::new(0));
    let proxied_sent = Arc::new(AtomicU64::new(0));

    // Warm connections, caches and the database.
    open_loop(&client, &direct(false), 300, Duration::from_secs(2)).await;
    let warm = open_loop(&client, &proxied(false), 300, Duration::from_secs(2)).await;
    proxied_ok.fetch_add(ok_count(&warm), Ordering::Relaxed);
    proxied_sent.fetch_add(warm.len() as u64, Ordering::Relaxed);

    println!();
    println!(
        "non-streaming POST /v1/messages (16 output tokens), open loop, {} s per phase, {TENANTS} tenants in turn",
        PHASE.as_secs()
    );
    println!(
        "{:>6} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>5} {:>9}",
        "rps",
        "achieved",
        "direct50",
        "direct99",
        "direct999",
        "proxy50",
        "proxy99",
        "proxy999",
        "added50",
        "added99",
        "errs",
        "lag99"
    );
    let mut added_at_1000 = (None, None);
    let metrics_url = format!("http://127.0.0.1:{admin_port}/metrics");
    let mut own_time = Vec::new();
    for rate in RATES {
        let d = open_loop(&client, &direct(false), rate, PHASE).await;
        let before = added_buckets(&client, &metrics_url).await;
        let p = open_loop(&client, &proxied(false), rate, PHASE).await;
        let after = added_buckets(&client, &metrics_url).await;
        own_time.push((rate, before, after));
        proxied_ok.fetch_add(ok_count(&p), Ordering::Relaxed);
        proxied_sent.fetch_add(p.len() as u64, Ordering::Relaxed);
        let added = print_row(rate, &d, &p, |s| s.total);
        if rate == 1_000 {
            added_at_1000 = (Some(added.0), Some(added.1));
        }
    }
    println!(
        "the proxy's own time by phase (its winston_proxy_added_seconds histogram; a quantile is the bucket bound it falls under):"
    );
    for (rate, before, after) in &own_time {
        let parts: Vec<String> = ["admission", "settlement"]
            .iter()
            .map(|phase| {
                let q = |p: f64| {
                    bucket_quantile(before, after, phase, p).map_or("-".to_string(), |v| format!("{:.3}", v * 1000.0))
                };
                format!("{phase} p50 <= {} p99 <= {} ms", q(0.5), q(0.99))
            })
            .collect();
        println!("  {rate:>6} rps: {}", parts.join("; "));
    }

    println!();
    println!("streaming POST /v1/messages, time to first byte, open loop at {STREAM_RATE} rps");
    let d = open_loop(&client, &direct(true), STREAM_RATE, PHASE).await;
    let p = open_loop(&client, &proxied(true), STREAM_RATE, PHASE).await;
    proxied_ok.fetch_add(ok_count(&p), Ordering::Relaxed);
    proxied_sent.fetch_add(p.len() as u64, Ordering::Relaxed);
    print_row(STREAM_RATE, &d, &p, |s| s.first_byte);
    println!("(whole stream:)");
    print_row(STREAM_RATE, &d, &p, |s| s.total);

    println!();
    println!("maximum throughput, closed loop with {IN_FLIGHT} requests in flight, {} s", THROUGHPUT_PHASE.as_secs());
    let (direct_rps, direct_errs) = closed_loop(&client, &direct(false), THROUGHPUT_PHASE).await;
    println!("  direct to the mock:                     {direct_rps:>8.0} req/s ({direct_errs} errors)");
    let mut throughput = Vec::new();
    for (label, keys) in [(format!("{TENANTS} tenants"), &all_tenants), ("1 tenant".to_string(), &one_tenant)] {
        let (rps, errs, ok) = closed_loop_counted(&client, &proxied_for(false, keys), THROUGHPUT_PHASE).await;
        proxied_ok.fetch_add(ok, Ordering::Relaxed);
        proxied_sent.fetch_add(ok + errs, Ordering::Relaxed);
        println!("  through the proxy, metered, {label:>10}: {rps:>8.0} req/s ({errs} errors, {ok} billed)");
        throughput.push(rps);
    }
    let leases = lease_figures(&client, &format!("http://127.0.0.1:{admin_port}/metrics")).await;
    println!("  admitted against credit leases: {:.0} requests; lease chunks taken: {:.0}", leases.0, leases.1);

    let peak = proxy.peak_rss_kib();
    println!();
    println!(
        "proxy RSS: {} MiB idle after start, {} MiB after the run, {} MiB peak",
        idle_rss / 1024,
        proxy.rss_kib() / 1024,
        peak / 1024
    );

    // Metering check: every successful proxied response has its usage
    // record; records beyond that belong to requests the client gave up on
    // (timeout) that the proxy still completed and billed.
    let (records,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM usage_records").fetch_one(ledger.pool()).await.expect("count usage");
    let (ok, sent) = (proxied_ok.load(Ordering::Relaxed), proxied_sent.load(Ordering::Relaxed));
    println!("usage records: {records} for {ok} successful proxied responses ({sent} sent)");
    if ok < sent {
        let log = std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        println!("proxy log (last lines of {}):", lines.len());
        for l in &lines[lines.len().saturating_sub(15)..] {
            println!("  {l}");
        }
    }
    proxy.stop();
    let records = u64::try_from(records).unwrap_or(0);
    assert!(records >= ok && records <= sent, "a successful proxied response was not billed, or one was billed twice");

    println!();
    let (litellm, skipped) = match litellm_baseline(&client, &mock, &direct(false), &body(false), dir.path()).await {
        Ok(l) => {
            let note = format!(
                "LiteLLM (scripts/litellm-baseline), one worker, no database, same mock and run: it answered {:.0} \
                 of the 1,000 req/s offered",
                l.achieved_1000
            );
            (Some(l), Some(note))
        }
        Err(note) => {
            println!("LiteLLM baseline skipped: {note}");
            (None, Some(note))
        }
    };
    let notes: Vec<(&str, &str)> =
        skipped.iter().map(|note| ("litellm_added_p50_ms_at_1000rps", note.as_str())).collect();
    summary::record_notes(
        &[
            ("proxy_added_p50_ms_at_1000rps", added_at_1000.0),
            ("proxy_added_p99_ms_at_1000rps", added_at_1000.1),
            ("proxy_throughput_rps_32_tenants", throughput.first().copied()),
            ("proxy_throughput_rps_one_tenant", throughput.get(1).copied()),
            ("proxy_rss_mib", Some(peak as f64 / 1024.0)),
            ("fsync_ms", Some(fsync.0)),
            ("fsync_p99_ms", Some(fsync.1)),
            ("litellm_added_p50_ms_at_1000rps", litellm.as_ref().map(|l| l.at_1000.0)),
            ("litellm_added_p99_ms_at_1000rps", litellm.as_ref().map(|l| l.at_1000.1)),
            ("litellm_added_p50_ms_at_100rps", litellm.as_ref().map(|l| l.at_100.0)),
            ("litellm_added_p99_ms_at_100rps", litellm.as_ref().map(|l| l.at_100.1)),
            ("litellm_added_p50_ms_at_20rps", litellm.as_ref().map(|l| l.at_20.0)),
            ("litellm_added_p99_ms_at_20rps", litellm.as_ref().map(|l| l.at_20.1)),
        ],
        &notes,
    );
    println!("total benchmark time: {:.0} s", wall.elapsed().as_secs_f64());
}

fn ok_count(samples: &[Sample]) -> u64 {
    samples.iter().filter(|s| s.ok).count() as u64
}

/// Sends `rate` requests per second for `duration` on a fixed schedule.
async fn open_loop(client: &reqwest::Client, target: &Target, rate: u64, duration: Duration) -> Vec<Sample> {
    let n = rate * duration.as_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        let at = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(at).await;
        let (client, target) = (client.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let lag = tokio::time::Instant::now().saturating_duration_since(at);
            send(&client, &target, lag).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

async fn send(client: &reqwest::Client, target: &Target, lag: Duration) -> Sample {
    let began = Instant::now();
    let mut req = client.post(&target.url).header("content-type", "application/json").body(target.body.clone());
    if !target.keys.is_empty() {
        let i = target.next.fetch_add(1, Ordering::Relaxed) % target.keys.len();
        req = req.header("x-api-key", &target.keys[i]);
    }
    let mut first_byte = Duration::ZERO;
    let ok = match req.send().await {
        Ok(mut resp) if resp.status().is_success() => {
            let mut ok = true;
            let mut first = true;
            // A stream counts only when it ended with its final event (a
            // proxy that could not record usage ends it with an error).
            let mut tail: Vec<u8> = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if first {
                            first_byte = began.elapsed();
                            first = false;
                        }
                        tail.extend_from_slice(&c);
                        let keep = tail.len().saturating_sub(512);
                        tail.drain(..keep);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            let ended = !target.streaming || String::from_utf8_lossy(&tail).contains("message_stop");
            ok && ended && !(target.streaming && first)
        }
        Ok(resp) => {
            let _ = resp.bytes().await;
            false
        }
        Err(_) => false,
    };
    Sample { ok, total: began.elapsed(), first_byte, lag }
}

/// Requests per second and errors with [`IN_FLIGHT`] requests always open.
async fn closed_loop(client: &reqwest::Client, target: &Target, duration: Duration) -> (f64, u64) {
    let (rps, errs, _) = closed_loop_counted(client, target, duration).await;
    (rps, errs)
}

async fn closed_loop_counted(client: &reqwest::Client, target: &Target, duration: Duration) -> (f64, u64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + duration;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, target, ok, errs) = (client.clone(), target.clone(), ok.clone(), errs.clone());
            tokio::spawn(async move {
                while Instant::now() < end {
                    let s = send(&client, &target, Duration::ZERO).await;
                    if s.ok { &ok } else { &errs }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    let secs = started.elapsed().as_secs_f64();
    let done = ok.load(Ordering::Relaxed);
    (done as f64 / secs, errs.load(Ordering::Relaxed), done)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Prints one row; returns the added latency at p50 and p99, in ms.
fn print_row(rate: u64, direct: &[Sample], proxy: &[Sample], metric: impl Fn(&Sample) -> Duration) -> (f64, f64) {
    let sorted = |s: &[Sample]| {
        let mut v: Vec<Duration> = s.iter().filter(|x| x.ok).map(&metric).collect();
        v.sort();
        v
    };
    let (d, p) = (sorted(direct), sorted(proxy));
    let mut lags: Vec<Duration> = direct.iter().chain(proxy).map(|s| s.lag).collect();
    lags.sort();
    let ms = |x: Duration| format!("{:.3}", x.as_secs_f64() * 1000.0);
    let added_ms = |q: f64| (percentile(&p, q).as_secs_f64() - percentile(&d, q).as_secs_f64()) * 1000.0;
    let added = |q: f64| format!("{:.3}", added_ms(q));
    let achieved = p.len() as f64 / PHASE.as_secs_f64();
    let errors = direct.iter().chain(proxy).filter(|s| !s.ok).count();
    println!(
        "{:>6} {:>9.0} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>5} {:>9}   (ms)",
        rate,
        achieved,
        ms(percentile(&d, 0.5)),
        ms(percentile(&d, 0.99)),
        ms(percentile(&d, 0.999)),
        ms(percentile(&p, 0.5)),
        ms(percentile(&p, 0.99)),
        ms(percentile(&p, 0.999)),
        added(0.5),
        added(0.99),
        errors,
        ms(percentile(&lags, 0.99)),
    );
    (added_ms(0.5), added_ms(0.99))
}

/// Writes about 100 MiB of WAL and checkpoints, so that the segments the
/// measurement writes into are recycled ones, as on a server that has run
/// for a while; returns how many segment files `pg_wal` then holds.
async fn warm_wal(pool: &sqlx::PgPool) -> i64 {
    for q in [
        "CREATE TABLE wal_warmup AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 400000) g",
        "DROP TABLE wal_warmup",
        "CHECKPOINT",
        "CHECKPOINT",
    ] {
        sqlx::query(q).execute(pool).await.expect("warm the WAL");
    }
    sqlx::query_scalar("SELECT count(*) FROM pg_ls_waldir()").fetch_one(pool).await.expect("count WAL segments")
}

/// Mean and p99 of one 8 KiB write plus `fdatasync` in `dir`, in ms (the
/// test `pg_test_fsync` reports as "fdatasync"), over about a second.
fn flush_latency(dir: &Path) -> (f64, f64) {
    use std::io::{Seek, Write};
    let path = dir.join(format!("winston-fsync-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).expect("fsync probe file");
    let block = [0x57u8; 8192];
    let mut took = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) || took.len() < 20 {
        let t = Instant::now();
        file.rewind().expect("rewind");
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        took.push(t.elapsed());
        if took.len() >= 2_000 {
            break;
        }
    }
    let _ = std::fs::remove_file(&path);
    took.sort();
    let mean = took.iter().map(Duration::as_secs_f64).sum::<f64>() / took.len() as f64 * 1000.0;
    (mean, percentile(&took, 0.99).as_secs_f64() * 1000.0)
}

/// Requests admitted against leases and chunks taken, from `/metrics`.
async fn lease_figures(client: &reqwest::Client, metrics_url: &str) -> (f64, f64) {
    let text = match client.get(metrics_url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (value("winston_proxy_lease_holds_total"), value("winston_proxy_lease_takes_total"))
}

/// The cumulative buckets of `winston_proxy_added_seconds` by (phase, upper bound).
async fn added_buckets(client: &reqwest::Client, metrics_url: &str) -> Vec<(String, f64, f64)> {
    let text = match client.get(metrics_url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with("winston_proxy_added_seconds_bucket{"))
        .filter_map(|l| {
            let labels = l.split_once('{')?.1.split_once('}')?.0;
            let label = |name: &str| {
                labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{name}=\"")).map(|v| v.trim_end_matches('"')))
            };
            let le = label("le")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((label("phase")?.to_string(), le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket that holds quantile `q` of what `phase`
/// observed between two scrapes, in seconds.
fn bucket_quantile(before: &[(String, f64, f64)], after: &[(String, f64, f64)], phase: &str, q: f64) -> Option<f64> {
    let count = |set: &[(String, f64, f64)], le: f64| {
        set.iter().find(|(p, l, _)| p == phase && *l == le).map_or(0.0, |(_, _, c)| *c)
    };
    let mut bounds: Vec<f64> = after.iter().filter(|(p, _, _)| p == phase).map(|(_, le, _)| *le).collect();
    bounds.sort_by(f64::total_cmp);
    let total = count(after, f64::INFINITY) - count(before, f64::INFINITY);
    if total <= 0.0 {
        return None;
    }
    bounds.into_iter().find(|le| count(after, *le) - count(before, *le) >= q * total)
}

/// LiteLLM's added latency (p50, p99 in ms) at 20, 100 and 1,000
/// requests/s, and the rate it really answered of the 1,000 offered. Its one
/// worker spends about 10 ms of CPU per request on the 2-core machine, so
/// 100 req/s is at its capacity (a queue forms or not with the machine's
/// speed of the moment); 20 req/s shows what it adds below capacity.
struct LiteLlm {
    at_20: (f64, f64),
    at_100: (f64, f64),
    at_1000: (f64, f64),
    achieved_1000: f64,
}

/// Installs (bounded, cached) and runs LiteLLM's proxy on 127.0.0.1
/// against the same mock, with no database, and measures it like the proxy
/// against direct calls made in the same moments. `Err` says why it was skipped.
async fn litellm_baseline(
    client: &reqwest::Client,
    mock: &str,
    direct: &Target,
    body: &Bytes,
    dir: &Path,
) -> Result<LiteLlm, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/litellm-baseline");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("failed to run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err("LiteLLM could not be installed from the package registry (see the script's output)".into());
    }
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: anthropic/{MODEL}\n      \
             api_base: {mock}/anthropic\n      api_key: mock\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let port = winston::devenv::free_port().map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("litellm.log")).map_err(|e| e.to_string())?;
    // LiteLLM refuses to start without a master key; with no database, the
    // key is compared in memory (what it checks per request, nothing more).
    let master = format!("sk-bench-{}", uuid::Uuid::new_v4().simple());
    let child = Command::new(&bin)
        .args(["--config"])
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_MASTER_KEY", &master)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("failed to start LiteLLM: {e}"))?;
    let mut process = ProxyProcess { child };
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client.get(format!("{base}/health/liveliness")).send().await
            && r.status().is_success()
        {
            break;
        }
        if matches!(process.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("litellm.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!("LiteLLM did not start within 120 s: {}", tail.join(" | ")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let target = Target {
        url: format!("{base}/v1/messages"),
        keys: Arc::new(vec![master]),
        next: Arc::default(),
        body: body.clone(),
        streaming: false,
    };
    let warm = open_loop(client, &target, 20, Duration::from_secs(2)).await;
    if ok_count(&warm) == 0 {
        return Err("LiteLLM answered no request of the warm-up (see its log)".into());
    }
    println!("LiteLLM {bin} (one worker, no database), same mock, same body, non-streaming:");
    let mut at = Vec::new();
    let mut achieved = 0.0;
    for rate in [20, 100, 1_000] {
        let d = open_loop(client, direct, rate, PHASE).await;
        let l = open_loop(client, &target, rate, PHASE).await;
        at.push(print_row(rate, &d, &l, |s| s.total));
        achieved = ok_count(&l) as f64 / PHASE.as_secs_f64();
    }
    process.stop();
    Ok(LiteLlm { at_20: at[0], at_100: at[1], at_1000: at[2], achieved_1000: achieved })
}

/// The real `winston proxy` binary, killed when dropped.
struct ProxyProcess {
    child: Child,
}

impl ProxyProcess {
    fn spawn(port: u16, admin_port: u16, database_url: &str, catalog: &Path, dir: &Path) -> Self {
        let log = std::fs::File::create(dir.join("proxy.log")).expect("proxy log");
        let child = Command::new(env!("CARGO_BIN_EXE_winston"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--catalog")
            .arg(catalog)
            .env("WINSTON_DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn winston proxy");
        Self { child }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str, proxy: &mut ProxyProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Ok(Some(status)) = proxy.child.try_wait() {
            panic!("winston proxy exited during start: {status}");
        }
        assert!(Instant::now() < deadline, "winston proxy not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
