//! `report`: KPIs per sprint for this service (or `--all` in the ledger), as text,
//! markdown, JSON or a self-contained HTML page.

use std::path::PathBuf;

use anyhow::Result;

use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// How many sprints to report, the current one included.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=520))]
    pub sprints: u32,
    /// Every service and environment in the ledger, not only this one.
    #[arg(long)]
    pub all: bool,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `report`: the KPIs from the flow, rendered in the chosen format, to stdout or a file.
pub async fn run(ctx: &Ctx<'_>, args: &ReportArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let report = flow::report::kpis(ctx, backend.as_ref(), args.all, args.sprints).await?;
    present::kpis(ctx.settings, &report, args.output.as_deref())
}
