//! The embedded ledger's manual commands: a human's decision (`approve`, `reject`) and an
//! incident linked to a change (`incident`). The door refuses them for other backends
//! before connecting.

use anyhow::{Result, bail};
use serde::Serialize;

use super::{Ctx, change};
use crate::domain::{approval, verify};
use crate::itsm::{self, Backend, ManualCommand};
use crate::output::Report;

/// A human's decision on a change waiting for approval.
#[derive(Debug, Clone)]
pub struct Decide {
    /// The change (e.g. CG-12); `None`: the one for this pipeline's commit.
    pub change_id: Option<String>,
    /// Approve, or reject.
    pub approve: bool,
    /// Who decides.
    pub by: String,
    /// The other names of the person deciding: the CI user who started the job (see
    /// [`crate::env::ci_user`]). An approval is refused if any of them is the author.
    pub also: Vec<String>,
    /// Why: kept with the decision.
    pub comment: Option<String>,
}

/// Checks that the approver may approve (`[approval] separate_author`), writes the
/// decision (a dry run only reads the change and checks) and reports the change after it.
pub async fn decide(ctx: &Ctx<'_>, backend: &dyn Backend, req: &Decide) -> Result<Report> {
    let s = ctx.settings;
    let current = match &req.change_id {
        Some(id) => match backend.get(id).await? {
            Some(r) => r,
            None => bail!("no change {id} in the ledger"),
        },
        None => {
            let facts = change::facts_without_range(ctx, None)?;
            match change::locate(backend, None, &facts).await? {
                (Some(r), _) => r,
                (None, _) => bail!(
                    "no change record for {} in the ledger (run `changegate gate` for this commit first, or pass --change ID)",
                    facts.key()
                ),
            }
        }
    };
    if req.approve {
        let mut approvers = vec![req.by.as_str()];
        approvers.extend(req.also.iter().map(String::as_str));
        approval::may_approve(
            &current.id,
            current.author.as_ref(),
            &approvers,
            s.file.approval.separate_author,
        )?;
    }
    let record = if s.dry_run {
        current
    } else {
        let command = if req.approve {
            ManualCommand::Approve
        } else {
            ManualCommand::Reject
        };
        itsm::manual(backend, command)?
            .decide_by_hand(
                &current.id,
                req.approve,
                req.by.trim(),
                req.comment.as_deref(),
                s.now,
            )
            .await?
    };
    Ok(Report {
        change_id: Some(record.id.clone()),
        change_url: record.url.clone(),
        decision: record.final_decision(),
        policy_decision: record
            .decision
            .as_ref()
            .map(|d| d.kind)
            .filter(|k| record.refused() && *k != crate::domain::DecisionKind::Blocked),
        state: Some(record.state),
        outcome: record.outcome,
        rules: Vec::new(),
        mode: s.mode(),
        dry_run: s.dry_run,
        correlation_key: record.key.clone(),
        service: String::new(),
        environment: String::new(),
        commit: String::new(),
        emergency: record.emergency_reason.clone(),
        sprint: None,
        approved_by: record.approved_by.clone(),
        approval_comment: record.approval_comment.clone(),
        incidents: record.incidents.clone(),
        clock_override: None,
        message: None,
        how_to_approve: None,
    })
}

/// What `ledger migrate` did.
#[derive(Debug, Serialize)]
pub struct Migrated {
    /// `local` or `postgres`.
    pub backend: &'static str,
    /// The file, or host:port/database.
    pub target: String,
    /// The schema version found.
    pub before: i64,
    /// The schema version now.
    pub after: i64,
}

/// Applies the ledger's migrations (opening the ledger does; this says what it found).
pub async fn migrate(ctx: &Ctx<'_>) -> Result<Migrated> {
    let s = ctx.settings;
    itsm::ledger_only(s.backend, "ledger migrate")?;
    let config = s.backend_config()?;
    let status = itsm::migrate(s).await?;
    Ok(Migrated {
        backend: s.backend.as_str(),
        target: config.target(),
        before: status.before,
        after: status.after,
    })
}

/// An incident linked to a change, as `incident` reports it.
#[derive(Debug, Serialize)]
pub struct Linked {
    /// The change.
    pub change_id: String,
    /// The incident linked by this run.
    pub incident: String,
    /// Every incident linked to the change.
    pub incidents: Vec<String>,
    /// Nothing was written.
    pub dry_run: bool,
    /// Whether `verify` will count it: linked within the verification window.
    pub within_window: bool,
    /// What the link does not do (the window closed, nothing deployed yet).
    pub message: Option<String>,
}

/// Links `incident` (a checked id) to the change (a dry run only reads the change).
pub async fn link_incident(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    change_id: &str,
    incident: &str,
) -> Result<Linked> {
    let s = ctx.settings;
    let record = if s.dry_run {
        match backend.get(change_id).await? {
            Some(mut r) => {
                if !r.incidents.iter().any(|i| i == incident) {
                    r.incidents.push(incident.to_string());
                }
                r
            }
            None => bail!("no change {} in the ledger", change_id),
        }
    } else {
        itsm::manual(backend, ManualCommand::Incident)?
            .link_incident(change_id, incident, s.now)
            .await?
    };
    let due = record
        .deployed_at
        .map(|at| verify::due_at(at, s.verify_window));
    let within_window = due.is_none_or(|due| s.now <= due);
    let message = match (record.deployed_at, due) {
        (_, Some(due)) if !within_window => Some(format!(
            "the verification window of {} closed at {}: this incident does not change its outcome",
            record.id,
            due.format("%Y-%m-%d %H:%M UTC")
        )),
        (None, _) => Some(format!("{} has not been deployed", record.id)),
        _ => None,
    };
    Ok(Linked {
        change_id: record.id.clone(),
        incident: incident.to_string(),
        incidents: record.incidents.clone(),
        dry_run: s.dry_run,
        within_window,
        message,
    })
}
