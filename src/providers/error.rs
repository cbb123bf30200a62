//! Typed errors of every platform client: which platform, what kind of
//! failure, whether a retry can help and how long to wait first.
//!
//! Messages carry the platform's own error text (never a token: the HTTP
//! layer builds errors only from response bodies, never from requests).
//! Turning an error into conditions, Events and requeues is the caller's job.
use std::time::Duration;

use crate::platform::Platform;

/// A failed platform call.
///
/// # Guarantees
/// `is_retryable()` is true exactly for network failures, timeouts, 5xx,
/// 423, 429, an open circuit and unreadable bodies (e.g. an HTML page from a
/// CDN); everything else needs a changed spec or credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("failed to reach {platform}: {message}")]
    Network { platform: Platform, message: String },
    #[error("failed to get an answer from {platform} within {timeout_ms} ms")]
    Timeout { platform: Platform, timeout_ms: u64 },
    #[error("failed on {platform}: server error {status}: {message}")]
    Server { platform: Platform, status: u16, message: String },
    #[error("failed on {platform}: resource locked by another operation: {message}")]
    Locked { platform: Platform, message: String },
    #[error("failed on {platform}: rate limited ({}): {message}", retry_text(*.retry_after))]
    RateLimited { platform: Platform, retry_after: Option<Duration>, message: String },
    #[error("failed to call {platform}: circuit open after repeated server errors ({})", retry_text(Some(*.retry_after)))]
    CircuitOpen { platform: Platform, retry_after: Duration },
    #[error("failed to authenticate to {platform} ({status}): {message}")]
    Unauthorized { platform: Platform, status: u16, message: String },
    #[error("failed on {platform}: not found: {message}")]
    NotFound { platform: Platform, message: String },
    /// The credentials work, but not for this object (Railway's "Not
    /// Authorized" on another workspace's project): neither a rejected
    /// token nor an absent object, so nothing is recreated.
    #[error("failed on {platform}: the credentials may not reach this object: {message}")]
    Forbidden { platform: Platform, message: String },
    #[error("failed on {platform}: request rejected ({status}): {message}")]
    Invalid { platform: Platform, status: u16, message: String },
    #[error("failed to read the answer of {platform}: {message}")]
    Decode { platform: Platform, message: String },
}

impl ProviderError {
    /// Stable machine-readable kind, for Event reasons and metric labels.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Network { .. } => "network",
            Self::Timeout { .. } => "timeout",
            Self::Server { .. } => "server_error",
            Self::Locked { .. } => "locked",
            Self::RateLimited { .. } => "rate_limited",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Invalid { .. } => "invalid",
            Self::Decode { .. } => "decode",
        }
    }

    /// Whether the same call may succeed later without any change by a human.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { .. }
            | Self::Timeout { .. }
            | Self::Server { .. }
            | Self::Locked { .. }
            | Self::RateLimited { .. }
            | Self::CircuitOpen { .. }
            | Self::Decode { .. } => true,
            Self::Unauthorized { .. } | Self::NotFound { .. } | Self::Forbidden { .. } | Self::Invalid { .. } => false,
        }
    }

    /// The wait the platform (or our breaker) asked for, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::CircuitOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The platform the failed call went to.
    #[must_use]
    pub fn platform(&self) -> Platform {
        match self {
            Self::Network { platform, .. }
            | Self::Timeout { platform, .. }
            | Self::Server { platform, .. }
            | Self::Locked { platform, .. }
            | Self::RateLimited { platform, .. }
            | Self::CircuitOpen { platform, .. }
            | Self::Unauthorized { platform, .. }
            | Self::NotFound { platform, .. }
            | Self::Forbidden { platform, .. }
            | Self::Invalid { platform, .. }
            | Self::Decode { platform, .. } => *platform,
        }
    }

    /// True for a 404-style answer (callers map it to "absent").
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Classifies a non-success HTTP status with the platform's message.
    #[must_use]
    pub fn from_status(platform: Platform, status: u16, message: String, retry_after: Option<Duration>) -> Self {
        match status {
            401 | 403 => Self::Unauthorized { platform, status, message },
            404 => Self::NotFound { platform, message },
            423 => Self::Locked { platform, message },
            429 => Self::RateLimited { platform, retry_after, message },
            500..=599 => Self::Server { platform, status, message },
            _ => Self::Invalid { platform, status, message },
        }
    }
}

/// A read's answer with "not found" as `None`: how every client reports
/// an absent object (callers map it to `Observation::Absent`).
///
/// # Errors
/// Every error but not-found.
pub fn not_found_to_none<T>(r: Result<T, ProviderError>) -> Result<Option<T>, ProviderError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_into_retryable_and_terminal() {
        let p = Platform::Neon;
        for (status, retryable, category) in [
            (401, false, "unauthorized"),
            (403, false, "unauthorized"),
            (400, false, "invalid"),
            (409, false, "invalid"),
            (404, false, "not_found"),
            (423, true, "locked"),
            (429, true, "rate_limited"),
            (500, true, "server_error"),
            (503, true, "server_error"),
        ] {
            let e = ProviderError::from_status(p, status, "m".into(), None);
            assert_eq!(e.is_retryable(), retryable, "{status}");
            assert_eq!(e.category(), category, "{status}");
        }
        let e = ProviderError::from_status(p, 429, "slow down".into(), Some(Duration::from_secs(7)));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.to_string().contains("slow down"));
    }
}

/// "retry in 22754 s" for a status message a person reads (never `Some(..)`).
fn retry_text(after: Option<Duration>) -> String {
    match after {
        Some(d) if d.subsec_millis() == 0 || d.as_secs() >= 10 => format!("retry in {} s", d.as_secs()),
        Some(d) => format!("retry in {} ms", d.as_millis()),
        None => "no retry time given".to_string(),
    }
}

#[cfg(test)]
mod retry_text_tests {
    use super::*;

    #[test]
    fn a_wait_reads_as_seconds_or_milliseconds_never_as_an_option() {
        let e = ProviderError::RateLimited {
            platform: Platform::Vercel,
            retry_after: Some(Duration::from_secs(22_754)),
            message: "api-deployments-free-per-day".into(),
        };
        assert_eq!(e.to_string(), "failed on vercel: rate limited (retry in 22754 s): api-deployments-free-per-day");
        assert_eq!(retry_text(Some(Duration::from_millis(250))), "retry in 250 ms");
        assert_eq!(retry_text(None), "no retry time given");
    }
}
