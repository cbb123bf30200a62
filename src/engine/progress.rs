//! Pure bookkeeping of a TenantInstance's progress: the `steps` list a person
//! reads, the per-step and kstatus conditions and the phase. No I/O, so every
//! rule here is unit-tested; the reconciler only feeds it facts.
//!
//! Timestamps change only on transitions, so recomputing from the same facts
//! yields an identical status and the controller writes nothing.
use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, Desired};
use crate::api::{Phase, StepName, StepState, StepStatus, TenantInstanceStatus};
use crate::names::{self, reason};

/// What one step reported in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Converged.
    Done(String),
    /// Started or waiting on a platform.
    Working(String),
    /// Failed; retried with backoff.
    Failed(String),
    /// Blocked until the spec or the platform credentials change.
    Stalled(String),
    /// Not wanted by the spec.
    Skipped,
    /// Asked for by the spec but not included in the plan: skipped, with a
    /// message saying so (the step condition's reason is `ExcludedByPlan`).
    Excluded(String),
}

impl Report {
    fn state(&self) -> StepState {
        match self {
            Self::Done(_) => StepState::Done,
            Self::Working(_) => StepState::InProgress,
            Self::Failed(_) | Self::Stalled(_) => StepState::Failed,
            Self::Skipped | Self::Excluded(_) => StepState::Skipped,
        }
    }

    fn message(&self) -> Option<String> {
        match self {
            Self::Done(m) | Self::Working(m) | Self::Failed(m) | Self::Stalled(m) | Self::Excluded(m) => {
                Some(m.clone())
            }
            Self::Skipped => None,
        }
    }
}

/// A state change worth an Event: `(step, from, to, message)`.
pub type Transition = (StepName, StepState, StepState, String);

/// Makes `steps` list exactly the steps in `order`, keeping recorded progress.
pub fn align(steps: &mut Vec<StepStatus>, order: &[StepName]) {
    let mut aligned = Vec::with_capacity(order.len());
    for name in order {
        let existing = steps.iter().find(|s| s.name == *name).cloned();
        aligned.push(existing.unwrap_or(StepStatus {
            name: *name,
            state: StepState::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            message: None,
        }));
    }
    *steps = aligned;
}

/// Records `report` for `name`; returns the transition when the state changed.
pub fn record(steps: &mut [StepStatus], name: StepName, report: &Report, now: DateTime<Utc>) -> Option<Transition> {
    let step = steps.iter_mut().find(|s| s.name == name)?;
    let to = report.state();
    let from = step.state;
    let message = report.message();
    if from == to {
        if step.message != message {
            step.message = message;
        }
        return None;
    }
    match to {
        StepState::InProgress => {
            // A fresh start or a retry after a failure counts as an attempt;
            // so does a converged step that has to work again (drift).
            step.attempts = step.attempts.saturating_add(1);
            if step.started_at.is_none() || from == StepState::Done {
                step.started_at = Some(now);
            }
            step.finished_at = None;
        }
        StepState::Done => {
            if step.started_at.is_none() {
                step.started_at = Some(now);
                step.attempts = step.attempts.max(1);
            }
            step.finished_at = Some(now);
        }
        StepState::Failed => {
            if from != StepState::InProgress {
                step.attempts = step.attempts.saturating_add(1);
            }
            step.started_at.get_or_insert(now);
            step.finished_at = None;
        }
        StepState::Skipped | StepState::Pending => {
            step.started_at = None;
            step.finished_at = None;
            step.attempts = 0;
        }
    }
    step.state = to;
    step.message.clone_from(&message);
    Some((name, from, to, message.unwrap_or_default()))
}

/// The condition type of one step, e.g. `DatabaseReady`.
#[must_use]
pub fn step_condition(name: StepName) -> &'static str {
    match name {
        StepName::Database => "DatabaseReady",
        StepName::Schema => "SchemaReady",
        StepName::Migrations => "MigrationsReady",
        StepName::AdminUser => "AdminUserReady",
        StepName::Credentials => "CredentialsReady",
        StepName::Workspace => "WorkspaceReady",
        StepName::Service => "ServiceReady",
        StepName::Frontend => "FrontendReady",
        StepName::Health => "HealthReady",
        StepName::Notify => "NotifyReady",
    }
}

/// Whether a step's result decides readiness: a welcome email that failed
/// never makes an instance unready.
#[must_use]
pub fn gates_ready(name: StepName) -> bool {
    name != StepName::Notify
}

/// The Stalled reason while deletion is blocked (retried, never held).
pub const DELETE_BLOCKED: &str = "DeleteBlocked";

/// Facts the summary needs besides the steps.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub generation: Option<i64>,
    pub paused: bool,
    pub deleting: bool,
    /// A terminal problem: `(reason, message)`.
    pub stalled: Option<(&'static str, String)>,
    /// Deletion is blocked (e.g. a platform is unreachable): the message.
    pub delete_blocked: Option<String>,
    /// The instance served when the pass began and still does while it
    /// updates live objects (see `run::still_serving`): Ready stays true and
    /// the phase `Ready` while `Reconciling` names the step.
    pub serving: bool,
}

/// Where the steps stand, read once for the summary.
struct Standing<'s> {
    /// Every step that gates readiness is done or skipped.
    all_done: bool,
    /// The first step that is not done or skipped.
    current: Option<&'s StepStatus>,
}

impl<'s> Standing<'s> {
    fn of(steps: &'s [StepStatus]) -> Self {
        let finished = |s: &StepStatus| matches!(s.state, StepState::Done | StepState::Skipped);
        let mut gating = steps.iter().filter(|s| gates_ready(s.name)).peekable();
        let all_done = gating.peek().is_some() && gating.all(finished);
        Self { all_done, current: steps.iter().find(|s| !finished(s)) }
    }
}

/// Whether every step that gates readiness is done or skipped.
#[must_use]
pub fn converged(steps: &[StepStatus]) -> bool {
    Standing::of(steps).all_done
}

/// Recomputes phase, current step and conditions from `status.steps` and `facts`.
pub fn summarize(status: &mut TenantInstanceStatus, facts: &Facts, now: &Time) {
    let standing = Standing::of(&status.steps);
    let phase = phase(status, facts, &standing);
    let current_step = match phase {
        Phase::Ready if standing.all_done => None,
        _ => standing.current.map(|s| s.name.as_str().to_string()),
    };
    let mut desired =
        vec![ready_condition(facts, &standing), reconciling_condition(facts, &standing), stalled_condition(facts)];
    desired.extend(status.steps.iter().map(step_desired));
    let conditions = conditions::merge(&status.conditions, &desired, facts.generation, now);
    status.phase = Some(phase);
    status.observed_generation = facts.generation;
    status.current_step = current_step;
    status.conditions = conditions;
}

fn phase(status: &TenantInstanceStatus, facts: &Facts, standing: &Standing<'_>) -> Phase {
    let was_ready = status.phase == Some(Phase::Ready) || status.phase == Some(Phase::Degraded);
    if facts.deleting {
        Phase::Deleting
    } else if facts.stalled.is_some() {
        Phase::Failed
    } else if standing.all_done || facts.serving {
        Phase::Ready
    } else if was_ready && status.steps.iter().any(|s| s.state == StepState::Done) {
        Phase::Degraded
    } else if status.steps.iter().all(|s| s.state == StepState::Pending) {
        Phase::Pending
    } else {
        Phase::Provisioning
    }
}

fn ready_condition(facts: &Facts, standing: &Standing<'_>) -> Desired<'static> {
    if facts.deleting {
        Desired::new(names::COND_READY, false, reason::DELETING, "the instance is being deleted")
    } else if standing.all_done {
        Desired::new(names::COND_READY, true, reason::READY, "every step converged")
    } else if let Some((r, m)) = &facts.stalled {
        Desired::new(names::COND_READY, false, r, m.clone())
    } else if facts.serving {
        let step = standing.current.map_or("", |s| s.name.as_str());
        Desired::new(names::COND_READY, true, reason::READY, format!("serving while step {step} converges"))
    } else {
        let msg = standing.current.map_or_else(String::new, |s| {
            let m = s.message.clone().unwrap_or_else(|| state_word(s.state).to_string());
            format!("step {}: {m}", s.name.as_str())
        });
        Desired::new(names::COND_READY, false, reason::PROGRESSING, msg)
    }
}

/// A step's state as people read it (never the `Debug` form).
fn state_word(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::InProgress => "in progress",
        StepState::Done => "done",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
    }
}

fn reconciling_condition(facts: &Facts, standing: &Standing<'_>) -> Desired<'static> {
    if facts.deleting {
        let msg = facts.delete_blocked.clone().unwrap_or_else(|| "deleting external objects".into());
        Desired::new(names::COND_RECONCILING, true, reason::DELETING, msg)
    } else if facts.paused {
        Desired::new(names::COND_RECONCILING, false, reason::PAUSED, "spec.paused is set: no platform is called")
    } else if standing.all_done || facts.stalled.is_some() {
        Desired::new(names::COND_RECONCILING, false, reason::IDLE, "")
    } else {
        let msg = standing.current.map_or_else(String::new, |s| format!("working on step {}", s.name.as_str()));
        Desired::new(names::COND_RECONCILING, true, reason::PROGRESSING, msg)
    }
}

fn stalled_condition(facts: &Facts) -> Desired<'static> {
    match (&facts.stalled, &facts.delete_blocked) {
        (Some((r, m)), _) => Desired::new(names::COND_STALLED, true, r, m.clone()),
        (None, Some(m)) => Desired::new(names::COND_STALLED, true, DELETE_BLOCKED, m.clone()),
        (None, None) => Desired::new(names::COND_STALLED, false, reason::NOT_STALLED, ""),
    }
}

/// The per-step condition, e.g. `DatabaseReady`. A skipped step carries a
/// message only when the plan excludes what the spec asks for
/// ([`Report::Excluded`]): its reason is then `ExcludedByPlan`.
fn step_desired(s: &StepStatus) -> Desired<'static> {
    let ok = matches!(s.state, StepState::Done | StepState::Skipped);
    let reason = match s.state {
        StepState::Pending => "Pending",
        StepState::InProgress => "InProgress",
        StepState::Done => "Done",
        StepState::Failed => "Failed",
        StepState::Skipped if s.message.is_some() => reason::EXCLUDED_BY_PLAN,
        StepState::Skipped => "Skipped",
    };
    Desired::new(step_condition(s.name), ok, reason, s.message.clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn align_keeps_progress_and_orders() {
        let mut steps = Vec::new();
        align(&mut steps, &[StepName::Database, StepName::Service]);
        record(&mut steps, StepName::Service, &Report::Working("x".into()), t(0));
        align(&mut steps, &[StepName::Database, StepName::Schema, StepName::Service]);
        assert_eq!(
            steps.iter().map(|s| s.name).collect::<Vec<_>>(),
            [StepName::Database, StepName::Schema, StepName::Service]
        );
        assert_eq!(steps[2].state, StepState::InProgress);
    }

    #[test]
    fn transitions_count_attempts_and_times() {
        let mut steps = Vec::new();
        align(&mut steps, &[StepName::Database]);
        let tr = record(&mut steps, StepName::Database, &Report::Working("creating".into()), t(0));
        assert_eq!(tr.map(|t| (t.1, t.2)), Some((StepState::Pending, StepState::InProgress)));
        assert_eq!(steps[0].attempts, 1);
        assert!(record(&mut steps, StepName::Database, &Report::Working("polling".into()), t(1)).is_none());
        assert_eq!(steps[0].message.as_deref(), Some("polling"));
        record(&mut steps, StepName::Database, &Report::Failed("503".into()), t(2));
        assert_eq!(steps[0].attempts, 1, "a failure while working is the same attempt");
        record(&mut steps, StepName::Database, &Report::Working("retry".into()), t(3));
        assert_eq!(steps[0].attempts, 2);
        record(&mut steps, StepName::Database, &Report::Done("ok".into()), t(4));
        assert_eq!(steps[0].started_at, Some(t(0)));
        assert_eq!(steps[0].finished_at, Some(t(4)));
        assert!(record(&mut steps, StepName::Database, &Report::Done("ok".into()), t(5)).is_none());
        assert_eq!(steps[0].finished_at, Some(t(4)), "steady state changes nothing");
    }

    #[test]
    fn summary_is_ready_only_when_gating_steps_are_done() {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Database, StepName::Notify]);
        let facts = Facts { generation: Some(3), ..Facts::default() };
        summarize(&mut st, &facts, &now());
        assert_eq!(st.phase, Some(Phase::Pending));
        record(&mut st.steps, StepName::Database, &Report::Done("ok".into()), t(0));
        record(&mut st.steps, StepName::Notify, &Report::Failed("smtp down".into()), t(0));
        summarize(&mut st, &facts, &now());
        assert_eq!(st.phase, Some(Phase::Ready));
        assert!(conditions::is_true(&st.conditions, names::COND_READY));
        assert!(!conditions::is_true(&st.conditions, "NotifyReady"));
        assert_eq!(st.observed_generation, Some(3));
        let before = st.clone();
        summarize(&mut st, &facts, &now());
        assert_eq!(before, st, "recomputing from the same facts is identical");
    }

    #[test]
    fn regressions_degrade_and_stalls_fail() {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Database, StepName::Service]);
        record(&mut st.steps, StepName::Database, &Report::Done("ok".into()), t(0));
        record(&mut st.steps, StepName::Service, &Report::Done("ok".into()), t(0));
        summarize(&mut st, &Facts::default(), &now());
        record(&mut st.steps, StepName::Service, &Report::Working("recreating".into()), t(1));
        summarize(&mut st, &Facts::default(), &now());
        assert_eq!(st.phase, Some(Phase::Degraded));
        assert_eq!(st.current_step.as_deref(), Some("service"));
        let stalled = Facts { stalled: Some(("Unauthorized", "railway: 401".into())), ..Facts::default() };
        summarize(&mut st, &stalled, &now());
        assert_eq!(st.phase, Some(Phase::Failed));
        assert!(conditions::is_true(&st.conditions, names::COND_STALLED));
        assert!(!conditions::is_true(&st.conditions, names::COND_RECONCILING));
    }

    fn served() -> TenantInstanceStatus {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Service, StepName::Health]);
        record(&mut st.steps, StepName::Service, &Report::Done("ok".into()), t(0));
        record(&mut st.steps, StepName::Health, &Report::Done("200".into()), t(0));
        summarize(&mut st, &Facts { generation: Some(1), ..Facts::default() }, &now());
        st
    }

    #[test]
    fn an_update_of_a_serving_instance_keeps_it_ready_and_reconciling() {
        let mut st = served();
        record(&mut st.steps, StepName::Service, &Report::Working("updated; verifying".into()), t(1));
        let facts = Facts { generation: Some(2), serving: true, ..Facts::default() };
        summarize(&mut st, &facts, &now());
        assert_eq!(st.phase, Some(Phase::Ready), "an edit is not Degraded");
        assert!(conditions::is_true(&st.conditions, names::COND_READY));
        let reconciling = conditions::find(&st.conditions, names::COND_RECONCILING).unwrap();
        assert_eq!((reconciling.status.as_str(), reconciling.message.as_str()), ("True", "working on step service"));
        assert_eq!(st.current_step.as_deref(), Some("service"));
        assert!(st.conditions.iter().all(|c| c.observed_generation == Some(2)));
        assert_eq!(st.observed_generation, Some(2));
        // The same step, no longer serving (re-created, failing): Degraded.
        summarize(&mut st, &Facts { generation: Some(2), ..Facts::default() }, &now());
        assert_eq!(st.phase, Some(Phase::Degraded));
        assert!(!conditions::is_true(&st.conditions, names::COND_READY));
    }

    #[test]
    fn a_stalled_instance_is_unready_for_the_stalls_reason() {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Database]);
        let facts = Facts { stalled: Some(("PlanMismatch", "wrong plan".into())), ..Facts::default() };
        summarize(&mut st, &facts, &now());
        let ready = conditions::find(&st.conditions, names::COND_READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str(), ready.message.as_str()),
            ("False", "PlanMismatch", "wrong plan")
        );
        assert_eq!(st.phase, Some(Phase::Failed));
    }

    #[test]
    fn a_component_the_plan_excludes_says_so_and_an_omitted_one_is_plainly_skipped() {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Database, StepName::Frontend]);
        record(&mut st.steps, StepName::Database, &Report::Skipped, t(0));
        let why = "plan free does not include a frontend; upgrade the plan or remove components.frontend";
        record(&mut st.steps, StepName::Frontend, &Report::Excluded(why.into()), t(0));
        summarize(&mut st, &Facts::default(), &now());
        assert_eq!(st.steps[1].message.as_deref(), Some(why));
        let c = conditions::find(&st.conditions, "FrontendReady").unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("True", "ExcludedByPlan", why));
        let c = conditions::find(&st.conditions, "DatabaseReady").unwrap();
        assert_eq!((c.reason.as_str(), c.message.as_str()), ("Skipped", ""));
        // Once the spec stops asking for it: a plain skip again.
        record(&mut st.steps, StepName::Frontend, &Report::Skipped, t(1));
        summarize(&mut st, &Facts::default(), &now());
        let c = conditions::find(&st.conditions, "FrontendReady").unwrap();
        assert_eq!((c.reason.as_str(), c.message.as_str()), ("Skipped", ""));
    }

    #[test]
    fn messages_name_states_in_words() {
        let mut st = TenantInstanceStatus::default();
        align(&mut st.steps, &[StepName::Database]);
        record(&mut st.steps, StepName::Database, &Report::Skipped, t(0));
        st.steps[0].state = StepState::InProgress;
        summarize(&mut st, &Facts::default(), &now());
        let ready = conditions::find(&st.conditions, names::COND_READY).unwrap();
        assert_eq!(ready.message, "step database: in progress");
    }
}
