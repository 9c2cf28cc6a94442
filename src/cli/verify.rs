//! `verify`: after the verification window, turn a success that caused an incident into a
//! failure ("failed after deploy", with the incident ids). Idempotent: a change is verified
//! once, so a scheduled pipeline may run it as often as it likes.

use anyhow::Result;

use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct VerifyArgs {}

/// `verify`: run the verify flow, present what it found.
pub async fn run(ctx: &Ctx<'_>, _args: &VerifyArgs) -> Result<Exit> {
    let backend = itsm::connect(ctx.settings)?;
    let outcome = flow::verify::run(ctx, backend.as_ref()).await?;
    present::verify(ctx.settings, &outcome)
}
