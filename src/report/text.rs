//! The plain-text report: one table per service, KPIs down, sprints across.

use super::{KpiReport, rows, sprint_label};
use crate::domain::words;

/// Renders the report as aligned text tables.
pub fn render(report: &KpiReport) -> String {
    let mut out = String::new();
    for (i, s) in report.services.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let t = &s.table;
        let (first, last) = match (t.sprints.first(), t.sprints.last()) {
            (Some(f), Some(l)) => (f.start, l.end),
            _ => continue,
        };
        out.push_str(&format!(
            "{} → {}: KPIs of the last {} ({} to {}, {} each)\n",
            s.service,
            s.environment,
            words::count(t.sprints.len() as u64, "sprint", "sprints"),
            first,
            last,
            words::count(report.sprint_length_days, "day", "days")
        ));
        let mut header: Vec<String> = t.sprints.iter().map(|s| sprint_label(s.sprint)).collect();
        header.push("total".into());
        let mut dates: Vec<String> = t
            .sprints
            .iter()
            .map(|s| s.start.format("%m-%d").to_string())
            .collect();
        dates.push(String::new());
        let body = rows(t);
        let label_w = body
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                body.iter()
                    .map(|(_, cells)| cells[c].chars().count())
                    .chain([header[c].chars().count(), dates[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |label: &str, cells: &[String]| {
            let mut l = format!("  {label:<label_w$}");
            for (cell, w) in cells.iter().zip(&widths) {
                l.push_str(&format!("  {cell:>w$}"));
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line("sprint", &header));
        out.push_str(&line("starts", &dates));
        for (label, cells) in &body {
            out.push_str(&line(label, cells));
        }
    }
    if report.services.is_empty() {
        out.push_str("no changes in the ledger yet\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot() {
        insta::assert_snapshot!(super::render(&crate::report::fixture::report()));
    }
}
