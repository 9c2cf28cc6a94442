//! The track record of a service and environment, read from JQL over the labels.
//!
//! The history of a service and environment, from JQL over the labels.
//!
//! Per-sprint tallies: from the labels of a few pages of issues, or from counts per sprint.

use super::Jira;
use super::client::any_kind;
use super::client::q;
use super::client::q_list;
use super::codec::commit_of;
use super::labels;
use crate::domain::CorrelationKey;
use crate::domain::DecisionKind;
use crate::domain::History;
use crate::domain::Outcome;
use crate::domain::SprintCalendar;
use crate::domain::SprintTally;
use crate::itsm::TrackRecord;
use crate::itsm::{HistoryQuery, Since};
use anyhow::Result;
use async_trait::async_trait;
use chrono::Duration;
use chrono::TimeZone;
use chrono::Utc;
use std::collections::BTreeMap;

/// Pages read for the recent outcomes (`policy.window` of them) at most.
const RECENT_PAGES: usize = 10;

impl Jira {
    /// The changes of a service in an environment, but the one `exclude_key` names.
    pub(super) fn scope_jql(
        &self,
        service_id: &str,
        environment: &str,
        exclude_key: Option<&str>,
    ) -> String {
        let mut jql = format!(
            "project = {} AND labels = {}",
            q(&self.project),
            q(&labels::service(service_id, environment))
        );
        if let Some(exclude) = exclude_key {
            jql.push_str(&format!(
                " AND labels not in ({})",
                q(&labels::key(service_id, environment, &commit_of(exclude)))
            ));
        }
        jql
    }

    /// The most recent closed outcomes of `closed`, newest first, `window` of them at most,
    /// and whether Jira holds more. Jira may return fewer issues per page than asked: page
    /// on until the window is full (at most [`RECENT_PAGES`] pages).
    async fn recent(&self, closed: &str, window: u32) -> Result<(Vec<Outcome>, bool)> {
        let window = window.max(1) as usize;
        let jql = format!("{closed} ORDER BY created DESC");
        let mut recent: Vec<Outcome> = Vec::with_capacity(window);
        let mut token: Option<String> = None;
        for _ in 0..RECENT_PAGES {
            let max = u32::try_from(window - recent.len())
                .unwrap_or(PAGE)
                .min(PAGE);
            let (issues, next) = self
                .search(&jql, &["labels"], max, token.as_deref(), &[])
                .await?;
            recent.extend(issues.iter().filter(|v| v.is_change()).map(|v| {
                if v.has(&labels::outcome(Outcome::Failure)) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }));
            token = next;
            if recent.len() >= window || token.is_none() {
                break;
            }
        }
        recent.truncate(window);
        Ok((recent, token.is_some()))
    }

    /// The commit of the service's last change deployed successfully in this environment
    /// (labelled with the success outcome, which only a deployed change gets).
    pub(super) async fn last_sha(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Option<String>> {
        let jql = format!(
            "{} AND {} AND labels = {} ORDER BY created DESC",
            self.scope_jql(service_id, environment, None),
            any_kind(),
            q(&labels::outcome(Outcome::Success))
        );
        let (issues, _) = self.search(&jql, &["labels"], 5, None, &[]).await?;
        Ok(issues
            .into_iter()
            .filter(|v| v.is_change())
            .find_map(|v| v.stored.map(|s| s.sha())))
    }
}

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

#[async_trait]
impl TrackRecord for Jira {
    /// Requests per decision: one search for the recent outcomes, one count when the window
    /// is full, and up to [`TALLY_PAGES`] searches for the sprint tallies, or, when the
    /// lookback holds more changes than that, a fixed number of counts per sprint.
    async fn history(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let scope = self.scope_jql(q_.service_id, q_.environment, q_.exclude_key);
        let closed = format!(
            "{scope} AND labels in ({})",
            q_list([
                labels::outcome(Outcome::Success),
                labels::outcome(Outcome::Failure)
            ])
        );
        let (recent, more) = self.recent(&closed, q_.window).await?;
        let closed_total = if !more && (recent.len() as u64) < u64::from(q_.window) {
            recent.len() as u64
        } else {
            self.count(&closed).await?.max(recent.len() as u64)
        };
        let current = q_.calendar.index_of(q_.now);
        let sprints = match self.tallies_by_search(&scope, q_, current).await? {
            Some(s) => s,
            None => {
                tracing::info!(
                    "more than {} changes in the lookback; counting per sprint",
                    PAGE as usize * TALLY_PAGES
                );
                self.tallies_by_count(&scope, q_, current).await?
            }
        };
        Ok(History {
            closed_total,
            recent,
            sprints,
        })
    }

    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        let sha = self.last_sha(&key.service_id, &key.environment).await?;
        Ok(Since { sha, found: None })
    }
}

#[cfg(test)]
mod tests_tally {
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
