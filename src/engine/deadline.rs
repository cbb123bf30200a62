//! The provisioning deadline: an instance that is not Ready within its
//! deadline (the Tenant's `spec.provisioningDeadlineSeconds`, else its
//! plan's, else `--provisioning-deadline-seconds`) is reported `Stalled`
//! with reason `ProgressDeadlineExceeded` and keeps being retried at the
//! stalled interval; the stall clears when it becomes Ready.
//!
//! The clock runs from the moment `Ready` last turned false (on a new
//! instance: its first status, or its creation when it has none yet) and
//! stops while the instance is Ready. When it first runs out, the operator
//! (`--operator-email`) gets a notification and a customer who never had
//! a Ready instance gets the failure email of their plan, each sent under
//! an idempotency key so a crash and retry never sends twice.
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::mail::Kind;
use super::{Engine, EngineError};
use crate::api::{TenantInstance, TenantInstanceStatus, conditions};
use crate::names::{self, reason};
use crate::plans::Plan;
use crate::providers::resend::Email;

/// The deadline of `ti` on `plan`.
#[must_use]
pub fn limit(engine: &Engine, ti: &TenantInstance, plan: &Plan) -> Duration {
    let seconds = ti
        .spec
        .stack
        .provisioning_deadline_seconds
        .and_then(|s| u64::try_from(s).ok())
        .or(plan.provisioning_deadline_seconds)
        .unwrap_or(engine.args.provisioning_deadline_seconds);
    Duration::from_secs(seconds.max(1))
}

/// Since when `ti` has been working towards Ready (pure): when `Ready`
/// last turned false, its creation when it has no `Ready` condition yet,
/// `None` while it is Ready.
#[must_use]
pub fn started(ti: &TenantInstance) -> Option<Timestamp> {
    let ready = ti.status.as_ref().and_then(|s| conditions::find(&s.conditions, names::COND_READY));
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(c.last_transition_time.0),
        None => ti.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

/// Seconds from `since` to `now` (0 when `now` is earlier).
#[must_use]
pub fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::from_secs(u64::try_from(now.as_second() - since.as_second()).unwrap_or(0))
}

/// The stall message when `elapsed` passed `limit` (pure); `current`
/// says what the instance is waiting on.
#[must_use]
pub fn overdue(limit: Duration, elapsed: Duration, current: &str) -> Option<String> {
    (elapsed > limit).then(|| {
        format!(
            "not Ready within the provisioning deadline of {}s ({}s so far; still retrying): {current}",
            limit.as_secs(),
            elapsed.as_secs()
        )
    })
}

/// Whether `before` did not yet report the deadline as exceeded: the stall
/// is new and worth an Event and notifications.
#[must_use]
pub fn newly_exceeded(before: Option<&TenantInstanceStatus>) -> bool {
    let stalled = before.and_then(|s| conditions::find(&s.conditions, names::COND_STALLED));
    !stalled.is_some_and(|c| c.status == "True" && c.reason == reason::PROGRESS_DEADLINE_EXCEEDED)
}

/// Sends the notifications of a deadline that just ran out: to the
/// operator (when configured) and, when the instance never sent its
/// welcome email, the plan's failure email to the customer. Returns what
/// could not be sent (for warning Events; never a secret).
///
/// # Guarantees
/// Each email's content depends only on the instance, its plan, the
/// deadline and `since`, so a retry after a crash or a failed status write
/// repeats the same payload under the same key and Resend sends nothing
/// twice.
pub async fn notify(
    engine: &Engine,
    ti: &TenantInstance,
    status: &TenantInstanceStatus,
    limit: Duration,
    since: Timestamp,
) -> Vec<String> {
    let mut failed = Vec::new();
    let uid = ti.uid().unwrap_or_default();
    if let Some(operator) = &engine.args.operator_email {
        let email = operator_email(engine, ti, operator, limit, since);
        let key = format!("deadline-{uid}-{}", since.as_second());
        if let Err(e) = send(engine, &email, &key).await {
            failed.push(format!("failed to notify the operator: {e}"));
        }
    }
    let welcomed = status.external.as_ref().is_some_and(|e| e.welcome_email_id.is_some());
    if !welcomed {
        let plan = &ti.spec.stack.plan;
        let values = super::mail_values(ti, plan, &engine.args.proxy_url, status);
        let m = engine.mail.render(Kind::Failure, plan, &values);
        let email = Email {
            from: engine.args.welcome_from.clone(),
            to: vec![ti.spec.profile.contact_email.clone()],
            subject: m.subject,
            html: Some(m.html).filter(|h| !h.trim().is_empty()),
            text: Some(m.text).filter(|t| !t.trim().is_empty()),
            tags: Vec::new(),
        };
        if let Err(e) = send(engine, &email, &format!("failure-{uid}")).await {
            failed.push(format!("failed to send the customer's failure email: {e}"));
        }
    }
    failed
}

async fn send(engine: &Engine, email: &Email, key: &str) -> Result<String, EngineError> {
    Ok(engine.providers.resend.send(email, key).await?)
}

/// The operator's notification: which instance, which deadline, since
/// when, and where to look (the step it waits on is in its status).
fn operator_email(engine: &Engine, ti: &TenantInstance, to: &str, limit: Duration, since: Timestamp) -> Email {
    let (ns, name) = (ti.namespace().unwrap_or_default(), ti.name_any());
    let text = format!(
        "TenantInstance {ns}/{name} (Tenant {tenant}, plan {plan}) is {reason}: not Ready within {limit}s \
         of {since}.\n\nWinston keeps retrying every {retry}s. What it waits on:\n  \
         kubectl -n {ns} describe tenantinstance {name}\n",
        tenant = ti.spec.tenant_ref.name,
        plan = ti.spec.stack.plan,
        reason = reason::PROGRESS_DEADLINE_EXCEEDED,
        limit = limit.as_secs(),
        retry = engine.args.stalled_retry_seconds,
    );
    Email {
        from: engine.args.welcome_from.clone(),
        to: vec![to.to_string()],
        subject: format!("[Winston] {ns}/{name} missed its provisioning deadline"),
        html: None,
        text: Some(text),
        tags: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn instance(ready: Option<(&str, i64)>, created: i64) -> TenantInstance {
        let mut ti: TenantInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "winston.dev/v1alpha1", "kind": "TenantInstance",
            "metadata": { "name": "acme-0", "namespace": "ns" },
            "spec": { "tenantRef": { "name": "acme" }, "ordinal": 0, "plan": "starter",
                      "profile": { "displayName": "Acme", "contactEmail": "ops@acme.example" } }
        }))
        .unwrap();
        ti.metadata.creation_timestamp = Some(Time(ts(created)));
        if let Some((status, at)) = ready {
            let d = conditions::Desired::new(names::COND_READY, status == "True", "X", "");
            let st = ti.status.get_or_insert_default();
            st.conditions = conditions::merge(&[], &[d], None, &Time(ts(at)));
        }
        ti
    }

    #[test]
    fn the_clock_runs_while_not_ready_and_stops_when_ready() {
        assert_eq!(started(&instance(None, 100)), Some(ts(100)), "no status yet: since creation");
        assert_eq!(started(&instance(Some(("False", 150)), 100)), Some(ts(150)));
        assert_eq!(started(&instance(Some(("True", 150)), 100)), None);
    }

    #[test]
    fn overdue_only_past_the_limit() {
        let limit = Duration::from_secs(60);
        assert_eq!(overdue(limit, elapsed(ts(100), ts(160)), "step service"), None, "exactly at the limit");
        let m = overdue(limit, elapsed(ts(100), ts(161)), "step service: deploying").expect("overdue");
        assert!(m.contains("deadline of 60s") && m.contains("61s") && m.contains("step service: deploying"), "{m}");
        assert_eq!(elapsed(ts(200), ts(100)), Duration::ZERO);
    }

    #[test]
    fn only_a_new_deadline_stall_is_news() {
        let mut st = TenantInstanceStatus::default();
        assert!(newly_exceeded(None));
        let stalled = |r: &'static str| conditions::Desired::new(names::COND_STALLED, true, r, "");
        st.conditions = conditions::merge(&[], &[stalled("Unauthorized")], None, &Time(ts(1)));
        assert!(newly_exceeded(Some(&st)));
        st.conditions = conditions::merge(&[], &[stalled(reason::PROGRESS_DEADLINE_EXCEEDED)], None, &Time(ts(1)));
        assert!(!newly_exceeded(Some(&st)));
    }
}
