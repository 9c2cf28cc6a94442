//! The issue as changegate reads and writes it: the issue view and its property, the text
//! written into it, and the labels.
//!
//! What changegate reads of an issue, and what it keeps in the issue property.
//!
//! What changegate writes into issues: the description and comments, in ADF.

use super::FACTS;
use super::Jira;
use super::PROPERTY;
use super::client::Op;
use super::client::not_found;
use crate::domain::ChangeFacts;
use crate::domain::ChangeRecord;
use crate::domain::CorrelationKey;
use crate::domain::Decision;
use crate::domain::DecisionKind;
use crate::domain::Outcome;
use crate::itsm::ServiceRef;
use anyhow::Result;
use anyhow::anyhow;
use chrono::DateTime;
use chrono::Utc;
use reqwest::Method;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

/// What the issue property holds. Fields added over time are optional, so a property
/// written by an earlier changegate still reads.
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
    /// The service's display name, identity and environment, for `report --all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The earliest commit in the change's range, for the lead time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_commit_at: Option<DateTime<Utc>>,
    /// When a human approved (or declined) a change that needed approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<DateTime<Utc>>,
    /// When the outcome was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// When the earlier decisions this one replaced were made (a freeze that ended, an
    /// emergency declared later), for `policy simulate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<DateTime<Utc>>,
    /// When `verify` settled the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
    /// A success `verify` turned into a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_after_deploy: bool,
    /// The incidents `verify` found linked within the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<String>,
}

impl Stored {
    /// The property as `base` (what the issue holds) brought up to date with `record`:
    /// what the record does not carry (the service, the verification, ...) is kept.
    pub(super) fn of(base: Option<&Stored>, record: &ChangeRecord) -> Stored {
        let mut s = base.cloned().unwrap_or_default();
        s.key = record.key.clone();
        s.commit = Some(s.commit.take().unwrap_or_else(|| commit_of(&record.key)));
        s.decision = record.decision.clone();
        s.opened_at = record.opened_at;
        s.decided_at = record.decided_at;
        s.deployed_at = record.deployed_at;
        s.outcome = record.outcome;
        s.approved_at = record.approved_at.or(s.approved_at);
        s
    }

    /// With what the facts tell that the reports need.
    pub(super) fn with_facts(mut self, facts: &ChangeFacts) -> Stored {
        self.service = Some(facts.service.clone());
        self.service_id = Some(facts.service_id.clone());
        self.environment = Some(facts.environment.clone());
        self.first_commit_at = facts.first_commit_at().or(self.first_commit_at);
        self
    }

    /// The change's commit; property written without one: the key's last part.
    pub(super) fn sha(&self) -> String {
        self.commit.clone().unwrap_or_else(|| commit_of(&self.key))
    }

    /// The service and environment, as stored or, for a property written before they
    /// were, from the correlation key (`changegate:<service id>:<environment>:<sha>`).
    pub(super) fn service_ref(&self) -> Option<ServiceRef> {
        let (service_id, environment) = match (&self.service_id, &self.environment) {
            (Some(id), Some(env)) => (id.clone(), env.clone()),
            _ => {
                let key = self.key.parse::<CorrelationKey>().ok()?;
                (key.service_id, key.environment)
            }
        };
        let service = self.service.clone().unwrap_or_else(|| {
            service_id
                .rsplit('/')
                .next()
                .unwrap_or(&service_id)
                .to_string()
        });
        Some(ServiceRef {
            service_id,
            service,
            environment,
        })
    }
}

/// The commit a correlation key ends with (`changegate:<service>:<environment>:<sha>`); a
/// text that is no key stands for itself.
pub(super) fn commit_of(key: &str) -> String {
    key.parse::<CorrelationKey>()
        .map_or_else(|_| key.to_string(), |k| k.sha)
}

/// A transition offered on an issue.
#[derive(Debug, Clone)]
pub(super) struct Transition {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) to: String,
    pub(super) fields: serde_json::Map<String, Value>,
    /// Whether it shows a screen (whose fields `fields` lists when they were expanded).
    pub(super) has_screen: bool,
}

/// An issue linked to another, as the link shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Linked {
    pub(super) key: String,
    /// The linked issue's type (name and id), when the link tells it.
    pub(super) type_name: Option<String>,
    pub(super) type_id: Option<String>,
}

/// The issues `fields.issuelinks` names, in either direction.
fn parse_links(fields: &Value) -> Vec<Linked> {
    fields
        .get("issuelinks")
        .and_then(Value::as_array)
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l.get("outwardIssue").or_else(|| l.get("inwardIssue")))
                .filter_map(|other| {
                    Some(Linked {
                        key: other.get("key").and_then(Value::as_str)?.to_string(),
                        type_name: str_at(other, &["fields", "issuetype", "name"])
                            .map(str::to_string),
                        type_id: id_text(
                            other
                                .get("fields")
                                .and_then(|f| f.get("issuetype"))
                                .and_then(|t| t.get("id")),
                        ),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What changegate reads of an issue.
#[derive(Debug, Clone)]
pub(super) struct IssueView {
    pub(super) id: u64,
    pub(super) key: String,
    pub(super) status: String,
    pub(super) category: String,
    pub(super) labels: Vec<String>,
    pub(super) created: Option<DateTime<Utc>>,
    pub(super) stored: Option<Stored>,
    pub(super) transitions: Vec<Transition>,
    /// Whether the answer held the transitions (they were asked for).
    pub(super) read_with_transitions: bool,
    /// The linked issues, when `issuelinks` was asked for.
    pub(super) links: Vec<Linked>,
    /// The facts of the standing decision ([`FACTS`]), when asked for.
    pub(super) facts: Option<ChangeFacts>,
}

pub(super) fn parse_jira_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// A numeric id, which Jira sends as a string (`"10032"`) or, in places, a number; 0 when
/// there is none.
pub(super) fn id_number(id: Option<&Value>) -> u64 {
    match id {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// An id as text, whether Jira sent it as a string or a number.
pub(super) fn id_text(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl IssueView {
    pub(super) fn parse(v: &Value) -> Result<IssueView> {
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("Jira returned an issue without a key"))?;
        let id = id_number(v.get("id"));
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
        let facts = v
            .get("properties")
            .and_then(|p| p.get(FACTS))
            .filter(|p| !p.is_null())
            .and_then(|p| match serde_json::from_value::<ChangeFacts>(p.clone()) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!("{key}: the {FACTS} issue property cannot be read ({e})");
                    None
                }
            });
        let transitions = v
            .get("transitions")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| Transition {
                        id: id_text(t.get("id")).unwrap_or_default(),
                        name: str_at(t, &["name"]).unwrap_or_default().to_string(),
                        to: str_at(t, &["to", "name"]).unwrap_or_default().to_string(),
                        fields: t
                            .get("fields")
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                        has_screen: t.get("hasScreen").and_then(Value::as_bool).unwrap_or(false),
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
            read_with_transitions: v.get("transitions").is_some_and(Value::is_array),
            links: parse_links(&fields),
            facts,
        })
    }

    pub(super) fn has(&self, label: &str) -> bool {
        labels::has(&self.labels, label)
    }

    /// Whether this read holds the transitions as a read of the issue with them would:
    /// answered, with the fields of every screen (a search that did not expand them reads
    /// as not complete, and the issue is read again).
    pub(super) fn transitions_complete(&self) -> bool {
        self.read_with_transitions
            && self
                .transitions
                .iter()
                .all(|t| !t.has_screen || !t.fields.is_empty())
    }

    /// Opened by changegate (and not retired as a duplicate).
    pub(super) fn is_change(&self) -> bool {
        (self.has(labels::MARK) || self.stored.is_some()) && !self.has(labels::DUPLICATE)
    }

    /// The decision the property holds, else the one the labels tell.
    pub(super) fn decision(&self) -> Option<Decision> {
        self.stored
            .as_ref()
            .and_then(|s| s.decision.clone())
            .or_else(|| labels::decision(&self.labels))
    }
}

impl Jira {
    /// The issue `key` (or id), with its transitions when asked; `None` when Jira has none.
    /// The facts the change's standing decision was made on ([`FACTS`]), for a later job
    /// (`verify`) to annotate the right pull request.
    pub(super) async fn read_facts(&self, key: &str) -> Result<Option<ChangeFacts>> {
        if matches!(key, "." | "..") {
            return Ok(None);
        }
        let query = [
            ("fields", "status".to_string()),
            ("properties", FACTS.to_string()),
        ];
        let path = ["rest", "api", "3", "issue", key];
        match self.request(Method::GET, &path, &query, None).await {
            Ok(v) => Ok(IssueView::parse(&v)?.facts),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.explain(e, Op::Read(key))),
        }
    }

    pub(super) async fn read_issue(
        &self,
        key: &str,
        transitions: bool,
    ) -> Result<Option<IssueView>> {
        // `url` would drop these segments and address the collection: no issue has them.
        if matches!(key, "." | "..") {
            return Ok(None);
        }
        let mut query = vec![
            ("fields", "status,labels,created".to_string()),
            ("properties", PROPERTY.to_string()),
        ];
        if transitions {
            query.push(("expand", "transitions.fields".to_string()));
        }
        let path = ["rest", "api", "3", "issue", key];
        match self.request(Method::GET, &path, &query, None).await {
            Ok(v) => Ok(Some(IssueView::parse(&v)?)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.explain(e, Op::Read(key))),
        }
    }
}

#[cfg(test)]
mod tests_issue {
    use super::*;

    #[test]
    fn issue_from_the_reference_payload() {
        let v = crate::itsm::jira::reference("rest-api/get-issue.v3.json");
        let v = IssueView::parse(&v).unwrap();
        assert_eq!(v.key, "KP-19");
        assert_eq!(v.id, 10032);
        assert_eq!(v.status, "Backlog");
        assert_eq!(v.category, "new");
        assert_eq!(v.labels, vec!["test".to_string()]);
        assert!(v.created.is_some());
        assert!(!v.is_change());
    }

    #[test]
    fn links_from_the_reference_search_payload() {
        // Its links show the linked issues' status only (no type): both directions read.
        let v = crate::itsm::jira::reference("rest-api/search-issues.json");
        let issue = &v["issues"][0];
        let links = IssueView::parse(issue).unwrap().links;
        let keys: Vec<&str> = links.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["PR-2", "PR-3"]);
        assert!(links.iter().all(|l| l.type_name.is_none()));
        let typed = serde_json::json!({"key": "CHG-1", "fields": {"issuelinks": [
            {"id": "1", "type": {"name": "Problem/Incident"},
             "inwardIssue": {"key": "INC-4", "fields": {"issuetype": {"id": "10004", "name": "Incident"}}}}]}});
        let links = IssueView::parse(&typed).unwrap().links;
        assert_eq!(
            links,
            vec![Linked {
                key: "INC-4".into(),
                type_name: Some("Incident".into()),
                type_id: Some("10004".into()),
            }]
        );
    }

    #[test]
    fn a_property_of_an_earlier_version_reads_and_later_writes_keep_every_field() {
        let old: Stored = serde_json::from_value(serde_json::json!({
            "key": "changegate:acme/monorepo/billing:production:abc123",
            "commit": "abc123", "outcome": "success", "decided_at": "2026-03-02T10:00:00Z",
        }))
        .unwrap();
        let r = old.service_ref().unwrap();
        assert_eq!(
            (
                r.service_id.as_str(),
                r.environment.as_str(),
                r.service.as_str()
            ),
            ("acme/monorepo/billing", "production", "billing")
        );
        let stored = Stored {
            verified_at: Some(Utc::now()),
            incidents: vec!["INC-1".into()],
            failed_after_deploy: true,
            service: Some("Billing".into()),
            ..old
        };
        let record = ChangeRecord {
            id: "CHG-1".into(),
            url: None,
            key: stored.key.clone(),
            state: crate::domain::State::Closed,
            decision: None,
            outcome: Some(Outcome::Failure),
            emergency_reason: None,
            approved_by: None,
            approval_comment: None,
            opened_at: None,
            decided_at: stored.decided_at,
            approved_at: None,
            deployed_at: None,
            incidents: Vec::new(),
            author: None,
            timed_out: false,
            decision_inferred: false,
            approval_not_counted: false,
        };
        let merged = Stored::of(Some(&stored), &record);
        assert_eq!(merged.outcome, Some(Outcome::Failure));
        assert_eq!(merged.incidents, stored.incidents);
        assert_eq!(merged.verified_at, stored.verified_at);
        assert_eq!(merged.service_ref().unwrap().service, "Billing");
        // Fields never set are not written at all.
        let fresh = serde_json::to_value(Stored::of(None, &record)).unwrap();
        assert!(fresh.get("incidents").is_none() && fresh.get("verified_at").is_none());
    }
}

/// Rich text in Atlassian Document Format, as `/rest/api/3` wants it. Text goes in text
/// nodes, never in markup, so untrusted text cannot format or link anything.
pub(super) mod adf {
    use serde_json::{Value, json};

    pub fn doc(blocks: Vec<Value>) -> Value {
        json!({"type": "doc", "version": 1, "content": blocks})
    }

    pub fn text(text: &str) -> Value {
        json!({"type": "text", "text": text})
    }

    /// Bold text.
    pub fn strong(text: &str) -> Value {
        json!({"type": "text", "text": text, "marks": [{"type": "strong"}]})
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
        para(vec![strong(label), text(&format!(" {value}"))])
    }

    pub fn bullets(items: &[String]) -> Value {
        json!({
            "type": "bulletList",
            "content": items.iter().map(|i| json!({"type": "listItem", "content": [line(i)]})).collect::<Vec<_>>(),
        })
    }
}

/// The description of a new change issue: the pipeline's facts, one per paragraph.
pub(super) fn description(facts: &ChangeFacts) -> Value {
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
            adf::strong("Pull request:"),
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
            adf::strong("Pipeline run:"),
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

/// The comment that records the final decision after a rejection or a timed-out wait.
pub(super) fn refusal_comment(why: &str) -> Value {
    adf::doc(vec![adf::para(vec![
        adf::strong("changegate decision: blocked"),
        adf::text(&format!(" ({why}); the deploy does not go ahead.")),
    ])])
}

/// The comment that records a decision: kind, mode, allowance and every rule.
pub(super) fn decision_comment(d: &Decision) -> Value {
    let mut blocks = vec![adf::para(vec![
        adf::strong(&format!("changegate decision: {}", d.kind)),
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

/// The comment that records the deploy's outcome: `kept`, and what the job said when that
/// differs, then the job's notes.
pub(super) fn outcome_comment(kept: Outcome, said: Outcome, notes: &str) -> Value {
    let mut blocks = vec![adf::para(vec![adf::strong(&format!(
        "changegate: deploy {kept}"
    ))])];
    if kept != said {
        blocks.push(adf::line(&format!(
            "The gate never passed, so nothing was deployed: recorded as {kept} (the job said {said})."
        )));
    }
    if !notes.trim().is_empty() {
        blocks.push(adf::line(notes));
    }
    adf::doc(blocks)
}

/// The comment `verify` adds to a success it turned into a failure.
pub(super) fn verification_comment(incidents: &[String]) -> Value {
    adf::doc(vec![
        adf::para(vec![adf::strong("changegate verify: failed after deploy")]),
        adf::line(&format!(
            "Incidents linked within the verification window: {}.",
            incidents.join(", ")
        )),
        adf::line(
            "The deploy went through, but it now counts as a failure in this service's track record and trust ramp.",
        ),
    ])
}

/// The comment on an issue retired as the duplicate of `winner`.
pub(super) fn duplicate_note(winner: &str) -> Value {
    adf::doc(vec![adf::line(&format!(
        "Duplicate of {winner}: a parallel changegate run opened it for the same change first. This issue is not used."
    ))])
}

#[cfg(test)]
mod tests_render {
    use super::*;

    #[test]
    fn untrusted_text_stays_text() {
        assert_eq!(
            adf::link("javascript:alert(1)"),
            adf::text("javascript:alert(1)")
        );
        assert_eq!(
            adf::link("https://ci.example.com/run/1")["marks"][0]["attrs"]["href"],
            "https://ci.example.com/run/1"
        );
        let note = outcome_comment(Outcome::Cancelled, Outcome::Success, "[x](https://evil)");
        let last = &note["content"][2]["content"][0];
        assert_eq!(last, &adf::text("[x](https://evil)"));
    }
}

pub mod labels {
    //! The labels changegate writes. All are `[a-z0-9-]`, so every Jira site accepts them and
    //! `labels = "…"` matches them exactly.

    use chrono::{DateTime, NaiveDate, Utc};
    use serde_json::{Value, json};

    use crate::domain::{Decision, DecisionKind, Mode, Outcome};

    /// On every change issue changegate opened.
    pub const MARK: &str = "changegate";
    /// On `announce`'s sprint notices (never on a change: no change query finds them).
    pub const NOTICE: &str = "changegate-announce";
    /// On an issue a parallel run created for a change that already had one.
    pub const DUPLICATE: &str = "changegate-duplicate";
    pub const EMERGENCY: &str = "changegate-emergency";
    pub const OBSERVE: &str = "changegate-observe";
    /// On a change `verify` has settled: it is never verified (nor written) again.
    pub const VERIFIED: &str = "changegate-verified";
    /// On a success `verify` turned into a failure (its outcome label is then the failure's).
    pub const FAILED_AFTER_DEPLOY: &str = "changegate-failed-after-deploy";
    /// On a change whose gate's wait for approval ran out: a re-run reads the timeout back with
    /// the issue (the comment says it to humans). A new decision removes it.
    pub const TIMED_OUT: &str = "changegate-timed-out";
    const DAY: &str = "changegate-day-";
    const SERVICE: &str = "changegate-svc-";

    /// FNV-1a, 64 bits: stable across versions and platforms.
    fn fnv1a64(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// One label per sprint notice: its key ([`crate::domain::notice_key`]) hashed.
    pub fn notice(key: &str) -> String {
        format!("{NOTICE}-{:016x}", fnv1a64(key))
    }

    /// One label per service and environment: the history's scope.
    pub fn service(service_id: &str, environment: &str) -> String {
        format!(
            "{SERVICE}{:016x}",
            fnv1a64(&format!("{service_id}:{environment}"))
        )
    }

    /// Whether `label` is a service label (not a change's, which goes on with the commit).
    pub fn is_service(label: &str) -> bool {
        label
            .strip_prefix(SERVICE)
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
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

    /// Whether `list` holds `label`.
    pub(in crate::itsm::jira) fn has(list: &[String], label: &str) -> bool {
        list.iter().any(|l| l == label)
    }

    /// The decision the labels tell, when the property is gone: kind, mode and emergency.
    pub(in crate::itsm::jira) fn decision(list: &[String]) -> Option<Decision> {
        let kind = KINDS.into_iter().find(|k| has(list, &kind(*k)))?;
        Some(Decision {
            kind,
            rules: Vec::new(),
            mode: if has(list, OBSERVE) {
                Mode::Observe
            } else {
                Mode::Enforce
            },
            emergency: has(list, EMERGENCY)
                .then(|| "emergency (from the issue's labels)".to_string()),
            sprint: 0,
            allowance: 0,
            allowance_used: 0,
            clock_override: None,
        })
    }

    /// The labels of a decision taken `now`.
    pub(in crate::itsm::jira) fn of_decision(d: &Decision, now: DateTime<Utc>) -> Vec<String> {
        let mut out = vec![kind(d.kind), day(now.date_naive())];
        if d.emergency.is_some() {
            out.push(EMERGENCY.to_string());
        }
        if d.mode == Mode::Observe {
            out.push(OBSERVE.to_string());
        }
        out
    }

    /// Whether `label` is one [`of_decision`] writes: replaced when the change is decided again.
    pub(in crate::itsm::jira) fn is_decision(label: &str) -> bool {
        KINDS.iter().any(|k| label == kind(*k))
            || is_day(label)
            || label == EMERGENCY
            || label == OBSERVE
            || label == TIMED_OUT
    }

    /// The `update.labels` operations of an issue edit: the removals, then the additions.
    pub(in crate::itsm::jira) fn ops<'a>(
        remove: impl IntoIterator<Item = &'a str>,
        add: impl IntoIterator<Item = &'a str>,
    ) -> Value {
        let remove = remove.into_iter().map(|l| json!({ "remove": l }));
        let add = add.into_iter().map(|l| json!({ "add": l }));
        Value::Array(remove.chain(add).collect())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn labels_are_plain_and_distinct() {
            let sha = "0123456789abcdef0123456789abcdef01234567";
            let a = key("acme/payments-api", "production", sha);
            let b = key("acme/payments-api", "staging", sha);
            assert_ne!(a, b);
            assert!(a.starts_with(&service("acme/payments-api", "production")));
            assert!(a.ends_with(sha));
            assert!(
                a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{a}"
            );
            assert!(a.len() < 255);
            let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
            assert_eq!(parse_day(&day(date)), Some(date));
            assert_eq!(kind(DecisionKind::PreApproved), "changegate-pre-approved");
            assert!(is_service(&service("acme/payments-api", "production")));
            assert!(!is_service(&a));
            assert!(!is_service(VERIFIED));
        }

        #[test]
        fn decision_from_labels_keeps_kind_mode_and_emergency() {
            let d = decision(&[
                kind(DecisionKind::NeedsApproval),
                OBSERVE.into(),
                EMERGENCY.into(),
            ])
            .unwrap();
            assert_eq!(d.kind, DecisionKind::NeedsApproval);
            assert_eq!(d.mode, Mode::Observe);
            assert!(d.emergency.is_some());
            assert!(decision(&["x".into()]).is_none());
        }
    }
}
