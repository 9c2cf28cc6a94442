//! Writes to an existing issue: comments, edits, the issue property and a new decision.

use anyhow::Result;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::Stored;
use super::lookup::Found;
use super::render::decision_comment;
use super::{Jira, PROPERTY, labels};
use crate::domain::{ChangeRecord, Decision, DecisionKind, State};

impl Jira {
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

    pub(super) async fn edit(&self, key: &str, body: &Value) -> Result<()> {
        let path = ["rest", "api", "3", "issue", key];
        self.call(Method::PUT, &path, &[], Some(body), Op::Edit(key))
            .await?;
        Ok(())
    }

    pub(super) fn property(stored: &Stored) -> Value {
        json!([{ "key": PROPERTY, "value": stored }])
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
        d: &Decision,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let mut record = found.record.clone();
        record.decision = Some(d.clone());
        record.decided_at = Some(now);
        record.emergency_reason = d.emergency.clone();
        let new_labels = labels::of_decision(d, now);
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
}
