//! The one dry-run guard: a backend seen through [`DryRun`] reads as usual and refuses every
//! write. The commands do not call writes in a dry run (they report what would be written);
//! this is where a slip would stop, the same way for every backend, so no backend needs to
//! know it runs dry.

use anyhow::{Result, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Announcements, Backend, ChangeStore, DayStamp, HistoryQuery, Insights, Intent, KeptKpis,
    KeptNotice, KeptSprint, Lookup, ManualApproval, Notices, ServiceRef, Since, SprintNotice,
    TrackRecord, Verification,
};
use crate::domain::approval::Approver;
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::RecordedChange;
use crate::domain::verify::{LinkedIncident, Verdict};
use crate::domain::{ChangeFacts, ChangeRecord, CorrelationKey, Decision, History, Outcome};

/// A backend that refuses writes: what [`super::connect`] hands out for `--dry-run`.
pub struct DryRun {
    inner: Box<dyn Backend>,
}

impl DryRun {
    /// Wraps `inner`: its reads pass, its writes fail.
    pub fn new(inner: Box<dyn Backend>) -> DryRun {
        DryRun { inner }
    }

    fn refuse<T>(&self) -> Result<T> {
        bail!(
            "internal error: a dry run tried to write to the {} backend",
            self.inner.kind().as_str()
        )
    }
}

#[async_trait]
impl ChangeStore for DryRun {
    async fn find(&self, key: &CorrelationKey, intent: Intent) -> Result<Lookup> {
        self.inner.find(key, intent).await
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        self.inner.get(id).await
    }

    async fn open(
        &self,
        _facts: &ChangeFacts,
        _decision: Option<&Decision>,
        _found: Option<&Lookup>,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.refuse()
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        self.inner.refresh(record).await
    }

    async fn approvers(&self, record: &ChangeRecord) -> Result<Option<Vec<Approver>>> {
        self.inner.approvers(record).await
    }

    async fn start(&self, _record: &ChangeRecord, _now: DateTime<Utc>) -> Result<ChangeRecord> {
        self.refuse()
    }

    async fn record_outcome(
        &self,
        _record: &ChangeRecord,
        _outcome: Outcome,
        _notes: &str,
        _found: Option<&Lookup>,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.refuse()
    }

    async fn record_refusal(
        &self,
        _record: &ChangeRecord,
        _why: &str,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.refuse()
    }
}

#[async_trait]
impl TrackRecord for DryRun {
    async fn history(&self, query: &HistoryQuery<'_>) -> Result<History> {
        self.inner.history(query).await
    }

    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        self.inner.last_change_sha(key).await
    }
}

#[async_trait]
impl Verification for DryRun {
    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        self.inner.recorded_facts(record).await
    }

    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        self.inner.awaiting_verification(deployed_before).await
    }

    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        self.inner.linked_incidents(record).await
    }

    async fn record_verification(
        &self,
        _record: &ChangeRecord,
        _verdict: &Verdict,
        _now: DateTime<Utc>,
    ) -> Result<bool> {
        self.refuse()
    }
}

#[async_trait]
impl Insights for DryRun {
    async fn services(&self) -> Result<Vec<ServiceRef>> {
        self.inner.services().await
    }

    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        self.inner
            .change_summaries(service_id, environment, from, to)
            .await
    }

    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>> {
        self.inner.recorded_changes(service_id, environment).await
    }
}

/// Manual decisions refused like every other write, on a backend that offers them.
#[async_trait]
impl ManualApproval for DryRun {
    async fn decide_by_hand(
        &self,
        _id: &str,
        _approve: bool,
        _by: &str,
        _comment: Option<&str>,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.refuse()
    }

    async fn link_incident(
        &self,
        _id: &str,
        _incident: &str,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.refuse()
    }
}

impl Backend for DryRun {
    fn kind(&self) -> super::BackendKind {
        self.inner.kind()
    }

    fn manual(&self) -> Option<&dyn ManualApproval> {
        self.inner.manual().map(|_| self as &dyn ManualApproval)
    }

    fn announcements(&self) -> Option<&dyn Announcements> {
        self.inner
            .announcements()
            .map(|_| self as &dyn Announcements)
    }

    fn notices(&self) -> Option<&dyn Notices> {
        self.inner.notices().map(|_| self as &dyn Notices)
    }

    fn kept_kpis(&self) -> Option<&dyn KeptKpis> {
        self.inner.kept_kpis().map(|_| self as &dyn KeptKpis)
    }
}

/// The kept KPIs read as usual; keeping new ones is a write, refused.
#[async_trait]
impl KeptKpis for DryRun {
    async fn stamps(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayStamp>> {
        match self.inner.kept_kpis() {
            Some(k) => k.stamps(service_id, environment, from, to).await,
            None => Ok(Vec::new()),
        }
    }

    async fn kept_sprints(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<KeptSprint>> {
        match self.inner.kept_kpis() {
            Some(k) => k.kept_sprints(service_id, environment, from, to).await,
            None => Ok(Vec::new()),
        }
    }

    async fn keep_sprints(&self, _: &str, _: &str, _: &[KeptSprint]) -> Result<()> {
        self.refuse()
    }

    async fn deploys_around(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        match self.inner.kept_kpis() {
            Some(k) => {
                k.deploys_around(service_id, environment, from, before)
                    .await
            }
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl Notices for DryRun {
    async fn find_notice(&self, notice: &SprintNotice) -> Result<Option<KeptNotice>> {
        match self.inner.notices() {
            Some(n) => n.find_notice(notice).await,
            None => Ok(None),
        }
    }

    async fn write_notice(
        &self,
        _notice: &SprintNotice,
        _found: Option<&KeptNotice>,
    ) -> Result<KeptNotice> {
        self.refuse()
    }

    async fn last_told(&self, kept: &KeptNotice) -> Result<Option<String>> {
        match self.inner.notices() {
            Some(n) => n.last_told(kept).await,
            None => Ok(None),
        }
    }

    async fn keep_told(&self, _kept: &KeptNotice, _body: &str) -> Result<()> {
        self.refuse()
    }
}

#[async_trait]
impl Announcements for DryRun {
    async fn last_announced(
        &self,
        service_id: &str,
        sprint: i64,
        sink: &str,
    ) -> Result<Option<String>> {
        match self.inner.announcements() {
            Some(a) => a.last_announced(service_id, sprint, sink).await,
            None => Ok(None),
        }
    }

    async fn keep_announced(
        &self,
        _service_id: &str,
        _sprint: i64,
        _sink: &str,
        _body: &str,
        _now: DateTime<Utc>,
    ) -> Result<()> {
        self.refuse()
    }
}
