//! The local git reader against real repositories made on the spot.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::pipeline;

struct Repo {
    dir: tempfile::TempDir,
    /// Seconds added to the commit dates, so each commit has its own time.
    clock: std::cell::Cell<u32>,
}

impl Repo {
    fn new() -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
            clock: std::cell::Cell::new(0),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let date = format!("2026-02-18T10:00:{:02}Z", self.clock.get());
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "Dev One")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "Dev One")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn write(&self, rel: &str, text: &[u8]) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Commits everything and returns the new HEAD.
    fn commit(&self, message: &str) -> String {
        self.clock.set(self.clock.get() + 1);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// A repository with a history: base, then two commits to deploy.
fn repo_with_history() -> (Repo, String, String) {
    let repo = Repo::new();
    repo.write("app.txt", b"one\ntwo\nthree\n");
    repo.write("old.txt", b"gone soon\n");
    let base = repo.commit("PAY-1: first version");
    repo.write("app.txt", b"one\n2\nthree\nfour\n"); // +2 -1
    repo.write("migrations/001.sql", b"create table t (id int);\n"); // +1
    repo.commit("PAY-2: add a table\n\nRefs INC0012345 and (#17)");
    std::fs::remove_file(repo.path().join("old.txt")).unwrap(); // -1
    repo.write("logo.png", &[0, 159, 146, 150, 0, 1, 2]); // binary: counted as a path
    let head = repo.commit("Drop old file");
    repo.git(&[
        "remote",
        "add",
        "origin",
        "git@github.com:acme/payments-api.git",
    ]);
    (repo, base, head)
}

#[test]
fn detect_reads_head_branch_author_and_remote() {
    let (repo, _, head) = repo_with_history();
    let d = detect(repo.path()).unwrap();
    assert_eq!(d.platform, Platform::Local);
    assert_eq!(d.commit_sha, head);
    assert_eq!(d.branch.as_deref(), Some("main"));
    assert_eq!(d.actor.as_deref(), Some("Dev One"));
    assert_eq!(
        d.author,
        Some(crate::domain::Author::email("dev@example.com"))
    );
    assert_eq!(super::author_email(repo.path(), "--help"), None);
    assert_eq!(d.repository.as_deref(), Some("acme/payments-api"));
    assert_eq!(
        (d.range, d.pull_request, d.lines_changed),
        (None, None, None)
    );

    // A detached HEAD has no branch.
    repo.git(&["checkout", "-q", "--detach"]);
    let d = detect(repo.path()).unwrap();
    assert_eq!(d.branch, None);
    assert_eq!(d.commit_sha, head);
}

#[test]
fn range_stats_of_a_range() {
    let (repo, base, head) = repo_with_history();
    let stats = range_stats(repo.path(), Some(&base), &head).unwrap();
    let subjects: Vec<&str> = stats.commits.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["Drop old file", "PAY-2: add a table"],
        "newest first, base excluded"
    );
    assert_eq!(stats.commits[0].sha, head);
    assert_eq!(stats.commits[0].author.as_deref(), Some("Dev One"));
    assert_eq!(
        stats.commits[1].timestamp.map(|t| t.to_rfc3339()),
        Some("2026-02-18T10:00:02+00:00".to_string())
    );
    // app.txt +2 -1, migrations/001.sql +1, old.txt -1, logo.png binary (no lines).
    assert_eq!(stats.lines, Some(5));
    assert_eq!(
        stats.paths,
        ["app.txt", "logo.png", "migrations/001.sql", "old.txt"]
    );
    assert_eq!(stats.bodies, ["Refs INC0012345 and (#17)"]);
}

#[test]
fn range_stats_of_one_commit() {
    let (repo, base, head) = repo_with_history();
    // Without a base: the head commit alone (the root commit included).
    let stats = range_stats(repo.path(), None, &head).unwrap();
    assert_eq!(stats.commits.len(), 1);
    assert_eq!(stats.lines, Some(1));
    assert_eq!(stats.paths, ["logo.png", "old.txt"]);
    let stats = range_stats(repo.path(), None, &base).unwrap();
    assert_eq!(stats.commits[0].subject, "PAY-1: first version");
    assert_eq!(stats.lines, Some(4));
    assert_eq!(stats.paths, ["app.txt", "old.txt"]);
    assert!(stats.bodies.is_empty());
}

#[test]
fn paths_are_verbatim_whatever_bytes_they_hold() {
    let repo = Repo::new();
    repo.write("app.txt", b"a\n");
    let base = repo.commit("init");
    std::fs::create_dir_all(repo.path().join("migrations")).unwrap();
    let odd = [
        "migrations/\u{fc}ber.sql",
        "migrations/x\n::set-output name=a::b",
        "migrations/tab\there",
    ];
    for name in odd {
        repo.write(name, b"x\n");
    }
    let head = repo.commit("odd names");
    for base in [Some(base.as_str()), None] {
        let stats = range_stats(repo.path(), base, &head).unwrap();
        let mut want: Vec<&str> = odd.to_vec();
        want.sort();
        assert_eq!(stats.paths, want, "{base:?}");
        assert_eq!(stats.lines, Some(3));
    }
}

#[test]
fn renames_count_both_paths() {
    let repo = Repo::new();
    repo.write("infra/main.tf", b"a\nb\n");
    let base = repo.commit("init");
    std::fs::create_dir_all(repo.path().join("deploy")).unwrap();
    repo.git(&["mv", "infra/main.tf", "deploy/main.tf"]);
    let head = repo.commit("move");
    let stats = range_stats(repo.path(), Some(&base), &head).unwrap();
    // A move out of a sensitive folder still touches it.
    assert_eq!(stats.paths, ["deploy/main.tf", "infra/main.tf"]);
    assert_eq!(stats.lines, Some(4));
}

#[test]
fn range_stats_refuses_what_is_not_a_commit_sha() {
    let (repo, base, head) = repo_with_history();
    assert_eq!(
        range_stats(repo.path(), None, "HEAD"),
        None,
        "only SHAs, never refs or options"
    );
    assert_eq!(range_stats(repo.path(), None, "--output=/tmp/x"), None);
    assert_eq!(range_stats(repo.path(), None, &"0".repeat(40)), None);
    assert_eq!(range_stats(repo.path(), None, ""), None);
    // A missing object (a shallow clone, another repository): no stats rather than wrong ones.
    assert_eq!(range_stats(repo.path(), None, &"f".repeat(40)), None);
    assert_eq!(range_stats(repo.path(), Some(&"f".repeat(40)), &head), None);
    // A base that is not a SHA is ignored: the head alone.
    let stats = range_stats(repo.path(), Some("main~2"), &head).unwrap();
    assert_eq!(stats.commits.len(), 1);
    // Not a repository at all.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(range_stats(empty.path(), Some(&base), &head), None);
}

#[test]
fn facts_cover_the_range_since_the_last_recorded_change() {
    let (repo, base, head) = repo_with_history();
    let d = pipeline::detect(&HashMap::new(), repo.path(), None).unwrap();
    let f = d.into_facts("payments-api", "production", Some(&base), None, repo.path());
    assert_eq!(f.range, Some((base.clone(), head.clone())));
    assert_eq!(f.commits.len(), 2);
    assert_eq!(f.lines_changed, Some(5));
    assert_eq!(
        f.paths,
        ["app.txt", "logo.png", "migrations/001.sql", "old.txt"]
    );
    // From subjects, bodies and the branch; PAY-1 is before the range.
    assert_eq!(f.work_items, ["#17", "INC0012345", "PAY-2"]);
    assert_eq!(f.service_id, "acme/payments-api");
    assert_eq!(f.actor.as_deref(), Some("Dev One"));
    assert_eq!(
        f.first_commit_at().map(|t| t.to_rfc3339()),
        Some("2026-02-18T10:00:02+00:00".to_string())
    );
}

#[test]
fn facts_without_a_previous_change_cover_the_head_commit() {
    let (repo, _, head) = repo_with_history();
    let d = pipeline::detect(&HashMap::new(), repo.path(), None).unwrap();
    let f = d
        .clone()
        .into_facts("payments-api", "production", None, None, repo.path());
    assert_eq!(f.range, None);
    assert_eq!(f.commits.len(), 1);
    assert_eq!(f.lines_changed, Some(1));
    // The last recorded change is this very commit (a re-run): still the head alone.
    let f = d.into_facts("payments-api", "production", Some(&head), None, repo.path());
    assert_eq!(f.range, None);
    assert_eq!(f.lines_changed, Some(1));
}

#[test]
fn commit_flag_picks_another_commit_of_the_checkout() {
    let (repo, base, _) = repo_with_history();
    let d = pipeline::detect(&HashMap::new(), repo.path(), Some(&base)).unwrap();
    assert_eq!(d.commit_sha, base);
    let f = d.into_facts("payments-api", "production", None, None, repo.path());
    assert_eq!(f.commits[0].subject, "PAY-1: first version");
    assert_eq!(f.work_items, ["PAY-1"]);
}

#[test]
fn file_at_tells_a_file_from_a_missing_file_from_a_missing_revision() {
    let repo = Repo::new();
    repo.write(".changegate.toml", b"mode = \"enforce\"\n");
    repo.write("ci/gate config.toml", b"mode = \"observe\"\n");
    repo.commit("config");
    repo.git(&["update-ref", "refs/remotes/origin/main", "HEAD"]);
    let rev = "refs/remotes/origin/main";
    assert_eq!(
        file_at(repo.path(), rev, ".changegate.toml"),
        FileAtRev::Found("mode = \"enforce\"\n".into())
    );
    assert_eq!(
        file_at(repo.path(), rev, "ci/gate config.toml"),
        FileAtRev::Found("mode = \"observe\"\n".into())
    );
    assert_eq!(file_at(repo.path(), rev, "none.toml"), FileAtRev::Missing);
    // A directory by that name is no file either.
    assert_eq!(file_at(repo.path(), rev, "ci"), FileAtRev::Missing);
    assert_eq!(
        file_at(
            repo.path(),
            "refs/remotes/origin/release",
            ".changegate.toml"
        ),
        FileAtRev::NoRevision
    );
    // Names are never options, and one name is one line.
    assert_eq!(
        file_at(repo.path(), "--output=x", ".changegate.toml"),
        FileAtRev::NoRevision
    );
    assert_eq!(
        file_at(
            repo.path(),
            rev,
            "x\nrefs/remotes/origin/main:.changegate.toml"
        ),
        FileAtRev::NoRevision
    );
    let not_a_checkout = tempfile::tempdir().unwrap();
    assert_eq!(
        file_at(not_a_checkout.path(), rev, ".changegate.toml"),
        FileAtRev::NoCheckout
    );
}

#[test]
fn branch_names_from_outside_are_checked_before_git_sees_them() {
    for good in ["main", "master", "release/2026.1", "feature/x-y_z", "v1.2"] {
        assert!(valid_branch_name(good), "{good}");
    }
    for bad in [
        "",
        "-main",
        "--upload-pack=evil",
        "/main",
        "main/",
        "main.",
        "a..b",
        "a//b",
        "a b",
        "a:b",
        "a~1",
        "a^",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "@",
        "a@{1}",
        ".hidden",
        "x/.hidden",
        "x.lock",
        "x/y.lock/z",
        "a\nb",
        "a\tb",
    ] {
        assert!(!valid_branch_name(bad), "{bad:?}");
    }
}

#[test]
fn credentials_in_urls_are_blanked_out() {
    assert_eq!(
        redact_url_credentials(
            "fatal: unable to access 'https://gitlab-ci-token:glcbt-s3cr3t@gitlab.example.com/acme/api.git/': 403"
        ),
        "fatal: unable to access 'https://***@gitlab.example.com/acme/api.git/': 403"
    );
    assert_eq!(
        redact_url_credentials("ssh://git@host/x and https://host/y"),
        "ssh://***@host/x and https://host/y"
    );
    assert_eq!(redact_url_credentials("no url here"), "no url here");
}

#[tokio::test]
async fn fetch_branch_brings_the_default_branch_from_origin() {
    let origin = Repo::new();
    origin.write(".changegate.toml", b"mode = \"enforce\"\n");
    origin.commit("config");
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", origin.path().display());
    let out = Command::new("git")
        .args(["clone", "-q", "--depth=1", "--no-checkout", &url])
        .arg(clone.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rev = "refs/remotes/origin/release";
    origin.git(&["branch", "release"]);
    assert_eq!(
        file_at(clone.path(), rev, ".changegate.toml"),
        FileAtRev::NoRevision
    );
    fetch_branch(clone.path(), "release", true, FETCH_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        file_at(clone.path(), rev, ".changegate.toml"),
        FileAtRev::Found("mode = \"enforce\"\n".into())
    );
    let err = fetch_branch(clone.path(), "no-such-branch", true, FETCH_TIMEOUT)
        .await
        .unwrap_err();
    assert!(err.reason.starts_with("git fetch failed"), "{err}");
    assert!(!err.no_git);
    let err = fetch_branch(
        clone.path(),
        "--upload-pack=touch /tmp/x",
        true,
        FETCH_TIMEOUT,
    )
    .await
    .unwrap_err();
    assert!(err.reason.contains("not a valid branch name"), "{err}");
}

#[test]
fn outside_git_and_ci_there_is_nothing_to_gate() {
    let dir = tempfile::tempdir().unwrap();
    let err = pipeline::detect(&HashMap::new(), dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("pass --commit SHA"), "{err}");
    // An empty repository has no HEAD either.
    let repo = Repo::new();
    assert!(pipeline::detect(&HashMap::new(), repo.path(), None).is_err());
}

#[test]
fn paths_git_would_quote_are_read_verbatim() {
    let repo = Repo::new();
    repo.write("app.txt", b"v1\n");
    let base = repo.commit("init");
    let names = [
        "migrations/002_drop_é.sql",
        "migrations/say \"hi\".sql",
        "migrations/back\\slash.sql",
        "migrations/tab\there.sql",
        "migrations/new\nline.sql",
    ];
    for name in names {
        repo.write(name, b"drop table t;\n");
    }
    let head = repo.commit("hostile names");
    let mut want: Vec<&str> = names.to_vec();
    want.sort();
    for stats in [
        range_stats(repo.path(), Some(&base), &head).unwrap(),
        range_stats(repo.path(), None, &head).unwrap(),
    ] {
        let mut got = stats.paths.clone();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(stats.lines, Some(5));
    }
}

#[test]
fn a_shallow_clone_has_no_facts_for_its_boundary_commit() {
    let (repo, _, head) = repo_with_history();
    let clone = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let out = Command::new("git")
        .args(["clone", "-q", "--depth", "1", &url])
        .arg(clone.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not every file of the tree as if the commit had created them: unknown.
    assert_eq!(range_stats(clone.path(), None, &head), None);
    // The full checkout still knows the commit's own change.
    assert_eq!(
        range_stats(repo.path(), None, &head).unwrap().lines,
        Some(1)
    );
}

#[test]
fn gitattributes_of_the_change_cannot_hide_its_lines() {
    let (repo, base, _) = repo_with_history();
    // `* -diff` (or `binary`) makes git show `-` counts for every text file: 0 lines.
    repo.write(".gitattributes", b"* -diff\n");
    let big: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    repo.write("big.txt", big.as_bytes());
    // A real binary stays uncountable, and touched.
    repo.write("logo.png", &[0, 159, 146, 150, 0, 1]);
    let head = repo.commit("hide the size");
    for stats in [
        range_stats(repo.path(), Some(&base), &head).unwrap(),
        range_stats(repo.path(), None, &head).unwrap(),
    ] {
        // 5000 lines of big.txt and the attributes file's one line: nothing hidden.
        assert!(stats.lines.unwrap() >= 5001, "{:?}", stats.lines);
        assert!(
            stats.paths.iter().any(|p| p == "logo.png"),
            "{:?}",
            stats.paths
        );
    }
}

#[test]
fn a_merge_commit_alone_is_its_change_against_its_first_parent() {
    let (repo, _, _) = repo_with_history();
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("infra/main.tf", b"a\nb\n");
    repo.commit("side change");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("app.txt", b"one\n2\nthree\nfour\nfive\n");
    repo.commit("main change");
    repo.clock.set(repo.clock.get() + 1);
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);
    let head = repo.git(&["rev-parse", "HEAD"]);
    let stats = range_stats(repo.path(), None, &head).unwrap();
    // What the merge brought onto main: the side branch's file, never nothing.
    assert_eq!(stats.paths, ["infra/main.tf"]);
    assert_eq!(stats.lines, Some(2));
    assert_eq!(stats.commits[0].subject, "merge side");
}

#[test]
fn a_mode_change_touches_its_path_with_no_lines() {
    let repo = Repo::new();
    repo.write("deploy.sh", b"echo hi\n");
    let base = repo.commit("init");
    repo.git(&["update-index", "--chmod=+x", "deploy.sh"]);
    repo.git(&["commit", "-q", "-m", "executable"]);
    let head = repo.git(&["rev-parse", "HEAD"]);
    let stats = range_stats(repo.path(), Some(&base), &head).unwrap();
    assert_eq!(stats.paths, ["deploy.sh"]);
    assert_eq!(stats.lines, Some(0));
}

#[test]
fn a_folder_replaced_by_a_file_touches_both() {
    let repo = Repo::new();
    repo.write("conf/a.toml", b"x = 1\ny = 2\n");
    let base = repo.commit("init");
    std::fs::remove_dir_all(repo.path().join("conf")).unwrap();
    repo.write("conf", b"one line\n");
    let head = repo.commit("flatten");
    let stats = range_stats(repo.path(), Some(&base), &head).unwrap();
    assert_eq!(stats.paths, ["conf", "conf/a.toml"]);
    assert_eq!(stats.lines, Some(3));
}

#[test]
fn a_sha256_repository_is_read_too() {
    let repo = Repo {
        dir: tempfile::tempdir().unwrap(),
        clock: std::cell::Cell::new(0),
    };
    repo.git(&["init", "-q", "-b", "main", "--object-format=sha256"]);
    repo.write("app.txt", b"one\n");
    let base = repo.commit("init");
    repo.write("app.txt", b"one\ntwo\n");
    let head = repo.commit("two");
    assert_eq!(head.len(), 64);
    let stats = range_stats(repo.path(), Some(&base), &head).unwrap();
    assert_eq!(
        (stats.paths, stats.lines),
        (vec!["app.txt".to_string()], Some(1))
    );
    assert_eq!(detect(repo.path()).unwrap().commit_sha, head);
}
