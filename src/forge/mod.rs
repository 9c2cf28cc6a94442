//! Annotations: keeping reviewers informed on the pull/merge request without opening the
//! ITSM. One sticky comment per service and environment (found again by a hidden marker and
//! edited in place), and a check run or commit status named after the environment.
//!
//! [`Forge::annotate`] is the one entry point the flow calls. A failure to annotate is a
//! warning the door shows and never changes the exit code, unless `annotate.required =
//! true`: then it is an error (exit 2).

use std::sync::{Mutex, OnceLock};

use secrecy::SecretString;

use crate::domain::{ChangeFacts, ChangeRecord, DecisionKind, Gate, Mode, Outcome, Platform};
use crate::http::{HttpClient, HttpError};
use crate::output::Report;
use crate::pipeline::PlatformFiles;
use crate::settings::Settings;

pub mod deployments;
pub mod github;
mod github_api;
mod github_app;
pub mod gitlab;
pub mod render;

/// An installation token of the GitHub App `app` for `repo` of the installation a webhook
/// named: what a server acts with for one delivery.
pub async fn installation_token(
    http: &HttpClient,
    base_url: &str,
    app: &crate::settings::GithubApp,
    installation: u64,
    repo: &str,
) -> anyhow::Result<SecretString> {
    Ok(github_app::token_for_installation(http, base_url, app, installation, repo).await?)
}

/// Whether GitHub answers and takes the App's JWT (a server's readiness).
pub async fn check_app(
    http: &HttpClient,
    base_url: &str,
    app: &crate::settings::GithubApp,
) -> anyhow::Result<()> {
    Ok(github_app::check_app(http, base_url, app).await?)
}

/// Whether the GitHub App's key signs an App JWT (checked by a server before it listens).
pub fn check_app_key(app: &crate::settings::GithubApp) -> anyhow::Result<()> {
    github_app::jwt(&app.id, &app.private_key, chrono::Utc::now().timestamp())?;
    Ok(())
}

/// Where the change stands, as the forge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
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

/// The standing of a report: an outcome, once there is one, says the most.
pub fn standing(report: &Report) -> Standing {
    match report.outcome {
        Some(Outcome::Success) => return Standing::Deployed,
        Some(Outcome::Failure) => return Standing::Failed,
        Some(Outcome::Cancelled) => return Standing::Cancelled,
        None => {}
    }
    let Some(decision) = report.decision else {
        return Standing::Open;
    };
    if report.mode == Mode::Observe && decision != DecisionKind::PreApproved {
        return Standing::Observed;
    }
    match decision.gate(report.mode, report.state) {
        Gate::Pass => Standing::Passed,
        Gate::Blocked => Standing::Blocked,
        Gate::Waiting => Standing::Waiting,
    }
}

impl Standing {
    /// Check run conclusion; `None` leaves the check in progress.
    pub fn check_conclusion(self) -> Option<&'static str> {
        match self {
            Standing::Open => None,
            Standing::Waiting => Some("action_required"),
            Standing::Passed | Standing::Deployed => Some("success"),
            Standing::Observed => Some("neutral"),
            Standing::Blocked | Standing::Failed => Some("failure"),
            Standing::Cancelled => Some("cancelled"),
        }
    }

    /// GitHub commit status state (`error`, `failure`, `pending`, `success`).
    pub fn github_state(self) -> &'static str {
        match self {
            Standing::Open | Standing::Waiting => "pending",
            Standing::Passed | Standing::Deployed | Standing::Observed => "success",
            Standing::Blocked | Standing::Failed => "failure",
            Standing::Cancelled => "error",
        }
    }

    /// GitLab commit status state (`pending`, `running`, `success`, `failed`, `canceled`).
    pub fn gitlab_state(self) -> &'static str {
        match self {
            Standing::Open | Standing::Waiting => "pending",
            Standing::Passed | Standing::Deployed | Standing::Observed => "success",
            Standing::Blocked | Standing::Failed => "failed",
            Standing::Cancelled => "canceled",
        }
    }
}

/// Everything either forge posts for one change, rendered once.
#[derive(Debug, Clone)]
pub struct Annotation {
    pub standing: Standing,
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
        let standing = standing(report);
        let marker = render::marker(&facts.service_id, &facts.environment);
        let details_url = report
            .change_url
            .clone()
            .or_else(|| facts.run_url.clone())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        Annotation {
            standing,
            comment: render::comment(&marker, standing, report, facts, record),
            marker,
            check_name: format!("changegate / {}", facts.environment),
            status_context: format!("changegate/{}", facts.environment),
            title: render::check_title(standing, report),
            summary: render::check_summary(report),
            description: render::status_description(standing, report),
            details_url,
            change_id: report.change_id.clone(),
        }
    }
}

/// What one forge did.
#[derive(Debug)]
pub(crate) enum Done {
    /// Nothing was tried, and why (no token, no repository).
    Skipped(String),
    /// Tried; each entry is one part that failed, in a sentence.
    Annotated { problems: Vec<String> },
}

/// Why the pull/merge request could not be annotated when `annotate.required = true` says
/// it must be (otherwise these are warnings).
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// Nothing was tried (no token, no repository).
    #[error("annotate.required is set, but the pull request cannot be annotated: {0}")]
    Skipped(String),
    /// Tried, and some part failed.
    #[error("could not annotate (annotate.required is set): {}", .0.join("; "))]
    Failed(Vec<String>),
}

/// Why the platform could not be asked for the change's files.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForgeError {
    #[error(transparent)]
    Http(HttpError),
    #[error("GitHub App authentication failed: {0}")]
    App(#[from] github_app::AppAuthError),
    /// GitHub's answer, with a hint on the permission a refused call needs.
    #[error("{source}{hint}")]
    GitHub {
        #[source]
        source: github_api::ApiError,
        hint: String,
    },
    /// GitLab's own message, with a hint on the token when it was refused.
    #[error("{message}")]
    GitLab {
        message: String,
        #[source]
        source: HttpError,
    },
    #[error("no GitHub token")]
    NoToken,
    #[error("the repository {0:?} is not of the form OWNER/NAME")]
    Repository(String),
}

impl From<github_api::ApiError> for ForgeError {
    fn from(source: github_api::ApiError) -> ForgeError {
        ForgeError::GitHub {
            source,
            hint: String::new(),
        }
    }
}

/// The forge of one run: its HTTP clients, the GitHub client (octocrab) and the GitHub App
/// installation token, each built once and shared by every annotation of the run (a gate
/// annotates while it waits and again at the end), then dropped with the run. Built by the
/// door and passed in; nothing about it is process-wide.
pub struct Forge<'a> {
    settings: &'a Settings,
    github_http: OnceLock<HttpClient>,
    gitlab_http: OnceLock<HttpClient>,
    app_tokens: github_app::TokenCache,
    /// The GitHub client and the token it carries: rebuilt only when the App token is
    /// minted again.
    github_api: Mutex<Option<(SecretString, github_api::Api)>>,
}

impl<'a> Forge<'a> {
    /// The forge for one run. Builds nothing yet: a run that never talks to its forge
    /// pays for no client.
    pub fn new(settings: &'a Settings) -> Forge<'a> {
        Forge {
            settings,
            github_http: OnceLock::new(),
            gitlab_http: OnceLock::new(),
            app_tokens: github_app::TokenCache::default(),
            github_api: Mutex::new(None),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        self.settings
    }

    /// The run's HTTP client for GitHub, built on first use.
    pub(crate) fn github_http(&self) -> Result<&HttpClient, HttpError> {
        self.http(&self.github_http, "GitHub")
    }

    /// The run's HTTP client for GitLab, built on first use.
    pub(crate) fn gitlab_http(&self) -> Result<&HttpClient, HttpError> {
        self.http(&self.gitlab_http, "GitLab")
    }

    fn http<'c>(
        &self,
        cell: &'c OnceLock<HttpClient>,
        service: &'static str,
    ) -> Result<&'c HttpClient, HttpError> {
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let client = HttpClient::new(service, &self.settings.budget)?;
        Ok(cell.get_or_init(|| client))
    }

    pub(crate) fn app_tokens(&self) -> &github_app::TokenCache {
        &self.app_tokens
    }

    /// The GitHub client for `token`: the one already built when the token is the same.
    pub(crate) fn github_api(
        &self,
        http: &HttpClient,
        token: &SecretString,
    ) -> Result<github_api::Api, github_api::ApiError> {
        use secrecy::ExposeSecret;
        if let Ok(guard) = self.github_api.lock()
            && let Some((built_for, api)) = guard.as_ref()
            && built_for.expose_secret() == token.expose_secret()
        {
            return Ok(api.clone());
        }
        let api = github_api::Api::new(http, &self.settings.forge.github_api_url, token)?;
        if let Ok(mut guard) = self.github_api.lock() {
            *guard = Some((token.clone(), api.clone()));
        }
        Ok(api)
    }

    /// Annotates the pull/merge request(s) of this change and its commit. Skipped in a dry
    /// run, with `annotate.enabled = false`, outside GitHub/GitLab CI, and without a token.
    /// A failed part is a warning, returned for the door to show, or an error when
    /// `annotate.required = true`.
    pub async fn annotate(
        &self,
        report: &Report,
        facts: &ChangeFacts,
        record: Option<&ChangeRecord>,
    ) -> Result<Vec<String>, AnnotateError> {
        let settings = self.settings;
        if settings.dry_run || !settings.annotate.enabled {
            return Ok(Vec::new());
        }
        let annotation = Annotation::new(report, facts, record);
        let done = match facts.platform {
            Platform::Github => github::annotate(self, &annotation, facts).await,
            Platform::Gitlab => gitlab::annotate(self, &annotation, facts).await,
            Platform::Local => return Ok(Vec::new()),
        };
        match done {
            Done::Skipped(why) if settings.annotate.required => Err(AnnotateError::Skipped(why)),
            Done::Skipped(why) => {
                tracing::info!("not annotating: {why}");
                Ok(Vec::new())
            }
            Done::Annotated { problems } if problems.is_empty() => Ok(Vec::new()),
            Done::Annotated { problems } if settings.annotate.required => {
                Err(AnnotateError::Failed(problems))
            }
            Done::Annotated { problems } => Ok(problems
                .iter()
                .map(|problem| format!("changegate could not annotate: {problem}"))
                .collect()),
        }
    }

    /// The review and test evidence of the change as its forge knows it (see
    /// [`crate::domain::evidence`]). `Ok(None)`: the forge cannot be asked (not on a forge,
    /// no token, no repository); an error: it was asked and did not answer (fail closed).
    pub async fn evidence(
        &self,
        facts: &ChangeFacts,
        review: bool,
        tests: bool,
    ) -> anyhow::Result<Option<crate::domain::evidence::Evidence>> {
        let asked = match facts.platform {
            Platform::Github => github::evidence(self, facts, review, tests).await,
            Platform::Gitlab => gitlab::evidence(self, facts, review, tests).await,
            Platform::Local => Ok(None),
        };
        asked.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the review and test evidence from the forge ([evidence] requires it): {e}"
            )
        })
    }

    /// The files and line counts of the change as the platform knows them. `Ok(None)`:
    /// nothing to ask with (no token, no repository, no range), or not on a forge.
    pub(crate) async fn change_files(
        &self,
        facts: &ChangeFacts,
    ) -> Result<Option<PlatformFiles>, ForgeError> {
        match facts.platform {
            Platform::Github => github::change_files(self, facts).await,
            Platform::Gitlab => gitlab::change_files(self, facts).await,
            Platform::Local => Ok(None),
        }
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
            how_to_approve: None,
        }
    }

    #[test]
    fn verdicts_follow_the_decision_then_the_outcome() {
        use DecisionKind::*;
        let e = Mode::Enforce;
        let cases = [
            (None, Some(State::New), None, e, Standing::Open),
            (
                Some(PreApproved),
                Some(State::Implementing),
                None,
                e,
                Standing::Passed,
            ),
            (
                Some(NeedsApproval),
                Some(State::AwaitingApproval),
                None,
                e,
                Standing::Waiting,
            ),
            (
                Some(NeedsApproval),
                Some(State::Approved),
                None,
                e,
                Standing::Passed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Rejected),
                None,
                e,
                Standing::Blocked,
            ),
            (Some(Blocked), Some(State::New), None, e, Standing::Blocked),
            (
                Some(Blocked),
                Some(State::New),
                None,
                Mode::Observe,
                Standing::Observed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Implementing),
                None,
                Mode::Observe,
                Standing::Observed,
            ),
            (
                Some(PreApproved),
                Some(State::Closed),
                Some(Outcome::Success),
                e,
                Standing::Deployed,
            ),
            (
                Some(NeedsApproval),
                Some(State::Closed),
                Some(Outcome::Failure),
                e,
                Standing::Failed,
            ),
            (
                Some(PreApproved),
                Some(State::Cancelled),
                Some(Outcome::Cancelled),
                e,
                Standing::Cancelled,
            ),
        ];
        for (decision, state, outcome, mode, want) in cases {
            assert_eq!(
                standing(&report(decision, state, outcome, mode)),
                want,
                "{decision:?} {state:?} {outcome:?} {mode:?}"
            );
        }
        assert_eq!(
            Standing::Waiting.check_conclusion(),
            Some("action_required")
        );
        assert_eq!(Standing::Open.check_conclusion(), None);
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
