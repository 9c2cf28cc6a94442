//! `POST /webhooks/github`: the signature first, then the delivery id, then the event.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{Server, deployment, signature};
use crate::domain::Outcome;
use crate::forge::github::callback_allowed;
use crate::itsm::{Admission, PendingWait};

/// The part of a `deployment_protection_rule` delivery changegate reads.
#[derive(Debug, Deserialize)]
pub(super) struct ProtectionRule {
    pub action: String,
    pub environment: String,
    pub deployment_callback_url: String,
    pub deployment: Deployment,
    pub repository: Repository,
    pub installation: Installation,
}

/// The part of a `deployment_status` delivery changegate reads.
#[derive(Debug, Deserialize)]
pub(super) struct DeploymentStatus {
    pub deployment_status: StatusBody,
    pub deployment: Deployment,
    pub repository: Repository,
    pub installation: Installation,
}

#[derive(Debug, Deserialize)]
pub(super) struct StatusBody {
    pub state: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct Deployment {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub environment: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Repository {
    pub full_name: String,
    pub default_branch: String,
    pub html_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Installation {
    pub id: u64,
}

/// The part of a `pull_request` delivery changegate reads (the whole payload becomes the
/// run's event, as a pull-request pipeline sees it).
#[derive(Debug, Deserialize)]
pub(super) struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequestBody,
    pub repository: Repository,
    pub installation: Installation,
}

#[derive(Debug, Deserialize)]
pub(super) struct PullRequestBody {
    #[serde(default)]
    pub merged: bool,
    pub head: Head,
}

#[derive(Debug, Deserialize)]
pub(super) struct Head {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
}

/// The part of an `issues` delivery changegate reads.
#[derive(Debug, Deserialize)]
pub(super) struct IssuesEvent {
    pub action: String,
    pub issue: IssueBody,
    pub repository: Repository,
    pub installation: Installation,
}

#[derive(Debug, Deserialize)]
pub(super) struct IssueBody {
    /// Present when the issue is a pull request (its own steps come by `pull_request`).
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

/// What became of a delivery: its HTTP answer and its metric label.
enum Answer {
    /// No signature, or a wrong one: nothing was done.
    Unauthorized,
    /// Not a delivery changegate can read.
    BadRequest(String),
    /// A delivery (or deployment) seen before: nothing done again.
    Duplicate,
    Pong,
    /// Taken: the work goes on in the background.
    Accepted,
    /// An event (or action, or state) changegate does not act on.
    Ignored,
    /// Read, and refused (a callback outside the API).
    Refused(String),
    /// The backend could not be asked: nothing was taken, GitHub may deliver again.
    Unavailable,
}

impl Answer {
    fn label(&self) -> &'static str {
        match self {
            Answer::Unauthorized => "unauthorized",
            Answer::BadRequest(_) => "bad-request",
            Answer::Duplicate => "duplicate",
            Answer::Pong => "pong",
            Answer::Accepted => "accepted",
            Answer::Ignored => "ignored",
            Answer::Refused(_) => "refused",
            Answer::Unavailable => "unavailable",
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Unauthorized => (StatusCode::UNAUTHORIZED, "bad signature\n").into_response(),
            Answer::BadRequest(why) => {
                (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
            }
            Answer::Duplicate => {
                (StatusCode::OK, "seen before: nothing done again\n").into_response()
            }
            Answer::Pong => (StatusCode::OK, "pong\n").into_response(),
            Answer::Accepted => (StatusCode::ACCEPTED, "accepted\n").into_response(),
            Answer::Ignored => (StatusCode::ACCEPTED, "ignored\n").into_response(),
            Answer::Refused(why) => {
                (StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")).into_response()
            }
            Answer::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the backend cannot be reached\n",
            )
                .into_response(),
        }
    }
}

/// The events counted by name; any other is `other` (the label set stays bounded).
fn event_label(event: &str) -> &'static str {
    match event {
        "deployment_protection_rule" => "deployment_protection_rule",
        "deployment_status" => "deployment_status",
        "pull_request" => "pull_request",
        "issues" => "issues",
        "ping" => "ping",
        _ => "other",
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) async fn webhook(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let event = header(&headers, "x-github-event")
        .unwrap_or_default()
        .to_string();
    let answer = handle(&server, &headers, &body, &event).await;
    server
        .metrics
        .webhook("github", event_label(&event), answer.label());
    let delivery = header(&headers, "x-github-delivery").unwrap_or_default();
    tracing::info!(
        event = event_label(&event),
        delivery = %delivery.chars().take(64).collect::<String>(),
        result = answer.label(),
        "GitHub webhook"
    );
    answer.into_response()
}

async fn handle(server: &Arc<Server>, headers: &HeaderMap, body: &[u8], event: &str) -> Answer {
    // Before anything else: an unsigned body is not read at all (and a server without a
    // GitHub secret takes no GitHub delivery).
    let Some(secret) = &server.secret else {
        return Answer::Unauthorized;
    };
    let signed = signature::valid(
        secret.expose_secret().as_bytes(),
        body,
        header(headers, "x-hub-signature-256"),
    );
    if !signed {
        return Answer::Unauthorized;
    }
    let Some(delivery) = header(headers, "x-github-delivery").filter(|d| !d.trim().is_empty())
    else {
        return Answer::BadRequest("no X-GitHub-Delivery header".into());
    };
    match event {
        "ping" => Answer::Pong,
        "deployment_protection_rule" => protection_rule(server, delivery, body).await,
        "deployment_status" => deployment_status(server, delivery, body).await,
        "pull_request" => pull_request(server, delivery, body).await,
        "issues" => issues(server, delivery, body).await,
        _ => Answer::Ignored,
    }
}

/// Claims `id` in `space`; `None` when the backend could not be asked.
async fn claim(server: &Server, space: &str, id: &str) -> Option<bool> {
    let waits = server.waits().ok()?;
    match waits.claim(space, id, Utc::now()).await {
        Ok(first) => Some(first),
        Err(e) => {
            server.metrics.backend_error(server.store_service());
            tracing::error!("cannot claim {space} {id} in the backend: {e:#}");
            None
        }
    }
}

async fn protection_rule(server: &Arc<Server>, delivery: &str, body: &[u8]) -> Answer {
    let Ok(text) = std::str::from_utf8(body) else {
        return Answer::BadRequest("the payload is not UTF-8".into());
    };
    let rule: ProtectionRule = match serde_json::from_str(text) {
        Ok(rule) => rule,
        Err(e) => {
            return Answer::BadRequest(format!("not a deployment_protection_rule payload: {e}"));
        }
    };
    if rule.action != "requested" {
        return Answer::Ignored;
    }
    if !callback_allowed(&server.api_url, &rule.deployment_callback_url) {
        tracing::warn!(
            "refused a deployment_protection_rule whose callback is not under {}",
            server.api_url
        );
        return Answer::Refused(format!(
            "the deployment_callback_url is not under {}: refused",
            server.api_url
        ));
    }
    // Two deliveries of one deployment (a redelivery under a new id, two replicas): one
    // decision, one callback. One write takes the delivery, the deployment and its wait.
    let wait = PendingWait {
        key: format!("{} {}", rule.deployment_callback_url, rule.environment),
        forge: "github".into(),
        payload: text.to_string(),
        since: Utc::now(),
    };
    // Taken in a task of its own, which starts the work once the admission is written:
    // a sender hanging up while its admission waits for the write leaves no deployment
    // held with nobody working on it.
    let taking = server.clone();
    let delivery = delivery.to_string();
    let taken = server.tasks.spawn(async move {
        let admitted = match taking.waits() {
            Ok(waits) => {
                waits
                    .admit("github-delivery", &delivery, "github-deployment", &wait)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Ok(Admission::Taken) = admitted {
            taking
                .tasks
                .spawn(deployment::protect(taking.clone(), wait));
        }
        admitted
    });
    let admitted = match taken.await {
        Ok(admitted) => admitted,
        Err(e) => Err(anyhow::anyhow!("the admission stopped: {e}")),
    };
    match admitted {
        Ok(Admission::Taken) => {}
        Ok(Admission::SeenDelivery | Admission::SeenDeployment) => return Answer::Duplicate,
        Err(e) => {
            server.metrics.backend_error(server.store_service());
            tracing::error!("cannot take the delivery into the backend: {e:#}");
            return Answer::Unavailable;
        }
    }
    Answer::Accepted
}

async fn deployment_status(server: &Arc<Server>, delivery: &str, body: &[u8]) -> Answer {
    let status: DeploymentStatus = match serde_json::from_slice(body) {
        Ok(status) => status,
        Err(e) => return Answer::BadRequest(format!("not a deployment_status payload: {e}")),
    };
    let outcome = match status.deployment_status.state.as_str() {
        "success" => Outcome::Success,
        "failure" | "error" => Outcome::Failure,
        _ => return Answer::Ignored,
    };
    match claim(server, "github-delivery", delivery).await {
        None => return Answer::Unavailable,
        Some(false) => return Answer::Duplicate,
        Some(true) => {}
    }
    server
        .tasks
        .spawn(deployment::record(server.clone(), status, outcome));
    Answer::Accepted
}

/// A pull request opened (or reopened), or closed merged: its tickets hear of it when the
/// repository's default-branch config says `[sync] enabled`.
async fn pull_request(server: &Arc<Server>, delivery: &str, body: &[u8]) -> Answer {
    let Ok(text) = std::str::from_utf8(body) else {
        return Answer::BadRequest("the payload is not UTF-8".into());
    };
    let event: PullRequestEvent = match serde_json::from_str(text) {
        Ok(event) => event,
        Err(e) => return Answer::BadRequest(format!("not a pull_request payload: {e}")),
    };
    let acts = matches!(event.action.as_str(), "opened" | "reopened")
        || (event.action == "closed" && event.pull_request.merged);
    if !acts {
        return Answer::Ignored;
    }
    match claim(server, "github-delivery", delivery).await {
        None => return Answer::Unavailable,
        Some(false) => return Answer::Duplicate,
        Some(true) => {}
    }
    server.tasks.spawn(deployment::sync(
        server.clone(),
        event,
        std::sync::Arc::from(text),
    ));
    Answer::Accepted
}

/// An issue opened, edited, reopened or put in a milestone: the repository's backlog and
/// sprint are scanned for the tickets their issues reference, when the repository's
/// default-branch config says `[sync] enabled`.
async fn issues(server: &Arc<Server>, delivery: &str, body: &[u8]) -> Answer {
    let event: IssuesEvent = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(e) => return Answer::BadRequest(format!("not an issues payload: {e}")),
    };
    let acts = matches!(
        event.action.as_str(),
        "opened" | "edited" | "reopened" | "milestoned"
    );
    if !acts || event.issue.pull_request.is_some() {
        return Answer::Ignored;
    }
    match claim(server, "github-delivery", delivery).await {
        None => return Answer::Unavailable,
        Some(false) => return Answer::Duplicate,
        Some(true) => {}
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Answer::BadRequest("the payload is not UTF-8".into());
    };
    server.tasks.spawn(deployment::sync_issues(
        server.clone(),
        event,
        std::sync::Arc::from(text),
    ));
    Answer::Accepted
}
