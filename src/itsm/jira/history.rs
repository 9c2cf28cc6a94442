//! The track record of a service and environment, read from JQL over the labels.
//!
//! The history of a service and environment, from JQL over the labels.
//!
//! Per-sprint tallies: from the labels of a few pages of issues, or from counts per sprint.
//!
//! A gate reads it with its lookup, in one search when the service's changes fit in a page
//! ([`Jira::survey`]).

use super::Jira;
use super::client::any_kind;
use super::client::q;
use super::client::q_list;
use super::codec::IssueView;
use super::codec::commit_of;
use super::labels;
use super::lifecycle::{Found, Known};
use crate::domain::CorrelationKey;
use crate::domain::DecisionKind;
use crate::domain::History;
use crate::domain::Outcome;
use crate::domain::SprintCalendar;
use crate::domain::SprintTally;
use crate::itsm::TrackRecord;
use crate::itsm::{HistoryQuery, Lookup, Since};
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

/// The newest changes of a service and environment, read in one search before a decision.
#[derive(Debug, Clone)]
pub(crate) struct Survey {
    /// The service's label ([`labels::service`]): whose changes these are.
    service_label: String,
    /// Its changes, newest first.
    issues: Vec<IssueView>,
    /// Whether they are all of its changes (the search had no next page).
    complete: bool,
}

impl Survey {
    /// The changes but the one `exclude_label` marks.
    fn others<'a>(&'a self, exclude_label: Option<&'a str>) -> impl Iterator<Item = &'a IssueView> {
        self.issues
            .iter()
            .filter(move |v| exclude_label.is_none_or(|l| !v.has(l)))
    }
}

/// Whether an issue carries a decision (the labels `any_kind` matches).
fn decided(v: &IssueView) -> bool {
    labels::KINDS.iter().any(|k| v.has(&labels::kind(*k)))
}

/// A closed change's outcome, from its labels.
fn closed_outcome(v: &IssueView) -> Option<Outcome> {
    if v.has(&labels::outcome(Outcome::Failure)) {
        Some(Outcome::Failure)
    } else if v.has(&labels::outcome(Outcome::Success)) {
        Some(Outcome::Success)
    } else {
        None
    }
}

impl Jira {
    /// One search for what a gate reads before it decides: the newest page of the changes
    /// of the key's service and environment. It holds the key's own issue, the last change
    /// deployed successfully, the recent outcomes and the sprint tallies whenever the page
    /// holds every change of the service; what an incomplete page cannot tell is searched
    /// on its own (the key's issue at once; the rest in `last_change_sha` and `history`).
    pub(super) async fn survey(&self, key: &CorrelationKey) -> Result<Known> {
        let jql = format!(
            "{} ORDER BY created DESC",
            self.scope_jql(&key.service_id, &key.environment, None)
        );
        let (issues, next) = self
            .search(&jql, &["status", "labels", "created"], PAGE, None, &[])
            .await?;
        let complete = next.is_none();
        let issues: Vec<IssueView> = issues.into_iter().filter(|v| v.is_change()).collect();
        let found = if complete {
            let full = key.to_string();
            let label = labels::key(&key.service_id, &key.environment, &key.sha);
            // As `matches` picks: the lowest issue id whose property holds exactly this key.
            let mine = issues
                .iter()
                .filter(|v| v.has(&label) && v.stored.as_ref().is_none_or(|s| s.key == full))
                .min_by_key(|v| v.id);
            match mine {
                Some(v) => Some(Found::of(v, self.complete(v, &full).await?)),
                None => None,
            }
        } else {
            self.lookup(key).await?
        };
        Ok(Known {
            found,
            survey: Some(Survey {
                service_label: labels::service(&key.service_id, &key.environment),
                issues,
                complete,
            }),
        })
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
        // The page the gate's lookup read, if it is this service's and environment's.
        let service_label = labels::service(q_.service_id, q_.environment);
        let survey = q_
            .found
            .and_then(|f| f.carried::<Known>())
            .and_then(|k| k.survey.as_ref())
            .filter(|s| s.service_label == service_label);
        let exclude_label = q_
            .exclude_key
            .map(|k| labels::key(q_.service_id, q_.environment, &commit_of(k)));
        let window = q_.window.max(1) as usize;
        let surveyed: Option<Vec<Outcome>> = survey.map(|s| {
            s.others(exclude_label.as_deref())
                .filter_map(closed_outcome)
                .collect()
        });
        let (recent, closed_total) = match (survey, surveyed) {
            // Every closed change is on the page.
            (Some(s), Some(all)) if s.complete => {
                let total = all.len() as u64;
                (all.into_iter().take(window).collect(), total)
            }
            // The newest `window` are; the total is counted.
            (Some(_), Some(mut all)) if all.len() >= window => {
                all.truncate(window);
                let total = self.count(&closed).await?.max(all.len() as u64);
                (all, total)
            }
            _ => {
                let (recent, more) = self.recent(&closed, q_.window).await?;
                let total = if !more && (recent.len() as u64) < u64::from(q_.window) {
                    recent.len() as u64
                } else {
                    self.count(&closed).await?.max(recent.len() as u64)
                };
                (recent, total)
            }
        };
        let current = q_.calendar.index_of(q_.now);
        let from_survey = survey.filter(|s| s.complete).map(|s| {
            let mut sprints = BTreeMap::new();
            for v in s.others(exclude_label.as_deref()).filter(|v| decided(v)) {
                tally_labels(
                    &v.labels,
                    &q_.calendar,
                    q_.from_sprint,
                    current,
                    &mut sprints,
                );
            }
            sprints
        });
        let by_search = match from_survey {
            Some(s) => Some(s),
            None => self.tallies_by_search(&scope, q_, current).await?,
        };
        let sprints = match by_search {
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

    /// From the gate's survey, which also finds `key`'s issue and reads the track record:
    /// all of it is handed on in the lookup, for the gate's `open` and `history`.
    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        let known = self.survey(key).await?;
        let success = labels::outcome(Outcome::Success);
        let (sha, complete) = match &known.survey {
            Some(s) => (
                s.issues
                    .iter()
                    .filter(|v| decided(v) && v.has(&success))
                    .find_map(|v| v.stored.as_ref().map(|s| s.sha())),
                s.complete,
            ),
            None => (None, false),
        };
        let sha = match sha {
            Some(sha) => Some(sha),
            None if complete => None,
            None => self.last_sha(&key.service_id, &key.environment).await?,
        };
        let record = known.found.as_ref().map(|f| f.record.clone());
        Ok(Since {
            sha,
            found: Some(Lookup::of(key, record).carrying(known)),
        })
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
