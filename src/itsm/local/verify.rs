//! `verify` on the ledger: the changes due, their linked incidents, the verdict.

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use crate::domain::verify::{LinkedIncident, Verdict};
use crate::itsm::Verification;

use super::Ledger;
use super::codec::parse_change_id;
use crate::domain::{ChangeFacts, ChangeRecord};

#[async_trait]
impl Verification for Ledger {
    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        self.awaiting_verification_rows(deployed_before)
    }

    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        self.incidents_of(record)
    }

    async fn record_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.write_verification(record, verdict, now)
    }

    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        let Some(row_id) = parse_change_id(&record.id) else {
            return Ok(None);
        };
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT facts_json FROM changes WHERE id = ?1",
                [row_id],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
