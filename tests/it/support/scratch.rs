//! Scratch git checkouts and a clean process environment, std only: shared by the
//! integration tests (`support`) and the benchmarks (`benches/support/seed.rs`), so both
//! build the same checkout the same way.

use std::path::Path;
use std::process::Command;

/// Whether a variable of the machine running the tests would tell changegate it runs in
/// CI (or change its settings or logging): such variables never leak into a run.
pub fn is_machine_ci_var(key: &str) -> bool {
    key.starts_with("GITHUB_")
        || key.starts_with("CI_")
        || key.starts_with("CHANGEGATE_")
        || key.starts_with("INPUT_")
        || key == "GITLAB_CI"
        || key == "CI"
        || key == "RUST_LOG"
}

/// The variables of this machine that [`is_machine_ci_var`] keeps out of a run.
pub fn machine_ci_vars() -> Vec<String> {
    std::env::vars()
        .map(|(key, _)| key)
        .filter(|key| is_machine_ci_var(key))
        .collect()
}

/// git in `dir` as a fixed author and committer.
fn git_as_dev(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com");
    cmd
}

/// Runs `cmd` with `args`; fails unless git succeeds. Returns git's stdout, trimmed.
fn run_git(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.args(args).output().expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs git in `dir` as a fixed author and committer; fails unless git succeeds.
/// Returns git's stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_git(git_as_dev(dir), args)
}

/// [`git`] with author and committer time `when` (RFC 3339).
pub fn git_at(dir: &Path, when: &str, args: &[&str]) -> String {
    let mut cmd = git_as_dev(dir);
    cmd.env("GIT_AUTHOR_DATE", when)
        .env("GIT_COMMITTER_DATE", when);
    run_git(cmd, args)
}

/// Makes `dir` a git checkout on `main` with one commit (`app.txt`) and an `origin`
/// remote of `acme/payments-api` on GitHub.
pub fn init_checkout(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("app.txt"), "v1\n").expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "PAY-1: first version"]);
    git(
        dir,
        &[
            "remote",
            "add",
            "origin",
            "https://github.com/acme/payments-api.git",
        ],
    );
}
