//! The pure middle of the CreditLedger reconcile: which ledger account a
//! CreditLedger pays from, which period and allotment are in force, how spec
//! grants are named in the ledger, and what the status says, computed from
//! values without any IO. The ledger itself (`crate::ledger`) enforces the
//! money rules; this module only decides what to ask of it.
use chrono::{DateTime, Datelike, Months, SubsecRound, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, Desired};
use crate::api::ledger::Grant as SpecGrant;
use crate::api::{CreditLedger, CreditLedgerSpec, CreditLedgerStatus};
use crate::ledger::{Balance, Grant, Period};
use crate::names::{self, reason};
use crate::plans::PlanCatalog;

/// The ledger account of tenant `tenant` in `namespace`: `<namespace>/<tenant>`.
/// The proxy bills the same id, so it must never change for a tenant.
#[must_use]
pub fn account_id(namespace: &str, tenant: &str) -> String {
    format!("{namespace}/{tenant}")
}

/// The spec's grants as ledger grants. Ids are prefixed by the account
/// (`<namespace>/<tenant>/<grant id>`), so equal grant ids of different
/// tenants stay distinct while re-applying one tenant's grant credits once.
#[must_use]
pub fn ledger_grants(account: &str, grants: &[SpecGrant]) -> Vec<Grant> {
    grants
        .iter()
        .map(|g| Grant {
            id: format!("{account}/{}", g.id),
            amount: g.credits,
            reason: g.reason.clone().unwrap_or_default(),
        })
        .collect()
}

/// The monthly period containing `now`, for periods that start at `anchor`
/// and every calendar month after it (anchored on the 31st, February's period
/// starts on its last day). `None` while `now` is before `anchor`. The
/// anchor is cut to microseconds, the database's precision, so a period
/// read back compares equal to the one computed.
#[must_use]
pub fn period_at(anchor: DateTime<Utc>, now: DateTime<Utc>) -> Option<Period> {
    let anchor = anchor.trunc_subsecs(6);
    if now < anchor {
        return None;
    }
    let start_of = |k: u32| anchor.checked_add_months(Months::new(k));
    let months =
        (i64::from(now.year()) - i64::from(anchor.year())) * 12 + i64::from(now.month0()) - i64::from(anchor.month0());
    let mut k = u32::try_from(months.max(0)).ok()?;
    while k > 0 && start_of(k)? > now {
        k -= 1;
    }
    while start_of(k + 1)? <= now {
        k += 1;
    }
    Some(Period { start: start_of(k)?, end: start_of(k + 1)? })
}

/// Why a ledger cannot get its allotment right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Stable CamelCase reason for the `Ready` condition.
    pub reason: &'static str,
    /// What a person should do about it.
    pub message: String,
}

/// Where the allotment comes from: the spec when it sets
/// `allotmentPerPeriod`, otherwise the plan of the Tenant (`tenant_plan`,
/// `None` when the Tenant does not exist) in `plans`.
///
/// # Errors
/// [`Blocked`] when the spec leaves the allotment to a plan that cannot be found.
pub fn allotment(spec: &CreditLedgerSpec, tenant_plan: Option<&str>, plans: &PlanCatalog) -> Result<i64, Blocked> {
    if let Some(a) = spec.allotment_per_period {
        return Ok(a);
    }
    let Some(plan) = tenant_plan else {
        return Err(Blocked {
            reason: reason::TENANT_NOT_FOUND,
            message: format!(
                "spec.allotmentPerPeriod is not set and Tenant {:?} does not exist to take it from its plan",
                spec.tenant_ref.name
            ),
        });
    };
    plans.get(plan).map(|p| p.credits_per_month).ok_or_else(|| Blocked {
        reason: reason::UNKNOWN_PLAN,
        message: format!("plan {plan:?} is not in the plan catalog (known: {})", plans.names().join(", ")),
    })
}

/// Whether the ledger reports `Low` and `Exhausted` for `balance`: the two
/// facts that must reach status at once when they flip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub low: bool,
    pub exhausted: bool,
}

impl Flags {
    /// The flags of an account snapshot.
    #[must_use]
    pub fn of(balance: &Balance) -> Self {
        Self { low: balance.low(), exhausted: balance.exhausted() }
    }
}

/// What the reconcile observed, in the order it matters for `Ready`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The account is in its current period.
    Active(Balance),
    /// The account exists (grants apply) but its allotment is blocked.
    Blocked(Balance, Blocked),
    /// `spec.periodAnchor` is in the future: grants apply, no allotment yet.
    NotStarted(Balance, DateTime<Utc>),
}

impl Observed {
    fn balance(&self) -> &Balance {
        match self {
            Self::Active(b) | Self::Blocked(b, _) | Self::NotStarted(b, _) => b,
        }
    }
}

/// The status of `ledger` for what was `observed`; conditions keep their
/// `lastTransitionTime` unless they flip, so the same facts yield the same
/// status (and nothing is written).
#[must_use]
pub fn status(ledger: &CreditLedger, observed: &Observed, now: &Time) -> CreditLedgerStatus {
    let b = observed.balance();
    let flags = Flags::of(b);
    let generation = ledger.metadata.generation;
    let mut ready_note = String::new();
    if !ledger.spec.hard_limit {
        // The ledger never lets a balance go below zero; say so rather than
        // pretend to honour the field (see the field's documentation).
        ready_note = "; spec.hardLimit=false is not supported: credits are always a hard limit".into();
    }
    let ready = match observed {
        Observed::Active(_) => Desired::new(
            names::COND_READY,
            true,
            reason::READY,
            format!("credits mirrored from the ledger{ready_note}"),
        ),
        Observed::Blocked(_, blocked) => {
            Desired::new(names::COND_READY, false, blocked.reason, blocked.message.clone())
        }
        Observed::NotStarted(_, at) => Desired::new(
            names::COND_READY,
            false,
            reason::PERIOD_NOT_STARTED,
            format!("the first period starts at {}", at.to_rfc3339()),
        ),
    };
    let low = if flags.low {
        Desired::new(
            names::COND_LOW,
            true,
            reason::BELOW_THRESHOLD,
            format!("balance is under {}% of the allotment", b.low_threshold_pct),
        )
    } else {
        Desired::new(names::COND_LOW, false, reason::ABOVE_THRESHOLD, "")
    };
    let exhausted = if flags.exhausted {
        Desired::new(names::COND_EXHAUSTED, true, reason::NO_CREDITS_LEFT, "LLM calls are refused with 402")
    } else {
        Desired::new(names::COND_EXHAUSTED, false, reason::CREDITS_AVAILABLE, "")
    };
    let existing = ledger.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    CreditLedgerStatus {
        observed_generation: generation,
        balance: Some(b.balance),
        used_this_period: Some(b.used_this_period),
        allotment: Some(b.allotment),
        period_start: b.period_start,
        period_end: b.period_end,
        conditions: conditions::merge(existing, &[ready, low, exhausted], generation, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TenantRef;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("valid date")
    }

    fn spec(allotment: Option<i64>) -> CreditLedgerSpec {
        CreditLedgerSpec {
            tenant_ref: TenantRef { name: "acme".into() },
            allotment_per_period: allotment,
            period_anchor: None,
            grants: vec![],
            low_balance_percent: 20,
            hard_limit: true,
        }
    }

    fn balance(balance: i64, allotment: i64) -> Balance {
        Balance {
            account: "ns/acme".into(),
            balance,
            reserved: 0,
            available: balance,
            used_this_period: allotment - balance,
            allotment,
            low_threshold_pct: 20,
            period_start: Some(at(2026, 11, 1, 0)),
            period_end: Some(at(2026, 12, 1, 0)),
        }
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    #[test]
    fn periods_are_calendar_months_from_the_anchor() {
        let anchor = at(2026, 1, 15, 9);
        assert_eq!(period_at(anchor, at(2026, 1, 1, 0)), None);
        assert_eq!(period_at(anchor, anchor), Some(Period { start: anchor, end: at(2026, 2, 15, 9) }));
        let p = period_at(anchor, at(2026, 11, 23, 10)).expect("period");
        assert_eq!((p.start, p.end), (at(2026, 11, 15, 9), at(2026, 12, 15, 9)));
        // Just before the boundary stays in the old period; at it the new one starts.
        let p = period_at(anchor, at(2026, 12, 15, 8)).expect("period");
        assert_eq!(p.start, at(2026, 11, 15, 9));
        assert_eq!(period_at(anchor, at(2026, 12, 15, 9)).expect("period").start, at(2026, 12, 15, 9));
        // Across a year.
        assert_eq!(period_at(anchor, at(2027, 1, 20, 0)).expect("period").start, at(2027, 1, 15, 9));
    }

    #[test]
    fn anchors_on_the_31st_clamp_to_short_months() {
        let anchor = at(2026, 1, 31, 0);
        let feb = period_at(anchor, at(2026, 2, 28, 12)).expect("period");
        assert_eq!((feb.start, feb.end), (at(2026, 2, 28, 0), at(2026, 3, 31, 0)));
        assert_eq!(period_at(anchor, at(2026, 2, 27, 0)).expect("period").start, anchor);
    }

    #[test]
    fn allotment_from_spec_else_from_the_tenants_plan() {
        let plans = PlanCatalog::builtin();
        assert_eq!(allotment(&spec(Some(7)), None, &plans), Ok(7));
        assert_eq!(allotment(&spec(None), Some("starter"), &plans), Ok(500_000));
        assert_eq!(allotment(&spec(None), None, &plans).map_err(|b| b.reason), Err(reason::TENANT_NOT_FOUND));
        assert_eq!(allotment(&spec(None), Some("gold"), &plans).map_err(|b| b.reason), Err(reason::UNKNOWN_PLAN));
    }

    #[test]
    fn grant_ids_are_prefixed_by_the_account() {
        let g = SpecGrant { id: "topup-1".into(), credits: 5, reason: None };
        let out = ledger_grants("ns/acme", &[g]);
        assert_eq!(out, vec![Grant { id: "ns/acme/topup-1".into(), amount: 5, reason: String::new() }]);
    }

    #[test]
    fn low_and_exhausted_follow_the_balance_and_status_is_stable() {
        let mut cl = CreditLedger::new("acme", spec(Some(1000)));
        cl.metadata.generation = Some(2);
        let s = status(&cl, &Observed::Active(balance(500, 1000)), &t(10));
        assert!(conditions::is_true(&s.conditions, names::COND_READY));
        assert!(!conditions::is_true(&s.conditions, names::COND_LOW));
        assert_eq!((s.balance, s.used_this_period, s.allotment), (Some(500), Some(500), Some(1000)));
        assert_eq!(s.observed_generation, Some(2));
        cl.status = Some(s.clone());
        assert_eq!(status(&cl, &Observed::Active(balance(500, 1000)), &t(99)), s);

        let low = status(&cl, &Observed::Active(balance(199, 1000)), &t(20));
        assert!(conditions::is_true(&low.conditions, names::COND_LOW));
        assert!(!conditions::is_true(&low.conditions, names::COND_EXHAUSTED));
        let empty = status(&cl, &Observed::Active(balance(0, 1000)), &t(30));
        assert!(conditions::is_true(&empty.conditions, names::COND_EXHAUSTED));
        assert_eq!(Flags::of(&balance(0, 1000)), Flags { low: true, exhausted: true });
    }

    #[test]
    fn blocked_and_unsupported_settings_are_reported() {
        let mut cl = CreditLedger::new("acme", spec(None));
        let blocked = Blocked { reason: reason::TENANT_NOT_FOUND, message: "no tenant".into() };
        let s = status(&cl, &Observed::Blocked(balance(0, 0), blocked), &t(1));
        let ready = conditions::find(&s.conditions, names::COND_READY).expect("ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::TENANT_NOT_FOUND));
        cl.spec.hard_limit = false;
        let s = status(&cl, &Observed::Active(balance(10, 10)), &t(1));
        let ready = conditions::find(&s.conditions, names::COND_READY).expect("ready");
        assert!(ready.message.contains("hardLimit"), "{}", ready.message);
    }
}
