//! The one Stripe API call intake makes: `GET /v1/subscriptions/{id}`.
//! A `checkout.session.completed` event does not carry the prices bought
//! (Stripe leaves `line_items` out of webhook payloads), so intake reads the
//! subscription the checkout created; it is also the newest state of that
//! subscription, whatever order the events arrive in.
use std::time::Duration;

use super::event::Subscription;

/// A Stripe secret or restricted API key (`sk_...`/`rk_...`; the chart asks
/// for a restricted key that can only read subscriptions). Debug never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    #[must_use]
    pub fn new(key: &str) -> Self {
        Self(key.trim().to_string())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Errors reading from Stripe: all transient from intake's point of view
/// (the event is answered 500 and Stripe delivers it again).
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("failed to reach the Stripe API: {0}")]
    Http(String),
    #[error("the Stripe API answered {status} for subscription {subscription}")]
    Status { status: u16, subscription: String },
    #[error("the Stripe API returned a subscription intake cannot read: {0}")]
    Shape(String),
}

/// A client of the Stripe API.
#[derive(Clone, Debug)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
}

impl StripeApi {
    /// A client of `base` (`https://api.stripe.com`, or the emulator's `/stripe`).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(base: &str, key: ApiKey) -> Result<Self, StripeApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| StripeApiError::Http(e.to_string()))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), key })
    }

    /// The subscription `id` as Stripe holds it now.
    ///
    /// # Errors
    /// [`StripeApiError`] on a network failure, a non-2xx answer or an unreadable body.
    pub async fn subscription(&self, id: &str) -> Result<Subscription, StripeApiError> {
        let url = format!("{}/v1/subscriptions/{}", self.base, urlencode(id));
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.key.0)
            .send()
            .await
            .map_err(|e| StripeApiError::Http(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(StripeApiError::Status { status: status.as_u16(), subscription: id.to_string() });
        }
        let body = response.bytes().await.map_err(|e| StripeApiError::Http(e.without_url().to_string()))?;
        serde_json::from_slice(&body).map_err(|e| StripeApiError::Shape(e.to_string()))
    }
}

/// Stripe ids are `[A-Za-z0-9_]`; anything else is percent-encoded so an id
/// from a payload can never change the path.
fn urlencode(id: &str) -> String {
    id.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(super::urlencode("sub_1AbC"), "sub_1AbC");
        assert_eq!(super::urlencode("../../v1/customers"), "%2E%2E%2F%2E%2E%2Fv1%2Fcustomers");
        assert!(!format!("{:?}", super::ApiKey::new("sk_live_x")).contains("sk_live"));
    }
}
