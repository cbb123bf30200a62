//! What can go wrong when analysing a website, each kind with a stable
//! reason for a Kubernetes condition and whether trying again later can help.
//!
//! Messages never carry a secret: not the proxy key, not the credentials of a
//! URL (such a URL is refused without being repeated), and a proxy's error
//! text is cut short.

/// Condition reasons, one per failure kind (see [`AnalyzeError::reason`]).
pub mod reasons {
    /// The name did not resolve, the connection failed or timed out, or the
    /// site answered with an error status.
    pub const WEBSITE_UNREACHABLE: &str = "WebsiteUnreachable";
    /// The URL or an address it resolved or redirected to is not allowed
    /// (not public, not http(s), credentials, too many redirects).
    pub const WEBSITE_REFUSED: &str = "WebsiteRefused";
    /// The page is larger than the size cap.
    pub const WEBSITE_TOO_LARGE: &str = "WebsiteTooLarge";
    /// The page is neither HTML nor plain text.
    pub const WEBSITE_UNSUPPORTED: &str = "WebsiteUnsupportedContent";
    /// The page holds no readable text.
    pub const WEBSITE_EMPTY: &str = "WebsiteEmpty";
    /// The proxy or the model behind it failed or refused the call.
    pub const MODEL_UNAVAILABLE: &str = "ModelUnavailable";
    /// The `system` account has no credits left (the proxy answered 402).
    pub const CREDITS_EXHAUSTED: &str = "CreditsExhausted";
    /// The model's answer was not a valid profile, twice.
    pub const PROFILE_INVALID: &str = "ProfileInvalid";
}

/// A failed analysis.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyzeError {
    #[error("failed to accept the website URL: {0}")]
    InvalidUrl(String),
    #[error("refused to fetch the website: {0}")]
    Refused(String),
    #[error("failed to reach the website: {0}")]
    Unreachable(String),
    #[error("failed to fetch the website within {secs} s")]
    Timeout { secs: u64 },
    #[error("failed to read the website: the page is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("failed to read the website: content type {0:?} is neither HTML nor plain text")]
    Unsupported(String),
    #[error("failed to read the website: the page has no readable text")]
    Empty,
    #[error("failed to call the model through the proxy: {0}")]
    Model(String),
    #[error("failed to call the model: the system account has no credits left ({0})")]
    CreditsExhausted(String),
    #[error("failed to get a valid profile from the model after {attempts} attempts: {reason}")]
    ProfileInvalid { attempts: u8, reason: String },
}

impl AnalyzeError {
    /// The condition reason for this kind (one of [`reasons`]).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) | Self::Refused(_) => reasons::WEBSITE_REFUSED,
            Self::Unreachable(_) | Self::Timeout { .. } => reasons::WEBSITE_UNREACHABLE,
            Self::TooLarge { .. } => reasons::WEBSITE_TOO_LARGE,
            Self::Unsupported(_) => reasons::WEBSITE_UNSUPPORTED,
            Self::Empty => reasons::WEBSITE_EMPTY,
            Self::Model(_) => reasons::MODEL_UNAVAILABLE,
            Self::CreditsExhausted(_) => reasons::CREDITS_EXHAUSTED,
            Self::ProfileInvalid { .. } => reasons::PROFILE_INVALID,
        }
    }

    /// Whether the same request may succeed later without a change of the
    /// website URL: a site that is down, a model that is busy, credits that a
    /// new period brings back. Refusals and invalid content are not retried
    /// until the website (or the page) changes.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout { .. } | Self::Model(_) | Self::CreditsExhausted(_))
    }
}

/// At most `max` characters of `s` (a proxy's or site's error text), on one line.
pub(crate) fn short(s: &str, max: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_reason() {
        let all = [
            AnalyzeError::InvalidUrl("x".into()),
            AnalyzeError::Refused("x".into()),
            AnalyzeError::Unreachable("x".into()),
            AnalyzeError::Timeout { secs: 5 },
            AnalyzeError::TooLarge { limit: 1 },
            AnalyzeError::Unsupported("image/png".into()),
            AnalyzeError::Empty,
            AnalyzeError::Model("x".into()),
            AnalyzeError::CreditsExhausted("x".into()),
            AnalyzeError::ProfileInvalid { attempts: 2, reason: "x".into() },
        ];
        for e in all {
            let r = e.reason();
            assert!(!r.is_empty() && r.chars().all(|c| c.is_ascii_alphabetic()), "{r}");
            assert!(e.to_string().starts_with("failed to") || e.to_string().starts_with("refused"), "{e}");
        }
    }

    #[test]
    fn short_cuts_and_flattens() {
        assert_eq!(short("a\nb", 10), "a b");
        assert_eq!(short("abcdef", 3), "abc...");
    }
}
