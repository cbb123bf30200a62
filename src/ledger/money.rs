//! Pure credit arithmetic: integer only, saturating, never negative.
//! Everything here is what the SQL in this module relies on, kept apart so
//! it can be property-tested without a database.

/// Credits for a request: `(input + output) × multiplier`, saturating.
/// Negative token counts count as zero. The reference the catalog's
/// `Prices::cost` is tested against (a flat price must equal it).
#[cfg(test)]
#[must_use]
pub fn cost(input_tokens: i64, output_tokens: i64, multiplier: i64) -> i64 {
    input_tokens.max(0).saturating_add(output_tokens.max(0)).saturating_mul(multiplier.max(0))
}

/// What a settlement may debit: the cost, but never more than its own hold
/// plus what the pools hold beyond all open reservations (so one request
/// that ran over its estimate cannot eat credits promised to another). The
/// hold is a commitment even when the pools shrank under it.
#[must_use]
pub fn chargeable(cost: i64, held: i64, pools: i64, reserved_by_others: i64) -> i64 {
    let free = pools.saturating_sub(reserved_by_others).saturating_sub(held.max(0)).max(0);
    cost.max(0).min(held.max(0).saturating_add(free))
}

/// Splits a debit between the period allotment (spent first) and granted
/// credits. Returns `(from_period, from_granted)`; their sum is `credits`
/// whenever `credits <= period_credits + granted_credits`.
#[must_use]
pub fn split_debit(credits: i64, period_credits: i64) -> (i64, i64) {
    let credits = credits.max(0);
    let from_period = credits.min(period_credits.max(0));
    (from_period, credits - from_period)
}

/// True when `balance` is below `pct` % of `allotment` (an account without an
/// allotment is never "low", only exhausted).
#[must_use]
pub fn is_low(balance: i64, allotment: i64, pct: i32) -> bool {
    allotment > 0 && i128::from(balance) * 100 < i128::from(allotment) * i128::from(pct.clamp(0, 100))
}

/// The worst-case hold of one request, split so the ledger can size it to
/// the balance: with `units` output tokens of cap per choice the hold is
/// `fixed + ceil(units × per_unit_milli / 1000)`. The ledger picks
/// `units = min(max_units, floor((available − fixed) × 1000 / per_unit_milli))`
/// and refuses when that is below `min_units` ([`HoldShape::units_for`] is the
/// same rule in Rust).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldShape {
    /// Input (at the dearest input-side price) and worst-case server tool uses.
    pub fixed: i64,
    /// Milli-credits per unit: the output price times the number of choices.
    pub per_unit_milli: i64,
    /// The output cap per choice the client asked for (default applied).
    pub max_units: i64,
    /// The least output cap per choice worth forwarding.
    pub min_units: i64,
}

impl HoldShape {
    /// A hold of exactly `amount` credits with no output cap to size.
    #[must_use]
    pub fn fixed(amount: i64) -> Self {
        Self { fixed: amount, per_unit_milli: 0, max_units: 0, min_units: 0 }
    }

    /// The hold for `units` output tokens of cap per choice (saturating).
    #[must_use]
    pub fn hold(&self, units: i64) -> i64 {
        let variable = (i128::from(units.max(0)) * i128::from(self.per_unit_milli.max(0)) + 999) / 1000;
        i64::try_from(i128::from(self.fixed.max(0)) + variable).unwrap_or(i64::MAX)
    }

    /// The hold at the client's full cap.
    #[must_use]
    pub fn worst_case(&self) -> i64 {
        self.hold(self.max_units)
    }

    /// The smallest hold that still forwards the request.
    #[must_use]
    pub fn minimum(&self) -> i64 {
        self.hold(self.min_units)
    }

    /// The cap per choice that `available` credits can pay for, or `None`
    /// when not even `min_units` fit. Mirrors the ledger's SQL, so its hold
    /// `self.hold(units)` never exceeds `available`.
    #[must_use]
    pub fn units_for(&self, available: i64) -> Option<i64> {
        let spare = i128::from(available) - i128::from(self.fixed.max(0));
        if spare < 0 {
            return None;
        }
        let per = i128::from(self.per_unit_milli.max(1));
        let units = i64::try_from((spare * 1000) / per).unwrap_or(i64::MAX).min(self.max_units);
        (units >= self.min_units).then_some(units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cost_is_tokens_times_multiplier() {
        assert_eq!(cost(10, 5, 12), 180);
        assert_eq!(cost(-3, 5, 2), 10);
        assert_eq!(cost(i64::MAX, 1, 2), i64::MAX);
    }

    #[test]
    fn low_threshold_is_strictly_below() {
        assert!(!is_low(200, 1000, 20));
        assert!(is_low(199, 1000, 20));
        assert!(!is_low(0, 0, 20));
    }

    proptest! {
        #[test]
        fn chargeable_never_takes_what_others_hold(cost in -10i64..1_000_000, held in 0i64..1_000_000, pools in 0i64..1_000_000, others in 0i64..1_000_000) {
            let c = chargeable(cost, held, pools, others);
            prop_assert!(c >= 0);
            prop_assert!(c <= cost.max(0));
            prop_assert!(c <= held + (pools - others - held).max(0));
            // When everything held is covered, others' holds stay covered after the charge.
            if others + held <= pools { prop_assert!(pools - c >= others); }
        }

        #[test]
        fn split_conserves_credits(credits in 0i64..1_000_000, period in 0i64..1_000_000, granted in 0i64..1_000_000) {
            let credits = credits.min(period + granted);
            let (p, g) = split_debit(credits, period);
            prop_assert_eq!(p + g, credits);
            prop_assert!(p <= period && g <= granted && p >= 0 && g >= 0);
        }
    }
}
