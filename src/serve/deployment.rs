//! The work a delivery starts, after it was acknowledged: the run's settings (the server's
//! backend, the repository's default-branch config, the App's installation token), the
//! same flow as `gate` / `record`, and the answer on the deployment's callback.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use super::Server;
use super::github::{DeploymentStatus, IssuesEvent, ProtectionRule, PullRequestEvent, Repository};
use crate::domain::Outcome;
use crate::env::{self, Snapshot, Vars};
use crate::flow::change::ChangeRequest;
use crate::flow::gate::GateRequest;
use crate::flow::record::RecordRequest;
use crate::flow::{self, Ctx, Exit, Progress, Waiting};
use crate::forge::{self, Forge, render};
use crate::http::{Budget, HttpClient};
use crate::itsm::{self, PendingWait};
use crate::pipeline::default_config;
use crate::settings::Settings;

/// What one delivery is about: enough to build its run's settings.
struct Delivery<'a> {
    event: &'static str,
    repository: &'a Repository,
    sha: &'a str,
    git_ref: Option<&'a str>,
    environment: &'a str,
    installation: u64,
    /// The workflow run (from the callback URL), for the run's link.
    run_id: Option<&'a str>,
    payload: Arc<str>,
}

/// The server's variables a delivery's run keeps: its backend and secrets, the API base,
/// logging. What a CI job would set (`GITHUB_*`, `CI_*`, inputs) is the delivery's to say,
/// and the server's own GitHub credentials are not a repository's token.
pub(super) fn server_own(name: &str) -> bool {
    if name == env::GITHUB_API_URL || name == env::GITHUB_SERVER_URL {
        return true;
    }
    let ci = name.starts_with("GITHUB_")
        || name.starts_with("CI_")
        || name.starts_with("INPUT_")
        || name == env::GITLAB_CI
        || name == env::GITLAB_USER_LOGIN;
    let per_run = [
        env::GITHUB_APP_ID,
        env::GITHUB_APP_PRIVATE_KEY,
        env::CHANGEGATE_GITHUB_TOKEN,
        env::WEBHOOK_SECRET,
        env::GITLAB_WEBHOOK_TOKEN,
        env::ENVIRONMENT,
        env::SERVICE,
        env::CONFIG,
        env::TESTS_PASSED,
        env::REVIEWED,
        env::DOTENV,
    ];
    !ci && !per_run.contains(&name)
}

/// The delivery's run environment: a GitHub Actions job of the deployment's commit, as the
/// pipeline step would see it, with the payload as its event.
fn run_env(server: &Server, d: &Delivery<'_>) -> Snapshot {
    let repo = &d.repository.full_name;
    let mut run = server
        .env
        .clone()
        .retain(server_own)
        .with(env::GITHUB_ACTIONS, "true")
        .with(env::GITHUB_REPOSITORY, repo.as_str())
        .with(env::GITHUB_SHA, d.sha)
        .with(env::GITHUB_EVENT_NAME, d.event);
    if let Some(git_ref) = d.git_ref {
        run = run.with(env::GITHUB_REF_NAME, git_ref);
    }
    if server.env.get(env::GITHUB_SERVER_URL).is_none()
        && let Some(web) = d
            .repository
            .html_url
            .as_deref()
            .and_then(|u| u.strip_suffix(&format!("/{repo}")))
    {
        run = run.with(env::GITHUB_SERVER_URL, web);
    }
    if let Some(id) = d.run_id {
        run = run.with(env::GITHUB_RUN_ID, id);
    }
    run.with_event(&format!("the {} delivery", d.event), d.payload.clone())
}

/// The workflow run of a callback URL (`.../actions/runs/{id}/deployment_protection_rule`).
fn run_id(callback: &str) -> Option<&str> {
    let (_, rest) = callback.split_once("/actions/runs/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// The installation token for the delivery's repository.
async fn token(server: &Server, d: &Delivery<'_>) -> Result<SecretString> {
    let name = d
        .repository
        .full_name
        .split_once('/')
        .map(|(_, name)| name)
        .context("the payload's repository.full_name is not owner/name")?;
    let budget = Budget::default();
    let http = HttpClient::new("GitHub", &budget)?;
    let app = server
        .app
        .as_ref()
        .context("this server has no GitHub App (CHANGEGATE_GITHUB_APP_ID)")?;
    forge::installation_token(&http, &server.api_url, app, d.installation, name)
        .await
        .context("cannot act as the GitHub App on this repository")
}

/// The delivery's run settings: the server's flags and backend, the repository's
/// default-branch config, the environment the deployment is for, the installation token.
async fn settings(server: &Server, d: &Delivery<'_>, token: &SecretString) -> Result<Settings> {
    let env = run_env(server, d);
    let early = Budget::default();
    let governing = default_config::github_default_branch_config(
        &env,
        &d.repository.default_branch,
        token,
        &early,
    )
    .await?;
    let mut args = server.global.clone();
    args.config = None;
    args.environment = Some(d.environment.to_string());
    args.service = None;
    args.mode = None;
    args.github_token = None;
    args.dotenv = None;
    args.backend = Some(server.settings.backend);
    args.ledger = Some(server.settings.ledger_path.clone());
    let settings = Settings::resolve_with(
        &args,
        &env,
        &server.workdir,
        Some(&governing),
        Some(token.clone()),
    )?;
    settings.budget.absorb(&early);
    Ok(settings)
}

/// Sends `body` to the deployment's callback with the installation token.
async fn answer(
    server: &Server,
    callback: &str,
    token: &SecretString,
    body: &serde_json::Value,
) -> Result<()> {
    let budget = Budget::default();
    let http = HttpClient::new("GitHub", &budget)?;
    forge::github::review_deployment(&http, &server.api_url, token, callback, body).await?;
    Ok(())
}

/// The progress of a gate that waits: each poll goes to the status reporter, and the
/// delivery's turn is given back while a person decides.
struct Reporter {
    polls: tokio::sync::mpsc::UnboundedSender<Waiting>,
    turn: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl Progress for Reporter {
    fn waiting(&self, wait: &Waiting) {
        if let Ok(mut turn) = self.turn.lock() {
            turn.take();
        }
        let _ = self.polls.send(wait.clone());
    }

    fn warning(&self, text: &str) {
        tracing::warn!("{text}");
    }
}

/// What the deployment is told.
pub(super) struct Verdict {
    pub approved: bool,
    pub comment: String,
    /// The decision's metric label (`pre-approved`, `approved`, `rejected`, `blocked`,
    /// `error`).
    pub decision: &'static str,
}

/// A `deployment_protection_rule` delivery, acknowledged and held: decide and call back.
/// The wait is released only once the callback was made; otherwise the next server to
/// start picks it up again.
pub(super) async fn protect(server: Arc<Server>, wait: PendingWait) {
    match protect_inner(&server, &wait).await {
        Ok(()) => {
            let released = match server.waits() {
                Ok(waits) => waits.release(&wait.key).await,
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                server.metrics.backend_error(server.store_service());
                tracing::error!("the callback was made, but its wait could not be released: {e:#}");
            }
        }
        Err(e) => tracing::error!(
            "the deployment could not be answered; its wait stays held in the backend for the \
             next server: {e:#}"
        ),
    }
}

async fn protect_inner(server: &Server, wait: &PendingWait) -> Result<()> {
    let turn = server
        .turns
        .clone()
        .acquire_owned()
        .await
        .context("the server is stopping")?;
    let payload: Arc<str> = Arc::from(wait.payload.as_str());
    let rule: ProtectionRule = serde_json::from_str(&payload)
        .context("the held deployment_protection_rule payload cannot be read")?;
    let callback = rule.deployment_callback_url.as_str();
    let d = Delivery {
        event: "deployment_protection_rule",
        repository: &rule.repository,
        sha: &rule.deployment.sha,
        git_ref: rule.deployment.git_ref.as_deref(),
        environment: &rule.environment,
        installation: rule.installation.id,
        run_id: run_id(callback),
        payload: payload.clone(),
    };
    // Without the token nothing can be answered: the wait stays held.
    let token = token(server, &d).await?;
    let started = Instant::now();
    let verdict = match decide(server, &d, &token, callback, wait.since, turn).await {
        Ok(verdict) => verdict,
        Err(e) => {
            tracing::error!(repository = %d.repository.full_name, "no decision, so the deployment is rejected: {e:#}");
            Verdict {
                approved: false,
                comment: render::deployment_failed(&format!("{e:#}")),
                decision: "error",
            }
        }
    };
    server.metrics.decision(verdict.decision);
    let body = json!({
        "environment_name": rule.environment,
        "state": if verdict.approved { "approved" } else { "rejected" },
        "comment": verdict.comment,
    });
    // A server that started while another held this deployment resumed it too: the first
    // to claim the answer gives it, so GitHub is called back once (at most once: a server
    // that fails after its claim leaves the deployment waiting, which deploys nothing).
    // The claim is of this wait (its key and when it was taken): a re-run of the workflow
    // asks again on the same callback URL and is answered again.
    let answer_id = format!("{} {}", wait.key, wait.since.timestamp());
    match claim(server, "github-answer", &answer_id).await {
        None => bail!("cannot claim the answer in the backend"),
        Some(false) => {
            tracing::info!(
                repository = %d.repository.full_name,
                environment = %rule.environment,
                "another server answers this deployment"
            );
            return Ok(());
        }
        Some(true) => {}
    }
    let sent = answer(server, callback, &token, &body).await;
    let kind = if verdict.approved {
        "approved"
    } else {
        "rejected"
    };
    server
        .metrics
        .callback(kind, if sent.is_ok() { "ok" } else { "failed" });
    sent?;
    if verdict.decision == "approved" || verdict.decision == "rejected" {
        server
            .metrics
            .approval_waited(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        repository = %d.repository.full_name,
        environment = %rule.environment,
        state = kind,
        "deployment answered"
    );
    Ok(())
}

/// Runs the gate flow for the deployment; while it waits for a person, one status report
/// says so on the deployment.
async fn decide(
    server: &Server,
    d: &Delivery<'_>,
    token: &SecretString,
    callback: &str,
    since: DateTime<Utc>,
    turn: OwnedSemaphorePermit,
) -> Result<Verdict> {
    let settings = settings(server, d, token).await?;
    gate(server, &settings, since, turn, |wait| async move {
        let body = json!({
            "environment_name": d.environment,
            "comment": render::deployment_waiting(&wait.change_id, wait.remaining),
        });
        let sent = answer(server, callback, token, &body).await;
        server
            .metrics
            .callback("status-report", if sent.is_ok() { "ok" } else { "failed" });
        if let Err(e) = sent {
            tracing::warn!("cannot post the status report: {e:#}");
        }
    })
    .await
}

/// The one way a server decides a deployment, whichever forge asks: the gate flow on the
/// run's settings, as the step runs it. While it waits for a person the turn is given back,
/// and `first_wait` is told once (GitHub posts a status report, GitLab logs it). The wait
/// for a person ends `approval.timeout` after `since`, when the deployment was first held,
/// however many servers have picked it up since.
pub(super) async fn gate<F, Fut>(
    server: &Server,
    settings: &Settings,
    since: DateTime<Utc>,
    turn: OwnedSemaphorePermit,
    first_wait: F,
) -> Result<Verdict>
where
    F: Fn(Waiting) -> Fut,
    Fut: Future<Output = ()>,
{
    let forge = Forge::new(settings);
    let workdir: &Path = &server.workdir;
    let ctx = Ctx {
        settings,
        workdir,
        forge: &forge,
    };
    let backend = itsm::connect(settings)?;
    let gathered = flow::change::gather(&ctx, backend.as_ref(), &ChangeRequest::default()).await?;
    // Past the timeout, the shortest wait there is: one last read (an approval given while
    // no server ran still counts), then "timed out".
    let held_for = (Utc::now() - since).to_std().unwrap_or_default();
    let request = GateRequest {
        wait: Some(
            settings
                .approval_timeout
                .saturating_sub(held_for)
                .max(std::time::Duration::from_millis(1)),
        ),
        ..GateRequest::default()
    };
    let (polls, mut polled) = tokio::sync::mpsc::unbounded_channel::<Waiting>();
    let gate = async {
        let progress = Reporter {
            polls,
            turn: std::sync::Mutex::new(Some(turn)),
        };
        flow::gate::run(&ctx, backend.as_ref(), gathered, &request, &progress).await
    };
    let report = async {
        let mut waited = false;
        while let Some(wait) = polled.recv().await {
            if !waited {
                waited = true;
                first_wait(wait).await;
            }
        }
        waited
    };
    let (outcome, waited) = tokio::join!(gate, report);
    let outcome = outcome?;
    let mut comment = render::deployment_review(&outcome.report);
    let approved = outcome.exit == Exit::Pass && outcome.failure.is_none();
    if let Some(failure) = &outcome.failure {
        comment = render::deployment_failed(&failure.to_string());
    }
    for warning in &outcome.warnings {
        tracing::warn!("{warning}");
    }
    let decision = match (approved, waited) {
        (true, true) => "approved",
        (true, false) => "pre-approved",
        (false, true) => "rejected",
        (false, false) => "blocked",
    };
    Ok(Verdict {
        approved,
        comment,
        decision,
    })
}

/// Records `outcome` on the change of the run `settings` describe (its commit `sha`), as
/// `record` does: the same flow whichever forge told the server.
pub(super) async fn record_outcome(
    server: &Server,
    settings: &Settings,
    sha: &str,
    outcome: Outcome,
) -> Result<Option<String>> {
    let forge = Forge::new(settings);
    let ctx = Ctx {
        settings,
        workdir: &server.workdir,
        forge: &forge,
    };
    let backend = itsm::connect(settings)?;
    let facts = flow::change::facts_without_range(&ctx, Some(sha))?;
    let req = RecordRequest {
        outcome,
        change_id: None,
        notes: None,
    };
    let done = flow::record::run(&ctx, backend.as_ref(), facts, &req).await?;
    for warning in &done.warnings {
        tracing::warn!("{warning}");
    }
    Ok(done.report.change_id.clone())
}

/// A `deployment_status` delivery: the deploy's outcome on its change, as `record` writes it.
pub(super) async fn record(server: Arc<Server>, status: DeploymentStatus, outcome: Outcome) {
    if let Err(e) = record_inner(&server, &status, outcome).await {
        tracing::error!(
            repository = %status.repository.full_name,
            "cannot record the deploy's outcome: {e:#}"
        );
    }
}

async fn record_inner(server: &Server, status: &DeploymentStatus, outcome: Outcome) -> Result<()> {
    let _turn = server
        .turns
        .clone()
        .acquire_owned()
        .await
        .context("the server is stopping")?;
    let environment = status
        .deployment
        .environment
        .as_deref()
        .context("the deployment names no environment")?;
    let payload: Arc<str> = Arc::from(
        serde_json::to_string(&json!({"deployment": {"sha": status.deployment.sha}}))?.as_str(),
    );
    let d = Delivery {
        event: "deployment_status",
        repository: &status.repository,
        sha: &status.deployment.sha,
        git_ref: status.deployment.git_ref.as_deref(),
        environment,
        installation: status.installation.id,
        run_id: None,
        payload,
    };
    let token = token(server, &d).await?;
    let settings = settings(server, &d, &token).await?;
    let change = record_outcome(server, &settings, &status.deployment.sha, outcome).await?;
    tracing::info!(
        repository = %status.repository.full_name,
        change = change.as_deref().unwrap_or("-"),
        outcome = %outcome,
        "deploy outcome recorded"
    );
    Ok(())
}

/// A `pull_request` delivery: `sync` for the pull request's head, as its pipeline would
/// run it, when the repository's config enables it. Failures are logged.
pub(super) async fn sync(server: Arc<Server>, event: PullRequestEvent, payload: Arc<str>) {
    if let Err(e) = sync_inner(&server, &event, payload).await {
        tracing::warn!(
            repository = %event.repository.full_name,
            "tickets not updated: {e:#}"
        );
    }
}

async fn sync_inner(server: &Server, event: &PullRequestEvent, payload: Arc<str>) -> Result<()> {
    let head = &event.pull_request.head;
    let d = Delivery {
        event: "pull_request",
        repository: &event.repository,
        sha: &head.sha,
        git_ref: head.git_ref.as_deref(),
        environment: &server.settings.environment,
        installation: event.installation.id,
        run_id: None,
        payload,
    };
    run_sync(server, &d, Tickets::OfHead(&head.sha)).await
}

/// What a delivery's `sync` looks at.
enum Tickets<'a> {
    /// The pull request of this head commit ([`flow::sync::run`]).
    OfHead(&'a str),
    /// The repository's backlog and sprint ([`flow::sync::run_scan`]).
    Scan,
}

/// `sync` for a delivery, in its turn, when the repository's config enables `[sync]`.
async fn run_sync(server: &Server, d: &Delivery<'_>, tickets: Tickets<'_>) -> Result<()> {
    let _turn = server
        .turns
        .clone()
        .acquire_owned()
        .await
        .context("the server is stopping")?;
    let token = token(server, d).await?;
    let settings = settings(server, d, &token).await?;
    if !settings.file.sync.enabled {
        return Ok(());
    }
    let forge = Forge::new(&settings);
    let ctx = Ctx {
        settings: &settings,
        workdir: &server.workdir,
        forge: &forge,
    };
    let done = match tickets {
        Tickets::OfHead(sha) => flow::sync::run(&ctx, Some(sha)).await?,
        Tickets::Scan => flow::sync::run_scan(&ctx, &d.repository.full_name).await?,
    };
    for warning in &done.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        repository = %d.repository.full_name,
        notes = done.report.lines.len(),
        "tickets synced"
    );
    Ok(())
}

/// An `issues` delivery: the repository's backlog and sprint scanned for tickets
/// ([`flow::sync::run_scan`]), when the repository's config enables `[sync]`. Failures are
/// logged.
pub(super) async fn sync_issues(server: Arc<Server>, event: IssuesEvent, payload: Arc<str>) {
    if let Err(e) = sync_issues_inner(&server, &event, payload).await {
        tracing::warn!(
            repository = %event.repository.full_name,
            "tickets not updated: {e:#}"
        );
    }
}

async fn sync_issues_inner(server: &Server, event: &IssuesEvent, payload: Arc<str>) -> Result<()> {
    // An issue names no commit: the run is one of the default branch.
    let d = Delivery {
        event: "issues",
        repository: &event.repository,
        sha: "",
        git_ref: Some(&event.repository.default_branch),
        environment: &server.settings.environment,
        installation: event.installation.id,
        run_id: None,
        payload,
    };
    run_sync(server, &d, Tickets::Scan).await
}

/// Claims `id` in `space`; `None` when the backend could not be asked.
pub(super) async fn claim(server: &Server, space: &str, id: &str) -> Option<bool> {
    let claimed = match server.waits() {
        Ok(waits) => waits.claim(space, id, Utc::now()).await,
        Err(e) => Err(e),
    };
    match claimed {
        Ok(first) => Some(first),
        Err(e) => {
            server.metrics.backend_error(server.store_service());
            tracing::error!("cannot claim {space} {id} in the backend: {e:#}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{run_id, server_own};
    use crate::env;

    #[test]
    fn the_run_id_comes_from_the_callback_url() {
        assert_eq!(
            run_id(
                "https://api.github.com/repos/o/r/actions/runs/1234567890/deployment_protection_rule"
            ),
            Some("1234567890")
        );
        assert_eq!(
            run_id("https://api.github.com/repos/o/r/actions/runs//x"),
            None
        );
        assert_eq!(run_id("https://api.github.com/repos/o/r"), None);
    }

    #[test]
    fn a_run_keeps_the_servers_backend_but_not_its_credentials_or_ci_variables() {
        assert!(server_own(env::LEDGER));
        assert!(server_own(env::SERVICENOW_PASSWORD));
        assert!(server_own(env::GITHUB_API_URL));
        assert!(!server_own(env::GITHUB_APP_PRIVATE_KEY));
        assert!(!server_own(env::WEBHOOK_SECRET));
        assert!(!server_own(env::GITHUB_TOKEN));
        assert!(!server_own(env::GITHUB_SHA));
        assert!(!server_own(env::CI_COMMIT_SHA));
        assert!(!server_own(env::ENVIRONMENT));
    }
}
