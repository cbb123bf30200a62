//! Shared HTTP plumbing of the platform clients: one reqwest client per
//! platform with its timeout, bearer auth, the platform's request budget,
//! Retry-After handling and error classification from any of the
//! platforms' error envelopes.
//!
//! The token lives only inside the request headers; `Debug` shows the base
//! URL and platform and never the token. Platform specifics (paths, bodies,
//! GraphQL) stay in the per-platform modules.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::budget::Budget;
use super::config::{PlatformConfig, Secret};
use super::error::ProviderError;
use crate::platform::Platform;

/// A successful answer: status below 300 and the JSON body (`Null` if empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// The HTTP side of one platform client. Cloning shares the connection pool
/// and the budget.
#[derive(Clone)]
pub struct Http {
    platform: Platform,
    base: String,
    token: Secret,
    client: reqwest::Client,
    budget: Arc<Budget>,
    timeout_ms: u64,
    /// Spent quotas per `METHOD path` (see [`quota_reset_wait`]): until
    /// their reset, a request to that endpoint is refused without being sent.
    quotas: Arc<Mutex<BTreeMap<String, Instant>>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("platform", &self.platform)
            .field("base", &self.base)
            .field("token", &self.token)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// A client for `platform` with its own budget from `config`.
    ///
    /// # Errors
    /// `Network` when the TLS backend cannot be initialised.
    pub fn new(platform: Platform, config: &PlatformConfig) -> Result<Self, ProviderError> {
        let budget = Arc::new(Budget::new(platform, config.budget_or_default(platform)));
        Self::with_budget(platform, config, budget)
    }

    /// A client sharing an existing budget (several clients, one platform limit).
    ///
    /// # Errors
    /// As [`Http::new`].
    pub fn with_budget(
        platform: Platform,
        config: &PlatformConfig,
        budget: Arc<Budget>,
    ) -> Result<Self, ProviderError> {
        crate::telemetry::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(10_000)))
            .user_agent(concat!("winston/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Network {
                platform,
                message: format!("failed to build the HTTP client: {e}"),
            })?;
        Ok(Self {
            platform,
            base: config.base_url.trim_end_matches('/').to_string(),
            token: config.token.clone(),
            client,
            budget,
            timeout_ms: config.timeout_ms,
            quotas: Arc::default(),
        })
    }

    /// The platform this client calls.
    #[must_use]
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The shared budget (for inspection and tests).
    #[must_use]
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Sends one request to `base + path` and classifies the answer.
    ///
    /// # Errors
    /// Any [`ProviderError`]: budget refusals before sending, network and
    /// timeout failures, and non-2xx answers with the platform's message. A
    /// 429 also pauses the shared budget for the platform's `Retry-After`
    /// (or its reset header); a spent quota (Vercel's 402 with `limit.reset`)
    /// is `RateLimited` until its reset, and requests to the same endpoint
    /// are refused without being sent until then.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ProviderError> {
        let platform = self.platform;
        let endpoint = format!("{method} {path}");
        if let Some(wait) = self.quota_wait(&endpoint) {
            return Err(ProviderError::RateLimited {
                platform,
                retry_after: Some(wait),
                message: format!("the quota of {endpoint} is spent until its reset (not sent)"),
            });
        }
        self.budget.acquire().await?;
        let mut url = reqwest::Url::parse(&format!("{}{}", self.base, path)).map_err(|e| ProviderError::Invalid {
            platform,
            status: 0,
            message: format!("failed to build the URL for {path}: {e}"),
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut req = self.client.request(method, url).bearer_auth(self.token.expose());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.budget.record(true);
                return Err(self.transport_error(&e));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .or_else(|| reset_header_wait(resp.headers(), chrono::Utc::now().timestamp_millis()));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                // The platform may have performed the call: the answer was lost.
                self.budget.record(status >= 500);
                return Err(self.transport_error(&e));
            }
        };
        self.budget.record(status >= 500);
        if status == 429 {
            self.budget.pause_for(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        let json: Option<Value> =
            if bytes.is_empty() { Some(Value::Null) } else { serde_json::from_slice(&bytes).ok() };
        if (200..300).contains(&status) {
            return match json {
                Some(body) => Ok(Reply { status, body }),
                None => Err(ProviderError::Decode { platform, message: format!("non-JSON body with status {status}") }),
            };
        }
        if let Some(wait) =
            json.as_ref().and_then(|v| quota_reset_wait(status, v, chrono::Utc::now().timestamp_millis()))
        {
            // A spent daily quota (Vercel's 402 `api-deployments-free-per-day`):
            // throttled until its reset, without pausing the platform's other calls.
            let message = json.as_ref().map(error_message).unwrap_or_default();
            self.quotas
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(endpoint, Instant::now() + wait);
            return Err(ProviderError::RateLimited { platform, retry_after: Some(wait), message });
        }
        let message = match &json {
            Some(v) => error_message(v),
            // Non-JSON error bodies (e.g. a CDN's HTML page on 429) are tolerated.
            None => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).trim().to_string(),
        };
        Err(ProviderError::from_status(platform, status, message, retry_after))
    }

    /// How long the quota of `endpoint` stays spent, if it is.
    fn quota_wait(&self, endpoint: &str) -> Option<Duration> {
        let mut quotas = self.quotas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = *quotas.get(endpoint)?;
        let left = until.checked_duration_since(Instant::now());
        if left.is_none() {
            quotas.remove(endpoint);
        }
        left
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout { platform: self.platform, timeout_ms: self.timeout_ms }
        } else {
            // reqwest errors name the URL, never headers, so no token leaks here.
            ProviderError::Network { platform: self.platform, message: error_chain(e) }
        }
    }
}

/// The wait a 429 without `Retry-After` announces in its reset header:
/// `x-ratelimit-reset` (Railway and Vercel: epoch seconds; Supabase:
/// seconds to wait) or `ratelimit-reset` (Resend: seconds). A value above
/// 10^9 is read as epoch seconds, above 10^12 as epoch milliseconds.
#[must_use]
pub fn reset_header_wait(headers: &reqwest::header::HeaderMap, now_ms: i64) -> Option<Duration> {
    let value = ["x-ratelimit-reset", "ratelimit-reset"]
        .iter()
        .find_map(|k| headers.get(*k)?.to_str().ok()?.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    let now = now_ms as f64;
    let wait_ms = if value > 1e12 {
        value - now
    } else if value > 1e9 {
        value * 1000.0 - now
    } else {
        value * 1000.0
    };
    Some(Duration::from_millis(wait_ms.max(1000.0) as u64))
}

/// The wait until a spent quota resets, from an answer that is not a 429
/// but says so: a 402 whose error carries `limit: {remaining: 0, reset}`
/// (`reset` in epoch milliseconds), as Vercel answers a spent daily
/// deployment budget. `None` for any other answer.
#[must_use]
pub fn quota_reset_wait(status: u16, body: &Value, now_ms: i64) -> Option<Duration> {
    if status != 402 {
        return None;
    }
    let limit = body.pointer("/error/limit")?;
    if limit.get("remaining").and_then(Value::as_u64) != Some(0) {
        return None;
    }
    let reset_ms = limit.get("reset").and_then(Value::as_i64)?;
    Some(Duration::from_millis(u64::try_from(reset_ms.saturating_sub(now_ms)).unwrap_or(0).max(1000)))
}

/// `v` as a `T`, or a `Decode` error of `platform` naming `what` was read.
///
/// # Errors
/// `Decode` when `v` does not have the shape of `T`.
pub fn decode<T: serde::de::DeserializeOwned>(platform: Platform, v: Value, what: &str) -> Result<T, ProviderError> {
    serde_json::from_value(v).map_err(|e| ProviderError::Decode { platform, message: format!("{what}: {e}") })
}

/// `s` as one URL path segment: ids and names are restricted to characters
/// safe in a path except these, which would end or split the segment.
#[must_use]
pub fn segment(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F").replace('?', "%3F").replace('#', "%23").replace(' ', "%20")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The message of any platform's error envelope: Vercel `{error:{code,message}}`,
/// Neon `{code,message}`, Resend `{name,message}`, Supabase `{message}`,
/// GraphQL `{errors:[{message}]}`.
#[must_use]
pub fn error_message(v: &Value) -> String {
    let pick = |o: &Value| -> Option<String> {
        let msg = o.get("message").and_then(Value::as_str)?;
        let code = o.get("code").or_else(|| o.get("name")).and_then(Value::as_str).filter(|c| !c.is_empty());
        Some(match code {
            Some(c) => format!("{c}: {msg}"),
            None => msg.to_string(),
        })
    };
    pick(v.get("error").unwrap_or(&Value::Null))
        .or_else(|| pick(v))
        .or_else(|| v.get("errors").and_then(|e| e.get(0)).and_then(pick))
        .unwrap_or_else(|| v.to_string().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_envelope_yields_its_message() {
        assert_eq!(
            error_message(&json!({"error": {"code": "forbidden", "message": "Not authorized"}})),
            "forbidden: Not authorized"
        );
        assert_eq!(error_message(&json!({"code": "", "message": "locked", "request_id": "r"})), "locked");
        assert_eq!(
            error_message(&json!({"statusCode": 422, "name": "missing_required_field", "message": "m"})),
            "missing_required_field: m"
        );
        assert_eq!(error_message(&json!({"message": "x"})), "x");
        assert_eq!(error_message(&json!({"data": null, "errors": [{"message": "Not Authorized"}]})), "Not Authorized");
    }

    #[test]
    fn a_reset_header_is_read_as_epoch_seconds_epoch_ms_or_seconds() {
        let now = 1_800_000_000_000_i64;
        let h = |k: &'static str, v: &str| {
            let mut m = reqwest::header::HeaderMap::new();
            m.insert(k, v.parse().unwrap());
            m
        };
        assert_eq!(reset_header_wait(&h("x-ratelimit-reset", "1800000030"), now), Some(Duration::from_secs(30)));
        assert_eq!(reset_header_wait(&h("x-ratelimit-reset", "1800000045000"), now), Some(Duration::from_secs(45)));
        assert_eq!(reset_header_wait(&h("x-ratelimit-reset", "12"), now), Some(Duration::from_secs(12)));
        assert_eq!(reset_header_wait(&h("ratelimit-reset", "0"), now), Some(Duration::from_secs(1)), "at least 1 s");
        assert_eq!(reset_header_wait(&reqwest::header::HeaderMap::new(), now), None);
    }

    #[test]
    fn a_spent_daily_quota_waits_for_its_reset() {
        let now = 1_800_000_000_000_i64;
        let body = json!({"error": {"code": "api-deployments-free-per-day", "message": "Resource is limited",
            "limit": {"total": 100, "remaining": 0, "reset": now + 86_400_000}}});
        assert_eq!(quota_reset_wait(402, &body, now), Some(Duration::from_secs(86_400)));
        assert_eq!(quota_reset_wait(400, &body, now), None, "only a 402");
        assert_eq!(quota_reset_wait(402, &json!({"error": {"code": "payment_required"}}), now), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let cfg = PlatformConfig::public(Platform::Neon, Secret::new("napi_topsecret"));
        let h = Http::new(Platform::Neon, &cfg).unwrap();
        assert!(!format!("{h:?}").contains("topsecret"));
    }
}
