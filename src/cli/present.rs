//! The one presenter of the CLI door: what a flow's outcome becomes on this side — the report
//! on stdout, the job's own outputs (`GITHUB_OUTPUT`, step summary, dotenv), `::error::`
//! when blocked, warnings on stderr, progress while waiting — and the exit code.

use std::path::Path;

use anyhow::{Context, Result};

use crate::domain::ramp::Adjustment;
use crate::domain::verify::Verdict;
use crate::domain::words;
use crate::flow::ledger::{Linked, Migrated};
use crate::flow::policy::Explanation;
use crate::flow::verify::{VerifyOutcome, VerifyReport};
use crate::flow::{ChangeOutcome, Exit, Progress, Waiting};
use crate::output::{Report, console, dotenv, github};
use crate::report::{self, KpiReport};
use crate::settings::{Format, Settings};

/// Presents a change's outcome and hands back its exit; an error found after the report
/// (a required annotation that failed) ends the run once the report is out.
pub fn change(settings: &Settings, outcome: ChangeOutcome) -> Result<Exit> {
    emit(settings, &outcome)?;
    for warning in &outcome.warnings {
        warn(settings, warning);
    }
    match outcome.failure {
        Some(e) => Err(e.into()),
        None => Ok(outcome.exit),
    }
}

/// Prints the report and writes the job's own outputs (these are written in a dry run too,
/// marked as such: they belong to the job, not to any system of record).
fn emit(settings: &Settings, outcome: &ChangeOutcome) -> Result<()> {
    let (report, facts) = (&outcome.report, &outcome.facts);
    match settings.format {
        Format::Text => console::human(&report.text(), settings.github_actions())?,
        Format::Json => console::json(report)?,
        // The job summary's markdown, for a step summary or a comment of one's own.
        Format::Markdown => {
            console::document(&github::summary(report, facts), settings.github_actions())?
        }
        // Refused when the command line is parsed (`usage`); never half-written here.
        Format::Html => anyhow::bail!("a change's report has no html format"),
    }
    if settings.github_actions() {
        if let Some(path) = &settings.github_output {
            github::write_outputs(report, path)?;
        }
        if let Some(path) = &settings.step_summary {
            github::write_summary(report, facts, path)?;
        }
        if outcome.exit == Exit::Blocked {
            blocked(settings, report)?;
        }
    }
    if let Some(path) = &settings.dotenv {
        dotenv::write(report, path)?;
    }
    Ok(())
}

/// The `::error::` line that shows a blocked deploy on the run's page.
fn blocked(settings: &Settings, report: &Report) -> Result<()> {
    let failed: Vec<String> = report
        .rules
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.reason.clone())
        .collect();
    let why = report.message.clone().unwrap_or_else(|| failed.join("; "));
    let line = github::command(
        "error",
        &format!(
            "changegate blocked the deploy of {} to {}: {why}",
            report.service, report.environment
        ),
    );
    // With --format json or markdown stdout holds only the document.
    if settings.format != Format::Text {
        eprintln!("{line}");
        Ok(())
    } else {
        console::stdout(&format!("{line}\n"))
    }
}

/// One warning line on stderr; under GitHub Actions a `::warning::` command, so it also
/// shows on the run's page.
pub fn warn(settings: &Settings, text: &str) {
    if settings.github_actions() {
        eprintln!("{}", github::command("warning", text));
    } else {
        eprintln!("warning: {text}");
    }
}

/// Progress on stderr while a gate waits for approval.
pub struct Console<'a> {
    /// How warnings are shown depends on where the run is.
    pub settings: &'a Settings,
}

impl Progress for Console<'_> {
    fn waiting(&self, w: &Waiting) {
        eprintln!(
            "waiting for approval of {}: {} elapsed, {} left; next check in {}. {}",
            console::one_line(&w.change_id),
            crate::domain::words::duration(w.elapsed),
            crate::domain::words::duration(w.remaining),
            crate::domain::words::duration(w.next),
            console::one_line(&w.how)
        );
    }

    fn warning(&self, text: &str) {
        warn(self.settings, text);
    }
}

/// Presents what `verify` found; a change that could not be verified fails the run after
/// the report.
pub fn verify(settings: &Settings, outcome: &VerifyOutcome) -> Result<Exit> {
    // The warnings came while the changes were verified, before the report was complete.
    for warning in &outcome.warnings {
        warn(settings, warning);
    }
    let report = &outcome.report;
    match settings.format {
        Format::Json => console::json(report)?,
        _ => console::human(&verify_text(report), settings.github_actions())?,
    }
    if !report.errors.is_empty() {
        anyhow::bail!("verify could not finish: {}", report.errors.join("; "));
    }
    Ok(Exit::Pass)
}

/// `sync`: the warnings (a ticket not found or not written), then one line a ticket and
/// milestone.
pub fn sync(settings: &Settings, outcome: &crate::flow::sync::SyncOutcome) -> Result<Exit> {
    for warning in &outcome.warnings {
        warn(settings, warning);
    }
    let report = &outcome.report;
    match settings.format {
        Format::Json => console::json(report)?,
        _ => console::human(&sync_text(report), settings.github_actions())?,
    }
    Ok(outcome.exit)
}

fn sync_text(r: &crate::flow::sync::SyncReport) -> String {
    use crate::itsm::Noted;
    if r.lines.is_empty() {
        return "no ticket referenced: nothing to sync\n".to_string();
    }
    let mut out = String::new();
    for line in &r.lines {
        let what = match line.noted {
            Some(Noted::Written) => "noted",
            Some(Noted::Already) => "already noted",
            Some(Noted::Missing) => "not found",
            None if r.dry_run => "would note [dry run: nothing written]",
            None => "not updated",
        };
        out.push_str(&format!("{} {}: {what}\n", line.ticket, line.step));
    }
    out
}

fn verify_text(r: &VerifyReport) -> String {
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

/// Presents `policy explain`.
pub fn explanation(settings: &Settings, e: &Explanation) -> Result<Exit> {
    if settings.format == Format::Json {
        console::json(e)?;
    } else {
        let min_changes = settings.policy.params.allowance.min_changes;
        console::human(&explanation_text(e, min_changes), settings.github_actions())?;
    }
    // Run by the action: the explanation is the job's summary too.
    if let Some(path) = &settings.step_summary {
        let text = explanation_text(e, settings.policy.params.allowance.min_changes);
        github::append_summary(path, &summary_block("changegate policy explain", &text))?;
    }
    Ok(Exit::Pass)
}

/// Plain text as a job-summary section: a heading and the text in a fence longer than any
/// run of backticks in it, so that no text (a service name) can close it early.
fn summary_block(title: &str, text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!(
        "## {title}\n\n{fence}text\n{}\n{fence}\n\n",
        text.trim_end()
    )
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), |r| format!("{:.0}%", r * 100.0))
}

fn explanation_text(e: &Explanation, min_changes: u32) -> String {
    let closed = words::count(e.closed_total, "closed change", "closed changes");
    let rate = if e.recent_window == 0 {
        "no closed changes yet".to_string()
    } else {
        format!(
            "success rate {} over the last {}",
            pct(e.recent_success_rate),
            words::count(e.recent_window as u64, "closed change", "closed changes")
        )
    };
    let mut out = format!(
        "{} → {}: sprint {} ({} to {})\n  allowance {} of {} used this sprint\n  track record: {closed}; {rate} (target {:.0}%)\n",
        e.service,
        e.environment,
        e.sprint,
        e.sprint_start,
        e.sprint_end,
        e.used,
        e.allowance,
        e.min_success_rate * 100.0
    );
    out.push_str(&format!(
        "  next sprint's allowance if this sprint's success rate holds: {}\n\n",
        e.next_allowance
    ));
    out.push_str("  how the allowance was derived (replay, sprint by sprint):\n");
    out.push_str(
        "  sprint  allowance  change   closed  ok  failed  cancelled  pre-approved  rate\n",
    );
    for step in &e.replay {
        let t = &step.tally;
        let change = match step.adjustment {
            Adjustment::Start => "start",
            Adjustment::Grow => "grow",
            Adjustment::Shrink => "shrink",
            Adjustment::Keep => "keep",
        };
        out.push_str(&format!(
            "  {:>6}  {:>9}  {:<7} {:>6}  {:>2}  {:>6}  {:>9}  {:>12}  {:>4}\n",
            step.sprint,
            step.allowance,
            change,
            t.closed(),
            t.succeeded,
            t.failed,
            t.cancelled,
            t.pre_approved,
            pct(t.success_rate())
        ));
    }
    out.push_str(&format!(
        "  (a sprint grows the next allowance with ≥ {} at the target rate, shrinks it below target, keeps it otherwise)\n",
        words::count(min_changes, "closed change", "closed changes")
    ));
    out
}

/// Presents the KPI report in the chosen format, to stdout or to `output`.
pub fn kpis(settings: &Settings, report: &KpiReport, output: Option<&Path>) -> Result<Exit> {
    let s = settings;
    let rendered = match s.format {
        Format::Text => report::text::render(report),
        Format::Markdown => report::markdown::render(report),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Html => report::html::render(report),
    };
    match output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write the report to {}", path.display()))?,
        None => match s.format {
            Format::Text => console::human(&rendered, s.github_actions())?,
            Format::Json => console::stdout(&rendered)?,
            Format::Markdown | Format::Html => console::document(&rendered, s.github_actions())?,
        },
    }
    // Run by the action: the KPIs, as markdown, are the job's summary too.
    if let Some(path) = &s.step_summary {
        github::append_summary(path, &report::markdown::render(report))?;
    }
    Ok(Exit::Pass)
}

/// Presents a human's decision on the ledger: the report as JSON, or one line.
pub fn decided(settings: &Settings, report: &Report) -> Result<Exit> {
    let s = settings;
    match s.format {
        Format::Json => console::json(&report)?,
        _ => console::human(
            &format!(
                "{}: {}{}\n",
                report.change_id.as_deref().unwrap_or_default(),
                report.state.map(|s| s.to_string()).unwrap_or_default(),
                report
                    .approved_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            ),
            s.github_actions(),
        )?,
    }
    // The action's `approve`/`reject` step: its outputs say where the change stands now.
    if s.github_actions()
        && let Some(path) = &s.github_output
    {
        github::write_outputs(report, path)?;
    }
    Ok(Exit::Pass)
}

/// Presents an incident linked on the ledger.
/// `ledger migrate`: the schema version before and after.
pub fn migrated(settings: &Settings, m: &Migrated) -> Result<Exit> {
    match settings.format {
        Format::Json => console::json(m)?,
        _ => {
            let text = if m.before == m.after {
                format!(
                    "{} ledger {}: schema version {}, up to date\n",
                    m.backend, m.target, m.after
                )
            } else {
                format!(
                    "{} ledger {}: schema version {} -> {}\n",
                    m.backend, m.target, m.before, m.after
                )
            };
            console::human(&text, settings.github_actions())?;
        }
    }
    Ok(Exit::Pass)
}

/// `history import`: `imported N deployments in M requests`, and what was left out.
pub fn imported(settings: &Settings, i: &crate::flow::import::Imported) -> Result<Exit> {
    for warning in &i.warnings {
        warn(settings, warning);
    }
    match settings.format {
        Format::Json => console::json(i)?,
        _ => {
            let verb = if i.dry_run {
                "would import"
            } else {
                "imported"
            };
            let mut text = format!(
                "{verb} {} deployments in {} requests\n",
                i.imported, i.requests
            );
            text.push_str(&format!(
                "{} in {}, from {} ({}): {} success, {} failure, {} cancelled; {} already in the ledger, {} not finished (running or no status) skipped, {} deployments listed\n",
                i.service,
                i.environment,
                i.from,
                i.repository,
                i.success,
                i.failure,
                i.cancelled,
                i.already,
                i.unfinished,
                i.deployments
            ));
            if i.dry_run {
                text.push_str("[dry run: nothing written]\n");
            }
            console::human(&text, settings.github_actions())?;
        }
    }
    Ok(Exit::Pass)
}

pub fn linked(settings: &Settings, linked: &Linked) -> Result<Exit> {
    let s = settings;
    match s.format {
        Format::Json => console::json(&linked)?,
        _ => {
            let verb = if s.dry_run {
                "would be linked [dry run: nothing written]"
            } else {
                "linked"
            };
            let mut text = format!(
                "{}: incident {} {verb}; incidents: {}\n",
                linked.change_id,
                linked.incident,
                linked.incidents.join(", ")
            );
            if let Some(m) = &linked.message {
                text.push_str(&format!("  {m}\n"));
            }
            console::human(&text, s.github_actions())?;
        }
    }
    Ok(Exit::Pass)
}

/// `announce`: the notice in the chosen format, then what each sink did.
pub fn announced(settings: &Settings, o: &crate::flow::announce::AnnounceOutcome) -> Result<Exit> {
    use crate::flow::announce;
    match settings.format {
        Format::Json => console::json(o)?,
        Format::Markdown => {
            let mut text = announce::markdown(&o.notice, &o.service_id);
            for line in &o.published {
                text.push_str(&format!("\n{line}"));
            }
            text.push('\n');
            console::document(&text, settings.github_actions())?
        }
        _ => {
            let mut text = announce::text(&o.notice);
            text.push('\n');
            for line in &o.published {
                text.push_str(&format!("{line}\n"));
            }
            if o.dry_run {
                text.push_str("[dry run: nothing written]\n");
            }
            console::human(&text, settings.github_actions())?
        }
    }
    Ok(Exit::Pass)
}
