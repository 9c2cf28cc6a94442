//! The `Itsm` port: what changegate needs from a system of record for changes, and the
//! backends that provide it. A new backend is one new file plus one arm in [`connect`].

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::BackendKind;
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, History, Outcome, SprintCalendar,
};

pub mod jira;
pub mod local;
pub mod servicenow;

/// What the policy needs to know about the past, for one service in one environment.
#[derive(Debug, Clone)]
pub struct HistoryQuery<'a> {
    pub service_id: &'a str,
    pub environment: &'a str,
    /// How many recent closed outcomes to return.
    pub window: u32,
    pub calendar: SprintCalendar,
    /// The first sprint to tally (the start of the trust ramp's replay).
    pub from_sprint: i64,
    pub now: DateTime<Utc>,
    /// The change being decided: never part of its own history.
    pub exclude_key: Option<&'a str>,
}

/// A system of record for changes.
///
/// Every write is idempotent on the correlation key: calling `open` twice, from two
/// processes at once, or again after a crash, leaves one record.
#[async_trait]
pub trait Itsm: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// The aggregated history for a decision. The number of requests or rows read must not
    /// grow with the size of the history.
    async fn history(&self, query: &HistoryQuery<'_>) -> Result<History>;

    /// The commit of the last change recorded for this service and environment, for the
    /// commit range of a local run.
    async fn last_change_sha(&self, service_id: &str, environment: &str) -> Result<Option<String>>;

    async fn find(&self, key: &CorrelationKey) -> Result<Option<ChangeRecord>>;

    /// A change by the backend's id (`CHG0030001`, `CHG-12`, ...).
    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>>;

    /// Finds or creates the change record and writes the facts. With a decision, also
    /// writes it (state, type, work note) unless the record already holds one that stands:
    /// an existing pre-approved or needs-approval decision is kept, so a re-run of the same
    /// pipeline never re-decides (nor uses the allowance twice). Returns the record as stored.
    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;

    /// Reads the record again (state, approval, approver).
    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord>;

    /// The gate passed: move the change to implementation.
    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord>;

    /// Records the outcome and closes (or cancels) the record. Recording twice is harmless.
    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;

    /// A human decision taken through changegate itself (the embedded ledger only).
    async fn decide_by_hand(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let _ = (id, approve, by, comment, now);
        anyhow::bail!(
            "`approve` and `reject` work on the embedded ledger only; with the {} backend, decide the change in {}",
            self.kind().as_str(),
            self.kind().as_str()
        )
    }
}

/// Whether an existing decision stands on a re-run, or the change is decided again.
/// Blocked decisions (freeze, rejection aside) are re-decided: the freeze may have ended.
/// A newly declared emergency re-decides a change still waiting for approval.
pub fn decision_stands(record: &ChangeRecord, emergency_requested: bool) -> bool {
    use crate::domain::{DecisionKind, State};
    let Some(d) = &record.decision else {
        return false;
    };
    match d.kind {
        DecisionKind::Blocked => record.state == State::Rejected,
        DecisionKind::NeedsApproval => {
            !(emergency_requested
                && d.emergency.is_none()
                && record.state == State::AwaitingApproval)
        }
        DecisionKind::PreApproved => true,
    }
}

/// Opens the backend the settings name.
pub fn connect(settings: &crate::settings::Settings) -> Result<Box<dyn Itsm>> {
    match settings.backend {
        BackendKind::Local => Ok(Box::new(
            local::Ledger::open(&settings.ledger_path, settings.dry_run)?
                .with_calendar(settings.calendar),
        )),
        BackendKind::Servicenow => Ok(Box::new(servicenow::ServiceNow::connect(settings)?)),
        BackendKind::Jira => Ok(Box::new(jira::Jira::connect(settings)?)),
    }
}
