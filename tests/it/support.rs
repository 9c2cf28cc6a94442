//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// Real payloads of the services changegate talks to (`tests/fixtures/reference`, see its
/// SOURCES.md). A missing file fails the test that asks for it.
pub fn reference(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(rel);
    assert!(path.is_file(), "missing fixture {}", path.display());
    path
}

/// Whether a variable of the machine running the tests would tell changegate it runs in
/// CI (or change its settings or logging): such variables never leak into a test run.
pub fn is_machine_ci_var(key: &str) -> bool {
    key.starts_with("GITHUB_")
        || key.starts_with("CI_")
        || key.starts_with("CHANGEGATE_")
        || key.starts_with("INPUT_")
        || key == "GITLAB_CI"
        || key == "CI"
        || key == "RUST_LOG"
}

/// The variables of this machine that [`is_machine_ci_var`] keeps out of a test run.
pub fn machine_ci_vars() -> Vec<String> {
    std::env::vars()
        .map(|(key, _)| key)
        .filter(|key| is_machine_ci_var(key))
        .collect()
}

/// The changegate binary with a clean environment: no CI variables leak in from the
/// machine running the tests, and logs are quiet unless asked.
pub fn changegate(workdir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("changegate").expect("binary built");
    cmd.current_dir(workdir);
    for key in machine_ci_vars() {
        cmd.env_remove(key);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Runs git in `dir` as a fixed author and committer; fails the test unless git succeeds.
/// Returns git's stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout)
        .expect("git prints UTF-8")
        .trim()
        .to_string()
}

/// A throwaway git repository with one commit, for local runs.
pub fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("app.txt"), "v1\n").expect("write");
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "PAY-1: first version"]);
    git(
        dir.path(),
        &[
            "remote",
            "add",
            "origin",
            "https://github.com/acme/payments-api.git",
        ],
    );
    dir
}

/// The variables of a GitHub Actions job run for the webhook `event` (a payload file)
/// of kind `event_name`, in `repository` at commit `sha`.
pub fn github_actions<'a>(
    cmd: &'a mut Command,
    event_name: &str,
    event: &Path,
    repository: &str,
    sha: &str,
) -> &'a mut Command {
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", event_name)
        .env("GITHUB_EVENT_PATH", event)
        .env("GITHUB_REPOSITORY", repository)
        .env("GITHUB_SHA", sha)
}

/// The variables of a GitLab CI job in project `project_path` at commit `sha`.
pub fn gitlab_ci<'a>(cmd: &'a mut Command, project_path: &str, sha: &str) -> &'a mut Command {
    cmd.env("GITLAB_CI", "true")
        .env("CI_PROJECT_PATH", project_path)
        .env("CI_COMMIT_SHA", sha)
}

/// A `--format json` document (a command's stdout), parsed.
pub fn json_doc(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).expect("json")
}
