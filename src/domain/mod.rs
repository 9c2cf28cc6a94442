//! The pure heart of changegate: changes, sprints, the policy and its decision.
//!
//! Nothing in here performs I/O, reads the clock or knows about clap, tokio or HTTP.
//! Everything is a function of its inputs so it can be tested table-driven and replayed.

pub mod approval;
pub mod change;
pub mod decision;
pub mod evidence;
pub mod history;
pub mod imported;
pub mod kpi;
pub mod policy;
pub mod ramp;
pub mod simulate;
pub mod sprint;
pub mod tickets;
pub mod verify;
pub mod words;

pub use approval::Author;
pub use change::{
    ChangeFacts, ChangeRecord, Commit, CorrelationKey, Outcome, Platform, PullRequest, State,
};
pub use decision::{Decision, DecisionKind, Gate, Mode, Rule};
pub use history::{History, SprintTally};
pub use policy::{DecisionInput, Policy, decide};
pub use sprint::{SprintCalendar, notice_key};
