//! The ServiceNow backend, driven through the real binary against a stateful in-process
//! fake of the instance: Table API on change_request and sysapproval_approver, the
//! Aggregate API, the sn_chg_rest create and template endpoints, and /oauth_token.do. The
//! fake follows the base system's change models (one state step at a time), its error
//! envelope and its rate limiting (429 + Retry-After), and counts every request.

use std::collections::{BTreeMap, HashMap};
use std::process::Output;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{changegate, git_repo, reference};

mod fake;

use fake::{Fault, FaultKind, Sn, Verdict};

const USER: &str = "svc-changegate";
const PASSWORD: &str = "s3cr3t-P4ss!word";
const TEMPLATE: &str = "Pre-approved application deploy";
const TEMPLATE_ID: &str = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6";
const SERVICE_KEY_PREFIX: &str = "changegate:acme/payments-api:production:";

struct Instance {
    server: MockServer,
    sn: Arc<Mutex<Sn>>,
    repo: tempfile::TempDir,
}

impl Instance {
    async fn start(extra_config: &str) -> Instance {
        let sn = Arc::new(Mutex::new(Sn::default()));
        {
            let mut s = sn.lock().unwrap();
            s.basic = Some((USER.into(), PASSWORD.into()));
            s.templates.push((
                TEMPLATE_ID.into(),
                TEMPLATE.into(),
                "ab12cd34ef56ab12cd34ef56ab12cd34".into(),
            ));
        }
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(fake::Responder(sn.clone()))
            .mount(&server)
            .await;
        let repo = git_repo();
        let config = format!(
            "[servicenow]\nstandard_template = \"{TEMPLATE}\"\nassignment_group = \"Payments\"\n\n[approval]\npoll = \"200ms\"\ntimeout = \"5s\"\n{extra_config}"
        );
        std::fs::write(repo.path().join(".changegate.toml"), config).unwrap();
        Instance { server, sn, repo }
    }

    fn sn(&self) -> MutexGuard<'_, Sn> {
        self.sn.lock().unwrap()
    }

    /// The binary, pointed at the fake with basic auth.
    fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = changegate(self.repo.path());
        cmd.env("CHANGEGATE_SERVICENOW_URL", self.server.uri())
            .env("CHANGEGATE_SERVICENOW_USER", USER)
            .env("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .args(["--backend", "servicenow"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn requests(&self) -> usize {
        self.sn().log.len()
    }

    fn head(&self) -> String {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.repo.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn key(&self) -> String {
        format!("{SERVICE_KEY_PREFIX}{}", self.head())
    }

    /// A track record that earns pre-approval: `n` successful standard changes closed in
    /// the sprints before this one (spread over `days` days).
    fn seed_history(&self, n: usize, days: i64) {
        let today = Utc::now().date_naive();
        let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let sprint_start = start + chrono::Duration::days((today - start).num_days() / 14 * 14);
        let mut sn = self.sn();
        for i in 0..n {
            let day = sprint_start - chrono::Duration::days(1 + (i as i64 % days));
            let sha = format!("{:040x}", 0xabc0_0000_u64 + i as u64);
            sn.seed_closed(
                &format!("{SERVICE_KEY_PREFIX}{sha}"),
                day,
                "standard",
                "successful",
            );
        }
    }

    fn print_log(&self, label: &str, from: usize) {
        let sn = self.sn();
        eprintln!("{label}: {} requests", sn.log.len() - from);
        for l in &sn.log[from..] {
            eprintln!(
                "  {} {}?{}",
                l.method,
                l.path,
                l.query.chars().take(140).collect::<String>()
            );
        }
    }

    fn assert_clean(&self) {
        let sn = self.sn();
        assert!(
            sn.anomalies.is_empty(),
            "the fake saw requests a real instance would not honour: {:#?}",
            sn.anomalies
        );
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(out).0))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn pre_approved_is_a_standard_change_from_the_template_implemented_then_closed_successful() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log("pre-approved gate", before);
    let gate_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["decision"], "pre-approved");
    assert_eq!(report["state"], "implementing");
    let id = report["change_id"].as_str().unwrap().to_string();
    let url = report["change_url"].as_str().unwrap();
    assert!(
        url.contains("/nav_to.do?uri=change_request.do?sys_id="),
        "{url}"
    );

    {
        let s = sn.sn();
        let recs = s.find(&sn.key());
        assert_eq!(recs.len(), 1);
        let rec = recs[0];
        assert_eq!(rec["number"], id);
        assert_eq!(rec["type"], "standard");
        assert_eq!(rec["state"], "-1", "Implement");
        assert_eq!(
            rec["std_change_producer_version"],
            "ab12cd34ef56ab12cd34ef56ab12cd34"
        );
        assert_eq!(rec["assignment_group"], "Payments");
        assert!(
            rec["correlation_display"].starts_with("changegate 20"),
            "{}",
            rec["correlation_display"]
        );
        assert!(
            rec["justification"].starts_with("changegate decision: pre-approved (mode enforce)"),
            "{}",
            rec["justification"]
        );
        assert!(!rec["work_start"].is_empty());
        let notes = s.notes(&rec["sys_id"]).join("\n");
        assert!(notes.contains("[pass] track-record"), "{notes}");
        assert!(
            notes.contains("Commit range:") && notes.contains("Triggered by: Dev"),
            "the template owns the description: the facts are in the work note: {notes}"
        );
        assert!(
            rec["description"].starts_with(TEMPLATE),
            "{}",
            rec["description"]
        );
        assert_eq!(s.count("POST", "/change/standard/"), 1);
        assert_eq!(s.count("GET", "/change/standard/template"), 1);
    }

    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success", "--format", "json"]);
    sn.print_log("record success", before);
    let record_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["state"], "closed");
    assert_eq!(report["outcome"], "success");
    {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0].clone();
        assert_eq!(rec["state"], "3");
        assert_eq!(rec["close_code"], "successful");
        assert!(!rec["close_notes"].is_empty() && !rec["work_end"].is_empty());
    }
    eprintln!(
        "REQUESTS (a) pre-approved: gate {gate_requests} + record {record_requests} = {}",
        gate_requests + record_requests
    );
    // Gate: last closed changes, lookup, stats, template, create, re-read, New→Scheduled,
    // Scheduled→Implement. Record: lookup, Implement→Review, Review→Closed.
    assert_eq!((gate_requests, record_requests), (8, 3));
    sn.assert_clean();
}

#[tokio::test]
async fn needs_approval_waits_for_the_approver_then_passes_and_closes() {
    let sn = Instance::start("").await;
    sn.sn().approve_after = Some((3, Verdict::Approve));
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log("needs-approval gate", before);
    let gate_requests = sn.requests() - before;
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let report = json_of(&out);
    assert_eq!(report["decision"], "needs-approval");
    assert_eq!(report["state"], "implementing");
    assert_eq!(report["approved_by"], "Jane Approver");
    assert!(
        stderr.matches("waiting for approval of").count() >= 2,
        "{stderr}"
    );
    {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0].clone();
        assert_eq!(rec["type"], "normal");
        assert_eq!(rec["state"], "-1");
        assert!(
            rec["description"].contains("Commits:"),
            "{}",
            rec["description"]
        );
        assert_eq!(s.count("POST", "/change/normal"), 1);
    }
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "failed"]);
    let record_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let rec = sn.sn().find(&sn.key())[0].clone();
    assert_eq!(
        (rec["state"].as_str(), rec["close_code"].as_str()),
        ("3", "unsuccessful")
    );
    eprintln!(
        "REQUESTS (b) needs-approval approved on the 3rd poll: gate {gate_requests} + record {record_requests} = {}",
        gate_requests + record_requests
    );
    sn.assert_clean();
}

#[tokio::test]
async fn a_rejection_blocks_with_the_approvers_comment() {
    let sn = Instance::start("").await;
    sn.sn().approve_after = Some((2, Verdict::Reject("Not during the sales peak".into())));
    let out = sn.run(&["gate"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("rejected by Jane Approver: Not during the sales peak"),
        "{stdout}"
    );
    let out = sn.run(&["record", "--outcome", "failure", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["outcome"], "cancelled");
    sn.assert_clean();
}

#[tokio::test]
async fn no_approval_before_the_timeout_blocks() {
    let sn = Instance::start("").await;
    let started = Instant::now();
    let out = sn.run(&["gate", "--wait", "1500ms"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(stdout.contains("approval timed out"), "{stdout}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let s = sn.sn();
    let rec = s.find(&sn.key())[0];
    assert_eq!(
        (rec["state"].as_str(), rec["approval"].as_str()),
        ("-4", "requested")
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_rerun_finds_the_same_record_and_writes_nothing() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let first = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&first), 0, "{:?}", text(&first));
    let before = sn.requests();
    let again = sn.run(&["gate", "--format", "json"]);
    sn.print_log("re-run", before);
    assert_eq!(code(&again), 0, "{:?}", text(&again));
    let (a, b) = (json_of(&first), json_of(&again));
    assert_eq!(a["change_id"], b["change_id"]);
    assert_eq!(b["decision"], "pre-approved");
    assert_eq!(
        b["rules"], a["rules"],
        "the standing decision is read back with its rules"
    );
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    let writes = s.log[before..].iter().filter(|l| l.method != "GET").count();
    assert_eq!(
        writes, 0,
        "a re-run of a standing, implemented change writes nothing"
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_crash_after_create_is_completed_by_the_next_run() {
    let sn = Instance::start("").await;
    // The update that sends the new change for approval fails for good (4 tries).
    sn.sn().faults.push(Fault {
        method: "PATCH",
        path_contains: "/change_request/",
        times: 4,
        kind: FaultKind::Status(503, json!({"error": {"message": "Service Unavailable", "detail": null}, "status": "failure"}), None),
    });
    let out = sn.run(&["gate", "--wait", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("Service Unavailable"),
        "{stderr}"
    );
    assert_eq!(sn.sn().find(&sn.key())[0]["state"], "-5");

    sn.sn().approve_after = Some((1, Verdict::Approve));
    let out = sn.run(&["gate"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    assert_eq!(
        s.count("POST", "/sn_chg_rest/"),
        1,
        "the second run completed the first run's record"
    );
    assert_eq!(s.find(&sn.key())[0]["state"], "-1");
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn two_concurrent_gates_leave_one_record() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    // Both lookups answer "nothing yet" before either create lands.
    sn.sn().lookup_delay = Some(Duration::from_millis(1500));
    let (a, b) = both(
        sn.cmd(&["gate", "--format", "json"]),
        sn.cmd(&["gate", "--format", "json"]),
    )
    .await;
    assert_eq!(code(&a), 0, "{:?}", text(&a));
    assert_eq!(code(&b), 0, "{:?}", text(&b));
    assert_eq!(json_of(&a)["change_id"], json_of(&b)["change_id"]);
    let s = sn.sn();
    assert_eq!(
        s.count("POST", "/sn_chg_rest/"),
        2,
        "both runs created a record (the race happened)"
    );
    assert_eq!(
        s.count("DELETE", "/change_request/"),
        1,
        "the later one removed its duplicate"
    );
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["state"], "-1");
    drop(s);
    sn.assert_clean();
}

/// Runs two commands at the same time.
async fn both(mut a: assert_cmd::Command, mut b: assert_cmd::Command) -> (Output, Output) {
    let a = tokio::task::spawn_blocking(move || a.output().unwrap());
    let b = tokio::task::spawn_blocking(move || b.output().unwrap());
    let (a, b) = tokio::join!(a, b);
    (a.unwrap(), b.unwrap())
}

#[tokio::test]
async fn a_duplicate_that_cannot_be_deleted_is_cancelled_and_loses_its_key() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    {
        let mut s = sn.sn();
        s.lookup_delay = Some(Duration::from_millis(1500));
        s.deny_delete = true;
    }
    let (a, b) = both(
        sn.cmd(&["gate", "--format", "json"]),
        sn.cmd(&["gate", "--format", "json"]),
    )
    .await;
    assert_eq!(
        (code(&a), code(&b)),
        (0, 0),
        "{:?} {:?}",
        text(&a),
        text(&b)
    );
    assert_eq!(json_of(&a)["change_id"], json_of(&b)["change_id"]);
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    let dup: Vec<_> = s
        .changes
        .iter()
        .filter(|c| {
            c.get("correlation_display")
                .is_some_and(|d| d.contains("duplicate of"))
        })
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(
        (dup[0]["state"].as_str(), dup[0]["correlation_id"].as_str()),
        ("4", "")
    );
}

#[tokio::test]
async fn rate_limited_then_served_after_retry_after() {
    let sn = Instance::start("").await;
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(reference(
            "servicenow/docs-examples/error.429-rate-limit.json",
        ))
        .unwrap(),
    )
    .unwrap();
    sn.sn().faults.push(Fault {
        method: "GET",
        path_contains: "/table/change_request",
        times: 1,
        kind: FaultKind::Status(429, body, Some(1)),
    });
    let out = sn.run(&["gate", "--wait", "0"]);
    assert_eq!(
        code(&out),
        1,
        "needs approval, not waiting: {:?}",
        text(&out)
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("429"), "{stderr}");
    let s = sn.sn();
    let gap = s.log[1].at.duration_since(s.log[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
    assert_eq!(s.find(&sn.key()).len(), 1);
}

#[tokio::test]
async fn server_errors_twice_then_success() {
    let sn = Instance::start("").await;
    let body = json!({"error": {"message": "Internal Server Error", "detail": "Transaction cancelled"}, "status": "failure"});
    sn.sn().faults.push(Fault {
        method: "POST",
        path_contains: "/sn_chg_rest/change/normal",
        times: 2,
        kind: FaultKind::Status(500, body, None),
    });
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "awaiting-approval");
    let s = sn.sn();
    assert_eq!(s.count("POST", "/sn_chg_rest/change/normal"), 3);
    assert_eq!(s.find(&sn.key()).len(), 1);
}

#[tokio::test]
async fn malformed_json_fails_closed_with_a_clear_message() {
    let sn = Instance::start("").await;
    sn.sn().faults.push(Fault {
        method: "GET",
        path_contains: "/stats/",
        times: 1,
        kind: FaultKind::Malformed,
    });
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("not the JSON expected")
            && stderr.contains("/api/now/stats/change_request"),
        "{stderr}"
    );
    assert_eq!(
        sn.sn().count("POST", "/sn_chg_rest/"),
        0,
        "nothing written after a broken read"
    );
}

#[tokio::test]
async fn bad_credentials_fail_closed_without_leaking_them() {
    let sn = Instance::start("").await;
    let wrong = "Wr0ng-Pa55-xyz";
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env("CHANGEGATE_SERVICENOW_PASSWORD", wrong)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("User Not Authenticated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("basic auth (CHANGEGATE_SERVICENOW_USER / CHANGEGATE_SERVICENOW_PASSWORD)"),
        "{stderr}"
    );
    let header = fake::basic_header(USER, wrong);
    for secret in [wrong, header.trim_start_matches("Basic ")] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "secret leaked at -vvv:\n{stdout}\n{stderr}"
        );
    }

    // OAuth with a wrong client secret.
    sn.sn().oauth_client = Some(("cg-client".into(), "right-secret".into()));
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env_remove("CHANGEGATE_SERVICENOW_USER")
        .env_remove("CHANGEGATE_SERVICENOW_PASSWORD")
        .env("CHANGEGATE_SERVICENOW_CLIENT_ID", "cg-client")
        .env("CHANGEGATE_SERVICENOW_CLIENT_SECRET", "oauth-Secr3t-value")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("client-credentials grant") && stderr.contains("access_denied"),
        "{stderr}"
    );
    assert!(!stdout.contains("oauth-Secr3t-value") && !stderr.contains("oauth-Secr3t-value"));

    // A bearer token the instance does not know.
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env("CHANGEGATE_SERVICENOW_TOKEN", "tok-not-valid-123")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("a bearer token (CHANGEGATE_SERVICENOW_TOKEN)"),
        "{stderr}"
    );
    assert!(!stdout.contains("tok-not-valid-123") && !stderr.contains("tok-not-valid-123"));
}

#[tokio::test]
async fn oauth_token_is_fetched_once_and_renewed_once_on_401() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    {
        let mut s = sn.sn();
        s.oauth_client = Some(("cg-client".into(), "cg-secret".into()));
        s.basic = None;
    }
    let oauth = |cmd: &mut assert_cmd::Command| {
        cmd.env_remove("CHANGEGATE_SERVICENOW_USER")
            .env_remove("CHANGEGATE_SERVICENOW_PASSWORD")
            .env("CHANGEGATE_SERVICENOW_CLIENT_ID", "cg-client")
            .env("CHANGEGATE_SERVICENOW_CLIENT_SECRET", "cg-secret");
    };
    let mut cmd = sn.cmd(&["-vvv", "gate"]);
    oauth(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let (stdout, stderr) = text(&out);
    let issued = sn.sn().tokens.clone();
    for secret in issued.iter().map(String::as_str).chain(["cg-secret"]) {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} leaked at -vvv"
        );
    }
    assert_eq!(
        sn.sn().count("POST", "/oauth_token.do"),
        1,
        "one token for the whole run"
    );

    // The instance revokes the token mid-run: one 401, a new token, the call retried.
    sn.sn().faults.push(Fault {
        method: "PATCH",
        path_contains: "/change_request/",
        times: 1,
        kind: FaultKind::Status(401, json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}), None),
    });
    let mut cmd = sn.cmd(&["record", "--outcome", "success"]);
    oauth(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(
        s.count("POST", "/oauth_token.do"),
        3,
        "first run 1; second run 1 + 1 after the 401"
    );
    assert_eq!(s.find(&sn.key())[0]["state"], "3");
}

#[tokio::test]
async fn history_request_count_does_not_grow_with_its_size() {
    let mut counts = Vec::new();
    for n in [10, 10_000] {
        let sn = Instance::start("").await;
        sn.seed_history(n, 300);
        let out = sn.run(&["gate", "--dry-run", "--format", "json"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let report = json_of(&out);
        assert_eq!(report["decision"], "pre-approved", "{report}");
        counts.push(sn.requests());
        let out = sn.run(&["policy", "explain"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        sn.assert_clean();
    }
    eprintln!(
        "decision requests: history of 10 → {}, history of 10,000 → {}",
        counts[0], counts[1]
    );
    assert_eq!(counts[0], counts[1]);
    assert_eq!(counts[0], 3, "last closed changes, lookup, stats");
}

#[tokio::test]
async fn record_skips_the_steps_the_instances_workflow_already_made() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    assert_eq!(code(&sn.run(&["gate"])), 0);
    {
        // A workflow on the instance moved the change to Review on its own.
        let mut s = sn.sn();
        let key = sn.key();
        let rec = s
            .changes
            .iter_mut()
            .find(|c| c.get("correlation_id") == Some(&key))
            .unwrap();
        rec.insert("state".into(), "0".into());
    }
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(s.find(&sn.key())[0]["state"], "3");
    assert_eq!(
        s.log[before..]
            .iter()
            .filter(|l| l.method == "PATCH")
            .count(),
        1,
        "only Review → Closed"
    );
    // Recording again is harmless.
    drop(s);
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(
        sn.sn().log[before..]
            .iter()
            .filter(|l| l.method != "GET")
            .count(),
        0
    );
    sn.assert_clean();
}

#[tokio::test]
async fn refusals_carry_servicenows_words_and_the_roles_needed() {
    let sn = Instance::start("").await;
    sn.sn().faults.push(Fault {
        method: "POST",
        path_contains: "/sn_chg_rest/",
        times: 1,
        kind: FaultKind::Status(403, json!({"error": {"message": "Operation Failed", "detail": "ACL Exception Insert Failed due to security constraints"}, "status": "failure"}), None),
    });
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("ACL Exception Insert Failed due to security constraints"),
        "{stderr}"
    );
    assert!(
        stderr.contains("itil") && stderr.contains("sn_change_write"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_assignment_group_is_the_instances_data_policy_message() {
    let sn = Instance::start("").await;
    std::fs::write(
        sn.repo.path().join(".changegate.toml"),
        "[servicenow]\nstandard_template = \"x\"\n",
    )
    .unwrap();
    let out = sn.run(&["gate", "--wait", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("Assignment group is mandatory") && stderr.contains("from New to Assess"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_emergency_is_an_emergency_change_that_goes_ahead() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--emergency", "payments down", "--format", "json"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let report = json_of(&out);
    assert_eq!(report["decision"], "pre-approved");
    assert_eq!(report["emergency"], "payments down");
    let s = sn.sn();
    let rec = s.find(&sn.key())[0].clone();
    assert_eq!(rec["type"], "emergency");
    // Sent for (retrospective) approval; the base model allows no further without it.
    assert_eq!(
        (rec["state"].as_str(), rec["approval"].as_str()),
        ("-3", "requested")
    );
    assert!(!rec["work_start"].is_empty());
    assert!(rec["justification"].contains("emergency: payments down"));
    assert!(stderr.contains("before it is approved"), "{stderr}");
}

#[tokio::test]
async fn a_missing_template_is_named() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    sn.sn().templates.clear();
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains(
            "no active standard change template named \"Pre-approved application deploy\""
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn today_decisions_use_this_sprints_allowance() {
    // Two pre-approved changes already today with an allowance of 2: the third needs approval.
    let sn =
        Instance::start("[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 2\nstep = 0\n")
            .await;
    let today = Utc::now().date_naive();
    {
        let mut s = sn.sn();
        for i in 0..2u64 {
            let key = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xdead_0000_u64 + i);
            s.seed_closed(&key, today, "standard", "successful");
        }
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    let report = json_of(&out);
    assert_eq!(report["decision"], "needs-approval", "{report}");
    let allowance = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "allowance")
        .unwrap()
        .clone();
    assert_eq!(allowance["passed"], false);
    assert!(
        allowance["reason"].as_str().unwrap().contains("2 of 2"),
        "{allowance}"
    );
}

#[tokio::test]
async fn observe_mode_records_and_never_blocks() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--mode", "observe", "--format", "json"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let report = json_of(&out);
    assert_eq!(
        (report["decision"].as_str(), report["mode"].as_str()),
        (Some("needs-approval"), Some("observe"))
    );
    assert!(stderr.contains("observe mode"), "{stderr}");
    let s = sn.sn();
    let rec = s.find(&sn.key())[0].clone();
    assert!(rec["justification"].contains("(mode observe)"));
    assert_eq!(
        rec["approval"], "requested",
        "approvers still see what would have needed them"
    );
    assert!(
        !rec["work_start"].is_empty(),
        "the deploy start is recorded"
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn an_undecided_change_from_open_is_superseded_by_a_standard_change() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let out = sn.run(&["open", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let opened = json_of(&out)["change_id"].as_str().unwrap().to_string();
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let gated = json_of(&out)["change_id"].as_str().unwrap().to_string();
    assert_ne!(opened, gated);
    let s = sn.sn();
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (recs[0]["type"].as_str(), recs[0]["number"].as_str()),
        ("standard", gated.as_str())
    );
    let old = s.changes.iter().find(|c| c["number"] == opened).unwrap();
    assert_eq!(
        (old["state"].as_str(), old["correlation_id"].as_str()),
        ("4", "")
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_blocked_change_is_redecided_in_place_once_the_freeze_ends() {
    let freeze = "[[freeze]]\nfrom = \"2020-01-01T00:00:00Z\"\nto = \"2099-01-01T00:00:00Z\"\nreason = \"test freeze\"\n";
    let sn = Instance::start(freeze).await;
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "blocked");
    let first = sn.sn().find(&sn.key())[0].clone();
    assert_eq!(
        (first["type"].as_str(), first["state"].as_str()),
        ("normal", "-5")
    );
    assert!(first["justification"].starts_with("changegate decision: blocked"));

    let config = sn.repo.path().join(".changegate.toml");
    let text_ = std::fs::read_to_string(&config)
        .unwrap()
        .replace(freeze, "");
    std::fs::write(&config, text_).unwrap();
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("needs-approval"), Some("awaiting-approval"))
    );
    assert_eq!(report["change_id"].as_str(), Some(first["number"].as_str()));
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    assert_eq!(s.count("POST", "/sn_chg_rest/"), 1);
    drop(s);

    let out = sn.run(&["status", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "awaiting-approval");
    sn.assert_clean();
}

#[tokio::test]
async fn a_pull_request_deploy_describes_the_pr_the_run_and_the_actor() {
    let sn = Instance::start("").await;
    let event = sn.repo.path().join("event.json");
    std::fs::copy(
        reference("github-webhooks/examples/pull_request/opened.payload.json"),
        &event,
    )
    .unwrap();
    let out = sn
        .cmd(&["gate", "--wait", "0", "--format", "json"])
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_EVENT_PATH", &event)
        .env("GITHUB_REPOSITORY", "Codertocat/Hello-World")
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_RUN_ID", "9876543210")
        .env("GITHUB_ACTOR", "Codertocat")
        .env("GITHUB_SHA", "ec26c3e57ca3a959ca5aad62de7213c562f8c821")
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        1,
        "needs approval, not waiting: {:?}",
        text(&out)
    );
    let report = json_of(&out);
    let s = sn.sn();
    let key = report["correlation_key"].as_str().unwrap();
    let rec = s.find(key)[0].clone();
    let d = &rec["description"];
    for want in [
        "Pull request: #2 Update the README with new information. https://github.com/Codertocat/Hello-World/pull/2",
        "Pipeline run: https://github.com/Codertocat/Hello-World/actions/runs/9876543210",
        "Triggered by: Codertocat",
        "at commit ec26c3e57ca3a959ca5aad62de7213c562f8c821",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }
    assert!(
        rec["short_description"].contains("Update the README with new information. (#2"),
        "{}",
        rec["short_description"]
    );
    drop(s);
    sn.assert_clean();
}
