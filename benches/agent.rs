//! `make bench`, agent part: what a customer waits for, and how fast
//! Winston takes transcripts in.
//!
//! Starts a throwaway PostgreSQL (production's durability under `make
//! bench`, which sets `WINSTON_PG_DURABLE=1`; the settings are printed)
//! holding Winston's database and one tenant database, the mock LLM
//! upstream, the proxy and the reference runtime, all in this process on
//! 127.0.0.1. Then:
//!
//! - chat round trip: `POST /api/chat` to the runtime, one at a time
//!   (closed loop), dispatch to last byte, against the same LLM call made
//!   straight to the proxy: what the runtime adds (tenant-database writes,
//!   the fsynced transcript spool, the prompt);
//! - transcript ingest: batches of 500 events pushed to
//!   `POST /v1/transcripts` by 4 senders for a fixed time; events stored per
//!   second, and a count check that every event is stored exactly once
//!   (the runtime's own transcripts, pushed meanwhile, are not counted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{Datelike, TimeZone, Utc};
use tokio::net::TcpListener;
use winston::agent::{Agent, AgentArgs};
use winston::devenv::postgres::TempPostgres;
use winston::emulator::llm::{LlmMockConfig, serve};
use winston::ledger::{Ledger, Period, ProxySession};
use winston::proxy::{Catalog, Proxy, Settings};

const MODEL: &str = "claude-sonnet-4-5";
const CHATS: usize = 300;
const BATCH: usize = 500;
const SENDERS: usize = 4;
const INGEST_PHASE: Duration = Duration::from_secs(10);
const GATEWAY: &str = "wgt_bench";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("agent benchmark: run it with `make bench` (cargo bench --bench agent)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(run());
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run() {
    winston::telemetry::install_crypto_provider();
    println!("winston agent benchmark");
    println!(
        "machine: {} cores, load average at start {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let pg = TempPostgres::start().expect("start PostgreSQL");
    pg.create_database("winston").expect("create database");
    pg.create_database("tenant").expect("create database");
    let url = pg.url("winston");
    winston::ledger::migrate(&url).await.expect("migrate");
    let ledger = Ledger::connect(&url, 4).await.expect("connect");
    let (fsync, sync): (String, String) =
        sqlx::query_as("SELECT current_setting('fsync'), current_setting('synchronous_commit')")
            .fetch_one(ledger.pool())
            .await
            .expect("settings");
    println!("postgres: 15 (throwaway cluster), fsync={fsync}, synchronous_commit={sync}");
    let now = Utc::now();
    let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().expect("month start");
    let account = winston::names::ledger_account("bench", "acme", "uid-1");
    ledger.ensure_account(&account).await.expect("account");
    ledger
        .ensure_period(&account, Period { start, end: start + chrono::Duration::days(40) }, 1_000_000_000_000)
        .await
        .expect("allotment");
    let key = ledger.issue_key(&account, "bench").await.expect("key").plaintext;

    // Mock upstream, proxy, runtime.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let mock = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener, LlmMockConfig { default_output_tokens: 16, ..LlmMockConfig::default() }));
    let catalog = Catalog::parse(&format!(
        "models:\n  {MODEL}:\n    kind: anthropic\n    base_url: {mock}/anthropic\n    multiplier: 5\n"
    ))
    .expect("catalog");
    let proxy = Proxy::new(
        Ledger::connect(&url, 16).await.expect("connect"),
        ProxySession::open(&url).await.expect("session"),
        catalog,
        Settings { key_refresh_ms: 100, ..Settings::default() },
    )
    .expect("proxy");
    let pl = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy_url = format!("http://{}", pl.local_addr().expect("addr"));
    tokio::spawn(proxy.serve(pl, None, std::future::pending()));
    let spool = tempfile::tempdir().expect("tempdir");
    let files = BTreeMap::from([
        ("SOUL.md", "# Soul\n\nYou are the assistant of Acme Dental.\n"),
        ("USER.md", "# User\n\nAcme Dental, Springfield.\n"),
        ("AGENTS.md", "# Operating rules\n\n1. Be brief.\n"),
    ]);
    let mut args = AgentArgs::new(&pg.url("tenant"), &key, &proxy_url, GATEWAY);
    args.workspace = Some(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&files).expect("json")));
    args.spool_dir = Some(spool.path().to_path_buf());
    args.max_tokens = 64;
    let agent = Agent::start(args).await.expect("agent");
    let al = TcpListener::bind("127.0.0.1:0").await.expect("bind agent");
    let agent_url = format!("http://{}", al.local_addr().expect("addr"));
    tokio::spawn(agent.serve(al, std::future::pending()));
    let http = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(10)).build().expect("client");
    // Wait for the proxy's key cache.
    let direct_body = serde_json::json!({"model": MODEL, "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello! Are you open on Saturday?"}]});
    let direct = || {
        http.post(format!("{proxy_url}/v1/messages"))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&direct_body)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while direct().send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "the proxy never accepted the key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Chat round trip against the direct proxy call.
    let chat = || {
        http.post(format!("{agent_url}/api/chat"))
            .bearer_auth(GATEWAY)
            .json(&serde_json::json!({"message": "Hello! Are you open on Saturday?"}))
    };
    for _ in 0..30 {
        chat().send().await.expect("warm").bytes().await.expect("warm");
        direct().send().await.expect("warm").bytes().await.expect("warm");
    }
    let mut through_agent = Vec::with_capacity(CHATS);
    let mut straight = Vec::with_capacity(CHATS);
    for _ in 0..CHATS {
        let t = Instant::now();
        let r = chat().send().await.expect("chat");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
        through_agent.push(t.elapsed());
        let t = Instant::now();
        direct().send().await.expect("direct").bytes().await.expect("body");
        straight.push(t.elapsed());
    }
    through_agent.sort();
    straight.sort();
    println!();
    println!("chat round trip, {CHATS} turns one at a time (16 output tokens), dispatch to last byte, ms:");
    println!("{:>26} {:>8} {:>8} {:>8}", "", "p50", "p90", "p99");
    for (name, v) in [("POST /api/chat (agent)", &through_agent), ("POST /v1/messages (proxy)", &straight)] {
        println!("{name:>26} {:>8.2} {:>8.2} {:>8.2}", pct(v, 0.5), pct(v, 0.9), pct(v, 0.99));
    }
    println!(
        "{:>26} {:>8.2} {:>8.2} {:>8.2}",
        "added by the runtime",
        pct(&through_agent, 0.5) - pct(&straight, 0.5),
        pct(&through_agent, 0.9) - pct(&straight, 0.9),
        pct(&through_agent, 0.99) - pct(&straight, 0.99)
    );

    // Transcript ingest.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM session_transcripts WHERE event_id LIKE 'bench-%'")
        .fetch_one(ledger.pool())
        .await
        .expect("count");
    let stored = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (http, url, key, stored, sent) =
            (http.clone(), proxy_url.clone(), key.clone(), stored.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < INGEST_PHASE {
                let body: String = (0..BATCH)
                    .map(|i| {
                        serde_json::json!({"id": format!("bench-{s}-{n}-{i}"), "session_id": format!("s-{s}-{}", n / 10),
                            "role": if i % 2 == 0 { "user" } else { "assistant" },
                            "content": "Hello! Are you open on Saturday? We are, from nine to one.",
                            "channel": "api", "tool_calls": [], "at": Utc::now().to_rfc3339()})
                        .to_string()
                            + "\n"
                    })
                    .collect();
                let r = http.post(format!("{url}/v1/transcripts")).bearer_auth(&key).body(body).send().await.expect("push");
                assert_eq!(r.status(), 200);
                let v: serde_json::Value = r.json().await.expect("answer");
                stored.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                sent.fetch_add(BATCH as u64, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let secs = started.elapsed().as_secs_f64();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM session_transcripts WHERE event_id LIKE 'bench-%'")
        .fetch_one(ledger.pool())
        .await
        .expect("count");
    let stored = stored.load(Ordering::Relaxed);
    println!();
    println!("transcript ingest: batches of {BATCH} events, {SENDERS} senders, {secs:.1} s");
    println!(
        "  {} events sent, {} stored ({} new rows in the table): {:.0} events/s, {:.1} batches/s",
        sent.load(Ordering::Relaxed),
        stored,
        after - before,
        stored as f64 / secs,
        stored as f64 / secs / BATCH as f64
    );
    assert_eq!(stored as i64, after - before, "an event was stored twice or not at all");
    assert_eq!(stored, sent.load(Ordering::Relaxed));
}
