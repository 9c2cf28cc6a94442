//! `gate`: open or update the change, decide, wait for approval if needed, and say whether
//! the deploy goes ahead.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::change::Gathered;
use super::{ChangeOutcome, Ctx, Exit, Progress, Waiting, annotated};
use crate::domain::{
    ChangeFacts, ChangeRecord, Decision, DecisionInput, DecisionKind, Gate, Mode, Platform, State,
    approval, decide,
};
use crate::env::{self, Vars};
use crate::http;
use crate::itsm::{Backend, HistoryQuery, Intent, Lookup};
use crate::output::{Judgement, Report};

/// What a gate run is asked besides the change.
#[derive(Debug, Clone, Default)]
pub struct GateRequest {
    /// How long to wait for approval (default `approval.timeout`); zero returns at once.
    pub wait: Option<Duration>,
    /// An emergency change, with its reason.
    pub emergency: Option<String>,
}

/// Decides the change from the backend's history; `found` is the gate's lookup of the
/// change, which may carry part of the history (see [`Intent::Decide`]).
pub async fn decide_change(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    facts: &ChangeFacts,
    found: Option<&Lookup>,
    emergency: Option<String>,
) -> Result<Decision> {
    let s = ctx.settings;
    let key = facts.key().to_string();
    let current = s.calendar.index_of(s.now);
    let history = backend
        .history(&HistoryQuery {
            service_id: &facts.service_id,
            environment: &facts.environment,
            window: s.policy.params.window,
            calendar: s.calendar,
            from_sprint: current - i64::from(s.policy.params.allowance.lookback_sprints),
            now: s.now,
            exclude_key: Some(&key),
            found,
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

/// Waits for a human decision: polls fast, then backs off to `approval.poll`, telling
/// `progress` of each poll. One last read at the deadline means an approval that lands
/// between two polls is never missed.
async fn wait_for_approval(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    mut record: ChangeRecord,
    wait: Duration,
    how: &str,
    progress: &dyn Progress,
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
        let poll = http::outside_budget(ends, backend.refresh(&record));
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
        progress.waiting(&Waiting {
            change_id: record.id.clone(),
            elapsed,
            remaining,
            next: pause,
            how: how.to_string(),
        });
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(ceiling);
    }
}

fn fmt_secs(d: Duration) -> String {
    crate::domain::words::duration(d)
}

/// `gate`: the change's decision (the standing one, or a new one), written, waited for
/// when it needs approval, and what the pipeline is told. With `[sync] enabled`, the
/// tickets the work references then hear of its pull request (see [`super::sync`]): a
/// warning at most, never another exit code.
pub async fn run(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    gathered: Gathered,
    req: &GateRequest,
    progress: &dyn Progress,
) -> Result<ChangeOutcome> {
    let mut outcome = gate(ctx, backend, gathered, req, progress).await?;
    let warnings = super::sync::after_gate(ctx.settings, &outcome.facts).await;
    outcome.warnings.extend(warnings);
    Ok(outcome)
}

async fn gate(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    gathered: Gathered,
    req: &GateRequest,
    progress: &dyn Progress,
) -> Result<ChangeOutcome> {
    let s = ctx.settings;
    let Gathered { facts, found } = gathered;
    // The decision reads the history next: a backend may read it with the record (or did,
    // while gathering the facts).
    let found = match found {
        Some(found) => found,
        None => backend.find(&facts.key(), Intent::Decide).await?,
    };
    let existing = found.record.clone();
    let emergency_requested = req.emergency.is_some();
    // The run's mode judges the gate: a decision made under another mode does not stand,
    // and a rejection stands but blocks an enforce run whatever mode it was asked in.
    let mode = s.mode();
    let standing = existing
        .as_ref()
        .filter(|r| r.standing_decision(mode, emergency_requested).is_some());
    let decision = match standing.and_then(|r| r.decision.clone()) {
        Some(d) => d,
        None => decide_change(ctx, backend, &facts, Some(&found), req.emergency.clone()).await?,
    };
    // A closed or cancelled record whose decision does not stand (made in observe mode, or
    // its mode unknown) is not reopened: the new decision is reported and judged as if
    // written, so only a pre-approval lets the deploy go ahead.
    let closed = existing
        .as_ref()
        .filter(|r| r.left_closed(mode, emergency_requested));

    if s.dry_run || closed.is_some() {
        return Ok(unwritten(ctx, facts, existing.as_ref(), standing, &decision, closed).await);
    }

    let mut record = backend
        .open(&facts, Some(&decision), Some(&found), s.now)
        .await?;
    if record.left_closed(mode, emergency_requested) {
        // A closed record the lookup missed and `open` found (the backend left it as it is).
        return Ok(unwritten(ctx, facts, Some(&record), None, &decision, Some(&record)).await);
    }
    if record.decision.is_none() {
        record.decision = Some(decision);
    }
    let policy = record
        .decision
        .clone()
        .context("the decision just written vanished")?;
    let mut message = None;
    // Whether this run saw a human reject (or approve) the change while it waited.
    let mut rejected_now = false;
    let mut approved_now = false;
    let wait = req.wait.unwrap_or(s.approval_timeout);
    let waits = policy.kind == DecisionKind::NeedsApproval
        && mode == Mode::Enforce
        && record.state == State::AwaitingApproval;
    if waits && !wait.is_zero() {
        // Reviewers see "waiting for approval" on the pull request while the gate waits.
        let waiting = report_of(&record, &facts, mode);
        for warning in ctx.forge.annotate(&waiting, &facts, Some(&record)).await? {
            progress.warning(&warning);
        }
        let how = how_to_approve(ctx, backend, &record, &facts);
        let (after, timed_out) =
            wait_for_approval(ctx, backend, record, wait, &how, progress).await?;
        record = after;
        if timed_out {
            // The clock's word is final for this run: `blocked`, still awaiting approval.
            let why = format!("approval timed out after {}", fmt_secs(wait));
            // Set first: a backend marks a timeout so that a re-run reads it back.
            record.timed_out = true;
            record = backend.record_refusal(&record, &why, s.now).await?;
            record.timed_out = true;
            message = Some(why);
        } else {
            rejected_now = record.state == State::Rejected;
            approved_now = record.state == State::Approved;
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
            record = backend.refresh(&record).await?;
        }
        let why = crate::output::rejection(
            record.approved_by.as_deref(),
            record.approval_comment.as_deref(),
        );
        if rejected_now {
            // Once, by the run that saw it: the record says the final decision is blocked.
            record = backend.record_refusal(&record, &why, s.now).await?;
        }
        message.get_or_insert(why);
    }
    if let Some(why) = approval_not_counted(ctx, backend, &record, &facts, mode).await? {
        record.approval_not_counted = true;
        if approved_now {
            // Once, by the run that saw the approval: the ITSM hears why it does not count.
            record = backend.record_refusal(&record, &why, s.now).await?;
            record.approval_not_counted = true;
        }
        message = Some(why);
    }
    let exit = Exit::from(record.gate(mode).unwrap_or(Gate::Blocked));
    if exit == Exit::Pass {
        record = backend.start(&record, s.now).await?;
    }
    let mut report = report_of(&record, &facts, mode);
    report.message = message;
    if waits && record.state == State::AwaitingApproval {
        report.how_to_approve = Some(how_to_approve(ctx, backend, &record, &facts));
    }
    Ok(annotated(ctx, report, facts, Some(&record), exit).await)
}

/// Why the approval an ITSM reports for `record` does not count, if it does not: with
/// `[approval] separate_author`, someone other than the change's author must have given it
/// (see [`approval::itsm_approval_counts`]). Asked only of an approval that would let an
/// enforce run pass; a ledger's approvals were checked by `changegate approve`.
async fn approval_not_counted(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    record: &ChangeRecord,
    facts: &ChangeFacts,
    mode: Mode,
) -> Result<Option<String>> {
    let separate_author = ctx.settings.file.approval.separate_author;
    let approved = mode == Mode::Enforce
        && record.state == State::Approved
        && record.final_decision() == Some(DecisionKind::NeedsApproval);
    if !approved || !separate_author {
        return Ok(None);
    }
    let Some(approvers) = backend.approvers(record).await? else {
        return Ok(None);
    };
    let author = record.author.as_ref().or(facts.author.as_ref());
    Ok(approval::itsm_approval_counts(
        &record.id,
        backend.kind().as_str(),
        author,
        &approvers,
        separate_author,
    )
    .err()
    .map(|refused| refused.to_string()))
}

/// The report of a written record, in the run's mode (a rejection blocks an enforce run
/// whatever mode the change was first decided in).
fn report_of(record: &ChangeRecord, facts: &ChangeFacts, mode: Mode) -> Report {
    let judgement = Judgement {
        mode,
        ..Judgement::of_record(Some(record), mode)
    };
    Report::new(Some(record), facts, judgement, false)
}

/// What a run reports, and its exit, for a decision that is not written: a dry run's, or
/// one a closed or cancelled record does not take (`closed`). A standing decision keeps its
/// final word and state; a new one is judged in the state its write would set, in the run's
/// mode, so a dry run predicts the real run and a closed observe record never lets an
/// enforce run pass.
async fn unwritten(
    ctx: &Ctx<'_>,
    facts: ChangeFacts,
    existing: Option<&ChangeRecord>,
    standing: Option<&ChangeRecord>,
    decision: &Decision,
    closed: Option<&ChangeRecord>,
) -> ChangeOutcome {
    let s = ctx.settings;
    let mode = s.mode();
    let (kind, state) = match standing {
        Some(r) => (r.final_decision().unwrap_or(decision.kind), r.state),
        None => (decision.kind, decision.state_after()),
    };
    let judgement = Judgement {
        decision: Some(decision),
        kind: Some(kind),
        // The record's refusal, if any, is what a standing decision says; a new decision
        // would write none.
        policy_decision: standing.and_then(|r| Judgement::of_record(Some(r), mode).policy_decision),
        state: existing.map(|_| state),
        // A closed record's outcome belongs to the deploy it recorded, not to this run.
        outcome: existing
            .filter(|_| closed.is_none())
            .and_then(|r| r.outcome),
        mode,
    };
    let mut report = Report::new(existing, &facts, judgement, s.dry_run);
    let exit = Exit::from(kind.gate(mode, Some(state)));
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
    // The forge is not told of a dry run (it checks that itself).
    annotated(ctx, report, facts, existing, exit).await
}

/// Who may approve the waiting change `record`, and exactly how, in one line: the manual
/// job of this GitLab pipeline (the component sets `CHANGEGATE_JOB_PREFIX`), the GitHub
/// workflow `[approval] workflow` names, or the command; on an ITSM, the ITSM.
pub fn how_to_approve(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    record: &ChangeRecord,
    facts: &ChangeFacts,
) -> String {
    let s = ctx.settings;
    let id = &record.id;
    if backend.manual().is_none() {
        let kind = backend.kind().as_str();
        let at = record
            .url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default();
        return format!("a change approver in {kind} approves {id}{at}");
    }
    // The author `approve` checks against: the one stored with the change.
    let author = record.author.as_ref().or(facts.author.as_ref());
    let who = approval::who_may_approve(author, s.file.approval.separate_author);
    let command = format!("changegate approve --change {id} --by NAME (or reject)");
    let workflow = &s.file.approval.workflow;
    let how = match s.platform {
        Platform::Gitlab => match s.env.get(env::JOB_PREFIX) {
            Some(prefix) => {
                let pipeline = facts
                    .run_url
                    .as_deref()
                    .map(|u| format!(" of pipeline {u}"))
                    .unwrap_or_default();
                format!(
                    "run the manual job {prefix}-approve{pipeline} (or {prefix}-reject), or {command} with this ledger"
                )
            }
            None => format!("{command} with this ledger"),
        },
        Platform::Github if !workflow.is_empty() => {
            let page = facts
                .repository_url
                .as_deref()
                .map(|r| format!(" ({r}/actions/workflows/{workflow})"))
                .unwrap_or_default();
            format!(
                "run the workflow {workflow}{page} with change {id}: gh workflow run {workflow} -f change={id} -f decision=approve"
            )
        }
        _ => format!("{command} with the ledger {}", s.ledger_path.display()),
    };
    format!("{who} may approve {id}: {how}")
}
