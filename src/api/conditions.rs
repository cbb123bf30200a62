//! Condition helpers shared by every kind: kstatus `Ready` / `Reconciling` /
//! `Stalled` plus kind-specific ones. `lastTransitionTime` changes only when
//! a condition's status flips, so recomputing status from the same facts
//! yields byte-identical conditions (and the controller writes nothing).
//!
//! Condition and Event messages are read by people (`kubectl describe`, Argo
//! CD, Flux): [`api_error_message`] gives the text of a Kubernetes API error
//! without the client's debug representation.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The desired state of one condition, before timestamps are reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> Desired<'a> {
    /// A condition of `type_` that is `status` for `reason`.
    #[must_use]
    pub fn new(type_: &'a str, status: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// Builds the condition list from `desired`, keeping each existing
/// condition's `lastTransitionTime` when its status did not change.
#[must_use]
pub fn merge(existing: &[Condition], desired: &[Desired<'_>], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" }.to_string();
            let last_transition_time = existing
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether the condition `type_` is present and `True`.
#[must_use]
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The condition `type_`, if present.
#[must_use]
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// What the API server said, for people: its own message (for example
/// `tenantinstances.winston.dev "acme-0" is forbidden: exceeded quota: ...`),
/// else its reason and HTTP code; any other client error as the client
/// describes it. Never the client's `Debug` output.
#[must_use]
pub fn api_error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) if !status.reason.is_empty() => {
            format!("the API server answered {} ({})", status.code, status.reason)
        }
        kube::Error::Api(status) => format!("the API server answered {}", status.code),
        other => other.to_string(),
    }
}

/// Whether `error` is the API server refusing the request itself (invalid,
/// forbidden, over quota, unknown namespace), which no retry of the same
/// request fixes, as opposed to a conflict, throttling or a failure to reach it.
#[must_use]
pub fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if (400..500).contains(&s.code) && !matches!(s.code, 408 | 409 | 429))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "reason": reason, "message": message
        }))
        .expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn api_errors_read_as_the_api_servers_words() {
        let quota = "tenantinstances.winston.dev \"acme-0\" is forbidden: exceeded quota: q";
        let e = api_error(403, "Forbidden", quota);
        assert_eq!(api_error_message(&e), quota);
        assert!(!e.to_string().is_empty() && e.to_string().contains("Status {"), "the client's own text is Debug");
        assert_eq!(
            api_error_message(&api_error(500, "InternalError", "")),
            "the API server answered 500 (InternalError)"
        );
        assert_eq!(api_error_message(&api_error(503, "", "")), "the API server answered 503");
    }

    #[test]
    fn refusals_are_the_4xx_no_retry_fixes() {
        for (code, refused) in
            [(400, true), (403, true), (404, true), (422, true), (409, false), (429, false), (500, false)]
        {
            assert_eq!(is_refusal(&api_error(code, "", "x")), refused, "{code}");
        }
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("valid time"))
    }

    #[test]
    fn transition_time_kept_while_status_unchanged_and_moved_on_flip() {
        let first = merge(&[], &[Desired::new("Ready", false, "Pending", "waiting")], Some(1), &t(10));
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(&first, &[Desired::new("Ready", false, "Other", "still waiting")], Some(2), &t(20));
        assert_eq!(same[0].last_transition_time, t(10));
        assert_eq!(same[0].reason, "Other");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(&same, &[Desired::new("Ready", true, "Ready", "")], Some(2), &t(30));
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert!(is_true(&flipped, "Ready"));
    }

    #[test]
    fn recomputing_from_the_same_facts_is_identical() {
        let d = [Desired::new("Ready", true, "Ready", "ok"), Desired::new("Stalled", false, "NotStalled", "")];
        let a = merge(&[], &d, Some(3), &t(1));
        let b = merge(&a, &d, Some(3), &t(99));
        assert_eq!(a, b);
    }
}
