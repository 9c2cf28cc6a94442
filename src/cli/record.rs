//! `record`: the deploy's outcome.

use anyhow::{Result, bail};

use super::change::{self, CommitArgs};
use super::{Ctx, Exit};
use crate::domain::Outcome;
use crate::forge;
use crate::itsm;
use crate::output::Report;

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

pub async fn run(ctx: &Ctx, args: &RecordArgs) -> Result<Exit> {
    let Some(outcome) = Outcome::from_word(&args.outcome) else {
        bail!(
            "unknown outcome {:?}: use success, failure (or failed), cancelled (or canceled)",
            args.outcome
        );
    };
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let facts = change::facts_without_range(ctx, &(&args.change).into()).await?;
    let Some(record) =
        change::locate(ctx, itsm.as_ref(), args.change_id.as_deref(), &facts).await?
    else {
        bail!(
            "no change record for {} (run `changegate gate` before the deploy, or pass --change ID)",
            args.change_id
                .clone()
                .unwrap_or_else(|| facts.key().to_string())
        );
    };
    let notes = args.notes.clone().unwrap_or_else(|| {
        let run = facts
            .run_url
            .as_deref()
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        format!("Deploy {outcome}, recorded by changegate{run}")
    });
    let record = if s.dry_run {
        record
    } else {
        itsm.record_outcome(&record, outcome, &notes, s.now).await?
    };
    let mut report = Report::from_record(Some(&record), &facts, s.mode(), s.dry_run);
    if s.dry_run {
        report.message = Some(format!("would record outcome {outcome}"));
    } else if record.outcome != Some(outcome) {
        report.message = Some(match record.outcome {
            Some(kept) if record.deployed_at.is_none() => {
                format!("the gate never passed, so nothing was deployed: recorded as {kept}")
            }
            Some(kept) => format!("outcome was already recorded as {kept}; kept"),
            None => "outcome not recorded".to_string(),
        });
    }
    change::emit(ctx, &report, &facts, Exit::Pass)?;
    forge::annotate(s, &report, &facts, Some(&record)).await?;
    Ok(Exit::Pass)
}
