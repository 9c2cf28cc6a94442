//! At most one child process per run: the gate reads the checkout in-process, so it needs
//! no `git` at all (the container images have none); only a pull request pipeline's one
//! `git fetch` of the default branch runs git. A `git` shim on `PATH` logs every call and
//! hands it to the real git; a `PATH` with no git must give the same decision.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::support::{
    changegate, default_branch_is_head, git, git_repo, github_actions, gitlab_ci, json_doc,
};

/// A folder holding a `git` that logs its arguments, one call a line, and runs the real one.
struct Shim {
    dir: tempfile::TempDir,
}

impl Shim {
    fn new() -> Shim {
        let dir = tempfile::tempdir().unwrap();
        let real = real_git();
        let log = dir.path().join("calls.log");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let script = dir.path().join("bin/git");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Shim { dir }
    }

    /// The shim first, then the machine's `PATH` (where the real git is too).
    fn path(&self) -> OsString {
        let mut path = OsString::from(self.dir.path().join("bin"));
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        path
    }

    /// Every git call so far, as its arguments.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn real_git() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("git"))
        .find(|p| p.is_file())
        .expect("git on PATH for the test's own set-up")
}

/// A `PATH` of one empty folder: no git, no shell.
fn no_git() -> (tempfile::TempDir, OsString) {
    let empty = tempfile::tempdir().unwrap();
    let path = OsString::from(empty.path());
    (empty, path)
}

/// A checkout whose last commit touches a sensitive path, and a config that names it, so
/// that the decision depends on the change's paths and lines. Returns the checkout, the
/// commit before and HEAD.
fn checkout() -> (tempfile::TempDir, String, String) {
    let repo = git_repo();
    let dir = repo.path();
    std::fs::write(
        dir.join(".changegate.toml"),
        "[risk]\nsensitive_paths = [\"migrations/**\"]\nmax_lines_changed = 400\n",
    )
    .unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "changegate config"]);
    let base = git(dir, &["rev-parse", "HEAD"]);
    std::fs::create_dir(dir.join("migrations")).unwrap();
    std::fs::write(dir.join("migrations/001.sql"), "create table t (id int);\n").unwrap();
    std::fs::write(dir.join("app.txt"), "v2\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "PAY-2: add a table"]);
    let head = git(dir, &["rev-parse", "HEAD"]);
    (repo, base, head)
}

/// The decision and each rule's verdict and reason of a `gate --dry-run --format json`.
fn decision(out: &std::process::Output) -> serde_json::Value {
    let doc = json_doc(&out.stdout);
    let rules: Vec<serde_json::Value> = doc["rules"]
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "no rules: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .iter()
        .map(|r| serde_json::json!([r["code"], r["passed"], r["reason"]]))
        .collect();
    serde_json::json!({"decision": doc["decision"], "exit": out.status.code(), "rules": rules})
}

fn push_event(dir: &Path, base: &str, head: &str) -> PathBuf {
    let event = dir.join("push-event.json");
    let payload = serde_json::json!({
        "before": base,
        "after": head,
        "commits": [],
        "repository": {"default_branch": "main"},
        "head_commit": {
            "id": head,
            "message": "PAY-2: add a table",
            "author": {"name": "Dev One", "email": "dev@example.com"},
        },
    });
    std::fs::write(&event, payload.to_string()).unwrap();
    event
}

/// Runs `gate --dry-run --format json` as `setup` makes the job, once with the shim on
/// `PATH` and once with no git at all: returns the shim's calls and both decisions.
fn gate_twice(
    dir: &Path,
    setup: impl Fn(&mut assert_cmd::Command),
) -> (Vec<String>, serde_json::Value, serde_json::Value) {
    let shim = Shim::new();
    let run = |path: &OsString| {
        let mut cmd = changegate(dir);
        setup(&mut cmd);
        cmd.env("PATH", path)
            .env("CHANGEGATE_NOW", "2026-03-02T10:00:00Z")
            .args(["gate", "--dry-run", "--format", "json"])
            .output()
            .unwrap()
    };
    let with_shim = decision(&run(&shim.path()));
    let (_empty, path) = no_git();
    let without = decision(&run(&path));
    (shim.calls(), with_shim, without)
}

#[test]
fn a_local_gate_runs_no_child_and_needs_no_git() {
    let (repo, _, _) = checkout();
    let (calls, with_git, without) = gate_twice(repo.path(), |_| {});
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(with_git, without);
    // The facts came from the checkout: the sensitive path was seen.
    assert!(
        with_git.to_string().contains("migrations/001.sql"),
        "{with_git}"
    );
}

#[test]
fn a_github_push_gate_runs_no_child_and_needs_no_git() {
    let (repo, base, head) = checkout();
    let event = push_event(repo.path(), &base, &head);
    let (calls, with_git, without) = gate_twice(repo.path(), |cmd| {
        github_actions(cmd, "push", &event, "acme/payments-api", &head)
            .env("GITHUB_REF_NAME", "main")
            .env("GITHUB_REF", "refs/heads/main");
    });
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(with_git, without);
    assert!(
        with_git.to_string().contains("migrations/001.sql"),
        "{with_git}"
    );
}

#[test]
fn a_gitlab_gate_runs_no_child_and_needs_no_git() {
    let (repo, base, head) = checkout();
    let (calls, with_git, without) = gate_twice(repo.path(), |cmd| {
        gitlab_ci(cmd, "acme/payments-api", &head).env("CI_COMMIT_BEFORE_SHA", &base);
    });
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(with_git, without);
    assert!(
        with_git.to_string().contains("migrations/001.sql"),
        "{with_git}"
    );
}

#[test]
fn a_pull_request_gate_runs_one_child_the_fetch_of_the_default_branch() {
    let (repo, base, head) = checkout();
    let dir = repo.path();
    default_branch_is_head(dir, "main");
    let event = dir.join(".git/pr.json");
    let payload = serde_json::json!({
        "pull_request": {
            "number": 7,
            "title": "PAY-2: add a table",
            "user": {"login": "dev-one"},
            "head": {"sha": head, "ref": "feature"},
            "base": {"sha": base, "ref": "main"},
        },
        "repository": {"default_branch": "main"},
    });
    std::fs::write(&event, payload.to_string()).unwrap();
    let shim = Shim::new();
    let mut cmd = changegate(dir);
    github_actions(&mut cmd, "pull_request", &event, "acme/payments-api", &head)
        .env("GITHUB_HEAD_REF", "feature")
        .env("GITHUB_BASE_REF", "main")
        .env("GITHUB_REF", "refs/pull/7/merge")
        .env("PATH", shim.path())
        .args(["gate", "--dry-run", "--format", "json"]);
    let out = cmd.output().unwrap();
    let got = decision(&out);
    let calls = shim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains(" fetch "), "{calls:?}");
    // The default branch's config governs, read in-process after the fetch.
    assert!(got.to_string().contains("migrations/001.sql"), "{got}");
}

#[test]
fn outside_a_checkout_the_paths_stay_unknown_and_the_risk_rule_fails_closed() {
    // A push payload that does not list every path, and no checkout: what the change
    // touched is unknown whether or not git is installed, and `[risk] when_unknown`
    // (fail by default) decides.
    let (repo, base, head) = checkout();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo.path().join(".changegate.toml"),
        elsewhere.path().join(".changegate.toml"),
    )
    .unwrap();
    let event = push_event(elsewhere.path(), &base, &head);
    let (calls, with_git, without) = gate_twice(elsewhere.path(), |cmd| {
        github_actions(cmd, "push", &event, "acme/payments-api", &head)
            .env("GITHUB_REF_NAME", "main")
            .env("GITHUB_REF", "refs/heads/main")
            .env("GITHUB_WORKSPACE", elsewhere.path());
    });
    assert_eq!(calls, Vec::<String>::new());
    assert_eq!(with_git, without);
    let text = with_git.to_string();
    assert!(text.contains("touched paths unknown"), "{text}");
    assert_ne!(with_git["decision"], "pre-approved", "{text}");
}
