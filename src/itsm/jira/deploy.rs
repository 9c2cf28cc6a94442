//! The deploy: moving the change to implementation, and closing it with the outcome.

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::issue::{IssueView, Stored};
use super::render::outcome_comment;
use super::{Jira, eq, labels};
use crate::domain::{ChangeRecord, Mode, Outcome, State};

impl Jira {
    /// Before a write: the issue read again with its transitions, and the record it
    /// stands for now.
    async fn current(&self, record: &ChangeRecord) -> Result<(IssueView, ChangeRecord)> {
        let Some(v) = self.read_issue(&record.id, true).await? else {
            bail!("change {} is no longer in Jira", record.id);
        };
        let current = self.to_record(&v, &record.key, None);
        Ok((v, current))
    }

    /// The gate passed: the change moves to implementation and records when the deploy
    /// started. A closed change is not moved back.
    pub(super) async fn start_deploy(
        &self,
        record: &ChangeRecord,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let (v, mut current) = self.current(record).await?;
        // Keep what this run knows that the re-read cannot (approvals read a moment ago).
        current.approved_by = current.approved_by.or_else(|| record.approved_by.clone());
        current.approved_at = current.approved_at.or(record.approved_at);
        match self.status_state(&v) {
            Some(State::Closed | State::Cancelled | State::Rejected) => {
                tracing::warn!(
                    "{} is already {:?}; not moved back to {:?}",
                    v.key,
                    v.status,
                    self.cfg.statuses.implementing
                );
                return Ok(current);
            }
            Some(State::Implementing) if current.deployed_at.is_some() => return Ok(current),
            _ => {}
        }
        current.deployed_at = Some(current.deployed_at.unwrap_or(now));
        let stored = Stored::of(v.stored.as_ref(), &current);
        let implementing = self.cfg.statuses.implementing.clone();
        let observing = current
            .decision
            .as_ref()
            .is_some_and(|d| d.mode == Mode::Observe);
        let moved = if observing
            && !eq(&v.status, &implementing)
            && self.offered(&v, "implementing", &implementing).is_none()
        {
            // Observe mode never blocks: a change still in its approval step stays there.
            tracing::warn!(
                "observe mode: {} stays in {:?}; the workflow offers no move to {implementing:?} from there",
                v.key,
                v.status
            );
            false
        } else {
            self.transition(&v, "implementing", &implementing, Some(&stored), None)
                .await?
        };
        if !moved {
            // The workflow made the move; still record when the deploy started.
            self.edit(&v.key, &json!({ "properties": Self::property(&stored) }))
                .await?;
        }
        if moved || eq(&v.status, &implementing) {
            current.state = State::Implementing;
        }
        Ok(current)
    }

    /// Records the outcome (comment, label, property) and closes the change with the
    /// matching status and resolution. A change that has an outcome is left as it is.
    pub(super) async fn close(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let (v, mut current) = self.current(record).await?;
        if current.outcome.is_some() {
            return Ok(current);
        }
        // The approvals were read when the change was located, not on this re-read.
        current.approved_by = current.approved_by.or_else(|| record.approved_by.clone());
        current.approved_at = current.approved_at.or(record.approved_at);
        // A change whose gate never passed was not deployed, whatever the job says.
        let kept = if current.deployed_at.is_none() {
            Outcome::Cancelled
        } else {
            outcome
        };
        self.comment(&v.key, outcome_comment(kept, outcome, notes))
            .await?;
        current.outcome = Some(kept);
        let stored = Stored {
            closed_at: Some(now),
            ..Stored::of(v.stored.as_ref(), &current)
        };
        let label = labels::outcome(kept);
        self.edit(
            &v.key,
            &json!({
                "update": { "labels": labels::ops([], [label.as_str()]) },
                "properties": Self::property(&stored),
            }),
        )
        .await?;
        let s = &self.cfg.statuses;
        let r = &self.cfg.resolutions;
        let (role, status, resolution) = match kept {
            Outcome::Success => ("done", s.done.clone(), r.done.clone()),
            Outcome::Failure => ("failed", s.failed.clone(), r.failed.clone()),
            Outcome::Cancelled => ("cancelled", s.cancelled.clone(), r.cancelled.clone()),
        };
        match self.status_state(&v) {
            // Declined stays declined.
            Some(State::Rejected) => current.state = State::Rejected,
            // Closed already, by the workflow or by hand: the move is skipped.
            Some(closed @ (State::Closed | State::Cancelled)) => {
                if eq(&v.status, &status) {
                    v.already_there();
                } else {
                    tracing::warn!(
                        "{} is already closed as {:?}; not moved to {status:?}",
                        v.key,
                        v.status
                    );
                }
                current.state = closed;
            }
            _ => {
                self.transition(&v, role, &status, None, Some(&resolution))
                    .await?;
                current.state = if kept == Outcome::Cancelled {
                    State::Cancelled
                } else {
                    State::Closed
                };
            }
        }
        Ok(current)
    }
}
