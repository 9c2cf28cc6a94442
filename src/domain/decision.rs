//! A decision and the rules that led to it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::change::State;

/// What the gate concluded about a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    PreApproved,
    NeedsApproval,
    Blocked,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::PreApproved => "pre-approved",
            DecisionKind::NeedsApproval => "needs-approval",
            DecisionKind::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<DecisionKind> {
        Some(match s {
            "pre-approved" => DecisionKind::PreApproved,
            "needs-approval" => DecisionKind::NeedsApproval,
            "blocked" => DecisionKind::Blocked,
            _ => return None,
        })
    }
}

/// What a gate does with a change right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The deploy may go ahead.
    Pass,
    /// The deploy may not go ahead: the policy, a human or the clock said no.
    Blocked,
    /// The deploy waits for a human's approval.
    Waiting,
}

impl DecisionKind {
    /// The one definition of what a final decision means for the deploy, given the mode it
    /// was made under and the record's state. Observe mode never holds a deploy back. The
    /// exit code and the forge's verdict both map from this.
    pub fn gate(self, mode: Mode, state: Option<State>) -> Gate {
        if mode == Mode::Observe {
            return Gate::Pass;
        }
        match (self, state) {
            (_, Some(State::Rejected)) | (DecisionKind::Blocked, _) => Gate::Blocked,
            (DecisionKind::PreApproved, _) => Gate::Pass,
            (
                DecisionKind::NeedsApproval,
                Some(State::Approved | State::Implementing | State::Closed),
            ) => Gate::Pass,
            (DecisionKind::NeedsApproval, _) => Gate::Waiting,
        }
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `enforce` blocks; `observe` decides and records but never blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    Observe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Observe => "observe",
        }
    }
}

/// One rule evaluated for a decision. `code` is stable: pipelines and dashboards may key on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub code: String,
    pub passed: bool,
    pub reason: String,
}

impl Rule {
    pub fn new(code: &str, passed: bool, reason: impl Into<String>) -> Self {
        Rule {
            code: code.to_string(),
            passed,
            reason: reason.into(),
        }
    }
}

/// The stable rule codes.
pub mod codes {
    pub const TRACK_RECORD: &str = "track-record";
    pub const ALLOWANCE: &str = "allowance";
    pub const RISK_SIZE: &str = "risk-size";
    pub const RISK_PATHS: &str = "risk-paths";
    pub const FREEZE: &str = "freeze";
    pub const EVIDENCE_REVIEW: &str = "evidence-review";
    pub const EVIDENCE_TESTS: &str = "evidence-tests";
    pub const EMERGENCY: &str = "emergency";
}

/// The outcome of the policy for one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub rules: Vec<Rule>,
    pub mode: Mode,
    /// Set when the change was declared an emergency; holds the reason.
    pub emergency: Option<String>,
    /// The sprint the decision was made in, and that sprint's allowance and use.
    pub sprint: i64,
    pub allowance: u32,
    pub allowance_used: u32,
    /// Set when the clock was overridden (`CHANGEGATE_NOW`); every such decision says so.
    pub clock_override: Option<String>,
}

impl Decision {
    /// The state a backend sets when it writes this decision on a record not yet deployed:
    /// what a dry run, or a re-decision that is not written, judges the gate by.
    pub fn state_after(&self) -> State {
        match self.kind {
            DecisionKind::PreApproved => State::Approved,
            DecisionKind::NeedsApproval => State::AwaitingApproval,
            DecisionKind::Blocked => State::New,
        }
    }

    /// Whether this decision takes a slot of its sprint's allowance: a pre-approval that is
    /// not an emergency. Every tally of the allowance (ledger, ServiceNow, Jira, simulate)
    /// counts by this.
    pub fn counts_against_allowance(&self) -> bool {
        self.kind == DecisionKind::PreApproved && self.emergency.is_none()
    }

    pub fn failed_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| !r.passed)
    }

    /// The same decision with the allowance counted again: another change may have taken
    /// the last free slot between reading the history and writing this decision. A
    /// pre-approval that no longer fits becomes `needs-approval`, exactly as deciding again
    /// would make it (the other rules do not depend on other changes' decisions). Emergencies
    /// use no allowance and are left as they are.
    pub fn with_allowance_used(mut self, used: u32) -> Decision {
        if self.emergency.is_some() || used == self.allowance_used {
            return self;
        }
        self.allowance_used = used;
        let passed = used < self.allowance;
        for rule in self.rules.iter_mut().filter(|r| r.code == codes::ALLOWANCE) {
            rule.passed = passed;
            rule.reason = format!("allowance {used} of {} used this sprint", self.allowance);
        }
        if !passed && self.kind == DecisionKind::PreApproved {
            self.kind = DecisionKind::NeedsApproval;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre_approved(used: u32, allowance: u32) -> Decision {
        Decision {
            kind: DecisionKind::PreApproved,
            rules: vec![
                Rule::new(
                    codes::TRACK_RECORD,
                    true,
                    "success rate 100% over last 5 ≥ 90%",
                ),
                Rule::new(
                    codes::ALLOWANCE,
                    true,
                    format!("allowance {used} of {allowance} used this sprint"),
                ),
            ],
            mode: Mode::Enforce,
            emergency: None,
            sprint: 3,
            allowance,
            allowance_used: used,
            clock_override: None,
        }
    }

    #[test]
    fn a_slot_taken_meanwhile_sends_the_change_to_approval() {
        let d = pre_approved(1, 2).with_allowance_used(2);
        assert_eq!(d.kind, DecisionKind::NeedsApproval);
        assert_eq!(d.allowance_used, 2);
        let rule = &d.rules[1];
        assert!(!rule.passed);
        assert_eq!(rule.reason, "allowance 2 of 2 used this sprint");
    }

    #[test]
    fn a_slot_still_free_keeps_the_pre_approval() {
        let d = pre_approved(0, 3).with_allowance_used(1);
        assert_eq!(d.kind, DecisionKind::PreApproved);
        assert!(d.rules[1].passed);
        assert_eq!(d.rules[1].reason, "allowance 1 of 3 used this sprint");
    }

    #[test]
    fn emergencies_use_no_allowance() {
        let mut d = pre_approved(1, 1);
        d.emergency = Some("outage".into());
        assert_eq!(d.clone().with_allowance_used(5), d);
    }
}
