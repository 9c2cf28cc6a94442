//! The markdown report, for job summaries and pull-request comments: a table per service
//! and Mermaid charts of the allowance and the success rate per sprint.

use super::{KpiReport, ServiceReport, rows, sprint_label};
use crate::domain::words;
use crate::output::markdown::escape;

/// Renders the report as GitHub/GitLab-flavoured markdown.
pub fn render(report: &KpiReport) -> String {
    let mut md = String::new();
    if report.services.is_empty() {
        md.push_str("### changegate KPIs\n\nNo changes in the ledger yet.\n");
    }
    for s in &report.services {
        section(&mut md, report, s);
    }
    md
}

fn section(md: &mut String, report: &KpiReport, s: &ServiceReport) {
    let t = &s.table;
    md.push_str(&format!(
        "### changegate KPIs: {} → {}\n\n",
        escape(&s.service),
        escape(&s.environment)
    ));
    if let (Some(first), Some(last)) = (t.sprints.first(), t.sprints.last()) {
        md.push_str(&format!(
            "Last {} ({} to {}, {} each); target success rate {:.0}%. Generated {}.\n\n",
            words::count(t.sprints.len() as u64, "sprint", "sprints"),
            first.start,
            last.end,
            words::count(report.sprint_length_days, "day", "days"),
            report.target_success_rate * 100.0,
            report.generated_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    md.push_str("| KPI |");
    for sprint in &t.sprints {
        md.push_str(&format!(
            " {} ({}) |",
            sprint_label(sprint.sprint),
            sprint.start.format("%m-%d")
        ));
    }
    md.push_str(" total |\n|---|");
    md.push_str(&"---:|".repeat(t.sprints.len() + 1));
    md.push('\n');
    for (label, cells) in rows(t) {
        md.push_str(&format!("| {label} |"));
        // Cells are figures changegate formatted itself: nothing to escape.
        for cell in cells {
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md.push('\n');
    let labels: Vec<String> = t
        .sprints
        .iter()
        .map(|s| format!("\"{}\"", sprint_label(s.sprint)))
        .collect();
    let allowance: Vec<u32> = t.sprints.iter().map(|s| s.allowance.unwrap_or(0)).collect();
    let used: Vec<u32> = t.sprints.iter().map(|s| s.kpis.pre_approved).collect();
    let top = allowance
        .iter()
        .chain(&used)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    md.push_str("```mermaid\nxychart-beta\n    title \"Allowance (bars) and pre-approved changes used (line) per sprint\"\n");
    md.push_str(&format!("    x-axis [{}]\n", labels.join(", ")));
    md.push_str(&format!("    y-axis \"changes\" 0 --> {top}\n"));
    md.push_str(&format!("    bar [{}]\n", join(&allowance)));
    md.push_str(&format!("    line [{}]\n```\n\n", join(&used)));
    // Mermaid has no gaps in a series: sprints with nothing closed are left out of this chart.
    let rated: Vec<(String, f64)> = t
        .sprints
        .iter()
        .filter_map(|s| {
            Some((
                format!("\"{}\"", sprint_label(s.sprint)),
                s.kpis.success_rate? * 100.0,
            ))
        })
        .collect();
    if !rated.is_empty() {
        let target = report.target_success_rate * 100.0;
        md.push_str("```mermaid\nxychart-beta\n    title \"Success rate per sprint, % (target as the second line)\"\n");
        md.push_str(&format!(
            "    x-axis [{}]\n",
            rated
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        md.push_str("    y-axis \"success rate %\" 0 --> 100\n");
        md.push_str(&format!(
            "    line [{}]\n",
            rated
                .iter()
                .map(|(_, r)| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        md.push_str(&format!(
            "    line [{}]\n```\n\n",
            rated
                .iter()
                .map(|_| format!("{target:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

fn join(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot() {
        insta::assert_snapshot!(super::render(&crate::report::fixture::report()));
    }

    #[test]
    fn service_names_are_escaped() {
        let mut report = crate::report::fixture::report();
        report.services[0].service = "<img src=x> | @team".into();
        let md = super::render(&report);
        assert!(!md.contains("<img"), "{md}");
        assert!(!md.contains("@team"), "{md}");
    }
}
