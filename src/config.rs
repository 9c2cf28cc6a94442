//! The `.changegate.toml` schema. Every table denies unknown keys, so a typo is an error
//! that names the key and its line instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::Mode;
use crate::domain::policy::{EvidenceRequirements, Freeze, PolicyParams, RiskLimits};

/// Which system keeps the change records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The embedded SQLite ledger.
    #[default]
    Local,
    /// The ledger on PostgreSQL, at `CHANGEGATE_DATABASE_URL`.
    Postgres,
    Servicenow,
    Jira,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Postgres => "postgres",
            BackendKind::Servicenow => "servicenow",
            BackendKind::Jira => "jira",
        }
    }
}

/// A duration written the human way: `30s`, `4h`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?}: {e} (e.g. \"30s\", \"4h\")"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

#[cfg(test)]
impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as \"30s\", \"15m\", \"4h\" or \"1h 30m\".",
        })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct BackendSection {
    /// `local` (default), `postgres`, `servicenow` or `jira`.
    pub kind: Option<BackendKind>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSection {
    /// Path of the embedded SQLite ledger (default `.changegate/ledger.db`).
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ServiceNowSection {
    /// Instance base URL, e.g. `https://example.service-now.com`.
    pub url: Option<String>,
    /// Name (or sys_id) of the standard change template used for pre-approved changes.
    pub standard_template: Option<String>,
    /// Assignment group written on every change (name or sys_id). Most instances require one
    /// before a normal change can move to Assess.
    pub assignment_group: Option<String>,
    /// `close_code` written when a deploy succeeded.
    pub close_code_success: String,
    /// `close_code` written when a deploy failed.
    pub close_code_failure: String,
    /// Extra fields written on every change the instance requires (e.g. `cmdb_ci`, `category`).
    pub fields: BTreeMap<String, String>,
}

impl Default for ServiceNowSection {
    fn default() -> Self {
        ServiceNowSection {
            url: None,
            standard_template: None,
            assignment_group: None,
            close_code_success: "successful".into(),
            close_code_failure: "unsuccessful".into(),
            fields: BTreeMap::new(),
        }
    }
}

/// Fields of a change request that changegate owns: `[servicenow.fields]` may not set them.
pub const SERVICENOW_RESERVED_FIELDS: &[&str] = &[
    "correlation_id",
    "correlation_display",
    "state",
    "type",
    "approval",
    "justification",
    "work_notes",
    "close_code",
    "close_notes",
    "work_start",
    "work_end",
];

/// Status names on the site's change workflow. Matched case-insensitively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct JiraStatuses {
    /// Where a change goes when the gate passes.
    pub implementing: String,
    /// Where a successful deploy closes the change.
    pub done: String,
    /// Where a failed deploy closes the change.
    pub failed: String,
    /// Where a cancelled deploy (or one whose gate never passed) closes the change.
    pub cancelled: String,
    /// The status a declined approval leaves the change in.
    pub declined: String,
    /// Where a change that needs approval is moved, when the workflow does not put it in its
    /// approval step by itself. Empty (default): left where the workflow put it.
    pub awaiting_approval: String,
}

impl Default for JiraStatuses {
    fn default() -> Self {
        JiraStatuses {
            implementing: "Implementing".into(),
            done: "Completed".into(),
            failed: "Failed".into(),
            cancelled: "Canceled".into(),
            declined: "Declined".into(),
            awaiting_approval: String::new(),
        }
    }
}

/// Resolutions set when a closing transition's screen asks for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct JiraResolutions {
    /// The resolution of a change closed after a successful deploy.
    pub done: String,
    /// The resolution of a change closed after a failed deploy.
    pub failed: String,
    /// The resolution of a cancelled change.
    pub cancelled: String,
}

impl Default for JiraResolutions {
    fn default() -> Self {
        JiraResolutions {
            done: "Done".into(),
            failed: "Done".into(),
            cancelled: "Won't Do".into(),
        }
    }
}

/// The option values written to the change type field (`[jira.fields] change_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct JiraChangeTypes {
    /// The change type of a pre-approved change.
    pub standard: String,
    /// The change type of a change that needs (or needed) a person.
    pub normal: String,
    /// The change type of a declared emergency.
    pub emergency: String,
}

impl Default for JiraChangeTypes {
    fn default() -> Self {
        JiraChangeTypes {
            standard: "Standard".into(),
            normal: "Normal".into(),
            emergency: "Emergency".into(),
        }
    }
}

/// The roles `[jira.fields]` may map to a site's field ids.
pub const JIRA_FIELD_ROLES: &[&str] = &["change_type", "correlation_key"];

/// The status roles `[jira.transitions]` may name a transition for.
pub const JIRA_TRANSITION_ROLES: &[&str] = &[
    "implementing",
    "done",
    "failed",
    "cancelled",
    "awaiting_approval",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct JiraSection {
    /// Site URL, e.g. `https://example.atlassian.net`.
    pub url: Option<String>,
    /// Project key, e.g. `CHG`.
    pub project: Option<String>,
    /// Issue type name (or numeric id) of change issues.
    pub issue_type: String,
    /// JSM request type id, when changes are raised as requests (through the service desk).
    pub request_type: String,
    /// JSM service desk id, with `request_type`; empty: looked up from the project key.
    pub service_desk: String,
    pub statuses: JiraStatuses,
    /// Transition names by status role (`implementing`, `done`, `failed`, `cancelled`,
    /// `awaiting_approval`), for workflows whose transitions are not named after their
    /// target status. Without an entry the transition leading to the status is used.
    pub transitions: BTreeMap<String, String>,
    pub resolutions: JiraResolutions,
    /// Site-specific field ids by role: `change_type` (a select list such as JSM's
    /// "Change type") and `correlation_key` (a text field that shows the key verbatim).
    pub fields: BTreeMap<String, String>,
    pub change_types: JiraChangeTypes,
    /// Fields written verbatim on every new change issue, by field id, for sites that
    /// require more (e.g. `customfield_10100 = { value = "Low" }`).
    pub extra_fields: BTreeMap<String, serde_json::Value>,
    /// Decision and outcome comments are internal notes (JSM `sd.public.comment`), not
    /// shared with customers. Default true.
    pub internal_comments: bool,
    /// Issue types (names, or numeric ids) of incidents: `verify` counts the issues of these
    /// types linked to a change. Default `["Incident"]`.
    pub incident_types: Vec<String>,
}

impl Default for JiraSection {
    fn default() -> Self {
        JiraSection {
            url: None,
            project: None,
            issue_type: "Change".into(),
            request_type: String::new(),
            service_desk: String::new(),
            statuses: JiraStatuses::default(),
            transitions: BTreeMap::new(),
            resolutions: JiraResolutions::default(),
            fields: BTreeMap::new(),
            change_types: JiraChangeTypes::default(),
            extra_fields: BTreeMap::new(),
            internal_comments: true,
            incident_types: vec!["Incident".into()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct SprintSection {
    /// First day of a sprint (any sprint: the cadence runs both ways from it).
    pub start: NaiveDate,
    /// Days per sprint, 1 to 366.
    #[cfg_attr(test, schemars(range(min = 1, max = 366)))]
    pub length_days: u32,
}

impl Default for SprintSection {
    fn default() -> Self {
        SprintSection {
            // A Monday; with 14-day sprints every other Monday starts a sprint.
            start: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap_or_default(),
            length_days: 14,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSection {
    /// How long `gate` waits for a human decision; at most 30 days.
    pub timeout: HumanDuration,
    /// The longest pause between two polls (polling starts faster and backs off to this);
    /// more than zero, at most 1 hour.
    pub poll: HumanDuration,
    /// Whether a change's author is refused as its approver (default true). The author is
    /// the pull/merge request's author (forge login), else the commit's author (e-mail);
    /// with `true`, a change whose author is not known cannot be approved through
    /// `changegate approve`.
    pub separate_author: bool,
    /// The file name of the GitHub workflow (under `.github/workflows/`) that approves or
    /// rejects a change through the action's `command: approve` / `reject` on
    /// `workflow_dispatch`, e.g. `approve.yml`: a waiting gate names it, with the change,
    /// as the way to approve. Empty (default): the gate names the command instead.
    pub workflow: String,
}

impl Default for ApprovalSection {
    fn default() -> Self {
        ApprovalSection {
            timeout: HumanDuration(Duration::from_secs(3600)),
            poll: HumanDuration(Duration::from_secs(30)),
            separate_author: true,
            workflow: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    /// How long after a deploy incidents are still linked to it; at most 366 days.
    pub window: HumanDuration,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            window: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AnnotateSection {
    /// Annotate pull/merge requests when a token is available.
    pub enabled: bool,
    /// Make a failure to annotate an error (exit 2) instead of a warning.
    pub required: bool,
}

impl Default for AnnotateSection {
    fn default() -> Self {
        AnnotateSection {
            enabled: true,
            required: false,
        }
    }
}

/// Where a sprint's planned work is read (`[announce] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WorkSourceKind {
    /// A GitHub milestone of the repository: its issues and pull requests.
    GithubMilestone,
    /// A GitLab milestone of the project: its issues and merge requests.
    GitlabMilestone,
    /// A GitLab iteration (Premium) of the project's groups: its issues.
    GitlabIteration,
    /// A Jira Software sprint of `jira_board` (Agile REST API): its issues.
    JiraSprint,
}

impl WorkSourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkSourceKind::GithubMilestone => "github-milestone",
            WorkSourceKind::GitlabMilestone => "gitlab-milestone",
            WorkSourceKind::GitlabIteration => "gitlab-iteration",
            WorkSourceKind::JiraSprint => "jira-sprint",
        }
    }
}

/// Where `announce` publishes (`[announce] sinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum AnnounceSink {
    /// A sticky tracking issue on GitHub or GitLab.
    ForgeIssue,
    /// The chat webhook `CHANGEGATE_ANNOUNCE_WEBHOOK_URL` (Slack-compatible JSON).
    Chat,
    /// The ITSM: a ServiceNow umbrella change, or a Jira issue.
    Itsm,
}

/// `changegate announce`: the sprint's planned work, and where it is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceSection {
    /// Where the work comes from; default the platform's milestone (GitHub or GitLab).
    pub source: Option<WorkSourceKind>,
    /// The milestone, iteration or sprint title, `{n}` standing for the sprint's number
    /// (`"Sprint {n}"`); empty: the one whose due date (or dates) falls inside the sprint.
    pub milestone: String,
    /// The Jira Software board whose sprints are read (with `source = "jira-sprint"`).
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub jira_board: Option<u64>,
    /// Where the notice goes (default `["forge-issue"]`).
    pub sinks: Vec<AnnounceSink>,
    /// The Jira issue type of the notice with the `itsm` sink on Jira (default `Task`).
    pub jira_issue_type: String,
}

impl Default for AnnounceSection {
    fn default() -> Self {
        AnnounceSection {
            source: None,
            milestone: String::new(),
            jira_board: None,
            sinks: vec![AnnounceSink::ForgeIssue],
            jira_issue_type: "Task".to_string(),
        }
    }
}

/// Outbound HTTP: how long the run may spend on ITSM and forge calls, and to whom it may
/// speak in clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// The whole-run budget of the ITSM and forge calls, retries and backoff included, the
    /// approval wait apart (default `2m`, from 1s to 1h). When it is spent the run ends with
    /// exit 2.
    pub deadline: HumanDuration,
    /// The longest one request may take (default `60s`, from 1s to 10m); the approval wait
    /// never runs past `approval.timeout` plus this.
    pub timeout: HumanDuration,
    /// Allow plain `http://` to hosts other than this machine (default false: credentials
    /// would cross the network in clear).
    pub allow_insecure_http: bool,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            deadline: HumanDuration(crate::http::DEFAULT_DEADLINE),
            timeout: HumanDuration(crate::http::DEFAULT_REQUEST_TIMEOUT),
            allow_insecure_http: false,
        }
    }
}

/// Bounds of `[http] deadline`.
pub const HTTP_DEADLINE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
/// Bounds of `[http] timeout`.
pub const HTTP_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(600));

/// The whole `.changegate.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// The service deployed; default the repository name.
    pub service: Option<String>,
    /// `enforce` (default) or `observe`.
    pub mode: Option<Mode>,
    /// Default environment (default `production`).
    pub environment: Option<String>,
    pub backend: BackendSection,
    pub ledger: LedgerSection,
    pub servicenow: ServiceNowSection,
    pub jira: JiraSection,
    pub sprint: SprintSection,
    pub policy: PolicyParams,
    pub risk: RiskLimits,
    pub evidence: EvidenceRequirements,
    pub approval: ApprovalSection,
    pub verify: VerifySection,
    pub annotate: AnnotateSection,
    pub http: HttpSection,
    pub announce: AnnounceSection,
    pub sync: SyncSection,
    /// Freeze windows.
    #[serde(rename = "freeze")]
    pub freezes: Vec<Freeze>,
}

/// `[sync]`: tickets that follow the work (`changegate sync`, and inside `gate`, `record`
/// and `verify` when enabled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// Write the notes from `gate`, `record` and `verify` too (default false: only the
    /// `sync` command writes them).
    pub enabled: bool,
    /// Also write each note where the ticket's customers see it: a ServiceNow `comments`
    /// entry beside the work note, a public comment on a Jira Service Management request.
    pub customer_visible: bool,
    /// Prefixes of the ServiceNow numbers that are references (2 to 8 upper-case letters).
    pub servicenow_prefixes: Vec<String>,
    /// Jira projects whose issue keys are references.
    pub jira_projects: Vec<String>,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            enabled: false,
            customer_visible: false,
            servicenow_prefixes: ["INC", "PRB", "RITM", "CHG"].map(String::from).to_vec(),
            jira_projects: Vec::new(),
        }
    }
}

impl SyncSection {
    /// What counts as a reference.
    pub fn patterns(&self) -> crate::domain::tickets::TicketPatterns {
        crate::domain::tickets::TicketPatterns {
            servicenow_prefixes: self.servicenow_prefixes.clone(),
            jira_projects: self.jira_projects.clone(),
        }
    }
}

/// A config file that could not be used. The message names the file, the key and the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The io error is the source: `{:#}` prints it once, after this.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A `--set KEY=VALUE` that does not make a valid config: named by the argument, not by a
    /// line of a file the user never wrote.
    #[error("invalid --set {assignment:?}: {message}")]
    Set { assignment: String, message: String },
}

impl ConfigFile {
    /// Parses TOML text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let config: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: escape_controls(&describe_toml_error(&e, text)),
        })?;
        config.validate(text, path)?;
        Ok(config)
    }

    /// A config from a TOML table: a config file with `--set assignment` applied. Errors name
    /// the assignment.
    pub fn from_set(table: toml::Table, assignment: &str) -> Result<ConfigFile, ConfigError> {
        let set_error = |message: String| ConfigError::Set {
            assignment: escape_controls(assignment),
            message: escape_controls(&message),
        };
        let config: ConfigFile = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| set_error(e.message().trim().to_string()))?;
        config
            .validate("", Path::new("--set"))
            .map_err(|e| match e {
                ConfigError::Parse { message, .. } => set_error(message),
                other => other,
            })?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks that serde cannot express; errors name the key and, when found, its line.
    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let fail = |table: &str, key: &str, what: String| fail_at(text, path, table, key, 0, what);
        for (key, value) in [
            ("service", &self.service),
            ("environment", &self.environment),
        ] {
            if let Some(name) = value
                && let Err(why) = crate::domain::change::check_name(name)
            {
                return fail("", key, format!("{name:?} is not a usable name: {why}"));
            }
        }
        let pattern = self.announce.milestone.replace("{n}", "");
        if pattern.contains('{') || pattern.contains('}') {
            return fail(
                "announce",
                "milestone",
                format!(
                    "{:?}: the only placeholder is {{n}} (the sprint's number)",
                    self.announce.milestone
                ),
            );
        }
        if self.announce.source == Some(WorkSourceKind::JiraSprint)
            && self.announce.jira_board.is_none()
        {
            return fail(
                "announce",
                "source",
                "\"jira-sprint\" needs `jira_board`, the board whose sprints are read".to_string(),
            );
        }
        let workflow = &self.approval.workflow;
        let workflow_ok = workflow.is_empty()
            || ((workflow.ends_with(".yml") || workflow.ends_with(".yaml"))
                && workflow
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
        if !workflow_ok {
            return fail(
                "approval",
                "workflow",
                format!(
                    "{workflow:?} is not a workflow file name: give the file under \
                     .github/workflows, e.g. \"approve.yml\""
                ),
            );
        }
        let rate = self.policy.min_success_rate;
        if !(0.0..=1.0).contains(&rate) {
            return fail(
                "policy",
                "min_success_rate",
                format!("must be between 0 and 1, got {rate}"),
            );
        }
        let backoff = self.policy.allowance.backoff;
        if !(0.0..=1.0).contains(&backoff) {
            return fail(
                "policy.allowance",
                "backoff",
                format!("must be between 0 and 1, got {backoff}"),
            );
        }
        let allowance = &self.policy.allowance;
        for (table, key, value, min, max) in [
            (
                "sprint",
                "length_days",
                self.sprint.length_days,
                1,
                bounds::SPRINT_DAYS,
            ),
            ("policy", "window", self.policy.window, 1, bounds::COUNT),
            (
                "policy",
                "min_history",
                self.policy.min_history,
                0,
                bounds::COUNT,
            ),
            (
                "policy.allowance",
                "initial",
                allowance.initial,
                0,
                bounds::COUNT,
            ),
            ("policy.allowance", "step", allowance.step, 0, bounds::COUNT),
            ("policy.allowance", "max", allowance.max, 0, bounds::COUNT),
            (
                "policy.allowance",
                "floor",
                allowance.floor,
                0,
                bounds::COUNT,
            ),
            (
                "policy.allowance",
                "min_changes",
                allowance.min_changes,
                0,
                bounds::COUNT,
            ),
            (
                "policy.allowance",
                "lookback_sprints",
                allowance.lookback_sprints,
                0,
                bounds::LOOKBACK_SPRINTS,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return fail(
                    table,
                    key,
                    format!("must be between {min} and {max}, got {value}"),
                );
            }
        }
        if allowance.floor > allowance.max {
            return fail(
                "policy.allowance",
                "floor",
                "must not be above `max`".into(),
            );
        }
        for (table, key, value, min, max) in [
            (
                "approval",
                "timeout",
                self.approval.timeout.0,
                Duration::ZERO,
                bounds::APPROVAL_TIMEOUT,
            ),
            (
                "approval",
                "poll",
                self.approval.poll.0,
                Duration::from_millis(1),
                bounds::APPROVAL_POLL,
            ),
            (
                "verify",
                "window",
                self.verify.window.0,
                Duration::ZERO,
                bounds::VERIFY_WINDOW,
            ),
        ] {
            if !(min..=max).contains(&value) {
                let range = if min.is_zero() {
                    format!("at most {}", humantime::format_duration(max))
                } else {
                    format!(
                        "more than zero and at most {}",
                        humantime::format_duration(max)
                    )
                };
                return fail(
                    table,
                    key,
                    format!("must be {range}, got {}", humantime::format_duration(value)),
                );
            }
        }
        for pattern in &self.risk.sensitive_paths {
            if let Err(why) = crate::domain::policy::sensitive_globs(pattern) {
                return fail(
                    "risk",
                    "sensitive_paths",
                    format!("pattern {pattern:?} {why}; see docs/configuration.md"),
                );
            }
        }
        for (i, f) in self.freezes.iter().enumerate() {
            if f.to <= f.from {
                return fail_at(
                    text,
                    path,
                    "freeze",
                    "to",
                    i,
                    format!("of freeze {:?} must be after `from`", f.reason),
                );
            }
        }
        if let Some(key) = self
            .servicenow
            .fields
            .keys()
            .find(|k| SERVICENOW_RESERVED_FIELDS.contains(&k.as_str()))
        {
            return fail(
                "servicenow.fields",
                key,
                "is written by changegate itself and cannot be set in [servicenow.fields]".into(),
            );
        }
        for prefix in &self.sync.servicenow_prefixes {
            if let Err(why) = crate::domain::tickets::check_prefix(prefix) {
                return fail(
                    "sync",
                    "servicenow_prefixes",
                    format!("holds {prefix:?}, which {why}"),
                );
            }
        }
        for project in &self.sync.jira_projects {
            if let Err(why) = crate::domain::tickets::check_project(project) {
                return fail(
                    "sync",
                    "jira_projects",
                    format!("holds {project:?}, which {why}"),
                );
            }
        }
        for (key, value) in [
            ("close_code_success", &self.servicenow.close_code_success),
            ("close_code_failure", &self.servicenow.close_code_failure),
        ] {
            if value.trim().is_empty() {
                return fail("servicenow", key, "must not be empty".into());
            }
        }
        for (key, value, (low, high)) in [
            ("deadline", self.http.deadline, HTTP_DEADLINE_RANGE),
            ("timeout", self.http.timeout, HTTP_TIMEOUT_RANGE),
        ] {
            if value.0 < low || value.0 > high {
                // `timeout` is also a key of [approval]: look for it in [http] only.
                let line = line_of_key_in(text, "http", key)
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "{line}`{key}` of [http] must be from {} to {}, got {value}",
                        humantime::format_duration(low),
                        humantime::format_duration(high)
                    ),
                });
            }
        }
        for role in self.jira.fields.keys() {
            if !JIRA_FIELD_ROLES.contains(&role.as_str()) {
                return fail(
                    "jira.fields",
                    role,
                    format!(
                        "is not a [jira.fields] role (known: {})",
                        JIRA_FIELD_ROLES.join(", ")
                    ),
                );
            }
        }
        for role in self.jira.transitions.keys() {
            if !JIRA_TRANSITION_ROLES.contains(&role.as_str()) {
                return fail(
                    "jira.transitions",
                    role,
                    format!(
                        "is not a [jira.transitions] role (known: {})",
                        JIRA_TRANSITION_ROLES.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}

/// The bounds every number and duration of the file is checked against when it is loaded.
/// They are far above any sensible value and far below anything that overflows the date and
/// sprint arithmetic downstream (a sprint index times its length in seconds, a verification
/// cutoff as a calendar time).
pub mod bounds {
    use std::time::Duration;

    /// `sprint.length_days`: at most a year.
    pub const SPRINT_DAYS: u32 = 366;
    /// `policy.window`, `policy.min_history` and the `policy.allowance` counts.
    pub const COUNT: u32 = 10_000;
    /// `policy.allowance.lookback_sprints`: ten years of weekly sprints.
    pub const LOOKBACK_SPRINTS: u32 = 520;
    /// `approval.timeout`: 30 days, longer than any CI job may run.
    pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);
    /// `approval.poll`: at most an hour between two polls.
    pub const APPROVAL_POLL: Duration = Duration::from_secs(3_600);
    /// `verify.window`: at most a year.
    pub const VERIFY_WINDOW: Duration = Duration::from_secs(366 * 86_400);
}

/// A validation error at `table.key`, with the line it is set on when it can be found
/// (`nth`: which `[[table]]` of an array of tables).
fn fail_at(
    text: &str,
    path: &Path,
    table: &str,
    key: &str,
    nth: usize,
    what: String,
) -> Result<(), ConfigError> {
    let line = line_of_key(text, table, key, nth)
        .map(|l| format!("line {l}: "))
        .unwrap_or_default();
    let dotted = if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    };
    Err(ConfigError::Parse {
        path: path.to_path_buf(),
        message: escape_controls(&format!("{line}`{dotted}` {what}")),
    })
}

/// Control characters (a NUL byte, a newline, an escape sequence) written as escapes: a
/// config error echoes the file's text, and that must reach the terminal or the CI log as
/// one readable line that cannot start a line of its own.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// How much of a source line an error quotes.
const QUOTE_CHARS: usize = 120;

/// toml's own message already carries `line N, column M` and the offending key; we keep it
/// and fold it onto one readable paragraph.
fn describe_toml_error(e: &toml::de::Error, text: &str) -> String {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim().to_string();
    match line {
        Some(line) => {
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            // A hostile line can be megabytes long: quote enough of it to find it.
            let quoted = match source_line.char_indices().nth(QUOTE_CHARS) {
                Some((end, _)) => format!("{}…", &source_line[..end]),
                None => source_line.to_string(),
            };
            format!("line {line}: {message} (in `{quoted}`)")
        }
        None => message,
    }
}

/// The line on which `table.key` is assigned (under the `nth` `[[table]]` header for an
/// array of tables), for errors found after parsing. Handles `[table]` headers and dotted keys;
/// a value inside an inline table has no line of its own and gives `None`.
fn line_of_key(text: &str, table: &str, key: &str, nth: usize) -> Option<usize> {
    let mut current = String::new();
    let mut seen = 0usize;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(header) = l.strip_prefix('[') {
            let array = header.starts_with('[');
            let name: String = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .split('.')
                .map(|p| p.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join(".");
            if array && name == table {
                seen += 1;
            }
            current = name;
            continue;
        }
        let Some((lhs, _)) = l.split_once('=') else {
            continue;
        };
        let lhs: Vec<&str> = lhs.split('.').map(|p| p.trim().trim_matches('"')).collect();
        let full = if current.is_empty() {
            lhs.join(".")
        } else {
            format!("{current}.{}", lhs.join("."))
        };
        let in_nth = seen == nth + 1 || !text.contains(&format!("[[{table}]]"));
        let wanted = if table.is_empty() {
            key.to_string()
        } else {
            format!("{table}.{key}")
        };
        if full == wanted && in_nth {
            return Some(i + 1);
        }
    }
    None
}

/// The line on which `key` is assigned inside `[table]`.
fn line_of_key_in(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.starts_with('[') {
            inside = l.split('#').next().is_some_and(|h| h.trim() == header);
            continue;
        }
        if inside
            && l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// The JSON schema of the config file. It is generated from the same types that parse it
/// (a test, `the_committed_schema_is_the_generated_one`, fails when the two differ) and
/// compiled in as text, so the binary carries no schema generator.
pub const JSON_SCHEMA: &str = include_str!("../docs/reference/config.schema.json");

/// [`JSON_SCHEMA`], parsed.
pub fn json_schema() -> serde_json::Value {
    serde_json::from_str(JSON_SCHEMA).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as the config types generate it, in the committed file's layout.
    fn generated_schema() -> String {
        let value = serde_json::to_value(schemars::schema_for!(ConfigFile)).unwrap();
        serde_json::to_string_pretty(&value).unwrap() + "\n"
    }

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        assert!(
            JSON_SCHEMA == generated_schema(),
            "docs/reference/config.schema.json is stale: run \
             `cargo test --lib config::tests::write_the_schema -- --ignored`"
        );
    }

    /// Writes docs/reference/config.schema.json from the config types.
    #[test]
    #[ignore = "writes the committed schema; run by hand after changing the config types"]
    fn write_the_schema() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference/config.schema.json");
        std::fs::write(path, generated_schema()).unwrap();
    }

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(text, Path::new(".changegate.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, ConfigFile::default());
        assert_eq!(c.approval.timeout.0, Duration::from_secs(3600));
    }

    #[test]
    fn product_example_parses() {
        let text = r#"
service = "payments-api"
mode = "enforce"
[backend]
kind = "servicenow"
[servicenow]
url = "https://example.service-now.com"
standard_template = "Pre-approved application deploy"
assignment_group = "Payments"
[sprint]
start = "2026-01-05"
length_days = 14
[policy]
min_history = 5
window = 20
min_success_rate = 0.9
[policy.allowance]
initial = 2
step = 2
max = 20
backoff = 0.5
floor = 0
min_changes = 3
[risk]
max_lines_changed = 800
sensitive_paths = ["migrations/**", "infra/**"]
[approval]
timeout = "4h"
poll = "30s"
[verify]
window = "24h"
[[freeze]]
from = "2026-12-21T00:00:00Z"
to   = "2027-01-04T00:00:00Z"
reason = "year-end freeze"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.backend.kind, Some(BackendKind::Servicenow));
        assert_eq!(c.approval.timeout.0, Duration::from_secs(4 * 3600));
        assert_eq!(c.freezes.len(), 1);
    }

    #[test]
    fn announce_block_as_documented() {
        let c = parse(
            "[announce]\nsource = \"jira-sprint\"\nmilestone = \"Sprint {n}\"\njira_board = 12\n\
             sinks = [\"forge-issue\", \"chat\", \"itsm\"]\n",
        )
        .unwrap();
        assert_eq!(c.announce.source, Some(WorkSourceKind::JiraSprint));
        assert_eq!(c.announce.milestone, "Sprint {n}");
        assert_eq!(c.announce.jira_board, Some(12));
        assert_eq!(c.announce.sinks.len(), 3);
        assert_eq!(c.announce.jira_issue_type, "Task");
        let d = parse("").unwrap();
        assert_eq!(d.announce.source, None);
        assert_eq!(d.announce.sinks, vec![AnnounceSink::ForgeIssue]);
    }

    #[test]
    fn announce_mistakes_name_key_and_line() {
        for (text, key, line) in [
            (
                "[announce]\nmilestone = \"Sprint {number}\"\n",
                "milestone",
                "line 2",
            ),
            ("[announce]\nsource = \"jira-sprint\"\n", "source", "line 2"),
            ("[announce]\n\nsource = \"trello\"\n", "source", "line 3"),
            ("[announce]\nsinks = [\"email\"]\n", "sinks", "line 2"),
            (
                "[announce]\nwebhook_url = \"https://x\"\n",
                "webhook_url",
                "line 2",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(key) && err.contains(line), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("service = \"x\"\n[policy]\nmin_sucess_rate = 0.9\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("min_sucess_rate"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse("[policy]\nwindow = \"twenty\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("window"), "{err}");
    }

    #[test]
    fn out_of_range_names_key_and_line() {
        let err = parse("[policy]\nmin_success_rate = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("min_success_rate"),
            "{err}"
        );
    }

    #[test]
    fn jira_example_parses_with_defaults() {
        let text = r#"
[jira]
url = "https://example.atlassian.net"
project = "CHG"
issue_type = "Change"
request_type = ""
[jira.statuses]
implementing = "Implementing"
done = "Completed"
failed = "Failed"
cancelled = "Canceled"
declined = "Declined"
[jira.fields]
change_type = "customfield_10005"
[jira.transitions]
implementing = "Start change"
[jira.extra_fields]
customfield_10100 = { value = "Low" }
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.jira.project.as_deref(), Some("CHG"));
        assert_eq!(
            c.jira.fields.get("change_type").map(String::as_str),
            Some("customfield_10005")
        );
        assert_eq!(
            c.jira.extra_fields["customfield_10100"],
            serde_json::json!({"value": "Low"})
        );
        assert_eq!(c.jira.resolutions.done, "Done");
        assert!(c.jira.internal_comments);
        assert!(c.jira.statuses.awaiting_approval.is_empty());
    }

    #[test]
    fn jira_unknown_roles_are_errors() {
        let err = parse("[jira.fields]\nchange_typ = \"customfield_1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("change_typ"),
            "{err}"
        );
        let err = parse("[jira.transitions]\ndone_ = \"Close\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("done_"), "{err}");
    }

    #[test]
    fn servicenow_fields_cannot_take_over_changegate_fields() {
        let err = parse("[servicenow.fields]\ncategory = \"Software\"\ncorrelation_id = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("correlation_id"),
            "{err}"
        );
        let ok = parse("[servicenow.fields]\ncategory = \"Software\"\n").unwrap();
        assert_eq!(ok.servicenow.close_code_success, "successful");
    }

    #[test]
    fn service_and_environment_names_are_checked() {
        let err = parse("mode = \"enforce\"\nservice = \"a:b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("`service`"), "{err}");
        let err = parse("environment = \"\"\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("`environment`"),
            "{err}"
        );
        assert!(parse("service = \"billing\"\nenvironment = \"eu/prod\"\n").is_ok());
    }

    #[test]
    fn risk_when_unknown_is_fail_unless_set_to_pass() {
        use crate::domain::policy::WhenUnknown;
        assert_eq!(parse("").unwrap().risk.when_unknown, WhenUnknown::Fail);
        let c = parse("[risk]\nwhen_unknown = \"pass\"\n").unwrap();
        assert_eq!(c.risk.when_unknown, WhenUnknown::Pass);
        let err = parse("[risk]\nwhen_unknown = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("maybe"), "{err}");
        assert!(json_schema().to_string().contains("when_unknown"));
    }

    #[test]
    fn approval_separates_the_author_by_default_and_names_a_workflow_file() {
        let c = parse("").unwrap();
        assert!(c.approval.separate_author);
        assert_eq!(c.approval.workflow, "");
        let c = parse("[approval]\nseparate_author = false\nworkflow = \"approve.yml\"\n").unwrap();
        assert!(!c.approval.separate_author);
        assert_eq!(c.approval.workflow, "approve.yml");
        for bad in ["../x.yml", "approve", "a b.yml", "$(id).yml"] {
            let err = parse(&format!("[approval]\nworkflow = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("line 2") && err.contains("approval.workflow"),
                "{bad}: {err}"
            );
        }
        let err = parse("[approval]\nseparate_author = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("separate_author"),
            "{err}"
        );
        let schema = json_schema().to_string();
        assert!(schema.contains("separate_author") && schema.contains("workflow"));
    }

    #[test]
    fn http_section_defaults_and_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.http.deadline.0, Duration::from_secs(120));
        assert_eq!(c.http.timeout.0, Duration::from_secs(60));
        assert!(!c.http.allow_insecure_http);
        let c = parse("[http]\ndeadline = \"3s\"\ntimeout = \"1s\"\nallow_insecure_http = true\n")
            .unwrap();
        assert_eq!(c.http.deadline.0, Duration::from_secs(3));
        assert!(c.http.allow_insecure_http);
        let err = parse("[http]\ndeadline = \"2h\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("deadline"), "{err}");
        let err = parse("[approval]\ntimeout = \"1h\"\n[http]\ntimeout = \"500ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") && err.contains("timeout"), "{err}");
        let err = parse("[http]\ndeadlin = \"1m\"\n").unwrap_err().to_string();
        assert!(err.contains("deadlin"), "{err}");
    }

    #[test]
    fn numbers_and_durations_are_bounded_naming_key_and_line() {
        for (text, line, key) in [
            (
                "[policy.allowance]\nlookback_sprints = 10000000\n",
                "line 2",
                "policy.allowance.lookback_sprints",
            ),
            (
                "[sprint]\nlength_days = 4294967295\n",
                "line 2",
                "sprint.length_days",
            ),
            (
                "[sprint]\nlength_days = 0\n",
                "line 2",
                "sprint.length_days",
            ),
            (
                "[policy]\nwindow = 20\n[verify]\nwindow = \"500000000years\"\n",
                "line 4",
                "verify.window",
            ),
            (
                "[approval]\ntimeout = \"31days\"\n",
                "line 2",
                "approval.timeout",
            ),
            ("[approval]\npoll = \"0s\"\n", "line 2", "approval.poll"),
            ("[approval]\npoll = \"2h\"\n", "line 2", "approval.poll"),
            ("policy.window = 10001\n", "line 1", "policy.window"),
            (
                "[policy]\nallowance.max = 10001\n",
                "line 2",
                "policy.allowance.max",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(line) && err.contains(key), "{text:?}: {err}");
        }
        let ok = parse(
            "[sprint]\nlength_days = 366\n[policy.allowance]\nlookback_sprints = 520\n\
             [approval]\ntimeout = \"30days\"\npoll = \"1h\"\n[verify]\nwindow = \"366days\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn schema_states_the_bounds_validation_enforces() {
        let schema = json_schema();
        let max = |pointer: &str| schema.pointer(pointer).and_then(serde_json::Value::as_u64);
        let defs = |name: &str, field: &str| format!("/$defs/{name}/properties/{field}/maximum");
        assert_eq!(
            max(&defs("SprintSection", "length_days")),
            Some(u64::from(bounds::SPRINT_DAYS))
        );
        assert_eq!(
            max(&defs("AllowanceParams", "lookback_sprints")),
            Some(u64::from(bounds::LOOKBACK_SPRINTS))
        );
        for field in ["initial", "step", "max", "floor", "min_changes"] {
            assert_eq!(
                max(&defs("AllowanceParams", field)),
                Some(u64::from(bounds::COUNT)),
                "{field}"
            );
        }
        for field in ["window", "min_history"] {
            assert_eq!(
                max(&defs("PolicyParams", field)),
                Some(u64::from(bounds::COUNT)),
                "{field}"
            );
        }
    }

    #[test]
    fn freeze_error_points_at_the_freeze_that_is_wrong() {
        let text = "[[freeze]]\nfrom = \"2026-01-01T00:00:00Z\"\nto = \"2026-01-02T00:00:00Z\"\n\
                    [[freeze]]\nfrom = \"2026-02-02T00:00:00Z\"\nto = \"2026-02-01T00:00:00Z\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("line 6") && err.contains("freeze.to"), "{err}");
    }

    #[test]
    fn control_characters_in_errors_are_escaped() {
        let err = parse("service = \"a\0b\"\n[policy]\nwindw\0x = 3\n")
            .unwrap_err()
            .to_string();
        assert!(!err.chars().any(char::is_control), "{err:?}");
        let err = parse("[servicenow.fields]\n\"state\u{1b}[2J\" = \"x\"\n")
            .map(|c| format!("{:?}", c.servicenow.fields))
            .unwrap_or_else(|e| e.to_string());
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert_eq!(escape_controls("a\0b\nc"), "a\\u{0}b\\nc");
    }

    #[test]
    fn sync_patterns_are_checked_and_errors_name_key_and_line() {
        let c = parse("[sync]\nenabled = true\njira_projects = [\"OPS\"]\n").unwrap();
        assert!(c.sync.enabled && !c.sync.customer_visible);
        assert_eq!(c.sync.servicenow_prefixes, ["INC", "PRB", "RITM", "CHG"]);
        let err = parse("[sync]\nenabled = true\njira_projects = [\"ops\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("sync.jira_projects") && err.contains("\"ops\""),
            "{err}"
        );
        let err = parse("[sync]\nservicenow_prefixes = [\"INC\", \"I^\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("sync.servicenow_prefixes"),
            "{err}"
        );
        let err = parse("[sync]\nenable = true\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("enable"), "{err}");
    }

    #[test]
    fn schema_lists_sections() {
        let s = json_schema().to_string();
        for key in [
            "policy",
            "allowance",
            "freeze",
            "servicenow",
            "sensitive_paths",
            "allow_insecure_http",
            "customer_visible",
        ] {
            assert!(s.contains(key), "{key}");
        }
    }
}
