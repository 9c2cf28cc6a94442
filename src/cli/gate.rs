//! `gate` and `open`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::change::{self, ChangeArgs};
use super::{Ctx, Exit};
use crate::domain::{
    ChangeRecord, Decision, DecisionInput, DecisionKind, Gate, Mode, State, decide,
};
use crate::forge;
use crate::http;
use crate::itsm::{self, Backend, HistoryQuery};
use crate::output::{Report, console};

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub change: ChangeArgs,
    /// How long to wait for approval (default approval.timeout); 0 returns at once.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Declare an emergency change, with its reason: it passes a freeze, the allowance and the
    /// track record, and uses no allowance (a failing risk or evidence rule still sends it to
    /// approval); it is recorded as an emergency and flagged for review. With
    /// policy.emergency = "approve" it goes to expedited approval instead.
    #[arg(long, value_name = "REASON")]
    pub emergency: Option<String>,
}

/// Decides the change from the backend's history.
pub async fn decide_change(
    ctx: &Ctx,
    itsm: &dyn Backend,
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
    itsm: &dyn Backend,
    mut record: ChangeRecord,
    wait: Duration,
) -> Result<(ChangeRecord, bool)> {
    let ceiling = ctx.settings.approval_poll;
    let mut delay = ceiling.min(Duration::from_secs(2));
    let started = Instant::now();
    // The polls are not charged to http.deadline; instead the whole wait, its last poll
    // included, is over by the wait plus one request timeout.
    let request_timeout = ctx.settings.budget.request_timeout();
    let ends = started + wait + request_timeout;
    loop {
        let left = ends.saturating_duration_since(Instant::now());
        let poll = http::outside_budget(ends, itsm.refresh(&record));
        record = match tokio::time::timeout(left, poll).await {
            Ok(polled) => polled?,
            Err(_) => bail!(
                "the approval wait of {} (plus one request timeout of {}) is over and the last check of {} did not finish",
                fmt_secs(wait),
                fmt_secs(request_timeout),
                record.id
            ),
        };
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
    crate::domain::words::duration(d)
}

pub async fn run(ctx: &Ctx, args: &GateArgs) -> Result<Exit> {
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let facts = change::facts(ctx, itsm.as_ref(), &args.change).await?;
    let existing = itsm.find_for_decision(&facts.key()).await?;
    let emergency_requested = args.emergency.is_some();
    // The run's mode judges the gate: a decision made under another mode does not stand,
    // and a rejection stands but blocks an enforce run whatever mode it was asked in.
    let mode = s.mode();
    let standing = existing
        .as_ref()
        .filter(|r| r.decision.is_some() && r.decision_stands(mode, emergency_requested));
    let decision = match standing.and_then(|r| r.decision.clone()) {
        Some(d) => d,
        None => decide_change(ctx, itsm.as_ref(), &facts, args.emergency.clone()).await?,
    };
    // A closed or cancelled record whose decision does not stand (made in observe mode, or
    // its mode unknown) is not reopened: the new decision is reported and judged as if
    // written, so only a pre-approval lets the deploy go ahead.
    let closed = existing
        .as_ref()
        .filter(|r| standing.is_none() && matches!(r.state, State::Closed | State::Cancelled));

    if s.dry_run || closed.is_some() {
        return unwritten(ctx, &facts, existing.as_ref(), standing, &decision, closed).await;
    }

    let mut record = itsm.open(&facts, Some(&decision), s.now).await?;
    if matches!(record.state, State::Closed | State::Cancelled)
        && !(record.decision.is_some() && record.decision_stands(mode, emergency_requested))
    {
        // A closed record the lookup missed and `open` found (the backend left it as it is).
        let found = record.clone();
        return unwritten(ctx, &facts, Some(&found), None, &decision, Some(&found)).await;
    }
    if record.decision.is_none() {
        record.decision = Some(decision);
    }
    let policy = record
        .decision
        .clone()
        .context("the decision just written vanished")?;
    let mut message = None;
    // Whether this run saw a human reject the change while it waited.
    let mut rejected_now = false;
    let wait = args.wait.unwrap_or(s.approval_timeout);
    let waits = policy.kind == DecisionKind::NeedsApproval
        && mode == Mode::Enforce
        && record.state == State::AwaitingApproval;
    if waits && !wait.is_zero() {
        // Reviewers see "waiting for approval" on the pull request while the gate waits.
        let mut waiting = Report::from_record(Some(&record), &facts, mode, false);
        waiting.mode = mode;
        forge::annotate(s, &waiting, &facts, Some(&record)).await?;
        let (after, timed_out) = wait_for_approval(ctx, itsm.as_ref(), record, wait).await?;
        record = after;
        if timed_out {
            // The clock's word is final for this run: `blocked`, still awaiting approval.
            let why = format!("approval timed out after {}", fmt_secs(wait));
            // Set first: a backend marks a timeout so that a re-run reads it back.
            record.timed_out = true;
            record = itsm.record_refusal(&record, &why, s.now).await?;
            record.timed_out = true;
            message = Some(why);
        } else {
            rejected_now = record.state == State::Rejected;
        }
    } else if waits {
        message = Some(if record.timed_out {
            "approval timed out on an earlier run and is still awaited; --wait 0 returns at once"
                .to_string()
        } else {
            "awaiting approval; --wait 0 returns at once".to_string()
        });
    }
    if record.state == State::Rejected {
        if record.approved_by.is_none() {
            // Who rejected, and why, is read with the approval itself.
            record = itsm.refresh(&record).await?;
        }
        let why = crate::output::rejection(
            record.approved_by.as_deref(),
            record.approval_comment.as_deref(),
        );
        if rejected_now {
            // Once, by the run that saw it: the record says the final decision is blocked.
            record = itsm.record_refusal(&record, &why, s.now).await?;
        }
        message.get_or_insert(why);
    }
    let exit = exit_for(record.gate(mode).unwrap_or(Gate::Blocked));
    if exit == Exit::Pass {
        record = itsm.start(&record, s.now).await?;
    }
    let mut report = Report::from_record(Some(&record), &facts, mode, false);
    report.mode = mode;
    report.message = message;
    change::emit(ctx, &report, &facts, exit)?;
    forge::annotate(s, &report, &facts, Some(&record)).await?;
    Ok(exit)
}

/// What a run reports, and its exit, for a decision that is not written: a dry run's, or
/// one a closed or cancelled record does not take (`closed`). A standing decision keeps its
/// final word and state; a new one is judged in the state its write would set, in the run's
/// mode, so a dry run predicts the real run and a closed observe record never lets an
/// enforce run pass.
async fn unwritten(
    ctx: &Ctx,
    facts: &crate::domain::ChangeFacts,
    existing: Option<&ChangeRecord>,
    standing: Option<&ChangeRecord>,
    decision: &Decision,
    closed: Option<&ChangeRecord>,
) -> Result<Exit> {
    let s = &ctx.settings;
    let mode = s.mode();
    let mut report = Report::from_record(existing, facts, mode, s.dry_run);
    let (kind, state) = match standing {
        Some(r) => (r.final_decision().unwrap_or(decision.kind), r.state),
        None => (decision.kind, decision.state_after()),
    };
    report.decision = Some(kind);
    if standing.is_none() {
        // The record's refusal, if any, is not what this decision would write.
        report.policy_decision = None;
    }
    report.mode = mode;
    if existing.is_some() {
        report.state = Some(state);
    }
    // A closed record's outcome belongs to the deploy it recorded, not to this run.
    if closed.is_some() {
        report.outcome = None;
    }
    report.rules = decision.rules.clone();
    report.emergency = decision.emergency.clone();
    report.sprint = Some(crate::output::SprintInfo {
        index: decision.sprint,
        allowance: decision.allowance,
        used: decision.allowance_used,
    });
    report.clock_override = decision.clock_override.clone();
    let exit = exit_for(kind.gate(mode, Some(state)));
    if let Some(r) = closed {
        report.message = Some(format!(
            "{} is {} and its decision does not stand in {} mode: decided again as {kind}, not written to it; {}",
            r.id,
            r.state,
            mode.as_str(),
            if exit == Exit::Pass {
                "the deploy goes ahead"
            } else {
                "the deploy does not go ahead (a closed change is not reopened)"
            }
        ));
    }
    change::emit(ctx, &report, facts, exit)?;
    if !s.dry_run {
        forge::annotate(s, &report, facts, existing).await?;
    }
    Ok(exit)
}

/// The exit code of what the gate does: only a pass lets the deploy go ahead.
fn exit_for(gate: Gate) -> Exit {
    match gate {
        Gate::Pass => Exit::Pass,
        Gate::Blocked | Gate::Waiting => Exit::Blocked,
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
