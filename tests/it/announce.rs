//! `announce` through the real binary: a stateful fake GitHub (milestones, issues, pull
//! requests, branches; the tracking issue created and edited) and an embedded ledger that
//! holds the deploys' changes.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, ResponseTemplate};

use crate::flow::{Flow, HISTORY_CONFIG, Human};
use crate::support::remote::{Remote, Watch};
use crate::support::{changegate, git};

const TOKEN: &str = "ghs_announce_test";
const REPO: &str = "/repos/acme/payments-api";
const NOW: &str = "2026-03-10T09:00:00Z";

#[derive(Default)]
struct Gh {
    milestones: Vec<Value>,
    /// Work items and PRs (as GitHub lists them among issues), and tracking issues.
    issues: Vec<Value>,
    pulls: Vec<Value>,
    branches: Vec<String>,
    /// Each pull request's files (GitHub's `GET /pulls/{n}/files`), by number.
    files: Vec<(u64, Vec<Value>)>,
    posts: usize,
    patches: usize,
}

fn query(req: &Request) -> Vec<(String, String)> {
    req.url.query_pairs().into_owned().collect()
}

fn q<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn answer(gh: &Mutex<Gh>, watch: &Watch, req: &Request) -> ResponseTemplate {
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !auth.ends_with(TOKEN) {
        return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
    }
    let mut g = gh.lock().unwrap();
    let path = req.url.path().strip_prefix(REPO).unwrap_or("?").to_string();
    let pairs = query(req);
    let known = |allowed: &[&str]| {
        for (k, _) in &pairs {
            if !allowed.contains(&k.as_str()) {
                watch.flag(format!("unknown query term {k} on {path}"));
            }
        }
    };
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/milestones") => {
            known(&["state", "per_page", "page"]);
            ResponseTemplate::new(200).set_body_json(&g.milestones)
        }
        ("GET", "/issues") => {
            known(&["state", "milestone", "since", "per_page", "page"]);
            if q(&pairs, "state") != Some("all") {
                watch.flag("issues listed without state=all");
            }
            let list: Vec<Value> = match (q(&pairs, "milestone"), q(&pairs, "since")) {
                (Some(m), None) => g
                    .issues
                    .iter()
                    .filter(|i| {
                        i["milestone"]["number"]
                            .as_u64()
                            .map(|n| n.to_string())
                            .as_deref()
                            == Some(m)
                    })
                    .cloned()
                    .collect(),
                (None, Some(_)) => g.issues.clone(),
                _ => {
                    watch.flag("issues listed without milestone or since");
                    Vec::new()
                }
            };
            ResponseTemplate::new(200).set_body_json(list)
        }
        ("GET", "/pulls") => {
            known(&["state", "sort", "direction", "per_page", "page"]);
            ResponseTemplate::new(200).set_body_json(&g.pulls)
        }
        ("GET", p) if p.starts_with("/pulls/") && p.ends_with("/files") => {
            known(&["per_page", "page"]);
            let n: u64 = p["/pulls/".len()..p.len() - "/files".len()]
                .parse()
                .unwrap_or(0);
            if !g.pulls.iter().any(|pr| pr["number"] == n) {
                return ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}));
            }
            let files = g
                .files
                .iter()
                .find(|(m, _)| *m == n)
                .map(|(_, f)| f.clone())
                .unwrap_or_default();
            ResponseTemplate::new(200).set_body_json(files)
        }
        ("GET", "/branches") => {
            known(&["per_page", "page"]);
            let list: Vec<Value> = g.branches.iter().map(|b| json!({"name": b})).collect();
            ResponseTemplate::new(200).set_body_json(list)
        }
        ("POST", "/issues") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let number = 100 + g.posts as u64;
            g.posts += 1;
            let issue = json!({"number": number, "title": body["title"], "body": body["body"],
                "state": "open", "milestone": null, "html_url": format!("https://github.com/acme/payments-api/issues/{number}")});
            g.issues.push(issue.clone());
            ResponseTemplate::new(201).set_body_json(issue)
        }
        ("PATCH", p) if p.starts_with("/issues/") => {
            let n: u64 = p["/issues/".len()..].parse().unwrap_or(0);
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            g.patches += 1;
            let Some(issue) = g.issues.iter_mut().find(|i| i["number"] == n) else {
                return ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"}));
            };
            for key in ["title", "body"] {
                if let Some(v) = body.get(key) {
                    issue[key] = v.clone();
                }
            }
            ResponseTemplate::new(200).set_body_json(issue.clone())
        }
        _ => watch.unexpected(req),
    }
}

async fn fake(gh: Arc<Mutex<Gh>>) -> Remote {
    let remote = Remote::start().await;
    let watch = remote.watch();
    Mock::given(path_regex(format!("^{REPO}/")))
        .respond_with(move |req: &Request| answer(&gh, &watch, req))
        .mount(&remote)
        .await;
    remote
}

fn issue(number: u64, title: &str, body: &str) -> Value {
    json!({"number": number, "title": title, "body": body, "state": "open",
        "html_url": format!("https://github.com/acme/payments-api/issues/{number}"),
        "labels": [], "milestone": {"number": 1, "title": "Sprint 1"}})
}

fn pull(number: u64, title: &str, branch: &str, state: &str, merged: Option<&str>) -> Value {
    json!({"number": number, "title": title, "body": "", "state": state, "draft": state == "draft",
        "html_url": format!("https://github.com/acme/payments-api/pull/{number}"),
        "head": {"ref": branch, "sha": format!("{number:040x}")},
        "merged_at": merged.map(|_| "2026-03-02T12:00:00Z"),
        "merge_commit_sha": merged.unwrap_or("0000000000000000000000000000000000000000"),
        "updated_at": "2026-03-09T12:00:00Z"})
}

/// The chat webhook's secret path: it must never show in the run's output.
const HOOK: &str = "/services/T0001/B0002/s3cr3tHookToken";

/// A Slack-compatible incoming webhook: `ok` to a JSON body with a `text`; every post kept.
async fn chat_fake(posts: Arc<Mutex<Vec<Value>>>) -> Remote {
    let remote = Remote::start().await;
    let watch = remote.watch();
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(HOOK))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if !body["text"].is_string() {
                watch.flag("a chat post without a text fallback");
                return ResponseTemplate::new(400).set_body_string("no_text");
            }
            if req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                != Some("application/json")
            {
                watch.flag("a chat post that is not JSON");
            }
            posts.lock().unwrap().push(body);
            ResponseTemplate::new(200).set_body_string("ok")
        })
        .mount(&remote)
        .await;
    remote
}

/// Every `mrkdwn` text of a chat post, joined.
fn chat_text(post: &Value) -> String {
    post["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn counts(gh: &Mutex<Gh>) -> (usize, usize) {
    let g = gh.lock().unwrap();
    (g.posts, g.patches)
}

fn announce_with(
    flow: &Flow,
    api: &str,
    hook: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let head = git(flow.dir(), &["rev-parse", "HEAD"]);
    let mut cmd = changegate(flow.dir());
    if let Some(hook) = hook {
        cmd.env("CHANGEGATE_ANNOUNCE_WEBHOOK_URL", format!("{hook}{HOOK}"));
    }
    let out = cmd
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "schedule")
        .env("GITHUB_REPOSITORY", "acme/payments-api")
        .env("GITHUB_SHA", head)
        .env("GITHUB_API_URL", api)
        .env("GITHUB_TOKEN", TOKEN)
        .env("CHANGEGATE_NOW", NOW)
        .env("CHANGEGATE_LEDGER", &flow.ledger)
        .arg("announce")
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sprint_in_every_status_one_issue_edited_in_place_and_nothing_when_unchanged() {
    let mut flow = Flow::new(&format!(
        "{HISTORY_CONFIG}[announce]\nmilestone = \"Sprint {{n}}\"\nsinks = [\"forge-issue\", \"chat\"]\n"
    ));
    // Two deploys of sprint 1: one closed with success, one with failure.
    flow.change(
        "2026-03-02",
        3,
        "needs-approval",
        Human::Approve(60),
        "success",
        None,
    );
    let deployed = git(flow.dir(), &["rev-parse", "HEAD"]);
    flow.change(
        "2026-03-03",
        3,
        "needs-approval",
        Human::Approve(60),
        "failure",
        None,
    );
    let failed = git(flow.dir(), &["rev-parse", "HEAD"]);

    let gh = Arc::new(Mutex::new(Gh::default()));
    {
        let mut g = gh.lock().unwrap();
        g.milestones = vec![
            json!({"number": 2, "title": "Sprint 2", "due_on": "2026-03-29T07:00:00Z", "html_url": "https://github.com/acme/payments-api/milestone/2"}),
            json!({"number": 1, "title": "Sprint 1", "due_on": "2026-03-15T07:00:00Z", "html_url": "https://github.com/acme/payments-api/milestone/1"}),
        ];
        g.issues = vec![
            issue(
                1,
                "Planned <script>alert(1)</script> @team",
                "Refs INC0010001",
            ),
            issue(2, "Started on a branch", ""),
            issue(3, "Drafted", ""),
            issue(4, "Under review", ""),
            issue(5, "Merged, not deployed", ""),
            issue(6, "Deployed", ""),
            issue(7, "Failed after deploy", ""),
        ];
        g.branches = vec!["main".into(), "2-start".into(), "feature/3-draft".into()];
        g.pulls = vec![
            pull(13, "WIP", "feature/3-draft", "draft", None),
            pull(14, "Review me (#4)", "x", "open", None),
            pull(
                15,
                "Fixes #5",
                "y",
                "closed",
                Some("5555555555555555555555555555555555555555"),
            ),
            pull(16, "Fixes #6", "z", "closed", Some(&deployed)),
            pull(17, "Fixes #7", "w", "closed", Some(&failed)),
        ];
        // A draft is `state: open` with `draft: true` on GitHub.
        g.pulls[0]["state"] = json!("open");
        // #4's pull request is larger than `[risk] max_lines_changed = 50`; #5's is small.
        g.files = vec![
            (
                14,
                vec![
                    json!({"filename": "src/big.rs", "status": "modified", "additions": 40, "deletions": 21, "changes": 61}),
                ],
            ),
            (
                15,
                vec![
                    json!({"filename": "src/small.rs", "status": "modified", "additions": 3, "deletions": 1, "changes": 4}),
                ],
            ),
        ];
    }
    let remote = fake(gh.clone()).await;
    let api = remote.uri();
    let posts = Arc::new(Mutex::new(Vec::new()));
    let chat = chat_fake(posts.clone()).await;
    let hook = chat.uri();
    let chats = || posts.lock().unwrap().len();
    let announce = |flow: &Flow, api: &str, args: &[&str]| {
        let (code, stdout, stderr) = announce_with(flow, api, Some(&hook), args);
        assert!(
            !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
            "{stdout}{stderr}"
        );
        (code, stdout, stderr)
    };

    // A dry run prints and writes nothing.
    let (code, stdout, stderr) = announce(&flow, &api, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("would create the tracking issue"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would post the whole notice to chat"),
        "{stdout}"
    );
    assert_eq!(counts(&gh), (0, 0));
    assert_eq!(chats(), 0);

    let (code, stdout, stderr) = announce(&flow, &api, &["--format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let status = |id: &str| {
        doc["notice"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .map(|e| e["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status("#1"), "planned");
    assert_eq!(status("#2"), "in-progress");
    assert_eq!(status("#3"), "in-progress");
    assert_eq!(status("#4"), "in-review");
    assert_eq!(status("#5"), "merged");
    assert_eq!(status("#6"), "deployed");
    assert_eq!(status("#7"), "failed-after-deploy");
    assert_eq!(doc["notice"]["sprint"]["number"], 1);
    assert_eq!(counts(&gh), (1, 0));
    let tracking = gh.lock().unwrap().issues.last().unwrap().clone();
    let title = tracking["title"].as_str().unwrap();
    assert_eq!(
        title,
        "Upcoming changes — payments-api, sprint 1 (2026-03-02 – 2026-03-15)"
    );
    let body = tracking["body"].as_str().unwrap();
    assert!(
        body.starts_with("<!-- changegate:announce service=acme/payments-api sprint=1 -->"),
        "{body}"
    );
    assert!(body.contains("### Deployed to production (1)"), "{body}");
    assert!(
        body.contains("### Failed after deploy to production (1)"),
        "{body}"
    );
    assert!(body.contains("change CG\\-1"), "{body}");
    // The policy's own risk rules flag the large pull request, and only it.
    assert_eq!(body.matches("**risk:**").count(), 1, "{body}");
    assert!(
        body.contains("Under review — PR [\\#14](https://github.com/acme/payments-api/pull/14) — **risk:** 61 lines changed \\> 50"),
        "{body}"
    );
    // Untrusted titles are escaped: no tag, no mention.
    assert!(!body.contains("<script>"), "{body}");
    assert!(!body.contains(" @team"), "{body}");
    // One chat post: the whole notice, a text fallback, untrusted text escaped.
    assert_eq!(chats(), 1);
    let post = posts.lock().unwrap()[0].clone();
    assert_eq!(post["text"], title);
    let text = chat_text(&post);
    assert!(text.contains("*Deployed to production (1)*"), "{text}");
    assert!(text.contains("*Planned (1)*"), "{text}");
    assert!(text.contains("&lt;script&gt;"), "{text}");
    assert!(!text.contains("<script>"), "{text}");
    assert!(
        text.contains("<https://github.com/acme/payments-api/issues/6|#6> Deployed"),
        "{text}"
    );

    // Nothing moved: no write at all.
    let (code, stdout, stderr) = announce(&flow, &api, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert!(stdout.contains("chat: unchanged"), "{stdout}");
    assert_eq!(counts(&gh), (1, 0));
    assert_eq!(chats(), 1);

    // One item moved: one edit of the same issue.
    gh.lock()
        .unwrap()
        .pulls
        .push(pull(18, "Start #1", "1-start", "open", None));
    let (code, stdout, stderr) = announce(&flow, &api, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("edited"), "{stdout}");
    assert_eq!(counts(&gh), (1, 1));
    let body = gh.lock().unwrap().issues.last().unwrap()["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(body.contains("### In review (2)"), "{body}");
    assert!(!body.contains("### Planned"), "{body}");
    // The chat hears of that one item only.
    assert_eq!(chats(), 2);
    let text = chat_text(&posts.lock().unwrap()[1]);
    assert!(text.contains("#1>"), "{text}");
    assert!(text.contains("Planned → In review"), "{text}");
    for other in ["#2>", "#4>", "#5>", "#6>", "#7>"] {
        assert!(!text.contains(other), "{other} did not move: {text}");
    }

    // A dry run after another move writes nothing.
    gh.lock().unwrap().issues[1]["state"] = json!("closed");
    let (code, stdout, stderr) = announce(&flow, &api, &["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("would edit"), "{stdout}");
    assert!(stdout.contains("would post 1 update to chat"), "{stdout}");
    assert_eq!(counts(&gh), (1, 1));
    assert_eq!(chats(), 2);
    remote.verify().await;
    chat.verify().await;
}

mod itsm {
    //! The `itsm` sink on ServiceNow: one umbrella change per service and sprint, planned
    //! over the sprint, edited in place; the gate's new changes of the sprint its children.

    use super::*;
    use crate::servicenow::fake::{Responder, Sn};
    use crate::support::git_repo;
    use wiremock::matchers::any;

    const USER: &str = "svc-changegate";
    const PASSWORD: &str = "s3cr3t-P4ss!word";
    const TEMPLATE: &str = "Pre-approved application deploy";
    const TEMPLATE_ID: &str = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6";

    struct World {
        chat: Remote,
        posts: Arc<Mutex<Vec<Value>>>,
        sn_remote: Remote,
        sn: Arc<Mutex<Sn>>,
        gh_remote: Remote,
        gh: Arc<Mutex<Gh>>,
        repo: tempfile::TempDir,
        config: String,
    }

    impl World {
        async fn start() -> World {
            World::start_with("[\"itsm\", \"chat\"]").await
        }

        /// The world with `[announce] sinks = <sinks>`.
        async fn start_with(sinks: &str) -> World {
            let sn_remote = Remote::start().await;
            let sn = Arc::new(Mutex::new(Sn {
                watch: sn_remote.watch(),
                ..Sn::default()
            }));
            {
                let mut s = sn.lock().unwrap();
                s.basic = Some((USER.into(), PASSWORD.into()));
                s.templates.push((
                    TEMPLATE_ID.into(),
                    TEMPLATE.into(),
                    "ab12cd34ef56ab12cd34ef56ab12cd34".into(),
                ));
            }
            Mock::given(any())
                .respond_with(Responder(sn.clone()))
                .mount(&sn_remote)
                .await;
            let gh = Arc::new(Mutex::new(Gh::default()));
            {
                // The milestone due inside the current sprint (real time: the gate's too).
                let due = chrono::Utc::now().format("%Y-%m-%dT23:00:00Z").to_string();
                let mut g = gh.lock().unwrap();
                g.milestones = vec![json!({"number": 1, "title": "Checkout v2", "due_on": due,
                    "html_url": "https://github.com/acme/payments-api/milestone/1"})];
                g.issues = vec![
                    issue(1, "Planned [code]<b>x</b>[/code]", ""),
                    issue(2, "Under review", ""),
                ];
                g.pulls = vec![pull(12, "Fixes #2", "x", "open", None)];
                g.branches = vec!["main".into()];
            }
            let gh_remote = fake(gh.clone()).await;
            let repo = git_repo();
            let config = format!(
                "[servicenow]\nstandard_template = \"{TEMPLATE}\"\nassignment_group = \"Payments\"\n\n[announce]\nsinks = {sinks}\n"
            );
            std::fs::write(repo.path().join(".changegate.toml"), &config).unwrap();
            let posts = Arc::new(Mutex::new(Vec::new()));
            let chat = chat_fake(posts.clone()).await;
            World {
                chat,
                posts,
                sn_remote,
                sn,
                gh_remote,
                gh,
                repo,
                config,
            }
        }

        /// `announce` as a throwaway runner makes it: a fresh checkout of its own, no
        /// ledger and no `CHANGEGATE_DATABASE_URL`; none is left behind either.
        fn announce_fresh(&self) -> (i32, String, String) {
            let checkout = git_repo();
            std::fs::write(checkout.path().join(".changegate.toml"), &self.config).unwrap();
            let head = git(checkout.path(), &["rev-parse", "HEAD"]);
            let out = changegate(checkout.path())
                .env_remove("CHANGEGATE_DATABASE_URL")
                .env_remove("CHANGEGATE_LEDGER")
                .env("CHANGEGATE_SERVICENOW_URL", self.sn_remote.uri())
                .env("CHANGEGATE_SERVICENOW_USER", USER)
                .env("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD)
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost")
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_EVENT_NAME", "schedule")
                .env("GITHUB_REPOSITORY", "acme/payments-api")
                .env("GITHUB_SHA", head)
                .env("GITHUB_API_URL", self.gh_remote.uri())
                .env("GITHUB_TOKEN", TOKEN)
                .env(
                    "CHANGEGATE_ANNOUNCE_WEBHOOK_URL",
                    format!("{}{HOOK}", self.chat.uri()),
                )
                .args(["--backend", "servicenow", "announce"])
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            assert!(
                !checkout.path().join(".changegate").exists(),
                "a ledger was left in the checkout"
            );
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }

        /// The binary on the fake instance; `announce` also on the fake GitHub (a scheduled
        /// workflow), the gate as a plain pipeline step.
        fn run(&self, args: &[&str]) -> (i32, String, String) {
            let head = git(self.repo.path(), &["rev-parse", "HEAD"]);
            let mut cmd = changegate(self.repo.path());
            cmd.env("CHANGEGATE_SERVICENOW_URL", self.sn_remote.uri())
                .env("CHANGEGATE_SERVICENOW_USER", USER)
                .env("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD)
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost");
            if args.first() != Some(&"announce") {
                let out = cmd
                    .args(["--backend", "servicenow"])
                    .args(args)
                    .timeout(std::time::Duration::from_secs(60))
                    .output()
                    .unwrap();
                return (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                );
            }
            let out = cmd
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_EVENT_NAME", "schedule")
                .env("GITHUB_REPOSITORY", "acme/payments-api")
                .env("GITHUB_SHA", head)
                .env("GITHUB_API_URL", self.gh_remote.uri())
                .env("GITHUB_TOKEN", TOKEN)
                .env(
                    "CHANGEGATE_ANNOUNCE_WEBHOOK_URL",
                    format!("{}{HOOK}", self.chat.uri()),
                )
                .args(["--backend", "servicenow"])
                .args(args)
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }

        fn chats(&self) -> usize {
            self.posts.lock().unwrap().len()
        }

        fn log(&self) -> usize {
            self.sn.lock().unwrap().log.len()
        }

        fn writes(&self, from: usize) -> Vec<String> {
            self.sn.lock().unwrap().writes(from)
        }

        /// The umbrella changes: those whose correlation id is the notice's.
        fn umbrellas(&self) -> Vec<BTreeMap<String, String>> {
            let s = self.sn.lock().unwrap();
            s.changes
                .iter()
                .filter(|c| {
                    c.get("correlation_id").is_some_and(|k| {
                        k.starts_with("changegate-announce:acme/payments-api:sprint-")
                    })
                })
                .cloned()
                .collect()
        }
    }

    use std::collections::BTreeMap;

    #[tokio::test(flavor = "multi_thread")]
    async fn one_umbrella_change_and_the_chat_beside_servicenow_and_the_gates_changes_are_its_children()
     {
        let w = World::start().await;

        // A dry run reads and writes nothing.
        let before = w.log();
        let (code, stdout, stderr) = w.run(&["announce", "--dry-run"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("would create the umbrella change"),
            "{stdout}"
        );
        assert!(w.writes(before).is_empty(), "{:?}", w.writes(before));

        // The first run creates one normal change in New, planned over the sprint.
        let before = w.log();
        let (code, stdout, stderr) = w.run(&["announce"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("created"), "{stdout}");
        // The umbrella, then the work note on it that keeps what the chat was told (the
        // chat's memory lives on the ITSM): the first post is whole.
        assert_eq!(w.writes(before).len(), 2, "{:?}", w.writes(before));
        assert_eq!(w.chats(), 1);
        let umbrellas = w.umbrellas();
        assert_eq!(umbrellas.len(), 1);
        let u = &umbrellas[0];
        assert_eq!(u["type"], "normal");
        assert_eq!(u["state"], "-5");
        assert!(
            u["short_description"].starts_with("Upcoming changes — payments-api, sprint "),
            "{u:?}"
        );
        assert!(u["start_date"].ends_with(" 00:00:00"), "{u:?}");
        assert!(!u["end_date"].is_empty(), "{u:?}");
        let description = &u["description"];
        assert!(description.contains("Planned (1):"), "{description}");
        assert!(description.contains("In review (1):"), "{description}");
        // ServiceNow's [code] tag is defused in untrusted titles.
        assert!(
            !description.to_ascii_lowercase().contains("[code]"),
            "{description}"
        );
        let umbrella_id = u["sys_id"].clone();

        // Nothing moved: not one write.
        let before = w.log();
        let (code, stdout, stderr) = w.run(&["announce"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("unchanged"), "{stdout}");
        assert!(stdout.contains("chat: unchanged"), "{stdout}");
        assert!(w.writes(before).is_empty(), "{:?}", w.writes(before));
        assert_eq!(w.chats(), 1);

        // One item moved: one edit of the same change.
        w.gh.lock()
            .unwrap()
            .pulls
            .push(pull(18, "Start #1", "1-start", "open", None));
        let before = w.log();
        let (code, stdout, stderr) = w.run(&["announce"]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("edited"), "{stdout}");
        // The edit, and the chat's memory.
        assert_eq!(w.writes(before).len(), 2, "{:?}", w.writes(before));
        assert_eq!(w.chats(), 2);
        let umbrellas = w.umbrellas();
        assert_eq!(umbrellas.len(), 1);
        assert!(
            umbrellas[0]["description"].contains("In review (2):"),
            "{:?}",
            umbrellas[0]
        );

        // The gate's change of this sprint is the umbrella's child.
        let (code, _, stderr) = w.run(&["gate", "--mode", "observe", "--format", "json"]);
        assert_eq!(code, 0, "{stderr}");
        {
            let s = w.sn.lock().unwrap();
            let deploys: Vec<_> = s
                .changes
                .iter()
                .filter(|c| {
                    c.get("correlation_id")
                        .is_some_and(|k| k.starts_with("changegate:"))
                })
                .collect();
            assert_eq!(deploys.len(), 1);
            assert_eq!(deploys[0].get("parent"), Some(&umbrella_id));
        }
        w.sn_remote.verify().await;
        w.gh_remote.verify().await;
        w.chat.verify().await;
    }

    /// Chat as the only sink beside ServiceNow, on throwaway runners (no ledger, ever): what
    /// the chat was told is kept on the sprint's umbrella change, so the second run posts
    /// only what moved and the third nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn chat_alone_on_servicenow_remembers_on_the_umbrella_change_without_a_ledger() {
        let w = World::start_with("[\"chat\"]").await;

        let before = w.log();
        let (code, stdout, stderr) = w.announce_fresh();
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("chat: posted the whole notice"), "{stdout}");
        assert_eq!(w.chats(), 1);
        // The umbrella is created (the sprint's one record), and one work note keeps what
        // the chat was told.
        assert_eq!(w.writes(before).len(), 2, "{:?}", w.writes(before));
        let umbrellas = w.umbrellas();
        assert_eq!(umbrellas.len(), 1);
        let umbrella = umbrellas[0]["sys_id"].clone();
        let notes = || {
            w.sn.lock()
                .unwrap()
                .notes(&umbrella)
                .into_iter()
                .filter(|n| n.starts_with("changegate-announce-chat"))
                .collect::<Vec<_>>()
        };
        assert_eq!(notes().len(), 1);
        // An untrusted title's `[code]` is kept, but never as a tag ServiceNow renders.
        assert!(
            !notes()[0].to_ascii_lowercase().contains("[code]"),
            "{:?}",
            notes()
        );

        // One item moved: the chat hears of that one only.
        w.gh.lock()
            .unwrap()
            .pulls
            .push(pull(18, "Start #1", "1-start", "open", None));
        let before = w.log();
        let (code, stdout, stderr) = w.announce_fresh();
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("chat: posted 1 update"), "{stdout}");
        assert_eq!(w.chats(), 2);
        let text = chat_text(&w.posts.lock().unwrap()[1]);
        assert!(text.contains("Planned → In review"), "{text}");
        assert!(!text.contains("Under review"), "{text}");
        // The umbrella edited to say so, and the memory's next note.
        assert_eq!(w.writes(before).len(), 2, "{:?}", w.writes(before));
        assert_eq!(w.umbrellas().len(), 1);
        assert_eq!(notes().len(), 2);

        // Nothing moved: nothing posted, nothing written, two reads of the instance (the
        // umbrella, its newest memory note).
        let before = w.log();
        let (code, stdout, stderr) = w.announce_fresh();
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.contains("chat: unchanged, nothing posted"),
            "{stdout}"
        );
        assert_eq!(w.chats(), 2);
        assert!(w.writes(before).is_empty(), "{:?}", w.writes(before));
        assert_eq!(w.log() - before, 2, "requests to ServiceNow");
        assert_eq!(w.umbrellas().len(), 1);
        w.sn_remote.verify().await;
        w.gh_remote.verify().await;
        w.chat.verify().await;
    }
}

mod gitlab {
    //! A GitLab milestone as the source, the tracking issue on GitLab: a stateful fake of
    //! the project's milestones, issues (listed, created, edited), merge requests and
    //! branches (api-contracts-2.md §3.1, §3.3; issues create/edit: GitLab's
    //! `doc/api/issues.md`).

    use super::*;
    use crate::support::{git_repo, gitlab_ci};

    const GL_TOKEN: &str = "glpat-announceTest0123456789";
    const PROJECT: &str = "/api/v4/projects/group%2Fapp";

    #[derive(Default)]
    struct Gl {
        milestones: Vec<Value>,
        issues: Vec<Value>,
        mrs: Vec<Value>,
        creates: usize,
        edits: usize,
    }

    fn answer(gl: &Mutex<Gl>, watch: &Watch, req: &Request) -> ResponseTemplate {
        if req
            .headers
            .get("private-token")
            .and_then(|v| v.to_str().ok())
            != Some(GL_TOKEN)
        {
            return ResponseTemplate::new(401)
                .set_body_json(json!({"message": "401 Unauthorized"}));
        }
        let mut g = gl.lock().unwrap();
        let path = req
            .url
            .path()
            .strip_prefix(PROJECT)
            .unwrap_or("?")
            .to_string();
        let pairs = query(req);
        let listed = |items: Vec<Value>| ResponseTemplate::new(200).set_body_json(items);
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/milestones") => listed(g.milestones.clone()),
            ("GET", "/issues") => match (q(&pairs, "milestone"), q(&pairs, "labels")) {
                (Some(m), None) => listed(
                    g.issues
                        .iter()
                        .filter(|i| i["milestone"]["title"] == m)
                        .cloned()
                        .collect(),
                ),
                (None, Some(l)) => listed(
                    g.issues
                        .iter()
                        .filter(|i| i["labels"].as_array().unwrap().iter().any(|x| x == l))
                        .cloned()
                        .collect(),
                ),
                _ => {
                    watch.flag("issues listed without milestone or labels");
                    listed(Vec::new())
                }
            },
            ("GET", "/merge_requests") => match q(&pairs, "milestone") {
                Some(m) => listed(
                    g.mrs
                        .iter()
                        .filter(|r| r["milestone"]["title"] == m)
                        .cloned()
                        .collect(),
                ),
                None => listed(g.mrs.clone()),
            },
            ("GET", "/repository/branches") => listed(vec![json!({"name": "main"})]),
            ("POST", "/issues") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                for k in body.as_object().unwrap().keys() {
                    if !["title", "description", "labels"].contains(&k.as_str()) {
                        watch.flag(format!("issue create with unknown field {k}"));
                    }
                }
                g.creates += 1;
                let iid = 100 + g.creates as u64;
                let labels: Vec<&str> = body["labels"].as_str().unwrap_or("").split(',').collect();
                let issue = json!({"iid": iid, "title": body["title"], "description": body["description"],
                    "state": "opened", "labels": labels, "milestone": null,
                    "web_url": format!("https://gitlab.example/group/app/-/issues/{iid}")});
                g.issues.push(issue.clone());
                ResponseTemplate::new(201).set_body_json(issue)
            }
            ("PUT", p) if p.starts_with("/issues/") => {
                let iid: u64 = p["/issues/".len()..].parse().unwrap_or(0);
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                g.edits += 1;
                let Some(issue) = g.issues.iter_mut().find(|i| i["iid"] == iid) else {
                    return ResponseTemplate::new(404)
                        .set_body_json(json!({"message": "404 Not found"}));
                };
                for key in ["title", "description"] {
                    if let Some(v) = body.get(key) {
                        issue[key] = v.clone();
                    }
                }
                ResponseTemplate::new(200).set_body_json(issue.clone())
            }
            _ => watch.unexpected(req),
        }
    }

    fn gl_issue(iid: u64, title: &str) -> Value {
        json!({"iid": iid, "title": title, "description": "", "state": "opened", "labels": [],
            "web_url": format!("https://gitlab.example/group/app/-/issues/{iid}"),
            "milestone": {"id": 5, "title": "Sprint train"}})
    }

    fn mr(iid: u64, title: &str, state: &str) -> Value {
        json!({"iid": iid, "title": title, "description": "", "state": state, "draft": false,
            "source_branch": format!("mr-{iid}"), "sha": format!("{iid:040x}"),
            "web_url": format!("https://gitlab.example/group/app/-/merge_requests/{iid}"),
            "milestone": null})
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_refused_chat_post_fails_the_run_without_showing_the_webhook() {
        let gl = Arc::new(Mutex::new(Gl::default()));
        let remote = Remote::start().await;
        let watch = remote.watch();
        let state = gl.clone();
        Mock::given(path_regex(format!("^{PROJECT}/")))
            .respond_with(move |req: &Request| answer(&state, &watch, req))
            .mount(&remote)
            .await;
        // Slack's answer to a removed webhook.
        let chat = Remote::start().await;
        Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path(HOOK))
            .respond_with(ResponseTemplate::new(404).set_body_string("no_service"))
            .expect(1)
            .mount(&chat)
            .await;
        let repo = git_repo();
        std::fs::write(
            repo.path().join(".changegate.toml"),
            "[announce]\nsource = \"gitlab-milestone\"\nsinks = [\"chat\"]\n",
        )
        .unwrap();
        let head = git(repo.path(), &["rev-parse", "HEAD"]);
        let mut cmd = changegate(repo.path());
        gitlab_ci(&mut cmd, "group/app", &head);
        let out = cmd
            .env("CI_API_V4_URL", format!("{}/api/v4", remote.uri()))
            .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
            .env(
                "CHANGEGATE_ANNOUNCE_WEBHOOK_URL",
                format!("{}{HOOK}", chat.uri()),
            )
            .args(["-v", "announce"])
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.contains("no_service"), "{stderr}");
        assert!(stderr.contains("(secret URL)"), "{stderr}");
        assert!(
            !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t") && !stderr.contains("B0002"),
            "{stdout}{stderr}"
        );
        remote.verify().await;
        chat.verify().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_gitlab_milestone_on_one_gitlab_issue_edited_in_place() {
        let gl = Arc::new(Mutex::new(Gl::default()));
        {
            let mut g = gl.lock().unwrap();
            let due = chrono::Utc::now().format("%Y-%m-%d").to_string();
            g.milestones = vec![
                json!({"id": 5, "iid": 1, "title": "Sprint train", "state": "active",
                "due_date": due, "start_date": null, "web_url": "https://gitlab.example/group/app/-/milestones/1"}),
            ];
            g.issues = vec![
                gl_issue(1, "Planned <img src=x> @ops"),
                gl_issue(2, "Under review"),
            ];
            g.mrs = vec![mr(12, "Closes #2", "opened")];
        }
        let remote = Remote::start().await;
        let watch = remote.watch();
        let state = gl.clone();
        Mock::given(path_regex(format!("^{PROJECT}/")))
            .respond_with(move |req: &Request| answer(&state, &watch, req))
            .mount(&remote)
            .await;
        let repo = git_repo();
        std::fs::write(
            repo.path().join(".changegate.toml"),
            "[announce]\nsource = \"gitlab-milestone\"\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let head = git(repo.path(), &["rev-parse", "HEAD"]);
            let mut cmd = changegate(repo.path());
            gitlab_ci(&mut cmd, "group/app", &head);
            let out = cmd
                .env("CI_API_V4_URL", format!("{}/api/v4", remote.uri()))
                .env("CHANGEGATE_GITLAB_TOKEN", GL_TOKEN)
                .arg("announce")
                .args(args)
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let counts = || {
            let g = gl.lock().unwrap();
            (g.creates, g.edits)
        };

        let stdout = run(&["--dry-run"]);
        assert!(
            stdout.contains("would create the tracking issue"),
            "{stdout}"
        );
        assert_eq!(counts(), (0, 0));

        let stdout = run(&[]);
        assert!(stdout.contains("created"), "{stdout}");
        assert_eq!(counts(), (1, 0));
        let tracking = gl.lock().unwrap().issues.last().unwrap().clone();
        assert!(
            tracking["title"]
                .as_str()
                .unwrap()
                .starts_with("Upcoming changes — app, sprint "),
            "{tracking}"
        );
        assert_eq!(tracking["labels"], json!(["changegate-announce"]));
        let body = tracking["description"].as_str().unwrap();
        assert!(
            body.starts_with("<!-- changegate:announce service=group/app sprint="),
            "{body}"
        );
        assert!(body.contains("### In review (1)"), "{body}");
        assert!(body.contains("### Planned (1)"), "{body}");
        assert!(!body.contains("<img"), "{body}");
        assert!(!body.contains(" @ops"), "{body}");

        let stdout = run(&[]);
        assert!(stdout.contains("unchanged"), "{stdout}");
        assert_eq!(counts(), (1, 0));

        gl.lock().unwrap().mrs.push(mr(13, "Closes #1", "opened"));
        let stdout = run(&[]);
        assert!(stdout.contains("edited"), "{stdout}");
        assert_eq!(counts(), (1, 1));
        let body = {
            let g = gl.lock().unwrap();
            assert_eq!(g.issues.len(), 3);
            g.issues[2]["description"].as_str().unwrap().to_string()
        };
        assert!(body.contains("### In review (2)"), "{body}");
        assert!(!body.contains("### Planned"), "{body}");
        remote.verify().await;
    }
}

mod jira {
    //! A Jira Software sprint as the source, the notice on Jira Service Management: a
    //! stateful fake of the board's sprints and the sprint's issues (api-contracts-2.md §4),
    //! the JQL search, and issue create and edit (api-contracts.md, Jira).

    use super::*;
    use crate::support::git_repo;

    const USER: &str = "bot@example.com";
    const API_TOKEN: &str = "jira-announce-token";

    #[derive(Default)]
    struct Site {
        /// The sprint's work items.
        work: Vec<Value>,
        /// Issues changegate created: key, fields, properties.
        created: Vec<(String, Value, Value)>,
        creates: usize,
        edits: usize,
        /// Every request the site answered.
        requests: usize,
    }

    fn work_item(key: &str, summary: &str, done: bool) -> Value {
        let (status, category) = if done {
            ("Done", "done")
        } else {
            ("To Do", "new")
        };
        json!({"id": "100", "key": key, "fields": {"summary": summary, "labels": [], "description": null,
            "status": {"name": status, "statusCategory": {"key": category}}}})
    }

    fn answer(site: &Mutex<Site>, watch: &Watch, req: &Request) -> ResponseTemplate {
        let authorized = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Basic "));
        if !authorized {
            return ResponseTemplate::new(401)
                .set_body_json(json!({"errorMessages": ["not logged in"], "errors": {}}));
        }
        let mut s = site.lock().unwrap();
        s.requests += 1;
        let path = req.url.path().to_string();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/rest/agile/1.0/board/12/sprint") => {
                let start = chrono::Utc::now() - chrono::Duration::days(3);
                let end = chrono::Utc::now() + chrono::Duration::days(4);
                ResponseTemplate::new(200).set_body_json(json!({"maxResults": 50, "startAt": 0, "isLast": true,
                    "values": [{"id": 7, "state": "active", "name": "Payments 7",
                        "startDate": start.to_rfc3339(), "endDate": end.to_rfc3339(), "originBoardId": 12}]}))
            }
            ("GET", "/rest/agile/1.0/sprint/7/issue") => ResponseTemplate::new(200)
                .set_body_json(json!({"startAt": 0, "maxResults": 50,
                    "total": s.work.len(), "issues": s.work})),
            ("POST", "/rest/api/3/search/jql") => {
                let jql = body["jql"].as_str().unwrap_or_default();
                if body["properties"] != json!(["changegate.announce"])
                    && body["properties"]
                        != json!(["changegate.announce", "changegate.announce.chat"])
                {
                    watch.flag(format!("notice searched without its property: {body}"));
                }
                // Every quoted label of the query must be on the issue.
                let quoted: Vec<&str> = jql.split('"').skip(1).step_by(2).collect();
                let issues: Vec<Value> = s
                    .created
                    .iter()
                    .filter(|(_, f, _)| {
                        quoted
                            .iter()
                            .skip(1)
                            .all(|q| f["labels"].as_array().unwrap().iter().any(|l| l == q))
                    })
                    .map(|(key, f, props)| {
                        json!({"id": "2001", "key": key, "fields": {"summary": f["summary"]},
                            "properties": props})
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"issues": issues, "isLast": true}))
            }
            ("POST", "/rest/api/3/issue") => {
                let f = body["fields"].clone();
                if f["issuetype"] != json!({"name": "Story"})
                    || f["project"] != json!({"key": "OPS"})
                {
                    watch.flag(format!(
                        "notice created with the wrong type or project: {f}"
                    ));
                }
                if f["description"]["type"] != "doc" {
                    watch.flag("a description that is not ADF");
                }
                s.creates += 1;
                let key = format!("OPS-{}", 900 + s.creates);
                let props = props_of(&body);
                s.created.push((key.clone(), f, props));
                ResponseTemplate::new(201).set_body_json(json!({"id": "2001", "key": key,
                    "self": format!("https://jira.example/rest/api/3/issue/{key}")}))
            }
            ("PUT", p) if p.starts_with("/rest/api/3/issue/") => {
                let key = &p["/rest/api/3/issue/".len()..];
                s.edits += 1;
                let props = props_of(&body);
                let Some(issue) = s.created.iter_mut().find(|(k, _, _)| k == key) else {
                    return ResponseTemplate::new(404).set_body_json(
                        json!({"errorMessages": ["Issue does not exist"], "errors": {}}),
                    );
                };
                for field in ["summary", "description"] {
                    if let Some(v) = body["fields"].get(field) {
                        issue.1[field] = v.clone();
                    }
                }
                // Jira sets the properties an edit names and keeps the others.
                for (k, v) in props.as_object().unwrap() {
                    issue.2[k] = v.clone();
                }
                ResponseTemplate::new(204)
            }
            _ => watch.unexpected(req),
        }
    }

    /// The `properties` of a create or edit, as Jira returns them from a search.
    fn props_of(body: &Value) -> Value {
        let mut out = serde_json::Map::new();
        for p in body["properties"].as_array().into_iter().flatten() {
            out.insert(p["key"].as_str().unwrap().to_string(), p["value"].clone());
        }
        Value::Object(out)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_jira_sprint_on_one_jira_issue_edited_in_place() {
        let site = Arc::new(Mutex::new(Site::default()));
        site.lock().unwrap().work = vec![
            work_item("OPS-12", "Faster checkout", false),
            work_item("OPS-13", "Card vault <b>rotation</b>", false),
        ];
        let remote = Remote::start().await;
        let watch = remote.watch();
        let state = site.clone();
        Mock::given(path_regex("^/rest/"))
            .respond_with(move |req: &Request| answer(&state, &watch, req))
            .mount(&remote)
            .await;
        let repo = git_repo();
        std::fs::write(
            repo.path().join(".changegate.toml"),
            "[announce]\nsource = \"jira-sprint\"\njira_board = 12\nsinks = [\"itsm\"]\njira_issue_type = \"Story\"\n",
        )
        .unwrap();
        let run = |args: &[&str]| {
            let out = changegate(repo.path())
                .env("CHANGEGATE_JIRA_URL", remote.uri())
                .env("CHANGEGATE_JIRA_PROJECT", "OPS")
                .env("CHANGEGATE_JIRA_USER", USER)
                .env("CHANGEGATE_JIRA_TOKEN", API_TOKEN)
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost")
                .args(["--backend", "jira", "announce"])
                .args(args)
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let counts = || {
            let s = site.lock().unwrap();
            (s.creates, s.edits)
        };

        let stdout = run(&["--dry-run"]);
        assert!(stdout.contains("would create the notice issue"), "{stdout}");
        assert_eq!(counts(), (0, 0));

        let stdout = run(&[]);
        assert!(stdout.contains("notice issue OPS-901: created"), "{stdout}");
        assert_eq!(counts(), (1, 0));
        {
            let s = site.lock().unwrap();
            let (_, fields, props) = &s.created[0];
            assert!(
                fields["summary"]
                    .as_str()
                    .unwrap()
                    .starts_with("Upcoming changes — "),
                "{fields}"
            );
            let labels = fields["labels"].as_array().unwrap();
            assert!(
                labels.iter().any(|l| l == "changegate-announce"),
                "{fields}"
            );
            // Never a change's label: no change query can find a notice.
            assert!(!labels.iter().any(|l| l == "changegate"), "{fields}");
            let text = props["changegate.announce"]["text"].as_str().unwrap();
            assert!(text.contains("Planned (2):"), "{text}");
            // Untrusted text stays data: an ADF text node, never markup.
            let adf = fields["description"].to_string();
            assert!(adf.contains("Card vault <b>rotation</b>"), "{adf}");
        }

        let stdout = run(&[]);
        assert!(stdout.contains("unchanged"), "{stdout}");
        assert_eq!(counts(), (1, 0));

        site.lock().unwrap().work[0] = work_item("OPS-12", "Faster checkout", true);
        let stdout = run(&[]);
        assert!(stdout.contains("notice issue OPS-901: edited"), "{stdout}");
        assert_eq!(counts(), (1, 1));
        let text = {
            let s = site.lock().unwrap();
            assert_eq!(s.created.len(), 1);
            s.created[0].2["changegate.announce"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(text.contains("Planned (1):"), "{text}");
        assert!(text.contains("Closed without a merge (1):"), "{text}");
        remote.verify().await;
    }

    /// Chat as the only sink beside Jira, on throwaway runners (no ledger, ever): what the
    /// chat was told is kept in the notice issue's `changegate.announce.chat` property, read
    /// with the one search that finds the issue.
    #[tokio::test(flavor = "multi_thread")]
    async fn chat_alone_on_jira_remembers_on_the_notice_issue_without_a_ledger() {
        let site = Arc::new(Mutex::new(Site::default()));
        site.lock().unwrap().work = vec![
            work_item("OPS-12", "Faster checkout", false),
            work_item("OPS-13", "Card vault <b>rotation</b>", false),
        ];
        let remote = Remote::start().await;
        let watch = remote.watch();
        let state = site.clone();
        Mock::given(path_regex("^/rest/"))
            .respond_with(move |req: &Request| answer(&state, &watch, req))
            .mount(&remote)
            .await;
        let posts = Arc::new(Mutex::new(Vec::new()));
        let chat = chat_fake(posts.clone()).await;
        let run = || {
            // A fresh checkout each time, no ledger and no database: a throwaway runner.
            let checkout = git_repo();
            std::fs::write(
                checkout.path().join(".changegate.toml"),
                "[announce]\nsource = \"jira-sprint\"\njira_board = 12\nsinks = [\"chat\"]\njira_issue_type = \"Story\"\n",
            )
            .unwrap();
            let out = changegate(checkout.path())
                .env_remove("CHANGEGATE_DATABASE_URL")
                .env_remove("CHANGEGATE_LEDGER")
                .env("CHANGEGATE_JIRA_URL", remote.uri())
                .env("CHANGEGATE_JIRA_PROJECT", "OPS")
                .env("CHANGEGATE_JIRA_USER", USER)
                .env("CHANGEGATE_JIRA_TOKEN", API_TOKEN)
                .env(
                    "CHANGEGATE_ANNOUNCE_WEBHOOK_URL",
                    format!("{}{HOOK}", chat.uri()),
                )
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env("no_proxy", "127.0.0.1,localhost")
                .args(["--backend", "jira", "announce"])
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{stderr}");
            assert!(
                !checkout.path().join(".changegate").exists(),
                "a ledger was left in the checkout"
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let counts = || {
            let s = site.lock().unwrap();
            (s.creates, s.edits, s.requests)
        };
        let chats = || posts.lock().unwrap().len();

        // The first run: the whole notice, the notice issue created, the memory on it.
        let stdout = run();
        assert!(stdout.contains("chat: posted the whole notice"), "{stdout}");
        assert_eq!(chats(), 1);
        let (creates, edits, _) = counts();
        assert_eq!((creates, edits), (1, 1));
        {
            let s = site.lock().unwrap();
            assert_eq!(s.created.len(), 1);
            let told = s.created[0].2["changegate.announce.chat"]["told"]
                .as_str()
                .unwrap();
            assert!(told.contains("OPS-12"), "{told}");
        }

        // One item moved: only that item is posted.
        site.lock().unwrap().work[0] = work_item("OPS-12", "Faster checkout", true);
        let stdout = run();
        assert!(stdout.contains("chat: posted 1 update"), "{stdout}");
        assert_eq!(chats(), 2);
        let text = chat_text(&posts.lock().unwrap()[1]);
        assert!(text.contains("Planned → Closed without a merge"), "{text}");
        assert!(!text.contains("OPS-13"), "{text}");
        // The notice edited to say so, and the memory.
        let (creates, edits, _) = counts();
        assert_eq!((creates, edits), (1, 3));

        // Nothing moved: nothing posted, nothing written; of the three requests, two read
        // the sprint's work and one finds the notice with what the chat was told.
        let (_, _, before) = counts();
        let stdout = run();
        assert!(
            stdout.contains("chat: unchanged, nothing posted"),
            "{stdout}"
        );
        assert_eq!(chats(), 2);
        let (creates, edits, after) = counts();
        assert_eq!((creates, edits), (1, 3));
        assert_eq!(after - before, 3, "requests to Jira");
        assert_eq!(site.lock().unwrap().created.len(), 1);
        remote.verify().await;
        chat.verify().await;
    }
}
