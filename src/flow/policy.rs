//! `policy explain`: the trust state of this service and environment, and how it was derived.

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::domain::ramp::{self, RampStep};
use crate::domain::{ChangeFacts, Outcome};
use crate::itsm::{Backend, HistoryQuery, Lookup};

/// The trust state of one service and environment, and how it was derived.
#[derive(Debug, Serialize)]
pub struct Explanation {
    /// The service's name.
    pub service: String,
    /// The environment deployed to.
    pub environment: String,
    /// The current sprint's number.
    pub sprint: i64,
    /// Its first day.
    pub sprint_start: String,
    /// Its last day.
    pub sprint_end: String,
    /// Pre-approvals this sprint allows.
    pub allowance: u32,
    /// Pre-approvals used this sprint.
    pub used: u32,
    /// Closed changes in the track record.
    pub closed_total: u64,
    /// Closed changes the success rate is taken over.
    pub recent_window: usize,
    /// Their success rate; none without closed changes.
    pub recent_success_rate: Option<f64>,
    /// The policy's target rate.
    pub min_success_rate: f64,
    /// Next sprint's allowance if this sprint's rate holds.
    pub next_allowance: u32,
    /// The allowance, sprint by sprint.
    pub replay: Vec<RampStep>,
}

/// The trust state of the change's service and environment, replayed from its history;
/// `found` is the lookup gathering the facts made, which may carry part of that history.
pub async fn explain(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    facts: &ChangeFacts,
    found: Option<&Lookup>,
) -> Result<Explanation> {
    let s = ctx.settings;
    let p = &s.policy.params;
    let current = s.calendar.index_of(s.now);
    let history = backend
        .history(&HistoryQuery {
            service_id: &facts.service_id,
            environment: &facts.environment,
            window: p.window,
            calendar: s.calendar,
            from_sprint: current - i64::from(p.allowance.lookback_sprints),
            now: s.now,
            exclude_key: None,
            found,
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
    Ok(e)
}
