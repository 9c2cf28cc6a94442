//! The ServiceNow backend: change requests on a ServiceNow instance.
//!
//! * **Identity.** The correlation key (cut to 100 characters, service part first) is the
//!   change's `correlation_id`; `correlation_display` is `changegate <decision date>`. Lookups
//!   are by `correlation_id`, the oldest record winning.
//! * **Types.** Pre-approved → a standard change from the configured template
//!   (`sn_chg_rest`); needs approval → a normal change moved to Assess; a declared emergency →
//!   an emergency change (moved to Authorize when it needs approval); undecided (`open`) or
//!   blocked → a normal change left in New.
//! * **The decision** is written to `justification` and as a work note, in a text changegate
//!   parses back ([`text::parse_decision`]): a re-run finds the decision standing and writes
//!   nothing. When that text is gone, kind, mode and emergency are rebuilt from `type`,
//!   `approval` and `state` (see [`fallback_decision`]).
//! * **Concurrency.** Lookup, create, look up again: when two runs created a record for the
//!   same key, the later one deletes its own (or, if the instance refuses, cancels it and
//!   clears its `correlation_id`) and carries on with the oldest. See `docs/servicenow.md`.
//! * **State moves** follow the change model one step at a time (the instance refuses
//!   jumps), and every step the instance's own workflow already made is skipped.
//! * **History** costs two requests whatever its size: one Aggregate API call grouped by
//!   decision day, type, state and close code, and one bounded query for the most recent
//!   closed changes (whose `X-Total-Count` is the all-time total).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{HistoryQuery, Itsm, decision_stands};
use crate::config::{BackendKind, ServiceNowSection};
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, History, Mode, Outcome,
    SprintCalendar, SprintTally, State,
};
use crate::http::HttpClient;

mod client;
mod text;

use client::{Body, Credentials, SnClient, SnError};

const TABLE: &str = "api/now/table/change_request";
const STATS: &str = "api/now/stats/change_request";
const APPROVALS: &str = "api/now/table/sysapproval_approver";
const CHG: &str = "api/sn_chg_rest/change";

/// What changegate reads of a change request.
const READ_FIELDS: &str = "sys_id,number,type,state,approval,approval_set,correlation_id,correlation_display,\
                           justification,close_code,work_start,sys_created_on";

/// `correlation_id` holds 100 characters.
const KEY_MAX: usize = 100;
/// The label changegate puts in `correlation_display`, before the decision date.
const DISPLAY: &str = "changegate";

// Out-of-box `change_request.state` values.
const NEW: i64 = -5;
const ASSESS: i64 = -4;
const AUTHORIZE: i64 = -3;
const SCHEDULED: i64 = -2;
const IMPLEMENT: i64 = -1;
const REVIEW: i64 = 0;
const CLOSED: i64 = 3;
const CANCELED: i64 = 4;

/// The forward path of each change model (base system; Canceled is reachable from any state
/// before Review).
fn model(kind: &str) -> &'static [i64] {
    match kind {
        "standard" => &[NEW, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
        "emergency" => &[NEW, AUTHORIZE, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
        _ => &[NEW, ASSESS, AUTHORIZE, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
    }
}

fn state_label(state: i64) -> String {
    match state {
        NEW => "New".into(),
        ASSESS => "Assess".into(),
        AUTHORIZE => "Authorize".into(),
        SCHEDULED => "Scheduled".into(),
        IMPLEMENT => "Implement".into(),
        REVIEW => "Review".into(),
        CLOSED => "Closed".into(),
        CANCELED => "Canceled".into(),
        other => format!("state {other}"),
    }
}

/// One change request as the instance returned it, every value flattened to a string (the
/// Table API sends strings; `sn_chg_rest` sends `{value, display_value}` with typed values).
#[derive(Debug, Clone, Default)]
struct Raw(HashMap<String, String>);

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Object(m) => m.get("value").map(scalar).unwrap_or_default(),
        Value::Null | Value::Array(_) => String::new(),
    }
}

impl Raw {
    fn from_value(v: &Value) -> Result<Raw> {
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("expected a change request object, got {}", kind_of_json(v)))?;
        Ok(Raw(obj
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect()))
    }

    fn get(&self, field: &str) -> &str {
        self.0.get(field).map(|s| s.trim()).unwrap_or("")
    }

    fn sys_id(&self) -> &str {
        self.get("sys_id")
    }

    fn number(&self) -> &str {
        self.get("number")
    }

    fn state(&self) -> Option<i64> {
        let s = self.get("state");
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
    }

    fn kind(&self) -> &str {
        self.get("type")
    }

    fn at(&self, field: &str) -> Option<DateTime<Utc>> {
        parse_sn_time(self.get(field))
    }
}

fn kind_of_json(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, as the API sends raw values).
fn parse_sn_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| Utc.from_utc_datetime(&t))
}

fn sn_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Values inside an encoded query: `^` separates terms, `^^` is a literal caret.
fn q(value: &str) -> String {
    value.replace('^', "^^")
}

/// The `correlation_id` prefix shared by every change of a service in an environment.
fn key_prefix(service_id: &str, environment: &str) -> String {
    let sha = "0".repeat(40);
    let full = CorrelationKey::new(service_id, environment, &sha).fitted(KEY_MAX);
    full[..full.len() - sha.len()].to_string()
}

fn display_for(at: DateTime<Utc>) -> String {
    format!("{DISPLAY} {}", at.format("%Y-%m-%d"))
}

/// The decision day written in `correlation_display`.
fn display_day(display: &str) -> Option<NaiveDate> {
    let rest = display.trim().strip_prefix(DISPLAY)?;
    NaiveDate::parse_from_str(rest.trim(), "%Y-%m-%d").ok()
}

/// The change type a decision calls for.
fn type_for(decision: Option<&Decision>) -> &'static str {
    match decision {
        Some(d) if d.emergency.is_some() => "emergency",
        Some(d) if d.kind == DecisionKind::PreApproved => "standard",
        _ => "normal",
    }
}

/// Whether a refused state move is a warning rather than an error: in observe mode the gate
/// never blocks, and an emergency goes ahead before its (retrospective) approval.
fn tolerant(record: &ChangeRecord) -> bool {
    record
        .decision
        .as_ref()
        .is_some_and(|d| d.mode == Mode::Observe || d.emergency.is_some())
}

/// A decision rebuilt from the record's fields when its text is not there (a human edited
/// `justification`, or the template owns it). Kind from `type`, `approval` and `state`;
/// mode enforce; rules unknown; sprint from the decision day.
fn fallback_decision(raw: &Raw, calendar: &SprintCalendar) -> Option<Decision> {
    let emergency = (raw.kind() == "emergency").then(|| "emergency change".to_string());
    let approval = raw.get("approval");
    let kind = match raw.kind() {
        "standard" => DecisionKind::PreApproved,
        "emergency" if matches!(approval, "requested" | "rejected") => DecisionKind::NeedsApproval,
        "emergency" => DecisionKind::PreApproved,
        _ if raw.state() == Some(NEW)
            && !matches!(approval, "requested" | "approved" | "rejected") =>
        {
            return None;
        }
        _ => DecisionKind::NeedsApproval,
    };
    let day = display_day(raw.get("correlation_display"))
        .map(|d| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
    Some(Decision {
        kind,
        rules: Vec::new(),
        mode: Mode::Enforce,
        emergency,
        sprint: day.map(|d| calendar.index_of(d)).unwrap_or_default(),
        allowance: 0,
        allowance_used: 0,
        clock_override: None,
    })
}

/// The record's state in changegate's terms.
fn map_state(raw: &Raw) -> State {
    let approval = raw.get("approval");
    if approval == "rejected" {
        return State::Rejected;
    }
    match raw.state() {
        Some(CLOSED) => State::Closed,
        Some(CANCELED) => State::Cancelled,
        Some(IMPLEMENT) | Some(REVIEW) => State::Implementing,
        state => match approval {
            "approved" => State::Approved,
            "requested" => State::AwaitingApproval,
            _ => match state {
                Some(ASSESS) | Some(AUTHORIZE) => State::AwaitingApproval,
                Some(SCHEDULED) => State::Approved,
                _ => State::New,
            },
        },
    }
}

/// A comment read from a journal field: the newest entry without its
/// `2026-03-02 10:00:00 - Jane Doe (Comments)` header.
fn journal_text(text: &str) -> Option<String> {
    let is_header = |l: &str| {
        let l = l.trim();
        l.len() > 22
            && parse_sn_time(l.get(..19).unwrap_or("")).is_some()
            && l[19..].starts_with(" - ")
            && l.ends_with(')')
    };
    let mut lines = text.lines().peekable();
    let mut out = Vec::new();
    if lines.peek().is_some_and(|l| is_header(l)) {
        lines.next();
    }
    for line in lines {
        if is_header(line) {
            break;
        }
        out.push(line);
    }
    let joined = out.join("\n").trim().to_string();
    (!joined.is_empty()).then_some(joined)
}

#[derive(Clone)]
struct Recent {
    prefix: String,
    /// `(correlation_id, close_code)`, newest closed first; one more than the window.
    rows: Vec<(String, String)>,
    total: Option<u64>,
}

#[derive(Default)]
struct Cache {
    /// The standard change template's sys_id, looked up once per process.
    template: Option<String>,
    /// Lookups by key made by `find`, used by the `open` that follows.
    found: HashMap<String, Option<Raw>>,
    /// The last state seen of each record, by number.
    raws: HashMap<String, Raw>,
    recent: Option<Recent>,
}

/// The backend.
pub struct ServiceNow {
    api: SnClient,
    cfg: ServiceNowSection,
    calendar: SprintCalendar,
    window: u32,
    cache: Mutex<Cache>,
}

impl ServiceNow {
    /// Builds the client from the settings and the `CHANGEGATE_SERVICENOW_*` credentials.
    /// Nothing is sent until the first call.
    pub fn connect(settings: &crate::settings::Settings) -> Result<ServiceNow> {
        let cfg = settings.servicenow.clone();
        let url = cfg.url.as_deref().map(str::trim).filter(|u| !u.is_empty()).ok_or_else(|| {
            anyhow!(
                "the servicenow backend needs the instance URL: set {} or `url` in [servicenow]",
                crate::env::SERVICENOW_URL
            )
        })?;
        let base = url::Url::parse(&format!("{}/", url.trim_end_matches('/')))
            .with_context(|| format!("invalid ServiceNow URL {url:?}"))?;
        if !matches!(base.scheme(), "https" | "http") {
            bail!("invalid ServiceNow URL {url:?}: it must start with https://");
        }
        let creds = Credentials::from_env()?;
        tracing::debug!("ServiceNow at {} with {}", base, creds.describe());
        let http = HttpClient::new("ServiceNow")?;
        Ok(ServiceNow {
            api: SnClient::new(http, base, creds),
            cfg,
            calendar: settings.calendar,
            window: settings.policy.params.window,
            cache: Mutex::new(Cache::default()),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a way that
        // matters: every entry is a whole value.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, raw: &Raw) {
        if !raw.number().is_empty() {
            self.cache()
                .raws
                .insert(raw.number().to_string(), raw.clone());
        }
    }

    fn url_of(&self, raw: &Raw) -> String {
        format!(
            "{}nav_to.do?uri=change_request.do?sys_id={}",
            self.api.base(),
            raw.sys_id()
        )
    }

    fn to_record(&self, raw: &Raw) -> ChangeRecord {
        let parsed = text::parse_decision(raw.get("justification"));
        let decided_at = parsed.as_ref().map(|(_, at)| *at);
        let decision = parsed
            .map(|(d, _)| d)
            .or_else(|| fallback_decision(raw, &self.calendar));
        let state = map_state(raw);
        let outcome = match raw.state() {
            Some(CLOSED) => {
                let code = raw.get("close_code");
                if code == self.cfg.close_code_failure {
                    Some(Outcome::Failure)
                } else if code.is_empty() {
                    None
                } else {
                    Some(Outcome::Success)
                }
            }
            Some(CANCELED) => Some(Outcome::Cancelled),
            _ => None,
        };
        ChangeRecord {
            id: raw.number().to_string(),
            url: Some(self.url_of(raw)),
            key: raw.get("correlation_id").to_string(),
            state,
            emergency_reason: decision.as_ref().and_then(|d| d.emergency.clone()),
            decision,
            outcome,
            approved_by: None,
            approval_comment: None,
            opened_at: raw.at("sys_created_on"),
            decided_at,
            approved_at: raw.at("approval_set"),
            deployed_at: raw.at("work_start"),
            incidents: Vec::new(),
        }
    }

    /// The result object of a single-record answer (`sn_chg_rest` docs samples wrap it in
    /// an array of one).
    fn single(reply: &client::Reply) -> Result<Raw> {
        let v: Value = reply.json()?;
        let result = v
            .get("result")
            .ok_or_else(|| anyhow!("ServiceNow answered {} without a `result`", reply.what))?;
        let obj = match result {
            Value::Array(items) => items.first().ok_or_else(|| {
                anyhow!("ServiceNow answered {} with an empty `result`", reply.what)
            })?,
            other => other,
        };
        let raw = Raw::from_value(obj)
            .with_context(|| format!("ServiceNow's answer to {}", reply.what))?;
        if raw.sys_id().is_empty() {
            bail!(
                "ServiceNow answered {} with a record that has no sys_id",
                reply.what
            );
        }
        Ok(raw)
    }

    fn list(reply: &client::Reply) -> Result<Vec<Raw>> {
        let v: Value = reply.json()?;
        match v.get("result") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    Raw::from_value(i)
                        .with_context(|| format!("ServiceNow's answer to {}", reply.what))
                })
                .collect(),
            Some(other) => bail!(
                "ServiceNow answered {} with a `result` that is {}, not a list",
                reply.what,
                kind_of_json(other)
            ),
            None => bail!("ServiceNow answered {} without a `result`", reply.what),
        }
    }

    fn read_query(query: String, limit: u32) -> Vec<(&'static str, String)> {
        vec![
            ("sysparm_query", query),
            ("sysparm_fields", READ_FIELDS.to_string()),
            ("sysparm_limit", limit.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ]
    }

    /// Every record holding `key`, oldest first (the oldest is the change).
    async fn by_key(&self, key: &str, limit: u32) -> Result<Vec<Raw>> {
        let query = format!(
            "correlation_id={}^ORDERBYsys_created_on^ORDERBYnumber",
            q(key)
        );
        let reply = self
            .api
            .call(
                Method::GET,
                TABLE,
                &Self::read_query(query, limit),
                Body::None,
            )
            .await?;
        let rows = Self::list(&reply)?;
        for raw in &rows {
            self.remember(raw);
        }
        Ok(rows)
    }

    async fn lookup(&self, key: &str) -> Result<Option<Raw>> {
        let rows = self.by_key(key, 2).await?;
        if rows.len() > 1 {
            tracing::warn!(
                "two ServiceNow changes hold the key {key}: {} and {}; using the older, {}",
                rows[0].number(),
                rows[1].number(),
                rows[0].number()
            );
        }
        Ok(rows.into_iter().next())
    }

    /// Reads one record again by sys_id.
    async fn read(&self, raw: &Raw) -> Result<Raw> {
        let path = format!("{TABLE}/{}", raw.sys_id());
        let query = [
            ("sysparm_fields", READ_FIELDS.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ];
        let reply = self
            .api
            .call(Method::GET, &path, &query, Body::None)
            .await?;
        let fresh = Self::single(&reply)?;
        self.remember(&fresh);
        Ok(fresh)
    }

    /// The last seen state of a record this process read, or a fresh read by number.
    async fn raw_for(&self, record: &ChangeRecord) -> Result<Raw> {
        if let Some(raw) = self.cache().raws.get(&record.id).cloned() {
            return Ok(raw);
        }
        self.by_number(&record.id)
            .await?
            .ok_or_else(|| anyhow!("ServiceNow has no change {}", record.id))
    }

    async fn by_number(&self, number: &str) -> Result<Option<Raw>> {
        let query = format!("number={}", q(number));
        let reply = self
            .api
            .call(Method::GET, TABLE, &Self::read_query(query, 1), Body::None)
            .await?;
        let raw = Self::list(&reply)?.into_iter().next();
        if let Some(raw) = &raw {
            self.remember(raw);
        }
        Ok(raw)
    }

    /// PATCHes fields of a record and returns it as stored.
    async fn patch(&self, raw: &Raw, fields: Map<String, Value>) -> Result<Raw> {
        let path = format!("{TABLE}/{}", raw.sys_id());
        let query = [
            ("sysparm_fields", READ_FIELDS.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ];
        let body = Value::Object(fields);
        let reply = self
            .api
            .call(Method::PATCH, &path, &query, Body::Json(&body))
            .await?;
        let fresh = Self::single(&reply)?;
        self.remember(&fresh);
        Ok(fresh)
    }

    /// Moves a record forward along its change model to `target`, one step per update (the
    /// instance refuses jumps). Steps the instance already made are skipped; a refused step
    /// is re-read first, in case a workflow or a concurrent run moved it meanwhile. `extra`
    /// rides along with the first update that succeeds. On refusal returns the record as last
    /// read, with the reason.
    async fn walk(
        &self,
        mut raw: Raw,
        target: i64,
        mut extra: Map<String, Value>,
    ) -> std::result::Result<Raw, (Raw, anyhow::Error)> {
        loop {
            let path = model(raw.kind());
            let Some(current) = raw.state() else {
                let e = anyhow!(
                    "change {} has an unreadable state {:?}",
                    raw.number(),
                    raw.get("state")
                );
                return Err((raw, e));
            };
            let (Some(at), Some(goal)) = (
                path.iter().position(|s| *s == current),
                path.iter().position(|s| *s == target),
            ) else {
                let e = anyhow!(
                    "change {} is in {}, from which changegate cannot move it to {}",
                    raw.number(),
                    state_label(current),
                    state_label(target)
                );
                return Err((raw, e));
            };
            if at >= goal {
                if !extra.is_empty() {
                    return match self.patch(&raw, extra).await {
                        Ok(r) => Ok(r),
                        Err(e) => Err((raw, e)),
                    };
                }
                return Ok(raw);
            }
            let next = path[at + 1];
            let mut fields = extra.clone();
            fields.insert("state".into(), json!(next.to_string()));
            match self.patch(&raw, fields).await {
                Ok(moved) if moved.state() == Some(current) => {
                    // Some instances answer 200 and leave the state as it was.
                    let e = anyhow!(
                        "ServiceNow kept change {} in {} when asked to move it to {} (the change model or a business rule refused)",
                        raw.number(),
                        state_label(current),
                        state_label(next)
                    );
                    return Err((moved, e));
                }
                Ok(moved) => {
                    tracing::info!(
                        "moved {} from {} to {}",
                        moved.number(),
                        state_label(current),
                        state_label(next)
                    );
                    extra.clear();
                    raw = moved;
                }
                Err(e) => {
                    let fresh = match self.read(&raw).await {
                        Ok(f) => f,
                        Err(_) => return Err((raw, e)),
                    };
                    let moved_on = fresh
                        .state()
                        .and_then(|s| model(fresh.kind()).iter().position(|p| *p == s))
                        .is_some_and(|p| p > at);
                    if !moved_on {
                        let e = e.context(format!(
                            "cannot move change {} from {} to {}",
                            raw.number(),
                            state_label(current),
                            state_label(next)
                        ));
                        return Err((fresh, e));
                    }
                    tracing::info!(
                        "{} was moved on to {} meanwhile",
                        fresh.number(),
                        fresh.state().map(state_label).unwrap_or_default()
                    );
                    raw = fresh;
                }
            }
        }
    }

    /// The standard change template's sys_id: the configured value when it is one, else the
    /// template looked up by name (once per process).
    async fn template_id(&self) -> Result<String> {
        let name = self
            .cfg
            .standard_template
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "pre-approved changes are standard changes created from a template: set `standard_template` in \
                     [servicenow] to the name (or sys_id) of the template to use"
                )
            })?;
        if name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(name.to_ascii_lowercase());
        }
        if let Some(id) = self.cache().template.clone() {
            return Ok(id);
        }
        let path = format!("{CHG}/standard/template");
        let query = [
            ("sysparm_query", format!("active=true^name={}", q(name))),
            ("sysparm_limit", "2".to_string()),
        ];
        let reply = self
            .api
            .call(Method::GET, &path, &query, Body::None)
            .await?;
        let items = Self::list(&reply)?;
        let id = items.first().map(|t| t.sys_id().to_string()).filter(|id| !id.is_empty()).ok_or_else(|| {
            anyhow!(
                "ServiceNow has no active standard change template named {name:?} (GET /{path}); create it or fix \
                 `standard_template` in [servicenow]"
            )
        })?;
        if items.len() > 1 {
            tracing::warn!(
                "more than one active standard change template is named {name:?}; using {id}"
            );
        }
        self.cache().template = Some(id.clone());
        Ok(id)
    }

    /// The fields written when a change is created or (re-)decided.
    fn fields_for(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Map<String, Value> {
        let mut f = Map::new();
        for (k, v) in &self.cfg.fields {
            f.insert(k.clone(), json!(v));
        }
        if let Some(group) = self
            .cfg
            .assignment_group
            .as_deref()
            .filter(|g| !g.trim().is_empty())
        {
            f.insert("assignment_group".into(), json!(group.trim()));
        }
        f.insert(
            "short_description".into(),
            json!(text::cut(&text::one_line(&facts.summary()), 160)),
        );
        f.insert("description".into(), json!(text::description(facts)));
        f.insert("correlation_id".into(), json!(facts.key().fitted(KEY_MAX)));
        f.insert("correlation_display".into(), json!(display_for(now)));
        match decision {
            Some(d) => {
                let note = text::render_decision(d, now);
                f.insert("justification".into(), json!(note));
                f.insert("work_notes".into(), json!(note));
            }
            None => {
                f.insert(
                    "work_notes".into(),
                    json!("Opened by changegate; the gate has not decided this change yet."),
                );
            }
        }
        f
    }

    /// Creates the record: a standard change from the template, or a normal or emergency one.
    async fn create(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<Raw> {
        let kind = type_for(decision);
        let path = match kind {
            "standard" => format!("{CHG}/standard/{}", self.template_id().await?),
            other => format!("{CHG}/{other}"),
        };
        let body = Value::Object(self.fields_for(facts, decision, now));
        let reply = self
            .api
            .call(Method::POST, &path, &[], Body::Json(&body))
            .await?;
        let raw = Self::single(&reply)?;
        let v: Value = reply.json()?;
        let ignored: Vec<String> = v
            .pointer("/result/__meta/ignoredFields")
            .or_else(|| v.pointer("/__meta/ignoredFields"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !ignored.is_empty() {
            tracing::info!(
                "ServiceNow did not apply these fields on {}: {}",
                raw.number(),
                ignored.join(", ")
            );
        }
        tracing::info!(
            "created {} ({kind} change) for {}",
            raw.number(),
            facts.key()
        );
        self.remember(&raw);
        Ok(raw)
    }

    /// After a create: look the key up again. When another run created a record for the same
    /// key first, ours goes (deleted, or cancelled with its key cleared when the instance does
    /// not allow deletes) and the older one is returned.
    async fn settle(&self, key: &str, mine: Raw) -> Result<(Raw, bool)> {
        let rows = self.by_key(key, 10).await?;
        let Some(first) = rows.first() else {
            return Ok((mine, true));
        };
        if first.sys_id() == mine.sys_id() {
            return Ok((mine, true));
        }
        let winner = first.clone();
        tracing::warn!(
            "another run created {} for {key} at the same time; dropping the duplicate {}",
            winner.number(),
            mine.number()
        );
        let path = format!("{TABLE}/{}", mine.sys_id());
        if let Err(e) = self.api.call(Method::DELETE, &path, &[], Body::None).await {
            tracing::info!(
                "could not delete the duplicate {} ({e:#}); cancelling it instead",
                mine.number()
            );
            let mut f = Map::new();
            f.insert("state".into(), json!(CANCELED.to_string()));
            f.insert("correlation_id".into(), json!(""));
            f.insert(
                "correlation_display".into(),
                json!(format!("{DISPLAY} duplicate of {}", winner.number())),
            );
            f.insert(
                "work_notes".into(),
                json!(format!(
                    "Duplicate of {}: two changegate runs opened a change for {key} at once.",
                    winner.number()
                )),
            );
            f.insert(
                "close_notes".into(),
                json!(format!("Duplicate of {}", winner.number())),
            );
            if let Err(e) = self.patch(&mine, f).await {
                tracing::warn!(
                    "the duplicate {} could not be cancelled either ({e:#}); cancel it by hand",
                    mine.number()
                );
            }
        }
        self.cache().raws.remove(mine.number());
        Ok((winner, false))
    }

    /// Brings a record in line with its decision: a change that needs approval is sent for
    /// it (normal → Assess, emergency → Authorize) if that has not happened yet, e.g. after
    /// a crash between create and this update.
    async fn complete(&self, raw: Raw, decision: Option<&Decision>) -> Result<Raw> {
        let needs = decision.is_some_and(|d| d.kind == DecisionKind::NeedsApproval);
        let asked = matches!(raw.get("approval"), "requested" | "approved" | "rejected");
        if !needs || asked || raw.state() != Some(NEW) {
            return Ok(raw);
        }
        let target = if raw.kind() == "emergency" {
            AUTHORIZE
        } else {
            ASSESS
        };
        self.walk(raw, target, Map::new())
            .await
            .map_err(|(_, e)| e.context("cannot send the change for approval"))
    }

    /// Writes a (new) decision on an existing record that does not hold one that stands.
    async fn redecide(
        &self,
        facts: &ChangeFacts,
        decision: &Decision,
        raw: Raw,
        now: DateTime<Utc>,
    ) -> Result<Raw> {
        let wanted = type_for(Some(decision));
        if raw.kind() == wanted && raw.state() == Some(NEW) {
            let mut f = self.fields_for(facts, Some(decision), now);
            f.remove("correlation_id");
            if wanted == "standard" {
                // The template owns these on a standard change.
                f.remove("description");
            }
            let written = self.patch(&raw, f).await?;
            tracing::info!(
                "wrote the decision ({}) on {}",
                decision.kind,
                written.number()
            );
            return self.complete(written, Some(decision)).await;
        }
        // A change of type (e.g. a blocked normal change now pre-approved, or an emergency
        // declared while waiting for approval) cannot be made in place: the old record is
        // cancelled with its key cleared, and a new one of the right type takes the key.
        let key = facts.key().fitted(KEY_MAX);
        let mut f = Map::new();
        f.insert("state".into(), json!(CANCELED.to_string()));
        f.insert("correlation_id".into(), json!(""));
        f.insert(
            "correlation_display".into(),
            json!(format!("{DISPLAY} superseded")),
        );
        f.insert(
            "close_notes".into(),
            json!(format!("Superseded by a {wanted} change for {key}")),
        );
        f.insert(
            "work_notes".into(),
            json!(format!(
                "changegate re-decided this deploy as {} ({wanted} change); this {} change is cancelled and a new one opened.",
                decision.kind,
                raw.kind()
            )),
        );
        self.patch(&raw, f).await.with_context(|| {
            format!(
                "cannot cancel {} to replace it with a {wanted} change",
                raw.number()
            )
        })?;
        let created = self.create(facts, Some(decision), now).await?;
        tracing::info!("{} supersedes {}", created.number(), raw.number());
        let (settled, _) = self.settle(&key, created).await?;
        self.complete(settled, Some(decision)).await
    }

    /// The most recent closed changes of a service+environment (one more than the window),
    /// and the total. Cached: `last_change_sha` and `history` share it.
    async fn recent(&self, prefix: &str) -> Result<Recent> {
        if let Some(r) = self.cache().recent.clone().filter(|r| r.prefix == prefix) {
            return Ok(r);
        }
        let mut codes: Vec<&str> = vec![
            &self.cfg.close_code_success,
            "successful_issues",
            &self.cfg.close_code_failure,
        ];
        codes.dedup();
        let query = format!(
            "correlation_idSTARTSWITH{}^state={CLOSED}^close_codeIN{}^ORDERBYDESCclosed_at",
            q(prefix),
            q(&codes.join(","))
        );
        let params = [
            ("sysparm_query", query),
            ("sysparm_fields", "correlation_id,close_code".to_string()),
            ("sysparm_limit", (self.window + 1).to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ];
        let reply = self
            .api
            .call(Method::GET, TABLE, &params, Body::None)
            .await?;
        let rows = Self::list(&reply)?
            .into_iter()
            .map(|r| {
                (
                    r.get("correlation_id").to_string(),
                    r.get("close_code").to_string(),
                )
            })
            .collect();
        let recent = Recent {
            prefix: prefix.to_string(),
            rows,
            total: reply.total_count(),
        };
        self.cache().recent = Some(recent.clone());
        Ok(recent)
    }

    /// Who decided the approval, and their comment (`sysapproval_approver`). Best effort: an
    /// instance that hides approvals from the integration user costs the comment only.
    async fn approver(&self, raw: &Raw, verdict: &str) -> Option<(String, Option<String>)> {
        let query = [
            (
                "sysparm_query",
                format!(
                    "sysapproval={}^state={verdict}^ORDERBYDESCsys_updated_on",
                    raw.sys_id()
                ),
            ),
            ("sysparm_fields", "approver,comments,state".to_string()),
            ("sysparm_display_value", "true".to_string()),
            ("sysparm_limit", "1".to_string()),
        ];
        let result = async {
            let reply = self
                .api
                .call(Method::GET, APPROVALS, &query, Body::None)
                .await?;
            Self::list(&reply)
        }
        .await;
        match result {
            Ok(rows) => rows.first().map(|r| {
                (
                    r.get("approver").to_string(),
                    journal_text(r.get("comments")),
                )
            }),
            Err(e) => {
                tracing::warn!("could not read who decided {} ({e:#})", raw.number());
                None
            }
        }
    }
}

#[async_trait]
impl Itsm for ServiceNow {
    fn kind(&self) -> BackendKind {
        BackendKind::Servicenow
    }

    async fn history(&self, q_: &HistoryQuery<'_>) -> Result<History> {
        let prefix = key_prefix(q_.service_id, q_.environment);
        let exclude = q_.exclude_key.map(str::to_string);
        let exclude_fitted = q_.exclude_key.map(|k| {
            // The key as stored: the same fitting the writer applies.
            if k.len() <= KEY_MAX {
                k.to_string()
            } else {
                let sha = k.rsplit(':').next().unwrap_or_default();
                CorrelationKey::new(q_.service_id, q_.environment, sha).fitted(KEY_MAX)
            }
        });
        let recent = self.recent(&prefix).await?;
        let skip =
            |key: &str| exclude_fitted.as_deref() == Some(key) || exclude.as_deref() == Some(key);
        let excluded = recent.rows.iter().filter(|(k, _)| skip(k)).count() as u64;
        let outcomes: Vec<Outcome> = recent
            .rows
            .iter()
            .filter(|(k, _)| !skip(k))
            .take(q_.window as usize)
            .map(|(_, code)| {
                if *code == self.cfg.close_code_failure {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            })
            .collect();
        let closed_total = recent
            .total
            .map(|t| t.saturating_sub(excluded))
            .unwrap_or(outcomes.len() as u64);

        let from = q_.calendar.start_of(q_.from_sprint);
        let mut query = format!(
            "correlation_idSTARTSWITH{}^sys_created_on>={}",
            q(&prefix),
            sn_time(from)
        );
        if let Some(k) = &exclude_fitted {
            query.push_str(&format!("^correlation_id!={}", q(k)));
        }
        let params = [
            ("sysparm_query", query),
            ("sysparm_count", "true".to_string()),
            (
                "sysparm_group_by",
                "correlation_display,type,state,close_code".to_string(),
            ),
        ];
        let (body, reply): (Value, _) = self.api.get(STATS, &params).await?;
        let groups = match body.get("result") {
            Some(Value::Array(groups)) => groups.clone(),
            // No group matched: some releases answer a bare `{"stats": {...}}`.
            Some(Value::Object(_)) => Vec::new(),
            _ => bail!("ServiceNow answered {} without a `result`", reply.what),
        };
        let current = q_.calendar.index_of(q_.now);
        let mut sprints: BTreeMap<i64, SprintTally> = BTreeMap::new();
        for g in &groups {
            let count = g
                .pointer("/stats/count")
                .map(scalar)
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or(0);
            let mut by: HashMap<&str, String> = HashMap::new();
            for f in g
                .get("groupby_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(field), Some(value)) =
                    (f.get("field").and_then(Value::as_str), f.get("value"))
                {
                    by.insert(field, scalar(value));
                }
            }
            let Some(day) = by.get("correlation_display").and_then(|d| display_day(d)) else {
                continue;
            };
            let sprint = q_
                .calendar
                .index_of(Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)));
            if sprint < q_.from_sprint || sprint > current {
                continue;
            }
            let tally = sprints.entry(sprint).or_default();
            let state = by.get("state").and_then(|s| s.parse::<i64>().ok());
            let code = by.get("close_code").map(String::as_str).unwrap_or("");
            match state {
                Some(CLOSED) if code == self.cfg.close_code_failure => tally.failed += count,
                Some(CLOSED) if !code.is_empty() => tally.succeeded += count,
                Some(CANCELED) => tally.cancelled += count,
                _ => {}
            }
            match by.get("type").map(String::as_str) {
                Some("standard") => tally.pre_approved += count,
                Some("emergency") => tally.emergency += count,
                _ => {}
            }
        }
        Ok(History {
            closed_total,
            recent: outcomes,
            sprints,
        })
    }

    /// The commit of the last change closed for this service and environment (the last
    /// deploy), from the same query the history's track record uses.
    async fn last_change_sha(&self, service_id: &str, environment: &str) -> Result<Option<String>> {
        let recent = self.recent(&key_prefix(service_id, environment)).await?;
        Ok(recent
            .rows
            .first()
            .and_then(|(key, _)| key.rsplit(':').next())
            .filter(|sha| !sha.is_empty())
            .map(str::to_string))
    }

    async fn find(&self, key: &CorrelationKey) -> Result<Option<ChangeRecord>> {
        let fitted = key.fitted(KEY_MAX);
        let raw = self.lookup(&fitted).await?;
        self.cache().found.insert(fitted, raw.clone());
        Ok(raw.map(|r| self.to_record(&r)))
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let id = id.trim();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let raw = Raw(HashMap::from([(
                "sys_id".to_string(),
                id.to_ascii_lowercase(),
            )]));
            return match self.read(&raw).await {
                Ok(r) => Ok(Some(self.to_record(&r))),
                Err(e)
                    if e.downcast_ref::<SnError>()
                        .is_some_and(|s| s.status == Some(StatusCode::NOT_FOUND)) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            };
        }
        Ok(self.by_number(id).await?.map(|r| self.to_record(&r)))
    }

    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let key = facts.key().fitted(KEY_MAX);
        let cached = self.cache().found.remove(&key);
        let existing = match cached {
            Some(found) => found,
            None => self.lookup(&key).await?,
        };
        let raw = match existing {
            None => {
                let created = self.create(facts, decision, now).await?;
                match self.settle(&key, created).await? {
                    (mine, true) => self.complete(mine, decision).await?,
                    (theirs, false) => self.apply(facts, decision, theirs, now).await?,
                }
            }
            Some(found) => self.apply(facts, decision, found, now).await?,
        };
        Ok(self.to_record(&raw))
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        let raw = self.raw_for(record).await?;
        let fresh = self.read(&raw).await?;
        let mut updated = self.to_record(&fresh);
        // Keep the decision we wrote when the instance lost its text.
        if updated.decision.is_none()
            || updated
                .decision
                .as_ref()
                .is_some_and(|d| d.rules.is_empty())
        {
            if let Some(d) = record.decision.clone().filter(|d| !d.rules.is_empty()) {
                updated.decision = Some(d);
            }
        }
        let verdict = match updated.state {
            State::Rejected => Some("rejected"),
            State::Approved if record.state == State::AwaitingApproval => Some("approved"),
            _ => None,
        };
        if let Some(verdict) =
            verdict.filter(|_| record.state != updated.state || record.approved_by.is_none())
        {
            if let Some((by, comment)) = self.approver(&fresh, verdict).await {
                updated.approved_by = Some(by).filter(|b| !b.is_empty());
                updated.approval_comment = comment;
            }
        } else {
            updated.approved_by = record.approved_by.clone();
            updated.approval_comment = record.approval_comment.clone();
        }
        Ok(updated)
    }

    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord> {
        let raw = self.raw_for(record).await?;
        if matches!(raw.state(), Some(CLOSED) | Some(CANCELED)) || raw.get("approval") == "rejected"
        {
            return Ok(self.keep(record, &raw));
        }
        let mut extra = Map::new();
        if raw.get("work_start").is_empty() {
            extra.insert("work_start".into(), json!(sn_time(now)));
            extra.insert(
                "work_notes".into(),
                json!("changegate: the gate passed; the deploy starts."),
            );
        }
        match self.walk(raw, IMPLEMENT, extra.clone()).await {
            Ok(r) => Ok(self.keep(record, &r)),
            Err((r, e)) if tolerant(record) => {
                let why = if record
                    .decision
                    .as_ref()
                    .is_some_and(|d| d.mode == Mode::Observe)
                {
                    "observe mode"
                } else {
                    "an emergency change; it awaits its approval in ServiceNow"
                };
                tracing::warn!("{e:#}; the deploy goes ahead ({why})");
                let r = if r.get("work_start").is_empty() && !extra.is_empty() {
                    self.patch(&r, extra).await.unwrap_or(r)
                } else {
                    r
                };
                Ok(self.keep(record, &r))
            }
            Err((_, e)) => Err(e.context(format!("cannot move {} to Implement", record.id))),
        }
    }

    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        // The state first: the instance's own workflow may have moved the change on.
        let raw = self.raw_for(record).await?;
        if matches!(raw.state(), Some(CLOSED) | Some(CANCELED)) {
            return Ok(self.keep(record, &raw));
        }
        let notes = text::defuse(notes);
        // A change whose gate never passed was not deployed, whatever the job says.
        let outcome = if raw.get("work_start").is_empty() {
            Outcome::Cancelled
        } else {
            outcome
        };
        if outcome == Outcome::Cancelled {
            let mut f = Map::new();
            f.insert("state".into(), json!(CANCELED.to_string()));
            f.insert("close_notes".into(), json!(notes));
            f.insert(
                "work_notes".into(),
                json!(format!("changegate: deploy cancelled. {notes}")),
            );
            let r = self
                .patch(&raw, f)
                .await
                .with_context(|| format!("cannot cancel {}", record.id))?;
            return Ok(self.keep(record, &r));
        }
        let code = match outcome {
            Outcome::Failure => &self.cfg.close_code_failure,
            _ => &self.cfg.close_code_success,
        };
        let mut extra = Map::new();
        extra.insert("close_code".into(), json!(code));
        extra.insert("close_notes".into(), json!(notes));
        extra.insert("work_end".into(), json!(sn_time(now)));
        extra.insert(
            "work_notes".into(),
            json!(format!("changegate: deploy {outcome}. {notes}")),
        );
        match self.walk(raw, CLOSED, extra.clone()).await {
            Ok(r) => Ok(self.keep(record, &r)),
            Err((r, e)) if tolerant(record) => {
                tracing::warn!(
                    "{e:#}; the outcome is written on {}, close it in ServiceNow once its approval is done",
                    record.id
                );
                let r = if r.get("close_code").is_empty() {
                    self.patch(&r, extra).await.unwrap_or(r)
                } else {
                    r
                };
                Ok(self.keep(record, &r))
            }
            Err((_, e)) => Err(e.context(format!("cannot close {}", record.id))),
        }
    }
}

impl ServiceNow {
    /// The record as now stored, keeping what the caller already knew (decision text,
    /// approver) when the re-read cannot tell.
    fn keep(&self, before: &ChangeRecord, raw: &Raw) -> ChangeRecord {
        let mut r = self.to_record(raw);
        if r.decision.as_ref().is_none_or(|d| d.rules.is_empty())
            && before
                .decision
                .as_ref()
                .is_some_and(|d| !d.rules.is_empty())
        {
            r.decision = before.decision.clone();
        }
        r.approved_by = before.approved_by.clone();
        r.approval_comment = before.approval_comment.clone();
        r
    }

    /// Applies a decision to an existing record: nothing when the record's own decision
    /// stands (a re-run), otherwise the new decision is written.
    async fn apply(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        raw: Raw,
        now: DateTime<Utc>,
    ) -> Result<Raw> {
        let record = self.to_record(&raw);
        let Some(d) = decision else {
            return Ok(raw);
        };
        if decision_stands(&record, d.emergency.is_some())
            || record.state.is_final()
            || record.state == State::Implementing
        {
            let standing = record.decision.clone();
            return self.complete(raw, standing.as_ref()).await;
        }
        self.redecide(facts, d, raw, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> Raw {
        Raw(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn states_map_to_changegate_terms() {
        let cases = [
            (
                raw(&[
                    ("state", "-5"),
                    ("approval", "approved"),
                    ("type", "standard"),
                ]),
                State::Approved,
            ),
            (
                raw(&[("state", "-5"), ("approval", "not requested")]),
                State::New,
            ),
            (
                raw(&[("state", "-4"), ("approval", "requested")]),
                State::AwaitingApproval,
            ),
            (
                raw(&[("state", "-3"), ("approval", "not requested")]),
                State::AwaitingApproval,
            ),
            (
                raw(&[("state", "-2"), ("approval", "approved")]),
                State::Approved,
            ),
            (
                raw(&[("state", "-1"), ("approval", "approved")]),
                State::Implementing,
            ),
            (
                raw(&[("state", "0"), ("approval", "approved")]),
                State::Implementing,
            ),
            (
                raw(&[("state", "3"), ("approval", "approved")]),
                State::Closed,
            ),
            (
                raw(&[("state", "4"), ("approval", "rejected")]),
                State::Rejected,
            ),
            (
                raw(&[("state", "4"), ("approval", "requested")]),
                State::Cancelled,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(map_state(&r), want, "{:?}", r.0);
        }
    }

    #[test]
    fn sn_chg_rest_values_flatten_to_table_api_strings() {
        let v = json!({"state": {"value": -5.0, "display_value": "New"}, "active": {"value": true}, "sys_id": {"value": "abc"},
                       "assignment_group": {"link": "https://x/api", "value": "g1"}, "__meta": {"ignoredFields": []}});
        let r = Raw::from_value(&v).unwrap();
        assert_eq!(r.get("state"), "-5");
        assert_eq!(r.state(), Some(-5));
        assert_eq!(r.get("active"), "true");
        assert_eq!(r.get("assignment_group"), "g1");
        assert!(!r.0.contains_key("__meta"));
    }

    #[test]
    fn key_prefix_matches_fitted_keys() {
        let sha = "a".repeat(40);
        for service in ["acme/payments-api", &"x".repeat(150)] {
            let key = CorrelationKey::new(service, "production", &sha).fitted(KEY_MAX);
            assert!(key.starts_with(&key_prefix(service, "production")), "{key}");
        }
    }

    #[test]
    fn decision_day_round_trips_through_correlation_display() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            display_day(&display_for(at)),
            NaiveDate::from_ymd_opt(2026, 3, 2)
        );
        assert_eq!(display_day("something else"), None);
    }

    #[test]
    fn fallback_decision_from_type_approval_and_state() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        let d = fallback_decision(
            &raw(&[
                ("type", "standard"),
                ("state", "-5"),
                ("approval", "approved"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(
            (d.kind, d.mode, d.emergency.is_none()),
            (DecisionKind::PreApproved, Mode::Enforce, true)
        );
        let d = fallback_decision(
            &raw(&[
                ("type", "normal"),
                ("state", "-4"),
                ("approval", "requested"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(d.kind, DecisionKind::NeedsApproval);
        let d = fallback_decision(
            &raw(&[
                ("type", "emergency"),
                ("state", "-3"),
                ("approval", "requested"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(
            (d.kind, d.emergency.is_some()),
            (DecisionKind::NeedsApproval, true)
        );
        assert!(
            fallback_decision(
                &raw(&[
                    ("type", "normal"),
                    ("state", "-5"),
                    ("approval", "not requested")
                ]),
                &cal
            )
            .is_none()
        );
    }

    #[test]
    fn journal_comment_without_its_header() {
        assert_eq!(
            journal_text("2026-03-02 10:00:00 - Jane Approver (Comments)\nNot during peak hours\n\n2026-03-01 09:00:00 - Bob (Comments)\nold").as_deref(),
            Some("Not during peak hours")
        );
        assert_eq!(
            journal_text("plain comment").as_deref(),
            Some("plain comment")
        );
        assert_eq!(journal_text(""), None);
    }

    #[test]
    fn models_follow_the_base_system() {
        assert_eq!(
            model("standard"),
            &[NEW, SCHEDULED, IMPLEMENT, REVIEW, CLOSED]
        );
        assert!(model("normal").contains(&ASSESS));
        assert!(!model("emergency").contains(&ASSESS));
    }
}
