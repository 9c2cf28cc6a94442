//! `changegate serve` for GitLab deployment approvals: the real server process, GitLab's
//! hooks sent over HTTP with the secret token, against the stateful fake GitLab on the one
//! harness (`support::gitlab`): a request nobody expected fails the test.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{
    PRE_APPROVE, Serve, changes, decide_by_hand, get, needs_approval, sample,
};
use crate::support::gitlab::{BOT_TOKEN, FakeGitLab, PROJECT_ID, deployment, deployment_hook};
use crate::support::remote::Remote;

const HOOK_TOKEN: &str = "gitlab-hook-token-for-tests";

/// A GitLab-only server; `projects`: `CHANGEGATE_GITLAB_PROJECTS`.
fn serve(dir: &Path, gitlab: &str, projects: &str) -> Serve {
    Serve::start_env(
        dir,
        &[
            ("CHANGEGATE_GITLAB_URL", gitlab),
            ("CHANGEGATE_GITLAB_TOKEN", BOT_TOKEN),
            ("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
            ("CHANGEGATE_GITLAB_PROJECTS", projects),
            ("CHANGEGATE_GITLAB_POLL", "1s"),
        ],
    )
}

async fn hook(serve: &Serve, event: &str, body: &Value, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("{}/webhooks/gitlab", serve.url))
        .header("x-gitlab-event", event)
        .json(body);
    if let Some(token) = token {
        req = req.header("x-gitlab-token", token);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn until_rows(dir: &Path, serve: &Serve, done: impl Fn(&[(i64, String, Option<String>)]) -> bool) {
    let started = Instant::now();
    while !done(&changes(dir)) {
        assert!(started.elapsed() < Duration::from_secs(20), "{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_missing_gitlab_token_is_401_and_gitlab_is_not_asked() {
    let dir = tempfile::tempdir().unwrap();
    // No route is mounted: any request to GitLab fails the test.
    let gl = Remote::start().await;
    let serve = serve(dir.path(), &gl.uri(), "");
    let body = deployment_hook(1, "running");
    assert_eq!(hook(&serve, "Deployment Hook", &body, None).await, 401);
    assert_eq!(hook(&serve, "Deployment Hook", &body, Some("wrong")).await, 401);
    assert_eq!(
        hook(&serve, "Deployment Hook", &body, Some(&HOOK_TOKEN[..HOOK_TOKEN.len() - 1])).await,
        401
    );
    // The GitHub route takes nothing either: this server has no GitHub secret.
    let res = reqwest::Client::new()
        .post(format!("{}/webhooks/github", serve.url))
        .header("x-github-event", "ping")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(changes(dir.path()).is_empty());
    let (_, metrics) = get(&serve, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "changegate_webhooks_total{forge=\"gitlab\",event=\"deployment\",result=\"unauthorized\"}"
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(serve.stop(), Some(0));
    gl.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_of_a_pre_approved_change_is_approved_once_and_its_outcome_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(Some(PRE_APPROVE), vec![deployment(1, "production", "blocked")]).await;
    // Watched from the start and polled every second, and a hook at once: one answer.
    let serve = serve(dir.path(), &gl.url(), &PROJECT_ID.to_string());
    let running = deployment_hook(1, "running");
    let (a, b) = tokio::join!(
        hook(&serve, "Deployment Hook", &running, Some(HOOK_TOKEN)),
        hook(&serve, "Job Hook", &serde_json::json!({"object_kind": "build", "project_id": PROJECT_ID, "build_status": "manual"}), Some(HOOK_TOKEN))
    );
    assert_eq!((a, b), (202, 202));
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let approvals_after = gl.approvals();
    assert_eq!(approvals_after.len(), 1, "{approvals_after:?}");
    assert_eq!(approvals[0].0, 1);
    let body = &approvals[0].1;
    assert_eq!(body["status"], "approved", "{body}");
    let comment = body["comment"].as_str().unwrap();
    assert!(comment.contains("pre-approved"), "{comment}");
    assert!(comment.contains("CG\\-1"), "the change's id: {comment}");
    assert!(
        comment.contains("**track\\-record** no closed changes yet"),
        "each rule with its reason: {comment}"
    );
    let rows = changes(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "implementing", "{rows:?}");
    // Annotated as the step annotates: the commit status.
    let statuses = gl.state.lock().unwrap().statuses.clone();
    assert_eq!(statuses.last().unwrap()["state"], "success", "{statuses:?}");

    // The deploy's outcome, from the deployment hook: recorded as `record` does.
    gl.state.lock().unwrap().deployments[0]["status"] = "success".into();
    let done = deployment_hook(1, "success");
    assert_eq!(hook(&serve, "Deployment Hook", &done, Some(HOOK_TOKEN)).await, 202);
    until_rows(dir.path(), &serve, |r| r[0].2.is_some()).await;
    let rows = changes(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].2.as_deref(), Some("success"), "{rows:?}");
    assert_eq!(rows[0].1, "closed", "{rows:?}");
    // The same hook again: nothing done again.
    assert_eq!(hook(&serve, "Deployment Hook", &done, Some(HOOK_TOKEN)).await, 200);

    let (code, metrics) = get(&serve, "/metrics").await;
    assert_eq!(code, 200);
    let webhooks = |event: &str, result: &str| {
        sample(
            &metrics,
            &format!(
                "changegate_webhooks_total{{forge=\"gitlab\",event=\"{event}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(webhooks("deployment", "accepted"), Some(2.0), "{metrics}");
    assert_eq!(webhooks("deployment", "duplicate"), Some(1.0), "{metrics}");
    assert_eq!(webhooks("job", "accepted"), Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "changegate_decisions_total{decision=\"pre-approved\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "changegate_approvals_total{forge=\"gitlab\",status=\"approved\",result=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE changegate_backend_errors counter"), "{metrics}");
    assert_eq!(get(&serve, "/readyz").await.0, 200);
    let log = serve.log();
    assert!(!log.contains(BOT_TOKEN) && !log.contains(HOOK_TOKEN), "{log}");
    assert_eq!(serve.stop(), Some(0), "SIGTERM drains and exits 0");
    gl.server.verify().await;
}

/// A server watching a project whose blocked deployment needs approval, once the change
/// is open and waiting.
async fn waiting(dir: &Path, gl: &FakeGitLab) -> Serve {
    let serve = serve(dir, &gl.url(), &PROJECT_ID.to_string());
    until_rows(dir, &serve, |r| r.len() == 1).await;
    assert!(gl.approvals().is_empty(), "nobody decided yet");
    serve
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_that_needs_approval_is_approved_after_a_person_approves() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(Some(&needs_approval("60s")), vec![deployment(5, "production", "blocked")]).await;
    let serve = waiting(dir.path(), &gl).await;
    decide_by_hand(dir.path(), "approve");
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].0, 5);
    assert_eq!(approvals[0].1["status"], "approved");
    let comment = approvals[0].1["comment"].as_str().unwrap();
    assert!(comment.contains("checked the runbook") && comment.contains("CG\\-1"), "{comment}");
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_is_rejected_after_a_person_rejects_or_when_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(Some(&needs_approval("60s")), vec![deployment(5, "production", "blocked")]).await;
    let serve = waiting(dir.path(), &gl).await;
    decide_by_hand(dir.path(), "reject");
    let approvals = gl.until("rejection", |a| !a.is_empty()).await;
    assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
    assert_eq!(changes(dir.path())[0].1, "rejected");
    drop(serve);
    gl.server.verify().await;

    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(Some(&needs_approval("2s")), vec![deployment(6, "production", "blocked")]).await;
    let serve = waiting(dir.path(), &gl).await;
    let approvals = gl.until("rejection", |a| !a.is_empty()).await;
    assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
    let comment = approvals[0].1["comment"].as_str().unwrap();
    assert!(comment.contains("timed out"), "{comment}");
    drop(serve);
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitlab_wait_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(Some(&needs_approval("60s")), vec![deployment(8, "production", "blocked")]).await;
    let serve = waiting(dir.path(), &gl).await;
    assert_eq!(serve.stop(), Some(0));
    decide_by_hand(dir.path(), "approve");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gl.approvals().is_empty(), "nobody was running to answer");
    // The next server is told of no project: the held deployment alone brings it back.
    let serve = Serve::start_env(
        dir.path(),
        &[
            ("CHANGEGATE_GITLAB_URL", gl.url().as_str()),
            ("CHANGEGATE_GITLAB_TOKEN", BOT_TOKEN),
            ("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
        ],
    );
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].1["status"], "approved");
    assert_eq!(changes(dir.path()).len(), 1);
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}
