//! The report's sprints from what the ledger keeps: a finished sprint's KPI part is
//! computed once and kept with the write stamps of the days it was computed from; while
//! those stamps stand (no change decided or deployed on those days was written since), it
//! is read back instead of its changes. The current sprint is always computed from its
//! changes. When any finished sprint of the report must be computed again, the whole range
//! is, from its changes, exactly as a ledger without kept parts reports it; the finished
//! sprints are then kept (best-effort: a ledger that cannot be written still reports, and a
//! dry run keeps nothing).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::domain::SprintCalendar;
use crate::domain::kpi::{self, ChangeSummary, KpiInput, PartReach, SprintPart};
use crate::itsm::{Backend, DayStamp, KeptKpis, KeptSprint, ServiceRef};

/// What a report reads by: its calendar and clock, and whether it may keep parts (not in
/// a dry run).
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    pub calendar: SprintCalendar,
    pub now: DateTime<Utc>,
    pub keep: bool,
}

/// Where the parts of a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The finished sprints kept, the current one from its changes.
    Kept,
    /// Every sprint from its changes.
    Computed,
}

/// Where a report from sprint `first` reads: one sprint before it is read as context (a
/// failure restored in the range may have started there).
pub(super) fn window_from(r: &Reading, first: i64) -> DateTime<Utc> {
    r.calendar.start_of(first - 1)
}

/// Every change a report from sprint `first` reads. Nothing decided after the clock counts
/// (what-if runs).
pub(super) async fn window_changes(
    r: &Reading,
    backend: &dyn Backend,
    service: &ServiceRef,
    first: i64,
) -> Result<Vec<ChangeSummary>> {
    backend
        .change_summaries(
            &service.service_id,
            &service.environment,
            window_from(r, first),
            r.now,
        )
        .await
        .with_context(|| format!("cannot read the changes of {}", service.service_id))
}

/// The layout of a kept part's body (a serialized [`SprintPart`]); a part kept in another
/// layout is computed again.
pub(super) const KEPT_FORMAT: i64 = 1;

/// Unix seconds.
fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The midnight (UTC) of `t`, as the ledger's stamps name days.
fn day(t: i64) -> i64 {
    t - t % 86_400
}

/// The stamps of the days from `lo` to `hi`: the sum of their writes, and the earliest
/// decision of any change that touched them (`None`: no day stamped).
fn stamp_of(stamps: &[DayStamp], lo: i64, hi: i64) -> (i64, Option<i64>) {
    let (lo, hi) = (day(lo), day(hi));
    stamps
        .iter()
        .filter(|d| d.day >= lo && d.day <= hi)
        .fold((0, None), |(sum, earliest), d| {
            (
                sum + d.writes,
                Some(earliest.map_or(d.earliest, |e: i64| e.min(d.earliest))),
            )
        })
}

/// A kept part still true for a report reading from `from` at `now`: the same layout and
/// sprint dates, finished, computed from deploys all visible from `from` at `now`, its
/// days' writes as they were, and no change decided before either reading's start (one
/// that one of them saw and the other not) touching those days.
fn usable(
    k: &KeptSprint,
    sprint: i64,
    r: &Reading,
    from: DateTime<Utc>,
    stamps: &[DayStamp],
) -> Option<SprintPart> {
    let cal = &r.calendar;
    let now = secs(r.now);
    let fits = k.format == KEPT_FORMAT
        && k.sprint == sprint
        && k.start == secs(cal.start_of(sprint))
        && k.end == secs(cal.end_of(sprint))
        && k.end <= now
        && k.hi <= now
        && k.lo >= secs(from);
    if !fits {
        return None;
    }
    let (stamp, earliest) = stamp_of(stamps, k.lo, k.hi);
    if stamp != k.stamp || earliest.is_some_and(|e| e < k.window_from.max(secs(from))) {
        return None;
    }
    serde_json::from_str(&k.body).ok()
}

/// The part of each sprint of `range` (the last one the current sprint), oldest first.
pub(super) async fn parts(
    s: &Reading,
    backend: &dyn Backend,
    kept: &dyn KeptKpis,
    service: &ServiceRef,
    range: RangeInclusive<i64>,
) -> Result<(Vec<(i64, SprintPart)>, Source)> {
    let cal = &s.calendar;
    let (first, current) = (*range.start(), *range.end());
    let (svc, env) = (service.service_id.as_str(), service.environment.as_str());
    let from = window_from(s, first);
    let cannot = || format!("cannot read the kept KPIs of {svc}");
    // The stamps first: a write landing after them makes what is kept below look stale to
    // the next report, never the other way round.
    let stamps = kept
        .stamps(svc, env, from, s.now)
        .await
        .with_context(cannot)?;
    let rows = if current > first {
        kept.kept_sprints(svc, env, cal.start_of(first), cal.start_of(current - 1))
            .await
            .with_context(cannot)?
    } else {
        Vec::new()
    };
    let by_start: BTreeMap<i64, &KeptSprint> = rows.iter().map(|k| (k.start, k)).collect();
    let mut parts = Vec::with_capacity(range.clone().count());
    for sprint in first..current {
        let found = by_start
            .get(&secs(cal.start_of(sprint)))
            .and_then(|k| usable(k, sprint, s, from, &stamps));
        match found {
            Some(part) => parts.push((sprint, part)),
            None => break,
        }
    }
    if parts.len() as i64 == current - first {
        // Every finished sprint kept: the current one from its own changes and the deploys
        // of earlier changes its failure episodes can start after or end with.
        let start = cal.start_of(current);
        let mut changes = kept
            .deploys_around(svc, env, from, start)
            .await
            .with_context(cannot)?;
        changes.extend(
            backend
                .change_summaries(svc, env, start, s.now)
                .await
                .with_context(|| format!("cannot read the changes of {svc}"))?,
        );
        let computed = kpi::parts(&KpiInput {
            calendar: *cal,
            sprints: current..=current,
            now: s.now,
            changes: &changes,
            allowance: &BTreeMap::new(),
        });
        parts.extend(computed.into_iter().map(|(sprint, part, _)| (sprint, part)));
        return Ok((parts, Source::Kept));
    }
    let changes = window_changes(s, backend, service, first).await?;
    let computed = kpi::parts(&KpiInput {
        calendar: *cal,
        sprints: range,
        now: s.now,
        changes: &changes,
        allowance: &BTreeMap::new(),
    });
    if s.keep {
        let keep: Vec<KeptSprint> = computed
            .iter()
            .filter_map(|(sprint, part, reach)| keepable(s, from, &stamps, *sprint, part, reach))
            .collect();
        if let Err(e) = kept.keep_sprints(svc, env, &keep).await {
            // The report stands without them; the next one computes them again.
            tracing::debug!("the KPIs of {svc} in {env} were not kept: {e:#}");
        }
    }
    let parts = computed
        .into_iter()
        .map(|(sprint, part, _)| (sprint, part))
        .collect();
    Ok((parts, Source::Computed))
}

/// A finished sprint's part as kept, when it can be: its failure episodes all ended, each
/// of its failures had a deploy before it in what was read, and no change decided before
/// the reading's start touched the days it was computed from.
fn keepable(
    r: &Reading,
    from: DateTime<Utc>,
    stamps: &[DayStamp],
    sprint: i64,
    part: &SprintPart,
    reach: &PartReach,
) -> Option<KeptSprint> {
    let cal = &r.calendar;
    let now = secs(r.now);
    let (start, end) = (secs(cal.start_of(sprint)), secs(cal.end_of(sprint)));
    let (lo, hi) = (secs(reach.lo?), secs(reach.hi));
    if end > now || hi > now || lo < secs(from) || part.unrestored_failures > 0 {
        return None;
    }
    let (stamp, earliest) = stamp_of(stamps, lo, hi);
    if earliest.is_some_and(|e| e < secs(from)) {
        return None;
    }
    Some(KeptSprint {
        start,
        end,
        sprint,
        format: KEPT_FORMAT,
        stamp,
        lo,
        hi,
        window_from: secs(from),
        computed_at: now,
        body: serde_json::to_string(part).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kpi::KpiTable;
    use crate::itsm::local::tests::{Fixture, calendar, ledgers};

    fn service() -> ServiceRef {
        ServiceRef {
            service_id: "acme/api".into(),
            service: "api".into(),
            environment: "production".into(),
        }
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    const H: i64 = 3600;
    const D: i64 = 86_400;

    /// A pre-approved change decided at `decided` and deployed at `deployed`.
    fn row(key: &str, decided: i64, deployed: i64, outcome: &str) -> String {
        format!(
            "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                 state, decision, pre_approved, emergency, outcome, opened_at, decided_at,
                 deployed_at, first_commit_at, facts_json)
             VALUES ('{key}', 'api', 'acme/api', 'production', 'sha', 'closed', 'pre-approved',
                 1, 0, '{outcome}', {decided}, {decided}, {deployed}, {decided} - 3600, '{{}}')"
        )
    }

    /// One change decided at `decided` (Unix seconds), as a statement both stores run: of
    /// every kind the KPIs tell apart, deployed at once or now and then days later.
    fn change(rng: &mut Rng, key: &str, decided: i64) -> String {
        let roll = rng.below(100);
        let (decision, pre, emergency, imported) = match roll {
            0..=39 => ("'pre-approved'", 1, 0, "NULL"),
            40..=84 => ("'needs-approval'", 0, 0, "NULL"),
            85..=89 => ("'blocked'", 0, 0, "NULL"),
            90..=94 => ("'pre-approved'", 0, 1, "NULL"),
            _ => ("NULL", 0, 0, "'github deployment 1'"),
        };
        let outcome = match rng.below(100) {
            0..=69 => "success",
            70..=89 => "failure",
            _ => "cancelled",
        };
        let approved = if decision == "'needs-approval'" || decision == "'blocked'" {
            (decided + 60 * rng.below(600) as i64).to_string()
        } else {
            "NULL".into()
        };
        let late = if rng.below(100) < 4 {
            rng.below(20) as i64 * D
        } else {
            0
        };
        let deployed = if decision == "'blocked'" {
            "NULL".into()
        } else {
            (decided + 60 + 60 * rng.below(240) as i64 + late).to_string()
        };
        let fad = i64::from(outcome == "failure" && rng.below(4) == 0);
        let first_commit = decided - 60 * rng.below(3000) as i64;
        format!(
            "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                 state, decision, pre_approved, emergency, outcome, failed_after_deploy,
                 opened_at, decided_at, approved_at, deployed_at, closed_at, first_commit_at,
                 imported_from, facts_json)
             VALUES ('{key}', 'api', 'acme/api', 'production', 'sha', 'closed', {decision},
                 {pre}, {emergency}, '{outcome}', {fad}, {decided}, {decided}, {approved},
                 {deployed}, {decided} + 7200, {first_commit}, {imported}, '{{}}')"
        )
    }

    /// Changes every few hours from the start of sprint 0 to `until`.
    fn seed(f: &Fixture, rng: &mut Rng, until: i64) -> usize {
        let mut at = calendar().start_of(0).timestamp();
        let mut statements = Vec::new();
        while at < until {
            statements.push(change(rng, &format!("k{}", statements.len()), at));
            at += 600 + rng.below(9 * H as u64) as i64;
        }
        f.run(f.ledger.exec_for_test(&statements)).unwrap();
        statements.len()
    }

    fn reading(now: DateTime<Utc>, keep: bool) -> Reading {
        Reading {
            calendar: calendar(),
            now,
            keep,
        }
    }

    fn range(now: DateTime<Utc>, sprints: i64) -> RangeInclusive<i64> {
        let current = calendar().index_of(now);
        current - sprints + 1..=current
    }

    /// The report as `report` makes it on the ledger, and where its parts came from.
    fn kept_report(
        f: &Fixture,
        now: DateTime<Utc>,
        sprints: i64,
        keep: bool,
    ) -> (KpiTable, Source) {
        let r = reading(now, keep);
        let (parts, source) = f
            .run(parts(
                &r,
                &f.ledger,
                &f.ledger,
                &service(),
                range(now, sprints),
            ))
            .unwrap();
        (
            kpi::table(&calendar(), now, &parts, &BTreeMap::new()),
            source,
        )
    }

    /// The same report from every change of the range, as a ledger without kept parts
    /// (or any other backend) makes it.
    fn scratch(f: &Fixture, now: DateTime<Utc>, sprints: i64) -> KpiTable {
        let r = reading(now, false);
        let range = range(now, sprints);
        let changes = f
            .run(window_changes(&r, &f.ledger, &service(), *range.start()))
            .unwrap();
        kpi::compute(&KpiInput {
            calendar: calendar(),
            sprints: range,
            now,
            changes: &changes,
            allowance: &BTreeMap::new(),
        })
    }

    fn same(f: &Fixture, now: DateTime<Utc>, sprints: i64, what: &str) -> Source {
        let (kept, source) = kept_report(f, now, sprints, true);
        assert_eq!(
            kept,
            scratch(f, now, sprints),
            "{}: {what} ({sprints} sprints, {source:?})",
            f.name
        );
        source
    }

    #[test]
    fn kept_parts_give_the_report_from_scratch_after_any_write() {
        let cal = calendar();
        for f in ledgers() {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let now = cal.start_of(10) + chrono::Duration::days(3);
            let n = seed(&f, &mut rng, now.timestamp() - H);
            assert_eq!(same(&f, now, 6, "cold"), Source::Computed, "{}", f.name);
            assert_eq!(same(&f, now, 6, "warm"), Source::Kept, "{}", f.name);
            // A write in the current sprint leaves the finished sprints kept.
            let at = now.timestamp() - 2 * H;
            f.run(f.ledger.exec_for_test(&[change(&mut rng, "now1", at)]))
                .unwrap();
            assert_eq!(same(&f, now, 6, "a new change"), Source::Kept, "{}", f.name);
            // Writes in finished sprints: each makes the next report compute again, and the
            // one after read what that one kept.
            let in_sprint = |s: i64, rng: &mut Rng| {
                cal.start_of(s).timestamp() + rng.below(14 * D as u64) as i64
            };
            let edits: Vec<(&str, String)> = vec![
                ("an insert", {
                    let at = in_sprint(6, &mut rng);
                    change(&mut rng, "old1", at)
                }),
                (
                    "an outcome changed",
                    "UPDATE changes SET outcome = 'failure' WHERE correlation_key = 'k300'".into(),
                ),
                (
                    "a success turned failure after deploy",
                    format!(
                        "UPDATE changes SET failed_after_deploy = 1, outcome = 'failure'
                         WHERE correlation_key = 'k{}'",
                        n - 120
                    ),
                ),
                (
                    "a delete",
                    "DELETE FROM changes WHERE correlation_key = 'k350'".into(),
                ),
                (
                    "a deploy moved",
                    "UPDATE changes SET deployed_at = deployed_at + 86400 WHERE correlation_key = 'k330'"
                        .into(),
                ),
                (
                    "a failure deployed in the previous sprint, restored in a finished one",
                    format!(
                        "INSERT INTO changes (correlation_key, service, service_id, environment,
                             commit_sha, state, decision, pre_approved, emergency, outcome,
                             opened_at, decided_at, deployed_at, facts_json)
                         VALUES ('late1', 'api', 'acme/api', 'production', 'sha', 'closed',
                             'pre-approved', 1, 0, 'failure', {d}, {d}, {p}, '{{}}')",
                        d = cal.start_of(2).timestamp(),
                        p = cal.start_of(7).timestamp() + 5 * D
                    ),
                ),
            ];
            for (what, sql) in edits {
                f.run(f.ledger.exec_for_test(&[sql])).unwrap();
                same(&f, now, 6, what);
                same(&f, now, 6, &format!("after {what}, again"));
            }
            // Other ranges and clocks read the same kept parts, or compute again.
            for sprints in [1, 3, 6, 9, 11] {
                same(&f, now, sprints, "another range");
                same(&f, now, sprints, "another range, again");
            }
            let earlier = cal.start_of(9) + chrono::Duration::hours(30);
            same(&f, earlier, 6, "a what-if clock");
            same(&f, now, 6, "back to now");
            // Random writes anywhere, a report after each.
            for i in 0..40 {
                let key = format!("k{}", rng.below(n as u64));
                let sql = match rng.below(4) {
                    0 => {
                        let at = in_sprint(rng.below(11) as i64, &mut Rng(i + 7));
                        change(&mut rng, &format!("r{i}"), at)
                    }
                    1 => format!("DELETE FROM changes WHERE correlation_key = '{key}'"),
                    2 => format!(
                        "UPDATE changes SET outcome = 'success' WHERE correlation_key = '{key}'"
                    ),
                    _ => format!(
                        "UPDATE changes SET deployed_at = deployed_at + {} WHERE correlation_key = '{key}'",
                        rng.below(3 * D as u64)
                    ),
                };
                f.run(f.ledger.exec_for_test(&[sql])).unwrap();
                same(&f, now, 6, &format!("random write {i}"));
            }
            // The failure decided in sprint 2 and deployed in sprint 7 touches sprint 7's days
            // from before a 6-sprint report's reading: such a report computes every time. A
            // report that reads from before it keeps and reads its parts again.
            same(&f, now, 9, "settled");
            assert_eq!(
                same(&f, now, 9, "settled, again"),
                Source::Kept,
                "{}",
                f.name
            );
            assert_eq!(
                same(&f, now, 6, "from after it"),
                Source::Computed,
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn a_dry_run_keeps_nothing_and_a_read_only_ledger_still_reports() {
        let cal = calendar();
        let now = cal.start_of(10) + chrono::Duration::days(3);
        for f in ledgers() {
            seed(&f, &mut Rng(42), now.timestamp() - H);
            let kept = |f: &Fixture| {
                f.run(f.ledger.kept_sprints(
                    "acme/api",
                    "production",
                    cal.start_of(0),
                    cal.start_of(20),
                ))
                .unwrap()
                .len()
            };
            let (dry, source) = kept_report(&f, now, 6, false);
            assert_eq!((kept(&f), source), (0, Source::Computed), "{}", f.name);
            assert_eq!(dry, scratch(&f, now, 6), "{}", f.name);
            kept_report(&f, now, 6, true);
            assert_eq!(kept(&f), 5, "{}", f.name);
        }
        // A ledger opened for reading only: nothing kept, the report all the same.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let writable = crate::itsm::local::Ledger::open(&path, false).unwrap();
        let f = Fixture::on(writable);
        seed(&f, &mut Rng(42), now.timestamp() - H);
        let expected = scratch(&f, now, 6);
        let f = Fixture::on(crate::itsm::local::Ledger::open(&path, true).unwrap());
        let (report, source) = kept_report(&f, now, 6, true);
        assert_eq!((report, source), (expected, Source::Computed));
    }

    /// A failure episode that starts in a finished sprint after a deploy of the sprint
    /// before, and ends in the next one: writes there make the kept part stale.
    #[test]
    fn writes_before_and_after_a_finished_sprint_reach_its_failure_episodes() {
        let cal = calendar();
        let s = |n: i64| cal.start_of(n).timestamp();
        // Sprint 2 is the current one: only sprint 1 is kept.
        let now = cal.start_of(2) + chrono::Duration::days(5);
        for f in ledgers() {
            let mut rows = Vec::new();
            // Daily successes in sprints 0 to 2, the last of sprint 0 three hours before
            // its end.
            for sprint in 0..3 {
                for day in 1..if sprint == 2 { 5 } else { 13 } {
                    let at = s(sprint) + day * D + 6 * H;
                    rows.push(row(&format!("ok{sprint}-{day}"), at, at + 600, "success"));
                }
            }
            rows.push(row("ok0-last", s(1) - 3 * H, s(1) - 3 * H + 60, "success"));
            // Sprint 1 opens with a failure, and ends with one restored in sprint 2.
            rows.push(row("first-fail", s(1) + H, s(1) + H + 600, "failure"));
            rows.push(row("last-fail", s(2) - H, s(2) - 1800, "failure"));
            f.run(f.ledger.exec_for_test(&rows)).unwrap();
            assert_eq!(same(&f, now, 2, "cold"), Source::Computed, "{}", f.name);
            assert_eq!(same(&f, now, 2, "warm"), Source::Kept, "{}", f.name);
            // An earlier success in sprint 2 restores sprint 1's last failure sooner.
            let sooner = row("sooner", s(2) + 2 * H, s(2) + 3 * H, "success");
            f.run(f.ledger.exec_for_test(&[sooner])).unwrap();
            assert_eq!(
                same(&f, now, 2, "restored sooner"),
                Source::Computed,
                "{}",
                f.name
            );
            assert_eq!(same(&f, now, 2, "again"), Source::Kept, "{}", f.name);
            // A failure deployed last in sprint 0 (read as context) makes sprint 1's first
            // failure part of an episode that started before it.
            let before = row("before", s(1) - 2 * H, s(1) - H, "failure");
            f.run(f.ledger.exec_for_test(&[before])).unwrap();
            assert_eq!(
                same(&f, now, 2, "an earlier failure"),
                Source::Computed,
                "{}",
                f.name
            );
            assert_eq!(same(&f, now, 2, "again"), Source::Kept, "{}", f.name);
        }
    }
}
