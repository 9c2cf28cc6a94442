//! `status`: the change for this pipeline, or `--change-id`.

use anyhow::{Result, bail};

use super::change::{self, CommitArgs};
use super::{Ctx, Exit};
use crate::itsm;
use crate::output::Report;

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub change: CommitArgs,
    /// The change to show (default: the one for this pipeline's commit).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: Option<String>,
}

pub async fn run(ctx: &Ctx, args: &StatusArgs) -> Result<Exit> {
    let itsm = itsm::connect(&ctx.settings)?;
    let facts = change::facts_without_range(ctx, &(&args.change).into()).await?;
    let Some(record) =
        change::locate(ctx, itsm.as_ref(), args.change_id.as_deref(), &facts).await?
    else {
        match &args.change_id {
            Some(id) => bail!("no change record {id} (check the id, or leave out --change)"),
            None => bail!(
                "no change record for {} (run `changegate gate` for this commit first, or pass --change ID)",
                facts.key()
            ),
        }
    };
    let report = Report::from_record(
        Some(&record),
        &facts,
        ctx.settings.mode(),
        ctx.settings.dry_run,
    );
    change::emit(ctx, &report, &facts, Exit::Pass)?;
    Ok(Exit::Pass)
}
