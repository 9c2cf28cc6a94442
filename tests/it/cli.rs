//! What the command line tells a newcomer: each command's help and options, the formats it
//! writes, one sprint number everywhere, and counts and durations in plain words.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{changegate, git_repo, json_doc};

fn run(dir: &Path, args: &[&str]) -> Output {
    changegate(dir)
        .args(args)
        .output()
        .expect("changegate runs")
}

fn run_at(dir: &Path, now: &str, args: &[&str]) -> Output {
    changegate(dir)
        .env("CHANGEGATE_NOW", now)
        .args(args)
        .output()
        .expect("changegate runs")
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

fn config(dir: &Path, text: &str) {
    std::fs::write(dir.join(".changegate.toml"), text).unwrap();
}

/// The long options a command's `--help` lists.
fn help_options(dir: &Path, command: &[&str]) -> Vec<String> {
    let mut args = command.to_vec();
    args.push("--help");
    let out = run(dir, &args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            // `-v, --verbose...`: the long form.
            let l = match l.split_once(", --") {
                Some((short, _)) if short.len() == 2 => &l[4..],
                _ => l,
            };
            l.starts_with("--").then(|| {
                let flag = l.split([' ', '=']).next().unwrap_or(l);
                flag.trim_end_matches('.').to_string()
            })
        })
        .collect()
}

#[test]
fn each_command_lists_only_the_options_it_uses() {
    let repo = git_repo();
    let dir = repo.path();
    let record = help_options(dir, &["record"]);
    assert!(!record.contains(&"--tests-passed".into()), "{record:?}");
    for used in [
        "--outcome",
        "--change",
        "--commit",
        "--backend",
        "--dry-run",
        "--verbose",
    ] {
        assert!(record.contains(&used.into()), "{used} in {record:?}");
    }
    let approve = help_options(dir, &["approve"]);
    for unused in [
        "--servicenow-url",
        "--jira-url",
        "--dotenv",
        "--github-token",
    ] {
        assert!(!approve.contains(&unused.into()), "{unused} in {approve:?}");
    }
    // Which service and environment: the change of this commit when --change is left out.
    for used in [
        "--change",
        "--by",
        "--comment",
        "--ledger",
        "--format",
        "--environment",
        "--service",
    ] {
        assert!(approve.contains(&used.into()), "{used} in {approve:?}");
    }
    let gate = help_options(dir, &["gate"]);
    for used in [
        "--tests-passed",
        "--emergency",
        "--servicenow-url",
        "--dotenv",
        "--mode",
    ] {
        assert!(gate.contains(&used.into()), "{used} in {gate:?}");
    }
    let verify = help_options(dir, &["verify"]);
    assert!(!verify.contains(&"--service".into()), "{verify:?}");
    assert_eq!(
        help_options(dir, &["config", "schema"]),
        ["--format", "--verbose", "--quiet", "--help", "--version"]
    );
    // The formats a command writes, not every format some command writes.
    let out = stdout(&run(dir, &["gate", "--help"]));
    assert!(
        out.contains("Output format: text, json, markdown\n"),
        "{out}"
    );
    assert!(!out.contains("html"), "{out}");
    // `--comment` says what it is for.
    let out = stdout(&run(dir, &["approve", "--help"]));
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("--comment"))
        .unwrap();
    assert!(lines[at + 1].starts_with("Why:"), "{out}");
    // The emergency is described as the code decides it.
    let out = stdout(&run(dir, &["gate", "--help"]));
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "it passes a freeze, the allowance and the track record, and uses no allowance \
             (a failing risk or evidence rule still sends it to approval)"
        ),
        "{out}"
    );
    assert!(words.contains("expedited approval"), "{out}");
}

#[test]
fn global_options_stand_before_or_after_the_command() {
    let repo = git_repo();
    let dir = repo.path();
    let before = run(
        dir,
        &[
            "-v",
            "--environment",
            "staging",
            "--dry-run",
            "--format",
            "json",
            "gate",
        ],
    );
    let after = run(
        dir,
        &[
            "gate",
            "-v",
            "--environment",
            "staging",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&before), code(&after), "{}", stderr(&before));
    assert_eq!(stdout(&before), stdout(&after));
    assert_eq!(stderr(&before), stderr(&after));
    assert_eq!(json_doc(&before.stdout)["environment"], "staging");
}

#[test]
fn an_option_the_command_does_not_use_is_refused() {
    let repo = git_repo();
    let dir = repo.path();
    // One change waiting for approval, to decide by hand.
    assert_eq!(code(&run(dir, &["gate", "--wait", "0"])), 1);
    for args in [
        &[
            "approve",
            "--change",
            "CG-1",
            "--by",
            "alice",
            "--servicenow-url",
            "https://x",
        ][..],
        &[
            "--servicenow-url=https://x",
            "approve",
            "--change",
            "CG-1",
            "--by",
            "alice",
        ][..],
    ] {
        let out = run(dir, args);
        assert_eq!(code(&out), 2, "{args:?}");
        assert!(
            stderr(&out).contains("--servicenow-url does not apply to `changegate approve`"),
            "{}",
            stderr(&out)
        );
    }
    let out = run(dir, &["verify", "--service", "payments-api"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--service does not apply to `changegate verify`"));
    let out = run(
        dir,
        &["record", "--outcome", "success", "--tests-passed", "true"],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--tests-passed"), "{}", stderr(&out));
    // Nothing was decided by the refused runs.
    let out = run(dir, &["status", "--format", "json"]);
    assert_eq!(json_doc(&out.stdout)["state"], "awaiting-approval");
    // The same setting from the environment is not refused: CI sets variables once for all
    // jobs.
    let out = changegate(dir)
        .env("CHANGEGATE_SERVICENOW_URL", "https://acme.service-now.com")
        .args(["approve", "--change", "CG-1", "--by", "alice"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn each_command_writes_its_formats_and_refuses_the_others() {
    let repo = git_repo();
    let dir = repo.path();
    // Refused before anything runs: no ledger is created.
    for args in [
        &["gate", "--format", "html"][..],
        &["open", "--format", "html"],
        &["status", "--format", "html"],
        &["record", "--outcome", "success", "--format", "html"],
        &["policy", "explain", "--format", "markdown"],
        &["policy", "explain", "--format", "html"],
        &["verify", "--format", "markdown"],
        &[
            "approve", "--change", "CG-1", "--by", "a", "--format", "html",
        ],
        &["config", "check", "--format", "markdown"],
    ] {
        let out = run(dir, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("cannot write --format"),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}");
        assert!(
            !dir.join(".changegate").exists(),
            "{args:?} wrote the ledger"
        );
    }
    let out = run(dir, &["gate", "--format", "html"]);
    assert!(
        stderr(&out)
            .contains("`changegate gate` cannot write --format html: use text, json, markdown"),
        "{}",
        stderr(&out)
    );
    let out = run(dir, &["policy", "explain", "--format", "html"]);
    assert!(stderr(&out).contains("use text, json"), "{}", stderr(&out));

    // markdown: the job summary's table, for the change-centred commands.
    let out = run(dir, &["gate", "--wait", "0", "--format", "markdown"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let md = stdout(&out);
    assert!(md.starts_with("### changegate: "), "{md}");
    assert!(md.contains("| Change | CG\\-1 |"), "{md}");
    assert!(md.contains("| Decision | **needs-approval** |"), "{md}");
    let out = run(dir, &["status", "--format", "markdown"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("| State | awaiting-approval |"));
    // The report writes all four.
    for format in ["text", "json", "markdown", "html"] {
        let out = run(dir, &["report", "--format", format]);
        assert_eq!(code(&out), 0, "{format}: {}", stderr(&out));
    }
}

/// The sprint containing the clock, as the JSON of `gate`, `policy explain` and `report`
/// and the text of `policy explain` and `report` give it.
fn sprint_everywhere(dir: &Path, now: &str) -> (i64, i64, i64, String, String) {
    let gate = run_at(dir, now, &["gate", "--dry-run", "--format", "json"]);
    let gate = json_doc(&gate.stdout)["sprint"]["index"].as_i64().unwrap();
    let explain = run_at(dir, now, &["policy", "explain", "--format", "json"]);
    let explain = json_doc(&explain.stdout)["sprint"].as_i64().unwrap();
    let report = run_at(dir, now, &["report", "--sprints", "2", "--format", "json"]);
    let report: Value = json_doc(&report.stdout);
    let report = report["services"][0]["sprints"][1]["sprint"]
        .as_i64()
        .unwrap();
    let explain_text = stdout(&run_at(dir, now, &["policy", "explain"]));
    let report_text = stdout(&run_at(dir, now, &["report", "--sprints", "2"]));
    (gate, explain, report, explain_text, report_text)
}

#[test]
fn one_sprint_number_everywhere() {
    let repo = git_repo();
    let dir = repo.path();
    config(dir, "[sprint]\nstart = \"2026-03-02\"\nlength_days = 14\n");
    // The first day of the calendar is sprint 1.
    let (gate, explain, report, explain_text, report_text) =
        sprint_everywhere(dir, "2026-03-02T00:00:00Z");
    assert_eq!((gate, explain, report), (1, 1, 1));
    assert!(
        explain_text.contains(": sprint 1 (2026-03-02 to 2026-03-15)"),
        "{explain_text}"
    );
    let header = report_text
        .lines()
        .find(|l| l.trim_start().starts_with("sprint "))
        .unwrap();
    assert!(
        header.contains("S0") && header.contains("S1"),
        "{report_text}"
    );
    // The next one is 2.
    let (gate, explain, report, explain_text, report_text) =
        sprint_everywhere(dir, "2026-03-20T10:00:00Z");
    assert_eq!((gate, explain, report), (2, 2, 2));
    assert!(explain_text.contains(": sprint 2 (2026-03-16 to 2026-03-29)"));
    let header = report_text
        .lines()
        .find(|l| l.trim_start().starts_with("sprint "))
        .unwrap();
    assert!(
        header.contains("S1") && header.contains("S2"),
        "{report_text}"
    );
    // The day before the start is sprint 0; a year before, sprint −25.
    let (gate, explain, report, explain_text, _) = sprint_everywhere(dir, "2026-03-01T12:00:00Z");
    assert_eq!((gate, explain, report), (0, 0, 0));
    assert!(explain_text.contains(": sprint 0 (2026-02-16 to 2026-03-01)"));
    let (gate, explain, report, explain_text, report_text) =
        sprint_everywhere(dir, "2025-03-03T12:00:00Z");
    assert_eq!((gate, explain, report), (-25, -25, -25));
    assert!(explain_text.contains(": sprint -25 ("), "{explain_text}");
    assert!(report_text.contains("S-25"), "{report_text}");
}

#[test]
fn counts_and_durations_in_plain_words() {
    let repo = git_repo();
    let dir = repo.path();
    config(
        dir,
        "[policy]\nmin_history = 0\n[verify]\nwindow = \"24h\"\n",
    );
    // Nothing closed yet: no "over last 0".
    let out = run(dir, &["gate", "--format", "json"]);
    let doc = json_doc(&out.stdout);
    assert_eq!(
        doc["rules"][0]["reason"],
        "no closed changes yet, none needed for a track record"
    );
    let text = stdout(&run(dir, &["policy", "explain"]));
    assert!(
        text.contains("track record: 0 closed changes; no closed changes yet (target 90%)"),
        "{text}"
    );
    assert_eq!(code(&run(dir, &["record", "--outcome", "success"])), 0);
    // One closed change is one change.
    let text = stdout(&run(dir, &["policy", "explain"]));
    assert!(
        text.contains(
            "track record: 1 closed change; success rate 100% over the last 1 closed change"
        ),
        "{text}"
    );
    let text = stdout(&run(dir, &["config", "check"]));
    assert!(text.contains("policy: 0 closed changes needed"), "{text}");
    assert!(text.contains("0 freeze windows"), "{text}");
    // The verification window as people write it.
    let text = stdout(&run(dir, &["verify", "--dry-run"]));
    assert!(text.contains("(window 1 day)"), "{text}");
    let text = stdout(&run(dir, &["report", "--sprints", "1"]));
    assert!(text.contains("KPIs of the last 1 sprint ("), "{text}");
    assert!(text.contains(", 14 days each)"), "{text}");
}
