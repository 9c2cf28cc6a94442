//! `gate` and `open`: options, then the flow, then the presenter.

use std::time::Duration;

use anyhow::Result;

use super::change::{self, ChangeArgs};
use super::present::{self, Console};
use super::{Ctx, Exit};
use crate::flow::{self, gate::GateRequest};
use crate::itsm;

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// How long to wait for approval (default approval.timeout); 0 returns at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Declare an emergency change, with its reason: it passes a freeze, the allowance and the
    /// track record, and uses no allowance (a failing risk or evidence rule still sends it to
    /// approval); it is recorded as an emergency and flagged for review. With
    /// policy.emergency = "approve" it goes to expedited approval instead.
    #[arg(long, value_name = "REASON")]
    pub emergency: Option<String>,
}

/// `gate`: gather the facts, run the gate flow, present its outcome.
pub async fn run(ctx: &Ctx<'_>, args: &GateArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let gathered = change::gather(ctx, backend.as_ref(), &args.change).await?;
    let req = GateRequest {
        wait: args.wait,
        emergency: args.emergency.clone(),
    };
    let progress = Console {
        settings: ctx.settings,
    };
    let outcome = flow::gate::run(ctx, backend.as_ref(), gathered, &req, &progress).await?;
    present::change(ctx.settings, outcome)
}

/// `open`: only open or update the record; print its id.
pub async fn open(ctx: &Ctx<'_>, args: &ChangeArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let gathered = change::gather(ctx, backend.as_ref(), args).await?;
    let outcome = flow::change::open(ctx, backend.as_ref(), gathered).await?;
    present::change(ctx.settings, outcome)
}
