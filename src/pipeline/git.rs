//! The local git checkout: HEAD, the remote, and the commits, lines and paths of a range,
//! read in-process with gitoxide (`gix`): no `git` child process, so the container images
//! need no git. Only [`fetch_branch`] runs `git`, with an argument list, never a shell.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::Detected;
use crate::domain::{Author, Commit, Platform};

/// Most commits listed for one change; a longer range is summarised by its lines and paths.
const MAX_COMMITS: usize = 250;

/// The checkout around `workdir`, opened as git would from `git -C workdir`, reading only
/// the repository's own configuration (no global or system file, no environment): what it
/// holds is all a gate reads. `None` when there is no checkout gix can read.
fn open(workdir: &Path) -> Option<gix::Repository> {
    let isolated = gix::open::Options::isolated();
    let trust = gix::sec::trust::Mapping {
        full: isolated.clone(),
        reduced: isolated,
    };
    gix::ThreadSafeRepository::discover_opts(workdir, Default::default(), trust)
        .ok()
        .map(gix::Repository::from)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A full object name in hex (SHA-1, or SHA-256 where gix reads it); `None` otherwise.
fn object_id(hex: &str) -> Option<ObjectId> {
    if hex.len() != 40 && hex.len() != 64 {
        return None;
    }
    ObjectId::from_hex(hex.as_bytes()).ok()
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

/// Reads HEAD, branch, author and remote of the checkout at `workdir`. Outside a checkout
/// every fact is unknown (an empty commit SHA).
pub fn detect(workdir: &Path) -> Result<Detected> {
    let repo = open(workdir);
    let head = repo.as_ref().and_then(|r| r.head_id().ok());
    let branch = repo
        .as_ref()
        .and_then(|r| r.head_name().ok().flatten())
        .map(|name| text(name.shorten()))
        .filter(|b| !b.is_empty() && b != "HEAD");
    let repository = repo
        .as_ref()
        .and_then(|r| r.config_snapshot().string("remote.origin.url"))
        .and_then(|url| repository_from_remote(&text(url.as_ref())));
    let commit = head
        .and_then(|id| id.object().ok())
        .map(|o| o.into_commit());
    let signature = commit.as_ref().and_then(|c| {
        let author = c.author().ok()?;
        Some((text(author.name.trim()), text(author.email.trim())))
    });
    let (actor, author) = match signature {
        Some((name, email)) => (
            Some(name).filter(|n| !n.is_empty()),
            Some(email)
                .filter(|e| !e.is_empty())
                .map(|e| Author::email(&e)),
        ),
        None => (None, None),
    };
    Ok(Detected {
        platform: Platform::Local,
        repository,
        repository_url: None,
        commit_sha: head.map(|id| id.to_string()).unwrap_or_default(),
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
        claimed_review: None,
    })
}

/// The e-mail of `commit`'s author (a full SHA), when the checkout has the commit.
pub fn author_email(workdir: &Path, commit: &str) -> Option<String> {
    let id = object_id(commit)?;
    let repo = open(workdir)?;
    let commit = repo.find_commit(id).ok()?;
    let email = text(commit.author().ok()?.email.trim());
    (!email.is_empty()).then_some(email)
}

/// Commits, lines changed and paths of `base..head` (or of `head` alone without a base).
#[derive(Debug, Clone, PartialEq)]
pub struct RangeStats {
    pub commits: Vec<Commit>,
    /// Lines added plus removed, as `git diff --numstat` counts them with the change's own
    /// attributes left out (a `.gitattributes` of the change cannot hide its lines); a
    /// binary file (a NUL in its first 8,000 bytes, git's test) adds none. Always known.
    pub lines: Option<u64>,
    pub paths: Vec<String>,
    /// The commits' message bodies (below the subject), where work items are often named.
    pub bodies: Vec<String>,
}

/// `None` when the checkout or the objects are missing (e.g. a shallow clone), or `head` is
/// not a full commit SHA.
pub fn range_stats(workdir: &Path, base: Option<&str>, head: &str) -> Option<RangeStats> {
    let is_sha = |s: &str| !s.bytes().all(|b| b == b'0') && object_id(s).is_some();
    if !is_sha(head) {
        return None;
    }
    let head = object_id(head)?;
    let base = base.filter(|b| is_sha(b)).and_then(object_id);
    let repo = open(workdir)?;
    let head_commit = repo.find_commit(head).ok()?;
    let parents: Vec<ObjectId> = head_commit.parent_ids().map(|p| p.detach()).collect();
    let (from_tree, listed) = match base {
        Some(base) => {
            let base_tree = repo.find_commit(base).ok()?.tree_id().ok()?.detach();
            let walk = repo
                .rev_walk([head])
                .with_hidden([base])
                .sorting(gix::revision::walk::Sorting::ByCommitTime(
                    gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
                ))
                .all()
                .ok()?;
            let mut ids = Vec::new();
            for info in walk.take(MAX_COMMITS) {
                ids.push(info.ok()?.id);
            }
            (Some(base_tree), ids)
        }
        None => {
            // The head commit against its first parent (the empty tree for a root commit). A
            // parent the checkout lacks is a shallow clone's boundary: diffed against
            // nothing, every file of the tree would count. Its facts are unknown, not that
            // large.
            let from = match parents.first() {
                Some(parent) => Some(repo.find_commit(*parent).ok()?.tree_id().ok()?.detach()),
                None => None,
            };
            (from, vec![head])
        }
    };
    let mut bodies = Vec::new();
    let mut commits = Vec::with_capacity(listed.len());
    for id in listed {
        let commit = repo.find_commit(id).ok()?;
        let message = commit.message().ok()?;
        let author = commit.author().ok()?;
        if let Some(body) = message.body.map(|b| text(b).trim().to_string())
            && !body.is_empty()
        {
            bodies.push(body);
        }
        let name = text(author.name.trim());
        commits.push(Commit {
            sha: id.to_string(),
            subject: text(message.summary().as_ref()),
            author: Some(name).filter(|a| !a.is_empty()),
            timestamp: commit
                .time()
                .ok()
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, 0)),
        });
    }
    let to_tree = head_commit.tree_id().ok()?.detach();
    let mut diff = TreeDiff::default();
    diff.trees(&repo, from_tree, Some(to_tree), &mut Vec::new())?;
    diff.paths.sort();
    diff.paths.dedup();
    Some(RangeStats {
        commits,
        lines: Some(diff.lines),
        paths: diff.paths,
        bodies,
    })
}

/// What two trees differ by: every path touched (both paths of a rename: it is a deletion
/// and an addition) and the lines added plus removed. Counts saturate.
#[derive(Default)]
struct TreeDiff {
    lines: u64,
    paths: Vec<String>,
}

/// One entry of a tree: its mode and object.
type Entry = (gix::object::tree::EntryMode, ObjectId);

impl TreeDiff {
    /// Compares the trees `from` and `to` (`None`: empty) found under the path `prefix`.
    fn trees(
        &mut self,
        repo: &gix::Repository,
        from: Option<ObjectId>,
        to: Option<ObjectId>,
        prefix: &mut Vec<u8>,
    ) -> Option<()> {
        if from == to {
            return Some(());
        }
        let entries = |id: Option<ObjectId>| -> Option<BTreeMap<Vec<u8>, Entry>> {
            let Some(id) = id else {
                return Some(BTreeMap::new());
            };
            let tree = repo.find_tree(id).ok()?;
            let decoded = tree.decode().ok()?;
            Some(
                decoded
                    .entries
                    .iter()
                    .map(|e| (e.filename.to_vec(), (e.mode, e.oid.to_owned())))
                    .collect(),
            )
        };
        let old = entries(from)?;
        let mut new = entries(to)?;
        for (name, before) in old {
            let after = new.remove(&name);
            self.entry(repo, prefix, &name, Some(before), after)?;
        }
        for (name, after) in new {
            self.entry(repo, prefix, &name, None, Some(after))?;
        }
        Some(())
    }

    fn entry(
        &mut self,
        repo: &gix::Repository,
        prefix: &mut Vec<u8>,
        name: &[u8],
        before: Option<Entry>,
        after: Option<Entry>,
    ) -> Option<()> {
        if before == after {
            return Some(());
        }
        let len = prefix.len();
        prefix.extend_from_slice(name);
        let tree = |e: Option<Entry>| e.filter(|(mode, _)| mode.is_tree()).map(|(_, id)| id);
        let file = |e: Option<Entry>| e.filter(|(mode, _)| !mode.is_tree());
        // A folder on either side: what is under it, against the other side's folder or
        // nothing (a file that replaced a folder is a file of its own).
        let done = if tree(before).is_some() || tree(after).is_some() {
            prefix.push(b'/');
            let walked = self.trees(repo, tree(before), tree(after), prefix);
            prefix.pop();
            walked
        } else {
            Some(())
        };
        let counted = match (file(before), file(after)) {
            (None, None) => Some(()),
            (old, new) => {
                self.paths
                    .push(String::from_utf8_lossy(prefix).into_owned());
                let lines = changed_lines(repo, old, new)?;
                self.lines = self.lines.saturating_add(lines);
                Some(())
            }
        };
        prefix.truncate(len);
        done.and(counted)
    }
}

/// A file's content as git diffs it: a blob's bytes, a symbolic link's target, or a
/// submodule's `Subproject commit <sha>` line.
fn content(repo: &gix::Repository, entry: Option<Entry>) -> Option<Vec<u8>> {
    match entry {
        None => Some(Vec::new()),
        Some((mode, id)) if mode.is_commit() => {
            Some(format!("Subproject commit {id}\n").into_bytes())
        }
        Some((_, id)) => Some(repo.find_blob(id).ok()?.data.clone()),
    }
}

/// Git's test for a binary file: a NUL in its first 8,000 bytes.
fn is_binary(data: &[u8]) -> bool {
    data.iter().take(8000).any(|&b| b == 0)
}

/// Lines added plus removed between two versions of a file (one may be absent); none for a
/// binary file, as `git diff --numstat` shows `-` for it.
fn changed_lines(
    repo: &gix::Repository,
    before: Option<Entry>,
    after: Option<Entry>,
) -> Option<u64> {
    if before.map(|(_, id)| id) == after.map(|(_, id)| id) {
        // A mode change alone.
        return Some(0);
    }
    let old = content(repo, before)?;
    let new = content(repo, after)?;
    if is_binary(&old) || is_binary(&new) {
        return Some(0);
    }
    let input = imara_diff::InternedInput::new(old.as_slice(), new.as_slice());
    let diff = imara_diff::Diff::compute(imara_diff::Algorithm::Myers, &input);
    Some(u64::from(diff.count_additions()) + u64::from(diff.count_removals()))
}

/// The full SHA of the commit an abbreviated hex SHA names in this checkout; `None` when it
/// names none, or more than one.
pub fn resolve_commit(workdir: &Path, abbreviated: &str) -> Option<String> {
    if abbreviated.len() < 4 || !abbreviated.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let prefix = gix::hash::Prefix::from_hex(abbreviated).ok()?;
    let repo = open(workdir)?;
    let id = repo.objects.lookup_prefix(prefix, None).ok()??.ok()?;
    let commit = repo.find_object(id).ok()?.peel_to_commit().ok()?;
    Some(commit.id.to_string())
}

/// A file as it is in another revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileAtRev {
    Found(String),
    /// The revision exists but has no such file.
    Missing,
    /// The checkout does not have the revision.
    NoRevision,
    /// `workdir` is not a checkout gix will read.
    NoCheckout,
}

/// Reads `path` as it is at the reference `rev` (e.g. `refs/remotes/origin/main`, a full
/// name: a tag or branch of a look-alike name cannot stand in for it), without touching the
/// work tree.
pub fn file_at(workdir: &Path, rev: &str, path: &str) -> FileAtRev {
    // A reference name is never an option, and a name or path is one line.
    if rev.starts_with('-') || rev.contains(['\n', '\r']) || path.contains(['\n', '\r']) {
        return FileAtRev::NoRevision;
    }
    let Some(repo) = open(workdir) else {
        return FileAtRev::NoCheckout;
    };
    let Ok(Some(mut reference)) = repo.try_find_reference(rev) else {
        return FileAtRev::NoRevision;
    };
    let Ok(commit) = reference.peel_to_commit() else {
        return FileAtRev::NoRevision;
    };
    let Ok(tree) = commit.tree() else {
        return FileAtRev::NoRevision;
    };
    let entry = match tree.lookup_entry_by_path(path) {
        Ok(Some(entry)) if entry.mode().is_blob() => entry,
        // No such path, or a directory by that name: either way no file.
        Ok(_) => return FileAtRev::Missing,
        Err(_) => return FileAtRev::NoRevision,
    };
    match entry.object() {
        Ok(blob) => FileAtRev::Found(String::from_utf8_lossy(&blob.data).into_owned()),
        Err(_) => FileAtRev::NoRevision,
    }
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
