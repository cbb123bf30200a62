//! Webhook delivery of the Stripe emulator: each event is POSTed to every
//! registered endpoint with a `Stripe-Signature` header computed with that
//! endpoint's secret (`t=<unix>,v1=<HMAC-SHA256(secret, "{t}.{body}")>`),
//! and delivered again on a non-2xx answer or a network error with
//! exponential backoff, as Stripe does (Stripe: for up to three days; here
//! `retry_base * 2^(n-1)` for at most `max_attempts`, scaled for tests).
//!
//! The signature is computed here, not with intake's code: the emulator
//! shares no types with the client it stands in front of.
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

/// How events are delivered.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Wait before the second attempt; doubled before each further one.
    pub retry_base: Duration,
    /// Attempts per event and endpoint, the first included.
    pub max_attempts: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self { retry_base: Duration::from_secs(1), max_attempts: 8 }
    }
}

/// One attempt to deliver one event to one endpoint.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub event: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoint: String,
    pub attempt: u32,
    /// The HTTP status answered; `None` when the request failed.
    pub status: Option<u16>,
    pub at_ms: i64,
}

/// Where attempts are recorded.
pub trait AttemptLog: Send + Sync + 'static {
    fn record(&self, attempt: Attempt);
}

/// `t=<timestamp>,v1=<signature>` for `body` under `secret`.
#[must_use]
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers `body` (event `event` of type `kind`) to `url` signed with
/// `secret`, retrying as configured; every attempt goes to `log`. Runs
/// until a 2xx answer or the last attempt.
pub async fn deliver(
    http: reqwest::Client,
    config: DeliveryConfig,
    log: Arc<dyn AttemptLog>,
    target: (String, String),
    event: (String, String),
    body: Arc<Vec<u8>>,
) {
    let (url, secret) = target;
    let (event, kind) = event;
    for attempt in 1..=config.max_attempts.max(1) {
        // Each attempt is signed anew, so a retry hours later is not stale.
        let now = chrono::Utc::now();
        let header = signature_header(&secret, now.timestamp(), &body);
        let sent = http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header("stripe-signature", header)
            .body(body.as_ref().clone())
            .send()
            .await;
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        log.record(Attempt {
            event: event.clone(),
            kind: kind.clone(),
            endpoint: url.clone(),
            attempt,
            status,
            at_ms: now.timestamp_millis(),
        });
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
        if attempt < config.max_attempts {
            let factor = 2u32.saturating_pow(attempt - 1);
            tokio::time::sleep(config.retry_base.saturating_mul(factor)).await;
        }
    }
    tracing::warn!(event = %event, endpoint = %url, "stripe emulator gave up delivering an event");
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test",b"1800000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            super::signature_header("whsec_test", 1_800_000_000, b"{}"),
            "t=1800000000,v1=482e6337ac5272392d375c6fdc4d52a7e615dc2facedab0ffe155ddfd6a56e66"
        );
    }
}
