//! `verify` on ServiceNow: the closed changes due to be looked at, the incidents linked to
//! them, and the verdict written back.
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

use crate::itsm::Verification;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, json};

use super::codec::text;
use super::codec::{
    CLOSED, Mark, Raw, VERIFIED, display_day, display_mark, display_marked, q, sn_time,
};
use super::{ServiceNow, TABLE};
use crate::domain::verify::{LinkedIncident, Verdict};
use crate::domain::{ChangeRecord, CorrelationKey, Outcome};

use super::insights::{AFTER_DEPLOY_NOTE, CHECK_FIELDS, PAGE};

const INCIDENT: &str = "api/now/table/incident";

/// Changes per incident query: two lists of 20 sys_ids keep the URL under 2,048 characters.
pub(super) const INCIDENT_BATCH: usize = 20;

/// Incident state Canceled: a cancelled incident (a false alarm, a duplicate) fails nothing.
const INCIDENT_CANCELED: &str = "8";

const INCIDENT_FIELDS: &str = "sys_id,number,caused_by,rfc,sys_created_on";

impl ServiceNow {
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
}

#[async_trait]
impl Verification for ServiceNow {
    /// Closed changes with a success or failure close code, deployed (`work_start`) at or
    /// before `deployed_before` and not verified yet, oldest deploy first; the incidents
    /// linked to them are read at once, a batch of changes per request.
    async fn awaiting_verification(
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

    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
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
    async fn record_verification(
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
}
