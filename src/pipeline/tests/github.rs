//! The GitHub Actions reader against the real webhook payloads (tests/fixtures/reference).

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::pipeline;

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/reference/github-webhooks/examples"
);

/// The head and base of the example pull request (Codertocat/Hello-World#2).
const HEAD: &str = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
const BASE: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";
/// What GITHUB_SHA is for a pull_request run: the merge commit of the PR's merge ref.
const MERGE: &str = "3c0ffee3c0ffee3c0ffee3c0ffee3c0ffee3c0ff";
/// The pushed commit of the push examples.
const PUSHED: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

fn example(rel: &str) -> String {
    let path = format!("{EXAMPLES}/{rel}");
    assert!(
        Path::new(&path).is_file(),
        "reference payload missing: {path}"
    );
    path
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The variables a runner sets for a `pull_request` run of the example repository.
fn pr_run(payload: &str) -> HashMap<String, String> {
    vars(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_SERVER_URL", "https://github.com"),
        ("GITHUB_REPOSITORY", "Codertocat/Hello-World"),
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_EVENT_PATH", &example(payload)),
        ("GITHUB_SHA", MERGE),
        ("GITHUB_REF_NAME", "2/merge"),
        ("GITHUB_HEAD_REF", "changes"),
        ("GITHUB_BASE_REF", "master"),
        ("GITHUB_RUN_ID", "4242"),
        ("GITHUB_RUN_ATTEMPT", "1"),
        ("GITHUB_ACTOR", "octo-dev"),
    ])
}

fn push_run(payload: &str) -> HashMap<String, String> {
    vars(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "Codertocat/Hello-World"),
        ("GITHUB_EVENT_NAME", "push"),
        ("GITHUB_EVENT_PATH", &example(payload)),
        ("GITHUB_REF_NAME", "master"),
        ("GITHUB_RUN_ID", "77"),
    ])
}

#[test]
fn pull_request_payloads() {
    for payload in [
        "pull_request/opened.payload.json",
        "pull_request/synchronize.payload.json",
        "pull_request/opened.with-null-body.json",
    ] {
        let d = detect(&pr_run(payload)).unwrap();
        assert_eq!(d.platform, Platform::Github, "{payload}");
        assert_eq!(d.repository.as_deref(), Some("Codertocat/Hello-World"));
        assert_eq!(
            d.repository_url.as_deref(),
            Some("https://github.com/Codertocat/Hello-World")
        );
        // The commit is the one the job checked out; the PR head is recorded beside it.
        assert_eq!(d.commit_sha, MERGE, "{payload}");
        assert_eq!(d.branch.as_deref(), Some("changes"));
        let pr = d.pull_request.as_ref().expect("a pull request");
        assert_eq!(pr.number, 2);
        assert_eq!(pr.title, "Update the README with new information.");
        assert_eq!(
            pr.url.as_deref(),
            Some("https://github.com/Codertocat/Hello-World/pull/2")
        );
        assert_eq!(pr.head_sha.as_deref(), Some(HEAD));
        assert_eq!(pr.head_ref.as_deref(), Some("changes"));
        assert_eq!(pr.base_ref.as_deref(), Some("master"));
        assert_eq!(pr.labels, ["bug"]);
        assert_eq!(pr.reviewed, None, "the payload does not say");
        // additions 1 + deletions 1.
        assert_eq!(d.lines_changed, Some(2), "{payload}");
        assert_eq!(d.range, Some((BASE.to_string(), HEAD.to_string())));
        assert!(d.commits.is_empty() && d.paths.is_empty());
        assert_eq!(
            d.run_url.as_deref(),
            Some("https://github.com/Codertocat/Hello-World/actions/runs/4242")
        );
        assert_eq!(d.actor.as_deref(), Some("octo-dev"));
    }
}

#[test]
fn pull_request_body_is_searched_for_work_items_unless_null() {
    let d = detect(&pr_run("pull_request/opened.payload.json")).unwrap();
    assert_eq!(
        d.texts,
        ["This is a pretty simple change that we need to pull into master."]
    );
    let d = detect(&pr_run("pull_request/opened.with-null-body.json")).unwrap();
    assert!(d.texts.is_empty());
}

#[test]
fn push_to_a_new_branch() {
    // No GITHUB_SHA: the payload's `after` names the commit. `before` is the null SHA of a
    // new branch, so there is no range from the platform.
    let d = detect(&push_run("push/with-new-branch.payload.json")).unwrap();
    assert_eq!(d.commit_sha, PUSHED);
    assert_eq!((&d.range, &d.before), (&None, &None));
    assert_eq!(d.pull_request, None);
    assert_eq!(d.branch.as_deref(), Some("master"));
    assert_eq!(d.commits.len(), 1);
    let c = &d.commits[0];
    assert_eq!(c.sha, PUSHED);
    assert_eq!(c.subject, "Initial commit");
    assert_eq!(c.author.as_deref(), Some("Codertocat"));
    assert_eq!(
        c.timestamp.map(|t| t.to_rfc3339()),
        Some("2019-05-15T15:19:25+00:00".to_string())
    );
    // The commits before the branch's first are not listed: the paths are unknown.
    assert!(d.paths.is_empty(), "{:?}", d.paths);
    assert_eq!(d.lines_changed, None, "a push payload has no line counts");
    // No GITHUB_ACTOR: the pusher.
    assert_eq!(d.actor.as_deref(), Some("Codertocat"));
    assert_eq!(
        d.run_url.as_deref(),
        Some("https://github.com/Codertocat/Hello-World/actions/runs/77")
    );
    // No pull request: the pushed commit's author, by e-mail and by the login GitHub names.
    assert_eq!(
        d.author,
        Some(crate::domain::Author {
            login: Some("Codertocat".into()),
            email: Some("21031067+Codertocat@users.noreply.github.com".into()),
        })
    );
}

#[test]
fn a_pull_requests_author_is_its_opener() {
    let d = detect(&pr_run("pull_request/opened.payload.json")).unwrap();
    assert_eq!(d.author, Some(crate::domain::Author::login("Codertocat")));
}

#[test]
fn push_that_deletes_a_tag_has_no_commit_of_its_own() {
    // `after` is the null SHA: only GITHUB_SHA can name the commit.
    let d = detect(&push_run("push/payload.json")).unwrap();
    assert_eq!(d.commit_sha, "");
    assert_eq!(d.range, None);
    assert!(d.commits.is_empty() && d.paths.is_empty());
    let err = pipeline::detect(
        &push_run("push/payload.json"),
        Path::new("/nonexistent"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no commit to gate"), "{err}");

    let mut v = push_run("push/payload.json");
    v.insert("GITHUB_SHA".into(), PUSHED.into());
    let d = pipeline::detect(&v, Path::new("/nonexistent"), None).unwrap();
    assert_eq!(d.commit_sha, PUSHED);
}

/// The real push payload, rewritten to an ordinary push of two commits onto an existing branch.
fn two_commit_push(dir: &Path) -> String {
    let text = std::fs::read_to_string(example("push/with-new-branch.payload.json")).unwrap();
    let mut event: serde_json::Value = serde_json::from_str(&text).unwrap();
    let first = event["commits"][0].clone();
    let mut second = first.clone();
    second["id"] = "b".repeat(40).into();
    second["message"] = "PAY-42: fix rounding\n\nRefs INC0012345".into();
    second["timestamp"] = "2019-05-16T09:00:00-07:00".into();
    second["added"] = serde_json::json!(["migrations/002.sql"]);
    second["removed"] = serde_json::json!(["old.txt"]);
    second["modified"] = serde_json::json!(["README.md"]);
    event["commits"] = serde_json::json!([first, second]);
    event["before"] = BASE.into();
    event["after"] = "b".repeat(40).into();
    event["created"] = false.into();
    let path = dir.join("event.json");
    std::fs::write(&path, event.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn push_with_before_and_after_names_the_range_commits_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = push_run("push/with-new-branch.payload.json");
    v.insert("GITHUB_EVENT_PATH".into(), two_commit_push(dir.path()));
    v.insert("GITHUB_SHA".into(), "b".repeat(40));
    let d = detect(&v).unwrap();
    assert_eq!(d.commit_sha, "b".repeat(40));
    assert_eq!(
        d.range, None,
        "a push's range starts at the last deployed commit"
    );
    assert_eq!(d.before.as_deref(), Some(BASE));
    let subjects: Vec<&str> = d.commits.iter().map(|c| c.subject.as_str()).collect();
    assert_eq!(subjects, ["Initial commit", "PAY-42: fix rounding"]);
    assert_eq!(
        d.commits[1].timestamp.map(|t| t.to_rfc3339()),
        Some("2019-05-16T16:00:00+00:00".to_string())
    );
    // Sorted, without duplicates, added + removed + modified.
    assert_eq!(d.paths, ["README.md", "migrations/002.sql", "old.txt"]);

    // The facts: work items from the commit subjects, paths and range kept (no git here).
    let facts = d
        .clone()
        .into_facts("Hello-World", "production", None, None, dir.path());
    assert_eq!(facts.range, Some((BASE.to_string(), "b".repeat(40))));
    assert!(!facts.paths_unknown);
    assert_eq!(facts.work_items, ["INC0012345", "PAY-42"]);
    assert_eq!(facts.service_id, "Codertocat/Hello-World");
    assert_eq!(facts.paths, ["README.md", "migrations/002.sql", "old.txt"]);
    assert_eq!(facts.lines_changed, None);
    assert_eq!(
        facts.first_commit_at().map(|t| t.to_rfc3339()),
        Some("2019-05-15T15:19:25+00:00".to_string())
    );
}

#[test]
fn push_payload_paths_stand_only_for_their_own_whole_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = push_run("push/with-new-branch.payload.json");
    v.insert("GITHUB_EVENT_PATH".into(), two_commit_push(dir.path()));
    v.insert("GITHUB_SHA".into(), "b".repeat(40));
    let d = detect(&v).unwrap();
    // The backend knows an older deployed commit: the range starts there, and the payload's
    // paths (of `before..after` only) say nothing of it. No git here: unknown.
    let deployed = "d".repeat(40);
    let facts = d.into_facts(
        "Hello-World",
        "production",
        Some(&deployed),
        None,
        dir.path(),
    );
    assert_eq!(facts.range, Some((deployed, "b".repeat(40))));
    assert!(
        facts.paths_unknown && facts.paths.is_empty(),
        "{:?}",
        facts.paths
    );

    // A force push's diff may undo what only `before` had: unknown too.
    let path = dir.path().join("event.json");
    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    event["forced"] = true.into();
    std::fs::write(&path, event.to_string()).unwrap();
    assert!(detect(&v).unwrap().paths.is_empty());
    event["forced"] = false.into();
    std::fs::write(&path, event.to_string()).unwrap();
    assert!(!detect(&v).unwrap().paths.is_empty());

    // A list as long as GitHub's cap may have been cut: unknown too.
    let one = event["commits"][1].clone();
    event["commits"] = serde_json::Value::Array(vec![one; 2048]);
    std::fs::write(&path, event.to_string()).unwrap();
    let d = detect(&v).unwrap();
    assert!(d.paths.is_empty(), "{:?}", d.paths);
    let facts = d.into_facts("Hello-World", "production", None, None, dir.path());
    assert!(facts.paths_unknown);
}

#[test]
fn pull_request_facts() {
    let mut v = pr_run("pull_request/opened.payload.json");
    v.insert("CHANGEGATE_REVIEWED".into(), "true".into());
    let dir = tempfile::tempdir().unwrap();
    let d = pipeline::detect(&v, dir.path(), None).unwrap();
    assert_eq!(d.pull_request.as_ref().unwrap().reviewed, Some(true));
    let f = d.into_facts("Hello-World", "staging", None, Some(true), dir.path());
    assert_eq!(
        f.key().to_string(),
        format!("changegate:Codertocat/Hello-World:staging:{MERGE}")
    );
    assert_eq!(f.lines_changed, Some(2));
    assert_eq!(f.range, Some((BASE.to_string(), HEAD.to_string())));
    assert_eq!(f.tests_passed, Some(true));
    assert_eq!(
        f.summary(),
        "Deploy Hello-World to staging: Update the README with new information. (#2, 3c0ffee3c0ff)"
    );
}

#[test]
fn reviewed_variable_words() {
    for (word, want) in [
        ("true", true),
        ("1", true),
        ("yes", true),
        ("false", false),
        ("no", false),
    ] {
        let mut v = pr_run("pull_request/opened.payload.json");
        v.insert("CHANGEGATE_REVIEWED".into(), word.into());
        let d = pipeline::detect(&v, Path::new("/nonexistent"), None).unwrap();
        assert_eq!(d.pull_request.unwrap().reviewed, Some(want), "{word}");
    }
}

#[test]
fn deployment_payload_names_the_commit() {
    let mut v = push_run("deployment/payload.json");
    v.insert("GITHUB_EVENT_NAME".into(), "deployment".into());
    let d = detect(&v).unwrap();
    assert_eq!(d.commit_sha, BASE);
}

#[test]
fn run_url_names_a_rerun_attempt() {
    let mut v = pr_run("pull_request/opened.payload.json");
    v.insert("GITHUB_RUN_ATTEMPT".into(), "3".into());
    v.insert(
        "GITHUB_SERVER_URL".into(),
        "https://ghe.example.com/".into(),
    );
    let d = detect(&v).unwrap();
    assert_eq!(
        d.run_url.as_deref(),
        Some("https://ghe.example.com/Codertocat/Hello-World/actions/runs/4242/attempts/3")
    );
}

#[test]
fn without_a_payload_the_variables_stand_alone() {
    let v = vars(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_REPOSITORY", "acme/api"),
        ("GITHUB_SHA", PUSHED),
        ("GITHUB_REF_NAME", "main"),
    ]);
    let d = detect(&v).unwrap();
    assert_eq!(d.commit_sha, PUSHED);
    assert_eq!(d.branch.as_deref(), Some("main"));
    assert_eq!((d.pull_request, d.range, d.run_url), (None, None, None));
    // An empty variable counts as unset.
    let mut v = v;
    v.insert("GITHUB_EVENT_PATH".into(), "  ".into());
    assert!(detect(&v).is_ok());
}

#[test]
fn unreadable_or_broken_payload_is_an_error_naming_the_file() {
    let mut v = push_run("push/payload.json");
    v.insert("GITHUB_EVENT_PATH".into(), "/nonexistent/event.json".into());
    let err = format!("{:#}", detect(&v).unwrap_err());
    assert!(
        err.contains("cannot read the GitHub event payload /nonexistent/event.json"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.json");
    std::fs::write(&path, "{ not json").unwrap();
    v.insert("GITHUB_EVENT_PATH".into(), path.display().to_string());
    let err = format!("{:#}", detect(&v).unwrap_err());
    assert!(err.contains("is not valid JSON"), "{err}");
}

#[test]
fn github_wins_detection_only_when_github_actions_is_true() {
    let mut v = pr_run("pull_request/opened.payload.json");
    assert_eq!(
        pipeline::detect(&v, Path::new("/x"), None)
            .unwrap()
            .platform,
        Platform::Github
    );
    v.insert("GITHUB_ACTIONS".into(), "false".into());
    v.insert("GITLAB_CI".into(), "true".into());
    v.insert("CI_COMMIT_SHA".into(), PUSHED.into());
    assert_eq!(
        pipeline::detect(&v, Path::new("/x"), None)
            .unwrap()
            .platform,
        Platform::Gitlab
    );
    // --commit overrides what the platform says.
    let full = "ABC123".repeat(7)[..40].to_string();
    let d = pipeline::detect(&v, Path::new("/x"), Some(&format!(" {full} "))).unwrap();
    assert_eq!(d.commit_sha, full.to_ascii_lowercase());
    // Not a SHA, or an abbreviation with no checkout to resolve it in: refused.
    for bad in ["abc123", "abc1234", "-x", "a:b", ""] {
        let err = pipeline::detect(&v, Path::new("/x"), Some(bad)).unwrap_err();
        assert!(err.to_string().contains("--commit"), "{bad:?}: {err}");
    }
}

#[test]
fn line_counts_saturate() {
    let text = std::fs::read_to_string(example("pull_request/opened.payload.json")).unwrap();
    let mut event: serde_json::Value = serde_json::from_str(&text).unwrap();
    event["pull_request"]["additions"] = serde_json::json!(u64::MAX);
    event["pull_request"]["deletions"] = serde_json::json!(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event.json");
    std::fs::write(&path, event.to_string()).unwrap();
    let mut run = pr_run("pull_request/opened.payload.json");
    run.insert("GITHUB_EVENT_PATH".into(), path.display().to_string());
    let d = detect(&run).unwrap();
    // Wrapping would make this 0 lines: small enough to pre-approve.
    assert_eq!(d.lines_changed, Some(u64::MAX));
}

#[test]
fn a_deployments_author_is_its_pull_requests_opener_else_who_started_it() {
    let mut v = pr_run("deployment_protection_rule/requested.DERIVED.payload.json");
    v.insert(
        "GITHUB_EVENT_NAME".into(),
        "deployment_protection_rule".into(),
    );
    v.remove("GITHUB_HEAD_REF");
    v.remove("GITHUB_BASE_REF");
    let d = detect(&v).unwrap();
    // The real payload lists no pull request: the deployment's creator stands in.
    assert_eq!(d.author, Some(crate::domain::Author::login("Codertocat")));
}
