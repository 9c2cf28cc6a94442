//! The local git checkout: HEAD, the remote, and the commits, lines and paths of a range.
//! git runs with an argument list, never through a shell.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::Detected;
use crate::domain::{Author, Commit, Platform};

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
    let author = author_email(workdir, "HEAD").map(|e| Author::email(&e));
    Ok(Detected {
        platform: Platform::Local,
        repository,
        repository_url: None,
        commit_sha: sha,
        branch,
        pull_request: None,
        range: None,
        before: None,
        commits: Vec::new(),
        paths: Vec::new(),
        lines_changed: None,
        run_url: None,
        actor,
        author,
        texts: Vec::new(),
    })
}

/// The e-mail of `commit`'s author, when the checkout has the commit.
pub fn author_email(workdir: &Path, commit: &str) -> Option<String> {
    if commit.is_empty() || commit.starts_with('-') {
        return None;
    }
    git(workdir, &["log", "-1", "--format=%ae", commit, "--"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Commits, lines changed and paths of `base..head` (or of `head` alone without a base).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeStats {
    pub commits: Vec<Commit>,
    /// `None` when git could not count some file's lines and that may not be a binary file
    /// (a git too old to ignore the change's own `.gitattributes`).
    pub lines: Option<u64>,
    pub paths: Vec<String>,
    /// The commits' message bodies (below the subject), where work items are often named.
    pub bodies: Vec<String>,
}

/// Whether `head` has a parent the checkout does not have (a shallow clone's boundary).
fn is_shallow_boundary(workdir: &Path, head: &str) -> bool {
    let has_parent = git(workdir, &["cat-file", "-p", head])
        .is_some_and(|object| object.lines().any(|l| l.starts_with("parent ")));
    has_parent
        && git(
            workdir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{head}^1^{{commit}}"),
            ],
        )
        .is_none()
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
    if base.is_none() && is_shallow_boundary(workdir, head) {
        // A shallow clone cut history at this commit: git would diff it against nothing
        // and count every file of the tree. Its facts are unknown, not that large.
        return None;
    }
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
    // `-z`: paths come verbatim, NUL-ended, never quoted or octal-escaped by git (a quoted
    // name would not match a sensitive-path pattern).
    let diff: Vec<&str> = match base {
        Some(b) => vec!["diff", "-z", "--numstat", "--no-renames", b, head, "--"],
        None => vec![
            "diff-tree",
            "-z",
            "--root",
            "-r",
            "--numstat",
            "--no-renames",
            "--no-commit-id",
            head,
            "--",
        ],
    };
    let (numstat, attributes_neutral) = numstat(workdir, head, &diff)?;
    let (lines, paths, uncounted) = parse_numstat_z(&numstat);
    // Without the attributes neutralised, a `-` count may be a text file a `-diff`
    // attribute of the change itself hides: its size is unknown, not zero.
    let lines = (attributes_neutral || !uncounted).then_some(lines);
    Some(RangeStats {
        commits,
        lines,
        paths,
        bodies,
    })
}

/// The empty tree's object name, by the length of a commit's (SHA-1 or SHA-256): git knows
/// it without it being stored.
fn empty_tree(head: &str) -> &'static str {
    if head.len() == 64 {
        "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
    } else {
        "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    }
}

/// Runs the numstat `diff` with attributes read from the empty tree and no global or system
/// attributes file, no external diff and no textconv: the change's own `.gitattributes`
/// (`* -diff`, `binary`) would otherwise make its text files uncountable, and a textconv
/// would rewrite the counts. Returns the output and whether the attributes were
/// neutralised; a git older than 2.40 refuses `--attr-source`, and is asked again without.
fn numstat(workdir: &Path, head: &str, diff: &[&str]) -> Option<(String, bool)> {
    let source = format!("--attr-source={}", empty_tree(head));
    let mut args = vec![
        source.as_str(),
        "-c",
        "core.attributesFile=/dev/null",
        diff[0],
        "--no-ext-diff",
        "--no-textconv",
    ];
    args.extend(&diff[1..]);
    let quiet = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workdir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ATTR_NOSYSTEM", "1")
            .output()
            .ok()
    };
    let out = quiet(&args)?;
    if out.status.success() {
        return Some((String::from_utf8_lossy(&out.stdout).into_owned(), true));
    }
    // Refused options: the usage error names the option. Anything else (missing objects) is
    // the same failure without it.
    if !String::from_utf8_lossy(&out.stderr).contains("attr-source") {
        return None;
    }
    let out = quiet(&args[1..])?;
    out.status
        .success()
        .then(|| (String::from_utf8_lossy(&out.stdout).into_owned(), false))
}

/// Lines changed and paths touched from `git diff -z --numstat`: records of
/// `adds\tdels\tpath\0`, or `adds\tdels\t\0old\0new\0` for a rename or copy (both
/// paths are touched). A binary file shows `-` counts: it is a touched path that adds no
/// lines (git cannot count them; GitHub's API reports 0 for them too); the third value
/// says whether any file showed them. Counts saturate.
pub fn parse_numstat_z(out: &str) -> (u64, Vec<String>, bool) {
    let mut lines = 0u64;
    let mut paths = Vec::new();
    let mut uncounted = false;
    let mut fields = out.split('\0');
    while let Some(record) = fields.next() {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(removed), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        uncounted |= added.trim() == "-" || removed.trim() == "-";
        let count = |n: &str| n.trim().parse::<u64>().unwrap_or(0);
        lines = lines
            .saturating_add(count(added))
            .saturating_add(count(removed));
        if path.is_empty() {
            // A rename: the old and the new path follow as two fields of their own.
            paths.extend(fields.next().filter(|p| !p.is_empty()).map(str::to_string));
            paths.extend(fields.next().filter(|p| !p.is_empty()).map(str::to_string));
        } else {
            paths.push(path.to_string());
        }
    }
    (lines, paths, uncounted)
}

/// The full SHA of the commit an abbreviated hex SHA names in this checkout; `None` when it
/// names none, or more than one.
pub fn resolve_commit(workdir: &Path, abbreviated: &str) -> Option<String> {
    if abbreviated.is_empty() || !abbreviated.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    git(
        workdir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{abbreviated}^{{commit}}"),
        ],
    )
    .map(|s| s.trim().to_string())
    .filter(|s| s.len() == 40 || s.len() == 64)
}

/// A file as it is in another revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAtRev {
    Found(String),
    /// The revision exists but has no such file.
    Missing,
    /// The checkout does not have the revision.
    NoRevision,
    /// No git to ask, or `workdir` is not a checkout it will read.
    NoCheckout,
}

/// Reads `path` as it is at `rev` (e.g. `refs/remotes/origin/main`), without touching the
/// work tree, with one `git cat-file --batch`: it tells "no such revision" from "no such file"
/// by git's own answers rather than by the wording of an error message.
pub fn file_at(workdir: &Path, rev: &str, path: &str) -> FileAtRev {
    // cat-file reads one object name a line; a name is never an option either.
    if rev.starts_with('-') || rev.contains(['\n', '\r']) || path.contains(['\n', '\r']) {
        return FileAtRev::NoRevision;
    }
    let Some(out) = git_with_input(
        workdir,
        &["cat-file", "--batch"],
        format!("{rev}^{{commit}}\n{rev}:{path}\n").as_bytes(),
    ) else {
        return FileAtRev::NoCheckout;
    };
    let mut rest = out.as_slice();
    match next_object(&mut rest) {
        Some(Some(("commit", _))) => {}
        _ => return FileAtRev::NoRevision,
    }
    match next_object(&mut rest) {
        Some(Some(("blob", content))) => {
            FileAtRev::Found(String::from_utf8_lossy(content).into_owned())
        }
        // No such path, or a directory by that name: either way no file.
        Some(_) => FileAtRev::Missing,
        None => FileAtRev::NoCheckout,
    }
}

/// One answer of `git cat-file --batch`, advancing `rest` past it: `Some(None)` when git
/// says the object is missing or ambiguous, `None` when the output is cut short.
fn next_object<'a>(rest: &mut &'a [u8]) -> Option<Option<(&'a str, &'a [u8])>> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&rest[..end]).ok()?;
    *rest = &rest[end + 1..];
    // "<oid> <type> <size>" for an object; "<name> missing" otherwise (a name may hold spaces).
    let mut fields = header.split(' ');
    let (Some(oid), Some(kind), Some(size), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Some(None);
    };
    let Ok(size) = size.parse::<usize>() else {
        return Some(None);
    };
    if !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(None);
    }
    if rest.len() < size + 1 {
        return None;
    }
    let content = &rest[..size];
    *rest = &rest[size + 1..];
    Some(Some((kind, content)))
}

/// Runs git with `input` on its stdin; `None` when git is missing or fails.
fn git_with_input(workdir: &Path, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("git")
        .arg("-C")
        .arg(workdir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // The input is a few short lines: it fits the pipe before git answers, so writing it all
    // first cannot dead-lock against an answer git is still writing.
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(input));
    let out = child.wait_with_output().ok()?;
    (matches!(written, Some(Ok(()))) && out.status.success()).then_some(out.stdout)
}

/// The most the one fetch of the default branch may take; less when the run's outbound
/// budget has less left (the caller passes the limit).
pub const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Why [`fetch_branch`] did not bring the branch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FetchFailed {
    /// git itself could not be run: nothing else git could do would help either.
    pub no_git: bool,
    /// git's own reason, with any credentials in a URL blanked out.
    pub reason: String,
}

impl FetchFailed {
    fn new(reason: String) -> FetchFailed {
        FetchFailed {
            no_git: false,
            reason,
        }
    }
}

/// Fetches the tip of `branch` from `origin` into `refs/remotes/origin/<branch>`, with the
/// credentials the checkout already has (GitLab's remote URL carries the job token;
/// actions/checkout leaves its token in the git config). `--depth=1` only in a `shallow`
/// repository: in a complete one it would cut the history short at the fetched tip (git
/// records it as a shallow boundary), and the commit ranges the gate reads need it whole.
/// `branch` must have passed [`valid_branch_name`]. The fetch is stopped after `limit`.
pub async fn fetch_branch(
    workdir: &Path,
    branch: &str,
    shallow: bool,
    limit: std::time::Duration,
) -> Result<(), FetchFailed> {
    if !valid_branch_name(branch) {
        return Err(FetchFailed::new(format!(
            "{branch:?} is not a valid branch name"
        )));
    }
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    let mut args = vec!["fetch", "--quiet", "--no-tags", "--no-recurse-submodules"];
    if shallow {
        args.push("--depth=1");
    }
    args.extend(["origin", refspec.as_str()]);
    let run = tokio::process::Command::new("git")
        .arg("-C")
        .arg(workdir)
        .args(&args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(limit, run).await {
        Err(_) => {
            return Err(FetchFailed::new(format!(
                "git fetch did not finish within {:.1}s",
                limit.as_secs_f64()
            )));
        }
        Ok(Err(e)) => {
            return Err(FetchFailed {
                no_git: true,
                reason: format!("git could not be run: {e}"),
            });
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut reason = redact_url_credentials(&said.join(" "));
    if reason.len() > 400 {
        let mut cut = 400;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    Err(FetchFailed::new(if reason.is_empty() {
        format!("git fetch failed ({})", out.status)
    } else {
        format!("git fetch failed: {reason}")
    }))
}

/// Blanks the user-info part of any URL in `text` (`https://user:token@host` →
/// `https://***@host`).
pub fn redact_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `name` is a branch name git would accept (`git check-ref-format --branch`), and
/// safe to put in a refspec and an argument list: it comes from the CI environment or the
/// event payload, so it is untrusted.
pub fn valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && name != "@"
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.chars().any(|c| {
            c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
        && name
            .split('/')
            .all(|part| !part.starts_with('.') && !part.ends_with(".lock"))
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
