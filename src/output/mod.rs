//! What a command tells the world: the report (text or JSON) and the CI platform's own
//! channels (step outputs, job summary, workflow commands, dotenv).

use serde::Serialize;

use crate::domain::{
    ChangeFacts, ChangeRecord, Decision, DecisionKind, Mode, Outcome, Rule, State,
};

pub mod console;
pub mod dotenv;
pub mod github;
pub mod markdown;

/// The allowance picture of the sprint a decision was made in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SprintInfo {
    /// The sprint's number: sprint 1 starts at `sprint.start`, earlier ones are 0, −1, …
    /// (the number `policy explain` and the report show).
    pub index: i64,
    pub allowance: u32,
    pub used: u32,
}

/// The result of a command about one change: printed as text, or as the one JSON document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub change_id: Option<String>,
    pub change_url: Option<String>,
    /// The final decision: `blocked` after a rejection or a timed-out wait.
    pub decision: Option<DecisionKind>,
    /// The policy's own decision, when a human or the clock overruled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_decision: Option<DecisionKind>,
    pub state: Option<State>,
    pub outcome: Option<Outcome>,
    pub rules: Vec<Rule>,
    pub mode: Mode,
    pub dry_run: bool,
    pub correlation_key: String,
    pub service: String,
    pub environment: String,
    pub commit: String,
    pub emergency: Option<String>,
    pub sprint: Option<SprintInfo>,
    pub approved_by: Option<String>,
    pub approval_comment: Option<String>,
    pub incidents: Vec<String>,
    /// Set when `CHANGEGATE_NOW` moved the clock.
    pub clock_override: Option<String>,
    /// One line on what happened ("approval timed out after 1h", ...).
    pub message: Option<String>,
    /// While the change waits for approval: who may approve it and exactly how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how_to_approve: Option<String>,
}

/// What a report says of the decision: as the record holds it ([`Judgement::of_record`]),
/// or as a run judged a decision it did not write (a dry run's, one a closed record does
/// not take).
#[derive(Debug, Clone)]
pub struct Judgement<'a> {
    /// The decision whose rules, sprint, emergency and clock are reported.
    pub decision: Option<&'a Decision>,
    /// The final word: `blocked` after a rejection or a timed-out wait.
    pub kind: Option<DecisionKind>,
    /// The policy's own decision, when a human or the clock overruled it.
    pub policy_decision: Option<DecisionKind>,
    /// The record's state (or the one the decision's write would set).
    pub state: Option<State>,
    /// The deploy's outcome, once recorded.
    pub outcome: Option<Outcome>,
    /// The mode the decision is judged in.
    pub mode: Mode,
}

impl<'a> Judgement<'a> {
    /// The decision as `record` holds it; without a decision on the record, `mode` is the
    /// run's.
    pub fn of_record(record: Option<&'a ChangeRecord>, mode: Mode) -> Judgement<'a> {
        let decision = record.and_then(|r| r.decision.as_ref());
        Judgement {
            decision,
            kind: record.and_then(ChangeRecord::final_decision),
            policy_decision: record
                .filter(|r| r.refused())
                .and(decision)
                .map(|d| d.kind)
                .filter(|k| *k != DecisionKind::Blocked),
            state: record.map(|r| r.state),
            outcome: record.and_then(|r| r.outcome),
            mode: decision.map_or(mode, |d| d.mode),
        }
    }
}

impl Report {
    /// A report of a change as the backend holds it.
    pub fn from_record(
        record: Option<&ChangeRecord>,
        facts: &ChangeFacts,
        mode: Mode,
        dry_run: bool,
    ) -> Report {
        Report::new(record, facts, Judgement::of_record(record, mode), dry_run)
    }

    /// A report of the change `record` (if any) identifies, saying what `judgement` says.
    pub fn new(
        record: Option<&ChangeRecord>,
        facts: &ChangeFacts,
        judgement: Judgement<'_>,
        dry_run: bool,
    ) -> Report {
        let decision = judgement.decision;
        // A change looked up by id (`--change`) may be another commit than the checkout's:
        // its own key and commit are reported, not HEAD's.
        let (correlation_key, commit) = match record.and_then(|r| Some((r, r.commit_sha()?))) {
            Some((r, sha)) if sha != facts.commit_sha => (r.key.clone(), sha.to_string()),
            _ => (facts.key().to_string(), facts.commit_sha.clone()),
        };
        Report {
            change_id: record.map(|r| r.id.clone()),
            change_url: record.and_then(|r| r.url.clone()),
            decision: judgement.kind,
            policy_decision: judgement.policy_decision,
            state: judgement.state,
            outcome: judgement.outcome,
            rules: decision.map(|d| d.rules.clone()).unwrap_or_default(),
            mode: judgement.mode,
            dry_run,
            correlation_key,
            service: facts.service.clone(),
            environment: facts.environment.clone(),
            commit,
            emergency: decision.and_then(|d| d.emergency.clone()),
            sprint: decision.map(|d| SprintInfo {
                index: d.sprint,
                allowance: d.allowance,
                used: d.allowance_used,
            }),
            approved_by: record.and_then(|r| r.approved_by.clone()),
            approval_comment: record.and_then(|r| r.approval_comment.clone()),
            incidents: record.map(|r| r.incidents.clone()).unwrap_or_default(),
            clock_override: decision.and_then(|d| d.clock_override.clone()),
            message: None,
            how_to_approve: None,
        }
    }

    /// The human rendering: a headline and one line per rule.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let id = self.change_id.as_deref().unwrap_or("(no record)");
        let short = self.commit.get(..12).unwrap_or(&self.commit);
        // The headline says what happened: a human's answer comes first, the policy's
        // decision on the line below.
        let human = self.human_answer();
        let what = match (&human, self.decision, self.state) {
            (Some(h), Some(DecisionKind::Blocked), Some(s)) => {
                format!("blocked — {h} (state: {s})")
            }
            (Some(h), _, Some(s)) => format!("{h} (state: {s})"),
            (_, Some(d), Some(s)) => format!("{d} (state: {s})"),
            (_, Some(d), None) => d.to_string(),
            (_, None, Some(s)) => format!("state: {s}"),
            (_, None, None) => "not decided".to_string(),
        };
        // Every value from outside (paths in rule reasons, names, comments, messages) has its
        // control characters escaped: a carriage return or an escape sequence in a file name
        // must not redraw a line of the report, nor a line break start a line of its own.
        let what = console::one_line(&what);
        out.push_str(&format!(
            "{id}: {what} — {} → {} @ {short}{}{}\n",
            console::one_line(&self.service),
            console::one_line(&self.environment),
            if self.mode == Mode::Observe {
                " [observe mode]"
            } else {
                ""
            },
            if self.dry_run {
                " [dry run: nothing written]"
            } else {
                ""
            },
        ));
        if human.is_some()
            && let Some(policy) = self.policy_decision.or(self.decision)
        {
            out.push_str(&format!("  policy: {policy}\n"));
        }
        if let Some(outcome) = self.outcome {
            out.push_str(&format!("  outcome: {outcome}\n"));
        }
        for rule in &self.rules {
            let mark = if rule.passed { "✓" } else { "✗" };
            out.push_str(&format!(
                "  {mark} {:<16} {}\n",
                rule.code,
                console::one_line(&rule.reason)
            ));
        }
        if let Some(by) = self.approved_by.as_ref().filter(|_| human.is_none()) {
            let comment = self
                .approval_comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  decided by {}\n",
                console::one_line(&format!("{by}{comment}"))
            ));
        }
        if !self.incidents.is_empty() {
            out.push_str(&format!(
                "  incidents: {}\n",
                console::one_line(&self.incidents.join(", "))
            ));
        }
        if let Some(url) = &self.change_url {
            out.push_str(&format!("  {}\n", console::one_line(url)));
        }
        if let Some(at) = &self.clock_override {
            out.push_str(&format!("  clock set by CHANGEGATE_NOW to {at}\n"));
        }
        if let Some(message) = self.message.as_ref().filter(|m| Some(*m) != human.as_ref()) {
            out.push_str(&format!("  {}\n", console::one_line(message)));
        }
        if let Some(how) = &self.how_to_approve {
            out.push_str(&format!("  to approve: {}\n", console::one_line(how)));
        }
        out
    }

    /// What a human answered, for the headline: `rejected by NAME: comment` on a rejected
    /// change, `approved by NAME` on one that needed and got approval.
    fn human_answer(&self) -> Option<String> {
        match (self.state?, self.policy_decision.or(self.decision)?) {
            (State::Rejected, _) => Some(rejection(
                self.approved_by.as_deref(),
                self.approval_comment.as_deref(),
            )),
            (
                State::Approved | State::Implementing | State::Closed,
                DecisionKind::NeedsApproval,
            ) if self.mode == Mode::Enforce => {
                let comment = self
                    .approval_comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                Some(match &self.approved_by {
                    Some(by) => format!("approved by {by}{comment}"),
                    None => "approved".to_string(),
                })
            }
            _ => None,
        }
    }

    /// The four outputs both CI platforms get.
    pub fn outputs(&self) -> [(&'static str, String); 4] {
        [
            ("change-id", self.change_id.clone().unwrap_or_default()),
            ("change-url", self.change_url.clone().unwrap_or_default()),
            (
                "decision",
                self.decision.map(|d| d.to_string()).unwrap_or_default(),
            ),
            (
                "state",
                self.state.map(|s| s.to_string()).unwrap_or_default(),
            ),
        ]
    }
}

/// The words for a rejection: who rejected the change, and why when they said.
pub fn rejection(by: Option<&str>, comment: Option<&str>) -> String {
    match (by, comment) {
        (Some(by), Some(c)) => format!("rejected by {by}: {c}"),
        (Some(by), None) => format!("rejected by {by}"),
        (None, Some(c)) => format!("rejected: {c}"),
        (None, None) => "rejected".to_string(),
    }
}
