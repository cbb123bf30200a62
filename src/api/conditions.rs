//! Condition helpers shared by every kind: kstatus `Ready` / `Reconciling` /
//! `Stalled` plus kind-specific ones. `lastTransitionTime` changes only when
//! a condition's status flips, so recomputing status from the same facts
//! yields byte-identical conditions (and the controller writes nothing).
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

#[cfg(test)]
mod tests {
    use super::*;

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
