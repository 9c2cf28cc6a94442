//! `ledger migrate`: apply the ledger's schema migrations by hand (SQLite or PostgreSQL),
//! e.g. from a deploy job with the database owner's URL before the pipelines run.

use anyhow::Result;

use super::{Ctx, Exit, present};
use crate::flow;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LedgerCommand {
    /// Apply the schema migrations this changegate knows; a ledger written by a newer
    /// changegate is refused (exit 2).
    Migrate,
}

pub async fn run(ctx: &Ctx<'_>, cmd: &LedgerCommand) -> Result<Exit> {
    match cmd {
        LedgerCommand::Migrate => {
            let migrated = flow::ledger::migrate(ctx).await?;
            present::migrated(ctx.settings, &migrated)
        }
    }
}
