//! Creating the change issue (or JSM request), and settling a race with a parallel run.

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::{IssueView, Stored};
use super::render::{adf, description};
use super::{Jira, eq, labels};
use crate::domain::{ChangeFacts, CorrelationKey, Decision};
use crate::env;

impl Jira {
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
    pub(super) async fn create(
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
            label_list.extend(labels::of_decision(d, now));
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
    pub(super) async fn settle(
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
}
