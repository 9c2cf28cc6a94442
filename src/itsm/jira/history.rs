//! The history of a service and environment, from JQL over the labels.

use anyhow::Result;

use super::issue::commit_of;
use super::search::{any_kind, q, q_list};
use super::tally::{PAGE, TALLY_PAGES};
use super::{Jira, labels};
use crate::domain::{History, Outcome};
use crate::itsm::HistoryQuery;

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

    /// Requests per decision: one search for the recent outcomes, one count when the window
    /// is full, and up to [`TALLY_PAGES`] searches for the sprint tallies, or, when the
    /// lookback holds more changes than that, a fixed number of counts per sprint.
    pub(super) async fn history_of(&self, q_: &HistoryQuery<'_>) -> Result<History> {
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
