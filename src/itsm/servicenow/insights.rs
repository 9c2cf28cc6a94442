//! The "check" step on ServiceNow: the closed changes `verify` is due to look at, the
//! incidents linked to them, the verdict written back; and what `report` and `policy
//! simulate` read (the services, the changes' summaries, the recorded decisions).
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

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use reqwest::Method;
use serde_json::{Map, json};

use super::client::Body;
use super::codec::{
    CLOSED, Mark, Raw, VERIFIED, display_day, display_mark, display_marked, fallback_decision,
    key_prefix, number_seq, q, sn_time,
};
use super::text;
use super::{ServiceNow, TABLE};
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::{RecordedChange, Stamp};
use crate::domain::verify::{LinkedIncident, Verdict};
use crate::domain::{ChangeRecord, CorrelationKey, Decision, DecisionKind, Outcome};
use crate::itsm::ServiceRef;

const INCIDENT: &str = "api/now/table/incident";

/// Rows per page of a change list. `justification` is read with them (up to 4,000
/// characters each), so pages stay well under a few MB.
pub(super) const PAGE: u32 = 500;

/// Rows per page when listing the services (one short field).
const SCAN_PAGE: u32 = 1000;

/// Changes per incident query: two lists of 20 sys_ids keep the URL under 2,048 characters.
pub(super) const INCIDENT_BATCH: usize = 20;

/// Incident state Canceled: a cancelled incident (a false alarm, a duplicate) fails nothing.
const INCIDENT_CANCELED: &str = "8";

/// What the check step reads of a change request (a superset of the gate's fields).
const CHECK_FIELDS: &str = "sys_id,number,type,state,approval,approval_set,correlation_id,correlation_display,\
                            justification,close_code,close_notes,work_start,work_end,closed_at,sys_created_on";

const INCIDENT_FIELDS: &str = "sys_id,number,caused_by,rfc,sys_created_on";

/// The `close_notes` line of a failure after deploy: `<head><time>): <incidents>`.
const AFTER_DEPLOY_NOTE: &str = "Failed after deploy (changegate verify, ";

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

    /// Closed changes with a success or failure close code, deployed (`work_start`) at or
    /// before `deployed_before` and not verified yet, oldest deploy first; the incidents
    /// linked to them are read at once, a batch of changes per request.
    pub(super) async fn due_for_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        let query = format!(
            "correlation_idSTARTSWITH{}^state={CLOSED}^close_codeIN{}^work_start<={}\
             ^correlation_displayNOT LIKE{VERIFIED}^ORDERBYwork_start^ORDERBYnumber",
            CorrelationKey::START,
            q(&self.outcome_codes().join(",")),
            sn_time(deployed_before)
        );
        let rows = self.list_all(TABLE, &query, CHECK_FIELDS, PAGE).await?;
        for raw in &rows {
            self.remember(raw);
        }
        self.prefetch_incidents(&rows).await;
        Ok(rows
            .iter()
            .map(|raw| self.to_record(raw))
            .filter(|r| {
                matches!(r.outcome, Some(Outcome::Success | Outcome::Failure))
                    && r.deployed_at.is_some()
            })
            .collect())
    }

    /// Reads the incidents of `rows` in batches and keeps them for [`Self::incidents_of`].
    /// A batch that cannot be read is left out: each of its changes is then asked for on
    /// its own, and fails alone.
    async fn prefetch_incidents(&self, rows: &[Raw]) {
        for batch in rows.chunks(INCIDENT_BATCH) {
            let ids: Vec<&str> = batch
                .iter()
                .map(Raw::sys_id)
                .filter(|id| !id.is_empty())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match self.incidents_linked_to(&ids).await {
                Ok(found) => {
                    let mut cache = self.cache();
                    for id in ids {
                        let linked = found.get(id).cloned().unwrap_or_default();
                        cache.incidents.insert(id.to_string(), linked);
                    }
                }
                Err(e) => tracing::warn!(
                    "could not read the incidents of {} changes at once ({e:#}); asking change by change",
                    ids.len()
                ),
            }
        }
    }

    /// Incidents, not cancelled, whose `caused_by` or `rfc` is one of `ids`, by change sys_id.
    async fn incidents_linked_to(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, Vec<LinkedIncident>>> {
        let list = q(&ids.join(","));
        let query = format!(
            "caused_byIN{list}^ORrfcIN{list}^state!={INCIDENT_CANCELED}^ORDERBYsys_created_on^ORDERBYnumber"
        );
        let rows = self
            .list_all(INCIDENT, &query, INCIDENT_FIELDS, PAGE)
            .await
            .context("cannot read the incidents linked to the changes")?;
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        let mut out: HashMap<String, Vec<LinkedIncident>> = HashMap::new();
        for inc in &rows {
            let number = inc.get("number");
            let id = if number.is_empty() {
                inc.sys_id()
            } else {
                number
            };
            let changes: BTreeSet<&str> = [inc.get("caused_by"), inc.get("rfc")]
                .into_iter()
                .filter(|c| wanted.contains(c))
                .collect();
            for change in changes {
                out.entry(change.to_string())
                    .or_default()
                    .push(LinkedIncident {
                        id: id.to_string(),
                        linked_at: inc.at("sys_created_on"),
                    });
            }
        }
        Ok(out)
    }

    pub(super) async fn incidents_of(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        let raw = self.raw_for(record).await?;
        let id = raw.sys_id().to_string();
        if let Some(linked) = self.cache().incidents.get(&id).cloned() {
            return Ok(linked);
        }
        let found = self.incidents_linked_to(&[id.as_str()]).await?;
        let linked = found.get(&id).cloned().unwrap_or_default();
        self.cache().incidents.insert(id, linked.clone());
        Ok(linked)
    }

    /// Writes the verdict on a change not verified yet (as last read); returns whether it
    /// wrote. The outcome judged must still be the record's.
    pub(super) async fn write_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let raw = self.raw_for(record).await?;
        let display = raw.get("correlation_display");
        if display_mark(display) != Mark::Unverified
            || self.to_record(&raw).outcome != record.outcome
        {
            return Ok(false);
        }
        let day = display_day(display)
            .or_else(|| record.decided_at.map(|d| d.date_naive()))
            .unwrap_or_else(|| now.date_naive());
        let incidents = text::one_line(&verdict.incidents().join(", "));
        let mut f = Map::new();
        let note = match verdict {
            Verdict::Succeeded => {
                f.insert(
                    "correlation_display".into(),
                    json!(display_marked(day, Mark::Verified)),
                );
                "changegate verify: no incident was linked to this change within the verification window; the successful deploy stands.".to_string()
            }
            Verdict::Failed { incidents: linked } => {
                f.insert(
                    "correlation_display".into(),
                    json!(display_marked(day, Mark::Verified)),
                );
                if linked.is_empty() {
                    "changegate verify: the deploy failed; the failure stands.".to_string()
                } else {
                    format!(
                        "changegate verify: the deploy failed; the failure stands. Incidents linked within the verification window: {incidents}."
                    )
                }
            }
            Verdict::FailedAfterDeploy { .. } => {
                f.insert(
                    "correlation_display".into(),
                    json!(display_marked(day, Mark::FailedAfterDeploy)),
                );
                f.insert("close_code".into(), json!(self.cfg.close_code_failure));
                let line = format!(
                    "{AFTER_DEPLOY_NOTE}{}): {incidents}",
                    now.format("%Y-%m-%dT%H:%M:%SZ")
                );
                let notes = raw.get("close_notes");
                f.insert(
                    "close_notes".into(),
                    json!(if notes.is_empty() {
                        line
                    } else {
                        format!("{notes}\n{line}")
                    }),
                );
                format!(
                    "changegate verify: FAILED AFTER DEPLOY. Incidents caused by this change (caused_by or rfc) within the verification window: {incidents}. \
                     The close code is now {}: the deploy counts as a failure in the track record and the trust ramp.",
                    self.cfg.close_code_failure
                )
            }
        };
        f.insert("work_notes".into(), json!(note));
        self.patch(&raw, f)
            .await
            .with_context(|| format!("cannot write the verification on {}", record.id))?;
        tracing::info!("verified {}: {}", record.id, verdict.outcome());
        Ok(true)
    }

    // --- report ---

    /// Every service and environment with changes on the instance. The keys are read in
    /// order, and after each page the scan jumps past the last service seen, so a service
    /// with a long history costs one request, not one per page of its changes.
    pub(super) async fn service_refs(&self) -> Result<Vec<ServiceRef>> {
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
    pub(super) async fn summaries(
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
                    decision: if record.refused() {
                        DecisionKind::Blocked
                    } else {
                        decision.kind
                    },
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

    // --- policy simulate ---

    /// Every decided change of one service and environment, with the facts its decision
    /// was made on (the facts line; a change decided before changegate wrote one is
    /// replayed on its key alone), in decision order.
    pub(super) async fn recorded(
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
