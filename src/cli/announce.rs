//! `announce`: the sprint's upcoming changes, published where people look.

use anyhow::Result;

use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm;
use crate::work::Which;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SprintArg {
    /// The sprint now falls in.
    Current,
    /// The sprint after it (announce before it starts).
    Next,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AnnounceArgs {
    /// Which sprint's work to announce.
    #[arg(long, value_enum, default_value_t = SprintArg::Current)]
    pub sprint: SprintArg,
}

pub async fn run(ctx: &Ctx<'_>, args: &AnnounceArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let which = match args.sprint {
        SprintArg::Current => Which::Current,
        SprintArg::Next => Which::Next,
    };
    let outcome = flow::announce::run(ctx, backend.as_ref(), which).await?;
    present::announced(ctx.settings, &outcome)
}
