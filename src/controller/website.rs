//! The Tenant's website analysed into `status.profile`: when to analyse
//! (pure, [`due`]), the analysis itself bounded in time, and the `system`
//! account the model calls are billed to.
//!
//! Analysis runs inside the Tenant's reconcile, before its instances are
//! planned, so the first instance already renders the profile; it is bounded
//! by the analyzer's 5 s fetch timeout plus [`MODEL_BOUND`], after which
//! provisioning goes on without a profile and a later one re-renders the
//! workspace (one redeploy). It runs only when no profile exists, when
//! `spec.website` changed, or when the annotation [`REANALYZE`] takes a new
//! value; a failure becomes the `WebsiteAnalyzed` condition and is retried
//! with backoff (transient reasons) or only after a change (the others).
//!
//! The `system` account: the controller creates it in Winston's ledger
//! with the `system` plan's monthly allotment (a new period each calendar
//! month) and, at start, generates a fresh proxy key for it that lives only
//! in this process's memory: the database keeps its hash (as for every
//! key), the key named `analyzer` of the previous leader is revoked. No
//! Secret holds it, so nothing else can spend the system account's credits.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};

use crate::analyzer::{AnalyzeError, Analyzer, AnalyzerConfig, ApiKey, FetchPolicy};
use crate::api::conditions::Desired;
use crate::api::{ProfileStatus, Tenant, WebsiteProfile};
use crate::ledger::Ledger;

/// Set it to any new value to analyse the website again.
pub const REANALYZE: &str = "winston.dev/reanalyze";
/// The condition reporting the analysis.
pub const CONDITION: &str = "WebsiteAnalyzed";
/// The ledger account Winston's own model calls are billed to.
pub const SYSTEM_ACCOUNT: &str = crate::plans::SYSTEM_PLAN;
/// Name of the system account's analyzer key.
const KEY_NAME: &str = "analyzer";
/// Deadline of one model call: provisioning never waits longer on a model.
pub const MODEL_BOUND: Duration = Duration::from_secs(20);
/// First retry of a transient failure, doubled per failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(1800);

/// What a pass should do about the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// No website: no profile, no condition.
    NoWebsite,
    /// The profile in status is current.
    Current,
    /// Analyse `url`, answering the annotation value `token`.
    Analyze { url: String, token: Option<String> },
}

/// Whether `tenant` needs an analysis (pure).
#[must_use]
pub fn due(tenant: &Tenant) -> Due {
    let Some(url) = tenant.spec.profile.website.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
        return Due::NoWebsite;
    };
    let token = tenant.metadata.annotations.as_ref().and_then(|a| a.get(REANALYZE)).cloned();
    let current = tenant.status.as_ref().and_then(|s| s.profile.as_ref());
    match current {
        Some(p) if p.source_url == url && (token.is_none() || p.reanalyze_token == token) => Due::Current,
        _ => Due::Analyze { url: url.to_string(), token },
    }
}

/// The outcome of a pass: the profile status shows, the condition, and
/// when to look again after a transient failure.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub profile: Option<ProfileStatus>,
    pub condition: Option<(bool, &'static str, String)>,
    pub retry_in: Option<Duration>,
}

impl Outcome {
    /// The condition in the form `conditions::merge` takes.
    #[must_use]
    pub fn desired(&self) -> Option<Desired<'static>> {
        self.condition.as_ref().map(|(ok, reason, message)| Desired::new(CONDITION, *ok, reason, message.clone()))
    }

    /// The profile's fields, for the instances' specs.
    #[must_use]
    pub fn fields(&self) -> Option<&WebsiteProfile> {
        self.profile.as_ref().map(|p| &p.fields)
    }
}

/// Failures of one (tenant, website, annotation) so far, in this process.
#[derive(Clone, Debug)]
struct Failed {
    count: u32,
    not_before: Option<Instant>,
    reason: &'static str,
    message: String,
}

/// The analyzer as the controller runs it.
pub struct WebsiteAnalysis {
    analyzer: Analyzer,
    ledger: Ledger,
    allotment: i64,
    failures: Mutex<HashMap<String, Failed>>,
    /// The last analysis of each Tenant (by uid), for a pass that reads a
    /// Tenant from a watch cache which has not seen its status yet: that
    /// pass reuses it instead of asking the model again.
    done: Mutex<HashMap<String, ProfileStatus>>,
}

/// Errors setting the analysis up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the analyzer cannot be built: {0}")]
    Analyzer(#[from] AnalyzeError),
    #[error("the system account cannot be prepared: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("the plan catalog has no `system` plan")]
    NoSystemPlan,
}

impl WebsiteAnalysis {
    /// Creates the system account, issues this process's key for it and
    /// builds the analyzer calling `proxy_url` with `model`.
    ///
    /// # Errors
    /// See [`SetupError`].
    pub async fn start(
        ledger: Ledger,
        plans: &crate::plans::PlanCatalog,
        proxy_url: &str,
        model: &str,
        allow: Vec<ipnet::IpNet>,
    ) -> Result<Self, SetupError> {
        let allotment = plans.get(SYSTEM_ACCOUNT).ok_or(SetupError::NoSystemPlan)?.credits_per_month;
        ensure_system_account(&ledger, allotment).await?;
        let key = crate::ledger::keys::generate_key();
        ledger.register_key(SYSTEM_ACCOUNT, KEY_NAME, &key).await?;
        ledger.revoke_other_keys(SYSTEM_ACCOUNT, KEY_NAME, &crate::ledger::keys::hash_key(&key)).await?;
        let mut config = AnalyzerConfig::new(proxy_url, ApiKey::new(key), model);
        config.fetch = FetchPolicy::allowing(allow)?;
        config.model_timeout = MODEL_BOUND;
        Ok(Self {
            analyzer: Analyzer::new(config)?,
            ledger,
            allotment,
            failures: Mutex::new(HashMap::new()),
            done: Mutex::new(HashMap::new()),
        })
    }

    /// The profile and condition `tenant` should show after this pass,
    /// analysing its website when [`due`] says so and no backoff holds it.
    pub async fn pass(&self, tenant: &Tenant) -> Outcome {
        let existing = tenant.status.as_ref().and_then(|s| s.profile.clone());
        let (url, token) = match due(tenant) {
            Due::NoWebsite => return Outcome::default(),
            Due::Current => return current(tenant, existing),
            Due::Analyze { url, token } => (url, token),
        };
        let uid = tenant.metadata.uid.clone().unwrap_or_default();
        if let Some(p) = self.recent(&uid, &url, token.as_deref()) {
            let message = format!("analysed by {} in {} ms", p.model, p.elapsed_ms);
            return Outcome { profile: Some(p), condition: Some((true, "Analyzed", message)), retry_in: None };
        }
        let key = format!("{uid}|{url}|{}", token.as_deref().unwrap_or(""));
        if let Some(f) = self.held(&key) {
            let retry_in = f.not_before.map(|t| t.saturating_duration_since(Instant::now()));
            return Outcome { profile: existing, condition: Some((false, f.reason, f.message)), retry_in };
        }
        if let Err(e) = ensure_system_account(&self.ledger, self.allotment).await {
            tracing::warn!(error = %e, "failed to keep the system account's period");
        }
        match self.analyzer.analyze(&url).await {
            Ok(a) => {
                self.forget(&key);
                let message = format!("analysed by {} in {} ms", a.model, a.elapsed_ms);
                let profile = status_of(a, token);
                self.done.lock().unwrap_or_else(PoisonError::into_inner).insert(uid, profile.clone());
                Outcome { profile: Some(profile), condition: Some((true, "Analyzed", message)), retry_in: None }
            }
            Err(e) => {
                let f = self.failed(&key, &e);
                tracing::info!(reason = f.reason, error = %e, "website analysis failed");
                let retry_in = f.not_before.map(|t| t.saturating_duration_since(Instant::now()));
                Outcome { profile: existing, condition: Some((false, f.reason, f.message)), retry_in }
            }
        }
    }

    /// A failure that still holds `key` back: permanent ones until the
    /// website or annotation changes, transient ones until their time.
    fn held(&self, key: &str) -> Option<Failed> {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).filter(|f| f.not_before.is_none_or(|t| Instant::now() < t)).cloned()
    }

    fn failed(&self, key: &str, error: &AnalyzeError) -> Failed {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = map.get(key).map_or(0, |f| f.count) + 1;
        let not_before = error.is_transient().then(|| Instant::now() + retry_after(count));
        let f = Failed { count, not_before, reason: error.reason(), message: error.to_string() };
        map.insert(key.to_string(), f.clone());
        f
    }

    /// This process's last analysis of the Tenant `uid` when it answers
    /// the same website and annotation.
    fn recent(&self, uid: &str, url: &str, token: Option<&str>) -> Option<ProfileStatus> {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        done.get(uid).filter(|p| p.source_url == url && p.reanalyze_token.as_deref() == token).cloned()
    }

    /// Drops what this process remembers of the Tenant `uid` (it is gone).
    pub fn forget_tenant(&self, uid: &str) {
        self.done.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
        let prefix = format!("{uid}|");
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).retain(|k, _| !k.starts_with(&prefix));
    }

    fn forget(&self, key: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

/// The backoff after the `count`-th transient failure.
#[must_use]
pub fn retry_after(count: u32) -> Duration {
    FIRST_RETRY.saturating_mul(2u32.saturating_pow(count.saturating_sub(1))).min(MAX_RETRY)
}

/// A current profile keeps the condition status last showed.
fn current(tenant: &Tenant, profile: Option<ProfileStatus>) -> Outcome {
    let message = profile.as_ref().map(|p| format!("analysed by {}", p.model)).unwrap_or_default();
    Outcome { profile, condition: Some((true, "Analyzed", message)), retry_in: None }.keep_message(tenant)
}

impl Outcome {
    /// Keeps the condition's message as status shows it when its status and
    /// reason are unchanged, so a steady pass writes nothing.
    fn keep_message(mut self, tenant: &Tenant) -> Self {
        let shown = tenant.status.as_ref().and_then(|s| crate::api::conditions::find(&s.conditions, CONDITION));
        if let (Some(c), Some((ok, reason, message))) = (shown, self.condition.as_mut())
            && c.reason == *reason
            && (c.status == "True") == *ok
        {
            message.clone_from(&c.message);
        }
        self
    }
}

fn status_of(a: crate::analyzer::Analysis, token: Option<String>) -> ProfileStatus {
    let p = a.profile;
    ProfileStatus {
        source_url: a.source_url,
        content_hash: a.content_hash,
        model: a.model,
        input_tokens: a.usage.input_tokens,
        output_tokens: a.usage.output_tokens,
        analyzed_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        elapsed_ms: a.elapsed_ms,
        reanalyze_token: token,
        fields: WebsiteProfile {
            business_name: p.business_name,
            industry: p.industry,
            sub_industry: p.sub_industry,
            location: p.location,
            hours: p.hours,
            description: p.description,
            brand_color: p.brand_color,
            suggested_capabilities: p.suggested_capabilities,
            suggested_agent_name: p.suggested_agent_name,
            tone: tone(p.tone),
        },
    }
}

fn tone(t: crate::analyzer::Tone) -> crate::api::Tone {
    use crate::analyzer::Tone as A;
    use crate::api::Tone as T;
    match t {
        A::Friendly => T::Friendly,
        A::Professional => T::Professional,
        A::Playful => T::Playful,
        A::Formal => T::Formal,
        A::Concise => T::Concise,
    }
}

/// The system account exists and its current calendar month's period has
/// started with the `system` plan's allotment (idempotent).
async fn ensure_system_account(ledger: &Ledger, allotment: i64) -> Result<(), crate::ledger::LedgerError> {
    ledger.ensure_account(SYSTEM_ACCOUNT).await?;
    let anchor = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
    if let Some(period) = anchor.and_then(|a| super::credit_ledger_plan::period_at(a, Utc::now())) {
        ledger.ensure_period(SYSTEM_ACCOUNT, period, allotment).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentProfile, TenantSpec, TenantStatus};

    fn tenant(website: Option<&str>, token: Option<&str>, profile_of: Option<(&str, Option<&str>)>) -> Tenant {
        let mut t = Tenant::new(
            "green",
            TenantSpec {
                profile: AgentProfile {
                    display_name: "Green Leaf".into(),
                    contact_email: "o@green.example".into(),
                    website: website.map(str::to_string),
                    ..AgentProfile::default()
                },
                stack: crate::api::StackSpec::default(),
                instances: 1,
                credits: None,
                approved: None,
            },
        );
        if let Some(v) = token {
            t.metadata.annotations = Some([(REANALYZE.to_string(), v.to_string())].into());
        }
        t.status = profile_of.map(|(url, tok)| TenantStatus {
            profile: Some(ProfileStatus {
                source_url: url.into(),
                reanalyze_token: tok.map(str::to_string),
                ..ProfileStatus::default()
            }),
            ..TenantStatus::default()
        });
        t
    }

    #[test]
    fn analyses_only_without_a_profile_on_a_new_website_or_a_new_annotation() {
        let site = "http://x.example/";
        assert_eq!(due(&tenant(None, None, None)), Due::NoWebsite);
        assert_eq!(due(&tenant(Some("  "), None, None)), Due::NoWebsite);
        assert_eq!(due(&tenant(Some(site), None, None)), Due::Analyze { url: site.into(), token: None });
        assert_eq!(due(&tenant(Some(site), None, Some((site, None)))), Due::Current);
        assert_eq!(due(&tenant(Some(" http://x.example/ "), None, Some((site, None)))), Due::Current);
        assert_eq!(
            due(&tenant(Some("http://y.example/"), None, Some((site, None)))),
            Due::Analyze { url: "http://y.example/".into(), token: None }
        );
        assert_eq!(
            due(&tenant(Some(site), Some("1"), Some((site, None)))),
            Due::Analyze { url: site.into(), token: Some("1".into()) }
        );
        assert_eq!(due(&tenant(Some(site), Some("1"), Some((site, Some("1"))))), Due::Current);
        assert_eq!(
            due(&tenant(Some(site), Some("2"), Some((site, Some("1"))))),
            Due::Analyze { url: site.into(), token: Some("2".into()) }
        );
    }

    #[test]
    fn transient_failures_back_off_exponentially_within_bounds() {
        assert_eq!(retry_after(1), Duration::from_secs(5));
        assert_eq!(retry_after(2), Duration::from_secs(10));
        assert_eq!(retry_after(5), Duration::from_secs(80));
        assert_eq!(retry_after(40), MAX_RETRY);
    }
}
