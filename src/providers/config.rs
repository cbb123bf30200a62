//! Where each platform lives and how to authenticate: base URL, token,
//! timeout and request budget per platform. Pointing Winston at the real
//! platforms or at a local stand-in is a change of this value only.
use std::fmt;

use super::budget::BudgetConfig;
use crate::platform::Platform;

/// A credential. Its `Debug` and `Display` never show the value; only the
/// HTTP layer reads it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for building an auth header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no credential was configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One platform's endpoint and credentials.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Base URL, e.g. `https://console.neon.tech/api/v2` (Railway: the full
    /// GraphQL endpoint).
    pub base_url: String,
    /// API token (Bearer).
    #[serde(default)]
    pub token: Secret,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Request budget; defaults to the platform's published limits.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl PlatformConfig {
    /// The real platform's public endpoint with `token`.
    #[must_use]
    pub fn public(platform: Platform, token: Secret) -> Self {
        let base_url = match platform {
            Platform::Railway => "https://backboard.railway.com/graphql/v2",
            Platform::Neon => "https://console.neon.tech/api/v2",
            Platform::Vercel => "https://api.vercel.com",
            Platform::Supabase => "https://api.supabase.com",
            Platform::Resend => "https://api.resend.com",
        };
        Self { base_url: base_url.into(), token, timeout_ms: default_timeout_ms(), budget: None }
    }

    /// The budget in force: the configured one or the published limits.
    #[must_use]
    pub fn budget_or_default(&self, platform: Platform) -> BudgetConfig {
        self.budget.clone().unwrap_or_else(|| BudgetConfig::published(platform))
    }
}

/// Every platform's configuration plus the account-level ids some calls need.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub railway: PlatformConfig,
    pub neon: PlatformConfig,
    pub vercel: PlatformConfig,
    pub supabase: PlatformConfig,
    pub resend: PlatformConfig,
    /// Vercel team scope (`?teamId=`), if the token is a team token.
    #[serde(default)]
    pub vercel_team_id: Option<String>,
    /// Railway workspace for new projects.
    #[serde(default)]
    pub railway_workspace_id: Option<String>,
    /// Supabase organization slug for new projects.
    #[serde(default)]
    pub supabase_organization: Option<String>,
    /// Neon organization for new projects.
    #[serde(default)]
    pub neon_org_id: Option<String>,
}

impl ProvidersConfig {
    /// The configuration for one platform.
    #[must_use]
    pub fn platform(&self, platform: Platform) -> &PlatformConfig {
        match platform {
            Platform::Railway => &self.railway,
            Platform::Neon => &self.neon,
            Platform::Vercel => &self.vercel,
            Platform::Supabase => &self.supabase,
            Platform::Resend => &self.resend,
        }
    }

    /// Every platform at the URL `base_url` names for it, all with the same
    /// token and no account-level ids: how tests and local runs point the
    /// clients at a stand-in (the stand-in's layout is the caller's
    /// knowledge, never the clients').
    #[must_use]
    pub fn with_base_urls(base_url: impl Fn(Platform) -> String, token: &str) -> Self {
        Self::per_platform(|platform| PlatformConfig {
            base_url: base_url(platform),
            token: Secret::new(token),
            timeout_ms: default_timeout_ms(),
            budget: None,
        })
    }

    /// Each platform's configuration from `config`, without account-level ids.
    fn per_platform(config: impl Fn(Platform) -> PlatformConfig) -> Self {
        Self {
            railway: config(Platform::Railway),
            neon: config(Platform::Neon),
            vercel: config(Platform::Vercel),
            supabase: config(Platform::Supabase),
            resend: config(Platform::Resend),
            vercel_team_id: None,
            railway_workspace_id: None,
            supabase_organization: None,
            neon_org_id: None,
        }
    }

    /// Reads `WINSTON_<PLATFORM>_BASE_URL`, `WINSTON_<PLATFORM>_TOKEN` and the
    /// optional overrides `WINSTON_<PLATFORM>_TIMEOUT_MS` (per request) and
    /// `WINSTON_<PLATFORM>_RATE_PER_MINUTE` / `_BURST` (the request budget)
    /// (plus `WINSTON_VERCEL_TEAM_ID`, `WINSTON_RAILWAY_WORKSPACE_ID`,
    /// `WINSTON_SUPABASE_ORGANIZATION`, `WINSTON_NEON_ORG_ID`); a missing base
    /// URL means the real platform.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let p = |platform: Platform| {
            let up = platform.as_str().to_uppercase();
            let mut c =
                PlatformConfig::public(platform, Secret::new(var(&format!("WINSTON_{up}_TOKEN")).unwrap_or_default()));
            if let Some(url) = var(&format!("WINSTON_{up}_BASE_URL")) {
                c.base_url = url;
            }
            if let Some(ms) = var(&format!("WINSTON_{up}_TIMEOUT_MS")).and_then(|v| v.parse::<u64>().ok()) {
                c.timeout_ms = ms.max(1);
            }
            // Budget overrides, e.g. for a higher plan or the local emulator.
            let rate = var(&format!("WINSTON_{up}_RATE_PER_MINUTE")).and_then(|v| v.parse().ok());
            let burst = var(&format!("WINSTON_{up}_BURST")).and_then(|v| v.parse().ok());
            if rate.is_some() || burst.is_some() {
                let mut b = c.budget_or_default(platform);
                b.per_minute = rate.unwrap_or(b.per_minute);
                b.burst = burst.unwrap_or(b.burst);
                c.budget = Some(b);
            }
            c
        };
        Self {
            vercel_team_id: var("WINSTON_VERCEL_TEAM_ID"),
            railway_workspace_id: var("WINSTON_RAILWAY_WORKSPACE_ID"),
            supabase_organization: var("WINSTON_SUPABASE_ORGANIZATION"),
            neon_org_id: var("WINSTON_NEON_ORG_ID"),
            ..Self::per_platform(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let mut c = ProvidersConfig::with_base_urls(|p| format!("http://127.0.0.1:1/{p}"), "sk-very-secret");
        c.neon.token = Secret::new("napi-very-secret");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn base_urls_are_given_per_platform() {
        let c = ProvidersConfig::with_base_urls(|p| format!("http://stand-in/{p}"), "tok");
        for platform in Platform::ALL {
            let pc = c.platform(platform);
            assert_eq!(pc.base_url, format!("http://stand-in/{}", platform.as_str()));
            assert_eq!(pc.token.expose(), "tok");
            assert_eq!(pc.timeout_ms, 30_000);
        }
        assert_eq!(c.supabase_organization, None);
    }

    #[test]
    fn config_loads_from_json() {
        let c: ProvidersConfig = serde_json::from_value(serde_json::json!({
            "railway": {"base_url": "http://r", "token": "t1"},
            "neon": {"base_url": "http://n", "token": "t2", "timeout_ms": 5, "budget": {"per_minute": 7}},
            "vercel": {"base_url": "http://v"},
            "supabase": {"base_url": "http://s"},
            "resend": {"base_url": "http://e"},
            "vercel_team_id": "team_1"
        }))
        .unwrap();
        assert_eq!(c.neon.token.expose(), "t2");
        assert_eq!(c.neon.budget_or_default(Platform::Neon).per_minute, 7);
        assert_eq!(c.neon.budget_or_default(Platform::Neon).burst, BudgetConfig::default().burst);
        assert_eq!(c.railway.timeout_ms, 30_000);
    }
}
