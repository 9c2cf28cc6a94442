//! The history of a service and environment, from JQL over the labels.

use anyhow::Result;

use super::search::q;
use super::{Jira, labels};
use crate::domain::{History, Outcome};
use crate::itsm::HistoryQuery;

/// Issues per page of a tally search, and how many pages before counting per sprint.
pub(super) const PAGE: u32 = 100;
pub(super) const TALLY_PAGES: usize = 4;
/// Pages read for the recent outcomes (`policy.window` of them) at most.
const RECENT_PAGES: usize = 10;

impl Jira {
    pub(super) fn scope_jql(&self, q_: &HistoryQuery<'_>) -> String {
        let mut jql = format!(
            "project = {} AND labels = {}",
            q(&self.project),
            q(&labels::service(q_.service_id, q_.environment))
        );
        if let Some(exclude) = q_.exclude_key {
            let sha = exclude.rsplit(':').next().unwrap_or(exclude);
            jql.push_str(&format!(
                " AND labels not in ({})",
                q(&labels::key(q_.service_id, q_.environment, sha))
            ));
        }
        jql
    }

    /// Requests per decision: one search for the recent outcomes, one count when the window
    /// is full, and up to [`TALLY_PAGES`] searches for the sprint tallies, or, when the
    /// lookback holds more changes than that, a fixed number of counts per sprint.
    pub(super) async fn history_of(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let scope = self.scope_jql(q_);
        let closed = format!(
            "{scope} AND labels in ({}, {})",
            q(&labels::outcome(Outcome::Success)),
            q(&labels::outcome(Outcome::Failure))
        );
        // The most recent closed outcomes, newest first. Jira may return fewer issues per
        // page than asked: page on until the window is full (at most RECENT_PAGES pages).
        let window = q_.window.max(1) as usize;
        let mut recent: Vec<Outcome> = Vec::with_capacity(window);
        let mut token: Option<String> = None;
        let mut next: Option<String> = None;
        for _ in 0..RECENT_PAGES {
            let (issues, more) = self
                .search(
                    &format!("{closed} ORDER BY created DESC"),
                    &["labels"],
                    u32::try_from(window - recent.len())
                        .unwrap_or(PAGE)
                        .min(PAGE),
                    token.as_deref(),
                    &[],
                )
                .await?;
            recent.extend(issues.iter().filter(|v| v.is_change()).map(|v| {
                if v.has(&labels::outcome(Outcome::Failure)) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }));
            next = more;
            if recent.len() >= window || next.is_none() {
                break;
            }
            token = next.clone();
        }
        recent.truncate(window);
        let closed_total = if next.is_none() && (recent.len() as u64) < u64::from(q_.window) {
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

    pub(super) async fn last_sha(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Option<String>> {
        let kinds: Vec<String> = labels::KINDS.iter().map(|k| q(&labels::kind(*k))).collect();
        let jql = format!(
            "project = {} AND labels = {} AND labels in ({}) ORDER BY created DESC",
            q(&self.project),
            q(&labels::service(service_id, environment)),
            kinds.join(", ")
        );
        let (issues, _) = self.search(&jql, &["labels"], 5, None, &[]).await?;
        Ok(issues.into_iter().filter(|v| v.is_change()).find_map(|v| {
            v.stored.and_then(|s| {
                s.commit
                    .or_else(|| s.key.rsplit(':').next().map(str::to_string))
            })
        }))
    }
}
