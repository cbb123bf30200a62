//! One reconcile pass of a TenantInstance, in outline:
//! gate (plan known? stalled and unchanged? paused?) -> act (run the wanted
//! steps in order until one is not done, judging each result) -> record
//! (summarize, write status) -> requeue. The caller publishes the returned
//! Events. Teardown runs the external steps in reverse and verifies each
//! is gone.
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::external::Object;
use super::progress::{self, DELETE_BLOCKED, Facts, Report, Transition};
use super::record::Recorder;
use super::steps::{Pass, StepResult};
use super::{Deps, Disposition, Engine, EngineError, wanted};
use crate::api::conditions;
use crate::api::{DeletionPolicy, StepName, StepState, StepStatus, Tenant, TenantInstance, TenantInstanceStatus};
use crate::names::{self, reason};
use crate::plans::{Plan, SYSTEM_PLAN};
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
/// Status-write failures (409 included) and a failed read of the owning
/// Tenant: the step errors are recorded in status and turned into requeues.
pub async fn apply(deps: &Deps<'_>, ti: &TenantInstance) -> Result<PassOutcome, EngineError> {
    let mut rec = Recorder::new(deps, ti);
    progress::align(&mut rec.status.steps, &StepName::ALL);
    let plan = match gate(deps, ti).await? {
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
    record(deps, ti, plan, pass.rec, walk).await
}

/// Whether a pass runs the steps.
enum Gate<'p> {
    Run(&'p Plan),
    /// Stalled and unchanged: look again after this wait, touching nothing.
    Hold(Duration),
    /// Nothing to run (unknown plan, paused): record these facts and wait for a change.
    Idle(Facts),
}

/// Admission first (is the instance its Tenant's, on its Tenant's plan?),
/// then the catalog, a held stall and `paused`. Nothing here calls a platform.
///
/// # Errors
/// Reading the owning Tenant failed (other than it being gone).
async fn gate<'p>(deps: &Deps<'p>, ti: &TenantInstance) -> Result<Gate<'p>, EngineError> {
    let engine = deps.engine;
    let facts = Facts { generation: ti.metadata.generation, paused: ti.spec.stack.paused, ..Facts::default() };
    match admit(deps, ti).await? {
        Admission::Admitted => {}
        Admission::Wait => return Ok(Gate::Hold(engine.poll())),
        Admission::Refused(e) => {
            let stalled = Some((e.category(), e.to_string()));
            return Ok(Gate::Idle(Facts { stalled, ..facts }));
        }
    }
    let Some(plan) = engine.plans.get(&ti.spec.stack.plan) else {
        let message = format!(
            "plan \"{}\" is not in the plan catalog (known: {})",
            ti.spec.stack.plan,
            engine.plans.names().join(", ")
        );
        return Ok(Gate::Idle(Facts { stalled: Some((reason::UNKNOWN_PLAN, message)), ..facts }));
    };
    if let Some(message) = wanted::unsupported(&ti.spec) {
        return Ok(Gate::Idle(Facts { stalled: Some((reason::REGION_UNSUPPORTED, message)), ..facts }));
    }
    if let Some(wait) = stall_hold(engine, ti) {
        return Ok(Gate::Hold(wait));
    }
    if ti.spec.stack.paused {
        return Ok(Gate::Idle(facts));
    }
    Ok(Gate::Run(plan))
}

/// Whether the instance may be provisioned at all.
enum Admission {
    Admitted,
    /// Its Tenant changed and the Tenant controller has not caught up yet.
    Wait,
    /// Never provisioned as it stands: the error is the Stalled reason and message.
    Refused(EngineError),
}

/// Reads the Tenant that controls `ti` (if its controller ownerReference
/// names one) and judges the instance by it.
async fn admit(deps: &Deps<'_>, ti: &TenantInstance) -> Result<Admission, EngineError> {
    let tenant = match controller_of(ti) {
        Some(owner) => {
            let tenants: Api<Tenant> = Api::namespaced(deps.client.clone(), &ti.namespace().unwrap_or_default());
            tenants.get_opt(&owner.name).await?
        }
        None => None,
    };
    Ok(admission(ti, tenant.as_ref()))
}

/// The controller ownerReference of kind Tenant, if any.
fn controller_of(ti: &TenantInstance) -> Option<&OwnerReference> {
    ti.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == Tenant::kind(&()))
}

/// An instance is provisioned only when a Tenant controls it (an
/// ownerReference of kind Tenant with `controller: true`, naming `tenant`,
/// which exists with that uid) and it carries that Tenant's plan, never
/// `system`. A hand-made instance would otherwise bypass the plan and the
/// instance limit (pure).
fn admission(ti: &TenantInstance, tenant: Option<&Tenant>) -> Admission {
    let instance = ti.name_any();
    let refused = |why: String| {
        Admission::Refused(EngineError::PlanMismatch {
            instance: instance.clone(),
            plan: ti.spec.stack.plan.clone(),
            why,
        })
    };
    if ti.spec.stack.plan == SYSTEM_PLAN {
        return refused("plan \"system\" is reserved for Winston's own LLM calls".into());
    }
    let owner = controller_of(ti);
    let tenant = tenant.filter(|t| owner.is_some_and(|o| t.uid().as_deref() == Some(o.uid.as_str())));
    let (Some(owner), Some(tenant)) = (owner, tenant) else {
        return Admission::Refused(EngineError::NoTenantOwner { instance });
    };
    if tenant.spec.stack.plan == ti.spec.stack.plan {
        return Admission::Admitted;
    }
    let observed = tenant.status.as_ref().and_then(|s| s.observed_generation);
    if observed != tenant.metadata.generation {
        return Admission::Wait;
    }
    refused(format!("its Tenant {} is on plan \"{}\"", owner.name, tenant.spec.stack.plan))
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
    let look = Look::of(pass.ti);
    let started = Utc::now();
    let mut walk = Walk { transitions: Vec::new(), next: jittered(resync(engine)), failed: None, stalled: None };
    let steps = wanted::steps(&pass.ti.spec, pass.plan);
    let creates = steps.iter().filter(|(_, on)| *on).map(|(s, _)| (*s, Object::of_step(*s, &pass.ti.spec)));
    pass.rec.plan_creates(creates.filter(|(_, objects)| !objects.is_empty()).collect());
    for (step, on) in steps {
        let result = if on {
            if look == Look::Converge { pass.run(step).await } else { budget::background(pass.run(step)).await }
        } else {
            // A component the plan or spec no longer includes goes through
            // the teardown path; the step is Skipped once it is gone.
            match super::downgrade::remove(engine, &mut pass.rec, pass.ti, step).await {
                Ok(None) => {
                    // Asked for but not in the plan: say so, never silently.
                    let report = wanted::exclusion(&pass.ti.spec, pass.plan_name, pass.plan, step)
                        .map_or(Report::Skipped, Report::Excluded);
                    let skipped = progress::record(&mut pass.rec.status.steps, step, &report, started);
                    walk.transitions.extend(skipped);
                    continue;
                }
                Ok(Some(message)) => Ok(StepResult::Waiting(message)),
                Err(e) => Err(e),
            }
        };
        let Some(report) = walk.judge(deps, pass, step, result, look)? else { break };
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
    /// backoff. `None` ends a throttled drift check or poll without a report.
    fn judge(
        &mut self,
        deps: &Deps<'_>,
        pass: &Pass<'_>,
        step: StepName,
        result: Result<StepResult, EngineError>,
        look: Look,
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
                match look {
                    // Provisioning goes first: the instance stays Ready as
                    // recorded and the check resumes later.
                    Look::Drift => {
                        self.next = drift_retry(self.next, resync(engine));
                        Ok(None)
                    }
                    // The step keeps the wait it recorded (no status write)
                    // and is looked at again once the budget has room.
                    Look::Poll => Ok(None),
                    Look::Converge => Ok(Some(Report::Working(format!("{THROTTLED}{e}")))),
                }
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

/// How a step that the platform budget throttled words its wait.
const THROTTLED: &str = "waiting: ";

/// What a pass is for, which sets its priority on the platforms' budgets.
/// Only converging work (a new instance, a changed spec, a throttled step,
/// a failure) draws on the whole budget; looking at what is already in
/// motion takes a slot only while more than half the budget is left (see
/// [`budget::background`]), so that it can never starve a deletion or a
/// provisioning of the calls they need in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// Creating, changing, retrying: the whole budget.
    Converge,
    /// A step waits on an operation the platform runs (a deployment
    /// building, a project starting; [`super::external::WAITING_FOR_OPERATION`])
    /// and the spec did not change: the pass only polls it.
    Poll,
    /// A Ready instance whose spec did not change and that is not
    /// converging to a new one: the pass only looks for drift.
    Drift,
}

impl Look {
    /// Read from the recorded status (pure).
    fn of(ti: &TenantInstance) -> Self {
        let Some(s) = ti.status.as_ref() else { return Self::Converge };
        if s.observed_generation != ti.metadata.generation {
            return Self::Converge;
        }
        if conditions::is_true(&s.conditions, names::COND_READY)
            && !conditions::is_true(&s.conditions, names::COND_RECONCILING)
        {
            return Self::Drift;
        }
        // Only a wait on the platform's own operation: a step waiting for
        // anything else (a throttled call, a create settling before it
        // goes ahead) has calls to make.
        let polled = |st: &StepStatus| {
            st.state == StepState::InProgress
                && st.message.as_deref().is_some_and(|m| m.contains(super::external::WAITING_FOR_OPERATION))
        };
        if s.steps.iter().any(polled) { Self::Poll } else { Self::Converge }
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
    plan: &Plan,
    mut rec: Recorder<'_>,
    mut walk: Walk,
) -> Result<PassOutcome, EngineError> {
    if walk.failed.is_none() {
        deps.host.reset_backoff(ti);
    }
    if let Some(url) = rec.status.external.as_ref().and_then(|e| e.railway.as_ref()).and_then(|r| r.domain.clone()) {
        rec.status.urls.get_or_insert_default().service = Some(format!("https://{url}"));
    }
    let serving = walk.stalled.is_none() && still_serving(ti.status.as_ref(), &rec.status);
    let since = super::deadline::started(ti);
    let before = ti.status.as_ref().map(|s| s.steps.as_slice()).unwrap_or_default();
    let mut notices = pass_notices(before, &rec.status.steps, &walk.transitions);
    notices.append(&mut rec.notices);
    if !serving && walk.stalled.is_none() && !progress::converged(&rec.status.steps) {
        notices.extend(check_deadline(deps, ti, plan, &rec, since, &mut walk).await);
    }
    let facts = Facts { generation: ti.metadata.generation, stalled: walk.stalled, serving, ..Facts::default() };
    progress::summarize(&mut rec.status, &facts, &now());
    rec.drop_untried();
    rec.flush().await?;
    observe_durations(deps, ti, &rec.status, &walk.transitions, since);
    Ok(PassOutcome { action: Action::requeue(walk.next), failed: walk.failed, notices })
}

/// Past its deadline, a pass that is not Ready stalls the instance with
/// `ProgressDeadlineExceeded` and looks again at the stalled interval; the
/// first time, with a warning Event and the notifications (see
/// [`super::deadline`]).
async fn check_deadline(
    deps: &Deps<'_>,
    ti: &TenantInstance,
    plan: &Plan,
    rec: &Recorder<'_>,
    since: Option<k8s_openapi::jiff::Timestamp>,
    walk: &mut Walk,
) -> Vec<Notice> {
    let engine = deps.engine;
    let Some(since) = since else { return Vec::new() };
    let limit = super::deadline::limit(engine, ti, plan);
    let current = rec.status.steps.iter().find(|s| !matches!(s.state, StepState::Done | StepState::Skipped));
    let waiting_on = current
        .map_or_else(String::new, |s| format!("step {}: {}", s.name.as_str(), s.message.clone().unwrap_or_default()));
    let elapsed = super::deadline::elapsed(since, k8s_openapi::jiff::Timestamp::now());
    let Some(message) = super::deadline::overdue(limit, elapsed, &waiting_on) else { return Vec::new() };
    engine.remember_stall(ti);
    walk.next = Duration::from_secs(engine.args.stalled_retry_seconds);
    let mut notices = Vec::new();
    if super::deadline::newly_exceeded(ti.status.as_ref()) {
        let note = message.clone();
        notices.push(Notice { warning: true, reason: reason::PROGRESS_DEADLINE_EXCEEDED, action: "Provision", note });
        for failure in super::deadline::notify(engine, ti, &rec.status, limit, since).await {
            tracing::warn!(instance = %ti.name_any(), error = %failure, "deadline notification not sent");
            notices.push(Notice { warning: true, reason: "NotificationFailed", action: "Notify", note: failure });
        }
    }
    walk.stalled = Some((reason::PROGRESS_DEADLINE_EXCEEDED, message));
    notices
}

/// Feeds the provisioning histograms: each step that converged in this
/// pass, and the whole instance when it became Ready.
fn observe_durations(
    deps: &Deps<'_>,
    ti: &TenantInstance,
    status: &TenantInstanceStatus,
    transitions: &[Transition],
    since: Option<k8s_openapi::jiff::Timestamp>,
) {
    for (step, _, to, _) in transitions {
        let Some(s) = status.steps.iter().find(|s| s.name == *step && *to == StepState::Done) else { continue };
        if let (Some(start), Some(end)) = (s.started_at, s.finished_at) {
            deps.host.step_converged(*step, (end - start).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
    let was_ready = ti.status.as_ref().is_some_and(|s| conditions::is_true(&s.conditions, names::COND_READY));
    if !was_ready
        && conditions::is_true(&status.conditions, names::COND_READY)
        && let Some(since) = since
    {
        let now = k8s_openapi::jiff::Timestamp::now();
        let ms = now.as_millisecond() - since.as_millisecond();
        deps.host.became_ready(ms.max(0) as f64 / 1000.0);
    }
}

/// The objects an instance serves from.
const LIVE_OBJECTS: [Object; 5] = [
    Object::NeonProject,
    Object::SupabaseProject,
    Object::RailwayProject,
    Object::RailwayService,
    Object::VercelProject,
];

/// Whether an instance that served when the pass began still does: it was
/// Ready, and the pass only updates live objects (a redeploy for a new spec)
/// without losing or re-creating any (every id recorded before is recorded
/// still) and without a failed step or a failing health check. Ready then
/// stays true while the instance is Reconciling (pure).
fn still_serving(before: Option<&TenantInstanceStatus>, after: &TenantInstanceStatus) -> bool {
    let Some(before) = before else { return false };
    let healthy = |st: &TenantInstanceStatus| {
        st.steps.iter().any(|s| s.name == StepName::Health && matches!(s.state, StepState::Done | StepState::Skipped))
    };
    let kept = |o: Object| {
        o.known(before.external.as_ref()).is_none_or(|id| o.known(after.external.as_ref()).as_ref() == Some(&id))
    };
    let domain = |st: &TenantInstanceStatus| st.external.as_ref().and_then(|e| e.railway.as_ref()?.domain.clone());
    conditions::is_true(&before.conditions, names::COND_READY)
        && healthy(before)
        && healthy(after)
        && after.steps.iter().all(|s| !progress::gates_ready(s.name) || s.state != StepState::Failed)
        && LIVE_OBJECTS.into_iter().all(kept)
        && (domain(before).is_none() || domain(before) == domain(after))
}

/// The Events of one pass, as a person follows provisioning in `kubectl
/// describe`: `Progressing` when work starts on an idle instance (new, or
/// converged before: a spec change or drift), `Converged` when the pass
/// takes it to every step done (naming the steps and how long they took),
/// and a warning per step failure. The steps in between are in status
/// (`steps`, the per-step conditions, `winston status -w`), not one Event
/// each: at 1,000 tenants an Event per transition was a third of all writes
/// to the API server (pure).
fn pass_notices(before: &[StepStatus], after: &[StepStatus], transitions: &[Transition]) -> Vec<Notice> {
    let mut notices: Vec<Notice> = transitions.iter().filter(|t| t.2 == StepState::Failed).map(notice).collect();
    let busy =
        |steps: &[StepStatus]| steps.iter().any(|s| matches!(s.state, StepState::InProgress | StepState::Failed));
    let worked = transitions.iter().any(|t| matches!(t.2, StepState::InProgress | StepState::Done));
    if progress::converged(after) && !progress::converged(before) {
        notices.push(Notice { warning: false, reason: "Converged", action: "Provision", note: converged_note(after) });
    } else if worked && !busy(before) && !progress::converged(after) {
        let note = after.iter().find(|s| matches!(s.state, StepState::InProgress | StepState::Failed)).map_or_else(
            || "working on the steps".to_string(),
            |s| format!("working on step {}: {}", s.name.as_str(), s.message.clone().unwrap_or_default()),
        );
        notices.push(Notice { warning: false, reason: "Progressing", action: "Provision", note });
    }
    notices
}

/// "every step converged in 4.2s: database 1.0s, schema 0.3s, ...; skipped: frontend".
fn converged_note(steps: &[StepStatus]) -> String {
    let done: Vec<&StepStatus> = steps.iter().filter(|s| s.state == StepState::Done).collect();
    let seconds = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds().max(0) as f64 / 1000.0;
    let took = |s: &StepStatus| match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => format!("{} {:.1}s", s.name.as_str(), seconds(a, b)),
        _ => s.name.as_str().to_string(),
    };
    let first = done.iter().filter_map(|s| s.started_at).min();
    let last = done.iter().filter_map(|s| s.finished_at).max();
    let total = match (first, last) {
        (Some(a), Some(b)) => format!(" in {:.1}s", seconds(a, b)),
        _ => String::new(),
    };
    let mut note =
        format!("every step converged{total}: {}", done.iter().map(|s| took(s)).collect::<Vec<_>>().join(", "));
    let skipped: Vec<&str> = steps.iter().filter(|s| s.state == StepState::Skipped).map(|s| s.name.as_str()).collect();
    if !skipped.is_empty() {
        note.push_str(&format!("; skipped: {}", skipped.join(", ")));
    }
    note
}

/// The warning Event of one failed step.
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
    let orphan = ti.spec.stack.deletion_policy == DeletionPolicy::Orphan;
    let result = if orphan { Ok(true) } else { super::teardown::delete_all(engine, &mut rec, ti).await };
    let blocked = match result {
        Ok(true) => {
            super::credentials::revoke(&engine.ledger, ti).await?;
            super::history::forget(&engine.ledger, ti).await?;
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
    crate::api::time::now()
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

    fn steps_at(states: &[(StepName, Report)]) -> Vec<StepStatus> {
        let mut steps = Vec::new();
        progress::align(&mut steps, &[StepName::Database, StepName::Schema, StepName::Frontend, StepName::Notify]);
        for (step, report) in states {
            progress::record(&mut steps, *step, report, Utc::now());
        }
        steps
    }

    fn reasons(n: &[Notice]) -> Vec<&'static str> {
        n.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn a_pass_announces_start_convergence_and_failures_not_each_transition() {
        let fresh = steps_at(&[]);
        let working = steps_at(&[(StepName::Database, Report::Working("creating".into()))]);
        let tr = |step, from, to| (step, from, to, String::new());
        let started = [tr(StepName::Database, StepState::Pending, StepState::InProgress)];
        let n = pass_notices(&fresh, &working, &started);
        assert_eq!(reasons(&n), ["Progressing"]);
        assert_eq!(n[0].note, "working on step database: creating");
        // Polling the same step again, or finishing it and starting the next: nothing.
        assert!(pass_notices(&working, &working, &[]).is_empty());
        let next = steps_at(&[
            (StepName::Database, Report::Done("ok".into())),
            (StepName::Schema, Report::Working("migrating".into())),
        ]);
        let moved = [
            tr(StepName::Database, StepState::InProgress, StepState::Done),
            tr(StepName::Schema, StepState::Pending, StepState::InProgress),
        ];
        assert!(pass_notices(&working, &next, &moved).is_empty());
        // A failure is a warning of its own; the retry that follows is not an Event.
        let failed = steps_at(&[
            (StepName::Database, Report::Done("ok".into())),
            (StepName::Schema, Report::Failed("503".into())),
        ]);
        let failing = [(StepName::Schema, StepState::InProgress, StepState::Failed, "503".into())];
        let n = pass_notices(&next, &failed, &failing);
        assert_eq!((reasons(&n), n[0].warning, n[0].note.as_str()), (vec!["StepFailed"], true, "schema: 503"));
        // Converging names every step done and the skipped ones.
        let done = steps_at(&[
            (StepName::Database, Report::Done("ok".into())),
            (StepName::Schema, Report::Done("ok".into())),
            (StepName::Frontend, Report::Skipped),
        ]);
        let n = pass_notices(&failed, &done, &[tr(StepName::Schema, StepState::Failed, StepState::Done)]);
        assert_eq!(reasons(&n), ["Converged"]);
        assert!(n[0].note.starts_with("every step converged in "), "{}", n[0].note);
        assert!(
            n[0].note.contains("database 0.0s, schema ") && n[0].note.ends_with("; skipped: frontend"),
            "{}",
            n[0].note
        );
        // All in one pass (an instant platform): one Event. At rest: none.
        assert_eq!(reasons(&pass_notices(&fresh, &done, &moved)), ["Converged"]);
        assert!(pass_notices(&done, &done, &[]).is_empty());
        // Drift on a converged instance: work starts again, and is announced.
        let drifted = steps_at(&[
            (StepName::Database, Report::Working("recreating".into())),
            (StepName::Schema, Report::Done("ok".into())),
            (StepName::Frontend, Report::Skipped),
        ]);
        let n = pass_notices(&done, &drifted, &[tr(StepName::Database, StepState::Done, StepState::InProgress)]);
        assert_eq!(reasons(&n), ["Progressing"]);
    }

    fn serving_status() -> TenantInstanceStatus {
        use crate::api::tenant_instance::{ExternalIds, RailwayIds};
        let mut st = TenantInstanceStatus::default();
        progress::align(&mut st.steps, &StepName::ALL);
        let t0 = Utc::now();
        for step in StepName::ALL {
            progress::record(&mut st.steps, step, &Report::Done("ok".into()), t0);
        }
        st.external = Some(ExternalIds {
            railway: Some(RailwayIds {
                project_id: Some("p".into()),
                service_id: Some("s".into()),
                domain: Some("d.up.railway.app".into()),
                ..RailwayIds::default()
            }),
            ..ExternalIds::default()
        });
        progress::summarize(&mut st, &Facts::default(), &now());
        st
    }

    #[test]
    fn updating_a_live_service_still_serves_and_losing_it_does_not() {
        let before = serving_status();
        let mut updating = before.clone();
        progress::record(&mut updating.steps, StepName::Service, &Report::Working("updated".into()), Utc::now());
        assert!(still_serving(Some(&before), &updating));
        assert!(!still_serving(None, &updating), "never served");

        let mut recreated = updating.clone();
        Object::RailwayService.set(recreated.external.as_mut().unwrap(), Some("s2"));
        assert!(!still_serving(Some(&before), &recreated), "a re-created service");

        let mut failing = updating.clone();
        progress::record(&mut failing.steps, StepName::Service, &Report::Failed("503".into()), Utc::now());
        assert!(!still_serving(Some(&before), &failing), "a failed step");

        let mut unhealthy = before.clone();
        progress::record(&mut unhealthy.steps, StepName::Health, &Report::Working("answered 503".into()), Utc::now());
        assert!(!still_serving(Some(&before), &unhealthy), "a failing health check");

        let mut unready = before.clone();
        progress::record(&mut unready.steps, StepName::Service, &Report::Working("x".into()), Utc::now());
        progress::summarize(&mut unready, &Facts { stalled: Some(("X", "x".into())), ..Facts::default() }, &now());
        assert!(!still_serving(Some(&unready), &updating), "was not Ready");
    }

    #[test]
    fn only_converging_work_draws_on_the_whole_budget() {
        // An instance that is not Ready (a Ready one is a drift check).
        let at = |generation: i64, observed: i64, steps: Vec<StepStatus>| {
            let mut ti = instance("starter", None);
            ti.metadata.generation = Some(generation);
            let mut status = TenantInstanceStatus { steps, ..Default::default() };
            progress::summarize(&mut status, &Facts::default(), &now());
            status.observed_generation = Some(observed);
            status.conditions.retain(|c| c.type_ != names::COND_READY);
            ti.status = Some(status);
            ti
        };
        let working = |m: &str| steps_at(&[(StepName::Database, Report::Working(m.into()))]);
        let deploying = || working("service: waiting for operation d1");
        let throttled = || working(&format!("{THROTTLED}rate limited"));
        let settling = || working("project: a create of wn-1 announced 0s ago is not listed yet; searching again");
        let failed = || steps_at(&[(StepName::Database, Report::Failed("boom".into()))]);
        let fresh = instance("starter", None);
        assert_eq!(Look::of(&fresh), Look::Converge, "no status yet");
        assert_eq!(Look::of(&at(1, 1, deploying())), Look::Poll, "an operation in motion");
        assert_eq!(Look::of(&at(2, 1, deploying())), Look::Converge, "the spec changed meanwhile");
        assert_eq!(Look::of(&at(1, 1, throttled())), Look::Converge, "a throttled step gets its turn");
        assert_eq!(Look::of(&at(1, 1, failed())), Look::Converge, "a failed step is retried");
        assert_eq!(Look::of(&at(1, 1, settling())), Look::Converge, "a create about to go ahead");
        let created = working("service: created s1; waiting for operation d1");
        assert_eq!(Look::of(&at(1, 1, created)), Look::Poll, "a create's operation in motion");
        assert_eq!(Look::of(&at(1, 1, steps_at(&[]))), Look::Converge, "nothing started");
    }

    fn instance(plan: &str, owner: Option<&Tenant>) -> TenantInstance {
        let mut ti: TenantInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
            "metadata": { "name": "acme-0", "namespace": "ns", "uid": "ti-uid" },
            "spec": { "tenantRef": { "name": "acme" }, "ordinal": 0, "plan": plan,
                      "profile": { "displayName": "Acme", "contactEmail": "ops@acme.example" } }
        }))
        .unwrap();
        ti.metadata.owner_references = owner.map(|t| vec![t.controller_owner_ref(&()).unwrap()]);
        ti
    }

    fn tenant(plan: &str, uid: &str, observed: i64) -> Tenant {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "Tenant",
            "metadata": { "name": "acme", "namespace": "ns", "uid": uid, "generation": 2 },
            "spec": { "displayName": "Acme", "contactEmail": "ops@acme.example", "plan": plan },
            "status": { "observedGeneration": observed }
        }))
        .unwrap()
    }

    fn verdict(a: &Admission) -> String {
        match a {
            Admission::Admitted => "admitted".into(),
            Admission::Wait => "wait".into(),
            Admission::Refused(e) => e.category().into(),
        }
    }

    #[test]
    fn only_an_instance_its_tenant_controls_on_the_tenants_plan_is_admitted() {
        let starter = tenant("starter", "t-uid", 2);
        let owned = instance("starter", Some(&starter));
        assert_eq!(verdict(&admission(&owned, Some(&starter))), "admitted");
        assert_eq!(verdict(&admission(&instance("starter", None), None)), "NoTenantOwner", "hand-made");
        assert_eq!(verdict(&admission(&owned, None)), "NoTenantOwner", "its Tenant is gone");
        let recreated = tenant("starter", "other-uid", 2);
        assert_eq!(verdict(&admission(&owned, Some(&recreated))), "NoTenantOwner", "another Tenant of that name");
        let mut weak = owned.clone();
        weak.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert_eq!(verdict(&admission(&weak, Some(&starter))), "NoTenantOwner", "not the controller");

        let team = instance("team", Some(&starter));
        let Admission::Refused(e) = admission(&team, Some(&starter)) else { panic!("team admitted") };
        assert_eq!(e.category(), "PlanMismatch");
        assert!(e.to_string().contains("its Tenant acme is on plan \"starter\""), "{e}");
        assert!(e.to_string().contains("change the plan on the Tenant"), "{e}");
        let changing = tenant("team", "t-uid", 1);
        assert_eq!(verdict(&admission(&owned, Some(&changing))), "wait", "the Tenant controller has not caught up");

        let system = instance("system", Some(&starter));
        let Admission::Refused(e) = admission(&system, Some(&starter)) else { panic!("system admitted") };
        assert!(e.to_string().contains("reserved"), "{e}");
        assert!(!e.to_string().contains("PlanMismatch {"), "{e}");
    }
}
