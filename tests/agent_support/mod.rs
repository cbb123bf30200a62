//! A reference agent runtime over a real proxy (in-process, with the
//! counting mock LLM upstream and a fresh ledger) and a real tenant
//! database, plus a forwarder that can make the proxy look away for
//! transcript pushes, for the agent and transcript tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

#[path = "../proxy_support/mod.rs"]
mod proxy_support;
pub use proxy_support::*;

use winston::agent::{Agent, AgentArgs};

pub const GATEWAY: &str = "wgt_0123456789abcdef_gateway";

/// A workspace as the engine renders it: the prompt files and two skills.
pub fn workspace_bundle() -> String {
    let files = BTreeMap::from([
        ("SOUL.md", "# Soul\n\nYou are the assistant of Acme Dental. Be kind.\n"),
        ("IDENTITY.md", "# Identity\n\nYou are Ada.\n"),
        ("USER.md", "# User\n\nAcme Dental, a dentist in Springfield.\n"),
        ("AGENTS.md", "# Operating rules\n\n1. Be brief.\n"),
        ("TOOLS.md", "# Tools\n\n- `faq`\n- `booking`\n"),
        (
            "skills/faq/SKILL.md",
            "# Skill: faq\n\nAnswer common questions about opening hours, prices and the location of the practice in full detail.\n",
        ),
        ("skills/booking/SKILL.md", "# Skill: booking\n\nBook appointments.\n"),
    ]);
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&files).unwrap())
}

/// A fresh database for the tenant on the harness's PostgreSQL.
pub fn tenant_db(h: &Harness) -> String {
    let name = format!("tenant_{}", uuid::Uuid::new_v4().simple());
    h.db.pg.create_database(&name).unwrap();
    h.db.pg.url(&name)
}

pub fn agent_args(proxy_url: &str, key: &str, db_url: &str, spool: &Path) -> AgentArgs {
    let mut a = AgentArgs::new(db_url, key, proxy_url, GATEWAY);
    a.workspace = Some(workspace_bundle());
    a.workspace_hash = Some("sha256:test".into());
    a.instance = "acme-0".into();
    a.spool_dir = Some(spool.to_path_buf());
    a.push_millis = 50;
    a.max_tokens = 200;
    a
}

/// An in-process runtime.
pub struct AgentRun {
    pub url: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn start_agent(args: AgentArgs) -> AgentRun {
    let agent = Agent::start(args).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        agent
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    AgentRun { url, http: reqwest::Client::new(), shutdown: Some(tx), task: Some(task) }
}

impl AgentRun {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(GATEWAY)
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(GATEWAY).json(body)
    }

    /// One non-streamed chat turn; the answer's JSON.
    pub async fn chat(&self, message: &str) -> serde_json::Value {
        let r = self.post("/api/chat", &serde_json::json!({"message": message})).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
        }
    }
}

/// Transcript rows and distinct event ids in Winston's database.
pub async fn transcript_rows(h: &Harness) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT (account_id, event_id)) FROM session_transcripts")
        .fetch_one(h.db.ledger.pool())
        .await
        .unwrap()
}

/// Sealed batches and current lines waiting in a spool directory.
pub fn spooled_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("batch-") || n == "current.jsonl"
        })
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum()
}

/// How the forwarder treats `POST /v1/transcripts`.
pub const FORWARD: u8 = 0;
/// Answers 503 without reaching the proxy (the proxy is away).
pub const DOWN: u8 = 1;
/// Forwards, lets the proxy store the batch, and never answers.
pub const HOLD: u8 = 2;

/// Sits between a runtime and the proxy: LLM calls always pass;
/// transcript pushes per [`Forwarder::mode`].
pub struct Forwarder {
    pub url: String,
    pub mode: Arc<AtomicU8>,
    /// Transcript batches the proxy answered (in HOLD: stored, never returned).
    pub delivered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Fwd {
    target: String,
    mode: Arc<AtomicU8>,
    delivered: Arc<AtomicUsize>,
    http: reqwest::Client,
}

async fn forward(State(f): State<Fwd>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let transcripts = parts.uri.path() == "/v1/transcripts";
    let mode = f.mode.load(Ordering::SeqCst);
    if transcripts && mode == DOWN {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "proxy away").into_response();
    }
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap();
    let mut out = f.http.request(parts.method, format!("{}{}", f.target, parts.uri));
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let resp = out.body(body).send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    if transcripts {
        f.delivered.fetch_add(1, Ordering::SeqCst);
        if mode == HOLD {
            std::future::pending::<()>().await;
        }
    }
    let mut r = Response::builder().status(status);
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            r = r.header(k, v);
        }
    }
    r.body(axum::body::Body::from(bytes)).unwrap()
}

pub async fn forwarder(target: &str, mode: u8) -> Forwarder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mode = Arc::new(AtomicU8::new(mode));
    let delivered = Arc::new(AtomicUsize::new(0));
    let state = Fwd {
        target: target.to_string(),
        mode: mode.clone(),
        delivered: delivered.clone(),
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Forwarder { url, mode, delivered, task }
}
