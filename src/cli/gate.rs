//! `gate` and `open`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::change::{self, ChangeArgs};
use super::{Ctx, Exit};
use crate::domain::{ChangeRecord, Decision, DecisionInput, DecisionKind, Mode, State, decide};
use crate::forge;
use crate::itsm::{self, HistoryQuery, Itsm};
use crate::output::{Report, console};

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// How long to wait for approval (default approval.timeout); 0 returns at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Declare an emergency change, with its reason: passes a freeze and the allowance.
    #[arg(long, value_name = "REASON")]
    pub emergency: Option<String>,
}

/// Decides the change from the backend's history.
pub async fn decide_change(
    ctx: &Ctx,
    itsm: &dyn Itsm,
    facts: &crate::domain::ChangeFacts,
    emergency: Option<String>,
) -> Result<Decision> {
    let s = &ctx.settings;
    let key = facts.key().to_string();
    let current = s.calendar.index_of(s.now);
    let history = itsm
        .history(&HistoryQuery {
            service_id: &facts.service_id,
            environment: &facts.environment,
            window: s.policy.params.window,
            calendar: s.calendar,
            from_sprint: current - i64::from(s.policy.params.allowance.lookback_sprints),
            now: s.now,
            exclude_key: Some(&key),
        })
        .await
        .context("cannot read the change history")?;
    Ok(decide(&DecisionInput {
        facts,
        history: &history,
        policy: &s.policy,
        calendar: s.calendar,
        now: s.now,
        emergency,
        clock_override: s.clock_override.clone(),
    }))
}

/// Waits for a human decision: polls fast, then backs off to `approval.poll`, printing a
/// progress line per poll. One last read at the deadline means an approval that lands
/// between two polls is never missed.
async fn wait_for_approval(
    ctx: &Ctx,
    itsm: &dyn Itsm,
    mut record: ChangeRecord,
    wait: Duration,
) -> Result<(ChangeRecord, bool)> {
    let ceiling = ctx.settings.approval_poll;
    let mut delay = ceiling.min(Duration::from_secs(2));
    let started = Instant::now();
    loop {
        record = itsm.refresh(&record).await?;
        if record.state != State::AwaitingApproval {
            return Ok((record, false));
        }
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Ok((record, true));
        }
        let remaining = wait - elapsed;
        let pause = delay.min(remaining);
        eprintln!(
            "waiting for approval of {}: {} elapsed, {} left; next check in {}",
            console::one_line(&record.id),
            fmt_secs(elapsed),
            fmt_secs(remaining),
            fmt_secs(pause)
        );
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(ceiling);
    }
}

fn fmt_secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

pub async fn run(ctx: &Ctx, args: &GateArgs) -> Result<Exit> {
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let facts = change::facts(ctx, itsm.as_ref(), &args.change).await?;
    let existing = itsm.find_for_decision(&facts.key()).await?;
    let emergency_requested = args.emergency.is_some();
    let decision = match existing
        .as_ref()
        .filter(|r| itsm::decision_stands(r, emergency_requested))
    {
        Some(record) => record
            .decision
            .clone()
            .context("a standing decision vanished")?,
        None => decide_change(ctx, itsm.as_ref(), &facts, args.emergency.clone()).await?,
    };
    let mode = decision.mode;

    if s.dry_run {
        let mut report = Report::from_record(existing.as_ref(), &facts, mode, true);
        report.decision = Some(decision.kind);
        report.rules = decision.rules.clone();
        report.emergency = decision.emergency.clone();
        report.sprint = Some(crate::output::SprintInfo {
            index: decision.sprint,
            allowance: decision.allowance,
            used: decision.allowance_used,
        });
        report.clock_override = decision.clock_override.clone();
        let exit = exit_for(&decision, existing.as_ref().map(|r| r.state));
        change::emit(ctx, &report, &facts, exit)?;
        return Ok(exit);
    }

    let mut record = itsm.open(&facts, Some(&decision), s.now).await?;
    let stored = record.decision.clone().unwrap_or(decision);
    let mut message = None;
    let wait = args.wait.unwrap_or(s.approval_timeout);
    if stored.kind == DecisionKind::NeedsApproval
        && stored.mode == Mode::Enforce
        && record.state == State::AwaitingApproval
        && !wait.is_zero()
    {
        // Reviewers see "waiting for approval" on the pull request while the gate waits.
        let waiting = Report::from_record(Some(&record), &facts, mode, false);
        forge::annotate(s, &waiting, &facts, Some(&record)).await?;
        let (after, timed_out) = wait_for_approval(ctx, itsm.as_ref(), record, wait).await?;
        record = after;
        if timed_out {
            message = Some(format!("approval timed out after {}", fmt_secs(wait)));
        }
    } else if stored.kind == DecisionKind::NeedsApproval
        && record.state == State::AwaitingApproval
        && stored.mode == Mode::Enforce
    {
        message = Some("awaiting approval; --wait 0 returns at once".to_string());
    }
    let exit = exit_for(&stored, Some(record.state));
    if exit == Exit::Pass {
        record = itsm.start(&record, s.now).await?;
    }
    if record.state == State::Rejected && message.is_none() {
        message = Some(match (&record.approved_by, &record.approval_comment) {
            (Some(by), Some(c)) => format!("rejected by {by}: {c}"),
            (Some(by), None) => format!("rejected by {by}"),
            _ => "rejected".to_string(),
        });
    }
    let mut report = Report::from_record(Some(&record), &facts, mode, false);
    report.message = message;
    change::emit(ctx, &report, &facts, exit)?;
    forge::annotate(s, &report, &facts, Some(&record)).await?;
    Ok(exit)
}

/// The exit code of a decision given the record's state: observe mode never blocks.
fn exit_for(decision: &Decision, state: Option<State>) -> Exit {
    if decision.mode == Mode::Observe {
        return Exit::Pass;
    }
    match (decision.kind, state) {
        (_, Some(State::Rejected)) => Exit::Blocked,
        (DecisionKind::PreApproved, _) => Exit::Pass,
        (
            DecisionKind::NeedsApproval,
            Some(State::Approved | State::Implementing | State::Closed),
        ) => Exit::Pass,
        _ => Exit::Blocked,
    }
}

/// `open`: only open or update the record; print its id.
pub async fn open(ctx: &Ctx, args: &ChangeArgs) -> Result<Exit> {
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let facts = change::facts(ctx, itsm.as_ref(), args).await?;
    let record = if s.dry_run {
        itsm.find(&facts.key()).await?
    } else {
        Some(itsm.open(&facts, None, s.now).await?)
    };
    let report = Report::from_record(record.as_ref(), &facts, s.mode(), s.dry_run);
    change::emit(ctx, &report, &facts, Exit::Pass)?;
    forge::annotate(s, &report, &facts, record.as_ref()).await?;
    Ok(Exit::Pass)
}
