//! Per-sprint tallies: from the labels of a few pages of issues, or from counts per sprint.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{Duration, TimeZone, Utc};

use super::search::{any_kind, q, q_list};
use super::{Jira, labels};
use crate::domain::{DecisionKind, Outcome, SprintCalendar, SprintTally};
use crate::itsm::HistoryQuery;

/// Issues per page of a history search, and how many pages of a tally search before
/// counting per sprint.
pub(super) const PAGE: u32 = 100;
pub(super) const TALLY_PAGES: usize = 4;

impl Jira {
    /// Per-sprint tallies from the labels of every change decided since `from_sprint`, read
    /// in at most [`TALLY_PAGES`] pages; `None` when there are more.
    pub(super) async fn tallies_by_search(
        &self,
        scope: &str,
        q_: &HistoryQuery<'_>,
        current: i64,
    ) -> Result<Option<BTreeMap<i64, SprintTally>>> {
        // `updated` is a superset of "decided since" (deciding updates the issue); a day of
        // slack covers any time zone of the Jira user, and the day label filters exactly.
        let since = (q_.calendar.start_of(q_.from_sprint) - Duration::days(1)).format("%Y-%m-%d");
        let jql = format!(
            "{scope} AND {} AND updated >= {} ORDER BY created DESC",
            any_kind(),
            q(&since.to_string())
        );
        let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
        let mut token: Option<String> = None;
        for _ in 0..TALLY_PAGES {
            let (issues, next) = self
                .search(&jql, &["labels"], PAGE, token.as_deref(), &[])
                .await?;
            for v in issues.iter().filter(|v| v.is_change()) {
                tally_labels(
                    &v.labels,
                    &q_.calendar,
                    q_.from_sprint,
                    current,
                    &mut sprints,
                );
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(Some(sprints)),
            }
        }
        Ok(None)
    }

    /// Per-sprint tallies from approximate counts: a fixed number of requests per sprint
    /// of the lookback, however many changes it holds.
    pub(super) async fn tallies_by_count(
        &self,
        scope: &str,
        q_: &HistoryQuery<'_>,
        current: i64,
    ) -> Result<BTreeMap<i64, SprintTally>> {
        let mut sprints = BTreeMap::new();
        for sprint in q_.from_sprint..=current {
            let start = q_.calendar.start_of(sprint).date_naive();
            let days = (0..q_.calendar.length_days())
                .map(|i| labels::day(start + Duration::days(i64::from(i))));
            let in_sprint = format!("{scope} AND labels in ({})", q_list(days));
            let with = |label: String| format!("{in_sprint} AND labels = {}", q(&label));
            let mut tally = SprintTally {
                succeeded: clamp_u32(self.count(&with(labels::outcome(Outcome::Success))).await?),
                failed: clamp_u32(self.count(&with(labels::outcome(Outcome::Failure))).await?),
                ..SprintTally::default()
            };
            if sprint == current {
                tally.cancelled = clamp_u32(
                    self.count(&with(labels::outcome(Outcome::Cancelled)))
                        .await?,
                );
                tally.pre_approved = clamp_u32(
                    self.count(&format!(
                        "{in_sprint} AND labels = {} AND labels not in ({})",
                        q(&labels::kind(DecisionKind::PreApproved)),
                        q(labels::EMERGENCY)
                    ))
                    .await?,
                );
                tally.emergency =
                    clamp_u32(self.count(&with(labels::EMERGENCY.to_string())).await?);
            }
            if tally != SprintTally::default() {
                sprints.insert(sprint, tally);
            }
        }
        Ok(sprints)
    }
}

/// A count as a tally field, saturating.
fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Adds one change's labels to the tally of the sprint it was decided in.
fn tally_labels(
    list: &[String],
    calendar: &SprintCalendar,
    from: i64,
    current: i64,
    sprints: &mut BTreeMap<i64, SprintTally>,
) {
    let Some(day) = list.iter().find_map(|l| labels::parse_day(l)) else {
        return;
    };
    let at = Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN));
    let sprint = calendar.index_of(at);
    if sprint < from || sprint > current {
        return;
    }
    let has = |l: &str| labels::has(list, l);
    let t = sprints.entry(sprint).or_default();
    if has(&labels::outcome(Outcome::Failure)) {
        t.failed += 1;
    } else if has(&labels::outcome(Outcome::Success)) {
        t.succeeded += 1;
    } else if has(&labels::outcome(Outcome::Cancelled)) {
        t.cancelled += 1;
    }
    let emergency = has(labels::EMERGENCY);
    if emergency {
        t.emergency += 1;
    } else if has(&labels::kind(DecisionKind::PreApproved)) {
        t.pre_approved += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn tallies_by_decided_day() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        let day = |y, m, d| labels::day(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let mut sprints = BTreeMap::new();
        let pre = labels::kind(DecisionKind::PreApproved);
        let ok = labels::outcome(Outcome::Success);
        let bad = labels::outcome(Outcome::Failure);
        tally_labels(
            &[pre.clone(), ok.clone(), day(2026, 1, 5)],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(
            &[pre.clone(), bad, day(2026, 1, 18)],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(
            &[
                pre.clone(),
                labels::EMERGENCY.into(),
                ok.clone(),
                day(2026, 1, 19),
            ],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(&[pre, ok, day(2025, 1, 1)], &cal, -5, 3, &mut sprints);
        // Sprint 1 starts on the calendar's start day, 2026-01-05.
        assert_eq!(
            sprints[&1],
            SprintTally {
                succeeded: 1,
                failed: 1,
                pre_approved: 2,
                ..SprintTally::default()
            }
        );
        assert_eq!(
            sprints[&2],
            SprintTally {
                succeeded: 1,
                emergency: 1,
                ..SprintTally::default()
            }
        );
        assert_eq!(sprints.len(), 2);
    }
}
