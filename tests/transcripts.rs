//! Transcripts from the runtime's spool to `session_transcripts`: pushed
//! with the tenant key, stored once per event id however often they are
//! sent, kept on the runtime's disk while the proxy is away or the runtime
//! dies mid-push, and deleted exactly when they expire.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod agent_support;

use std::sync::atomic::Ordering;

use agent_support::*;
use serde_json::{Value, json};

fn event(i: usize) -> String {
    json!({"id": format!("ev-{i}"), "session_id": "s-1", "role": "user", "content": format!("line {i}"),
        "channel": "api", "tool_calls": [], "at": "2026-12-01T10:00:00Z"})
    .to_string()
}

async fn push(h: &Harness, key: &str, body: String) -> reqwest::Response {
    h.http
        .post(format!("{}/v1/transcripts", h.url))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pushes_are_idempotent_partial_per_line_and_bounded() {
    let h = harness(1000, test_settings()).await;
    let batch: String = (0..5).map(|i| event(i) + "\n").collect();
    let first: Value = push(&h, &h.key, batch.clone()).await.json().await.unwrap();
    assert_eq!((first["accepted"].clone(), first["duplicates"].clone()), (json!(5), json!(0)));
    // The same batch again, and one overlapping it: nothing twice.
    let again: Value = push(&h, &h.key, batch).await.json().await.unwrap();
    assert_eq!((again["accepted"].clone(), again["duplicates"].clone()), (json!(0), json!(5)));
    let overlap: String = (3..8).map(|i| event(i) + "\n").collect();
    let v: Value = push(&h, &h.key, overlap).await.json().await.unwrap();
    assert_eq!((v["accepted"].clone(), v["duplicates"].clone()), (json!(3), json!(2)));
    assert_eq!(transcript_rows(&h).await, (8, 8));
    // A bad line is named; the good ones around it are stored.
    let mixed = format!("{}\n{{\"id\": \"broken\"\n{}\n", event(20), event(21));
    let v: Value = push(&h, &h.key, mixed).await.json().await.unwrap();
    assert_eq!(v["accepted"], json!(2));
    assert_eq!(v["rejected"][0]["line"], json!(1), "{v}");
    assert_eq!(transcript_rows(&h).await, (10, 10));
    // Over the line limit: 413 and nothing stored.
    let big: String = (100..1101).map(|i| event(i) + "\n").collect();
    let r = push(&h, &h.key, big).await;
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("1000"));
    assert_eq!(transcript_rows(&h).await, (10, 10));
    // Unknown key: 401, nothing stored.
    let r = push(&h, "wsk_not-a-key", event(500)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(transcript_rows(&h).await, (10, 10));
    // Each stored row belongs to the key's account and expires in 90 days.
    let (acct, days): (String, f64) = sqlx::query_as(
        "SELECT min(account_id), min(extract(epoch FROM expires_at - recorded_at) / 86400)::float8 FROM session_transcripts",
    )
    .fetch_one(h.db.ledger.pool())
    .await
    .unwrap();
    assert_eq!(acct, ACCOUNT);
    assert!((days - 90.0).abs() < 0.01, "{days}");
}

#[tokio::test]
async fn while_the_proxy_is_away_events_wait_on_disk_then_all_arrive() {
    let h = harness(1_000_000, test_settings()).await;
    let fwd = forwarder(&h.url, DOWN).await;
    let db = tenant_db(&h);
    let spool = tempfile::tempdir().unwrap();
    let agent = start_agent(agent_args(&fwd.url, &h.key, &db, spool.path())).await;
    for i in 0..5 {
        agent.chat(&format!("question {i}")).await;
    }
    // Several push rounds fail meanwhile; nothing arrives, nothing is lost.
    let h2 = &h;
    assert!(
        eventually(10, || async { fwd.delivered.load(Ordering::SeqCst) == 0 && spooled_lines(spool.path()) == 10 })
            .await
    );
    let health: Value = agent.http.get(format!("{}/health", agent.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["transcripts"]["pending"], json!(10));
    assert!(health["transcripts"]["failing_seconds"].is_u64(), "a failing delivery shows how long: {health}");
    assert_eq!(transcript_rows(h2).await, (0, 0));
    fwd.mode.store(FORWARD, Ordering::SeqCst);
    assert!(
        eventually(60, || async { transcript_rows(h2).await == (10, 10) }).await,
        "{:?}",
        transcript_rows(h2).await
    );
    assert!(eventually(10, || async { spooled_lines(spool.path()) == 0 }).await);
    let agent2 = &agent;
    assert!(
        eventually(10, || async {
            let health: Value =
                agent2.http.get(format!("{}/health", agent2.url)).send().await.unwrap().json().await.unwrap();
            health["transcripts"]["failing_seconds"].is_null()
        })
        .await
    );
    // Every turn is there: five user and five assistant events, with tokens on the latter.
    let (users, assistants_with_tokens): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE entry->>'role' = 'user'), \
         count(*) FILTER (WHERE entry->>'role' = 'assistant' AND (entry->'tokens'->>'output')::bigint > 0) FROM session_transcripts",
    )
    .fetch_one(h.db.ledger.pool())
    .await
    .unwrap();
    assert_eq!((users, assistants_with_tokens), (5, 5));
    agent.stop().await;
}

fn agent_process(proxy_url: &str, key: &str, db: &str, spool: &std::path::Path, port: u16) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_winston"))
        .arg("agent")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WINSTON_AGENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", db)
        .env("WINSTON_API_KEY", key)
        .env("WINSTON_PROXY_URL", proxy_url)
        .env("GATEWAY_TOKEN", GATEWAY)
        .env("WINSTON_WORKSPACE", workspace_bundle())
        .env("WINSTON_AGENT_SPOOL_DIR", spool)
        .env("WINSTON_AGENT_PUSH_MILLIS", "50")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn chat_http(http: &reqwest::Client, url: &str, msg: &str) {
    let r =
        http.post(format!("{url}/api/chat")).bearer_auth(GATEWAY).json(&json!({"message": msg})).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_agent_killed_mid_push_loses_nothing_it_acknowledged() {
    let h = harness(1_000_000, test_settings()).await;
    let fwd = forwarder(&h.url, HOLD).await;
    let db = tenant_db(&h);
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = agent_process(&fwd.url, &h.key, &db, spool.path(), port);
    assert!(
        eventually(60, || async { http.get(format!("{url}/health")).send().await.is_ok_and(|r| r.status() == 200) })
            .await
    );
    for i in 0..3 {
        chat_http(&http, &url, &format!("first {i}")).await;
    }
    // A batch reached the proxy and was stored, but its answer never came back.
    let h2 = &h;
    assert!(eventually(30, || async { fwd.delivered.load(Ordering::SeqCst) >= 1 }).await);
    let stored_before_kill = transcript_rows(h2).await.0;
    assert!(stored_before_kill > 0);
    // More turns are answered (so acknowledged to their callers) meanwhile.
    for i in 0..2 {
        chat_http(&http, &url, &format!("second {i}")).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(spooled_lines(spool.path()), 10, "the unacknowledged batch and the later turns are on disk");
    // Restarted straight onto the proxy: everything arrives, each once.
    let mut child = agent_process(&h.url, &h.key, &db, spool.path(), port);
    assert!(
        eventually(60, || async { transcript_rows(h2).await == (10, 10) }).await,
        "{:?}",
        transcript_rows(h2).await
    );
    assert!(eventually(10, || async { spooled_lines(spool.path()) == 0 }).await);
    assert_eq!(transcript_rows(&h).await, (10, 10));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn retention_deletes_exactly_the_expired_rows_in_bounded_batches() {
    let h = harness(1000, test_settings()).await;
    let pool = h.db.ledger.pool();
    // 7 expired (some just now), 3 not yet.
    for (i, offset) in [
        "-100 days",
        "-91 days",
        "-1 day",
        "-1 minute",
        "-1 second",
        "-30 days",
        "-2 days",
        "1 minute",
        "10 days",
        "89 days",
    ]
    .iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO session_transcripts (account_id, session_id, event_id, line_hash, entry, occurred_at, expires_at) \
             VALUES ($1, 's', $2, sha256($2::bytea), '{}'::jsonb, now(), now() + $3::interval)",
        )
        .bind(ACCOUNT)
        .bind(format!("e{i}"))
        .bind(*offset)
        .execute(pool)
        .await
        .unwrap();
    }
    // Batches of 3, at most 2 per call: 6 then 1.
    assert_eq!(winston::proxy::transcripts::prune(pool, 3, 2).await.unwrap(), 6);
    assert_eq!(winston::proxy::transcripts::prune(pool, 3, 2).await.unwrap(), 1);
    assert_eq!(winston::proxy::transcripts::prune(pool, 3, 2).await.unwrap(), 0);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM session_transcripts ORDER BY event_id").fetch_all(pool).await.unwrap();
    assert_eq!(left, ["e7", "e8", "e9"]);
}

#[tokio::test]
async fn export_gives_a_tenants_lines_back_oldest_first() {
    let h = harness(1000, test_settings()).await;
    let other = h.db.ledger.pool();
    h.db.ledger.ensure_account("shop/acmeother").await.unwrap();
    let other_key = h.db.ledger.issue_key("shop/acmeother", "t").await.unwrap().plaintext;
    let batch = format!(
        "{}\n{}\n",
        json!({"id": "b", "session_id": "s", "role": "assistant", "content": "second", "at": "2026-12-01T10:00:05Z"}),
        json!({"id": "a", "session_id": "s", "role": "user", "content": "first", "at": "2026-12-01T10:00:00Z"}),
    );
    push(&h, &h.key, batch).await;
    // Wait for the proxy's key cache to know the second key.
    assert!(eventually(10, || async { push(&h, &other_key, event(9)).await.status() == 200 }).await);
    let mut out = Vec::new();
    let n = winston::proxy::transcripts::export(other, "shop/acme", None, &mut out).await.unwrap();
    assert_eq!(n, 2, "the prefix must not match shop/acmeother");
    let lines: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((lines[0]["content"].as_str(), lines[1]["content"].as_str()), (Some("first"), Some("second")));
    let mut out = Vec::new();
    let since = "2026-12-01T10:00:01Z".parse().unwrap();
    assert_eq!(winston::proxy::transcripts::export(other, "shop/acme", Some(since), &mut out).await.unwrap(), 1);
}

#[tokio::test]
async fn a_batch_over_the_proxys_byte_limit_is_split_and_delivered_whole() {
    let h = harness(1_000_000_000, winston::proxy::Settings { body_limit: 1 << 20, ..test_settings() }).await;
    let db = tenant_db(&h);
    let spool = tempfile::tempdir().unwrap();
    // No push while the turns happen: they pile up in one current file.
    let mut args = agent_args(&h.url, &h.key, &db, spool.path());
    args.push_millis = 600_000;
    args.batch_lines = 1000;
    args.body_limit = 300_000;
    let agent = start_agent(args).await;
    let big = "word ".repeat(50_000); // 250,000 bytes, under the proxy's 256 KiB per line
    for _ in 0..20 {
        agent.chat(&big).await;
    }
    // Stopping pushes once: one 5 MB batch, answered 413, split in two.
    agent.stop().await;
    assert_eq!(transcript_rows(&h).await, (0, 0));
    assert_eq!(spooled_lines(spool.path()), 40);
    let batches = std::fs::read_dir(spool.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("batch-"));
    assert_eq!(batches.count(), 2);
    // The next start delivers both halves; nothing was set aside.
    let agent = start_agent(agent_args(&h.url, &h.key, &db, spool.path())).await;
    let h2 = &h;
    assert!(
        eventually(30, || async { transcript_rows(h2).await == (40, 40) }).await,
        "{:?}",
        transcript_rows(h2).await
    );
    assert!(!spool.path().join("rejected.jsonl").exists());
    agent.stop().await;
}

#[tokio::test]
async fn a_line_postgres_cannot_hold_is_rejected_alone_and_the_spool_moves_on() {
    let h = harness(1_000_000, test_settings()).await;
    // NUL in the content, in an id and in a key: PostgreSQL's text and jsonb
    // hold none of them. Each is named; the lines around them are stored.
    let nul_content = event(31).replace("line 31", "li\\u0000ne");
    let nul_id = event(33).replace("ev-33", "ev-\\u0000");
    let nul_key = event(35).replace("\"tool_calls\":[]", "\"tool_calls\":[{\"x\\u0000\":1}]");
    let batch = [event(30), nul_content, event(32), nul_id, event(34), nul_key].join("\n");
    let r = push(&h, &h.key, batch).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["accepted"].clone(), v["duplicates"].clone()), (json!(3), json!(0)), "{v}");
    let lines: Vec<u64> = v["rejected"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 5], "{v}");
    assert!(v["rejected"][0]["error"].as_str().unwrap().contains("NUL"), "{v}");
    assert_eq!(transcript_rows(&h).await, (3, 3));

    // A runtime whose spool holds such a line delivers it (to rejected.jsonl)
    // and everything after it, instead of retrying the batch forever.
    let db = tenant_db(&h);
    let spool = tempfile::tempdir().unwrap();
    let stuck = format!("{}\n{}\n", event(40), event(41).replace("line 41", "\\u0000"));
    std::fs::write(spool.path().join("current.jsonl"), stuck).unwrap();
    let agent = start_agent(agent_args(&h.url, &h.key, &db, spool.path())).await;
    agent.chat("after the bad line").await;
    let h2 = &h;
    assert!(eventually(30, || async { transcript_rows(h2).await == (6, 6) }).await, "{:?}", transcript_rows(h2).await);
    assert!(eventually(10, || async { spooled_lines(spool.path()) == 0 }).await);
    let set_aside = std::fs::read_to_string(spool.path().join("rejected.jsonl")).unwrap();
    assert_eq!(set_aside.lines().count(), 1);
    assert!(set_aside.contains("ev-41"));
    agent.stop().await;
}
