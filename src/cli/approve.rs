//! `approve` and `reject`: a human decision on the embedded ledger.

use anyhow::{Result, bail};

use super::{Ctx, Exit, present};
use crate::config::BackendKind;
use crate::flow;
use crate::itsm;

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

/// `approve` / `reject`: the embedded ledger only; the decision through the flow.
pub async fn run(ctx: &Ctx<'_>, args: &DecideArgs, approve: bool) -> Result<Exit> {
    let s = &ctx.settings;
    if s.backend != BackendKind::Local {
        bail!(
            "`{}` works on the embedded ledger only; with the {} backend, decide the change in {}",
            if approve { "approve" } else { "reject" },
            s.backend.as_str(),
            s.backend.as_str()
        );
    }
    if args.by.trim().is_empty() {
        bail!("--by must name who decides");
    }
    let itsm = itsm::connect(s)?;
    let req = flow::ledger::Decide {
        change_id: args.change_id.clone(),
        approve,
        by: args.by.clone(),
        comment: args.comment.clone(),
    };
    let report = flow::ledger::decide(ctx, itsm.as_ref(), &req).await?;
    present::decided(s, &report)
}
