//! The HTML report: one self-contained page with inline SVG charts. No scripts and a
//! Content-Security-Policy that forbids every fetch, so it renders the same offline.

use std::fmt::Write;

use super::svg::{self, Chart, Mark, Series, esc};
use super::{KpiReport, ServiceReport, rows, sprint_label};
use crate::domain::words;

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1f2328; margin: 0; background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 2px; }
.meta, .id { color: #59636e; margin: 0 0 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
.chart { width: 100%; height: auto; background: #fff; border: 1px solid #d1d9e0; border-radius: 6px; }
.chart .title { font-size: 14px; font-weight: 600; fill: #1f2328; }
.chart .legend, .chart .tick { font-size: 11px; fill: #59636e; }
.chart .grid { stroke: #e6eaef; stroke-width: 1; }
table { border-collapse: collapse; margin-top: 16px; background: #fff; width: 100%; }
th, td { border: 1px solid #d1d9e0; padding: 4px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f4; }
td.total, th.total { font-weight: 600; }
";

const BLUE: &str = "#0969da";
const PALE: &str = "#9ec5fe";
const GREEN: &str = "#1a7f37";
const RED: &str = "#cf222e";
const GREY: &str = "#6e7781";
const ORANGE: &str = "#bc4c00";

/// Renders the whole report as one HTML document.
pub fn render(report: &KpiReport) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let title = match report.services.as_slice() {
        [one] => format!("changegate KPIs: {} → {}", one.service, one.environment),
        _ => "changegate KPIs".to_string(),
    };
    let _ = writeln!(
        h,
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>",
        esc(&title)
    );
    let _ = writeln!(h, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        h,
        "<p class=\"meta\">Generated {} · sprints of {} · target success rate {:.0}%</p>",
        report.generated_at.format("%Y-%m-%d %H:%M UTC"),
        words::count(report.sprint_length_days, "day", "days"),
        report.target_success_rate * 100.0
    );
    if report.services.is_empty() {
        h.push_str("<p>No changes in the ledger yet.</p>\n");
    }
    for s in &report.services {
        section(&mut h, report, s);
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn hours(secs: Option<i64>) -> Option<f64> {
    secs.map(|s| s as f64 / 3600.0)
}

fn section(h: &mut String, report: &KpiReport, s: &ServiceReport) {
    let t = &s.table;
    if report.services.len() > 1 {
        let _ = writeln!(h, "<h2>{} → {}</h2>", esc(&s.service), esc(&s.environment));
    }
    let _ = writeln!(h, "<p class=\"id\">{}</p>", esc(&s.service_id));
    let labels: Vec<String> = t
        .sprints
        .iter()
        .map(|s| format!("{} · {}", sprint_label(s.sprint), s.start.format("%m-%d")))
        .collect();
    let of = |f: &dyn Fn(&crate::domain::kpi::SprintKpis) -> Option<f64>| {
        t.sprints.iter().map(f).collect::<Vec<_>>()
    };
    let target = report.target_success_rate * 100.0;
    let charts = [
        Chart {
            title: "Allowance and pre-approved changes per sprint",
            labels: labels.clone(),
            max: None,
            unit: "",
            series: vec![
                Series {
                    name: "allowance",
                    color: PALE,
                    mark: Mark::Bars,
                    values: of(&|s| s.allowance.map(f64::from)),
                },
                Series {
                    name: "pre-approved",
                    color: BLUE,
                    mark: Mark::Bars,
                    values: of(&|s| Some(f64::from(s.kpis.pre_approved))),
                },
                Series {
                    name: "needs approval",
                    color: ORANGE,
                    mark: Mark::Bars,
                    values: of(&|s| Some(f64::from(s.kpis.needs_approval))),
                },
            ],
        },
        Chart {
            title: "Success rate per sprint",
            labels: labels.clone(),
            max: Some(100.0),
            unit: "%",
            series: vec![
                Series {
                    name: "success rate",
                    color: GREEN,
                    mark: Mark::Line { dashed: false },
                    values: of(&|s| s.kpis.success_rate.map(|r| r * 100.0)),
                },
                Series {
                    name: "change failure rate",
                    color: RED,
                    mark: Mark::Line { dashed: false },
                    values: of(&|s| s.kpis.change_failure_rate.map(|r| r * 100.0)),
                },
                Series {
                    name: "target",
                    color: GREY,
                    mark: Mark::Line { dashed: true },
                    values: of(&|_| Some(target)),
                },
            ],
        },
        Chart {
            title: "Deployments per sprint",
            labels: labels.clone(),
            max: None,
            unit: "",
            series: vec![
                Series {
                    name: "deployments",
                    color: BLUE,
                    mark: Mark::Bars,
                    values: of(&|s| Some(f64::from(s.kpis.deployments))),
                },
                Series {
                    name: "failed",
                    color: RED,
                    mark: Mark::Bars,
                    values: of(&|s| Some(f64::from(s.kpis.failed))),
                },
                Series {
                    name: "failed after deploy",
                    color: ORANGE,
                    mark: Mark::Bars,
                    values: of(&|s| Some(f64::from(s.kpis.failed_after_deploy))),
                },
            ],
        },
        Chart {
            title: "Lead time and time to restore (median, hours)",
            labels,
            max: None,
            unit: "h",
            series: vec![
                Series {
                    name: "lead time",
                    color: BLUE,
                    mark: Mark::Bars,
                    values: of(&|s| hours(s.kpis.lead_time.median_secs)),
                },
                Series {
                    name: "time to restore",
                    color: RED,
                    mark: Mark::Bars,
                    values: of(&|s| hours(s.kpis.time_to_restore.median_secs)),
                },
                Series {
                    name: "approval wait",
                    color: ORANGE,
                    mark: Mark::Bars,
                    values: of(&|s| hours(s.kpis.approval_wait.median_secs)),
                },
            ],
        },
    ];
    h.push_str("<div class=\"charts\">\n");
    for chart in &charts {
        h.push_str(&svg::render(chart));
        h.push('\n');
    }
    h.push_str("</div>\n<table>\n<thead><tr><th>KPI</th>");
    for sprint in &t.sprints {
        let _ = write!(
            h,
            "<th>{}<br>{}</th>",
            sprint_label(sprint.sprint),
            sprint.start.format("%Y-%m-%d")
        );
    }
    h.push_str("<th class=\"total\">total</th></tr></thead>\n<tbody>\n");
    for (label, cells) in rows(t) {
        let _ = write!(h, "<tr><td>{}</td>", esc(label));
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            let class = if i == last { " class=\"total\"" } else { "" };
            let _ = write!(h, "<td{class}>{}</td>", esc(cell));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn self_contained_and_escaped() {
        let mut report = crate::report::fixture::report();
        report.services[0].service = "<script>alert(1)</script>".into();
        let html = super::render(&report);
        assert!(
            !html.contains("<script"),
            "no script, not even an injected one"
        );
        // The only URL is the SVG namespace, which is a name, never fetched.
        assert_eq!(
            html.matches("http://").count(),
            html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(!html.contains("https://"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(html.contains("default-src 'none'"));
    }
}
