//! `record`: the deploy's outcome, written to the change and its record closed.

use anyhow::{Result, bail};

use super::{ChangeOutcome, Ctx, Exit, annotated, change};
use crate::domain::{ChangeFacts, Outcome};
use crate::itsm::Backend;
use crate::output::Report;

/// What a `record` run is asked.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    /// How the deploy ended.
    pub outcome: Outcome,
    /// The change to record (default: the one for this pipeline's commit).
    pub change_id: Option<String>,
    /// Close notes (default: a sentence naming the outcome and the run).
    pub notes: Option<String>,
}

/// Records the deploy's outcome on the change (a dry run only says what it would record).
pub async fn run(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    facts: ChangeFacts,
    req: &RecordRequest,
) -> Result<ChangeOutcome> {
    let s = ctx.settings;
    let outcome = req.outcome;
    let (Some(record), found) = change::locate(backend, req.change_id.as_deref(), &facts).await?
    else {
        bail!(
            "no change record for {} (run `changegate gate` before the deploy, or pass --change ID)",
            req.change_id
                .clone()
                .unwrap_or_else(|| facts.key().to_string())
        );
    };
    let notes = req.notes.clone().unwrap_or_else(|| {
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
        backend
            .record_outcome(&record, outcome, &notes, found.as_ref(), s.now)
            .await?
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
    // With `[sync] enabled`, the tickets the change references hear of the deploy: by the
    // facts the change was decided on where the backend keeps them (the whole range), else
    // this run's.
    let deployed = !s.dry_run && outcome == Outcome::Success && record.outcome == Some(outcome);
    let sync_warnings = if deployed && s.file.sync.enabled {
        let stored = backend.recorded_facts(&record).await.ok().flatten();
        let of = stored.as_ref().unwrap_or(&facts);
        super::sync::after_deploy(s, of, &record.id, record.url.as_deref()).await
    } else {
        Vec::new()
    };
    let mut outcome = annotated(ctx, report, facts, Some(&record), Exit::Pass).await;
    outcome.warnings.extend(sync_warnings);
    Ok(outcome)
}
