//! The reference runtime (`winston agent`) against a real proxy, the
//! counting mock LLM upstream and a real tenant database: what the
//! upstream generated, what the ledger billed and what the tenant database
//! holds are counted at their source, never taken from the agent's word.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod agent_support;

use agent_support::*;
use serde_json::{Value, json};

async fn setup(allotment: i64) -> (Harness, AgentRun, tempfile::TempDir, String) {
    let h = harness(allotment, test_settings()).await;
    let db = tenant_db(&h);
    let spool = tempfile::tempdir().unwrap();
    let agent = start_agent(agent_args(&h.url, &h.key, &db, spool.path())).await;
    (h, agent, spool, db)
}

async fn tenant_count(db: &str, sql: &'static str) -> i64 {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn each_chat_is_metered_exactly_once_per_llm_call_streaming_and_not() {
    let (h, agent, _spool, db) = setup(1_000_000).await;
    let first = agent.chat("When are you open on Sunday?").await;
    assert!(!first["reply"].as_str().unwrap().is_empty());
    let conv = first["conversation_id"].as_str().unwrap().to_string();
    // A second turn of the same conversation, streamed.
    let resp = agent
        .post("/api/chat", &json!({"message": "And on Monday?", "conversation_id": conv, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let deltas = text.lines().filter(|l| *l == "event: delta").count();
    assert!(deltas > 0, "{text}");
    let done: Value =
        serde_json::from_str(text.split("event: done\ndata: ").nth(1).expect("a done event").lines().next().unwrap())
            .unwrap();
    assert_eq!(done["conversation_id"], json!(conv));

    // The upstream generated exactly two replies; the ledger billed exactly
    // what it generated, once each; the tenant database saw the same.
    let g = h.upstream.total();
    assert_eq!(g.generations, 2);
    let (credits, records) = h.usage().await;
    assert_eq!(records, 2);
    let billed_tokens: (i64, i64) =
        sqlx::query_as("SELECT sum(input_tokens)::bigint, sum(output_tokens)::bigint FROM usage_records")
            .fetch_one(h.db.ledger.pool())
            .await
            .unwrap();
    assert_eq!(billed_tokens, (g.input_tokens as i64, g.output_tokens as i64));
    assert_eq!(credits, (g.input_tokens + g.output_tokens) as i64 * SONNET_X);
    assert_eq!(h.balance().await.balance, 1_000_000 - credits);
    assert_eq!(done["credits_remaining"], json!(1_000_000 - credits));
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM usage").await, 2);
    assert_eq!(tenant_count(&db, "SELECT sum(output_tokens)::bigint FROM usage").await, g.output_tokens as i64);
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM messages").await, 4);
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM conversations").await, 1);
    // The second call carried the first turn as history: more input.
    let status: Value = agent.get("/status").send().await.unwrap().json().await.unwrap();
    assert_eq!(status["messages"], json!(4));
    assert_eq!(status["llm_calls"], json!(2));
    assert_eq!(status["tokens"]["output"], json!(g.output_tokens));
    assert_eq!(status["credits_remaining"], json!(1_000_000 - credits));
    agent.stop().await;
}

/// What the tenant's `usage` table recorded per call, and what the ledger
/// billed under the same idempotency key, each sorted by key.
async fn recorded_and_billed(h: &Harness, db: &str) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let pool = sqlx::PgPool::connect(db).await.unwrap();
    let recorded: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, credits FROM usage ORDER BY request_id").fetch_all(&pool).await.unwrap();
    pool.close().await;
    let billed: Vec<(String, i64)> =
        sqlx::query_as("SELECT idempotency_key, credits FROM usage_records ORDER BY idempotency_key")
            .fetch_all(h.db.ledger.pool())
            .await
            .unwrap();
    (recorded, billed)
}

#[tokio::test]
async fn concurrent_calls_each_record_what_the_ledger_billed_them() {
    let (h, agent, _spool, db) = setup(1_000_000).await;
    let conv = agent.chat("Hello").await["conversation_id"].as_str().unwrap().to_string();
    // Eight turns of one conversation at once: each settles while the others
    // move the balance too.
    let turns = (0..8)
        .map(|i| agent.post("/api/chat", &json!({"message": format!("question {i}"), "conversation_id": conv})).send());
    for r in futures::future::join_all(turns).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let (recorded, billed) = recorded_and_billed(&h, &db).await;
    assert_eq!(billed.len(), 9);
    assert!(billed.iter().all(|(_, c)| *c > 0));
    assert_eq!(recorded, billed, "the tenant's usage rows must be the ledger's figures, call by call");
    agent.stop().await;
}

#[tokio::test]
async fn a_call_after_a_402_records_what_it_cost() {
    // A call refused for credits (402), then one that fits: the latter
    // records what it cost, not 0.
    let (h, agent, _spool, db) = setup(20_000).await;
    let r = agent.post("/api/chat", &json!({"message": "word ".repeat(12_000)})).send().await.unwrap();
    assert_eq!(r.status(), 402);
    agent.chat("Hi").await;
    let (recorded, billed) = recorded_and_billed(&h, &db).await;
    assert_eq!(billed.len(), 1);
    assert!(billed[0].1 > 0);
    assert_eq!(recorded, billed);
    agent.stop().await;
}

#[tokio::test]
async fn out_of_credits_is_a_clear_answer_and_no_upstream_call() {
    let (h, agent, _spool, db) = setup(0).await;
    let resp = agent.post("/api/chat", &json!({"message": "Hello?"})).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "out_of_credits");
    assert!(v["error"]["message"].as_str().unwrap().contains("credits"), "{v}");
    let g = h.upstream.total();
    assert_eq!((g.requests, g.generations), (0, 0), "the upstream was reached");
    assert_eq!(h.usage().await, (0, 0));
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM usage").await, 0);
    let status: Value = agent.get("/status").send().await.unwrap().json().await.unwrap();
    assert_eq!(status["credits_remaining"], json!(0));
    // The refusal names the conversation the message was stored in, so a
    // retry continues it instead of opening another.
    let conv = v["conversation_id"].as_str().expect("the refused turn's conversation").to_string();
    for stream in [false, true] {
        let again = agent
            .post("/api/chat", &json!({"message": "Hello?", "conversation_id": conv, "stream": stream}))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 402);
        assert_eq!(again.json::<Value>().await.unwrap()["conversation_id"], json!(conv));
    }
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM conversations").await, 1);
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM messages").await, 3);
    agent.stop().await;
}

#[tokio::test]
async fn the_gateway_token_guards_everything_but_health() {
    let (h, agent, _spool, _db) = setup(1000).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/api/chat"),
        ("GET", "/api/skills"),
        ("GET", "/status"),
        ("POST", "/api/memory"),
        ("GET", "/api/memory/search?q=x"),
    ] {
        for token in [None, Some("wrong"), Some(""), Some(&GATEWAY[..GATEWAY.len() - 1])] {
            let mut req =
                http.request(method.parse().unwrap(), format!("{}{path}", agent.url)).json(&json!({"message": "hi"}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with {token:?}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "unauthorized");
        }
    }
    assert_eq!(h.upstream.total().requests, 0);
    let health = http.get(format!("{}/health", agent.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let v: Value = health.json().await.unwrap();
    assert_eq!(v["channels"]["api"]["state"], "ready");
    assert_eq!(v["workspace_hash"], "sha256:test");
    let body = v.to_string();
    for secret in [GATEWAY, h.key.as_str()] {
        assert!(!body.contains(secret), "a secret in /health");
    }
    // The same token in x-gateway-token works too.
    let ok = http.get(format!("{}/status", agent.url)).header("x-gateway-token", GATEWAY).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    agent.stop().await;
}

#[tokio::test]
async fn memories_are_stored_found_by_search_and_logged_daily() {
    let (_h, agent, _spool, db) = setup(1000).await;
    for (key, content) in [
        ("hours", "The practice opens at eight on weekdays and stays closed on Sundays."),
        ("parking", "Customers park behind the building, next to the bakery."),
    ] {
        let r = agent.post("/api/memory", &json!({"key": key, "content": content})).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    // Stemming: "opening" finds "opens"; ranking puts the right one first.
    let v: Value = agent.get("/api/memory/search?q=opening%20sunday").send().await.unwrap().json().await.unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{v}");
    assert_eq!(results[0]["key"], "hours");
    let none: Value = agent.get("/api/memory/search?q=helicopter").send().await.unwrap().json().await.unwrap();
    assert!(none["results"].as_array().unwrap().is_empty());
    // Same key again replaces, it does not duplicate.
    agent.post("/api/memory", &json!({"key": "hours", "content": "Now open on Sundays too."})).send().await.unwrap();
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM memories WHERE scope = 'global'").await, 2);
    let daily: Value = agent.get("/api/memory/daily/today").send().await.unwrap().json().await.unwrap();
    assert_eq!(daily["entries"].as_array().unwrap().len(), 3, "{daily}");
    agent.stop().await;
}

#[tokio::test]
async fn skills_switch_and_the_prompt_follows() {
    let (h, agent, _spool, _db) = setup(1_000_000).await;
    let v: Value = agent.get("/api/skills").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["skills"].as_array().unwrap().len(), 2);
    assert!(v["skills"].as_array().unwrap().iter().all(|s| s["enabled"] == json!(true)));
    let before = agent.chat("Hi").await["usage"]["input_tokens"].as_i64().unwrap();
    let r = agent.post("/api/skills/faq/disable", &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = agent.get("/api/skills").send().await.unwrap().json().await.unwrap();
    let faq = v["skills"].as_array().unwrap().iter().find(|s| s["name"] == "faq").unwrap().clone();
    assert_eq!(faq["enabled"], json!(false));
    let after = agent.chat("Hi").await["usage"]["input_tokens"].as_i64().unwrap();
    assert!(after < before, "the disabled skill still reached the prompt ({after} >= {before})");
    assert_eq!(h.upstream.total().generations, 2);
    let r = agent.post("/api/skills/ghost/enable", &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = agent.post("/api/skills/faq/explode", &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    agent.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_json_errors_and_no_llm_call() {
    let (h, agent, _spool, db) = setup(1_000_000).await;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (agent.http.post(format!("{}/api/chat", agent.url)).bearer_auth(GATEWAY).body("{not json"), 400),
        (agent.post("/api/chat", &json!({"message": ""})), 400),
        (agent.post("/api/chat", &json!({"message": "hi", "channel": "Web Chat"})), 400),
        (agent.post("/api/chat", &json!({"message": "hi", "surprise": 1})), 400),
        (agent.post("/api/chat", &json!({"message": "hi", "conversation_id": uuid::Uuid::new_v4()})), 404),
        (agent.post("/api/chat", &json!({"message": "x".repeat(70_000)})), 413),
        (agent.post("/api/memory", &json!({"content": "x", "scope": "daily"})), 400),
        (agent.get("/api/memory/search"), 400),
        (agent.get("/api/memory/daily/yesterday"), 400),
        (agent.get("/nope"), 404),
        // A NUL character, which PostgreSQL's text cannot hold: the caller's mistake.
        (agent.post("/api/chat", &json!({"message": "hi\u{0}there"})), 400),
        (agent.post("/api/chat", &json!({"message": "\u{0}", "stream": true})), 400),
        (agent.post("/api/memory", &json!({"content": "a\u{0}b"})), 400),
        (agent.post("/api/memory", &json!({"content": "ab", "key": "k\u{0}"})), 400),
        (agent.post("/api/memory", &json!({"content": "ab", "scope": "\u{0}"})), 400),
        (agent.get("/api/memory/search?q=a%00b"), 400),
    ];
    for (req, status) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let v: Value = resp.json().await.expect("a JSON error body");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(!v.to_string().contains(&h.key), "the tenant key in an error");
    }
    assert_eq!(h.upstream.total().requests, 0);
    // No conversation (not even an empty one) and no memory was stored.
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM conversations").await, 0);
    assert_eq!(tenant_count(&db, "SELECT count(*) FROM memories WHERE scope <> 'daily'").await, 0);
    agent.stop().await;
}

#[tokio::test]
async fn every_error_is_json_even_from_routing_and_extractors() {
    let (_h, agent, _spool, _db) = setup(1_000_000).await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (agent.get("/api/memory/search?q=x&limit=abc"), 400, "invalid_request"),
        (agent.get("/api/memory/search?q=x&limit=99999999999999999999"), 400, "invalid_request"),
        (agent.get("/api/memory/daily/%FF"), 400, "invalid_request"),
        (agent.get("/api/chat"), 405, "method_not_allowed"),
        (agent.http.delete(format!("{}/api/chat", agent.url)).bearer_auth(GATEWAY), 405, "method_not_allowed"),
        (agent.http.post(format!("{}/health", agent.url)), 405, "method_not_allowed"),
        (agent.get("/api/skills/faq/enable"), 405, "method_not_allowed"),
        (agent.get("/nope"), 404, "not_found"),
        (agent.http.get(format!("{}/nope", agent.url)), 404, "not_found"),
        (agent.post("/api/skills/faq/enable/more", &json!({})), 404, "not_found"),
        (agent.get("/api/memory/daily/2026-01-01/more"), 404, "not_found"),
    ];
    for (req, status, kind) in cases {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url());
        let resp = agent.http.execute(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let json_type = resp.headers().get("content-type").is_some_and(|v| v == "application/json");
        assert!(json_type, "{what}: {:?}", resp.headers().get("content-type"));
        let v: Value = resp.json().await.expect("a JSON error body");
        assert_eq!(v["error"]["type"], json!(kind), "{what}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_database_it_cannot_open_fails_the_start_without_quoting_the_url() {
    let spool = tempfile::tempdir().unwrap();
    for url in ["postgres://owner:hunter2@127.0.0.1:1/tenant", "postgres://owner:hunter2@127.0.0.1:notaport/x"] {
        let args = agent_args("http://127.0.0.1:1", "wsk_secret_key", url, spool.path());
        let err = winston::agent::Agent::start(args).await.err().expect("no database, no start");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("tenant database"), "{shown}");
        for secret in ["hunter2", "wsk_secret_key", GATEWAY] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
