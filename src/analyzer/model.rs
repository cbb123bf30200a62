//! One chat completion through Winston's proxy (OpenAI-compatible
//! `POST {proxy}/v1/chat/completions`, bearer key of the `system` account),
//! so the analyzer's model calls are metered on Winston's own ledger like any
//! tenant's.
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::error::{AnalyzeError, short};

/// The proxy's header with the account's balance after the call.
const CREDITS_REMAINING: &str = "x-winston-credits-remaining";

/// A proxy key: kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What one call returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The first choice's text ("" when the response carried none).
    pub content: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The proxy's `x-winston-credits-remaining`, when it sent one.
    pub credits_remaining: Option<i64>,
}

/// Calls one model through the proxy.
#[derive(Clone, Debug)]
pub struct ModelClient {
    http: reqwest::Client,
    endpoint: String,
    key: ApiKey,
    model: String,
    max_tokens: u32,
}

impl ModelClient {
    /// A client for `{proxy_url}/v1/chat/completions`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        proxy_url: &str,
        key: ApiKey,
        model: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<Self, AnalyzeError> {
        crate::telemetry::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("winston-analyzer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AnalyzeError::Model(format!("failed to build the HTTP client: {e}")))?;
        let endpoint = format!("{}/v1/chat/completions", proxy_url.trim_end_matches('/'));
        Ok(Self { http, endpoint, key, model: model.to_string(), max_tokens })
    }

    /// The model asked.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends `messages` (OpenAI chat messages) and returns the answer.
    ///
    /// # Errors
    /// [`AnalyzeError::CreditsExhausted`] on 402, [`AnalyzeError::Model`] on
    /// any other failure of the proxy or the model.
    pub async fn ask(&self, messages: &[Value]) -> Result<Answer, AnalyzeError> {
        let body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        });
        let resp = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| AnalyzeError::Model(network(&e)))?;
        let status = resp.status();
        let remaining = resp
            .headers()
            .get(CREDITS_REMAINING)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
        let text = resp.text().await.map_err(|e| AnalyzeError::Model(network(&e)))?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            let message = format!("HTTP {}: {}", status.as_u16(), short(&message, 300));
            return Err(if status == StatusCode::PAYMENT_REQUIRED {
                AnalyzeError::CreditsExhausted(message)
            } else {
                AnalyzeError::Model(message)
            });
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| AnalyzeError::Model("the proxy answered 200 with a body that is not JSON".into()))?;
        let tokens = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        Ok(Answer {
            content: v.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default().to_string(),
            input_tokens: tokens("/usage/prompt_tokens"),
            output_tokens: tokens("/usage/completion_tokens"),
            credits_remaining: remaining,
        })
    }
}

/// A call failure without the URL (which names the proxy's address).
fn network(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "the call timed out".into();
    }
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "the proxy");
    }
    format!("the call failed: {}", short(&s, 200))
}
