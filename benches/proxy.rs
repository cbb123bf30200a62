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
//!   that succeeded has exactly one usage record.
//!
//! The load generator is this file: tokio tasks started on a fixed schedule
//! (open loop: a slow response never delays the next send), sending with
//! reqwest (hyper underneath) over keep-alive connections. Latency runs from
//! the moment a request is dispatched to the last byte of its response; the
//! generator's own lag behind its schedule is printed so a run where it could
//! not keep up is visible. Everything is bounded in time (about 2 minutes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    for rate in RATES {
        let d = open_loop(&client, &direct(false), rate, PHASE).await;
        let p = open_loop(&client, &proxied(false), rate, PHASE).await;
        proxied_ok.fetch_add(ok_count(&p), Ordering::Relaxed);
        proxied_sent.fetch_add(p.len() as u64, Ordering::Relaxed);
        print_row(rate, &d, &p, |s| s.total);
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
    for (label, keys) in [(format!("{TENANTS} tenants"), &all_tenants), ("1 tenant".to_string(), &one_tenant)] {
        let (rps, errs, ok) = closed_loop_counted(&client, &proxied_for(false, keys), THROUGHPUT_PHASE).await;
        proxied_ok.fetch_add(ok, Ordering::Relaxed);
        proxied_sent.fetch_add(ok + errs, Ordering::Relaxed);
        println!("  through the proxy, metered, {label:>10}: {rps:>8.0} req/s ({errs} errors, {ok} billed)");
    }

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
    proxy.stop();
    let records = u64::try_from(records).unwrap_or(0);
    assert!(records >= ok && records <= sent, "a successful proxied response was not billed, or one was billed twice");
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
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) if first => {
                        first_byte = began.elapsed();
                        first = false;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            ok && !(target.streaming && first)
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

fn print_row(rate: u64, direct: &[Sample], proxy: &[Sample], metric: impl Fn(&Sample) -> Duration) {
    let sorted = |s: &[Sample]| {
        let mut v: Vec<Duration> = s.iter().filter(|x| x.ok).map(&metric).collect();
        v.sort();
        v
    };
    let (d, p) = (sorted(direct), sorted(proxy));
    let mut lags: Vec<Duration> = direct.iter().chain(proxy).map(|s| s.lag).collect();
    lags.sort();
    let ms = |x: Duration| format!("{:.3}", x.as_secs_f64() * 1000.0);
    let added = |q: f64| {
        let (a, b) = (percentile(&p, q).as_secs_f64(), percentile(&d, q).as_secs_f64());
        format!("{:.3}", (a - b) * 1000.0)
    };
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
