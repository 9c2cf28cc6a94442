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
//!   nothing. When that text is gone, kind and emergency are rebuilt from `type`,
//!   `approval` and `state` (see [`fallback_decision`]); the mode cannot be, so such a
//!   decision never stands and the gate decides the change again.
//! * **Concurrency.** Lookup, create, look up again: when two runs created a record for the
//!   same key, the later one deletes its own (or, if the instance refuses, cancels it and
//!   clears its `correlation_id`) and carries on with the oldest. See docs/backends/servicenow.md.
//! * **State moves** follow the change model one step at a time (the instance refuses
//!   jumps), and every step the instance's own workflow already made is skipped.
//! * **Round trips.** Calls that need each other done but not each other's answers (the
//!   create and its look-again; the steps of a walk) go in one Batch API request
//!   ([`client::SnClient::batch`]), one by one on an instance that refuses it.
//! * **History** costs two requests whatever its size: one Aggregate API call grouped by
//!   decision day, type, state and close code, and one bounded query for the most recent
//!   closed changes (whose `X-Total-Count` is the all-time total). A gate makes that query
//!   its lookup too (see `history::survey`), which also names the standard change template
//!   of recent standard changes.
//! * **Verify, report, simulate** (see `verify.rs`, `insights.rs`): linked incidents are those whose
//!   `caused_by` or `rfc` is the change; the verdict is a mark in `correlation_display`,
//!   and a failure after deploy also turns `close_code` to the failure code, so the history
//!   counts it. The facts a decision was made on follow it in `justification` as one JSON
//!   line, for `policy simulate` and the lead time in `report`.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Map, Value};

use super::Backend;
use crate::config::{BackendKind, ServiceNowSection};
use crate::domain::approval::Approver;
use crate::domain::verify::LinkedIncident;
use crate::domain::{ChangeRecord, Outcome, SprintCalendar, State};
use crate::http::HttpClient;

mod client;
mod codec;
mod history;
mod insights;
mod lifecycle;
mod verify;

use client::{Body, Call, SnClient};
use codec::text;
use codec::{
    CANCELED, CLOSED, Raw, display_timed_out, fallback_decision, journal_text, kind_of_json,
    map_state, q,
};

const TABLE: &str = "api/now/table/change_request";
const STATS: &str = "api/now/stats/change_request";
const APPROVALS: &str = "api/now/table/sysapproval_approver";
/// Approvers read for one change: more than any approval policy asks of one change.
const APPROVERS_MAX: u32 = 100;
const CHG: &str = "api/sn_chg_rest/change";

/// What changegate reads of a change request.
pub(super) const READ_FIELDS: &str = "sys_id,number,type,state,approval,approval_set,correlation_id,correlation_display,\
                           justification,close_code,work_start,sys_created_on";

/// What the backend keeps between calls. What `find` found is not here: it travels in the
/// `Lookup` the caller hands on (see `history::Found`). What stays is what no value of the
/// port carries:
#[derive(Default)]
struct Cache {
    /// The standard change template's sys_id, looked up once per process: a fact of the
    /// instance, the same for every change, not a lookup of one.
    template: Option<String>,
    /// Whether `template` was learned from a recent change rather than looked up by name.
    template_learned: bool,
    /// The last state seen of each record, by number: `refresh`, `start`, the outcome, a
    /// refusal and `verify` are handed a `ChangeRecord`, which does not carry the row they
    /// write on; without it each would read the record again.
    raws: HashMap<String, Raw>,
    /// Incidents linked to a change, by the change's sys_id: `verify` reads them in batches
    /// with `awaiting_verification`, and the port asks for them change by change.
    incidents: HashMap<String, Vec<LinkedIncident>>,
}

/// The backend.
pub struct ServiceNow {
    api: SnClient,
    cfg: ServiceNowSection,
    calendar: SprintCalendar,
    window: u32,
    cache: Mutex<Cache>,
    /// `announce` keeps sprint umbrella changes here (`[announce] sinks` has `itsm`): a
    /// change created by the gate gets its sprint's umbrella, when there is one, as parent.
    umbrellas: bool,
}

impl ServiceNow {
    /// Builds the client from the resolved instance config (URL, credentials, section);
    /// the run's budget, calendar and window come from `settings`. Nothing is sent until
    /// the first call.
    pub fn connect(
        config: &crate::settings::ServiceNowConfig,
        settings: &crate::settings::Settings,
    ) -> Result<ServiceNow> {
        let cfg = config.section.clone();
        let (base, creds) = (config.base.clone(), config.credentials.clone());
        tracing::debug!("ServiceNow at {} with {}", base, creds.describe());
        let http = HttpClient::new("ServiceNow", &settings.budget)?;
        Ok(ServiceNow {
            api: SnClient::new(http, base, creds),
            cfg,
            calendar: settings.calendar,
            window: settings.policy.params.window,
            cache: Mutex::new(Cache::default()),
            umbrellas: settings
                .file
                .announce
                .sinks
                .contains(&crate::config::AnnounceSink::Itsm),
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
        // Rebuilt from type, approval and state, a decision's mode is unknown: it never
        // stands (an observe change in Implement would read as an enforce one that passes).
        let decision_inferred = parsed.is_none();
        let decision = parsed
            .map(|(d, _)| d)
            .or_else(|| fallback_decision(raw, &self.calendar));
        let decision_inferred = decision_inferred && decision.is_some();
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
            author: None,
            timed_out: state == State::AwaitingApproval
                && display_timed_out(raw.get("correlation_display")),
            decision_inferred,
            approval_not_counted: false,
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
        Self::list_query(query, READ_FIELDS.to_string(), limit)
    }

    /// The parameters of a Table API list: query, fields, page size, references as sys_ids.
    fn list_query(query: String, fields: String, limit: u32) -> Vec<(&'static str, String)> {
        vec![
            ("sysparm_query", query),
            ("sysparm_fields", fields),
            ("sysparm_limit", limit.to_string()),
            ("sysparm_exclude_reference_link", "true".to_string()),
        ]
    }

    /// Warns when more than one record holds `key` (`rows` oldest first).
    fn warn_duplicates<R: std::borrow::Borrow<Raw>>(key: &str, rows: &[R]) {
        if let [first, second, ..] = rows {
            let (first, second) = (first.borrow(), second.borrow());
            tracing::warn!(
                "two ServiceNow changes hold the key {key}: {} and {}; using the older, {}",
                first.number(),
                second.number(),
                first.number()
            );
        }
    }

    /// Every record holding `key`, oldest first (the oldest is the change).
    async fn by_key(&self, key: &str, limit: u32) -> Result<Vec<Raw>> {
        let c = Self::by_key_call(key, limit);
        let reply = self
            .api
            .call(c.method, &c.path, &c.query, Body::None)
            .await?;
        self.rows(&reply)
    }

    /// The call [`Self::by_key`] sends, for a batch.
    fn by_key_call(key: &str, limit: u32) -> Call {
        let query = format!(
            "correlation_id={}^ORDERBYsys_created_on^ORDERBYnumber",
            q(key)
        );
        Call {
            method: Method::GET,
            path: TABLE.to_string(),
            query: Self::read_query(query, limit),
            body: None,
        }
    }

    /// The records of a list answer, remembered.
    fn rows(&self, reply: &client::Reply) -> Result<Vec<Raw>> {
        let rows = Self::list(reply)?;
        for raw in &rows {
            self.remember(raw);
        }
        Ok(rows)
    }

    /// The oldest record holding `key` (the change), and the younger ones beside it.
    async fn lookup(&self, key: &str) -> Result<history::Found> {
        let mut rows = self.by_key(key, 10).await?;
        Self::warn_duplicates(key, &rows);
        let duplicates = if rows.len() > 1 {
            rows.split_off(1)
        } else {
            Vec::new()
        };
        Ok(history::Found {
            raw: rows.into_iter().next(),
            recent: None,
            duplicates,
        })
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
        let c = Self::patch_call(raw, fields);
        let body = c.body.unwrap_or(Value::Null);
        let reply = self
            .api
            .call(c.method, &c.path, &c.query, Body::Json(&body))
            .await?;
        self.stored(&reply)
    }

    /// The call [`Self::patch`] sends, for a batch.
    fn patch_call(raw: &Raw, fields: Map<String, Value>) -> Call {
        Call {
            method: Method::PATCH,
            path: format!("{TABLE}/{}", raw.sys_id()),
            query: vec![
                ("sysparm_fields", READ_FIELDS.to_string()),
                ("sysparm_exclude_reference_link", "true".to_string()),
            ],
            body: Some(Value::Object(fields)),
        }
    }

    /// The record a write answered with, remembered.
    fn stored(&self, reply: &client::Reply) -> Result<Raw> {
        let fresh = Self::single(reply)?;
        self.remember(&fresh);
        Ok(fresh)
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
    /// Everyone who approved the change: its `sysapproval_approver` rows in state
    /// `approved`, each approver by display name, user name and e-mail (dot-walked from
    /// their `sys_user`). Unlike [`Self::approver`] this is not best effort: separation of
    /// duties is checked on it, so a failed read fails the run.
    async fn approved_by(&self, raw: &Raw) -> Result<Vec<Approver>> {
        let query = [
            (
                "sysparm_query",
                format!("sysapproval={}^state=approved", raw.sys_id()),
            ),
            (
                "sysparm_fields",
                "approver,approver.user_name,approver.email".to_string(),
            ),
            ("sysparm_display_value", "true".to_string()),
            ("sysparm_limit", APPROVERS_MAX.to_string()),
        ];
        let reply = self
            .api
            .call(Method::GET, APPROVALS, &query, Body::None)
            .await
            .with_context(|| {
                format!(
                    "cannot read who approved {} in sysapproval_approver, which [approval] separate_author needs",
                    raw.number()
                )
            })?;
        Ok(Self::list(&reply)?
            .iter()
            .map(|r| {
                Approver::new(&[
                    r.get("approver"),
                    r.get("approver.user_name"),
                    r.get("approver.email"),
                ])
            })
            .collect())
    }

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
            r.decision_inferred = before.decision_inferred;
        }
        r.approved_by = before.approved_by.clone();
        r.approval_comment = before.approval_comment.clone();
        r
    }
}

impl Backend for ServiceNow {
    fn kind(&self) -> BackendKind {
        BackendKind::Servicenow
    }

    fn notices(&self) -> Option<&dyn crate::itsm::Notices> {
        Some(self)
    }
}
