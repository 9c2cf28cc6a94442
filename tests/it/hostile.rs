//! Hostile input: configs, event payloads, ledger paths and file names built to break the
//! gate. Each ends with exit 2 and one clear line on stderr, or a sound decision; never a
//! panic, never a workflow command that is not changegate's own.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::support::{changegate, git, git_repo};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exited by itself with one of the documented codes, and printed no panic.
fn assert_no_panic(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{what}: {:?}\n{err}",
        out.status
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
}

/// Exit 2 and exactly one line on stderr, `error: …` naming `needle`, with no control
/// character in it.
fn assert_one_line_error(out: &Output, needle: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {err}");
    assert!(lines[0].starts_with("error: "), "{what}: {err}");
    assert!(lines[0].contains(needle), "{what}: no {needle:?} in {err}");
    assert!(
        !lines[0].chars().any(char::is_control),
        "{what}: control character in {err:?}"
    );
}

/// Configs each of which must be refused with the key it names, by `config check` and by
/// `gate` alike, before anything is written.
fn hostile_configs() -> Vec<(Vec<u8>, &'static str)> {
    let deep = 100_000;
    let mut cases: Vec<(Vec<u8>, &'static str)> = [
        ("[policy]\nwindow = \"twenty\"\n", "window"),
        ("[policy]\nwindow = -1\n", "window"),
        ("[policy]\nwindow = 0\n", "policy.window"),
        ("[policy]\nmin_history = 99999999999\n", "min_history"),
        ("[policy]\nmin_success_rate = nan\n", "min_success_rate"),
        ("[policy]\nmin_success_rate = inf\n", "min_success_rate"),
        ("[policy]\nmin_success_rate = -0.1\n", "min_success_rate"),
        ("[policy]\nmin_success_rate = 1.01\n", "min_success_rate"),
        ("[policy.allowance]\nbackoff = nan\n", "policy.allowance.backoff"),
        ("[policy.allowance]\nbackoff = 2.0\n", "policy.allowance.backoff"),
        (
            "[policy.allowance]\nlookback_sprints = 10000000\n",
            "policy.allowance.lookback_sprints",
        ),
        ("[policy.allowance]\nfloor = 5\nmax = 3\n", "floor"),
        ("[policy.allowance]\ninitial = -3\n", "initial"),
        ("[policy.allowance]\nstep = 18446744073709551616\n", "step"),
        ("[sprint]\nlength_days = 4294967295\n", "sprint.length_days"),
        ("[sprint]\nlength_days = 0\n", "sprint.length_days"),
        ("[sprint]\nlength_days = 1.5\n", "length_days"),
        ("[sprint]\nstart = \"2026-02-30\"\n", "start"),
        ("[sprint]\nstart = \"yesterday\"\n", "start"),
        ("[verify]\nwindow = \"500000000years\"\n", "verify.window"),
        ("[verify]\nwindow = \"soon\"\n", "window"),
        ("[approval]\ntimeout = \"500000000years\"\n", "approval.timeout"),
        ("[approval]\npoll = \"0s\"\n", "approval.poll"),
        ("[approval]\npoll = 30\n", "poll"),
        ("[risk]\nmax_lines_changed = -1\n", "max_lines_changed"),
        ("[risk]\nsensitive_paths = [\"[unclosed\"]\n", "sensitive_paths"),
        ("[risk]\nsensitive_paths = \"migrations/**\"\n", "sensitive_paths"),
        (
            "[[freeze]]\nfrom = \"2026-02-02T00:00:00Z\"\nto = \"2026-02-01T00:00:00Z\"\n",
            "freeze.to",
        ),
        (
            "[[freeze]]\nfrom = \"not a date\"\nto = \"2026-02-01T00:00:00Z\"\n",
            "from",
        ),
        ("[[freeze]]\nto = \"2026-02-01T00:00:00Z\"\n", "from"),
        (
            "[[freeze]]\nfrom = \"2026-01-01T00:00:00Z\"\nto = \"2026-02-01T00:00:00Z\"\nenvironments = \"prod\"\n",
            "environments",
        ),
        ("[polcy]\nwindow = 3\n", "polcy"),
        ("service = \"a\"\nservice = \"b\"\n", "service"),
        ("[policy]\nwindow = 3\n[policy]\nmin_history = 1\n", "policy"),
        ("service = \"a\0b\"\n", "service"),
        ("[policy]\nwind\0ow = 3\n", "wind"),
        ("\"\u{1b}[2J\" = 1\n", "line 1"),
        ("\"\\u001b[2J\" = 1\n", "unknown field"),
        ("mode = \"yolo\"\n", "mode"),
        ("environment = \"prod:eu\"\n", "environment"),
        ("[backend]\nkind = \"oracle\"\n", "kind"),
        ("[servicenow.fields]\nstate = \"x\"\n", "servicenow.fields.state"),
        ("[servicenow]\nclose_code_success = \" \"\n", "close_code_success"),
        ("[jira.fields]\nchange_typ = \"x\"\n", "change_typ"),
        ("[annotate]\nenabled = \"yes\"\n", "enabled"),
        ("[policy\nwindow = 3\n", "line 1"),
        ("policy = 3\n", "policy"),
    ]
    .into_iter()
    .map(|(text, key)| (text.as_bytes().to_vec(), key))
    .collect();
    cases.push((
        format!("service = \"{}\"\n", "s".repeat(1_000_000)).into_bytes(),
        "service",
    ));
    cases.push((
        format!(
            "[jira.extra_fields]\ncustomfield_1 = {}{}\n",
            "[".repeat(deep),
            "]".repeat(deep)
        )
        .into_bytes(),
        "line 2",
    ));
    cases.push((b"service = \"\xff\xfe\"\n".to_vec(), "hostile.toml"));
    cases
}

#[test]
fn hostile_configs_are_exit_2_with_one_line_naming_the_key() {
    let repo = git_repo();
    let dir = repo.path();
    let file = dir.join("hostile.toml");
    let cases = hostile_configs();
    assert!(cases.len() >= 37);
    for (text, key) in cases {
        std::fs::write(&file, &text).unwrap();
        let what = String::from_utf8_lossy(&text)
            .chars()
            .take(80)
            .collect::<String>();
        for args in [
            &["config", "check"][..],
            &["gate", "--wait", "0", "--dry-run"][..],
        ] {
            let out = changegate(dir)
                .args(args)
                .arg("--config")
                .arg(&file)
                .output()
                .unwrap();
            assert_one_line_error(&out, key, &format!("{args:?} {what:?}"));
            assert!(out.stdout.is_empty(), "{what:?}");
        }
    }
    assert!(
        !dir.join(".changegate/ledger.db").exists(),
        "a refused config wrote a ledger"
    );
}

/// The values the issue found passing `config check` and then panicking in `gate`,
/// `report` and `verify` are refused by every command, before any arithmetic on them.
#[test]
fn values_that_used_to_panic_are_refused_by_every_command() {
    let repo = git_repo();
    let dir = repo.path();
    for (text, key) in [
        (
            "[policy.allowance]\nlookback_sprints = 10000000\n",
            "policy.allowance.lookback_sprints",
        ),
        ("[sprint]\nlength_days = 4294967295\n", "sprint.length_days"),
        ("[verify]\nwindow = \"500000000years\"\n", "verify.window"),
    ] {
        std::fs::write(dir.join(".changegate.toml"), text).unwrap();
        for args in [
            &["gate", "--wait", "0", "--dry-run"][..],
            &["report"],
            &["verify", "--dry-run"],
            &["policy", "explain"],
        ] {
            let out = changegate(dir).args(args).output().unwrap();
            assert_one_line_error(&out, key, &format!("{args:?} {text:?}"));
        }
    }
}

/// `config check` finds what `gate` would find before its first call: a missing URL,
/// project or credential, named; exit 2 in both.
#[test]
fn config_check_finds_every_error_gate_would_find() {
    let repo = git_repo();
    let dir = repo.path();
    let jira = [
        ("CHANGEGATE_JIRA_URL", "https://example.atlassian.net"),
        ("CHANGEGATE_JIRA_PROJECT", "CHG"),
        ("CHANGEGATE_JIRA_USER", "svc@example.com"),
        ("CHANGEGATE_JIRA_TOKEN", "jira-token"),
    ];
    let servicenow = [
        (
            "CHANGEGATE_SERVICENOW_URL",
            "https://example.service-now.com",
        ),
        ("CHANGEGATE_SERVICENOW_USER", "svc"),
        ("CHANGEGATE_SERVICENOW_PASSWORD", "pw"),
    ];
    // (backend, the variables set, the one missing that the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("jira", jira[1..].to_vec(), "CHANGEGATE_JIRA_URL"),
        (
            "jira",
            [&jira[..1], &jira[2..]].concat(),
            "CHANGEGATE_JIRA_PROJECT",
        ),
        (
            "jira",
            [&jira[..2], &jira[3..]].concat(),
            "CHANGEGATE_JIRA_USER",
        ),
        ("jira", jira[..3].to_vec(), "CHANGEGATE_JIRA_TOKEN"),
        (
            "servicenow",
            servicenow[1..].to_vec(),
            "CHANGEGATE_SERVICENOW_URL",
        ),
        (
            "servicenow",
            servicenow[..2].to_vec(),
            "CHANGEGATE_SERVICENOW_PASSWORD",
        ),
        (
            "servicenow",
            vec![servicenow[0], ("CHANGEGATE_SERVICENOW_CLIENT_ID", "client")],
            "CHANGEGATE_SERVICENOW_CLIENT_SECRET",
        ),
        (
            "servicenow",
            servicenow[..1].to_vec(),
            "CHANGEGATE_SERVICENOW_TOKEN",
        ),
    ];
    for (backend, vars, missing) in cases {
        for args in [
            &["config", "check"][..],
            &["gate", "--wait", "0", "--dry-run"][..],
        ] {
            let out = changegate(dir)
                .args(["--backend", backend])
                .args(args)
                .envs(vars.iter().copied())
                .output()
                .unwrap();
            assert_one_line_error(&out, missing, &format!("{backend} {args:?}"));
        }
    }
    // With everything set, config check is content (and makes no call: the hosts above
    // do not resolve here).
    for (backend, vars) in [("jira", jira.to_vec()), ("servicenow", servicenow.to_vec())] {
        let out = changegate(dir)
            .args(["--backend", backend, "config", "check"])
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", stderr(&out));
    }
}

/// `CHANGEGATE_LEDGER` at a directory, a device, or under a regular file: exit 2 with a
/// line that names the ledger, from `config check` as from `gate`.
#[test]
fn a_ledger_path_that_cannot_be_a_ledger_is_exit_2() {
    let repo = git_repo();
    let dir = repo.path();
    std::fs::create_dir(dir.join("a-dir")).unwrap();
    std::fs::write(dir.join("a-file"), "x").unwrap();
    for (ledger, checked_up_front) in [
        (dir.join("a-dir"), true),
        (Path::new("/dev/null").to_path_buf(), true),
        (dir.join("a-file/ledger.db"), false),
    ] {
        let mut runs = vec![&["gate", "--wait", "0"][..]];
        if checked_up_front {
            // A dry run of a ledger that does not exist yet decides on no history; these
            // paths exist and are refused before anything is read.
            runs.push(&["gate", "--wait", "0", "--dry-run"][..]);
            runs.push(&["config", "check"][..]);
        }
        for args in runs {
            let out = changegate(dir)
                .env("CHANGEGATE_LEDGER", &ledger)
                .args(args)
                .output()
                .unwrap();
            assert_one_line_error(&out, "ledger", &format!("{} {args:?}", ledger.display()));
        }
    }
    assert_eq!(std::fs::read_to_string(dir.join("a-file")).unwrap(), "x");
}

/// GITHUB_EVENT_PATH pointing at what no runner writes: exit 2 or a sound decision, never
/// a panic.
#[test]
fn hostile_event_payloads_never_panic() {
    let repo = git_repo();
    let dir = repo.path();
    let sha = git(dir, &["rev-parse", "HEAD"]);
    let payloads: Vec<String> = vec![
        String::new(),
        "{".into(),
        "{\"pull_request\": {\"number\": 1, \"title\": \"x\"".into(),
        "null".into(),
        "[]".into(),
        "\"a string\"".into(),
        "{}".into(),
        "{\"pull_request\": \"x\"}".into(),
        "{\"pull_request\": null}".into(),
        "{\"pull_request\": {}}".into(),
        "{\"pull_request\": {\"number\": \"abc\"}}".into(),
        "{\"pull_request\": {\"number\": -1}}".into(),
        "{\"pull_request\": {\"number\": 1e400}}".into(),
        "{\"pull_request\": {\"number\": 99999999999999999999999999}}".into(),
        "{\"pull_request\": {\"number\": 1, \"labels\": \"emergency\"}}".into(),
        "{\"pull_request\": {\"number\": 1, \"labels\": [{\"name\": 7}]}}".into(),
        "{\"pull_request\": {\"number\": 1, \"base\": {\"sha\": \"nope\"}, \"head\": {\"sha\": \"../../etc\"}}}".into(),
        "{\"before\": \"0000000000000000000000000000000000000000\", \"after\": 5}".into(),
        "{\"before\": \"--upload-pack=touch /tmp/pwned\"}".into(),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!(
            "{{\"pull_request\": {{\"number\": 1, \"title\": \"{}\"}}}}",
            "t".repeat(1_000_000)
        ),
        "{\"pull_request\": {\"number\": 1, \"title\": \"a\\u0000b\\n::set-output name=decision::pre-approved\"}}".into(),
        "\u{0}\u{1}\u{2}".into(),
        "{\"pull_request\": {\"number\": 1}, \"pull_request\": {\"number\": 2}}".into(),
    ];
    let event = dir.join("event.json");
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let path = dir.join(format!("event-{i}.json"));
        std::fs::write(&path, payload).unwrap();
        paths.push(path);
    }
    std::fs::create_dir(dir.join("event-dir")).unwrap();
    paths.push(dir.join("event-dir"));
    paths.push(dir.join("no-such-event.json"));
    assert!(paths.len() >= 26);
    for path in &paths {
        for event_name in ["pull_request", "push"] {
            let out = changegate(dir)
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_EVENT_NAME", event_name)
                .env("GITHUB_EVENT_PATH", path)
                .env("GITHUB_REPOSITORY", "acme/api")
                .env("GITHUB_SHA", &sha)
                .args(["gate", "--wait", "0", "--dry-run", "--format", "json"])
                .output()
                .unwrap();
            let what = format!("{event_name} {}", path.display());
            assert_no_panic(&out, &what);
            if out.status.code() == Some(2) {
                assert!(stderr(&out).contains("error: "), "{what}");
            } else {
                // A decision: stdout is the one JSON document.
                let doc: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(doc["decision"].is_string(), "{what}: {doc}");
            }
        }
    }
    assert!(!Path::new("/tmp/pwned").exists());
    let _ = event;
}

/// What the Actions runner would execute of a step's stdout or stderr: every line that,
/// trimmed, starts with `::`, outside `::stop-commands::<token>` … `::<token>::` blocks.
fn workflow_commands(stream: &str) -> Vec<String> {
    let mut run = Vec::new();
    let mut stopped: Option<String> = None;
    for line in stream.split(['\n', '\r']) {
        let line = line.trim_start();
        if let Some(token) = &stopped {
            if line.trim_end() == format!("::{token}::") {
                stopped = None;
            }
            continue;
        }
        if let Some(token) = line.strip_prefix("::stop-commands::") {
            stopped = Some(token.trim_end().to_string());
            continue;
        }
        if line.starts_with("::") {
            run.push(line.to_string());
        }
    }
    run
}

/// A file named as in the issue, in a GitHub Actions run: the runner executes none of the
/// lines it carries, in any output format, at any log level.
#[test]
fn a_file_name_cannot_inject_workflow_commands() {
    let repo = git_repo();
    let dir = repo.path();
    let before = git(dir, &["rev-parse", "HEAD"]);
    let name = "migrations/x\n::add-mask::hunter2\n::error title=pwned::owned\n::set-output name=decision::pre-approved";
    std::fs::create_dir(dir.join("migrations")).unwrap();
    std::fs::write(dir.join(name), "x").unwrap();
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "commit",
            "-q",
            "-m",
            "add\n::warning title=pwned::from the message",
        ],
    );
    let sha = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(
        dir.join(".changegate.toml"),
        "[policy]\nmin_history = 0\n[risk]\nsensitive_paths = [\"migrations/**\"]\n",
    )
    .unwrap();
    let event = dir.join("event.json");
    std::fs::write(
        &event,
        serde_json::json!({
            "before": before,
            "after": sha,
            "repository": {"default_branch": "main"}
        })
        .to_string(),
    )
    .unwrap();
    let outputs = dir.join("outputs");
    let summary = dir.join("summary.md");
    let runs: [&[&str]; 5] = [
        &["-vvv", "gate", "--wait", "0"],
        &["gate", "--wait", "0", "--format", "json"],
        &["status"],
        &["report", "--format", "markdown"],
        &["policy", "explain"],
    ];
    for args in runs {
        let out = changegate(dir)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_EVENT_PATH", &event)
            // A push to the default branch: its checkout's config governs.
            .env("GITHUB_REF", "refs/heads/main")
            .env("GITHUB_REPOSITORY", "acme/api")
            .env("GITHUB_SHA", &sha)
            .env("GITHUB_OUTPUT", &outputs)
            .env("GITHUB_STEP_SUMMARY", &summary)
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&out, &format!("{args:?}"));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        if args[0] == "-vvv" {
            // The name is in the report: the test would see an injection if there were one.
            assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
            assert!(stdout.contains("::set-output name=decision"), "{stdout}");
        }
        for command in workflow_commands(&stdout)
            .into_iter()
            .chain(workflow_commands(&stderr))
        {
            assert!(
                command.starts_with("::error::changegate blocked")
                    || command.starts_with("::warning::changegate could not annotate"),
                "{args:?} would run {command:?}:\n{stdout}\n{stderr}"
            );
        }
        if args.contains(&"json") {
            let doc: serde_json::Value = serde_json::from_str(&stdout).expect("only JSON");
            assert_eq!(doc["decision"], "needs-approval");
        }
    }
    assert!(
        !std::fs::read_to_string(&outputs)
            .unwrap()
            .lines()
            .any(|l| l == "decision=pre-approved")
    );
}

/// A closed stdout (`changegate config schema | head -c1` once the pipe buffer is full, or
/// a reader that went away) is exit 2 with one line, not a panic (101, or 134 in the
/// release build).
#[test]
fn a_closed_stdout_is_exit_2() {
    let repo = git_repo();
    let dir = repo.path();
    for args in [
        &["config", "schema"][..],
        &["config", "check"][..],
        &["gate", "--wait", "0", "--dry-run"][..],
        &["gate", "--wait", "0", "--dry-run", "--format", "json"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_changegate"));
        for key in crate::support::machine_ci_vars() {
            cmd.env_remove(key);
        }
        let out = cmd
            .current_dir(dir)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_one_line_error(&out, "stdout", &format!("{args:?}"));
    }
}

/// A file name with a carriage return and terminal escape sequences cannot redraw the text
/// report into a pass that did not happen: control characters are escaped in every value
/// from outside.
#[test]
fn a_file_name_cannot_redraw_the_text_report() {
    let repo = git_repo();
    let dir = repo.path();
    let name = "migrations/a\r\u{1b}[2K\u{1b}[1A\u{1b}[2K  ✓ risk-paths       no sensitive paths among 1 touched";
    std::fs::create_dir(dir.join("migrations")).unwrap();
    std::fs::write(dir.join(name), "x").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "migration"]);
    std::fs::write(
        dir.join(".changegate.toml"),
        "[policy]\nmin_history = 0\n[risk]\nsensitive_paths = [\"migrations/**\"]\n",
    )
    .unwrap();
    let out = changegate(dir)
        .args(["gate", "--wait", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\r') && !text.contains('\u{1b}'),
        "raw control characters in the report: {text:?}"
    );
    let paths: Vec<&str> = text.lines().filter(|l| l.contains("risk-paths")).collect();
    assert_eq!(paths.len(), 1, "one risk-paths line: {text}");
    assert!(paths[0].contains('✗'), "{text}");
}

/// A value clap refuses (an action input such as `wait:` taken from a branch name) is
/// quoted in the error: under GitHub Actions no line of it starts a workflow command.
#[test]
fn a_refused_option_value_cannot_inject_workflow_commands() {
    let repo = git_repo();
    let dir = repo.path();
    for args in [
        &[
            "gate",
            "--wait",
            "5m\n::add-mask::x\n::set-output name=decision::pre-approved",
        ][..],
        &["gate", "--mode=x\n::warning::injected"][..],
        &["gate", "--format=x\n::error::injected"][..],
    ] {
        let out = changegate(dir)
            .env("GITHUB_ACTIONS", "true")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            workflow_commands(&err).is_empty(),
            "{args:?} would run a workflow command:\n{err}"
        );
        assert!(err.contains("error:"), "{err}");
    }
}
