//! A decision and the rules that led to it.

use std::fmt;

use serde::{Deserialize, Serialize};

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

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `enforce` blocks; `observe` decides and records but never blocks.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
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
    /// Whether the deploy may go ahead right now, without waiting for anyone.
    pub fn passes_now(&self) -> bool {
        self.mode == Mode::Observe || self.kind == DecisionKind::PreApproved
    }

    pub fn failed_rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(|r| !r.passed)
    }
}
