//! Harness of the intake tests: the real control plane (tests/support), a
//! PostgreSQL per test binary with a fresh database per test, an
//! in-process emulator whose Stripe delivers to a real `winston intake`
//! process, and helpers that act as the customer (checkout) and count
//! what really exists: Tenants in the API server, rows in the database,
//! delivery attempts the emulator made.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use winston::api::Tenant;
use winston::devenv::postgres::TempPostgres;
use winston::emulator::stripe::StripeConfig;
use winston::emulator::stripe_delivery::DeliveryConfig;
use winston::emulator::{DEFAULT_TOKEN, EmulatorConfig, Running};

pub use crate::support::*;

pub const SECRET: &str = "whsec_test_current_0123456789";
pub const PREVIOUS_SECRET: &str = "whsec_test_previous_9876543210";

static PG: OnceLock<TempPostgres> = OnceLock::new();

fn pg() -> &'static TempPostgres {
    PG.get_or_init(|| winston::devenv::postgres::start_for_process().expect("start postgres"))
}

/// One test's world.
pub struct Env {
    pub ns: TestNamespace,
    pub emu: Running,
    pub db_url: String,
    pub intake: Option<Winston>,
    pub port: u16,
    pub admin_port: u16,
    pub config: tempfile::TempDir,
    pub http: reqwest::Client,
    pub store: winston::intake::store::Store,
}

/// The default configuration: three prices by lookup key.
pub const CONFIG: &str = "prices:\n  starter-monthly: starter\n  growth-monthly: growth\n  team-monthly: team\n";

impl Env {
    /// A namespace, a database, an emulator delivering to `intake` (not
    /// started yet: see [`Env::start_intake`]) with retries `retry_ms` apart.
    pub async fn new(prefix: &str, config: &str, retry_ms: u64) -> Self {
        winston::telemetry::install_crypto_provider();
        let ns = TestNamespace::new(prefix).await;
        let db = format!("intake_{}", uuid::Uuid::new_v4().simple());
        pg().create_database(&db).unwrap();
        let db_url = pg().url(&db);
        let port = winston::devenv::free_port().unwrap();
        let admin_port = winston::devenv::free_port().unwrap();
        let emu = winston::emulator::spawn(EmulatorConfig {
            stripe: StripeConfig {
                webhook: Some((format!("http://127.0.0.1:{port}/stripe/webhook"), SECRET.into())),
                delivery: DeliveryConfig { retry_base: Duration::from_millis(retry_ms), max_attempts: 10 },
            },
            ..EmulatorConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("intake.yaml"), config).unwrap();
        let store = winston::intake::store::Store::connect(&db_url, 2).await.unwrap();
        store.migrate().await.unwrap();
        Self { ns, emu, db_url, intake: None, port, admin_port, config: dir, http: reqwest::Client::new(), store }
    }

    pub fn intake_url(&self) -> String {
        format!("http://127.0.0.1:{}/stripe/webhook", self.port)
    }

    pub fn stripe(&self) -> String {
        format!("{}/stripe", self.emu.base())
    }

    /// Starts `winston intake` (with `previous` as the rotated-out secret)
    /// and waits until it is ready.
    pub async fn start_intake(&mut self, previous: bool) {
        let (port, admin) = (self.port.to_string(), self.admin_port.to_string());
        let listen = format!("127.0.0.1:{port}");
        let admin_listen = format!("127.0.0.1:{admin}");
        let config = self.config.path().join("intake.yaml");
        let mut env = vec![
            ("WINSTON_DATABASE_URL".to_string(), self.db_url.clone()),
            ("WINSTON_STRIPE_WEBHOOK_SECRET".to_string(), SECRET.to_string()),
            ("WINSTON_STRIPE_API_KEY".to_string(), DEFAULT_TOKEN.to_string()),
            ("WINSTON_STRIPE_API_BASE".to_string(), self.stripe()),
        ];
        if previous {
            env.push(("WINSTON_STRIPE_WEBHOOK_SECRET_PREVIOUS".to_string(), PREVIOUS_SECRET.to_string()));
        }
        let args = [
            "intake",
            "--listen",
            &listen,
            "--admin-listen",
            &admin_listen,
            "--namespace",
            &self.ns.name,
            "--config",
            config.to_str().unwrap(),
            "--grace-sweep-secs",
            "1",
        ];
        self.intake = Some(Winston::spawn_with_env(&args, &env, &format!("intake-{}", self.ns.name)));
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let http = self.http.clone();
        eventually("intake ready", Duration::from_secs(60), || async {
            http.get(&url).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
        })
        .await;
    }

    /// SIGKILLs intake.
    pub fn kill_intake(&mut self) {
        if let Some(w) = self.intake.take() {
            w.kill();
        }
    }

    pub fn intake_log(&self) -> String {
        self.intake.as_ref().map(Winston::logs).unwrap_or_default()
    }

    /// A Stripe API call to the emulator (form-encoded like Stripe's).
    pub async fn api(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        let r = self
            .http
            .request(method, format!("{}{path}", self.stripe()))
            .bearer_auth(DEFAULT_TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// An emulator control call.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}/_emulator{path}", self.stripe())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// Creates a monthly price with `lookup_key`; returns its id.
    pub async fn price(&self, lookup_key: &str) -> String {
        let p = self
            .api(
                reqwest::Method::POST,
                "/v1/prices",
                &[
                    ("currency", "usd"),
                    ("unit_amount", "4900"),
                    ("recurring[interval]", "month"),
                    ("lookup_key", lookup_key),
                ],
            )
            .await;
        p["id"].as_str().unwrap().to_string()
    }

    /// A customer pays a subscription checkout for `price`; returns the
    /// completed session (its `customer` and `subscription`).
    pub async fn checkout(&self, price: &str, email: &str, name: &str) -> Value {
        self.checkout_as(price, email, name, None).await
    }

    /// As [`Env::checkout`], by the existing `customer` when given.
    pub async fn checkout_as(&self, price: &str, email: &str, name: &str, customer: Option<&str>) -> Value {
        self.checkout_with(price, email, name, customer, "https://acme-dental.example").await
    }

    /// As [`Env::checkout_as`], with the website the customer typed.
    pub async fn checkout_with(
        &self,
        price: &str,
        email: &str,
        name: &str,
        customer: Option<&str>,
        website: &str,
    ) -> Value {
        let mut form = vec![("mode", "subscription")];
        if let Some(c) = customer {
            form.push(("customer", c));
        }
        form.extend([
            ("line_items[0][price]", price),
            ("line_items[0][quantity]", "1"),
            ("success_url", "https://example.com/thanks"),
            ("metadata[industry]", "Dental clinic"),
            ("custom_fields[0][key]", "website"),
            ("custom_fields[0][type]", "text"),
            ("custom_fields[0][label][custom]", "Your website"),
        ]);
        let session = self.api(reqwest::Method::POST, "/v1/checkout/sessions", &form).await;
        let id = session["id"].as_str().unwrap();
        self.control(
            &format!("/checkout/sessions/{id}/complete"),
            json!({"email": email, "name": name, "custom_fields": {"website": website}}),
        )
        .await
    }

    /// Every event the emulator created, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let v: Value =
            self.http.get(format!("{}/_emulator/events", self.stripe())).send().await.unwrap().json().await.unwrap();
        v["data"].as_array().unwrap().clone()
    }

    /// The id of the newest event of `kind`.
    pub async fn last_event(&self, kind: &str) -> Value {
        self.events().await.into_iter().rev().find(|e| e["type"] == kind).unwrap()
    }

    /// Every delivery attempt of `event_id`: the HTTP status of each (None: no answer).
    pub async fn attempts(&self, event_id: &str) -> Vec<Option<u16>> {
        let v: Value = self
            .http
            .get(format!("{}/_emulator/deliveries", self.stripe()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["event"] == event_id)
            .map(|a| a["status"].as_u64().map(|s| s as u16))
            .collect()
    }

    /// Waits until `event_id` was answered 2xx `n` times in all.
    pub async fn acknowledged(&self, event_id: &str, n: usize) {
        eventually(&format!("{n} acknowledged deliveries of {event_id}"), Duration::from_secs(60), || async {
            let ok =
                self.attempts(event_id).await.iter().filter(|s| s.is_some_and(|s| (200..300).contains(&s))).count();
            (ok >= n).then_some(())
        })
        .await;
    }

    /// Tenants in the namespace, as the API server holds them.
    pub async fn tenants(&self) -> Vec<Tenant> {
        let api: Api<Tenant> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        api.list(&ListParams::default()).await.unwrap().items
    }

    pub async fn tenant(&self, name: &str) -> Option<Tenant> {
        let api: Api<Tenant> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        api.get_opt(name).await.unwrap()
    }

    /// intake's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        self.http.get(url).send().await.unwrap().text().await.unwrap()
    }

    /// The value of the metric line starting with `prefix` (0 when absent).
    pub async fn metric(&self, prefix: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// A raw POST to intake's webhook with an optional signature header.
    pub async fn post_raw(&self, body: &[u8], signature: Option<String>) -> (u16, Value) {
        let mut req = self.http.post(self.intake_url()).header("content-type", "application/json").body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("Stripe-Signature", s);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A direct SQL connection to this test's database.
    pub async fn sql(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&self.db_url).await.unwrap()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The Tenant name intake gives `customer` (its documented derivation).
pub fn tenant_of(session: &Value) -> String {
    winston::intake::event::tenant_name(session["customer"].as_str().unwrap())
}
