//! One reconcile pass of a TenantInstance, in outline:
//! read plan -> align steps -> (paused/stalled gates) -> run wanted steps in
//! order until one is not done -> summarize -> record + Events -> requeue.
//! Teardown runs the external steps in reverse and verifies each is gone.
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use super::progress::{self, Facts, Report, Transition};
use super::record::Recorder;
use super::steps::{Pass, StepResult};
use super::{Engine, EngineError, wanted};
use crate::api::conditions;
use crate::api::{DeletionPolicy, StepName, StepState, TenantInstance};
use crate::controller::context::Context;
use crate::names;
use crate::providers::{Marker, budget};

/// How a pass ended, for the caller's requeue and error policy.
pub struct PassOutcome {
    pub action: Action,
    /// A step failed in a retryable way: back off per object.
    pub failed: bool,
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * rand::random::<f64>())
}

/// When a throttled drift check looks again: after the budget's wait, spread
/// over a tenth of the resync interval so a large fleet does not retry at once.
fn drift_retry(wait: Duration, resync: Duration) -> Duration {
    wait + resync.mul_f64(0.1 * rand::random::<f64>())
}

/// Converges `ti` (freshly read, not being deleted, finalizer in place).
///
/// # Errors
/// Only status-write failures (409 included): the step errors are recorded
/// in status and turned into requeues.
pub async fn apply(
    engine: &Engine,
    ctx: &Context,
    api: Api<TenantInstance>,
    ti: &TenantInstance,
) -> Result<PassOutcome, EngineError> {
    let now = Utc::now();
    let ktime = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = ti.metadata.generation;
    let mut rec = Recorder::new(api, ti, ctx.metrics.clone());
    let mut facts = Facts { generation, paused: ti.spec.paused, ..Facts::default() };
    progress::align(&mut rec.status.steps, &StepName::ALL);

    let Some(plan) = engine.plans.get(&ti.spec.plan) else {
        facts.stalled = Some((
            "UnknownPlan".into(),
            format!("plan {:?} is not in the plan catalog (known: {})", ti.spec.plan, engine.plans.names().join(", ")),
        ));
        progress::summarize(&mut rec.status, &facts, &ktime);
        rec.flush().await?;
        return Ok(PassOutcome { action: Action::await_change(), failed: false });
    };

    // A stalled instance whose spec did not change waits for a change or the
    // slow retry instead of calling platforms again and again.
    let prior = ti.status.as_ref();
    if let Some(stall) = prior.and_then(|s| conditions::find(&s.conditions, names::COND_STALLED)) {
        let same_generation = prior.and_then(|s| s.observed_generation) == generation;
        let since = Duration::from_secs(
            u64::try_from(k8s_openapi::jiff::Timestamp::now().as_second() - stall.last_transition_time.0.as_second())
                .unwrap_or(0),
        );
        let retry = Duration::from_secs(engine.args.stalled_retry_seconds);
        let seen =
            engine.stalls_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&stall_key(ti));
        if seen && stall.status == "True" && same_generation && since < retry && stall.reason != "DeleteBlocked" {
            return Ok(PassOutcome { action: Action::requeue(retry - since), failed: false });
        }
    }

    if ti.spec.paused {
        progress::summarize(&mut rec.status, &facts, &ktime);
        rec.flush().await?;
        return Ok(PassOutcome { action: Action::await_change(), failed: false });
    }

    // A Ready instance whose spec did not change: this pass only looks for
    // drift, so it draws on the platform budgets at background priority.
    let drift =
        prior.is_some_and(|s| s.observed_generation == generation && conditions::is_true(&s.conditions, "Ready"));
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ti.namespace().unwrap_or_default());
    let marker = Marker::new(&ti.uid().unwrap_or_default());
    let mut pass = Pass {
        engine,
        ti,
        plan_name: &ti.spec.plan,
        plan,
        rec,
        secrets,
        marker,
        database_url: None,
        credentials: None,
        workspace: None,
        service_url: None,
    };
    let mut transitions: Vec<Transition> = Vec::new();
    let mut next = jittered(Duration::from_secs(engine.args.resync_seconds));
    let mut failed = false;
    for (step, on) in wanted::steps(&ti.spec, plan) {
        if !on {
            transitions.extend(progress::record(&mut pass.rec.status.steps, step, &Report::Skipped, now));
            continue;
        }
        let result = if drift { budget::background(pass.run(step)).await } else { pass.run(step).await };
        let report = match result {
            Ok(StepResult::Done(m)) => Report::Done(m),
            Ok(StepResult::Waiting(m)) => {
                // The first look at something that just started comes soon
                // (many operations finish within a second); once the step
                // reports the same wait again, every poll.
                let was_waiting = pass.rec.status.steps.iter().any(|s| {
                    s.name == step && s.state == StepState::InProgress && s.message.as_deref() == Some(m.as_str())
                });
                next = if was_waiting { engine.poll() } else { engine.first_poll() };
                Report::Working(m)
            }
            Err(e) if e.is_conflict() => return Err(e),
            Err(e) if e.is_throttle() => {
                next = e.retry_after().unwrap_or_else(|| engine.poll()).max(engine.poll());
                if drift {
                    // Provisioning goes first: the instance stays Ready as
                    // recorded and the check resumes later.
                    next = drift_retry(next, Duration::from_secs(engine.args.resync_seconds));
                    break;
                }
                Report::Working(format!("waiting: {e}"))
            }
            Err(e) => match e.stalled() {
                Some((reason, message)) => {
                    engine.stalls_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(stall_key(ti));
                    facts.stalled = Some((reason.to_string(), format!("step {}: {message}", step.as_str())));
                    next = Duration::from_secs(engine.args.stalled_retry_seconds);
                    Report::Stalled(message)
                }
                None => {
                    failed = true;
                    next =
                        e.retry_after().unwrap_or_else(|| ctx.backoff(&format!("ti/{}", ti.uid().unwrap_or_default())));
                    Report::Failed(e.to_string())
                }
            },
        };
        let blocking = !matches!(report, Report::Done(_)) && progress::gates_ready(step);
        transitions.extend(progress::record(&mut pass.rec.status.steps, step, &report, now));
        if blocking {
            break;
        }
    }
    if !failed {
        ctx.succeeded(&format!("ti/{}", ti.uid().unwrap_or_default()));
    }
    let mut rec = pass.rec;
    if let Some(url) = rec.status.external.as_ref().and_then(|e| e.railway.as_ref()).and_then(|r| r.domain.clone()) {
        rec.status.urls.get_or_insert_default().service = Some(format!("https://{url}"));
    }
    progress::summarize(&mut rec.status, &facts, &ktime);
    rec.flush().await?;
    publish(ctx, ti, &transitions).await;
    Ok(PassOutcome { action: Action::requeue(next), failed })
}

fn stall_key(ti: &TenantInstance) -> String {
    format!("{}/{}", ti.uid().unwrap_or_default(), ti.metadata.generation.unwrap_or_default())
}

async fn publish(ctx: &Context, ti: &TenantInstance, transitions: &[Transition]) {
    let reference = ti.object_ref(&());
    for (step, _from, to, message) in transitions {
        let (warning, reason) = match to {
            StepState::Done => (false, "StepDone"),
            StepState::InProgress => (false, "StepStarted"),
            StepState::Failed => (true, "StepFailed"),
            StepState::Skipped => (false, "StepSkipped"),
            StepState::Pending => (false, "StepPending"),
        };
        let note = if message.is_empty() { step.as_str().to_string() } else { format!("{}: {message}", step.as_str()) };
        ctx.event(&reference, warning, reason, "Provision", note).await;
    }
}

/// Deletes the instance's external objects in reverse order (unless the
/// policy is Orphan), verifying each is gone. Returns `true` when nothing of
/// the instance is left and the finalizer may go.
///
/// # Errors
/// Status-write failures; platform failures are recorded as a
/// `DeleteBlocked` condition and retried.
pub async fn teardown(
    engine: &Engine,
    ctx: &Context,
    api: Api<TenantInstance>,
    ti: &TenantInstance,
) -> Result<(bool, Action), EngineError> {
    let ktime = Time(k8s_openapi::jiff::Timestamp::now());
    let mut rec = Recorder::new(api, ti, ctx.metrics.clone());
    let mut facts = Facts { generation: ti.metadata.generation, deleting: true, ..Facts::default() };
    let orphan = ti.spec.deletion_policy == DeletionPolicy::Orphan;
    let result = if orphan { Ok(true) } else { super::teardown::delete_all(engine, &mut rec, ti).await };
    match result {
        Ok(true) => {
            super::credentials::revoke(&engine.ledger, ti).await?;
            if orphan {
                ctx.event(
                    &ti.object_ref(&()),
                    false,
                    "Orphaned",
                    "Cleanup",
                    "deletionPolicy Orphan: external objects kept".into(),
                )
                .await;
            }
            Ok((true, Action::await_change()))
        }
        Ok(false) => {
            progress::summarize(&mut rec.status, &facts, &ktime);
            rec.flush().await?;
            Ok((false, Action::requeue(engine.poll())))
        }
        Err(e) if e.is_conflict() => Err(e),
        Err(e) => {
            facts.delete_blocked = Some(format!("cannot delete external objects yet: {e}"));
            progress::summarize(&mut rec.status, &facts, &ktime);
            rec.flush().await?;
            let wait = e.retry_after().unwrap_or_else(|| ctx.backoff(&format!("ti/{}", ti.uid().unwrap_or_default())));
            Ok((false, Action::requeue(wait)))
        }
    }
}
