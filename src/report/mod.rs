//! KPI reports: the figures of [`crate::domain::kpi`] rendered as a text table, markdown
//! (job summaries, with Mermaid charts), JSON, or one self-contained HTML page with SVG charts.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::kpi::{KpiTable, Spread};

pub mod html;
pub mod markdown;
mod svg;
pub mod text;

/// The KPIs of one service in one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub service_id: String,
    pub environment: String,
    #[serde(flatten)]
    pub table: KpiTable,
}

/// A whole report: one or more services over the same sprints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpiReport {
    pub generated_at: DateTime<Utc>,
    pub sprint_length_days: u32,
    /// The success rate the policy targets, for reference lines.
    pub target_success_rate: f64,
    pub services: Vec<ServiceReport>,
}

/// A duration for people: `45s`, `12m`, `3h 20m`, `2d 4h`.
pub fn duration(secs: Option<i64>) -> String {
    let Some(secs) = secs else {
        return "—".to_string();
    };
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{m}m"),
        s if s < 86_400 && m == 0 => format!("{h}h"),
        s if s < 86_400 => format!("{h}h {m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// A rate as a whole percentage, or a dash when there is nothing to rate.
pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_string(), |r| format!("{:.0}%", r * 100.0))
}

/// Median and p90 as `median / p90`.
pub fn spread(s: &Spread) -> String {
    if s.count == 0 {
        return "—".to_string();
    }
    format!("{} / {}", duration(s.median_secs), duration(s.p90_secs))
}

/// The sprint's column heading.
pub fn sprint_label(sprint: i64) -> String {
    format!("S{sprint}")
}

/// The rows of the KPI table: a label and, per sprint and for the total, the cell text.
/// Every renderer lays out the same rows, so the formats never disagree.
pub fn rows(table: &KpiTable) -> Vec<(&'static str, Vec<String>)> {
    type Cell = fn(&crate::domain::kpi::Kpis, Option<u32>) -> String;
    let defs: [(&'static str, Cell); 13] = [
        ("changes", |k, _| k.changes.to_string()),
        ("pre-approved / allowance", |k, a| match a {
            Some(a) => format!("{} / {a}", k.pre_approved),
            None => k.pre_approved.to_string(),
        }),
        ("needs approval", |k, _| k.needs_approval.to_string()),
        ("approval wait (median / p90)", |k, _| {
            spread(&k.approval_wait)
        }),
        ("blocked", |k, _| k.blocked.to_string()),
        ("emergency", |k, _| k.emergency.to_string()),
        ("success rate", |k, _| percent(k.success_rate)),
        ("change failure rate", |k, _| percent(k.change_failure_rate)),
        ("failed after deploy", |k, _| {
            k.failed_after_deploy.to_string()
        }),
        ("lead time (median)", |k, _| {
            duration(k.lead_time.median_secs)
        }),
        ("deployments", |k, _| k.deployments.to_string()),
        ("deployments per day", |k, _| {
            format!("{:.2}", k.deployment_frequency_per_day)
        }),
        ("time to restore (median)", |k, _| {
            duration(k.time_to_restore.median_secs)
        }),
    ];
    // Deployments imported from the forge's history: a row of their own, when there are any.
    let imported: (&'static str, Cell) = ("imported from the forge", |k, _| k.imported.to_string());
    let shown = (table.total.imported > 0).then_some(&imported);
    defs.iter()
        .take(1)
        .chain(shown)
        .chain(defs.iter().skip(1))
        .map(|(label, cell)| {
            let mut cells: Vec<String> = table
                .sprints
                .iter()
                .map(|s| cell(&s.kpis, s.allowance))
                .collect();
            cells.push(cell(&table.total, None));
            (*label, cells)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A hand-built report for the renderers' snapshot tests.

    use std::collections::BTreeMap;

    use chrono::{DateTime, NaiveDate, Utc};

    use super::{KpiReport, ServiceReport};
    use crate::domain::kpi::{self, ChangeSummary, KpiInput};
    use crate::domain::{DecisionKind, Outcome, SprintCalendar};

    pub fn report() -> KpiReport {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        // Sprint 1 starts on the calendar's start day.
        let at = |day: i64, hour: i64| cal.start_of(1) + chrono::Duration::hours(day * 24 + hour);
        let allowance = BTreeMap::from([(1, 2), (2, 1), (3, 3), (4, 5)]);
        let mut changes = Vec::new();
        // Four sprints, each busier than the one before; changes beyond the allowance wait
        // for approval; two failures early, one failure after deploy late.
        for i in 0..4i64 {
            let sprint = i + 1;
            for n in 0..(3 + i * 2) {
                let day = i * 14 + n;
                let needs = n >= i64::from(allowance[&sprint]);
                let after_deploy = i == 3 && n == 4;
                let outcome = if (n == 1 && i < 2) || after_deploy {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                let decided = at(day, 9);
                let approved = needs.then(|| decided + chrono::Duration::minutes(30 + 45 * n));
                changes.push(ChangeSummary {
                    decided_at: decided,
                    decision: Some(if needs {
                        DecisionKind::NeedsApproval
                    } else {
                        DecisionKind::PreApproved
                    }),
                    pre_approved: !needs,
                    emergency: false,
                    approved_at: approved,
                    deployed_at: Some(approved.unwrap_or(decided) + chrono::Duration::minutes(5)),
                    first_commit_at: Some(decided - chrono::Duration::hours(20 + 3 * n)),
                    outcome: Some(outcome),
                    failed_after_deploy: after_deploy,
                });
            }
        }
        let now: DateTime<Utc> = at(3 * 14 + 10, 12);
        let table = kpi::compute(&KpiInput {
            calendar: cal,
            sprints: 1..=4,
            now,
            changes: &changes,
            allowance: &allowance,
        });
        KpiReport {
            generated_at: now,
            sprint_length_days: 14,
            target_success_rate: 0.9,
            services: vec![ServiceReport {
                service: "payments-api".into(),
                service_id: "acme/payments-api".into(),
                environment: "production".into(),
                table,
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(None), "—");
        assert_eq!(duration(Some(45)), "45s");
        assert_eq!(duration(Some(12 * 60 + 5)), "12m");
        assert_eq!(duration(Some(3 * 3600 + 20 * 60)), "3h 20m");
        assert_eq!(duration(Some(2 * 86_400 + 4 * 3600 + 59)), "2d 4h");
        assert_eq!(duration(Some(7200)), "2h");
        assert_eq!(duration(Some(86_400 + 60)), "1d");
        assert_eq!(percent(Some(0.916)), "92%");
    }
}
