//! The pure middle of the CreditLedger reconcile: which ledger account a
//! CreditLedger drives (only its owning Tenant's), which period and
//! allotment are in force, how spec grants are named in the ledger, and what
//! the status says, computed from values without any IO. The ledger itself
//! (`crate::ledger`) enforces the money rules; this module only decides what
//! to ask of it.
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, SubsecRound, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Resource, ResourceExt};

use crate::api::conditions::{self, Desired};
use crate::api::ledger::Grant as SpecGrant;
use crate::api::{CreditLedger, CreditLedgerSpec, CreditLedgerStatus, Tenant};
use crate::ledger::{Balance, Grant, Period};
use crate::names::{self, reason};
use crate::plans::PlanCatalog;

/// Why `ledger` drives no account while its Tenant does not exist.
#[must_use]
pub fn tenant_not_found(ledger: &CreditLedger) -> Blocked {
    Blocked {
        reason: reason::TENANT_NOT_FOUND,
        message: format!(
            "Tenant \"{}\" does not exist in namespace \"{}\": nothing is billed or credited. Create the Tenant \
             (it adopts this ledger) or delete this CreditLedger",
            ledger.spec.tenant_ref.name,
            ledger.namespace().unwrap_or_default()
        ),
    }
}

/// The account `ledger` drives, given its Tenant as observed:
/// `names::ledger_account` of the Tenant's uid, and only when that Tenant is
/// the ledger's controller (an ownerReference of kind Tenant with its uid and
/// `controller: true`, as the Tenant controller creates it). The ledger's
/// name equals its `tenantRef` (admission checks it), so one Tenant drives
/// at most one ledger.
///
/// # Errors
/// [`Blocked`] (`NotOwned`, `AccountChanged`) when the ledger must not touch
/// any account; the message says what to do.
pub fn account_of(ledger: &CreditLedger, tenant: &Tenant) -> Result<String, Blocked> {
    let ns = ledger.namespace().unwrap_or_default();
    let name = &ledger.spec.tenant_ref.name;
    let uid = tenant.uid().unwrap_or_default();
    let controller = ledger.owner_references().iter().find(|o| o.controller == Some(true));
    match controller {
        Some(o) if o.uid == uid && o.kind == Tenant::kind(&()) => {}
        Some(o) => {
            return Err(Blocked {
                reason: reason::NOT_OWNED,
                message: format!(
                    "this CreditLedger is controlled by {} \"{}\" (uid {}), not by Tenant \"{name}\" (uid {uid}): \
                     nothing is billed or credited. Delete it; the Tenant controller creates the Tenant's own ledger",
                    o.kind, o.name, o.uid
                ),
            });
        }
        None => {
            return Err(Blocked {
                reason: reason::NOT_OWNED,
                message: format!(
                    "Tenant \"{name}\" (uid {uid}) does not own this CreditLedger yet: nothing is billed or \
                     credited until the Tenant controller adopts it (it adds itself as controller owner)"
                ),
            });
        }
    }
    let account = names::ledger_account(&ns, &tenant.name_any(), &uid);
    match ledger.status.as_ref().and_then(|s| s.account.as_deref()) {
        Some(recorded) if recorded != account => Err(Blocked {
            reason: reason::ACCOUNT_CHANGED,
            message: format!(
                "this CreditLedger drove account \"{recorded}\", but its owner is now Tenant \"{name}\" with uid \
                 {uid}: a ledger never moves to another account. Delete it; the Tenant controller creates a \
                 new one for this Tenant"
            ),
        }),
        _ => Ok(account),
    }
}

/// The spec's grants as ledger grants. Ids are prefixed by the account
/// (`<namespace>/<tenant>/<tenant uid>/<grant id>`), so equal grant ids of
/// different tenants (a Tenant re-created under the same name included)
/// stay distinct while re-applying one tenant's grant credits once.
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

/// Whether a new period may start: only once the stored one is over (or
/// none was ever started). The computed period alone never decides it, so
/// no change of anchor (a re-created ledger's included) starts a period
/// early and refills the allotment.
#[must_use]
pub fn period_due(stored: &Balance, now: DateTime<Utc>) -> bool {
    match (stored.period_start, stored.period_end) {
        (Some(_), Some(end)) => end <= now,
        _ => true,
    }
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
                "spec.allotmentPerPeriod is not set and Tenant \"{}\" does not exist to take it from its plan",
                spec.tenant_ref.name
            ),
        });
    };
    plans.get(plan).map(|p| p.credits_per_month).ok_or_else(|| Blocked {
        reason: reason::UNKNOWN_PLAN,
        message: format!("plan \"{plan}\" is not in the plan catalog (known: {})", plans.names().join(", ")),
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
    /// The ledger may not touch any account (see [`account_of`]); nothing
    /// was read from or written to the ledger.
    Unbound(Blocked),
    /// The account is in its current period.
    Active(String, Balance),
    /// The account exists (grants apply) but its allotment is blocked.
    Blocked(String, Balance, Blocked),
    /// `spec.periodAnchor` is in the future: grants apply, no allotment yet.
    NotStarted(String, Balance, DateTime<Utc>),
}

/// The term an account is in: what its ledger allots now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// `period` contains now and allots `allotment` credits.
    Active { period: Period, allotment: i64 },
    /// No allotment can be decided; grants still apply.
    Blocked(Blocked),
    /// The first period starts at this time (`spec.periodAnchor` lies ahead).
    NotStarted(DateTime<Utc>),
}

/// The term of `ledger`'s account at `now`, given its owning `tenant`: the
/// allotment (spec, else the Tenant's plan) and the period containing now.
#[must_use]
pub fn term(ledger: &CreditLedger, tenant: &Tenant, plans: &PlanCatalog, now: DateTime<Utc>) -> Term {
    let tenant_plan = ledger.spec.allotment_per_period.is_none().then_some(tenant.spec.stack.plan.as_str());
    match allotment(&ledger.spec, tenant_plan, plans) {
        Err(blocked) => Term::Blocked(blocked),
        Ok(allotment) => {
            let anchor = anchor(ledger, tenant, now);
            period_at(anchor, now).map_or(Term::NotStarted(anchor), |period| Term::Active { period, allotment })
        }
    }
}

/// Where the period grid starts: `spec.periodAnchor`, else the Tenant's
/// creation, not the ledger's (a ledger deleted and created again keeps its
/// Tenant's grid), else the ledger's, else `now`.
#[must_use]
pub fn anchor(ledger: &CreditLedger, tenant: &Tenant, now: DateTime<Utc>) -> DateTime<Utc> {
    let created = |meta: &kube::api::ObjectMeta| meta.creation_timestamp.as_ref().and_then(crate::api::time::to_chrono);
    ledger.spec.period_anchor.or_else(|| created(&tenant.metadata)).or_else(|| created(&ledger.metadata)).unwrap_or(now)
}

impl Term {
    /// When to reconcile again: at the latest after `resync`, earlier when a
    /// period boundary comes first. The stored period (in `balance`), not
    /// the computed one, decides when the next one may start.
    #[must_use]
    pub fn requeue_after(&self, balance: &Balance, now: DateTime<Utc>, resync: Duration) -> Duration {
        match self {
            Self::Active { period, .. } => {
                Some(until(now, balance.period_end.filter(|end| *end > now).unwrap_or(period.end)))
            }
            Self::NotStarted(at) => Some(until(now, *at)),
            Self::Blocked(_) => None,
        }
        .map_or(resync, |d| d.min(resync))
    }

    /// What the reconcile observed of `account` in this term.
    #[must_use]
    pub fn observed(self, account: String, balance: Balance) -> Observed {
        match self {
            Self::Active { .. } => Observed::Active(account, balance),
            Self::Blocked(blocked) => Observed::Blocked(account, balance, blocked),
            Self::NotStarted(at) => Observed::NotStarted(account, balance, at),
        }
    }
}

/// Time from `now` until just after `at` (at least a second), so a requeue
/// for a period boundary lands in the new period.
#[must_use]
pub fn until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default().max(Duration::ZERO) + Duration::from_secs(1)
}

/// The status of `ledger` for what was `observed`; conditions keep their
/// `lastTransitionTime` unless they flip, so the same facts yield the same
/// status (and nothing is written). An unbound ledger keeps the figures and
/// the `Low` / `Exhausted` it showed last (nothing was read) and reports
/// `Ready=False` and `Stalled=True` with the reason.
#[must_use]
pub fn status(ledger: &CreditLedger, observed: &Observed, now: &Time) -> CreditLedgerStatus {
    let generation = ledger.metadata.generation;
    let previous = ledger.status.clone().unwrap_or_default();
    let (account, b, ready, stalled) = match observed {
        Observed::Unbound(blocked) => return unbound_status(previous, blocked, generation, now),
        Observed::Active(a, b) => (
            a,
            b,
            Desired::new(names::COND_READY, true, reason::READY, "credits mirrored from the ledger"),
            not_stalled(),
        ),
        Observed::Blocked(a, b, blocked) => (a, b, not_ready(blocked), stalled(blocked)),
        Observed::NotStarted(a, b, at) => {
            let message = format!("the first period starts at {}", at.to_rfc3339());
            (a, b, Desired::new(names::COND_READY, false, reason::PERIOD_NOT_STARTED, message), not_stalled())
        }
    };
    CreditLedgerStatus {
        observed_generation: generation,
        account: Some(account.clone()),
        balance: Some(b.balance),
        used_this_period: Some(b.used_this_period),
        allotment: Some(b.allotment),
        period_start: b.period_start,
        period_end: b.period_end,
        conditions: conditions::merge(&previous.conditions, &[ready, stalled, low(b), exhausted(b)], generation, now),
    }
}

/// An unbound ledger's status: `Ready=False` and `Stalled=True` for
/// `blocked`; figures, `Low` and `Exhausted` as they were.
fn unbound_status(
    previous: CreditLedgerStatus,
    blocked: &Blocked,
    generation: Option<i64>,
    now: &Time,
) -> CreditLedgerStatus {
    let mut conditions =
        conditions::merge(&previous.conditions, &[not_ready(blocked), stalled(blocked)], generation, now);
    conditions.extend(
        previous.conditions.iter().filter(|c| c.type_ == names::COND_LOW || c.type_ == names::COND_EXHAUSTED).cloned(),
    );
    CreditLedgerStatus { observed_generation: generation, conditions, ..previous }
}

fn not_ready(blocked: &Blocked) -> Desired<'static> {
    Desired::new(names::COND_READY, false, blocked.reason, blocked.message.clone())
}

fn stalled(blocked: &Blocked) -> Desired<'static> {
    Desired::new(names::COND_STALLED, true, blocked.reason, blocked.message.clone())
}

fn not_stalled() -> Desired<'static> {
    Desired::new(names::COND_STALLED, false, reason::NOT_STALLED, "")
}

fn low(b: &Balance) -> Desired<'static> {
    if Flags::of(b).low {
        let message = format!("balance is under {}% of the allotment", b.low_threshold_pct);
        Desired::new(names::COND_LOW, true, reason::BELOW_THRESHOLD, message)
    } else {
        Desired::new(names::COND_LOW, false, reason::ABOVE_THRESHOLD, "")
    }
}

fn exhausted(b: &Balance) -> Desired<'static> {
    if Flags::of(b).exhausted {
        Desired::new(names::COND_EXHAUSTED, true, reason::NO_CREDITS_LEFT, "LLM calls are refused with 402")
    } else {
        Desired::new(names::COND_EXHAUSTED, false, reason::CREDITS_AVAILABLE, "")
    }
}

/// Whether `blocked` is news: status did not already show `Ready` false for
/// the same reason (one Warning Event when a ledger starts being refused,
/// not one per reconcile while it stays so).
#[must_use]
pub fn refused_anew(previous: Option<&CreditLedgerStatus>, blocked: &Blocked) -> bool {
    let ready_reason =
        previous.and_then(|s| conditions::find(&s.conditions, names::COND_READY)).map(|c| c.reason.as_str());
    ready_reason != Some(blocked.reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TenantRef;
    use chrono::TimeZone;

    const ACCOUNT: &str = "ns/acme/uid-1";

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
        }
    }

    fn balance(balance: i64, allotment: i64) -> Balance {
        Balance {
            account: ACCOUNT.into(),
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
    fn a_period_starts_only_once_the_stored_one_is_over() {
        let mut b = balance(500, 1000);
        b.period_start = None;
        b.period_end = None;
        assert!(period_due(&b, at(2026, 11, 15, 0)), "no period yet");
        let b = balance(500, 1000); // 2026-11-01 .. 2026-12-01
        // Mid-period, whatever period a (moved) anchor computes, nothing restarts.
        assert!(!period_due(&b, at(2026, 11, 20, 0)));
        assert!(period_due(&b, at(2026, 12, 1, 0)));
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
        let out = ledger_grants(ACCOUNT, &[g]);
        assert_eq!(out, vec![Grant { id: "ns/acme/uid-1/topup-1".into(), amount: 5, reason: String::new() }]);
    }

    #[test]
    fn low_and_exhausted_follow_the_balance_and_status_is_stable() {
        let mut cl = CreditLedger::new("acme", spec(Some(1000)));
        cl.metadata.generation = Some(2);
        let s = status(&cl, &Observed::Active(ACCOUNT.into(), balance(500, 1000)), &t(10));
        assert!(conditions::is_true(&s.conditions, names::COND_READY));
        assert!(!conditions::is_true(&s.conditions, names::COND_LOW));
        assert_eq!((s.balance, s.used_this_period, s.allotment), (Some(500), Some(500), Some(1000)));
        assert_eq!(s.observed_generation, Some(2));
        cl.status = Some(s.clone());
        assert_eq!(status(&cl, &Observed::Active(ACCOUNT.into(), balance(500, 1000)), &t(99)), s);

        let low = status(&cl, &Observed::Active(ACCOUNT.into(), balance(199, 1000)), &t(20));
        assert!(conditions::is_true(&low.conditions, names::COND_LOW));
        assert!(!conditions::is_true(&low.conditions, names::COND_EXHAUSTED));
        let empty = status(&cl, &Observed::Active(ACCOUNT.into(), balance(0, 1000)), &t(30));
        assert!(conditions::is_true(&empty.conditions, names::COND_EXHAUSTED));
        assert_eq!(Flags::of(&balance(0, 1000)), Flags { low: true, exhausted: true });
    }

    #[test]
    fn a_blocked_allotment_is_reported_as_stalled() {
        let cl = CreditLedger::new("acme", spec(None));
        let blocked = Blocked { reason: reason::UNKNOWN_PLAN, message: "no plan".into() };
        let s = status(&cl, &Observed::Blocked(ACCOUNT.into(), balance(0, 0), blocked), &t(1));
        let ready = conditions::find(&s.conditions, names::COND_READY).expect("ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason::UNKNOWN_PLAN));
        assert!(conditions::is_true(&s.conditions, names::COND_STALLED));
        assert_eq!(s.account.as_deref(), Some(ACCOUNT));
        let s = status(&cl, &Observed::Active(ACCOUNT.into(), balance(10, 10)), &t(1));
        assert!(!conditions::is_true(&s.conditions, names::COND_STALLED));
    }

    fn tenant(name: &str, uid: &str) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "Tenant",
            "metadata": { "name": name, "namespace": "ns", "uid": uid },
            "spec": { "displayName": "Acme", "contactEmail": "ops@acme.example", "plan": "free" }
        }))
        .expect("tenant")
    }

    fn ledger_owned_by(owner: Option<&Tenant>) -> CreditLedger {
        let mut cl = CreditLedger::new("acme", spec(None));
        cl.metadata.namespace = Some("ns".into());
        cl.metadata.owner_references = owner.map(|t| vec![t.controller_owner_ref(&()).expect("owner")]);
        cl
    }

    #[test]
    fn only_the_owning_tenant_gives_an_account_keyed_by_its_uid() {
        let acme = tenant("acme", "uid-1");
        let cl = ledger_owned_by(Some(&acme));
        assert_eq!(account_of(&cl, &acme), Ok(ACCOUNT.to_string()));
        assert_eq!(names::ledger_account("ns", "acme", "uid-1"), ACCOUNT);

        // No Tenant: nothing to bill, and the message says what to do.
        let blocked = tenant_not_found(&cl);
        assert_eq!(blocked.reason, reason::TENANT_NOT_FOUND);
        assert!(blocked.message.contains("Create the Tenant"), "{}", blocked.message);
        // Owned by nobody (hand-made), or by another object: not this Tenant's.
        let blocked = account_of(&ledger_owned_by(None), &acme).expect_err("unowned");
        assert_eq!(blocked.reason, reason::NOT_OWNED);
        assert!(blocked.message.contains("adopts"), "{}", blocked.message);
        let other = tenant("other", "uid-9");
        let blocked = account_of(&ledger_owned_by(Some(&other)), &acme).expect_err("foreign");
        assert_eq!(blocked.reason, reason::NOT_OWNED);
        assert!(blocked.message.contains("Delete it"), "{}", blocked.message);
        // A non-controller reference with the right uid is not ownership.
        let mut weak = ledger_owned_by(Some(&acme));
        weak.metadata.owner_references.as_mut().expect("refs")[0].controller = Some(false);
        assert_eq!(account_of(&weak, &acme).map_err(|b| b.reason), Err(reason::NOT_OWNED));

        // The same name with a new uid (a re-created Tenant) is another account...
        let again = tenant("acme", "uid-2");
        let fresh = ledger_owned_by(Some(&again));
        assert_eq!(account_of(&fresh, &again), Ok("ns/acme/uid-2".to_string()));
        // ...and a ledger that recorded the old one never moves to it.
        let mut moved = ledger_owned_by(Some(&again));
        moved.status = Some(CreditLedgerStatus { account: Some(ACCOUNT.into()), ..CreditLedgerStatus::default() });
        assert_eq!(account_of(&moved, &again).map_err(|b| b.reason), Err(reason::ACCOUNT_CHANGED));
    }

    #[test]
    fn an_unbound_ledger_is_stalled_and_keeps_what_it_showed() {
        let mut cl = CreditLedger::new("acme", spec(None));
        cl.metadata.generation = Some(3);
        cl.status = Some(status(&cl, &Observed::Active(ACCOUNT.into(), balance(0, 1000)), &t(1)));
        let blocked = Blocked { reason: reason::NOT_OWNED, message: "not yours".into() };
        let s = status(&cl, &Observed::Unbound(blocked), &t(2));
        let ready = conditions::find(&s.conditions, names::COND_READY).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            ("False", reason::NOT_OWNED, "not yours")
        );
        let stalled = conditions::find(&s.conditions, names::COND_STALLED).expect("stalled");
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", reason::NOT_OWNED));
        assert!(conditions::is_true(&s.conditions, names::COND_EXHAUSTED), "the last known Exhausted stays");
        assert_eq!((s.account.as_deref(), s.balance), (Some(ACCOUNT), Some(0)));
        // The same facts again write nothing.
        cl.status = Some(s.clone());
        let blocked = Blocked { reason: reason::NOT_OWNED, message: "not yours".into() };
        assert_eq!(status(&cl, &Observed::Unbound(blocked), &t(3)), s);
    }

    fn created(mut tenant: Tenant, at: DateTime<Utc>) -> Tenant {
        let ts = k8s_openapi::jiff::Timestamp::from_second(at.timestamp()).expect("time");
        tenant.metadata.creation_timestamp = Some(Time(ts));
        tenant
    }

    #[test]
    fn the_term_follows_the_allotment_and_the_tenants_period_grid() {
        let plans = PlanCatalog::builtin();
        let acme = created(tenant("acme", "uid-1"), at(2026, 1, 15, 9));
        let mut cl = ledger_owned_by(Some(&acme));
        cl.spec.allotment_per_period = Some(7);
        let now = at(2026, 3, 20, 0);
        let period = Period { start: at(2026, 3, 15, 9), end: at(2026, 4, 15, 9) };
        assert_eq!(term(&cl, &acme, &plans, now), Term::Active { period, allotment: 7 });
        // An anchor ahead: nothing allotted until then.
        cl.spec.period_anchor = Some(at(2026, 5, 1, 0));
        assert_eq!(term(&cl, &acme, &plans, now), Term::NotStarted(at(2026, 5, 1, 0)));
        // No allotment in the spec: the Tenant's plan, which must exist.
        cl.spec.allotment_per_period = None;
        let mut gold = acme.clone();
        gold.spec.stack.plan = "gold".into();
        assert!(matches!(term(&cl, &gold, &plans, now), Term::Blocked(b) if b.reason == reason::UNKNOWN_PLAN));
    }

    #[test]
    fn requeue_at_the_stored_periods_end_or_the_resync() {
        let resync = Duration::from_secs(30);
        let b = balance(500, 1000); // stored period ends 2026-12-01
        let computed =
            Term::Active { period: Period { start: at(2026, 11, 1, 0), end: at(2027, 1, 1, 0) }, allotment: 1 };
        let now = at(2026, 11, 30, 23) + chrono::TimeDelta::minutes(59) + chrono::TimeDelta::seconds(50);
        assert_eq!(computed.requeue_after(&b, now, resync), Duration::from_secs(11), "the stored end, plus a second");
        assert_eq!(computed.requeue_after(&b, at(2026, 11, 2, 0), resync), resync);
        // A stored period that is over: the computed period's end.
        let over = at(2026, 12, 31, 23) + chrono::TimeDelta::minutes(59);
        assert_eq!(computed.requeue_after(&b, over, Duration::from_secs(3600)), Duration::from_secs(61));
        let blocked = Term::Blocked(Blocked { reason: reason::UNKNOWN_PLAN, message: String::new() });
        assert_eq!(blocked.requeue_after(&b, now, resync), resync);
        assert_eq!(
            Term::NotStarted(now + chrono::TimeDelta::seconds(4)).requeue_after(&b, now, resync),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_refusal_is_news_once() {
        let blocked = Blocked { reason: reason::NOT_OWNED, message: "not yours".into() };
        let cl = CreditLedger::new("acme", spec(None));
        assert!(refused_anew(None, &blocked));
        let refused = status(&cl, &Observed::Unbound(blocked.clone()), &t(1));
        assert!(!refused_anew(Some(&refused), &blocked));
        let other = Blocked { reason: reason::ACCOUNT_CHANGED, message: String::new() };
        assert!(refused_anew(Some(&refused), &other));
    }
}
