//! The change record an issue stands for: state from status, decision and approvals.

use anyhow::Result;

use super::approvals::Verdict;
use super::issue::IssueView;
use super::{Jira, eq, labels};
use crate::domain::{ChangeRecord, Decision, DecisionKind, Outcome, State};

/// The state a change is in once decided, until its status or its approvals say more.
pub(super) fn decided_state(kind: Option<DecisionKind>) -> State {
    match kind {
        Some(DecisionKind::PreApproved) => State::Approved,
        Some(DecisionKind::NeedsApproval) => State::AwaitingApproval,
        Some(DecisionKind::Blocked) | None => State::New,
    }
}

impl Jira {
    /// The state the status alone says, when it says one.
    pub(super) fn status_state(&self, v: &IssueView) -> Option<State> {
        let s = &self.cfg.statuses;
        if eq(&v.status, &s.declined) {
            Some(State::Rejected)
        } else if eq(&v.status, &s.cancelled) {
            Some(State::Cancelled)
        } else if eq(&v.status, &s.done) || eq(&v.status, &s.failed) || v.category == "done" {
            Some(State::Closed)
        } else if eq(&v.status, &s.implementing) {
            Some(State::Implementing)
        } else {
            None
        }
    }

    /// Whether the approvals must be read to know the state.
    pub(super) fn needs_verdict(&self, v: &IssueView, decision: Option<&Decision>) -> bool {
        decision.is_some_and(|d| d.kind == DecisionKind::NeedsApproval)
            && matches!(self.status_state(v), None | Some(State::Rejected))
    }

    /// The record an issue stands for, with the approvals' verdict when it was read.
    pub(super) fn to_record(
        &self,
        v: &IssueView,
        fallback_key: &str,
        verdict: Option<&Verdict>,
    ) -> ChangeRecord {
        let stored = v.stored.clone().unwrap_or_default();
        let decision = v.decision();
        // Only the property is changegate's own full record of the decision; labels can be
        // edited by anyone (an observe label dropped reads as enforce).
        let decision_inferred = decision.is_some() && stored.decision.is_none();
        let outcome = stored.outcome.or_else(|| {
            [Outcome::Failure, Outcome::Success, Outcome::Cancelled]
                .into_iter()
                .find(|o| v.has(&labels::outcome(*o)))
        });
        let kind = decision.as_ref().map(|d| d.kind);
        let state = self.status_state(v).unwrap_or(match (kind, verdict) {
            (Some(DecisionKind::NeedsApproval), Some(Verdict::Declined { .. })) => State::Rejected,
            (Some(DecisionKind::NeedsApproval), Some(Verdict::Approved { .. })) => State::Approved,
            _ => decided_state(kind),
        });
        let (approved_by, approved_at) = match verdict {
            Some(Verdict::Approved { by, at } | Verdict::Declined { by, at }) => {
                (by.clone(), at.or(stored.approved_at))
            }
            _ => (None, stored.approved_at),
        };
        ChangeRecord {
            id: v.key.clone(),
            url: Some(self.browse(&v.key)),
            key: if stored.key.is_empty() {
                fallback_key.to_string()
            } else {
                stored.key.clone()
            },
            state,
            emergency_reason: decision.as_ref().and_then(|d| d.emergency.clone()),
            decision,
            outcome,
            approved_by,
            approval_comment: None,
            opened_at: stored.opened_at.or(v.created),
            decided_at: stored.decided_at,
            approved_at,
            deployed_at: stored.deployed_at,
            incidents: stored.incidents.clone(),
            timed_out: state == State::AwaitingApproval && v.has(labels::TIMED_OUT),
            decision_inferred,
        }
    }

    /// The record of an issue, reading its approvals when the state depends on them.
    pub(super) async fn complete(&self, v: &IssueView, fallback_key: &str) -> Result<ChangeRecord> {
        let verdict = if self.needs_verdict(v, v.decision().as_ref()) {
            Some(self.approvals(&v.key).await?)
        } else {
            None
        };
        Ok(self.to_record(v, fallback_key, verdict.as_ref()))
    }
}
