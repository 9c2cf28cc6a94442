//! `changegate serve` for GitLab deployment approvals: the real server process, GitLab's
//! hooks sent over HTTP with the secret token, against the stateful fake GitLab on the one
//! harness (`support::gitlab`): a request nobody expected fails the test, and so does an
//! answer to a deployment that is not blocked or a second answer to the same one.

use predicates::prelude::PredicateBooleanExt;

use super::*;
use crate::support::gitlab::{BOT_TOKEN, FakeGitLab, PROJECT_ID, deployment, deployment_hook};

pub(super) const HOOK_TOKEN: &str = "gitlab-hook-token-for-tests";

/// A GitLab-only server polling every second; `projects`: `CHANGEGATE_GITLAB_PROJECTS`.
fn serve(dir: &Path, gitlab: &str, projects: &str) -> Serve {
    serve_with(dir, gitlab, projects, &[])
}

/// [`serve`] with more of the server's environment (its backend).
pub(super) fn serve_with(
    dir: &Path,
    gitlab: &str,
    projects: &str,
    extra: &[(&str, &str)],
) -> Serve {
    let mut vars = vec![
        ("CHANGEGATE_GITLAB_URL", gitlab),
        ("CHANGEGATE_GITLAB_TOKEN", BOT_TOKEN),
        ("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
        ("CHANGEGATE_GITLAB_PROJECTS", projects),
        ("CHANGEGATE_GITLAB_POLL", "1s"),
    ];
    vars.extend_from_slice(extra);
    Serve::start_env(dir, &vars)
}

pub(super) async fn hook(serve: &Serve, event: &str, body: &Value, token: Option<&str>) -> u16 {
    let mut req = crate::support::http()
        .build()
        .expect("client")
        .post(format!("{}/webhooks/gitlab", serve.url))
        .header("x-gitlab-event", event)
        .json(body);
    if let Some(token) = token {
        req = req.header("x-gitlab-token", token);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A Job Hook of the project's deploy job, now waiting for approval.
fn job_hook() -> Value {
    json!({
        "object_kind": "build", "build_id": 77, "build_name": "deploy",
        "build_stage": "deploy", "build_status": "manual", "project_id": PROJECT_ID,
        "project_name": "Group / App", "sha": crate::support::gitlab::SHA
    })
}

async fn until_rows(
    dir: &Path,
    serve: &Serve,
    done: impl Fn(&[(i64, String, Option<String>)]) -> bool,
) {
    let started = Instant::now();
    while !done(&changes(dir)) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn webhooks(metrics: &str, event: &str, result: &str) -> Option<f64> {
    sample(
        metrics,
        &format!(
            "changegate_webhooks_total{{forge=\"gitlab\",event=\"{event}\",result=\"{result}\"}}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_missing_gitlab_token_is_401_and_gitlab_is_not_asked() {
    let dir = tempfile::tempdir().unwrap();
    // No route is mounted: any request to GitLab fails the test.
    let gl = Remote::start().await;
    let serve = serve(dir.path(), &gl.uri(), "");
    let body = deployment_hook(1, "success");
    assert_eq!(hook(&serve, "Deployment Hook", &body, None).await, 401);
    assert_eq!(
        hook(&serve, "Deployment Hook", &body, Some("wrong")).await,
        401
    );
    let short = &HOOK_TOKEN[..HOOK_TOKEN.len() - 1];
    assert_eq!(
        hook(&serve, "Deployment Hook", &body, Some(short)).await,
        401
    );
    let long = format!("{HOOK_TOKEN}x");
    assert_eq!(
        hook(&serve, "Job Hook", &job_hook(), Some(&long)).await,
        401
    );
    // Above the body limit: refused before it is read, token or not.
    let big = json!({"object_kind": "deployment", "padding": "x".repeat(1024 * 1024 + 1)});
    assert_eq!(
        hook(&serve, "Deployment Hook", &big, Some(HOOK_TOKEN)).await,
        413
    );
    // The GitHub route takes nothing either: this server has no GitHub secret.
    let res = crate::support::http()
        .build()
        .expect("client")
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
        webhooks(&metrics, "deployment", "unauthorized"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks(&metrics, "job", "unauthorized"),
        Some(1.0),
        "{metrics}"
    );
    let log = serve.log();
    assert!(
        !log.contains(HOOK_TOKEN) && !log.contains(BOT_TOKEN),
        "{log}"
    );
    assert_eq!(serve.stop(), Some(0));
    gl.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_seen_by_two_replicas_polls_and_hooks_is_approved_once() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(PRE_APPROVE),
        vec![deployment(1, "production", "blocked")],
    )
    .await;
    // Two replicas on one ledger, each polling at start and every second, and hooks to
    // both at once: the same blocked deployment seen four ways, one change, one answer.
    let project = PROJECT_ID.to_string();
    let one = serve(dir.path(), &gl.url(), &project);
    let two = serve(dir.path(), &gl.url(), &project);
    let (running, job) = (deployment_hook(1, "running"), job_hook());
    let (a, b, c) = tokio::join!(
        hook(&one, "Deployment Hook", &running, Some(HOOK_TOKEN)),
        hook(&two, "Job Hook", &job, Some(HOOK_TOKEN)),
        hook(&one, "Job Hook", &job, Some(HOOK_TOKEN)),
    );
    assert_eq!((a, b, c), (202, 202, 202));
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    // Two more polls each: still one answer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(gl.approvals().len(), 1, "{:?}", gl.approvals());
    assert_eq!(approvals[0].0, 1);
    let body = &approvals[0].1;
    assert_eq!(body["status"], "approved", "{body}");
    let comment = body["comment"].as_str().unwrap();
    assert!(comment.contains("pre-approved"), "{comment}");
    assert!(comment.contains("CG\\-1"), "the change's id: {comment}");
    assert!(
        comment.contains("**track\\-record**"),
        "each rule with its reason: {comment}"
    );
    assert!(comment.chars().count() <= 1024, "{comment}");
    let rows = changes(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "implementing", "{rows:?}");
    // Annotated as the step annotates: the commit status.
    let statuses = gl.state.lock().unwrap().statuses.clone();
    assert_eq!(statuses.last().unwrap()["state"], "success", "{statuses:?}");
    assert_eq!(two.stop(), Some(0));

    let (code, metrics) = get(&one, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        webhooks(&metrics, "deployment", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks(&metrics, "job", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "changegate_backend_errors_total{service=\"gitlab\"}"
        ),
        None,
        "{metrics}"
    );
    assert_eq!(get(&one, "/readyz").await.0, 200);
    let log = one.log();
    assert!(
        !log.contains(BOT_TOKEN) && !log.contains(HOOK_TOKEN),
        "{log}"
    );
    assert_eq!(one.stop(), Some(0), "SIGTERM drains and exits 0");
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_hook_records_the_outcome_as_record_does_and_shows_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(PRE_APPROVE),
        vec![deployment(3, "production", "blocked")],
    )
    .await;
    // Told of no project: the job hook makes it watched.
    let serve = serve(dir.path(), &gl.url(), "");
    assert_eq!(
        hook(&serve, "Job Hook", &job_hook(), Some(HOOK_TOKEN)).await,
        202
    );
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    assert_eq!(approvals[0].1["status"], "approved");
    // The job ran; GitLab tells of the deploy's end.
    gl.state.lock().unwrap().deployments[0]["status"] = "success".into();
    let done = deployment_hook(3, "success");
    assert_eq!(
        hook(&serve, "Deployment Hook", &done, Some(HOOK_TOKEN)).await,
        202
    );
    until_rows(dir.path(), &serve, |r| r[0].2.is_some()).await;
    let rows = changes(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "closed", "{rows:?}");
    assert_eq!(rows[0].2.as_deref(), Some("success"), "{rows:?}");
    // GitLab retries a hook: nothing done again.
    assert_eq!(
        hook(&serve, "Deployment Hook", &done, Some(HOOK_TOKEN)).await,
        200
    );

    let (_, metrics) = get(&serve, "/metrics").await;
    assert_eq!(
        webhooks(&metrics, "job", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks(&metrics, "deployment", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks(&metrics, "deployment", "duplicate"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "changegate_decisions_total{decision=\"pre-approved\"}"
        ),
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
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_failing_is_counted_and_the_next_poll_answers() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(PRE_APPROVE),
        vec![deployment(4, "production", "blocked")],
    )
    .await;
    gl.state.lock().unwrap().listing_fails = true;
    let serve = serve(dir.path(), &gl.url(), &PROJECT_ID.to_string());
    let series = "changegate_backend_errors_total{service=\"gitlab\"}";
    let started = Instant::now();
    loop {
        let (_, metrics) = get(&serve, "/metrics").await;
        if sample(&metrics, series).is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gl.approvals().is_empty());
    assert!(
        changes(dir.path()).is_empty(),
        "nothing decided on a failed listing"
    );
    // GitLab is back: the next poll finds the deployment and answers it.
    gl.state.lock().unwrap().listing_fails = false;
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].1["status"], "approved");
    assert_eq!(serve.stop(), Some(0));
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
    let gl = FakeGitLab::start(
        Some(&needs_approval("60s")),
        vec![deployment(5, "production", "blocked")],
    )
    .await;
    let serve = waiting(dir.path(), &gl).await;
    decide_by_hand(dir.path(), "approve");
    let approvals = gl.until("approval", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].0, 5);
    assert_eq!(approvals[0].1["status"], "approved");
    let comment = approvals[0].1["comment"].as_str().unwrap();
    assert!(comment.contains("CG\\-1"), "{comment}");
    let (_, metrics) = get(&serve, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "changegate_decisions_total{decision=\"approved\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "changegate_approval_wait_seconds_count"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_is_rejected_after_a_person_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(&needs_approval("60s")),
        vec![deployment(5, "production", "blocked")],
    )
    .await;
    let serve = waiting(dir.path(), &gl).await;
    decide_by_hand(dir.path(), "reject");
    let approvals = gl.until("rejection", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
    assert_eq!(changes(dir.path())[0].1, "rejected");
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_deployment_is_rejected_when_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(&needs_approval("2s")),
        vec![deployment(6, "production", "blocked")],
    )
    .await;
    let serve = waiting(dir.path(), &gl).await;
    let approvals = gl.until("rejection", |a| !a.is_empty()).await;
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
    let comment = approvals[0].1["comment"].as_str().unwrap();
    assert!(comment.contains("CG\\-1"), "{comment}");
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_answered_by_a_person_meanwhile_is_not_answered_again() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(&needs_approval("60s")),
        vec![deployment(7, "production", "blocked")],
    )
    .await;
    let serve = waiting(dir.path(), &gl).await;
    // Someone approved it in GitLab itself: it runs; changegate's answer would be refused.
    gl.state.lock().unwrap().deployments[0]["status"] = "running".into();
    decide_by_hand(dir.path(), "approve");
    let started = Instant::now();
    while !serve.log().contains("no longer waits for approval") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gl.approvals().is_empty());
    assert_eq!(serve.stop(), Some(0));
    gl.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitlab_wait_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(&needs_approval("60s")),
        vec![deployment(8, "production", "blocked")],
    )
    .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_started_while_another_waits_does_not_answer_twice() {
    let dir = tempfile::tempdir().unwrap();
    let gl = FakeGitLab::start(
        Some(&needs_approval("60s")),
        vec![deployment(9, "production", "blocked")],
    )
    .await;
    let one = waiting(dir.path(), &gl).await;
    // A second replica on the same ledger starts while the first waits: it resumes the
    // held deployment too, and both see the approval.
    let two = serve(dir.path(), &gl.url(), &PROJECT_ID.to_string());
    tokio::time::sleep(Duration::from_millis(500)).await;
    decide_by_hand(dir.path(), "approve");
    gl.until("approval", |a| !a.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let approvals = gl.approvals();
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0].1["status"], "approved");
    assert_eq!(changes(dir.path()).len(), 1);
    // Both took it up; the second one answered nothing.
    let logs = format!("{}{}", one.log(), two.log());
    assert!(
        logs.contains("another server answers this GitLab deployment")
            || logs.contains("no longer waits for approval"),
        "{logs}"
    );
    assert_eq!(one.stop(), Some(0));
    assert_eq!(two.stop(), Some(0));
    gl.server.verify().await;
}

#[test]
fn serve_refuses_to_start_with_half_a_gitlab_setup() {
    let dir = tempfile::tempdir().unwrap();
    changegate(dir.path())
        .env("CHANGEGATE_GITLAB_URL", "https://gitlab.example")
        .env("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("CHANGEGATE_GITLAB_TOKEN"))
        .stderr(predicates::str::contains(HOOK_TOKEN).not());
}

/// A Merge Request Hook (api-contracts-2.md §3.8) for merge request !7 of the project.
fn merge_request_hook(action: &str) -> Value {
    json!({
        "object_kind": "merge_request", "event_type": "merge_request",
        "user": {"username": "dev1", "name": "Dev One"},
        "project": {"id": PROJECT_ID, "path_with_namespace": crate::support::gitlab::PROJECT_PATH,
                    "web_url": "https://gitlab.example.com/group/app", "default_branch": "main"},
        "object_attributes": {
            "iid": 7, "title": "Fix the <b>checkout</b> timeout", "state": "opened",
            "action": action, "description": "Customers saw INC0010001.",
            "source_branch": "fix-timeout", "target_branch": "main", "draft": false,
            "milestone_id": null, "url": "https://gitlab.example.com/group/app/-/merge_requests/7",
            "last_commit": {"id": crate::support::gitlab::SHA, "title": "Fix the timeout",
                            "message": "Fix the timeout\n", "timestamp": "2026-03-02T09:00:00+00:00"}
        },
        "changes": {}, "assignees": [], "reviewers": []
    })
}

async fn keyed_hook(serve: &Serve, event: &str, body: &Value, key: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/webhooks/gitlab", serve.url))
        .header("x-gitlab-event", event)
        .header("x-gitlab-token", HOOK_TOKEN)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A merge request opened on a project whose config enables `[sync]`: the ticket its
/// description references gets the "opened" note, once, however often GitLab delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_request_hook_notes_its_ticket_once() {
    let gl = FakeGitLab::start(Some("[sync]\nenabled = true\n"), Vec::new()).await;
    let (sn_server, sn) = crate::sync::servicenow_tickets().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_env(
        dir.path(),
        &[
            ("CHANGEGATE_GITLAB_URL", gl.url().as_str()),
            ("CHANGEGATE_GITLAB_TOKEN", BOT_TOKEN),
            ("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
            ("CHANGEGATE_GITLAB_POLL", "1h"),
            ("CHANGEGATE_SERVICENOW_URL", sn_server.uri().as_str()),
            ("CHANGEGATE_SERVICENOW_USER", crate::sync::SN_USER),
            ("CHANGEGATE_SERVICENOW_PASSWORD", crate::sync::SN_PASSWORD),
        ],
    );
    let opened = merge_request_hook("open");
    assert_eq!(
        keyed_hook(&serve, "Merge Request Hook", &opened, "k-1").await,
        202
    );
    let started = Instant::now();
    while serve.log().matches("tickets synced").count() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notes = sn.lock().unwrap().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("Pull request group/app#7 opened: Fix the <b>checkout</b> timeout"),
        "{}",
        notes[0]
    );
    // The link is the project's, as GitLab's API names it.
    assert!(
        notes[0].contains("/group/app/-/merge_requests/7\n"),
        "{}",
        notes[0]
    );
    assert!(notes[0].ends_with("[changegate:sync opened group/app#7]"));
    // The same delivery again: nothing done; an update: not a milestone; a reopen: read back.
    assert_eq!(
        keyed_hook(&serve, "Merge Request Hook", &opened, "k-1").await,
        200
    );
    assert_eq!(
        keyed_hook(
            &serve,
            "Merge Request Hook",
            &merge_request_hook("update"),
            "k-2"
        )
        .await,
        202
    );
    assert_eq!(
        keyed_hook(
            &serve,
            "Merge Request Hook",
            &merge_request_hook("reopen"),
            "k-3"
        )
        .await,
        202
    );
    let started = Instant::now();
    while serve.log().matches("tickets synced").count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sn.lock().unwrap().notes("INC0010001", "work_notes").len(),
        1
    );
    assert_eq!(sn.lock().unwrap().writes(), 1);
    // Without the token: not read at all.
    assert_eq!(hook(&serve, "Merge Request Hook", &opened, None).await, 401);
    assert_eq!(serve.stop(), Some(0));
}

/// An Issue Hook (api-contracts-2.md §3.8: only the milestone's id is sent): the project's
/// backlog and sprint are scanned; the issue referencing INC0010001 enters the backlog,
/// then the sprint's milestone, one note each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_hooks_note_the_backlog_and_the_sprint_once() {
    let gl = FakeGitLab::start(
        Some("[sync]\nenabled = true\n[announce]\nmilestone = \"Current\"\n"),
        Vec::new(),
    )
    .await;
    gl.state.lock().unwrap().milestones = vec![json!({
        "id": 501, "iid": 1, "project_id": PROJECT_ID, "title": "Current", "state": "active",
        "start_date": null, "due_date": null,
        "web_url": "https://gitlab.example/group/app/-/milestones/1"
    })];
    let issue = |milestone: bool| {
        json!({
            "iid": 9, "title": "Checkout times out", "description": "Customers: INC0010001",
            "state": "opened", "labels": [],
            "web_url": "https://gitlab.example/group/app/-/issues/9",
            "milestone": if milestone { json!({"id": 501, "title": "Current"}) } else { Value::Null }
        })
    };
    gl.state.lock().unwrap().issues = vec![issue(false)];
    let (sn_server, sn) = crate::sync::servicenow_tickets().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_env(
        dir.path(),
        &[
            ("CHANGEGATE_GITLAB_URL", gl.url().as_str()),
            ("CHANGEGATE_GITLAB_TOKEN", BOT_TOKEN),
            ("CHANGEGATE_GITLAB_WEBHOOK_TOKEN", HOOK_TOKEN),
            ("CHANGEGATE_GITLAB_POLL", "1h"),
            ("CHANGEGATE_SERVICENOW_URL", sn_server.uri().as_str()),
            ("CHANGEGATE_SERVICENOW_USER", crate::sync::SN_USER),
            ("CHANGEGATE_SERVICENOW_PASSWORD", crate::sync::SN_PASSWORD),
        ],
    );
    let hook_of = |action: &str, milestone: Option<u64>| {
        json!({
            "object_kind": "issue", "event_type": "issue",
            "user": {"username": "dev1"},
            "project": {"id": PROJECT_ID, "path_with_namespace": crate::support::gitlab::PROJECT_PATH},
            "object_attributes": {"id": 3009, "iid": 9, "title": "Checkout times out",
                "state": "opened", "state_id": 1, "action": action, "milestone_id": milestone,
                "labels": [], "assignee_ids": [], "type": "Issue",
                "url": "https://gitlab.example/group/app/-/issues/9"},
            "labels": [], "assignees": [], "changes": {}
        })
    };
    let synced = |count: usize| {
        let serve = &serve;
        async move {
            let started = Instant::now();
            while serve.log().matches("tickets synced").count() < count {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{}",
                    serve.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        keyed_hook(&serve, "Issue Hook", &hook_of("open", None), "i-1").await,
        202
    );
    synced(1).await;
    let notes = sn.lock().unwrap().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("Entered the backlog: group/app#9 Checkout times out"),
        "{}",
        notes[0]
    );
    gl.state.lock().unwrap().issues = vec![issue(true)];
    let update = hook_of("update", Some(501));
    assert_eq!(keyed_hook(&serve, "Issue Hook", &update, "i-2").await, 202);
    synced(2).await;
    assert_eq!(keyed_hook(&serve, "Issue Hook", &update, "i-2").await, 200);
    assert_eq!(
        keyed_hook(&serve, "Issue Hook", &hook_of("close", Some(501)), "i-3").await,
        202
    );
    assert_eq!(keyed_hook(&serve, "Issue Hook", &update, "i-4").await, 202);
    synced(3).await;
    let notes = sn.lock().unwrap().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[1].starts_with("Entered sprint "), "{}", notes[1]);
    assert!(
        notes[1].contains("group/app#9 Checkout times out"),
        "{}",
        notes[1]
    );
    assert!(
        notes[1].contains("[changegate:sync sprint "),
        "{}",
        notes[1]
    );
    assert!(notes[1].ends_with(" group/app]"), "{}", notes[1]);
    assert_eq!(sn.lock().unwrap().writes(), 2);
    assert_eq!(serve.stop(), Some(0));
}
