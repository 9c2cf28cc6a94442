//! The trust ramp: the per-sprint allowance of pre-approved changes, derived by replaying
//! history sprint by sprint. Never stored, so it is reproducible and auditable.

use serde::{Deserialize, Serialize};

use super::history::{History, SprintTally};

/// Parameters of the ramp (`[policy.allowance]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AllowanceParams {
    /// Allowance of the first sprint with history.
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub initial: u32,
    /// Added after a sprint that met the target with enough changes.
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub step: u32,
    /// The allowance never grows above this.
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub max: u32,
    /// Multiplier applied after a sprint below target (rounded down).
    #[cfg_attr(test, schemars(range(min = 0.0, max = 1.0)))]
    pub backoff: f64,
    /// The allowance never shrinks below this.
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub floor: u32,
    /// Closed changes a sprint needs before it can grow the allowance.
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub min_changes: u32,
    /// How many past sprints the replay covers; older history is not replayed (at most 520).
    #[cfg_attr(test, schemars(range(max = 520)))]
    pub lookback_sprints: u32,
}

impl Default for AllowanceParams {
    fn default() -> Self {
        AllowanceParams {
            initial: 2,
            step: 2,
            max: 20,
            backoff: 0.5,
            floor: 0,
            min_changes: 3,
            lookback_sprints: 26,
        }
    }
}

/// Why the allowance moved at a sprint boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adjustment {
    /// The first sprint of the replay: the allowance starts at `initial`.
    Start,
    Grow,
    Shrink,
    Keep,
}

/// One sprint of the replay: the allowance in force during `sprint`, and how it got there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RampStep {
    pub sprint: i64,
    pub allowance: u32,
    pub adjustment: Adjustment,
    pub tally: SprintTally,
}

fn clamp(value: u32, p: &AllowanceParams) -> u32 {
    let max = p.max.max(p.floor);
    value.clamp(p.floor, max)
}

/// The allowance for the sprint after one with `tally`, given the allowance during it.
pub fn next_allowance(
    current: u32,
    tally: &SprintTally,
    p: &AllowanceParams,
    target: f64,
) -> (u32, Adjustment) {
    match tally.success_rate() {
        Some(rate) if rate < target => {
            let shrunk = (f64::from(current) * p.backoff.clamp(0.0, 1.0)).floor() as u32;
            (clamp(shrunk, p), Adjustment::Shrink)
        }
        Some(_) if tally.closed() >= p.min_changes => {
            (clamp(current.saturating_add(p.step), p), Adjustment::Grow)
        }
        _ => (clamp(current, p), Adjustment::Keep),
    }
}

/// Replays history from the first sprint with any change (bounded by `lookback_sprints`)
/// up to and including `current`. The last step holds the current sprint's allowance.
pub fn replay(history: &History, p: &AllowanceParams, target: f64, current: i64) -> Vec<RampStep> {
    let earliest = history.sprints.keys().next().copied().unwrap_or(current);
    let first = earliest
        .max(current - i64::from(p.lookback_sprints))
        .min(current);
    let mut steps = Vec::with_capacity(usize::try_from(current - first + 1).unwrap_or(1));
    let mut allowance = clamp(p.initial, p);
    let mut adjustment = Adjustment::Start;
    for sprint in first..=current {
        let tally = history.tally(sprint);
        steps.push(RampStep {
            sprint,
            allowance,
            adjustment,
            tally,
        });
        (allowance, adjustment) = next_allowance(allowance, &tally, p, target);
    }
    steps
}

/// The allowance in force during `current`.
pub fn allowance_for(history: &History, p: &AllowanceParams, target: f64, current: i64) -> u32 {
    replay(history, p, target, current)
        .last()
        .map_or_else(|| clamp(p.initial, p), |s| s.allowance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tally(succeeded: u32, failed: u32) -> SprintTally {
        SprintTally {
            succeeded,
            failed,
            ..SprintTally::default()
        }
    }

    fn history(sprints: &[(i64, SprintTally)]) -> History {
        History {
            sprints: sprints.iter().copied().collect(),
            ..History::default()
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn table() {
        let p = AllowanceParams::default(); // initial 2, step 2, max 20, backoff .5, min 3
        type Case = (&'static str, Vec<(i64, SprintTally)>, u32);
        let cases: &[Case] = &[
            ("no history starts at initial", vec![], 2),
            ("healthy sprint grows", vec![(9, tally(3, 0))], 4),
            (
                "healthy but too few changes keeps",
                vec![(9, tally(2, 0))],
                2,
            ),
            (
                "one failure in few changes still backs off",
                vec![(9, tally(1, 1))],
                1,
            ),
            (
                "two healthy sprints grow twice",
                vec![(8, tally(5, 0)), (9, tally(5, 0))],
                6,
            ),
            (
                "grow then bad sprint halves",
                vec![(8, tally(5, 0)), (9, tally(5, 5))],
                2,
            ),
            ("empty sprint in between keeps", vec![(7, tally(3, 0))], 4),
            (
                "only cancelled keeps",
                vec![(
                    9,
                    SprintTally {
                        cancelled: 4,
                        ..SprintTally::default()
                    },
                )],
                2,
            ),
        ];
        for (name, sprints, want) in cases {
            assert_eq!(
                allowance_for(&history(sprints), &p, 0.9, 10),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn caps_at_max_and_floor() {
        let p = AllowanceParams {
            initial: 5,
            step: 10,
            max: 12,
            floor: 3,
            ..AllowanceParams::default()
        };
        let h = history(&[(1, tally(9, 0)), (2, tally(9, 0))]);
        assert_eq!(allowance_for(&h, &p, 0.9, 3), 12);
        let h = history(&[(1, tally(0, 9)), (2, tally(0, 9))]);
        assert_eq!(allowance_for(&h, &p, 0.9, 3), 3);
    }

    #[test]
    fn lookback_bounds_the_replay() {
        let p = AllowanceParams {
            lookback_sprints: 2,
            ..AllowanceParams::default()
        };
        let h = history(&[(0, tally(5, 0)), (1, tally(5, 0)), (2, tally(5, 0))]);
        let steps = replay(&h, &p, 0.9, 10);
        assert_eq!(steps.first().map(|s| s.sprint), Some(8));
        assert_eq!(steps.len(), 3);
    }

    fn arb_params() -> impl Strategy<Value = AllowanceParams> {
        (0u32..10, 0u32..5, 0u32..30, 0.0f64..1.0, 0u32..5, 0u32..6).prop_map(
            |(initial, step, max, backoff, floor, min_changes)| AllowanceParams {
                initial,
                step,
                max,
                backoff,
                floor,
                min_changes,
                lookback_sprints: 52,
            },
        )
    }

    fn arb_history() -> impl Strategy<Value = History> {
        proptest::collection::btree_map(0i64..30, (0u32..12, 0u32..4, 0u32..3), 0..30).prop_map(
            |m| History {
                sprints: m
                    .into_iter()
                    .map(|(k, (s, f, c))| {
                        (
                            k,
                            SprintTally {
                                succeeded: s,
                                failed: f,
                                cancelled: c,
                                ..SprintTally::default()
                            },
                        )
                    })
                    .collect(),
                ..History::default()
            },
        )
    }

    proptest! {
        #[test]
        fn never_above_max_nor_below_floor(p in arb_params(), h in arb_history(), target in 0.5f64..1.0) {
            for step in replay(&h, &p, target, 30) {
                prop_assert!(step.allowance <= p.max.max(p.floor));
                prop_assert!(step.allowance >= p.floor);
            }
        }

        #[test]
        fn deterministic(p in arb_params(), h in arb_history(), target in 0.5f64..1.0) {
            prop_assert_eq!(replay(&h, &p, target, 30), replay(&h.clone(), &p, target, 30));
        }

        #[test]
        fn grows_after_a_healthy_sprint(p in arb_params(), current in 0u32..30, n in 0u32..20) {
            let tally = SprintTally { succeeded: p.min_changes + n, ..SprintTally::default() };
            let (next, adj) = next_allowance(current, &tally, &p, 0.9);
            if p.min_changes + n > 0 {
                prop_assert_eq!(adj, Adjustment::Grow);
                prop_assert!(next >= current.min(p.max.max(p.floor)));
                prop_assert_eq!(next, (current + p.step).clamp(p.floor, p.max.max(p.floor)));
            }
        }

        /// Replaying history sprint by sprint: a healthy sprint (enough closed changes, at
        /// or above target) grows the next sprint's allowance by `step`, up to `max`,
        /// whatever came before it.
        #[test]
        fn replay_grows_after_a_healthy_sprint(
            p in arb_params(),
            h in arb_history(),
            k in 0i64..29,
            extra in 0u32..10,
            target in 0.5f64..1.0,
        ) {
            let closed = p.min_changes.max(1) + extra;
            // The largest failure count that keeps the rate at or above target.
            let failed = (0..closed).rev().find(|f| f64::from(closed - f) / f64::from(closed) >= target).unwrap_or(0);
            let mut h = h;
            h.sprints.insert(k, SprintTally { succeeded: closed - failed, failed, ..SprintTally::default() });
            let steps = replay(&h, &p, target, 30);
            let at = |s: i64| steps.iter().find(|x| x.sprint == s).copied().unwrap();
            let (before, after) = (at(k), at(k + 1));
            prop_assert_eq!(after.adjustment, Adjustment::Grow);
            let max = p.max.max(p.floor);
            prop_assert_eq!(after.allowance, (before.allowance + p.step).clamp(p.floor, max));
            if p.step > 0 && before.allowance < max {
                prop_assert!(after.allowance > before.allowance);
            }
        }

        /// A sprint below target backs the allowance off, whatever its volume (even one
        /// failure), rounded down and never below `floor`.
        #[test]
        fn replay_shrinks_after_a_bad_sprint(
            p in arb_params(),
            h in arb_history(),
            k in 0i64..29,
            s in 0u32..5,
            target in 0.5f64..1.0,
        ) {
            let mut h = h;
            // s of 2s+1 succeeded: below 50%, so below any target here.
            h.sprints.insert(k, SprintTally { succeeded: s, failed: s + 1, ..SprintTally::default() });
            let steps = replay(&h, &p, target, 30);
            let at = |s: i64| steps.iter().find(|x| x.sprint == s).copied().unwrap();
            let (before, after) = (at(k), at(k + 1));
            prop_assert_eq!(after.adjustment, Adjustment::Shrink);
            let want = ((f64::from(before.allowance) * p.backoff).floor() as u32).max(p.floor);
            prop_assert_eq!(after.allowance, want);
            prop_assert!(after.allowance <= before.allowance);
            if before.allowance > p.floor && p.backoff < 1.0 {
                prop_assert!(after.allowance < before.allowance);
            }
        }

        /// A sprint with too few closed changes, all good, keeps the allowance.
        #[test]
        fn replay_keeps_after_a_quiet_sprint(p in arb_params(), h in arb_history(), k in 0i64..29) {
            prop_assume!(p.min_changes > 1);
            let mut h = h;
            h.sprints.insert(k, SprintTally { succeeded: p.min_changes - 1, cancelled: 3, ..SprintTally::default() });
            let steps = replay(&h, &p, 0.9, 30);
            let at = |s: i64| steps.iter().find(|x| x.sprint == s).copied().unwrap();
            prop_assert_eq!(at(k + 1).allowance, at(k).allowance);
            prop_assert_eq!(at(k + 1).adjustment, Adjustment::Keep);
        }

        /// The allowance depends on the history up to the current sprint only: sprints after
        /// it, and empty sprints anywhere, change nothing.
        #[test]
        fn replay_ignores_the_future_and_empty_sprints(
            p in arb_params(),
            h in arb_history(),
            current in 0i64..30,
            empty in proptest::collection::vec(-5i64..30, 0..6),
            target in 0.5f64..1.0,
        ) {
            let want = allowance_for(&h, &p, target, current);
            let mut only_past = h.clone();
            only_past.sprints.retain(|s, _| *s <= current);
            prop_assert_eq!(allowance_for(&only_past, &p, target, current), want);
            let mut padded = h.clone();
            for s in empty {
                padded.sprints.entry(s).or_default();
            }
            prop_assert_eq!(allowance_for(&padded, &p, target, current), want);
            // And it is the same number however often it is derived.
            prop_assert_eq!(allowance_for(&h.clone(), &p.clone(), target, current), want);
        }

        #[test]
        fn shrinks_after_a_bad_sprint(p in arb_params(), current in 0u32..30, s in 0u32..5, f in 1u32..5) {
            let tally = SprintTally { succeeded: s, failed: f * 10, ..SprintTally::default() };
            let (next, adj) = next_allowance(current, &tally, &p, 0.9);
            prop_assert_eq!(adj, Adjustment::Shrink);
            prop_assert!(next <= current.max(p.floor));
        }
    }
}
