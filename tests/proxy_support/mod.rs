//! A running proxy in front of the mock LLM upstream, over a fresh ledger
//! database, for the proxy tests.
#![allow(dead_code, clippy::unwrap_used)]
use std::time::Duration;

use chrono::{TimeZone, Utc};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use winston::emulator::llm::{LlmMockConfig, MockStats, serve_with_stats};
use winston::ledger::{Ledger, Period, ProxySession};
use winston::proxy::{Catalog, Proxy, Settings};

#[path = "../ledger_support/mod.rs"]
mod ledger_support;
pub use ledger_support::{TestDb, fresh_db};

pub const ACCOUNT: &str = "shop/acme";
pub const SONNET: &str = "claude-sonnet-4-5";
pub const SONNET_X: i64 = 5;
pub const KIMI: &str = "kimi-k2.6";
pub const KIMI_X: i64 = 1;
pub const OPUS: &str = "claude-opus-4-1";
pub const OPUS_X: i64 = 12;
/// A model with cache prices, a priced server tool, an allowed client tool
/// type and an allowed beta (credits per 1,000 tokens: input/output 2,000,
/// cache writes 2,500, cache reads 200; a web search 100 credits).
pub const TOOLS: &str = "claude-tools";
const UPSTREAM_KEY: &str = "upstream-secret-key";

pub struct Harness {
    pub db: TestDb,
    pub url: String,
    /// The admin listener: /healthz, /readyz, /metrics.
    pub admin_url: String,
    pub mock_url: String,
    /// What the mock upstream really generated.
    pub upstream: Arc<MockStats>,
    pub key: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub fn test_settings() -> Settings {
    Settings {
        key_refresh_ms: 100,
        drain_secs: 20,
        shutdown_grace_secs: 20,
        body_limit: 64 * 1024,
        default_max_tokens: 1000,
        ..Settings::default()
    }
}

/// Starts the mock upstream and returns its base URL.
pub async fn start_mock(config: LlmMockConfig) -> String {
    start_counting_mock(config).await.0
}

/// Starts the mock upstream; returns its base URL and what it generates.
pub async fn start_counting_mock(config: LlmMockConfig) -> (String, Arc<MockStats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_task, stats) = serve_with_stats(listener, config).await;
    (format!("http://{addr}"), stats)
}

pub fn catalog_yaml(mock_url: &str, key_file: &std::path::Path) -> String {
    format!(
        "models:\n  {SONNET}:\n    kind: anthropic\n    base_url: {mock_url}/anthropic\n    api_key_file: {k}\n    multiplier: {SONNET_X}\n    max_output_tokens: 64000\n  {OPUS}:\n    kind: anthropic\n    base_url: {mock_url}/anthropic\n    api_key_file: {k}\n    multiplier: {OPUS_X}\n    max_output_tokens: 32000\n  {KIMI}:\n    kind: openai\n    base_url: {mock_url}/openai/\n    api_key_file: {k}\n    multiplier: {KIMI_X}\n  {TOOLS}:\n    kind: anthropic\n    base_url: {mock_url}/anthropic\n    api_key_file: {k}\n    multiplier: 2\n    prices: {{cache_write: 2500, cache_read: 200}}\n    server_tools:\n      web_search: {{types: [web_search_20250305], credits_per_use: 100, max_uses: 3}}\n    tool_types: [bash_20250124]\n    betas: [prompt-caching-2024-07-31]\n",
        k = key_file.display()
    )
}

/// A proxy with an account holding `allotment` credits for the current period.
pub async fn harness(allotment: i64, settings: Settings) -> Harness {
    let db = fresh_db().await;
    let (mock_url, upstream) =
        start_counting_mock(LlmMockConfig { api_key: Some(UPSTREAM_KEY.into()), ..LlmMockConfig::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("upstream.key");
    std::fs::write(&key_file, format!("{UPSTREAM_KEY}\n")).unwrap();
    let catalog = Catalog::parse(&catalog_yaml(&mock_url, &key_file)).unwrap();
    let ledger = &db.ledger;
    ledger.ensure_account(ACCOUNT).await.unwrap();
    let period = Period {
        start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    };
    ledger.ensure_period(ACCOUNT, period, allotment).await.unwrap();
    let key = ledger.issue_key(ACCOUNT, "test").await.unwrap().plaintext;
    let proxy_ledger = Ledger::connect(&db.url, 40).await.unwrap();
    let session = ProxySession::open(&db.url).await.unwrap();
    let proxy = Proxy::new(proxy_ledger, session, catalog, settings).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        proxy
            .serve(listener, Some(admin), async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    Harness { db, url, admin_url, mock_url, upstream, key, http, shutdown: Some(tx), server: Some(server), _dir: dir }
}

impl Harness {
    pub async fn balance(&self) -> winston::ledger::Balance {
        self.db.ledger.snapshot(ACCOUNT).await.unwrap()
    }

    /// The balance once nothing is held: no request's own hold is left
    /// now, and the replica's idle credit lease (which `reserved` counts)
    /// goes back within a bounded wait.
    pub async fn settled_balance(&self) -> winston::ledger::Balance {
        let (holds,): (i64,) = sqlx::query_as("SELECT count(*) FROM reservations WHERE request_id NOT LIKE 'lease:%'")
            .fetch_one(self.db.ledger.pool())
            .await
            .unwrap();
        assert_eq!(holds, 0, "a request's hold was left behind");
        let returned = eventually(10, || async { self.balance().await.reserved == 0 }).await;
        assert!(returned, "a credit lease was never given back: {:?}", self.balance().await);
        self.balance().await
    }

    /// `POST /v1/messages` with the tenant key.
    pub fn anthropic(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/messages", self.url)).header("x-api-key", &self.key).json(body)
    }

    /// `POST /v1/chat/completions` with the tenant key.
    pub fn openai(&self, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/chat/completions", self.url)).bearer_auth(&self.key).json(body)
    }

    /// A counter or gauge from the admin port's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(format!("{}/metrics", self.admin_url)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.split([' ', '{']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sum of usage-record credits and their count.
    pub async fn usage(&self) -> (i64, i64) {
        sqlx::query_as("SELECT COALESCE(sum(credits),0)::bigint, count(*) FROM usage_records")
            .fetch_one(self.db.ledger.pool())
            .await
            .unwrap()
    }

    /// Stops accepting and waits for open streams to drain.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap();
        }
    }
}

/// Polls `check` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub fn remaining(resp: &reqwest::Response) -> i64 {
    resp.headers()["x-winston-credits-remaining"].to_str().unwrap().parse().unwrap()
}
