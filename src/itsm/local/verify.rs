//! `verify` on the ledger: the changes due, their linked incidents, the verdict.

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::verify::{LinkedIncident, Verdict};
use crate::itsm::Verification;

use super::Ledger;
use super::client::args;
use super::codec::parse_change_id;
use crate::domain::{ChangeFacts, ChangeRecord};

#[async_trait]
impl Verification for Ledger {
    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        self.awaiting_verification_rows(deployed_before).await
    }

    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        self.incidents_of(record).await
    }

    async fn record_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.write_verification(record, verdict, now).await
    }

    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        let Some(row_id) = parse_change_id(&record.id) else {
            return Ok(None);
        };
        let text = self
            .read_all(
                "SELECT facts_json FROM changes WHERE id = ?1",
                args![row_id],
            )
            .await?
            .first()
            .map(|r| r.string(0))
            .transpose()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
