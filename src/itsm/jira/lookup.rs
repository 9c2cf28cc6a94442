//! Finding a change: by correlation key (remembered per process) or by issue key.

use anyhow::{Result, bail};

use super::issue::{IssueView, Stored};
use super::search::q;
use super::{Jira, PROPERTY, labels};
use crate::domain::{ChangeRecord, CorrelationKey};
use crate::env;

/// A change found in (or written to) Jira, with what later writes need.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub(super) id: u64,
    pub(super) labels: Vec<String>,
    pub(super) record: ChangeRecord,
    /// The issue property as read or written.
    pub(super) stored: Option<Stored>,
}

impl Found {
    pub(super) fn of(v: &IssueView, record: ChangeRecord) -> Found {
        Found {
            id: v.id,
            labels: v.labels.clone(),
            record,
            stored: v.stored.clone(),
        }
    }
}

impl Jira {
    /// What this process knows of the change with correlation key `key`.
    pub(super) fn remember(&self, key: &str, found: Option<&Found>) {
        if let Ok(mut map) = self.found.lock() {
            map.insert(key.to_string(), found.cloned());
        }
    }

    /// `Some(None)`: this process looked and found nothing; `None`: never looked.
    pub(super) fn remembered(&self, key: &str) -> Option<Option<Found>> {
        self.found.lock().ok().and_then(|m| m.get(key).cloned())
    }

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
    ) -> Result<Vec<IssueView>> {
        let full = key.to_string();
        let (issues, _) = self
            .search(
                &self.key_jql(key),
                &["status", "labels", "created"],
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

    /// The change with this key, if Jira has it; remembered for the rest of the run.
    pub(super) async fn lookup(&self, key: &CorrelationKey) -> Result<Option<Found>> {
        let full = key.to_string();
        let Some(v) = self.matches(key, &[]).await?.into_iter().next() else {
            self.remember(&full, None);
            return Ok(None);
        };
        let found = Found::of(&v, self.complete(&v, &full).await?);
        self.remember(&full, Some(&found));
        Ok(Some(found))
    }

    /// A change by its issue key or id; an error when the issue is not a change.
    pub(super) async fn by_id(&self, id: &str) -> Result<Option<ChangeRecord>> {
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

    /// The change read again, and what this process remembers of it brought up to date.
    pub(super) async fn reread(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        let Some(v) = self.read_issue(&record.id, false).await? else {
            bail!(
                "change {} is no longer in Jira (deleted, moved, or no longer visible to the account in {})",
                record.id,
                env::JIRA_USER
            );
        };
        let fresh = self.complete(&v, &record.key).await?;
        if let Ok(mut map) = self.found.lock()
            && let Some(Some(f)) = map.get_mut(&fresh.key)
        {
            f.record = fresh.clone();
            f.labels = v.labels.clone();
            f.stored = v.stored.clone();
        }
        Ok(fresh)
    }
}
