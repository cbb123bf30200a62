//! The proxy under pressure: many concurrent requests against a small
//! balance, clients that hang up mid-stream, keys revoked while serving, and
//! a graceful shutdown with streams open.
#![allow(clippy::unwrap_used)]
mod proxy_support;

use proxy_support::*;
use serde_json::json;
use winston::emulator::llm::count_input_tokens;
use winston::proxy::Settings;

#[tokio::test]
async fn concurrent_requests_never_overdraw_and_usage_equals_debits() {
    let h = harness(10_000, test_settings()).await;
    // Each reserves about (40 + 100) x 5 = 700 and costs (input + 60) x 5.
    let body = |i: usize| {
        json!({"model": SONNET, "max_tokens": 100, "stream": i.is_multiple_of(2),
               "messages": [{"role": "user", "content": format!("question {i:03}")}],
               "mock": {"output_tokens": 60}})
    };
    let sends = (0..200).map(|i| {
        let req = h.anthropic(&body(i));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (status, text)
        }
    });
    let results = futures::future::join_all(sends).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(ok + refused, 200, "only 200 and 402 expected: {:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    // 10,000 credits cover at least 13 worst-case holds of about 750.
    assert!(ok >= 10, "the balance covers at least 10 requests, got {ok}");
    let b = h.settled_balance().await;
    let (used, records) = h.usage().await;
    assert!(b.balance >= 0);
    assert_eq!(10_000 - b.balance, used, "debits equal the sum of usage records");
    assert_eq!(records as usize, ok, "one usage record per served request");
    // Late requests get a lowered cap; what the upstream generated is what was billed.
    let g = h.upstream.total();
    assert_eq!(g.generations as usize, ok);
    assert_eq!(used, (g.input_tokens + g.output_tokens) as i64 * SONNET_X);
    assert!(used <= 10_000);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_billed_for_what_was_generated() {
    let h = harness(100_000, test_settings()).await;
    for (path, body) in [
        (
            "anthropic",
            json!({"model": SONNET, "max_tokens": 500, "stream": true,
            "messages": [{"role": "user", "content": "tell a long story"}],
            "mock": {"output_tokens": 40, "token_delay_ms": 10}}),
        ),
        (
            "openai",
            json!({"model": KIMI, "max_tokens": 500, "stream": true,
            "messages": [{"role": "user", "content": "tell a long story"}],
            "mock": {"output_tokens": 40, "token_delay_ms": 10}}),
        ),
    ] {
        let req = if path == "anthropic" { h.anthropic(&body) } else { h.openai(&body) };
        let mut resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // Read the first bytes, then hang up.
        let first = resp.chunk().await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(resp);
        let pool = h.db.ledger.pool().clone();
        let model = body["model"].as_str().unwrap().to_string();
        let recorded = eventually(20, || {
            let pool = pool.clone();
            let model = model.clone();
            async move {
                let row: Option<(i64, String)> =
                    sqlx::query_as("SELECT output_tokens, outcome FROM usage_records WHERE model = $1")
                        .bind(model)
                        .fetch_optional(&pool)
                        .await
                        .unwrap();
                row == Some((40, "client_disconnected".to_string()))
            }
        })
        .await;
        assert!(recorded, "{path}: the full 40 generated tokens were not billed");
    }
    let b = h.settled_balance().await;
    let (used, n) = h.usage().await;
    assert_eq!((b.reserved, n, 100_000 - b.balance), (0, 2, used));
}

#[tokio::test]
async fn revoked_keys_stop_and_new_keys_start_working_within_seconds() {
    let h = harness(100_000, test_settings()).await;
    let body = json!({"model": KIMI, "messages": [{"role": "user", "content": "hi"}], "mock": {"output_tokens": 1}});
    assert_eq!(h.openai(&body).send().await.unwrap().status(), 200);
    let keys = h.db.ledger.active_keys().await.unwrap();
    assert!(h.db.ledger.revoke_key(keys[0].id).await.unwrap());
    assert!(eventually(10, || async { h.openai(&body).send().await.unwrap().status() == 401 }).await);
    let fresh = h.db.ledger.issue_key(ACCOUNT, "second").await.unwrap();
    let url = format!("{}/v1/chat/completions", h.url);
    assert!(
        eventually(10, || async {
            h.http.post(&url).header("x-api-key", &fresh.plaintext).json(&body).send().await.unwrap().status() == 200
        })
        .await
    );
}

/// A key issued after the cache's last refresh works on its very first
/// request (an agent calls as soon as its key exists), while keys nobody
/// issued stay refused and cost at most one ledger lookup per hash per
/// second however often they are presented.
#[tokio::test]
async fn a_key_issued_after_the_last_refresh_works_at_once_and_unknown_keys_cost_bounded_lookups() {
    let h = harness(100_000, Settings { key_refresh_ms: 600_000, ..test_settings() }).await;
    let body = json!({"model": KIMI, "messages": [{"role": "user", "content": "hi"}], "mock": {"output_tokens": 1}});
    let url = format!("{}/v1/chat/completions", h.url);
    assert_eq!(h.openai(&body).send().await.unwrap().status(), 200);

    let fresh = h.db.ledger.issue_key(ACCOUNT, "late").await.unwrap();
    let r = h.http.post(&url).bearer_auth(&fresh.plaintext).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let lookups = h.metric("winston_proxy_key_lookups_total").await;
    assert_eq!(lookups, 1.0, "one lookup for the new key");
    // Now cached: no further lookup.
    assert_eq!(h.http.post(&url).bearer_auth(&fresh.plaintext).json(&body).send().await.unwrap().status(), 200);
    assert_eq!(h.metric("winston_proxy_key_lookups_total").await, 1.0);

    // One unknown key presented 50 times: 401 each time, one lookup.
    let forged = winston::ledger::keys::generate_key();
    for _ in 0..50 {
        let r = h.http.post(&url).bearer_auth(&forged).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains("invalid API key"), "{e}");
    }
    assert_eq!(h.metric("winston_proxy_key_lookups_total").await, 2.0, "a forged key is looked up once");
    // An absurdly long key is not looked up at all.
    let long = "k".repeat(10_000);
    assert_eq!(h.http.post(&url).bearer_auth(&long).json(&body).send().await.unwrap().status(), 401);
    assert_eq!(h.metric("winston_proxy_key_lookups_total").await, 2.0);
    // Only the two real calls with real keys reached the upstream (three with the first).
    assert_eq!(h.upstream.report().total.generations, 3);
}

#[tokio::test]
async fn graceful_shutdown_finishes_open_streams_and_bills_them() {
    let mut h = harness(100_000, test_settings()).await;
    let body = json!({"model": SONNET, "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "slowly"}],
        "mock": {"output_tokens": 30, "token_delay_ms": 20}});
    let streams: Vec<_> = (0..3).map(|_| h.anthropic(&body).send()).collect();
    let mut responses = Vec::new();
    for s in streams {
        responses.push(s.await.unwrap());
    }
    // Trigger shutdown while the streams are open, then read them to the end.
    let readers = responses.into_iter().map(|r| async move { r.text().await.unwrap() });
    let (texts, ()) = tokio::join!(futures::future::join_all(readers), h.shutdown());
    for t in &texts {
        assert!(t.contains("event: message_stop"), "stream cut by shutdown: {t}");
    }
    let cost = (count_input_tokens(&body) as i64 + 30) * SONNET_X;
    assert_eq!(h.usage().await, (3 * cost, 3));
    let after = h.http.get(format!("{}/healthz", h.url)).send().await;
    assert!(after.is_err(), "the proxy still accepts connections after shutdown");
}

/// Audit (session 16): only streams counted as work in flight, so a
/// SIGTERM let the proxy exit under non-streaming requests whose clients
/// had already left: the upstream's answer was never read nor billed.
#[tokio::test]
async fn graceful_shutdown_waits_for_unary_requests_whose_clients_left() {
    let mut h = harness(100_000, test_settings()).await;
    let body = json!({"model": SONNET, "max_tokens": 100,
        "messages": [{"role": "user", "content": "take your time"}],
        "mock": {"output_tokens": 30, "latency_ms": 1500, "tag": "left"}});
    let impatient = |b| h.anthropic(b).timeout(std::time::Duration::from_millis(300)).send();
    let gone = futures::future::join_all((0..3).map(|_| impatient(&body))).await;
    assert!(gone.iter().all(Result::is_err), "the clients were to time out first");
    h.shutdown().await;
    let cost = (count_input_tokens(&body) as i64 + 30) * SONNET_X;
    assert_eq!(h.usage().await, (3 * cost, 3), "shutdown returned before the requests were billed");
    assert_eq!(h.upstream.tag("left").generations, 3);
}

/// The database cuts the proxy's pooled connections (a restart, a failover,
/// an administrator's `pg_terminate_backend`) while the proxy is warm: the
/// very next requests are served and billed, none fails because it drew a
/// connection that died in the pool.
#[tokio::test]
async fn pooled_connections_cut_by_the_database_fail_no_request() {
    use sqlx::Connection;
    let h = harness(100_000_000, test_settings()).await;
    let body = |i: usize| {
        json!({"model": SONNET, "max_tokens": 50, "stream": i.is_multiple_of(2),
               "messages": [{"role": "user", "content": format!("question {i:03}")}],
               "mock": {"output_tokens": 20}})
    };
    let round = |from: usize| {
        futures::future::join_all((from..from + 8).map(|i| {
            // Half carry an idempotency key: those hold directly, in the
            // database, not against the replica's credit lease.
            let req = h.anthropic(&body(i));
            let req = if i % 4 < 2 { req.header("idempotency-key", format!("k-{i}")) } else { req };
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let text = r.text().await.unwrap();
                assert!(!text.contains("error"), "request {i} ended with an error: {text}");
                status
            }
        }))
    };
    // Warm: the pool holds several connections, each used moments ago.
    for r in 0..2 {
        assert!(round(r * 8).await.iter().all(|s| *s == 200));
    }
    let mut admin = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
    let (cut,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
           AND a.pid NOT IN (SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(cut >= 2, "the proxy's pooled connections were cut: {cut}");
    let mut statuses = Vec::new();
    for r in 2..5 {
        statuses.extend(round(r * 8).await);
    }
    assert!(statuses.iter().all(|s| *s == 200), "requests failed after the cut: {statuses:?}");
    let (used, records): (i64, i64) =
        sqlx::query_as("SELECT COALESCE(sum(credits),0)::bigint, count(*) FROM usage_records")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let g = h.upstream.total();
    assert_eq!((records, g.generations), (40, 40), "one usage record per generation");
    assert_eq!(used, (g.input_tokens + g.output_tokens) as i64 * SONNET_X, "billed what was generated");
}
