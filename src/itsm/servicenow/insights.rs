//! What `report` and `policy simulate` read on ServiceNow (the services, the changes'
//! summaries, the recorded decisions); `verify`'s reads and writes are in `verify.rs`.
//!
//! * **Linked incidents** are incidents whose `caused_by` or `rfc` is the change, not
//!   cancelled. They are read for up to [`INCIDENT_BATCH`] changes per request
//!   (`caused_byIN…^ORrfcIN…`). An incident's link time is not on the record; its creation
//!   time stands for it: it cannot have been linked before it existed, so an incident opened
//!   after the window never counts, and one opened within it does.
//! * **The verdict** is written in one update: `correlation_display` gets a mark after the
//!   decision day (`changegate 2026-03-02 verified`, or `… verified: failed after deploy`),
//!   which the due query excludes (`NOT LIKE verified`), so a second `verify` writes
//!   nothing; a failure after deploy also sets `close_code` to the failure code (which the
//!   history's track record and sprint tallies count) and adds a `close_notes` line with the
//!   time and the incidents; a work note says what was found.
//! * **Lists** are read page by page (`sysparm_limit`/`sysparm_offset`, until
//!   `X-Total-Count`), in a stable order.

use crate::itsm::Insights;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashSet};

use anyhow::Result;
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use reqwest::Method;

use super::client::Body;
use super::codec::text;
use super::codec::{
    Mark, Raw, display_day, display_mark, fallback_decision, key_prefix, number_seq, q, sn_time,
};
use super::{ServiceNow, TABLE};
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::{RecordedChange, Stamp};
use crate::domain::{CorrelationKey, Decision, DecisionKind, Outcome};
use crate::itsm::ServiceRef;

/// Rows per page of a change list. `justification` is read with them (up to 4,000
/// characters each), so pages stay well under a few MB.
pub(super) const PAGE: u32 = 500;

/// Rows per page when listing the services (one short field).
const SCAN_PAGE: u32 = 1000;

/// What the check step reads of a change request (a superset of the gate's fields).
pub(super) const CHECK_FIELDS: &str = "sys_id,number,type,state,approval,approval_set,correlation_id,correlation_display,\
                            justification,close_code,close_notes,work_start,work_end,closed_at,sys_created_on";

/// The `close_notes` line of a failure after deploy: `<head><time>): <incidents>`.
pub(super) const AFTER_DEPLOY_NOTE: &str = "Failed after deploy (changegate verify, ";

fn midnight(day: chrono::NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
}

impl ServiceNow {
    /// Every record `query` matches on the table at `path`, page by page. The query must end
    /// with a total order, so that no row moves between pages.
    pub(super) async fn list_all(
        &self,
        path: &str,
        query: &str,
        fields: &str,
        page: u32,
    ) -> Result<Vec<Raw>> {
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        loop {
            let params = [
                ("sysparm_query", query.to_string()),
                ("sysparm_fields", fields.to_string()),
                ("sysparm_limit", page.to_string()),
                ("sysparm_offset", offset.to_string()),
                ("sysparm_exclude_reference_link", "true".to_string()),
            ];
            let reply = self
                .api
                .call(Method::GET, path, &params, Body::None)
                .await?;
            let rows = Self::list(&reply)?;
            let got = rows.len();
            out.extend(rows);
            offset += u64::from(page);
            // The limit applies before ACLs filter rows out, so a short page is not the end
            // when the instance says how many there are.
            let done = match reply.total_count() {
                Some(total) => offset >= total,
                None => got < page as usize,
            };
            if done || got == 0 {
                return Ok(out);
            }
        }
    }

    /// The close codes of a closed change with a success or failure outcome.
    pub(super) fn outcome_codes(&self) -> Vec<&str> {
        let mut codes: Vec<&str> = vec![
            &self.cfg.close_code_success,
            "successful_issues",
            &self.cfg.close_code_failure,
        ];
        codes.dedup();
        codes
    }

    /// The decision on a record and when it was made: the text changegate wrote, else the
    /// one rebuilt from `type`/`approval`/`state`, made at the start of the decision day.
    fn decision_of(&self, raw: &Raw) -> Option<(Decision, DateTime<Utc>)> {
        if let Some(parsed) = text::parse_decision(raw.get("justification")) {
            return Some(parsed);
        }
        let day = display_day(raw.get("correlation_display"))?;
        Some((fallback_decision(raw, &self.calendar)?, midnight(day)))
    }

    /// When a closed or cancelled record was closed: the instance's `closed_at` (the order
    /// of the history's track record), else the outcome time changegate wrote.
    fn closed_at(raw: &Raw) -> Option<DateTime<Utc>> {
        raw.at("closed_at").or_else(|| raw.at("work_end"))
    }

    // --- verify ---

    // --- report ---

    // --- policy simulate ---
}

/// When `verify` turned the change into a failure, from its `close_notes` line.
fn after_deploy_time(notes: &str) -> Option<DateTime<Utc>> {
    notes.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix(AFTER_DEPLOY_NOTE)?;
        let (at, _) = rest.split_once("):")?;
        DateTime::parse_from_rfc3339(at.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

#[async_trait]
impl Insights for ServiceNow {
    /// Every service and environment with changes on the instance. The keys are read in
    /// order, and after each page the scan jumps past the last service seen, so a service
    /// with a long history costs one request, not one per page of its changes.
    async fn services(&self) -> Result<Vec<ServiceRef>> {
        let mut found: BTreeSet<(String, String)> = BTreeSet::new();
        let mut from: Option<String> = None;
        let mut jumps: HashSet<String> = HashSet::new();
        let mut offset: u64 = 0;
        loop {
            let mut query = format!("correlation_idSTARTSWITH{}", CorrelationKey::START);
            if let Some(from) = &from {
                query.push_str(&format!("^correlation_id>={}", q(from)));
            }
            query.push_str("^ORDERBYcorrelation_id^ORDERBYnumber");
            let params = [
                ("sysparm_query", query),
                ("sysparm_fields", "correlation_id".to_string()),
                ("sysparm_limit", SCAN_PAGE.to_string()),
                ("sysparm_offset", offset.to_string()),
                ("sysparm_exclude_reference_link", "true".to_string()),
            ];
            let reply = self
                .api
                .call(Method::GET, TABLE, &params, Body::None)
                .await?;
            let rows = Self::list(&reply)?;
            let mut last = None;
            for raw in &rows {
                if let Ok(key) = raw.get("correlation_id").parse::<CorrelationKey>() {
                    last = Some(format!(
                        "{}{}:{}:~",
                        CorrelationKey::START,
                        key.service_id,
                        key.environment
                    ));
                    found.insert((key.service_id, key.environment));
                }
            }
            let more = match reply.total_count() {
                Some(total) => offset + u64::from(SCAN_PAGE) < total,
                None => rows.len() == SCAN_PAGE as usize,
            };
            if !more || rows.is_empty() {
                break;
            }
            // Jump past the last service seen (a SHA is hex, so `~` sorts after all of its
            // keys). Where the instance's collation sorts otherwise, a jump already made
            // brings nothing new: page on instead.
            match last.filter(|next| jumps.insert(next.clone())) {
                Some(next) => {
                    from = Some(next);
                    offset = 0;
                }
                None => offset += u64::from(SCAN_PAGE),
            }
        }
        Ok(found
            .into_iter()
            .map(|(service_id, environment)| ServiceRef {
                service: service_id
                    .rsplit('/')
                    .next()
                    .unwrap_or(&service_id)
                    .to_string(),
                service_id,
                environment,
            })
            .collect())
    }

    /// Changes of one service and environment decided from `from` to `to`, in decision
    /// order. Read by creation (≤ `to`) and last update (≥ `from`): a change decided within
    /// the range was created before its decision and updated by it.
    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        let query = format!(
            "correlation_idSTARTSWITH{}^sys_created_on<={}^sys_updated_on>={}^ORDERBYsys_created_on^ORDERBYnumber",
            q(&key_prefix(service_id, environment)),
            sn_time(to),
            sn_time(from)
        );
        let rows = self.list_all(TABLE, &query, CHECK_FIELDS, PAGE).await?;
        let mut out: Vec<(DateTime<Utc>, i64, ChangeSummary)> = Vec::new();
        for raw in &rows {
            let Some((decision, decided_at)) = self.decision_of(raw) else {
                continue;
            };
            if decided_at < from || decided_at > to {
                continue;
            }
            let record = self.to_record(raw);
            let facts = text::parse_facts(raw.get("justification")).unwrap_or_default();
            out.push((
                decided_at,
                number_seq(raw.number()).unwrap_or_default(),
                ChangeSummary {
                    decided_at,
                    // A rejected change counts as blocked: that was the final word.
                    decision: Some(if record.refused() {
                        DecisionKind::Blocked
                    } else {
                        decision.kind
                    }),
                    pre_approved: decision.counts_against_allowance(),
                    emergency: decision.emergency.is_some(),
                    approved_at: record
                        .approved_at
                        .filter(|_| matches!(raw.get("approval"), "approved" | "rejected")),
                    deployed_at: record.deployed_at,
                    first_commit_at: facts.first_commit,
                    outcome: record.outcome,
                    failed_after_deploy: display_mark(raw.get("correlation_display"))
                        == Mark::FailedAfterDeploy,
                },
            ));
        }
        out.sort_by_key(|(at, seq, _)| (*at, *seq));
        Ok(out.into_iter().map(|(_, _, s)| s).collect())
    }

    /// Every decided change of one service and environment, with the facts its decision
    /// was made on (the facts line; a change decided before changegate wrote one is
    /// replayed on its key alone), in decision order.
    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>> {
        let query = format!(
            "correlation_idSTARTSWITH{}^ORDERBYsys_created_on^ORDERBYnumber",
            q(&key_prefix(service_id, environment))
        );
        let rows = self.list_all(TABLE, &query, CHECK_FIELDS, PAGE).await?;
        let service = service_id.rsplit('/').next().unwrap_or(service_id);
        let mut out = Vec::with_capacity(rows.len());
        for (i, raw) in rows.iter().enumerate() {
            let Some((decision, decided_at)) = self.decision_of(raw) else {
                continue;
            };
            let key = raw.get("correlation_id");
            let sha = key
                .parse::<CorrelationKey>()
                .map(|k| k.sha)
                .unwrap_or_default();
            let facts = text::parse_facts(raw.get("justification"))
                .unwrap_or_default()
                .into_facts(service, service_id, environment, &sha);
            let mark = display_mark(raw.get("correlation_display"));
            let row = number_seq(raw.number()).unwrap_or(i as i64);
            // Times are to the second. Within one second, a pipeline's writes come in the
            // order of its changes: change n is decided, then closed, then n+1 is decided.
            let (decided_seq, later_seq) = (row.saturating_mul(2), row.saturating_mul(2) + 1);
            let closed = Self::closed_at(raw).map(|at| Stamp { at, seq: later_seq });
            let first = match self.to_record(raw).outcome {
                // A failure after deploy was recorded as a success first.
                Some(Outcome::Failure) if mark == Mark::FailedAfterDeploy => Some(Outcome::Success),
                other => other,
            };
            let failed_after_deploy = (mark == Mark::FailedAfterDeploy)
                .then(|| {
                    after_deploy_time(raw.get("close_notes")).map(|at| Stamp { at, seq: later_seq })
                })
                .and_then(|stamp| stamp.or(closed));
            out.push(RecordedChange {
                id: raw.number().to_string(),
                row,
                facts,
                decision,
                decided: Stamp {
                    at: decided_at,
                    seq: decided_seq,
                },
                // A decision replaced in place leaves no trace of the earlier one.
                superseded: Vec::new(),
                outcome: first.zip(closed),
                failed_after_deploy,
            });
        }
        out.sort_by_key(|c| (c.decided, c.row));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_after_deploy_line_gives_the_time_back() {
        let notes = "Deploy success\nFailed after deploy (changegate verify, 2026-03-03T14:30:00Z): INC0010001, INC0010002";
        assert_eq!(
            after_deploy_time(notes),
            Some(
                DateTime::parse_from_rfc3339("2026-03-03T14:30:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        assert_eq!(after_deploy_time("Deploy success"), None);
    }
}
