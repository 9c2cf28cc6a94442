//! `policy explain`: the trust state of this service and environment, and how it was derived.

use anyhow::Result;
use serde::Serialize;

use super::change::{self, CommitArgs};
use super::{Ctx, Exit};
use crate::domain::Outcome;
use crate::domain::ramp::{self, Adjustment, RampStep};
use crate::domain::words;
use crate::itsm::{self, HistoryQuery};
use crate::output::console;
use crate::settings::Format;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// The current sprint, its allowance and how it was derived, the track record, and next sprint's allowance if the current success rate holds.
    Explain(CommitArgs),
    /// Replay the recorded history under other policy values (--set KEY=VALUE, --config FILE), side by side with the current policy.
    Simulate(super::simulate::SimulateArgs),
}

#[derive(Debug, Serialize)]
struct Explanation {
    service: String,
    environment: String,
    sprint: i64,
    sprint_start: String,
    sprint_end: String,
    allowance: u32,
    used: u32,
    closed_total: u64,
    recent_window: usize,
    recent_success_rate: Option<f64>,
    min_success_rate: f64,
    next_allowance: u32,
    replay: Vec<RampStep>,
}

pub async fn run(
    ctx: &Ctx<'_>,
    cmd: &PolicyCommand,
    global: &crate::settings::GlobalArgs,
) -> Result<Exit> {
    let args = match cmd {
        PolicyCommand::Explain(args) => args,
        PolicyCommand::Simulate(args) => return super::simulate::run(ctx, global, args).await,
    };
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let facts = change::facts(ctx, itsm.as_ref(), &args.into()).await?;
    let p = &s.policy.params;
    let current = s.calendar.index_of(s.now);
    let history = itsm
        .history(&HistoryQuery {
            service_id: &facts.service_id,
            environment: &facts.environment,
            window: p.window,
            calendar: s.calendar,
            from_sprint: current - i64::from(p.allowance.lookback_sprints),
            now: s.now,
            exclude_key: None,
        })
        .await?;
    let replay = ramp::replay(&history, &p.allowance, p.min_success_rate, current);
    let allowance = replay.last().map_or(p.allowance.initial, |r| r.allowance);
    let this = history.tally(current);
    let (next_allowance, _) =
        ramp::next_allowance(allowance, &this, &p.allowance, p.min_success_rate);
    let ok = history
        .recent
        .iter()
        .filter(|o| **o == Outcome::Success)
        .count();
    let e = Explanation {
        service: facts.service.clone(),
        environment: facts.environment.clone(),
        sprint: current,
        sprint_start: s.calendar.start_of(current).format("%Y-%m-%d").to_string(),
        sprint_end: (s.calendar.end_of(current) - chrono::Duration::days(1))
            .format("%Y-%m-%d")
            .to_string(),
        allowance,
        used: this.pre_approved,
        closed_total: history.closed_total,
        recent_window: history.recent.len(),
        recent_success_rate: (!history.recent.is_empty())
            .then(|| ok as f64 / history.recent.len() as f64),
        min_success_rate: p.min_success_rate,
        next_allowance,
        replay,
    };
    if s.format == Format::Json {
        console::json(&e)?;
    } else {
        console::human(&text(&e, p.allowance.min_changes), s.github_actions)?;
    }
    Ok(Exit::Pass)
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), |r| format!("{:.0}%", r * 100.0))
}

fn text(e: &Explanation, min_changes: u32) -> String {
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
