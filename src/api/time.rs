//! Time at the Kubernetes boundary, converted in one place.
//!
//! Winston keeps time as `chrono::DateTime<Utc>`: the ledger's columns
//! through sqlx (which speaks chrono, not jiff) and the API types' own fields
//! (step start and end, period anchors). k8s-openapi's `Time` wraps a
//! `jiff::Timestamp` and stays as it is in conditions and object metadata.
//! Code that needs one as the other goes through here.
use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Now, as a Kubernetes `Time` (for conditions' `lastTransitionTime`).
#[must_use]
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// A Kubernetes `Time` as chrono time, to the nanosecond.
///
/// # Guarantees
/// `None` only outside chrono's range (about ±262,000 years), which jiff's
/// (years -9999 to 9999) never reaches.
#[must_use]
pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    // jiff's sub-second part has the sign of the timestamp, so add it rather
    // than pass it where chrono wants an unsigned value.
    let whole = DateTime::from_timestamp(t.0.as_second(), 0)?;
    whole.checked_add_signed(TimeDelta::nanoseconds(i64::from(t.0.subsec_nanosecond())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_time_converts_to_the_nanosecond_on_both_sides_of_1970() {
        for (text, want) in [
            ("2026-11-23T09:00:13.300000001Z", "2026-11-23T09:00:13.300000001+00:00"),
            ("1969-12-31T23:59:58.5Z", "1969-12-31T23:59:58.500+00:00"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00"),
        ] {
            let t = Time(text.parse().expect("valid timestamp"));
            assert_eq!(to_chrono(&t).map(|d| d.to_rfc3339()).as_deref(), Some(want), "{text}");
        }
    }

    #[test]
    fn now_is_now_in_both_crates() {
        let before = Utc::now();
        let now = to_chrono(&now()).expect("in range");
        assert!(before <= now && now <= Utc::now(), "{before} {now}");
    }
}
