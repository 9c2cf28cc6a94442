//! Writing change requests: create (standard from the template, normal, emergency), the
//! re-read that settles two runs racing, decisions written in place or by superseding, and
//! the one-step-at-a-time walk along the change model.

use crate::itsm::{ChangeStore, Intent, Lookup};
use anyhow::{Context, Result, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::SnError;
use super::client::{Body, Call};
use super::codec::text;
use super::codec::{
    ASSESS, AUTHORIZE, CANCELED, CLOSED, DISPLAY, IMPLEMENT, KEY_MAX, NEW, Raw, TIMED_OUT,
    display_for, display_timed_out, is_sys_id, model, q, sn_time, state_label, tolerant, type_for,
};
use super::history::Found;
use super::{CHG, ServiceNow, TABLE};
use crate::domain::approval::Approver;
use crate::itsm::{KeptNotice, Notices, SprintNotice};

/// What an umbrella change is read with.
const UMBRELLA_FIELDS: &str = "sys_id,number,short_description,description,start_date,end_date";

/// The umbrella's description: the list, `[code]` defused, cut to what the field holds
/// (4,000 characters on the base system), so that a long list reads back as written.
fn umbrella_description(notice: &SprintNotice) -> String {
    text::cut(&text::defuse_lines(&notice.text()), 4000)
}

/// The first line of the umbrella's work note that keeps what the chat was last told; the
/// note's next line is the memory itself ([`told_note`]).
const TOLD_MARKER: &str = "changegate-announce-chat: what the chat was last told";

/// The work note keeping `body` (what the chat was told): the marker, then `body` with `%`,
/// `[` and `]` percent-encoded, so that no `[code]` tag renders and it reads back exactly.
fn told_note(body: &str) -> String {
    let mut out = format!("{TOLD_MARKER}\n");
    for c in body.chars() {
        match c {
            '%' => out.push_str("%25"),
            '[' => out.push_str("%5B"),
            ']' => out.push_str("%5D"),
            c => out.push(c),
        }
    }
    out
}

/// What [`told_note`] kept, from the note's text as the instance gives it back.
fn told_of(note: &str) -> Option<String> {
    let note = note.replace("\r\n", "\n");
    let (head, body) = note.split_once('\n')?;
    if head.trim_end() != TOLD_MARKER {
        return None;
    }
    Some(
        body.trim_end()
            .replace("%5B", "[")
            .replace("%5D", "]")
            .replace("%25", "%"),
    )
}

/// Text as the instance gives it back: its line ends, and no trailing blanks.
fn same_text(stored: &str, ours: &str) -> bool {
    stored.replace("\r\n", "\n").trim_end() == ours.trim_end()
}

#[async_trait]
impl Notices for ServiceNow {
    /// The sprint umbrella change: a normal change in New, planned over the sprint, its
    /// description the list, found by its correlation id ([`crate::domain::notice_key`]).
    async fn find_notice(&self, notice: &SprintNotice) -> Result<Option<KeptNotice>> {
        let key = crate::domain::notice_key(&notice.service_id, notice.sprint);
        let Some(raw) = self.umbrella(&key).await? else {
            return Ok(None);
        };
        let same = same_text(raw.get("short_description"), &notice.title)
            && same_text(raw.get("description"), &umbrella_description(notice))
            && raw.get("start_date") == sn_time(notice.start)
            && raw.get("end_date") == sn_time(notice.end);
        Ok(Some(KeptNotice {
            id: raw.number().to_string(),
            url: Some(self.url_of(&raw)),
            handle: raw.sys_id().to_string(),
            same,
            told: None,
        }))
    }

    async fn write_notice(
        &self,
        notice: &SprintNotice,
        found: Option<&KeptNotice>,
    ) -> Result<KeptNotice> {
        let mut f = Map::new();
        f.insert(
            "short_description".into(),
            json!(text::cut(&text::one_line(&notice.title), 160)),
        );
        f.insert(
            "description".into(),
            json!(text::defuse_lines(&notice.text())),
        );
        f.insert("start_date".into(), json!(sn_time(notice.start)));
        f.insert("end_date".into(), json!(sn_time(notice.end)));
        let reply = match found {
            Some(kept) => {
                let path = format!("{TABLE}/{}", kept.handle);
                self.api
                    .call(Method::PATCH, &path, &[], Body::Json(&Value::Object(f)))
                    .await
                    .with_context(|| format!("cannot edit the umbrella change {}", kept.id))?
            }
            None => {
                for (k, v) in &self.cfg.fields {
                    f.entry(k.clone()).or_insert_with(|| json!(v));
                }
                if let Some(group) = self
                    .cfg
                    .assignment_group
                    .as_deref()
                    .filter(|g| !g.trim().is_empty())
                {
                    f.insert("assignment_group".into(), json!(group.trim()));
                }
                let key = crate::domain::notice_key(&notice.service_id, notice.sprint);
                f.insert("correlation_id".into(), json!(key));
                f.insert("correlation_display".into(), json!("changegate announce"));
                f.insert(
                    "work_notes".into(),
                    json!("changegate: the sprint's planned changes; each deploy's change of the sprint is its child."),
                );
                let path = format!("{CHG}/normal");
                self.api
                    .call(Method::POST, &path, &[], Body::Json(&Value::Object(f)))
                    .await
                    .context("cannot create the sprint's umbrella change")?
            }
        };
        let raw = Self::single(&reply)?;
        Ok(KeptNotice {
            id: raw.number().to_string(),
            url: Some(self.url_of(&raw)),
            handle: raw.sys_id().to_string(),
            same: true,
            told: None,
        })
    }

    /// The newest work note on the umbrella that starts with [`TOLD_MARKER`]: one read.
    async fn last_told(&self, kept: &KeptNotice) -> Result<Option<String>> {
        let query = format!(
            "element_id={}^element=work_notes^valueLIKE{}^ORDERBYDESCsys_created_on",
            q(&kept.handle),
            q(TOLD_MARKER)
        );
        let fields = "sys_id,value,sys_created_on".to_string();
        let reply = self
            .api
            .call(
                Method::GET,
                JOURNAL,
                &Self::list_query(query, fields, 1),
                Body::None,
            )
            .await
            .with_context(|| format!("cannot read what the chat was told from {}", kept.id))?;
        Ok(Self::list(&reply)?
            .into_iter()
            .next()
            .and_then(|r| told_of(r.get("value"))))
    }

    /// One more work note on the umbrella (the journal keeps each post's memory).
    async fn keep_told(&self, kept: &KeptNotice, body: &str) -> Result<()> {
        let path = format!("{TABLE}/{}", kept.handle);
        self.api
            .call(
                Method::PATCH,
                &path,
                &[],
                Body::Json(&json!({ "work_notes": told_note(body) })),
            )
            .await
            .with_context(|| format!("cannot keep what the chat was told on {}", kept.id))?;
        Ok(())
    }
}
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, Mode, Outcome, State,
};
use reqwest::StatusCode;
use std::collections::HashMap;

impl ServiceNow {
    /// Moves a record forward along its change model to `target`, one step per update (the
    /// instance refuses jumps), every step left in one round trip (a batch: each step needs
    /// the one before done, not its answer). Steps the instance already made are skipped; a
    /// refused step is re-read first, in case a workflow or a concurrent run moved it
    /// meanwhile. `extra` rides along with the first update that succeeds. On refusal
    /// returns the record as last read, with the reason.
    pub(super) async fn walk(
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
            let steps = &path[at + 1..=goal];
            let calls: Vec<Call> = steps
                .iter()
                .enumerate()
                .map(|(i, next)| {
                    let mut fields = if i == 0 { extra.clone() } else { Map::new() };
                    fields.insert("state".into(), json!(next.to_string()));
                    Self::patch_call(&raw, fields)
                })
                .collect();
            let answers = match self.api.batch(&calls).await {
                Ok(answers) => answers,
                Err(e) => vec![Err(e)],
            };
            let mut refused = None;
            for (answer, next) in answers.into_iter().zip(steps) {
                let from = raw.state().unwrap_or(current);
                match answer.and_then(|reply| self.stored(&reply)) {
                    Ok(moved) if moved.state() == Some(from) => {
                        // Some instances answer 200 and leave the state as it was.
                        let e = anyhow!(
                            "ServiceNow kept change {} in {} when asked to move it to {} (the change model or a business rule refused)",
                            raw.number(),
                            state_label(from),
                            state_label(*next)
                        );
                        return Err((moved, e));
                    }
                    Ok(moved) => {
                        tracing::info!(
                            "moved {} from {} to {}",
                            moved.number(),
                            state_label(from),
                            state_label(*next)
                        );
                        extra.clear();
                        raw = moved;
                    }
                    Err(e) => {
                        refused = Some((from, *next, e));
                        break;
                    }
                }
            }
            let Some((from, next, e)) = refused else {
                continue;
            };
            let at = path.iter().position(|s| *s == from).unwrap_or(at);
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
                    state_label(from),
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

    /// The configured standard change template (a name or a sys_id), if any.
    pub(super) fn template_name(&self) -> Option<&str> {
        self.cfg
            .standard_template
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }

    /// The standard change template's sys_id: the configured value when it is one, else the
    /// one learned from a recent standard change (see `survey`), else the template looked up
    /// by name (once per process).
    pub(super) async fn template_id(&self) -> Result<String> {
        let name = self.template_name().ok_or_else(|| {
            anyhow!(
                "pre-approved changes are standard changes created from a template: set `standard_template` in \
                 [servicenow] to the name (or sys_id) of the template to use"
            )
        })?;
        if is_sys_id(name) {
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
        let mut cache = self.cache();
        cache.template = Some(id.clone());
        cache.template_learned = false;
        Ok(id)
    }

    /// The sys_id of the sprint umbrella change `announce` keeps for `service_id` at `now`,
    /// when `[announce]` publishes to the ITSM and one exists. Never fails the gate: a
    /// missing or unreadable umbrella leaves the change without a parent.
    async fn umbrella_of(&self, service_id: &str, now: DateTime<Utc>) -> Option<String> {
        if !self.umbrellas {
            return None;
        }
        let key = crate::domain::notice_key(service_id, self.calendar.index_of(now));
        match self.umbrella(&key).await {
            Ok(found) => found.map(|raw| raw.sys_id().to_string()),
            Err(e) => {
                tracing::warn!(
                    "the sprint's umbrella change could not be read ({e:#}); the change is opened without a parent"
                );
                None
            }
        }
    }

    /// The umbrella change holding `key`, the oldest if a race left two.
    async fn umbrella(&self, key: &str) -> Result<Option<Raw>> {
        let query = Self::list_query(
            format!(
                "correlation_id={}^ORDERBYsys_created_on^ORDERBYnumber",
                q(key)
            ),
            UMBRELLA_FIELDS.to_string(),
            2,
        );
        let reply = self
            .api
            .call(Method::GET, TABLE, &query, Body::None)
            .await?;
        Ok(Self::list(&reply)?.into_iter().next())
    }

    /// The fields written when a change is created or (re-)decided.
    pub(super) fn fields_for(
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
        let description = text::description(facts);
        f.insert("description".into(), json!(description));
        f.insert("correlation_id".into(), json!(facts.key().fitted(KEY_MAX)));
        f.insert("correlation_display".into(), json!(display_for(now)));
        match decision {
            Some(d) => {
                let note = text::render_decision(d, now);
                // The facts the decision was made on follow it, for `policy simulate` and
                // the lead time in `report`; only in `justification`, not in the work note.
                let budget = text::JUSTIFICATION_MAX.saturating_sub(note.chars().count() + 1);
                let justification = match text::render_facts(&text::FactsLine::of(facts), budget) {
                    Some(line) => format!("{note}\n{line}"),
                    None => note.clone(),
                };
                f.insert("justification".into(), json!(justification));
                // A standard change's description is the template's: the facts go in the
                // work note, so the commit range, PR and run are on the record all the same.
                let work_note = if type_for(decision) == "standard" {
                    format!("{note}\n\n{description}")
                } else {
                    note
                };
                f.insert("work_notes".into(), json!(work_note));
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

    /// Creates the record (a standard change from the template, or a normal or emergency
    /// one) and settles a race: in one round trip, the create and the re-read of its key
    /// (see [`Self::settle`]). Returns the record that holds the key, and whether it is ours.
    pub(super) async fn create(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<(Raw, bool)> {
        let key = facts.key().fitted(KEY_MAX);
        let kind = type_for(decision);
        let path = match kind {
            "standard" => format!("{CHG}/standard/{}", self.template_id().await?),
            other => format!("{CHG}/{other}"),
        };
        let mut fields = self.fields_for(facts, decision, now);
        if let Some(parent) = self.umbrella_of(&facts.service_id, now).await {
            fields.insert("parent".into(), json!(parent));
        }
        let body = Value::Object(fields);
        let (reply, rows) = match self.create_and_reread(&path, &body, &key).await {
            Err(e) if kind == "standard" && self.cache().template_learned && refused(&e) => {
                // The template learned from a recent change is gone or retired: look it up
                // by name and try once more.
                tracing::info!(
                    "the standard change template from a recent change was refused ({e:#}); looking it up by name"
                );
                let stale = {
                    let mut cache = self.cache();
                    cache.template_learned = false;
                    cache.template.take()
                };
                let id = self.template_id().await?;
                if stale.as_deref() == Some(id.as_str()) {
                    return Err(e);
                }
                let path = format!("{CHG}/standard/{id}");
                self.create_and_reread(&path, &body, &key).await?
            }
            other => other?,
        };
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
        let rows = match rows {
            Some(rows) => rows,
            None => self.by_key(&key, 10).await?,
        };
        self.settle(&key, raw, &rows).await
    }

    /// The create's answer, and the records holding `key` read right after it, in one batch.
    /// A create that fails is the error; the re-read is `None` when it was not answered.
    async fn create_and_reread(
        &self,
        path: &str,
        body: &Value,
        key: &str,
    ) -> Result<(super::client::Reply, Option<Vec<Raw>>)> {
        let calls = [
            Call {
                method: Method::POST,
                path: path.to_string(),
                query: Vec::new(),
                body: Some(body.clone()),
            },
            Self::by_key_call(key, 10),
        ];
        let mut answers = self.api.batch(&calls).await?.into_iter();
        let created = answers.next().ok_or_else(|| {
            anyhow!("ServiceNow did not answer the create of a change for {key}")
        })??;
        let rows = match answers.next() {
            Some(reread) => Some(self.rows(&reread?)?),
            None => None,
        };
        Ok((created, rows))
    }

    /// After a create: the records holding the key, read right after it (`rows`, oldest
    /// first). When another run created a record for the same key first, ours goes (deleted,
    /// or cancelled with its key cleared when the instance does not allow deletes) and the
    /// older one is returned.
    pub(super) async fn settle(&self, key: &str, mine: Raw, rows: &[Raw]) -> Result<(Raw, bool)> {
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
        self.discard(&mine, &winner, key).await;
        Ok((winner, false))
    }

    /// Removes a duplicate record of `key`: deleted, or, when the instance does not allow
    /// deletes, cancelled with its key cleared and a pointer to `winner`. Best effort: what
    /// fails is a warning.
    pub(super) async fn discard(&self, dup: &Raw, winner: &Raw, key: &str) {
        let path = format!("{TABLE}/{}", dup.sys_id());
        if let Err(e) = self.api.call(Method::DELETE, &path, &[], Body::None).await {
            tracing::info!(
                "could not delete the duplicate {} ({e:#}); cancelling it instead",
                dup.number()
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
            if let Err(e) = self.patch(dup, f).await {
                tracing::warn!(
                    "the duplicate {} could not be cancelled either ({e:#}); cancel it by hand",
                    dup.number()
                );
            }
        } else {
            tracing::info!(
                "deleted the duplicate {} of {}",
                dup.number(),
                winner.number()
            );
        }
        self.cache().raws.remove(dup.number());
    }

    /// Brings a record in line with its decision: a change that needs approval is sent for
    /// it (normal → Assess, emergency → Authorize) if that has not happened yet, e.g. after
    /// a crash between create and this update.
    pub(super) async fn complete(&self, raw: Raw, decision: Option<&Decision>) -> Result<Raw> {
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
    pub(super) async fn redecide(
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
        let (settled, _) = self.create(facts, Some(decision), now).await?;
        tracing::info!("{} supersedes {}", settled.number(), raw.number());
        self.complete(settled, Some(decision)).await
    }

    /// Applies a decision to an existing record: nothing when the record's own decision
    /// stands (a re-run) or the record is closed or cancelled, otherwise the new decision
    /// is written.
    pub(super) async fn apply(
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
        if !record.takes_decision(d.mode, d.emergency.is_some()) {
            let standing = record.decision.clone();
            return self.complete(raw, standing.as_ref()).await;
        }
        self.redecide(facts, d, raw, now).await
    }
}

/// Whether the instance refused a request for what it holds (404, 400), not for who asks or
/// how often.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<super::client::SnError>()
        .and_then(|s| s.status)
        .is_some_and(|s| {
            s == reqwest::StatusCode::NOT_FOUND || s == reqwest::StatusCode::BAD_REQUEST
        })
}

#[async_trait]
impl ChangeStore for ServiceNow {
    /// For a decision, the key's record and the track record in one query (see `survey`).
    /// The row found rides in the lookup, for `open` (and the track record, for `history`).
    async fn find(&self, key: &CorrelationKey, intent: Intent) -> Result<Lookup> {
        let found = match intent {
            Intent::Read => self.lookup(&key.fitted(KEY_MAX)).await?,
            Intent::Decide => self.survey(key).await?,
        };
        let record = found.raw.as_ref().map(|r| self.to_record(r));
        Ok(Lookup::of(key, record).carrying(found))
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        let id = id.trim();
        if is_sys_id(id) {
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
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let full = facts.key();
        let key = full.fitted(KEY_MAX);
        let handed = found
            .and_then(|f| f.found::<Found>(&full))
            .map(|f| f.raw.clone());
        let existing = match handed {
            Some(found) => found,
            None => self.lookup(&key).await?.raw,
        };
        let raw = match existing {
            None => match self.create(facts, decision, now).await? {
                (mine, true) => self.complete(mine, decision).await?,
                (theirs, false) => self.apply(facts, decision, theirs, now).await?,
            },
            Some(found) => self.apply(facts, decision, found, now).await?,
        };
        Ok(self.to_record(&raw))
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        let raw = self.raw_for(record).await?;
        let fresh = self.read(&raw).await?;
        let mut updated = self.to_record(&fresh);
        // Keep the decision we wrote when the instance lost its text.
        if (updated.decision.is_none()
            || updated
                .decision
                .as_ref()
                .is_some_and(|d| d.rules.is_empty()))
            && let Some(d) = record.decision.clone().filter(|d| !d.rules.is_empty())
        {
            updated.decision = Some(d);
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

    async fn approvers(&self, record: &ChangeRecord) -> Result<Option<Vec<Approver>>> {
        let raw = self.raw_for(record).await?;
        Ok(Some(self.approved_by(&raw).await?))
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
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        // The state first: the instance's own workflow may have moved the change on.
        let raw = self.raw_for(record).await?;
        // Two records survived two runs at once (see `settle`): the deploy is over, so the
        // younger ones can go now without pulling a record from under a running gate.
        let duplicates = found
            .and_then(|f| f.carried::<Found>())
            .filter(|f| f.raw.as_ref().is_some_and(|r| r.number() == record.id))
            .map(|f| f.duplicates.as_slice())
            .unwrap_or_default();
        for dup in duplicates {
            self.discard(dup, &raw, &record.key).await;
        }
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

    async fn record_refusal(
        &self,
        record: &ChangeRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let _ = now;
        let raw = self.raw_for(record).await?;
        let mut f = Map::new();
        f.insert(
            "work_notes".into(),
            json!(format!(
                "changegate decision: blocked ({}); the deploy does not go ahead.",
                text::one_line(why)
            )),
        );
        let display = raw.get("correlation_display").trim();
        if record.timed_out && !display_timed_out(display) {
            // In the same write: a re-run reads the timeout back without reading the notes.
            f.insert(
                "correlation_display".into(),
                json!(format!("{display} {TIMED_OUT}")),
            );
        }
        let raw = self.patch(&raw, f).await?;
        Ok(self.keep(record, &raw))
    }
}

// Tickets that follow the work (`sync`): a note on an incident, problem, request item or
// change the work references. Any task is found through the `task` table, whatever its
// class, and written on its own table; its journal is read back through
// `sys_journal_field`.

/// Every task, whatever its class.
const TASK: &str = "api/now/table/task";
/// Journal entries (work notes, comments).
const JOURNAL: &str = "api/now/table/sys_journal_field";

impl ServiceNow {
    /// The journal entries of the task `sys_id` that hold `marker`, oldest first (the
    /// instance's `LIKE` may match more: the marker is checked here too).
    async fn marked_entries(&self, sys_id: &str, marker: &str) -> Result<Vec<Raw>> {
        let query = format!(
            "element_id={}^elementINwork_notes,comments^valueLIKE{}^ORDERBYsys_created_on^ORDERBYsys_id",
            q(sys_id),
            q(marker)
        );
        let fields = "sys_id,element,value,sys_created_on".to_string();
        let reply = self
            .api
            .call(
                Method::GET,
                JOURNAL,
                &Self::list_query(query, fields, 1000),
                Body::None,
            )
            .await?;
        Ok(Self::list(&reply)?
            .into_iter()
            .filter(|r| r.get("value").contains(marker))
            .collect())
    }
}

#[async_trait]
impl crate::itsm::Tickets for ServiceNow {
    async fn note_once(
        &self,
        id: &str,
        lines: &[String],
        marker: &str,
        customer_visible: bool,
    ) -> Result<crate::itsm::Noted> {
        use crate::itsm::Noted;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            anyhow::bail!("{id:?} is not a ServiceNow number");
        }
        let query = Self::list_query(
            format!("number={}", q(id)),
            "sys_id,number,sys_class_name".to_string(),
            1,
        );
        let reply = self
            .api
            .call(Method::GET, TASK, &query, Body::None)
            .await
            .with_context(|| format!("cannot look up {id}"))?;
        let Some(task) = Self::list(&reply)?.into_iter().next() else {
            return Ok(Noted::Missing);
        };
        let sys_id = task.sys_id().to_string();
        if !is_sys_id(&sys_id) {
            anyhow::bail!("ServiceNow answered the lookup of {id} with no usable sys_id");
        }
        // The record is written on its own table (the `task` table's journal fields are
        // the same, but a class's business rules run on its own).
        let class = task.get("sys_class_name");
        let table = if !class.is_empty()
            && class
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            class
        } else {
            "task"
        };
        let elements: &[&str] = if customer_visible {
            &["work_notes", "comments"]
        } else {
            &["work_notes"]
        };
        let present = self
            .marked_entries(&sys_id, marker)
            .await
            .with_context(|| format!("cannot read the notes of {id}, so none is written"))?;
        let missing: Vec<&str> = elements
            .iter()
            .copied()
            .filter(|e| !present.iter().any(|r| r.get("element") == *e))
            .collect();
        if missing.is_empty() {
            return Ok(Noted::Already);
        }
        let note = lines
            .iter()
            .map(|l| text::defuse(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut body = Map::new();
        for element in &missing {
            body.insert((*element).to_string(), json!(note));
        }
        let path = format!("api/now/table/{table}/{sys_id}");
        self.api
            .call(
                Method::PATCH,
                &path,
                &[("sysparm_fields", "sys_id".to_string())],
                Body::Json(&Value::Object(body)),
            )
            .await
            .with_context(|| format!("cannot write the note on {id}"))?;
        // Two runs that both found no note both wrote one: the oldest stays, whichever run
        // sees the copies deletes the younger ones.
        let after = self.marked_entries(&sys_id, marker).await.ok();
        for element in elements {
            let copies = after
                .iter()
                .flatten()
                .filter(|r| r.get("element") == *element);
            for younger in copies.skip(1) {
                let path = format!("{JOURNAL}/{}", younger.sys_id());
                if let Err(e) = self.api.call(Method::DELETE, &path, &[], Body::None).await
                    && !refused(&e)
                {
                    tracing::warn!(
                        "{id} holds the note {marker} twice (two runs wrote it at once) and the younger copy could not be deleted: {e:#}"
                    );
                }
            }
        }
        Ok(Noted::Written)
    }
}

#[cfg(test)]
mod told_tests {
    use super::{told_note, told_of};

    #[test]
    fn the_chats_memory_reads_back_exactly_and_never_holds_a_code_tag() {
        let body = r##"[{"id":"#1","title":"Planned [code]<b>x</b>[/code] 100% %5B"}]"##;
        let note = told_note(body);
        assert!(!note.to_ascii_lowercase().contains("[code]"), "{note}");
        assert_eq!(told_of(&note).as_deref(), Some(body));
        // As the instance gives it back: CRLF line ends.
        assert_eq!(told_of(&note.replace('\n', "\r\n")).as_deref(), Some(body));
        // Another work note is not the memory.
        assert_eq!(told_of("changegate: the sprint's planned changes"), None);
    }
}
