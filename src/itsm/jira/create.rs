//! Creating the change issue (or JSM request), and settling a race with a parallel run.

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::Op;
use super::issue::{IssueView, Stored, id_number, id_text};
use super::lookup::Found;
use super::record::decided_state;
use super::render::{description, duplicate_note};
use super::{Jira, eq, labels};
use crate::domain::{ChangeFacts, ChangeRecord, CorrelationKey, Decision};
use crate::env;

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
        timed_out: false,
        decision_inferred: false,
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
        let hits = self.matches(key, &[mine.id]).await?;
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
