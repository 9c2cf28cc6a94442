//! `policy simulate`: re-decide every recorded change, in order, under a policy.
//!
//! The replay rebuilds, before each decision, the very history the gate read at that moment:
//! the outcomes recorded by then, the failures `verify` had found by then, and the
//! pre-approvals of earlier changes *as the simulated policy decided them*. So the track
//! record and the allowance evolve as the replay goes, and replaying under the policy the
//! changes were decided with reproduces the recorded decisions exactly.
//!
//! Outcomes are taken as recorded: a change the simulated policy would have pre-approved
//! instead of sending to approval is assumed to end the same way. A change that was never
//! deployed (blocked, rejected) has no outcome in the simulation either.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::change::{ChangeFacts, Outcome};
use super::decision::{Decision, DecisionKind};
use super::history::{History, SprintTally};
use super::policy::{DecisionInput, Policy, decide};
use super::ramp;
use super::sprint::SprintCalendar;

/// When something was written: the time, then the order of writes (the backend's event
/// sequence; 0 when unknown) to settle writes within the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub seq: i64,
}

/// A decided change as recorded, with what its decision was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedChange {
    /// The backend's id (`CG-12`).
    pub id: String,
    /// Order of creation: breaks ties between changes closed in the same second.
    pub row: i64,
    /// The facts the standing decision was made on.
    pub facts: ChangeFacts,
    /// The standing decision.
    pub decision: Decision,
    pub decided: Stamp,
    /// Earlier decisions this one replaced (a freeze that ended, an emergency declared later).
    pub superseded: Vec<Stamp>,
    /// The outcome as first recorded, and when the change was closed with it.
    pub outcome: Option<(Outcome, Stamp)>,
    /// When `verify` turned the recorded success into a failure.
    pub failed_after_deploy: Option<Stamp>,
}

impl RecordedChange {
    /// The outcome as it stands now.
    pub fn final_outcome(&self) -> Option<Outcome> {
        match (self.outcome, self.failed_after_deploy) {
            (Some(_), Some(_)) => Some(Outcome::Failure),
            (o, None) => o.map(|(o, _)| o),
            (None, Some(_)) => None,
        }
    }

    /// The `--emergency` reason given to the gate, told apart from an emergency declared by
    /// a pull-request label (which the simulated policy's own label setting re-derives).
    fn requested_emergency(&self) -> Option<String> {
        let reason = self.decision.emergency.as_ref()?;
        let from_label = reason.strip_prefix("label '").and_then(|rest| {
            let (label, tail) = rest.split_once("' on pull request #")?;
            let pr = self.facts.pull_request.as_ref()?;
            (tail == pr.number.to_string()
                && pr.labels.iter().any(|l| l.eq_ignore_ascii_case(label)))
            .then_some(())
        });
        match from_label {
            Some(()) => None,
            None => Some(reason.clone()),
        }
    }
}

/// One change re-decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed<'a> {
    pub change: &'a RecordedChange,
    pub decision: Decision,
}

impl Replayed<'_> {
    /// Counted against the allowance.
    pub fn pre_approved(&self) -> bool {
        self.decision.counts_against_allowance()
    }

    /// Whether the simulated decision is the recorded one, rule for rule.
    pub fn reproduces(&self) -> bool {
        self.decision == self.change.decision
    }
}

/// What each change contributes to the tallies right now.
#[derive(Debug, Clone, Copy, Default)]
struct Live {
    /// The sprint of its visible decision; `None` before any.
    sprint: Option<i64>,
    /// The standing decision has been made (not just a superseded one).
    decided: bool,
    pre_approved: bool,
    emergency: bool,
    outcome: Option<Outcome>,
}

impl Live {
    fn tally(&self) -> SprintTally {
        let mut t = SprintTally::default();
        if self.decided {
            t.pre_approved = u32::from(self.pre_approved);
            t.emergency = u32::from(self.emergency);
            match self.outcome {
                Some(Outcome::Success) => t.succeeded = 1,
                Some(Outcome::Failure) => t.failed = 1,
                Some(Outcome::Cancelled) => t.cancelled = 1,
                None => {}
            }
        }
        t
    }
}

/// Per sprint: the tallies and how many changes have their decision there (a sprint with a
/// decided change is part of the history even when all its counts are zero).
#[derive(Debug, Default)]
struct Tallies {
    sprints: BTreeMap<i64, (u32, SprintTally)>,
}

impl Tallies {
    fn apply(&mut self, live: &Live, add: bool) {
        let Some(sprint) = live.sprint else { return };
        let t = live.tally();
        let entry = self.sprints.entry(sprint).or_default();
        let op = |a: u32, b: u32| if add { a + b } else { a.saturating_sub(b) };
        entry.0 = op(entry.0, 1);
        entry.1 = SprintTally {
            succeeded: op(entry.1.succeeded, t.succeeded),
            failed: op(entry.1.failed, t.failed),
            cancelled: op(entry.1.cancelled, t.cancelled),
            pre_approved: op(entry.1.pre_approved, t.pre_approved),
            emergency: op(entry.1.emergency, t.emergency),
        };
        if entry.0 == 0 {
            self.sprints.remove(&sprint);
        }
    }

    fn from(&self, first: i64) -> BTreeMap<i64, SprintTally> {
        self.sprints
            .range(first..)
            .map(|(s, (_, t))| (*s, *t))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Superseded(usize),
    Outcome(usize),
    FailedAfterDeploy(usize),
    Decided(usize),
}

/// The replay's state: every change's live contribution and the closed outcomes in order.
struct State<'a> {
    changes: &'a [RecordedChange],
    live: Vec<Live>,
    tallies: Tallies,
    /// Closed outcomes by (closed at, row), as the ledger orders its track record.
    closed: BTreeMap<(DateTime<Utc>, i64), (usize, Outcome)>,
}

impl State<'_> {
    fn update(&mut self, i: usize, f: impl FnOnce(&mut Live)) {
        let before = self.live[i];
        self.tallies.apply(&before, false);
        f(&mut self.live[i]);
        let after = self.live[i];
        self.tallies.apply(&after, true);
    }

    fn history(&self, window: u32, from_sprint: i64) -> History {
        History {
            closed_total: self.closed.len() as u64,
            recent: self
                .closed
                .values()
                .rev()
                .take(window as usize)
                .map(|(_, o)| *o)
                .collect(),
            sprints: self.tallies.from(from_sprint),
        }
    }

    fn close(&mut self, i: usize, outcome: Outcome, at: DateTime<Utc>) {
        let row = self.changes[i].row;
        if outcome == Outcome::Cancelled {
            self.closed.remove(&(at, row));
        } else {
            self.closed.insert((at, row), (i, outcome));
        }
        self.update(i, |l| l.outcome = Some(outcome));
    }
}

/// Re-decides every change under `policy`, in the order they were decided. The mode of each
/// decision is the one recorded (observe or enforce does not change what is pre-approved).
pub fn replay<'a>(
    changes: &'a [RecordedChange],
    policy: &Policy,
    calendar: SprintCalendar,
) -> Vec<Replayed<'a>> {
    let mut events: Vec<(Stamp, Event)> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        events.extend(c.superseded.iter().map(|s| (*s, Event::Superseded(i))));
        events.push((c.decided, Event::Decided(i)));
        if let Some((_, at)) = c.outcome {
            events.push((at, Event::Outcome(i)));
        }
        if let Some(at) = c.failed_after_deploy {
            events.push((at, Event::FailedAfterDeploy(i)));
        }
    }
    events.sort();
    let mut state = State {
        changes,
        live: vec![Live::default(); changes.len()],
        tallies: Tallies::default(),
        closed: BTreeMap::new(),
    };
    let p = &policy.params;
    let mut out = Vec::with_capacity(changes.len());
    for (stamp, event) in events {
        match event {
            Event::Superseded(i) => {
                let sprint = calendar.index_of(stamp.at);
                state.update(i, |l| l.sprint = Some(sprint));
            }
            Event::Outcome(i) => {
                if let Some((outcome, _)) = changes[i].outcome {
                    state.close(i, outcome, stamp.at);
                }
            }
            Event::FailedAfterDeploy(i) => {
                if let Some((_, closed)) = changes[i].outcome {
                    state.close(i, Outcome::Failure, closed.at);
                }
            }
            Event::Decided(i) => {
                let c = &changes[i];
                let sprint = calendar.index_of(stamp.at);
                // The change is never part of its own history.
                let own = state.live[i];
                state.tallies.apply(&own, false);
                let own_closed: Vec<_> = state
                    .closed
                    .iter()
                    .filter(|(_, (j, _))| *j == i)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (k, _) in &own_closed {
                    state.closed.remove(k);
                }
                let history =
                    state.history(p.window, sprint - i64::from(p.allowance.lookback_sprints));
                state.closed.extend(own_closed);
                state.tallies.apply(&own, true);
                let mut policy = policy.clone();
                policy.mode = c.decision.mode;
                let decision = decide(&DecisionInput {
                    facts: &c.facts,
                    history: &history,
                    policy: &policy,
                    calendar,
                    now: stamp.at,
                    emergency: c.requested_emergency(),
                    clock_override: c.decision.clock_override.clone(),
                });
                let pre_approved = decision.counts_against_allowance();
                let emergency = decision.emergency.is_some();
                state.update(i, |l| {
                    l.sprint = Some(sprint);
                    l.decided = true;
                    l.pre_approved = pre_approved;
                    l.emergency = emergency;
                });
                out.push(Replayed {
                    change: c,
                    decision,
                });
            }
        }
    }
    out
}

/// One sprint of a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SimSprint {
    pub sprint: i64,
    /// The allowance the sprint's last decision saw (or, in a sprint without decisions,
    /// what the trust ramp gives from the history as it ended).
    pub allowance: u32,
    pub decided: u32,
    pub pre_approved: u32,
    /// Pre-approved changes whose outcome is (now) a failure.
    pub pre_approved_failed: u32,
    pub needs_approval: u32,
    pub blocked: u32,
    pub emergency: u32,
}

/// The figures of a simulation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimSummary {
    pub decided: u32,
    pub pre_approved: u32,
    pub pre_approved_failed: u32,
    /// Pre-approved in the simulation, but never deployed in reality: outcome unknown.
    pub pre_approved_unknown: u32,
    pub needs_approval: u32,
    pub blocked: u32,
    pub emergency: u32,
    /// Decisions identical (kind, rules, allowance) to the recorded ones.
    pub same_as_recorded: u32,
    pub sprints: Vec<SimSprint>,
}

/// Sums up a replay per sprint, from the first sprint with a decision to `last`.
pub fn summarize(
    replayed: &[Replayed<'_>],
    policy: &Policy,
    calendar: SprintCalendar,
    last: i64,
) -> SimSummary {
    let mut by_sprint: BTreeMap<i64, SimSprint> = BTreeMap::new();
    let mut s = SimSummary::default();
    for r in replayed {
        let d = &r.decision;
        let e = by_sprint.entry(d.sprint).or_insert_with(|| SimSprint {
            sprint: d.sprint,
            ..SimSprint::default()
        });
        e.allowance = d.allowance;
        e.decided += 1;
        s.decided += 1;
        s.same_as_recorded += u32::from(r.reproduces());
        if d.emergency.is_some() {
            e.emergency += 1;
            s.emergency += 1;
        }
        match d.kind {
            DecisionKind::PreApproved if d.emergency.is_none() => {
                e.pre_approved += 1;
                s.pre_approved += 1;
                match r.change.final_outcome() {
                    Some(Outcome::Failure) => {
                        e.pre_approved_failed += 1;
                        s.pre_approved_failed += 1;
                    }
                    Some(Outcome::Success) => {}
                    Some(Outcome::Cancelled) | None
                        if r.change.decision.kind != DecisionKind::PreApproved =>
                    {
                        s.pre_approved_unknown += 1;
                    }
                    _ => {}
                }
            }
            DecisionKind::PreApproved => {}
            DecisionKind::NeedsApproval => {
                e.needs_approval += 1;
                s.needs_approval += 1;
            }
            DecisionKind::Blocked => {
                e.blocked += 1;
                s.blocked += 1;
            }
        }
    }
    // Sprints without decisions: the ramp over the history as the replay ended.
    let Some(first) = by_sprint.keys().next().copied() else {
        return s;
    };
    let end = end_history(replayed, calendar);
    let p = &policy.params;
    let ramp: HashMap<i64, u32> =
        ramp::replay(&end, &p.allowance, p.min_success_rate, last.max(first))
            .into_iter()
            .map(|step| (step.sprint, step.allowance))
            .collect();
    for sprint in first..=last.max(first) {
        let entry = by_sprint.entry(sprint).or_insert_with(|| SimSprint {
            sprint,
            allowance: ramp.get(&sprint).copied().unwrap_or(p.allowance.initial),
            ..SimSprint::default()
        });
        entry.sprint = sprint;
    }
    s.sprints = by_sprint.into_values().collect();
    s
}

/// The tallies of every sprint as the replay left them.
fn end_history(replayed: &[Replayed<'_>], calendar: SprintCalendar) -> History {
    let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
    for r in replayed {
        let t = sprints
            .entry(calendar.index_of(r.change.decided.at))
            .or_default();
        let live = Live {
            sprint: None,
            decided: true,
            pre_approved: r.pre_approved(),
            emergency: r.decision.emergency.is_some(),
            outcome: r.change.final_outcome(),
        }
        .tally();
        t.succeeded += live.succeeded;
        t.failed += live.failed;
        t.cancelled += live.cancelled;
        t.pre_approved += live.pre_approved;
        t.emergency += live.emergency;
    }
    History {
        sprints,
        ..History::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Platform;
    use crate::domain::policy::RiskLimits;
    use crate::domain::ramp::AllowanceParams;
    use chrono::NaiveDate;
    use proptest::prelude::*;

    fn facts(i: usize, lines: u64) -> ChangeFacts {
        ChangeFacts {
            platform: Platform::Local,
            service: "svc".into(),
            service_id: "acme/svc".into(),
            environment: "production".into(),
            repository: Some("acme/svc".into()),
            commit_sha: format!("{i:040x}"),
            branch: None,
            pull_request: None,
            range: None,
            commits: Vec::new(),
            lines_changed: Some(lines),
            paths: Vec::new(),
            paths_unknown: false,
            work_items: Vec::new(),
            run_url: None,
            repository_url: None,
            actor: None,
            author: None,
            tests_passed: None,
            evidence: Default::default(),
        }
    }

    /// One planned change: decided `gap` seconds after the previous decision; closed
    /// `close` seconds after its own decision (0: in the same second); a success may be
    /// turned into a failure by verify `flip` seconds after it closed.
    #[derive(Debug, Clone)]
    struct Plan {
        gap: i64,
        close: Option<(Outcome, i64)>,
        flip: Option<i64>,
        lines: u64,
        emergency: bool,
    }

    fn arb_plan() -> impl Strategy<Value = Plan> {
        let outcome = prop_oneof![4 => Just(Outcome::Success), 2 => Just(Outcome::Failure), 1 => Just(Outcome::Cancelled)];
        (
            prop_oneof![Just(0i64), 0i64..4 * 86_400],
            proptest::option::weighted(0.9, (outcome, prop_oneof![Just(0i64), 0i64..3 * 86_400])),
            proptest::option::weighted(0.2, 0i64..86_400),
            0u64..80,
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(gap, close, flip, lines, emergency)| Plan {
                gap,
                close,
                flip,
                lines,
                emergency,
            })
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        (
            0u32..4,
            1u32..8,
            0.5f64..1.0,
            0u32..4,
            0u32..4,
            1u32..5,
            0.0f64..1.0,
        )
            .prop_map(
                |(min_history, window, rate, initial, step, min_changes, backoff)| Policy {
                    params: super::super::policy::PolicyParams {
                        min_history,
                        window,
                        min_success_rate: rate,
                        allowance: AllowanceParams {
                            initial,
                            step,
                            min_changes,
                            backoff,
                            max: 10,
                            floor: 0,
                            lookback_sprints: 4,
                        },
                        ..Default::default()
                    },
                    risk: RiskLimits {
                        max_lines_changed: Some(50),
                        sensitive_paths: Vec::new(),
                        ..RiskLimits::default()
                    },
                    ..Policy::default()
                },
            )
    }

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Kind {
        Decide,
        Close,
        Flip,
    }

    /// The gate, the naive way: before each decision, the history is rebuilt by scanning
    /// every other change with the ledger's rules (what was written before, by event order).
    fn gate_naively(plans: &[Plan], policy: &Policy, cal: SprintCalendar) -> Vec<RecordedChange> {
        let t0 = cal.start_of(0);
        let mut events: Vec<(i64, Kind, usize)> = Vec::new();
        let mut at = 0;
        for (i, p) in plans.iter().enumerate() {
            at += p.gap;
            events.push((at, Kind::Decide, i));
            if let Some((o, delay)) = p.close {
                events.push((at + delay, Kind::Close, i));
                if let (Outcome::Success, Some(flip)) = (o, p.flip) {
                    events.push((at + delay + flip, Kind::Flip, i));
                }
            }
        }
        events.sort();
        let stamp = |k: usize| Stamp {
            at: t0 + chrono::Duration::seconds(events[k].0),
            seq: k as i64 + 1,
        };
        let find = |kind: Kind, i: usize| events.iter().position(|(_, k, j)| *k == kind && *j == i);
        let mut decisions: Vec<Option<Decision>> = vec![None; plans.len()];
        for (k, (_, kind, i)) in events.iter().enumerate() {
            if *kind != Kind::Decide {
                continue;
            }
            let now = stamp(k).at;
            let before = |kind: Kind, j: usize| find(kind, j).is_some_and(|e| e < k);
            let outcome_of = |j: usize| -> Option<Outcome> {
                let (o, _) = plans[j].close?;
                before(Kind::Close, j).then(|| {
                    if before(Kind::Flip, j) {
                        Outcome::Failure
                    } else {
                        o
                    }
                })
            };
            let from = cal.index_of(now) - i64::from(policy.params.allowance.lookback_sprints);
            let mut closed: Vec<((DateTime<Utc>, usize), Outcome)> = Vec::new();
            let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
            for j in (0..plans.len()).filter(|j| j != i) {
                if let Some(o) = outcome_of(j).filter(|o| *o != Outcome::Cancelled) {
                    closed.push(((stamp(find(Kind::Close, j).unwrap()).at, j), o));
                }
                let Some(d) = decisions[j].as_ref() else {
                    continue;
                };
                let sprint = cal.index_of(stamp(find(Kind::Decide, j).unwrap()).at);
                if sprint < from {
                    continue;
                }
                let t = sprints.entry(sprint).or_default();
                t.pre_approved += u32::from(d.counts_against_allowance());
                t.emergency += u32::from(d.emergency.is_some());
                match outcome_of(j) {
                    Some(Outcome::Success) => t.succeeded += 1,
                    Some(Outcome::Failure) => t.failed += 1,
                    Some(Outcome::Cancelled) => t.cancelled += 1,
                    None => {}
                }
            }
            closed.sort_by_key(|c| std::cmp::Reverse(c.0));
            let history = History {
                closed_total: closed.len() as u64,
                recent: closed
                    .iter()
                    .take(policy.params.window as usize)
                    .map(|(_, o)| *o)
                    .collect(),
                sprints,
            };
            let facts = facts(*i, plans[*i].lines);
            decisions[*i] = Some(decide(&DecisionInput {
                facts: &facts,
                history: &history,
                policy,
                calendar: cal,
                now,
                emergency: plans[*i].emergency.then(|| "hotfix".to_string()),
                clock_override: None,
            }));
        }
        plans
            .iter()
            .enumerate()
            .map(|(i, p)| RecordedChange {
                id: format!("CG-{i}"),
                row: i as i64,
                facts: facts(i, p.lines),
                decision: decisions[i].clone().unwrap(),
                decided: stamp(find(Kind::Decide, i).unwrap()),
                superseded: Vec::new(),
                outcome: p
                    .close
                    .map(|(o, _)| (o, stamp(find(Kind::Close, i).unwrap()))),
                failed_after_deploy: find(Kind::Flip, i).map(stamp),
            })
            .collect()
    }

    fn cal() -> SprintCalendar {
        SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 7)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the history and the policy, replaying under the policy that decided it
        /// reproduces every decision, rule for rule.
        #[test]
        fn replay_under_the_deciding_policy_reproduces_every_decision(
            plans in proptest::collection::vec(arb_plan(), 1..40),
            policy in arb_policy(),
        ) {
            let recorded = gate_naively(&plans, &policy, cal());
            let replayed = replay(&recorded, &policy, cal());
            prop_assert_eq!(replayed.len(), recorded.len());
            for r in &replayed {
                prop_assert_eq!(&r.decision, &r.change.decision, "{}", r.change.id);
            }
            let summary = summarize(&replayed, &policy, cal(), cal().index_of(recorded.last().unwrap().decided.at));
            prop_assert_eq!(summary.same_as_recorded as usize, recorded.len());
        }
    }

    #[test]
    fn a_label_emergency_is_rederived_a_flag_is_kept() {
        let mut c = gate_naively(
            &[Plan {
                gap: 0,
                close: None,
                flip: None,
                lines: 1,
                emergency: true,
            }],
            &Policy::default(),
            cal(),
        )
        .remove(0);
        assert_eq!(c.requested_emergency().as_deref(), Some("hotfix"));
        c.facts.pull_request = Some(crate::domain::PullRequest {
            number: 7,
            labels: vec!["Emergency".into()],
            ..Default::default()
        });
        c.decision.emergency = Some("label 'emergency' on pull request #7".into());
        assert_eq!(c.requested_emergency(), None);
        c.decision.emergency = Some("label 'emergency' on pull request #8".into());
        assert!(c.requested_emergency().is_some());
    }
}
