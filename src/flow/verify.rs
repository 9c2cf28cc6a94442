//! `verify`: after the verification window, turn a success that caused an incident into a
//! failure ("failed after deploy", with the incident ids). Idempotent: a change is verified
//! once, so a scheduled pipeline may run it as often as it likes.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Ctx;
use crate::domain::verify::{self, Verdict};
use crate::domain::{ChangeRecord, words};
use crate::itsm::Backend;
use crate::output::Report;

/// One change verified.
#[derive(Debug, Serialize)]
pub struct Verified {
    /// The change's id in the backend.
    pub change_id: String,
    /// Its correlation key.
    pub correlation_key: String,
    /// When it was deployed (the window runs from here).
    pub deployed_at: DateTime<Utc>,
    /// What the window found.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// False in a dry run, or when another run verified the change first.
    pub written: bool,
}

/// What one `verify` run found: the report the door prints (text or the JSON document).
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// Changes deployed at or before this instant were due.
    pub deployed_before: DateTime<Utc>,
    /// The verification window, in words.
    pub window: String,
    /// Nothing was written.
    pub dry_run: bool,
    /// Every change due, verified.
    pub verified: Vec<Verified>,
    /// How many turned into failures on this run.
    pub failed_after_deploy: usize,
    /// One entry per change that could not be verified; the run fails after its report.
    pub errors: Vec<String>,
}

/// The outcome of `verify`: its report, and the warnings of annotations that failed.
#[derive(Debug)]
pub struct VerifyOutcome {
    /// What the door prints.
    pub report: VerifyReport,
    /// Annotations that failed (not required), for the door to show.
    pub warnings: Vec<String>,
}

/// Verifies every change due. One change failing to verify does not stop the others; its
/// error is in the report.
pub async fn run(ctx: &Ctx<'_>, backend: &dyn Backend) -> Result<VerifyOutcome> {
    let s = ctx.settings;
    let window = s.verify_window;
    let cutoff = s.now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let due = backend.awaiting_verification(cutoff).await?;
    let mut report = VerifyReport {
        deployed_before: cutoff,
        window: words::duration(window),
        dry_run: s.dry_run,
        verified: Vec::new(),
        failed_after_deploy: 0,
        errors: Vec::new(),
    };
    let mut warnings = Vec::new();
    for record in due {
        let (Some(outcome), Some(deployed_at)) = (record.outcome, record.deployed_at) else {
            continue;
        };
        let incidents = match backend.linked_incidents(&record).await {
            Ok(i) => i,
            Err(e) => {
                report
                    .errors
                    .push(format!("{}: cannot read its incidents: {e:#}", record.id));
                continue;
            }
        };
        let verdict = verify::judge(outcome, deployed_at, window, &incidents);
        let written = if s.dry_run {
            false
        } else {
            match backend.record_verification(&record, &verdict, s.now).await {
                Ok(w) => w,
                Err(e) => {
                    report.errors.push(format!(
                        "{}: cannot record the verification: {e:#}",
                        record.id
                    ));
                    continue;
                }
            }
        };
        if written && matches!(verdict, Verdict::FailedAfterDeploy { .. }) {
            report.failed_after_deploy += 1;
            // The pull/merge request learns of it, from the facts the change was opened
            // with (its PR and commit), not this scheduled run's. A failure to annotate is a
            // warning unless `annotate.required`.
            match annotate_failure(ctx, backend, &record, &verdict).await {
                Ok(w) => warnings.extend(w),
                Err(e) => report.errors.push(format!("{}: {e:#}", record.id)),
            }
        }
        if written && s.file.sync.enabled {
            // The tickets the change references hear the verdict, by the facts it was
            // decided on (a backend that keeps none gives no tickets to tell).
            match backend.recorded_facts(&record).await {
                Ok(Some(facts)) => {
                    warnings.extend(super::sync::after_verify(s, &facts, &record, &verdict).await)
                }
                Ok(None) => {}
                Err(e) => warnings.push(format!(
                    "{}: tickets not updated: cannot read the change's facts: {e:#}",
                    record.id
                )),
            }
        }
        report.verified.push(Verified {
            change_id: record.id.clone(),
            correlation_key: record.key.clone(),
            deployed_at,
            verdict,
            written,
        });
    }
    Ok(VerifyOutcome { report, warnings })
}

async fn annotate_failure(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    record: &ChangeRecord,
    verdict: &Verdict,
) -> Result<Vec<String>> {
    let s = ctx.settings;
    // Reading the change back costs requests: only when an annotation can follow.
    let token = s.forge.github_token.is_some()
        || s.forge.github_app.is_some()
        || s.forge.gitlab_token.is_some();
    if s.dry_run || !(s.annotate.required || (s.annotate.enabled && token)) {
        return Ok(Vec::new());
    }
    let Some(facts) = backend.recorded_facts(record).await? else {
        return Ok(Vec::new());
    };
    let current = backend.refresh(record).await?;
    let mut annotation = Report::from_record(Some(&current), &facts, s.mode(), s.dry_run);
    if let Verdict::FailedAfterDeploy { incidents } = verdict {
        annotation.message = Some(format!(
            "failed after deploy: incidents {} linked within the verification window",
            incidents.join(", ")
        ));
    }
    Ok(ctx
        .forge
        .annotate(&annotation, &facts, Some(&current))
        .await?)
}
