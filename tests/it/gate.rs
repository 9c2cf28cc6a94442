//! The core gate, end to end: the real binary on real git checkouts, the embedded ledger,
//! GitHub Actions and GitLab CI environments with the reference payloads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

use crate::support::{
    changegate, default_branch_is_head, git, git_repo, gitlab_ci, machine_ci_vars, reference,
};

/// Generous: a test that hangs is a failure, not a stuck CI job.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The merge commit GitHub checks out for the example pull request.
const MERGE_SHA: &str = "3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ff";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

fn cg(dir: &Path) -> Command {
    let mut cmd = changegate(dir);
    cmd.timeout(TIMEOUT);
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    cg(dir).args(args).output().expect("changegate runs")
}

/// [`run`] with the clock set to `now` (`CHANGEGATE_NOW`).
fn run_at(dir: &Path, now: &str, args: &[&str]) -> Output {
    cg(dir)
        .env("CHANGEGATE_NOW", now)
        .args(args)
        .output()
        .expect("changegate runs")
}

/// The rule with stable code `code` in a JSON report's `rules`.
fn rule<'a>(doc: &'a Value, code: &str) -> &'a Value {
    doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == code)
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless stderr holds `needle`, showing stderr.
#[track_caller]
fn assert_stderr_has(out: &Output, needle: &str) {
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

/// Fails unless stdout holds `needle`, showing stdout.
#[track_caller]
fn assert_stdout_has(out: &Output, needle: &str) {
    assert!(stdout(out).contains(needle), "{}", stdout(out));
}

/// stdout as exactly one JSON document, of a run that exited with `want` (else fails,
/// showing stderr).
#[track_caller]
fn json_exiting(out: &Output, want: i32) -> Value {
    assert_eq!(code(out), want, "{}", stderr(out));
    one_json(out)
}

/// stdout as exactly one JSON document.
fn one_json(out: &Output) -> Value {
    let mut docs = serde_json::Deserializer::from_slice(&out.stdout).into_iter::<Value>();
    let doc = docs
        .next()
        .unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", stderr(out)))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)));
    assert!(
        docs.next().is_none(),
        "more than one document: {}",
        stdout(out)
    );
    doc
}

fn config(dir: &Path, text: &str) {
    std::fs::write(dir.join(".changegate.toml"), text).unwrap();
}

/// A test checkout with `.changegate.toml` holding `text`.
fn repo_with(text: &str) -> tempfile::TempDir {
    let repo = git_repo();
    config(repo.path(), text);
    repo
}

/// A config with no track record needed, so a fresh ledger pre-approves.
const TRUSTING: &str = "[policy]\nmin_history = 0\n";

fn ledger(dir: &Path) -> PathBuf {
    dir.join(".changegate/ledger.db")
}

fn ledger_rows(dir: &Path) -> i64 {
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    db.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .unwrap()
}

/// Commits a file in the test repository and returns the new HEAD.
fn commit(dir: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(dir.join(file), text).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// GitHub's step outputs file: `name=value` and `name<<DELIM` ... `DELIM` entries.
fn github_outputs(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delim)) = line.split_once("<<") {
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            out.insert(name.to_string(), value.to_string());
        } else {
            panic!("bad GITHUB_OUTPUT line {line:?} in {text}");
        }
    }
    out
}

fn dotenv(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A GitHub Actions `pull_request` run of the reference payload, with its own output files.
struct GithubRun {
    event: PathBuf,
    output: PathBuf,
    summary: PathBuf,
}

impl GithubRun {
    fn new(dir: &Path, payload: &str, edit: impl FnOnce(&mut Value)) -> GithubRun {
        let text = std::fs::read_to_string(reference(payload)).unwrap();
        let mut event: Value = serde_json::from_str(&text).unwrap();
        edit(&mut event);
        default_branch_is_head(dir, event["repository"]["default_branch"].as_str().unwrap());
        let files = dir.join(".github-run");
        std::fs::create_dir_all(&files).unwrap();
        let run = GithubRun {
            event: files.join("event.json"),
            output: files.join("output"),
            summary: files.join("summary.md"),
        };
        std::fs::write(&run.event, event.to_string()).unwrap();
        run
    }

    /// A fresh step: new output and summary files, as the runner gives each step.
    fn step(&self, dir: &Path) -> Command {
        let _ = std::fs::remove_file(&self.output);
        let _ = std::fs::remove_file(&self.summary);
        let mut cmd = cg(dir);
        cmd.env("GITHUB_ACTIONS", "true")
            .env("CI", "true")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_API_URL", "http://127.0.0.1:9")
            .env("GITHUB_REPOSITORY", "Codertocat/Hello-World")
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_EVENT_PATH", &self.event)
            .env("GITHUB_SHA", MERGE_SHA)
            .env("GITHUB_REF_NAME", "2/merge")
            .env("GITHUB_HEAD_REF", "changes")
            .env("GITHUB_BASE_REF", "master")
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("GITHUB_ACTOR", "Codertocat")
            .env("GITHUB_OUTPUT", &self.output)
            .env("GITHUB_STEP_SUMMARY", &self.summary);
        cmd
    }

    /// Runs changegate with `args` as a fresh step.
    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.step(dir).args(args).output().unwrap()
    }

    /// [`GithubRun::run`] with the clock set to `now` (`CHANGEGATE_NOW`).
    fn run_at(&self, dir: &Path, now: &str, args: &[&str]) -> Output {
        self.step(dir)
            .env("CHANGEGATE_NOW", now)
            .args(args)
            .output()
            .unwrap()
    }

    fn outputs(&self) -> HashMap<String, String> {
        github_outputs(&self.output)
    }

    fn summary(&self) -> String {
        std::fs::read_to_string(&self.summary).unwrap()
    }
}

#[test]
fn github_pull_request_run_gate_then_record() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |_| {},
    );

    let out = gh.run(dir, &["gate"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let o = gh.outputs();
    assert_eq!(o["change-id"], "CG-1");
    assert_eq!(o["change-url"], "");
    assert_eq!(o["decision"], "pre-approved");
    assert_eq!(o["state"], "implementing");
    assert_eq!(o["dry-run"], "false");
    let summary = gh.summary();
    assert!(
        summary.contains("### changegate: Hello\\-World → production"),
        "{summary}"
    );
    assert!(summary.contains("| Change | CG\\-1 |"), "{summary}");
    assert!(
        summary.contains("| Decision | **pre-approved** |"),
        "{summary}"
    );
    assert!(summary.contains("| State | implementing |"), "{summary}");
    assert!(
        summary.contains(
            "| Pull request | [\\#2 Update the README with new information\\.](https://github.com/Codertocat/Hello-World/pull/2) |"
        ),
        "{summary}"
    );
    assert!(summary.contains("| Rule | Result | Reason |"), "{summary}");
    assert!(
        summary.contains(
            "| `track-record` | ✅ pass | no closed changes yet, none needed for a track record |"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("| `allowance` | ✅ pass | allowance 0 of 2 used this sprint |"),
        "{summary}"
    );
    assert!(!stdout(&out).contains("::error::"));

    // The deploy step ran; `record` with the job's status closes the change.
    let out = gh.run(dir, &["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let o = gh.outputs();
    assert_eq!(
        (o["change-id"].as_str(), o["state"].as_str()),
        ("CG-1", "closed")
    );
    assert_eq!(o["decision"], "pre-approved");
    assert!(gh.summary().contains("| Outcome | success |"));

    let out = gh.run(dir, &["status", "--format", "json"]);
    let doc = one_json(&out);
    assert_eq!(doc["outcome"], "success");
    assert_eq!(doc["state"], "closed");
    assert_eq!(
        doc["correlation_key"],
        format!("changegate:Codertocat/Hello-World:production:{MERGE_SHA}")
    );
    assert_eq!(ledger_rows(dir), 1);
}

#[test]
fn github_block_writes_an_error_command_and_the_outputs() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\nreason = \"year-end freeze\"\n",
    );
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |_| {},
    );
    let out = gh.run_at(dir, "2026-12-24T09:00:00Z", &["gate"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let error = text
        .lines()
        .find(|l| l.starts_with("::error::"))
        .unwrap_or_else(|| panic!("no ::error:: line in {text}"));
    assert!(
        error.starts_with("::error::changegate blocked the deploy of Hello-World to production: "),
        "{error}"
    );
    assert!(
        error.contains("freeze window active until 2027-01-04 00:00 UTC: year-end freeze"),
        "{error}"
    );
    let o = gh.outputs();
    assert_eq!(
        (o["decision"].as_str(), o["state"].as_str()),
        ("blocked", "new")
    );
    let summary = gh.summary();
    assert!(summary.contains("| Decision | **blocked** |"), "{summary}");
    assert!(summary.contains("| `freeze` | ❌ fail | freeze window active until 2027\\-01\\-04 00:00 UTC: year\\-end freeze |"), "{summary}");

    // With --format json stdout holds only the document; the workflow command goes to stderr.
    let out = gh.run_at(dir, "2026-12-24T09:00:00Z", &["gate", "--format", "json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(one_json(&out)["decision"], "blocked");
    assert_stderr_has(&out, "::error::changegate blocked the deploy");
}

#[test]
fn github_untrusted_title_is_escaped_in_the_summary() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |e| {
            e["pull_request"]["title"] =
                "<img src=x onerror=alert(1)> | @acme/admins **now**\n::error::pwned".into();
        },
    );
    let out = gh.run(dir, &["gate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary = gh.summary();
    assert!(!summary.contains("<img"), "{summary}");
    assert!(!summary.contains("@acme"), "{summary}");
    assert!(!summary.contains("**now**"), "{summary}");
    assert!(
        !summary.lines().any(|l| l.starts_with("::error::")),
        "{summary}"
    );
    assert!(!stdout(&out).lines().any(|l| l.starts_with("::error::")));
}

#[test]
fn github_emergency_label_passes_a_freeze() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\nreason = \"year-end freeze\"\n",
    );
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |e| {
            e["pull_request"]["labels"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "emergency"}));
        },
    );
    let out = gh.run_at(dir, "2026-12-24T09:00:00Z", &["gate", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["decision"], "pre-approved");
    assert_eq!(doc["emergency"], "label 'emergency' on pull request #2");
    assert!(
        gh.summary()
            .contains("| Emergency | label 'emergency' on pull request \\#2 |")
    );
}

#[test]
fn gitlab_run_gate_then_record_writes_the_dotenv_file() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    let head = commit(dir, "app.txt", "v2\n", "OPS-7: second version");
    // A job of this pipeline running changegate with `args`.
    let gitlab = |args: &[&str]| -> Command {
        let mut cmd = cg(dir);
        gitlab_ci(&mut cmd, "acme/payments/api", &head)
            .env("CI", "true")
            .env(
                "CI_PROJECT_URL",
                "https://gitlab.example.com/acme/payments/api",
            )
            .env("CI_COMMIT_REF_NAME", "main")
            .env("CI_COMMIT_TITLE", "OPS-7: second version")
            .env(
                "CI_PIPELINE_URL",
                "https://gitlab.example.com/acme/payments/api/-/pipelines/9",
            )
            .env("CI_ENVIRONMENT_NAME", "staging")
            .env("GITLAB_USER_LOGIN", "dev1")
            .args(args);
        cmd
    };
    let env_file = dir.join("changegate.env");

    let out = gitlab(&["gate", "--format", "json"]).output().unwrap();
    let doc = json_exiting(&out, 0);
    assert_eq!(
        doc["environment"], "staging",
        "CI_ENVIRONMENT_NAME is the default environment"
    );
    assert_eq!(
        doc["correlation_key"],
        format!("changegate:acme/payments/api:staging:{head}")
    );
    let vars = dotenv(&env_file);
    assert_eq!(vars["CHANGEGATE_CHANGE_ID"], "CG-1");
    assert_eq!(vars["CHANGEGATE_CHANGE_URL"], "");
    assert_eq!(vars["CHANGEGATE_DECISION"], "pre-approved");
    assert_eq!(vars["CHANGEGATE_STATE"], "implementing");
    assert!(!vars.contains_key("CHANGEGATE_DRY_RUN"));

    // `record` in a later job, with GitLab's own status word.
    let out = gitlab(&["record", "--outcome", "failed"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let vars = dotenv(&env_file);
    assert_eq!(vars["CHANGEGATE_STATE"], "closed");
    let doc = one_json(&gitlab(&["status", "--format", "json"]).output().unwrap());
    assert_eq!(doc["outcome"], "failure");

    // --dotenv names another file.
    let out = gitlab(&["status", "--dotenv", "out/gate.env"])
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "a missing folder is an error, not silence");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    gitlab(&["status", "--dotenv", "out/gate.env"])
        .assert()
        .success();
    assert_eq!(
        dotenv(&dir.join("out/gate.env"))["CHANGEGATE_CHANGE_ID"],
        "CG-1"
    );
}

#[test]
fn observe_mode_never_exits_1() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "mode = \"observe\"\n[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\n",
    );
    // A freeze and no track record: enforce mode would block.
    let out = run_at(dir, "2026-12-24T09:00:00Z", &["gate", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["mode"], "observe");
    assert_eq!(
        doc["decision"], "blocked",
        "the decision it would have made is recorded"
    );
    assert_eq!(doc["state"], "implementing");

    // Needs approval: observe mode does not wait (the default wait is an hour).
    let second = commit(dir, "app.txt", "v2\n", "second");
    let started = Instant::now();
    let out = run(dir, &["gate", "--format", "json", "--commit", &second]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(60));
    let doc = one_json(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["mode"].as_str()),
        (Some("needs-approval"), Some("observe"))
    );
    assert!(!stderr(&out).contains("waiting for approval"));

    // --mode on the command line wins over the file.
    let out = run_at(
        dir,
        "2026-12-24T09:00:00Z",
        &["gate", "--mode", "enforce", "--commit", &sha('e')],
    );
    assert_eq!(code(&out), 1);
}

#[test]
fn a_freeze_blocks() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[policy]\nmin_history = 0\n[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\nreason = \"year-end freeze\"\nenvironments = [\"production\"]\n",
    );
    let out = run_at(dir, "2026-12-24T09:00:00Z", &["gate", "--format", "json"]);
    let doc = json_exiting(&out, 1);
    assert_eq!(doc["decision"], "blocked");
    let freeze = rule(&doc, "freeze");
    assert_eq!(freeze["passed"], false);
    assert_eq!(
        freeze["reason"],
        "freeze window active until 2027-01-04 00:00 UTC: year-end freeze"
    );

    // Staging is not frozen.
    let out = run_at(
        dir,
        "2026-12-24T09:00:00Z",
        &["gate", "--environment", "staging"],
    );
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    // Once the freeze is over, the blocked change is decided again and passes.
    let out = run_at(dir, "2027-01-05T09:00:00Z", &["gate"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert_eq!(ledger_rows(dir), 2);
}

#[test]
fn an_emergency_passes_a_freeze_and_is_recorded_as_one() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\nreason = \"year-end freeze\"\n",
    );
    let now = "2026-12-24T09:00:00Z";
    let out = run_at(
        dir,
        now,
        &[
            "gate",
            "--emergency",
            "payments are down",
            "--format",
            "json",
        ],
    );
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["decision"], "pre-approved");
    assert_eq!(doc["emergency"], "payments are down");
    assert!(
        rule(&doc, "freeze")["reason"]
            .as_str()
            .unwrap()
            .ends_with("(overridden: emergency)")
    );
    assert_eq!(
        rule(&doc, "emergency")["reason"],
        "emergency declared: payments are down"
    );

    // Recorded as an emergency: in the ledger, and an emergency does not use the allowance.
    let out = run_at(dir, now, &["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let doc = one_json(&run_at(dir, now, &["status", "--format", "json"]));
    assert_eq!(doc["emergency"], "payments are down");
    assert_eq!(doc["outcome"], "success");
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let (emergency, reason, pre_approved): (i64, String, i64) = db
        .query_row(
            "SELECT emergency, emergency_reason, pre_approved FROM changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (emergency, reason.as_str(), pre_approved),
        (1, "payments are down", 0)
    );
    let explain = one_json(&run_at(
        dir,
        now,
        &["policy", "explain", "--format", "json"],
    ));
    assert_eq!(explain["used"], 0);

    // Without the emergency, the next change is blocked by the freeze.
    let next = commit(dir, "app.txt", "v2\n", "second");
    let out = run_at(dir, now, &["gate", "--commit", &next]);
    assert_eq!(code(&out), 1);
}

/// A std process (for spawning) with the same clean environment as `support::changegate`.
fn spawn(dir: &Path, args: &[&str]) -> Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_changegate"));
    cmd.current_dir(dir);
    for key in machine_ci_vars() {
        cmd.env_remove(key);
    }
    cmd.env("NO_COLOR", "1")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("changegate starts")
}

/// Waits for a spawned process, killing it after `TIMEOUT`.
fn finish(mut child: Child) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > TIMEOUT {
            child.kill().unwrap();
            panic!("changegate did not finish in {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Polls `status` until the change is in `state`.
fn wait_for_state(dir: &Path, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let out = run(dir, &["status", "--format", "json"]);
        if code(&out) == 0 {
            let doc = one_json(&out);
            if doc["state"] == state {
                return doc;
            }
        }
        assert!(started.elapsed() < TIMEOUT, "never reached {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const QUICK_POLL: &str = "[approval]\npoll = \"200ms\"\n";

#[test]
fn the_author_of_a_change_may_not_approve_it() {
    let repo = repo_with("");
    let dir = repo.path();
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "  to approve: anyone but its author dev@example.com may approve CG-1: changegate approve --change CG-1 --by NAME (or reject) with the ledger"
        ),
        "{}",
        stdout(&out)
    );
    // The commit's author, by e-mail in any case or as `Name <e-mail>`: refused with exit 2,
    // in a dry run too, and the change still waits.
    for by in ["dev@example.com", "Dev <DEV@example.com>"] {
        for dry in [false, true] {
            let mut args = vec!["approve", "--change", "CG-1", "--by", by];
            if dry {
                args.push("--dry-run");
            }
            let out = run(dir, &args);
            assert_eq!(code(&out), 2, "{by} dry={dry}: {}", stdout(&out));
            assert_stderr_has(
                &out,
                "is the author of change CG-1 (dev@example.com), and an author may not approve their own change ([approval] separate_author = true)",
            );
        }
    }
    let doc = one_json(&run(dir, &["status", "--format", "json"]));
    assert_eq!(doc["state"], "awaiting-approval");
    // Rejecting one's own change is allowed: it lets nothing through.
    let out = run(
        dir,
        &["reject", "--by", "dev@example.com", "--comment", "not yet"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "CG-1: rejected by dev@example.com");
}

#[test]
fn separate_author_false_lets_the_author_approve_and_change_defaults_to_this_commits() {
    let repo = repo_with("[approval]\nseparate_author = false\n");
    let dir = repo.path();
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("to approve: anyone allowed to run changegate approve may approve CG-1"),
        "{}",
        stdout(&out)
    );
    // Outside CI there is no user who started the job: --by is needed.
    let out = run(dir, &["approve"]);
    assert_eq!(code(&out), 2);
    assert_stderr_has(&out, "--by must name who decides");
    // No --change: the change of this checkout's commit.
    let out = run(dir, &["approve", "--by", "dev@example.com"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "CG-1: approved by dev@example.com");
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn approve_from_a_second_process_ends_a_waiting_gate() {
    let repo = repo_with(QUICK_POLL);
    let dir = repo.path();
    let gate = spawn(dir, &["gate", "--wait", "60s"]);
    let doc = wait_for_state(dir, "awaiting-approval");
    assert_eq!(doc["change_id"], "CG-1");

    let out = run(
        dir,
        &[
            "approve",
            "--change",
            "CG-1",
            "--by",
            "alice",
            "--comment",
            "looks fine",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "CG-1: approved by alice");

    let out = finish(gate);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // The headline says what happened, the policy's decision below it.
    let text = stdout(&out);
    assert!(
        text.starts_with("CG-1: approved by alice: looks fine (state: implementing) — "),
        "{text}"
    );
    assert!(text.contains("\n  policy: needs-approval\n"), "{text}");
    assert!(!text.contains("decided by"), "{text}");
    assert_stderr_has(&out, "waiting for approval of CG-1: ");
    assert_stderr_has(&out, " left; next check in ");
    // Who may approve and how, while it waits: the author is the commit's (git's e-mail).
    assert_stderr_has(
        &out,
        ". anyone but its author dev@example.com may approve CG-1: changegate approve --change CG-1 --by NAME (or reject) with the ledger ",
    );
    let doc = one_json(&run(dir, &["status", "--format", "json"]));
    assert_eq!(doc["state"], "implementing");
    assert_eq!(doc["approved_by"], "alice");

    // Approving again is harmless; the change is no longer waiting.
    let out = run(dir, &["approve", "--change", "CG-1", "--by", "alice"]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert_stderr_has(
        &out,
        "is not waiting for approval (its state is implementing)",
    );
}

#[test]
fn reject_from_a_second_process_ends_a_waiting_gate() {
    let repo = repo_with(QUICK_POLL);
    let dir = repo.path();
    let gate = spawn(dir, &["gate", "--wait", "60s", "--format", "json"]);
    wait_for_state(dir, "awaiting-approval");
    let out = run(
        dir,
        &[
            "reject",
            "--change",
            "CG-1",
            "--by",
            "bob",
            "--comment",
            "not during the sale",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = finish(gate);
    let doc = json_exiting(&out, 1);
    assert_eq!(doc["state"], "rejected");
    assert_eq!(doc["message"], "rejected by bob: not during the sale");
    // A re-run of the gate stays blocked: a rejection stands.
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 1);
    // And record after a rejected change keeps it rejected.
    let out = run(
        dir,
        &["record", "--outcome", "cancelled", "--format", "json"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(one_json(&out)["state"], "rejected");
}

#[test]
fn approval_times_out() {
    let repo = repo_with(QUICK_POLL);
    let dir = repo.path();
    let out = run(dir, &["gate", "--wait", "1s"]);
    assert_eq!(code(&out), 1);
    assert_stdout_has(&out, "approval timed out after 1 second");
    assert_stderr_has(&out, "waiting for approval of CG-1");
}

#[test]
fn wait_0_returns_at_once() {
    let repo = git_repo();
    let dir = repo.path();
    let started = Instant::now();
    let out = run(dir, &["gate", "--wait", "0", "--format", "json"]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(code(&out), 1);
    let doc = one_json(&out);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("needs-approval"), Some("awaiting-approval"))
    );
    assert_eq!(
        doc["message"],
        "awaiting approval; --wait 0 returns at once"
    );
    assert!(!stderr(&out).contains("waiting for approval"));
    // Approved in the meantime: the next run passes without waiting.
    run(dir, &["approve", "--change", "CG-1", "--by", "alice"]);
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

/// Twenty gates of one commit at once (re-runs, parallel jobs): one record, one decision,
/// the allowance used once, and none of them fails on a locked ledger.
#[test]
fn concurrent_gates_make_one_record() {
    for trusting in [false, true] {
        let repo = git_repo();
        let dir = repo.path();
        if trusting {
            config(dir, TRUSTING);
        }
        let gates: Vec<Child> = (0..20)
            .map(|_| spawn(dir, &["gate", "--wait", "0", "--format", "json"]))
            .collect();
        let outs: Vec<Output> = gates.into_iter().map(finish).collect();
        let want = if trusting { 0 } else { 1 };
        for out in &outs {
            assert_eq!(code(out), want, "{}", stderr(out));
            let doc = one_json(out);
            assert_eq!(doc["change_id"], "CG-1", "{doc}");
            assert_eq!(
                doc["decision"],
                if trusting {
                    "pre-approved"
                } else {
                    "needs-approval"
                },
                "{doc}"
            );
        }
        let status = one_json(&run(dir, &["status", "--format", "json"]));
        assert_eq!(status["change_id"], "CG-1");
        assert_eq!(ledger_rows(dir), 1);
        if trusting {
            // The allowance was used once, not twenty times.
            let explain = one_json(&run(dir, &["policy", "explain", "--format", "json"]));
            assert_eq!(explain["used"], 1);
        }
    }
}

#[test]
fn a_broken_config_is_exit_2_with_key_and_line() {
    let repo = git_repo();
    let dir = repo.path();
    let cases = [
        (
            "service = \"api\"\n[policy]\nmin_sucess_rate = 0.9\n",
            "line 3",
            "min_sucess_rate",
        ),
        (
            "[approval]\npoll = \"200ms\"\ntimeout = 5\n",
            "line 3",
            "timeout",
        ),
        ("[policy]\nwindow = \"twenty\"\n", "line 2", "window"),
        (
            "[policy]\n\nmin_success_rate = 1.5\n",
            "line 3",
            "min_success_rate",
        ),
        ("mode = \"relaxed\"\n", "line 1", "mode"),
        (
            "[risk]\nsensitive_paths = [\"migrations/{\"]\n",
            "line 2",
            "sensitive_paths",
        ),
        (
            "[risk]\nmax_lines_changed = 10\nsensitive_paths = [\"../migrations/**\"]\n",
            "line 3",
            "sensitive_paths",
        ),
    ];
    for (text, line, key) in cases {
        config(dir, text);
        for args in [&["gate"][..], &["config", "check"][..], &["status"][..]] {
            let out = run(dir, args);
            assert_eq!(code(&out), 2, "{args:?} {text}");
            let err = stderr(&out);
            assert!(
                err.contains(line) && err.contains(key),
                "{args:?} {text}: {err}"
            );
            assert!(err.contains(".changegate.toml"), "names the file: {err}");
        }
        assert!(
            !ledger(dir).exists(),
            "nothing written with a broken config"
        );
    }
    // An explicit config file must exist.
    std::fs::remove_file(dir.join(".changegate.toml")).unwrap();
    let out = cg(dir)
        .env("CHANGEGATE_CONFIG", "nope.toml")
        .args(["gate"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert_stderr_has(&out, "cannot read config file nope.toml: No such file");
}

/// Runs `gate` on a ledger file and checks it fails closed and leaves the file as it was.
fn assert_refused(dir: &Path, ledger: &Path, want: &str) {
    let before = std::fs::read(ledger).ok();
    for args in [
        &["gate", "--wait", "0"][..],
        &["--dry-run", "gate"][..],
        &["status"][..],
        &["record", "--outcome", "success"][..],
    ] {
        let out = cg(dir)
            .env("CHANGEGATE_LEDGER", ledger)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            err.contains(&ledger.display().to_string()),
            "names the file: {err}"
        );
        assert_eq!(
            std::fs::read(ledger).ok(),
            before,
            "{args:?} changed {}",
            ledger.display()
        );
        for side in ["-wal", "-shm", "-journal"] {
            let mut p = ledger.as_os_str().to_owned();
            p.push(side);
            assert!(
                !Path::new(&p).exists(),
                "{args:?} left {}",
                Path::new(&p).display()
            );
        }
    }
}

#[test]
fn a_corrupt_or_unreadable_ledger_is_exit_2_and_left_untouched() {
    let repo = git_repo();
    let dir = repo.path();
    let damaged = "it is not a changegate ledger or it is damaged. It was left untouched";

    let garbage = dir.join("garbage.db");
    std::fs::write(
        &garbage,
        "this is not a database, but somebody's notes\n".repeat(200),
    )
    .unwrap();
    assert_refused(dir, &garbage, damaged);

    // A real ledger, cut short.
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    let real = std::fs::read(ledger(dir)).unwrap();
    assert!(real.len() >= 8192, "the ledger has several pages");
    let truncated = dir.join("truncated.db");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    assert_refused(dir, &truncated, damaged);

    // A real ledger whose table of changes was overwritten.
    let scrambled = dir.join("scrambled.db");
    let mut bytes = real.clone();
    let page = 4096;
    for b in &mut bytes[page..2 * page] {
        *b = 0xA5;
    }
    std::fs::write(&scrambled, &bytes).unwrap();
    assert_refused(dir, &scrambled, damaged);

    // Another program's SQLite database is never written to.
    let foreign = dir.join("notes.db");
    {
        let db = rusqlite::Connection::open(&foreign).unwrap();
        db.execute_batch("CREATE TABLE notes (text TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    assert_refused(
        dir,
        &foreign,
        "is an SQLite database but not a changegate ledger",
    );

    // A path that cannot be opened as a file at all.
    let folder = dir.join("a-folder.db");
    std::fs::create_dir(&folder).unwrap();
    let out = cg(dir)
        .env("CHANGEGATE_LEDGER", &folder)
        .args(["gate", "--wait", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert_stderr_has(&out, "cannot open the ledger");
}

#[test]
fn a_ledger_from_a_newer_changegate_is_refused() {
    let repo = git_repo();
    let dir = repo.path();
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    {
        let db = rusqlite::Connection::open(ledger(dir)).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
    }
    let out = run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 2);
    assert_stderr_has(&out, "newer than this changegate knows");
}

#[test]
fn dry_run_writes_nothing_but_prints_and_fills_the_job_outputs() {
    let repo = git_repo();
    let dir = repo.path();
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |_| {},
    );
    let out = gh.run(dir, &["--dry-run", "gate"]);
    assert_eq!(
        code(&out),
        1,
        "the code the decision would have: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("needs-approval"), "{text}");
    assert!(text.contains("[dry run: nothing written]"), "{text}");
    assert!(
        text.contains("✗ track-record     0 closed changes, 5 needed for a track record"),
        "{text}"
    );
    assert!(!dir.join(".changegate").exists(), "no ledger, no folder");
    let o = gh.outputs();
    assert_eq!(o["dry-run"], "true");
    assert_eq!(o["decision"], "needs-approval");
    assert_eq!(o["change-id"], "");
    assert!(gh.summary().contains("> Dry run: nothing was written"));

    // GitLab's dotenv is marked too.
    let out = gitlab_ci(&mut cg(dir), "acme/api", &sha('a'))
        .args(["gate", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    let vars = dotenv(&dir.join("changegate.env"));
    assert_eq!(vars["CHANGEGATE_DRY_RUN"], "true");
    assert_eq!(vars["CHANGEGATE_DECISION"], "needs-approval");
    assert!(!dir.join(".changegate").exists());

    // On an existing ledger: not a byte changed, no side files left, nothing waited for.
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    let before = std::fs::read(ledger(dir)).unwrap();
    let files = || {
        let mut v: Vec<_> = std::fs::read_dir(dir.join(".changegate"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let listing = files();
    for args in [
        &["gate", "--dry-run", "--format", "json"][..],
        &["--dry-run", "open"][..],
        &["--dry-run", "record", "--outcome", "success"][..],
        &["--dry-run", "approve", "--change", "CG-1", "--by", "x"][..],
        &["--dry-run", "policy", "explain"][..],
    ] {
        let out = run(dir, args);
        assert_ne!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert_eq!(std::fs::read(ledger(dir)).unwrap(), before, "{args:?}");
        assert_eq!(files(), listing, "{args:?}");
    }
    let doc = one_json(&run(dir, &["gate", "--dry-run", "--format", "json"]));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["change_id"], "CG-1");
    let doc = one_json(&run(dir, &["status", "--format", "json"]));
    assert_eq!(
        (doc["state"].as_str(), doc["outcome"].as_str()),
        (Some("awaiting-approval"), None)
    );
}

#[test]
fn json_output_is_one_document_with_the_product_keys() {
    let repo = git_repo();
    let dir = repo.path();
    let out = run(dir, &["gate", "--wait", "0", "--format", "json"]);
    let doc = one_json(&out);
    for key in [
        "change_id",
        "change_url",
        "decision",
        "state",
        "outcome",
        "rules",
        "mode",
        "dry_run",
    ] {
        assert!(doc.get(key).is_some(), "missing {key}: {doc}");
    }
    assert_eq!(doc["change_id"], "CG-1");
    assert_eq!(doc["change_url"], Value::Null);
    assert_eq!(doc["decision"], "needs-approval");
    assert_eq!(doc["state"], "awaiting-approval");
    assert_eq!(doc["outcome"], Value::Null);
    assert_eq!(doc["mode"], "enforce");
    assert_eq!(doc["dry_run"], false);
    let rules = doc["rules"].as_array().unwrap();
    assert!(!rules.is_empty());
    for rule in rules {
        let keys: Vec<&str> = rule
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["code", "passed", "reason"], "{rule}");
    }
    // Every command that reports a change prints exactly one document.
    for args in [
        &["status", "--format", "json"][..],
        &["open", "--format", "json"][..],
        &["policy", "explain", "--format", "json"][..],
        &["record", "--outcome", "cancelled", "--format", "json"][..],
        &["config", "check", "--format", "json"][..],
    ] {
        let out = run(dir, args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        one_json(&out);
    }
}

#[test]
fn global_options_before_or_after_the_command() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    let before = run(
        dir,
        &[
            "--format",
            "json",
            "--environment",
            "staging",
            "-q",
            "--dry-run",
            "gate",
        ],
    );
    let after = run(
        dir,
        &[
            "gate",
            "--format",
            "json",
            "--environment",
            "staging",
            "-q",
            "--dry-run",
        ],
    );
    let mixed = run(
        dir,
        &[
            "--environment",
            "staging",
            "gate",
            "--dry-run",
            "--format",
            "json",
            "-v",
        ],
    );
    assert_eq!(code(&before), 0, "{}", stderr(&before));
    let (a, b, c) = (one_json(&before), one_json(&after), one_json(&mixed));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a["environment"], "staging");
    assert_eq!(a["dry_run"], true);
    // -v before and after: info logs on stderr in both cases, nothing on stdout but the JSON.
    let v_before = run(dir, &["-v", "gate", "--dry-run", "--format", "json"]);
    let v_after = run(dir, &["gate", "--dry-run", "--format", "json", "-v"]);
    assert_eq!(one_json(&v_before), one_json(&v_after));
    // Subcommand-of-subcommand too.
    let out = run(
        dir,
        &["config", "check", "--environment", "qa", "--format", "json"],
    );
    assert_eq!(one_json(&out)["environment"], "qa");
    let out = run(
        dir,
        &["--environment", "qa", "--format", "json", "config", "check"],
    );
    assert_eq!(one_json(&out)["environment"], "qa");
}

#[test]
fn record_twice_is_harmless() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    assert_eq!(code(&run(dir, &["gate"])), 0);
    let first = run(dir, &["record", "--outcome", "success", "--format", "json"]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    assert_eq!(one_json(&first)["outcome"], "success");
    let again = run(dir, &["record", "--outcome", "success", "--format", "json"]);
    assert_eq!(code(&again), 0);
    assert_eq!(one_json(&again)["outcome"], "success");
    // A different word later does not rewrite history.
    let late = run(dir, &["record", "--outcome", "failure", "--format", "json"]);
    assert_eq!(code(&late), 0);
    let doc = one_json(&late);
    assert_eq!(
        (doc["outcome"].as_str(), doc["state"].as_str()),
        (Some("success"), Some("closed"))
    );
    assert_eq!(
        doc["message"],
        "outcome was already recorded as success; kept"
    );
    assert_eq!(ledger_rows(dir), 1);
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let outcomes: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'outcome'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcomes, 1);
    // By id as well.
    let out = run(dir, &["record", "--change", "CG-1", "--outcome", "success"]);
    assert_eq!(code(&out), 0);
}

#[test]
fn record_of_a_change_whose_gate_never_passed_is_cancelled() {
    let repo = git_repo();
    let dir = repo.path();
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    let out = run(dir, &["record", "--outcome", "success", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(
        (doc["state"].as_str(), doc["outcome"].as_str()),
        (Some("cancelled"), Some("cancelled"))
    );
    assert_eq!(
        doc["message"],
        "the gate never passed, so nothing was deployed: recorded as cancelled"
    );
    // A cancelled change counts in no success rate.
    let explain = one_json(&run(dir, &["policy", "explain", "--format", "json"]));
    assert_eq!(explain["closed_total"], 0);

    // No gate at all: nothing to record.
    let out = run(
        dir,
        &["record", "--outcome", "success", "--commit", &sha('f')],
    );
    assert_eq!(code(&out), 2);
    assert_stderr_has(
        &out,
        "no change record for changegate:acme/payments-api:production:ffff",
    );
}

#[test]
fn outcome_words() {
    let repo = git_repo();
    let dir = repo.path();
    // Whatever the outcomes, every change here is pre-approved.
    config(
        dir,
        "[policy]\nmin_history = 0\nmin_success_rate = 0.0\n[policy.allowance]\ninitial = 20\n",
    );
    for (word, want) in [
        ("failed", "failure"),
        ("canceled", "cancelled"),
        ("failure", "failure"),
        ("SUCCESS", "success"),
    ] {
        let head = commit(dir, "app.txt", word, word);
        assert_eq!(
            code(&run(dir, &["gate", "--wait", "0", "--commit", &head])),
            0
        );
        let out = run(
            dir,
            &[
                "record",
                "--outcome",
                word,
                "--commit",
                &head,
                "--format",
                "json",
            ],
        );
        assert_eq!(code(&out), 0, "{word}: {}", stderr(&out));
        assert_eq!(one_json(&out)["outcome"], want, "{word}");
    }
    let head = commit(dir, "app.txt", "bogus", "bogus");
    assert_eq!(
        code(&run(dir, &["gate", "--wait", "0", "--commit", &head])),
        0
    );
    for bogus in ["skipped", "ok", ""] {
        let out = run(dir, &["record", "--outcome", bogus, "--commit", &head]);
        assert_eq!(code(&out), 2, "{bogus:?}");
        assert_stderr_has(&out, "unknown outcome");
    }
    let doc = one_json(&run(
        dir,
        &["status", "--commit", &head, "--format", "json"],
    ));
    assert_eq!(
        (doc["state"].as_str(), doc["outcome"].as_str()),
        (Some("implementing"), None)
    );
}

#[test]
fn changegate_now_sets_the_clock_and_says_so() {
    let repo = git_repo();
    let dir = repo.path();
    let out = run_at(dir, "2026-03-02T10:00:00Z", &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 1);
    assert_stdout_has(
        &out,
        "clock set by CHANGEGATE_NOW to 2026-03-02T10:00:00+00:00",
    );
    let doc = one_json(&run_at(
        dir,
        "2026-03-02T10:00:00Z",
        &["status", "--format", "json"],
    ));
    assert_eq!(doc["clock_override"], "2026-03-02T10:00:00+00:00");
    // The sprint is the clock's: 2026-03-02 is in sprint 57 of the default calendar (sprint 1
    // starts 2024-01-01, 14 days).
    assert_eq!(doc["sprint"]["index"], 57);
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let decided_at: i64 = db
        .query_row("SELECT decided_at FROM changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(decided_at, 1_772_445_600);
    // Without it, no word of it.
    let other = commit(dir, "app.txt", "v2\n", "second");
    let out = run(dir, &["gate", "--wait", "0", "--commit", &other]);
    assert!(!stdout(&out).contains("CHANGEGATE_NOW"));
    // A bad value is an error that names the variable.
    let out = run_at(dir, "yesterday", &["gate"]);
    assert_eq!(code(&out), 2);
    assert_stderr_has(&out, "CHANGEGATE_NOW must be an RFC 3339 time");
}

#[test]
fn config_check_and_schema() {
    let repo = git_repo();
    let dir = repo.path();
    let out = run(dir, &["config", "check"]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).starts_with("ok: no config file: defaults"),
        "{}",
        stdout(&out)
    );
    config(
        dir,
        "service = \"payments\"\nmode = \"observe\"\n[policy]\nmin_history = 3\n[policy.allowance]\ninitial = 4\n",
    );
    let out = run(dir, &["config", "check"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("mode observe")
            && text.contains("3 closed changes needed")
            && text.contains("start 4"),
        "{text}"
    );
    let doc = one_json(&run(dir, &["config", "check", "--format", "json"]));
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["mode"], "observe");
    assert_eq!(doc["file"]["policy"]["allowance"]["initial"], 4);

    let out = run(dir, &["config", "schema"]);
    assert_eq!(code(&out), 0);
    let schema = one_json(&out);
    assert_eq!(schema["additionalProperties"], false);
    for key in [
        "service", "mode", "backend", "sprint", "policy", "risk", "approval", "freeze",
    ] {
        assert!(
            schema["properties"].get(key).is_some(),
            "schema lacks {key}"
        );
    }
    // A broken file does not stop `config schema`.
    config(dir, "nonsense = [");
    assert_eq!(code(&run(dir, &["config", "schema"])), 0);
}

#[test]
fn pre_approved_after_enough_history_until_the_allowance_is_used_up() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[policy]\nmin_history = 3\n[policy.allowance]\ninitial = 1\nstep = 2\nmin_changes = 3\n",
    );
    // Sprint 56 of the default calendar: 2026-02-23 .. 2026-03-08.
    let now = "2026-03-02T10:00:00Z";
    let gate = |sha: &str, extra: &[&str]| {
        let mut args = vec!["gate", "--wait", "0", "--format", "json", "--commit", sha];
        args.extend_from_slice(extra);
        let out = cg(dir)
            .env("CHANGEGATE_NOW", now)
            .args(&args)
            .output()
            .unwrap();
        (code(&out), one_json(&out))
    };
    let record = |sha: &str| {
        let out = run_at(
            dir,
            now,
            &["record", "--outcome", "success", "--commit", sha],
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    };
    // Build a track record in observe mode, as a team starts.
    for c in ['1', '2', '3'] {
        let (exit, doc) = gate(&sha(c), &["--mode", "observe"]);
        assert_eq!(exit, 0);
        assert_eq!(doc["decision"], "needs-approval");
        record(&sha(c));
    }
    // Enough history: pre-approved, using the sprint's allowance of 1.
    let (exit, doc) = gate(&sha('4'), &[]);
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(doc["decision"], "pre-approved");
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules[0]["reason"], "success rate 100% over last 3 ≥ 90%");
    assert_eq!(rules[1]["reason"], "allowance 0 of 1 used this sprint");
    record(&sha('4'));
    // The allowance is used up: the next change needs approval.
    let (exit, doc) = gate(&sha('5'), &[]);
    assert_eq!(exit, 1);
    assert_eq!(doc["decision"], "needs-approval");
    let allowance = rule(&doc, "allowance");
    assert_eq!(allowance["passed"], false);
    assert_eq!(allowance["reason"], "allowance 1 of 1 used this sprint");

    // The next sprint: a healthy sprint (4 closed, all good) grows the allowance 1 → 3.
    let out = run_at(
        dir,
        "2026-03-10T10:00:00Z",
        &[
            "gate",
            "--wait",
            "0",
            "--format",
            "json",
            "--commit",
            &sha('6'),
        ],
    );
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["sprint"]["index"], 58);
    assert_eq!(
        doc["rules"][1]["reason"],
        "allowance 0 of 3 used this sprint"
    );
}

#[test]
fn local_range_runs_from_the_last_recorded_change() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[policy]\nmin_history = 0\n[risk]\nmax_lines_changed = 100\n",
    );
    assert_eq!(code(&run(dir, &["gate"])), 0);
    run(dir, &["record", "--outcome", "success"]);
    commit(dir, "app.txt", "v1\nv2\n", "PAY-2: second");
    commit(dir, "other.txt", "a\nb\nc\n", "PAY-3: third");
    let doc = one_json(&run(dir, &["gate", "--format", "json"]));
    let size = rule(&doc, "risk-size");
    // Both commits since the last change: +1 (app.txt) and +3 (other.txt).
    assert_eq!(size["reason"], "4 lines changed ≤ 100");
}

#[test]
fn help_and_version() {
    let repo = git_repo();
    let dir = repo.path();
    let out = run(dir, &["--help"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for command in [
        "gate", "open", "record", "status", "policy", "config", "approve", "reject",
    ] {
        assert!(
            text.contains(&format!("  {command} ")),
            "{command} in {text}"
        );
    }
    assert!(text.contains("Exit codes: 0 pass, 1 blocked"), "{text}");
    assert_eq!(code(&run(dir, &["--version"])), 0);
    // Bad usage is an error, exit 2.
    assert_eq!(code(&run(dir, &["gate", "--wait", "soon"])), 2);
    assert_eq!(code(&run(dir, &["frobnicate"])), 2);
}

/// A checkout whose last commit adds `names` under a `migrations/**` sensitive path.
fn sensitive_commit(names: &[&str]) -> tempfile::TempDir {
    sensitive_commit_with("migrations/**", names)
}

/// A checkout whose last commit adds `names`, with `pattern` as the sensitive path.
fn sensitive_commit_with(pattern: &str, names: &[&str]) -> tempfile::TempDir {
    let repo = repo_with(&format!(
        "[policy]\nmin_history = 0\n[risk]\nsensitive_paths = [\"{pattern}\"]\n"
    ));
    let dir = repo.path();
    git(dir, &["add", ".changegate.toml"]);
    git(dir, &["commit", "-q", "-m", "config"]);
    for name in names {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "drop table t;\n").unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "PAY-9: migrations"]);
    repo
}

#[test]
fn sensitive_path_with_quoted_name_sends_to_approval() {
    // Names git's plain output would quote and escape: "migrations/002_drop_\303\251.sql".
    for name in [
        "migrations/002_drop_é.sql",
        "migrations/say \"hi\".sql",
        "migrations/back\\slash.sql",
        "migrations/tab\there.sql",
        "migrations/new\nline.sql",
    ] {
        let repo = sensitive_commit(&[name]);
        let out = run(repo.path(), &["gate", "--wait", "0", "--format", "json"]);
        let doc = json_exiting(&out, 1);
        assert_eq!(doc["decision"], "needs-approval", "{name:?}");
        let paths = rule(&doc, "risk-paths");
        assert_eq!(paths["passed"], false, "{name:?}");
        assert_eq!(
            paths["reason"],
            format!("touches sensitive paths: {name}"),
            "the real path, not git's quoted form"
        );
    }
}

/// The directory written as people write it elsewhere (gitignore, CODEOWNERS) is the
/// directory: `config check` takes it, and touching a file under it needs approval.
#[test]
fn sensitive_paths_in_directory_style_send_to_approval() {
    for pattern in [
        "migrations/",
        "migrations",
        "/migrations/**",
        "./migrations/**",
    ] {
        let repo = sensitive_commit_with(pattern, &["migrations/002_drop.sql", "app/x.rs"]);
        let out = run(repo.path(), &["config", "check"]);
        assert_eq!(code(&out), 0, "{pattern}: {}", stderr(&out));
        let out = run(repo.path(), &["gate", "--wait", "0", "--format", "json"]);
        let doc = json_exiting(&out, 1);
        assert_eq!(doc["decision"], "needs-approval", "{pattern}");
        assert_eq!(
            rule(&doc, "risk-paths")["reason"],
            "touches sensitive paths: migrations/002_drop.sql",
            "{pattern}"
        );
    }
}

/// A pull_request run in a checkout without the PR's commits (fetch-depth: 1), and no
/// token to ask GitHub with: what git cannot tell stays unknown.
fn shallow_pull_request(
    risk: &str,
    edit: impl FnOnce(&mut Value),
) -> (tempfile::TempDir, GithubRun) {
    let repo = repo_with(&format!("[policy]\nmin_history = 0\n{risk}"));
    let gh = GithubRun::new(
        repo.path(),
        "github-webhooks/examples/pull_request/opened.payload.json",
        edit,
    );
    (repo, gh)
}

#[test]
fn shallow_checkout_unknown_size_sends_to_approval() {
    let risk = "[risk]\nmax_lines_changed = 100\nsensitive_paths = [\"migrations/**\"]\n";
    let (repo, gh) = shallow_pull_request(risk, |event| {
        let pr = event["pull_request"].as_object_mut().unwrap();
        pr.remove("additions");
        pr.remove("deletions");
    });
    let out = gh.run(repo.path(), &["gate", "--wait", "0", "--format", "json"]);
    let doc = json_exiting(&out, 1);
    assert_eq!(doc["decision"], "needs-approval");
    let size = rule(&doc, "risk-size");
    assert_eq!(size["passed"], false);
    assert_eq!(
        size["reason"],
        "lines changed unknown: the checkout has no commit range — fetch-depth: 0, or a token \
         that can read the PR's files"
    );
    let paths = rule(&doc, "risk-paths");
    assert_eq!(paths["passed"], false);
    assert!(
        paths["reason"]
            .as_str()
            .unwrap()
            .starts_with("touched paths unknown: the checkout has no commit range"),
        "{paths}"
    );

    // The payload's own counts establish the size; the paths stay unknown.
    let (repo, gh) = shallow_pull_request(risk, |_| {});
    let doc = json_exiting(
        &gh.run(repo.path(), &["gate", "--wait", "0", "--format", "json"]),
        1,
    );
    assert_eq!(rule(&doc, "risk-size")["reason"], "2 lines changed ≤ 100");
    assert_eq!(rule(&doc, "risk-paths")["passed"], false);
}

#[test]
fn when_unknown_pass_keeps_old_behaviour() {
    let risk = "[risk]\nmax_lines_changed = 100\nsensitive_paths = [\"migrations/**\"]\nwhen_unknown = \"pass\"\n";
    let (repo, gh) = shallow_pull_request(risk, |event| {
        event["pull_request"]
            .as_object_mut()
            .unwrap()
            .remove("additions");
        event["pull_request"]
            .as_object_mut()
            .unwrap()
            .remove("deletions");
    });
    let out = gh.run(repo.path(), &["gate", "--wait", "0", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["decision"], "pre-approved");
    assert_eq!(
        rule(&doc, "risk-size")["reason"],
        "lines changed unknown (no commit range; [risk] when_unknown = \"pass\")"
    );
    assert_eq!(rule(&doc, "risk-paths")["passed"], true);
}

#[test]
fn line_counts_saturate() {
    // u64::MAX + 1 would wrap to 0 lines changed and pass the size rule.
    let (repo, gh) = shallow_pull_request("[risk]\nmax_lines_changed = 100\n", |event| {
        event["pull_request"]["additions"] = serde_json::json!(u64::MAX);
        event["pull_request"]["deletions"] = serde_json::json!(1);
    });
    let out = gh.run(repo.path(), &["gate", "--wait", "0", "--format", "json"]);
    let doc = json_exiting(&out, 1);
    assert_eq!(
        rule(&doc, "risk-size")["reason"],
        format!("{} lines changed > 100", u64::MAX)
    );
}

#[test]
fn service_with_colon_is_refused() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    for bad in ["a:b", "", " x", "x;y"] {
        let out = run(dir, &["gate", "--service", bad]);
        assert_eq!(code(&out), 2, "{bad:?}: {}", stderr(&out));
        assert_stderr_has(&out, "invalid service name");
        assert_stderr_has(&out, "--service (CHANGEGATE_SERVICE)");
    }
    let out = cg(dir)
        .env("CHANGEGATE_SERVICE", "pay:ments")
        .args(["gate"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_stderr_has(&out, "\"pay:ments\"");
    config(dir, "service = \"pay:ments\"\n[policy]\nmin_history = 0\n");
    let out = run(dir, &["gate"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_stderr_has(&out, "line 1: `service`");
    let out = run(dir, &["gate", "--environment", "prod:eu"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(ledger_rows_if_any(dir), 0, "nothing recorded");
}

fn ledger_rows_if_any(dir: &Path) -> i64 {
    if ledger(dir).exists() {
        ledger_rows(dir)
    } else {
        0
    }
}

#[test]
fn commit_not_hex_is_refused() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    for bad in [
        "-x",
        "a:b",
        "",
        "abc12",
        "HEAD",
        "main",
        &"g".repeat(40),
        &"a".repeat(50),
    ] {
        let out = run(dir, &["gate", &format!("--commit={bad}")]);
        assert_eq!(code(&out), 2, "{bad:?}: {}", stderr(&out));
        assert_stderr_has(&out, "--commit");
    }
    assert_eq!(ledger_rows_if_any(dir), 0, "nothing recorded");

    // An abbreviated SHA of the checkout is resolved: the key carries the full SHA.
    let head = git(dir, &["rev-parse", "HEAD"]);
    let out = run(
        dir,
        &[
            "gate",
            "--format",
            "json",
            "--commit",
            &head[..10].to_uppercase(),
        ],
    );
    let doc = json_exiting(&out, 0);
    assert_eq!(
        doc["correlation_key"],
        format!("changegate:acme/payments-api:production:{head}")
    );
    // An abbreviation no commit has.
    let out = run(dir, &["gate", "--commit", "0000000abc"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_stderr_has(&out, "does not name exactly one commit");
}

// --- The final decision: a rejection or a timed-out wait is `blocked` -------------------

/// The ledger's stored final decision of a change.
fn stored_decision(dir: &Path, id: i64) -> String {
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    db.query_row("SELECT decision FROM changes WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn a_rejection_is_blocked_in_every_output_and_a_rerun_stays_blocked_at_once() {
    let repo = git_repo();
    let dir = repo.path();
    let gh = GithubRun::new(
        dir,
        "github-webhooks/examples/pull_request/opened.payload.json",
        |_| {},
    );
    // No track record: needs approval.
    let out = gh.run(dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(gh.outputs()["decision"], "needs-approval");
    let out = run(
        dir,
        &[
            "reject",
            "--change",
            "CG-1",
            "--by",
            "bob",
            "--comment",
            "not during the sale",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stored_decision(dir, 1), "blocked");

    // A re-run asked to wait a minute returns at once: a rejection stands.
    let started = Instant::now();
    let out = gh.run(
        dir,
        &[
            "gate", "--wait", "60s", "--format", "json", "--dotenv", "gate.env",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let doc = json_exiting(&out, 1);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("rejected"))
    );
    assert_eq!(doc["policy_decision"], "needs-approval");
    assert_eq!(doc["message"], "rejected by bob: not during the sale");
    assert!(
        rule(&doc, "track-record")["passed"] == false,
        "the rules still say what the policy found"
    );
    let o = gh.outputs();
    assert_eq!(
        (o["decision"].as_str(), o["state"].as_str()),
        ("blocked", "rejected")
    );
    let summary = gh.summary();
    assert!(summary.contains("| Decision | **blocked** |"), "{summary}");
    let vars = dotenv(&dir.join("gate.env"));
    assert_eq!(vars["CHANGEGATE_DECISION"], "blocked");
    assert_eq!(vars["CHANGEGATE_STATE"], "rejected");
    assert!(!stderr(&out).contains("waiting for approval"));

    // The text: the headline says who rejected and why, once; the policy's decision below.
    let out = run(dir, &["gate", "--wait", "0", "--commit", MERGE_SHA]);
    assert_eq!(code(&out), 1);
    let out = run(dir, &["status", "--change", "CG-1"]);
    let text = stdout(&out);
    assert!(
        text.starts_with(
            "CG-1: blocked — rejected by bob: not during the sale (state: rejected) — "
        ),
        "{text}"
    );
    assert!(text.contains("\n  policy: needs-approval\n"), "{text}");
    assert!(!text.contains("decided by"), "{text}");
    assert_eq!(text.matches("rejected by bob").count(), 1, "{text}");
}

#[test]
fn approve_overturns_a_rejection_on_the_ledger_and_the_rerun_passes() {
    let repo = git_repo();
    let dir = repo.path();
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    let out = run(dir, &["reject", "--change", "CG-1", "--by", "bob"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);

    // Overturning says why.
    let out = run(dir, &["approve", "--change", "CG-1", "--by", "alice"]);
    assert_eq!(code(&out), 2);
    assert_stderr_has(
        &out,
        "change CG-1 was rejected by bob; approving it overturns the rejection: say why with --comment",
    );
    let out = run(
        dir,
        &[
            "approve",
            "--change",
            "CG-1",
            "--by",
            "alice",
            "--comment",
            "the sale is over",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stored_decision(dir, 1), "needs-approval");
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let events: Vec<(String, Option<String>, Option<String>)> = db
        .prepare("SELECT kind, actor, detail FROM events WHERE change_id = 1 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(events.contains(&("rejected".into(), Some("bob".into()), None)));
    assert!(events.contains(&(
        "overturned".into(),
        Some("alice".into()),
        Some("the sale is over".into())
    )));

    let out = run(dir, &["gate", "--wait", "0", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("needs-approval"), Some("implementing"))
    );
    assert_eq!(doc["approved_by"], "alice");
    // After the deploy, the headline still says who approved.
    let out = run(dir, &["record", "--outcome", "success"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("CG-1: approved by alice: the sale is over (state: closed) — "),
        "{text}"
    );
}

#[test]
fn a_timed_out_wait_is_blocked_and_a_late_approval_passes() {
    let repo = repo_with(QUICK_POLL);
    let dir = repo.path();
    let out = run(dir, &["gate", "--wait", "1s", "--format", "json"]);
    let doc = json_exiting(&out, 1);
    assert_eq!(
        (doc["decision"].as_str(), doc["state"].as_str()),
        (Some("blocked"), Some("awaiting-approval"))
    );
    assert_eq!(doc["policy_decision"], "needs-approval");
    assert_eq!(doc["message"], "approval timed out after 1 second");
    // Stored: `status` and the KPIs say blocked too.
    assert_eq!(stored_decision(dir, 1), "blocked");
    let doc = one_json(&run(dir, &["status", "--format", "json"]));
    assert_eq!(doc["decision"], "blocked");

    // A re-run re-reads the approval: still none, still blocked.
    let out = run(dir, &["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(json_exiting(&out, 1)["decision"], "blocked");
    // Approved late: the re-run passes.
    let out = run(dir, &["approve", "--change", "CG-1", "--by", "alice"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(dir, &["gate", "--wait", "0", "--format", "json"]);
    let doc = json_exiting(&out, 0);
    assert_eq!(doc["decision"], "needs-approval");
    assert_eq!(doc["state"], "implementing");
}

#[test]
fn observe_then_enforce_on_the_same_commit_decides_again() {
    let repo = git_repo();
    let dir = repo.path();
    // No track record: needs approval, which observe mode lets through.
    let out = run(dir, &["gate", "--mode", "observe", "--format", "json"]);
    assert_eq!(json_exiting(&out, 0)["mode"], "observe");
    // The project switches to enforce: the observe-mode decision does not stand.
    let out = run(
        dir,
        &[
            "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
        ],
    );
    let doc = json_exiting(&out, 1);
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
    assert_eq!(ledger_rows(dir), 1);
}

#[test]
fn an_observe_pre_approval_decided_again_counts_once_against_the_allowance() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 1\nstep = 2\nmin_changes = 3\n",
    );
    let now = "2026-03-02T10:00:00Z";
    let gate = |sha: &str, mode: &str| {
        let out = cg(dir)
            .env("CHANGEGATE_NOW", now)
            .args([
                "gate", "--wait", "0", "--format", "json", "--mode", mode, "--commit", sha,
            ])
            .output()
            .unwrap();
        (code(&out), one_json(&out))
    };
    let (exit, doc) = gate(&sha('1'), "observe");
    assert_eq!((exit, doc["decision"].as_str()), (0, Some("pre-approved")));
    // Decided again in enforce: its own observe-mode pre-approval takes no slot from it.
    let (exit, doc) = gate(&sha('1'), "enforce");
    assert_eq!(exit, 0, "{doc}");
    assert_eq!(
        (doc["mode"].as_str(), doc["decision"].as_str()),
        (Some("enforce"), Some("pre-approved"))
    );
    assert_eq!(
        rule(&doc, "allowance")["reason"],
        "allowance 0 of 1 used this sprint"
    );
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let (rows, slots, decided): (i64, i64, i64) = db
        .query_row(
            "SELECT count(*), sum(pre_approved), (SELECT count(*) FROM events WHERE kind = 'decided') FROM changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((rows, slots, decided), (1, 1, 2));
    // The change counts once: the next one finds the allowance used up.
    let (exit, doc) = gate(&sha('2'), "enforce");
    assert_eq!(
        (exit, doc["decision"].as_str()),
        (1, Some("needs-approval"))
    );
    assert_eq!(
        rule(&doc, "allowance")["reason"],
        "allowance 1 of 1 used this sprint"
    );
}

#[test]
fn status_of_another_change_shows_that_change_s_commit() {
    let repo = repo_with(TRUSTING);
    let dir = repo.path();
    let first = git(dir, &["rev-parse", "HEAD"]);
    let out = run(dir, &["gate", "--format", "json"]);
    assert_eq!(json_exiting(&out, 0)["change_id"], "CG-1");
    let head = commit(dir, "app.txt", "v2\n", "second");
    assert_ne!(head, first);
    for command in ["status", "record"] {
        let mut args = vec![command, "--change", "CG-1", "--format", "json"];
        if command == "record" {
            args.extend(["--outcome", "success"]);
        }
        let doc = one_json(&run(dir, &args));
        assert_eq!(doc["commit"], first.as_str(), "{command}");
        assert_eq!(
            doc["correlation_key"],
            format!("changegate:acme/payments-api:production:{first}"),
            "{command}"
        );
    }
}

#[test]
fn status_with_no_change_says_what_to_run() {
    let repo = git_repo();
    let dir = repo.path();
    let out = run(dir, &["status"]);
    assert_eq!(code(&out), 2);
    assert_stderr_has(
        &out,
        "(run `changegate gate` for this commit first, or pass --change ID)",
    );
}

// What a deploy ships: its range starts at the last commit deployed successfully.

/// A config under which a first change is pre-approved unless it touches a migration.
const MIGRATIONS_NEED_APPROVAL: &str =
    "[policy]\nmin_history = 0\n[risk]\nsensitive_paths = [\"migrations/**\"]\n";

/// A GitHub Actions `push` run of `dir` at `sha` with `event` as its payload.
fn github_push(dir: &Path, event: &Value, sha: &str, args: &[&str]) -> Output {
    let path = dir.join(".git/push-event.json");
    std::fs::write(&path, event.to_string()).unwrap();
    let git_ref = event["ref"].as_str().unwrap();
    let mut cmd = cg(dir);
    crate::support::github_actions(&mut cmd, "push", &path, "acme/payments-api", sha)
        .env("GITHUB_REF", git_ref)
        .env("GITHUB_REF_NAME", git_ref.rsplit('/').next().unwrap())
        .env("GITHUB_ACTOR", "dev")
        .args(args)
        .output()
        .expect("changegate runs")
}

/// A push payload of `before..after` listing one commit that modified `modified`.
fn push_event(before: &str, after: &str, modified: &[&str]) -> Value {
    serde_json::json!({
        "ref": "refs/heads/main", "before": before, "after": after,
        "repository": {"default_branch": "main"},
        "commits": [{"id": after, "message": "PAY-7: bump", "modified": modified,
                     "added": [], "removed": []}],
        "head_commit": {"id": after, "message": "PAY-7: bump", "modified": modified,
                        "added": [], "removed": []}
    })
}

/// A checkout whose config is deployed (gated and recorded a success as a push of `A`),
/// then commit X adding a migration: returns (dir, A, X).
fn deployed_then_migration(
    gate_and_record: impl Fn(&Path, &str, &str) -> (i32, i32),
) -> (tempfile::TempDir, String, String) {
    let repo = repo_with(MIGRATIONS_NEED_APPROVAL);
    let dir = repo.path();
    git(dir, &["add", ".changegate.toml"]);
    git(dir, &["commit", "-q", "-m", "PAY-1: gate the deploys"]);
    let a = git(dir, &["rev-parse", "HEAD"]);
    let parent = git(dir, &["rev-parse", "HEAD^"]);
    assert_eq!(gate_and_record(dir, &parent, &a), (0, 0), "A deploys");
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    let x = commit(
        dir,
        "migrations/001_drop.sql",
        "drop table t;\n",
        "PAY-2: drop t",
    );
    (repo, a, x)
}

#[test]
fn a_blocked_migration_is_in_the_range_of_the_next_push() {
    let gate = |dir: &Path, before: &str, after: &str, modified: &[&str]| {
        github_push(
            dir,
            &push_event(before, after, modified),
            after,
            &["gate", "--wait", "0", "--format", "json"],
        )
    };
    let record = |dir: &Path, before: &str, after: &str, outcome: &str| {
        github_push(
            dir,
            &push_event(before, after, &[]),
            after,
            &["record", "--outcome", outcome],
        )
    };
    let (repo, a, x) = deployed_then_migration(|dir, before, after| {
        let g = code(&gate(dir, before, after, &[".changegate.toml"]));
        (g, code(&record(dir, before, after, "success")))
    });
    let dir = repo.path();
    let doc = json_exiting(&gate(dir, &a, &x, &["migrations/001_drop.sql"]), 1);
    assert_eq!(doc["decision"], "needs-approval");
    // The deploy job reports the failure (it was never deployed: cancelled).
    assert_eq!(code(&record(dir, &a, &x, "failure")), 0);

    // The next push's payload names only its own commit; the deploy ships X's migration too.
    let y = commit(dir, "app.txt", "v2\n", "PAY-3: bump");
    let doc = json_exiting(&gate(dir, &x, &y, &["app.txt"]), 1);
    assert_eq!(doc["decision"], "needs-approval");
    let paths = rule(&doc, "risk-paths");
    assert_eq!(
        paths["reason"], "touches sensitive paths: migrations/001_drop.sql",
        "{doc}"
    );
}

#[test]
fn a_rejected_migration_is_in_the_range_of_the_next_local_change() {
    let (repo, _, _) = deployed_then_migration(|dir, _, _| {
        let g = code(&run(dir, &["gate", "--wait", "0"]));
        (g, code(&run(dir, &["record", "--outcome", "success"])))
    });
    let dir = repo.path();
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    let out = run(
        dir,
        &[
            "reject",
            "--change",
            "CG-2",
            "--by",
            "bob",
            "--comment",
            "no",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    commit(dir, "app.txt", "v2\n", "PAY-3: bump");
    let doc = json_exiting(&run(dir, &["gate", "--wait", "0", "--format", "json"]), 1);
    assert_eq!(
        rule(&doc, "risk-paths")["reason"],
        "touches sensitive paths: migrations/001_drop.sql",
        "{doc}"
    );
}

#[test]
fn push_payload_paths_never_hide_what_git_sees_in_the_range() {
    let gate = |dir: &Path, event: &Value, after: &str| {
        github_push(
            dir,
            event,
            after,
            &["gate", "--wait", "0", "--format", "json"],
        )
    };
    let (repo, a, _) = deployed_then_migration(|dir, before, after| {
        let event = push_event(before, after, &[".changegate.toml"]);
        let g = code(&gate(dir, &event, after));
        let r = github_push(dir, &event, after, &["record", "--outcome", "success"]);
        (g, code(&r))
    });
    let dir = repo.path();
    let y = commit(dir, "app.txt", &"x\n".repeat(50), "PAY-3: bump");
    // A tag push: no `commits`, a null `before`, only the head commit's files.
    let mut tag = push_event(&"0".repeat(40), &y, &["app.txt"]);
    tag["commits"] = serde_json::json!([]);
    tag["ref"] = "refs/tags/v1.2.0".into();
    // A tag is not the default branch: its config is the default branch's.
    default_branch_is_head(dir, "main");
    let doc = json_exiting(&gate(dir, &tag, &y), 1);
    assert_eq!(
        rule(&doc, "risk-paths")["reason"],
        "touches sensitive paths: migrations/001_drop.sql",
        "{doc}"
    );

    // A payload of the same range (`before` is A, the last deploy) whose list leaves the
    // migration out, while git has the whole range: git's paths stand.
    let doc = json_exiting(&gate(dir, &push_event(&a, &y, &["app.txt"]), &y), 1);
    assert_eq!(
        rule(&doc, "risk-paths")["reason"],
        "touches sensitive paths: migrations/001_drop.sql",
        "{doc}"
    );
}

#[test]
fn gitattributes_cannot_zero_the_size_of_a_change() {
    let repo = repo_with("[policy]\nmin_history = 0\n[risk]\nmax_lines_changed = 100\n");
    let dir = repo.path();
    git(dir, &["add", ".changegate.toml"]);
    git(dir, &["commit", "-q", "-m", "config"]);
    std::fs::write(dir.join(".gitattributes"), "* -diff\n").unwrap();
    let big: String = (0..5000).map(|i| format!("row {i}\n")).collect();
    std::fs::write(dir.join("data.sql"), big).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "PAY-5: seed"]);
    let doc = json_exiting(&run(dir, &["gate", "--wait", "0", "--format", "json"]), 1);
    assert_eq!(
        rule(&doc, "risk-size")["reason"],
        "5001 lines changed > 100",
        "{doc}"
    );
}

#[test]
fn a_blocked_migration_is_in_the_range_of_the_next_gitlab_pipeline() {
    let pipeline = |dir: &Path, before: &str, sha: &str, args: &[&str]| {
        let mut cmd = cg(dir);
        gitlab_ci(&mut cmd, "acme/payments-api", sha)
            .env("CI_COMMIT_BEFORE_SHA", before)
            .env("CI_COMMIT_REF_NAME", "main")
            .args(args)
            .output()
            .expect("changegate runs")
    };
    let gate = ["gate", "--wait", "0", "--format", "json"];
    let (repo, a, x) = deployed_then_migration(|dir, before, after| {
        let g = code(&pipeline(dir, before, after, &gate));
        let r = pipeline(dir, before, after, &["record", "--outcome", "success"]);
        (g, code(&r))
    });
    let dir = repo.path();
    json_exiting(&pipeline(dir, &a, &x, &gate), 1);
    assert_eq!(
        code(&pipeline(dir, &a, &x, &["record", "--outcome", "failure"])),
        0
    );
    let y = commit(dir, "app.txt", "v2\n", "PAY-3: bump");
    let doc = json_exiting(&pipeline(dir, &x, &y, &gate), 1);
    assert_eq!(
        rule(&doc, "risk-paths")["reason"],
        "touches sensitive paths: migrations/001_drop.sql",
        "{doc}"
    );
}

#[test]
fn a_closed_observe_decision_does_not_let_an_enforce_run_pass() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[[freeze]]\nfrom = \"2026-12-21T00:00:00Z\"\nto = \"2027-01-04T00:00:00Z\"\n",
    );
    // Observe mode: needs approval, goes ahead, and the deploy is recorded.
    let before = "2026-12-01T09:00:00Z";
    let out = run_at(dir, before, &["gate", "--mode", "observe", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run_at(dir, before, &["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Enforce: the closed record's observe decision does not stand; decided again, the
    // change needs an approval it cannot get on a closed record.
    let out = run_at(
        dir,
        before,
        &[
            "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
        ],
    );
    let doc = json_exiting(&out, 1);
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
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(message.contains("CG-1 is closed"), "{message}");
    assert!(message.contains("not reopened"), "{message}");

    // During a freeze, the re-decision blocks, and says so in enforce mode.
    let out = run_at(
        dir,
        "2026-12-24T09:00:00Z",
        &[
            "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
        ],
    );
    let doc = json_exiting(&out, 1);
    assert_eq!(
        (doc["mode"].as_str(), doc["decision"].as_str()),
        (Some("enforce"), Some("blocked"))
    );
    // The dry run predicts the same.
    let out = run_at(
        dir,
        "2026-12-24T09:00:00Z",
        &["gate", "--mode", "enforce", "--dry-run", "--format", "json"],
    );
    assert_eq!(json_exiting(&out, 1)["decision"], "blocked");

    // The closed record is left as it was: closed, its observe decision and outcome kept.
    let db = rusqlite::Connection::open(ledger(dir)).unwrap();
    let (state, mode, outcome): (String, String, String) = db
        .query_row(
            "SELECT state, mode, outcome FROM changes WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (state.as_str(), mode.as_str(), outcome.as_str()),
        ("closed", "observe", "success")
    );
    assert_eq!(ledger_rows(dir), 1);
}

#[test]
fn a_dry_run_after_an_observe_run_predicts_the_enforce_run() {
    let repo = git_repo();
    let dir = repo.path();
    // Observe: needs approval, goes ahead (the record is implementing).
    let out = run(dir, &["gate", "--mode", "observe", "--wait", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let out = run(
        dir,
        &["gate", "--mode", "enforce", "--dry-run", "--format", "json"],
    );
    let dry = json_exiting(&out, 1);
    assert_eq!(
        (
            dry["mode"].as_str(),
            dry["decision"].as_str(),
            dry["state"].as_str()
        ),
        (
            Some("enforce"),
            Some("needs-approval"),
            Some("awaiting-approval")
        )
    );
    let out = run(
        dir,
        &[
            "gate", "--mode", "enforce", "--wait", "0", "--format", "json",
        ],
    );
    let real = json_exiting(&out, 1);
    for k in ["mode", "decision", "state"] {
        assert_eq!(dry[k], real[k], "{k}");
    }
}
