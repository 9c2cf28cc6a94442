//! `policy explain`: the trust state of this service and environment, and how it was derived.

use anyhow::Result;

use super::change::{self, CommitArgs};
use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// The current sprint, its allowance and how it was derived, the track record, and next sprint's allowance if the current success rate holds.
    Explain(CommitArgs),
    /// Replay the recorded history under other policy values (--set KEY=VALUE, --config FILE), side by side with the current policy.
    Simulate(super::simulate::SimulateArgs),
}

pub async fn run(
    ctx: &Ctx<'_>,
    cmd: &PolicyCommand,
    global: &crate::settings::GlobalArgs,
) -> Result<Exit> {
    let args = match cmd {
        PolicyCommand::Explain(args) => args,
        PolicyCommand::Simulate(args) => return super::simulate::run(ctx, global, args).await,
    };
    let backend = itsm::connect(ctx.settings)?;
    let gathered = change::gather(ctx, backend.as_ref(), &args.into()).await?;
    let explanation = flow::policy::explain(
        ctx,
        backend.as_ref(),
        &gathered.facts,
        gathered.found.as_ref(),
    )
    .await?;
    present::explanation(ctx.settings, &explanation)
}
