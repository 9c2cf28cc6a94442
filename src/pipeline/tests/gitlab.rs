//! The GitLab CI reader: predefined variables of merge request and branch pipelines
//! (names and meanings from the shared reference, api-contracts.md §4.6).

use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::pipeline;

const SHA: &str = "1111111111111111111111111111111111111111";
const BEFORE: &str = "2222222222222222222222222222222222222222";
const DIFF_BASE: &str = "3333333333333333333333333333333333333333";
const NULL: &str = "0000000000000000000000000000000000000000";

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What every job of a pipeline sees.
fn common() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CI", "true"),
        ("GITLAB_CI", "true"),
        ("CI_PROJECT_PATH", "acme/payments/api"),
        ("CI_PROJECT_NAME", "api"),
        (
            "CI_PROJECT_URL",
            "https://gitlab.example.com/acme/payments/api",
        ),
        ("CI_API_V4_URL", "https://gitlab.example.com/api/v4"),
        ("CI_COMMIT_SHA", SHA),
        ("CI_COMMIT_TITLE", "OPS-7: cache the rates (#12)"),
        (
            "CI_COMMIT_MESSAGE",
            "OPS-7: cache the rates (#12)\n\nCloses INC0012345",
        ),
        ("CI_COMMIT_AUTHOR", "Dev One <dev@example.com>"),
        ("CI_COMMIT_TIMESTAMP", "2026-02-18T10:00:00+01:00"),
        (
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/acme/payments/api/-/pipelines/900",
        ),
        (
            "CI_JOB_URL",
            "https://gitlab.example.com/acme/payments/api/-/jobs/901",
        ),
        ("GITLAB_USER_LOGIN", "dev1"),
        ("CI_DEFAULT_BRANCH", "main"),
    ]
}

fn merge_request_pipeline() -> HashMap<String, String> {
    let mut pairs = common();
    pairs.extend([
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        // GitLab sets the null SHA as "before" in merge request pipelines.
        ("CI_COMMIT_BEFORE_SHA", NULL),
        ("CI_COMMIT_REF_NAME", "feature/OPS-7-cache"),
        ("CI_MERGE_REQUEST_IID", "12"),
        ("CI_MERGE_REQUEST_TITLE", "Cache the exchange rates"),
        ("CI_MERGE_REQUEST_LABELS", "backend, performance,"),
        ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", "feature/OPS-7-cache"),
        ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main"),
        ("CI_MERGE_REQUEST_DIFF_BASE_SHA", DIFF_BASE),
        ("CI_MERGE_REQUEST_EVENT_TYPE", "detached"),
    ]);
    vars(&pairs)
}

fn branch_pipeline() -> HashMap<String, String> {
    let mut pairs = common();
    pairs.extend([
        ("CI_PIPELINE_SOURCE", "push"),
        ("CI_COMMIT_BEFORE_SHA", BEFORE),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_ENVIRONMENT_NAME", "production"),
    ]);
    vars(&pairs)
}

#[test]
fn merge_request_pipeline_reads_the_merge_request() {
    let d = detect(&merge_request_pipeline()).unwrap();
    assert_eq!(d.platform, Platform::Gitlab);
    assert_eq!(d.repository.as_deref(), Some("acme/payments/api"));
    assert_eq!(
        d.repository_url.as_deref(),
        Some("https://gitlab.example.com/acme/payments/api")
    );
    assert_eq!(d.commit_sha, SHA);
    assert_eq!(d.branch.as_deref(), Some("feature/OPS-7-cache"));
    let mr = d.pull_request.as_ref().expect("a merge request");
    assert_eq!(mr.number, 12);
    assert_eq!(mr.title, "Cache the exchange rates");
    assert_eq!(
        mr.url.as_deref(),
        Some("https://gitlab.example.com/acme/payments/api/-/merge_requests/12")
    );
    assert_eq!(mr.head_ref.as_deref(), Some("feature/OPS-7-cache"));
    assert_eq!(mr.base_ref.as_deref(), Some("main"));
    assert_eq!(mr.labels, ["backend", "performance"]);
    assert_eq!(
        mr.head_sha, None,
        "only merged-result pipelines name the source SHA"
    );
    // The merge request's diff base, not the null "before".
    assert_eq!(d.range, Some((DIFF_BASE.to_string(), SHA.to_string())));
    assert_eq!(d.commits.len(), 1);
    let c = &d.commits[0];
    assert_eq!(c.sha, SHA);
    assert_eq!(c.subject, "OPS-7: cache the rates (#12)");
    assert_eq!(c.author.as_deref(), Some("Dev One <dev@example.com>"));
    assert_eq!(
        c.timestamp.map(|t| t.to_rfc3339()),
        Some("2026-02-18T09:00:00+00:00".to_string())
    );
    assert_eq!(
        d.run_url.as_deref(),
        Some("https://gitlab.example.com/acme/payments/api/-/pipelines/900")
    );
    assert_eq!(d.actor.as_deref(), Some("dev1"));
    // GitLab names no merge request author: the commit's e-mail stands for the author.
    assert_eq!(
        d.author,
        Some(crate::domain::Author::email("dev@example.com"))
    );
    assert_eq!(d.lines_changed, None);
}

#[test]
fn merge_request_from_a_fork_links_to_the_target_project() {
    let mut v = merge_request_pipeline();
    v.insert(
        "CI_MERGE_REQUEST_PROJECT_URL".into(),
        "https://gitlab.example.com/acme/payments/api-upstream/".into(),
    );
    v.insert("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA".into(), "4".repeat(40));
    let d = detect(&v).unwrap();
    let mr = d.pull_request.unwrap();
    assert_eq!(
        mr.url.as_deref(),
        Some("https://gitlab.example.com/acme/payments/api-upstream/-/merge_requests/12")
    );
    assert_eq!(mr.head_sha, Some("4".repeat(40)));
}

#[test]
fn branch_pipeline_reads_the_push_range() {
    let d = detect(&branch_pipeline()).unwrap();
    assert_eq!(d.pull_request, None);
    assert_eq!(d.branch.as_deref(), Some("main"));
    assert_eq!(d.commit_sha, SHA);
    assert_eq!(
        d.range, None,
        "a push's range starts at the last deployed commit"
    );
    assert_eq!(d.before.as_deref(), Some(BEFORE));
}

#[test]
fn first_push_of_a_branch_has_no_range() {
    let mut v = branch_pipeline();
    v.insert("CI_COMMIT_BEFORE_SHA".into(), NULL.into());
    assert_eq!(detect(&v).unwrap().before, None);
    v.remove("CI_COMMIT_BEFORE_SHA");
    assert_eq!(detect(&v).unwrap().before, None);
}

#[test]
fn a_bad_merge_request_iid_is_no_merge_request() {
    let mut v = merge_request_pipeline();
    v.insert("CI_MERGE_REQUEST_IID".into(), "twelve".into());
    let d = detect(&v).unwrap();
    assert_eq!(d.pull_request, None);
    // Without a merge request the null "before" gives no range either.
    assert_eq!((d.range, d.before), (None, None));
}

#[test]
fn work_items_come_from_title_message_and_branch() {
    let dir = tempfile::tempdir().unwrap();
    let d = pipeline::detect(&merge_request_pipeline(), dir.path(), None).unwrap();
    let f = d.into_facts("api", "staging", None, None, dir.path());
    assert_eq!(f.work_items, ["#12", "INC0012345", "OPS-7"]);
    assert_eq!(f.service_id, "acme/payments/api");
    assert_eq!(
        f.key().to_string(),
        format!("changegate:acme/payments/api:staging:{SHA}")
    );
    assert_eq!(
        f.first_commit_at().map(|t| t.to_rfc3339()),
        Some("2026-02-18T09:00:00+00:00".to_string())
    );
}

#[test]
fn minimal_variables_are_enough() {
    let v = vars(&[("GITLAB_CI", "true"), ("CI_COMMIT_SHA", SHA)]);
    let d = pipeline::detect(&v, Path::new("/nonexistent"), None).unwrap();
    assert_eq!(d.platform, Platform::Gitlab);
    assert_eq!(d.commit_sha, SHA);
    assert_eq!((d.repository, d.pull_request, d.range), (None, None, None));
    assert!(d.commits.is_empty());
    // And no commit at all is an error, not an empty key.
    let v = vars(&[("GITLAB_CI", "true")]);
    let err = pipeline::detect(&v, Path::new("/nonexistent"), None).unwrap_err();
    assert!(err.to_string().contains("no commit to gate"), "{err}");
}

#[test]
fn a_merge_requests_description_is_a_text_for_tickets_a_branch_pipelines_is_not() {
    let mut mr = merge_request_pipeline();
    mr.insert(
        "CI_MERGE_REQUEST_DESCRIPTION".into(),
        "Customers saw RITM0010002.".into(),
    );
    let d = detect(&mr).unwrap();
    assert_eq!(
        d.texts,
        [
            "OPS-7: cache the rates (#12)\n\nCloses INC0012345",
            "Customers saw RITM0010002."
        ]
    );
    let mut branch = branch_pipeline();
    branch.insert("CI_MERGE_REQUEST_DESCRIPTION".into(), "stale".into());
    let d = detect(&branch).unwrap();
    assert_eq!(
        d.texts,
        ["OPS-7: cache the rates (#12)\n\nCloses INC0012345"]
    );
}
