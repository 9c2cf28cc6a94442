//! `sync`: tickets that follow the work. The real binary against stateful fakes of a
//! ServiceNow instance's tasks and journal (Table API on `task`, `incident` and
//! `sys_journal_field`) and of a Jira site's issue comments, both on the one harness: a
//! request neither expected fails the test. The changes themselves live in the embedded
//! ledger, so `CHANGEGATE_NOW` moves the clock for `verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::remote::{Remote, Watch};
use crate::support::{changegate, default_branch_is_head, git, git_at, git_repo};

pub(crate) const SN_USER: &str = "svc-changegate";
pub(crate) const SN_PASSWORD: &str = "s3cr3t-P4ss!word";
const JIRA_USER: &str = "bot@acme.example";
const JIRA_TOKEN: &str = "jira-t0ken-zz";

// ---- the ServiceNow fake: tasks and their journal ------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    sys_id: String,
    element_id: String,
    element: String,
    value: String,
    created: String,
}

#[derive(Debug, Default)]
pub(crate) struct SnState {
    watch: Watch,
    /// (sys_id, number, class)
    tasks: Vec<(String, String, String)>,
    journal: Vec<Entry>,
    next: u64,
    /// The next write of a note finds a twin written a moment before by another pipeline.
    race: bool,
    /// Every request: "METHOD path".
    log: Vec<String>,
}

impl SnState {
    fn id(&mut self) -> String {
        self.next += 1;
        format!("{:016x}{:016x}", 0x7a5c_u64, self.next)
    }

    fn created(&mut self) -> String {
        self.next += 1;
        format!("2026-03-02 10:{:02}:{:02}", self.next / 60, self.next % 60)
    }

    fn add_task(&mut self, number: &str, class: &str) {
        let id = self.id();
        self.tasks.push((id, number.into(), class.into()));
    }

    pub(crate) fn notes(&self, number: &str, element: &str) -> Vec<String> {
        let Some((id, ..)) = self.tasks.iter().find(|t| t.1 == number) else {
            return Vec::new();
        };
        self.journal
            .iter()
            .filter(|e| e.element_id == *id && e.element == element)
            .map(|e| e.value.clone())
            .collect()
    }

    pub(crate) fn writes(&self) -> usize {
        self.log.iter().filter(|l| !l.starts_with("GET ")).count()
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != basic(SN_USER, SN_PASSWORD) {
            return sn_error(401, "User Not Authenticated");
        }
        let params: BTreeMap<String, String> = req
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for k in params.keys() {
            if !matches!(
                k.as_str(),
                "sysparm_query"
                    | "sysparm_fields"
                    | "sysparm_limit"
                    | "sysparm_exclude_reference_link"
            ) {
                self.watch.flag(format!(
                    "{} {} with unknown parameter {k}",
                    req.method,
                    req.url.path()
                ));
            }
        }
        let query = params.get("sysparm_query").cloned().unwrap_or_default();
        let segs: Vec<String> = req
            .url
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["api", "now", "table", "task"]) => {
                let Some(number) = query.strip_prefix("number=") else {
                    self.watch.flag(format!("task query {query:?}"));
                    return sn_error(400, "bad query");
                };
                let rows: Vec<Value> = self
                    .tasks
                    .iter()
                    .filter(|t| t.1 == number)
                    .map(|(id, n, class)| json!({"sys_id": id, "number": n, "sys_class_name": class}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"result": rows}))
            }
            ("GET", ["api", "now", "table", "sys_journal_field"]) => {
                let mut element_id = None;
                let mut elements: Vec<String> = Vec::new();
                let mut like = None;
                for term in query.split('^') {
                    if let Some(v) = term.strip_prefix("element_id=") {
                        element_id = Some(v.to_string());
                    } else if let Some(v) = term.strip_prefix("elementIN") {
                        elements = v.split(',').map(str::to_string).collect();
                    } else if let Some(v) = term.strip_prefix("valueLIKE") {
                        like = Some(v.to_string());
                    } else if !term.starts_with("ORDERBY") {
                        self.watch.flag(format!("journal query term {term:?}"));
                    }
                }
                let (Some(element_id), Some(like)) = (element_id, like) else {
                    self.watch
                        .flag(format!("unbounded journal query {query:?}"));
                    return sn_error(400, "bad query");
                };
                let mut rows: Vec<&Entry> = self
                    .journal
                    .iter()
                    .filter(|e| {
                        e.element_id == element_id
                            && elements.contains(&e.element)
                            && e.value.contains(&like)
                    })
                    .collect();
                rows.sort_by(|a, b| (&a.created, &a.sys_id).cmp(&(&b.created, &b.sys_id)));
                let rows: Vec<Value> = rows
                    .iter()
                    .map(|e| json!({"sys_id": e.sys_id, "element": e.element, "value": e.value, "sys_created_on": e.created}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"result": rows}))
            }
            ("PATCH", ["api", "now", "table", table, sys_id]) => {
                let Some((id, _, class)) = self.tasks.iter().find(|t| t.0 == *sys_id).cloned()
                else {
                    return sn_error(404, "No Record found");
                };
                if *table != class {
                    self.watch.flag(format!(
                        "{class} {sys_id} written through the {table} table"
                    ));
                }
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let Some(fields) = body.as_object() else {
                    return sn_error(400, "no body");
                };
                for (element, value) in fields {
                    if !matches!(element.as_str(), "work_notes" | "comments") {
                        self.watch.flag(format!("note write sets {element}"));
                        continue;
                    }
                    let value = value.as_str().unwrap_or_default().to_string();
                    if std::mem::take(&mut self.race) {
                        let (sys_id, created) = (self.id(), self.created());
                        self.journal.push(Entry {
                            sys_id,
                            element_id: id.clone(),
                            element: element.clone(),
                            value: value.clone(),
                            created,
                        });
                    }
                    let (sys_id, created) = (self.id(), self.created());
                    self.journal.push(Entry {
                        sys_id,
                        element_id: id.clone(),
                        element: element.clone(),
                        value,
                        created,
                    });
                }
                ResponseTemplate::new(200).set_body_json(json!({"result": {"sys_id": id}}))
            }
            ("DELETE", ["api", "now", "table", "sys_journal_field", sys_id]) => {
                let before = self.journal.len();
                self.journal.retain(|e| e.sys_id != *sys_id);
                if self.journal.len() == before {
                    return sn_error(404, "No Record found");
                }
                ResponseTemplate::new(204)
            }
            _ => self.watch.unexpected(req),
        }
    }
}

fn sn_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"message": message, "detail": ""}, "status": "failure"}))
}

#[derive(Clone)]
struct SnFake(Arc<Mutex<SnState>>);

impl Respond for SnFake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        st.log.push(format!("{} {}", req.method, req.url.path()));
        st.handle(req)
    }
}

/// A fake ServiceNow instance holding the incident INC0010001, for other tests (`serve`).
pub(crate) async fn servicenow_tickets() -> (Remote, Arc<Mutex<SnState>>) {
    let server = Remote::start().await;
    let state = Arc::new(Mutex::new(SnState {
        watch: server.watch(),
        ..SnState::default()
    }));
    state.lock().unwrap().add_task("INC0010001", "incident");
    Mock::given(any())
        .respond_with(SnFake(state.clone()))
        .mount(&server)
        .await;
    (server, state)
}

// ---- the Jira fake: issues and their comments ---------------------------------------------

#[derive(Debug, Default)]
struct JiraState {
    watch: Watch,
    /// key → comments (`id`, `created`, `body`, `properties`).
    issues: BTreeMap<String, Vec<Value>>,
    next: u64,
    race: bool,
    log: Vec<String>,
}

impl JiraState {
    fn comment(&mut self, body: &Value) -> Value {
        self.next += 1;
        json!({
            "id": format!("{}", 10_000 + self.next),
            "created": format!("2026-03-02T10:{:02}:{:02}.000+0000", self.next / 60, self.next % 60),
            "body": body["body"],
            "jsdPublic": body["properties"][0]["value"]["internal"] == json!(false),
            "properties": body["properties"],
        })
    }

    fn texts(&self, key: &str) -> Vec<String> {
        self.issues
            .get(key)
            .into_iter()
            .flatten()
            .map(|c| adf_text(&c["body"]))
            .collect()
    }

    fn writes(&self) -> usize {
        self.log.iter().filter(|l| !l.starts_with("GET ")).count()
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != basic(JIRA_USER, JIRA_TOKEN) {
            return ResponseTemplate::new(401);
        }
        let not_found = || {
            ResponseTemplate::new(404).set_body_json(json!({
                "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                "errors": {}
            }))
        };
        let segs: Vec<String> = req
            .url
            .path()
            .trim_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["rest", "api", "3", "issue", key, "comment"]) => {
                let params: BTreeMap<String, String> = req
                    .url
                    .query_pairs()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                for k in params.keys() {
                    if !matches!(k.as_str(), "startAt" | "maxResults" | "orderBy" | "expand") {
                        self.watch.flag(format!("comment list with {k}"));
                    }
                }
                let Some(comments) = self.issues.get(*key) else {
                    return not_found();
                };
                let start: usize = params
                    .get("startAt")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                // Jira may answer fewer than asked: pages of two make paging matter.
                let max = params
                    .get("maxResults")
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(50)
                    .min(2);
                let page: Vec<Value> = comments.iter().skip(start).take(max).cloned().collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "startAt": start, "maxResults": max, "total": comments.len(), "comments": page
                }))
            }
            ("POST", ["rest", "api", "3", "issue", key, "comment"]) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                if body["body"]["type"] != json!("doc") {
                    return ResponseTemplate::new(400)
                        .set_body_json(json!({"errorMessages": ["Comment body is not valid!"]}));
                }
                if body["properties"][0]["key"] != json!("sd.public.comment") {
                    self.watch.flag("a comment without sd.public.comment");
                }
                if !self.issues.contains_key(*key) {
                    return not_found();
                }
                let twin = std::mem::take(&mut self.race).then(|| self.comment(&body));
                let made = self.comment(&body);
                let list = self.issues.entry(key.to_string()).or_default();
                list.extend(twin);
                list.push(made.clone());
                ResponseTemplate::new(201).set_body_json(made)
            }
            ("DELETE", ["rest", "api", "3", "issue", key, "comment", id]) => {
                let Some(list) = self.issues.get_mut(*key) else {
                    return not_found();
                };
                let before = list.len();
                list.retain(|c| c["id"] != json!(id));
                if list.len() == before {
                    return not_found();
                }
                ResponseTemplate::new(204)
            }
            _ => self.watch.unexpected(req),
        }
    }
}

fn adf_text(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut s = o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(c) = o.get("content") {
                s.push_str(&adf_text(c));
                s.push('\n');
            }
            s
        }
        Value::Array(items) => items.iter().map(adf_text).collect(),
        _ => String::new(),
    }
}

#[derive(Clone)]
struct JiraFake(Arc<Mutex<JiraState>>);

impl Respond for JiraFake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        st.log.push(format!("{} {}", req.method, req.url.path()));
        st.handle(req)
    }
}

fn basic(user: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

// ---- the desk: both fakes and a repository ------------------------------------------------

const CONFIG: &str = r#"
service = "shop"
[sprint]
start = "2026-03-02"
length_days = 14
[policy]
min_history = 0
[policy.allowance]
initial = 10
[verify]
window = "24h"
[sync]
enabled = true
jira_projects = ["OPS"]
"#;

struct Desk {
    sn_server: Remote,
    sn: Arc<Mutex<SnState>>,
    jira_server: Remote,
    jira: Arc<Mutex<JiraState>>,
    repo: tempfile::TempDir,
    _state: tempfile::TempDir,
    ledger: PathBuf,
    sha: String,
}

impl Desk {
    /// Both fakes (INC0010001 an incident, OPS-12 an issue), and a repository whose last
    /// commit squashes pull request #42 (`subject`).
    async fn start(extra_config: &str, subject: &str) -> Desk {
        let sn_server = Remote::start().await;
        let sn = Arc::new(Mutex::new(SnState {
            watch: sn_server.watch(),
            ..SnState::default()
        }));
        sn.lock().unwrap().add_task("INC0010001", "incident");
        sn.lock().unwrap().add_task("PRB0000007", "problem");
        Mock::given(any())
            .respond_with(SnFake(sn.clone()))
            .mount(&sn_server)
            .await;
        let jira_server = Remote::start().await;
        let jira = Arc::new(Mutex::new(JiraState {
            watch: jira_server.watch(),
            ..JiraState::default()
        }));
        jira.lock()
            .unwrap()
            .issues
            .insert("OPS-12".into(), Vec::new());
        Mock::given(any())
            .respond_with(JiraFake(jira.clone()))
            .mount(&jira_server)
            .await;
        let repo = git_repo();
        let dir = repo.path();
        std::fs::write(
            dir.join(".changegate.toml"),
            format!("{CONFIG}{extra_config}"),
        )
        .unwrap();
        default_branch_is_head(dir, "main");
        std::fs::write(dir.join("app.txt"), "v2\n").unwrap();
        git(dir, &["add", "app.txt"]);
        git_at(
            dir,
            "2026-03-01T09:00:00Z",
            &["commit", "-q", "-m", subject],
        );
        let sha = git(dir, &["rev-parse", "HEAD"]);
        let state = tempfile::tempdir().unwrap();
        let ledger = state.path().join("ledger.db");
        Desk {
            sn_server,
            sn,
            jira_server,
            jira,
            repo,
            _state: state,
            ledger,
            sha,
        }
    }

    fn sn(&self) -> MutexGuard<'_, SnState> {
        self.sn.lock().unwrap()
    }

    fn jira(&self) -> MutexGuard<'_, JiraState> {
        self.jira.lock().unwrap()
    }

    fn dir(&self) -> &Path {
        self.repo.path()
    }

    /// A GitHub Actions event file.
    fn event(&self, name: &str, payload: &Value) -> PathBuf {
        let path = self._state.path().join(format!("{name}.json"));
        std::fs::write(&path, payload.to_string()).unwrap();
        path
    }

    /// The pull request #42's event: `opened`, or `closed` and merged.
    fn pull_request(&self, merged: bool, title: &str, body: &str) -> PathBuf {
        let parent = git(self.dir(), &["rev-parse", "HEAD~1"]);
        let payload = json!({
            "action": if merged { "closed" } else { "opened" },
            "number": 42,
            "pull_request": {
                "number": 42,
                "title": title,
                "body": body,
                "html_url": "https://github.com/acme/shop/pull/42",
                "merged": merged,
                "head": {"ref": "fix-rounding", "sha": self.sha},
                "base": {"ref": "main", "sha": parent},
                "user": {"login": "dev"}
            },
            "repository": {"full_name": "acme/shop", "default_branch": "main"}
        });
        self.event(if merged { "merged" } else { "opened" }, &payload)
    }

    /// Runs changegate at `now`; `event` makes it a GitHub Actions run of that event.
    fn run(&self, now: &str, event: Option<(&str, &Path)>, args: &[&str]) -> Output {
        self.run_env(now, event, args, &[])
    }

    /// [`Desk::run`] with more variables (set last: they win).
    fn run_env(
        &self,
        now: &str,
        event: Option<(&str, &Path)>,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Output {
        let mut cmd = changegate(self.dir());
        cmd.env("CHANGEGATE_NOW", now)
            .env("CHANGEGATE_LEDGER", &self.ledger)
            .env("CHANGEGATE_SERVICENOW_URL", self.sn_server.uri())
            .env("CHANGEGATE_SERVICENOW_USER", SN_USER)
            .env("CHANGEGATE_SERVICENOW_PASSWORD", SN_PASSWORD)
            .env("CHANGEGATE_JIRA_URL", self.jira_server.uri())
            .env("CHANGEGATE_JIRA_USER", JIRA_USER)
            .env("CHANGEGATE_JIRA_TOKEN", JIRA_TOKEN)
            .timeout(std::time::Duration::from_secs(60));
        if let Some((name, path)) = event {
            cmd.env("GITHUB_ACTIONS", "true")
                .env("GITHUB_EVENT_NAME", name)
                .env("GITHUB_EVENT_PATH", path)
                .env("GITHUB_REPOSITORY", "acme/shop")
                .env("GITHUB_SERVER_URL", "https://github.com")
                .env("GITHUB_API_URL", "http://127.0.0.1:9")
                .env("GITHUB_SHA", &self.sha);
            if name == "pull_request" {
                cmd.env("GITHUB_HEAD_REF", "fix-rounding")
                    .env("GITHUB_BASE_REF", "main")
                    .env("GITHUB_REF_NAME", "42/merge");
            } else {
                cmd.env("GITHUB_REF_NAME", "main")
                    .env("GITHUB_REF", "refs/heads/main");
            }
        }
        cmd.envs(vars.iter().copied())
            .args(args)
            .output()
            .expect("changegate runs")
    }

    /// [`Desk::run`], requiring exit code `code`; returns stderr.
    fn ok(&self, code: i32, now: &str, event: Option<(&str, &Path)>, args: &[&str]) -> String {
        let out = self.run(now, event, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "changegate {args:?}\nstdout:\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout),
        );
        stderr
    }
}

const SQUASH: &str = "Fix rounding for INC0010001 and OPS-12 (#42)";

/// The whole way of a pull request: opened, merged, deployed, verified; then three re-runs
/// of every step.
fn the_way(d: &Desk, opened: &Path, merged: &Path, push: &Path) {
    let pr = Some(("pull_request", opened));
    let closed = Some(("pull_request", merged));
    let main = Some(("push", push));
    d.ok(0, "2026-03-02T09:00:00Z", pr, &["sync"]);
    d.ok(0, "2026-03-02T09:05:00Z", pr, &["gate"]);
    d.ok(0, "2026-03-02T09:30:00Z", closed, &["sync"]);
    d.ok(0, "2026-03-02T10:00:00Z", main, &["gate"]);
    d.ok(
        0,
        "2026-03-02T10:10:00Z",
        main,
        &["record", "--outcome", "success"],
    );
    d.ok(0, "2026-03-03T11:00:00Z", None, &["verify"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_requests_tickets_hear_each_step_once_whatever_the_reruns() {
    let d = Desk::start("", SQUASH).await;
    let opened = d.pull_request(
        false,
        "Fix rounding for INC0010001",
        "Customers saw OPS-12.",
    );
    let merged = d.pull_request(true, "Fix rounding for INC0010001", "Customers saw OPS-12.");
    let push = d.event(
        "push",
        &json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/shop", "default_branch": "main"}}),
    );

    the_way(&d, &opened, &merged, &push);
    let steps = ["opened", "merged", "deployed", "verified"];
    let notes = d.sn().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 4, "{notes:#?}");
    for (note, step) in notes.iter().zip(steps) {
        assert!(
            note.contains(&format!("[changegate:sync {step} ")),
            "{step}: {note}"
        );
    }
    assert!(notes[0].starts_with("Pull request acme/shop#42 opened: Fix rounding for INC0010001"));
    assert!(notes[0].contains("https://github.com/acme/shop/pull/42"));
    assert!(
        notes[2].starts_with("Deployed to production: shop\nChange CG-"),
        "{}",
        notes[2]
    );
    // Not customer-visible: no comment.
    assert!(d.sn().notes("INC0010001", "comments").is_empty());
    let comments = d.jira().texts("OPS-12");
    assert_eq!(comments.len(), 4, "{comments:#?}");
    for (c, step) in comments.iter().zip(steps) {
        assert!(
            c.contains(&format!("[changegate:sync {step} ")),
            "{step}: {c}"
        );
    }
    assert!(
        d.jira().issues["OPS-12"]
            .iter()
            .all(|c| c["properties"][0]["value"]["internal"] == json!(true)),
        "internal notes"
    );
    let (sn_writes, jira_writes) = (d.sn().writes(), d.jira().writes());
    assert_eq!((sn_writes, jira_writes), (4, 4));

    // Three more runs of every step: notes are read back, nothing is written.
    for _ in 0..3 {
        the_way(&d, &opened, &merged, &push);
    }
    assert_eq!(d.sn().notes("INC0010001", "work_notes").len(), 4);
    assert_eq!(d.jira().texts("OPS-12").len(), 4);
    assert_eq!((d.sn().writes(), d.jira().writes()), (4, 4));
    d.sn_server.verify().await;
    d.jira_server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ticket_is_a_warning_and_the_exit_code_stays() {
    let d = Desk::start("", "Fix INC0099999 and OPS-404 (#42)").await;
    let opened = d.pull_request(false, "Fix INC0099999", "See OPS-404");
    let pr = Some(("pull_request", opened.as_path()));
    let err = d.ok(0, "2026-03-02T09:00:00Z", pr, &["sync"]);
    assert!(
        err.contains("ticket INC0099999 not updated (opened): ServiceNow has no such ticket"),
        "{err}"
    );
    assert!(err.contains("ticket OPS-404 not updated (opened)"), "{err}");
    // Inside the gate: the same warnings, the gate's own exit code.
    let err = d.ok(0, "2026-03-02T09:05:00Z", pr, &["gate"]);
    assert!(err.contains("ticket INC0099999 not updated"), "{err}");
    assert_eq!((d.sn().writes(), d.jira().writes()), (0, 0));

    // A blocked gate stays blocked (exit 1) with its sync warnings beside.
    let frozen = Desk::start(
        "[[freeze]]\nfrom = \"2026-03-01T00:00:00Z\"\nto = \"2026-03-09T00:00:00Z\"\nreason = \"release\"\n",
        "Fix INC0099999 (#42)",
    )
    .await;
    let opened = frozen.pull_request(false, "Fix INC0099999", "");
    let err = frozen.ok(
        1,
        "2026-03-02T09:05:00Z",
        Some(("pull_request", opened.as_path())),
        &["gate"],
    );
    assert!(err.contains("ticket INC0099999 not updated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_visible_adds_the_comment_and_a_public_jira_comment() {
    let d = Desk::start("customer_visible = true\n", SQUASH).await;
    let opened = d.pull_request(
        false,
        "Fix <b>INC0010001</b> [code]<i>x</i>[/code]",
        "OPS-12",
    );
    let pr = Some(("pull_request", opened.as_path()));
    d.ok(0, "2026-03-02T09:00:00Z", pr, &["sync"]);
    d.ok(0, "2026-03-02T09:01:00Z", pr, &["sync"]);
    let notes = d.sn().notes("INC0010001", "work_notes");
    let comments = d.sn().notes("INC0010001", "comments");
    assert_eq!((notes.len(), comments.len()), (1, 1));
    assert_eq!(notes, comments);
    // ServiceNow renders [code] in journals as HTML: defused.
    assert!(!notes[0].to_lowercase().contains("[code]"), "{}", notes[0]);
    let jira = d.jira().issues["OPS-12"].clone();
    assert_eq!(jira.len(), 1);
    assert_eq!(jira[0]["properties"][0]["value"]["internal"], json!(false));
    // ADF text nodes: the title's markup is text, not structure.
    assert!(adf_text(&jira[0]["body"]).contains("Fix <b>INC0010001</b>"));
    assert_eq!((d.sn().writes(), d.jira().writes()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pipelines_that_both_wrote_leave_one_note() {
    let d = Desk::start("", SQUASH).await;
    let opened = d.pull_request(false, "Fix INC0010001", "OPS-12");
    d.sn().race = true;
    d.jira().race = true;
    d.ok(
        0,
        "2026-03-02T09:00:00Z",
        Some(("pull_request", opened.as_path())),
        &["sync"],
    );
    assert_eq!(d.sn().notes("INC0010001", "work_notes").len(), 1);
    assert_eq!(d.jira().texts("OPS-12").len(), 1);
    // The younger copy (this run's) went; the older stays.
    assert!(d.sn().log.iter().any(|l| l.starts_with("DELETE ")));
    let kept = d.jira().issues["OPS-12"][0]["id"].clone();
    assert_eq!(kept, json!("10001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_and_a_pull_request_without_tickets_write_nothing() {
    let d = Desk::start("", SQUASH).await;
    let opened = d.pull_request(false, "Fix INC0010001", "OPS-12");
    let pr = Some(("pull_request", opened.as_path()));
    let out = d.run("2026-03-02T09:00:00Z", pr, &["sync", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("INC0010001 opened: would note"), "{stdout}");
    // Nothing referenced by the pull request nor its commits: nothing to ask anyone.
    let tidy = Desk::start("", "Tidy the README (#43)").await;
    let quiet = tidy.pull_request(false, "Tidy the README", "");
    let out = tidy.run(
        "2026-03-02T09:00:00Z",
        Some(("pull_request", quiet.as_path())),
        &["sync", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["lines"], json!([]));
    assert!(d.sn().log.is_empty() && d.jira().log.is_empty());
    assert!(tidy.sn().log.is_empty() && tidy.jira().log.is_empty());
}

// ---- the backlog and the sprint: a GitHub repository's issues and milestones --------------

const GH_TOKEN: &str = "ghs_sync_issues";

#[derive(Debug, Default)]
struct GhIssues {
    milestones: Vec<Value>,
    issues: Vec<Value>,
    log: Vec<String>,
}

fn answer_issues(gh: &Mutex<GhIssues>, watch: &Watch, req: &Request) -> ResponseTemplate {
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {GH_TOKEN}") && auth != format!("token {GH_TOKEN}") {
        return ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}));
    }
    let mut g = gh.lock().unwrap();
    g.log.push(format!("{} {}", req.method, req.url));
    let pairs: BTreeMap<String, String> = req.url.query_pairs().into_owned().collect();
    for k in pairs.keys() {
        if !matches!(k.as_str(), "state" | "milestone" | "per_page" | "page") {
            watch.flag(format!("unknown query term {k} on {}", req.url.path()));
        }
    }
    let state = pairs.get("state").map(String::as_str);
    match (req.method.as_str(), req.url.path()) {
        ("GET", "/repos/acme/shop/milestones") => {
            ResponseTemplate::new(200).set_body_json(&g.milestones)
        }
        ("GET", "/repos/acme/shop/issues") => {
            let list: Vec<Value> = match (pairs.get("milestone"), state) {
                (Some(m), Some("all")) => g
                    .issues
                    .iter()
                    .filter(|i| {
                        i["milestone"]["number"].as_u64().map(|n| n.to_string()) == Some(m.clone())
                    })
                    .cloned()
                    .collect(),
                (None, Some("open")) => g
                    .issues
                    .iter()
                    .filter(|i| i["state"] == "open")
                    .cloned()
                    .collect(),
                _ => {
                    watch.flag(format!("issues listed with {pairs:?}"));
                    Vec::new()
                }
            };
            ResponseTemplate::new(200).set_body_json(list)
        }
        _ => watch.unexpected(req),
    }
}

async fn github_issues(gh: Arc<Mutex<GhIssues>>) -> Remote {
    let remote = Remote::start().await;
    let watch = remote.watch();
    Mock::given(any())
        .respond_with(move |req: &Request| answer_issues(&gh, &watch, req))
        .mount(&remote)
        .await;
    remote
}

fn gh_issue(number: u64, title: &str, body: &str, milestone: Option<u64>) -> Value {
    json!({"number": number, "title": title, "body": body, "state": "open",
        "html_url": format!("https://github.com/acme/shop/issues/{number}"), "labels": [],
        "milestone": milestone.map(|n| json!({"number": n, "title": format!("Sprint {n}"),
            "due_on": "2026-03-15T07:00:00Z", "state": "open"}))})
}

/// An issue referencing `INC0010001` is created, then put in the sprint's milestone: one
/// note at "entered the backlog", one at "entered sprint 1"; re-runs write nothing more,
/// and neither a pull request among the issues nor an issue of another sprint counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_enters_the_backlog_then_the_sprint_one_note_each() {
    let d = Desk::start(
        "[announce]\nsource = \"github-milestone\"\nmilestone = \"Sprint {n}\"\n",
        "Tidy the README",
    )
    .await;
    let gh = Arc::new(Mutex::new(GhIssues::default()));
    gh.lock().unwrap().milestones = vec![
        json!({"number": 1, "title": "Sprint 1", "due_on": "2026-03-15T07:00:00Z", "state": "open",
            "html_url": "https://github.com/acme/shop/milestone/1"}),
        json!({"number": 2, "title": "Sprint 2", "due_on": "2026-03-29T07:00:00Z", "state": "open",
            "html_url": "https://github.com/acme/shop/milestone/2"}),
    ];
    let api = github_issues(gh.clone()).await;
    let mut pr = gh_issue(40, "Fix PRB0000007", "", Some(1));
    pr["pull_request"] =
        json!({"html_url": "https://github.com/acme/shop/pull/40", "merged_at": null});
    gh.lock().unwrap().issues = vec![
        gh_issue(
            12,
            "Checkout [code]<b>times out</b>[/code]\n",
            "Customers report INC0010001.",
            None,
        ),
        gh_issue(13, "Unrelated", "nothing referenced", Some(1)),
        pr,
    ];
    let event = d.event(
        "issues",
        &json!({"action": "opened", "issue": gh_issue(12, "x", "", None),
        "repository": {"full_name": "acme/shop", "default_branch": "main"}}),
    );
    let api_url = api.uri();
    let vars = [
        ("GITHUB_API_URL", api_url.as_str()),
        ("GITHUB_TOKEN", GH_TOKEN),
    ];
    let sync = |now: &str| {
        let out = d.run_env(now, Some(("issues", event.as_path())), &["sync"], &vars);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{stderr}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let out = sync("2026-03-03T09:00:00Z");
    assert!(out.contains("INC0010001 backlog: noted"), "{out}");
    let notes = d.sn().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 1, "{notes:#?}");
    // The issue's title is untrusted: its newline folded, ServiceNow's [code] defused.
    assert_eq!(
        notes[0],
        "Entered the backlog: acme/shop#12 Checkout [ code ]<b>times out</b>[ /code ]\nhttps://github.com/acme/shop/issues/12\n[changegate:sync backlog acme/shop]"
    );
    {
        let sn = d.sn();
        assert_eq!(sn.writes(), 1, "{:#?}", sn.log);
    }
    // Once in the backlog: the next run reads the note back, writes nothing.
    sync("2026-03-03T09:30:00Z");
    {
        let sn = d.sn();
        assert_eq!(sn.writes(), 1, "{:#?}", sn.log);
    }

    // Put in another sprint's milestone: nothing; in this sprint's: "entered sprint 1".
    gh.lock().unwrap().issues[0]["milestone"] = json!({"number": 2, "title": "Sprint 2"});
    sync("2026-03-03T10:00:00Z");
    assert_eq!(d.sn().writes(), 1);
    gh.lock().unwrap().issues[0]["milestone"] = json!({"number": 1, "title": "Sprint 1"});
    let out = sync("2026-03-03T10:30:00Z");
    assert!(out.contains("INC0010001 sprint: noted"), "{out}");
    let notes = d.sn().notes("INC0010001", "work_notes");
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert_eq!(
        notes[1],
        "Entered sprint 1 (2026-03-02 to 2026-03-15): acme/shop#12 Checkout [ code ]<b>times out</b>[ /code ]\nhttps://github.com/acme/shop/issues/12\n[changegate:sync sprint 1 acme/shop]"
    );
    for minute in 0..3 {
        sync(&format!("2026-03-04T09:0{minute}:00Z"));
    }
    assert_eq!(d.sn().notes("INC0010001", "work_notes").len(), 2);
    assert_eq!(d.sn().writes(), 2);
    // The pull request among the issues is not a work item of the backlog.
    assert!(d.sn().notes("PRB0000007", "work_notes").is_empty());
    assert_eq!(d.jira().writes(), 0);
    api.verify().await;
    d.sn_server.verify().await;
    d.jira_server.verify().await;
}

/// The work source cannot be read: a warning; the pull request's own steps are written and
/// the exit code stays 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_be_read_is_a_warning() {
    let d = Desk::start(
        "[announce]\nsource = \"github-milestone\"\n[http]\ndeadline = \"5s\"\n",
        SQUASH,
    )
    .await;
    let opened = d.pull_request(false, "Fix rounding for INC0010001", "");
    let out = d.run_env(
        "2026-03-02T09:00:00Z",
        Some(("pull_request", opened.as_path())),
        &["sync"],
        &[("GITHUB_TOKEN", GH_TOKEN)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the backlog and the sprint were not scanned for tickets"),
        "{stderr}"
    );
    assert_eq!(d.sn().notes("INC0010001", "work_notes").len(), 1);
}
