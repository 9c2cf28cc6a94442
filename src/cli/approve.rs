//! `approve` and `reject`: a human decision on the embedded ledger.

use anyhow::{Result, bail};

use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm::{self, ManualCommand};

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

/// `approve` / `reject`: the ledgers only (local, postgres); the decision through the flow.
pub async fn run(ctx: &Ctx<'_>, args: &DecideArgs, approve: bool) -> Result<Exit> {
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
    let backend = itsm::connect(s)?;
    let req = flow::ledger::Decide {
        change_id: args.change_id.clone(),
        approve,
        by: args.by.clone(),
        comment: args.comment.clone(),
    };
    let report = flow::ledger::decide(ctx, backend.as_ref(), &req).await?;
    present::decided(s, &report)
}
