//! `history import`: the real binary reads stateful fakes of GitHub's Deployments (and their
//! statuses) and GitLab's deployments, built on the one harness (`support::remote`), and
//! writes the ledger on both stores (SQLite; PostgreSQL when `.ci/test` started one).

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::ledgers::{Store, changegate, code, stores, text};
use crate::support::remote::{Remote, Watch};
use crate::support::{git_repo, json_doc};

const REPO: &str = "acme/payments-api";
const GH_TOKEN: &str = "ghp_importTestToken0123456789abcdef";
pub(crate) const GL_TOKEN: &str = "glpat-importTestToken0123456789";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn sha(n: u64) -> String {
    format!("{n:040x}")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-06T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn query(req: &Request, key: &str) -> Option<String> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------
// Fake GitHub: deployments (newest first, `Link` pages) and each one's statuses.

#[derive(Debug, Clone)]
struct GhDeployment {
    id: u64,
    sha: String,
    environment: String,
    created_at: DateTime<Utc>,
    /// Oldest first; served newest first, as GitHub does.
    statuses: Vec<(&'static str, DateTime<Utc>)>,
}

type GhState = Arc<Mutex<Vec<GhDeployment>>>;

fn gh_deployment(
    id: u64,
    sha: String,
    environment: &str,
    created_at: DateTime<Utc>,
    states: &[&'static str],
) -> GhDeployment {
    GhDeployment {
        id,
        sha,
        environment: environment.to_string(),
        created_at,
        statuses: states
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, created_at + Duration::minutes(i as i64 + 1)))
            .collect(),
    }
}

fn gh_checks(req: &Request, watch: &Watch) {
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {GH_TOKEN}") {
        watch.flag(format!("{} without the token", req.url.path()));
    }
    if query(req, "per_page").as_deref() != Some("100") {
        watch.flag(format!("{} not at the maximum page size", req.url));
    }
}

async fn fake_github(remote: &Remote, state: GhState) {
    let uri = remote.uri();
    let watch = remote.watch();
    let listing = state.clone();
    let w = watch.clone();
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/acme/payments-api/deployments$"))
        .respond_with(move |req: &Request| {
            gh_checks(req, &w);
            for (k, _) in req.url.query_pairs() {
                if !["environment", "per_page", "page"].contains(&k.as_ref()) {
                    w.flag(format!("unknown query term {k}"));
                }
            }
            let Some(env) = query(req, "environment") else {
                w.flag("deployments listed without the environment filter");
                return ResponseTemplate::new(200).set_body_json(json!([]));
            };
            let page: usize = query(req, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let mut all: Vec<GhDeployment> = listing
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.environment == env)
                .cloned()
                .collect();
            all.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * 100)
                .take(100)
                .map(|d| {
                    json!({
                        "url": format!("{uri}/repos/{REPO}/deployments/{}", d.id),
                        "id": d.id,
                        "node_id": "DE_x",
                        "sha": d.sha,
                        "ref": "main",
                        "task": "deploy",
                        "payload": {},
                        "original_environment": d.environment,
                        "environment": d.environment,
                        "description": null,
                        "creator": {"login": "octocat", "id": 1, "type": "User"},
                        "created_at": stamp(d.created_at),
                        "updated_at": stamp(d.created_at),
                        "statuses_url": format!("{uri}/repos/{REPO}/deployments/{}/statuses", d.id),
                        "repository_url": format!("{uri}/repos/{REPO}"),
                        "transient_environment": false,
                        "production_environment": d.environment == "production"
                    })
                })
                .collect();
            let mut response = ResponseTemplate::new(200).set_body_json(items);
            if all.len() > page * 100 {
                response = response.insert_header(
                    "link",
                    format!(
                        "<{uri}/repos/{REPO}/deployments?environment={env}&per_page=100&page={}>; rel=\"next\"",
                        page + 1
                    )
                    .as_str(),
                );
            }
            response
        })
        .mount(remote)
        .await;
    let w = watch;
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/repos/acme/payments-api/deployments/\d+/statuses$",
        ))
        .respond_with(move |req: &Request| {
            gh_checks(req, &w);
            let id: u64 = req
                .url
                .path()
                .split('/')
                .nth(5)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let found = state.lock().unwrap().iter().find(|d| d.id == id).cloned();
            let Some(d) = found else {
                return ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}));
            };
            let items: Vec<Value> = d
                .statuses
                .iter()
                .enumerate()
                .rev()
                .map(|(i, (state, at))| {
                    json!({
                        "id": d.id * 100 + i as u64,
                        "state": state,
                        "description": "",
                        "environment": d.environment,
                        "creator": {"login": "octocat"},
                        "created_at": stamp(*at),
                        "updated_at": stamp(*at),
                        "target_url": "",
                        "log_url": ""
                    })
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(items)
        })
        .mount(remote)
        .await;
}

fn import_github(store: &Store, dir: &Path, api: &str, args: &[&str]) -> Output {
    let mut cmd = changegate(dir);
    store
        .apply(&mut cmd)
        .env("GITHUB_API_URL", api)
        .env("GITHUB_TOKEN", GH_TOKEN)
        .args(["history", "import", "--from", "github"])
        .args(args);
    cmd.output().unwrap()
}

/// Requests the fake received since the last call (retries included).
fn requests_since(rt: &tokio::runtime::Runtime, remote: &Remote, before: &mut usize) -> usize {
    let all = rt
        .block_on(remote.received_requests())
        .map(|r| r.len())
        .unwrap_or(0);
    let new = all - *before;
    *before = all;
    new
}

/// 126 production deployments (two pages), one staging: successes, a failure and an error,
/// one with no status, one still running, one superseded (`inactive` after `success`), and
/// a commit deployed twice whose later deployment failed.
fn github_history() -> Vec<GhDeployment> {
    let mut out = Vec::new();
    let at = |i: u64| t0() + Duration::hours(i as i64);
    for i in 1..=120 {
        out.push(gh_deployment(
            i,
            sha(i),
            "production",
            at(i),
            &["in_progress", "success"],
        ));
    }
    out.push(gh_deployment(121, sha(121), "production", at(121), &[]));
    out.push(gh_deployment(
        122,
        sha(122),
        "production",
        at(122),
        &["queued", "in_progress"],
    ));
    out.push(gh_deployment(
        123,
        sha(123),
        "production",
        at(123),
        &["failure"],
    ));
    out.push(gh_deployment(
        124,
        sha(124),
        "production",
        at(124),
        &["error"],
    ));
    out.push(gh_deployment(
        125,
        sha(5),
        "production",
        at(125),
        &["in_progress", "failure"],
    ));
    out.push(gh_deployment(
        126,
        sha(126),
        "production",
        at(126),
        &["success", "inactive"],
    ));
    out.push(gh_deployment(
        127,
        sha(127),
        "staging",
        at(127),
        &["success"],
    ));
    out
}

#[test]
fn github_history_pages_counts_its_requests_and_imports_once() {
    let rt = runtime();
    for store in stores() {
        let name = store.name();
        let remote = rt.block_on(Remote::start());
        let state: GhState = Arc::new(Mutex::new(github_history()));
        rt.block_on(fake_github(&remote, state.clone()));
        let api = remote.uri();
        let repo = git_repo();
        let dir = repo.path();
        let mut seen = 0;

        let out = import_github(&store, dir, &api, &[]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        // 2 pages + one statuses request per commit (125): the redeployed commit's later
        // deployment finished, so its first is never asked about.
        assert!(
            stdout(&out).contains("imported 123 deployments in 127 requests"),
            "{name}: {}",
            text(&out)
        );
        assert!(
            stdout(&out).contains(
                "120 success, 3 failure, 0 cancelled; 0 already in the ledger, 2 not finished"
            ),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(requests_since(&rt, &remote, &mut seen), 127, "{name}");
        assert_eq!(store.count(dir, "changes"), 123, "{name}");
        assert!(
            !text(&out).contains(GH_TOKEN),
            "{name}: the token was shown"
        );

        // One change per commit, with the latest final status; marked as imported.
        let status = |commit: &str| {
            let mut cmd = changegate(dir);
            store
                .apply(&mut cmd)
                .args(["status", "--commit", commit, "--format", "json"]);
            let out = cmd.output().unwrap();
            assert_eq!(code(&out), 0, "{name}: {}", text(&out));
            json_doc(&out.stdout)
        };
        let redeployed = status(&sha(5));
        assert_eq!(redeployed["outcome"], "failure", "{name}: {redeployed}");
        assert_eq!(redeployed["state"], "closed", "{name}: {redeployed}");
        assert_eq!(status(&sha(126))["outcome"], "success", "{name}");
        assert_eq!(status(&sha(124))["outcome"], "failure", "{name}");

        // Again: nothing new; only the two unfinished commits are asked about again.
        let out = import_github(&store, dir, &api, &[]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert!(
            stdout(&out).contains("imported 0 deployments in 4 requests"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(requests_since(&rt, &remote, &mut seen), 4, "{name}");
        assert_eq!(store.count(dir, "changes"), 123, "{name}");

        // Later: a new commit, and the running one finished; only those are added.
        {
            let mut s = state.lock().unwrap();
            let at = t0() + Duration::hours(200);
            s.push(gh_deployment(128, sha(128), "production", at, &["success"]));
            s.push(gh_deployment(
                129,
                sha(122),
                "production",
                at + Duration::hours(1),
                &["success"],
            ));
        }
        let out = import_github(&store, dir, &api, &[]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert!(
            stdout(&out).contains("imported 2 deployments in 5 requests"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(store.count(dir, "changes"), 125, "{name}");
        assert_eq!(status(&sha(122))["outcome"], "success", "{name}");
        rt.block_on(remote.verify());
    }
}

#[test]
fn an_environment_filter_a_since_date_and_a_dry_run() {
    let rt = runtime();
    let store = Store::Sqlite;
    let remote = rt.block_on(Remote::start());
    let mut history = github_history();
    // 250 more production deployments, a week apart from the first ones.
    let later = t0() + Duration::days(7);
    for i in 0..250u64 {
        history.push(gh_deployment(
            1000 + i,
            sha(1000 + i),
            "production",
            later + Duration::hours(i as i64),
            &["success"],
        ));
    }
    rt.block_on(fake_github(&remote, Arc::new(Mutex::new(history))));
    let api = remote.uri();
    let repo = git_repo();
    let dir = repo.path();
    let mut seen = 0;

    // A dry run reads and says what it would import; the ledger is not even created.
    let out = import_github(
        &store,
        dir,
        &api,
        &["--environment", "staging", "--dry-run"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stdout(&out).contains("would import 1 deployments in 2 requests"),
        "{}",
        text(&out)
    );
    assert!(stdout(&out).contains("dry run"), "{}", text(&out));
    assert!(!dir.join(".changegate/ledger.db").exists());
    assert_eq!(store.count(dir, "changes"), 0);
    requests_since(&rt, &remote, &mut seen);

    // Staging only: the production deployments are not its history.
    let out = import_github(&store, dir, &api, &["--environment", "staging"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stdout(&out).contains("imported 1 deployments in 2 requests"),
        "{}",
        text(&out)
    );
    assert_eq!(store.count(dir, "changes"), 1);
    requests_since(&rt, &remote, &mut seen);

    // Since the 180th of the later deployments: the first page (newest 100) reaches back
    // before it, so no other page is read; 70 statuses requests.
    let since = stamp(later + Duration::hours(180));
    let out = import_github(&store, dir, &api, &["--since", &since]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stdout(&out).contains("imported 70 deployments in 71 requests"),
        "{}",
        text(&out)
    );
    assert_eq!(requests_since(&rt, &remote, &mut seen), 71);
    assert_eq!(store.count(dir, "changes"), 71);

    // A date: everything from that day on (the later ones), one page short of all.
    let out = import_github(
        &store,
        dir,
        &api,
        &["--since", "2026-01-13", "--format", "json"],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let doc = json_doc(&out.stdout);
    assert_eq!(doc["imported"], 180, "{doc}");
    assert_eq!(doc["already"], 70, "{doc}");
    assert_eq!(doc["requests"], 3 + 180, "{doc}");
    assert_eq!(store.count(dir, "changes"), 251);
    rt.block_on(remote.verify());
}

#[test]
fn a_forge_that_keeps_failing_is_retried_then_exit_2_with_its_own_words() {
    let rt = runtime();
    let remote = rt.block_on(Remote::start());
    rt.block_on(
        Mock::given(method("GET"))
            .and(path_regex(r"^/repos/acme/payments-api/deployments$"))
            .respond_with(
                ResponseTemplate::new(502)
                    .set_body_json(json!({"message": "Server Error: upstream unavailable"})),
            )
            .mount(&remote),
    );
    let repo = git_repo();
    let dir = repo.path();
    let out = import_github(&Store::Sqlite, dir, &remote.uri(), &[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("502"), "{err}");
    assert!(err.contains("upstream unavailable"), "{err}");
    assert!(!text(&out).contains(GH_TOKEN), "the token was shown: {err}");
    let tries = rt.block_on(remote.received_requests()).unwrap().len();
    assert!(tries > 1, "not retried: {tries}");
    assert_eq!(Store::Sqlite.count(dir, "changes"), 0);
}

#[test]
fn an_itsm_backend_keeps_its_own_record() {
    let repo = git_repo();
    let mut cmd = changegate(repo.path());
    cmd.env("CHANGEGATE_BACKEND", "servicenow")
        .args(["history", "import", "--from", "github"]);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ledger backends only"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// Fake GitLab: deployments with their status, `x-next-page` pages.

#[derive(Debug, Clone)]
pub(crate) struct GlDeployment {
    id: u64,
    sha: String,
    environment: String,
    status: &'static str,
    created_at: DateTime<Utc>,
}

/// `n` successful deployments of as many commits to `environment`, an hour apart.
pub(crate) fn gitlab_successes(n: u64, environment: &str) -> Vec<GlDeployment> {
    (1..=n)
        .map(|i| GlDeployment {
            id: i,
            sha: sha(i),
            environment: environment.to_string(),
            status: "success",
            created_at: t0() + Duration::hours(i as i64),
        })
        .collect()
}

pub(crate) async fn fake_gitlab(remote: &Remote, state: Arc<Mutex<Vec<GlDeployment>>>) {
    let w = remote.watch();
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/api/v4/projects/acme%2Fpayments-api/deployments$",
        ))
        .respond_with(move |req: &Request| {
            if req
                .headers
                .get("private-token")
                .and_then(|v| v.to_str().ok())
                != Some(GL_TOKEN)
            {
                w.flag("deployments listed without the token");
            }
            for (k, v) in req.url.query_pairs() {
                match (k.as_ref(), v.as_ref()) {
                    ("environment", _) | ("page", _) | ("updated_after", _) => {}
                    ("per_page", "100") | ("order_by", "updated_at") | ("sort", "desc") => {}
                    (k, v) => w.flag(format!("unexpected query {k}={v}")),
                }
            }
            let Some(env) = query(req, "environment") else {
                w.flag("deployments listed without the environment filter");
                return ResponseTemplate::new(200).set_body_json(json!([]));
            };
            // As GitLab 16.0 on: the `updated_at` filters need the `updated_at` order.
            if query(req, "updated_after").is_some()
                && query(req, "order_by").as_deref() != Some("updated_at")
            {
                return ResponseTemplate::new(400).set_body_json(
                    json!({"message": "400 Bad request - `updated_at` filter requires `updated_at` sort"}),
                );
            }
            let after = query(req, "updated_after").map(|a| {
                DateTime::parse_from_rfc3339(&a)
                    .unwrap()
                    .with_timezone(&Utc)
            });
            let page: usize = query(req, "page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let mut all: Vec<GlDeployment> = state
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.environment == env)
                .filter(|d| after.is_none_or(|a| d.created_at + Duration::minutes(5) > a))
                .cloned()
                .collect();
            all.sort_by_key(|d| std::cmp::Reverse(d.created_at));
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * 100)
                .take(100)
                .map(|d| {
                    json!({
                        "id": d.id,
                        "iid": d.id,
                        "ref": "main",
                        "sha": d.sha,
                        "status": d.status,
                        "created_at": stamp(d.created_at),
                        "updated_at": stamp(d.created_at + Duration::minutes(5)),
                        "user": {"id": 1, "username": "dev"},
                        "environment": {"id": 7, "name": d.environment, "external_url": null},
                        "deployable": null
                    })
                })
                .collect();
            let next = if all.len() > page * 100 {
                (page + 1).to_string()
            } else {
                String::new()
            };
            ResponseTemplate::new(200)
                .set_body_json(items)
                .insert_header("x-next-page", next.as_str())
                .insert_header("x-page", page.to_string().as_str())
                .insert_header("x-per-page", "100")
        })
        .mount(remote)
        .await;
}

fn import_gitlab(store: &Store, dir: &Path, base: &str, args: &[&str]) -> Output {
    let mut cmd = changegate(dir);
    store
        .apply(&mut cmd)
        .env("CI_API_V4_URL", format!("{base}/api/v4"))
        .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
        .args(["history", "import", "--from", "gitlab"])
        .args(args);
    cmd.output().unwrap()
}

#[test]
fn gitlab_history_pages_and_maps_its_statuses() {
    let rt = runtime();
    for store in stores() {
        let name = store.name();
        let remote = rt.block_on(Remote::start());
        let at = |i: u64| t0() + Duration::hours(i as i64);
        let gl = |id: u64, sha: String, env: &str, status: &'static str, created_at| GlDeployment {
            id,
            sha,
            environment: env.to_string(),
            status,
            created_at,
        };
        let mut history = gitlab_successes(100, "production");
        history.push(gl(101, sha(101), "production", "failed", at(101)));
        history.push(gl(102, sha(102), "production", "canceled", at(102)));
        history.push(gl(103, sha(103), "production", "running", at(103)));
        history.push(gl(104, sha(1), "production", "failed", at(104)));
        history.push(gl(105, sha(105), "staging", "success", at(105)));
        let state = Arc::new(Mutex::new(history));
        rt.block_on(fake_gitlab(&remote, state.clone()));
        let repo = git_repo();
        let dir = repo.path();
        let base = remote.uri();

        let out = import_gitlab(&store, dir, &base, &[]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert!(
            stdout(&out).contains("imported 102 deployments in 2 requests"),
            "{name}: {}",
            text(&out)
        );
        assert!(
            stdout(&out).contains(
                "99 success, 2 failure, 1 cancelled; 0 already in the ledger, 1 not finished"
            ),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(store.count(dir, "changes"), 102, "{name}");
        assert!(
            !text(&out).contains(GL_TOKEN),
            "{name}: the token was shown"
        );

        let out = import_gitlab(&store, dir, &base, &[]);
        assert!(
            stdout(&out).contains("imported 0 deployments in 2 requests"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(store.count(dir, "changes"), 102, "{name}");

        // Since a date: GitLab is asked for what was updated since.
        state
            .lock()
            .unwrap()
            .push(gl(106, sha(106), "production", "success", at(300)));
        let since = stamp(at(250));
        let out = import_gitlab(&store, dir, &base, &["--since", &since]);
        assert!(
            stdout(&out).contains("imported 1 deployments in 1 requests"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(store.count(dir, "changes"), 103, "{name}");
        rt.block_on(remote.verify());
    }
}

#[test]
fn gitlab_failing_is_retried_then_exit_2_with_its_own_words() {
    let rt = runtime();
    let remote = rt.block_on(Remote::start());
    rt.block_on(
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/api/v4/projects/acme%2Fpayments-api/deployments$",
            ))
            .respond_with(
                ResponseTemplate::new(503)
                    .set_body_json(json!({"message": "503 Service Unavailable"})),
            )
            .mount(&remote),
    );
    let repo = git_repo();
    let out = import_gitlab(&Store::Sqlite, repo.path(), &remote.uri(), &[]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("503 Service Unavailable"), "{err}");
    assert!(!err.contains(GL_TOKEN), "{err}");
    let tries = rt.block_on(remote.received_requests()).unwrap().len();
    assert!(tries > 1, "not retried: {tries}");
}

/// Four successful deployments in each of the four sprints before the clock (`ledgers::NOW`): the ramp replays
/// them, so the allowance is what the team earned, and none of it is used.
#[test]
fn policy_explain_replays_the_ramp_from_an_imported_history() {
    let rt = runtime();
    for store in stores() {
        let name = store.name();
        let remote = rt.block_on(Remote::start());
        let sprint0 = DateTime::parse_from_rfc3339("2026-01-05T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut history = Vec::new();
        for sprint in 0..4u64 {
            for n in 0..4u64 {
                let id = sprint * 10 + n + 1;
                let at = sprint0 + Duration::days(14 * sprint as i64 + 2 * n as i64);
                history.push(gh_deployment(id, sha(id), "production", at, &["success"]));
            }
        }
        rt.block_on(fake_github(&remote, Arc::new(Mutex::new(history))));
        let repo = git_repo();
        let dir = repo.path();
        std::fs::write(
            dir.join(".changegate.toml"),
            "[sprint]\nstart = \"2026-01-05\"\nlength_days = 14\n\
             [policy]\nmin_history = 5\nwindow = 20\nmin_success_rate = 0.9\n\
             [policy.allowance]\ninitial = 2\nstep = 2\nmax = 20\nmin_changes = 3\n",
        )
        .unwrap();
        let explain = || {
            let mut cmd = changegate(dir);
            store
                .apply(&mut cmd)
                .args(["policy", "explain", "--format", "json"]);
            let out = cmd.output().unwrap();
            assert_eq!(code(&out), 0, "{name}: {}", text(&out));
            json_doc(&out.stdout)
        };
        let before = explain();
        assert_eq!(before["allowance"], 2, "{name}: {before}");
        assert_eq!(before["closed_total"], 0, "{name}: {before}");

        let out = import_github(&store, dir, &remote.uri(), &[]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert!(
            stdout(&out).contains("imported 16 deployments"),
            "{name}: {}",
            text(&out)
        );

        let after = explain();
        assert_eq!(after["sprint"], 5, "{name}: {after}");
        assert_eq!(after["allowance"], 10, "{name}: {after}");
        assert_eq!(after["used"], 0, "{name}: {after}");
        assert_eq!(after["closed_total"], 16, "{name}: {after}");

        // The report tells them apart: deployments, not changes decided by changegate.
        let mut cmd = changegate(dir);
        store
            .apply(&mut cmd)
            .args(["report", "--sprints", "5", "--format", "json"]);
        let out = cmd.output().unwrap();
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        let doc = json_doc(&out.stdout);
        let total = &doc["services"][0]["total"];
        assert_eq!(total["imported"], 16, "{name}: {total}");
        assert_eq!(total["changes"], 0, "{name}: {total}");
        assert_eq!(total["pre_approved"], 0, "{name}: {total}");
        assert_eq!(total["succeeded"], 16, "{name}: {total}");
        assert_eq!(total["deployments"], 16, "{name}: {total}");
        let mut cmd = changegate(dir);
        store.apply(&mut cmd).args(["report", "--sprints", "5"]);
        let out = cmd.output().unwrap();
        assert!(
            stdout(&out).contains("imported from the forge"),
            "{name}: {}",
            text(&out)
        );
        rt.block_on(remote.verify());
    }
}

/// A gate of an imported commit finds the imported change (the same correlation key) and
/// makes no second record; imports run at once write each change once.
#[test]
fn a_gate_finds_the_imported_change_and_simultaneous_imports_write_once() {
    let rt = runtime();
    for store in stores() {
        let name = store.name();
        let remote = rt.block_on(Remote::start());
        let repo = git_repo();
        let dir = repo.path();
        let head = crate::support::git(dir, &["rev-parse", "HEAD"]);
        let mut history: Vec<GhDeployment> = (1..=30)
            .map(|i| {
                let at = t0() + Duration::hours(i as i64);
                gh_deployment(i, sha(i), "production", at, &["success"])
            })
            .collect();
        history.push(gh_deployment(
            31,
            head.clone(),
            "production",
            t0() + Duration::hours(40),
            &["success"],
        ));
        rt.block_on(fake_github(&remote, Arc::new(Mutex::new(history))));
        let api = remote.uri();

        let children: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = changegate(dir);
                store
                    .apply(&mut cmd)
                    .env("GITHUB_API_URL", &api)
                    .env("GITHUB_TOKEN", GH_TOKEN)
                    .args(["history", "import", "--from", "github", "--format", "json"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        let mut written = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(code(&out), 0, "{name}: {}", text(&out));
            let doc = json_doc(&out.stdout);
            written += doc["imported"].as_u64().unwrap();
        }
        assert_eq!(written, 31, "{name}: each change written by one import");
        assert_eq!(store.count(dir, "changes"), 31, "{name}");

        let mut cmd = changegate(dir);
        store
            .apply(&mut cmd)
            .args(["gate", "--wait", "0", "--format", "json"]);
        let out = cmd.output().unwrap();
        let doc = json_doc(&out.stdout);
        // The imported change, the newest one written (row 31): closed, it is left as it
        // is and the new decision is judged without being written to it.
        assert_eq!(doc["change_id"], "CG-31", "{name}: {doc}");
        assert!(
            doc["message"]
                .as_str()
                .unwrap_or_default()
                .contains("CG-31 is closed"),
            "{name}: {doc}"
        );
        assert_eq!(store.count(dir, "changes"), 31, "{name}: no second record");
        rt.block_on(remote.verify());
    }
}
