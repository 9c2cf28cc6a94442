//! The local git checkout: HEAD, the remote, and the commits, lines and paths of a range.
//! git runs with an argument list, never through a shell.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Detected;
use crate::domain::{Commit, Platform};

/// Most commits listed for one change; a longer range is summarised by its lines and paths.
const MAX_COMMITS: usize = 250;

fn git(workdir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workdir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `owner/name` from a remote URL (https, ssh or scp-like).
pub fn repository_from_remote(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let path = if let Some((_, rest)) = url.split_once("://") {
        rest.split_once('/').map(|(_, p)| p)?
    } else if let Some((_, p)) = url.split_once(':') {
        p
    } else {
        return None;
    };
    let path = path.trim_matches('/');
    path.contains('/').then(|| path.to_string())
}

/// Reads HEAD, branch, author and remote of the checkout at `workdir`.
pub fn detect(workdir: &Path) -> Result<Detected> {
    let sha = git(workdir, &["rev-parse", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let branch = git(workdir, &["rev-parse", "--abbrev-ref", "HEAD"])
        .map(|s| s.trim().to_string())
        .filter(|b| !b.is_empty() && b != "HEAD");
    let remote = git(workdir, &["remote", "get-url", "origin"]);
    let repository = remote.as_deref().and_then(repository_from_remote);
    let actor = git(workdir, &["log", "-1", "--format=%an"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok(Detected {
        platform: Platform::Local,
        repository,
        repository_url: None,
        commit_sha: sha,
        branch,
        pull_request: None,
        range: None,
        commits: Vec::new(),
        paths: Vec::new(),
        lines_changed: None,
        run_url: None,
        actor,
        texts: Vec::new(),
    })
}

/// Commits, lines changed and paths of `base..head` (or of `head` alone without a base).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeStats {
    pub commits: Vec<Commit>,
    pub lines: u64,
    pub paths: Vec<String>,
    /// The commits' message bodies (below the subject), where work items are often named.
    pub bodies: Vec<String>,
}

/// `None` when git or the objects are missing (e.g. a shallow clone).
pub fn range_stats(workdir: &Path, base: Option<&str>, head: &str) -> Option<RangeStats> {
    let is_sha = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()) && !s.bytes().all(|b| b == b'0')
    };
    if !is_sha(head) {
        return None;
    }
    let base = base.filter(|b| is_sha(b));
    let range = base.map(|b| format!("{b}..{head}"));
    let max = format!("--max-count={MAX_COMMITS}");
    // One record per commit (ended by 0x1e), fields split by 0x1f; the body, which may span
    // lines, comes last.
    const FORMAT: &str = "--format=%H%x1f%s%x1f%an%x1f%cI%x1f%b%x1e";
    let log_args: Vec<&str> = match &range {
        Some(r) => vec!["log", &max, FORMAT, r.as_str(), "--"],
        None => vec!["log", "-1", FORMAT, head, "--"],
    };
    let log = git(workdir, &log_args)?;
    let mut bodies = Vec::new();
    let commits = log
        .split('\x1e')
        .map(|record| record.trim_start_matches(['\n', '\r']))
        .filter(|record| !record.is_empty())
        .filter_map(|record| {
            let mut parts = record.split('\x1f');
            let sha = parts.next()?.to_string();
            let subject = parts.next().unwrap_or("").to_string();
            let author = parts.next().map(str::to_string).filter(|a| !a.is_empty());
            let timestamp = parts
                .next()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(body) = parts.next().map(str::trim).filter(|b| !b.is_empty()) {
                bodies.push(body.to_string());
            }
            Some(Commit {
                sha,
                subject,
                author,
                timestamp,
            })
        })
        .collect();
    let numstat = match base {
        Some(b) => git(
            workdir,
            &["diff", "--numstat", "-z", "--no-renames", b, head, "--"],
        )?,
        None => git(
            workdir,
            &[
                "diff-tree",
                "--root",
                "-r",
                "--numstat",
                "-z",
                "--no-renames",
                "--no-commit-id",
                head,
                "--",
            ],
        )?,
    };
    let mut lines = 0u64;
    let mut paths = Vec::new();
    // `-z`: each entry ends in NUL and its path is verbatim. Without it git quotes a path
    // with a line break or a non-ASCII byte in it ("migrations/\303\274.sql"), and the
    // quoted form matches no sensitive-path pattern.
    for line in numstat.split('\0').filter(|l| !l.trim().is_empty()) {
        let line = line.trim_start_matches('\n');
        let mut parts = line.splitn(3, '\t');
        let added = parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let removed = parts
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(path) = parts.next() {
            lines += added + removed;
            paths.push(path.to_string());
        }
    }
    Some(RangeStats {
        commits,
        lines,
        paths,
        bodies,
    })
}

/// A file as it is in another revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAtRev {
    Found(String),
    /// The revision exists but has no such file.
    Missing,
    /// The revision is not in this checkout (or git is not there).
    NoRevision,
}

/// Reads `path` as it is at `rev` (e.g. `origin/main`), without touching the work tree.
pub fn file_at(workdir: &Path, rev: &str, path: &str) -> FileAtRev {
    // A revision is never taken from untrusted input as an option: it must not start with '-'.
    if rev.starts_with('-')
        || git(
            workdir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{rev}^{{commit}}"),
            ],
        )
        .is_none()
    {
        return FileAtRev::NoRevision;
    }
    match git(workdir, &["show", &format!("{rev}:{path}")]) {
        Some(text) => FileAtRev::Found(text),
        None => FileAtRev::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_from_remote_urls() {
        assert_eq!(
            repository_from_remote("https://github.com/acme/api.git").as_deref(),
            Some("acme/api")
        );
        assert_eq!(
            repository_from_remote("git@gitlab.com:group/sub/api.git").as_deref(),
            Some("group/sub/api")
        );
        assert_eq!(
            repository_from_remote("ssh://git@host:22/acme/api").as_deref(),
            Some("acme/api")
        );
        assert_eq!(repository_from_remote("/srv/git/api"), None);
    }
}

#[cfg(test)]
#[path = "tests/git.rs"]
mod repo_tests;
