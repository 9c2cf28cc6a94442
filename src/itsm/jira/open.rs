//! Opening a change: find or create its issue, and write the decision.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Jira;
use super::lookup::Found;
use super::render::decision_comment;
use crate::domain::{ChangeFacts, ChangeRecord, Decision, DecisionKind, State};
use crate::itsm::decision_stands;

impl Jira {
    pub(super) async fn open_change(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.writable()?;
        let key = facts.key();
        let full = key.to_string();
        let existing = match self.remembered(&full) {
            Some(known) => known,
            None => self.lookup(&key).await?,
        };
        let found = match existing {
            Some(f) => f,
            None => {
                let (id, issue_key, label_list) = self.create(facts, decision, now).await?;
                tracing::info!("opened {issue_key} for {full}");
                match self.settle(&key, id, &issue_key, &label_list).await? {
                    Some(winner) => {
                        let record = self.complete(&winner, &full).await?;
                        Found {
                            id: winner.id,
                            labels: winner.labels.clone(),
                            record,
                        }
                    }
                    None => {
                        let record = ChangeRecord {
                            id: issue_key.clone(),
                            url: Some(self.browse(&issue_key)),
                            key: full.clone(),
                            state: match decision.map(|d| d.kind) {
                                Some(DecisionKind::PreApproved) => State::Approved,
                                Some(DecisionKind::NeedsApproval) => State::AwaitingApproval,
                                _ => State::New,
                            },
                            decision: decision.cloned(),
                            outcome: None,
                            emergency_reason: decision.and_then(|d| d.emergency.clone()),
                            approved_by: None,
                            approval_comment: None,
                            opened_at: Some(now),
                            decided_at: decision.map(|_| now),
                            approved_at: None,
                            deployed_at: None,
                            incidents: Vec::new(),
                        };
                        if let Some(d) = decision {
                            self.comment(&issue_key, decision_comment(d)).await?;
                            self.to_approval(&issue_key, d).await?;
                        }
                        let found = Found {
                            id,
                            labels: label_list,
                            record: record.clone(),
                        };
                        self.remember(&full, Some(&found));
                        return Ok(record);
                    }
                }
            }
        };
        match decision {
            Some(d)
                if !decision_stands(&found.record, d.emergency.is_some())
                    && !found.record.state.is_final() =>
            {
                let record = self.write_decision(&found, d, now).await?;
                self.to_approval(&record.id, d).await?;
                Ok(record)
            }
            _ => Ok(found.record),
        }
    }
}
