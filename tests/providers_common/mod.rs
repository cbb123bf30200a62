//! Shared harness of the provider tests: one real PostgreSQL per test
//! binary (stopped by a watchdog when the binary exits, since statics are
//! never dropped), a fresh in-process emulator per test, and helpers to
//! inject faults and count the emulator's objects and writes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use winston::devenv::postgres::TempPostgres;
use winston::emulator::{DEFAULT_TOKEN, EmulatorConfig, Running};
use winston::providers::budget::BudgetConfig;
use winston::providers::{Providers, ProvidersConfig};

static PG: OnceLock<TempPostgres> = OnceLock::new();

/// The PostgreSQL of this test binary.
pub fn pg() -> &'static TempPostgres {
    PG.get_or_init(|| {
        winston::telemetry::install_crypto_provider();
        winston::devenv::postgres::start_for_process().expect("start postgres")
    })
}

/// A random instance UID.
pub fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One emulator for one test.
pub struct Env {
    pub emu: Running,
    http: reqwest::Client,
}

impl Env {
    /// An emulator whose lifecycles take `async_delay_ms`, with Neon backed by the shared PostgreSQL.
    pub async fn start(async_delay_ms: u64) -> Self {
        let url = pg().url("postgres");
        // One client per test drives the emulator as fast as it answers;
        // Resend's per-team limit (2/s by default) has tests of its own.
        let config = EmulatorConfig {
            async_delay_ms,
            postgres_url: Some(url),
            resend_per_second: 1_000,
            // A Supabase project is never ready at once, as on the platform.
            supabase_coming_up_ms: Some(300),
            // Polling every 50 ms exceeds Supabase's 120/min; the published
            // limits have tests of their own (providers_limits).
            limits: winston::emulator::limits::PlatformLimits::none(),
            ..EmulatorConfig::default()
        };
        Self::with_config(config).await
    }

    pub async fn with_config(config: EmulatorConfig) -> Self {
        winston::telemetry::install_crypto_provider();
        let emu = winston::emulator::spawn(config).await.expect("start emulator");
        Self { emu, http: reqwest::Client::new() }
    }

    /// Client configuration pointing at this emulator with a budget tests never exhaust.
    pub fn config(&self) -> ProvidersConfig {
        let mut c = ProvidersConfig::with_base_urls(|p| self.emu.platform_url(p), DEFAULT_TOKEN);
        c.supabase_organization = Some("winston-emulator".into());
        for p in [&mut c.railway, &mut c.neon, &mut c.vercel, &mut c.supabase, &mut c.resend] {
            p.timeout_ms = 10_000;
            p.budget = Some(BudgetConfig { per_minute: 100_000, burst: 1_000, ..BudgetConfig::default() });
        }
        c
    }

    pub fn providers(&self) -> Providers {
        Providers::new(&self.config()).unwrap()
    }

    /// Arms a fault.
    pub async fn fault(&self, fault: Value) {
        let r = self.http.post(format!("{}/_emulator/faults", self.emu.base())).json(&fault).send().await.unwrap();
        assert!(r.status().is_success(), "arming {fault}: {}", r.status());
    }

    /// `GET /_emulator/objects`.
    pub async fn objects_json(&self) -> Value {
        self.http.get(format!("{}/_emulator/objects", self.emu.base())).send().await.unwrap().json().await.unwrap()
    }

    /// Live objects of `kind` on `platform`.
    pub async fn objects(&self, platform: &str, kind: &str) -> usize {
        let v = self.objects_json().await;
        v[platform]["objects"][kind].as_array().unwrap_or_else(|| panic!("no {platform}/{kind} in {v}")).len()
    }

    /// Writes the emulator accepted for `platform`.
    pub async fn mutations(&self, platform: &str) -> u64 {
        self.objects_json().await[platform]["mutations"].as_u64().unwrap()
    }

    /// `GET path` with the emulator token, decoded as JSON (wire-shape checks).
    pub async fn get_json(&self, path: &str) -> Value {
        self.raw(reqwest::Method::GET, path).send().await.unwrap().json().await.unwrap()
    }

    /// A raw request with the emulator token, for wire-shape checks.
    pub fn raw(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.emu.base())).bearer_auth(DEFAULT_TOKEN)
    }
}

/// `SELECT current_user` through `uri`.
pub async fn query_user(uri: &str) -> String {
    let pool = sqlx::PgPool::connect(uri).await.unwrap_or_else(|e| panic!("connect: {e}"));
    let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&pool).await.unwrap();
    sqlx::query("CREATE TABLE t (id int)").execute(&pool).await.unwrap();
    pool.close().await;
    user
}

/// Whether a role exists on the shared PostgreSQL.
pub async fn pg_role_exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&pg().url("postgres")).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(name).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n == 1
}

/// Calls `f` until `done` holds (10 s deadline), returning the last value.
pub async fn poll<T: std::fmt::Debug, F, Fut>(mut f: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f().await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached; last value {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
