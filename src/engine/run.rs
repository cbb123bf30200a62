//! One reconcile pass of a TenantInstance, in outline:
//! gate (plan known? stalled and unchanged? paused?) -> act (run the wanted
//! steps in order until one is not done, judging each result) -> record
//! (summarize, write status) -> requeue. The caller publishes the returned
//! Events. Teardown runs the external steps in reverse and verifies each
//! is gone.
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;

use super::progress::{self, DELETE_BLOCKED, Facts, Report, Transition};
use super::record::Recorder;
use super::steps::{Pass, StepResult};
use super::{Deps, Disposition, Engine, EngineError, wanted};
use crate::api::conditions;
use crate::api::{DeletionPolicy, StepName, StepState, TenantInstance};
use crate::names::{self, reason};
use crate::plans::Plan;
use crate::providers::budget;

/// How a pass ended, for the caller's requeue, metrics and Events.
#[derive(Debug)]
pub struct PassOutcome {
    pub action: Action,
    /// The category of a step's retryable failure (the pass already backed
    /// off through [`super::Host`]); `None` when no step failed.
    pub failed: Option<&'static str>,
    /// Events to publish about the instance, in order.
    pub notices: Vec<Notice>,
}

/// How a teardown pass ended.
#[derive(Debug)]
pub struct TeardownOutcome {
    /// Nothing of the instance is left: the finalizer may go.
    pub gone: bool,
    pub action: Action,
    /// Events to publish about the instance, in order.
    pub notices: Vec<Notice>,
}

/// An Event the engine asks its caller to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl PassOutcome {
    fn quiet(action: Action) -> Self {
        Self { action, failed: None, notices: Vec::new() }
    }
}

/// Converges `ti` (freshly read, not being deleted, finalizer in place).
///
/// # Errors
/// Only status-write failures (409 included): the step errors are recorded
/// in status and turned into requeues.
pub async fn apply(deps: &Deps<'_>, ti: &TenantInstance) -> Result<PassOutcome, EngineError> {
    let mut rec = Recorder::new(deps, ti);
    progress::align(&mut rec.status.steps, &StepName::ALL);
    let plan = match gate(deps.engine, ti) {
        Gate::Run(plan) => plan,
        Gate::Hold(wait) => return Ok(PassOutcome::quiet(Action::requeue(wait))),
        Gate::Idle(facts) => {
            progress::summarize(&mut rec.status, &facts, &now());
            rec.flush().await?;
            return Ok(PassOutcome::quiet(Action::await_change()));
        }
    };
    let mut pass = Pass::new(deps, ti, plan, rec);
    let walk = act(deps, &mut pass).await?;
    record(deps, ti, pass.rec, walk).await
}

/// Whether a pass runs the steps.
enum Gate<'p> {
    Run(&'p Plan),
    /// Stalled and unchanged: look again after this wait, touching nothing.
    Hold(Duration),
    /// Nothing to run (unknown plan, paused): record these facts and wait for a change.
    Idle(Facts),
}

fn gate<'p>(engine: &'p Engine, ti: &TenantInstance) -> Gate<'p> {
    let facts = Facts { generation: ti.metadata.generation, paused: ti.spec.paused, ..Facts::default() };
    let Some(plan) = engine.plans.get(&ti.spec.plan) else {
        let message =
            format!("plan {:?} is not in the plan catalog (known: {})", ti.spec.plan, engine.plans.names().join(", "));
        return Gate::Idle(Facts { stalled: Some((reason::UNKNOWN_PLAN, message)), ..facts });
    };
    if let Some(wait) = stall_hold(engine, ti) {
        return Gate::Hold(wait);
    }
    if ti.spec.paused {
        return Gate::Idle(facts);
    }
    Gate::Run(plan)
}

/// A stalled instance whose spec did not change waits for a change or the
/// slow retry instead of calling platforms again and again. Only stalls
/// this process recorded wait (see [`Engine::stalls_seen`]).
fn stall_hold(engine: &Engine, ti: &TenantInstance) -> Option<Duration> {
    let status = ti.status.as_ref()?;
    let stall = conditions::find(&status.conditions, names::COND_STALLED)?;
    let unchanged = status.observed_generation == ti.metadata.generation;
    let retry = Duration::from_secs(engine.args.stalled_retry_seconds);
    let wait = hold_for(stall, unchanged, retry, k8s_openapi::jiff::Timestamp::now())?;
    engine.saw_stall(ti).then_some(wait)
}

/// How much longer an unchanged instance stays held by `stall` (pure).
fn hold_for(
    stall: &Condition,
    unchanged: bool,
    retry: Duration,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<Duration> {
    let since =
        Duration::from_secs(u64::try_from(now.as_second() - stall.last_transition_time.0.as_second()).unwrap_or(0));
    let held = stall.status == "True" && unchanged && since < retry && stall.reason != DELETE_BLOCKED;
    held.then(|| retry - since)
}

/// What running the steps found.
struct Walk {
    transitions: Vec<Transition>,
    next: Duration,
    failed: Option<&'static str>,
    stalled: Option<(&'static str, String)>,
}

/// Runs the wanted steps in order until one that gates readiness is not done.
async fn act(deps: &Deps<'_>, pass: &mut Pass<'_>) -> Result<Walk, EngineError> {
    let engine = deps.engine;
    // A Ready instance whose spec did not change: this pass only looks for
    // drift, so it draws on the platform budgets at background priority.
    let drift = pass.ti.status.as_ref().is_some_and(|s| {
        s.observed_generation == pass.ti.metadata.generation && conditions::is_true(&s.conditions, names::COND_READY)
    });
    let started = Utc::now();
    let mut walk = Walk { transitions: Vec::new(), next: jittered(resync(engine)), failed: None, stalled: None };
    for (step, on) in wanted::steps(&pass.ti.spec, pass.plan) {
        if !on {
            walk.transitions.extend(progress::record(&mut pass.rec.status.steps, step, &Report::Skipped, started));
            continue;
        }
        let result = if drift { budget::background(pass.run(step)).await } else { pass.run(step).await };
        let Some(report) = walk.judge(deps, pass, step, result, drift)? else { break };
        let blocking = !matches!(report, Report::Done(_)) && progress::gates_ready(step);
        walk.transitions.extend(progress::record(&mut pass.rec.status.steps, step, &report, started));
        if blocking {
            break;
        }
    }
    Ok(walk)
}

impl Walk {
    /// Turns one step's result into its report and the pass's next look:
    /// the one place an engine error becomes a requeue, a stall or a
    /// backoff. `None` ends a throttled drift check without a report.
    fn judge(
        &mut self,
        deps: &Deps<'_>,
        pass: &Pass<'_>,
        step: StepName,
        result: Result<StepResult, EngineError>,
        drift: bool,
    ) -> Result<Option<Report>, EngineError> {
        let engine = deps.engine;
        let e = match result {
            Ok(StepResult::Done(m)) => return Ok(Some(Report::Done(m))),
            Ok(StepResult::Waiting(m)) => {
                // The first look at something that just started comes soon
                // (many operations finish within a second); once the step
                // reports the same wait again, every poll.
                self.next = if was_waiting(pass, step, &m) { engine.poll() } else { engine.first_poll() };
                return Ok(Some(Report::Working(m)));
            }
            Err(e) => e,
        };
        match e.disposition() {
            Disposition::Conflict => Err(e),
            Disposition::Throttle => {
                self.next = e.retry_after().unwrap_or_else(|| engine.poll()).max(engine.poll());
                if drift {
                    // Provisioning goes first: the instance stays Ready as
                    // recorded and the check resumes later.
                    self.next = drift_retry(self.next, resync(engine));
                    return Ok(None);
                }
                Ok(Some(Report::Working(format!("waiting: {e}"))))
            }
            Disposition::Stall => {
                engine.remember_stall(pass.ti);
                let message = e.to_string();
                self.stalled = Some((e.category(), format!("step {}: {message}", step.as_str())));
                self.next = Duration::from_secs(engine.args.stalled_retry_seconds);
                Ok(Some(Report::Stalled(message)))
            }
            Disposition::Retry => {
                self.failed = Some(e.category());
                self.next = e.retry_after().unwrap_or_else(|| deps.host.backoff_after_failure(pass.ti));
                Ok(Some(Report::Failed(e.to_string())))
            }
        }
    }
}

/// Whether `step` already reported the wait `message`.
fn was_waiting(pass: &Pass<'_>, step: StepName, message: &str) -> bool {
    pass.rec
        .status
        .steps
        .iter()
        .any(|s| s.name == step && s.state == StepState::InProgress && s.message.as_deref() == Some(message))
}

/// Summarizes what the walk found, writes the status and says when to look again.
async fn record(
    deps: &Deps<'_>,
    ti: &TenantInstance,
    mut rec: Recorder<'_>,
    walk: Walk,
) -> Result<PassOutcome, EngineError> {
    if walk.failed.is_none() {
        deps.host.reset_backoff(ti);
    }
    if let Some(url) = rec.status.external.as_ref().and_then(|e| e.railway.as_ref()).and_then(|r| r.domain.clone()) {
        rec.status.urls.get_or_insert_default().service = Some(format!("https://{url}"));
    }
    let facts = Facts { generation: ti.metadata.generation, stalled: walk.stalled, ..Facts::default() };
    progress::summarize(&mut rec.status, &facts, &now());
    rec.flush().await?;
    let notices = walk.transitions.iter().map(notice).collect();
    Ok(PassOutcome { action: Action::requeue(walk.next), failed: walk.failed, notices })
}

/// The Event announcing one step transition.
fn notice((step, _from, to, message): &Transition) -> Notice {
    let (warning, reason) = match to {
        StepState::Done => (false, "StepDone"),
        StepState::InProgress => (false, "StepStarted"),
        StepState::Failed => (true, "StepFailed"),
        StepState::Skipped => (false, "StepSkipped"),
        StepState::Pending => (false, "StepPending"),
    };
    let note = if message.is_empty() { step.as_str().to_string() } else { format!("{}: {message}", step.as_str()) };
    Notice { warning, reason, action: "Provision", note }
}

/// Deletes the instance's external objects in reverse order (unless the
/// policy is Orphan), verifying each is gone. `gone` when nothing of the
/// instance is left and the finalizer may go.
///
/// # Errors
/// Status-write failures; platform failures are recorded as a
/// `DeleteBlocked` condition and retried.
pub async fn teardown(deps: &Deps<'_>, ti: &TenantInstance) -> Result<TeardownOutcome, EngineError> {
    let engine = deps.engine;
    let mut rec = Recorder::new(deps, ti);
    let orphan = ti.spec.deletion_policy == DeletionPolicy::Orphan;
    let result = if orphan { Ok(true) } else { super::teardown::delete_all(engine, &mut rec, ti).await };
    let blocked = match result {
        Ok(true) => {
            super::credentials::revoke(&engine.ledger, ti).await?;
            let notices = if orphan { vec![orphaned()] } else { Vec::new() };
            return Ok(TeardownOutcome { gone: true, action: Action::await_change(), notices });
        }
        Ok(false) => None,
        Err(e) if e.disposition() == Disposition::Conflict => return Err(e),
        Err(e) => Some(e),
    };
    let facts = Facts {
        generation: ti.metadata.generation,
        deleting: true,
        delete_blocked: blocked.as_ref().map(|e| format!("cannot delete external objects yet: {e}")),
        ..Facts::default()
    };
    progress::summarize(&mut rec.status, &facts, &now());
    rec.flush().await?;
    let wait = match blocked {
        None => engine.poll(),
        Some(e) => e.retry_after().unwrap_or_else(|| deps.host.backoff_after_failure(ti)),
    };
    Ok(TeardownOutcome { gone: false, action: Action::requeue(wait), notices: Vec::new() })
}

fn orphaned() -> Notice {
    Notice {
        warning: false,
        reason: "Orphaned",
        action: "Cleanup",
        note: "deletionPolicy Orphan: external objects kept".into(),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn resync(engine: &Engine) -> Duration {
    Duration::from_secs(engine.args.resync_seconds)
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// When a throttled drift check looks again: after the budget's wait, spread
/// over a tenth of the resync interval so a large fleet does not retry at once.
fn drift_retry(wait: Duration, resync: Duration) -> Duration {
    wait + resync.mul_f64(0.1 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(status: &str, reason: &str, at: i64) -> Condition {
        Condition {
            type_: names::COND_STALLED.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::from_second(at).unwrap()),
        }
    }

    #[test]
    fn an_unchanged_stall_holds_until_the_slow_retry() {
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        let retry = Duration::from_secs(300);
        assert_eq!(hold_for(&stall("True", "Unauthorized", 900), true, retry, now), Some(Duration::from_secs(200)));
        assert_eq!(hold_for(&stall("True", "Unauthorized", 600), true, retry, now), None, "retry is due");
        assert_eq!(hold_for(&stall("True", "Unauthorized", 900), false, retry, now), None, "the spec changed");
        assert_eq!(hold_for(&stall("False", "NotStalled", 900), true, retry, now), None);
        assert_eq!(hold_for(&stall("True", DELETE_BLOCKED, 900), true, retry, now), None);
    }

    #[test]
    fn transitions_become_events() {
        let failed = notice(&(StepName::Service, StepState::InProgress, StepState::Failed, "boom".into()));
        assert_eq!(
            failed,
            Notice { warning: true, reason: "StepFailed", action: "Provision", note: "service: boom".into() }
        );
        let done = notice(&(StepName::Notify, StepState::Pending, StepState::Done, String::new()));
        assert_eq!((done.warning, done.reason, done.note.as_str()), (false, "StepDone", "notify"));
    }
}
