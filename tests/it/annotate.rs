//! Pull/merge request annotations: the real binary against in-process fakes of the GitHub and
//! GitLab endpoints it uses. Every fake is a `support::remote::Remote`: a request nobody
//! expected fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::remote::Remote;
use crate::support::{
    Silent, changegate, default_branch_is_head, git, git_repo, github_actions, reference,
};

const OWNER_REPO: &str = "Codertocat/Hello-World";
/// The PR head in `pull_request/opened.payload.json`: where checks belong.
const PR_HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
/// What `GITHUB_SHA` is in a pull_request run: the merge commit of the PR's merge ref.
const MERGE_SHA: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const TOKEN: &str = "ghs_fakeActionsToken0123456789";
/// The sticky comment's marker: a compatibility contract (changing it orphans old comments).
const MARKER_PRODUCTION: &str =
    "<!-- changegate:annotation environment=production service=Codertocat/Hello-World -->";
const MARKER_STAGING: &str =
    "<!-- changegate:annotation environment=staging service=Codertocat/Hello-World -->";

/// Pre-approves a first change: no track record needed.
const PRE_APPROVE: &str = "[policy]\nmin_history = 0\n";

// ---------------------------------------------------------------------------------------
// Fake GitHub: stateful comments, check runs, statuses, PRs of a commit, App installation.

#[derive(Debug, Clone)]
struct FakeComment {
    id: u64,
    issue: u64,
    body: String,
    login: String,
    kind: String,
}

#[derive(Debug, Default)]
struct GhState {
    uri: String,
    /// The bearer token every repository call must carry.
    token: String,
    read_only: bool,
    next_id: u64,
    comments: Vec<FakeComment>,
    /// Every body a comment had, by comment id, in order.
    history: BTreeMap<u64, Vec<String>>,
    check_runs: Vec<Value>,
    statuses: Vec<Value>,
    pulls_of_commit: BTreeMap<String, Value>,
    /// The files of every pull request (`GET /pulls/{n}/files`).
    pull_files: Vec<Value>,
    /// Comparisons by `BASE...HEAD` (`GET /compare/{basehead}`).
    comparisons: BTreeMap<String, Value>,
    /// Rate limits to answer before serving, by "METHOD path-prefix".
    limits: Vec<(String, ResponseTemplate)>,
}

type Gh = Arc<Mutex<GhState>>;

fn forbidden() -> ResponseTemplate {
    ResponseTemplate::new(403).set_body_json(json!({
        "message": "Resource not accessible by integration",
        "documentation_url": "https://docs.github.com/rest",
        "status": "403"
    }))
}

fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn bearer(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

fn query(req: &Request, key: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Checks auth and pending rate limits; `Some` is the answer to give instead.
fn gate_request(gh: &Gh, req: &Request) -> Option<ResponseTemplate> {
    let mut s = gh.lock().unwrap();
    if bearer(req).as_deref() != Some(s.token.as_str()) {
        return Some(unauthorized());
    }
    let key = format!("{} {}", req.method, req.url.path());
    if let Some(i) = s
        .limits
        .iter()
        .position(|(prefix, _)| key.starts_with(prefix.as_str()))
    {
        return Some(s.limits.remove(i).1);
    }
    None
}

fn not_found() -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}))
}

/// The `body` of a JSON request (a comment's text).
fn body_text(req: &Request) -> String {
    req.body_json::<Value>().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The numeric id that ends a request's path.
fn last_segment_id(req: &Request) -> u64 {
    req.url.path().rsplit('/').next().unwrap().parse().unwrap()
}

/// A route of the fake that only reads, or one that writes (refused while read-only).
const READS: bool = false;
const WRITES: bool = true;

/// One route of the fake GitHub: every request first passes [`gate_request`] (token and
/// pending rate limits); a writing route then answers 403 while the fake is read-only.
struct Route<'a> {
    server: &'a MockServer,
    state: &'a Gh,
    verb: &'static str,
    writes: bool,
}

impl Route<'_> {
    async fn mount<M, F>(self, matcher: M, handle: F)
    where
        M: wiremock::Match + 'static,
        F: Fn(&mut GhState, &Request) -> ResponseTemplate + Send + Sync + 'static,
    {
        let gh = self.state.clone();
        let writes = self.writes;
        Mock::given(method(self.verb))
            .and(matcher)
            .respond_with(move |req: &Request| {
                if let Some(r) = gate_request(&gh, req) {
                    return r;
                }
                let mut s = gh.lock().unwrap();
                if writes && s.read_only {
                    return forbidden();
                }
                handle(&mut s, req)
            })
            .mount(self.server)
            .await;
    }
}

fn comment_json(c: &FakeComment) -> Value {
    json!({
        "id": c.id, "node_id": format!("IC_{}", c.id), "body": c.body,
        "html_url": format!("https://github.com/{OWNER_REPO}/pull/{}#issuecomment-{}", c.issue, c.id),
        "user": {"login": c.login, "id": 41898282, "type": c.kind},
        "author_association": "NONE", "created_at": "2026-03-02T10:00:00Z", "updated_at": "2026-03-02T10:00:00Z"
    })
}

struct FakeGitHub {
    server: Remote,
    state: Gh,
}

impl FakeGitHub {
    async fn start(token: &str) -> FakeGitHub {
        let server = Remote::start().await;
        let state: Gh = Arc::new(Mutex::new(GhState {
            uri: server.uri(),
            token: token.to_string(),
            next_id: 1000,
            ..GhState::default()
        }));
        let repo = format!("/repos/{OWNER_REPO}");
        let route = |verb: &'static str, writes: bool| Route {
            server: &server,
            state: &state,
            verb,
            writes,
        };

        route("GET", READS)
            .mount(
                path_regex(format!(r"^{repo}/issues/\d+/comments$")),
                |s, req| {
                    let issue: u64 = req.url.path().split('/').nth(5).unwrap().parse().unwrap();
                    let per_page: usize = query(req, "per_page").map_or(30, |p| p.parse().unwrap());
                    let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
                    let all: Vec<&FakeComment> = s.comments.iter().filter(|c| c.issue == issue).collect();
                    let items: Vec<Value> = all.iter().skip((page - 1) * per_page).take(per_page).map(|c| comment_json(c)).collect();
                    let mut r = ResponseTemplate::new(200).set_body_json(items);
                    if page * per_page < all.len() {
                        // GitHub's next links are absolute and name the repository by id.
                        let next = format!("{}/repositories/1296269/issues/{issue}/comments?per_page={per_page}&page={}", s.uri, page + 1);
                        r = r.insert_header("link", format!("<{next}>; rel=\"next\"").as_str());
                    }
                    r
                },
            )
            .await;

        // The Link header's form of the same listing.
        route("GET", READS)
            .mount(
                path_regex(r"^/repositories/1296269/issues/\d+/comments$"),
                |s, req| {
                    let issue: u64 = req.url.path().split('/').nth(4).unwrap().parse().unwrap();
                    let per_page: usize = query(req, "per_page").map_or(30, |p| p.parse().unwrap());
                    let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
                    let items: Vec<Value> = s
                        .comments
                        .iter()
                        .filter(|c| c.issue == issue)
                        .skip((page - 1) * per_page)
                        .take(per_page)
                        .map(comment_json)
                        .collect();
                    ResponseTemplate::new(200).set_body_json(items)
                },
            )
            .await;

        route("POST", WRITES)
            .mount(
                path_regex(format!(r"^{repo}/issues/\d+/comments$")),
                |s, req| {
                    let issue: u64 = req.url.path().split('/').nth(5).unwrap().parse().unwrap();
                    let body = body_text(req);
                    s.next_id += 1;
                    let c = FakeComment {
                        id: s.next_id,
                        issue,
                        body: body.clone(),
                        login: "github-actions[bot]".into(),
                        kind: "Bot".into(),
                    };
                    s.history.entry(c.id).or_default().push(body);
                    s.comments.push(c.clone());
                    ResponseTemplate::new(201).set_body_json(comment_json(&c))
                },
            )
            .await;

        route("PATCH", WRITES)
            .mount(
                path_regex(format!(r"^{repo}/issues/comments/\d+$")),
                |s, req| {
                    let id = last_segment_id(req);
                    let body = body_text(req);
                    let Some(c) = s.comments.iter_mut().find(|c| c.id == id) else {
                        return not_found();
                    };
                    assert_eq!(
                        c.kind, "Bot",
                        "changegate edited a comment it did not write: {c:?}"
                    );
                    c.body = body.clone();
                    let out = comment_json(c);
                    s.history.entry(id).or_default().push(body);
                    ResponseTemplate::new(200).set_body_json(out)
                },
            )
            .await;

        route("GET", READS)
            .mount(
                path_regex(format!(r"^{repo}/commits/[0-9a-f]{{40}}/check-runs$")),
                |s, req| {
                    let sha = req.url.path().split('/').nth(5).unwrap().to_string();
                    let name = query(req, "check_name");
                    let runs: Vec<Value> = s
                        .check_runs
                        .iter()
                        .filter(|r| {
                            r["head_sha"] == sha.as_str()
                                && name.as_deref().is_none_or(|n| r["name"] == n)
                        })
                        .cloned()
                        .collect();
                    ResponseTemplate::new(200)
                        .set_body_json(json!({"total_count": runs.len(), "check_runs": runs}))
                },
            )
            .await;

        route("POST", WRITES)
            .mount(path(format!("{repo}/check-runs")), |s, req| {
                let mut run = req.body_json::<Value>().unwrap();
                assert!(
                    run["name"].is_string() && run["head_sha"].is_string(),
                    "{run}"
                );
                s.next_id += 1;
                run["id"] = json!(s.next_id);
                s.check_runs.push(run.clone());
                ResponseTemplate::new(201).set_body_json(run)
            })
            .await;

        route("PATCH", WRITES)
            .mount(path_regex(format!(r"^{repo}/check-runs/\d+$")), |s, req| {
                let id = last_segment_id(req);
                let patch = req.body_json::<Value>().unwrap();
                let Some(run) = s.check_runs.iter_mut().find(|r| r["id"] == id) else {
                    return not_found();
                };
                for (k, v) in patch.as_object().unwrap() {
                    run[k] = v.clone();
                }
                ResponseTemplate::new(200).set_body_json(run.clone())
            })
            .await;

        route("POST", WRITES)
            .mount(
                path_regex(format!(r"^{repo}/statuses/[0-9a-f]{{40}}$")),
                |s, req| {
                    let mut status = req.body_json::<Value>().unwrap();
                    status["sha"] = json!(req.url.path().rsplit('/').next().unwrap());
                    s.statuses.push(status.clone());
                    ResponseTemplate::new(201).set_body_json(status)
                },
            )
            .await;

        route("GET", READS)
            .mount(
                path_regex(format!(r"^{repo}/commits/[0-9a-f]{{40}}/pulls$")),
                |s, req| {
                    let sha = req.url.path().split('/').nth(5).unwrap();
                    ResponseTemplate::new(200)
                        .set_body_json(s.pulls_of_commit.get(sha).cloned().unwrap_or(json!([])))
                },
            )
            .await;

        route("GET", READS)
            .mount(
                path_regex(format!(r"^{repo}/pulls/\d+/files$")),
                |s, req| {
                    let per_page: usize = query(req, "per_page").map_or(30, |p| p.parse().unwrap());
                    let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
                    let items: Vec<Value> = s
                        .pull_files
                        .iter()
                        .skip((page - 1) * per_page)
                        .take(per_page)
                        .cloned()
                        .collect();
                    let mut r = ResponseTemplate::new(200).set_body_json(items);
                    if page * per_page < s.pull_files.len() {
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

        route("GET", READS)
            .mount(path_regex(format!(r"^{repo}/compare/[^/]+$")), |s, req| {
                let basehead = req.url.path().rsplit('/').next().unwrap();
                match s.comparisons.get(basehead) {
                    Some(c) => ResponseTemplate::new(200).set_body_json(c),
                    None => not_found(),
                }
            })
            .await;

        FakeGitHub { server, state }
    }

    /// Nothing else may be asked: any other request fails the test here, or when the fake
    /// is dropped (the [`Remote`]'s catch-all).
    async fn verify(&self) {
        self.server.verify().await;
    }

    async fn count(&self, verb: &str, path_re: &str) -> usize {
        let re = regex::Regex::new(path_re).unwrap();
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == verb && re.is_match(r.url.path()))
            .count()
    }

    fn comments(&self, issue: u64) -> Vec<FakeComment> {
        self.state
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.issue == issue)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary under GitHub Actions.

struct Pipeline {
    dir: tempfile::TempDir,
    event: PathBuf,
    default_branch: String,
}

impl Pipeline {
    /// A checkout with a config, and a copy of a reference webhook payload as the event.
    fn new(config: &str, payload: &str, edit: impl FnOnce(&mut Value)) -> Pipeline {
        let dir = git_repo();
        std::fs::write(dir.path().join(".changegate.toml"), config).unwrap();
        let mut event: Value = serde_json::from_str(
            &std::fs::read_to_string(reference(&format!("github-webhooks/examples/{payload}")))
                .unwrap(),
        )
        .unwrap();
        edit(&mut event);
        // The config is the default branch's, as a pull-request pipeline reads it.
        let default_branch = event["repository"]["default_branch"]
            .as_str()
            .unwrap_or("main")
            .to_string();
        default_branch_is_head(dir.path(), &default_branch);
        let event_path = dir.path().join("event.json");
        std::fs::write(&event_path, serde_json::to_string(&event).unwrap()).unwrap();
        Pipeline {
            dir,
            event: event_path,
            default_branch,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Adds a config file to the default branch, where a pull request pipeline reads it.
    fn merge_config(&self, file: &str, text: &str) {
        std::fs::write(self.path().join(file), text).unwrap();
        git(self.path(), &["add", file]);
        git(self.path(), &["commit", "-q", "-m", "another config"]);
        default_branch_is_head(self.path(), &self.default_branch);
    }

    fn github(&self, api: &str, event_name: &str, sha: &str) -> assert_cmd::Command {
        let mut cmd = changegate(self.path());
        github_actions(&mut cmd, event_name, &self.event, OWNER_REPO, sha)
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_API_URL", api)
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_ACTOR", "octocat");
        cmd
    }
}

fn run(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn re_runs_leave_one_comment_per_environment_edited_in_place() {
    let gh = FakeGitHub::start(TOKEN).await;
    {
        // 120 comments by people (so the listing spans two pages), one of which quotes our
        // production marker: it must never be taken for ours, nor edited.
        let mut s = gh.state.lock().unwrap();
        for i in 0..120u64 {
            let body = if i == 60 {
                format!("copied from the bot: {MARKER_PRODUCTION} pre-approved!")
            } else {
                format!("review comment {i}")
            };
            s.comments.push(FakeComment {
                id: i + 1,
                issue: 2,
                body,
                login: "mallory".into(),
                kind: "User".into(),
            });
        }
    }
    let p = Pipeline::new(PRE_APPROVE, "pull_request/opened.payload.json", |_| {});
    let uri = gh.server.uri();
    let gate = |env: &str| {
        let mut c = p.github(&uri, "pull_request", MERGE_SHA);
        c.env("GITHUB_TOKEN", TOKEN)
            .args(["gate", "--environment", env]);
        c
    };

    let (code, _, err) = run(&mut gate("production"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&mut gate("staging"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&mut gate("production"));
    assert_eq!(code, 0, "{err}");
    let mut record = p.github(&uri, "pull_request", MERGE_SHA);
    record.env("GITHUB_TOKEN", TOKEN).args([
        "record",
        "--environment",
        "production",
        "--outcome",
        "success",
    ]);
    let (code, _, err) = run(&mut record);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");

    let ours: Vec<FakeComment> = gh
        .comments(2)
        .into_iter()
        .filter(|c| c.kind == "Bot")
        .collect();
    assert_eq!(ours.len(), 2, "one comment per environment: {ours:#?}");
    let production: Vec<&FakeComment> = ours
        .iter()
        .filter(|c| c.body.contains(MARKER_PRODUCTION))
        .collect();
    let staging: Vec<&FakeComment> = ours
        .iter()
        .filter(|c| c.body.contains(MARKER_STAGING))
        .collect();
    assert_eq!((production.len(), staging.len()), (1, 1));
    assert!(
        production[0].body.contains("🚀 changegate: deployed"),
        "{}",
        production[0].body
    );
    assert!(
        production[0].body.contains("outcome: success"),
        "{}",
        production[0].body
    );
    assert!(
        staging[0].body.contains("pre-approved"),
        "{}",
        staging[0].body
    );
    // Edited in place: the production comment went from pre-approved to deployed.
    let history = gh
        .state
        .lock()
        .unwrap()
        .history
        .get(&production[0].id)
        .cloned()
        .unwrap();
    assert!(history.len() >= 2, "{history:?}");
    assert!(history[0].contains("pre-approved") && !history[0].contains("outcome: success"));
    assert_eq!(gh.count("POST", r"/issues/2/comments$").await, 2);
    assert!(gh.count("PATCH", r"/issues/comments/\d+$").await >= 1);
    // The planted comment is untouched.
    let planted = gh.comments(2).into_iter().find(|c| c.id == 61).unwrap();
    assert_eq!(
        planted.body,
        format!("copied from the bot: {MARKER_PRODUCTION} pre-approved!")
    );
    // Pagination: the second page of comments was read through the Link header.
    assert!(
        gh.count("GET", r"^/repositories/1296269/issues/2/comments$")
            .await
            >= 4
    );

    // One check run per environment, on the PR's head commit, updated in place.
    let runs = gh.state.lock().unwrap().check_runs.clone();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let prod = runs
        .iter()
        .find(|r| r["name"] == "changegate / production")
        .unwrap();
    assert_eq!(prod["head_sha"], PR_HEAD);
    assert_eq!(prod["conclusion"], "success");
    assert!(
        prod["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("**track\\-record**"),
        "{prod}"
    );
    assert!(gh.state.lock().unwrap().statuses.is_empty());
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_change_is_blocked_on_the_comment_and_the_check_run() {
    let gh = FakeGitHub::start(TOKEN).await;
    // No track record: the change needs approval.
    let p = Pipeline::new("", "pull_request/opened.payload.json", |_| {});
    let uri = gh.server.uri();
    let gate = || {
        let mut c = p.github(&uri, "pull_request", MERGE_SHA);
        c.env("GITHUB_TOKEN", TOKEN).args(["gate", "--wait", "0"]);
        c
    };
    let (code, _, err) = run(&mut gate());
    assert_eq!(code, 1, "{err}");
    let out = changegate(p.path())
        .args([
            "reject",
            "--change",
            "CG-1",
            "--by",
            "bob",
            "--comment",
            "not now",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (code, _, err) = run(&mut gate());
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");

    let ours: Vec<FakeComment> = gh
        .comments(2)
        .into_iter()
        .filter(|c| c.kind == "Bot")
        .collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    let body = &ours[0].body;
    assert!(
        body.contains("**Decision** blocked · **State** rejected"),
        "{body}"
    );
    assert!(body.contains("rejected by bob: not now"), "{body}");
    let runs = gh.state.lock().unwrap().check_runs.clone();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["conclusion"], "failure");
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_pipeline_annotates_the_pull_request_of_its_commit() {
    let gh = FakeGitHub::start(TOKEN).await;
    let sha = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    gh.state.lock().unwrap().pulls_of_commit.insert(
        sha.to_string(),
        json!([
            {"number": 5, "state": "closed", "merged_at": "2026-03-02T09:59:00Z", "title": "Add the fee table"},
            {"number": 9, "state": "closed", "merged_at": null, "title": "Abandoned attempt"}
        ]),
    );
    let p = Pipeline::new(PRE_APPROVE, "push/payload.json", |_| {});
    let mut cmd = p.github(&gh.server.uri(), "push", sha);
    cmd.env("GITHUB_TOKEN", TOKEN).args(["gate"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");

    let on_5 = gh.comments(5);
    assert_eq!(on_5.len(), 1);
    assert!(on_5[0].body.contains(MARKER_PRODUCTION) && on_5[0].body.contains("pre-approved"));
    assert!(
        gh.comments(9).is_empty(),
        "a closed, unmerged PR is left alone"
    );
    let runs = gh.state.lock().unwrap().check_runs.clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["head_sha"], sha);
    // The whole annotation is five requests: PRs of the commit, comments, the new comment,
    // the check run looked up and created.
    let requests = gh.server.received_requests().await.unwrap_or_default();
    let calls: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(calls.len(), 5, "{calls:#?}");
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_token_falls_back_to_a_status_then_warns_and_keeps_the_exit_code() {
    let gh = FakeGitHub::start(TOKEN).await;
    gh.state.lock().unwrap().read_only = true;
    let p = Pipeline::new(PRE_APPROVE, "pull_request/opened.payload.json", |_| {});
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .args(["-vvv", "gate", "--format", "json"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "annotation failures never block: {err}");
    let doc: Value = serde_json::from_str(&out).expect("stdout holds only the JSON document");
    assert_eq!(doc["decision"], "pre-approved");
    assert!(
        err.contains("::warning::changegate could not annotate: comment on pull request #2"),
        "{err}"
    );
    assert!(err.contains("pull-requests: write"), "{err}");
    assert!(
        err.contains("check run `changegate / production` refused"),
        "{err}"
    );
    assert!(
        err.contains("commit status `changegate/production` refused too"),
        "{err}"
    );
    assert!(
        err.contains("Resource not accessible by integration"),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "the token leaked: {err}");
    // The fallback was tried: check run, then commit status, each once.
    assert_eq!(gh.count("POST", r"/check-runs$").await, 1);
    assert_eq!(gh.count("POST", &format!(r"/statuses/{PR_HEAD}$")).await, 1);

    // With annotate.required the same failure is an error: exit 2.
    p.merge_config(
        "required.toml",
        &format!("{PRE_APPROVE}[annotate]\nrequired = true\n"),
    );
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .args(["--config", "required.toml", "gate"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("annotate.required"), "{err}");
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_status_is_refused_when_checks_work() {
    // Checks refused but statuses allowed: the status carries the decision.
    let gh = FakeGitHub::start(TOKEN).await;
    Mock::given(method("POST"))
        .and(path(format!("/repos/{OWNER_REPO}/check-runs")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .with_priority(1)
        .mount(&gh.server)
        .await;
    let p = Pipeline::new("", "pull_request/opened.payload.json", |_| {});
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    // No track record yet: needs approval; --wait 0 returns at once (exit 1).
    cmd.env("GITHUB_TOKEN", TOKEN).args(["gate", "--wait", "0"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");
    let statuses = gh.state.lock().unwrap().statuses.clone();
    assert_eq!(statuses.len(), 1, "{statuses:#?}");
    assert_eq!(statuses[0]["state"], "pending");
    assert_eq!(statuses[0]["context"], "changegate/production");
    assert_eq!(statuses[0]["sha"], PR_HEAD);
    assert!(
        statuses[0]["description"]
            .as_str()
            .unwrap()
            .starts_with("waiting for approval")
    );
    let comment = &gh.comments(2)[0];
    assert!(
        comment.body.contains("⏳ changegate: waiting for approval"),
        "{}",
        comment.body
    );
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_are_waited_out() {
    let gh = FakeGitHub::start(TOKEN).await;
    {
        let reset = (chrono::Utc::now().timestamp() + 1).to_string();
        let mut s = gh.state.lock().unwrap();
        // Primary limit on the first listing (403, budget spent), secondary on the first post.
        s.limits.push((
            format!("GET /repos/{OWNER_REPO}/issues/2/comments"),
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.as_str())
                .set_body_json(
                    json!({"message": "API rate limit exceeded for installation ID 1."}),
                ),
        ));
        s.limits.push((
            format!("POST /repos/{OWNER_REPO}/issues/2/comments"),
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."})),
        ));
    }
    let p = Pipeline::new(PRE_APPROVE, "pull_request/opened.payload.json", |_| {});
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN).args(["gate"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");
    assert_eq!(gh.comments(2).len(), 1);
    assert_eq!(gh.count("GET", r"/issues/2/comments$").await, 2);
    assert_eq!(gh.count("POST", r"/issues/2/comments$").await, 2);
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_sent_in_a_dry_run_when_disabled_or_without_a_token() {
    let gh = FakeGitHub::start(TOKEN).await;
    let p = Pipeline::new(PRE_APPROVE, "pull_request/opened.payload.json", |_| {});
    let mut dry = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    dry.env("GITHUB_TOKEN", TOKEN).args(["gate", "--dry-run"]);
    assert_eq!(run(&mut dry).0, 0);
    let mut no_token = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    no_token.args(["open"]);
    assert_eq!(run(&mut no_token).0, 0);
    p.merge_config(
        "off.toml",
        &format!("{PRE_APPROVE}[annotate]\nenabled = false\n"),
    );
    let mut off = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    off.env("GITHUB_TOKEN", TOKEN)
        .args(["--config", "off.toml", "gate"]);
    assert_eq!(run(&mut off).0, 0);
    assert!(
        gh.server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_pull_request_title_reaches_github_harmless() {
    let gh = FakeGitHub::start(TOKEN).await;
    let title = "<script>alert(1)</script> @org/team\n| a | b |\n|---|---|\n| **x** | [y](https://evil.example) |";
    let p = Pipeline::new(PRE_APPROVE, "pull_request/opened.payload.json", |e| {
        e["pull_request"]["title"] = json!(title);
    });
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN).args(["gate"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let body = gh.comments(2)[0].body.clone();
    assert!(body.contains("&lt;script\\>alert"), "{body}");
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("@org"), "{body}");
    assert!(!body.contains("[y](https"), "{body}");
    assert!(!body.lines().any(|l| l.starts_with('|')), "{body}");
    gh.verify().await;
}

// ---------------------------------------------------------------------------------------
// GitHub App authentication.

const APP_ID: &str = "123456";
const INSTALLATION_TOKEN: &str = "ghs_installationTokenForHelloWorld";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// Verifies an App JWT the way GitHub does; the error says what is wrong.
fn check_app_jwt(req: &Request) -> Result<Value, String> {
    let jwt = bearer(req).ok_or("no bearer token")?;
    let claims = crate::support::app_jwt_claims(&jwt)?;
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (
        claims["iat"].as_i64().ok_or("iat")?,
        claims["exp"].as_i64().ok_or("exp")?,
    );
    if claims["iss"] != json!(123456) {
        return Err(format!("iss {}", claims["iss"]));
    }
    if !(iat <= now && exp > now && exp - iat <= 600 && exp <= now + 600) {
        return Err(format!("times iat={iat} exp={exp} now={now}"));
    }
    Ok(claims)
}

#[tokio::test(flavor = "multi_thread")]
async fn github_app_auth_mints_one_installation_token_and_uses_it() {
    let gh = FakeGitHub::start(INSTALLATION_TOKEN).await;
    let jwts = Arc::new(Mutex::new(Vec::<Value>::new()));
    let seen = jwts.clone();
    Mock::given(method("GET"))
        .and(path(format!("/repos/{OWNER_REPO}/installation")))
        .respond_with(move |req: &Request| match check_app_jwt(req) {
            Ok(claims) => {
                seen.lock().unwrap().push(claims);
                ResponseTemplate::new(200).set_body_json(json!({"id": 77, "app_id": 123456, "target_type": "Organization", "account": {"login": "Codertocat"}}))
            }
            Err(why) => ResponseTemplate::new(401).set_body_json(json!({"message": format!("A JSON web token could not be decoded: {why}")})),
        })
        .expect(1)
        .mount(&gh.server)
        .await;
    let seen = jwts.clone();
    Mock::given(method("POST"))
        .and(path("/app/installations/77/access_tokens"))
        .respond_with(move |req: &Request| {
            if let Err(why) = check_app_jwt(req) {
                return ResponseTemplate::new(401).set_body_json(json!({"message": why}));
            }
            seen.lock().unwrap().push(req.body_json::<Value>().unwrap());
            let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
            ResponseTemplate::new(201).set_body_json(json!({
                "token": INSTALLATION_TOKEN, "expires_at": expires,
                "permissions": {"checks": "write", "pull_requests": "write", "statuses": "write"},
                "repository_selection": "selected"
            }))
        })
        .expect(1)
        .mount(&gh.server)
        .await;

    // No track record: needs approval. The gate annotates "waiting", waits 2s, times out and
    // annotates again: two annotations in one process, one token.
    let p = Pipeline::new("", "pull_request/opened.payload.json", |_| {});
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("CHANGEGATE_GITHUB_APP_ID", APP_ID)
        .env(
            "CHANGEGATE_GITHUB_APP_PRIVATE_KEY",
            fixture("github-app-test-key.pem"),
        )
        .args(["-vvv", "gate", "--wait", "2s"]);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "approval timed out: {err}");
    assert!(!err.contains("could not annotate"), "{err}");
    // Nothing secret in the logs, even at the most verbose level.
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    assert!(!err.contains(INSTALLATION_TOKEN), "{err}");
    assert!(!err.contains("eyJ"), "a JWT leaked: {err}");

    let seen = jwts.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1],
        json!({"repositories": ["Hello-World"]}),
        "token scoped to the repository"
    );
    // Every repository call carried the installation token (the fake answers 401 otherwise).
    let comments = gh.comments(2);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("approval timed out"),
        "{}",
        comments[0].body
    );
    assert!(
        gh.count("GET", r"/issues/2/comments$").await >= 2,
        "annotated twice"
    );
    let runs = gh.state.lock().unwrap().check_runs.clone();
    assert_eq!(runs.len(), 1);
    // A timed-out wait is blocked, on the check run as everywhere.
    assert_eq!(runs[0]["conclusion"], "failure");
    gh.verify().await;
}

// ---------------------------------------------------------------------------------------
// The change's files from the API, when the checkout cannot tell them.

/// Pre-approves a first change unless it is large or touches a migration.
const RISKY: &str = "[policy]\nmin_history = 0\n[risk]\nmax_lines_changed = 400\nsensitive_paths = [\"migrations/**\"]\n";

fn pr_file(name: &str, additions: u64, deletions: u64) -> Value {
    json!({
        "sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": name, "status": "modified",
        "additions": additions, "deletions": deletions, "changes": additions + deletions,
        "blob_url": format!("https://github.com/{OWNER_REPO}/blob/x/{name}"),
        "raw_url": format!("https://github.com/{OWNER_REPO}/raw/x/{name}"),
        "contents_url": format!("https://api.github.com/repos/{OWNER_REPO}/contents/{name}"),
        "patch": "@@ -1 +1 @@"
    })
}

/// A dry-run gate of a pull_request run whose checkout lacks the PR's commits (fetch-depth:
/// 1) and whose payload lacks the counts: only the API can tell. Returns (exit, report, stderr).
fn shallow_pr_gate(gh: &FakeGitHub) -> (i32, Value, String) {
    let p = Pipeline::new(RISKY, "pull_request/opened.payload.json", |e| {
        let pr = e["pull_request"].as_object_mut().unwrap();
        pr.remove("additions");
        pr.remove("deletions");
    });
    let mut cmd = p.github(&gh.server.uri(), "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    let (code, out, err) = run(&mut cmd);
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

fn reason(doc: &Value, code: &str) -> String {
    doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The reference pull request's base and head (`pull_request.base.sha`, `.head.sha`).
const PR_BASEHEAD: &str =
    "f95f852bd8fca8fcc58a9a2d6c842781e32a215e...ec26c3e57ca3a959ca5aad62de7213c562f8c821";

fn comparison(files: &[Value]) -> Value {
    json!({"status": "ahead", "ahead_by": 1, "total_commits": 1, "files": files})
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_request_files_come_from_the_compare_of_the_gated_commit() {
    let gh = FakeGitHub::start(TOKEN).await;
    // The gated commit (the event's head) adds a migration among 150 files.
    let mut files: Vec<Value> = (0..149)
        .map(|i| pr_file(&format!("src/f{i}.rs"), 1, 1))
        .collect();
    files.push(pr_file("migrations/002_drop_é.sql", 3, 0));
    // A later push to the pull request reverted it: its files, which `pulls/2/files`
    // lists now, must not decide a re-run of the older commit's job.
    gh.state.lock().unwrap().pull_files = files[..149].to_vec();
    gh.state
        .lock()
        .unwrap()
        .comparisons
        .insert(PR_BASEHEAD.to_string(), comparison(&files));
    let (code, doc, err) = shallow_pr_gate(&gh);
    assert_eq!(code, 1, "{err}");
    assert_eq!(doc["decision"], "needs-approval");
    assert_eq!(
        reason(&doc, "risk-paths"),
        "touches sensitive paths: migrations/002_drop_é.sql"
    );
    assert_eq!(reason(&doc, "risk-size"), "301 lines changed ≤ 400");
    assert_eq!(gh.count("GET", r"/compare/").await, 1, "one request");
    assert_eq!(gh.count("GET", r"/pulls/2/files").await, 0);

    // Without the migration the API's facts pre-approve the change.
    files.pop();
    gh.state
        .lock()
        .unwrap()
        .comparisons
        .insert(PR_BASEHEAD.to_string(), comparison(&files));
    let (code, doc, err) = shallow_pr_gate(&gh);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        reason(&doc, "risk-paths"),
        "no sensitive paths among 149 touched"
    );

    // A token that may not read the comparison: the facts stay unknown, the change needs
    // approval.
    gh.state.lock().unwrap().limits.push((
        format!("GET /repos/{OWNER_REPO}/compare/{PR_BASEHEAD}"),
        forbidden(),
    ));
    let (code, doc, err) = shallow_pr_gate(&gh);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot read the change's files") && err.contains("403"),
        "{err}"
    );
    assert!(
        reason(&doc, "risk-size")
            .starts_with("lines changed unknown: the checkout has no commit range"),
        "{doc}"
    );
    assert!(
        reason(&doc, "risk-paths").starts_with("touched paths unknown"),
        "{doc}"
    );
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn push_counts_come_from_compare_unless_git_has_the_range() {
    let gh = FakeGitHub::start(TOKEN).await;
    let (base, head) = (
        "9049f1265b7d61be4a8904a9a27120d2064dab3b",
        "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
    );
    gh.state.lock().unwrap().comparisons.insert(
        format!("{base}...{head}"),
        json!({"status": "ahead", "ahead_by": 1, "total_commits": 1,
               "files": [pr_file("src/fees.rs", 500, 20)]}),
    );
    let push = |before: &str, after: &str| {
        let (before, after) = (before.to_string(), after.to_string());
        Pipeline::new(RISKY, "push/payload.json", move |e| {
            e["before"] = json!(before);
            e["after"] = json!(after);
            e["deleted"] = json!(false);
            // The payload lists the files, but no line counts.
            e["commits"] = json!([{
                "id": after, "message": "PAY-3: fees", "timestamp": "2026-03-02T09:00:00Z",
                "author": {"name": "Dev"}, "added": [], "removed": [], "modified": ["src/fees.rs"]
            }]);
        })
    };
    let p = push(base, head);
    let mut cmd = p.github(&gh.server.uri(), "push", head);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reason(&doc, "risk-size"), "520 lines changed > 400");
    assert_eq!(
        reason(&doc, "risk-paths"),
        "no sensitive paths among 1 touched"
    );
    assert_eq!(gh.count("GET", r"/compare/").await, 1);

    // A checkout with the range (fetch-depth: 0): git tells, GitHub is not asked.
    let asked = gh.server.received_requests().await.unwrap().len();
    let dir = git_repo();
    let before = git(dir.path(), &["rev-parse", "HEAD"]);
    std::fs::write(dir.path().join("fees.txt"), "a\nb\n").unwrap();
    git(dir.path(), &["add", "fees.txt"]);
    git(dir.path(), &["commit", "-q", "-m", "PAY-3: fees"]);
    let after = git(dir.path(), &["rev-parse", "HEAD"]);
    let p = push(&before, &after);
    std::fs::write(p.path().join(".changegate.toml"), RISKY).unwrap();
    // The pipeline's checkout is `p`; give it the two commits by fetching them.
    git(
        p.path(),
        &["fetch", "-q", dir.path().to_str().unwrap(), &after],
    );
    let mut cmd = p.github(&gh.server.uri(), "push", &after);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reason(&doc, "risk-size"), "2 lines changed ≤ 400");
    assert_eq!(
        gh.server.received_requests().await.unwrap().len(),
        asked,
        "no request when git has the range"
    );
    gh.verify().await;
}

// ---------------------------------------------------------------------------------------
// Fake GitLab: merge request notes and commit statuses.

const GL_TOKEN: &str = "glpat-fakeProjectToken";
const GL_SHA: &str = "7c4f1b2d9e8a6f5c3b1a0d9e8f7a6b5c4d3e2f1a";
const GL_PROJECT: &str = "/api/v4/projects/acme%2Fpayments-api";

#[derive(Default)]
struct GlState {
    next_id: u64,
    notes: Vec<Value>,
    history: BTreeMap<u64, Vec<String>>,
    statuses: Vec<Value>,
    /// The diffs of merge request !7, as of its latest push.
    diffs: Vec<Value>,
    /// Comparisons by `from..to` (`GET /repository/compare?from=&to=`).
    comparisons: BTreeMap<String, Vec<Value>>,
}

fn gl_auth(req: &Request) -> Option<ResponseTemplate> {
    let token = req
        .headers
        .get("private-token")
        .and_then(|v| v.to_str().ok());
    (token != Some(GL_TOKEN))
        .then(|| ResponseTemplate::new(401).set_body_json(json!({"message": "401 Unauthorized"})))
}

async fn fake_gitlab(state: Arc<Mutex<GlState>>) -> Remote {
    let server = Remote::start().await;
    let st = state.clone();
    Mock::given(method("GET"))
        .and(path_regex(format!(
            r"^{GL_PROJECT}/merge_requests/7/notes$"
        )))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            assert_eq!(query(req, "sort").as_deref(), Some("asc"));
            let s = st.lock().unwrap();
            let per_page: usize = query(req, "per_page").map_or(20, |p| p.parse().unwrap());
            let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
            let items: Vec<Value> = s
                .notes
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            let next = if page * per_page < s.notes.len() {
                (page + 1).to_string()
            } else {
                String::new()
            };
            ResponseTemplate::new(200)
                .insert_header("x-page", page.to_string().as_str())
                .insert_header("x-next-page", next.as_str())
                .set_body_json(items)
        })
        .mount(&server)
        .await;
    let st = state.clone();
    Mock::given(method("POST"))
        .and(path(format!("{GL_PROJECT}/merge_requests/7/notes")))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            let mut s = st.lock().unwrap();
            s.next_id += 1;
            let body = req.body_json::<Value>().unwrap()["body"].as_str().unwrap().to_string();
            let note = json!({"id": s.next_id, "body": body, "author": {"id": 99, "username": "project_42_bot"},
                "system": false, "noteable_type": "MergeRequest", "noteable_iid": 7});
            let id = s.next_id;
            s.history.entry(id).or_default().push(body);
            s.notes.push(note.clone());
            ResponseTemplate::new(201).set_body_json(note)
        })
        .mount(&server)
        .await;
    let st = state.clone();
    Mock::given(method("PUT"))
        .and(path_regex(format!(
            r"^{GL_PROJECT}/merge_requests/7/notes/\d+$"
        )))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            let mut s = st.lock().unwrap();
            let id: u64 = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
            let body = req.body_json::<Value>().unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string();
            let Some(note) = s.notes.iter_mut().find(|n| n["id"] == id) else {
                return ResponseTemplate::new(404)
                    .set_body_json(json!({"message": "404 Not found"}));
            };
            assert_eq!(
                note["author"]["id"], 99,
                "changegate edited a note it did not write: {note}"
            );
            note["body"] = json!(body);
            let out = note.clone();
            s.history.entry(id).or_default().push(body);
            ResponseTemplate::new(200).set_body_json(out)
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v4/user"))
        .respond_with(|req: &Request| {
            gl_auth(req).unwrap_or_else(|| {
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": 99, "username": "project_42_bot", "bot": true}))
            })
        })
        .mount(&server)
        .await;
    let st = state.clone();
    Mock::given(method("POST"))
        .and(path(format!("{GL_PROJECT}/statuses/{GL_SHA}")))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            let status = req.body_json::<Value>().unwrap();
            st.lock().unwrap().statuses.push(status.clone());
            ResponseTemplate::new(201).set_body_json(
                json!({"id": 1, "sha": GL_SHA, "status": status["state"], "name": status["name"]}),
            )
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!(
            "{GL_PROJECT}/repository/commits/{GL_SHA}/merge_requests"
        )))
        .respond_with(|req: &Request| {
            gl_auth(req).unwrap_or_else(|| {
                ResponseTemplate::new(200)
                    .insert_header("x-next-page", "")
                    .set_body_json(json!([
                        {"iid": 7, "state": "merged", "title": "Fees"},
                        {"iid": 8, "state": "closed", "title": "Old attempt"}
                    ]))
            })
        })
        .mount(&server)
        .await;
    let st = state.clone();
    Mock::given(method("GET"))
        .and(path(format!("{GL_PROJECT}/merge_requests/7/diffs")))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            let s = st.lock().unwrap();
            let per_page: usize = query(req, "per_page").map_or(20, |p| p.parse().unwrap());
            let page: usize = query(req, "page").map_or(1, |p| p.parse().unwrap());
            let items: Vec<Value> = s
                .diffs
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            let next = if page * per_page < s.diffs.len() {
                (page + 1).to_string()
            } else {
                String::new()
            };
            ResponseTemplate::new(200)
                .insert_header("x-next-page", next.as_str())
                .set_body_json(items)
        })
        .mount(&server)
        .await;
    let st = state.clone();
    Mock::given(method("GET"))
        .and(path(format!("{GL_PROJECT}/repository/compare")))
        .respond_with(move |req: &Request| {
            if let Some(r) = gl_auth(req) {
                return r;
            }
            let s = st.lock().unwrap();
            let key = format!(
                "{}..{}",
                query(req, "from").unwrap_or_default(),
                query(req, "to").unwrap_or_default()
            );
            match s.comparisons.get(&key) {
                Some(diffs) => ResponseTemplate::new(200).set_body_json(
                    json!({"commits": [], "diffs": diffs, "compare_timeout": false}),
                ),
                None => {
                    ResponseTemplate::new(404).set_body_json(json!({"message": "404 Not found"}))
                }
            }
        })
        .mount(&server)
        .await;
    server
}

/// The binary in a GitLab CI job; `mr` is the merge request pipeline's MR, if any. A merge
/// request pipeline reads its config from the default branch, so the checkout gets one that
/// holds its `.changegate.toml`.
fn gitlab_cmd(
    dir: &Path,
    server: &MockServer,
    mr: Option<&str>,
    args: &[&str],
) -> assert_cmd::Command {
    let mut cmd = changegate(dir);
    cmd.env("GITLAB_CI", "true")
        .env("CI_API_V4_URL", format!("{}/api/v4", server.uri()))
        .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
        .env("CI_JOB_TOKEN", "job-token-must-not-be-used")
        .env("CI_PROJECT_PATH", "acme/payments-api")
        .env(
            "CI_PROJECT_URL",
            "https://gitlab.example.com/acme/payments-api",
        )
        .env("CI_COMMIT_SHA", GL_SHA)
        .env("CI_COMMIT_REF_NAME", "feature/fees")
        .env("CI_DEFAULT_BRANCH", "main")
        .env("CI_ENVIRONMENT_NAME", "production")
        .env(
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/acme/payments-api/-/pipelines/9",
        )
        .args(args);
    if mr.is_none() {
        cmd.env("CI_COMMIT_BRANCH", "feature/fees");
    }
    // Either way the default branch's config governs: a merge request's, or a branch
    // pipeline's of `feature/fees`.
    default_branch_is_head(dir, "main");
    if let Some(iid) = mr {
        cmd.env("CI_MERGE_REQUEST_IID", iid).env(
            "CI_MERGE_REQUEST_TITLE",
            "Fees: @backend-team please look | ~urgent",
        );
    }
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_branch_pipeline_annotates_the_merge_request_of_its_commit() {
    let state = Arc::new(Mutex::new(GlState {
        next_id: 500,
        ..GlState::default()
    }));
    let server = fake_gitlab(state.clone()).await;
    let dir = git_repo();
    std::fs::write(dir.path().join(".changegate.toml"), PRE_APPROVE).unwrap();
    let (code, _, err) = run(&mut gitlab_cmd(dir.path(), &server, None, &["gate"]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");
    {
        // Merge request 7 (merged) got the note; 8 (closed) was not touched (the catch-all
        // would have failed the test).
        let s = state.lock().unwrap();
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0]["body"].as_str().unwrap().contains(MARKER_GL));
        assert_eq!(s.statuses.len(), 1);
    }
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_merge_request_note_is_created_then_updated() {
    let state = Arc::new(Mutex::new(GlState {
        next_id: 500,
        ..GlState::default()
    }));
    {
        // A system note and a note by someone else quoting our marker: neither is ours.
        let mut s = state.lock().unwrap();
        s.notes
            .push(json!({"id": 1, "body": "added 1 commit", "system": true, "author": {"id": 3}}));
        s.notes.push(json!({"id": 2, "body": format!("see {MARKER_GL}"), "system": false, "author": {"id": 5}}));
    }
    let server = fake_gitlab(state.clone()).await;
    let dir = git_repo();
    std::fs::write(dir.path().join(".changegate.toml"), PRE_APPROVE).unwrap();
    let gitlab = |args: &[&str]| gitlab_cmd(dir.path(), &server, Some("7"), args);
    let (code, _, err) = run(&mut gitlab(&["gate"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&mut gitlab(&["record", "--outcome", "failed"]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("could not annotate"), "{err}");

    {
        let s = state.lock().unwrap();
        let ours: Vec<&Value> = s.notes.iter().filter(|n| n["author"]["id"] == 99).collect();
        assert_eq!(ours.len(), 1, "one note: {:#?}", s.notes);
        let body = ours[0]["body"].as_str().unwrap();
        assert!(body.contains(MARKER_GL), "{body}");
        assert!(body.contains("❌ changegate: deploy failed"), "{body}");
        assert!(!body.contains("@backend"), "{body}");
        let id = ours[0]["id"].as_u64().unwrap();
        assert_eq!(s.history[&id].len(), 2, "created, then updated");
        assert!(s.history[&id][0].contains("pre-approved"));
        assert_eq!(
            s.notes[1]["body"],
            format!("see {MARKER_GL}"),
            "someone else's note is left alone"
        );
        let states: Vec<&str> = s
            .statuses
            .iter()
            .map(|st| st["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["success", "failed"]);
        assert!(
            s.statuses
                .iter()
                .all(|st| st["name"] == "changegate/production")
        );
    }
    server.verify().await;
}

const MARKER_GL: &str =
    "<!-- changegate:annotation environment=production service=acme/payments-api -->";

#[tokio::test(flavor = "multi_thread")]
async fn verify_tells_the_pull_request_when_an_incident_fails_the_change() {
    let gh = FakeGitHub::start(TOKEN).await;
    let sha = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    gh.state.lock().unwrap().pulls_of_commit.insert(
        sha.to_string(),
        json!([{"number": 5, "state": "closed", "merged_at": "2026-03-02T09:59:00Z", "title": "Add the fee table"}]),
    );
    let p = Pipeline::new(PRE_APPROVE, "push/payload.json", |_| {});
    let step = |now: &str, args: &[&str]| {
        let mut cmd = p.github(&gh.server.uri(), "push", sha);
        cmd.env("GITHUB_TOKEN", TOKEN)
            .env("CHANGEGATE_NOW", now)
            .args(args);
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(!err.contains("could not annotate"), "{err}");
    };
    step("2026-03-02T10:00:00Z", &["gate"]);
    step("2026-03-02T10:05:00Z", &["record", "--outcome", "success"]);
    step(
        "2026-03-02T12:00:00Z",
        &["incident", "--change", "CG-1", "--id", "INC0012345"],
    );
    step("2026-03-04T10:00:00Z", &["verify"]);

    let on_5 = gh.comments(5);
    assert_eq!(on_5.len(), 1, "one sticky comment, edited");
    assert!(
        on_5[0].body.contains("failed after deploy") && on_5[0].body.contains("INC0012345"),
        "{}",
        on_5[0].body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_request_files_come_from_the_compare_of_the_gated_commit() {
    const DIFF_BASE: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6";
    let diff = |old: &str, new: &str, text: &str| {
        json!({"old_path": old, "new_path": new, "a_mode": "100644", "b_mode": "100644",
               "diff": text, "new_file": false, "renamed_file": old != new, "deleted_file": false})
    };
    let fees = diff(
        "src/fees.rs",
        "src/fees.rs",
        "@@ -1,2 +1,2 @@\n-a\n+b\n c\n",
    );
    let state = Arc::new(Mutex::new(GlState {
        next_id: 500,
        // The merge request's latest push reverted the move: its diffs must not decide a
        // re-run of the gated commit's job.
        diffs: vec![fees.clone()],
        comparisons: BTreeMap::from([(
            format!("{DIFF_BASE}..{GL_SHA}"),
            vec![
                fees,
                // Moved into the sensitive folder: the new path is touched too.
                diff(
                    "db/003.sql",
                    "migrations/003.sql",
                    "@@ -1 +1,2 @@\n x\n+--- y\n",
                ),
            ],
        )]),
        ..GlState::default()
    }));
    let server = fake_gitlab(state).await;
    let dir = git_repo();
    std::fs::write(dir.path().join(".changegate.toml"), RISKY).unwrap();
    let mut cmd = gitlab_cmd(
        dir.path(),
        &server,
        Some("7"),
        &["gate", "--wait", "0", "--dry-run", "--format", "json"],
    );
    cmd.env("CI_MERGE_REQUEST_DIFF_BASE_SHA", DIFF_BASE);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        reason(&doc, "risk-paths"),
        "touches sensitive paths: migrations/003.sql"
    );
    assert_eq!(reason(&doc, "risk-size"), "3 lines changed ≤ 400");
    let asked = server.received_requests().await.unwrap();
    assert!(
        !asked.iter().any(|r| r.url.path().ends_with("/diffs")),
        "not the merge request's latest diffs"
    );
    server.verify().await;
}

#[test]
fn a_silent_github_ends_a_required_annotation_within_http_deadline() {
    let silent = Silent::start();
    let p = Pipeline::new(
        &format!("{PRE_APPROVE}[annotate]\nrequired = true\n[http]\ndeadline = \"3s\"\n"),
        "pull_request/opened.payload.json",
        |_| {},
    );
    let mut cmd = p.github(&silent.url, "pull_request", MERGE_SHA);
    cmd.env("GITHUB_TOKEN", TOKEN)
        .env("NO_PROXY", "127.0.0.1")
        .args(["gate", "--wait", "0"]);
    let started = std::time::Instant::now();
    let (code, out, err) = run(&mut cmd);
    let took = started.elapsed();
    assert_eq!(code, 2, "{out}{err}");
    // octocrab's calls are bounded by the same budget as every other call.
    assert!(
        took < std::time::Duration::from_secs(15),
        "took {took:?}: {err}"
    );
    assert!(
        err.contains("GitHub call GET /repos/") && err.contains("http.deadline (3s)"),
        "{err}"
    );
    assert!(!err.contains(TOKEN) && !out.contains(TOKEN));
    assert!(silent.accepted() >= 1);
}
