//! Jira Service Management: change issues, JSM approvals, workflow transitions by name, and
//! history from JQL.
//!
//! How a change is kept in Jira:
//! - one issue of the configured issue type (or one JSM request of the configured request
//!   type) per correlation key;
//! - the correlation key verbatim, the decision with every rule, and the deploy's times and
//!   outcome in the issue property [`PROPERTY`] (JSON, read back with every issue read);
//! - labels that JQL can match exactly: [`labels::MARK`], one per service and environment
//!   ([`labels::service`]), one per change ([`labels::key`]), the decision kind, the day it
//!   was decided (UTC) and the outcome. Labels hold no ':' and no '/', so the service part is
//!   a hash; the property's verbatim key is compared on every lookup, so lookups are exact.
//!
//! Jira has no unique constraint: two runs that both find nothing both create. After every
//! create the run searches again with read-after-write consistency for its own issue; the
//! lowest issue id wins, and the other run retires its issue as a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HistoryQuery, Itsm, decision_stands};
use crate::config::{BackendKind, JiraSection};
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, History, Mode, Outcome,
    SprintCalendar, SprintTally, State,
};
use crate::env;
use crate::http::{HttpClient, HttpError};

/// The issue property holding the key, the decision and the deploy's times and outcome.
pub const PROPERTY: &str = "changegate.change";

/// Issues per page of a tally search, and how many pages before counting per sprint.
const PAGE: u32 = 100;
const TALLY_PAGES: usize = 4;
/// Pages read for the recent outcomes (`policy.window` of them) at most.
const RECENT_PAGES: usize = 10;

/// The labels changegate writes. All are `[a-z0-9-]`, so every Jira site accepts them and
/// `labels = "…"` matches them exactly.
pub mod labels {
    use chrono::NaiveDate;

    use crate::domain::{DecisionKind, Outcome};

    /// On every change issue changegate opened.
    pub const MARK: &str = "changegate";
    /// On an issue a parallel run created for a change that already had one.
    pub const DUPLICATE: &str = "changegate-duplicate";
    pub const EMERGENCY: &str = "changegate-emergency";
    pub const OBSERVE: &str = "changegate-observe";
    const DAY: &str = "changegate-day-";

    /// FNV-1a, 64 bits: stable across versions and platforms.
    fn fnv1a64(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// One label per service and environment: the history's scope.
    pub fn service(service_id: &str, environment: &str) -> String {
        format!(
            "changegate-svc-{:016x}",
            fnv1a64(&format!("{service_id}:{environment}"))
        )
    }

    /// One label per change: service, environment and commit.
    pub fn key(service_id: &str, environment: &str, sha: &str) -> String {
        let sha: String = sha
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(200)
            .collect();
        format!("{}-{sha}", service(service_id, environment))
    }

    pub fn kind(kind: DecisionKind) -> String {
        format!("changegate-{}", kind.as_str())
    }

    pub const KINDS: [DecisionKind; 3] = [
        DecisionKind::PreApproved,
        DecisionKind::NeedsApproval,
        DecisionKind::Blocked,
    ];

    pub fn outcome(outcome: Outcome) -> String {
        format!("changegate-{}", outcome.as_str())
    }

    /// The day (UTC) the change was decided: sprints start at midnight UTC, so the day
    /// places a change in its sprint exactly, whatever the Jira user's time zone.
    pub fn day(date: NaiveDate) -> String {
        format!("{DAY}{}", date.format("%Y%m%d"))
    }

    pub fn parse_day(label: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(label.strip_prefix(DAY)?, "%Y%m%d").ok()
    }

    pub fn is_day(label: &str) -> bool {
        label.starts_with(DAY)
    }
}

/// What the issue property holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The correlation key, verbatim.
    pub key: String,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub decision: Option<Decision>,
    #[serde(default)]
    pub opened_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deployed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

impl Stored {
    fn of(record: &ChangeRecord) -> Stored {
        Stored {
            key: record.key.clone(),
            commit: record.key.rsplit(':').next().map(str::to_string),
            decision: record.decision.clone(),
            opened_at: record.opened_at,
            decided_at: record.decided_at,
            deployed_at: record.deployed_at,
            outcome: record.outcome,
        }
    }
}

/// A transition offered on an issue.
#[derive(Debug, Clone)]
struct Transition {
    id: String,
    name: String,
    to: String,
    fields: serde_json::Map<String, Value>,
}

/// What changegate reads of an issue.
#[derive(Debug, Clone)]
struct IssueView {
    id: u64,
    key: String,
    status: String,
    category: String,
    labels: Vec<String>,
    created: Option<DateTime<Utc>>,
    stored: Option<Stored>,
    transitions: Vec<Transition>,
}

fn parse_jira_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl IssueView {
    fn parse(v: &Value) -> Result<IssueView> {
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Jira returned an issue without a key"))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let fields = v.get("fields").cloned().unwrap_or(Value::Null);
        let stored = v
            .get("properties")
            .and_then(|p| p.get(PROPERTY))
            .filter(|p| !p.is_null())
            .and_then(|p| match serde_json::from_value::<Stored>(p.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("{key}: the {PROPERTY} issue property cannot be read ({e}); using the labels");
                    None
                }
            });
        let transitions = v
            .get("transitions")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| Transition {
                        id: match t.get("id") {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        },
                        name: str_at(t, &["name"]).unwrap_or_default().to_string(),
                        to: str_at(t, &["to", "name"]).unwrap_or_default().to_string(),
                        fields: t
                            .get("fields")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(IssueView {
            id,
            key: key.to_string(),
            status: str_at(&fields, &["status", "name"])
                .unwrap_or_default()
                .to_string(),
            category: str_at(&fields, &["status", "statusCategory", "key"])
                .unwrap_or_default()
                .to_string(),
            labels: fields
                .get("labels")
                .and_then(Value::as_array)
                .map(|ls| {
                    ls.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            created: str_at(&fields, &["created"]).and_then(parse_jira_time),
            stored,
            transitions,
        })
    }

    fn has(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }

    /// Opened by changegate (and not retired as a duplicate).
    fn is_change(&self) -> bool {
        (self.has(labels::MARK) || self.stored.is_some()) && !self.has(labels::DUPLICATE)
    }
}

/// Where the JSM approvals of a change stand.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Pending,
    Approved {
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
    Declined {
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
}

fn parse_approvals(v: &Value) -> Verdict {
    let approvals: Vec<&Value> = v
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names = |a: &Value, decision: &str| -> Vec<String> {
        a.get("approvers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|x| x.get("approverDecision").and_then(Value::as_str) == Some(decision))
                    .filter_map(|x| str_at(x, &["approver", "displayName"]).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let at = |a: &Value| {
        a.get("completedDate")
            .and_then(|d| d.get("epochMillis"))
            .and_then(Value::as_i64)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    };
    let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(", "));
    let decision = |a: &Value| {
        a.get("finalDecision")
            .and_then(Value::as_str)
            .unwrap_or("pending")
            .to_string()
    };
    if let Some(declined) = approvals.iter().find(|a| decision(a) == "declined") {
        // Whoever declined; should no approver be marked so, whoever answered.
        let mut by = names(declined, "declined");
        if by.is_empty() {
            by = names(declined, "approved");
        }
        return Verdict::Declined {
            by: join(by),
            at: at(declined),
        };
    }
    if !approvals.is_empty() && approvals.iter().all(|a| decision(a) == "approved") {
        let by: Vec<String> = approvals
            .iter()
            .flat_map(|a| names(a, "approved"))
            .collect();
        let at = approvals.iter().filter_map(|a| at(a)).max();
        return Verdict::Approved { by: join(by), at };
    }
    Verdict::Pending
}

/// Jira's own words from an error body: `errorMessages`, `errors` (field: message) and the
/// service desk's `errorMessage`, verbatim. Bodies that are not JSON are quoted unless they
/// are HTML pages.
pub fn jira_words(body: &str) -> String {
    let body = body.trim();
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = v.get("errorMessages").and_then(Value::as_array) {
            parts.extend(
                list.iter()
                    .filter_map(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(map) = v.get("errors").and_then(Value::as_object) {
            for (field, message) in map {
                let message = message
                    .as_str()
                    .map_or_else(|| message.to_string(), str::to_string);
                parts.push(format!("{field}: {message}"));
            }
        }
        if let Some(m) = v.get("errorMessage").and_then(Value::as_str) {
            parts.push(m.to_string());
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    if body.is_empty() || body.starts_with('<') {
        return String::new();
    }
    body.chars().take(300).collect()
}

/// Rich text in Atlassian Document Format, as `/rest/api/3` wants it. Text goes in text
/// nodes, never in markup, so untrusted text cannot format or link anything.
mod adf {
    use serde_json::{Value, json};

    pub fn doc(blocks: Vec<Value>) -> Value {
        json!({"type": "doc", "version": 1, "content": blocks})
    }

    pub fn text(text: &str) -> Value {
        json!({"type": "text", "text": text})
    }

    /// A link only for http(s) URLs; anything else stays text.
    pub fn link(url: &str) -> Value {
        if url.starts_with("https://") || url.starts_with("http://") {
            json!({"type": "text", "text": url, "marks": [{"type": "link", "attrs": {"href": url}}]})
        } else {
            text(url)
        }
    }

    pub fn para(nodes: Vec<Value>) -> Value {
        json!({"type": "paragraph", "content": nodes})
    }

    pub fn line(t: &str) -> Value {
        para(vec![text(t)])
    }

    pub fn labelled(label: &str, value: &str) -> Value {
        para(vec![
            json!({"type": "text", "text": label, "marks": [{"type": "strong"}]}),
            text(&format!(" {value}")),
        ])
    }

    pub fn bullets(items: &[String]) -> Value {
        json!({
            "type": "bulletList",
            "content": items.iter().map(|i| json!({"type": "listItem", "content": [line(i)]})).collect::<Vec<_>>(),
        })
    }
}

fn description(facts: &ChangeFacts) -> Value {
    let mut blocks = vec![adf::line(&format!(
        "Deploy of {} to {}, opened by changegate from the pipeline's metadata.",
        facts.service, facts.environment
    ))];
    blocks.push(adf::labelled("Commit:", &facts.commit_sha));
    if let Some((base, head)) = &facts.range {
        blocks.push(adf::labelled(
            "Commit range:",
            &format!("{base}..{head} ({} commits)", facts.commits.len()),
        ));
    }
    if let Some(repo) = &facts.repository {
        blocks.push(adf::labelled("Repository:", repo));
    }
    if let Some(branch) = &facts.branch {
        blocks.push(adf::labelled("Branch:", branch));
    }
    if let Some(pr) = &facts.pull_request {
        let mut nodes = vec![
            json!({"type": "text", "text": "Pull request:", "marks": [{"type": "strong"}]}),
            adf::text(&format!(" #{} {}", pr.number, pr.title)),
        ];
        if let Some(url) = &pr.url {
            nodes.push(adf::text(" "));
            nodes.push(adf::link(url));
        }
        blocks.push(adf::para(nodes));
    }
    if !facts.work_items.is_empty() {
        blocks.push(adf::labelled("Work items:", &facts.work_items.join(", ")));
    }
    if let Some(lines) = facts.lines_changed {
        blocks.push(adf::labelled(
            "Size:",
            &format!("{lines} lines changed in {} files", facts.paths.len()),
        ));
    }
    if let Some(passed) = facts.tests_passed {
        blocks.push(adf::labelled(
            "Tests:",
            if passed { "passed" } else { "failed" },
        ));
    }
    if let Some(url) = &facts.run_url {
        blocks.push(adf::para(vec![
            json!({"type": "text", "text": "Pipeline run:", "marks": [{"type": "strong"}]}),
            adf::text(" "),
            adf::link(url),
        ]));
    }
    if let Some(actor) = &facts.actor {
        blocks.push(adf::labelled("Triggered by:", actor));
    }
    if !facts.commits.is_empty() {
        let mut items: Vec<String> = facts
            .commits
            .iter()
            .take(20)
            .map(|c| format!("{} {}", c.sha.get(..12).unwrap_or(&c.sha), c.subject))
            .collect();
        if facts.commits.len() > 20 {
            items.push(format!("… and {} more", facts.commits.len() - 20));
        }
        blocks.push(adf::bullets(&items));
    }
    blocks.push(adf::labelled("Correlation key:", &facts.key().to_string()));
    adf::doc(blocks)
}

fn decision_comment(d: &Decision) -> Value {
    let mut blocks = vec![adf::para(vec![
        json!({"type": "text", "text": format!("changegate decision: {}", d.kind), "marks": [{"type": "strong"}]}),
        adf::text(&format!(" ({} mode)", d.mode.as_str())),
    ])];
    if let Some(reason) = &d.emergency {
        blocks.push(adf::line(&format!(
            "Emergency change: {reason}. Flagged for review after the deploy."
        )));
    }
    blocks.push(adf::line(&format!(
        "Sprint {}: {} of {} pre-approved changes used before this one.",
        d.sprint, d.allowance_used, d.allowance
    )));
    let rules: Vec<String> = d
        .rules
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                if r.passed { "✔" } else { "✘" },
                r.code,
                r.reason
            )
        })
        .collect();
    if !rules.is_empty() {
        blocks.push(adf::bullets(&rules));
    }
    match d.kind {
        DecisionKind::NeedsApproval => blocks.push(adf::line(
            "Waiting for approval in Jira Service Management.",
        )),
        DecisionKind::PreApproved => blocks.push(adf::line(
            "Pre-approved: moved to implementation when the gate passes.",
        )),
        DecisionKind::Blocked => blocks.push(adf::line("Blocked: the deploy must not proceed.")),
    }
    if let Some(at) = &d.clock_override {
        blocks.push(adf::line(&format!(
            "Decided with the clock set to {at} (CHANGEGATE_NOW)."
        )));
    }
    adf::doc(blocks)
}

/// JQL string literal.
fn q(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// What a request was for: names the action, the permission it needs and what a 404 means.
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Search,
    Count,
    Read(&'a str),
    Create,
    CreateRequest,
    ServiceDesks,
    Edit(&'a str),
    Comment(&'a str),
    Transition(&'a str, &'a str),
    Approvals(&'a str),
}

/// A change found in (or written to) Jira, with what later writes need.
#[derive(Debug, Clone)]
struct Found {
    id: u64,
    labels: Vec<String>,
    record: ChangeRecord,
}

/// The Jira Service Management backend.
pub struct Jira {
    http: HttpClient,
    base: String,
    user: String,
    token: SecretString,
    project: String,
    cfg: JiraSection,
    dry_run: bool,
    /// Changes looked up or written by this process, by correlation key (`None`: looked up
    /// and not found). `gate` looks a change up and then opens it: the second lookup costs
    /// nothing. A parallel run creating it in between is caught after the create.
    found: Mutex<HashMap<String, Option<Found>>>,
    service_desk: Mutex<Option<String>>,
    warned_no_request: AtomicBool,
}

impl std::fmt::Debug for Jira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jira")
            .field("base", &self.base)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Jira {
    /// The backend the settings describe. Credentials come from `CHANGEGATE_JIRA_USER` (the
    /// Atlassian account's email) and `CHANGEGATE_JIRA_TOKEN` (its API token).
    pub fn connect(settings: &crate::settings::Settings) -> Result<Jira> {
        let cfg = settings.jira.clone();
        let Some(url) = cfg.url.clone().filter(|u| !u.trim().is_empty()) else {
            bail!(
                "the jira backend needs the site URL: set [jira] url or {}",
                env::JIRA_URL
            );
        };
        let parsed = url::Url::parse(url.trim())
            .with_context(|| format!("{} is not a URL: {url:?}", env::JIRA_URL))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            bail!("{} must be an http(s) URL, got {url:?}", env::JIRA_URL);
        }
        let Some(project) = cfg.project.clone().filter(|p| !p.trim().is_empty()) else {
            bail!(
                "the jira backend needs the project key: set [jira] project or {}",
                env::JIRA_PROJECT
            );
        };
        let (Some(user), Some(token)) = (env::var(env::JIRA_USER), env::var(env::JIRA_TOKEN))
        else {
            bail!(
                "the jira backend needs credentials: set {} (the Atlassian account's email address) and {} (an API token of that account)",
                env::JIRA_USER,
                env::JIRA_TOKEN
            );
        };
        let service_desk = Some(cfg.service_desk.trim().to_string()).filter(|s| !s.is_empty());
        Ok(Jira {
            http: HttpClient::new("Jira")?,
            base: url.trim().trim_end_matches('/').to_string(),
            user,
            token: SecretString::from(token),
            project: project.trim().to_string(),
            cfg,
            dry_run: settings.dry_run,
            found: Mutex::new(HashMap::new()),
            service_desk: Mutex::new(service_desk),
            warned_no_request: AtomicBool::new(false),
        })
    }

    fn writable(&self) -> Result<()> {
        if self.dry_run {
            bail!("internal error: a dry run tried to write to Jira");
        }
        Ok(())
    }

    fn browse(&self, key: &str) -> String {
        format!("{}/browse/{key}", self.base)
    }

    // ---- HTTP ------------------------------------------------------------------------

    /// One call through the shared client. Returns the JSON answer (`Null` when empty).
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, HttpError> {
        let url = format!("{}{path}", self.base);
        let jsm = path.starts_with("/rest/servicedeskapi");
        let response = self
            .http
            .send(|c| {
                let mut rb = c
                    .request(method.clone(), &url)
                    .basic_auth(&self.user, Some(self.token.expose_secret()))
                    .header(reqwest::header::ACCEPT, "application/json");
                if jsm {
                    rb = rb.header("X-ExperimentalApi", "opt-in");
                }
                if !query.is_empty() {
                    rb = rb.query(query);
                }
                if let Some(body) = body {
                    rb = rb.json(body);
                }
                rb
            })
            .await?;
        let text = response.text().await.map_err(|e| HttpError::Transport {
            service: "Jira",
            method: method.clone(),
            path: path.to_string(),
            attempts: 1,
            message: format!("the answer could not be read: {e}"),
        })?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| HttpError::Transport {
            service: "Jira",
            method,
            path: path.to_string(),
            attempts: 1,
            message: format!(
                "the answer is not JSON ({e}); is {} a Jira site?",
                self.base
            ),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<Value> {
        self.request(method, path, query, body)
            .await
            .map_err(|e| self.explain(e, op))
    }

    /// Turns a failed call into an error that says what was attempted, quotes Jira, and
    /// says what to check.
    fn explain(&self, e: HttpError, op: Op<'_>) -> anyhow::Error {
        let p = &self.project;
        let what = match op {
            Op::Search => format!("search project {p} for changes"),
            Op::Count => format!("count changes in project {p}"),
            Op::Read(k) => format!("read issue {k}"),
            Op::Create => format!("create a {:?} issue in project {p}", self.cfg.issue_type),
            Op::CreateRequest => format!(
                "raise a request of request type {} in project {p}",
                self.cfg.request_type
            ),
            Op::ServiceDesks => "list the service desks".to_string(),
            Op::Edit(k) => format!("update issue {k}"),
            Op::Comment(k) => format!("comment on issue {k}"),
            Op::Transition(k, to) => format!("move issue {k} to {to:?}"),
            Op::Approvals(k) => format!("read the approvals of {k}"),
        };
        let Some(status) = e.status() else {
            return anyhow!(
                "cannot {what}: {e}. Check {} ({}) and the network or proxy",
                env::JIRA_URL,
                self.base
            );
        };
        let words = jira_words(e.body().unwrap_or_default());
        let said = if words.is_empty() {
            String::new()
        } else {
            format!(": {words}")
        };
        let permission = match op {
            Op::Search | Op::Count | Op::Read(_) | Op::ServiceDesks => "Browse projects",
            Op::Create | Op::CreateRequest => "Create issues",
            Op::Edit(_) => "Edit issues",
            Op::Comment(_) => "Add comments",
            Op::Transition(..) => "Transition issues (and Resolve issues for closing transitions)",
            Op::Approvals(_) => "Browse projects, as a Jira Service Management agent",
        };
        let hint = match status.as_u16() {
            401 => format!(
                "The credentials were refused: {} must be the Atlassian account's email address and {} an API token of that account \
                 (not its password); check that the token has not expired or been revoked",
                env::JIRA_USER,
                env::JIRA_TOKEN
            ),
            403 => format!("The account in {} lacks the permission {permission} in project {p}", env::JIRA_USER),
            404 => match op {
                Op::Create => format!(
                    "Project {p} or issue type {:?} does not exist, or the account in {} cannot see it (Browse projects, Create issues)",
                    self.cfg.issue_type,
                    env::JIRA_USER
                ),
                Op::CreateRequest | Op::ServiceDesks => format!(
                    "The service desk or request type {} does not exist, or the account in {} is not a customer or agent of it",
                    self.cfg.request_type,
                    env::JIRA_USER
                ),
                Op::Search | Op::Count => format!(
                    "{} has no JQL search at /rest/api/3/search/jql: changegate needs Jira Cloud",
                    self.base
                ),
                Op::Approvals(k) => format!("{k} is not a Jira Service Management request, or the account in {} is not an agent", env::JIRA_USER),
                Op::Read(k) | Op::Edit(k) | Op::Comment(k) | Op::Transition(k, _) => format!(
                    "Issue {k} does not exist, or the account in {} cannot see it (Browse projects)",
                    env::JIRA_USER
                ),
            },
            400 => match op {
                Op::Create | Op::CreateRequest => format!(
                    "Check [jira] issue_type / request_type, [jira.fields] and [jira.extra_fields] against the create screen of project {p}"
                ),
                Op::Edit(_) => "Labels, the [jira.fields] fields and issue properties must be on the issue's edit screen".to_string(),
                Op::Transition(..) => "Check the transition's screen and [jira.resolutions]".to_string(),
                Op::Search | Op::Count => format!("The JQL was refused; check that project {p} exists"),
                _ => String::new(),
            },
            410 => "This Jira API was removed; changegate needs Jira Cloud's current REST API".to_string(),
            429 => "Jira kept rate-limiting the requests after changegate waited as told (Retry-After); try again later".to_string(),
            s if s >= 500 => "Jira kept failing after retries; try again later".to_string(),
            _ => String::new(),
        };
        let hint = if hint.is_empty() {
            String::new()
        } else if said.ends_with('.') {
            format!(" {hint}")
        } else {
            format!(". {hint}")
        };
        anyhow!("cannot {what}: {e}{said}{hint}")
    }

    // ---- reads -----------------------------------------------------------------------

    /// Issues matching `jql`, one page, with our property.
    async fn search(
        &self,
        jql: &str,
        fields: &[&str],
        max: u32,
        token: Option<&str>,
        reconcile: &[u64],
    ) -> Result<(Vec<IssueView>, Option<String>)> {
        let mut body = json!({
            "jql": jql,
            "fields": fields,
            "maxResults": max,
            "properties": [PROPERTY],
        });
        if let Some(token) = token {
            body["nextPageToken"] = json!(token);
        }
        if !reconcile.is_empty() {
            body["reconcileIssues"] = json!(reconcile);
        }
        let v = self
            .call(
                Method::POST,
                "/rest/api/3/search/jql",
                &[],
                Some(&body),
                Op::Search,
            )
            .await?;
        let issues = v
            .get("issues")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(IssueView::parse).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        let last = v.get("isLast").and_then(Value::as_bool).unwrap_or(false);
        let next = v
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && !last)
            .map(str::to_string);
        Ok((issues, next))
    }

    async fn count(&self, jql: &str) -> Result<u64> {
        let v = self
            .call(
                Method::POST,
                "/rest/api/3/search/approximate-count",
                &[],
                Some(&json!({ "jql": jql })),
                Op::Count,
            )
            .await?;
        v.get("count")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("Jira's approximate count has no `count`: {v}"))
    }

    async fn read_issue(&self, key: &str, transitions: bool) -> Result<Option<IssueView>> {
        let mut query = vec![
            ("fields", "status,labels,created".to_string()),
            ("properties", PROPERTY.to_string()),
        ];
        if transitions {
            query.push(("expand", "transitions.fields".to_string()));
        }
        let path = format!("/rest/api/3/issue/{}", urlencode(key));
        match self.request(Method::GET, &path, &query, None).await {
            Ok(v) => Ok(Some(IssueView::parse(&v)?)),
            Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.explain(e, Op::Read(key))),
        }
    }

    async fn approvals(&self, key: &str) -> Result<Verdict> {
        let path = format!("/rest/servicedeskapi/request/{}/approval", urlencode(key));
        let query = [("start", "0".to_string()), ("limit", "50".to_string())];
        match self.request(Method::GET, &path, &query, None).await {
            Ok(v) => Ok(parse_approvals(&v)),
            Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                if !self.warned_no_request.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{key} has no Jira Service Management approvals ({}): it is approved only by moving it to {:?}",
                        jira_words(e.body().unwrap_or_default()),
                        self.cfg.statuses.implementing
                    );
                }
                Ok(Verdict::Pending)
            }
            Err(e) => Err(self.explain(e, Op::Approvals(key))),
        }
    }

    /// The state the status alone says, when it says one.
    fn status_state(&self, v: &IssueView) -> Option<State> {
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
    fn needs_verdict(&self, v: &IssueView, decision: Option<&Decision>) -> bool {
        decision.is_some_and(|d| d.kind == DecisionKind::NeedsApproval)
            && matches!(self.status_state(v), None | Some(State::Rejected))
    }

    fn to_record(
        &self,
        v: &IssueView,
        fallback_key: &str,
        verdict: Option<&Verdict>,
    ) -> ChangeRecord {
        let stored = v.stored.clone().unwrap_or_default();
        let decision = stored
            .decision
            .clone()
            .or_else(|| decision_from_labels(&v.labels));
        let outcome = stored.outcome.or_else(|| {
            [Outcome::Failure, Outcome::Success, Outcome::Cancelled]
                .into_iter()
                .find(|o| v.has(&labels::outcome(*o)))
        });
        let state =
            self.status_state(v)
                .unwrap_or(match (decision.as_ref().map(|d| d.kind), verdict) {
                    (Some(DecisionKind::NeedsApproval), Some(Verdict::Declined { .. })) => {
                        State::Rejected
                    }
                    (Some(DecisionKind::NeedsApproval), Some(Verdict::Approved { .. })) => {
                        State::Approved
                    }
                    (Some(DecisionKind::NeedsApproval), _) => State::AwaitingApproval,
                    (Some(DecisionKind::PreApproved), _) => State::Approved,
                    _ => State::New,
                });
        let (approved_by, approved_at) = match verdict {
            Some(Verdict::Approved { by, at } | Verdict::Declined { by, at }) => (by.clone(), *at),
            _ => (None, None),
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
            incidents: Vec::new(),
        }
    }

    /// The record of an issue, reading its approvals when the state depends on them.
    async fn complete(&self, v: &IssueView, fallback_key: &str) -> Result<ChangeRecord> {
        let decision = v
            .stored
            .as_ref()
            .and_then(|s| s.decision.clone())
            .or_else(|| decision_from_labels(&v.labels));
        let verdict = if self.needs_verdict(v, decision.as_ref()) {
            Some(self.approvals(&v.key).await?)
        } else {
            None
        };
        Ok(self.to_record(v, fallback_key, verdict.as_ref()))
    }

    fn remember(&self, key: &str, found: Option<&Found>) {
        if let Ok(mut map) = self.found.lock() {
            map.insert(key.to_string(), found.cloned());
        }
    }

    /// `Some(None)`: this process looked and found nothing; `None`: never looked.
    fn remembered(&self, key: &str) -> Option<Option<Found>> {
        self.found.lock().ok().and_then(|m| m.get(key).cloned())
    }

    fn key_jql(&self, key: &CorrelationKey) -> String {
        format!(
            "project = {} AND labels = {} ORDER BY created ASC",
            q(&self.project),
            q(&labels::key(&key.service_id, &key.environment, &key.sha))
        )
    }

    /// The issues carrying this change's label whose property holds exactly this key,
    /// lowest issue id first (the one that wins when parallel runs both created one).
    async fn matches(&self, key: &CorrelationKey, reconcile: &[u64]) -> Result<Vec<IssueView>> {
        let full = key.to_string();
        let (issues, _) = self
            .search(
                &self.key_jql(key),
                &["status", "labels", "created"],
                20,
                None,
                reconcile,
            )
            .await?;
        let mut hits: Vec<IssueView> = issues
            .into_iter()
            .filter(|v| v.is_change())
            .filter(|v| v.stored.as_ref().is_none_or(|s| s.key == full))
            .collect();
        hits.sort_by_key(|v| v.id);
        Ok(hits)
    }

    async fn lookup(&self, key: &CorrelationKey) -> Result<Option<Found>> {
        let full = key.to_string();
        let Some(v) = self.matches(key, &[]).await?.into_iter().next() else {
            self.remember(&full, None);
            return Ok(None);
        };
        let record = self.complete(&v, &full).await?;
        let found = Found {
            id: v.id,
            labels: v.labels.clone(),
            record,
        };
        self.remember(&full, Some(&found));
        Ok(Some(found))
    }

    // ---- writes ----------------------------------------------------------------------

    async fn comment(&self, key: &str, body: Value) -> Result<()> {
        let mut payload = json!({ "body": body });
        if self.cfg.internal_comments {
            payload["properties"] =
                json!([{"key": "sd.public.comment", "value": {"internal": true}}]);
        }
        let path = format!("/rest/api/3/issue/{}/comment", urlencode(key));
        self.call(Method::POST, &path, &[], Some(&payload), Op::Comment(key))
            .await?;
        Ok(())
    }

    async fn edit(&self, key: &str, body: &Value) -> Result<()> {
        let path = format!("/rest/api/3/issue/{}", urlencode(key));
        self.call(Method::PUT, &path, &[], Some(body), Op::Edit(key))
            .await?;
        Ok(())
    }

    fn property(stored: &Stored) -> Value {
        json!([{ "key": PROPERTY, "value": stored }])
    }

    fn decision_labels(d: &Decision, now: DateTime<Utc>) -> Vec<String> {
        let mut out = vec![labels::kind(d.kind), labels::day(now.date_naive())];
        if d.emergency.is_some() {
            out.push(labels::EMERGENCY.to_string());
        }
        if d.mode == Mode::Observe {
            out.push(labels::OBSERVE.to_string());
        }
        out
    }

    /// Field values by the site's field ids for a decision (`[jira.fields]`).
    fn decision_fields(&self, d: &Decision) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        if let Some(id) = self.cfg.fields.get("change_type") {
            let t = &self.cfg.change_types;
            let value = if d.emergency.is_some() {
                &t.emergency
            } else if d.kind == DecisionKind::PreApproved {
                &t.standard
            } else {
                &t.normal
            };
            fields.insert(id.clone(), json!({ "value": value }));
        }
        fields
    }

    async fn service_desk_id(&self) -> Result<String> {
        if let Some(id) = self.service_desk.lock().ok().and_then(|g| g.clone()) {
            return Ok(id);
        }
        let mut start = 0u64;
        for _ in 0..10 {
            let v = self
                .call(
                    Method::GET,
                    "/rest/servicedeskapi/servicedesk",
                    &[("start", start.to_string()), ("limit", "50".to_string())],
                    None,
                    Op::ServiceDesks,
                )
                .await?;
            let values = v
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(desk) = values.iter().find(|d| {
                d.get("projectKey")
                    .and_then(Value::as_str)
                    .is_some_and(|k| eq(k, &self.project))
            }) {
                let id = match desk.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => bail!(
                        "Jira listed the service desk of {} without an id",
                        self.project
                    ),
                };
                if let Ok(mut g) = self.service_desk.lock() {
                    *g = Some(id.clone());
                }
                return Ok(id);
            }
            if v.get("isLastPage").and_then(Value::as_bool).unwrap_or(true) || values.is_empty() {
                break;
            }
            start += values.len() as u64;
        }
        bail!(
            "project {} is not a Jira Service Management service desk the account in {} can see; set [jira] service_desk, or leave request_type empty to create plain issues",
            self.project,
            env::JIRA_USER
        )
    }

    /// Creates the change issue. Returns its id and key.
    async fn create(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<(u64, String, Vec<String>)> {
        let key = facts.key();
        let mut label_list = vec![
            labels::MARK.to_string(),
            labels::service(&key.service_id, &key.environment),
            labels::key(&key.service_id, &key.environment, &key.sha),
        ];
        if let Some(d) = decision {
            label_list.extend(Self::decision_labels(d, now));
        }
        let stored = Stored {
            key: key.to_string(),
            commit: Some(key.sha.clone()),
            decision: decision.cloned(),
            opened_at: Some(now),
            decided_at: decision.map(|_| now),
            deployed_at: None,
            outcome: None,
        };
        let summary: String = facts.summary().chars().take(250).collect();
        let mut fields = serde_json::Map::new();
        fields.insert("labels".into(), json!(label_list));
        if let Some(d) = decision {
            fields.extend(self.decision_fields(d));
        }
        if let Some(id) = self.cfg.fields.get("correlation_key") {
            fields.insert(id.clone(), json!(key.to_string()));
        }
        if self.cfg.request_type.trim().is_empty() {
            let issue_type = if self.cfg.issue_type.chars().all(|c| c.is_ascii_digit()) {
                json!({ "id": self.cfg.issue_type })
            } else {
                json!({ "name": self.cfg.issue_type })
            };
            fields.insert("project".into(), json!({ "key": self.project }));
            fields.insert("issuetype".into(), issue_type);
            fields.insert("summary".into(), json!(summary));
            fields.insert("description".into(), description(facts));
            for (id, value) in &self.cfg.extra_fields {
                fields.insert(id.clone(), value.clone());
            }
            let body = json!({ "fields": fields, "properties": Self::property(&stored) });
            let v = self
                .call(
                    Method::POST,
                    "/rest/api/3/issue",
                    &[],
                    Some(&body),
                    Op::Create,
                )
                .await?;
            let issue_key = v
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("Jira created an issue but sent no key: {v}"))?;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok((id, issue_key.to_string(), label_list));
        }
        // A JSM request: raised through the service desk (so request-type automation and
        // approvals apply), then labelled and given the property through the platform API.
        let desk = self.service_desk_id().await?;
        let mut values = serde_json::Map::new();
        values.insert("summary".into(), json!(summary));
        values.insert("description".into(), description(facts));
        for (id, value) in &self.cfg.extra_fields {
            values.insert(id.clone(), value.clone());
        }
        let body = json!({
            "serviceDeskId": desk,
            "requestTypeId": self.cfg.request_type.trim(),
            "requestFieldValues": values,
            "isAdfRequest": true,
        });
        let v = self
            .call(
                Method::POST,
                "/rest/servicedeskapi/request",
                &[],
                Some(&body),
                Op::CreateRequest,
            )
            .await?;
        let issue_key = v
            .get("issueKey")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Jira raised a request but sent no issue key: {v}"))?
            .to_string();
        let id = match v.get("issueId") {
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let edit = json!({ "fields": fields, "properties": Self::property(&stored) });
        self.edit(&issue_key, &edit)
            .await
            .with_context(|| format!("request {issue_key} was raised but could not be labelled as change {key}; delete it or label it by hand"))?;
        Ok((id, issue_key, label_list))
    }

    /// After a create: if a parallel run created an issue for the same change first (lower
    /// id), retire ours and use theirs.
    async fn settle(
        &self,
        key: &CorrelationKey,
        mine_id: u64,
        mine_key: &str,
        mine_labels: &[String],
    ) -> Result<Option<IssueView>> {
        let hits = self.matches(key, &[mine_id]).await?;
        let Some(winner) = hits
            .into_iter()
            .find(|v| v.key != mine_key && v.id < mine_id)
        else {
            return Ok(None);
        };
        tracing::warn!(
            "a parallel run opened {} for this change first; {mine_key} is retired as its duplicate",
            winner.key
        );
        let remove: Vec<Value> = mine_labels
            .iter()
            .filter(|l| l.as_str() != labels::MARK)
            .map(|l| json!({ "remove": l }))
            .chain(std::iter::once(json!({ "add": labels::DUPLICATE })))
            .collect();
        if let Err(e) = self
            .edit(mine_key, &json!({ "update": { "labels": remove } }))
            .await
        {
            tracing::warn!("could not relabel the duplicate {mine_key}: {e:#}");
        }
        let note = adf::doc(vec![adf::line(&format!(
            "Duplicate of {}: a parallel changegate run opened it for the same change first. This issue is not used.",
            winner.key
        ))]);
        if let Err(e) = self.comment(mine_key, note).await {
            tracing::warn!("could not comment on the duplicate {mine_key}: {e:#}");
        }
        if let Ok(Some(v)) = self.read_issue(mine_key, true).await {
            let target = self.cfg.statuses.cancelled.clone();
            if let Err(e) = self
                .transition(
                    &v,
                    "cancelled",
                    &target,
                    None,
                    Some(&self.cfg.resolutions.cancelled.clone()),
                )
                .await
            {
                tracing::warn!("could not cancel the duplicate {mine_key}: {e:#}");
            }
        }
        Ok(Some(winner))
    }

    /// The transition that leads an issue to `status`: the one `[jira.transitions]` names
    /// for `role`, else the one whose target is `status`, else one named `status`.
    fn offered<'v>(&self, v: &'v IssueView, role: &str, status: &str) -> Option<&'v Transition> {
        match self
            .cfg
            .transitions
            .get(role)
            .filter(|n| !n.trim().is_empty())
        {
            Some(name) => v.transitions.iter().find(|t| eq(&t.name, name)),
            None => v
                .transitions
                .iter()
                .find(|t| eq(&t.to, status))
                .or_else(|| v.transitions.iter().find(|t| eq(&t.name, status))),
        }
    }

    /// Moves an issue to `status` (role `role` in `[jira.transitions]`). Returns false when
    /// the issue is already there (the workflow made the move).
    async fn transition(
        &self,
        v: &IssueView,
        role: &str,
        status: &str,
        stored: Option<&Stored>,
        resolution: Option<&str>,
    ) -> Result<bool> {
        if eq(&v.status, status) {
            tracing::info!(
                "{} is already in {:?}; no transition needed",
                v.key,
                v.status
            );
            return Ok(false);
        }
        let named = self
            .cfg
            .transitions
            .get(role)
            .filter(|n| !n.trim().is_empty());
        let Some(t) = self.offered(v, role, status) else {
            let offered: Vec<String> = v
                .transitions
                .iter()
                .map(|t| format!("{:?} → {:?}", t.name, t.to))
                .collect();
            let wanted = match named {
                Some(name) => format!("the transition {name:?} ([jira.transitions] {role})"),
                None => format!("a transition to {status:?}"),
            };
            bail!(
                "cannot move {} from {:?} to {status:?}: the workflow offers the account in {} no {wanted} (offered: {}). \
                 Name the transition in [jira.transitions] {role} = \"…\", set [jira.statuses] {role} to this site's status name, \
                 or check the account's Transition issues permission",
                v.key,
                v.status,
                env::JIRA_USER,
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            );
        };
        let mut body = json!({ "transition": { "id": t.id } });
        if let (Some(field), Some(wanted)) = (t.fields.get("resolution"), resolution) {
            let allowed: Vec<&str> = field
                .get("allowedValues")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.get("name").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let required = field
                .get("required")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let name = if allowed.is_empty() {
                Some(wanted.to_string())
            } else if let Some(hit) = allowed.iter().find(|a| eq(a, wanted)) {
                Some((*hit).to_string())
            } else if required {
                tracing::warn!(
                    "resolution {wanted:?} is not offered on {:?} (offered: {}); using {:?}",
                    t.name,
                    allowed.join(", "),
                    allowed[0]
                );
                Some(allowed[0].to_string())
            } else {
                tracing::warn!(
                    "resolution {wanted:?} is not offered on {:?} (offered: {}); leaving it unset",
                    t.name,
                    allowed.join(", ")
                );
                None
            };
            if let Some(name) = name {
                body["fields"] = json!({ "resolution": { "name": name } });
            }
        }
        if let Some(stored) = stored {
            body["properties"] = Self::property(stored);
        }
        let path = format!("/rest/api/3/issue/{}/transitions", urlencode(&v.key));
        self.call(
            Method::POST,
            &path,
            &[],
            Some(&body),
            Op::Transition(&v.key, status),
        )
        .await?;
        Ok(true)
    }

    /// Writes a (new) decision on an existing issue: labels, fields, property, comment.
    async fn write_decision(
        &self,
        found: &Found,
        d: &Decision,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let mut record = found.record.clone();
        record.decision = Some(d.clone());
        record.decided_at = Some(now);
        record.emergency_reason = d.emergency.clone();
        let new_labels = Self::decision_labels(d, now);
        let stale = found.labels.iter().filter(|l| {
            let ours = labels::KINDS.iter().any(|k| **l == labels::kind(*k))
                || labels::is_day(l)
                || l.as_str() == labels::EMERGENCY
                || l.as_str() == labels::OBSERVE;
            ours && !new_labels.contains(l)
        });
        let ops: Vec<Value> = stale
            .map(|l| json!({ "remove": l }))
            .chain(
                new_labels
                    .iter()
                    .filter(|l| !found.labels.contains(l))
                    .map(|l| json!({ "add": l })),
            )
            .collect();
        let mut body = json!({ "properties": Self::property(&Stored::of(&record)) });
        if !ops.is_empty() {
            body["update"] = json!({ "labels": ops });
        }
        let fields = self.decision_fields(d);
        if !fields.is_empty() {
            body["fields"] = Value::Object(fields);
        }
        self.edit(&record.id, &body).await?;
        self.comment(&record.id, decision_comment(d)).await?;
        record.state = match d.kind {
            DecisionKind::PreApproved => State::Approved,
            DecisionKind::NeedsApproval => State::AwaitingApproval,
            DecisionKind::Blocked => State::New,
        };
        let mut labels_now: Vec<String> = found
            .labels
            .iter()
            .filter(|l| {
                !ops.iter()
                    .any(|o| o.get("remove").and_then(Value::as_str) == Some(l.as_str()))
            })
            .cloned()
            .collect();
        labels_now.extend(new_labels.into_iter().filter(|l| !found.labels.contains(l)));
        self.remember(
            &record.key,
            Some(&Found {
                id: found.id,
                labels: labels_now,
                record: record.clone(),
            }),
        );
        Ok(record)
    }

    /// A change that needs approval goes to the approval status, when one is configured.
    async fn to_approval(&self, key: &str, d: &Decision) -> Result<()> {
        let status = self.cfg.statuses.awaiting_approval.trim().to_string();
        if d.kind != DecisionKind::NeedsApproval || d.mode != Mode::Enforce || status.is_empty() {
            return Ok(());
        }
        let Some(v) = self.read_issue(key, true).await? else {
            bail!("issue {key} vanished while moving it to {status:?}");
        };
        if self.status_state(&v).is_none() {
            self.transition(&v, "awaiting_approval", &status, None, None)
                .await?;
        }
        Ok(())
    }

    // ---- history ---------------------------------------------------------------------

    fn scope_jql(&self, q_: &HistoryQuery<'_>) -> String {
        let mut jql = format!(
            "project = {} AND labels = {}",
            q(&self.project),
            q(&labels::service(q_.service_id, q_.environment))
        );
        if let Some(exclude) = q_.exclude_key {
            let sha = exclude.rsplit(':').next().unwrap_or(exclude);
            jql.push_str(&format!(
                " AND labels not in ({})",
                q(&labels::key(q_.service_id, q_.environment, sha))
            ));
        }
        jql
    }

    /// Per-sprint tallies from the labels of every change decided since `from_sprint`, read
    /// in at most [`TALLY_PAGES`] pages; `None` when there are more.
    async fn tallies_by_search(
        &self,
        scope: &str,
        q_: &HistoryQuery<'_>,
        current: i64,
    ) -> Result<Option<BTreeMap<i64, SprintTally>>> {
        // `updated` is a superset of "decided since" (deciding updates the issue); a day of
        // slack covers any time zone of the Jira user, and the day label filters exactly.
        let since = (q_.calendar.start_of(q_.from_sprint) - Duration::days(1)).format("%Y-%m-%d");
        let kinds: Vec<String> = labels::KINDS.iter().map(|k| q(&labels::kind(*k))).collect();
        let jql = format!(
            "{scope} AND labels in ({}) AND updated >= {} ORDER BY created DESC",
            kinds.join(", "),
            q(&since.to_string())
        );
        let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
        let mut token: Option<String> = None;
        for _ in 0..TALLY_PAGES {
            let (issues, next) = self
                .search(&jql, &["labels"], PAGE, token.as_deref(), &[])
                .await?;
            for v in issues.iter().filter(|v| v.is_change()) {
                tally_labels(
                    &v.labels,
                    &q_.calendar,
                    q_.from_sprint,
                    current,
                    &mut sprints,
                );
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(Some(sprints)),
            }
        }
        Ok(None)
    }

    /// Per-sprint tallies from approximate counts: a fixed number of requests per sprint
    /// of the lookback, however many changes it holds.
    async fn tallies_by_count(
        &self,
        scope: &str,
        q_: &HistoryQuery<'_>,
        current: i64,
    ) -> Result<BTreeMap<i64, SprintTally>> {
        let mut sprints = BTreeMap::new();
        for sprint in q_.from_sprint..=current {
            let start = q_.calendar.start_of(sprint).date_naive();
            let days: Vec<String> = (0..q_.calendar.length_days())
                .map(|i| q(&labels::day(start + Duration::days(i64::from(i)))))
                .collect();
            let in_sprint = format!("{scope} AND labels in ({})", days.join(", "));
            let with = |label: String| format!("{in_sprint} AND labels = {}", q(&label));
            let mut tally = SprintTally {
                succeeded: clamp_u32(self.count(&with(labels::outcome(Outcome::Success))).await?),
                failed: clamp_u32(self.count(&with(labels::outcome(Outcome::Failure))).await?),
                ..SprintTally::default()
            };
            if sprint == current {
                tally.cancelled = clamp_u32(
                    self.count(&with(labels::outcome(Outcome::Cancelled)))
                        .await?,
                );
                tally.pre_approved = clamp_u32(
                    self.count(&format!(
                        "{in_sprint} AND labels = {} AND labels not in ({})",
                        q(&labels::kind(DecisionKind::PreApproved)),
                        q(labels::EMERGENCY)
                    ))
                    .await?,
                );
                tally.emergency =
                    clamp_u32(self.count(&with(labels::EMERGENCY.to_string())).await?);
            }
            if tally != SprintTally::default() {
                sprints.insert(sprint, tally);
            }
        }
        Ok(sprints)
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Adds one change's labels to the tally of the sprint it was decided in.
fn tally_labels(
    list: &[String],
    calendar: &SprintCalendar,
    from: i64,
    current: i64,
    sprints: &mut BTreeMap<i64, SprintTally>,
) {
    let Some(day) = list.iter().find_map(|l| labels::parse_day(l)) else {
        return;
    };
    let at = Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN));
    let sprint = calendar.index_of(at);
    if sprint < from || sprint > current {
        return;
    }
    let has = |l: &str| list.iter().any(|x| x == l);
    let t = sprints.entry(sprint).or_default();
    if has(&labels::outcome(Outcome::Failure)) {
        t.failed += 1;
    } else if has(&labels::outcome(Outcome::Success)) {
        t.succeeded += 1;
    } else if has(&labels::outcome(Outcome::Cancelled)) {
        t.cancelled += 1;
    }
    let emergency = has(labels::EMERGENCY);
    if emergency {
        t.emergency += 1;
    } else if has(&labels::kind(DecisionKind::PreApproved)) {
        t.pre_approved += 1;
    }
}

/// The decision the labels tell, when the property is gone: kind, mode and emergency.
fn decision_from_labels(list: &[String]) -> Option<Decision> {
    let kind = labels::KINDS
        .into_iter()
        .find(|k| list.iter().any(|l| *l == labels::kind(*k)))?;
    let has = |l: &str| list.iter().any(|x| x == l);
    Some(Decision {
        kind,
        rules: Vec::new(),
        mode: if has(labels::OBSERVE) {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        emergency: has(labels::EMERGENCY)
            .then(|| "emergency (from the issue's labels)".to_string()),
        sprint: 0,
        allowance: 0,
        allowance_used: 0,
        clock_override: None,
    })
}

/// Issue keys are `[A-Z0-9_]+-[0-9]+`; anything else a user passes is percent-encoded.
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[async_trait]
impl Itsm for Jira {
    fn kind(&self) -> BackendKind {
        BackendKind::Jira
    }

    /// Requests per decision: one search for the recent outcomes, one count when the window
    /// is full, and up to [`TALLY_PAGES`] searches for the sprint tallies, or, when the
    /// lookback holds more changes than that, a fixed number of counts per sprint.
    async fn history(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let scope = self.scope_jql(q_);
        let closed = format!(
            "{scope} AND labels in ({}, {})",
            q(&labels::outcome(Outcome::Success)),
            q(&labels::outcome(Outcome::Failure))
        );
        // The most recent closed outcomes, newest first. Jira may return fewer issues per
        // page than asked: page on until the window is full (at most RECENT_PAGES pages).
        let window = q_.window.max(1) as usize;
        let mut recent: Vec<Outcome> = Vec::with_capacity(window);
        let mut token: Option<String> = None;
        let mut next: Option<String> = None;
        for _ in 0..RECENT_PAGES {
            let (issues, more) = self
                .search(
                    &format!("{closed} ORDER BY created DESC"),
                    &["labels"],
                    u32::try_from(window - recent.len())
                        .unwrap_or(PAGE)
                        .min(PAGE),
                    token.as_deref(),
                    &[],
                )
                .await?;
            recent.extend(issues.iter().filter(|v| v.is_change()).map(|v| {
                if v.has(&labels::outcome(Outcome::Failure)) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }));
            next = more;
            if recent.len() >= window || next.is_none() {
                break;
            }
            token = next.clone();
        }
        recent.truncate(window);
        let closed_total = if next.is_none() && (recent.len() as u64) < u64::from(q_.window) {
            recent.len() as u64
        } else {
            self.count(&closed).await?.max(recent.len() as u64)
        };
        let current = q_.calendar.index_of(q_.now);
        let sprints = match self.tallies_by_search(&scope, q_, current).await? {
            Some(s) => s,
            None => {
                tracing::info!(
                    "more than {} changes in the lookback; counting per sprint",
                    PAGE as usize * TALLY_PAGES
                );
                self.tallies_by_count(&scope, q_, current).await?
            }
        };
        Ok(History {
            closed_total,
            recent,
            sprints,
        })
    }

    async fn last_change_sha(&self, service_id: &str, environment: &str) -> Result<Option<String>> {
        let kinds: Vec<String> = labels::KINDS.iter().map(|k| q(&labels::kind(*k))).collect();
        let jql = format!(
            "project = {} AND labels = {} AND labels in ({}) ORDER BY created DESC",
            q(&self.project),
            q(&labels::service(service_id, environment)),
            kinds.join(", ")
        );
        let (issues, _) = self.search(&jql, &["labels"], 5, None, &[]).await?;
        Ok(issues.into_iter().filter(|v| v.is_change()).find_map(|v| {
            v.stored.and_then(|s| {
                s.commit
                    .or_else(|| s.key.rsplit(':').next().map(str::to_string))
            })
        }))
    }

    async fn find(&self, key: &CorrelationKey) -> Result<Option<ChangeRecord>> {
        Ok(self.lookup(key).await?.map(|f| f.record))
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let Some(v) = self.read_issue(id.trim(), false).await? else {
            return Ok(None);
        };
        if !v.is_change() {
            bail!(
                "{} is not a change opened by changegate (it has no {:?} label nor {PROPERTY} property)",
                v.key,
                labels::MARK
            );
        }
        Ok(Some(self.complete(&v, "").await?))
    }

    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.writable()?;
        let key = facts.key();
        let full = key.to_string();
        let existing = match self.remembered(&full) {
            Some(known) => known,
            None => self.lookup(&key).await?,
        };
        let found = match existing {
            Some(f) => f,
            None => {
                let (id, issue_key, label_list) = self.create(facts, decision, now).await?;
                tracing::info!("opened {issue_key} for {full}");
                match self.settle(&key, id, &issue_key, &label_list).await? {
                    Some(winner) => {
                        let record = self.complete(&winner, &full).await?;
                        Found {
                            id: winner.id,
                            labels: winner.labels.clone(),
                            record,
                        }
                    }
                    None => {
                        let record = ChangeRecord {
                            id: issue_key.clone(),
                            url: Some(self.browse(&issue_key)),
                            key: full.clone(),
                            state: match decision.map(|d| d.kind) {
                                Some(DecisionKind::PreApproved) => State::Approved,
                                Some(DecisionKind::NeedsApproval) => State::AwaitingApproval,
                                _ => State::New,
                            },
                            decision: decision.cloned(),
                            outcome: None,
                            emergency_reason: decision.and_then(|d| d.emergency.clone()),
                            approved_by: None,
                            approval_comment: None,
                            opened_at: Some(now),
                            decided_at: decision.map(|_| now),
                            approved_at: None,
                            deployed_at: None,
                            incidents: Vec::new(),
                        };
                        if let Some(d) = decision {
                            self.comment(&issue_key, decision_comment(d)).await?;
                            self.to_approval(&issue_key, d).await?;
                        }
                        let found = Found {
                            id,
                            labels: label_list,
                            record: record.clone(),
                        };
                        self.remember(&full, Some(&found));
                        return Ok(record);
                    }
                }
            }
        };
        match decision {
            Some(d)
                if !decision_stands(&found.record, d.emergency.is_some())
                    && !found.record.state.is_final() =>
            {
                let record = self.write_decision(&found, d, now).await?;
                self.to_approval(&record.id, d).await?;
                Ok(record)
            }
            _ => Ok(found.record),
        }
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        let Some(v) = self.read_issue(&record.id, false).await? else {
            bail!(
                "change {} is no longer in Jira (deleted, moved, or no longer visible to the account in {})",
                record.id,
                env::JIRA_USER
            );
        };
        let fresh = self.complete(&v, &record.key).await?;
        if let Ok(mut map) = self.found.lock() {
            if let Some(Some(f)) = map.get_mut(&fresh.key) {
                f.record = fresh.clone();
                f.labels = v.labels.clone();
            }
        }
        Ok(fresh)
    }

    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord> {
        self.writable()?;
        let Some(v) = self.read_issue(&record.id, true).await? else {
            bail!("change {} is no longer in Jira", record.id);
        };
        let mut current = self.to_record(&v, &record.key, None);
        // Keep what this run knows that the re-read cannot (approvals read a moment ago).
        current.approved_by = current.approved_by.or_else(|| record.approved_by.clone());
        current.approved_at = current.approved_at.or(record.approved_at);
        match self.status_state(&v) {
            Some(State::Closed | State::Cancelled | State::Rejected) => {
                tracing::warn!(
                    "{} is already {:?}; not moved back to {:?}",
                    v.key,
                    v.status,
                    self.cfg.statuses.implementing
                );
                return Ok(current);
            }
            Some(State::Implementing) if current.deployed_at.is_some() => return Ok(current),
            _ => {}
        }
        current.deployed_at = Some(current.deployed_at.unwrap_or(now));
        let stored = Stored::of(&current);
        let implementing = self.cfg.statuses.implementing.clone();
        let observing = current
            .decision
            .as_ref()
            .is_some_and(|d| d.mode == Mode::Observe);
        let moved = if observing
            && !eq(&v.status, &implementing)
            && self.offered(&v, "implementing", &implementing).is_none()
        {
            // Observe mode never blocks: a change still in its approval step stays there.
            tracing::warn!(
                "observe mode: {} stays in {:?}; the workflow offers no move to {implementing:?} from there",
                v.key,
                v.status
            );
            false
        } else {
            self.transition(&v, "implementing", &implementing, Some(&stored), None)
                .await?
        };
        if !moved {
            // The workflow made the move; still record when the deploy started.
            self.edit(&v.key, &json!({ "properties": Self::property(&stored) }))
                .await?;
        }
        if moved || eq(&v.status, &implementing) {
            current.state = State::Implementing;
        }
        Ok(current)
    }

    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        _now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        self.writable()?;
        let Some(v) = self.read_issue(&record.id, true).await? else {
            bail!("change {} is no longer in Jira", record.id);
        };
        let mut current = self.to_record(&v, &record.key, None);
        if current.outcome.is_some() {
            return Ok(current);
        }
        // A change whose gate never passed was not deployed, whatever the job says.
        let kept = if current.deployed_at.is_none() {
            Outcome::Cancelled
        } else {
            outcome
        };
        let mut text = vec![adf::para(vec![
            json!({"type": "text", "text": format!("changegate: deploy {kept}"), "marks": [{"type": "strong"}]}),
        ])];
        if kept != outcome {
            text.push(adf::line(&format!("The gate never passed, so nothing was deployed: recorded as {kept} (the job said {outcome}).")));
        }
        if !notes.trim().is_empty() {
            text.push(adf::line(notes));
        }
        self.comment(&v.key, adf::doc(text)).await?;
        current.outcome = Some(kept);
        let stored = Stored::of(&current);
        self.edit(
            &v.key,
            &json!({
                "update": { "labels": [{ "add": labels::outcome(kept) }] },
                "properties": Self::property(&stored),
            }),
        )
        .await?;
        let s = &self.cfg.statuses;
        let r = &self.cfg.resolutions;
        let (role, status, resolution) = match kept {
            Outcome::Success => ("done", s.done.clone(), r.done.clone()),
            Outcome::Failure => ("failed", s.failed.clone(), r.failed.clone()),
            Outcome::Cancelled => ("cancelled", s.cancelled.clone(), r.cancelled.clone()),
        };
        match self.status_state(&v) {
            // Declined stays declined.
            Some(State::Rejected) => current.state = State::Rejected,
            // Closed already, by the workflow or by hand: the move is skipped.
            Some(closed @ (State::Closed | State::Cancelled)) => {
                if !eq(&v.status, &status) {
                    tracing::warn!(
                        "{} is already closed as {:?}; not moved to {status:?}",
                        v.key,
                        v.status
                    );
                } else {
                    tracing::info!(
                        "{} is already in {:?}; no transition needed",
                        v.key,
                        v.status
                    );
                }
                current.state = closed;
            }
            _ => {
                self.transition(&v, role, &status, None, Some(&resolution))
                    .await?;
                current.state = if kept == Outcome::Cancelled {
                    State::Cancelled
                } else {
                    State::Closed
                };
            }
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn labels_are_plain_and_distinct() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let a = labels::key("acme/payments-api", "production", sha);
        let b = labels::key("acme/payments-api", "staging", sha);
        assert_ne!(a, b);
        assert!(a.starts_with(&labels::service("acme/payments-api", "production")));
        assert!(a.ends_with(sha));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(a.len() < 255);
        let day = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(labels::parse_day(&labels::day(day)), Some(day));
        assert_eq!(
            labels::kind(DecisionKind::PreApproved),
            "changegate-pre-approved"
        );
    }

    #[test]
    fn jira_words_quotes_both_error_shapes() {
        let platform = r#"{"errorMessages":["Field 'priority' is required"],"errors":{"customfield_10100":"Backout plan is required."}}"#;
        assert_eq!(
            jira_words(platform),
            "Field 'priority' is required; customfield_10100: Backout plan is required."
        );
        let jsm = r#"{"errorMessage":"The request type is invalid","i18nErrorMessage":{"i18nKey":"sd.x","parameters":[]}}"#;
        assert_eq!(jira_words(jsm), "The request type is invalid");
        assert_eq!(jira_words("<html><body>Unauthorized</body></html>"), "");
        assert_eq!(jira_words(""), "");
    }

    #[test]
    fn approvals_from_the_reference_payload() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/jira/servicedeskapi/get-approvals.json"
        ));
        let Ok(text) = text else { return };
        let v: Value = serde_json::from_str(&text).unwrap();
        // The example holds one approved and one declined approval: declined wins. (Its
        // declined approval marks no approver as declining: whoever answered is named.)
        match parse_approvals(&v) {
            Verdict::Declined { by, at } => {
                assert_eq!(by.as_deref(), Some("Fred F. User"));
                assert!(at.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approvals_pending_and_approved() {
        let pending = json!({"values": [{"id": "1", "finalDecision": "pending", "approvers": []}]});
        assert_eq!(parse_approvals(&pending), Verdict::Pending);
        assert_eq!(parse_approvals(&json!({"values": []})), Verdict::Pending);
        let ok = json!({"values": [{"id": "1", "finalDecision": "approved", "approvers": [
            {"approver": {"displayName": "Ada"}, "approverDecision": "approved"},
            {"approver": {"displayName": "Bob"}, "approverDecision": "pending"}]}]});
        assert!(
            matches!(parse_approvals(&ok), Verdict::Approved { by: Some(b), .. } if b == "Ada")
        );
    }

    #[test]
    fn issue_from_the_reference_payload() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/reference/jira/rest-api/get-issue.v3.json"
        ));
        let Ok(text) = text else { return };
        let v = IssueView::parse(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(v.key, "KP-19");
        assert_eq!(v.id, 10032);
        assert_eq!(v.status, "Backlog");
        assert_eq!(v.category, "new");
        assert_eq!(v.labels, vec!["test".to_string()]);
        assert!(v.created.is_some());
        assert!(!v.is_change());
    }

    #[test]
    fn tallies_by_decided_day() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        let day = |y, m, d| labels::day(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        let mut sprints = BTreeMap::new();
        let pre = labels::kind(DecisionKind::PreApproved);
        let ok = labels::outcome(Outcome::Success);
        let bad = labels::outcome(Outcome::Failure);
        tally_labels(
            &[pre.clone(), ok.clone(), day(2026, 1, 5)],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(
            &[pre.clone(), bad, day(2026, 1, 18)],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(
            &[
                pre.clone(),
                labels::EMERGENCY.into(),
                ok.clone(),
                day(2026, 1, 19),
            ],
            &cal,
            -5,
            3,
            &mut sprints,
        );
        tally_labels(&[pre, ok, day(2025, 1, 1)], &cal, -5, 3, &mut sprints);
        assert_eq!(
            sprints[&0],
            SprintTally {
                succeeded: 1,
                failed: 1,
                pre_approved: 2,
                ..SprintTally::default()
            }
        );
        assert_eq!(
            sprints[&1],
            SprintTally {
                succeeded: 1,
                emergency: 1,
                ..SprintTally::default()
            }
        );
        assert_eq!(sprints.len(), 2);
    }

    #[test]
    fn decision_from_labels_keeps_kind_mode_and_emergency() {
        let d = decision_from_labels(&[
            labels::kind(DecisionKind::NeedsApproval),
            labels::OBSERVE.into(),
            labels::EMERGENCY.into(),
        ])
        .unwrap();
        assert_eq!(d.kind, DecisionKind::NeedsApproval);
        assert_eq!(d.mode, Mode::Observe);
        assert!(d.emergency.is_some());
        assert!(decision_from_labels(&["x".into()]).is_none());
    }

    #[test]
    fn jql_literals_are_escaped() {
        assert_eq!(q(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(urlencode("CHG-12"), "CHG-12");
        assert_eq!(urlencode("../x"), "%2E%2E%2Fx");
    }
}
