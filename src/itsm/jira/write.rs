//! Writes to an existing issue: comments, edits, the issue property and a new decision.

use anyhow::Result;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::Stored;
use super::lookup::Found;
use super::record::decided_state;
use super::render::decision_comment;
use super::{FACTS, Jira, PROPERTY, labels};
use crate::domain::{ChangeFacts, ChangeRecord, Decision, DecisionKind};

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
        let (stale, kept): (Vec<&String>, Vec<&String>) = found
            .labels
            .iter()
            .partition(|l| labels::is_decision(l) && !new_labels.contains(l));
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
        self.remember(
            &record.key,
            Some(&Found {
                id: found.id,
                labels: kept.into_iter().chain(added).cloned().collect(),
                record: record.clone(),
                stored: Some(stored),
            }),
        );
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
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
            tests_passed: Some(true),
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
