//! Workflow transitions by status name or by the names `[jira.transitions]` gives.

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::{IssueView, Stored, Transition};
use super::{Jira, eq};
use crate::domain::{Decision, DecisionKind, Mode};
use crate::env;

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
