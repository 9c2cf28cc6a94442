//! GitHub Actions' channels: step outputs (`GITHUB_OUTPUT`), the job summary
//! (`GITHUB_STEP_SUMMARY`) and workflow commands (`::error::`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::Report;
use super::markdown::{escape, link};
use crate::domain::{ChangeFacts, Mode};

/// Appends markdown of a command's own (a report, an explanation) to the job summary.
pub fn append_summary(path: &Path, markdown: &str) -> Result<()> {
    append(path, markdown)
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Appends the step outputs, each in the multi-line form with a delimiter no value holds.
pub fn write_outputs(report: &Report, path: &Path) -> Result<()> {
    let mut text = String::new();
    for (name, value) in report.outputs() {
        let mut delimiter = format!("changegate_{:016x}", fastrand::u64(..));
        while value.contains(&delimiter) {
            delimiter = format!("changegate_{:016x}", fastrand::u64(..));
        }
        text.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
    }
    text.push_str(&format!("dry-run={}\n", report.dry_run));
    append(path, &text)
}

/// The job summary: a markdown table of the decision and its rules.
pub fn summary(report: &Report, facts: &ChangeFacts) -> String {
    let mut md = String::new();
    let decision = report
        .decision
        .map(|d| d.to_string())
        .unwrap_or_else(|| "not decided".into());
    md.push_str(&format!(
        "### changegate: {} → {}\n\n",
        escape(&report.service),
        escape(&report.environment)
    ));
    if report.dry_run {
        md.push_str("> Dry run: nothing was written to the ledger, the ITSM or the forge.\n\n");
    }
    md.push_str("| | |\n|---|---|\n");
    let id = report.change_id.as_deref().unwrap_or("(none)");
    md.push_str(&format!(
        "| Change | {} |\n",
        link(id, report.change_url.as_deref())
    ));
    md.push_str(&format!(
        "| Decision | **{decision}**{} |\n",
        if report.mode == Mode::Observe {
            " (observe mode)"
        } else {
            ""
        }
    ));
    if let Some(state) = report.state {
        md.push_str(&format!("| State | {state} |\n"));
    }
    if let Some(outcome) = report.outcome {
        md.push_str(&format!("| Outcome | {outcome} |\n"));
    }
    md.push_str(&format!(
        "| Commit | `{}` |\n",
        escape(report.commit.get(..12).unwrap_or(&report.commit))
    ));
    if let Some(pr) = &facts.pull_request {
        md.push_str(&format!(
            "| Pull request | {} |\n",
            link(&format!("#{} {}", pr.number, pr.title), pr.url.as_deref())
        ));
    }
    if let Some(sprint) = &report.sprint {
        md.push_str(&format!(
            "| Allowance | {} of {} used this sprint |\n",
            sprint.used, sprint.allowance
        ));
    }
    if let Some(reason) = &report.emergency {
        md.push_str(&format!("| Emergency | {} |\n", escape(reason)));
    }
    if let Some(by) = &report.approved_by {
        md.push_str(&format!("| Decided by | {} |\n", escape(by)));
    }
    if !report.rules.is_empty() {
        md.push_str("\n| Rule | Result | Reason |\n|---|---|---|\n");
        for rule in &report.rules {
            md.push_str(&format!(
                "| `{}` | {} | {} |\n",
                rule.code,
                if rule.passed { "✅ pass" } else { "❌ fail" },
                escape(&rule.reason)
            ));
        }
    }
    if let Some(message) = &report.message {
        md.push_str(&format!("\n{}\n", escape(message)));
    }
    if let Some(how) = &report.how_to_approve {
        md.push_str(&format!("\n**To approve:** {}\n", escape(how)));
    }
    md.push('\n');
    md
}

pub fn write_summary(report: &Report, facts: &ChangeFacts, path: &Path) -> Result<()> {
    append(path, &summary(report, facts))
}

/// A workflow command line (`::error::message`), with the message escaped as the runner
/// expects so that untrusted text cannot inject a command of its own.
pub fn command(kind: &str, message: &str) -> String {
    let escaped = message
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A");
    format!("::{kind}::{escaped}")
}
