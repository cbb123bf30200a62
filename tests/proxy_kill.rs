//! The `winston proxy` process SIGKILLed under load, several times: every
//! response a client received in full is billed exactly once, nothing is
//! billed twice, a request cut by the kill can be retried under its key at
//! once from the next process (no 409 until a TTL), and the dead processes'
//! holds come back as soon as they are gone, not after their TTL.
#![allow(clippy::unwrap_used)]
mod proxy_support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_support::*;
use serde_json::json;
use winston::emulator::llm::LlmMockConfig;

const ROUNDS: usize = 3;
const WORKERS: usize = 12;
const START_BALANCE: i64 = 1_000_000_000;

fn spawn_proxy(db_url: &str, catalog: &std::path::Path, port: u16, admin_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_winston"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}"), "--database-url", db_url])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--catalog")
        .arg(catalog)
        // The production TTL: a dead process's holds must come back through
        // its lost session, not by expiring.
        .args(["--reservation-ttl-secs", "900", "--key-refresh-ms", "200"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills the child on drop so a failed assertion leaves no process behind.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigkill_under_load_loses_nothing_a_client_received() {
    let db = fresh_db().await;
    let mock = start_mock(LlmMockConfig { api_key: Some("k".into()), ..LlmMockConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k").unwrap();
    let catalog = dir.path().join("catalog.yaml");
    std::fs::write(&catalog, catalog_yaml(&mock, &dir.path().join("key"))).unwrap();
    db.ledger.ensure_account(ACCOUNT).await.unwrap();
    let grant = winston::ledger::Grant { id: "kill-test".into(), amount: START_BALANCE, reason: String::new() };
    db.ledger.apply_grant(ACCOUNT, &grant).await.unwrap();
    let key = db.ledger.issue_key(ACCOUNT, "load").await.unwrap().plaintext;
    let http = reqwest::Client::new();
    let completed: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Requests sent but not received in full: cut by a kill (or refused).
    let unfinished: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut retried = 0;
    let mut next_id = 0usize;
    for round in 0..=ROUNDS {
        let port = winston::devenv::free_port().unwrap();
        let admin_port = winston::devenv::free_port().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut proxy = Killed(spawn_proxy(&db.url, &catalog, port, admin_port));
        let ready = eventually(30, || async {
            http.get(format!("http://127.0.0.1:{admin_port}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "round {round}: proxy did not become ready");
        // Every request the last kill cut is retried under its key, at once:
        // it completes (or, when it had completed before the kill, is refused
        // as completed), never "in flight" because of the dead process.
        let cut: Vec<String> = unfinished.lock().unwrap().drain().collect();
        for id in cut {
            let body = json!({"model": SONNET, "max_tokens": 50,
                "messages": [{"role": "user", "content": "load"}], "mock": {"output_tokens": 20}});
            let r = http
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", &key)
                .header("idempotency-key", &id)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            match status {
                200 => {
                    completed.lock().unwrap().insert(id);
                }
                409 => assert!(text.contains("already completed"), "round {round}: retry of {id} refused: {text}"),
                other => panic!("round {round}: retry of {id} answered {other}: {text}"),
            }
            retried += 1;
        }
        if round == ROUNDS {
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let done_this_round = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            let (stop, done, completed) = (stop.clone(), done_this_round.clone(), completed.clone());
            let unfinished = unfinished.clone();
            let first_id = next_id + w * 100_000;
            workers.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("r{round}-{}", first_id + n);
                    n += 1;
                    let stream = n.is_multiple_of(2);
                    let body = json!({"model": SONNET, "max_tokens": 50, "stream": stream,
                        "messages": [{"role": "user", "content": "load"}],
                        "mock": {"output_tokens": 20, "token_delay_ms": 1}});
                    let sent = http
                        .post(format!("{url}/v1/messages"))
                        .header("x-api-key", &key)
                        .header("idempotency-key", &id)
                        .json(&body)
                        .send()
                        .await;
                    unfinished.lock().unwrap().insert(id.clone());
                    let Ok(resp) = sent else { continue };
                    if resp.status() != 200 {
                        continue;
                    }
                    let Ok(text) = resp.text().await else {
                        continue;
                    };
                    let full = if stream {
                        text.contains("event: message_stop")
                    } else {
                        serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| v["usage"].is_object())
                    };
                    if full {
                        unfinished.lock().unwrap().remove(&id);
                        completed.lock().unwrap().insert(id);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        next_id += WORKERS * 100_000;
        // Kill once the load is well under way.
        let loaded = eventually(60, || async { done_this_round.load(Ordering::Relaxed) >= 40 }).await;
        assert!(loaded, "round {round}: no load got through");
        proxy.0.kill().unwrap();
        proxy.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            tokio::time::timeout(Duration::from_secs(60), w).await.unwrap().unwrap();
        }
    }
    let completed = completed.lock().unwrap().clone();
    assert!(completed.len() >= ROUNDS * 40);
    assert!(retried > 0, "no request was cut by a kill: the test proved nothing");
    let billed: Vec<(String, i64)> =
        sqlx::query_as("SELECT idempotency_key, count(*) FROM usage_records GROUP BY idempotency_key")
            .fetch_all(db.ledger.pool())
            .await
            .unwrap();
    let twice: Vec<_> = billed.iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "keys billed more than once: {twice:?}");
    let billed: HashSet<String> = billed.into_iter().map(|(id, _)| id).collect();
    let missing: Vec<_> = completed.difference(&billed).collect();
    assert!(missing.is_empty(), "{} fully received responses were not billed: {missing:?}", missing.len());
    // The last process is killed too; its holds come back at the first sweep
    // of any proxy (here: the same call its successor makes at start), long
    // before their 900 s TTL.
    let ledger = db.ledger.clone();
    let released = eventually(10, || {
        let ledger = ledger.clone();
        async move {
            ledger.expire_reservations().await.unwrap();
            ledger.snapshot(ACCOUNT).await.unwrap().reserved == 0
        }
    })
    .await;
    assert!(released, "a dead process's holds outlived it");
    let b = db.ledger.snapshot(ACCOUNT).await.unwrap();
    assert_eq!(START_BALANCE - b.balance, db.ledger.usage_credits(ACCOUNT).await.unwrap());
}
