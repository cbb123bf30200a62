//! Credits for tokens: what a finished request costs ([`Prices::cost`]) and
//! the shape of the worst-case hold taken before it is forwarded
//! ([`Prices::hold_shape`]). Integer money only: prices are credits per
//! 1,000 tokens, products are taken in `i128` and saturate to `i64`, and
//! every division rounds up so a hold never falls short of a cost. Pure; the
//! ledger's SQL sizes the hold to the balance from a [`HoldShape`].
use std::collections::BTreeMap;

use super::request::Analyzed;
pub use crate::ledger::HoldShape;

/// Prices are credits per this many tokens.
pub const PRICE_UNIT: i64 = 1000;

/// Tokens one response used, as the upstream reports them (or as the
/// [`super::meter::Meter`] estimated them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Uncached input tokens (Anthropic `input_tokens`; OpenAI
    /// `prompt_tokens` minus the cached ones).
    pub input: i64,
    pub output: i64,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_write: i64,
    /// Anthropic `cache_read_input_tokens`, OpenAI `cached_tokens`.
    pub cache_read: i64,
    /// Server tool uses by name (`web_search` for `web_search_requests`).
    pub server_tool_uses: BTreeMap<String, i64>,
}

impl Tokens {
    /// Every input-side token: uncached, cache writes and cache reads.
    #[must_use]
    pub fn total_input(&self) -> i64 {
        self.input.max(0).saturating_add(self.cache_write.max(0)).saturating_add(self.cache_read.max(0))
    }
}

/// What one model charges, in credits per 1,000 tokens of each kind and
/// credits per server tool use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prices {
    pub input: i64,
    pub output: i64,
    pub cache_write: i64,
    pub cache_read: i64,
    /// Credits per use of each priced server tool, by usage name. A tool the
    /// upstream reports but the catalog does not price costs nothing here:
    /// the request analysis refuses unpriced server tools before forwarding.
    pub per_use: BTreeMap<String, i64>,
}

impl Prices {
    /// Every kind of token at `multiplier` credits, no server tools.
    #[must_use]
    pub fn flat(multiplier: i64) -> Self {
        let p = multiplier.saturating_mul(PRICE_UNIT);
        Self { input: p, output: p, cache_write: p, cache_read: p, per_use: BTreeMap::new() }
    }

    /// Credits for `t`: `ceil(Σ tokens × price / 1000) + Σ uses × credits_per_use`.
    /// Negative counts count as zero; the result saturates at `i64::MAX`.
    /// With [`Prices::flat`] it is exactly `total tokens × multiplier`.
    #[must_use]
    pub fn cost(&self, t: &Tokens) -> i64 {
        let milli = [
            (t.input, self.input),
            (t.output, self.output),
            (t.cache_write, self.cache_write),
            (t.cache_read, self.cache_read),
        ]
        .iter()
        .map(|&(n, p)| i128::from(n.max(0)) * i128::from(p.max(0)))
        .sum::<i128>();
        let tools = t
            .server_tool_uses
            .iter()
            .map(|(name, &uses)| {
                i128::from(uses.max(0)) * i128::from(self.per_use.get(name).copied().unwrap_or(0).max(0))
            })
            .sum::<i128>();
        saturate(ceil_div(milli, PRICE_UNIT) + tools)
    }

    /// The hold shape of an analyzed request: `fixed` covers
    /// `input_estimate` tokens at the dearest input-side price (so any split
    /// between uncached, cache-write and cache-read input is covered) plus
    /// every server tool used its written `max_uses` times; one unit is one
    /// output token of cap for each of the request's choices. `min_units` is
    /// `min_output_tokens`, raised above an extended-thinking budget (which
    /// the upstream requires below the cap), never above `max_units`.
    ///
    /// # Guarantees
    /// For every `units <= max_units`, `hold(units) >= cost(t)` for any `t`
    /// with `total_input() <= input_estimate`, `output <= units × choices`
    /// and each server tool's uses at most its count in the analysis.
    #[must_use]
    pub fn hold_shape(&self, a: &Analyzed, min_output_tokens: i64) -> HoldShape {
        let dearest_input = self.input.max(self.cache_write).max(self.cache_read).max(0);
        let input = ceil_div(i128::from(a.input_estimate.max(0)) * i128::from(dearest_input), PRICE_UNIT);
        let tools = a
            .server_tool_uses
            .iter()
            .map(|(name, &uses)| {
                i128::from(uses.max(0)) * i128::from(self.per_use.get(name).copied().unwrap_or(0).max(0))
            })
            .sum::<i128>();
        let max_units = a.requested_output.max(1);
        let floor = a.thinking_budget.map_or(0, |b| b.saturating_add(1)).max(min_output_tokens);
        HoldShape {
            fixed: saturate(input + tools),
            per_unit_milli: saturate(i128::from(self.output.max(1)) * i128::from(a.choices.max(1))),
            max_units,
            min_units: floor.clamp(1, max_units),
        }
    }
}

fn ceil_div(n: i128, d: i64) -> i128 {
    let d = i128::from(d);
    if n <= 0 { 0 } else { (n + d - 1) / d }
}

fn saturate(n: i128) -> i64 {
    i64::try_from(n.max(0)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tokens(input: i64, output: i64, cache_write: i64, cache_read: i64) -> Tokens {
        Tokens { input, output, cache_write, cache_read, server_tool_uses: BTreeMap::new() }
    }

    fn analyzed(input_estimate: i64, requested_output: i64, choices: i64) -> Analyzed {
        Analyzed { input_estimate, requested_output, choices, ..Analyzed::default() }
    }

    fn sonnet() -> Prices {
        Prices {
            input: 3000,
            output: 15000,
            cache_write: 3750,
            cache_read: 300,
            per_use: BTreeMap::from([("web_search".to_string(), 10_000)]),
        }
    }

    #[test]
    fn cost_table() {
        let p = sonnet();
        let web = |n| BTreeMap::from([("web_search".to_string(), n)]);
        let cases: &[(Tokens, i64)] = &[
            (tokens(0, 0, 0, 0), 0),
            (tokens(1, 0, 0, 0), 3),
            (tokens(0, 1, 0, 0), 15),
            (tokens(0, 0, 1, 0), 4),    // 3.75 rounds up
            (tokens(0, 0, 0, 1), 1),    // 0.3 rounds up
            (tokens(0, 0, 0, 10), 3),   // exact
            (tokens(0, 0, 0, 11), 4),   // 3.3 rounds up, once for the whole request
            (tokens(1, 1, 1, 1), 23),   // 3 + 15 + 3.75 + 0.3 = 22.05
            (tokens(-5, 2, -1, 0), 30), // negatives count 0
            (Tokens { server_tool_uses: web(3), ..tokens(0, 0, 0, 0) }, 30_000),
            (Tokens { server_tool_uses: web(-3), ..tokens(0, 0, 0, 0) }, 0),
            (Tokens { server_tool_uses: BTreeMap::from([("code_execution".into(), 9)]), ..tokens(0, 0, 0, 0) }, 0),
            (tokens(i64::MAX, i64::MAX, i64::MAX, i64::MAX), i64::MAX),
        ];
        for (t, want) in cases {
            assert_eq!(p.cost(t), *want, "{t:?}");
        }
    }

    #[test]
    fn hold_shape_of_a_multi_choice_request_with_server_tools() {
        let mut a = analyzed(1000, 500, 3);
        a.server_tool_uses = BTreeMap::from([("web_search".to_string(), 5)]);
        let s = sonnet().hold_shape(&a, 64);
        assert_eq!(s, HoldShape { fixed: 3750 + 50_000, per_unit_milli: 45_000, max_units: 500, min_units: 64 });
        assert_eq!(s.worst_case(), 53_750 + 22_500);
        assert_eq!(s.minimum(), 53_750 + 2880);
        // A cap below the minimum output is the cap.
        assert_eq!(sonnet().hold_shape(&analyzed(0, 10, 1), 64).min_units, 10);
        // Extended thinking needs a cap above its budget.
        let mut t = analyzed(0, 8000, 1);
        t.thinking_budget = Some(2048);
        assert_eq!(sonnet().hold_shape(&t, 64).min_units, 2049);
    }

    #[test]
    fn units_for_the_balance_mirror_the_sql() {
        let s = HoldShape { fixed: 1000, per_unit_milli: 15_000, max_units: 4096, min_units: 16 };
        assert_eq!(s.units_for(999), None);
        assert_eq!(s.units_for(1000 + 239), None); // 15 units fit, 16 needed
        assert_eq!(s.units_for(1000 + 240), Some(16));
        assert_eq!(s.units_for(1000 + 241), Some(16));
        assert_eq!(s.units_for(i64::MAX), Some(4096));
        assert_eq!(s.hold(16), 1240);
    }

    proptest! {
        #[test]
        fn flat_prices_cost_tokens_times_multiplier(
            m in 1i64..1000, i in 0i64..10_000_000, o in 0i64..10_000_000, w in 0i64..10_000_000, r in 0i64..10_000_000,
        ) {
            prop_assert_eq!(Prices::flat(m).cost(&tokens(i, o, w, r)), (i + o + w + r) * m);
            prop_assert_eq!(Prices::flat(m).cost(&tokens(i, o, 0, 0)), crate::ledger::money::cost(i, o, m));
        }

        #[test]
        fn the_hold_covers_every_usage_it_allows(
            prices in (1i64..40_000, 1i64..200_000, 1i64..40_000, 1i64..40_000, 1i64..100_000),
            input_estimate in 0i64..2_000_000,
            requested in 1i64..200_000,
            choices in 1i64..=128,
            max_uses in 0i64..20,
            units_frac in 0.0f64..=1.0,
            split in (0.0f64..=1.0, 0.0f64..=1.0),
            out_frac in 0.0f64..=1.0,
            uses_frac in 0.0f64..=1.0,
            min_output in 0i64..5000,
        ) {
            let (pi, po, pw, pr, pu) = prices;
            let p = Prices {
                input: pi, output: po, cache_write: pw, cache_read: pr,
                per_use: BTreeMap::from([("web_search".to_string(), pu)]),
            };
            let mut a = analyzed(input_estimate, requested, choices);
            a.server_tool_uses = BTreeMap::from([("web_search".to_string(), max_uses)]);
            let shape = p.hold_shape(&a, min_output);
            prop_assert!(shape.min_units >= 1 && shape.min_units <= shape.max_units);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let pick = |n: i64, f: f64| ((n as f64) * f).floor() as i64;
            let units = pick(requested, units_frac);
            // Any split of the estimated input between uncached, cache writes and cache reads.
            let write = pick(input_estimate, split.0);
            let read = pick(input_estimate - write, split.1);
            let t = Tokens {
                input: input_estimate - write - read,
                output: pick(units * choices, out_frac),
                cache_write: write,
                cache_read: read,
                server_tool_uses: BTreeMap::from([("web_search".to_string(), pick(max_uses, uses_frac))]),
            };
            prop_assert!(shape.hold(units) >= p.cost(&t), "units {} hold {} cost {} {:?}", units, shape.hold(units), p.cost(&t), t);
            // The extreme corner: everything at its bound.
            let worst = Tokens {
                input: 0, output: units * choices, cache_write: 0, cache_read: 0,
                server_tool_uses: BTreeMap::from([("web_search".to_string(), max_uses)]),
            };
            for (i, w, r) in [(input_estimate, 0, 0), (0, input_estimate, 0), (0, 0, input_estimate)] {
                let t = Tokens { input: i, cache_write: w, cache_read: r, ..worst.clone() };
                prop_assert!(shape.hold(units) >= p.cost(&t));
            }
        }

        #[test]
        fn units_for_never_holds_more_than_available(
            fixed in 0i64..1_000_000, per in 1i64..10_000_000, max_units in 1i64..100_000, min_units in 1i64..100_000,
            available in -10i64..100_000_000,
        ) {
            let s = HoldShape { fixed, per_unit_milli: per, max_units, min_units: min_units.min(max_units) };
            match s.units_for(available) {
                Some(u) => {
                    prop_assert!(u >= s.min_units && u <= s.max_units);
                    prop_assert!(s.hold(u) <= available, "hold {} available {}", s.hold(u), available);
                    if u < s.max_units { prop_assert!(s.hold(u + 1) > available); }
                }
                None => prop_assert!(s.minimum() > available),
            }
        }
    }
}
