//! Opening a change: find or create its issue, and write the decision.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Jira;
use super::lookup::Found;
use super::render::decision_comment;
use crate::domain::{ChangeFacts, ChangeRecord, Decision};

impl Jira {
    /// Finds or creates the change's issue and writes the decision unless one stands
    /// (see [`crate::itsm::ChangeStore::open`]).
    pub(super) async fn open_change(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let key = facts.key();
        let full = key.to_string();
        let existing = match self.remembered(&full) {
            Some(known) => known,
            None => self.lookup(&key).await?,
        };
        let found = match existing {
            Some(f) => f,
            None => {
                let mine = self.create(facts, decision, now).await?;
                tracing::info!("opened {} for {full}", mine.record.id);
                match self.settle(&key, &mine).await? {
                    Some(winner) => Found::of(&winner, self.complete(&winner, &full).await?),
                    None => {
                        if let Some(d) = decision {
                            self.comment(&mine.record.id, decision_comment(d)).await?;
                            self.to_approval(&mine.record.id, d).await?;
                        }
                        self.remember(&full, Some(&mine));
                        return Ok(mine.record);
                    }
                }
            }
        };
        match decision {
            Some(d) if found.record.takes_decision(d.mode, d.emergency.is_some()) => {
                let record = self.write_decision(&found, facts, d, now).await?;
                self.to_approval(&record.id, d).await?;
                Ok(record)
            }
            _ => Ok(found.record),
        }
    }
}
