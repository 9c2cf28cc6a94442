//! GitLab deployment approvals: `POST /webhooks/gitlab` (the secret token first, then the
//! hook), and the poll that finds deployments waiting for approval (`status=blocked`) in
//! the projects watched. Each blocked deployment is claimed once in the backend (replicas
//! and restarts share the claim), held until answered, decided by the same flow as the
//! step (same correlation key: project path + environment + sha) and answered with the bot
//! user's approval or rejection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::deployment::{Verdict, gate, record_outcome, server_own};
use super::{READY_WITHIN, Server};
use crate::domain::Outcome;
use crate::env::{self, Snapshot, Vars};
use crate::forge::gitlab::{Approvals, BlockedDeployment, Project};
use crate::forge::render;
use crate::http::{self, Budget, HttpClient};
use crate::itsm::{Admission, PendingWait};
use crate::pipeline::default_config;
use crate::settings::Settings;

/// The forge of a held GitLab deployment ([`PendingWait::forge`]).
pub(super) const FORGE: &str = "gitlab";
/// The forge of a held "project watched" entry: a project that sent a hook, kept in the
/// backend so that every replica, and the next server, polls it too.
const PROJECT: &str = "gitlab-project";

/// `--gitlab-poll`: a human duration, at least one second.
pub(super) fn parse_poll(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text).map(|d| d.max(Duration::from_secs(1)))
}

/// The GitLab side of the server, from its environment.
pub(super) struct Gitlab {
    /// The API root, `<CHANGEGATE_GITLAB_URL>/api/v4`.
    api: String,
    /// The bot user's token: reads the projects, answers the approvals.
    token: SecretString,
    /// What every hook must carry in `X-Gitlab-Token`.
    hook_token: SecretString,
    /// `CHANGEGATE_GITLAB_PROJECTS`: ids or paths watched from the start.
    projects: Vec<String>,
    poll: Duration,
}

impl Gitlab {
    /// `None` when neither `CHANGEGATE_GITLAB_URL` nor the webhook token is set; once one
    /// is, all three (URL, bot token, webhook token) must be.
    pub(super) fn from_env(env: &Snapshot, poll: Duration) -> Result<Option<Gitlab>> {
        let url = env.get(env::GITLAB_URL);
        let hook_token = env.get(env::GITLAB_WEBHOOK_TOKEN);
        if url.is_none() && hook_token.is_none() {
            return Ok(None);
        }
        let (Some(url), Some(hook_token), Some(token)) =
            (url, hook_token, env.get(env::GITLAB_TOKEN))
        else {
            bail!(
                "GitLab deployment approvals need {}, {} (a bot user allowed to approve the \
                 protected environments) and {} (the webhooks' secret token), all three",
                env::GITLAB_URL,
                env::GITLAB_TOKEN,
                env::GITLAB_WEBHOOK_TOKEN
            );
        };
        http::check_base_url(env::GITLAB_URL, &url, "CHANGEGATE_GITLAB_TOKEN", false)?;
        let projects = env
            .get(env::GITLAB_PROJECTS)
            .map(|list| {
                list.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Gitlab {
            api: format!("{}/api/v4", url.trim().trim_end_matches('/')),
            token: SecretString::from(token),
            hook_token: SecretString::from(hook_token),
            projects,
            poll,
        }))
    }

    /// Ready when GitLab answers and takes the bot token (`GET /user`), within
    /// [`READY_WITHIN`]: a probe is not held up by retries.
    pub(super) async fn ready(&self) -> Result<()> {
        let budget = Budget::default();
        let http = HttpClient::new("GitLab", &budget)?;
        let me = Approvals::new(&http, &self.api, self.token.clone());
        match tokio::time::timeout(READY_WITHIN, me.me()).await {
            Ok(answer) => answer.context("GitLab does not take the bot token"),
            Err(_) => bail!("GitLab did not answer within {}s", READY_WITHIN.as_secs()),
        }
    }
}

/// Whether `given` is the webhook token: both hashed first, so the comparison takes the
/// same time whatever their lengths and wherever they differ.
fn token_ok(expected: &SecretString, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    let want = Sha256::digest(expected.expose_secret().as_bytes());
    let got = Sha256::digest(given.as_bytes());
    bool::from(want.as_slice().ct_eq(got.as_slice()))
}

/// What became of a hook: its HTTP answer and its metric label.
enum Answer {
    Unauthorized,
    BadRequest(String),
    Accepted,
    Duplicate,
    Ignored,
    Unavailable,
}

impl Answer {
    fn label(&self) -> &'static str {
        match self {
            Answer::Unauthorized => "unauthorized",
            Answer::BadRequest(_) => "bad-request",
            Answer::Accepted => "accepted",
            Answer::Duplicate => "duplicate",
            Answer::Ignored => "ignored",
            Answer::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Unauthorized => (StatusCode::UNAUTHORIZED, "bad token\n").into_response(),
            Answer::BadRequest(why) => {
                (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
            }
            Answer::Accepted => (StatusCode::ACCEPTED, "accepted\n").into_response(),
            Answer::Duplicate => {
                (StatusCode::OK, "seen before: nothing done again\n").into_response()
            }
            Answer::Ignored => (StatusCode::ACCEPTED, "ignored\n").into_response(),
            Answer::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the backend cannot be reached\n",
            )
                .into_response(),
        }
    }
}

/// `X-Gitlab-Event`, as a bounded metric label.
fn event_label(event: &str) -> &'static str {
    match event {
        "Deployment Hook" => "deployment",
        "Job Hook" => "job",
        "Merge Request Hook" => "merge_request",
        "Issue Hook" => "issue",
        _ => "other",
    }
}

/// The part of a deployment or job hook changegate reads.
#[derive(Debug, Deserialize)]
struct Hook {
    object_kind: String,
    #[serde(default)]
    project: Option<HookProject>,
    #[serde(default)]
    project_id: Option<u64>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    deployment_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct HookProject {
    id: u64,
}

/// The part of a merge request or issue hook changegate reads (api-contracts-2.md §3.8).
#[derive(Debug, Deserialize)]
struct WorkHook {
    object_kind: String,
    project: HookProject,
    object_attributes: WorkAttributes,
}

#[derive(Debug, Deserialize)]
struct WorkAttributes {
    #[serde(default)]
    iid: Option<u64>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source_branch: Option<String>,
    #[serde(default)]
    target_branch: Option<String>,
    #[serde(default)]
    last_commit: Option<LastCommit>,
}

#[derive(Debug, Deserialize)]
struct LastCommit {
    id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

pub(super) async fn webhook(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = headers
        .get("x-gitlab-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let label = event_label(event);
    let answer = handle(&server, &headers, &body).await;
    server.metrics.webhook("gitlab", label, answer.label());
    tracing::info!(event = label, result = answer.label(), "GitLab webhook");
    answer.into_response()
}

async fn handle(server: &Arc<Server>, headers: &HeaderMap, body: &[u8]) -> Answer {
    // Before anything else: a hook without the token is not read at all.
    let Some(gitlab) = &server.gitlab else {
        return Answer::Unauthorized;
    };
    let given = headers.get("x-gitlab-token").and_then(|v| v.to_str().ok());
    if !token_ok(&gitlab.hook_token, given) {
        return Answer::Unauthorized;
    }
    let hook: Hook = match serde_json::from_slice(body) {
        Ok(hook) => hook,
        Err(e) => return Answer::BadRequest(format!("not a GitLab hook payload: {e}")),
    };
    if hook.object_kind == "merge_request" || hook.object_kind == "issue" {
        return work_hook(server, headers, body).await;
    }
    if hook.object_kind != "deployment" && hook.object_kind != "build" {
        return Answer::Ignored;
    }
    let Some(project) = hook.project.as_ref().map(|p| p.id).or(hook.project_id) else {
        return Answer::BadRequest("the hook names no project".into());
    };
    // Watched from now on, by every replica: held in the backend.
    let watched = PendingWait {
        key: format!("{PROJECT} {project}"),
        forge: PROJECT.into(),
        payload: project.to_string(),
        since: Utc::now(),
    };
    let held = match server.waits() {
        Ok(waits) => waits.hold(&watched).await,
        Err(e) => Err(e),
    };
    if let Err(e) = held {
        server.metrics.backend_error(server.store_service());
        tracing::error!("cannot keep the project watched in the backend: {e:#}");
        return Answer::Unavailable;
    }
    let outcome = match (hook.object_kind.as_str(), hook.status.as_deref()) {
        // `success`, `failed`, `canceled`; `running` (and anything else) records nothing.
        ("deployment", Some(status)) => Outcome::from_word(status),
        _ => None,
    };
    let mut answer = Answer::Accepted;
    if let (Some(outcome), Some(deployment)) = (outcome, hook.deployment_id) {
        let key = format!("{project}/{deployment}/{outcome}");
        match super::deployment::claim(server, "gitlab-outcome", &key).await {
            None => return Answer::Unavailable,
            Some(false) => answer = Answer::Duplicate,
            Some(true) => {
                server
                    .tasks
                    .spawn(record(server.clone(), project, deployment, outcome));
            }
        }
    }
    // A deployment or job hook: look for blocked deployments at once.
    server
        .tasks
        .spawn(poll_project(server.clone(), project.to_string()));
    answer
}

/// A merge request opened or reopened (its tickets hear it was opened), or an issue opened,
/// updated or reopened (the project's backlog and sprint scanned): `sync`, when the
/// project's default-branch config says `[sync] enabled`. A hook GitLab delivers again
/// (the same `Idempotency-Key` or event UUID) is taken once; the notes' markers keep any
/// other repeat from writing twice.
async fn work_hook(server: &Arc<Server>, headers: &HeaderMap, body: &[u8]) -> Answer {
    let hook: WorkHook = match serde_json::from_slice(body) {
        Ok(hook) => hook,
        Err(e) => return Answer::BadRequest(format!("not a merge request or issue hook: {e}")),
    };
    let action = hook.object_attributes.action.as_deref().unwrap_or_default();
    let acts = match hook.object_kind.as_str() {
        "merge_request" => {
            matches!(action, "open" | "reopen") && hook.object_attributes.last_commit.is_some()
        }
        _ => matches!(action, "open" | "update" | "reopen"),
    };
    if !acts {
        return Answer::Ignored;
    }
    let delivery = ["idempotency-key", "x-gitlab-event-uuid"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter(|d| !d.trim().is_empty());
    if let Some(delivery) = delivery {
        let key: String = delivery.chars().take(128).collect();
        match super::deployment::claim(server, "gitlab-delivery", &key).await {
            None => return Answer::Unavailable,
            Some(false) => return Answer::Duplicate,
            Some(true) => {}
        }
    }
    server.tasks.spawn(sync_work(server.clone(), hook));
    Answer::Accepted
}

async fn sync_work(server: Arc<Server>, hook: WorkHook) {
    if let Err(e) = sync_work_inner(&server, &hook).await {
        tracing::warn!(project = hook.project.id, "tickets not updated: {e:#}");
    }
}

async fn sync_work_inner(server: &Server, hook: &WorkHook) -> Result<()> {
    let _turn = server
        .turns
        .clone()
        .acquire_owned()
        .await
        .context("the server is stopping")?;
    let gitlab = server.gitlab.as_ref().context("GitLab is not configured")?;
    let budget = Budget::default();
    let http = HttpClient::new("GitLab", &budget)?;
    let api = Approvals::new(&http, &gitlab.api, gitlab.token.clone());
    let project = api.project(&hook.project.id.to_string()).await?;
    let branch = project
        .default_branch
        .clone()
        .context("the project has no default branch, so no config governs it")?;
    let a = &hook.object_attributes;
    let merge_request = hook.object_kind == "merge_request";
    let sha = a.last_commit.as_ref().map(|c| c.id.as_str());
    let mut env = project_env(server, gitlab, &project).with(
        env::CI_COMMIT_REF_NAME,
        a.source_branch.as_deref().unwrap_or(branch.as_str()),
    );
    if let Some(sha) = sha.filter(|_| merge_request) {
        env = env.with(env::CI_COMMIT_SHA, sha);
    }
    if merge_request && let Some(iid) = a.iid {
        env = env.with(env::CI_MERGE_REQUEST_IID, iid.to_string()).with(
            env::CI_MERGE_REQUEST_TITLE,
            a.title.as_deref().unwrap_or_default(),
        );
        let optional = [
            (env::CI_MERGE_REQUEST_DESCRIPTION, a.description.as_deref()),
            (
                env::CI_MERGE_REQUEST_SOURCE_BRANCH_NAME,
                a.source_branch.as_deref(),
            ),
            (
                env::CI_MERGE_REQUEST_TARGET_BRANCH_NAME,
                a.target_branch.as_deref(),
            ),
            (env::CI_MERGE_REQUEST_SOURCE_BRANCH_SHA, sha),
            (
                env::CI_COMMIT_TITLE,
                a.last_commit.as_ref().and_then(|c| c.title.as_deref()),
            ),
            (
                env::CI_COMMIT_MESSAGE,
                a.last_commit.as_ref().and_then(|c| c.message.as_deref()),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                env = env.with(name, value);
            }
        }
    }
    let early = Budget::default();
    let governing = default_config::gitlab_default_branch_config(&env, &branch, &early).await?;
    let settings = resolve(server, &env, &governing, &server.settings.environment)?;
    settings.budget.absorb(&early);
    if !settings.file.sync.enabled {
        return Ok(());
    }
    let forge = crate::forge::Forge::new(&settings);
    let ctx = crate::flow::Ctx {
        settings: &settings,
        workdir: &server.workdir,
        forge: &forge,
    };
    let done = if merge_request {
        crate::flow::sync::run(&ctx, sha).await?
    } else {
        crate::flow::sync::run_scan(&ctx, &project.path_with_namespace).await?
    };
    for warning in &done.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        project = %project.path_with_namespace,
        notes = done.report.lines.len(),
        "tickets synced"
    );
    Ok(())
}

/// Polls every project watched each `--gitlab-poll`, until the server stops.
pub(super) async fn poll_forever(server: Arc<Server>) {
    let Some(gitlab) = &server.gitlab else { return };
    loop {
        let mut projects = gitlab.projects.clone();
        match server.waits() {
            Ok(waits) => match waits.held().await {
                Ok(held) => projects.extend(
                    held.into_iter()
                        .filter(|w| w.forge == PROJECT)
                        .map(|w| w.payload),
                ),
                Err(e) => {
                    server.metrics.backend_error(server.store_service());
                    tracing::error!("cannot read the projects watched: {e:#}");
                }
            },
            Err(e) => tracing::error!("{e:#}"),
        }
        projects.sort();
        projects.dedup();
        for project in projects {
            poll_project(server.clone(), project).await;
        }
        tokio::select! {
            () = server.stop.cancelled() => return,
            () = tokio::time::sleep(gitlab.poll) => {}
        }
    }
}

/// Finds the project's blocked deployments and takes each one not taken before.
async fn poll_project(server: Arc<Server>, project: String) {
    if let Err(e) = poll_inner(&server, &project).await {
        server.metrics.backend_error("gitlab");
        tracing::warn!(project = %project, "cannot list the deployments waiting for approval: {e:#}");
    }
}

async fn poll_inner(server: &Arc<Server>, project: &str) -> Result<()> {
    let gitlab = server.gitlab.as_ref().context("GitLab is not configured")?;
    let budget = Budget::default();
    let http = HttpClient::new("GitLab", &budget)?;
    let api = Approvals::new(&http, &gitlab.api, gitlab.token.clone());
    let project = api.project(project).await?;
    for deployment in api.blocked(project.id).await? {
        take(server, &project, deployment).await;
    }
    Ok(())
}

/// What a held GitLab deployment keeps: enough to decide and answer after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct Held {
    project: Project,
    deployment: BlockedDeployment,
}

/// Takes a blocked deployment: claimed and held in one write ([`Waits::admit`], as a GitHub
/// delivery is), so that a poll and a hook, or two replicas, seeing it at once make one
/// change and one answer, and a server stopping between the two leaves nothing half-taken.
///
/// [`Waits::admit`]: crate::itsm::Waits::admit
async fn take(server: &Arc<Server>, project: &Project, deployment: BlockedDeployment) {
    let key = format!("{FORGE} {}/{}", project.id, deployment.id);
    let payload = match serde_json::to_string(&Held {
        project: project.clone(),
        deployment,
    }) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!("cannot keep the deployment: {e}");
            return;
        }
    };
    let wait = PendingWait {
        key,
        forge: FORGE.into(),
        payload,
        since: Utc::now(),
    };
    let admitted = match server.waits() {
        Ok(waits) => {
            waits
                .admit("gitlab-blocked", &wait.key, "gitlab-deployment", &wait)
                .await
        }
        Err(e) => Err(e),
    };
    match admitted {
        Ok(Admission::Taken) => {
            server.tasks.spawn(protect(server.clone(), wait));
        }
        Ok(Admission::SeenDelivery | Admission::SeenDeployment) => {}
        Err(e) => {
            server.metrics.backend_error(server.store_service());
            tracing::error!(
                "cannot take the blocked deployment into the backend (the next poll tries again): {e:#}"
            );
        }
    }
}

/// A blocked deployment, claimed and held: decide and answer. The wait is released only
/// once the answer was posted (or the deployment no longer waits); otherwise the next
/// server to start picks it up again.
pub(super) async fn protect(server: Arc<Server>, wait: PendingWait) {
    match protect_inner(&server, &wait).await {
        Ok(()) => {
            let released = match server.waits() {
                Ok(waits) => waits.release(&wait.key).await,
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                server.metrics.backend_error(server.store_service());
                tracing::error!(
                    "the approval was posted, but its wait could not be released: {e:#}"
                );
            }
        }
        Err(e) => tracing::error!(
            "the GitLab deployment could not be answered; its wait stays held in the backend \
             for the next server: {e:#}"
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
    let gitlab = server.gitlab.as_ref().context("GitLab is not configured")?;
    let held: Held =
        serde_json::from_str(&wait.payload).context("the held GitLab deployment cannot be read")?;
    let project = &held.project.path_with_namespace;
    let environment = held.deployment.environment.name.as_str();
    let started = Instant::now();
    let decided = async {
        let settings = settings(server, gitlab, &held).await?;
        gate(server, &settings, wait.since, turn, |wait| async move {
            tracing::info!(
                project = %project,
                environment = %environment,
                change = %wait.change_id,
                "the GitLab deployment waits for approval ({}s left)",
                wait.remaining.as_secs()
            );
        })
        .await
    };
    let verdict = match decided.await {
        Ok(verdict) => verdict,
        Err(e) => {
            tracing::error!(project = %project, "no decision, so the deployment is rejected: {e:#}");
            Verdict {
                approved: false,
                comment: render::deployment_failed(&format!("{e:#}")),
                decision: "error",
            }
        }
    };
    server.metrics.decision(verdict.decision);
    let status = if verdict.approved {
        "approved"
    } else {
        "rejected"
    };
    let budget = Budget::default();
    let http = HttpClient::new("GitLab", &budget)?;
    let api = Approvals::new(&http, &gitlab.api, gitlab.token.clone());
    // A person may have answered, or the pipeline been cancelled, while the gate decided:
    // only a deployment still blocked is answered.
    let now = match api.deployment(held.project.id, held.deployment.id).await {
        Ok(now) => now,
        Err(e) => {
            server.metrics.backend_error("gitlab");
            return Err(e).context("cannot read the deployment before answering it");
        }
    };
    if now.status != "blocked" {
        server.metrics.approval(FORGE, status, "no-longer-blocked");
        tracing::info!(
            project = %project,
            deployment = held.deployment.id,
            status = %now.status,
            "the GitLab deployment no longer waits for approval: not answered"
        );
        return Ok(());
    }
    // A server that started while another held this deployment resumed it too: the first
    // to claim the answer gives it, so GitLab is answered once (at most once: a server that
    // fails after its claim leaves the deployment blocked, which deploys nothing).
    match super::deployment::claim(server, "gitlab-answer", &wait.key).await {
        None => bail!("cannot claim the answer in the backend"),
        Some(false) => {
            tracing::info!(
                project = %project,
                deployment = held.deployment.id,
                "another server answers this GitLab deployment"
            );
            return Ok(());
        }
        Some(true) => {}
    }
    let sent = api
        .answer(
            held.project.id,
            held.deployment.id,
            verdict.approved,
            &verdict.comment,
        )
        .await;
    server
        .metrics
        .approval(FORGE, status, if sent.is_ok() { "ok" } else { "failed" });
    if sent.is_err() {
        server.metrics.backend_error("gitlab");
    }
    sent.context("cannot answer the deployment's approval")?;
    if verdict.decision == "approved" || verdict.decision == "rejected" {
        server
            .metrics
            .approval_waited(started.elapsed().as_secs_f64());
    }
    tracing::info!(
        project = %project,
        environment = %environment,
        deployment = held.deployment.id,
        state = status,
        "GitLab deployment answered"
    );
    Ok(())
}

/// The deployment's run environment: a GitLab CI job of the deployment's commit, as the
/// pipeline step would see it (the same project path, so the same correlation key).
fn run_env(server: &Server, gitlab: &Gitlab, project: &Project, d: &BlockedDeployment) -> Snapshot {
    let mut run = project_env(server, gitlab, project)
        .with(env::CI_COMMIT_SHA, d.sha.as_str())
        .with(env::CI_ENVIRONMENT_NAME, d.environment.name.as_str());
    if let Some(git_ref) = &d.git_ref {
        run = run.with(env::CI_COMMIT_REF_NAME, git_ref.as_str());
    }
    if let Some(url) = d
        .deployable
        .as_ref()
        .and_then(|j| j.pipeline.as_ref())
        .and_then(|p| p.web_url.as_deref())
    {
        run = run.with(env::CI_PIPELINE_URL, url);
    }
    // The commit as the deploy job's `CI_COMMIT_*` name it: its author (who may not approve
    // the change), its title and message (the work items it names).
    if let Some(commit) = d.deployable.as_ref().and_then(|j| j.commit.as_ref()) {
        if let (Some(name), Some(email)) = (&commit.author_name, &commit.author_email) {
            run = run.with(env::CI_COMMIT_AUTHOR, format!("{name} <{email}>"));
        }
        if let Some(title) = &commit.title {
            run = run.with(env::CI_COMMIT_TITLE, title.as_str());
        }
        if let Some(message) = &commit.message {
            run = run.with(env::CI_COMMIT_MESSAGE, message.as_str());
        }
        if let Some(at) = &commit.created_at {
            run = run.with(env::CI_COMMIT_TIMESTAMP, at.as_str());
        }
    }
    if let Some(user) = d.user.as_ref().and_then(|u| u.username.as_deref()) {
        run = run.with(env::GITLAB_USER_LOGIN, user);
    }
    run
}

/// A GitLab CI job of `project`, as far as the project names it: the server's own variables
/// kept, the CI ones the project's.
fn project_env(server: &Server, gitlab: &Gitlab, project: &Project) -> Snapshot {
    let mut run = server
        .env
        .clone()
        .retain(server_own)
        .with(env::GITLAB_CI, "true")
        .with(env::CI_API_V4_URL, gitlab.api.as_str())
        .with(env::CI_PROJECT_ID, project.id.to_string())
        .with(env::CI_PROJECT_PATH, project.path_with_namespace.as_str());
    if let Some(branch) = &project.default_branch {
        run = run.with(env::CI_DEFAULT_BRANCH, branch.as_str());
    }
    if let Some(web) = &project.web_url {
        run = run.with(env::CI_PROJECT_URL, web.as_str());
    }
    run
}

/// The run's settings from its environment and governing config: the server's flags and
/// backend, `environment`.
fn resolve(
    server: &Server,
    env: &Snapshot,
    governing: &default_config::Governing,
    environment: &str,
) -> Result<Settings> {
    let mut args = server.global.clone();
    args.config = None;
    args.environment = Some(environment.to_string());
    args.service = None;
    args.mode = None;
    args.github_token = None;
    args.dotenv = None;
    args.backend = Some(server.settings.backend);
    args.ledger = Some(server.settings.ledger_path.clone());
    Settings::resolve_with(&args, env, &server.workdir, Some(governing), None)
}

/// The run's settings: the server's flags and backend, the project's default-branch
/// config, the deployment's environment.
async fn settings(server: &Server, gitlab: &Gitlab, held: &Held) -> Result<Settings> {
    let env = run_env(server, gitlab, &held.project, &held.deployment);
    let branch = held
        .project
        .default_branch
        .as_deref()
        .context("the project has no default branch, so no config governs it")?;
    let early = Budget::default();
    let governing = default_config::gitlab_default_branch_config(&env, branch, &early).await?;
    let settings = resolve(server, &env, &governing, &held.deployment.environment.name)?;
    settings.budget.absorb(&early);
    Ok(settings)
}

/// A deployment hook with a final status: the deploy's outcome on its change, as `record`
/// writes it.
async fn record(server: Arc<Server>, project: u64, deployment: u64, outcome: Outcome) {
    if let Err(e) = record_inner(&server, project, deployment, outcome).await {
        tracing::error!(
            project,
            deployment,
            "cannot record the deploy's outcome: {e:#}"
        );
    }
}

async fn record_inner(
    server: &Server,
    project: u64,
    deployment: u64,
    outcome: Outcome,
) -> Result<()> {
    let _turn = server
        .turns
        .clone()
        .acquire_owned()
        .await
        .context("the server is stopping")?;
    let gitlab = server.gitlab.as_ref().context("GitLab is not configured")?;
    let budget = Budget::default();
    let http = HttpClient::new("GitLab", &budget)?;
    let api = Approvals::new(&http, &gitlab.api, gitlab.token.clone());
    // The hook names only a short sha: the deployment itself is asked.
    let asked = async {
        Ok::<_, anyhow::Error>(Held {
            project: api.project(&project.to_string()).await?,
            deployment: api.deployment(project, deployment).await?,
        })
    };
    let held = match asked.await {
        Ok(held) => held,
        Err(e) => {
            server.metrics.backend_error("gitlab");
            return Err(e);
        }
    };
    let settings = settings(server, gitlab, &held).await?;
    let change = record_outcome(server, &settings, &held.deployment.sha, outcome).await?;
    tracing::info!(
        project = %held.project.path_with_namespace,
        change = change.as_deref().unwrap_or("-"),
        outcome = %outcome,
        "deploy outcome recorded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{event_label, token_ok};
    use secrecy::SecretString;

    #[test]
    fn only_the_exact_token_is_taken() {
        let secret = SecretString::from("s3cret-token");
        assert!(token_ok(&secret, Some("s3cret-token")));
        assert!(!token_ok(&secret, Some("s3cret-toke")));
        assert!(!token_ok(&secret, Some("s3cret-token ")));
        assert!(!token_ok(&secret, Some("")));
        assert!(!token_ok(&secret, None));
    }

    #[test]
    fn events_are_labelled_from_a_bounded_set() {
        assert_eq!(event_label("Deployment Hook"), "deployment");
        assert_eq!(event_label("Job Hook"), "job");
        assert_eq!(event_label("Push Hook"), "other");
        assert_eq!(event_label("anything\nelse"), "other");
    }
}
