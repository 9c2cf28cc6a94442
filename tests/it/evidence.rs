//! Evidence an auditor accepts, taken from the forge: a push-to-main deploy finds the pull
//! request that brought its commit, its reviews and the commit's checks (GitHub), or the
//! merge request, its approvals and the commit's statuses (GitLab). The real binary against
//! fakes built on the one harness: any request nobody expected fails the test.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::remote::Remote;
use crate::support::{changegate, default_branch_is_head, git_repo, github_actions, reference};

const OWNER_REPO: &str = "Codertocat/Hello-World";
const TOKEN: &str = "ghs_fakeActionsToken0123456789";
/// The commit deployed by the push: the merge commit of pull request #5.
const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
/// Pull request #5's head when it was merged.
const HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
/// An earlier push to pull request #5.
const OLDER: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
const RUN_ID: &str = "4242";

/// Pre-approves a first change when the evidence is there; no annotations, so the only
/// requests are the evidence's.
const CONFIG: &str = "[policy]\nmin_history = 0\n[evidence]\nrequire_review = true\nrequire_tests = true\n[annotate]\nenabled = false\n";

#[derive(Default)]
struct GhState {
    uri: String,
    pulls: Value,
    reviews: Vec<Value>,
    check_runs: Vec<Value>,
    statuses: Vec<Value>,
    /// Answer every call with this status instead (an outage).
    down: Option<u16>,
}

type Gh = Arc<Mutex<GhState>>;

fn query(req: &Request, key: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Checks the token, then answers with `handle` unless the fake is down.
async fn route(
    server: &Remote,
    state: &Gh,
    matcher: impl wiremock::Match + 'static,
    handle: impl Fn(&GhState, &Request) -> ResponseTemplate + Send + Sync + 'static,
) {
    route_verb("GET", server, state, matcher, handle).await;
}

async fn route_verb(
    verb: &str,
    server: &Remote,
    state: &Gh,
    matcher: impl wiremock::Match + 'static,
    handle: impl Fn(&GhState, &Request) -> ResponseTemplate + Send + Sync + 'static,
) {
    let st = state.clone();
    Mock::given(method(verb))
        .and(matcher)
        .respond_with(move |req: &Request| {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                return ResponseTemplate::new(401)
                    .set_body_json(json!({"message": "Bad credentials"}));
            }
            let s = st.lock().unwrap();
            if let Some(code) = s.down {
                return ResponseTemplate::new(code)
                    .set_body_json(json!({"message": "Server Error"}));
            }
            handle(&s, req)
        })
        .mount(server)
        .await;
}

async fn fake_github(state: Gh) -> Remote {
    let server = Remote::start().await;
    state.lock().unwrap().uri = server.uri();
    let repo = format!("/repos/{OWNER_REPO}");
    // The comparison of the range since the last deployed commit (a checkout without it).
    route(
        &server,
        &state,
        path_regex(format!(
            r"^{repo}/compare/[0-9a-f]{{40}}\.\.\.[0-9a-f]{{40}}$"
        )),
        |_, _| {
            ResponseTemplate::new(200).set_body_json(json!({
                "status": "ahead", "ahead_by": 1, "total_commits": 1,
                "files": [{"filename": "src/fees.rs", "status": "modified", "additions": 10,
                           "deletions": 2, "changes": 12}]
            }))
        },
    )
    .await;
    route(
        &server,
        &state,
        path(format!("{repo}/issues/5/comments")),
        |_, _| ResponseTemplate::new(200).set_body_json(json!([])),
    )
    .await;
    route(
        &server,
        &state,
        path(format!("{repo}/commits/{SHA}/pulls")),
        |s, _| ResponseTemplate::new(200).set_body_json(&s.pulls),
    )
    .await;
    // Reviews, 2 a page when asked for fewer than there are: the client must follow `Link`.
    route(
        &server,
        &state,
        path(format!("{repo}/pulls/5/reviews")),
        |s, req| {
            let per_page: usize = query(req, "per_page").map_or(30, |p| p.parse().unwrap());
            let per_page = per_page.min(2);
            let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
            let items: Vec<Value> = s
                .reviews
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            let mut r = ResponseTemplate::new(200).set_body_json(items);
            if page * per_page < s.reviews.len() {
                let next = format!(
                    "{}{}?per_page={per_page}&page={}",
                    s.uri,
                    req.url.path(),
                    page + 1
                );
                r = r.insert_header("link", format!("<{next}>; rel=\"next\"").as_str());
            }
            r
        },
    )
    .await;
    route(
        &server,
        &state,
        path_regex(format!(r"^{repo}/commits/[0-9a-f]{{40}}/check-runs$")),
        |s, req| {
            let sha = req.url.path().split('/').nth(5).unwrap().to_string();
            let runs: Vec<Value> = s
                .check_runs
                .iter()
                .filter(|r| r["head_sha"] == sha.as_str())
                .cloned()
                .collect();
            ResponseTemplate::new(200)
                .set_body_json(json!({"total_count": runs.len(), "check_runs": runs}))
        },
    )
    .await;
    route(
        &server,
        &state,
        path_regex(format!(r"^{repo}/commits/[0-9a-f]{{40}}/status$")),
        |s, req| {
            let sha = req.url.path().split('/').nth(5).unwrap().to_string();
            let statuses: Vec<Value> = s
                .statuses
                .iter()
                .filter(|st| st["sha"] == sha.as_str())
                .cloned()
                .collect();
            let state = if statuses.is_empty() {
                "pending"
            } else {
                "success"
            };
            ResponseTemplate::new(200).set_body_json(json!({
                "state": state, "sha": sha, "total_count": statuses.len(), "statuses": statuses
            }))
        },
    )
    .await;
    server
}

fn user(login: &str) -> Value {
    json!({"login": login, "id": 1, "type": "User"})
}

fn review(id: u64, login: &str, state: &str, commit: &str) -> Value {
    json!({
        "id": id, "node_id": format!("PRR_{id}"), "user": user(login), "body": "",
        "state": state, "commit_id": commit, "submitted_at": "2026-03-02T09:00:00Z",
        "author_association": "MEMBER",
        "html_url": format!("https://github.com/{OWNER_REPO}/pull/5#pullrequestreview-{id}")
    })
}

fn check_run(name: &str, status: &str, conclusion: Option<&str>, run: &str) -> Value {
    json!({
        "id": 7, "name": name, "head_sha": SHA, "status": status, "conclusion": conclusion,
        "details_url": format!("https://github.com/{OWNER_REPO}/actions/runs/{run}/job/9"),
        "app": {"slug": "github-actions"}, "check_suite": {"id": 1}, "pull_requests": []
    })
}

/// Pull request #5 by octocat, merged as `SHA` from the head `HEAD`.
fn merged_pull() -> Value {
    json!([{
        "number": 5, "state": "closed", "title": "Add the fee table", "user": user("octocat"),
        "labels": [], "milestone": null, "merged_at": "2026-03-02T09:59:00Z",
        "merge_commit_sha": SHA, "draft": false, "created_at": "2026-03-01T09:00:00Z",
        "head": {"ref": "fees", "sha": HEAD}, "base": {"ref": "main", "sha": OLDER}
    }])
}

/// A fake whose pull request was approved by alice on its head and whose commit's checks
/// passed (the deploy job itself still running, and changegate's own check failed).
fn approved_and_green() -> GhState {
    GhState {
        pulls: merged_pull(),
        reviews: vec![
            review(1, "bob", "COMMENTED", OLDER),
            review(2, "alice", "CHANGES_REQUESTED", OLDER),
            review(3, "alice", "APPROVED", HEAD),
        ],
        check_runs: vec![
            check_run("test", "completed", Some("success"), "1000"),
            check_run("lint", "completed", Some("skipped"), "1000"),
            check_run("deploy", "in_progress", None, RUN_ID),
            check_run(
                "changegate / production",
                "completed",
                Some("failure"),
                "999",
            ),
        ],
        statuses: vec![json!({"sha": SHA, "context": "ci/external", "state": "success"})],
        ..GhState::default()
    }
}

struct Outcome {
    code: i32,
    doc: Value,
    stderr: String,
}

impl Outcome {
    fn rule(&self, code: &str) -> (bool, String) {
        let rule = self.doc["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("no rules: {}\n{}", self.doc, self.stderr))
            .iter()
            .find(|r| r["code"] == code)
            .unwrap_or_else(|| panic!("no rule {code}: {}", self.doc));
        (
            rule["passed"].as_bool().unwrap(),
            rule["reason"].as_str().unwrap().to_string(),
        )
    }
}

/// A push-to-main `gate` in a GitHub Actions job against the fake at `api`.
fn github_push_gate(dir: &Path, api: &str, config: &str, env: &[(&str, &str)]) -> Outcome {
    std::fs::write(dir.join(".changegate.toml"), config).unwrap();
    // The payload's repository names `master` as its default branch.
    default_branch_is_head(dir, "master");
    let event = reference("github-webhooks/examples/push/payload.json");
    let mut cmd = changegate(dir);
    github_actions(&mut cmd, "push", &event, OWNER_REPO, SHA)
        .env("GITHUB_REF", "refs/heads/master")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_API_URL", api)
        .env("GITHUB_RUN_ID", RUN_ID)
        .env("GITHUB_ACTOR", "octocat")
        .envs(env.iter().copied())
        .args(["gate", "--wait", "0", "--format", "json"]);
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        doc: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn github_case(state: GhState, config: &str, env: &[(&str, &str)]) -> (Outcome, Remote) {
    let gh = Arc::new(Mutex::new(state));
    let server = fake_github(gh).await;
    let dir = git_repo();
    let mut with_token = vec![("GITHUB_TOKEN", TOKEN)];
    with_token.extend_from_slice(env);
    let out = github_push_gate(dir.path(), &server.uri(), config, &with_token);
    (out, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn push_to_main_with_a_pull_request_approved_on_its_head_is_pre_approved() {
    let (out, server) = github_case(approved_and_green(), CONFIG, &[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.doc, out.stderr);
    assert_eq!(out.doc["decision"], "pre-approved", "{}", out.doc);
    let (passed, why) = out.rule("evidence-review");
    assert!(passed, "{why}");
    assert!(
        why.contains("#5 approved by @alice on its head ec26c3e57ca3"),
        "{why}"
    );
    let (passed, why) = out.rule("evidence-tests");
    assert!(passed, "{why}");
    // The running deploy job (this run) and changegate's own check are left out.
    assert!(
        why.contains("3 checks") && why.contains("test, lint, ci/external"),
        "{why}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_approved_pull_request_fails_evidence_review() {
    let mut state = approved_and_green();
    state.reviews = vec![review(1, "octocat", "APPROVED", HEAD)];
    let (out, server) = github_case(state, CONFIG, &[("CHANGEGATE_REVIEWED", "true")]).await;
    assert_eq!(out.code, 1, "{}\n{}", out.doc, out.stderr);
    assert_eq!(out.doc["decision"], "needs-approval");
    let (passed, why) = out.rule("evidence-review");
    assert!(!passed);
    assert!(why.contains("only by its author @octocat"), "{why}");
    // The forge answered: the pipeline's claim is ignored, and the reason says so.
    assert!(why.contains("CHANGEGATE_REVIEWED=true is ignored"), "{why}");
    server.verify().await;

    // With separate_author = false the author's own approval counts.
    let mut state = approved_and_green();
    state.reviews = vec![review(1, "octocat", "APPROVED", HEAD)];
    let config = format!("{CONFIG}[approval]\nseparate_author = false\n");
    let (out, server) = github_case(state, &config, &[]).await;
    assert!(out.rule("evidence-review").0, "{}", out.doc);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_review_of_an_older_head_fails_evidence_review() {
    let mut state = approved_and_green();
    state.reviews = vec![review(1, "alice", "APPROVED", OLDER)];
    let (out, server) = github_case(state, CONFIG, &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let (passed, why) = out.rule("evidence-review");
    assert!(!passed);
    assert!(
        why.contains("only on an older commit (@alice on f95f852bd8fc)"),
        "{why}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_no_pull_request_brought_fails_evidence_review() {
    let mut state = approved_and_green();
    state.pulls = json!([]);
    let (out, server) = github_case(state, CONFIG, &[]).await;
    let (passed, why) = out.rule("evidence-review");
    assert!(!passed);
    assert!(
        why.contains("no merged or open pull/merge request"),
        "{why}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_or_missing_checks_fail_evidence_tests_whatever_the_pipeline_says() {
    let mut failing = approved_and_green();
    failing.check_runs[0] = check_run("test", "completed", Some("failure"), "1000");
    let (out, server) = github_case(failing, CONFIG, &[("CHANGEGATE_TESTS_PASSED", "true")]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let (passed, why) = out.rule("evidence-tests");
    assert!(!passed);
    assert!(why.contains("not passed: test (failure)"), "{why}");
    assert!(
        why.contains("CHANGEGATE_TESTS_PASSED=true is ignored"),
        "{why}"
    );
    server.verify().await;

    // Nothing but this run's own job and changegate's check: no evidence.
    let mut none = approved_and_green();
    none.check_runs.drain(..2);
    none.statuses.clear();
    let (out, server) = github_case(none, CONFIG, &[]).await;
    let (passed, why) = out.rule("evidence-tests");
    assert!(!passed);
    assert!(why.contains("no finished check"), "{why}");
    server.verify().await;

    // A required check that never ran.
    let config = CONFIG.replace(
        "require_tests = true\n",
        "require_tests = true\nrequired_checks = [\"test\", \"e2e\"]\n",
    );
    let (out, server) = github_case(approved_and_green(), &config, &[]).await;
    let (passed, why) = out.rule("evidence-tests");
    assert!(!passed);
    assert!(why.contains("missing: e2e"), "{why}");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_forge_fails_closed_with_exit_2() {
    let mut state = approved_and_green();
    state.down = Some(503);
    let (out, server) = github_case(state, CONFIG, &[("CHANGEGATE_REVIEWED", "true")]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.doc, out.stderr);
    assert!(
        out.stderr
            .contains("cannot read the review and test evidence"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(TOKEN), "{}", out.stderr);
    // Retried before giving up.
    let asked = server.received_requests().await.unwrap_or_default().len();
    assert!(asked > 1, "{asked} requests");
    server.verify().await;
}

#[test]
fn without_a_token_the_pipelines_claims_stand() {
    let dir = git_repo();
    // No token: nothing can be asked, so no fake is needed (any call would fail to connect).
    let out = github_push_gate(
        dir.path(),
        "http://127.0.0.1:9",
        CONFIG,
        &[
            ("CHANGEGATE_REVIEWED", "true"),
            ("CHANGEGATE_TESTS_PASSED", "true"),
        ],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.doc, out.stderr);
    assert!(
        out.rule("evidence-review")
            .1
            .contains("CHANGEGATE_REVIEWED says")
    );
    assert!(out.rule("evidence-tests").0);
    // A fresh ledger: the first run's decision would stand.
    let dir = git_repo();
    let out = github_push_gate(dir.path(), "http://127.0.0.1:9", CONFIG, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.rule("evidence-review").0);
}

// ---------------------------------------------------------------------------------------
// GitLab: the merge request of the commit, its approvals, the commit's statuses.

const GL_TOKEN: &str = "glpat-fakeProjectToken";
const GL_SHA: &str = "7c4f1b2d9e8a6f5c3b1a0d9e8f7a6b5c4d3e2f1a";
const GL_HEAD: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const GL_PROJECT: &str = "/api/v4/projects/acme%2Fpayments-api";
const GL_JOB: &str = "https://gitlab.example.com/acme/payments-api/-/jobs/77";

async fn fake_gitlab(approvers: &[&str], statuses: Value) -> Remote {
    let server = Remote::start().await;
    let gl = |p: String, body: Value| {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(move |req: &Request| {
                if req
                    .headers
                    .get("private-token")
                    .and_then(|v| v.to_str().ok())
                    != Some(GL_TOKEN)
                {
                    return ResponseTemplate::new(401)
                        .set_body_json(json!({"message": "401 Unauthorized"}));
                }
                ResponseTemplate::new(200)
                    .insert_header("x-next-page", "")
                    .set_body_json(body.clone())
            })
    };
    gl(
        format!("{GL_PROJECT}/repository/commits/{GL_SHA}/merge_requests"),
        json!([
            {"iid": 8, "state": "closed", "title": "Old attempt", "author": {"username": "dev"}, "sha": GL_HEAD},
            {"iid": 7, "state": "merged", "title": "Fees", "author": {"username": "dev", "id": 3},
             "sha": GL_HEAD, "merge_commit_sha": GL_SHA, "squash_commit_sha": null}
        ]),
    )
    .mount(&server)
    .await;
    let approved_by: Vec<Value> = approvers
        .iter()
        .map(|u| json!({"user": {"id": 1, "username": u, "name": u, "state": "active"}}))
        .collect();
    gl(
        format!("{GL_PROJECT}/merge_requests/7/approvals"),
        json!({"id": 70, "iid": 7, "project_id": 42, "title": "Fees", "state": "merged",
               "approvals_required": 1, "approvals_left": 0, "approved_by": approved_by}),
    )
    .mount(&server)
    .await;
    gl(
        format!("{GL_PROJECT}/repository/commits/{GL_SHA}/statuses"),
        statuses,
    )
    .mount(&server)
    .await;
    server
}

fn gl_status(name: &str, status: &str, job: u64) -> Value {
    json!({"id": job, "sha": GL_SHA, "ref": "main", "status": status, "name": name,
           "target_url": format!("https://gitlab.example.com/acme/payments-api/-/jobs/{job}"),
           "allow_failure": false, "author": {"username": "dev"}})
}

fn green_pipeline() -> Value {
    json!([
        gl_status("unit", "success", 75),
        gl_status("lint", "success", 76),
        gl_status("gate", "running", 77),
        gl_status("deploy", "created", 78),
    ])
}

fn gitlab_gate(server: &Remote, env: &[(&str, &str)]) -> Outcome {
    let dir = git_repo();
    std::fs::write(dir.path().join(".changegate.toml"), CONFIG).unwrap();
    default_branch_is_head(dir.path(), "main");
    let mut cmd = changegate(dir.path());
    cmd.env("GITLAB_CI", "true")
        .env("CI_API_V4_URL", format!("{}/api/v4", server.uri()))
        .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
        .env("CI_PROJECT_PATH", "acme/payments-api")
        .env(
            "CI_PROJECT_URL",
            "https://gitlab.example.com/acme/payments-api",
        )
        .env("CI_COMMIT_SHA", GL_SHA)
        .env("CI_COMMIT_BRANCH", "main")
        .env("CI_COMMIT_REF_NAME", "main")
        .env("CI_DEFAULT_BRANCH", "main")
        .env("CI_ENVIRONMENT_NAME", "production")
        .env("CI_JOB_URL", GL_JOB)
        .envs(env.iter().copied())
        .args(["gate", "--wait", "0", "--format", "json"]);
    let out = cmd.output().unwrap();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        doc: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_a_merge_request_approved_by_another_passes() {
    let server = fake_gitlab(&["dev", "lead"], green_pipeline()).await;
    let out = gitlab_gate(&server, &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.doc, out.stderr);
    let (passed, why) = out.rule("evidence-review");
    assert!(passed && why.contains("#7 approved by @lead"), "{why}");
    let (passed, why) = out.rule("evidence-tests");
    // This job (running) and the later deploy job (created) are left out.
    assert!(
        passed && why.contains("2 checks") && why.contains("unit, lint"),
        "{why}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_self_approval_and_failed_jobs_fail_and_overrule_the_claims() {
    let statuses = json!([
        gl_status("unit", "failed", 75),
        gl_status("gate", "running", 77)
    ]);
    let server = fake_gitlab(&["dev"], statuses).await;
    let out = gitlab_gate(
        &server,
        &[
            ("CHANGEGATE_REVIEWED", "true"),
            ("CHANGEGATE_TESTS_PASSED", "true"),
        ],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.doc, out.stderr);
    let (passed, why) = out.rule("evidence-review");
    assert!(!passed && why.contains("only by its author @dev"), "{why}");
    assert!(
        why.contains("CHANGEGATE_REVIEWED=true is ignored: GitLab was asked"),
        "{why}"
    );
    let (passed, why) = out.rule("evidence-tests");
    assert!(!passed && why.contains("unit (failed)"), "{why}");
    server.verify().await;
}

// ---------------------------------------------------------------------------------------
// The shipped examples, run as written: examples/github/deploy.yml's gate step with
// examples/config/servicenow.changegate.toml, against ServiceNow and GitHub fakes.

/// `examples/github/deploy.yml`'s gate step: its `with:` and `env:`.
type Pairs = Vec<(String, String)>;

fn example_gate_step() -> (Pairs, Pairs) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wf = crate::support::yaml(
        &std::fs::read_to_string(root.join("examples/github/deploy.yml")).unwrap(),
    );
    let steps = wf["jobs"]["deploy"]["steps"].as_array().unwrap();
    let gate = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("changegate/changegate@"))
                && s["with"]["command"] == "gate"
        })
        .expect("deploy.yml has a gate step");
    let pairs = |v: &Value| -> Pairs {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    (pairs(&gate["with"]), pairs(&gate["env"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_github_and_servicenow_examples_reach_a_pre_approval() {
    use crate::servicenow::fake::{Responder, Sn};
    use chrono::{NaiveDate, Utc};

    // ServiceNow: the example's template, and a track record in the example's sprints.
    let sn_server = Remote::start().await;
    let sn = Arc::new(Mutex::new(Sn {
        watch: sn_server.watch(),
        basic: Some(("svc-changegate".into(), "s3cret".into())),
        templates: vec![(
            "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6".into(),
            "Pre-approved application deploy".into(),
            "ab12cd34ef56ab12cd34ef56ab12cd34".into(),
        )],
        ..Sn::default()
    }));
    Mock::given(wiremock::matchers::any())
        .respond_with(Responder(sn.clone()))
        .mount(&sn_server)
        .await;
    let today = Utc::now().date_naive();
    let start = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let sprint_start =
        start + chrono::Duration::days((today - start).num_days().div_euclid(14) * 14);
    {
        let mut s = sn.lock().unwrap();
        for i in 0..6u64 {
            let sha = format!("{:040x}", 0xabc0_0000_u64 + i);
            s.seed_closed(
                &format!("changegate:{OWNER_REPO}/payments-api:production:{sha}"),
                sprint_start - chrono::Duration::days(1 + i as i64),
                "standard",
                "successful",
            );
        }
    }
    // GitHub: PR #5 approved by alice on its head, the commit's checks green, and the
    // annotation's comment and check run.
    let gh = Arc::new(Mutex::new(approved_and_green()));
    let gh_server = fake_github(gh.clone()).await;
    route_verb(
        "POST",
        &gh_server,
        &gh,
        path(format!("/repos/{OWNER_REPO}/issues/5/comments")),
        |_, req| {
            let body: Value = req.body_json().unwrap();
            assert!(
                body["body"]
                    .as_str()
                    .unwrap()
                    .contains("approved by @alice"),
                "{body}"
            );
            ResponseTemplate::new(201).set_body_json(json!({"id": 1, "body": body["body"]}))
        },
    )
    .await;
    route_verb(
        "POST",
        &gh_server,
        &gh,
        path(format!("/repos/{OWNER_REPO}/check-runs")),
        |_, req| ResponseTemplate::new(201).set_body_json(req.body_json::<Value>().unwrap()),
    )
    .await;

    // The checkout, with the example config as its .changegate.toml.
    let dir = git_repo();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("examples/config/servicenow.changegate.toml"),
        dir.path().join(".changegate.toml"),
    )
    .unwrap();
    default_branch_is_head(dir.path(), "master");
    let files = tempfile::tempdir().unwrap();
    let output = files.path().join("output");
    std::fs::write(&output, "").unwrap();

    // The step as the runner starts it: its inputs as INPUT_*, its env with the repository's
    // variables and secrets.
    let (with, step_env) = example_gate_step();
    let mut cmd = changegate(dir.path());
    let event = reference("github-webhooks/examples/push/payload.json");
    github_actions(&mut cmd, "push", &event, OWNER_REPO, SHA)
        .env("GITHUB_REF", "refs/heads/master")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_API_URL", gh_server.uri())
        .env("GITHUB_RUN_ID", RUN_ID)
        .env("GITHUB_ACTOR", "octocat")
        .env("GITHUB_OUTPUT", &output)
        .env("INPUT_GITHUB-TOKEN", TOKEN)
        .env("INPUT_DRY-RUN", "false")
        .env("NO_PROXY", "127.0.0.1,localhost");
    for (name, value) in &with {
        cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
    }
    for (name, value) in &step_env {
        let value = match value.as_str() {
            "${{ vars.SERVICENOW_URL }}" => sn_server.uri(),
            "${{ secrets.SERVICENOW_USER }}" => "svc-changegate".into(),
            "${{ secrets.SERVICENOW_PASSWORD }}" => "s3cret".into(),
            other => {
                panic!("deploy.yml's gate step has an env the test does not know: {name}={other}")
            }
        };
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let outputs = std::fs::read_to_string(&output).unwrap();
    // The example's year-end freeze blocks whatever the evidence says.
    let frozen = NaiveDate::from_ymd_opt(2026, 12, 21).unwrap() <= today
        && today < NaiveDate::from_ymd_opt(2027, 1, 4).unwrap();
    let want = if frozen { "blocked" } else { "pre-approved" };
    assert!(
        outputs.contains(want),
        "exit {:?}: {outputs}\n{stderr}",
        out.status.code()
    );
    assert_eq!(
        out.status.code(),
        Some(if frozen { 1 } else { 0 }),
        "{stderr}"
    );
    // The evidence is on the change record: the decision's work note names who approved
    // and which checks passed.
    let notes: Vec<String> = sn
        .lock()
        .unwrap()
        .journal
        .iter()
        .map(|(_, _, text)| text.clone())
        .collect();
    let all = notes.join("\n");
    assert!(all.contains("#5 approved by @alice on its head"), "{all}");
    assert!(all.contains("test, lint, ci/external"), "{all}");
    gh_server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pull_requests_author_may_not_approve_the_waiting_change() {
    // The deployed commit's author is someone else (the merger); the change's author is the
    // pull request's, as GitHub names it.
    let mut state = approved_and_green();
    state.reviews = vec![review(1, "octocat", "APPROVED", HEAD)];
    let server = fake_github(Arc::new(Mutex::new(state))).await;
    let dir = git_repo();
    let out = github_push_gate(
        dir.path(),
        &server.uri(),
        CONFIG,
        &[("GITHUB_TOKEN", TOKEN)],
    );
    assert_eq!(out.code, 1, "{}\n{}", out.doc, out.stderr);
    let id = out.doc["change_id"].as_str().unwrap().to_string();
    server.verify().await;
    let approve = |by: &str| {
        changegate(dir.path())
            .args(["approve", "--change", &id, "--by", by])
            .output()
            .unwrap()
    };
    let refused = approve("OctoCat");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is the author of change"), "{stderr}");
    let approved = approve("alice");
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
}
