//! Annotations: keeping reviewers informed on the pull/merge request without opening the
//! ITSM. One sticky comment per service and environment (found again by a hidden marker and
//! edited in place), and a check run or commit status named after the environment.
//!
//! [`annotate`] is the one entry point the commands call after their own output. A failure
//! to annotate is a warning line on stderr and never changes the exit code, unless
//! `annotate.required = true`: then it is an error (exit 2).

use anyhow::{Result, bail};

use crate::domain::{ChangeFacts, ChangeRecord, DecisionKind, Gate, Mode, Outcome, Platform};
use crate::output::{self, Report};
use crate::settings::Settings;

pub mod github;
mod github_api;
mod github_app;
pub mod gitlab;
pub mod render;

/// Where the change stands, as the forge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded, not decided yet (`open`).
    Open,
    /// Needs approval and none was given yet.
    Waiting,
    /// May deploy: pre-approved, or approved.
    Passed,
    /// Observe mode, and the decision would not have let the change through.
    Observed,
    /// Blocked by the policy (freeze) or rejected.
    Blocked,
    /// Deployed successfully.
    Deployed,
    /// Deployed and failed (or turned into a failure by an incident).
    Failed,
    /// The deploy was cancelled.
    Cancelled,
}

/// The verdict of a report: an outcome, once there is one, says the most.
pub fn verdict(report: &Report) -> Verdict {
    match report.outcome {
        Some(Outcome::Success) => return Verdict::Deployed,
        Some(Outcome::Failure) => return Verdict::Failed,
        Some(Outcome::Cancelled) => return Verdict::Cancelled,
        None => {}
    }
    let Some(decision) = report.decision else {
        return Verdict::Open;
    };
    if report.mode == Mode::Observe && decision != DecisionKind::PreApproved {
        return Verdict::Observed;
    }
    match decision.gate(report.mode, report.state) {
        Gate::Pass => Verdict::Passed,
        Gate::Blocked => Verdict::Blocked,
        Gate::Waiting => Verdict::Waiting,
    }
}

impl Verdict {
    /// Check run conclusion; `None` leaves the check in progress.
    pub fn check_conclusion(self) -> Option<&'static str> {
        match self {
            Verdict::Open => None,
            Verdict::Waiting => Some("action_required"),
            Verdict::Passed | Verdict::Deployed => Some("success"),
            Verdict::Observed => Some("neutral"),
            Verdict::Blocked | Verdict::Failed => Some("failure"),
            Verdict::Cancelled => Some("cancelled"),
        }
    }

    /// GitHub commit status state (`error`, `failure`, `pending`, `success`).
    pub fn github_state(self) -> &'static str {
        match self {
            Verdict::Open | Verdict::Waiting => "pending",
            Verdict::Passed | Verdict::Deployed | Verdict::Observed => "success",
            Verdict::Blocked | Verdict::Failed => "failure",
            Verdict::Cancelled => "error",
        }
    }

    /// GitLab commit status state (`pending`, `running`, `success`, `failed`, `canceled`).
    pub fn gitlab_state(self) -> &'static str {
        match self {
            Verdict::Open | Verdict::Waiting => "pending",
            Verdict::Passed | Verdict::Deployed | Verdict::Observed => "success",
            Verdict::Blocked | Verdict::Failed => "failed",
            Verdict::Cancelled => "canceled",
        }
    }
}

/// Everything either forge posts for one change, rendered once.
#[derive(Debug, Clone)]
pub struct Annotation {
    pub verdict: Verdict,
    /// The hidden marker of the sticky comment.
    pub marker: String,
    pub comment: String,
    /// `changegate / <environment>`.
    pub check_name: String,
    /// `changegate/<environment>`.
    pub status_context: String,
    pub title: String,
    pub summary: String,
    pub description: String,
    /// Where the check and status link to: the change record, else the pipeline run.
    pub details_url: Option<String>,
    pub change_id: Option<String>,
}

impl Annotation {
    pub fn new(report: &Report, facts: &ChangeFacts, record: Option<&ChangeRecord>) -> Annotation {
        let verdict = verdict(report);
        let marker = render::marker(&facts.service_id, &facts.environment);
        let details_url = report
            .change_url
            .clone()
            .or_else(|| facts.run_url.clone())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        Annotation {
            verdict,
            comment: render::comment(&marker, verdict, report, facts, record),
            marker,
            check_name: format!("changegate / {}", facts.environment),
            status_context: format!("changegate/{}", facts.environment),
            title: render::check_title(verdict, report),
            summary: render::check_summary(report),
            description: render::status_description(verdict, report),
            details_url,
            change_id: report.change_id.clone(),
        }
    }
}

/// What one forge did.
#[derive(Debug)]
pub enum Done {
    /// Nothing was tried, and why (no token, no repository).
    Skipped(String),
    /// Tried; each entry is one part that failed, in a sentence.
    Annotated { problems: Vec<String> },
}

/// Annotates the pull/merge request(s) of this change and its commit. Skipped in a dry run,
/// with `annotate.enabled = false`, outside GitHub/GitLab CI, and without a token. A failed
/// part is a warning on stderr, or an error when `annotate.required = true`.
pub async fn annotate(
    settings: &Settings,
    report: &Report,
    facts: &ChangeFacts,
    record: Option<&ChangeRecord>,
) -> Result<()> {
    if settings.dry_run || !settings.annotate.enabled {
        return Ok(());
    }
    let annotation = Annotation::new(report, facts, record);
    let done = match facts.platform {
        Platform::Github => github::annotate(settings, &annotation, facts).await,
        Platform::Gitlab => gitlab::annotate(settings, &annotation, facts).await,
        Platform::Local => return Ok(()),
    };
    match done {
        Done::Skipped(why) if settings.annotate.required => {
            bail!("annotate.required is set, but the pull request cannot be annotated: {why}")
        }
        Done::Skipped(why) => {
            tracing::info!("not annotating: {why}");
            Ok(())
        }
        Done::Annotated { problems } if problems.is_empty() => Ok(()),
        Done::Annotated { problems } if settings.annotate.required => {
            bail!(
                "could not annotate (annotate.required is set): {}",
                problems.join("; ")
            )
        }
        Done::Annotated { problems } => {
            for problem in problems {
                warn(settings, &problem);
            }
            Ok(())
        }
    }
}

/// One warning line on stderr; under GitHub Actions a `::warning::` command, so it also
/// shows on the run's page.
fn warn(settings: &Settings, problem: &str) {
    let text = format!("changegate could not annotate: {problem}");
    if settings.github_actions {
        eprintln!("{}", output::github::command("warning", &text));
    } else {
        eprintln!("warning: {text}");
    }
}

/// A short, one-line rendering of an API error body: its `message` (GitHub, GitLab) or
/// `error` (GitLab), else the text itself, cut.
pub(crate) fn api_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.get("message")
            .or_else(|| v.get("error"))
            .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
    });
    let text = message.unwrap_or_else(|| body.trim().to_string());
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > 300 {
        let mut cut: String = one_line.chars().take(299).collect();
        cut.push('…');
        cut
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Mode, State};

    fn report(
        decision: Option<DecisionKind>,
        state: Option<State>,
        outcome: Option<Outcome>,
        mode: Mode,
    ) -> Report {
        Report {
            change_id: Some("CHG-1".into()),
            change_url: None,
            decision,
            policy_decision: None,
            state,
            outcome,
            rules: Vec::new(),
            mode,
            dry_run: false,
            correlation_key: String::new(),
            service: "s".into(),
            environment: "production".into(),
            commit: "abc".into(),
            emergency: None,
            sprint: None,
            approved_by: None,
            approval_comment: None,
            incidents: Vec::new(),
            clock_override: None,
            message: None,
        }
    }

    #[test]
    fn verdicts_follow_the_decision_then_the_outcome() {
        use DecisionKind::*;
        let e = Mode::Enforce;
        let cases = [
            (None, Some(State::New), None, e, Verdict::Open),
            (
                Some(PreApproved),
                Some(State::Implementing),
                None,
                e,
                Verdict::Passed,
            ),
            (
                Some(NeedsApproval),
                Some(State::AwaitingApproval),
                None,
                e,
                Verdict::Waiting,
            ),
            (
                Some(NeedsApproval),
                Some(State::Approved),
                None,
                e,
                Verdict::Passed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Rejected),
                None,
                e,
                Verdict::Blocked,
            ),
            (Some(Blocked), Some(State::New), None, e, Verdict::Blocked),
            (
                Some(Blocked),
                Some(State::New),
                None,
                Mode::Observe,
                Verdict::Observed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Implementing),
                None,
                Mode::Observe,
                Verdict::Observed,
            ),
            (
                Some(PreApproved),
                Some(State::Closed),
                Some(Outcome::Success),
                e,
                Verdict::Deployed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Closed),
                Some(Outcome::Failure),
                e,
                Verdict::Failed,
            ),
            (
                Some(PreApproved),
                Some(State::Cancelled),
                Some(Outcome::Cancelled),
                e,
                Verdict::Cancelled,
            ),
        ];
        for (decision, state, outcome, mode, want) in cases {
            assert_eq!(
                verdict(&report(decision, state, outcome, mode)),
                want,
                "{decision:?} {state:?} {outcome:?} {mode:?}"
            );
        }
        assert_eq!(Verdict::Waiting.check_conclusion(), Some("action_required"));
        assert_eq!(Verdict::Open.check_conclusion(), None);
    }

    #[test]
    fn api_messages_are_one_short_line() {
        assert_eq!(
            api_message(
                r#"{"message":"Resource not accessible by integration","documentation_url":"x"}"#
            ),
            "Resource not accessible by integration"
        );
        assert_eq!(
            api_message(r#"{"message":{"body":["is too long"]}}"#),
            r#"{"body":["is too long"]}"#
        );
        assert_eq!(
            api_message(r#"{"error":"insufficient_scope"}"#),
            "insufficient_scope"
        );
        assert_eq!(api_message("Retry later\n"), "Retry later");
        assert_eq!(api_message(&"x".repeat(1000)).chars().count(), 300);
    }
}
