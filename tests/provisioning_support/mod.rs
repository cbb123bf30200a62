//! The provisioning stack of a test: one real PostgreSQL per test binary
//! (Winston's control database and the Neon emulator's backing server), an
//! in-process emulator per test, and `winston controller` processes wired
//! to both through the same environment variables an operator would set.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::Value;
use winston::api::{TenantInstance, conditions};
use winston::devenv::postgres::TempPostgres;
use winston::emulator::{DEFAULT_TOKEN, EmulatorConfig, Running};

use crate::support::{TestNamespace, Winston, eventually};

static PG: OnceLock<TempPostgres> = OnceLock::new();

/// The PostgreSQL of this test binary, stopped by a watchdog when the binary exits.
pub fn pg() -> &'static TempPostgres {
    PG.get_or_init(|| {
        winston::telemetry::install_crypto_provider();
        winston::devenv::postgres::start_for_process().expect("start postgres")
    })
}

/// One test's platforms and control database.
pub struct Stack {
    pub emu: Running,
    pub control_db: String,
    http: reqwest::Client,
}

impl Stack {
    /// An emulator whose lifecycles take `async_delay_ms`, and a fresh control database.
    pub async fn start(async_delay_ms: u64) -> Self {
        // Twenty tenants polling every 200 ms exceed the platforms' published
        // limits; tests/providers_limits.rs tests those.
        let limits = winston::emulator::limits::PlatformLimits::none();
        Self::start_with(EmulatorConfig { async_delay_ms, limits, ..EmulatorConfig::default() }).await
    }

    /// An emulator with `config` (its backing PostgreSQL is the shared
    /// one), and a fresh control database.
    pub async fn start_with(config: EmulatorConfig) -> Self {
        let pg = pg();
        let db = format!("ctl_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        pg.create_database(&db).unwrap();
        let config = EmulatorConfig { postgres_url: Some(pg.url("postgres")), ..config };
        let emu = winston::emulator::spawn(config).await.expect("start emulator");
        Self { emu, control_db: pg.url(&db), http: reqwest::Client::new() }
    }

    /// The controller's environment: control database, every platform on
    /// the emulator with `token`, health checks routed to the emulated apps.
    pub fn env(&self, token: &str) -> Vec<(String, String)> {
        let base = self.emu.base();
        let mut env = vec![
            ("WINSTON_DATABASE_URL".to_string(), self.control_db.clone()),
            ("WINSTON_HEALTH_BASE_URL".to_string(), format!("{base}{}", winston::emulator::apps::APPS_PATH)),
            ("WINSTON_POLL_MILLIS".to_string(), "200".to_string()),
            ("WINSTON_STALLED_RETRY_SECONDS".to_string(), "300".to_string()),
            ("WINSTON_SUPABASE_ORGANIZATION".to_string(), "winston-emulator".to_string()),
            // The emulated agents answer on loopback; frontends build from `storm/*` and `acme/*`.
            ("WINSTON_OUTBOUND_ALLOW_CIDRS".to_string(), "127.0.0.0/8,::1/128".to_string()),
            ("WINSTON_FRONTEND_GITHUB_ORGS".to_string(), "storm,acme".to_string()),
            // The emulated lists do not lag unless a test sets `list_lag_ms`:
            // a failed create is searched for again after 1 s, not 30.
            ("WINSTON_LIST_SETTLE_SECONDS".to_string(), "1".to_string()),
        ];
        for (p, path) in [
            ("RAILWAY", winston::emulator::RAILWAY_PATH),
            ("NEON", winston::emulator::NEON_PATH),
            ("VERCEL", winston::emulator::VERCEL_PATH),
            ("SUPABASE", winston::emulator::SUPABASE_PATH),
            ("RESEND", winston::emulator::RESEND_PATH),
        ] {
            env.push((format!("WINSTON_{p}_BASE_URL"), format!("{base}{path}")));
            env.push((format!("WINSTON_{p}_TOKEN"), token.to_string()));
            // Resend's emulated team limit is its published 2/s: so is the client's budget.
            let (rate, burst) = if p == "RESEND" { ("120", "2") } else { ("100000", "1000") };
            env.push((format!("WINSTON_{p}_RATE_PER_MINUTE"), rate.to_string()));
            env.push((format!("WINSTON_{p}_BURST"), burst.to_string()));
        }
        env
    }

    /// [`Stack::env`] with the emulator's token and some variables set to
    /// other values; a name the environment does not hold is a mistake.
    pub fn env_with(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env(DEFAULT_TOKEN);
        for (name, value) in overrides {
            let slot = env.iter_mut().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name} to override"));
            slot.1 = (*value).to_string();
        }
        env
    }

    /// Starts a controller for `ns` with the emulator's token and `extra` flags.
    pub fn controller(&self, ns: &str, identity: &str, extra: &[&str]) -> (Winston, String) {
        self.controller_with(ns, identity, extra, &self.env(DEFAULT_TOKEN))
    }

    /// Starts a controller for `ns` with an explicit environment.
    pub fn controller_with(
        &self,
        ns: &str,
        identity: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> (Winston, String) {
        let port = winston::devenv::free_port().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "controller",
            "--namespace",
            ns,
            "--lease-namespace",
            ns,
            "--metrics-addr",
            &addr,
            "--identity",
            identity,
            "--lease-duration-seconds",
            "4",
        ];
        args.extend_from_slice(extra);
        (Winston::spawn_with_env(&args, env, &format!("controller-{ns}")), addr)
    }

    /// `GET /_emulator/objects`.
    pub async fn objects(&self) -> Value {
        self.http.get(format!("{}/_emulator/objects", self.emu.base())).send().await.unwrap().json().await.unwrap()
    }

    /// `GET <path>` on the emulated platforms as a client would, with the
    /// emulator's token. The platforms' published limits apply to the test
    /// too (Resend: 2 requests a second), so a 429 is waited out as its
    /// `retry-after` says, a bounded number of times.
    pub async fn platform_get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.emu.base());
        for _ in 0..20 {
            let r = self.http.get(&url).bearer_auth(winston::emulator::DEFAULT_TOKEN).send().await.unwrap();
            if r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                return r.json().await.unwrap();
            }
            let wait = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 5))).await;
        }
        panic!("the emulated platform kept refusing GET {path}");
    }

    /// Live objects of `kind` on `platform` whose name is `name`.
    pub async fn count(&self, platform: &str, kind: &str, name: &str) -> usize {
        let v = self.objects().await;
        // Neon and Supabase names are `<marker> winston:<uid>` (labelled).
        let named = |o: &&Value| {
            o["name"].as_str().is_some_and(|n| n == name || n.strip_prefix(name).is_some_and(|r| r.starts_with(' ')))
        };
        v[platform]["objects"][kind].as_array().map(|a| a.iter().filter(named).count()).unwrap_or(0)
    }

    /// Authorized requests each platform received, divided by `tenants`
    /// (printed by the crash and storm tests: what one tenant costs).
    pub async fn requests_per_tenant(&self, tenants: usize) -> String {
        let v = self.objects().await;
        ["railway", "neon", "vercel", "supabase", "resend"]
            .iter()
            .map(|p| format!("{p} {:.1}", v[p]["requests"].as_f64().unwrap_or(0.0) / tenants as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every live object on every platform (for "nothing left"); sent
    /// emails are history, not objects to delete, so Resend is left out.
    pub async fn total_objects(&self) -> usize {
        let v = self.objects().await;
        v.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() != "resend")
            .map(|(_, p)| p)
            .filter_map(|p| p["objects"].as_object())
            .flat_map(|kinds| kinds.values())
            .filter_map(Value::as_array)
            .map(Vec::len)
            .sum()
    }

    /// Accepted writes per platform, summed.
    pub async fn mutations(&self) -> u64 {
        let v = self.objects().await;
        v.as_object().unwrap().values().filter_map(|p| p["mutations"].as_u64()).sum()
    }

    /// How many emulator faults are still armed (unconsumed).
    pub async fn fault_count(&self) -> usize {
        let r = self.http.get(format!("{}/_emulator/faults", self.emu.base())).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["faults"].as_array().expect("a fault list").len()
    }

    /// Arms an emulator fault.
    pub async fn fault(&self, fault: Value) {
        let r = self.http.post(format!("{}/_emulator/faults", self.emu.base())).json(&fault).send().await.unwrap();
        assert!(r.status().is_success(), "arming {fault}: {}", r.status());
    }

    /// A Railway GraphQL call as an out-of-band actor would make it.
    pub async fn railway(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("{}{}", self.emu.base(), winston::emulator::RAILWAY_PATH))
            .bearer_auth(DEFAULT_TOKEN)
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Applies a minimal Tenant named `name` (Neon + Railway on the starter plan).
pub fn apply_tenant(ns: &TestNamespace, name: &str, extra_spec: &str) {
    let yaml = format!(
        "apiVersion: winston.dev/v1alpha1\nkind: Tenant\nmetadata:\n  name: {name}\nspec:\n  displayName: {name}\n  \
         contactEmail: ops@{name}.example\n  plan: starter\n{extra_spec}"
    );
    let (ok, out) = crate::support::run_with_stdin(ns.kubectl(&["apply", "-f", "-"]), &yaml);
    assert!(ok, "kubectl apply: {out}");
}

/// Waits until the instance `name` is Ready and returns it.
pub async fn ready(ns: &TestNamespace, name: &str, timeout: Duration) -> TenantInstance {
    let api: Api<TenantInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    eventually(&format!("TenantInstance {name} Ready"), timeout, || {
        let api = api.clone();
        async move {
            let ti = api.get_opt(name).await.ok()??;
            let st = ti.status.as_ref()?;
            conditions::is_true(&st.conditions, "Ready").then_some(ti)
        }
    })
    .await
}

/// The credentials Secret's value `key`.
pub async fn secret_value(ns: &TestNamespace, secret: &str, key: &str) -> String {
    let api: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let s = api.get(secret).await.unwrap();
    String::from_utf8(s.data.unwrap()[key].0.clone()).unwrap()
}

/// The controller's metric `name` summed over label sets, from its /metrics
/// (waiting for a controller that just started to serve it).
pub async fn metric(addr: &str, name: &str) -> f64 {
    let url = format!("http://{addr}/metrics");
    let body = eventually(&format!("{url} answering"), Duration::from_secs(30), || {
        let url = url.clone();
        async move { reqwest::get(url).await.ok()?.text().await.ok() }
    })
    .await;
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Through `url`: the connected role and the tables of the `public` schema
/// (sorted), to check a tenant database the engine migrated.
pub async fn role_and_tables(url: &str) -> (String, Vec<String>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (who,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&pool).await.unwrap();
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    (who, tables.into_iter().map(|t| t.0).collect())
}
