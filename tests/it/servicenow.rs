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
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::remote::Remote;

use crate::support::{Silent, changegate, default_branch_is_head, git, git_repo, reference};

pub(crate) mod fake;

use fake::{Fault, FaultKind, Sn, Verdict};

const USER: &str = "svc-changegate";
const PASSWORD: &str = "s3cr3t-P4ss!word";
const TEMPLATE: &str = "Pre-approved application deploy";
const TEMPLATE_ID: &str = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6";
const SERVICE_KEY_PREFIX: &str = "changegate:acme/payments-api:production:";

struct Instance {
    server: Remote,
    sn: Arc<Mutex<Sn>>,
    repo: tempfile::TempDir,
}

impl Instance {
    async fn start(extra_config: &str) -> Instance {
        let server = Remote::start().await;
        let sn = Arc::new(Mutex::new(Sn {
            watch: server.watch(),
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

    /// Commits `lines` new lines in a new file; returns the new HEAD.
    fn commit(&self, name: &str, lines: usize) -> String {
        let body: String = (0..lines).map(|i| format!("{name} line {i}\n")).collect();
        std::fs::write(self.repo.path().join(name), body).unwrap();
        for args in [
            vec!["add", "--", name],
            vec!["commit", "-q", "-m", &format!("PAY-9: {name}")],
        ] {
            git(self.repo.path(), &args);
        }
        self.head()
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
            for item in &l.items {
                eprintln!(
                    "      {} {}?{}",
                    item.method,
                    item.path,
                    item.query.chars().take(120).collect::<String>()
                );
            }
        }
    }

    fn assert_clean(&self) {
        self.server.assert_clean();
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
        assert_eq!(
            s.count("GET", "/change/standard/template"),
            0,
            "the template's sys_id comes with the recent standard changes made from it"
        );
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
    // Gate: lookup with the last closed changes (and the template), stats, one batch of the
    // create and its re-read, one batch of New→Scheduled→Implement. Record: lookup, one
    // batch of Implement→Review→Closed. (Before the Batch API: 6 + 3.)
    assert_eq!((gate_requests, record_requests), (4, 2));
    let s = sn.sn();
    assert_eq!(s.batches(0), 3);
    assert_eq!(s.calls(0).count(), 9, "the same nine calls as one by one");
    drop(s);
    sn.assert_clean();
}

/// A pre-approved gate and its record, counted in round trips, on an instance with a
/// history of `n` closed changes; the records they leave.
async fn pre_approved_round_trips(batch_api: fake::BatchApi, n: usize) -> (usize, usize, Instance) {
    let sn = Instance::start("").await;
    sn.sn().batch_api = batch_api;
    sn.seed_history(n, 10);
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log(
        &format!("pre-approved gate, {batch_api:?}, history {n}"),
        before,
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("pre-approved"), Some("implementing"))
    );
    let gate = sn.requests() - before;
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success", "--format", "json"]);
    sn.print_log(&format!("record, {batch_api:?}, history {n}"), before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "closed");
    let record = sn.requests() - before;
    {
        let s = sn.sn();
        let recs = s.find(&sn.key());
        assert_eq!(recs.len(), 1);
        let rec = recs[0];
        assert_eq!(
            (
                rec["type"].as_str(),
                rec["state"].as_str(),
                rec["close_code"].as_str()
            ),
            ("standard", "3", "successful")
        );
        assert!(!rec["work_start"].is_empty() && !rec["work_end"].is_empty());
        let notes = s.notes(&rec["sys_id"]).join("\n");
        for said in ["[pass] track-record", "the gate passed", "deploy success"] {
            assert!(notes.contains(said), "{said}: {notes}");
        }
    }
    (gate, record, sn)
}

#[tokio::test]
async fn pre_approved_round_trips_are_the_same_at_10_and_10000_history() {
    let (gate, record, _) = pre_approved_round_trips(fake::BatchApi::Offered, 10).await;
    let (gate_big, record_big, _) = pre_approved_round_trips(fake::BatchApi::Offered, 10_000).await;
    eprintln!(
        "REQUESTS pre-approved gate + record: history of 10 → {gate} + {record}, history of 10,000 → {gate_big} + {record_big}"
    );
    assert_eq!((gate, record), (gate_big, record_big));
    assert_eq!(gate + record, 6);
}

/// An instance without the Batch API (404) or that refuses it to this user (403): the same
/// calls one at a time, the refusal asked once per run and remembered for its rest.
#[tokio::test]
async fn without_the_batch_api_the_calls_go_one_by_one() {
    for refusal in [fake::BatchApi::Missing, fake::BatchApi::Forbidden] {
        let (gate, record, sn) = pre_approved_round_trips(refusal, 10).await;
        eprintln!("REQUESTS pre-approved gate + record, Batch API {refusal:?}: {gate} + {record}");
        // One refused batch per run, then the calls one by one (6 + 3).
        assert_eq!((gate, record), (7, 4), "{refusal:?}");
        let s = sn.sn();
        assert_eq!(s.batches(0), 2, "{refusal:?}: asked once per run");
        assert!(s.log.iter().all(|l| l.items.is_empty()), "{refusal:?}");
        drop(s);
        sn.assert_clean();
    }
}

/// The CA store is read on the first certificate checked, never for a plain-HTTP instance:
/// with `SSL_CERT_FILE` and `SSL_CERT_DIR` naming nothing (a store that cannot be read, which
/// fails any `https` handshake) the gate still decides.
#[tokio::test]
async fn a_plain_http_instance_needs_no_ca_store() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let missing = tempfile::tempdir().unwrap();
    let out = sn
        .cmd(&["gate", "--format", "json"])
        .env("SSL_CERT_FILE", missing.path().join("ca.pem"))
        .env("SSL_CERT_DIR", missing.path().join("certs"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "pre-approved");
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
    // On an ITSM the approver decides there: the lines say so, with the record's link.
    assert!(
        stderr.contains("a change approver in servicenow approves CHG0030001 at "),
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
    {
        // Each poll is one read on its own; the one batch is the create and its re-read.
        let s = sn.sn();
        assert_eq!(s.batches(0), 2, "the gate's create, the record's close");
        let reads_of_the_change = s
            .log
            .iter()
            .filter(|l| l.method == "GET" && l.path.starts_with("/api/now/table/change_request/"))
            .count();
        assert!(reads_of_the_change >= 3, "{reads_of_the_change} polls");
    }
    sn.assert_clean();
}

/// Separation of duties on an approval ServiceNow reports: the change's author (the
/// commit's e-mail, dev@example.com) approving it in sysapproval_approver does not count,
/// and says which rule; with `[approval] separate_author = false` it does.
#[tokio::test]
async fn an_approval_by_the_changes_author_does_not_count() {
    let dev = fake::user(
        "0d5e1f2a3b4c5d6e7f8091a2b3c4d5e6",
        "Dev One",
        "dev",
        "Dev@Example.com",
    );
    let sn = Instance::start("").await;
    sn.sn().approver = Some(dev.clone());
    sn.sn().approve_after = Some((2, Verdict::Approve));
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("approved")),
        "{doc}"
    );
    assert_eq!(doc["policy_decision"], "needs-approval");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("CHG0030001 was approved in servicenow only by its author dev@example.com (approved by Dev One (dev, Dev@Example.com))"),
        "{message}"
    );
    assert!(
        message.contains("[approval] separate_author = true"),
        "{message}"
    );
    let notes = |sn: &Instance| {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0].clone();
        let notes = s
            .notes(&rec["sys_id"])
            .into_iter()
            .filter(|n| {
                n.starts_with("changegate decision: blocked") && n.contains("only by its author")
            })
            .count();
        (rec["state"].clone(), notes)
    };
    // Left in Scheduled (-2), not moved to Implement; the work note says why, once.
    assert_eq!(notes(&sn), ("-2".to_string(), 1));
    let before = sn.requests();
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "blocked");
    assert_eq!(notes(&sn), ("-2".to_string(), 1));
    let writes = sn.sn().log[before..]
        .iter()
        .filter(|l| l.method != "GET")
        .count();
    assert_eq!(writes, 0, "a re-run writes nothing");
    sn.assert_clean();

    // Switched off, the author's approval counts.
    let sn = Instance::start("separate_author = false\n").await;
    sn.sn().approver = Some(dev);
    sn.sn().approve_after = Some((2, Verdict::Approve));
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "implementing");
    sn.assert_clean();
}

/// Who approved must be known: an instance that names no approver of an approved change
/// (no approval record) does not let the deploy pass while the rule is on.
#[tokio::test]
async fn an_approval_nobody_is_named_for_does_not_count() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(
        json_of(&out)["state"],
        "awaiting-approval",
        "{:?}",
        text(&out)
    );
    {
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.decide(i, &Verdict::Approve);
        s.approvals.clear();
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(doc["decision"], "blocked", "{doc}");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("servicenow names nobody who approved it"),
        "{message}"
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
    let out = sn.run(&["gate", "--wait", "1500ms", "--format", "json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    let doc = json_of(&out);
    // The clock's word is final for the run: blocked, still awaiting approval.
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("awaiting-approval"))
    );
    assert_eq!(doc["policy_decision"], "needs-approval");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .starts_with("approval timed out"),
        "{doc}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let s = sn.sn();
    let rec = s.find(&sn.key())[0];
    assert_eq!(
        (rec["state"].as_str(), rec["approval"].as_str()),
        ("-4", "requested")
    );
    let notes = s.notes(&rec["sys_id"]);
    assert!(
        notes
            .iter()
            .any(|n| n
                .starts_with("changegate decision: blocked (approval timed out after 1 second)")),
        "{notes:#?}"
    );
    drop(s);
    // Approved late, in ServiceNow: the re-run re-reads the approval and passes.
    {
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.decide(i, &Verdict::Approve);
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("needs-approval"), Some("implementing"))
    );
    sn.assert_clean();
}

/// The position of the change holding `key` in the fake's list.
fn change_index(s: &Sn, key: &str) -> usize {
    s.changes
        .iter()
        .position(|c| c.get("correlation_id").map(String::as_str) == Some(key))
        .expect("the change is on the instance")
}

#[tokio::test]
async fn a_rejection_is_blocked_a_rerun_stays_blocked_at_once_and_a_re_approval_passes() {
    let sn = Instance::start("").await;
    sn.sn().approve_after = Some((2, Verdict::Reject("Not during the sales peak".into())));
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("rejected"))
    );
    assert_eq!(doc["policy_decision"], "needs-approval");
    assert_eq!(
        doc["message"],
        "rejected by Jane Approver: Not during the sales peak"
    );
    assert!(!doc["rules"].as_array().unwrap().is_empty());
    // The work note of the run that saw the rejection says blocked.
    let blocked_notes = |sn: &Instance| {
        let s = sn.sn();
        let id = s.find(&sn.key())[0]["sys_id"].clone();
        s.notes(&id)
            .into_iter()
            .filter(|n| n.starts_with("changegate decision: blocked"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        blocked_notes(&sn),
        [
            "changegate decision: blocked (rejected by Jane Approver: Not during the sales peak); the deploy does not go ahead."
        ]
    );

    // A re-run asked to wait returns at once, blocked, after reading the approval again.
    let before = sn.requests();
    let started = Instant::now();
    let out = sn.run(&["gate", "--wait", "60s", "--format", "json"]);
    sn.print_log("re-run after rejection", before);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("rejected"))
    );
    assert_eq!(
        doc["message"],
        "rejected by Jane Approver: Not during the sales peak"
    );
    {
        let s = sn.sn();
        assert_eq!(s.find(&sn.key()).len(), 1);
        let writes = s.log[before..].iter().filter(|l| l.method != "GET").count();
        assert_eq!(writes, 0, "a rejection is not decided again");
    }

    // The approver changes their mind in ServiceNow: the re-run passes.
    {
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.decide(i, &Verdict::Approve);
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("needs-approval"), Some("implementing"))
    );
    sn.assert_clean();
}

#[tokio::test]
async fn observe_then_enforce_on_the_same_commit_decides_again() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--mode", "observe", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = sn.run(&[
        "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
    ]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (
            doc["mode"].as_str(),
            doc["decision"].as_str(),
            doc["state"].as_str()
        ),
        (
            Some("enforce"),
            Some("needs-approval"),
            Some("awaiting-approval")
        )
    );
    let s = sn.sn();
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1, "one record holds the key");
    assert!(recs[0]["justification"].contains("(mode enforce)"));
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
async fn requests_go_through_the_proxy_the_environment_names() {
    // The instance's name does not resolve; the fake stands in as the proxy (a plain-HTTP
    // proxy gets the absolute URL), so only a client that honours HTTP_PROXY gets through.
    // Plain http to a host other than this machine has to be allowed for that.
    let sn = Instance::start("[http]\nallow_insecure_http = true\n").await;
    sn.seed_history(10, 10);
    let out = sn
        .cmd(&["gate", "--dry-run", "--format", "json"])
        .env(
            "CHANGEGATE_SERVICENOW_URL",
            "http://acme.service-now.invalid",
        )
        .env("HTTP_PROXY", sn.server.uri())
        .env("http_proxy", sn.server.uri())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "pre-approved");
    let s = sn.sn();
    assert!(!s.log.is_empty());
    assert!(
        s.log.iter().all(|l| l.host == "acme.service-now.invalid"),
        "{:?}",
        s.log.iter().map(|l| &l.host).collect::<Vec<_>>()
    );
    drop(s);

    // NO_PROXY names the instance: no proxy, and the name does not resolve → fail closed.
    let before = sn.requests();
    let out = sn
        .cmd(&["gate", "--dry-run"])
        .env(
            "CHANGEGATE_SERVICENOW_URL",
            "http://acme.service-now.invalid",
        )
        .env("HTTP_PROXY", sn.server.uri())
        .env("http_proxy", sn.server.uri())
        .env("NO_PROXY", "127.0.0.1,localhost,.service-now.invalid")
        .env("no_proxy", "127.0.0.1,localhost,.service-now.invalid")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    assert_eq!(sn.requests(), before, "nothing reached the proxy");
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

/// Every kind of refusal or breakage on every call a pre-approved gate makes: the gate
/// fails closed (exit 2) naming ServiceNow, and never passes the deploy.
#[tokio::test]
async fn a_fault_on_any_call_of_the_gate_fails_closed() {
    let error =
        |message: &str| json!({"error": {"message": message, "detail": ""}, "status": "failure"});
    let kinds = [
        FaultKind::Status(400, error("Bad request"), None),
        FaultKind::Status(401, error("User Not Authenticated"), None),
        FaultKind::Status(403, error("Operation Failed"), None),
        FaultKind::Status(404, error("No Record found"), None),
        FaultKind::Status(429, error("Rate limit exceeded"), Some(0)),
        FaultKind::Status(500, error("Internal Server Error"), None),
        FaultKind::Status(503, json!("<html>maintenance</html>"), None),
        FaultKind::Malformed,
    ];
    let calls = [
        ("PATCH", "/table/change_request/"),
        ("GET", "/table/change_request"),
        ("GET", "/stats/change_request"),
        ("POST", "/sn_chg_rest/change"),
    ];
    // One instance for all (a new commit per case, so a new change), with room in the
    // allowance for every case that gets as far as deciding.
    let sn = Instance::start("[policy.allowance]\ninitial = 100\nmax = 100\n").await;
    sn.seed_history(10, 10);
    let mut cases = 0;
    for (method, path_contains) in calls {
        for kind in &kinds {
            sn.commit(&format!("case-{cases}.txt"), 1);
            {
                let mut s = sn.sn();
                s.faults.clear();
                s.faults.push(Fault {
                    method,
                    path_contains,
                    times: 100,
                    kind: kind.clone(),
                });
            }
            let out = sn.run(&["gate", "--wait", "0"]);
            let (stdout, stderr) = text(&out);
            let what = format!("{method} {path_contains} {kind:?}");
            assert_eq!(code(&out), 2, "{what}:\n{stdout}\n{stderr}");
            assert!(stderr.contains("ServiceNow"), "{what}: {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            cases += 1;
        }
    }
    // Without a fault the same gate passes: the faults, not the setup, failed the cases.
    sn.sn().faults.clear();
    sn.commit("clean.txt", 1);
    let out = sn.run(&["gate", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(cases, 32);
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

    // Every credential variable changegate reads set at once, at -vvv: a passing gate and
    // record print none of them, and neither does a run the instance refuses.
    let others = [
        ("CHANGEGATE_JIRA_USER", "jira-user-5ecret@example.com"),
        ("CHANGEGATE_JIRA_TOKEN", "jira-T0ken-5ecret"),
        ("GITHUB_TOKEN", "ghs_5ecretGithubToken"),
        ("CHANGEGATE_GITHUB_TOKEN", "ghp_5ecretChangegateToken"),
        ("CHANGEGATE_GITLAB_TOKEN", "glpat-5ecretGitlab"),
        ("CHANGEGATE_GITHUB_APP_ID", "12345"),
        (
            "CHANGEGATE_GITHUB_APP_PRIVATE_KEY",
            "-----BEGIN PRIVATE KEY-----5ecretKeyBody-----END PRIVATE KEY-----",
        ),
    ];
    let servicenow_all = [
        ("CHANGEGATE_SERVICENOW_CLIENT_ID", "cg-client-5ecret"),
        ("CHANGEGATE_SERVICENOW_CLIENT_SECRET", "client-5ecret-value"),
        ("CHANGEGATE_SERVICENOW_TOKEN", "bearer-5ecret-value"),
    ];
    let leaked = |out: &Output, secrets: &[String]| {
        let (stdout, stderr) = text(out);
        for secret in secrets {
            assert!(
                !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
                "{secret} leaked at -vvv:\n{stdout}\n{stderr}"
            );
        }
    };
    let basic = fake::basic_header(USER, PASSWORD);
    let mut secrets: Vec<String> = others.iter().skip(1).map(|(_, v)| v.to_string()).collect();
    secrets.push(PASSWORD.to_string());
    secrets.push(basic.trim_start_matches("Basic ").to_string());
    sn.seed_history(10, 10);
    for args in [
        &["-vvv", "gate"][..],
        &["-vvv", "record", "--outcome", "success"],
    ] {
        let out = sn.cmd(args).envs(others).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {:?}", text(&out));
        leaked(&out, &secrets);
    }
    let out = sn
        .cmd(&["-vvv", "gate"])
        .envs(others)
        .envs(servicenow_all)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{:?}", text(&out));
    secrets.extend(servicenow_all.iter().skip(1).map(|(_, v)| v.to_string()));
    leaked(&out, &secrets);
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
    assert_eq!(counts[0], 2, "lookup with the last closed changes, stats");
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
async fn the_track_record_is_the_last_window_of_closed_changes_newest_first() {
    // 25 closed changes: the newest 20 hold 2 failures (90%), the 5 older ones all failed.
    // The key's own change, closed earlier and re-deployed, is not part of its track record.
    let sn = Instance::start("").await;
    let today = Utc::now().date_naive();
    {
        let mut s = sn.sn();
        for i in 0..25u64 {
            let key = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xfeed_0000_u64 + i);
            let code = if i == 3 || i == 11 || i >= 20 {
                "unsuccessful"
            } else {
                "successful"
            };
            let day = today - chrono::Duration::days(1 + i as i64);
            s.seed_closed(&key, day, "standard", code);
        }
    }
    // (Most of them fall in this sprint and use up its allowance: the decision needs approval.)
    let out = sn.run(&["gate", "--dry-run", "--format", "json"]);
    let report = json_of(&out);
    assert_eq!(
        rule(&report, "track-record")["reason"],
        "success rate 90% over last 20 ≥ 90%",
        "{report}"
    );
    assert_eq!(sn.requests(), 2);
    sn.assert_clean();
}

#[tokio::test]
async fn many_records_under_one_key_leave_the_track_record_to_its_own_query() {
    // Five open records hold the key (left by some earlier mishap): with them the combined
    // query's page cannot hold the window, so the track record is read on its own.
    let sn = Instance::start("").await;
    let today = Utc::now().date_naive();
    let key = sn.key();
    {
        let mut s = sn.sn();
        for i in 0..30u64 {
            let other = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xd00d_0000_u64 + i);
            let day = today - chrono::Duration::days(20 + i as i64);
            s.seed_closed(&other, day, "standard", "successful");
        }
        for i in 0..5 {
            let created = format!("2026-01-0{} 10:00:00", i + 1);
            s.push_change(&[
                ("correlation_id", key.as_str()),
                ("state", "-5"),
                ("approval", "not requested"),
                ("active", "true"),
                ("sys_created_on", created.as_str()),
            ]);
        }
    }
    let out = sn.run(&["gate", "--dry-run", "--format", "json"]);
    let report = json_of(&out);
    assert_eq!(
        rule(&report, "track-record")["reason"],
        "success rate 100% over last 20 ≥ 90%",
        "{report}"
    );
    assert_eq!(
        sn.requests(),
        3,
        "combined query, last closed changes, stats"
    );
    sn.assert_clean();
}

#[tokio::test]
async fn record_removes_a_duplicate_that_survived_two_runs_at_once() {
    // Both records of a race survived (the instance committed one create too late for the
    // other run's look-again): `record` closes the older and removes the younger.
    let sn = Instance::start("").await;
    let key = sn.key();
    let (older, younger) = {
        let mut s = sn.sn();
        let fields = |created: &'static str| {
            vec![
                ("correlation_id", key.clone()),
                ("type", "standard".to_string()),
                ("state", "-1".to_string()),
                ("active", "true".to_string()),
                ("work_start", created.to_string()),
                ("sys_created_on", created.to_string()),
            ]
        };
        let older = fields("2026-11-01 10:00:00");
        let older: Vec<(&str, &str)> = older.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let older = s.push_change(&older);
        let younger = fields("2026-11-01 10:00:01");
        let younger: Vec<(&str, &str)> = younger.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let younger = s.push_change(&younger);
        (older, younger)
    };
    let out = sn.run(&["record", "--outcome", "success", "--format", "json"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(
        stderr.contains("two ServiceNow changes hold the key"),
        "{stderr}"
    );
    let s = sn.sn();
    let recs = s.find(&key);
    assert_eq!(recs.len(), 1, "the younger record is gone");
    assert_eq!(recs[0]["sys_id"], older);
    assert_eq!(recs[0]["state"], "3");
    assert!(s.changes.iter().all(|c| c["sys_id"] != younger));
    drop(s);
    sn.assert_clean();
}

/// The `state` of the change holding `key` on the fake instance.
fn stored_state(sn: &Instance, key: &str) -> String {
    sn.sn().find(key)[0]["state"].clone()
}

#[tokio::test]
async fn a_rerun_long_after_the_key_was_closed_keeps_the_old_change() {
    // The key's change was closed long ago and 30 deploys came after it: the combined query's
    // page does not reach it, so the gate creates, finds the old change on its look-again,
    // removes its own and reports the old one.
    let sn = Instance::start("").await;
    let today = Utc::now().date_naive();
    let key = sn.key();
    let old = {
        let mut s = sn.sn();
        s.seed_closed(
            &key,
            today - chrono::Duration::days(60),
            "standard",
            "successful",
        );
        let old = s.find(&key)[0]["number"].clone();
        for i in 0..30u64 {
            let other = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xcafe_0000_u64 + i);
            s.seed_closed(
                &other,
                today - chrono::Duration::days(1 + i as i64),
                // Normal changes: they fill the page without using the sprint's allowance,
                // whatever day of the sprint the test runs on.
                "normal",
                "successful",
            );
        }
        old
    };
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["change_id"], old.as_str(), "{report}");
    // The old change's decision cannot be read back (no justification): decided again and
    // judged without reopening the closed change.
    assert_eq!(report["decision"], "pre-approved", "{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is closed"),
        "{report}"
    );
    assert_eq!(stored_state(&sn, &key), "3", "still closed");
    let s = sn.sn();
    assert_eq!(s.find(&key).len(), 1, "one change holds the key");
    assert_eq!(s.count("DELETE", "/change_request/"), 1);
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn the_template_is_looked_up_by_name_once_when_no_recent_change_used_it() {
    let sn = Instance::start("").await;
    {
        let mut s = sn.sn();
        let today = Utc::now().date_naive();
        for i in 0..10u64 {
            let key = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xbeef_0000_u64 + i);
            s.seed_closed(
                &key,
                today - chrono::Duration::days(20),
                "normal",
                "successful",
            );
        }
    }
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log("first standard change", before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "pre-approved");
    let gate = sn.requests() - before;
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let record = sn.requests() - before;
    eprintln!("REQUESTS a service's first pre-approved deploy: gate {gate} + record {record}");
    assert_eq!(
        (gate, record),
        (5, 2),
        "the template lookup on top of a pre-approved deploy's 4 + 2"
    );
    let s = sn.sn();
    assert_eq!(s.count("GET", "/change/standard/template"), 1);
    assert_eq!(
        s.count("POST", &format!("/change/standard/{TEMPLATE_ID}")),
        1
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_template_retired_since_the_last_change_is_looked_up_again() {
    const OLD: &str = "0ddba11c0ffee0ddba11c0ffee000001";
    const OLD_VERSION: &str = "0ddba11c0ffee0ddba11c0ffee0000aa";
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    {
        // The recent changes came from a template since replaced under the same name.
        let mut s = sn.sn();
        s.retired_templates
            .push((OLD.into(), TEMPLATE.into(), OLD_VERSION.into()));
        for c in &mut s.changes {
            c.insert("std_change_producer_version".into(), OLD_VERSION.into());
        }
    }
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "implementing");
    let s = sn.sn();
    assert_eq!(s.count("POST", &format!("/change/standard/{OLD}")), 1);
    assert_eq!(s.count("GET", "/change/standard/template"), 1);
    assert_eq!(
        s.count("POST", &format!("/change/standard/{TEMPLATE_ID}")),
        1
    );
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0]["std_change_producer_version"],
        "ab12cd34ef56ab12cd34ef56ab12cd34"
    );
    drop(s);
    sn.assert_clean();
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
    default_branch_is_head(sn.repo.path(), "master");
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

// --- verify, report and policy simulate on ServiceNow ---

/// `YYYY-MM-DD HH:MM:SS`, as the Table API writes times.
fn sn_time(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A rate or frequency read back from JSON (the reader may round the last digit).
fn assert_near(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-12, "{got} ≠ {want}");
}

fn rule<'a>(decision: &'a Value, code: &str) -> &'a Value {
    decision["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap_or_else(|| panic!("no rule {code} in {decision}"))
}

impl Instance {
    /// `n` closed, successful normal changes of this service, deployed at noon 2 to n+1 days
    /// ago (all past the 24h verification window); returns their sys_ids, oldest last.
    fn seed_closed_days_ago(&self, n: usize) -> Vec<String> {
        let today = Utc::now().date_naive();
        let mut s = self.sn();
        (0..n)
            .map(|i| {
                let day = today - chrono::Duration::days(2 + i as i64);
                let key = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xfeed_0000_u64 + i as u64);
                s.seed_closed(&key, day, "normal", "successful");
                s.changes.last().unwrap()["sys_id"].clone()
            })
            .collect()
    }
}

#[tokio::test]
async fn verify_turns_a_success_with_a_caused_incident_into_a_failure_once() {
    let sn = Instance::start("").await;
    sn.seed_closed_days_ago(10);
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "pre-approved");
    assert_eq!(code(&sn.run(&["record", "--outcome", "success"])), 0);
    let key = sn.key();
    // The deploy went out 30 hours ago: the 24h window has passed. Incidents: one caused by
    // it an hour later, one whose rfc is the change 3 hours later (both count); one caused by
    // it but cancelled, and one whose rfc is the change opened after the window (neither does).
    let deployed = Utc::now() - chrono::Duration::hours(30);
    let (sys_id, number, counted) = {
        let mut s = sn.sn();
        let rec = s
            .changes
            .iter_mut()
            .find(|c| c.get("correlation_id") == Some(&key))
            .unwrap();
        rec.insert("work_start".into(), sn_time(deployed));
        let (sys_id, number) = (rec["sys_id"].clone(), rec["number"].clone());
        let later = |h: i64| sn_time(deployed + chrono::Duration::hours(h));
        let caused = s.add_incident(Some(&sys_id), None, &later(1), "2");
        s.add_incident(Some(&sys_id), None, &later(2), "8");
        let rfc = s.add_incident(None, Some(&sys_id), &later(3), "6");
        s.add_incident(None, Some(&sys_id), &later(25), "1");
        (sys_id, number, vec![caused, rfc])
    };

    let before = sn.requests();
    let out = sn.run(&["verify", "--format", "json"]);
    sn.print_log("verify", before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let v = json_of(&out);
    let verified = v["verified"].as_array().unwrap();
    // The ten closed changes of the history are due as well; without incidents their
    // successes stand.
    assert_eq!(verified.len(), 11, "{v}");
    assert_eq!(v["failed_after_deploy"], 1);
    let mine = verified
        .iter()
        .find(|x| x["change_id"] == number.as_str())
        .unwrap();
    assert_eq!(mine["verdict"], "failed-after-deploy");
    assert_eq!(mine["incidents"], json!(counted));
    assert_eq!(mine["written"], true);
    for other in verified
        .iter()
        .filter(|x| x["change_id"] != number.as_str())
    {
        assert_eq!(
            (other["verdict"].as_str(), other["written"].as_bool()),
            (Some("succeeded"), Some(true)),
            "{other}"
        );
    }
    // One page of due changes, one incident query for all 11, one update each.
    let requests = sn.requests() - before;
    eprintln!("REQUESTS verify, 11 due changes: {requests}");
    assert_eq!(requests, 1 + 1 + 11);
    {
        let s = sn.sn();
        let rec = s.find(&key)[0];
        assert_eq!(rec["close_code"], "unsuccessful");
        assert_eq!(rec["state"], "3");
        assert!(
            rec["correlation_display"].starts_with("changegate 20")
                && rec["correlation_display"].ends_with(" verified: failed after deploy"),
            "{}",
            rec["correlation_display"]
        );
        let close_notes = &rec["close_notes"];
        assert!(
            close_notes.contains("Failed after deploy (changegate verify, ")
                && close_notes.ends_with(&format!("): {}, {}", counted[0], counted[1])),
            "{close_notes}"
        );
        let notes = s.notes(&sys_id).join("\n");
        assert!(
            notes.contains("FAILED AFTER DEPLOY")
                && notes.contains(&counted[0])
                && notes.contains(&counted[1]),
            "{notes}"
        );
        for other in s.changes.iter().filter(|c| c["sys_id"] != sys_id) {
            assert_eq!(other["close_code"], "successful");
            assert!(
                other["correlation_display"].ends_with(" verified"),
                "{}",
                other["correlation_display"]
            );
        }
    }

    // A second run finds nothing due and writes nothing.
    let before = sn.requests();
    let out = sn.run(&["verify", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["verified"], json!([]));
    assert_eq!(sn.sn().writes(before), Vec::<String>::new());
    assert_eq!(sn.requests() - before, 1);

    // The next gate's track record counts the failure: 10 successes and 1 failure.
    sn.commit("next.txt", 2);
    let out = sn.run(&["gate", "--dry-run", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(
        rule(&json_of(&out), "track-record")["reason"],
        "success rate 91% over last 11 ≥ 90%"
    );

    // The report shows it in this sprint: the one pre-approved change, failed after deploy
    // (the history's changes may fall in this sprint too, all successful).
    let out = sn.run(&["report", "--sprints", "1", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let sprint = json_of(&out)["services"][0]["sprints"][0].clone();
    assert_eq!(
        (
            sprint["pre_approved"].as_u64(),
            sprint["failed"].as_u64(),
            sprint["failed_after_deploy"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{sprint}"
    );
    sn.assert_clean();
}

#[tokio::test]
async fn verify_reads_due_changes_by_page_and_incidents_by_batch() {
    let sn = Instance::start("").await;
    let ids = sn.seed_closed_days_ago(520);
    // The 510th change (second page of changes, 26th batch of incidents) caused one.
    let deployed = sn
        .sn()
        .changes
        .iter()
        .find(|c| c["sys_id"] == ids[509])
        .unwrap()["work_start"]
        .clone();
    let incident = sn.sn().add_incident(Some(&ids[509]), None, &deployed, "7");
    let before = sn.requests();
    let out = sn.run(&["verify", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let v = json_of(&out);
    assert_eq!(v["verified"].as_array().unwrap().len(), 520);
    assert_eq!(v["failed_after_deploy"], 1);
    let failed: Vec<&Value> = v["verified"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["verdict"] == "failed-after-deploy")
        .collect();
    assert_eq!(failed[0]["incidents"], json!([incident]));
    let s = sn.sn();
    assert_eq!(
        s.changes.iter().find(|c| c["sys_id"] == ids[509]).unwrap()["close_code"],
        "unsuccessful"
    );
    // 2 pages of 500 due changes, ⌈520 / 20⌉ = 26 incident queries, 520 updates.
    let requests = s.log.len() - before;
    eprintln!("REQUESTS verify, 520 due changes: {requests}");
    assert_eq!(requests, 2 + 26 + 520);
    assert_eq!(s.count("GET", "/table/incident"), 26);
    drop(s);
    sn.assert_clean();
}

/// A change of the report's history, as changegate leaves it on the instance.
#[derive(Clone, Copy)]
struct Past<'a> {
    n: u64,
    decision: &'a str,
    emergency: Option<&'a str>,
    /// `MM-DD HH:MM` in 2026, like every time below.
    decided: &'a str,
    first_commit: &'a str,
    /// `approved`/`rejected`/`requested`, and when it was set.
    approval: Option<(&'a str, &'a str)>,
    deployed: Option<&'a str>,
    /// `successful`/`unsuccessful` and when closed; None: see `cancelled`.
    closed: Option<(&'a str, &'a str)>,
    cancelled: Option<&'a str>,
    failed_after_deploy: bool,
}

const PAST: Past<'static> = Past {
    n: 0,
    decision: "pre-approved",
    emergency: None,
    decided: "",
    first_commit: "",
    approval: None,
    deployed: None,
    closed: None,
    cancelled: None,
    failed_after_deploy: false,
};

fn t2026(mmdd_hhmm: &str) -> String {
    format!("2026-{mmdd_hhmm}:00")
}

fn rfc3339(mmdd_hhmm: &str) -> String {
    format!("2026-{}Z", mmdd_hhmm.replace(' ', "T").to_string() + ":00")
}

impl Sn {
    fn seed_past(&mut self, prefix: &str, p: Past<'_>) -> String {
        let decided = t2026(p.decided);
        let day = &decided[..10];
        let kind = match (p.decision, p.emergency) {
            (_, Some(_)) => "emergency",
            ("pre-approved", None) => "standard",
            _ => "normal",
        };
        let mut justification = vec![
            format!(
                "changegate decision: {} (mode enforce) at {}",
                p.decision,
                rfc3339(p.decided)
            ),
            "sprint 0: 0 of 2 pre-approved changes used".to_string(),
            "[pass] freeze: no freeze window active".to_string(),
        ];
        if let Some(reason) = p.emergency {
            justification.push(format!("emergency: {reason}"));
        }
        justification.push(format!(
            r#"facts: {{"first_commit":"{}","lines":3}}"#,
            rfc3339(p.first_commit)
        ));
        let justification = justification.join("\n");
        let display = if p.failed_after_deploy {
            format!("changegate {day} verified: failed after deploy")
        } else {
            format!("changegate {day}")
        };
        let key = format!("{prefix}{:040x}", p.n);
        let (approval, approval_set) = p
            .approval
            .map_or(("approved", String::new()), |(a, at)| (a, t2026(at)));
        let deployed = p.deployed.map(t2026).unwrap_or_default();
        let (state, code, closed_at) = match (p.closed, p.cancelled) {
            (Some((code, at)), _) => ("3", code, t2026(at)),
            (None, Some(at)) => ("4", "", t2026(at)),
            (None, None) => ("-4", "", String::new()),
        };
        let updated = if closed_at.is_empty() {
            decided.clone()
        } else {
            closed_at.clone()
        };
        let close_notes = if p.failed_after_deploy {
            format!(
                "Deploy success\nFailed after deploy (changegate verify, {}): INC0010042",
                rfc3339(p.closed.unwrap().1)
            )
        } else {
            String::new()
        };
        self.push_change(&[
            ("correlation_id", &key),
            ("correlation_display", &display),
            ("justification", &justification),
            ("type", kind),
            ("state", state),
            ("approval", approval),
            ("approval_set", &approval_set),
            ("work_start", &deployed),
            ("work_end", &closed_at),
            ("closed_at", &closed_at),
            ("close_code", code),
            ("close_notes", &close_notes),
            ("sys_created_on", &decided),
            ("sys_updated_on", &updated),
        ])
    }
}

#[tokio::test]
async fn report_over_three_sprints_of_changes_on_the_instance() {
    let config = "[sprint]\nstart = \"2026-03-02\"\nlength_days = 14\n[policy]\nmin_history = 2\nwindow = 20\nmin_success_rate = 0.8\n\
                  [policy.allowance]\ninitial = 2\nstep = 2\nbackoff = 0.5\nmin_changes = 3\n";
    let sn = Instance::start(config).await;
    let pre = |n, decided, first_commit, code: &'static str, closed| Past {
        n,
        decided,
        first_commit,
        deployed: Some(decided),
        closed: Some((code, closed)),
        ..PAST
    };
    let approved = |n, decided, first_commit, at, deployed, code: &'static str| Past {
        n,
        decision: "needs-approval",
        decided,
        first_commit,
        approval: Some(("approved", at)),
        deployed: Some(deployed),
        closed: Some((code, deployed)),
        ..PAST
    };
    let history = [
        // Sprint 1 (03-02 to 03-15).
        approved(
            1,
            "03-02 10:00",
            "03-01 09:00",
            "03-02 11:00",
            "03-02 11:01",
            "successful",
        ),
        pre(2, "03-04 10:00", "03-03 09:00", "successful", "03-04 10:10"),
        pre(
            3,
            "03-05 10:00",
            "03-04 09:00",
            "unsuccessful",
            "03-05 10:10",
        ),
        approved(
            4,
            "03-06 10:00",
            "03-05 09:00",
            "03-06 12:00",
            "03-06 12:01",
            "successful",
        ),
        // Sprint 2 (03-16 to 03-29).
        pre(5, "03-16 10:00", "03-15 09:00", "successful", "03-16 10:10"),
        Past {
            failed_after_deploy: true,
            ..approved(
                6,
                "03-17 10:00",
                "03-16 09:00",
                "03-17 10:30",
                "03-17 10:31",
                "unsuccessful",
            )
        },
        Past {
            n: 7,
            decision: "needs-approval",
            decided: "03-18 10:00",
            first_commit: "03-17 09:00",
            approval: Some(("rejected", "03-18 14:00")),
            cancelled: Some("03-18 14:00"),
            ..PAST
        },
        Past {
            emergency: Some("payments down"),
            approval: Some(("approved", "03-20 09:00")),
            ..pre(8, "03-19 10:00", "03-19 08:00", "successful", "03-19 10:10")
        },
        approved(
            9,
            "03-20 10:00",
            "03-19 09:00",
            "03-20 13:00",
            "03-20 13:01",
            "successful",
        ),
        approved(
            10,
            "03-23 10:00",
            "03-22 09:00",
            "03-23 11:00",
            "03-23 11:01",
            "successful",
        ),
        // Sprint 3 (03-30 to 04-12), the current one.
        pre(
            11,
            "03-30 10:00",
            "03-29 09:00",
            "successful",
            "03-30 10:10",
        ),
        pre(
            12,
            "03-31 10:00",
            "03-30 09:00",
            "unsuccessful",
            "03-31 10:10",
        ),
        approved(
            13,
            "04-01 10:00",
            "03-31 09:00",
            "04-01 12:00",
            "04-01 12:01",
            "successful",
        ),
        Past {
            n: 14,
            decision: "needs-approval",
            decided: "04-02 10:00",
            first_commit: "04-01 09:00",
            approval: Some(("requested", "")),
            ..PAST
        },
    ];
    {
        let mut s = sn.sn();
        for p in history {
            s.seed_past(SERVICE_KEY_PREFIX, p);
        }
        // Not this report's: another service, a change after the clock, a superseded record.
        s.seed_past(
            "changegate:acme/billing:production:",
            pre(
                15,
                "03-10 10:00",
                "03-09 09:00",
                "unsuccessful",
                "03-10 10:10",
            ),
        );
        s.seed_past(
            SERVICE_KEY_PREFIX,
            pre(
                16,
                "04-03 15:00",
                "04-03 09:00",
                "successful",
                "04-03 15:10",
            ),
        );
        s.push_change(&[
            ("correlation_id", ""),
            ("correlation_display", "changegate superseded"),
            ("state", "4"),
            ("sys_created_on", "2026-03-10 09:00:00"),
            ("sys_updated_on", "2026-03-10 09:00:00"),
        ]);
    }
    let before = sn.requests();
    let out = sn
        .cmd(&["--dry-run", "--format", "json", "report", "--sprints", "3"])
        .env("CHANGEGATE_NOW", "2026-04-03T12:00:00Z")
        .output()
        .unwrap();
    sn.print_log("report", before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    // The services (one page), the history (last closed changes, stats), the changes.
    let requests = sn.requests() - before;
    eprintln!("REQUESTS report, 3 sprints: {requests}");
    assert_eq!(requests, 1 + 2 + 1);
    let doc = json_of(&out);
    let svc = &doc["services"][0];
    assert_eq!(
        (
            svc["service"].as_str(),
            svc["service_id"].as_str(),
            svc["environment"].as_str()
        ),
        (
            Some("payments-api"),
            Some("acme/payments-api"),
            Some("production")
        )
    );
    let sprints = svc["sprints"].as_array().unwrap();
    assert_eq!(sprints.len(), 3);
    let (s0, s1, s2) = (&sprints[0], &sprints[1], &sprints[2]);
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));

    // Sprint 1: allowance 2 (the first sprint with history). 4 changes: #2, #3 pre-approved;
    // #1, #4 waited 1h and 2h (median 1h30, p90 rank ⌈1.8⌉ = 2 → 2h). 3 successes, #3 failed.
    assert_eq!(s0["allowance"], 2);
    assert_eq!(
        [
            n(s0, "changes"),
            n(s0, "pre_approved"),
            n(s0, "needs_approval"),
            n(s0, "deployments")
        ],
        [4, 2, 2, 4]
    );
    assert_eq!(s0["approval_wait"]["median_secs"], 5400);
    assert_eq!(s0["approval_wait"]["p90_secs"], 7200);
    assert_eq!([n(s0, "succeeded"), n(s0, "failed")], [3, 1]);
    assert_near(&s0["success_rate"], 0.75);
    assert_near(&s0["change_failure_rate"], 0.25);
    // Lead time: 26h01, 25h, 25h, 27h01 → median (25h + 26h01) / 2 = 25h30m30s.
    assert_eq!(s0["lead_time"]["median_secs"], (90_000 + 93_660) / 2);
    // #3 failed (deployed 03-05 10:00), #4 restored it (deployed 03-06 12:01): 26h01.
    assert_eq!(s0["time_to_restore"]["median_secs"], 93_660);
    assert_near(&s0["deployment_frequency_per_day"], 4.0 / 14.0);

    // Sprint 2: sprint 1 closed 4 at 75% < 80%: the allowance halves to 1. 6 changes: #5
    // pre-approved; #8 an emergency (not counted against the allowance); #6, #7, #9, #10
    // needed approval: waits 30m, 4h (the rejection), 3h, 1h → median 2h, p90 4h. The
    // rejected #7 counts as blocked: a rejection is the final word.
    assert_eq!(s1["allowance"], 1);
    assert_eq!(
        [
            n(s1, "changes"),
            n(s1, "pre_approved"),
            n(s1, "needs_approval"),
            n(s1, "blocked"),
            n(s1, "emergency")
        ],
        [6, 1, 3, 1, 1]
    );
    assert_eq!(s1["approval_wait"]["median_secs"], 7200);
    assert_eq!(s1["approval_wait"]["p90_secs"], 14_400);
    // #6 failed after deploy; #7 was rejected (cancelled, never deployed).
    assert_eq!(
        [
            n(s1, "deployments"),
            n(s1, "succeeded"),
            n(s1, "failed"),
            n(s1, "cancelled"),
            n(s1, "failed_after_deploy")
        ],
        [5, 4, 1, 1, 1]
    );
    assert_near(&s1["success_rate"], 0.8);
    // Lead times 25h, 25h31, 2h, 28h01, 26h01 → median 25h31.
    assert_eq!(s1["lead_time"]["median_secs"], 91_860);
    // #6 (deployed 03-17 10:31) restored by #8 (03-19 10:00): 47h29.
    assert_eq!(s1["time_to_restore"]["median_secs"], 170_940);

    // Sprint 3: sprint 2 closed 5 at 80%: the allowance grows by 2 to 3. #14 still waits.
    assert_eq!(s2["allowance"], 3);
    assert_eq!(
        [
            n(s2, "changes"),
            n(s2, "pre_approved"),
            n(s2, "needs_approval"),
            n(s2, "deployments")
        ],
        [4, 2, 2, 3]
    );
    assert_eq!(s2["approval_wait"]["count"], 1);
    assert_eq!(s2["approval_wait"]["median_secs"], 7200);
    assert_near(&s2["success_rate"], 2.0 / 3.0);
    assert_eq!(s2["time_to_restore"]["median_secs"], 93_660);
    // 3 deploys in the 4.5 days of the sprint so far.
    assert_near(&s2["deployment_frequency_per_day"], 3.0 / 4.5);

    // Over the three sprints: 14 changes, 12 deploys, 9 successes in 12.
    let total = &svc["total"];
    assert_eq!(
        [
            n(total, "changes"),
            n(total, "pre_approved"),
            n(total, "deployments"),
            n(total, "succeeded"),
            n(total, "failed")
        ],
        [14, 5, 12, 9, 3]
    );
    assert_near(&total["success_rate"], 0.75);
    // Waits 1h, 2h, 30m, 4h, 3h, 1h, 2h → sorted, median 2h; p90 rank ⌈6.3⌉ = 7 → 4h.
    assert_eq!(total["approval_wait"]["median_secs"], 7200);
    assert_eq!(total["approval_wait"]["p90_secs"], 14_400);
    // 12 lead times; the 6th and 7th are 25h and 25h31.
    assert_eq!(total["lead_time"]["median_secs"], (90_000 + 91_860) / 2);
    assert_near(&total["deployment_frequency_per_day"], 12.0 / 32.5);

    // --all lists both services on the instance.
    let out = sn
        .cmd(&[
            "--dry-run",
            "--format",
            "json",
            "report",
            "--sprints",
            "3",
            "--all",
        ])
        .env("CHANGEGATE_NOW", "2026-04-03T12:00:00Z")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let ids: Vec<String> = json_of(&out)["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["acme/billing", "acme/payments-api"]);
    sn.assert_clean();
}

#[tokio::test]
async fn a_failed_deploy_is_no_start_for_the_next_range() {
    let sn = Instance::start(
        "[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 3\nstep = 0\n[risk]\nmax_lines_changed = 5\n",
    )
    .await;
    let gate = || {
        let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
        json_of(&out)
    };
    assert_eq!(gate()["decision"], "pre-approved");
    assert_eq!(code(&sn.run(&["record", "--outcome", "success"])), 0);
    sn.commit("second.txt", 4);
    assert_eq!(gate()["decision"], "pre-approved");
    // Deployed and failed: it may not have shipped, or been rolled back.
    assert_eq!(code(&sn.run(&["record", "--outcome", "failure"])), 0);
    sn.commit("third.txt", 3);
    // The range runs from the last successful deploy: both commits, 4 + 3 lines.
    assert_eq!(rule(&gate(), "risk-size")["reason"], "7 lines changed > 5");
    sn.assert_clean();
}

#[tokio::test]
async fn policy_simulate_replays_the_decisions_on_the_instance() {
    let sn = Instance::start(
        "[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 2\nstep = 0\n[risk]\nmax_lines_changed = 50\n",
    )
    .await;
    // Three deploys: two pre-approved (the allowance is 2), the third needs approval.
    let gate = |expect: i32| {
        let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
        assert_eq!(code(&out), expect, "{:?}", text(&out));
        json_of(&out)
    };
    let first = gate(0);
    assert_eq!(first["decision"], "pre-approved");
    assert_eq!(code(&sn.run(&["record", "--outcome", "success"])), 0);
    sn.commit("second.txt", 3);
    assert_eq!(gate(0)["decision"], "pre-approved");
    assert_eq!(code(&sn.run(&["record", "--outcome", "success"])), 0);
    sn.commit("third.txt", 3);
    let third = gate(1);
    assert_eq!(third["decision"], "needs-approval");
    assert_eq!(rule(&third, "risk-size")["reason"], "3 lines changed ≤ 50");

    // The facts each decision was made on are on the record, after the decision.
    {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0];
        assert!(
            rec["justification"].contains("\nfacts: {")
                && rec["justification"].contains("\"lines\":3"),
            "{}",
            rec["justification"]
        );
    }

    let before = sn.requests();
    let out = sn.run(&[
        "policy",
        "simulate",
        "--set",
        "policy.allowance.initial=3",
        "--set",
        "risk.max_lines_changed=2",
        "--format",
        "json",
    ]);
    sn.print_log("simulate", before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let sim = json_of(&out);
    assert_eq!(sim["changes"], 3, "{sim}");
    // The current policy, replayed over the instance's records, decides exactly as recorded.
    assert_eq!(sim["current_reproduces_recorded"], true, "{sim}");
    let kinds = |k: &str| -> Vec<String> {
        sim["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d[k].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        kinds("recorded"),
        ["pre-approved", "pre-approved", "needs-approval"]
    );
    assert_eq!(kinds("current"), kinds("recorded"));
    // Proposed: a larger allowance, but at most 2 lines: the 1-line first change passes,
    // the 3-line ones need approval.
    assert_eq!(
        kinds("proposed"),
        ["pre-approved", "needs-approval", "needs-approval"]
    );
    assert_eq!(sim["current"]["pre_approved"], 2);
    assert_eq!(sim["proposed"]["pre_approved"], 1);
    // The facts of this run (the last closed change), then every change of the service.
    assert_eq!(sn.requests() - before, 2);
    sn.assert_clean();
}

#[tokio::test]
async fn the_service_list_jumps_past_a_long_history() {
    let sn = Instance::start("").await;
    {
        let mut s = sn.sn();
        let day = Utc::now().date_naive() - chrono::Duration::days(3);
        for (prefix, n) in [
            ("changegate:acme/billing:production:", 3u64),
            (SERVICE_KEY_PREFIX, 1200),
            ("changegate:acme/payments-api:staging:", 2),
        ] {
            for i in 0..n {
                s.seed_closed(&format!("{prefix}{i:040x}"), day, "normal", "successful");
            }
        }
    }
    let before = sn.requests();
    let out = sn.run(&[
        "--dry-run",
        "--format",
        "json",
        "report",
        "--all",
        "--sprints",
        "1",
    ]);
    sn.print_log("report --all", before);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let services: Vec<(String, String)> = json_of(&out)["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service_id"].as_str().unwrap().to_string(),
                s["environment"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            ("acme/billing".to_string(), "production".to_string()),
            ("acme/payments-api".to_string(), "production".to_string()),
            ("acme/payments-api".to_string(), "staging".to_string()),
        ]
    );
    // The first page of 1,000 keys ends inside payments-api/production; the second request
    // starts past it and finds staging: 1,205 keys in two requests.
    let s = sn.sn();
    let scans: Vec<&str> = s.log[before..]
        .iter()
        .filter(|l| l.query.contains("ORDERBYcorrelation_id"))
        .map(|l| l.query.as_str())
        .collect();
    assert_eq!(scans.len(), 2, "{scans:#?}");
    assert!(
        scans[1]
            .contains("correlation_id%3E%3Dchangegate%3Aacme%2Fpayments-api%3Aproduction%3A%7E"),
        "{}",
        scans[1]
    );
    drop(s);
    sn.assert_clean();
}

/// `gate` against a silent server as the ServiceNow instance, with `config`.
fn gate_against(silent: &Silent, config: &str) -> (Output, Duration) {
    let repo = git_repo();
    std::fs::write(repo.path().join(".changegate.toml"), config).unwrap();
    let started = Instant::now();
    let out = changegate(repo.path())
        .env("CHANGEGATE_SERVICENOW_URL", &silent.url)
        .env("CHANGEGATE_SERVICENOW_USER", USER)
        .env("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .args(["--backend", "servicenow", "gate", "--wait", "0"])
        .output()
        .unwrap();
    (out, started.elapsed())
}
#[test]
fn a_silent_servicenow_ends_the_gate_within_http_deadline() {
    let silent = Silent::start();
    let (out, took) = gate_against(&silent, "[http]\ndeadline = \"3s\"\n");
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    // The budget is 3 s; the margin is for a loaded machine (before the budget: 4 minutes).
    assert!(took < Duration::from_secs(15), "took {took:?}: {stderr}");
    assert!(took >= Duration::from_secs(3), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("ServiceNow call GET /api/now/")
            && stderr.contains("the whole of http.deadline (3s)")
            && regex_lite_spent(&stderr),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD) && !stdout.contains(PASSWORD));
    // The one attempt used the whole budget: no retry was started past it.
    assert_eq!(silent.accepted(), 1);
}

/// "the run spent 3.0s" (or a little more): the message says how long was spent.
fn regex_lite_spent(stderr: &str) -> bool {
    stderr
        .split("the run spent ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|secs| secs.parse::<f64>().ok())
        .is_some_and(|secs| (3.0..15.0).contains(&secs))
}

#[test]
fn a_timed_out_request_is_tried_twice_not_four_times() {
    let silent = Silent::start();
    let (out, took) = gate_against(&silent, "[http]\ndeadline = \"1m\"\ntimeout = \"1s\"\n");
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("ServiceNow could not be reached (GET /api/now/")
            && stderr.contains("after 2 attempts")
            && stderr.contains("timed out"),
        "{stderr}"
    );
    assert_eq!(silent.accepted(), 2, "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[tokio::test]
async fn the_approval_wait_never_runs_past_its_timeout_plus_one_request_timeout() {
    let sn = Instance::start("[http]\ntimeout = \"4s\"\n").await;
    let key = sn.key();
    let mut cmd = sn.cmd(&["gate", "--wait", "1s"]);
    let run = std::thread::spawn(move || cmd.output().unwrap());
    // Once the change waits for approval, the instance goes silent.
    let silent_from = loop {
        let mut s = sn.sn();
        if s.find(&key)
            .first()
            .is_some_and(|c| c.get("approval").map(String::as_str) == Some("requested"))
        {
            s.faults.push(Fault {
                method: "GET",
                path_contains: "/api/now/",
                times: 100,
                kind: FaultKind::Silent,
            });
            break Instant::now();
        }
        drop(s);
        assert!(!run.is_finished(), "gate ended before waiting");
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = run.join().unwrap();
    let took = silent_from.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("approval wait"), "{stderr}");
    // 1 s of wait plus one 4 s request timeout, and a margin for a loaded machine; a poll
    // retried past the wait would take 4 s + backoff + 4 s after the wait.
    assert!(took < Duration::from_secs(8), "took {took:?}: {stderr}");
}

#[tokio::test]
async fn a_closed_observe_decision_does_not_let_an_enforce_run_pass() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--mode", "observe", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    {
        // The change waits in Assess (nobody approved it; observe mode deployed anyway)
        // until someone closes it in ServiceNow.
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        assert_eq!(s.changes[i]["state"], "-4");
        s.changes[i].insert("state".into(), "3".into());
    }
    let before = sn.requests();
    let out = sn.run(&[
        "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
    ]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["mode"].as_str(), doc["decision"].as_str()),
        (Some("enforce"), Some("needs-approval"))
    );
    let s = sn.sn();
    let writes = s.log[before..].iter().filter(|l| l.method != "GET").count();
    assert_eq!(writes, 0, "the closed change is not reopened");
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["state"], "3", "still closed");
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_rejection_asked_in_observe_mode_blocks_an_enforce_run() {
    let sn = Instance::start("").await;
    // Observe mode sends a needs-approval change to Assess all the same.
    let out = sn.run(&["gate", "--mode", "observe", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    {
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.decide(i, &Verdict::Reject("Not during the sales peak".into()));
    }
    let out = sn.run(&[
        "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
    ]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (
            doc["mode"].as_str(),
            doc["decision"].as_str(),
            doc["state"].as_str()
        ),
        (Some("enforce"), Some("blocked"), Some("rejected"))
    );
    // The dry run says the same.
    let out = sn.run(&["gate", "--mode", "enforce", "--dry-run", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "blocked");
    sn.assert_clean();
}

#[tokio::test]
async fn an_observe_change_without_its_decision_text_is_decided_again_in_enforce() {
    let sn = Instance::start("").await;
    let out = sn.run(&[
        "gate", "--mode", "observe", "--wait", "0", "--format", "json",
    ]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "needs-approval");
    {
        // An instance without an approval workflow let the observe change into Implement,
        // and someone rewrote its justification: the decision is rebuilt from type and
        // state, which cannot tell observe from enforce.
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.changes[i].insert("state".into(), "-1".into());
        s.changes[i].insert("approval".into(), "not requested".into());
        s.changes[i].insert("justification".into(), "Quarterly release".into());
    }
    let out = sn.run(&[
        "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
    ]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (doc["mode"].as_str(), doc["decision"].as_str()),
        (Some("enforce"), Some("needs-approval"))
    );
    assert_ne!(doc["state"], "implementing");
    let s = sn.sn();
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1, "one record holds the key");
    assert!(recs[0]["justification"].contains("(mode enforce)"));
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_rerun_after_a_timed_out_wait_says_blocked_as_the_ledger_does() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--wait", "1s", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "blocked");
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    let doc = json_of(&out);
    assert_eq!(
        (
            doc["decision"].as_str(),
            doc["policy_decision"].as_str(),
            doc["state"].as_str()
        ),
        (
            Some("blocked"),
            Some("needs-approval"),
            Some("awaiting-approval")
        )
    );
    assert!(
        doc["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("approval timed out on an earlier run"),
        "{doc}"
    );
    // Approved late: the timeout no longer counts.
    {
        let mut s = sn.sn();
        let i = change_index(&s, &sn.key());
        s.decide(i, &Verdict::Approve);
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["decision"], "needs-approval");
    sn.assert_clean();
}

/// A dry run of `gate`, `open` and `record` reads the instance and writes nothing, before and
/// after the change exists.
#[tokio::test]
async fn a_dry_run_of_gate_open_and_record_sends_no_write() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let writes_since = |before: usize| {
        sn.sn().log[before..]
            .iter()
            .filter(|l| l.method != "GET")
            .count()
    };
    for args in [
        &["--dry-run", "gate", "--format", "json"][..],
        &["--dry-run", "open"],
        &["--dry-run", "record", "--outcome", "success"],
    ] {
        let before = sn.requests();
        let out = sn.run(args);
        assert_eq!(writes_since(before), 0, "{args:?} wrote: {:?}", text(&out));
    }
    // Once the change is open, a dry run leaves it as it is.
    let out = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    for args in [
        &["--dry-run", "gate", "--format", "json"][..],
        &["--dry-run", "open"],
        &["--dry-run", "record", "--outcome", "success"],
    ] {
        let before = sn.requests();
        let out = sn.run(args);
        assert_eq!(code(&out), 0, "{args:?}: {:?}", text(&out));
        assert_eq!(writes_since(before), 0, "{args:?} wrote: {:?}", text(&out));
    }
    sn.assert_clean();
}
