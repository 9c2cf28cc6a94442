//! What a command tells the world: the report (text or JSON) and the CI platform's own
//! channels (step outputs, job summary, workflow commands, dotenv).

use serde::Serialize;

use crate::domain::{ChangeFacts, ChangeRecord, DecisionKind, Mode, Outcome, Rule, State};

pub mod console;
pub mod dotenv;
pub mod github;
pub mod markdown;

/// The allowance picture of the sprint a decision was made in.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SprintInfo {
    pub index: i64,
    pub allowance: u32,
    pub used: u32,
}

/// The result of a command about one change: printed as text, or as the one JSON document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub change_id: Option<String>,
    pub change_url: Option<String>,
    pub decision: Option<DecisionKind>,
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
}

impl Report {
    /// A report of a change as the backend holds it.
    pub fn from_record(
        record: Option<&ChangeRecord>,
        facts: &ChangeFacts,
        mode: Mode,
        dry_run: bool,
    ) -> Report {
        let decision = record.and_then(|r| r.decision.as_ref());
        Report {
            change_id: record.map(|r| r.id.clone()),
            change_url: record.and_then(|r| r.url.clone()),
            decision: decision.map(|d| d.kind),
            state: record.map(|r| r.state),
            outcome: record.and_then(|r| r.outcome),
            rules: decision.map(|d| d.rules.clone()).unwrap_or_default(),
            mode: decision.map_or(mode, |d| d.mode),
            dry_run,
            correlation_key: facts.key().to_string(),
            service: facts.service.clone(),
            environment: facts.environment.clone(),
            commit: facts.commit_sha.clone(),
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
        }
    }

    /// The human rendering: a headline and one line per rule.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let id = self.change_id.as_deref().unwrap_or("(no record)");
        let short = self.commit.get(..12).unwrap_or(&self.commit);
        let what = match (self.decision, self.state) {
            (Some(d), Some(s)) => format!("{d} (state: {s})"),
            (Some(d), None) => d.to_string(),
            (None, Some(s)) => format!("state: {s}"),
            (None, None) => "not decided".to_string(),
        };
        out.push_str(&format!(
            "{id}: {what} — {} → {} @ {short}{}{}\n",
            self.service,
            self.environment,
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
        if let Some(outcome) = self.outcome {
            out.push_str(&format!("  outcome: {outcome}\n"));
        }
        for rule in &self.rules {
            let mark = if rule.passed { "✓" } else { "✗" };
            out.push_str(&format!("  {mark} {:<16} {}\n", rule.code, rule.reason));
        }
        if let Some(by) = &self.approved_by {
            let comment = self
                .approval_comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            out.push_str(&format!("  decided by {by}{comment}\n"));
        }
        if !self.incidents.is_empty() {
            out.push_str(&format!("  incidents: {}\n", self.incidents.join(", ")));
        }
        if let Some(url) = &self.change_url {
            out.push_str(&format!("  {url}\n"));
        }
        if let Some(at) = &self.clock_override {
            out.push_str(&format!("  clock set by CHANGEGATE_NOW to {at}\n"));
        }
        if let Some(message) = &self.message {
            out.push_str(&format!("  {message}\n"));
        }
        out
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
