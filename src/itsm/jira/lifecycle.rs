//! A change's life in Jira: find it, open it, write its decision, move it through the
//! workflow, read its approvals, and record the deploy.
//!
//! Finding a change: by correlation key (what was found handed on to `open`) or by issue key.
//!
//! Opening a change: find or create its issue, and write the decision.
//!
//! Creating the change issue (or JSM request), and settling a race with a parallel run.
//!
//! Writes to an existing issue: comments, edits, the issue property and a new decision.
//!
//! Workflow transitions by status name or by the names `[jira.transitions]` gives.
//!
//! JSM approvals: where the approvers of a change stand.
//!
//! The deploy: moving the change to implementation, and closing it with the outcome.
//!
//! The change record an issue stands for: state from status, decision and approvals.

use super::CHAT_TOLD;
use super::FACTS;
use super::Jira;
use super::NOTICE;
use super::PROPERTY;
use super::client::Op;
use super::client::jira_words;
use super::client::not_found;
use super::client::q;
use super::codec::IssueView;
use super::codec::Stored;
use super::codec::Transition;
use super::codec::adf;
use super::codec::decision_comment;
use super::codec::description;
use super::codec::duplicate_note;
use super::codec::id_number;
use super::codec::id_text;
use super::codec::outcome_comment;
use super::codec::str_at;
use super::eq;
use super::labels;
use crate::domain::ChangeFacts;
use crate::domain::ChangeRecord;
use crate::domain::CorrelationKey;
use crate::domain::Decision;
use crate::domain::DecisionKind;
use crate::domain::Mode;
use crate::domain::Outcome;
use crate::domain::State;
use crate::domain::approval::Approver;
use crate::env;
use crate::itsm::{ChangeStore, Intent, Lookup};
use crate::itsm::{KeptNotice, Notices, SprintNotice};
use anyhow::Context;
use anyhow::Result;
use anyhow::anyhow;
use anyhow::bail;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::TimeZone;
use chrono::Utc;
use reqwest::Method;
use serde_json::Map;
use serde_json::Value;
use serde_json::json;
use std::sync::atomic::Ordering;

/// What a search expands to read an issue as `read_issue` does with its transitions.
const TRANSITIONS: &str = "transitions.fields";

/// A change found in (or written to) Jira, with what later writes need.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) id: u64,
    pub(super) labels: Vec<String>,
    pub(super) record: ChangeRecord,
    /// The issue property as read or written.
    pub(super) stored: Option<Stored>,
    /// The issue as read with its transitions, when it was: `record_outcome` moves it on
    /// from this read instead of reading it again.
    pub(super) view: Option<IssueView>,
}

impl Found {
    pub(super) fn of(v: &IssueView, record: ChangeRecord) -> Found {
        Found {
            id: v.id,
            labels: v.labels.clone(),
            record,
            stored: v.stored.clone(),
            view: v.read_with_transitions.then(|| v.clone()),
        }
    }
}

/// What a lookup of a key carries (see [`crate::itsm::Lookup`]): the change found, and for a
/// decision the page of the service's newest changes read with it (see `survey`).
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) found: Option<Found>,
    pub(super) survey: Option<super::history::Survey>,
}

impl Jira {
    /// The issues labelled as this change, oldest first.
    pub(super) fn key_jql(&self, key: &CorrelationKey) -> String {
        format!(
            "project = {} AND labels = {} ORDER BY created ASC",
            q(&self.project),
            q(&labels::key(&key.service_id, &key.environment, &key.sha))
        )
    }

    /// The issues carrying this change's label whose property holds exactly this key,
    /// lowest issue id first (the one that wins when parallel runs both created one).
    pub(super) async fn matches(
        &self,
        key: &CorrelationKey,
        reconcile: &[u64],
        expand: Option<&str>,
    ) -> Result<Vec<IssueView>> {
        let full = key.to_string();
        let (issues, _) = self
            .search_expanded(
                &self.key_jql(key),
                &["status", "labels", "created"],
                &[PROPERTY],
                expand,
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

    /// The change with this key, if Jira has it, read with its transitions (what `record`
    /// moves it on with).
    pub(super) async fn lookup(&self, key: &CorrelationKey) -> Result<Option<Found>> {
        let full = key.to_string();
        let Some(v) = self
            .matches(key, &[], Some(TRANSITIONS))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        Ok(Some(Found::of(&v, self.complete(&v, &full).await?)))
    }
}

impl Jira {}

/// The record of a change just opened: as decided, not yet deployed. Its id and URL come
/// from the create.
fn opened(key: &CorrelationKey, decision: Option<&Decision>, now: DateTime<Utc>) -> ChangeRecord {
    ChangeRecord {
        id: String::new(),
        url: None,
        key: key.to_string(),
        state: decided_state(decision.map(|d| d.kind)),
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
        author: None,
        timed_out: false,
        decision_inferred: false,
        approval_not_counted: false,
    }
}

impl Jira {
    /// The id of the project's service desk: `[jira] service_desk`, else looked up once.
    pub(super) async fn service_desk_id(&self) -> Result<String> {
        if let Some(id) = self.service_desk.lock().ok().and_then(|g| g.clone()) {
            return Ok(id);
        }
        let mut start = 0u64;
        for _ in 0..10 {
            let v = self
                .call(
                    Method::GET,
                    &["rest", "servicedeskapi", "servicedesk"],
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
                let Some(id) = id_text(desk.get("id")) else {
                    bail!(
                        "Jira listed the service desk of {} without an id",
                        self.project
                    );
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

    /// Creates the change issue: labelled, with the property, the decision's fields and
    /// the facts. Returns it as found.
    pub(super) async fn create(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        now: DateTime<Utc>,
    ) -> Result<Found> {
        let key = facts.key();
        let mut record = opened(&key, decision, now);
        let stored = Stored {
            commit: Some(key.sha.clone()),
            ..Stored::of(None, &record)
        }
        .with_facts(facts);
        let mut label_list = vec![
            labels::MARK.to_string(),
            labels::service(&key.service_id, &key.environment),
            labels::key(&key.service_id, &key.environment, &key.sha),
        ];
        if let Some(d) = decision {
            label_list.extend(labels::of_decision(d, now));
        }
        let mut fields = Map::new();
        fields.insert("labels".into(), json!(label_list));
        if let Some(d) = decision {
            fields.extend(self.decision_fields(d));
        }
        if let Some(id) = self.cfg.fields.get("correlation_key") {
            fields.insert(id.clone(), json!(key.to_string()));
        }
        // What a person reads: on the create screen of an issue or a request alike.
        let mut content = Map::new();
        let summary: String = facts.summary().chars().take(250).collect();
        content.insert("summary".into(), json!(summary));
        content.insert("description".into(), description(facts));
        for (id, value) in &self.cfg.extra_fields {
            content.insert(id.clone(), value.clone());
        }
        let properties = Self::properties(&stored, Some(facts));
        let (id, issue_key) = if self.cfg.request_type.trim().is_empty() {
            self.create_issue(fields, content, properties).await?
        } else {
            self.raise_request(fields, content, properties, &stored.key)
                .await?
        };
        record.url = Some(self.browse(&issue_key));
        record.id = issue_key;
        Ok(Found {
            id,
            labels: label_list,
            record,
            stored: Some(stored),
            view: None,
        })
    }

    /// A plain issue of `[jira] issue_type`. Returns its id and key.
    async fn create_issue(
        &self,
        mut fields: Map<String, Value>,
        content: Map<String, Value>,
        properties: Value,
    ) -> Result<(u64, String)> {
        let issue_type = if self.cfg.issue_type.chars().all(|c| c.is_ascii_digit()) {
            json!({ "id": self.cfg.issue_type })
        } else {
            json!({ "name": self.cfg.issue_type })
        };
        fields.insert("project".into(), json!({ "key": self.project }));
        fields.insert("issuetype".into(), issue_type);
        fields.extend(content);
        let body = json!({ "fields": fields, "properties": properties });
        let v = self
            .call(
                Method::POST,
                &["rest", "api", "3", "issue"],
                &[],
                Some(&body),
                Op::Create,
            )
            .await?;
        let issue_key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Jira created an issue but sent no key: {v}"))?;
        Ok((id_number(v.get("id")), issue_key.to_string()))
    }

    /// A JSM request of `[jira] request_type`: raised through the service desk (so
    /// request-type automation and approvals apply), then labelled and given the property
    /// through the platform API. Returns its issue id and key.
    async fn raise_request(
        &self,
        fields: Map<String, Value>,
        content: Map<String, Value>,
        properties: Value,
        key: &str,
    ) -> Result<(u64, String)> {
        let desk = self.service_desk_id().await?;
        let body = json!({
            "serviceDeskId": desk,
            "requestTypeId": self.cfg.request_type.trim(),
            "requestFieldValues": content,
            "isAdfRequest": true,
        });
        let v = self
            .call(
                Method::POST,
                &["rest", "servicedeskapi", "request"],
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
        let edit = json!({ "fields": fields, "properties": properties });
        self.edit(&issue_key, &edit).await.with_context(|| {
            format!(
                "request {issue_key} was raised but could not be labelled as change {key}; delete it or label it by hand"
            )
        })?;
        Ok((id_number(v.get("issueId")), issue_key))
    }

    /// After a create: if a parallel run created an issue for the same change first (lower
    /// id), retire ours and use theirs.
    pub(super) async fn settle(
        &self,
        key: &CorrelationKey,
        mine: &Found,
    ) -> Result<Option<IssueView>> {
        let mine_key = mine.record.id.as_str();
        let hits = self.matches(key, &[mine.id], None).await?;
        let Some(winner) = hits
            .into_iter()
            .find(|v| v.key != mine_key && v.id < mine.id)
        else {
            return Ok(None);
        };
        tracing::warn!(
            "a parallel run opened {} for this change first; {mine_key} is retired as its duplicate",
            winner.key
        );
        let ops = labels::ops(
            mine.labels
                .iter()
                .map(String::as_str)
                .filter(|l| *l != labels::MARK),
            [labels::DUPLICATE],
        );
        if let Err(e) = self
            .edit(mine_key, &json!({ "update": { "labels": ops } }))
            .await
        {
            tracing::warn!("could not relabel the duplicate {mine_key}: {e:#}");
        }
        if let Err(e) = self.comment(mine_key, duplicate_note(&winner.key)).await {
            tracing::warn!("could not comment on the duplicate {mine_key}: {e:#}");
        }
        if let Ok(Some(v)) = self.read_issue(mine_key, true).await {
            let cancelled = &self.cfg.resolutions.cancelled;
            if let Err(e) = self
                .transition(
                    &v,
                    "cancelled",
                    &self.cfg.statuses.cancelled,
                    None,
                    Some(cancelled),
                )
                .await
            {
                tracing::warn!("could not cancel the duplicate {mine_key}: {e:#}");
            }
        }
        Ok(Some(winner))
    }
}

/// What an issue property may hold (Jira's limit is 32 KB), with room to spare.
const PROPERTY_BUDGET: usize = 30_000;

/// The facts a decision is made on, as [`FACTS`] keeps them for `policy simulate`: the
/// commits' subjects and authors are left out (the description lists them; the policy
/// reads none of them), and when the paths still do not fit, only those that do are kept.
pub(super) fn decided_facts(facts: &ChangeFacts) -> Value {
    let mut kept = facts.clone();
    kept.commits.clear();
    let size = |f: &ChangeFacts| serde_json::to_vec(f).map_or(usize::MAX, |v| v.len());
    if size(&kept) > PROPERTY_BUDGET {
        let total = kept.paths.len();
        let mut room = PROPERTY_BUDGET.saturating_sub(size(&ChangeFacts {
            paths: Vec::new(),
            ..kept.clone()
        }));
        kept.paths.retain(|p| {
            let cost = p.len() + 8;
            let fits = cost <= room;
            room = room.saturating_sub(cost);
            fits
        });
        tracing::warn!(
            "{}: {} of {total} paths fit in the {FACTS} issue property; `policy simulate` replays this change with those",
            facts.key(),
            kept.paths.len()
        );
    }
    serde_json::to_value(&kept).unwrap_or(Value::Null)
}

impl Jira {
    /// Adds a comment (an internal note unless `[jira] internal_comments = false`).
    pub(super) async fn comment(&self, key: &str, body: Value) -> Result<()> {
        let mut payload = json!({ "body": body });
        if self.cfg.internal_comments {
            payload["properties"] =
                json!([{"key": "sd.public.comment", "value": {"internal": true}}]);
        }
        let path = ["rest", "api", "3", "issue", key, "comment"];
        self.call(Method::POST, &path, &[], Some(&payload), Op::Comment(key))
            .await?;
        Ok(())
    }

    /// Edits an issue: `body` holds `fields`, `update` and `properties` as Jira takes them.
    pub(super) async fn edit(&self, key: &str, body: &Value) -> Result<()> {
        let path = ["rest", "api", "3", "issue", key];
        self.call(Method::PUT, &path, &[], Some(body), Op::Edit(key))
            .await?;
        Ok(())
    }

    /// The `properties` of a create, edit or transition that write [`Stored`].
    pub(super) fn property(stored: &Stored) -> Value {
        json!([{ "key": PROPERTY, "value": stored }])
    }

    /// [`Self::property`], and with `facts` the facts a decision is made on as
    /// [`FACTS`] too.
    pub(super) fn properties(stored: &Stored, facts: Option<&ChangeFacts>) -> Value {
        let mut list = vec![json!({ "key": PROPERTY, "value": stored })];
        if let Some(facts) = facts {
            list.push(json!({ "key": FACTS, "value": decided_facts(facts) }));
        }
        Value::Array(list)
    }

    /// Field values by the site's field ids for a decision (`[jira.fields]`).
    pub(super) fn decision_fields(&self, d: &Decision) -> serde_json::Map<String, Value> {
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

    /// Writes a (new) decision on an existing issue: labels, fields, property, comment.
    pub(super) async fn write_decision(
        &self,
        found: &Found,
        facts: &ChangeFacts,
        d: &Decision,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let mut record = found.record.clone();
        let replaced = record.decision.as_ref().and(record.decided_at);
        record.decision = Some(d.clone());
        record.decided_at = Some(now);
        record.emergency_reason = d.emergency.clone();
        let new_labels = labels::of_decision(d, now);
        // The previous decision's labels go, unless this one writes them again.
        let stale: Vec<&String> = found
            .labels
            .iter()
            .filter(|l| labels::is_decision(l) && !new_labels.contains(l))
            .collect();
        let added: Vec<&String> = new_labels
            .iter()
            .filter(|l| !found.labels.contains(l))
            .collect();
        let mut stored = Stored::of(found.stored.as_ref(), &record).with_facts(facts);
        stored.superseded.extend(replaced);
        let mut body = json!({ "properties": Self::properties(&stored, Some(facts)) });
        if !stale.is_empty() || !added.is_empty() {
            let ops = labels::ops(
                stale.iter().map(|l| l.as_str()),
                added.iter().map(|l| l.as_str()),
            );
            body["update"] = json!({ "labels": ops });
        }
        let fields = self.decision_fields(d);
        if !fields.is_empty() {
            body["fields"] = Value::Object(fields);
        }
        self.edit(&record.id, &body).await?;
        self.comment(&record.id, decision_comment(d)).await?;
        record.state = decided_state(Some(d.kind));
        Ok(record)
    }
}

#[async_trait]
impl ChangeStore for Jira {
    /// The change with this key, carrying the issue's id, labels and property for `open`
    /// (`None` carried: Jira has no such change).
    async fn find(&self, key: &CorrelationKey, intent: Intent) -> Result<Lookup> {
        let known = match intent {
            Intent::Read => Known {
                found: self.lookup(key).await?,
                survey: None,
            },
            Intent::Decide => self.survey(key).await?,
        };
        let record = known.found.as_ref().map(|f| f.record.clone());
        Ok(Lookup::of(key, record).carrying(known))
    }

    /// A change by its issue key or id; an error when the issue is not a change.
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

    /// Finds or creates the change's issue and writes the decision unless one stands
    /// (see [`crate::itsm::ChangeStore::open`]).
    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let key = facts.key();
        let full = key.to_string();
        // What the caller's `find` read; a parallel run creating the change since is caught
        // after the create (see `settle`).
        let existing = match found.and_then(|f| f.found::<Known>(&key)) {
            Some(known) => known.found.clone(),
            None => self.lookup(&key).await?,
        };
        let found = match existing {
            Some(f) => f,
            None => {
                let mine = self.create(facts, decision, now).await?;
                tracing::info!("opened {} for {full}", mine.record.id);
                match self.settle(&key, &mine).await? {
                    Some(winner) => Found::of(&winner, self.complete(&winner, &full).await?),
                    None => {
                        if let Some(d) = decision {
                            self.comment(&mine.record.id, decision_comment(d)).await?;
                            self.to_approval(&mine.record.id, d).await?;
                        }
                        return Ok(mine.record);
                    }
                }
            }
        };
        match decision {
            Some(d) if found.record.takes_decision(d.mode, d.emergency.is_some()) => {
                let record = self.write_decision(&found, facts, d, now).await?;
                self.to_approval(&record.id, d).await?;
                Ok(record)
            }
            _ => Ok(found.record),
        }
    }

    /// The change read again.
    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        let Some(v) = self.read_issue(&record.id, false).await? else {
            bail!(
                "change {} is no longer in Jira (deleted, moved, or no longer visible to the account in {})",
                record.id,
                env::JIRA_USER
            );
        };
        self.complete(&v, &record.key).await
    }

    async fn approvers(&self, record: &ChangeRecord) -> Result<Option<Vec<Approver>>> {
        Ok(Some(self.approved_by(&record.id).await?))
    }

    /// The gate passed: the change moves to implementation and records when the deploy
    /// started. A closed change is not moved back.
    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord> {
        let (v, mut current) = self.current(record).await?;
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
        let stored = Stored::of(v.stored.as_ref(), &current);
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

    /// Records the outcome (comment, label, property) and closes the change with the
    /// matching status and resolution. A change that has an outcome is left as it is.
    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        // Duplicates are retired right after the create that made them (see `settle`).
        found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        // The lookup that found the change read it with its transitions: no second read.
        let carried = found
            .and_then(|f| f.carried::<Known>())
            .and_then(|k| k.found.as_ref())
            .and_then(|f| f.view.clone())
            .filter(|v| v.key == record.id && v.transitions_complete());
        let (v, mut current) = match carried {
            Some(v) => {
                let current = self.to_record(&v, &record.key, None);
                (v, current)
            }
            None => self.current(record).await?,
        };
        if current.outcome.is_some() {
            return Ok(current);
        }
        // The approvals were read when the change was located, not on this re-read.
        current.approved_by = current.approved_by.or_else(|| record.approved_by.clone());
        current.approved_at = current.approved_at.or(record.approved_at);
        // A change whose gate never passed was not deployed, whatever the job says.
        let kept = if current.deployed_at.is_none() {
            Outcome::Cancelled
        } else {
            outcome
        };
        self.comment(&v.key, outcome_comment(kept, outcome, notes))
            .await?;
        current.outcome = Some(kept);
        let stored = Stored {
            closed_at: Some(now),
            ..Stored::of(v.stored.as_ref(), &current)
        };
        let label = labels::outcome(kept);
        self.edit(
            &v.key,
            &json!({
                "update": { "labels": labels::ops([], [label.as_str()]) },
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
                if eq(&v.status, &status) {
                    v.already_there();
                } else {
                    tracing::warn!(
                        "{} is already closed as {:?}; not moved to {status:?}",
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

    async fn record_refusal(
        &self,
        record: &ChangeRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let _ = now;
        self.comment(&record.id, super::codec::refusal_comment(why))
            .await?;
        if record.timed_out {
            self.edit(
                &record.id,
                &serde_json::json!({ "update": { "labels": labels::ops([], [labels::TIMED_OUT]) } }),
            )
            .await?;
        }
        Ok(record.clone())
    }
}

#[cfg(test)]
mod tests_write {
    use super::*;
    use crate::domain::{Commit, Platform};

    #[test]
    fn decided_facts_fit_in_a_property() {
        let mut facts = ChangeFacts {
            platform: Platform::Local,
            service: "svc".into(),
            service_id: "acme/svc".into(),
            environment: "production".into(),
            repository: None,
            commit_sha: "a".repeat(40),
            branch: None,
            pull_request: None,
            range: None,
            commits: vec![Commit {
                sha: "b".repeat(40),
                subject: "a subject".into(),
                author: None,
                timestamp: None,
            }],
            lines_changed: Some(12),
            paths: vec!["src/a.rs".into(), "migrations/1.sql".into()],
            paths_unknown: false,
            work_items: Vec::new(),
            run_url: None,
            repository_url: None,
            actor: None,
            author: None,
            tests_passed: Some(true),
            evidence: Default::default(),
        };
        let small: ChangeFacts = serde_json::from_value(decided_facts(&facts)).unwrap();
        assert!(small.commits.is_empty());
        assert_eq!(small.paths, facts.paths);
        assert_eq!(small.lines_changed, Some(12));
        facts.paths = (0..5000)
            .map(|i| format!("src/module_{i}/file.rs"))
            .collect();
        let big = decided_facts(&facts);
        assert!(serde_json::to_vec(&big).unwrap().len() <= PROPERTY_BUDGET);
        let big: ChangeFacts = serde_json::from_value(big).unwrap();
        assert!(!big.paths.is_empty() && big.paths.len() < 5000);
        assert_eq!(big.paths[0], "src/module_0/file.rs");
    }
}

impl IssueView {
    /// Logs that the issue already is where a transition would take it.
    pub(super) fn already_there(&self) {
        tracing::info!(
            "{} is already in {:?}; no transition needed",
            self.key,
            self.status
        );
    }
}

/// The resolution to set on transition `t` for `wanted` (`[jira.resolutions]`): `wanted`
/// as the screen spells it (as is when the screen lists none); else the first offered
/// when the field is required, and none when it is optional.
fn pick_resolution(t: &Transition, field: &Value, wanted: &str) -> Option<String> {
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
    if allowed.is_empty() {
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
    }
}

impl Jira {
    /// The transition `[jira.transitions]` names for `role`, if it names one.
    fn named(&self, role: &str) -> Option<&String> {
        self.cfg
            .transitions
            .get(role)
            .filter(|n| !n.trim().is_empty())
    }

    /// The transition that leads an issue to `status`: the one `[jira.transitions]` names
    /// for `role`, else the one whose target is `status`, else one named `status`.
    pub(super) fn offered<'v>(
        &self,
        v: &'v IssueView,
        role: &str,
        status: &str,
    ) -> Option<&'v Transition> {
        match self.named(role) {
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
    pub(super) async fn transition(
        &self,
        v: &IssueView,
        role: &str,
        status: &str,
        stored: Option<&Stored>,
        resolution: Option<&str>,
    ) -> Result<bool> {
        if eq(&v.status, status) {
            v.already_there();
            return Ok(false);
        }
        let Some(t) = self.offered(v, role, status) else {
            let offered: Vec<String> = v
                .transitions
                .iter()
                .map(|t| format!("{:?} → {:?}", t.name, t.to))
                .collect();
            let wanted = match self.named(role) {
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
        if let (Some(field), Some(wanted)) = (t.fields.get("resolution"), resolution)
            && let Some(name) = pick_resolution(t, field, wanted)
        {
            body["fields"] = json!({ "resolution": { "name": name } });
        }
        if let Some(stored) = stored {
            body["properties"] = Self::property(stored);
        }
        self.call(
            Method::POST,
            &["rest", "api", "3", "issue", &v.key, "transitions"],
            &[],
            Some(&body),
            Op::Transition(&v.key, status),
        )
        .await?;
        Ok(true)
    }

    /// A change that needs approval goes to the approval status, when one is configured.
    pub(super) async fn to_approval(&self, key: &str, d: &Decision) -> Result<()> {
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
}

/// Where the JSM approvals of a change stand.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
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

pub(super) fn parse_approvals(v: &Value) -> Verdict {
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

/// Everyone who approved: the approvers whose `approverDecision` is `approved`, in the
/// approvals whose `finalDecision` is `approved`, each by display name and e-mail address
/// (Jira leaves the address out when the user's profile hides it).
pub(super) fn parse_approvers(v: &Value) -> Vec<Approver> {
    let approved =
        |x: &&Value, field: &str| x.get(field).and_then(Value::as_str) == Some("approved");
    v.get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| approved(a, "finalDecision"))
        .filter_map(|a| a.get("approvers").and_then(Value::as_array))
        .flatten()
        .filter(|x| approved(x, "approverDecision"))
        .map(|x| {
            Approver::new(&[
                str_at(x, &["approver", "displayName"]).unwrap_or_default(),
                str_at(x, &["approver", "emailAddress"]).unwrap_or_default(),
            ])
        })
        .collect()
}

impl Jira {
    /// The JSM approvals of `key`; `None` when it is not a Jira Service Management request.
    async fn approval_page(&self, key: &str) -> Result<Option<Value>> {
        let query = [("start", "0".to_string()), ("limit", "50".to_string())];
        match self
            .request(
                Method::GET,
                &["rest", "servicedeskapi", "request", key, "approval"],
                &query,
                None,
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if not_found(&e) => {
                if !self.warned_no_request.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{key} has no Jira Service Management approvals ({}): it is approved only by moving it to {:?}",
                        jira_words(e.body().unwrap_or_default()),
                        self.cfg.statuses.implementing
                    );
                }
                Ok(None)
            }
            Err(e) => Err(self.explain(e, Op::Approvals(key))),
        }
    }

    pub(super) async fn approvals(&self, key: &str) -> Result<Verdict> {
        Ok(self
            .approval_page(key)
            .await?
            .map_or(Verdict::Pending, |v| parse_approvals(&v)))
    }

    /// Everyone who approved `key` in its JSM approvals (none when it has none).
    async fn approved_by(&self, key: &str) -> Result<Vec<Approver>> {
        Ok(self
            .approval_page(key)
            .await?
            .map(|v| parse_approvers(&v))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests_approvals {
    use super::*;
    use serde_json::json;

    #[test]
    fn approvals_from_the_reference_payload() {
        let v = crate::itsm::jira::reference("servicedeskapi/get-approvals.json");
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
    fn approvers_from_the_reference_payload_and_by_decision() {
        let v = crate::itsm::jira::reference("servicedeskapi/get-approvals.json");
        // One approval approved by Fred, one declined: only Fred approved.
        assert_eq!(
            parse_approvers(&v),
            vec![Approver::new(&["Fred F. User", "fred@example.com"])]
        );
        let mixed = json!({"values": [
            {"id": "1", "finalDecision": "approved", "approvers": [
                {"approver": {"accountId": "a1", "displayName": "Ada", "emailAddress": "ada@example.com"}, "approverDecision": "approved"},
                {"approver": {"accountId": "b2", "displayName": "Bob"}, "approverDecision": "pending"}]},
            {"id": "2", "finalDecision": "pending", "approvers": [
                {"approver": {"displayName": "Cy"}, "approverDecision": "approved"}]}]});
        assert_eq!(
            parse_approvers(&mixed),
            vec![Approver::new(&["Ada", "ada@example.com"])]
        );
        assert!(parse_approvers(&json!({"values": []})).is_empty());
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
}

impl Jira {
    /// Before a write: the issue read again with its transitions, and the record it
    /// stands for now.
    async fn current(&self, record: &ChangeRecord) -> Result<(IssueView, ChangeRecord)> {
        let Some(v) = self.read_issue(&record.id, true).await? else {
            bail!("change {} is no longer in Jira", record.id);
        };
        let current = self.to_record(&v, &record.key, None);
        Ok((v, current))
    }
}

/// The state a change is in once decided, until its status or its approvals say more.
pub(super) fn decided_state(kind: Option<DecisionKind>) -> State {
    match kind {
        Some(DecisionKind::PreApproved) => State::Approved,
        Some(DecisionKind::NeedsApproval) => State::AwaitingApproval,
        Some(DecisionKind::Blocked) | None => State::New,
    }
}

impl Jira {
    /// The state the status alone says, when it says one.
    pub(super) fn status_state(&self, v: &IssueView) -> Option<State> {
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
    pub(super) fn needs_verdict(&self, v: &IssueView, decision: Option<&Decision>) -> bool {
        decision.is_some_and(|d| d.kind == DecisionKind::NeedsApproval)
            && matches!(self.status_state(v), None | Some(State::Rejected))
    }

    /// The record an issue stands for, with the approvals' verdict when it was read.
    pub(super) fn to_record(
        &self,
        v: &IssueView,
        fallback_key: &str,
        verdict: Option<&Verdict>,
    ) -> ChangeRecord {
        let stored = v.stored.clone().unwrap_or_default();
        let decision = v.decision();
        // Only the property is changegate's own full record of the decision; labels can be
        // edited by anyone (an observe label dropped reads as enforce).
        let decision_inferred = decision.is_some() && stored.decision.is_none();
        let outcome = stored.outcome.or_else(|| {
            [Outcome::Failure, Outcome::Success, Outcome::Cancelled]
                .into_iter()
                .find(|o| v.has(&labels::outcome(*o)))
        });
        let kind = decision.as_ref().map(|d| d.kind);
        let state = self.status_state(v).unwrap_or(match (kind, verdict) {
            (Some(DecisionKind::NeedsApproval), Some(Verdict::Declined { .. })) => State::Rejected,
            (Some(DecisionKind::NeedsApproval), Some(Verdict::Approved { .. })) => State::Approved,
            _ => decided_state(kind),
        });
        let (approved_by, approved_at) = match verdict {
            Some(Verdict::Approved { by, at } | Verdict::Declined { by, at }) => {
                (by.clone(), at.or(stored.approved_at))
            }
            _ => (None, stored.approved_at),
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
            incidents: stored.incidents.clone(),
            author: None,
            timed_out: state == State::AwaitingApproval && v.has(labels::TIMED_OUT),
            decision_inferred,
            approval_not_counted: false,
        }
    }

    /// The record of an issue, reading its approvals when the state depends on them.
    pub(super) async fn complete(&self, v: &IssueView, fallback_key: &str) -> Result<ChangeRecord> {
        let verdict = if self.needs_verdict(v, v.decision().as_ref()) {
            Some(self.approvals(&v.key).await?)
        } else {
            None
        };
        Ok(self.to_record(v, fallback_key, verdict.as_ref()))
    }
}

// Tickets that follow the work (`sync`): a comment on an issue the work references,
// internal on a Jira Service Management request unless customer-visible (the same
// `sd.public.comment` property as the change's own comments).

/// Comments read per page, and pages read at most (a ticket with more comments than
/// that cannot be checked for the note: nothing is written).
const COMMENTS_PAGE: u64 = 100;
const COMMENTS_PAGES: u64 = 50;

/// The text of an ADF node and its children, concatenated.
fn adf_text(node: &Value, out: &mut String) {
    match node {
        Value::Object(o) => {
            if let Some(Value::String(t)) = o.get("text") {
                out.push_str(t);
            }
            if let Some(children) = o.get("content") {
                adf_text(children, out);
                out.push('\n');
            }
        }
        Value::Array(items) => items.iter().for_each(|i| adf_text(i, out)),
        // A site answering in wiki text (v2-style) gives a string.
        Value::String(s) => out.push_str(s),
        _ => {}
    }
}

impl Jira {
    /// The comments of `key` that hold `marker`, oldest first, as `(created, id)`; `None`
    /// when there is no such issue (or the account cannot see it).
    async fn marked_comments(&self, key: &str, marker: &str) -> Result<Option<Vec<(String, u64)>>> {
        let path = ["rest", "api", "3", "issue", key, "comment"];
        let mut found = Vec::new();
        let mut start = 0u64;
        for _ in 0..COMMENTS_PAGES {
            let query = [
                ("startAt", start.to_string()),
                ("maxResults", COMMENTS_PAGE.to_string()),
                ("orderBy", "created".to_string()),
            ];
            let page = match self.request(Method::GET, &path, &query, None).await {
                Ok(page) => page,
                Err(e) if not_found(&e) => return Ok(None),
                Err(e) => return Err(self.explain(e, Op::Read(key))),
            };
            let comments = page
                .get("comments")
                .and_then(Value::as_array)
                .ok_or_else(|| anyhow!("Jira answered the comments of {key} without `comments`"))?;
            for c in comments {
                let mut text = String::new();
                adf_text(c.get("body").unwrap_or(&Value::Null), &mut text);
                if text.contains(marker) {
                    let created = c.get("created").and_then(Value::as_str).unwrap_or("");
                    let id = c
                        .get("id")
                        .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
                        .unwrap_or(u64::MAX);
                    found.push((created.to_string(), id));
                }
            }
            let total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
            start += comments.len() as u64;
            if comments.is_empty() || start >= total {
                // Oldest first: `created` strings of one site share a format; the id breaks ties.
                found.sort();
                return Ok(Some(found));
            }
        }
        bail!(
            "{key} has more than {} comments: changegate cannot tell whether its note is there, so none is written",
            COMMENTS_PAGE * COMMENTS_PAGES
        )
    }
}

#[async_trait]
impl crate::itsm::Tickets for Jira {
    async fn note_once(
        &self,
        id: &str,
        lines: &[String],
        marker: &str,
        customer_visible: bool,
    ) -> Result<crate::itsm::Noted> {
        use crate::itsm::Noted;
        let Some(present) = self.marked_comments(id, marker).await? else {
            return Ok(Noted::Missing);
        };
        if !present.is_empty() {
            return Ok(Noted::Already);
        }
        // Text nodes only: untrusted text cannot format or link anything.
        let body = adf::doc(lines.iter().map(|l| adf::line(l)).collect());
        let payload = json!({
            "body": body,
            "properties": [{"key": "sd.public.comment", "value": {"internal": !customer_visible}}],
        });
        let path = ["rest", "api", "3", "issue", id, "comment"];
        self.call(Method::POST, &path, &[], Some(&payload), Op::Comment(id))
            .await?;
        // Two runs that both found no comment both wrote one: the oldest stays, whichever
        // run sees the copies deletes the younger ones.
        if let Ok(Some(after)) = self.marked_comments(id, marker).await {
            for (_, younger) in after.iter().skip(1) {
                let younger = younger.to_string();
                let path = ["rest", "api", "3", "issue", id, "comment", younger.as_str()];
                match self.request(Method::DELETE, &path, &[], None).await {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => tracing::warn!(
                        "{id} holds the note {marker} twice (two runs wrote it at once) and the younger copy could not be deleted: {}",
                        self.explain(e, Op::Comment(id))
                    ),
                }
            }
        }
        Ok(Noted::Written)
    }
}

/// The sprint notice's issue: a plain issue of `[announce] jira_issue_type` in the project,
/// labelled [`labels::NOTICE`] and one label per service and sprint, its key, title and
/// text in the [`NOTICE`] property (what is compared; the description is ADF).
#[async_trait]
impl Notices for Jira {
    async fn find_notice(&self, notice: &SprintNotice) -> Result<Option<KeptNotice>> {
        let key = crate::domain::notice_key(&notice.service_id, notice.sprint);
        let jql = format!(
            "project = {} AND labels = {} AND labels = {} ORDER BY created ASC",
            q(&self.project),
            q(labels::NOTICE),
            q(&labels::notice(&key))
        );
        // The chat's memory rides along: a run where nothing moved makes this one request.
        let body = json!({"jql": jql, "fields": ["summary"], "maxResults": 10,
            "properties": [NOTICE, CHAT_TOLD]});
        let v = self
            .call(
                Method::POST,
                &["rest", "api", "3", "search", "jql"],
                &[],
                Some(&body),
                Op::Search,
            )
            .await?;
        let found = v
            .get("issues")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| {
                i.pointer(&format!("/properties/{NOTICE}/key"))
                    .and_then(Value::as_str)
                    == Some(key.as_str())
            });
        let Some(issue) = found else {
            return Ok(None);
        };
        let issue_key = issue
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Jira returned an issue without a key"))?;
        let kept = issue.pointer(&format!("/properties/{NOTICE}"));
        let same = kept.and_then(|k| k.get("title")).and_then(Value::as_str)
            == Some(notice.title.as_str())
            && kept.and_then(|k| k.get("text")).and_then(Value::as_str)
                == Some(notice.text().as_str());
        let told = issue
            .pointer(&format!("/properties/{CHAT_TOLD}/told"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Some(KeptNotice {
            id: issue_key.to_string(),
            url: Some(self.browse(issue_key)),
            handle: issue_key.to_string(),
            same,
            told,
        }))
    }

    async fn write_notice(
        &self,
        notice: &SprintNotice,
        found: Option<&KeptNotice>,
    ) -> Result<KeptNotice> {
        let key = crate::domain::notice_key(&notice.service_id, notice.sprint);
        let summary: String = notice.title.chars().take(250).collect();
        let description = adf::doc(if notice.lines.is_empty() {
            vec![adf::line("Nothing planned for this sprint yet.")]
        } else {
            notice.lines.iter().map(|l| adf::line(l)).collect()
        });
        let properties = json!([{"key": NOTICE, "value": {"key": key, "title": notice.title, "text": notice.text()}}]);
        let issue_key = match found {
            Some(kept) => {
                let body = json!({"fields": {"summary": summary, "description": description}, "properties": properties});
                self.edit(&kept.handle, &body).await?;
                kept.handle.clone()
            }
            None => {
                let issue_type = if self.notice_type.chars().all(|c| c.is_ascii_digit()) {
                    json!({ "id": self.notice_type })
                } else {
                    json!({ "name": self.notice_type })
                };
                let body = json!({
                    "fields": {
                        "project": {"key": self.project},
                        "issuetype": issue_type,
                        "summary": summary,
                        "description": description,
                        "labels": [labels::NOTICE, labels::notice(&key)],
                    },
                    "properties": properties,
                });
                let v = self
                    .call(
                        Method::POST,
                        &["rest", "api", "3", "issue"],
                        &[],
                        Some(&body),
                        Op::Create,
                    )
                    .await?;
                v.get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("Jira created an issue but sent no key: {v}"))?
                    .to_string()
            }
        };
        Ok(KeptNotice {
            id: issue_key.clone(),
            url: Some(self.browse(&issue_key)),
            handle: issue_key,
            same: true,
            told: found.and_then(|k| k.told.clone()),
        })
    }

    /// Read with the notice by [`Notices::find_notice`]: no request of its own.
    async fn last_told(&self, kept: &KeptNotice) -> Result<Option<String>> {
        Ok(kept.told.clone())
    }

    /// The [`CHAT_TOLD`] property, set by an edit of the notice issue.
    async fn keep_told(&self, kept: &KeptNotice, body: &str) -> Result<()> {
        let body = json!({"properties": [{"key": CHAT_TOLD, "value": {"told": body}}]});
        self.edit(&kept.handle, &body).await
    }
}
