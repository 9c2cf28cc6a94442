//! `verify`: after the verification window, turn a success that caused an incident into a
//! failure ("failed after deploy", with the incident ids). Idempotent: a change is verified
//! once, so a scheduled pipeline may run it as often as it likes.

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ctx, Exit};
use crate::domain::verify::{self, Verdict};
use crate::domain::words;
use crate::itsm;
use crate::output::{Report, console};
use crate::settings::Format;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct VerifyArgs {}

#[derive(Debug, Serialize)]
struct Verified {
    change_id: String,
    correlation_key: String,
    deployed_at: DateTime<Utc>,
    #[serde(flatten)]
    verdict: Verdict,
    /// False in a dry run, or when another run verified the change first.
    written: bool,
}

#[derive(Debug, Serialize)]
struct VerifyReport {
    /// Changes deployed at or before this instant were due.
    deployed_before: DateTime<Utc>,
    window: String,
    dry_run: bool,
    verified: Vec<Verified>,
    failed_after_deploy: usize,
    errors: Vec<String>,
}

pub async fn run(ctx: &Ctx, _args: &VerifyArgs) -> Result<Exit> {
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let window = s.verify_window;
    let cutoff = s.now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let due = itsm.awaiting_verification(cutoff).await?;
    let mut report = VerifyReport {
        deployed_before: cutoff,
        window: words::duration(window),
        dry_run: s.dry_run,
        verified: Vec::new(),
        failed_after_deploy: 0,
        errors: Vec::new(),
    };
    for record in due {
        let (Some(outcome), Some(deployed_at)) = (record.outcome, record.deployed_at) else {
            continue;
        };
        // One change failing to verify does not stop the others; the run still fails at the end.
        let incidents = match itsm.linked_incidents(&record).await {
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
            match itsm.record_verification(&record, &verdict, s.now).await {
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
            if let Err(e) = annotate_failure(s, itsm.as_ref(), &record, &verdict).await {
                report.errors.push(format!("{}: {e:#}", record.id));
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
    match s.format {
        Format::Json => console::json(&report)?,
        _ => console::human(&text(&report), s.github_actions)?,
    }
    if !report.errors.is_empty() {
        bail!("verify could not finish: {}", report.errors.join("; "));
    }
    Ok(Exit::Pass)
}

async fn annotate_failure(
    s: &crate::settings::Settings,
    itsm: &dyn itsm::Backend,
    record: &crate::domain::ChangeRecord,
    verdict: &Verdict,
) -> Result<()> {
    // Reading the change back costs requests: only when an annotation can follow.
    let token = s.github_token.is_some() || s.github_app.is_some() || s.gitlab_token.is_some();
    if s.dry_run || !(s.annotate.required || (s.annotate.enabled && token)) {
        return Ok(());
    }
    let Some(facts) = itsm.recorded_facts(record).await? else {
        return Ok(());
    };
    let current = itsm.refresh(record).await?;
    let mut annotation = Report::from_record(Some(&current), &facts, s.mode(), s.dry_run);
    if let Verdict::FailedAfterDeploy { incidents } = verdict {
        annotation.message = Some(format!(
            "failed after deploy: incidents {} linked within the verification window",
            incidents.join(", ")
        ));
    }
    crate::forge::annotate(s, &annotation, &facts, Some(&current)).await
}

fn text(r: &VerifyReport) -> String {
    let mut out = String::new();
    let head = if r.dry_run {
        " [dry run: nothing written]"
    } else {
        ""
    };
    if r.verified.is_empty() {
        out.push_str(&format!(
            "nothing to verify: no change deployed before {} (window {}) awaits verification{head}\n",
            r.deployed_before.format("%Y-%m-%d %H:%M UTC"),
            r.window
        ));
        return out;
    }
    out.push_str(&format!(
        "verified {} deployed before {} (window {}){head}\n",
        words::count(r.verified.len() as u64, "change", "changes"),
        r.deployed_before.format("%Y-%m-%d %H:%M UTC"),
        r.window
    ));
    for v in &r.verified {
        let what = match &v.verdict {
            Verdict::Succeeded => "success stands: no incident within the window".to_string(),
            Verdict::FailedAfterDeploy { incidents } => {
                format!("FAILED AFTER DEPLOY: {}", incidents.join(", "))
            }
            Verdict::Failed { incidents } if incidents.is_empty() => "failure stands".to_string(),
            Verdict::Failed { incidents } => {
                format!("failure stands; incidents {}", incidents.join(", "))
            }
        };
        let note = if v.written || r.dry_run {
            ""
        } else {
            " (already verified by another run)"
        };
        out.push_str(&format!(
            "  {}  {}  {what}{note}\n",
            v.change_id, v.correlation_key
        ));
    }
    out
}
