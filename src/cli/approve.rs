//! `approve` and `reject`: a human decision on the embedded ledger; in CI `--by`
//! defaults to the user who started the job.

use anyhow::{Result, bail};

use super::{Ctx, Exit, present};
use crate::env;
use crate::flow;
use crate::itsm::{self, ManualCommand};

#[derive(Debug, Clone, clap::Args)]
pub struct DecideArgs {
    /// The change (e.g. CG-12; default: the one for this pipeline's commit).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: Option<String>,
    /// Who decides (default in CI: the user who started the job, GITHUB_ACTOR or
    /// GITLAB_USER_LOGIN).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
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
    // In CI the person deciding is the user who started the job, whatever `--by` says.
    let ci_user = env::ci_user(&s.env);
    let by = match args.by.as_deref().map(str::trim) {
        Some(by) if !by.is_empty() => by.to_string(),
        Some(_) => bail!("--by must name who decides"),
        None => match ci_user.first() {
            Some(user) => user.clone(),
            None => bail!(
                "--by must name who decides (in CI it defaults to the user who started the job)"
            ),
        },
    };
    let backend = itsm::connect(s)?;
    let req = flow::ledger::Decide {
        change_id: args.change_id.clone(),
        approve,
        by,
        also: ci_user,
        comment: args.comment.clone(),
    };
    let report = flow::ledger::decide(ctx, backend.as_ref(), &req).await?;
    present::decided(s, &report)
}
