//! `sync`: the tickets this pipeline's work references hear of its pull request (opened,
//! merged) and, with `[announce] source`, of the issues that entered the backlog and the
//! sprint. `gate`, `record` and `verify` write the pull request's steps, and more, with
//! `[sync] enabled`.

use anyhow::Result;

use super::change::CommitArgs;
use super::{Ctx, Exit, present};
use crate::flow;

#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub change: CommitArgs,
}

/// `sync`: run the sync flow, present what it wrote.
pub async fn run(ctx: &Ctx<'_>, args: &SyncArgs) -> Result<Exit> {
    let outcome = flow::sync::run(ctx, args.change.commit.as_deref()).await?;
    present::sync(ctx.settings, &outcome)
}
