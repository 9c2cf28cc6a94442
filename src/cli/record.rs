//! `record`: the deploy's outcome.

use anyhow::{Result, bail};

use super::change::CommitArgs;
use super::{Ctx, Exit, present};
use crate::domain::Outcome;
use crate::flow::{self, record::RecordRequest};
use crate::itsm;

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub change: CommitArgs,
    /// success | failure | cancelled (also GitHub's job.status and GitLab's CI_JOB_STATUS words).
    #[arg(long, value_name = "OUTCOME")]
    pub outcome: String,
    /// The change to record (default: the one for this pipeline's commit).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: Option<String>,
    /// Close notes.
    #[arg(long, value_name = "TEXT")]
    pub notes: Option<String>,
}

/// `record`: check the outcome's word, run the record flow, present its outcome.
pub async fn run(ctx: &Ctx<'_>, args: &RecordArgs) -> Result<Exit> {
    let Some(outcome) = Outcome::from_word(&args.outcome) else {
        bail!(
            "unknown outcome {:?}: use success, failure (or failed), cancelled (or canceled)",
            args.outcome
        );
    };
    let backend = itsm::connect(ctx.settings)?;
    let facts = flow::change::facts_without_range(ctx, args.change.commit.as_deref())?;
    let req = RecordRequest {
        outcome,
        change_id: args.change_id.clone(),
        notes: args.notes.clone(),
    };
    let outcome = flow::record::run(ctx, backend.as_ref(), facts, &req).await?;
    present::change(ctx.settings, outcome)
}
