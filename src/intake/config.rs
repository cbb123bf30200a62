//! What the operator decides about intake, read from a YAML file (the
//! chart renders it from `intake.*` values): which Stripe price buys which
//! plan, what a cancellation does, and whether a failed payment pauses.
//!
//! ```yaml
//! prices:                      # price id or price lookup_key -> plan name
//!   price_1QstarterMonthly: starter
//!   winston-growth-monthly: growth
//! onCancel: Pause              # Delete (at once) or Pause (then delete after the grace period)
//! gracePeriodSeconds: 604800   # Pause only: how long a cancelled tenant is kept paused
//! pauseOnPaymentFailed: true   # invoice.payment_failed / past_due pauses the tenant
//! ```
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// What `customer.subscription.deleted` does to the tenant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum CancelPolicy {
    /// Delete the Tenant at once (the controller tears everything down;
    /// the ledger history stays).
    #[default]
    Delete,
    /// Pause the Tenant and delete it when the grace period is over.
    Pause,
}

/// The intake configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntakeConfig {
    /// Price id (`price_...`) or price `lookup_key` -> Winston plan name.
    pub prices: BTreeMap<String, String>,
    /// What a cancelled subscription does to its tenant.
    #[serde(default)]
    pub on_cancel: CancelPolicy,
    /// With `onCancel: Pause`: seconds between the cancellation and the deletion.
    #[serde(default = "week")]
    pub grace_period_seconds: u64,
    /// Whether a failed invoice (and a `past_due`/`unpaid` subscription) pauses the tenant.
    #[serde(default)]
    pub pause_on_payment_failed: bool,
}

fn week() -> u64 {
    7 * 24 * 3600
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read the intake configuration {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("failed to parse the intake configuration: {0}")]
    Parse(#[from] serde_saphyr::Error),
    #[error("intake configuration: {0}")]
    Invalid(String),
}

impl IntakeConfig {
    /// Parses and checks a configuration document.
    ///
    /// # Errors
    /// Invalid YAML, unknown keys, an empty price map or a plan name that
    /// is not a lowercase name.
    pub fn parse(yaml: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(yaml)?;
        if config.prices.is_empty() {
            return Err(ConfigError::Invalid("prices maps no Stripe price to a plan".into()));
        }
        if let Some((price, plan)) = config.prices.iter().find(|(_, plan)| !is_plan_name(plan)) {
            return Err(ConfigError::Invalid(format!("price {price} maps to {plan:?}, which is not a plan name")));
        }
        Ok(config)
    }

    /// Reads [`IntakeConfig::parse`] from a file.
    ///
    /// # Errors
    /// As [`IntakeConfig::parse`], or an unreadable file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// The plan bought with `price_id` (or its `lookup_key`), the id first.
    #[must_use]
    pub fn plan_for(&self, price_id: &str, lookup_key: Option<&str>) -> Option<&str> {
        self.prices.get(price_id).or_else(|| lookup_key.and_then(|k| self.prices.get(k))).map(String::as_str)
    }
}

/// The Tenant admission pattern for `spec.plan` (`^[a-z][a-z0-9-]*$`, 1 to 32).
fn is_plan_name(plan: &str) -> bool {
    let mut chars = plan.chars();
    plan.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && plan != "system"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = IntakeConfig::parse(
            "prices:\n  price_1: starter\n  growth-monthly: growth\nonCancel: Pause\ngracePeriodSeconds: 60\npauseOnPaymentFailed: true\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.on_cancel, CancelPolicy::Pause);
        assert_eq!((c.grace_period_seconds, c.pause_on_payment_failed), (60, true));
        assert_eq!(c.plan_for("price_1", None), Some("starter"));
        assert_eq!(c.plan_for("price_2", Some("growth-monthly")), Some("growth"));
        assert_eq!(c.plan_for("price_2", Some("other")), None);
    }

    #[test]
    fn defaults_delete_at_once_and_never_pause() {
        let c = IntakeConfig::parse("prices: {price_1: free}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.on_cancel, c.pause_on_payment_failed, c.grace_period_seconds),
            (CancelPolicy::Delete, false, 604_800)
        );
    }

    #[test]
    fn refuses_what_could_never_work() {
        for bad in ["prices: {}", "prices: {price_1: Starter}", "prices: {price_1: system}", "prices: {p: a}\nextra: 1"]
        {
            assert!(IntakeConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
