//! KPIs per sprint, computed from a plain list of change summaries: what operations and
//! development review together every sprint.
//!
//! A change belongs to the sprint in which it was decided, and its outcome counts there.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::change::Outcome;
use super::decision::DecisionKind;
use super::sprint::SprintCalendar;

/// What the KPIs need to know about one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeSummary {
    /// When it was decided (an imported deployment: when it started).
    pub decided_at: DateTime<Utc>,
    /// `None` for a deployment imported from the forge's history (`history import`):
    /// changegate made no decision on it. It counts in the deployment measures (deploys,
    /// success and failure rates, frequency, restore), never in the decision ones.
    pub decision: Option<DecisionKind>,
    /// Counted against the allowance: pre-approved and not an emergency.
    pub pre_approved: bool,
    pub emergency: bool,
    /// When a human approved (or rejected) a change that needed approval.
    pub approved_at: Option<DateTime<Utc>>,
    /// When the gate let the deploy go ahead.
    pub deployed_at: Option<DateTime<Utc>>,
    /// The earliest commit in the change's range.
    pub first_commit_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// Deployed successfully, then turned into a failure by an incident (`verify`).
    pub failed_after_deploy: bool,
}

impl ChangeSummary {
    /// A deploy happened: the gate passed and the job was not cancelled.
    fn deployed(&self) -> Option<DateTime<Utc>> {
        self.deployed_at
            .filter(|_| self.outcome != Some(Outcome::Cancelled))
    }
}

/// Median and 90th percentile of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    pub count: u32,
    pub median_secs: Option<i64>,
    pub p90_secs: Option<i64>,
}

impl Spread {
    /// Median: the middle value (the mean of the two middle ones, rounded down, for an even
    /// count). 90th percentile: nearest rank, the value at rank ⌈0.9·n⌉.
    pub fn of(mut secs: Vec<i64>) -> Spread {
        secs.sort_unstable();
        let n = secs.len();
        let median = match n {
            0 => None,
            n if n % 2 == 1 => Some(secs[n / 2]),
            n => Some((secs[n / 2 - 1] + secs[n / 2]).div_euclid(2)),
        };
        let p90 = (n > 0).then(|| secs[(n * 9).div_ceil(10) - 1]);
        Spread {
            count: u32::try_from(n).unwrap_or(u32::MAX),
            median_secs: median,
            p90_secs: p90,
        }
    }
}

/// The KPIs of a set of changes (one sprint, or all the sprints reported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kpis {
    /// Changes decided.
    pub changes: u32,
    /// Deployments imported from the forge's history (`history import`), not decided by
    /// changegate: in the deployment measures below, not in `changes`.
    #[serde(default)]
    pub imported: u32,
    /// Pre-approved (emergencies excluded): the allowance used.
    pub pre_approved: u32,
    pub needs_approval: u32,
    pub blocked: u32,
    pub emergency: u32,
    /// From decision to a human's approval (or rejection), for changes that needed one.
    pub approval_wait: Spread,
    /// Deploys that happened (the gate passed and the job was not cancelled).
    pub deployments: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// Succeeded / (succeeded + failed); cancelled changes count in no rate.
    pub success_rate: Option<f64>,
    /// Failed / (succeeded + failed).
    pub change_failure_rate: Option<f64>,
    pub failed_after_deploy: u32,
    /// First commit in the range → deploy.
    pub lead_time: Spread,
    /// Deployments per day (of the sprint, or of its elapsed part for the current one).
    pub deployment_frequency_per_day: f64,
    /// A failure (or a run of them) → the next successful deploy, for failures that started here.
    pub time_to_restore: Spread,
    /// Failures not restored by a successful deploy yet.
    pub unrestored_failures: u32,
}

/// One sprint's KPIs, with its allowance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SprintKpis {
    pub sprint: i64,
    pub start: NaiveDate,
    /// The sprint's last day.
    pub end: NaiveDate,
    /// The allowance of pre-approved changes in force during the sprint.
    pub allowance: Option<u32>,
    #[serde(flatten)]
    pub kpis: Kpis,
}

/// What the KPIs are computed from.
#[derive(Debug, Clone)]
pub struct KpiInput<'a> {
    pub calendar: SprintCalendar,
    /// The sprints to report, oldest first; the last is normally the current one.
    pub sprints: RangeInclusive<i64>,
    pub now: DateTime<Utc>,
    /// Changes of one service and environment. Changes decided before the first sprint are
    /// context only (a failure restored within the range started before it).
    pub changes: &'a [ChangeSummary],
    /// The allowance per sprint (from the trust ramp's replay).
    pub allowance: &'a BTreeMap<i64, u32>,
}

/// The KPIs per sprint, and over all the sprints reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiTable {
    pub sprints: Vec<SprintKpis>,
    pub total: Kpis,
}

fn rate(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

/// A sorted multiset of durations in seconds, as (value, how many) by value: what a
/// median and a percentile over several sprints need, without the changes themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations(Vec<(i64, u32)>);

impl Durations {
    /// The durations `secs`, in any order.
    pub fn of(mut secs: Vec<i64>) -> Durations {
        secs.sort_unstable();
        let mut out: Vec<(i64, u32)> = Vec::new();
        for v in secs {
            match out.last_mut() {
                Some((last, n)) if *last == v => *n = n.saturating_add(1),
                _ => out.push((v, 1)),
            }
        }
        Durations(out)
    }

    /// Both sets together.
    pub fn merged(&self, other: &Durations) -> Durations {
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let next = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    i += 1;
                    j += 1;
                    (x.0, x.1.saturating_add(y.1))
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    i += 1;
                    *x
                }
                (_, Some(y)) => {
                    j += 1;
                    *y
                }
                (Some(x), None) => {
                    i += 1;
                    *x
                }
                (None, None) => break,
            };
            out.push(next);
        }
        Durations(out)
    }

    fn count(&self) -> usize {
        self.0.iter().map(|(_, n)| *n as usize).sum()
    }

    /// The value at rank `k` (from 0) in sorted order.
    fn nth(&self, k: usize) -> Option<i64> {
        let mut seen = 0usize;
        for (v, n) in &self.0 {
            seen += *n as usize;
            if k < seen {
                return Some(*v);
            }
        }
        None
    }

    /// Median and 90th percentile, exactly as [`Spread::of`] gives them for the same values.
    pub fn spread(&self) -> Spread {
        let n = self.count();
        let median = match n {
            0 => None,
            n if n % 2 == 1 => self.nth(n / 2),
            n => self
                .nth(n / 2 - 1)
                .zip(self.nth(n / 2))
                .map(|(a, b)| (a + b).div_euclid(2)),
        };
        let p90 = if n > 0 {
            self.nth((n * 9).div_ceil(10) - 1)
        } else {
            None
        };
        Spread {
            count: u32::try_from(n).unwrap_or(u32::MAX),
            median_secs: median,
            p90_secs: p90,
        }
    }
}

/// The counts and durations of a set of changes (one sprint's, or several sprints' added
/// together), from which their [`Kpis`] follow. A finished sprint's part can be kept and
/// added to others later: every total is a sum, a merge of durations, or a ratio of sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SprintPart {
    pub changes: u32,
    pub imported: u32,
    pub pre_approved: u32,
    pub needs_approval: u32,
    pub blocked: u32,
    pub emergency: u32,
    pub deployments: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub cancelled: u32,
    pub failed_after_deploy: u32,
    pub unrestored_failures: u32,
    pub approval_wait: Durations,
    pub lead_time: Durations,
    pub time_to_restore: Durations,
}

impl SprintPart {
    /// Both parts together.
    pub fn add(&self, o: &SprintPart) -> SprintPart {
        let sum = |a: u32, b: u32| a.saturating_add(b);
        SprintPart {
            changes: sum(self.changes, o.changes),
            imported: sum(self.imported, o.imported),
            pre_approved: sum(self.pre_approved, o.pre_approved),
            needs_approval: sum(self.needs_approval, o.needs_approval),
            blocked: sum(self.blocked, o.blocked),
            emergency: sum(self.emergency, o.emergency),
            deployments: sum(self.deployments, o.deployments),
            succeeded: sum(self.succeeded, o.succeeded),
            failed: sum(self.failed, o.failed),
            cancelled: sum(self.cancelled, o.cancelled),
            failed_after_deploy: sum(self.failed_after_deploy, o.failed_after_deploy),
            unrestored_failures: sum(self.unrestored_failures, o.unrestored_failures),
            approval_wait: self.approval_wait.merged(&o.approval_wait),
            lead_time: self.lead_time.merged(&o.lead_time),
            time_to_restore: self.time_to_restore.merged(&o.time_to_restore),
        }
    }

    /// The KPIs, over `days` days.
    pub fn kpis(&self, days: f64) -> Kpis {
        let (succeeded, failed) = (self.succeeded, self.failed);
        Kpis {
            changes: self.changes,
            imported: self.imported,
            pre_approved: self.pre_approved,
            needs_approval: self.needs_approval,
            blocked: self.blocked,
            emergency: self.emergency,
            approval_wait: self.approval_wait.spread(),
            deployments: self.deployments,
            succeeded,
            failed,
            cancelled: self.cancelled,
            success_rate: rate(succeeded, succeeded + failed),
            change_failure_rate: rate(failed, succeeded + failed),
            failed_after_deploy: self.failed_after_deploy,
            lead_time: self.lead_time.spread(),
            deployment_frequency_per_day: if days > 0.0 {
                f64::from(self.deployments) / days
            } else {
                0.0
            },
            time_to_restore: self.time_to_restore.spread(),
            unrestored_failures: self.unrestored_failures,
        }
    }
}

/// What a sprint's part was computed from beyond the sprint's own changes: deploys (of
/// any sprint's changes) from `lo` to `hi`. A failure's episode of failures starts or not
/// by the deploy before it, and ends at the next successful deploy, which may belong to
/// another sprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartReach {
    /// The earliest deploy read: the sprint's start, or the deploy before one of its
    /// failures. `None` when a failure had no deploy before it in what was read (the part
    /// then depends on where the reading started).
    pub lo: Option<DateTime<Utc>>,
    /// The latest deploy read: the sprint's last instant, one of its failures' deploys, or
    /// the success that ended an episode started in it.
    pub hi: DateTime<Utc>,
}

/// Walks the deploys in order: failure episodes (from the first failed deploy of a run of
/// failures to the next successful deploy), each as (sprint it started in, restore seconds
/// or None), and per sprint how far from its own changes the walk reached ([`PartReach`]).
#[allow(clippy::type_complexity)]
fn restore_walk(
    changes: &[ChangeSummary],
    calendar: &SprintCalendar,
) -> (Vec<(i64, Option<i64>)>, BTreeMap<i64, PartReach>) {
    let mut deploys: Vec<(DateTime<Utc>, &ChangeSummary)> = changes
        .iter()
        .filter(|c| matches!(c.outcome, Some(Outcome::Success | Outcome::Failure)))
        .filter_map(|c| c.deployed().map(|at| (at, c)))
        .collect();
    deploys.sort_by_key(|(at, _)| *at);
    let mut reach: BTreeMap<i64, PartReach> = BTreeMap::new();
    let mut stretch = |sprint: i64, lo: Option<Option<DateTime<Utc>>>, hi: DateTime<Utc>| {
        let r = reach.entry(sprint).or_insert_with(|| PartReach {
            lo: Some(calendar.start_of(sprint)),
            hi: calendar.end_of(sprint) - chrono::Duration::seconds(1),
        });
        if let Some(lo) = lo {
            r.lo = lo.zip(r.lo).map(|(a, b)| a.min(b));
        }
        r.hi = r.hi.max(hi);
    };
    let mut episodes = Vec::new();
    let mut open: Option<(DateTime<Utc>, i64)> = None;
    let mut before: Option<DateTime<Utc>> = None;
    for (at, c) in deploys {
        if c.outcome == Some(Outcome::Failure) {
            stretch(calendar.index_of(c.decided_at), Some(before), at);
        }
        match (c.outcome, open) {
            (Some(Outcome::Failure), None) => open = Some((at, calendar.index_of(c.decided_at))),
            (Some(Outcome::Success), Some((since, sprint))) => {
                episodes.push((sprint, Some((at - since).num_seconds())));
                stretch(sprint, None, at);
                open = None;
            }
            _ => {}
        }
        before = Some(at);
    }
    if let Some((_, sprint)) = open {
        episodes.push((sprint, None));
    }
    (episodes, reach)
}

fn part(changes: &[&ChangeSummary], episodes: &[Option<i64>]) -> SprintPart {
    let count = |f: &dyn Fn(&ChangeSummary) -> bool| {
        u32::try_from(changes.iter().filter(|c| f(c)).count()).unwrap_or(u32::MAX)
    };
    let approval_wait = changes
        .iter()
        // A rejected change counts as blocked, yet a human answered it all the same.
        .filter(|c| {
            matches!(
                c.decision,
                Some(DecisionKind::NeedsApproval | DecisionKind::Blocked)
            )
        })
        .filter_map(|c| {
            c.approved_at
                .map(|a| (a - c.decided_at).num_seconds().max(0))
        })
        .collect();
    let lead_time = changes
        .iter()
        .filter_map(|c| Some((c.deployed()? - c.first_commit_at?).num_seconds().max(0)))
        .collect();
    SprintPart {
        changes: count(&|c| c.decision.is_some()),
        imported: count(&|c| c.decision.is_none()),
        pre_approved: count(&|c| c.pre_approved),
        needs_approval: count(&|c| c.decision == Some(DecisionKind::NeedsApproval)),
        blocked: count(&|c| c.decision == Some(DecisionKind::Blocked)),
        emergency: count(&|c| c.emergency),
        deployments: count(&|c| c.deployed().is_some()),
        succeeded: count(&|c| c.outcome == Some(Outcome::Success)),
        failed: count(&|c| c.outcome == Some(Outcome::Failure)),
        cancelled: count(&|c| c.outcome == Some(Outcome::Cancelled)),
        failed_after_deploy: count(&|c| c.failed_after_deploy),
        unrestored_failures: u32::try_from(episodes.iter().filter(|e| e.is_none()).count())
            .unwrap_or(u32::MAX),
        approval_wait: Durations::of(approval_wait),
        lead_time: Durations::of(lead_time),
        time_to_restore: Durations::of(episodes.iter().flatten().copied().collect()),
    }
}

/// Days of `sprint` that have passed by `now` (a whole sprint once it is over; at least one).
fn days_of(calendar: &SprintCalendar, sprint: i64, now: DateTime<Utc>) -> f64 {
    let start = calendar.start_of(sprint);
    let end = calendar.end_of(sprint).min(now);
    let secs = (end - start).num_seconds().max(0) as f64;
    (secs / 86_400.0).max(1.0)
}

/// The part of every sprint in `input.sprints`, oldest first, with how far each reached.
pub fn parts(input: &KpiInput<'_>) -> Vec<(i64, SprintPart, PartReach)> {
    let cal = &input.calendar;
    let mut by_sprint: BTreeMap<i64, Vec<&ChangeSummary>> = BTreeMap::new();
    for c in input.changes {
        let sprint = cal.index_of(c.decided_at);
        if input.sprints.contains(&sprint) {
            by_sprint.entry(sprint).or_default().push(c);
        }
    }
    let (all_episodes, reach) = restore_walk(input.changes, cal);
    let mut episodes: BTreeMap<i64, Vec<Option<i64>>> = BTreeMap::new();
    for (sprint, secs) in all_episodes {
        if input.sprints.contains(&sprint) {
            episodes.entry(sprint).or_default().push(secs);
        }
    }
    input
        .sprints
        .clone()
        .map(|sprint| {
            let changes = by_sprint.get(&sprint).map(Vec::as_slice).unwrap_or(&[]);
            let reached = reach.get(&sprint).copied().unwrap_or(PartReach {
                lo: Some(cal.start_of(sprint)),
                hi: cal.end_of(sprint) - chrono::Duration::seconds(1),
            });
            let p = part(
                changes,
                episodes.get(&sprint).map(Vec::as_slice).unwrap_or(&[]),
            );
            (sprint, p, reached)
        })
        .collect()
}

/// The table of the sprints' parts (`parts`, oldest first: one per sprint of the range).
pub fn table(
    calendar: &SprintCalendar,
    now: DateTime<Utc>,
    parts: &[(i64, SprintPart)],
    allowance: &BTreeMap<i64, u32>,
) -> KpiTable {
    let mut sprints = Vec::with_capacity(parts.len());
    let mut total_days = 0.0;
    let mut total = SprintPart::default();
    for (sprint, p) in parts {
        let sprint = *sprint;
        let days = days_of(calendar, sprint, now);
        total_days += days;
        total = total.add(p);
        sprints.push(SprintKpis {
            sprint,
            start: calendar.start_of(sprint).date_naive(),
            end: (calendar.end_of(sprint) - chrono::Duration::days(1)).date_naive(),
            allowance: allowance.get(&sprint).copied(),
            kpis: p.kpis(days),
        });
    }
    KpiTable {
        total: total.kpis(total_days),
        sprints,
    }
}

/// Computes the KPIs of every sprint in `input.sprints` and over all of them.
pub fn compute(input: &KpiInput<'_>) -> KpiTable {
    let parts: Vec<(i64, SprintPart)> = parts(input)
        .into_iter()
        .map(|(sprint, p, _)| (sprint, p))
        .collect();
    table(&input.calendar, input.now, &parts, input.allowance)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;

    fn cal() -> SprintCalendar {
        // Sprint 1 starts Monday 2026-01-19, so sprint 0 is the one from Monday 2026-01-05;
        // 14-day sprints.
        SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 19).unwrap(), 14)
    }

    /// An instant `secs` after the start of sprint 0.
    fn t(secs: i64) -> DateTime<Utc> {
        cal().start_of(0) + chrono::Duration::seconds(secs)
    }

    /// A pre-approved change decided at `at`, deployed 10 minutes later, first commit a day before.
    fn pre(at: i64, outcome: Outcome) -> ChangeSummary {
        ChangeSummary {
            decided_at: t(at),
            decision: Some(DecisionKind::PreApproved),
            pre_approved: true,
            emergency: false,
            approved_at: None,
            deployed_at: Some(t(at + 600)),
            first_commit_at: Some(t(at - D)),
            outcome: Some(outcome),
            failed_after_deploy: false,
        }
    }

    /// A change that needed approval, approved `wait` seconds after its decision.
    fn approved(at: i64, wait: i64, outcome: Outcome) -> ChangeSummary {
        ChangeSummary {
            decision: Some(DecisionKind::NeedsApproval),
            pre_approved: false,
            approved_at: Some(t(at + wait)),
            deployed_at: Some(t(at + wait + 60)),
            ..pre(at, outcome)
        }
    }

    #[test]
    fn spread_median_and_nearest_rank_p90() {
        assert_eq!(Spread::of(vec![]), Spread::default());
        // Odd: the middle one. p90 of 5 values: rank ceil(4.5) = 5, the largest.
        assert_eq!(
            Spread::of(vec![50, 10, 40, 20, 30]),
            Spread {
                count: 5,
                median_secs: Some(30),
                p90_secs: Some(50)
            }
        );
        // Even: mean of 20 and 30. p90 of 4: rank ceil(3.6) = 4.
        assert_eq!(
            Spread::of(vec![10, 20, 30, 40]),
            Spread {
                count: 4,
                median_secs: Some(25),
                p90_secs: Some(40)
            }
        );
        // Ten values 1..=10: median (5+6)/2 = 5 (rounded down), p90 rank 9 → 9.
        assert_eq!(Spread::of((1..=10).collect()).p90_secs, Some(9));
        assert_eq!(Spread::of((1..=10).collect()).median_secs, Some(5));
    }

    proptest::proptest! {
        #[test]
        fn kept_durations_give_the_spread_of_all_their_values(
            a in proptest::collection::vec(-50i64..5000, 0..60),
            b in proptest::collection::vec(-50i64..5000, 0..60),
            c in proptest::collection::vec(0i64..40, 0..60),
        ) {
            let all: Vec<i64> = a.iter().chain(&b).chain(&c).copied().collect();
            let merged = Durations::of(a)
                .merged(&Durations::of(b))
                .merged(&Durations::of(c));
            proptest::prop_assert_eq!(merged.spread(), Spread::of(all));
        }
    }

    #[test]
    fn parts_added_up_give_the_total() {
        // The total of a table is the sprints' parts added up: the same as the KPIs of all
        // their changes together.
        let changes: Vec<ChangeSummary> = (0..40)
            .map(|i| {
                let outcome = [Outcome::Success, Outcome::Failure, Outcome::Cancelled][i % 3];
                approved(i as i64 * 11 * H, (i as i64 % 7) * 600, outcome)
            })
            .collect();
        let table = compute(&KpiInput {
            calendar: cal(),
            sprints: 0..=1,
            now: t(20 * D),
            changes: &changes,
            allowance: &BTreeMap::new(),
        });
        let refs: Vec<&ChangeSummary> = changes
            .iter()
            .filter(|c| c.decided_at < t(20 * D))
            .collect();
        let (episodes, _) = restore_walk(&changes, &cal());
        let secs: Vec<Option<i64>> = episodes
            .iter()
            .filter(|(s, _)| (0..=1).contains(s))
            .map(|(_, e)| *e)
            .collect();
        assert_eq!(table.total, part(&refs, &secs).kpis(14.0 + 6.0));
    }

    #[test]
    fn one_sprint_worked_by_hand() {
        // Sprint 0 (2026-01-05 .. 2026-01-18), fully in the past.
        let mut after_incident = pre(2 * D, Outcome::Failure);
        after_incident.failed_after_deploy = true;
        let cancelled = ChangeSummary {
            outcome: Some(Outcome::Cancelled),
            ..pre(5 * D, Outcome::Success)
        };
        let blocked = ChangeSummary {
            decision: Some(DecisionKind::Blocked),
            pre_approved: false,
            deployed_at: None,
            outcome: Some(Outcome::Cancelled),
            ..pre(6 * D, Outcome::Success)
        };
        let mut emergency = pre(7 * D, Outcome::Success);
        emergency.pre_approved = false;
        emergency.emergency = true;
        let changes = vec![
            pre(D, Outcome::Success),                 // deployed day 1 + 10m
            after_incident,                           // deployed day 2 + 10m, failed after deploy
            approved(3 * D, 2 * H, Outcome::Success), // waited 2h; deployed day 3 + 2h01m
            approved(4 * D, 6 * H, Outcome::Failure), // waited 6h; deployed day 4 + 6h01m
            cancelled,
            blocked,
            emergency,                                // deployed day 7 + 10m, success
            approved(8 * D, 4 * H, Outcome::Success), // waited 4h; deployed day 8 + 4h01m
        ];
        let allowance = BTreeMap::from([(0, 4)]);
        let table = compute(&KpiInput {
            calendar: cal(),
            sprints: 0..=0,
            now: t(30 * D),
            changes: &changes,
            allowance: &allowance,
        });
        let s = &table.sprints[0];
        assert_eq!((s.sprint, s.allowance), (0, Some(4)));
        assert_eq!(s.start, NaiveDate::from_ymd_opt(2026, 1, 5).unwrap());
        assert_eq!(s.end, NaiveDate::from_ymd_opt(2026, 1, 18).unwrap());
        let k = &s.kpis;
        assert_eq!(k.changes, 8);
        // Pre-approved and counted: day 1, day 2, and the cancelled one; not the emergency.
        assert_eq!(k.pre_approved, 3);
        assert_eq!((k.needs_approval, k.blocked, k.emergency), (3, 1, 1));
        // Waits 2h, 6h, 4h: median 4h; p90 rank ceil(2.7) = 3 → 6h.
        assert_eq!(
            k.approval_wait,
            Spread {
                count: 3,
                median_secs: Some(4 * H),
                p90_secs: Some(6 * H)
            }
        );
        // Deployed and not cancelled: days 1, 2, 3, 4, 7, 8 = 6 deployments.
        assert_eq!(k.deployments, 6);
        // Success: days 1, 3, 7, 8 = 4; failure: day 2 (after deploy), day 4 = 2.
        assert_eq!(
            (k.succeeded, k.failed, k.cancelled, k.failed_after_deploy),
            (4, 2, 2, 1)
        );
        assert_eq!(k.success_rate, Some(4.0 / 6.0));
        assert_eq!(k.change_failure_rate, Some(2.0 / 6.0));
        // Lead times: first commit is a day before the decision; deploy 10m after a
        // pre-approval (D + 600 s) or wait + 60 s after an approval.
        // Values: D+600 (day 1), D+600 (day 2), D+2h+60, D+6h+60, D+600 (day 7), D+4h+60.
        // Sorted: D+600 ×3, D+2h+60, D+4h+60, D+6h+60; median = (D+600 + D+2h+60)/2.
        assert_eq!(k.lead_time.count, 6);
        assert_eq!(
            k.lead_time.median_secs,
            Some((2 * D + 600 + 2 * H + 60) / 2)
        );
        // p90 rank ceil(5.4) = 6 → the largest.
        assert_eq!(k.lead_time.p90_secs, Some(D + 6 * H + 60));
        // 6 deployments over the 14 days of a finished sprint.
        assert_eq!(k.deployment_frequency_per_day, 6.0 / 14.0);
        // Failure episodes: day 2 failure (deployed 2D+600) → next success deployed
        // 3D+2h+60: 1D + 2h - 540 s. Day 4 failure (4D+6h+60) → day 7 success (7D+600):
        // 3D - 6h + 540 s. Median of the two = their mean.
        let first = D + 2 * H - 540;
        let second = 3 * D - 6 * H + 540;
        assert_eq!(k.time_to_restore.count, 2);
        assert_eq!(k.time_to_restore.median_secs, Some((first + second) / 2));
        assert_eq!(k.unrestored_failures, 0);
        assert_eq!(table.total, *k);
    }

    #[test]
    fn sprints_split_context_and_the_current_sprint() {
        // A failure in sprint -1 (context, before the range) restored in sprint 0: the
        // episode started before the range, so no sprint of the range counts it.
        // In sprint 1 (current, 3.5 days elapsed): two failures in a row then nothing.
        let changes = vec![
            pre(-2 * D, Outcome::Failure),
            pre(D, Outcome::Success),
            pre(15 * D, Outcome::Failure),
            pre(16 * D, Outcome::Failure),
            approved(16 * D, H, Outcome::Success),
        ];
        // The approved change deployed at 16D+1h+60 s restores the run that started at 15D+600.
        let allowance = BTreeMap::from([(0, 2), (1, 4)]);
        let now = t(14 * D + 3 * D + 12 * H);
        let table = compute(&KpiInput {
            calendar: cal(),
            sprints: 0..=1,
            now,
            changes: &changes,
            allowance: &allowance,
        });
        let [s0, s1] = [&table.sprints[0], &table.sprints[1]];
        assert_eq!((s0.kpis.changes, s0.kpis.time_to_restore.count), (1, 0));
        assert_eq!(s0.kpis.deployment_frequency_per_day, 1.0 / 14.0);
        assert_eq!(s1.kpis.changes, 3);
        // One episode (two failures in a row are one), restored after 1D + 1h + 60 - 600 s.
        assert_eq!(s1.kpis.time_to_restore.count, 1);
        assert_eq!(s1.kpis.time_to_restore.median_secs, Some(D + H + 60 - 600));
        // 3 deployments in the 3.5 days of the current sprint so far.
        assert_eq!(s1.kpis.deployment_frequency_per_day, 3.0 / 3.5);
        assert_eq!(s1.allowance, Some(4));
        // Totals: 4 changes over 17.5 days; the context change is not among them.
        assert_eq!(table.total.changes, 4);
        assert_eq!(table.total.deployment_frequency_per_day, 4.0 / 17.5);
        assert_eq!(table.total.success_rate, Some(2.0 / 4.0));
    }

    #[test]
    fn imported_deployments_count_as_deployments_not_as_decisions() {
        let imported = |at: i64, outcome| ChangeSummary {
            decision: None,
            pre_approved: false,
            first_commit_at: None,
            ..pre(at, outcome)
        };
        let changes = vec![
            imported(H, Outcome::Success),
            imported(2 * H, Outcome::Failure),
            pre(3 * H, Outcome::Success),
        ];
        let table = compute(&KpiInput {
            calendar: cal(),
            sprints: 0..=0,
            now: t(14 * D),
            changes: &changes,
            allowance: &BTreeMap::new(),
        });
        let k = &table.sprints[0].kpis;
        assert_eq!((k.changes, k.imported, k.pre_approved), (1, 2, 1));
        assert_eq!((k.deployments, k.succeeded, k.failed), (3, 2, 1));
        assert_eq!(k.needs_approval + k.blocked, 0);
        assert_eq!(k.time_to_restore.count, 1);
    }

    #[test]
    fn an_open_failure_is_counted_as_unrestored() {
        let changes = vec![pre(D, Outcome::Success), pre(2 * D, Outcome::Failure)];
        let table = compute(&KpiInput {
            calendar: cal(),
            sprints: 0..=0,
            now: t(3 * D),
            changes: &changes,
            allowance: &BTreeMap::new(),
        });
        let k = &table.sprints[0].kpis;
        assert_eq!((k.time_to_restore.count, k.unrestored_failures), (0, 1));
        assert_eq!(table.sprints[0].allowance, None);
        // Three days elapsed in the current sprint.
        assert_eq!(k.deployment_frequency_per_day, 2.0 / 3.0);
    }
}
