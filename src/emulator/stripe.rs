//! The Stripe emulator, under `/stripe`: prices, checkout sessions,
//! customers, subscriptions, invoices and events in Stripe's wire format
//! (objects with `id`, `object`, `created`, `livemode`; form-encoded
//! requests with `a[0][b]` keys; errors as `{"error": {"type", "message"}}`),
//! and webhook endpoints that receive signed events (see [`stripe_delivery`]).
//!
//! API (bearer key = one of the emulator's tokens):
//! `POST /v1/prices`, `GET /v1/prices/{id}`, `POST /v1/checkout/sessions`
//! (`mode`, `line_items[0][price]`, optional `customer`, `metadata[..]`, `custom_fields[n][..]`),
//! `GET /v1/checkout/sessions/{id}`, `GET /v1/customers/{id}`,
//! `GET|POST|DELETE /v1/subscriptions/{id}` (POST `items[0][price]` changes
//! the price, DELETE cancels), `GET /v1/events/{id}`,
//! `POST /v1/webhook_endpoints` (`url`; answers the signing `secret`).
//!
//! What a customer or Stripe's clock would do, without auth:
//! `POST /_emulator/checkout/sessions/{id}/complete` (JSON `{email, name,
//! custom_fields: {key: value}}`: the customer pays),
//! `POST /_emulator/subscriptions/{id}/fail_invoice` (a renewal fails),
//! `POST /_emulator/delivery` (`{"hold": true}` queues events instead of
//! sending them; `false` sends the queue), `POST /_emulator/events/{id}/deliver`
//! (send one event now, again if it was sent before: a duplicate delivery),
//! `GET /_emulator/deliveries` (every attempt and its answer),
//! `GET /_emulator/events` (every event in creation order).
//!
//! Event `created` times strictly increase (one second apart at least), so
//! "newer" is never ambiguous in tests. State is in memory only.
//!
//! [`stripe_delivery`]: super::stripe_delivery
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::context::random_string;
use super::stripe_delivery::{self, Attempt, AttemptLog, DeliveryConfig};

/// Base path of the Stripe API on the emulator (`{base}/v1/...`).
pub const STRIPE_PATH: &str = "/stripe";
/// The API version stamped on events.
pub const API_VERSION: &str = "2025-03-31.basil";

/// How the Stripe emulator behaves.
#[derive(Clone, Debug, Default)]
pub struct StripeConfig {
    /// A webhook endpoint registered at start: its URL and signing secret.
    pub webhook: Option<(String, String)>,
    /// Retry behaviour of deliveries.
    pub delivery: DeliveryConfig,
}

#[derive(Clone, Debug)]
struct Endpoint {
    url: String,
    secret: String,
}

#[derive(Default)]
struct World {
    prices: BTreeMap<String, Value>,
    customers: BTreeMap<String, Value>,
    sessions: BTreeMap<String, Value>,
    subscriptions: BTreeMap<String, Value>,
    invoices: BTreeMap<String, Value>,
    events: Vec<Value>,
    endpoints: Vec<Endpoint>,
    attempts: Vec<Attempt>,
    hold: bool,
    queued: VecDeque<String>,
    last_created: i64,
}

impl World {
    /// A creation time: now, but always after the previous one.
    fn created(&mut self) -> i64 {
        self.last_created = chrono::Utc::now().timestamp().max(self.last_created + 1);
        self.last_created
    }

    fn event(&mut self, kind: &str, object: Value, previous: Option<Value>) -> String {
        let id = new_id("evt");
        let mut data = json!({"object": object});
        if let Some(p) = previous {
            data["previous_attributes"] = p;
        }
        let created = self.created();
        self.events.push(json!({
            "id": id, "object": "event", "api_version": API_VERSION, "created": created, "data": data,
            "livemode": false, "pending_webhooks": self.endpoints.len(),
            "request": {"id": null, "idempotency_key": null}, "type": kind,
        }));
        id
    }
}

/// The Stripe emulator's state.
pub struct StripeEmulator {
    world: Mutex<World>,
    tokens: Vec<String>,
    delivery: DeliveryConfig,
    http: reqwest::Client,
}

struct Log(Arc<StripeEmulator>);

impl AttemptLog for Log {
    fn record(&self, attempt: Attempt) {
        self.0.lock().attempts.push(attempt);
    }
}

type Shared = Arc<StripeEmulator>;

impl StripeEmulator {
    /// A fresh emulator accepting `tokens` as API keys.
    #[must_use]
    pub fn new(config: &StripeConfig, tokens: Vec<String>) -> Shared {
        let mut world = World::default();
        if let Some((url, secret)) = &config.webhook {
            world.endpoints.push(Endpoint { url: url.clone(), secret: secret.clone() });
        }
        Arc::new(Self {
            world: Mutex::new(world),
            tokens,
            delivery: config.delivery.clone(),
            http: reqwest::Client::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The emulator's Stripe routes (nest them under [`STRIPE_PATH`]).
pub fn router<S>(stripe: Shared) -> Router<S> {
    Router::new()
        .route("/v1/prices", post(create_price))
        .route(
            "/v1/prices/{id}",
            get(|s: State<Shared>, h: HeaderMap, p: Path<String>| get_object(s, h, p, Kind::Price)),
        )
        .route("/v1/checkout/sessions", post(create_session))
        .route(
            "/v1/checkout/sessions/{id}",
            get(|s: State<Shared>, h: HeaderMap, p: Path<String>| get_object(s, h, p, Kind::Session)),
        )
        .route(
            "/v1/customers/{id}",
            get(|s: State<Shared>, h: HeaderMap, p: Path<String>| get_object(s, h, p, Kind::Customer)),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(|s: State<Shared>, h: HeaderMap, p: Path<String>| get_object(s, h, p, Kind::Subscription))
                .post(update_subscription)
                .delete(cancel_subscription),
        )
        .route(
            "/v1/events/{id}",
            get(|s: State<Shared>, h: HeaderMap, p: Path<String>| get_object(s, h, p, Kind::Event)),
        )
        .route("/v1/webhook_endpoints", post(create_endpoint))
        .route("/_emulator/checkout/sessions/{id}/complete", post(complete_session))
        .route("/_emulator/subscriptions/{id}/fail_invoice", post(fail_invoice))
        .route("/_emulator/delivery", post(set_hold))
        .route("/_emulator/events/{id}/deliver", post(deliver_one))
        .route("/_emulator/deliveries", get(list_attempts))
        .route("/_emulator/events", get(list_events))
        .with_state(stripe)
}

fn new_id(prefix: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    format!("{prefix}_{}", random_string(24, BASE62))
}

fn stripe_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"type": kind, "message": message}}))).into_response()
}

fn missing(what: &str, id: &str) -> Response {
    stripe_error(StatusCode::NOT_FOUND, "invalid_request_error", &format!("No such {what}: '{id}'"))
}

/// The 401 Stripe answers without a valid bearer key; `None` when authorized.
fn refusal(stripe: &StripeEmulator, headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match key {
        Some(k) if stripe.tokens.iter().any(|t| t == k) => None,
        Some(_) => Some(stripe_error(StatusCode::UNAUTHORIZED, "invalid_request_error", "Invalid API Key provided.")),
        None => Some(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "You did not provide an API key. Provide it in the Authorization header (Bearer auth).",
        )),
    }
}

/// Form fields with one key each (the last wins), as Stripe reads `a[0][b]=v`.
fn fields(form: Vec<(String, String)>) -> BTreeMap<String, String> {
    form.into_iter().collect()
}

/// `prefix[key]=value` pairs as a JSON object (`metadata[plan]=x`).
fn map_of(f: &BTreeMap<String, String>, prefix: &str) -> Value {
    let open = format!("{prefix}[");
    let pairs = f.iter().filter_map(|(k, v)| {
        let inner = k.strip_prefix(&open)?.strip_suffix(']')?;
        (!inner.contains('[')).then(|| (inner.to_string(), Value::String(v.clone())))
    });
    Value::Object(pairs.collect())
}

#[derive(Clone, Copy)]
enum Kind {
    Price,
    Session,
    Customer,
    Subscription,
    Event,
}

async fn get_object(State(stripe): State<Shared>, headers: HeaderMap, Path(id): Path<String>, kind: Kind) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let w = stripe.lock();
    let (found, what) = match kind {
        Kind::Price => (w.prices.get(&id).cloned(), "price"),
        Kind::Session => (w.sessions.get(&id).cloned(), "checkout.session"),
        Kind::Customer => (w.customers.get(&id).cloned(), "customer"),
        Kind::Subscription => (w.subscriptions.get(&id).cloned(), "subscription"),
        Kind::Event => (w.events.iter().find(|e| e["id"] == id.as_str()).cloned(), "event"),
    };
    found.map_or_else(|| missing(what, &id), |o| Json(o).into_response())
}

async fn create_price(
    State(stripe): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let f = fields(form);
    let Some(currency) = f.get("currency") else {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "Missing required param: currency.");
    };
    let Some(amount) = f.get("unit_amount").and_then(|a| a.parse::<i64>().ok()) else {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "Missing required param: unit_amount.");
    };
    let mut w = stripe.lock();
    if let Some(key) = f.get("lookup_key")
        && w.prices.values().any(|p| p["lookup_key"] == key.as_str())
    {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("A price (`{key}`) already uses that lookup key."),
        );
    }
    let id = new_id("price");
    let interval = f.get("recurring[interval]").cloned();
    let price = json!({
        "id": id, "object": "price", "active": true, "created": w.created(), "currency": currency,
        "livemode": false, "lookup_key": f.get("lookup_key"), "metadata": map_of(&f, "metadata"),
        "nickname": f.get("nickname"), "product": f.get("product").cloned().unwrap_or_else(|| new_id("prod")),
        "recurring": interval.map(|i| json!({"interval": i, "interval_count": 1, "usage_type": "licensed"})),
        "type": if f.contains_key("recurring[interval]") { "recurring" } else { "one_time" },
        "unit_amount": amount,
    });
    w.prices.insert(id, price.clone());
    Json(price).into_response()
}

async fn create_session(
    State(stripe): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let f = fields(form);
    let mode = f.get("mode").cloned().unwrap_or_default();
    if mode != "subscription" && mode != "payment" {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "Missing required param: mode.");
    }
    let mut w = stripe.lock();
    let Some(price) = f.get("line_items[0][price]").and_then(|p| w.prices.get(p)).cloned() else {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "line_items[0][price] names no price.");
    };
    // An existing customer buying again (`customer=cus_...`).
    let customer = f.get("customer").cloned();
    if let Some(c) = &customer
        && !w.customers.contains_key(c)
    {
        return missing("customer", c);
    }
    let custom_fields: Vec<Value> = (0..3)
        .filter_map(|i| {
            let key = f.get(&format!("custom_fields[{i}][key]"))?;
            let kind = f.get(&format!("custom_fields[{i}][type]")).cloned().unwrap_or_else(|| "text".into());
            let label = f.get(&format!("custom_fields[{i}][label][custom]")).cloned().unwrap_or_else(|| key.clone());
            Some(json!({"key": key, "type": kind, "label": {"type": "custom", "custom": label}, "optional": true,
                        "text": if kind == "text" { json!({"value": null}) } else { Value::Null }}))
        })
        .collect();
    let id = format!("cs_test_{}", &new_id("x")[2..]);
    let created = w.created();
    let session = json!({
        "id": id, "object": "checkout.session", "mode": mode, "status": "open", "payment_status": "unpaid",
        "created": created, "expires_at": created + 24 * 3600, "livemode": false,
        "currency": price["currency"], "amount_total": price["unit_amount"],
        "customer": customer, "customer_email": f.get("customer_email"), "customer_details": null,
        "subscription": null, "metadata": map_of(&f, "metadata"), "custom_fields": custom_fields,
        "success_url": f.get("success_url"), "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "line_items_price": price["id"],
    });
    w.sessions.insert(id, session.clone());
    Json(without_private(session)).into_response()
}

/// The emulator's own bookkeeping keys start with `line_items_`; Stripe
/// leaves line items out of sessions unless expanded.
fn without_private(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.starts_with("line_items_"));
    }
    v
}

fn subscription_item(sub: &str, price: &Value, created: i64) -> Value {
    json!({"object": "list", "has_more": false, "url": format!("/v1/subscription_items?subscription={sub}"),
           "data": [{"id": new_id("si"), "object": "subscription_item", "created": created, "quantity": 1,
                     "subscription": sub, "price": price, "current_period_start": created,
                     "current_period_end": created + 30 * 24 * 3600}]})
}

#[derive(Debug, Default, Deserialize)]
struct Completion {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

async fn complete_session(State(stripe): State<Shared>, Path(id): Path<String>, Json(c): Json<Completion>) -> Response {
    let ids = {
        let mut w = stripe.lock();
        let Some(mut session) = w.sessions.get(&id).cloned() else { return missing("checkout.session", &id) };
        if session["status"] != "open" {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "This Checkout Session is no longer open.",
            );
        }
        let price = w.prices.get(session["line_items_price"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
        let created = w.created();
        let mut events = Vec::new();
        let customer_id = match session["customer"].as_str() {
            Some(existing) => existing.to_string(),
            None => {
                let id = new_id("cus");
                let customer = json!({"id": id, "object": "customer", "created": created, "email": c.email,
                    "name": c.name, "livemode": false, "metadata": {}});
                w.customers.insert(id.clone(), customer.clone());
                events.push(w.event("customer.created", customer, None));
                id
            }
        };
        if session["mode"] == "subscription" {
            let sub_id = new_id("sub");
            let sub = json!({"id": sub_id, "object": "subscription", "customer": customer_id, "status": "active",
                "created": created, "start_date": created, "cancel_at_period_end": false, "canceled_at": null,
                "ended_at": null, "livemode": false, "metadata": session["metadata"], "currency": price["currency"],
                "items": subscription_item(&sub_id, &price, created)});
            w.subscriptions.insert(sub_id.clone(), sub.clone());
            session["subscription"] = json!(sub_id);
            events.push(w.event("customer.subscription.created", sub, None));
        }
        if let Some(fields) = session["custom_fields"].as_array_mut() {
            for field in fields {
                let value = field["key"].as_str().and_then(|k| c.custom_fields.get(k)).cloned();
                field["text"] = json!({"value": value});
            }
        }
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        session["customer"] = json!(customer_id);
        session["customer_details"] = json!({"email": c.email, "name": c.name, "address": null, "phone": null,
            "tax_exempt": "none", "tax_ids": []});
        w.sessions.insert(id.clone(), session.clone());
        events.push(w.event("checkout.session.completed", without_private(session.clone()), None));
        (events, without_private(session))
    };
    send(&stripe, ids.0);
    Json(ids.1).into_response()
}

async fn update_subscription(
    State(stripe): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let f = fields(form);
    let (event, sub) = {
        let mut w = stripe.lock();
        let Some(mut sub) = w.subscriptions.get(&id).cloned() else { return missing("subscription", &id) };
        if sub["status"] == "canceled" {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "A canceled subscription can only update its metadata.",
            );
        }
        let Some(price) = f.get("items[0][price]").and_then(|p| w.prices.get(p)).cloned() else {
            return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "items[0][price] names no price.");
        };
        let previous = json!({"items": sub["items"].clone()});
        let created = w.created();
        sub["items"] = subscription_item(&id, &price, created);
        if sub["status"] == "past_due" {
            // Changing the price settles the open invoice in the emulator.
            sub["status"] = json!("active");
        }
        w.subscriptions.insert(id.clone(), sub.clone());
        (w.event("customer.subscription.updated", sub.clone(), Some(previous)), sub)
    };
    send(&stripe, vec![event]);
    Json(sub).into_response()
}

async fn cancel_subscription(State(stripe): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let (event, sub) = {
        let mut w = stripe.lock();
        let Some(mut sub) = w.subscriptions.get(&id).cloned() else { return missing("subscription", &id) };
        if sub["status"] == "canceled" {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "This subscription is already canceled.",
            );
        }
        let now = w.created();
        sub["status"] = json!("canceled");
        sub["canceled_at"] = json!(now);
        sub["ended_at"] = json!(now);
        w.subscriptions.insert(id.clone(), sub.clone());
        (w.event("customer.subscription.deleted", sub.clone(), None), sub)
    };
    send(&stripe, vec![event]);
    Json(sub).into_response()
}

async fn fail_invoice(State(stripe): State<Shared>, Path(id): Path<String>) -> Response {
    let (events, invoice) = {
        let mut w = stripe.lock();
        let Some(mut sub) = w.subscriptions.get(&id).cloned() else { return missing("subscription", &id) };
        let created = w.created();
        let invoice_id = new_id("in");
        let amount = sub.pointer("/items/data/0/price/unit_amount").cloned().unwrap_or(json!(0));
        let invoice = json!({"id": invoice_id, "object": "invoice", "customer": sub["customer"], "subscription": id,
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": id, "metadata": {}}},
            "status": "open", "attempted": true, "attempt_count": 1, "amount_due": amount, "amount_paid": 0,
            "currency": sub["currency"], "billing_reason": "subscription_cycle", "created": created, "livemode": false});
        w.invoices.insert(invoice_id, invoice.clone());
        let previous = json!({"status": sub["status"].clone()});
        sub["status"] = json!("past_due");
        w.subscriptions.insert(id.clone(), sub.clone());
        let failed = w.event("invoice.payment_failed", invoice.clone(), None);
        let updated = w.event("customer.subscription.updated", sub, Some(previous));
        (vec![failed, updated], invoice)
    };
    send(&stripe, events);
    Json(invoice).into_response()
}

async fn create_endpoint(
    State(stripe): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refusal(&stripe, &headers) {
        return r;
    }
    let f = fields(form);
    let Some(url) = f.get("url").filter(|u| u.starts_with("http://") || u.starts_with("https://")) else {
        return stripe_error(StatusCode::BAD_REQUEST, "invalid_request_error", "Missing required param: url.");
    };
    let secret = format!("whsec_{}", &new_id("x")[2..]);
    let mut w = stripe.lock();
    w.endpoints.push(Endpoint { url: url.clone(), secret: secret.clone() });
    let created = w.created();
    Json(json!({"id": new_id("we"), "object": "webhook_endpoint", "url": url, "secret": secret, "status": "enabled",
        "enabled_events": ["*"], "api_version": API_VERSION, "created": created, "livemode": false}))
    .into_response()
}

/// Sends `events` to every endpoint now, or queues them while deliveries are held.
fn send(stripe: &Shared, events: Vec<String>) {
    let mut w = stripe.lock();
    if w.hold {
        w.queued.extend(events);
        return;
    }
    drop(w);
    for id in events {
        spawn_delivery(stripe, &id);
    }
}

fn spawn_delivery(stripe: &Shared, event_id: &str) {
    let (endpoints, event) = {
        let w = stripe.lock();
        (w.endpoints.clone(), w.events.iter().find(|e| e["id"] == event_id).cloned())
    };
    let Some(event) = event else { return };
    let kind = event["type"].as_str().unwrap_or_default().to_string();
    let body = Arc::new(serde_json::to_vec(&event).unwrap_or_default());
    for endpoint in endpoints {
        let log: Arc<dyn AttemptLog> = Arc::new(Log(stripe.clone()));
        tokio::spawn(stripe_delivery::deliver(
            stripe.http.clone(),
            stripe.delivery.clone(),
            log,
            (endpoint.url, endpoint.secret),
            (event_id.to_string(), kind.clone()),
            body.clone(),
        ));
    }
}

#[derive(Deserialize)]
struct Hold {
    hold: bool,
}

async fn set_hold(State(stripe): State<Shared>, Json(h): Json<Hold>) -> Json<Value> {
    let queued: Vec<String> = {
        let mut w = stripe.lock();
        w.hold = h.hold;
        if h.hold { Vec::new() } else { w.queued.drain(..).collect() }
    };
    for id in &queued {
        spawn_delivery(&stripe, id);
    }
    Json(json!({"hold": h.hold, "sent": queued}))
}

async fn deliver_one(State(stripe): State<Shared>, Path(id): Path<String>) -> Response {
    let known = {
        let mut w = stripe.lock();
        w.queued.retain(|q| q != &id);
        w.events.iter().any(|e| e["id"] == id.as_str())
    };
    if !known {
        return missing("event", &id);
    }
    spawn_delivery(&stripe, &id);
    Json(json!({"sent": [id]})).into_response()
}

async fn list_attempts(State(stripe): State<Shared>) -> Json<Value> {
    Json(json!({"data": stripe.lock().attempts.clone()}))
}

async fn list_events(State(stripe): State<Shared>) -> Json<Value> {
    let w = stripe.lock();
    Json(json!({"data": w.events.clone(), "queued": w.queued.iter().collect::<Vec<_>>()}))
}
