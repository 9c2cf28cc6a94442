//! The reads of the "check" step: the services with changes, KPI summaries and the
//! recorded decisions `policy simulate` replays, from JQL over the labels and the issue
//! properties.
//!
//! Requests: `services` one search per round, each round finding at least one service not
//! seen yet (so at most one more than there are services, and usually one or two);
//! `change_summaries` one page of 100 per 100 changes updated since the first reported
//! sprint began; `recorded_changes` one page of 100 per 100 decided changes.

use super::FACTS;
use super::Jira;
use super::PROPERTY;
use super::client::any_kind;
use super::client::q;
use super::client::q_list;
use super::codec::IssueView;
use super::codec::Stored;
use super::history::PAGE;
use super::labels;
use crate::domain::ChangeFacts;
use crate::domain::Outcome;
use crate::domain::Platform;
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::RecordedChange;
use crate::domain::simulate::Stamp;
use crate::itsm::Insights;
use crate::itsm::ServiceRef;
use anyhow::Result;
use anyhow::bail;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Duration;
use chrono::TimeZone;
use chrono::Utc;
use std::collections::BTreeSet;

/// Pages read for a report or a simulation at most (a million changes).
const MAX_PAGES: usize = 10_000;
/// Search rounds for the services at most.
const SERVICE_ROUNDS: usize = 1_000;

/// When the change was decided: the property's time, else its day label's midnight (UTC).
fn decided_at(v: &IssueView) -> Option<DateTime<Utc>> {
    v.stored.as_ref().and_then(|s| s.decided_at).or_else(|| {
        v.labels
            .iter()
            .find_map(|l| labels::parse_day(l))
            .map(|d| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)))
    })
}

fn stamp(at: DateTime<Utc>) -> Stamp {
    Stamp { at, seq: 0 }
}

/// The facts of a change opened before changegate kept them: what the key tells.
fn bare_facts(stored: &Stored) -> Option<ChangeFacts> {
    let r = stored.service_ref()?;
    Some(ChangeFacts {
        platform: Platform::Local,
        service: r.service,
        service_id: r.service_id,
        environment: r.environment,
        repository: None,
        commit_sha: stored.sha(),
        branch: None,
        pull_request: None,
        range: None,
        commits: Vec::new(),
        lines_changed: None,
        paths: Vec::new(),
        paths_unknown: true,
        work_items: Vec::new(),
        run_url: None,
        repository_url: None,
        actor: None,
        author: None,
        tests_passed: None,
        evidence: Default::default(),
    })
}

impl Jira {
    /// Every page of `jql`.
    async fn search_all(
        &self,
        jql: &str,
        fields: &[&str],
        properties: &[&str],
    ) -> Result<Vec<IssueView>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (issues, next) = self
                .search_with(jql, fields, properties, PAGE, token.as_deref(), &[])
                .await?;
            out.extend(issues.into_iter().filter(IssueView::is_change));
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        bail!(
            "more than {} changes match in project {}; report fewer sprints",
            MAX_PAGES * PAGE as usize,
            self.project
        )
    }
}

#[async_trait]
impl Insights for Jira {
    /// Every service and environment with decided changes. Each round searches for the
    /// changes of services not seen yet, newest first, so the display name is the one the
    /// newest change was opened with.
    async fn services(&self) -> Result<Vec<ServiceRef>> {
        let mut seen: Vec<String> = Vec::new();
        let mut refs: BTreeSet<ServiceRef> = BTreeSet::new();
        for _ in 0..SERVICE_ROUNDS {
            let excluded = std::iter::once(labels::DUPLICATE.to_string()).chain(seen.clone());
            let jql = format!(
                "project = {} AND labels = {} AND {} AND labels not in ({}) ORDER BY created DESC",
                q(&self.project),
                q(labels::MARK),
                any_kind(),
                q_list(excluded)
            );
            let mut found_new = false;
            let mut token: Option<String> = None;
            // A page may hold only changes without a service label (edited by hand):
            // page on until a new service turns up or the results end.
            for _ in 0..MAX_PAGES {
                let (issues, next) = self
                    .search(&jql, &["labels"], PAGE, token.as_deref(), &[])
                    .await?;
                for v in issues.iter().filter(|v| v.is_change()) {
                    let Some(label) = v.labels.iter().find(|l| labels::is_service(l)) else {
                        continue;
                    };
                    if seen.contains(label) {
                        continue;
                    }
                    seen.push(label.clone());
                    found_new = true;
                    if let Some(r) = v.stored.as_ref().and_then(Stored::service_ref)
                        && !refs
                            .iter()
                            .any(|k| k.service_id == r.service_id && k.environment == r.environment)
                    {
                        refs.insert(r);
                    }
                }
                match next {
                    Some(t) if !found_new => token = Some(t),
                    _ => break,
                }
            }
            if !found_new {
                return Ok(refs.into_iter().collect());
            }
        }
        bail!(
            "more than {SERVICE_ROUNDS} services have changes in project {}",
            self.project
        )
    }

    /// The KPI summaries of the changes of one service decided from `from` to `to`.
    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        // Deciding a change updates it: `updated` narrows the search (a day of slack for
        // the Jira user's time zone), the decision time decides.
        let since = (from - Duration::days(1)).format("%Y-%m-%d");
        let jql = format!(
            "{} AND {} AND updated >= {} ORDER BY created ASC",
            self.scope_jql(service_id, environment, None),
            any_kind(),
            q(&since.to_string())
        );
        let issues = self
            .search_all(&jql, &["status", "labels", "created"], &[PROPERTY])
            .await?;
        let mut out: Vec<(u64, ChangeSummary)> = Vec::new();
        for v in &issues {
            let Some(decided_at) = decided_at(v).filter(|d| (from..=to).contains(d)) else {
                continue;
            };
            let record = self.to_record(v, "", None);
            let Some(decision) = record.decision.as_ref() else {
                continue;
            };
            let stored = v.stored.clone().unwrap_or_default();
            let emergency = decision.emergency.is_some();
            out.push((
                v.id,
                ChangeSummary {
                    decided_at,
                    // A declined change counts as blocked: that was the final word.
                    decision: Some(record.final_decision().unwrap_or(decision.kind)),
                    pre_approved: decision.counts_against_allowance(),
                    emergency,
                    approved_at: record.approved_at,
                    deployed_at: record.deployed_at,
                    first_commit_at: stored.first_commit_at,
                    outcome: record.outcome,
                    failed_after_deploy: stored.failed_after_deploy
                        || v.has(labels::FAILED_AFTER_DEPLOY),
                },
            ));
        }
        out.sort_by_key(|(id, s)| (s.decided_at, *id));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Every decided change of one service with what its decision was made on.
    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>> {
        let jql = format!(
            "{} AND {} ORDER BY created ASC",
            self.scope_jql(service_id, environment, None),
            any_kind()
        );
        let issues = self
            .search_all(&jql, &["status", "labels", "created"], &[PROPERTY, FACTS])
            .await?;
        let mut out = Vec::new();
        for v in issues {
            let Some(decided) = decided_at(&v) else {
                continue;
            };
            let record = self.to_record(&v, "", None);
            let Some(decision) = record.decision.clone() else {
                continue;
            };
            let stored = v.stored.clone().unwrap_or_default();
            let Some(facts) = v.facts.clone().or_else(|| bare_facts(&stored)) else {
                tracing::warn!(
                    "{}: neither its facts nor its correlation key can be read; left out of the simulation",
                    v.key
                );
                continue;
            };
            let after_deploy = stored.failed_after_deploy || v.has(labels::FAILED_AFTER_DEPLOY);
            // A failure after deploy was recorded as a success first.
            let first = if after_deploy {
                Some(Outcome::Success)
            } else {
                record.outcome
            };
            let closed = stored.closed_at.or(record.deployed_at).unwrap_or(decided);
            out.push(RecordedChange {
                id: v.key.clone(),
                row: i64::try_from(v.id).unwrap_or(i64::MAX),
                facts,
                decision,
                decided: stamp(decided),
                superseded: stored.superseded.iter().copied().map(stamp).collect(),
                outcome: first.map(|o| (o, stamp(closed))),
                failed_after_deploy: after_deploy
                    .then(|| stamp(stored.verified_at.unwrap_or(closed))),
            });
        }
        out.sort_by_key(|c| (c.decided, c.row));
        Ok(out)
    }
}
