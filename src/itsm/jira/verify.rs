//! `verify`: the changes due, the incident issues linked to them, and the verdict written
//! back as labels, the issue property and a comment.
//!
//! Requests for N due changes, F of them with a linked incident: ⌈N/100⌉ searches (the
//! links come with the search), F changelog reads (when each link was made), N edits,
//! and F re-reads and comments. A link that does not tell the linked issue's type costs
//! one JQL search for that change.

use super::Jira;
use super::PROPERTY;
use super::client::Op;
use super::client::not_found;
use super::client::q;
use super::client::q_list;
use super::codec::IssueView;
use super::codec::Linked;
use super::codec::Stored;
use super::codec::parse_jira_time;
use super::codec::verification_comment;
use super::eq;
use super::history::PAGE;
use super::labels;
use crate::domain::ChangeFacts;
use crate::domain::ChangeRecord;
use crate::domain::Outcome;
use crate::domain::verify::LinkedIncident;
use crate::domain::verify::Verdict;
use crate::itsm::Verification;
use anyhow::Result;
use anyhow::anyhow;
use async_trait::async_trait;
use chrono::DateTime;
use chrono::Duration;
use chrono::Utc;
use reqwest::Method;
use serde_json::Value;
use serde_json::json;
use std::collections::HashMap;

/// Pages of due changes read per run: the oldest 5,000 are verified, the rest on the
/// next run.
const DUE_PAGES: usize = 50;
/// Pages of a change's changelog read to find when its incidents were linked.
const CHANGELOG_PAGES: usize = 10;
/// Pages of a change's linked incidents read by JQL.
const LINKED_PAGES: usize = 5;

/// When each issue was last linked, from a changelog page's `values` (or `histories`):
/// the items of field `Link` name the linked issue's key in `to` (and in `toString`,
/// "This issue is caused by INC-7").
fn link_times(page: &Value, times: &mut HashMap<String, DateTime<Utc>>) {
    let histories = page
        .get("values")
        .or_else(|| page.get("histories"))
        .and_then(Value::as_array);
    for h in histories.into_iter().flatten() {
        let Some(at) = h
            .get("created")
            .and_then(Value::as_str)
            .and_then(parse_jira_time)
        else {
            continue;
        };
        for item in h
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = item
                .get("field")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !eq(field, "link") {
                continue;
            }
            let to = item.get("to").and_then(Value::as_str).unwrap_or_default();
            let said = item
                .get("toString")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = if !to.trim().is_empty() {
                to.trim().to_string()
            } else if let Some(last) = said.split_whitespace().last() {
                last.to_string()
            } else {
                continue;
            };
            let entry = times.entry(key).or_insert(at);
            *entry = (*entry).max(at);
        }
    }
}

impl Jira {
    /// Whether a linked issue is an incident (`[jira] incident_types`, by name or id);
    /// `None` when the link does not tell the linked issue's type.
    fn is_incident(&self, l: &Linked) -> Option<bool> {
        if l.type_name.is_none() && l.type_id.is_none() {
            return None;
        }
        Some(self.cfg.incident_types.iter().any(|t| {
            l.type_name.as_deref().is_some_and(|n| eq(n, t))
                || l.type_id.as_deref().is_some_and(|id| id == t.trim())
        }))
    }

    /// The change's issue as [`Self::due`] read it, or read now with its links.
    async fn verifying_view(&self, record: &ChangeRecord) -> Result<IssueView> {
        if let Some(v) = self
            .verifying
            .lock()
            .ok()
            .and_then(|m| m.get(&record.id).cloned())
        {
            return Ok(v);
        }
        self.read_with_links(&record.id).await
    }

    /// The issue with its labels, property and links, read now.
    async fn read_with_links(&self, key: &str) -> Result<IssueView> {
        let query = [
            ("fields", "status,labels,created,issuelinks".to_string()),
            ("properties", PROPERTY.to_string()),
        ];
        let path = ["rest", "api", "3", "issue", key];
        let v = self
            .call(Method::GET, &path, &query, None, Op::Read(key))
            .await?;
        IssueView::parse(&v)
    }

    /// The incidents linked to `key`, from JQL, for links that did not tell their type.
    async fn incident_keys_by_jql(&self, key: &str) -> Result<Vec<String>> {
        let jql = format!(
            "issue in linkedIssues({}) AND issuetype in ({}) ORDER BY created ASC",
            q(key),
            q_list(&self.cfg.incident_types)
        );
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..LINKED_PAGES {
            let (issues, next) = self
                .search(&jql, &["issuetype"], PAGE, token.as_deref(), &[])
                .await?;
            keys.extend(issues.into_iter().map(|v| v.key));
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(keys)
    }

    /// When each issue was last linked to `key`, from its changelog.
    async fn link_times(&self, key: &str) -> Result<HashMap<String, DateTime<Utc>>> {
        let mut times = HashMap::new();
        let mut start = 0u64;
        for _ in 0..CHANGELOG_PAGES {
            let query = [
                ("startAt", start.to_string()),
                ("maxResults", "100".to_string()),
            ];
            let path = ["rest", "api", "3", "issue", key, "changelog"];
            let page = match self.request(Method::GET, &path, &query, None).await {
                Ok(p) => p,
                Err(e) if not_found(&e) => return Ok(times),
                Err(e) => return Err(self.explain(e, Op::Read(key))),
            };
            link_times(&page, &mut times);
            let n = page
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as u64;
            let total = page.get("total").and_then(Value::as_u64);
            let last = page
                .get("isLast")
                .and_then(Value::as_bool)
                .unwrap_or_else(|| total.is_none_or(|t| start + n >= t));
            if last || n == 0 {
                break;
            }
            start += n;
        }
        Ok(times)
    }
}

#[async_trait]
impl Verification for Jira {
    /// The changes `verify` has not settled, deployed at or before `deployed_before`,
    /// oldest deploy first. Their links are kept for [`Self::incidents_of`].
    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        // Issue properties cannot be searched: `created` (in the Jira user's time zone,
        // hence the slack) narrows the search, the property's deploy time decides.
        let created_by = (deployed_before + Duration::days(2)).format("%Y-%m-%d");
        let jql = format!(
            "project = {} AND labels = {} AND labels in ({}) AND labels not in ({}) AND created <= {} ORDER BY created ASC",
            q(&self.project),
            q(labels::MARK),
            q_list([
                labels::outcome(Outcome::Success),
                labels::outcome(Outcome::Failure)
            ]),
            q_list([labels::VERIFIED, labels::DUPLICATE]),
            q(&created_by.to_string())
        );
        let mut due: Vec<(DateTime<Utc>, u64, ChangeRecord)> = Vec::new();
        let mut token: Option<String> = None;
        for page in 0..DUE_PAGES {
            let (issues, next) = self
                .search(
                    &jql,
                    &["status", "labels", "created", "issuelinks"],
                    PAGE,
                    token.as_deref(),
                    &[],
                )
                .await?;
            for v in issues.into_iter().filter(IssueView::is_change) {
                let record = self.to_record(&v, "", None);
                let Some(deployed) = record.deployed_at.filter(|d| *d <= deployed_before) else {
                    continue;
                };
                if !matches!(record.outcome, Some(Outcome::Success | Outcome::Failure)) {
                    continue;
                }
                due.push((deployed, v.id, record));
                if let Ok(mut seen) = self.verifying.lock() {
                    seen.insert(v.key.clone(), v);
                }
            }
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
            if page + 1 == DUE_PAGES {
                tracing::warn!(
                    "more than {} changes await verification; the oldest are verified now, the rest on the next run",
                    PAGE as usize * DUE_PAGES
                );
            }
        }
        due.sort_by_key(|(deployed, id, _)| (*deployed, *id));
        Ok(due.into_iter().map(|(_, _, r)| r).collect())
    }

    /// The incident issues linked to a change, with when each was linked when the
    /// changelog tells (else `None`, which counts: fail safe).
    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        let v = self.verifying_view(record).await?;
        let mut keys: Vec<String> = Vec::new();
        let mut untold = false;
        for l in &v.links {
            match self.is_incident(l) {
                Some(true) => keys.push(l.key.clone()),
                Some(false) => {}
                None => untold = true,
            }
        }
        if untold {
            keys.extend(self.incident_keys_by_jql(&v.key).await?);
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let times = match self.link_times(&v.key).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    "{}: when its incidents were linked cannot be read ({e:#}); they count whenever they were linked",
                    v.key
                );
                HashMap::new()
            }
        };
        Ok(keys
            .into_iter()
            .map(|id| LinkedIncident {
                linked_at: times.get(&id).copied(),
                id,
            })
            .collect())
    }

    /// Writes the verdict: the `changegate-verified` label and the property's
    /// verification; a success turned into a failure swaps its outcome label (so the
    /// history's JQL counts it as a failure), is labelled `changegate-failed-after-deploy`
    /// and gets a comment naming the incidents. A change already verified, or whose outcome
    /// changed since it was judged, is not written.
    async fn record_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let judged = record
            .outcome
            .ok_or_else(|| anyhow!("{} has no outcome to verify", record.id))?;
        let after_deploy = matches!(verdict, Verdict::FailedAfterDeploy { .. });
        // Before a comment, read again: another run may have just verified it.
        let v = if after_deploy {
            self.read_with_links(&record.id).await?
        } else {
            self.verifying_view(record).await?
        };
        let current = self.to_record(&v, &record.key, None);
        if v.has(labels::VERIFIED) || current.outcome != Some(judged) {
            return Ok(false);
        }
        // An issue without the property (it was removed by hand) is found by its labels
        // alone: without its key, no property is written, and the labels carry the verdict.
        let mut stored: Option<Stored> = v.stored.clone();
        if let Some(s) = stored.as_mut() {
            s.verified_at = Some(now);
            s.incidents = verdict.incidents().to_vec();
            if after_deploy {
                s.outcome = Some(Outcome::Failure);
                s.failed_after_deploy = true;
            }
        }
        let mut remove: Vec<String> = Vec::new();
        let mut add = vec![labels::VERIFIED.to_string()];
        if after_deploy {
            remove.push(labels::outcome(Outcome::Success));
            add.push(labels::outcome(Outcome::Failure));
            add.push(labels::FAILED_AFTER_DEPLOY.to_string());
        }
        let ops = labels::ops(
            remove.iter().map(String::as_str),
            add.iter().filter(|l| !v.has(l)).map(String::as_str),
        );
        let mut body = json!({ "update": { "labels": ops } });
        if let Some(stored) = &stored {
            body["properties"] = Self::property(stored);
        }
        self.edit(&v.key, &body).await?;
        if let Ok(mut seen) = self.verifying.lock() {
            seen.remove(&v.key);
        }
        if after_deploy {
            // The outcome is settled above; the comment is for the people reading the issue.
            if let Err(e) = self
                .comment(&v.key, verification_comment(verdict.incidents()))
                .await
            {
                tracing::warn!(
                    "{} is recorded as failed after deploy, but the comment naming its incidents could not be added: {e:#}",
                    v.key
                );
            }
        }
        Ok(true)
    }

    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        self.read_facts(&record.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_times_take_the_last_link_of_each_issue() {
        let page = json!({"startAt": 0, "maxResults": 100, "total": 3, "isLast": true, "values": [
            {"id": "1", "created": "2026-03-02T10:00:00.000+0000", "items": [
                {"field": "labels", "fieldtype": "jira", "from": null, "to": null, "toString": "changegate"}]},
            {"id": "2", "created": "2026-03-02T11:00:00.000+0000", "items": [
                {"field": "Link", "fieldtype": "jira", "from": null, "to": "INC-7", "toString": "This issue is caused by INC-7"}]},
            {"id": "3", "created": "2026-03-04T09:30:00.000+0100", "items": [
                {"field": "Link", "fieldtype": "jira", "to": "INC-7", "toString": "This issue is caused by INC-7"},
                {"field": "Link", "fieldtype": "jira", "toString": "This issue relates to OPS-3"}]},
        ]});
        let mut times = HashMap::new();
        link_times(&page, &mut times);
        assert_eq!(times.len(), 2);
        assert_eq!(
            times["INC-7"],
            parse_jira_time("2026-03-04T08:30:00.000+0000").unwrap()
        );
        assert!(times.contains_key("OPS-3"));
    }
}
