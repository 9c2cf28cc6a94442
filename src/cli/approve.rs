//! `approve` and `reject`: a human decision on the embedded ledger.

use anyhow::{Result, bail};

use super::{Ctx, Exit};
use crate::itsm::{self, ManualCommand};
use crate::output::{Report, console};
use crate::settings::Format;

#[derive(Debug, Clone, clap::Args)]
pub struct DecideArgs {
    /// The change (e.g. CG-12).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: String,
    /// Who decides.
    #[arg(long, value_name = "NAME")]
    pub by: String,
    /// Why: kept with the decision and shown with it (`status`, the pull request comment).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

pub async fn run(ctx: &Ctx, args: &DecideArgs, approve: bool) -> Result<Exit> {
    let s = &ctx.settings;
    let command = if approve {
        ManualCommand::Approve
    } else {
        ManualCommand::Reject
    };
    itsm::manual_only(s.backend, command)?;
    if args.by.trim().is_empty() {
        bail!("--by must name who decides");
    }
    let itsm = itsm::connect(s)?;
    let record = if s.dry_run {
        match itsm.get(&args.change_id).await? {
            Some(r) => r,
            None => bail!("no change {} in the ledger", args.change_id),
        }
    } else {
        itsm::manual(itsm.as_ref(), command)?
            .decide_by_hand(
                &args.change_id,
                approve,
                args.by.trim(),
                args.comment.as_deref(),
                s.now,
            )
            .await?
    };
    let report = Report {
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
    };
    match s.format {
        Format::Json => console::json(&report)?,
        _ => console::human(
            &format!(
                "{}: {}{}\n",
                record.id,
                record.state,
                record
                    .approved_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ),
            s.github_actions,
        )?,
    }
    Ok(Exit::Pass)
}
