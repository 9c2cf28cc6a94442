//! `status`: the change for this pipeline, or `--change-id`.

use anyhow::Result;

use super::change::CommitArgs;
use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub change: CommitArgs,
    /// The change to show (default: the one for this pipeline's commit).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: Option<String>,
}

/// `status`: find the change, present it.
pub async fn run(ctx: &Ctx<'_>, args: &StatusArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let facts = flow::change::facts_without_range(ctx, args.change.commit.as_deref())?;
    let outcome =
        flow::status::run(ctx, backend.as_ref(), facts, args.change_id.as_deref()).await?;
    present::change(ctx.settings, outcome)
}
