//! `changegate serve`: the real server process, driven over HTTP with GitHub's real
//! deployment payloads (signed as GitHub signs them), against a stateful fake of the GitHub
//! API on the one harness (`support::remote`): a request nobody expected fails the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::remote::Remote;
use crate::support::{changegate, machine_ci_vars, reference};

const OWNER_REPO: &str = "Codertocat/Hello-World";
const SHA: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
const SECRET: &str = "webhook-secret-for-tests";
const APP_ID: &str = "123456";
const TOKEN: &str = "ghs_serveInstallationToken0123";
const CALLBACK: &str =
    "/repos/Codertocat/Hello-World/actions/runs/1234567890/deployment_protection_rule";
/// Pre-approves a first change: no track record needed.
const PRE_APPROVE: &str = "[policy]\nmin_history = 0\n";
/// A first change needs approval (the default track record is not there).
fn needs_approval(timeout: &str) -> String {
    format!("[approval]\ntimeout = \"{timeout}\"\npoll = \"1s\"\n")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// The fake GitHub: App installation tokens, the default branch's config, check runs, the
// pull requests of a commit, and deployment protection rule callbacks.

#[derive(Default)]
struct GhState {
    /// The default branch's `.changegate.toml`; `None`: no such file.
    config: Option<String>,
    /// Every callback body, in order.
    callbacks: Vec<Value>,
    minted: usize,
    check_runs: Vec<Value>,
    /// The repository's milestones and issues (`sync` on `issues` deliveries).
    milestones: Vec<Value>,
    issues: Vec<Value>,
}

struct FakeGitHub {
    server: Remote,
    state: Arc<Mutex<GhState>>,
}

fn bearer(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

/// The App JWT, verified with the App's public key as GitHub does.
fn app_jwt_ok(req: &Request) -> bool {
    let Some(jwt) = bearer(req) else { return false };
    crate::support::app_jwt_claims(&jwt).is_ok_and(|claims| claims["iss"] == json!(123456))
}

fn unauthorized() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({"message": "Bad credentials"}))
}

impl FakeGitHub {
    async fn start(config: Option<&str>) -> FakeGitHub {
        let server = Remote::start().await;
        let state = Arc::new(Mutex::new(GhState {
            config: config.map(str::to_string),
            ..GhState::default()
        }));
        let repo = format!("/repos/{OWNER_REPO}");
        let s = state.clone();
        Mock::given(method("POST"))
            .and(path("/app/installations/1/access_tokens"))
            .respond_with(move |req: &Request| {
                if !app_jwt_ok(req) {
                    return unauthorized();
                }
                s.lock().unwrap().minted += 1;
                let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
                ResponseTemplate::new(201).set_body_json(json!({
                    "token": TOKEN, "expires_at": expires,
                    "permissions": {"deployments": "write", "contents": "read"},
                    "repository_selection": "selected"
                }))
            })
            .mount(&server)
            .await;
        // The App itself, with its JWT: what `/readyz` asks.
        Mock::given(method("GET"))
            .and(path("/app"))
            .respond_with(move |req: &Request| {
                if !app_jwt_ok(req) {
                    return unauthorized();
                }
                ResponseTemplate::new(200).set_body_json(
                    json!({"id": 123456, "slug": "changegate", "name": "changegate"}),
                )
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path(format!("{repo}/contents/.changegate.toml")))
            .respond_with(move |req: &Request| {
                if bearer(req).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                let on_default = req
                    .url
                    .query_pairs()
                    .any(|(k, v)| k == "ref" && v == "master");
                match (&s.lock().unwrap().config, on_default) {
                    (Some(text), true) => ResponseTemplate::new(200).set_body_string(text.clone()),
                    _ => ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})),
                }
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path(format!("{repo}/milestones")))
            .respond_with(move |req: &Request| {
                if bearer(req).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                ResponseTemplate::new(200).set_body_json(&s.lock().unwrap().milestones)
            })
            .mount(&server)
            .await;
        let s = state.clone();
        let watch = server.watch();
        Mock::given(method("GET"))
            .and(path(format!("{repo}/issues")))
            .respond_with(move |req: &Request| {
                if bearer(req).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                let q: std::collections::BTreeMap<String, String> =
                    req.url.query_pairs().into_owned().collect();
                let st = s.lock().unwrap();
                let list: Vec<Value> =
                    match (q.get("state").map(String::as_str), q.get("milestone")) {
                        (Some("open"), None) => st
                            .issues
                            .iter()
                            .filter(|i| i["state"] == "open")
                            .cloned()
                            .collect(),
                        (Some("all"), Some(m)) => st
                            .issues
                            .iter()
                            .filter(|i| {
                                i["milestone"]["number"]
                                    .as_u64()
                                    .map(|n| n.to_string())
                                    .as_ref()
                                    == Some(m)
                            })
                            .cloned()
                            .collect(),
                        _ => {
                            watch.flag(format!("issues listed with {q:?}"));
                            Vec::new()
                        }
                    };
                ResponseTemplate::new(200).set_body_json(list)
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{repo}/branches/master")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"name": "master"})))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path(format!("{repo}/commits/{SHA}/pulls")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("GET"))
            .and(path(format!("{repo}/commits/{SHA}/check-runs")))
            .respond_with(move |_: &Request| {
                let runs = s.lock().unwrap().check_runs.clone();
                ResponseTemplate::new(200)
                    .set_body_json(json!({"total_count": runs.len(), "check_runs": runs}))
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("POST"))
            .and(path(format!("{repo}/check-runs")))
            .respond_with(move |req: &Request| {
                let mut body: Value = req.body_json().unwrap();
                let mut st = s.lock().unwrap();
                body["id"] = json!(st.check_runs.len() + 1);
                st.check_runs.push(body.clone());
                ResponseTemplate::new(201).set_body_json(body)
            })
            .mount(&server)
            .await;
        let s = state.clone();
        Mock::given(method("PATCH"))
            .and(path_regex(format!(r"^{repo}/check-runs/\d+$")))
            .respond_with(move |req: &Request| {
                let id: usize = req.url.path().rsplit('/').next().unwrap().parse().unwrap();
                let patch: Value = req.body_json().unwrap();
                let mut st = s.lock().unwrap();
                let run = &mut st.check_runs[id - 1];
                for (k, v) in patch.as_object().unwrap() {
                    run[k] = v.clone();
                }
                ResponseTemplate::new(200).set_body_json(run.clone())
            })
            .mount(&server)
            .await;
        let s = state.clone();
        let watch = server.watch();
        Mock::given(method("POST"))
            .and(path(CALLBACK))
            .respond_with(move |req: &Request| {
                if bearer(req).as_deref() != Some(TOKEN) {
                    return unauthorized();
                }
                let body: Value = req.body_json().unwrap();
                let comment = body["comment"].as_str().unwrap_or_default();
                if body["environment_name"] != "production" || comment.chars().count() > 1024 {
                    watch.flag(format!("callback GitHub would refuse: {body}"));
                }
                if let Some(state) = body.get("state")
                    && state != "approved"
                    && state != "rejected"
                {
                    watch.flag(format!("callback with state {state}"));
                }
                s.lock().unwrap().callbacks.push(body);
                ResponseTemplate::new(204)
            })
            .mount(&server)
            .await;
        FakeGitHub { server, state }
    }

    fn callbacks(&self) -> Vec<Value> {
        self.state.lock().unwrap().callbacks.clone()
    }

    /// The decisions among the callbacks (status reports have no `state`).
    fn decisions(&self) -> Vec<Value> {
        self.callbacks()
            .into_iter()
            .filter(|c| c.get("state").is_some())
            .collect()
    }

    /// Waits until `done` holds of the callbacks (or fails the test after 30s).
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let callbacks = self.callbacks();
            if done(&callbacks) {
                return callbacks;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what}: {callbacks:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server process.

struct Serve {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(dir: &Path, api: &str) -> Serve {
        Self::start_with(dir, api, &[])
    }

    fn start_with(dir: &Path, api: &str, extra: &[(&str, &str)]) -> Serve {
        let key = fixture("github-app-test-key.pem");
        let mut vars = vec![
            ("GITHUB_API_URL", api),
            ("CHANGEGATE_WEBHOOK_SECRET", SECRET),
            ("CHANGEGATE_GITHUB_APP_ID", APP_ID),
            ("CHANGEGATE_GITHUB_APP_PRIVATE_KEY", key.as_str()),
        ];
        vars.extend_from_slice(extra);
        Self::start_env(dir, &vars)
    }

    /// A server with only the ledger and `vars` set.
    fn start_env(dir: &Path, vars: &[(&str, &str)]) -> Serve {
        let extra = vars;
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("changegate"));
        cmd.current_dir(dir);
        for key in machine_ci_vars() {
            cmd.env_remove(key);
        }
        cmd.env("NO_COLOR", "1")
            .env("CHANGEGATE_LEDGER", ledger(dir))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("serve starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once("listening on ") {
                    let addr = addr.split(|c: char| c.is_whitespace() || c == '"').next();
                    let _ = tx.send(addr.unwrap_or_default().to_string());
                }
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("serve did not listen: {}", log.lock().unwrap()));
        Serve {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ledger(dir: &Path) -> PathBuf {
    dir.join("ledger.db")
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The real `requested` payload, its API URLs pointed at the fake.
fn protection_rule(api: &str) -> Vec<u8> {
    std::fs::read_to_string(reference(
        "github-webhooks/examples/deployment_protection_rule/requested.DERIVED.payload.json",
    ))
    .unwrap()
    .replace("https://api.github.com", api)
    .into_bytes()
}

fn deployment_status(api: &str) -> Vec<u8> {
    std::fs::read_to_string(reference(
        "github-webhooks/examples/deployment_status/with-installation.payload.json",
    ))
    .unwrap()
    .replace("https://api.github.com", api)
    .into_bytes()
}

async fn deliver(
    serve: &Serve,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, String) {
    let mut req = crate::support::http()
        .build()
        .expect("client")
        .post(format!("{}/webhooks/github", serve.url))
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn signed(serve: &Serve, event: &str, delivery: &str, body: &[u8]) -> u16 {
    deliver(serve, event, delivery, body, Some(sign(body)))
        .await
        .0
}

/// Rows of the ledger's changes: (id, state, outcome).
fn changes(dir: &Path) -> Vec<(i64, String, Option<String>)> {
    let conn = rusqlite::Connection::open(ledger(dir)).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, state, outcome FROM changes ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn get(serve: &Serve, route: &str) -> (u16, String) {
    let res = reqwest::get(format!("{}{route}", serve.url)).await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The value of one sample of the Prometheus text, `None` when absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_approved_deployment_is_approved_once_however_often_it_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(PRE_APPROVE)).await;
    let serve = Serve::start(dir.path(), &gh.server.uri());
    let body = protection_rule(&gh.server.uri());

    assert_eq!(get(&serve, "/healthz").await.0, 200);
    assert_eq!(get(&serve, "/readyz").await.0, 200);
    assert_eq!(
        signed(&serve, "ping", "d-ping", b"{\"zen\":\"x\"}").await,
        200
    );
    // Two deliveries of one deployment at once, under two ids: one record, one callback.
    let (a, b) = tokio::join!(
        signed(&serve, "deployment_protection_rule", "d-1", &body),
        signed(&serve, "deployment_protection_rule", "d-2", &body)
    );
    let mut codes = [a, b];
    codes.sort_unstable();
    assert_eq!(codes, [200, 202], "one taken, one seen before");
    let callbacks = gh.until("decision", |c| !c.is_empty()).await;
    // The same delivery again: nothing done again.
    assert_eq!(
        signed(&serve, "deployment_protection_rule", "d-1", &body).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let decisions = gh.decisions();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(callbacks[0]["state"], "approved", "{callbacks:?}");
    assert_eq!(callbacks[0]["environment_name"], "production");
    let comment = callbacks[0]["comment"].as_str().unwrap();
    assert!(comment.contains("pre-approved"), "{comment}");
    assert!(comment.contains("CG\\-1"), "the change's id: {comment}");
    // Each rule, with its reason.
    assert!(
        comment.contains("**track\\-record** no closed changes yet"),
        "{comment}"
    );
    assert!(
        comment.contains("**allowance**") && comment.contains("**freeze**"),
        "{comment}"
    );
    let rows = changes(dir.path());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "implementing", "{rows:?}");
    // Annotated as the step annotates: the check run on the deployed commit.
    let runs = gh.state.lock().unwrap().check_runs.clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["conclusion"], "success");

    // The deploy's outcome, from GitHub's deployment_status: recorded as `record` does.
    let status = deployment_status(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_status", "d-3", &status).await,
        202
    );
    let started = Instant::now();
    while changes(dir.path())[0].2.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = changes(dir.path());
    assert_eq!(rows[0].2.as_deref(), Some("success"), "{rows:?}");
    assert_eq!(rows[0].1, "closed", "{rows:?}");

    let (code, metrics) = get(&serve, "/metrics").await;
    assert_eq!(code, 200);
    let webhooks = |event: &str, result: &str| {
        sample(
            &metrics,
            &format!(
                "changegate_webhooks_total{{forge=\"github\",event=\"{event}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(
        webhooks("deployment_protection_rule", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks("deployment_protection_rule", "duplicate"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        webhooks("deployment_status", "accepted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(webhooks("ping", "pong"), Some(1.0), "{metrics}");
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
            "changegate_callbacks_total{kind=\"approved\",result=\"ok\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE changegate_approval_wait_seconds histogram"),
        "{metrics}"
    );
    assert!(metrics.trim_end().ends_with("# EOF"), "{metrics}");

    let log = serve.log();
    assert!(!log.contains(TOKEN), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    assert_eq!(serve.stop(), Some(0), "SIGTERM drains and exits 0");
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_or_missing_signature_is_401_and_nothing_is_done() {
    let dir = tempfile::tempdir().unwrap();
    // No route is mounted that the server may call: any request to GitHub fails the test.
    let gh = Remote::start().await;
    let serve = Serve::start(dir.path(), &gh.uri());
    let body = protection_rule(&gh.uri());
    let event = "deployment_protection_rule";
    assert_eq!(deliver(&serve, event, "d-1", &body, None).await.0, 401);
    let wrong = sign(b"another body");
    assert_eq!(
        deliver(&serve, event, "d-2", &body, Some(wrong)).await.0,
        401
    );
    let garbled = sign(&body).replace("sha256=", "sha1=");
    assert_eq!(
        deliver(&serve, event, "d-3", &body, Some(garbled)).await.0,
        401
    );
    // Signed by someone with another secret.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"not the secret").unwrap();
    mac.update(&body);
    let other = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        deliver(&serve, event, "d-4", &body, Some(other)).await.0,
        401
    );
    // Too big for the body limit: 413, unread.
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        deliver(&serve, event, "d-5", &big, Some(sign(&big)))
            .await
            .0,
        413
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(changes(dir.path()).is_empty());
    let (_, metrics) = get(&serve, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "changegate_webhooks_total{forge=\"github\",event=\"deployment_protection_rule\",result=\"unauthorized\"}"
        ),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(serve.stop(), Some(0));
    gh.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_outside_the_api_is_refused_and_nothing_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let gh = Remote::start().await;
    let serve = Serve::start(dir.path(), &gh.uri());
    // The payload as GitHub.com sends it: its callback is not under this server's API.
    let body = protection_rule("https://api.github.com");
    let (code, text) = deliver(
        &serve,
        "deployment_protection_rule",
        "d-1",
        &body,
        Some(sign(&body)),
    )
    .await;
    assert_eq!(code, 422, "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(changes(dir.path()).is_empty());
    gh.verify().await;
}

/// Delivers a deployment that needs approval and waits for the status report.
async fn waiting(dir: &Path, gh: &FakeGitHub) -> Serve {
    let serve = Serve::start(dir, &gh.server.uri());
    let body = protection_rule(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_protection_rule", "d-1", &body).await,
        202
    );
    let callbacks = gh.until("status report", |c| !c.is_empty()).await;
    assert!(
        callbacks[0].get("state").is_none(),
        "a status report first: {callbacks:?}"
    );
    let comment = callbacks[0]["comment"].as_str().unwrap();
    assert!(
        comment.contains("waiting for approval") && comment.contains("CG\\-1"),
        "{comment}"
    );
    serve
}

fn decide_by_hand(dir: &Path, verb: &str) {
    changegate(dir)
        .env("CHANGEGATE_LEDGER", ledger(dir))
        .args([
            verb,
            "--change",
            "CG-1",
            "--by",
            "alice",
            "--comment",
            "checked the runbook",
        ])
        .assert()
        .success();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_waiting_for_approval_is_approved_when_a_person_approves() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(&needs_approval("60s"))).await;
    let serve = waiting(dir.path(), &gh).await;
    decide_by_hand(dir.path(), "approve");
    let callbacks = gh.until("decision", |c| c.len() >= 2).await;
    assert_eq!(callbacks.len(), 2, "{callbacks:?}");
    assert_eq!(callbacks[1]["state"], "approved", "{callbacks:?}");
    let comment = callbacks[1]["comment"].as_str().unwrap();
    assert!(
        comment.contains("approved") && comment.contains("CG\\-1"),
        "{comment}"
    );
    assert!(comment.contains("checked the runbook"), "{comment}");
    let (_, metrics) = get(&serve, "/metrics").await;
    assert_eq!(
        sample(&metrics, "changegate_approval_wait_seconds_count"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(serve.stop(), Some(0));
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_waiting_for_approval_is_rejected_when_a_person_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(&needs_approval("60s"))).await;
    let serve = waiting(dir.path(), &gh).await;
    decide_by_hand(dir.path(), "reject");
    let callbacks = gh.until("decision", |c| c.len() >= 2).await;
    assert_eq!(callbacks[1]["state"], "rejected", "{callbacks:?}");
    assert!(
        callbacks[1]["comment"]
            .as_str()
            .unwrap()
            .contains("rejected")
    );
    assert_eq!(changes(dir.path())[0].1, "rejected");
    drop(serve);
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_nobody_approves_is_rejected_when_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(&needs_approval("2s"))).await;
    let serve = waiting(dir.path(), &gh).await;
    let callbacks = gh.until("decision", |c| c.len() >= 2).await;
    assert_eq!(callbacks[1]["state"], "rejected", "{callbacks:?}");
    let comment = callbacks[1]["comment"].as_str().unwrap();
    assert!(comment.contains("timed out"), "{comment}");
    drop(serve);
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(&needs_approval("60s"))).await;
    let serve = waiting(dir.path(), &gh).await;
    // Stopped while the deployment waits: exit 0, the wait stays in the ledger.
    assert_eq!(serve.stop(), Some(0));
    decide_by_hand(dir.path(), "approve");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gh.decisions().len(), 0, "nobody was running to call back");
    let serve = Serve::start(dir.path(), &gh.server.uri());
    let callbacks = gh
        .until("decision", |c| c.iter().any(|c| c.get("state").is_some()))
        .await;
    let decisions: Vec<&Value> = callbacks
        .iter()
        .filter(|c| c.get("state").is_some())
        .collect();
    assert_eq!(decisions.len(), 1, "{callbacks:?}");
    assert_eq!(decisions[0]["state"], "approved", "{callbacks:?}");
    assert_eq!(changes(dir.path()).len(), 1);
    // Called back: nothing is held any more, so a third server has nothing to pick up.
    assert_eq!(serve.stop(), Some(0));
    let serve = Serve::start(dir.path(), &gh.server.uri());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gh.decisions().len(), 1);
    drop(serve);
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_picked_up_after_its_timeout_is_rejected_at_once() {
    // `approval.timeout` counts from when the deployment was first held, not from when a
    // server picked it up: a server started after the timeout rejects at once. A wait
    // started again would take the whole timeout (6 s) before rejecting; the bound below is
    // that timeout, not a speed target.
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(&needs_approval("6s"))).await;
    // Killed while it waits (a stopped server would finish the wait before exiting).
    drop(waiting(dir.path(), &gh).await);
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let restarted = std::time::Instant::now();
    let serve = Serve::start(dir.path(), &gh.server.uri());
    let callbacks = gh
        .until("decision", |c| c.iter().any(|c| c.get("state").is_some()))
        .await;
    let took = restarted.elapsed();
    let decision = callbacks.iter().find(|c| c.get("state").is_some()).unwrap();
    assert_eq!(decision["state"], "rejected", "{callbacks:?}");
    let comment = decision["comment"].as_str().unwrap();
    assert!(comment.contains("timed out"), "{comment}");
    assert!(
        took < Duration::from_secs(6),
        "the wait started again: rejected {took:?} after the restart"
    );
    drop(serve);
    gh.server.verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_only_when_github_takes_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let gh = FakeGitHub::start(Some(PRE_APPROVE)).await;
    let serve = Serve::start(dir.path(), &gh.server.uri());
    assert_eq!(get(&serve, "/readyz").await.0, 200);
    drop(serve);
    // A key GitHub does not know for this App id: alive, not ready.
    let serve = Serve::start_with(
        dir.path(),
        &gh.server.uri(),
        &[("CHANGEGATE_GITHUB_APP_ID", "654321")],
    );
    assert_eq!(get(&serve, "/healthz").await.0, 200);
    assert_eq!(get(&serve, "/readyz").await.0, 503);
    // The server logs before it answers; the test reads its stderr on another thread.
    let started = Instant::now();
    while !serve.log().contains("GitHub does not take the App") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(serve);
    gh.server.verify().await;
    // GitHub down: not ready, within the probe's bound.
    let api = {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", closed.local_addr().unwrap())
    };
    let serve = Serve::start(dir.path(), &api);
    let started = Instant::now();
    assert_eq!(get(&serve, "/readyz").await.0, 503);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn serve_refuses_to_start_without_a_webhook_secret() {
    let dir = tempfile::tempdir().unwrap();
    changegate(dir.path())
        .env("CHANGEGATE_GITHUB_APP_ID", APP_ID)
        .env(
            "CHANGEGATE_GITHUB_APP_PRIVATE_KEY",
            fixture("github-app-test-key.pem"),
        )
        .args(["serve", "--listen", "127.0.0.1:0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("CHANGEGATE_WEBHOOK_SECRET"));
}

mod gitlab;
mod itsm;

/// A pull request opened on a repository whose config enables `[sync]`: its ticket gets
/// the "opened" note from the server, once, however often the event is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_delivery_notes_its_ticket_once() {
    let gh = FakeGitHub::start(Some("[sync]\nenabled = true\n")).await;
    let (sn_server, sn) = crate::sync::servicenow_tickets().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        dir.path(),
        &gh.server.uri(),
        &[
            ("CHANGEGATE_SERVICENOW_URL", sn_server.uri().as_str()),
            ("CHANGEGATE_SERVICENOW_USER", crate::sync::SN_USER),
            ("CHANGEGATE_SERVICENOW_PASSWORD", crate::sync::SN_PASSWORD),
        ],
    );
    let payload = |action: &str| {
        json!({
            "action": action,
            "number": 2,
            "pull_request": {
                "number": 2, "title": "Fix the timeout of INC0010001", "body": null,
                "html_url": "https://github.com/Codertocat/Hello-World/pull/2",
                "merged": false,
                "head": {"ref": "fix-timeout", "sha": SHA},
                "base": {"ref": "master", "sha": "0000000000000000000000000000000000000001"}
            },
            "repository": {"full_name": OWNER_REPO, "default_branch": "master",
                           "html_url": "https://github.com/Codertocat/Hello-World"},
            "installation": {"id": 1}
        })
        .to_string()
        .into_bytes()
    };
    assert_eq!(
        signed(&serve, "pull_request", "pr-1", &payload("opened")).await,
        202
    );
    let started = Instant::now();
    while sn
        .lock()
        .unwrap()
        .notes("INC0010001", "work_notes")
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no note: {}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same delivery again: nothing done; another delivery of the event: read, not written.
    assert_eq!(
        signed(&serve, "pull_request", "pr-1", &payload("opened")).await,
        200
    );
    assert_eq!(
        signed(&serve, "pull_request", "pr-2", &payload("reopened")).await,
        202
    );
    // An edit is not a milestone.
    assert_eq!(
        signed(&serve, "pull_request", "pr-3", &payload("edited")).await,
        202
    );
    let started = Instant::now();
    while !serve.log().contains("tickets synced")
        || serve.log().matches("tickets synced").count() < 2
    {
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
        notes[0].contains("[changegate:sync opened Codertocat/Hello-World#2]"),
        "{}",
        notes[0]
    );
    assert_eq!(sn.lock().unwrap().writes(), 1);
    assert_eq!(serve.stop(), Some(0));
}

/// `issues` deliveries on a repository whose config enables `[sync]`: an issue referencing
/// INC0010001 opened (the backlog note), then put in the sprint's milestone (the sprint
/// note); a redelivery, an edit and a pull request's issue event write nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_deliveries_note_the_backlog_and_the_sprint_once() {
    // `{n}`-less: the milestone titled "Current" is the sprint's, whatever today is.
    let gh = FakeGitHub::start(Some(
        "[sync]\nenabled = true\n[announce]\nmilestone = \"Current\"\n",
    ))
    .await;
    gh.state.lock().unwrap().milestones = vec![json!({
        "number": 3, "title": "Current", "state": "open", "due_on": null,
        "html_url": "https://github.com/Codertocat/Hello-World/milestone/3"
    })];
    let issue = |milestone: Option<u64>| {
        json!({
            "number": 1, "title": "Checkout times out", "body": "Customers: INC0010001",
            "state": "open", "labels": [],
            "html_url": "https://github.com/Codertocat/Hello-World/issues/1",
            "milestone": milestone.map(|n| json!({"number": n, "title": "Current", "due_on": null}))
        })
    };
    gh.state.lock().unwrap().issues = vec![issue(None)];
    let (sn_server, sn) = crate::sync::servicenow_tickets().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(
        dir.path(),
        &gh.server.uri(),
        &[
            ("CHANGEGATE_SERVICENOW_URL", sn_server.uri().as_str()),
            ("CHANGEGATE_SERVICENOW_USER", crate::sync::SN_USER),
            ("CHANGEGATE_SERVICENOW_PASSWORD", crate::sync::SN_PASSWORD),
        ],
    );
    let payload = |action: &str, issue: Value| {
        let mut body = json!({
            "action": action,
            "issue": issue,
            "repository": {"full_name": OWNER_REPO, "default_branch": "master",
                           "html_url": "https://github.com/Codertocat/Hello-World"},
            "sender": {"login": "Codertocat"},
            "installation": {"id": 1}
        });
        if action == "milestoned" {
            body["milestone"] = body["issue"]["milestone"].clone();
        }
        body.to_string().into_bytes()
    };
    let notes = || sn.lock().unwrap().notes("INC0010001", "work_notes");
    let until = |count: usize| {
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
        signed(&serve, "issues", "is-1", &payload("opened", issue(None))).await,
        202
    );
    until(1).await;
    let first = notes();
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].starts_with("Entered the backlog: Codertocat/Hello-World#1 Checkout times out"),
        "{}",
        first[0]
    );
    assert!(first[0].ends_with("[changegate:sync backlog Codertocat/Hello-World]"));

    gh.state.lock().unwrap().issues = vec![issue(Some(3))];
    assert_eq!(
        signed(
            &serve,
            "issues",
            "is-2",
            &payload("milestoned", issue(Some(3)))
        )
        .await,
        202
    );
    until(2).await;
    // Seen before: nothing; an edit: scanned, nothing new; a pull request's: ignored.
    assert_eq!(
        signed(
            &serve,
            "issues",
            "is-2",
            &payload("milestoned", issue(Some(3)))
        )
        .await,
        200
    );
    assert_eq!(
        signed(&serve, "issues", "is-3", &payload("edited", issue(Some(3)))).await,
        202
    );
    let mut pr = issue(Some(3));
    pr["pull_request"] = json!({"html_url": "https://github.com/Codertocat/Hello-World/pull/1"});
    assert_eq!(
        signed(&serve, "issues", "is-4", &payload("opened", pr)).await,
        202
    );
    until(3).await;
    let all = notes();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].starts_with("Entered sprint "), "{}", all[1]);
    assert!(all[1].contains("Codertocat/Hello-World#1 Checkout times out"));
    assert!(all[1].contains("[changegate:sync sprint "));
    assert_eq!(sn.lock().unwrap().writes(), 2);
    assert!(
        serve.log().matches("tickets synced").count() == 3,
        "{}",
        serve.log()
    );
    assert_eq!(serve.stop(), Some(0));
}
