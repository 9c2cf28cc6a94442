//! The two pipeline doors, driven the way the platforms drive them.
//!
//! GitHub: the runner starts a container action's entrypoint with no arguments, every
//! input of `action.yml` as `INPUT_<NAME>` (upper-cased, hyphens kept, defaults filled in,
//! empty when not given), the `GITHUB_*` variables, the event payload in a file, and the
//! file-command files for outputs and the job summary, in the workspace directory.
//!
//! GitLab: the component's jobs run `changegate` from their `script:` with the inputs
//! turned into `CHANGEGATE_*` variables and the predefined `CI_*` variables, and pass the
//! outputs on through the `changegate.env` dotenv report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::support;
use crate::support::remote::Remote;

const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
const PUSH_PAYLOAD: &str = "github-webhooks/examples/push/with-new-branch.payload.json";
/// `after` of that payload: the commit the job checked out.
const PUSH_SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

/// Every input `action.yml` declares, with the value the runner gives it when the step's
/// `with:` leaves it out (its default, or empty).
fn runner_defaults() -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("command", "gate".to_string()),
        ("environment", String::new()),
        ("service", String::new()),
        ("backend", String::new()),
        ("config", String::new()),
        ("outcome", String::new()),
        ("wait", String::new()),
        ("mode", String::new()),
        ("dry-run", "false".to_string()),
        ("emergency", String::new()),
        // `${{ github.token }}`, as the runner expands it.
        ("github-token", TOKEN.to_string()),
        ("servicenow-url", String::new()),
        ("jira-url", String::new()),
        ("jira-project", String::new()),
        ("change", String::new()),
        ("by", String::new()),
        ("comment", String::new()),
        ("format", String::new()),
        ("sprint", String::new()),
        ("sprints", String::new()),
        ("output", String::new()),
        ("all", String::new()),
        ("incident", String::new()),
        ("set", String::new()),
    ])
}

/// A stand-in for the GitHub API: it refuses everything (404), so that annotating is a
/// warning and never changes a result here, and it keeps what it was sent. Every request is
/// answered by that mock, so the [`Remote`]'s catch-all only guards against a change here.
struct FakeApi {
    runtime: tokio::runtime::Runtime,
    server: Remote,
}

impl FakeApi {
    fn start() -> FakeApi {
        // A multi-threaded runtime serves the fake while the test thread waits on the binary.
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let server = runtime.block_on(async {
            let server = Remote::start().await;
            wiremock::Mock::given(wiremock::matchers::any())
                .respond_with(
                    wiremock::ResponseTemplate::new(404)
                        .set_body_json(serde_json::json!({"message": "Not Found"})),
                )
                .mount(&server)
                .await;
            server
        });
        FakeApi { runtime, server }
    }

    /// Every request must have carried the `github-token` input as its credential (the
    /// tests set no other token). Once the gate annotates, a push gate sends at least one.
    fn assert_token_used(&self, annotating: bool) {
        let requests = self
            .runtime
            .block_on(self.server.received_requests())
            .unwrap_or_default();
        assert!(
            !annotating || !requests.is_empty(),
            "a step that annotates sent GitHub nothing"
        );
        for request in requests {
            let auth = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                auth.ends_with(TOKEN),
                "{} {} was sent without the github-token input",
                request.method,
                request.url
            );
        }
    }
}

/// A job's surroundings as the runner lays them out for a container action.
struct Runner {
    api: FakeApi,
    /// Mounted at `/github/workspace`: the checkout, and the container's working directory.
    workspace: tempfile::TempDir,
    /// `/github/file_commands` and `/github/workflow` stand-ins.
    files: tempfile::TempDir,
    step: u32,
    /// Set for every step after the runner's own variables (a step's `env:`, an actor).
    env: Vec<(String, String)>,
}

struct Step {
    output: PathBuf,
    summary: PathBuf,
    assert: assert_cmd::assert::Assert,
}

impl Step {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.assert.get_output().stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.assert.get_output().stderr).into_owned()
    }
    fn code(&self) -> Option<i32> {
        self.assert.get_output().status.code()
    }
    /// Fails unless the step exited with `want`, showing what it printed.
    #[track_caller]
    fn expect_code(&self, want: i32) {
        assert_eq!(
            self.code(),
            Some(want),
            "stdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
    }
    /// The step's outputs, parsed as the runner parses `GITHUB_OUTPUT` (both the `name=value`
    /// and the `name<<DELIMITER` forms).
    fn outputs(&self) -> BTreeMap<String, String> {
        parse_github_output(&std::fs::read_to_string(&self.output).expect("output file"))
    }
    fn summary(&self) -> String {
        std::fs::read_to_string(&self.summary).expect("summary file")
    }
}

fn parse_github_output(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            for next in lines.by_ref() {
                if next == delimiter {
                    break;
                }
                value.push(next);
            }
            out.insert(name.to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            out.insert(name.to_string(), value.to_string());
        }
    }
    out
}

impl Runner {
    fn new(config: &str) -> Runner {
        let workspace = support::git_repo();
        std::fs::write(workspace.path().join(".changegate.toml"), config).expect("config");
        let files = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            support::reference(PUSH_PAYLOAD),
            files.path().join("event.json"),
        )
        .expect("payload");
        Runner {
            api: FakeApi::start(),
            workspace,
            files,
            step: 0,
            env: Vec::new(),
        }
    }

    /// Runs one `uses:` step of the action with these `with:` inputs.
    fn step(&mut self, with: &[(&str, &str)]) -> Step {
        self.step += 1;
        // The runner creates a fresh, empty file per step for each file command.
        let output = self.files.path().join(format!("set_output_{}", self.step));
        let summary = self
            .files
            .path()
            .join(format!("step_summary_{}", self.step));
        std::fs::write(&output, "").expect("output file");
        std::fs::write(&summary, "").expect("summary file");

        let mut inputs = runner_defaults();
        for (name, value) in with {
            assert!(
                inputs.contains_key(name),
                "action.yml declares no input {name}"
            );
            inputs.insert(name, value.to_string());
        }
        let ws = self.workspace.path();
        let mut cmd: Command = support::changegate(ws);
        for (name, value) in &inputs {
            cmd.env(format!("INPUT_{}", name.to_uppercase()), value);
        }
        cmd.env("CI", "true")
            .env("GITHUB_ACTIONS", "true")
            .env("HOME", self.files.path())
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_TEMP", self.files.path())
            .env("GITHUB_WORKSPACE", ws)
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_EVENT_PATH", self.files.path().join("event.json"))
            .env("GITHUB_REPOSITORY", "Codertocat/Hello-World")
            .env("GITHUB_REPOSITORY_OWNER", "Codertocat")
            .env("GITHUB_SHA", PUSH_SHA)
            .env("GITHUB_REF", "refs/heads/master")
            .env("GITHUB_REF_NAME", "master")
            .env("GITHUB_REF_TYPE", "branch")
            .env("GITHUB_HEAD_REF", "")
            .env("GITHUB_BASE_REF", "")
            .env("GITHUB_RUN_ID", "9876543210")
            .env("GITHUB_RUN_NUMBER", "42")
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("GITHUB_JOB", "deploy")
            .env("GITHUB_ACTION", "gate")
            .env("GITHUB_ACTOR", "Codertocat")
            .env("GITHUB_WORKFLOW", "deploy")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_API_URL", self.api.server.uri())
            .env(
                "GITHUB_GRAPHQL_URL",
                format!("{}/graphql", self.api.server.uri()),
            )
            .env("GITHUB_OUTPUT", &output)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .env("GITHUB_ENV", self.files.path().join("set_env"))
            .env("GITHUB_PATH", self.files.path().join("add_path"))
            .env("GITHUB_STATE", self.files.path().join("save_state"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Exactly as the runner starts the entrypoint: no arguments at all.
        let assert = cmd.assert();
        // A run that got as far as a decision annotates, unless it is a dry run.
        // A human's decision is written to the ledger only; the next gate run annotates it.
        let annotating = inputs.get("dry-run").map(String::as_str) != Some("true")
            && !matches!(
                inputs["command"].as_str(),
                "approve" | "reject" | "report" | "policy explain" | "policy simulate" | "incident"
            )
            && assert.get_output().status.code() != Some(2);
        self.api.assert_token_used(annotating);
        Step {
            output,
            summary,
            assert,
        }
    }

    fn ledger(&self) -> PathBuf {
        self.workspace.path().join(".changegate/ledger.db")
    }
}

const TRUSTED: &str = r#"
service = "hello-world"
[policy]
min_history = 0
"#;

fn no_token_anywhere(step: &Step) {
    for (what, text) in [
        ("stdout", step.stdout()),
        ("stderr", step.stderr()),
        (
            "outputs",
            std::fs::read_to_string(&step.output).unwrap_or_default(),
        ),
        (
            "summary",
            std::fs::read_to_string(&step.summary).unwrap_or_default(),
        ),
    ] {
        assert!(
            !text.contains(TOKEN),
            "the token leaked into {what}: {text}"
        );
    }
}

#[test]
fn github_container_action_gates_and_records_through_inputs_and_file_commands() {
    let mut runner = Runner::new(TRUSTED);

    let gate = runner.step(&[("command", "gate"), ("environment", "production")]);
    gate.expect_code(0);
    let out = gate.outputs();
    let id = out.get("change-id").cloned().unwrap_or_default();
    assert!(id.starts_with("CG-"), "{out:?}");
    assert_eq!(
        out.get("decision").map(String::as_str),
        Some("pre-approved"),
        "{out:?}"
    );
    assert_eq!(
        out.get("state").map(String::as_str),
        Some("implementing"),
        "{out:?}"
    );
    assert!(out.contains_key("change-url"), "{out:?}");
    assert_eq!(out.get("dry-run").map(String::as_str), Some("false"));
    let summary = gate.summary();
    // Markdown-escaped, as everything rendered into the summary is.
    assert!(
        summary.contains(r"### changegate: hello\-world → production"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("| Change | {} |", id.replace('-', r"\-"))),
        "{summary}"
    );
    assert!(summary.contains("`6113728f27ae`"), "{summary}");
    assert!(
        gate.stdout().contains(&format!("{id}: pre-approved")),
        "{}",
        gate.stdout()
    );
    no_token_anywhere(&gate);

    // `outcome: ${{ job.status }}` after a good deploy.
    let record = runner.step(&[
        ("command", "record"),
        ("environment", "production"),
        ("outcome", "success"),
    ]);
    record.expect_code(0);
    let out = record.outputs();
    assert_eq!(
        out.get("change-id"),
        Some(&id),
        "the record step finds the gate's change: {out:?}"
    );
    assert_eq!(
        out.get("state").map(String::as_str),
        Some("closed"),
        "{out:?}"
    );
    assert!(
        record.summary().contains("| Outcome | success |"),
        "{}",
        record.summary()
    );
    no_token_anywhere(&record);

    // A re-run of the gate step (same commit) finds the same change instead of a new one.
    let again = runner.step(&[("command", "gate")]);
    assert_eq!(again.outputs().get("change-id"), Some(&id));

    // The pipeline's other commands, each with its options as inputs.
    let report = runner.step(&[
        ("command", "report"),
        ("environment", "production"),
        ("sprints", "2"),
    ]);
    report.expect_code(0);
    let summary = report.summary();
    assert!(
        summary.contains(r"### changegate KPIs: hello\-world → production")
            && summary.contains("Last 2 sprints"),
        "report writes the job summary: {summary}"
    );
    no_token_anywhere(&report);

    let html = runner.step(&[
        ("command", "report"),
        ("format", "html"),
        ("output", "kpis.html"),
        ("all", "true"),
    ]);
    html.expect_code(0);
    let page = std::fs::read_to_string(runner.workspace.path().join("kpis.html")).unwrap();
    assert!(
        page.starts_with("<!DOCTYPE html>") || page.contains("<html"),
        "{page}"
    );

    let explain = runner.step(&[("command", "policy explain"), ("environment", "production")]);
    explain.expect_code(0);
    assert!(
        explain.summary().contains("## changegate policy explain")
            && explain.summary().contains("allowance"),
        "{}",
        explain.summary()
    );

    let simulate = runner.step(&[
        ("command", "policy simulate"),
        ("environment", "production"),
        ("set", "policy.allowance.step=3\npolicy.min_history=1"),
    ]);
    simulate.expect_code(0);

    let incident = runner.step(&[
        ("command", "incident"),
        ("change", &id),
        ("incident", "INC-7"),
    ]);
    incident.expect_code(0);
    assert!(incident.stdout().contains("INC-7"), "{}", incident.stdout());
    // Without the incident's id the step is refused before anything is done.
    let refused = runner.step(&[("command", "incident"), ("change", &id)]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("needs the action input `incident`")
    );
}

#[test]
fn github_container_action_blocks_with_exit_1_and_an_error_annotation() {
    // No track record yet: a normal change that needs approval; `wait: 0` returns at once.
    let mut runner = Runner::new("service = \"hello-world\"\n");
    let gate = runner.step(&[("command", "gate"), ("wait", "0")]);
    gate.expect_code(1);
    let out = gate.outputs();
    assert_eq!(
        out.get("decision").map(String::as_str),
        Some("needs-approval"),
        "{out:?}"
    );
    assert_eq!(
        out.get("state").map(String::as_str),
        Some("awaiting-approval"),
        "{out:?}"
    );
    assert!(
        gate.stdout().lines().any(|l| l
            .starts_with("::error::changegate blocked the deploy of hello-world to production")),
        "{}",
        gate.stdout()
    );
    no_token_anywhere(&gate);
}

#[test]
fn github_container_action_dry_run_input_writes_nothing_but_the_outputs() {
    let mut runner = Runner::new(TRUSTED);
    let gate = runner.step(&[("command", "gate"), ("dry-run", "true")]);
    gate.expect_code(0);
    let out = gate.outputs();
    assert_eq!(
        out.get("decision").map(String::as_str),
        Some("pre-approved"),
        "{out:?}"
    );
    assert_eq!(
        out.get("dry-run").map(String::as_str),
        Some("true"),
        "{out:?}"
    );
    assert!(gate.summary().contains("Dry run"), "{}", gate.summary());
    assert!(
        !runner.ledger().exists(),
        "a dry run must not create the ledger"
    );
}

#[test]
fn github_container_action_refuses_bad_inputs_with_exit_2_before_doing_anything() {
    let mut runner = Runner::new(TRUSTED);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("command", "gate; rm -rf /")],
            "unknown command \"gate; rm -rf /\"",
        ),
        (&[("command", "record")], "needs the action input `outcome`"),
        (
            &[("command", "gate"), ("outcome", "success")],
            "applies only to `command: record`",
        ),
        (
            &[("command", "gate"), ("dry-run", "maybe")],
            "must be true or false",
        ),
    ];
    for (with, message) in cases {
        let step = runner.step(with);
        assert_eq!(step.code(), Some(2), "{with:?}: {}", step.stderr());
        assert!(
            step.stderr().contains(message),
            "{with:?}: {}",
            step.stderr()
        );
        assert_eq!(
            std::fs::read_to_string(&step.output).unwrap_or_default(),
            "",
            "{with:?}"
        );
    }
    // Values the CLI itself rejects fail the same way, through clap.
    let step = runner.step(&[("command", "gate"), ("backend", "sharepoint")]);
    assert_eq!(step.code(), Some(2), "{}", step.stderr());
    assert!(step.stderr().contains("sharepoint"), "{}", step.stderr());
    assert!(!runner.ledger().exists(), "nothing was written");
}

#[test]
fn arguments_win_over_inputs() {
    // With arguments the binary is an ordinary CLI, even inside a job that set INPUT_*.
    let repo = support::git_repo();
    let out = support::changegate(repo.path())
        .env("INPUT_COMMAND", "gate; rm -rf /")
        .args(["config", "check"])
        .assert()
        .success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("ok: no config file"));
}

/// The workflows of `examples/github/`, run the way the runner runs their jobs: each job in a
/// workspace of its own, with only what an artifact carries from one job to the next.
mod workflows {
    use super::*;
    use serde_json::Value;

    fn workflow(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/github")
            .join(name);
        support::yaml(&std::fs::read_to_string(path).expect("the example workflow"))
    }

    fn steps<'a>(wf: &'a Value, job: &str) -> &'a Vec<Value> {
        wf["jobs"][job]["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("job {job} has steps"))
    }

    /// The steps of `job` that use `action` (a prefix of `uses:`).
    fn uses<'a>(wf: &'a Value, job: &str, action: &str) -> Vec<&'a Value> {
        steps(wf, job)
            .iter()
            .filter(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
            .collect()
    }

    /// A step's `with:` as the action's inputs; `${{ ... }}` values are given by `resolve`.
    fn with(step: &Value, resolve: &dyn Fn(&str, &str) -> String) -> Vec<(String, String)> {
        step["with"]
            .as_object()
            .expect("with:")
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                let v = if v.contains("${{") { resolve(k, &v) } else { v };
                (k.clone(), v)
            })
            .collect()
    }

    fn step_of(runner: &mut Runner, inputs: &[(String, String)]) -> Step {
        let pairs: Vec<(&str, &str)> = inputs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        runner.step(&pairs)
    }

    #[test]
    fn every_github_example_keeps_the_change_across_jobs() {
        // A job that records, approves or rejects on the embedded ledger must either gate
        // in the same job or download the ledger a job it needs uploaded.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("examples/github") {
            let path = entry.expect("entry").path();
            let wf = support::yaml(&std::fs::read_to_string(&path).expect("read"));
            let name = path.display().to_string();
            for (job, spec) in wf["jobs"].as_object().expect("jobs") {
                let ours = uses(&wf, job, "changegate/changegate@");
                let on_ledger = |s: &&&Value| {
                    matches!(s["with"]["backend"].as_str(), None | Some("local"))
                        && s["env"]["CHANGEGATE_LEDGER"].is_null()
                };
                let gates = ours
                    .iter()
                    .any(|s| matches!(s["with"]["command"].as_str(), None | Some("gate")));
                let after_gate = ours.iter().filter(on_ledger).any(|s| {
                    matches!(
                        s["with"]["command"].as_str(),
                        Some("record" | "approve" | "reject")
                    )
                });
                if !after_gate || gates {
                    continue;
                }
                let download = uses(&wf, job, "actions/download-artifact@");
                let download = download.first().unwrap_or_else(|| {
                    panic!(
                        "{name}: job {job} runs changegate after the gate's job without the ledger"
                    )
                });
                let artifact = download["with"]["name"].as_str().expect("artifact name");
                let needs: Vec<&str> = match &spec["needs"] {
                    Value::String(n) => vec![n.as_str()],
                    Value::Array(ns) => ns.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                let upload = needs
                    .iter()
                    .flat_map(|n| uses(&wf, n, "actions/upload-artifact@"))
                    .find(|u| u["with"]["name"].as_str() == Some(artifact))
                    .unwrap_or_else(|| panic!("{name}: no job {job} needs uploads {artifact}"));
                assert_eq!(
                    upload["with"]["path"].as_str(),
                    Some(".changegate/"),
                    "{name}"
                );
                assert_eq!(
                    upload["with"]["include-hidden-files"], true,
                    "{name}: .changegate is hidden"
                );
                assert_eq!(
                    upload["if"].as_str(),
                    Some("${{ always() }}"),
                    "{name}: a blocked gate's change too"
                );
                assert_eq!(
                    download["with"]["path"].as_str(),
                    Some(".changegate"),
                    "{name}"
                );
                checked += 1;
            }
        }
        assert!(
            checked >= 1,
            "no example hands its ledger on: the check checks nothing"
        );
    }

    #[test]
    fn the_ledger_example_records_in_a_fresh_workspace_what_the_gate_decided() {
        let wf = workflow("deploy-ledger.yml");
        let gate_step = uses(&wf, "gate", "changegate/changegate@")[0];
        let upload = uses(&wf, "gate", "actions/upload-artifact@")[0];
        let download = uses(&wf, "record", "actions/download-artifact@")[0];
        let record_step = uses(&wf, "record", "changegate/changegate@")[0];
        let none = |k: &str, v: &str| -> String { panic!("unexpected expression {k}: {v}") };

        let mut gate_job = Runner::new(TRUSTED);
        let gate = step_of(&mut gate_job, &with(gate_step, &none));
        gate.expect_code(0);
        let id = gate.outputs().get("change-id").cloned().unwrap_or_default();
        assert!(id.starts_with("CG-"), "{:?}", gate.outputs());

        // The deploy succeeded: the expression the example gives `outcome` says so.
        let outcome = |k: &str, v: &str| -> String {
            assert_eq!(k, "outcome");
            assert!(
                v.contains("needs.deploy.result == 'success' && 'success'"),
                "{v}"
            );
            "success".to_string()
        };
        let record_with = with(record_step, &outcome);

        // Without the artifact, a fresh workspace knows nothing of the change: exit 2.
        let mut bare = Runner::new(TRUSTED);
        let lost = step_of(&mut bare, &record_with);
        lost.expect_code(2);
        assert!(
            lost.stderr().contains("no change record"),
            "{}",
            lost.stderr()
        );

        // The artifact: what the upload step's path holds, put where the download says.
        let mut record_job = Runner::new(TRUSTED);
        let from = gate_job
            .workspace
            .path()
            .join(upload["with"]["path"].as_str().unwrap());
        let to = record_job
            .workspace
            .path()
            .join(download["with"]["path"].as_str().unwrap());
        assert!(
            support::copy_tree(&from, &to) >= 1,
            "the gate left no ledger in {}",
            from.display()
        );
        let record = step_of(&mut record_job, &record_with);
        record.expect_code(0);
        let out = record.outputs();
        assert_eq!(out.get("change-id"), Some(&id), "{out:?}");
        assert_eq!(
            out.get("state").map(String::as_str),
            Some("closed"),
            "{out:?}"
        );
    }

    #[test]
    fn the_approve_workflow_decides_a_waiting_change_and_refuses_its_author() {
        let wf = workflow("approve.yml");
        assert!(wf["on"]["workflow_dispatch"]["inputs"]["change"]["required"] == true);
        let step = uses(&wf, "decide", "changegate/changegate@")[0];
        let shared = tempfile::tempdir().expect("tempdir");
        let ledger = shared.path().join("ledger.db").display().to_string();
        assert_eq!(
            step["env"]["CHANGEGATE_LEDGER"].as_str(),
            Some("${{ vars.CHANGEGATE_LEDGER }}")
        );

        // No track record: the change waits for approval; `wait: 0` returns at once.
        let config = "service = \"hello-world\"\n[approval]\nworkflow = \"approve.yml\"\n";
        let mut deploy = Runner::new(config);
        deploy
            .env
            .push(("CHANGEGATE_LEDGER".into(), ledger.clone()));
        let gate = deploy.step(&[("command", "gate"), ("wait", "0")]);
        gate.expect_code(1);
        let id = gate.outputs().get("change-id").cloned().unwrap_or_default();
        // Who may approve, and how: the workflow, with the change.
        let how = format!(
            "anyone but its author @Codertocat <21031067+Codertocat@users.noreply.github.com> may approve {id}: run the workflow approve.yml"
        );
        assert!(gate.stdout().contains(&how), "{}", gate.stdout());
        assert!(
            gate.stdout().contains(&format!(
                "gh workflow run approve.yml -f change={id} -f decision=approve"
            )),
            "{}",
            gate.stdout()
        );
        assert!(
            gate.summary().contains("**To approve:**"),
            "{}",
            gate.summary()
        );

        // Run workflow, by the change's author (the pusher, GITHUB_ACTOR): refused, exit 2.
        let dispatch = |decision: &'static str, comment: &'static str| {
            let id = id.clone();
            move |k: &str, v: &str| -> String {
                match (k, v) {
                    ("command", "${{ inputs.decision }}") => decision.to_string(),
                    ("change", "${{ inputs.change }}") => id.clone(),
                    ("comment", "${{ inputs.comment }}") => comment.to_string(),
                    _ => panic!("unexpected expression {k}: {v}"),
                }
            }
        };
        let mut decide = Runner::new(config);
        decide
            .env
            .push(("CHANGEGATE_LEDGER".into(), ledger.clone()));
        decide
            .env
            .push(("GITHUB_EVENT_NAME".into(), "workflow_dispatch".into()));
        let own = step_of(&mut decide, &with(step, &dispatch("approve", "mine")));
        own.expect_code(2);
        assert!(
            own.stderr()
                .contains(&format!("Codertocat is the author of change {id}")),
            "{}",
            own.stderr()
        );

        // The author re-running someone else's run of the workflow: refused too.
        decide.env.push(("GITHUB_ACTOR".into(), "hubot".into()));
        decide
            .env
            .push(("GITHUB_TRIGGERING_ACTOR".into(), "codertocat".into()));
        let rerun = step_of(&mut decide, &with(step, &dispatch("approve", "mine")));
        rerun.expect_code(2);
        assert!(
            rerun
                .stderr()
                .contains(&format!("codertocat is the author of change {id}")),
            "{}",
            rerun.stderr()
        );

        // Someone else: approved, as the user who ran the workflow.
        decide
            .env
            .push(("GITHUB_TRIGGERING_ACTOR".into(), "hubot".into()));
        let other = step_of(
            &mut decide,
            &with(step, &dispatch("approve", "rollout plan read")),
        );
        other.expect_code(0);
        let out = other.outputs();
        assert_eq!(out.get("change-id"), Some(&id), "{out:?}");
        assert_eq!(
            out.get("state").map(String::as_str),
            Some("approved"),
            "{out:?}"
        );
        assert!(
            other.stdout().contains(&format!("{id}: approved by hubot")),
            "{}",
            other.stdout()
        );

        // The deploy's gate, run again, goes ahead.
        let again = deploy.step(&[("command", "gate"), ("wait", "0")]);
        again.expect_code(0);
        assert_eq!(again.outputs().get("change-id"), Some(&id));
    }
}

/// The GitLab component's jobs, as `gitlab/templates/changegate.yml` writes them.
mod gitlab {
    use super::*;

    fn template() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gitlab/templates/changegate.yml");
        std::fs::read_to_string(path).expect("the component template")
    }

    /// Runs one of the template's script lines in `sh`, as the GitLab runner does, with
    /// the binary on `PATH` and the variables the component and GitLab set.
    fn job(dir: &Path, script: &str, vars: &[(&str, &str)]) -> assert_cmd::assert::Assert {
        assert!(
            template().contains(script),
            "the component no longer runs `{script}`: update this test"
        );
        let bin = assert_cmd::cargo::cargo_bin("changegate");
        let bin_dir = bin.parent().expect("bin dir");
        let mut sh = std::process::Command::new("sh");
        sh.current_dir(dir);
        // As support::changegate: nothing from the machine running the tests leaks in.
        for key in support::machine_ci_vars() {
            sh.env_remove(key);
        }
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        sh.env("PATH", path)
            .env("NO_COLOR", "1")
            .env("CI", "true")
            .env("GITLAB_CI", "true")
            .env("CI_SERVER_URL", "https://gitlab.example.com")
            .env("CI_API_V4_URL", "http://127.0.0.1:9/api/v4")
            .env("CI_PROJECT_DIR", dir)
            .env("CI_PROJECT_PATH", "acme/payments-api")
            .env("CI_PROJECT_NAME", "payments-api")
            .env("CI_PROJECT_ID", "4242")
            .env(
                "CI_PROJECT_URL",
                "https://gitlab.example.com/acme/payments-api",
            )
            .env("CI_COMMIT_SHA", GITLAB_SHA)
            .env(
                "CI_COMMIT_BEFORE_SHA",
                "0000000000000000000000000000000000000000",
            )
            .env("CI_COMMIT_REF_NAME", "main")
            .env("CI_COMMIT_BRANCH", "main")
            .env("CI_COMMIT_TITLE", "PAY-7: retry card declines once")
            .env("CI_DEFAULT_BRANCH", "main")
            .env(
                "CI_PIPELINE_URL",
                "https://gitlab.example.com/acme/payments-api/-/pipelines/1001",
            )
            .env(
                "CI_JOB_URL",
                "https://gitlab.example.com/acme/payments-api/-/jobs/5005",
            )
            .env("GITLAB_USER_LOGIN", "dev");
        for (k, v) in vars {
            sh.env(k, v);
        }
        sh.args(["-c", script]);
        Command::from_std(sh).assert()
    }

    /// Fails unless the job exited with `want`, showing its stderr.
    #[track_caller]
    fn expect_exit(job: &assert_cmd::assert::Assert, want: i32) {
        let out = job.get_output();
        assert_eq!(
            out.status.code(),
            Some(want),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn dotenv(dir: &Path) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(dir.join("changegate.env")).expect("changegate.env");
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What the component's `variables:` turn its inputs into (empty = input not given).
    const COMPONENT_VARS: &[(&str, &str)] = &[
        ("CHANGEGATE_ENVIRONMENT", "production"),
        ("CHANGEGATE_BACKEND", ""),
        ("CHANGEGATE_MODE", ""),
        ("CHANGEGATE_SERVICE", ""),
        ("CHANGEGATE_CONFIG", ""),
        ("CHANGEGATE_WAIT", ""),
        ("CI_ENVIRONMENT_NAME", "production"),
    ];
    const GITLAB_SHA: &str = "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327";
    const GATE: &str = r#"changegate gate ${CHANGEGATE_WAIT:+--wait "$CHANGEGATE_WAIT"} ${CHANGEGATE_EMERGENCY:+--emergency "$CHANGEGATE_EMERGENCY"}"#;
    const RECORD_SUCCESS: &str = "changegate record --outcome success";
    const RECORD_FAILURE: &str = "changegate record --outcome failure";

    /// The component's jobs as GitLab creates them: every `$[[ inputs.X ]]` replaced by the
    /// input's default (`deploy_job`, which has none, by `deploy`).
    fn rendered_jobs() -> serde_json::Value {
        let text = template();
        let (spec, jobs) = text.split_once("\n---\n").expect("spec header --- jobs");
        let spec = support::yaml(spec);
        let mut jobs = jobs.to_string();
        for (name, meta) in spec["spec"]["inputs"].as_object().expect("inputs") {
            let value = meta["default"].as_str().unwrap_or("deploy");
            jobs = jobs.replace(&format!("$[[ inputs.{name} ]]"), value);
        }
        assert!(!jobs.contains("$[["), "an input is left: {jobs}");
        support::yaml(&jobs)
    }

    fn script(jobs: &serde_json::Value, job: &str) -> String {
        let lines = jobs[job]["script"].as_array().expect("script");
        assert_eq!(lines.len(), 1, "{job}");
        lines[0].as_str().expect("a line").to_string()
    }

    /// A new workspace for a job: the repository cloned at the pipeline's commit, nothing
    /// of an earlier job's files but what `artifacts_of`'s `artifacts: paths` declare.
    fn fresh_workspace(
        origin: &Path,
        jobs: &serde_json::Value,
        artifacts_of: Option<&str>,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        support::git(
            dir.path(),
            &["clone", "-q", &origin.display().to_string(), "."],
        );
        if let Some(job) = artifacts_of {
            let artifacts = &jobs[job]["artifacts"];
            assert_eq!(artifacts["when"], "always", "{job}: a failed job's too");
            for path in artifacts["paths"].as_array().expect("artifacts: paths") {
                let path = path.as_str().expect("a path");
                support::copy_tree(&origin.join(path), &dir.path().join(path));
            }
        }
        dir
    }

    /// A repository whose committed config is `config`, as GitLab clones it for each job.
    fn project(config: &str) -> tempfile::TempDir {
        let repo = support::git_repo();
        std::fs::write(repo.path().join(".changegate.toml"), config).expect("config");
        support::git(repo.path(), &["add", ".changegate.toml"]);
        support::git(repo.path(), &["commit", "-q", "-m", "changegate config"]);
        repo
    }

    const AUTHOR: (&str, &str) = ("CI_COMMIT_AUTHOR", "Dev One <dev@example.com>");

    #[test]
    fn component_record_job_finds_the_gates_change_in_a_fresh_workspace() {
        let jobs = rendered_jobs();
        let needs = jobs["changegate-record-success"]["needs"].to_string();
        assert!(
            needs.contains(r#"{"artifacts":true,"job":"changegate-gate"}"#),
            "{needs}"
        );
        let gate_dir = project(TRUSTED);
        let gate = job(
            gate_dir.path(),
            &script(&jobs, "changegate-gate"),
            COMPONENT_VARS,
        );
        expect_exit(&gate, 0);
        let env = dotenv(gate_dir.path());
        let id = env["CHANGEGATE_CHANGE_ID"].clone();
        let mut vars = COMPONENT_VARS.to_vec();
        vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let record_script = script(&jobs, "changegate-record-success");

        // What GitLab did before the gate passed its ledger on: the change is lost.
        let bare = fresh_workspace(gate_dir.path(), &jobs, None);
        let lost = job(bare.path(), &record_script, &vars);
        expect_exit(&lost, 2);
        assert!(
            String::from_utf8_lossy(&lost.get_output().stderr).contains("no change record"),
            "{:?}",
            lost.get_output()
        );

        let record_dir = fresh_workspace(gate_dir.path(), &jobs, Some("changegate-gate"));
        let record = job(record_dir.path(), &record_script, &vars);
        expect_exit(&record, 0);
        let after = dotenv(record_dir.path());
        assert_eq!(after.get("CHANGEGATE_CHANGE_ID"), Some(&id), "{after:?}");
        assert_eq!(
            after.get("CHANGEGATE_STATE").map(String::as_str),
            Some("closed"),
            "{after:?}"
        );
        // The record job passes the ledger on in turn, with the outcome in it.
        assert_eq!(
            jobs["changegate-record-success"]["artifacts"]["paths"],
            jobs["changegate-gate"]["artifacts"]["paths"]
        );
    }

    #[test]
    fn component_blocked_gate_hands_its_change_to_the_failure_record_job() {
        let jobs = rendered_jobs();
        let gate_dir = project("service = \"payments-api\"\n");
        let mut vars = COMPONENT_VARS.to_vec();
        vars.retain(|(k, _)| *k != "CHANGEGATE_WAIT");
        vars.push(("CHANGEGATE_WAIT", "0"));
        let gate = job(gate_dir.path(), &script(&jobs, "changegate-gate"), &vars);
        expect_exit(&gate, 1);
        let env = dotenv(gate_dir.path());
        vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let record_dir = fresh_workspace(gate_dir.path(), &jobs, Some("changegate-gate"));
        let record = job(
            record_dir.path(),
            &script(&jobs, "changegate-record-failure"),
            &vars,
        );
        expect_exit(&record, 0);
        assert_eq!(
            dotenv(record_dir.path()).get("CHANGEGATE_CHANGE_ID"),
            env.get("CHANGEGATE_CHANGE_ID")
        );
    }

    /// The first-run job seeds the ledger from the project's GitLab deployment history: by
    /// hand, whenever (no `needs`), never with an ITSM backend; run again, it adds nothing.
    #[test]
    fn component_import_history_job_seeds_the_ledger_from_gitlab() {
        let jobs = rendered_jobs();
        let j = &jobs["changegate-import-history"];
        assert_eq!(j["needs"], serde_json::json!([]));
        assert_eq!(j["rules"][1]["when"], "manual");
        assert!(
            j["rules"][0]["if"]
                .as_str()
                .unwrap()
                .contains("servicenow|jira")
        );
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let remote = rt.block_on(Remote::start());
        let history = crate::import::gitlab_successes(3, "production");
        rt.block_on(crate::import::fake_gitlab(
            &remote,
            std::sync::Arc::new(std::sync::Mutex::new(history)),
        ));
        let api = format!("{}/api/v4", remote.uri());
        let dir = project(TRUSTED);
        let mut vars = COMPONENT_VARS.to_vec();
        vars.push(("CI_API_V4_URL", &api));
        vars.push(("CHANGEGATE_GITLAB_TOKEN", crate::import::GL_TOKEN));
        vars.push(("CHANGEGATE_SINCE", ""));
        let import_script = script(&jobs, "changegate-import-history");
        for want in [
            "imported 3 deployments in 1 requests",
            "imported 0 deployments in 1 requests",
        ] {
            let run = job(dir.path(), &import_script, &vars);
            expect_exit(&run, 0);
            let out = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
            assert!(out.contains(want), "{out}");
        }
        rt.block_on(remote.verify());
    }

    #[test]
    fn component_day2_jobs_verify_report_explain_and_link_incidents_on_the_ledger() {
        let jobs = rendered_jobs();
        // Every day-2 job extends one hidden job: no `needs`, after the deploy.
        let day2 = &jobs[".changegate-day2"];
        assert_eq!(day2["needs"], serde_json::json!([]));
        assert_eq!(day2["stage"], ".post");
        for name in [
            "changegate-verify",
            "changegate-report",
            "changegate-explain",
            "changegate-simulate",
            "changegate-status",
            "changegate-incident",
        ] {
            assert_eq!(jobs[name]["extends"], ".changegate-day2", "{name}");
        }
        // verify and report also run on a schedule; the incident job only on a ledger.
        assert!(
            day2["rules"][0]["if"]
                .as_str()
                .unwrap()
                .contains("schedule")
        );
        assert!(jobs["changegate-verify"]["rules"].is_null());
        assert!(
            jobs["changegate-incident"]["rules"][0]["if"]
                .as_str()
                .unwrap()
                .contains("servicenow|jira")
        );
        // One workspace stands for a ledger the jobs share (a persistent runner's).
        let dir = project(TRUSTED);
        let mut vars = COMPONENT_VARS.to_vec();
        vars.push(AUTHOR);
        vars.push(("CHANGEGATE_REPORT_SPRINTS", "3"));
        expect_exit(&job(dir.path(), GATE, &vars), 0);
        expect_exit(&job(dir.path(), RECORD_SUCCESS, &vars), 0);
        let id = {
            let status = job(dir.path(), &script(&jobs, "changegate-status"), &vars);
            expect_exit(&status, 0);
            let out = String::from_utf8_lossy(&status.get_output().stdout).into_owned();
            out.split_whitespace()
                .find(|w| w.starts_with("CG-"))
                .map(|w| w.trim_end_matches(':').to_string())
                .unwrap_or_else(|| panic!("no change in: {out}"))
        };
        let mut with_incident = vars.clone();
        with_incident.push(("CHANGEGATE_CHANGE", &id));
        with_incident.push(("CHANGEGATE_INCIDENT", "INC-9"));
        expect_exit(
            &job(
                dir.path(),
                &script(&jobs, "changegate-incident"),
                &with_incident,
            ),
            0,
        );
        expect_exit(
            &job(dir.path(), &script(&jobs, "changegate-verify"), &vars),
            0,
        );
        expect_exit(
            &job(dir.path(), &script(&jobs, "changegate-explain"), &vars),
            0,
        );
        let mut with_set = vars.clone();
        with_set.push(("CHANGEGATE_SET", "policy.allowance.step=3"));
        expect_exit(
            &job(dir.path(), &script(&jobs, "changegate-simulate"), &with_set),
            0,
        );
        for line in jobs["changegate-report"]["script"].as_array().unwrap() {
            expect_exit(&job(dir.path(), line.as_str().unwrap(), &vars), 0);
        }
        let md = std::fs::read_to_string(dir.path().join("changegate-report.md")).unwrap();
        assert!(md.contains("Last 3 sprints"), "{md}");
        let html = std::fs::read_to_string(dir.path().join("changegate-report.html")).unwrap();
        assert!(
            html.contains("<svg") || html.contains("<html"),
            "an HTML page"
        );
        let artifacts = &jobs["changegate-report"]["artifacts"]["paths"];
        assert_eq!(
            artifacts,
            &serde_json::json!(["changegate-report.md", "changegate-report.html"])
        );
    }

    #[test]
    fn component_manual_jobs_approve_on_a_shared_ledger_and_refuse_the_author() {
        let jobs = rendered_jobs();
        for name in ["changegate-approve", "changegate-reject"] {
            let j = &jobs[name];
            assert_eq!(
                j["needs"],
                serde_json::json!([]),
                "{name} runs while the gate waits"
            );
            let rules = j["rules"].as_array().expect("rules");
            assert_eq!(rules.last().expect("a rule")["when"], "manual", "{name}");
        }
        // A ledger every job sees (a persistent runner's disk).
        let shared = tempfile::tempdir().expect("tempdir");
        let ledger = shared.path().join("ledger.db").display().to_string();
        let gate_dir = project("service = \"payments-api\"\n");
        let mut vars = COMPONENT_VARS.to_vec();
        vars.retain(|(k, _)| *k != "CHANGEGATE_WAIT");
        vars.extend([
            ("CHANGEGATE_WAIT", "0"),
            ("CHANGEGATE_LEDGER", ledger.as_str()),
            ("CHANGEGATE_JOB_PREFIX", "changegate"),
            AUTHOR,
        ]);
        let gate = job(gate_dir.path(), &script(&jobs, "changegate-gate"), &vars);
        expect_exit(&gate, 1);
        let stdout = String::from_utf8_lossy(&gate.get_output().stdout).into_owned();
        assert!(
            stdout.contains(
                "to approve: anyone but its author dev@example.com may approve CG-1: run the manual job changegate-approve of pipeline https://gitlab.example.com/acme/payments-api/-/pipelines/1001 (or changegate-reject)"
            ),
            "{stdout}"
        );

        // The author runs the approve job: refused (exit 2), and the change still waits.
        let approve = script(&jobs, "changegate-approve");
        let approver_dir = fresh_workspace(gate_dir.path(), &jobs, None);
        let mut own = vars.clone();
        own.extend([
            ("GITLAB_USER_LOGIN", "dev1"),
            ("GITLAB_USER_EMAIL", "dev@example.com"),
        ]);
        let refused = job(approver_dir.path(), &approve, &own);
        expect_exit(&refused, 2);
        let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
        assert!(
            stderr.contains("dev@example.com is the author of change CG-1 (dev@example.com)"),
            "{stderr}"
        );
        expect_exit(
            &job(gate_dir.path(), &script(&jobs, "changegate-gate"), &vars),
            1,
        );

        // Someone else, with a comment given as a variable when running the job.
        let mut other = vars.clone();
        other.extend([
            ("GITLAB_USER_LOGIN", "alice"),
            ("GITLAB_USER_EMAIL", "alice@example.com"),
            ("CHANGEGATE_COMMENT", "read the plan; $(touch pwned)"),
        ]);
        let approved = job(approver_dir.path(), &approve, &other);
        expect_exit(&approved, 0);
        assert!(!approver_dir.path().join("pwned").exists());
        let out = String::from_utf8_lossy(&approved.get_output().stdout).into_owned();
        assert!(out.contains("CG-1: approved by alice"), "{out}");
        expect_exit(
            &job(gate_dir.path(), &script(&jobs, "changegate-gate"), &vars),
            0,
        );
    }

    #[test]
    fn component_jobs_pass_outputs_on_through_the_dotenv_report() {
        let repo = support::git_repo();
        std::fs::write(repo.path().join(".changegate.toml"), TRUSTED).expect("config");
        let dir = repo.path();

        let gate = job(dir, GATE, COMPONENT_VARS);
        expect_exit(&gate, 0);
        let env = dotenv(dir);
        let id = env.get("CHANGEGATE_CHANGE_ID").cloned().unwrap_or_default();
        assert!(id.starts_with("CG-"), "{env:?}");
        assert_eq!(
            env.get("CHANGEGATE_DECISION").map(String::as_str),
            Some("pre-approved"),
            "{env:?}"
        );
        assert_eq!(
            env.get("CHANGEGATE_STATE").map(String::as_str),
            Some("implementing"),
            "{env:?}"
        );
        assert!(env.contains_key("CHANGEGATE_CHANGE_URL"), "{env:?}");

        // The record job after a successful deploy gets the gate's dotenv as variables.
        let mut vars = COMPONENT_VARS.to_vec();
        vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let record = job(dir, RECORD_SUCCESS, &vars);
        expect_exit(&record, 0);
        let after = dotenv(dir);
        assert_eq!(after.get("CHANGEGATE_CHANGE_ID"), Some(&id), "{after:?}");
        assert_eq!(
            after.get("CHANGEGATE_STATE").map(String::as_str),
            Some("closed"),
            "{after:?}"
        );
    }

    #[test]
    fn component_gate_blocks_with_exit_1_and_still_writes_the_dotenv() {
        let repo = support::git_repo();
        let dir = repo.path();
        let mut vars = COMPONENT_VARS.to_vec();
        vars.retain(|(k, _)| *k != "CHANGEGATE_WAIT");
        vars.push(("CHANGEGATE_WAIT", "0"));
        let gate = job(dir, GATE, &vars);
        expect_exit(&gate, 1);
        let env = dotenv(dir);
        assert_eq!(
            env.get("CHANGEGATE_DECISION").map(String::as_str),
            Some("needs-approval"),
            "{env:?}"
        );

        // The deploy never ran; the failure record job still closes the books.
        let record = job(dir, RECORD_FAILURE, &vars);
        expect_exit(&record, 0);
    }

    #[test]
    fn component_inputs_left_empty_leave_the_config_file_in_charge() {
        // The component sets CHANGEGATE_MODE="" and CHANGEGATE_BACKEND="" when those inputs
        // are not given: the file's observe mode must stand, so the gate does not block.
        let repo = support::git_repo();
        let dir = repo.path();
        std::fs::write(dir.join(".changegate.toml"), "mode = \"observe\"\n").expect("config");
        let mut vars = COMPONENT_VARS.to_vec();
        vars.push(("CHANGEGATE_WAIT", "0"));
        let gate = job(dir, GATE, &vars);
        expect_exit(&gate, 0);
        let out = gate.get_output();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("[observe mode]"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            dotenv(dir).get("CHANGEGATE_DECISION").map(String::as_str),
            Some("needs-approval")
        );
    }

    #[test]
    fn component_emergency_variable_reaches_the_gate_as_one_argument() {
        let repo = support::git_repo();
        let dir = repo.path();
        let reason = "INC0012345 checkout down; $(touch pwned) `touch pwned`";
        let mut vars = COMPONENT_VARS.to_vec();
        vars.push(("CHANGEGATE_WAIT", "0"));
        // Set when a pipeline is run by hand with this variable; shell syntax in it stays text.
        vars.push(("CHANGEGATE_EMERGENCY", reason));
        let gate = job(dir, GATE, &vars);
        expect_exit(&gate, 0);
        assert!(!dir.join("pwned").exists());
        assert_eq!(
            dotenv(dir).get("CHANGEGATE_DECISION").map(String::as_str),
            Some("pre-approved")
        );

        let status = support::gitlab_ci(
            &mut support::changegate(dir),
            "acme/payments-api",
            GITLAB_SHA,
        )
        .env("CI_ENVIRONMENT_NAME", "production")
        .args(["status", "--format", "json"])
        .assert()
        .success();
        let doc = support::json_doc(&status.get_output().stdout);
        assert_eq!(doc["emergency"], reason, "{doc}");
    }
}
