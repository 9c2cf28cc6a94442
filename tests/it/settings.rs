//! Settings resolution that the gate's integrity depends on: in a pull/merge request
//! pipeline the config comes from the default branch — from git, or the forge's API — and
//! anything that keeps it unread fails closed; the pull request's own copy never governs.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::support::remote::Remote;
use crate::support::{
    changegate, default_branch_is_head, git, git_repo, github_actions, gitlab_ci, json_doc,
    reference,
};

/// What the default branch says: enforce, and a freeze that blocks every deploy.
const DEFAULT_BRANCH_CONFIG: &str = "mode = \"enforce\"\n\n[[freeze]]\nfrom = \"2020-01-01T00:00:00Z\"\nto = \"2100-01-01T00:00:00Z\"\nreason = \"locked down\"\n";
/// What the pull request's own copy says: observe, which would let anything pass.
const PR_CONFIG: &str = "mode = \"observe\"\n";

const GH_TOKEN: &str = "ghs_prConfigToken0123456789";
const GL_TOKEN: &str = "glpat-prConfigToken0123";
const GL_JOB_TOKEN: &str = "glcbt-jobTokenNeverSent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forge {
    GitHub,
    GitLab,
}

impl Forge {
    /// The default branch: the reference payload's for GitHub, `CI_DEFAULT_BRANCH` for GitLab.
    fn branch(self) -> &'static str {
        match self {
            Forge::GitHub => "master",
            Forge::GitLab => "main",
        }
    }

    /// Where the API serves the default branch's `.changegate.toml`.
    fn file_path(self) -> &'static str {
        match self {
            Forge::GitHub => "/repos/Codertocat/Hello-World/contents/.changegate.toml",
            Forge::GitLab => "/api/v4/projects/42/repository/files/.changegate.toml/raw",
        }
    }

    /// A fake forge serving `file_answers` for the file, each answer once and in order (the
    /// last one for every request after), and `branch_answer` for GitHub's branch
    /// endpoint; it checks the ref and the token, and any other request fails the test.
    async fn fake(
        self,
        file_answers: Vec<ResponseTemplate>,
        branch_answer: Option<ResponseTemplate>,
    ) -> Remote {
        let server = Remote::start().await;
        let auth = move || match self {
            Forge::GitHub => header("authorization", format!("Bearer {GH_TOKEN}").as_str()),
            Forge::GitLab => header("private-token", GL_TOKEN),
        };
        let count = file_answers.len();
        for (i, answer) in file_answers.into_iter().enumerate() {
            let mut mock = Mock::given(method("GET"))
                .and(path(self.file_path()))
                .and(query_param("ref", self.branch()))
                .and(auth())
                .respond_with(answer);
            if i + 1 < count {
                mock = mock.up_to_n_times(1).expect(1);
            } else {
                mock = mock.expect(1..);
            }
            mock.with_priority(10 + i as u8).mount(&server).await;
        }
        if let Some(answer) = branch_answer {
            Mock::given(method("GET"))
                .and(path("/repos/Codertocat/Hello-World/branches/master"))
                .and(auth())
                .respond_with(answer)
                .expect(1)
                .mount(&server)
                .await;
        }
        server
    }

    /// A dry-run `gate` in this forge's pull/merge request pipeline, with a token that may
    /// read the API at `api`.
    fn gate(self, dir: &Path, api: &str) -> assert_cmd::Command {
        let mut cmd = self.pipeline(dir, api);
        cmd.args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
        cmd
    }

    /// changegate in this forge's pull/merge request pipeline, with a token that may read
    /// the API at `api`.
    fn pipeline(self, dir: &Path, api: &str) -> assert_cmd::Command {
        let mut cmd = changegate(dir);
        match self {
            Forge::GitHub => {
                let event = dir.join("event.json");
                if !event.exists() {
                    std::fs::copy(
                        reference("github-webhooks/examples/pull_request/opened.payload.json"),
                        &event,
                    )
                    .expect("copy payload");
                }
                github_actions(
                    &mut cmd,
                    "pull_request",
                    &event,
                    "Codertocat/Hello-World",
                    "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                )
                .env("GITHUB_API_URL", api)
                .env("GITHUB_TOKEN", GH_TOKEN);
            }
            Forge::GitLab => {
                gitlab_ci(
                    &mut cmd,
                    "acme/payments-api",
                    "7c4f1b2d9e8a6f5c3b1a0d9e8f7a6b5c4d3e2f1a",
                )
                .env("CI_MERGE_REQUEST_IID", "7")
                .env("CI_DEFAULT_BRANCH", "main")
                .env("CI_API_V4_URL", format!("{api}/api/v4"))
                .env("CI_PROJECT_ID", "42")
                .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
                .env("CI_JOB_TOKEN", GL_JOB_TOKEN);
            }
        }
        cmd
    }
}

/// A pull request checkout whose own copy of the config says observe. With
/// `default_branch_config`, its `origin` (a local bare repository) has the default branch
/// holding it; without, its `origin` cannot serve a fetch. Nothing here reaches the network.
fn pr_checkout(forge: Forge, default_branch_config: Option<&str>) -> tempfile::TempDir {
    let repo = git_repo();
    let dir = repo.path();
    let nowhere = dir.join("no-such-origin");
    git(
        dir,
        &["remote", "set-url", "origin", &nowhere.to_string_lossy()],
    );
    if let Some(text) = default_branch_config {
        std::fs::write(dir.join(".changegate.toml"), text).expect("write");
        git(dir, &["add", ".changegate.toml"]);
        git(dir, &["commit", "-q", "-m", "the team's gate"]);
        default_branch_is_head(dir, forge.branch());
    }
    std::fs::write(dir.join(".changegate.toml"), PR_CONFIG).expect("write");
    git(dir, &["add", ".changegate.toml"]);
    git(dir, &["commit", "-q", "-m", "loosen the gate"]);
    repo
}

/// Runs `cmd`: exit code, stdout, stderr.
fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("changegate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The run was blocked by the default branch's freeze in enforce mode: the pull request's
/// observe mode did not count.
#[track_caller]
fn assert_default_branch_governed((code, out, err): &(i32, String, String)) {
    assert_eq!(*code, 1, "{err}");
    let doc = json_doc(out.as_bytes());
    assert_eq!(doc["decision"], "blocked", "{doc}");
    assert_eq!(doc["mode"], "enforce", "{doc}");
    assert!(doc.to_string().contains("locked down"), "{doc}");
}

/// Exit 2, with a message naming the branch, the reason and the fix — and no token.
#[track_caller]
fn assert_fails_closed(
    forge: Forge,
    (code, out, err): &(i32, String, String),
    reason: &str,
    fix: &str,
) {
    assert_eq!(*code, 2, "{out}{err}");
    assert!(out.trim().is_empty(), "no decision was printed: {out}");
    let wanted = format!(
        "cannot read .changegate.toml from the default branch `{}`",
        forge.branch()
    );
    for needle in [wanted.as_str(), reason, "Fix:", fix] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    for secret in [GH_TOKEN, GL_TOKEN, GL_JOB_TOKEN] {
        assert!(!err.contains(secret), "a token leaked: {err}");
    }
}

fn github_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "message": message,
        "documentation_url": "https://docs.github.com/rest/repos/contents#get-repository-content",
        "status": status.to_string()
    }))
}

fn gitlab_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "message": message }))
}

fn error_answer(forge: Forge, status: u16, message: &str) -> ResponseTemplate {
    match forge {
        Forge::GitHub => github_error(status, message),
        Forge::GitLab => gitlab_error(status, message),
    }
}

/// The fix each forge's message gives for a token that cannot read the file.
fn token_fix(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "contents: read",
        Forge::GitLab => "read_repository",
    }
}

/// How the checkout could have read it without the API.
fn fetch_fix(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "git fetch origin master",
        Forge::GitLab => "git fetch origin main",
    }
}

async fn api_5xx_fails_closed(forge: Forge) {
    let repo = pr_checkout(forge, None);
    let server = forge
        .fake(vec![error_answer(forge, 500, "Server Error"); 4], None)
        .await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    assert_fails_closed(forge, &result, "500", fetch_fix(forge));
    assert!(result.2.contains("after retries"), "{}", result.2);
    // Four tries in all, then no more.
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_api_500_fails_closed() {
    api_5xx_fails_closed(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_api_500_fails_closed() {
    api_5xx_fails_closed(Forge::GitLab).await;
}

async fn api_429_fails_closed(forge: Forge) {
    let repo = pr_checkout(forge, None);
    let limited = match forge {
        Forge::GitHub => github_error(429, "API rate limit exceeded for installation"),
        Forge::GitLab => ResponseTemplate::new(429).set_body_string("Retry later"),
    }
    .insert_header("retry-after", "0");
    let server = forge.fake(vec![limited; 4], None).await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    let said = match forge {
        Forge::GitHub => "API rate limit exceeded",
        Forge::GitLab => "Retry later",
    };
    assert_fails_closed(forge, &result, "429", said);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_api_429_fails_closed() {
    api_429_fails_closed(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_api_429_fails_closed() {
    api_429_fails_closed(Forge::GitLab).await;
}

async fn api_403_fails_closed(forge: Forge, message: &str) {
    let repo = pr_checkout(forge, None);
    // Refused once is refused: not retried.
    let refused = error_answer(forge, 403, message);
    let server = forge.fake(vec![refused], None).await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    assert_fails_closed(forge, &result, message, token_fix(forge));
    assert!(result.2.contains("403"), "{}", result.2);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_api_403_fails_closed() {
    api_403_fails_closed(Forge::GitHub, "Resource not accessible by integration").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_api_403_fails_closed() {
    api_403_fails_closed(Forge::GitLab, "403 Forbidden").await;
}

/// A server that accepts each connection, reads the request and hangs up without a word.
/// Returns its base URL and how many connections it took.
fn hang_up_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            drop(stream);
        }
    });
    (url, taken)
}

fn dropped_connection_fails_closed(forge: Forge) {
    let repo = pr_checkout(forge, None);
    let (url, taken) = hang_up_server();
    let result = run(&mut forge.gate(repo.path(), &url));
    assert_fails_closed(forge, &result, "could not be reached", fetch_fix(forge));
    assert!(
        taken.load(Ordering::SeqCst) >= 4,
        "retried before giving up: {}",
        result.2
    );
}

#[test]
fn pr_config_github_dropped_connection_fails_closed() {
    dropped_connection_fails_closed(Forge::GitHub);
}

#[test]
fn pr_config_gitlab_dropped_connection_fails_closed() {
    dropped_connection_fails_closed(Forge::GitLab);
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_without_a_token_fails_closed() {
    let repo = pr_checkout(Forge::GitHub, None);
    let server = Forge::GitHub.fake(vec![], None).await;
    let result = run(Forge::GitHub
        .gate(repo.path(), &server.uri())
        .env_remove("GITHUB_TOKEN"));
    assert_fails_closed(Forge::GitHub, &result, "no GitHub token", "contents: read");
    assert!(result.2.contains("persist-credentials"), "{}", result.2);
    server.verify().await;
}

/// The job token cannot read the repository files API, so it is not even tried.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_with_only_the_job_token_fails_closed() {
    let repo = pr_checkout(Forge::GitLab, None);
    let server = Forge::GitLab.fake(vec![], None).await;
    let result = run(Forge::GitLab
        .gate(repo.path(), &server.uri())
        .env_remove("CHANGEGATE_GITLAB_TOKEN"));
    assert_fails_closed(
        Forge::GitLab,
        &result,
        "the CI job token cannot read the repository files API",
        "CHANGEGATE_GITLAB_TOKEN",
    );
    assert!(result.2.contains("read_repository"), "{}", result.2);
    server.verify().await;
}

/// What GitLab answers a token that cannot see the project (the job token always gets it).
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_project_not_found_fails_closed() {
    let repo = pr_checkout(Forge::GitLab, None);
    let server = Forge::GitLab
        .fake(vec![gitlab_error(404, "404 Project Not Found")], None)
        .await;
    let result = run(&mut Forge::GitLab.gate(repo.path(), &server.uri()));
    assert_fails_closed(
        Forge::GitLab,
        &result,
        "404 Project Not Found",
        "read_repository",
    );
    server.verify().await;
}

/// GitHub says 404 for a repository the token cannot see as for a missing file: when the
/// branch is a 404 as well, nothing is known.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_repository_out_of_sight_fails_closed() {
    let repo = pr_checkout(Forge::GitHub, None);
    let server = Forge::GitHub
        .fake(
            vec![github_error(404, "Not Found")],
            Some(github_error(404, "Not Found")),
        )
        .await;
    let result = run(&mut Forge::GitHub.gate(repo.path(), &server.uri()));
    assert_fails_closed(
        Forge::GitHub,
        &result,
        "the token cannot see this repository",
        "contents: read",
    );
    server.verify().await;
}

/// The default branch truly has no config: the defaults govern (enforce), not the pull
/// request's observe.
#[track_caller]
fn assert_defaults_governed((code, out, err): &(i32, String, String)) {
    assert_eq!(*code, 1, "{err}");
    let doc = json_doc(out.as_bytes());
    assert_eq!(doc["decision"], "needs-approval", "{doc}");
    assert_eq!(doc["mode"], "enforce", "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_no_such_file_gives_the_defaults() {
    let repo = pr_checkout(Forge::GitHub, None);
    let branch = ResponseTemplate::new(200).set_body_json(json!({
        "name": "master", "commit": {"sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"}, "protected": true
    }));
    let server = Forge::GitHub
        .fake(vec![github_error(404, "Not Found")], Some(branch))
        .await;
    let result = run(&mut Forge::GitHub.gate(repo.path(), &server.uri()));
    assert_defaults_governed(&result);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_no_such_file_gives_the_defaults() {
    let repo = pr_checkout(Forge::GitLab, None);
    let server = Forge::GitLab
        .fake(vec![gitlab_error(404, "404 File Not Found")], None)
        .await;
    let result = run(&mut Forge::GitLab.gate(repo.path(), &server.uri()));
    assert_defaults_governed(&result);
    server.verify().await;
}

async fn api_default_branch_governs(forge: Forge) {
    let repo = pr_checkout(forge, None);
    let file = ResponseTemplate::new(200).set_body_string(DEFAULT_BRANCH_CONFIG);
    let server = forge.fake(vec![file], None).await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    assert_default_branch_governed(&result);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_api_default_branch_enforce_beats_pr_observe() {
    api_default_branch_governs(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_api_default_branch_enforce_beats_pr_observe() {
    api_default_branch_governs(Forge::GitLab).await;
}

/// After a failed answer and a retry, the file that arrives is the one that governs.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_api_retried_after_a_503_then_governs() {
    let forge = Forge::GitLab;
    let repo = pr_checkout(forge, None);
    let server = forge
        .fake(
            vec![
                gitlab_error(503, "503 Service Unavailable"),
                ResponseTemplate::new(200).set_body_string(DEFAULT_BRANCH_CONFIG),
            ],
            None,
        )
        .await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    assert_default_branch_governed(&result);
    server.verify().await;
}

async fn checkout_with_the_default_branch_needs_no_api(forge: Forge) {
    let repo = pr_checkout(forge, Some(DEFAULT_BRANCH_CONFIG));
    let server = forge.fake(vec![], None).await;
    let result = run(&mut forge.gate(repo.path(), &server.uri()));
    assert_default_branch_governed(&result);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_checkout_with_origin_default_is_read_from_git() {
    checkout_with_the_default_branch_needs_no_api(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_checkout_with_origin_default_is_read_from_git() {
    checkout_with_the_default_branch_needs_no_api(Forge::GitLab).await;
}

/// A bare `origin` whose default branch holds the team's gate and a pull request branch that
/// loosens it, and a shallow single-branch clone of the pull request branch: the checkout
/// a CI job makes. Returns the holder and the clone's path.
fn shallow_pr_clone(forge: Forge) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let seed = root.path().join("seed");
    std::fs::create_dir(&seed).expect("mkdir");
    git(&seed, &["init", "-q", "-b", forge.branch()]);
    std::fs::write(seed.join(".changegate.toml"), DEFAULT_BRANCH_CONFIG).expect("write");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "the team's gate"]);
    git(&seed, &["checkout", "-q", "-b", "loosen"]);
    std::fs::write(seed.join(".changegate.toml"), PR_CONFIG).expect("write");
    git(&seed, &["commit", "-q", "-am", "loosen the gate"]);
    git(
        root.path(),
        &["clone", "-q", "--bare", "seed", "origin.git"],
    );
    let origin = format!("file://{}", root.path().join("origin.git").display());
    git(
        root.path(),
        &[
            "clone",
            "-q",
            "--depth=1",
            "--single-branch",
            "--branch",
            "loosen",
            &origin,
            "work",
        ],
    );
    let work = root.path().join("work");
    let refs = git(&work, &["for-each-ref", "--format=%(refname)"]);
    assert!(
        !refs.contains(&format!("refs/remotes/origin/{}", forge.branch())),
        "{refs}"
    );
    (root, work)
}

async fn shallow_checkout_fetches_the_default_branch(forge: Forge) {
    let (_root, work) = shallow_pr_clone(forge);
    let server = forge.fake(vec![], None).await;
    let result = run(&mut forge.gate(&work, &server.uri()));
    assert_default_branch_governed(&result);
    server.verify().await;
    let fetched = git(
        &work,
        &[
            "rev-parse",
            "--verify",
            &format!("refs/remotes/origin/{}", forge.branch()),
        ],
    );
    assert_eq!(fetched.len(), 40, "{fetched}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_shallow_checkout_fetches_the_default_branch() {
    shallow_checkout_fetches_the_default_branch(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_shallow_checkout_fetches_the_default_branch() {
    shallow_checkout_fetches_the_default_branch(Forge::GitLab).await;
}

/// A config named by path inside the checkout is the pull request's to edit too: it is read
/// from the default branch as well.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_explicit_path_in_the_checkout_comes_from_the_default_branch() {
    let forge = Forge::GitHub;
    let repo = git_repo();
    let dir = repo.path();
    let nowhere = dir.join("no-such-origin");
    git(
        dir,
        &["remote", "set-url", "origin", &nowhere.to_string_lossy()],
    );
    std::fs::create_dir(dir.join("ci")).expect("mkdir");
    std::fs::write(dir.join("ci/gate.toml"), DEFAULT_BRANCH_CONFIG).expect("write");
    git(dir, &["add", "ci/gate.toml"]);
    git(dir, &["commit", "-q", "-m", "the team's gate"]);
    default_branch_is_head(dir, "master");
    std::fs::write(dir.join("ci/gate.toml"), PR_CONFIG).expect("write");
    git(dir, &["commit", "-q", "-am", "loosen the gate"]);
    let server = forge.fake(vec![], None).await;
    for config in ["ci/gate.toml", "./ci/../ci/gate.toml"] {
        let result = run(forge
            .gate(dir, &server.uri())
            .env("CHANGEGATE_CONFIG", config));
        assert_default_branch_governed(&result);
    }
    let absolute = dir.join("ci/gate.toml");
    let result = run(forge
        .gate(dir, &server.uri())
        .arg("--config")
        .arg(&absolute));
    assert_default_branch_governed(&result);
    // A path the default branch does not have is no licence for the work tree's file.
    std::fs::write(dir.join("ci/new.toml"), PR_CONFIG).expect("write");
    let (code, _, err) = run(forge
        .gate(dir, &server.uri())
        .env("CHANGEGATE_CONFIG", "ci/new.toml"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("origin/master:ci/new.toml does not exist on the default branch"),
        "{err}"
    );
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_unknown_default_branch_fails_closed() {
    let repo = pr_checkout(Forge::GitHub, Some(DEFAULT_BRANCH_CONFIG));
    let mut event: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference(
            "github-webhooks/examples/pull_request/opened.payload.json",
        ))
        .expect("payload"),
    )
    .expect("json");
    event["repository"]
        .as_object_mut()
        .expect("repository")
        .remove("default_branch");
    std::fs::write(repo.path().join("event.json"), event.to_string()).expect("write");
    let server = Forge::GitHub.fake(vec![], None).await;
    let (code, _, err) = run(&mut Forge::GitHub.gate(repo.path(), &server.uri()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("default branch is unknown"), "{err}");
    assert!(err.contains("repository.default_branch"), "{err}");
    server.verify().await;

    // GitLab without CI_DEFAULT_BRANCH, and with a name git would read as an option.
    let repo = pr_checkout(Forge::GitLab, Some(DEFAULT_BRANCH_CONFIG));
    let server = Forge::GitLab.fake(vec![], None).await;
    let (code, _, err) = run(Forge::GitLab
        .gate(repo.path(), &server.uri())
        .env_remove("CI_DEFAULT_BRANCH"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CI_DEFAULT_BRANCH is not set"), "{err}");
    let (code, _, err) = run(Forge::GitLab
        .gate(repo.path(), &server.uri())
        .env("CI_DEFAULT_BRANCH", "--upload-pack=touch pwned"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a valid git branch name"), "{err}");
    assert!(!repo.path().join("pwned").exists());
    server.verify().await;
}

/// The schema needs no config: it prints even where the default branch cannot be read.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_is_not_needed_for_the_schema() {
    let repo = pr_checkout(Forge::GitLab, None);
    let server = Forge::GitLab.fake(vec![], None).await;
    let (code, out, err) = run(Forge::GitLab
        .pipeline(repo.path(), &server.uri())
        .env_remove("CHANGEGATE_GITLAB_TOKEN")
        .args(["config", "schema"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"$schema\""), "{out}");
    server.verify().await;
}

/// Where git cannot read the checkout (the container images have no git), the fix is the
/// token alone: fetching the default branch would not help.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_without_git_the_fix_is_the_token_alone() {
    let forge = Forge::GitHub;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".changegate.toml"), PR_CONFIG).expect("write");
    let server = forge
        .fake(
            vec![github_error(403, "Resource not accessible by integration")],
            None,
        )
        .await;
    let result = run(forge
        .gate(dir.path(), &server.uri())
        .env("GITHUB_WORKSPACE", dir.path()));
    assert_fails_closed(forge, &result, "no git checkout", "contents: read");
    assert!(!result.2.contains("git fetch origin"), "{}", result.2);
    server.verify().await;
}

/// A workspace reused from an earlier job keeps its `refs/remotes/origin/<default>`: here
/// one from before the team added its gate. The run fetches the default branch anyway, so
/// the freeze pushed since governs — and a complete clone is not made shallow by it.
async fn stale_default_branch_ref_is_fetched_again(forge: Forge) {
    let root = tempfile::tempdir().expect("tempdir");
    let seed = root.path().join("seed");
    std::fs::create_dir(&seed).expect("mkdir");
    git(&seed, &["init", "-q", "-b", forge.branch()]);
    std::fs::write(seed.join("app.txt"), "v1\n").expect("write");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "no gate yet"]);
    git(&seed, &["checkout", "-q", "-b", "loosen"]);
    std::fs::write(seed.join(".changegate.toml"), PR_CONFIG).expect("write");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "loosen the gate"]);
    git(
        root.path(),
        &["clone", "-q", "--bare", "seed", "origin.git"],
    );
    let origin = format!("file://{}", root.path().join("origin.git").display());
    git(
        root.path(),
        &["clone", "-q", "-b", "loosen", &origin, "work"],
    );
    let work = root.path().join("work");
    let stale = git(&work, &["rev-parse", &format!("origin/{}", forge.branch())]);
    // Someone else merges the team's gate into the default branch.
    git(
        root.path(),
        &["clone", "-q", "-b", forge.branch(), &origin, "other"],
    );
    let other = root.path().join("other");
    std::fs::write(other.join(".changegate.toml"), DEFAULT_BRANCH_CONFIG).expect("write");
    git(&other, &["add", "."]);
    git(&other, &["commit", "-q", "-m", "the team's gate"]);
    git(&other, &["push", "-q", "origin", forge.branch()]);

    let server = forge.fake(vec![], None).await;
    let result = run(&mut forge.gate(&work, &server.uri()));
    assert_default_branch_governed(&result);
    server.verify().await;
    let now = git(&work, &["rev-parse", &format!("origin/{}", forge.branch())]);
    assert_ne!(now, stale);
    assert!(
        !work.join(".git/shallow").exists(),
        "the clone became shallow"
    );
    assert_eq!(git(&work, &["rev-list", "--count", "HEAD"]).trim(), "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_github_stale_default_branch_ref_is_fetched_again() {
    stale_default_branch_ref_is_fetched_again(Forge::GitHub).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pr_config_gitlab_stale_default_branch_ref_is_fetched_again() {
    stale_default_branch_ref_is_fetched_again(Forge::GitLab).await;
}

/// Run from a subdirectory, paths are still the repository's: the default file is the
/// directory's own `.changegate.toml` and `--config ../x` or an absolute path inside the
/// repository are read from the default branch too.
#[tokio::test(flavor = "multi_thread")]
async fn pr_config_run_from_a_subdirectory_reads_the_default_branch() {
    let forge = Forge::GitHub;
    let repo = git_repo();
    let dir = repo.path();
    for sub in ["svc", "shared"] {
        std::fs::create_dir(dir.join(sub)).expect("mkdir");
    }
    let files = ["svc/.changegate.toml", "shared/changegate.toml"];
    for file in files {
        std::fs::write(dir.join(file), DEFAULT_BRANCH_CONFIG).expect("write");
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "the team's gates"]);
    default_branch_is_head(dir, "master");
    for file in files {
        std::fs::write(dir.join(file), PR_CONFIG).expect("write");
    }
    git(dir, &["commit", "-q", "-am", "loosen the gates"]);
    let svc = dir.join("svc");
    let server = forge.fake(vec![], None).await;
    let absolute = dir.join("shared/changegate.toml");
    for config in [
        None,
        Some(Path::new("../shared/changegate.toml")),
        Some(&absolute),
    ] {
        let mut cmd = forge.gate(&svc, &server.uri());
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        assert_default_branch_governed(&run(&mut cmd));
    }
    server.verify().await;

    // No checkout and no CI workspace to take the path from: it cannot be mapped.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::fs::write(elsewhere.path().join(".changegate.toml"), PR_CONFIG).expect("write");
    let (code, out, err) = run(&mut forge.gate(elsewhere.path(), &server.uri()));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("cannot be mapped to a file of the repository"),
        "{err}"
    );
}

/// A checkout whose default branch (published on its `origin`) holds the team's gate, at a
/// commit whose own copy says observe; both forges' default branches.
fn feature_checkout() -> tempfile::TempDir {
    let repo = pr_checkout(Forge::GitHub, Some(DEFAULT_BRANCH_CONFIG));
    git(
        &repo.path().join(".git/test-origin.git"),
        &["branch", "main", "master"],
    );
    repo
}

/// changegate in a GitHub Actions job for `event` on `git_ref`, with no token (git alone
/// reads the default branch), as a dry-run gate.
fn github_job(dir: &Path, event: &str, git_ref: &str) -> assert_cmd::Command {
    let payload = dir.join("event.json");
    if !payload.exists() {
        std::fs::copy(
            reference("github-webhooks/examples/pull_request/opened.payload.json"),
            &payload,
        )
        .expect("copy payload");
    }
    let mut cmd = changegate(dir);
    github_actions(
        &mut cmd,
        event,
        &payload,
        "Codertocat/Hello-World",
        &"a".repeat(40),
    )
    .env("GITHUB_API_URL", "http://127.0.0.1:9")
    .env("GITHUB_REF", git_ref)
    .args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    cmd
}

/// changegate in a GitLab CI job with these variables, as a dry-run gate.
fn gitlab_job(dir: &Path, vars: &[(&str, &str)]) -> assert_cmd::Command {
    let mut cmd = changegate(dir);
    gitlab_ci(&mut cmd, "acme/payments-api", &"a".repeat(40))
        .env_remove("CI_COMMIT_BRANCH")
        .env("CI_API_V4_URL", "http://127.0.0.1:9/api/v4");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    cmd
}

/// The checkout's own copy governed: observe, so the dry run passes.
#[track_caller]
fn assert_own_copy_governed((code, out, err): &(i32, String, String)) {
    assert_eq!(*code, 0, "{err}");
    assert_eq!(json_doc(out.as_bytes())["mode"], "observe", "{out}");
}

/// Pushes to other branches, tags, merge queues and runs by hand gate a ref that is not
/// the default branch: its config comes from the default branch. Only the default
/// branch's own pipelines, and local runs, read the checkout's copy.
#[test]
fn pipelines_of_other_refs_are_governed_by_the_default_branch() {
    let repo = feature_checkout();
    let dir = repo.path();
    for (event, git_ref) in [
        ("push", "refs/heads/pr"),
        ("push", "refs/tags/v1.2.0"),
        ("merge_group", "refs/heads/gh-readonly-queue/master/pr-2"),
        ("workflow_dispatch", "refs/heads/pr"),
        ("release", "refs/tags/v1.2.0"),
    ] {
        let result = run(&mut github_job(dir, event, git_ref));
        assert_default_branch_governed(&result);
    }
    for vars in [
        &[("CI_COMMIT_BRANCH", "pr"), ("CI_DEFAULT_BRANCH", "main")][..],
        &[("CI_COMMIT_TAG", "v1.2.0"), ("CI_DEFAULT_BRANCH", "main")][..],
        &[("CI_DEFAULT_BRANCH", "main")][..],
    ] {
        assert_default_branch_governed(&run(&mut gitlab_job(dir, vars)));
    }

    assert_own_copy_governed(&run(&mut github_job(dir, "push", "refs/heads/master")));
    assert_own_copy_governed(&run(&mut github_job(dir, "schedule", "refs/heads/master")));
    assert_own_copy_governed(&run(&mut gitlab_job(
        dir,
        &[("CI_COMMIT_BRANCH", "main"), ("CI_DEFAULT_BRANCH", "main")],
    )));
    let mut local = changegate(dir);
    local.args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    assert_own_copy_governed(&run(&mut local));
}

/// Where the default branch is unknown, a pipeline of another ref cannot know its config.
#[test]
fn pipelines_of_other_refs_without_a_default_branch_fail_closed() {
    let repo = feature_checkout();
    let dir = repo.path();
    std::fs::write(dir.join("event.json"), r#"{"ref":"refs/heads/pr"}"#).expect("write");
    let (code, _, err) = run(&mut github_job(dir, "push", "refs/heads/pr"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("default branch is unknown"), "{err}");
    let (code, _, err) =
        run(gitlab_job(dir, &[("CI_COMMIT_BRANCH", "pr")]).env_remove("CI_DEFAULT_BRANCH"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("CI_DEFAULT_BRANCH is not set"), "{err}");
}

const SN_PASSWORD: &str = "hunter2-Secret";

/// `config check` with these variables set.
fn config_check(config: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let repo = git_repo();
    std::fs::write(repo.path().join(".changegate.toml"), config).expect("write");
    let mut cmd = changegate(repo.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.args(["config", "check"]).output().expect("run");
    drop(repo);
    out
}

#[test]
fn credentials_in_a_base_url_are_refused_without_repeating_them() {
    for (var, url, creds) in [
        (
            "CHANGEGATE_SERVICENOW_URL",
            format!("https://svc:{SN_PASSWORD}@example.service-now.com"),
            "put credentials in CHANGEGATE_SERVICENOW_USER/PASSWORD",
        ),
        (
            "CHANGEGATE_JIRA_URL",
            format!("https://me%40example.com:{SN_PASSWORD}@example.atlassian.net"),
            "put credentials in CHANGEGATE_JIRA_USER/TOKEN",
        ),
        (
            "GITHUB_API_URL",
            format!("https://x-access-token:{SN_PASSWORD}@ghe.example.com/api/v3"),
            "put credentials in CHANGEGATE_GITHUB_TOKEN",
        ),
        (
            "CI_API_V4_URL",
            format!("https://oauth2:{SN_PASSWORD}@gitlab.example.com/api/v4"),
            "put credentials in CHANGEGATE_GITLAB_TOKEN",
        ),
    ] {
        let out = config_check("", &[(var, &url)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stdout}{stderr}");
        assert!(stderr.contains(creds), "{var}: {stderr}");
        assert!(
            !stderr.contains(SN_PASSWORD) && !stdout.contains(SN_PASSWORD),
            "{var} leaked: {stdout}{stderr}"
        );
    }
    // A user name alone is refused too, and the URL is shown without it.
    let out = config_check(
        "[servicenow]\nurl = \"https://svc@example.service-now.com\"\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("https://example.service-now.com/") && !stderr.contains("svc@"),
        "{stderr}"
    );
}

#[test]
fn a_gate_with_credentials_in_the_url_sends_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://svc:{SN_PASSWORD}@{}",
        listener.local_addr().expect("addr")
    );
    let repo = git_repo();
    let out = changegate(repo.path())
        .env("CHANGEGATE_SERVICENOW_URL", &url)
        .env("CHANGEGATE_SERVICENOW_USER", "svc")
        .env("CHANGEGATE_SERVICENOW_PASSWORD", SN_PASSWORD)
        .env("NO_PROXY", "127.0.0.1")
        .args(["--backend", "servicenow", "-vvv", "gate", "--wait", "0"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("put credentials in CHANGEGATE_SERVICENOW_USER/PASSWORD"),
        "{stderr}"
    );
    assert!(!stdout.contains(SN_PASSWORD) && !stderr.contains(SN_PASSWORD));
    assert!(
        listener.accept().is_err(),
        "a connection was made to the refused URL"
    );
}

#[test]
fn plain_http_to_another_host_needs_allow_insecure_http() {
    // TEST-NET addresses: refused while the settings are resolved, before any request.
    for (var, url) in [
        ("CHANGEGATE_SERVICENOW_URL", "http://192.0.2.1"),
        ("CHANGEGATE_JIRA_URL", "http://jira.example.com"),
        ("GITHUB_API_URL", "http://192.0.2.1/api/v3"),
    ] {
        let out = config_check("", &[(var, url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.contains("plain http://") && stderr.contains("allow_insecure_http = true"),
            "{var}: {stderr}"
        );
        let out = config_check("[http]\nallow_insecure_http = true\n", &[(var, url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{var}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("plain http allowed to any host"),
            "{var}: {stdout}"
        );
    }
    // This machine stays allowed: the test fakes listen there.
    for url in [
        "http://127.0.0.1:8080",
        "http://127.3.2.1",
        "http://localhost:1",
        "http://[::1]:80",
    ] {
        let out = config_check("", &[("CHANGEGATE_SERVICENOW_URL", url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{url}: {stderr}");
    }
}
