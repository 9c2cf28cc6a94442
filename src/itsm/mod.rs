//! The backend port, split by role, and the backends that provide it.
//!
//! Every backend is a [`Backend`]: a [`ChangeStore`] (find, open and move change records),
//! a [`TrackRecord`] (the past a decision reads), [`Verification`] (what `verify` reads and
//! writes) and [`Insights`] (what `report` and `policy simulate` read). A ledger also offers
//! [`ManualApproval`] through [`Backend::manual`]; the commands that need it go through
//! [`manual_only`] and [`manual`], the one place their refusal is worded. A dry run sees
//! the backend through [`DryRun`], the one place writes are refused.
//!
//! What a backend found is a value, not a cache: [`ChangeStore::find`] (and
//! [`TrackRecord::last_change_sha`], when its read finds the record too) returns a [`Lookup`]
//! carrying the backend's own data, and the flow hands it to `open`, `history` and
//! `record_outcome`, which then do not look again. A backend keeps per-instance memos only
//! for what no change's value carries (a token, a template id, a service desk id).
//!
//! Every backend has the same layout, `itsm/<backend>/`:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the backend's type, its `connect`, what it says about itself, `Backend` |
//! | `client.rs` | the connection: HTTP calls and their errors, or the ledger's stores (with `client/sqlite.rs` and `client/postgres.rs`: a `client/` folder holds the parts of a client with more than one kind of connection) |
//! | `codec.rs` | the remote's shapes to changegate's and back (records, text, labels) |
//! | `lifecycle.rs` | [`ChangeStore`] (and [`ManualApproval`] for a ledger) |
//! | `history.rs` | [`TrackRecord`] |
//! | `insights.rs` | [`Insights`] |
//! | `verify.rs` | [`Verification`] |
//!
//! Unit tests sit beside the code (`#[cfg(test)] mod tests`, or `tests.rs` in the folder);
//! `tests/shape.rs` fails when a folder strays from this layout.
//!
//! Adding a backend touches exactly: its folder `itsm/<backend>/` in this layout (or, for
//! another ledger store, one file `itsm/local/client/<store>.rs` and its arm in
//! `client.rs`'s `Store`); its config variant — the `BackendKind` variant with its `[<backend>]` section in
//! `config.rs`, and the `BackendConfig` variant it connects with, resolved (secrets
//! included) in `settings.rs`; and one arm in [`connect`].

use std::any::Any;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::BackendKind;
use crate::domain::approval::Approver;
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::RecordedChange;
use crate::domain::verify::{LinkedIncident, Verdict};
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, History, Outcome, SprintCalendar,
};

mod dry_run;
pub mod jira;
pub mod local;
pub mod servicenow;

pub use dry_run::DryRun;

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
    /// The gate's lookup of that change, which may carry the track record a backend read
    /// with it (see [`Intent::Decide`]): what it carries is not read again.
    pub found: Option<&'a Lookup>,
}

/// What a caller of [`ChangeStore::find`] will do next, so that a backend that can read more
/// in the same request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Only read the record (`status`, `record`, `open`).
    Read,
    /// Decide the change: the track record is read next. A backend that can read the record
    /// and the track record in one request does so, and carries the rows in the [`Lookup`].
    Decide,
}

/// What [`ChangeStore::find`] found: the record, and what the backend that found it needs to
/// write it (opaque to everyone else, read back only by that backend). Handing it to
/// [`ChangeStore::open`] spares the backend a second lookup, with no cache between the calls.
pub struct Lookup {
    key: String,
    /// The change record holding the key, if any.
    pub record: Option<ChangeRecord>,
    found: Option<Box<dyn Any + Send + Sync>>,
}

impl Lookup {
    /// A lookup of `key` that found `record` and carries nothing else.
    pub fn of(key: &CorrelationKey, record: Option<ChangeRecord>) -> Lookup {
        Lookup {
            key: key.to_string(),
            record,
            found: None,
        }
    }

    /// The same, carrying the backend's own data for a later `open` or `history`.
    pub fn carrying<T: Any + Send + Sync>(mut self, found: T) -> Lookup {
        self.found = Some(Box::new(found));
        self
    }

    /// The correlation key looked up.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The backend's data, when this lookup is of `key` and carries a `T`: a backend reads
    /// back only what it made itself, and looks up again otherwise.
    pub fn found<T: Any>(&self, key: &CorrelationKey) -> Option<&T> {
        if self.key != key.to_string() {
            return None;
        }
        self.carried()
    }

    /// The backend's data, whatever key was looked up (for data not tied to the key, such
    /// as the track record of its service and environment, which the backend checks itself).
    pub fn carried<T: Any>(&self) -> Option<&T> {
        self.found.as_deref().and_then(|f| f.downcast_ref::<T>())
    }
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("key", &self.key)
            .field("record", &self.record)
            .field("carries", &self.found.is_some())
            .finish()
    }
}

/// What [`TrackRecord::last_change_sha`] read.
#[derive(Debug, Default)]
pub struct Since {
    /// The commit of the last change deployed successfully, if any.
    pub sha: Option<String>,
    /// The lookup of the key's record (an [`Intent::Decide`] one), when the same read found
    /// it: hand it to the gate's `open` and `history` instead of finding the key again.
    pub found: Option<Lookup>,
}

/// A service and environment the backend holds changes for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ServiceRef {
    /// The service's identity (repository included), as in the correlation key.
    pub service_id: String,
    /// Its display name.
    pub service: String,
    pub environment: String,
}

/// Why a command that only a ledger (SQLite or PostgreSQL) offers cannot run on `kind`: the
/// one place this refusal is worded. Checked before connecting, so that it needs no
/// credentials.
pub fn manual_only(kind: BackendKind, command: ManualCommand) -> Result<()> {
    if matches!(kind, BackendKind::Local | BackendKind::Postgres) {
        return Ok(());
    }
    Err(refusal(kind, command))
}

/// Refuses a ledger-only command (`ledger migrate`) on an ITSM backend.
pub fn ledger_only(kind: BackendKind, command: &str) -> Result<()> {
    if matches!(kind, BackendKind::Local | BackendKind::Postgres) {
        return Ok(());
    }
    anyhow::bail!(
        "`{command}` works on the ledger backends only (local, postgres); the {} backend keeps its own schema",
        kind.as_str()
    )
}

/// Opens the ledger the settings name (never read-only: migrating writes) and applies its
/// migrations; says which version it found.
pub async fn migrate(settings: &crate::settings::Settings) -> Result<local::SchemaStatus> {
    use crate::settings::BackendConfig;
    let ledger = match settings.backend_config()? {
        BackendConfig::Local(config) => local::Ledger::open(&config.path, false)?,
        BackendConfig::Postgres(config) => {
            local::Ledger::postgres(&config.url, false, config.timeouts)?
        }
        _ => {
            ledger_only(settings.backend, "ledger migrate")?;
            anyhow::bail!("`ledger migrate` found no ledger to open")
        }
    };
    ledger.migrate().await
}

/// The backend's manual approval, or the refusal [`manual_only`] words.
pub fn manual(backend: &dyn Backend, command: ManualCommand) -> Result<&dyn ManualApproval> {
    backend
        .manual()
        .ok_or_else(|| refusal(backend.kind(), command))
}

fn refusal(kind: BackendKind, command: ManualCommand) -> anyhow::Error {
    let name = kind.as_str();
    match command {
        ManualCommand::Approve | ManualCommand::Reject => anyhow::anyhow!(
            "`{}` works on the ledger backends only (local, postgres); with the {name} backend, decide the change in {name}",
            command.as_str()
        ),
        ManualCommand::Incident => anyhow::anyhow!(
            "`incident` works on the ledger backends only (local, postgres); with the {name} backend, link the incident to the change in {name}, where `verify` finds it"
        ),
    }
}

/// A command that works through [`ManualApproval`], named in its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualCommand {
    /// `approve`: a human approves a change waiting for approval.
    Approve,
    /// `reject`: a human rejects it.
    Reject,
    /// `incident`: an incident is linked to a change.
    Incident,
}

impl ManualCommand {
    /// The command's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ManualCommand::Approve => "approve",
            ManualCommand::Reject => "reject",
            ManualCommand::Incident => "incident",
        }
    }
}

/// A system of record for changes: every backend is one, whatever it offers beyond.
pub trait Backend: ChangeStore + TrackRecord + Verification + Insights {
    /// Which backend this is, as the settings name it.
    fn kind(&self) -> BackendKind;

    /// Human decisions taken through changegate itself: only a ledger offers them (an ITSM
    /// has its own approvals and incident links).
    fn manual(&self) -> Option<&dyn ManualApproval> {
        None
    }

    /// What a server keeps between webhook deliveries (the deliveries it has seen, the
    /// deployments waiting for a callback), so that any replica, or the next server to
    /// start, finds it: only backends that can hold it offer it.
    fn waits(&self) -> Option<&dyn Waits> {
        None
    }

    /// Writing the forge's own deployment history as closed changes (`history import`):
    /// only a ledger offers it (an ITSM is its own record).
    fn imports(&self) -> Option<&dyn Imports> {
        None
    }

    /// What `announce` last published to a sink it cannot read back (the chat webhook):
    /// only a ledger offers it. An ITSM keeps it on the sprint's notice instead
    /// ([`Notices::last_told`]).
    fn announcements(&self) -> Option<&dyn Announcements> {
        None
    }

    /// The day stamps and kept sprint KPIs that keep `report` flat: only a ledger keeps
    /// them.
    fn kept_kpis(&self) -> Option<&dyn KeptKpis> {
        None
    }

    /// The sprint notice kept in the ITSM (`announce`'s `itsm` sink): a ServiceNow umbrella
    /// change, a Jira issue. Not a ledger's.
    fn notices(&self) -> Option<&dyn Notices> {
        None
    }
}

/// Where change records live: find, open and move them through their life.
///
/// Every write is idempotent on the correlation key: calling `open` twice, from two
/// processes at once, or again after a crash, leaves one record.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// The change record holding `key`, if any, with what the backend needs to write it
    /// (hand the [`Lookup`] to [`ChangeStore::open`]); `intent` says what comes next.
    async fn find(&self, key: &CorrelationKey, intent: Intent) -> Result<Lookup>;

    /// A change by the backend's id (`CHG0030001`, `CHG-12`, ...).
    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>>;

    /// Finds or creates the change record and writes the facts. With a decision, also
    /// writes it (state, type, work note) unless the record is closed or cancelled or
    /// already holds one that stands (see [`ChangeRecord::takes_decision`]):
    /// an existing pre-approved or needs-approval decision is kept, so a re-run of the same
    /// pipeline never re-decides (nor uses the allowance twice). `found` is the caller's
    /// [`ChangeStore::find`] of the facts' key, if it made one: the backend starts from it
    /// instead of looking the key up again (without one, or with a lookup of another key,
    /// the backend looks the key up itself). Returns the record as stored.
    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;

    /// Reads the record again (state, approval, approver).
    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord>;

    /// Everyone the backend names as having approved `record` in its own approvals, each
    /// by every name it gives them (display name, user name, e-mail), for
    /// `[approval] separate_author`. `None` where approvals are not the backend's own: a
    /// ledger's `changegate approve` checks its approver when it is given.
    async fn approvers(&self, record: &ChangeRecord) -> Result<Option<Vec<Approver>>>;

    /// The gate passed: move the change to implementation.
    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord>;

    /// Records the outcome and closes (or cancels) the record. Recording twice is harmless.
    /// `found` is the caller's [`ChangeStore::find`] that located `record`, if it made one:
    /// what the backend saw there is tidied up now that the deploy is over (ServiceNow: the
    /// younger records two racing runs left holding the key).
    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;

    /// A gate saw the change refused while it waited (a human rejected it, or the wait ran
    /// out): the final decision is `blocked`, and the record says so with `why`. The
    /// embedded ledger stores a timeout as its final decision (a rejection it stored when
    /// it was made); ServiceNow gets a work note and Jira a comment. A timeout
    /// (`record.timed_out`) is also marked where a re-run reads it back with the record
    /// (ServiceNow: `correlation_display`; Jira: a label). Returns the record as now stored.
    async fn record_refusal(
        &self,
        record: &ChangeRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;
}

/// The past a decision is made on.
#[async_trait]
pub trait TrackRecord: Send + Sync {
    /// The aggregated history for a decision. The number of requests or rows read must not
    /// grow with the size of the history.
    async fn history(&self, query: &HistoryQuery<'_>) -> Result<History>;

    /// The commit of the last change deployed successfully (outcome success) for the service
    /// and environment of `key` (the change about to be made): the start of its commit
    /// range. A blocked, rejected, cancelled or failed change is not a start: what it
    /// carried ships with the next deploy. A backend that finds `key`'s record in the same
    /// read hands the [`Lookup`] on in [`Since::found`].
    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since>;
}

/// What `verify` reads and writes after a deploy.
#[async_trait]
pub trait Verification: Send + Sync {
    /// The facts a change was opened with (its pull request, commit, run), so that a later
    /// job (`verify`) can annotate the right pull request. `None` where the backend keeps no
    /// copy of them.
    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        let _ = record;
        Ok(None)
    }

    /// Changes deployed at or before `deployed_before`, with a success or failure outcome,
    /// that `verify` has not verified yet, oldest first.
    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>>;

    /// Incidents linked to a change (ServiceNow: incidents whose `caused_by` or `rfc` is the
    /// change; Jira: linked incident issues; the embedded ledger: `changegate incident`).
    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>>;

    /// Records `verify`'s verdict: a success turned into a failure after deploy keeps the
    /// incident ids. Only a change not yet verified is written; returns whether it was.
    async fn record_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// What `report` and `policy simulate` read across many changes.
#[async_trait]
pub trait Insights: Send + Sync {
    /// Every service and environment with changes, for `report --all`.
    async fn services(&self) -> Result<Vec<ServiceRef>>;

    /// Summaries of the changes of one service and environment decided from `from` to `to`
    /// (both included), in decision order, for the KPIs.
    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>>;

    /// Every decided change of one service and environment with what its decision was made
    /// on, for `policy simulate`.
    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>>;
}

/// One UTC day of a service and environment's changes as the ledger stamps it: how many
/// writes touched a change decided or deployed that day (it only ever grows), and the
/// earliest decision time of any change that touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayStamp {
    /// The day's midnight, Unix seconds.
    pub day: i64,
    pub writes: i64,
    /// Unix seconds.
    pub earliest: i64,
}

/// A finished sprint's KPI part as the ledger keeps it (`kpi_sprints`); the flow writes
/// and judges it, the ledger only stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSprint {
    /// The sprint's start and end (Unix seconds): a calendar changed since reads as another
    /// sprint.
    pub start: i64,
    pub end: i64,
    pub sprint: i64,
    /// The layout of `body` (the flow's `KEPT_FORMAT`).
    pub format: i64,
    /// The sum of the day stamps' writes from `lo` to `hi` when it was computed.
    pub stamp: i64,
    /// The deploys it was computed from (Unix seconds, see `domain::kpi::PartReach`).
    pub lo: i64,
    pub hi: i64,
    /// Where the reading started, and the clock, when it was computed.
    pub window_from: i64,
    pub computed_at: i64,
    pub body: String,
}

/// What keeps `report` flat on a long history (the ledgers only): day stamps kept by the
/// ledger as changes are written, the finished sprints' KPI parts, and the few deploys of
/// earlier sprints the current sprint's failure episodes need. Reached through
/// [`Backend::kept_kpis`].
#[async_trait]
pub trait KeptKpis: Send + Sync {
    /// The stamps of the days from `from` to `to` (both midnights included).
    async fn stamps(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayStamp>>;

    /// The kept parts of sprints starting from `from` to `to` (both included).
    async fn kept_sprints(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<KeptSprint>>;

    /// Keeps these parts (replacing what was kept for the same sprint start).
    async fn keep_sprints(
        &self,
        service_id: &str,
        environment: &str,
        rows: &[KeptSprint],
    ) -> Result<()>;

    /// The successful or failed deploys of changes decided from `from` up to (not
    /// including) `before` that were deployed at or after `before`, and the latest one
    /// deployed before it (every one deployed at that instant), in decision order: what a
    /// failure episode of the sprint starting at `before` can begin after or end with.
    async fn deploys_around(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>>;
}

/// Human decisions taken through changegate itself (the ledgers only, SQLite or PostgreSQL: an ITSM
/// decides and links in its own screens). Reached through [`Backend::manual`].
#[async_trait]
pub trait ManualApproval: Send + Sync {
    /// Approves or rejects a change waiting for approval.
    async fn decide_by_hand(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;

    /// Links an incident to a change. Linking the same incident twice is harmless.
    async fn link_incident(
        &self,
        id: &str,
        incident: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord>;
}

/// A finished deployment the forge recorded, as the ledger keeps it: a closed change that
/// was never decided by changegate (not pre-approved: it used no allowance), marked with
/// where it came from.
#[derive(Debug, Clone)]
pub struct ImportedChange {
    /// The facts it is filed under (service, environment, commit, repository): the key a
    /// later gate of the same commit finds.
    pub facts: ChangeFacts,
    /// When the deployment started: the change's decision and deploy time (its sprint).
    pub started_at: DateTime<Utc>,
    /// How it ended and when: the change's outcome and close time.
    pub finished: crate::domain::imported::Finished,
    /// Where it came from, e.g. `github deployment 123`.
    pub source: String,
}

/// The forge's history written into the ledger (`history import`). Reached through
/// [`Backend::imports`].
#[async_trait]
pub trait Imports: Send + Sync {
    /// Writes `change` as a closed, imported change unless a change with its correlation
    /// key is already in the ledger (imported before, or gated by changegate): true when
    /// written. Importing the same change twice, or from two processes at once, writes one.
    async fn import(&self, change: &ImportedChange, now: DateTime<Utc>) -> Result<bool>;
}

/// A deployment a server has to call back on, kept until the callback is made: the
/// delivery itself (its payload says where to call back, for which environment, with which
/// installation), so a server that starts can pick it up and finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWait {
    /// What makes two deliveries the same deployment (its callback and environment).
    pub key: String,
    /// The forge that sent it (`github`).
    pub forge: String,
    /// The delivery's payload, as received (and verified).
    pub payload: String,
    /// When the first delivery of it arrived.
    pub since: DateTime<Utc>,
}

/// What [`Waits::admit`] made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New: claimed and held; the caller does the work.
    Taken,
    /// This delivery was seen before.
    SeenDelivery,
    /// Another delivery of the same deployment was taken before.
    SeenDeployment,
}

/// What `changegate serve` keeps in the backend, not in memory: replicas share it, and a
/// restart loses none of it. Reached through [`Backend::waits`].
#[async_trait]
pub trait Waits: Send + Sync {
    /// Claims `id` in `space` (`github-delivery`, `github-deployment`): true for the first
    /// claim only, atomically, whoever else claims it at the same moment.
    async fn claim(&self, space: &str, id: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Keeps `wait` until [`Waits::release`]; keeping the same key again changes nothing.
    async fn hold(&self, wait: &PendingWait) -> Result<()>;

    /// Takes a delivery that asks for a callback, at once and all or nothing (one write, so
    /// one sync to disk on the answer's path): claims `delivery` in `space`, then the
    /// deployment (`wait.key`) in `deployments`, and holds `wait` until [`Waits::release`].
    /// What was seen before is said, and nothing more is written.
    async fn admit(
        &self,
        space: &str,
        delivery: &str,
        deployments: &str,
        wait: &PendingWait,
    ) -> Result<Admission>;

    /// Every wait held, oldest first.
    async fn held(&self) -> Result<Vec<PendingWait>>;

    /// The callback was made: the wait is over.
    async fn release(&self, key: &str) -> Result<()>;
}

/// What `announce` last published to a sink that cannot be read back (a chat webhook), per
/// service, sprint and sink, so that the next run posts only the differences.
#[async_trait]
pub trait Announcements: Send + Sync {
    /// The body last kept for `service_id`, `sprint` and `sink`, if any.
    async fn last_announced(
        &self,
        service_id: &str,
        sprint: i64,
        sink: &str,
    ) -> Result<Option<String>>;

    /// Keeps `body` as the last announced (replacing what was kept).
    async fn keep_announced(
        &self,
        service_id: &str,
        sprint: i64,
        sink: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;
}

/// A sprint's notice as an ITSM keeps it: one record per service and sprint, found again by
/// [`crate::domain::notice_key`], edited in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SprintNotice {
    pub service_id: String,
    pub sprint: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// "Upcoming changes — <service>, sprint N (dates)".
    pub title: String,
    /// The list, one line each, as plain text (untrusted titles as they are: each backend
    /// keeps them as data).
    pub lines: Vec<String>,
}

impl SprintNotice {
    /// The lines as one text.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A notice found in (or written to) the ITSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptNotice {
    /// What people call it: `CHG0030001`, `OPS-12`.
    pub id: String,
    pub url: Option<String>,
    /// The backend's own handle (a sys_id, an issue key).
    pub handle: String,
    /// What it says now equals the notice it was found for.
    pub same: bool,
    /// What the chat was last told, when the search that found the notice read it too
    /// (Jira: an issue property); `None` otherwise.
    pub told: Option<String>,
}

/// Where the sprint's notice lives in an ITSM.
#[async_trait]
pub trait Notices: Send + Sync {
    /// The notice of `notice`'s service and sprint, if one is kept; `same` when it says
    /// what `notice` says.
    async fn find_notice(&self, notice: &SprintNotice) -> Result<Option<KeptNotice>>;

    /// Creates the notice, or edits `found` in place.
    async fn write_notice(
        &self,
        notice: &SprintNotice,
        found: Option<&KeptNotice>,
    ) -> Result<KeptNotice>;

    /// What the chat was last told of this notice's sprint, kept on the notice itself so
    /// that it needs no ledger (ServiceNow: the newest marked work note on the umbrella
    /// change; Jira: an issue property).
    async fn last_told(&self, kept: &KeptNotice) -> Result<Option<String>>;

    /// Keeps `body` as what the chat was last told, on `kept`.
    async fn keep_told(&self, kept: &KeptNotice, body: &str) -> Result<()>;
}

/// Opens the backend the settings name, with the config (and secrets) the settings
/// resolved for it (no backend reads the environment itself); for a dry run, behind the
/// one guard that refuses its writes ([`DryRun`]).
pub fn connect(settings: &crate::settings::Settings) -> Result<Box<dyn Backend>> {
    connect_to(settings, settings.backend_config()?)
}

/// Opens the backend `config` describes, with the rest of `settings` (dry run, calendar):
/// [`connect`] for the settings' own backend; `serve` for the ledger that keeps its waits
/// beside an ITSM ([`crate::settings::Settings::serve_state_config`]).
pub fn connect_to(
    settings: &crate::settings::Settings,
    config: crate::settings::BackendConfig,
) -> Result<Box<dyn Backend>> {
    use crate::settings::BackendConfig;
    let backend: Box<dyn Backend> = match config {
        // Read-only for a dry run so that it does not create the ledger file either.
        BackendConfig::Local(config) => Box::new(
            local::Ledger::open(&config.path, settings.dry_run)?
                .with_calendar(settings.calendar)
                .with_pause_in_tx(settings.pause_in_tx()),
        ),
        BackendConfig::Postgres(config) => Box::new(
            local::Ledger::postgres(&config.url, settings.dry_run, config.timeouts)?
                .with_calendar(settings.calendar)
                .with_pause_in_tx(config.pause_in_tx),
        ),
        BackendConfig::ServiceNow(config) => {
            Box::new(servicenow::ServiceNow::connect(&config, settings)?)
        }
        BackendConfig::Jira(config) => Box::new(jira::Jira::connect(&config, settings)?),
    };
    Ok(if settings.dry_run {
        Box::new(DryRun::new(backend))
    } else {
        backend
    })
}

/// What a ticket writer did with a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Noted {
    /// The note was written.
    Written,
    /// A note with the milestone's marker was there already: nothing written.
    Already,
    /// No such ticket, or none the account may see.
    Missing,
}

/// Tickets that follow the work (`sync`): incidents, problems, requests, changes and issues
/// the work references get one note per milestone. Offered by the ITSMs, whatever the
/// backend keeping the change records.
#[async_trait]
pub trait Tickets: Send + Sync {
    /// Writes the note `lines` on ticket `id`, unless a note holding `marker` (the last
    /// line) is there already; with `customer_visible`, also (or only, when the internal
    /// note is there) where the ticket's customers see it. Reads the notes back after
    /// writing: when two runs raced and both wrote, every copy but the oldest is deleted,
    /// by whichever run sees them, so one note stays.
    async fn note_once(
        &self,
        id: &str,
        lines: &[String],
        marker: &str,
        customer_visible: bool,
    ) -> Result<Noted>;
}

/// The ITSMs `sync` writes on: ServiceNow numbers go to ServiceNow, Jira keys to Jira.
#[derive(Default)]
pub struct Desks {
    pub servicenow: Option<Box<dyn Tickets>>,
    pub jira: Option<Box<dyn Tickets>>,
}

/// Connects the ITSMs the settings configure for tickets (see
/// [`crate::settings::Settings::ticket_configs`]). Nothing is sent until the first note.
pub fn desks(settings: &crate::settings::Settings) -> Result<Desks> {
    let configs = settings.ticket_configs()?;
    Ok(Desks {
        servicenow: match configs.servicenow {
            Some(c) => Some(Box::new(servicenow::ServiceNow::connect(&c, settings)?)),
            None => None,
        },
        jira: match configs.jira {
            Some(c) => Some(Box::new(jira::Jira::connect(&c, settings)?)),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::Lookup;
    use crate::domain::CorrelationKey;

    #[derive(Debug, PartialEq)]
    struct Row(u32);

    #[test]
    fn a_lookup_hands_back_what_its_backend_made_for_its_own_key_only() {
        let key = CorrelationKey::new("acme/api", "production", "abc123");
        let other = CorrelationKey::new("acme/api", "production", "def456");
        let found = Lookup::of(&key, None).carrying(Row(7));
        assert_eq!(found.found::<Row>(&key), Some(&Row(7)));
        // Another key's open looks again; another backend's data is not read as its own.
        assert_eq!(found.found::<Row>(&other), None);
        assert_eq!(found.found::<String>(&key), None);
        assert_eq!(found.carried::<Row>(), Some(&Row(7)));
        assert_eq!(Lookup::of(&key, None).found::<Row>(&key), None);
        assert_eq!(found.key(), key.to_string());
        assert!(format!("{found:?}").contains("carries: true"));
    }
}
