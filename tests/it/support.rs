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

/// The changegate binary with a clean environment: no CI variables leak in from the
/// machine running the tests, and logs are quiet unless asked.
pub fn changegate(workdir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("changegate").expect("binary built");
    cmd.current_dir(workdir);
    for (key, _) in std::env::vars() {
        if key.starts_with("GITHUB_")
            || key.starts_with("CI_")
            || key.starts_with("CHANGEGATE_")
            || key.starts_with("INPUT_")
            || key == "GITLAB_CI"
            || key == "CI"
            || key == "RUST_LOG"
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A throwaway git repository with one commit, for local runs.
pub fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .output()
            .expect("git runs")
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("app.txt"), "v1\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "PAY-1: first version"]);
    git(&[
        "remote",
        "add",
        "origin",
        "https://github.com/acme/payments-api.git",
    ]);
    dir
}
