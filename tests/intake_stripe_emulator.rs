//! The emulator's Stripe as a webhook sender, seen from a bare endpoint:
//! Stripe's wire format (an `event` object whose `data.object` is a
//! `checkout.session` with the customer's details), a `Stripe-Signature`
//! that an independent HMAC verifies, retries on non-2xx answers with
//! growing gaps until a 2xx, and the API's objects and errors.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use winston::emulator::stripe::StripeConfig;
use winston::emulator::stripe_delivery::DeliveryConfig;
use winston::emulator::{DEFAULT_TOKEN, EmulatorConfig};

const SECRET: &str = "whsec_emulator_test";

type Seen = Arc<Mutex<Vec<(Instant, String, Value)>>>;

/// An endpoint that answers 500 to the first `failures` deliveries of each event.
async fn endpoint(failures: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let into = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let into = into.clone();
            async move {
                let sig = headers.get("stripe-signature").unwrap().to_str().unwrap().to_string();
                let event: Value = serde_json::from_slice(&body).unwrap();
                assert!(verifies(&sig, &body), "signature {sig} does not verify");
                let mut seen = into.lock().unwrap();
                let before = seen.iter().filter(|(_, _, e)| e["id"] == event["id"]).count();
                seen.push((Instant::now(), sig, event));
                if before < failures { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Stripe's scheme, computed here independently of the emulator.
fn verifies(header: &str, body: &[u8]) -> bool {
    let t = header.split(',').find_map(|p| p.strip_prefix("t=")).unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let want = hex::encode(mac.finalize().into_bytes());
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    header.split(',').filter_map(|p| p.strip_prefix("v1=")).any(|v| v == want) && (0..=5).contains(&age)
}

async fn form(http: &reqwest::Client, url: String, fields: &[(&str, &str)]) -> (u16, Value) {
    let body: Vec<String> =
        fields.iter().map(|(k, v)| format!("{}={}", k.replace('[', "%5B").replace(']', "%5D"), v)).collect();
    let r = http
        .post(url)
        .bearer_auth(DEFAULT_TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn events_are_signed_in_stripe_format_and_retried_with_backoff_until_2xx() {
    winston::telemetry::install_crypto_provider();
    let (url, seen) = endpoint(3).await;
    let emu = winston::emulator::spawn(EmulatorConfig {
        stripe: StripeConfig {
            webhook: Some((url, SECRET.into())),
            delivery: DeliveryConfig { retry_base: Duration::from_millis(100), max_attempts: 6 },
        },
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let stripe = format!("{}/stripe", emu.base());
    let http = reqwest::Client::new();

    let (status, price) = form(
        &http,
        format!("{stripe}/v1/prices"),
        &[("currency", "usd"), ("unit_amount", "900"), ("lookup_key", "basic")],
    )
    .await;
    assert_eq!((status, price["object"].as_str()), (200, Some("price")), "{price}");
    let price_id = price["id"].as_str().unwrap();
    assert!(price_id.starts_with("price_"));
    let (status, dup) = form(
        &http,
        format!("{stripe}/v1/prices"),
        &[("currency", "usd"), ("unit_amount", "900"), ("lookup_key", "basic")],
    )
    .await;
    assert_eq!((status, dup["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{dup}");
    let (status, session) = form(
        &http,
        format!("{stripe}/v1/checkout/sessions"),
        &[("mode", "subscription"), ("line_items[0][price]", price_id)],
    )
    .await;
    assert_eq!((status, session["status"].as_str()), (200, Some("open")), "{session}");
    let unauthorized = http.get(format!("{stripe}/v1/prices/{price_id}")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    let id = session["id"].as_str().unwrap();
    let done: Value = http
        .post(format!("{stripe}/_emulator/checkout/sessions/{id}/complete"))
        .json(&json!({"email": "a@example.com", "name": "A"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub_id = done["subscription"].as_str().unwrap();
    let sub: Value = http
        .get(format!("{stripe}/v1/subscriptions/{sub_id}"))
        .bearer_auth(DEFAULT_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (sub["status"].as_str(), sub["items"]["data"][0]["price"]["id"].as_str()),
        (Some("active"), Some(price_id))
    );

    // Three events (customer, subscription, checkout), each answered 500
    // three times, then 200: four deliveries each, no fifth.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 12 {
        assert!(Instant::now() < deadline, "only {} deliveries", seen.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 12, "a 2xx must end the retries");
    let checkout: Vec<_> = seen.iter().filter(|(_, _, e)| e["type"] == "checkout.session.completed").collect();
    assert_eq!(checkout.len(), 4);
    let event = &checkout[0].2;
    assert_eq!(
        (event["object"].as_str(), event["data"]["object"]["object"].as_str()),
        (Some("event"), Some("checkout.session"))
    );
    assert_eq!(event["data"]["object"]["customer_details"]["email"], "a@example.com");
    assert_eq!(event["data"]["object"]["subscription"], sub_id);
    assert!(event["created"].is_i64() && event["data"]["object"].get("line_items_price").is_none());
    // Backoff: each gap at least the base doubled per attempt.
    let gaps: Vec<Duration> = checkout.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (n, gap) in gaps.iter().enumerate() {
        assert!(*gap >= Duration::from_millis(100 << n), "gap {n} was {gap:?}");
    }
    // Every attempt carries the same event, signed anew.
    assert!(checkout.iter().all(|(_, _, e)| e == event));

    let attempts: Value =
        http.get(format!("{stripe}/_emulator/deliveries")).send().await.unwrap().json().await.unwrap();
    let statuses: Vec<u64> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["event"] == event["id"])
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![500, 500, 500, 200]);
}
