//! Table tests of the evidence rules: what counts as an approval and as passed tests.

use super::*;

const HEAD: &str = "1111111111111111111111111111111111111111";
const OLD: &str = "2222222222222222222222222222222222222222";

fn review(login: &str, state: &str, commit: Option<&str>) -> Review {
    Review {
        login: login.into(),
        state: state.into(),
        commit: commit.map(str::to_string),
    }
}

fn github(reviews: Vec<Review>) -> ReviewEvidence {
    ReviewEvidence {
        forge: "GitHub".into(),
        number: Some(5),
        author: Some("octocat".into()),
        head: Some(HEAD.into()),
        per_commit: true,
        reviews,
    }
}

#[test]
fn review_rule_table() {
    let cases: Vec<(&str, Vec<Review>, bool, bool, &str)> = vec![
        (
            "another person approved the head",
            vec![review("alice", "APPROVED", Some(HEAD))],
            true,
            true,
            "approved by @alice on its head 111111111111",
        ),
        (
            "the author approved their own",
            vec![review("OctoCat", "APPROVED", Some(HEAD))],
            true,
            false,
            "only by its author @octocat",
        ),
        (
            "the author's own approval counts when separation is off",
            vec![review("octocat", "APPROVED", Some(HEAD))],
            false,
            true,
            "approved by @octocat",
        ),
        (
            "an approval of an older head",
            vec![review("alice", "APPROVED", Some(OLD))],
            true,
            false,
            "only on an older commit (@alice on 222222222222)",
        ),
        (
            "the latest verdict counts: approved, then changes requested",
            vec![
                review("alice", "APPROVED", Some(HEAD)),
                review("alice", "CHANGES_REQUESTED", Some(HEAD)),
            ],
            true,
            false,
            "changes requested by @alice",
        ),
        (
            "a comment after an approval leaves the approval",
            vec![
                review("alice", "APPROVED", Some(HEAD)),
                review("alice", "COMMENTED", Some(HEAD)),
            ],
            true,
            true,
            "approved by @alice",
        ),
        (
            "a dismissed approval does not count",
            vec![
                review("alice", "APPROVED", Some(HEAD)),
                review("alice", "DISMISSED", Some(HEAD)),
            ],
            true,
            false,
            "no approving review",
        ),
        (
            "comments only",
            vec![review("bob", "COMMENTED", Some(HEAD))],
            true,
            false,
            "no approving review",
        ),
        (
            "a review of a commit GitHub no longer knows",
            vec![review("alice", "APPROVED", None)],
            true,
            false,
            "a commit no longer known",
        ),
    ];
    for (what, reviews, separate, passed, reason) in cases {
        let rule = review_rule(&github(reviews), separate, None);
        assert_eq!(rule.passed, passed, "{what}: {}", rule.reason);
        assert!(rule.reason.contains(reason), "{what}: {}", rule.reason);
    }
}

#[test]
fn no_pull_request_and_an_unknown_author_fail_closed() {
    let mut ev = github(vec![review("alice", "APPROVED", Some(HEAD))]);
    ev.number = None;
    let rule = review_rule(&ev, true, Some(true));
    assert!(!rule.passed);
    assert!(rule.reason.contains("no merged or open"), "{}", rule.reason);
    assert!(
        rule.reason.contains("CHANGEGATE_REVIEWED=true is ignored"),
        "{}",
        rule.reason
    );
    let mut ev = github(vec![review("alice", "APPROVED", Some(HEAD))]);
    ev.author = None;
    assert!(!review_rule(&ev, true, None).passed);
    assert!(review_rule(&ev, false, None).passed);
}

#[test]
fn gitlab_approvals_are_not_tied_to_a_commit() {
    let ev = ReviewEvidence {
        forge: "GitLab".into(),
        number: Some(3),
        author: Some("dev".into()),
        head: Some(HEAD.into()),
        per_commit: false,
        reviews: vec![
            review("dev", "APPROVED", None),
            review("lead", "APPROVED", None),
        ],
    };
    let rule = review_rule(&ev, true, None);
    assert!(rule.passed, "{}", rule.reason);
    assert_eq!(approvers(&ev, true), ["lead"]);
    let own = ReviewEvidence {
        reviews: vec![review("dev", "APPROVED", None)],
        ..ev
    };
    assert!(!review_rule(&own, true, None).passed);
}

fn check(name: &str, state: CheckState, this_run: bool) -> Check {
    Check {
        name: name.into(),
        state,
        word: format!("{state:?}").to_lowercase(),
        this_run,
    }
}

fn tests(checks: Vec<Check>) -> TestsEvidence {
    TestsEvidence {
        forge: "GitHub".into(),
        sha: HEAD.into(),
        checks,
    }
}

#[test]
fn tests_rule_table() {
    use CheckState::*;
    let none: Vec<String> = Vec::new();
    let ci = vec!["ci/test".to_string()];
    type Case<'a> = (&'a str, Vec<Check>, &'a Vec<String>, bool, &'a str);
    let cases: Vec<Case> = vec![
        (
            "every other check passed",
            vec![
                check("test", Passed, false),
                check("lint", Passed, false),
                check("changegate / production", Failed, false),
                check("deploy", Pending, true),
            ],
            &none,
            true,
            "2 checks of 111111111111 passed on GitHub: test, lint",
        ),
        (
            "one failed",
            vec![check("test", Failed, false), check("lint", Passed, false)],
            &none,
            false,
            "not passed: test (failed)",
        ),
        (
            "another workflow still running",
            vec![check("test", Pending, false)],
            &none,
            false,
            "not passed: test (pending)",
        ),
        (
            "no check at all",
            vec![check("changegate/production", Passed, false)],
            &none,
            false,
            "no finished check",
        ),
        (
            "a later job of this pipeline not started",
            vec![
                check("test", Passed, false),
                check("record", NotStarted, true),
            ],
            &none,
            true,
            "1 check of",
        ),
        (
            "the required check passed, another failed",
            vec![
                check("ci/test", Passed, false),
                check("flaky", Failed, false),
            ],
            &ci,
            true,
            "required checks of 111111111111 passed on GitHub: ci/test",
        ),
        (
            "the required check is missing",
            vec![check("flaky", Passed, false)],
            &ci,
            false,
            "missing: ci/test",
        ),
        (
            "the required check failed once of two",
            vec![
                check("ci/test", Passed, false),
                check("ci/test", Failed, false),
            ],
            &ci,
            false,
            "not passed: ci/test (failed)",
        ),
    ];
    for (what, checks, required, passed, reason) in cases {
        let rule = tests_rule(&tests(checks), required, None);
        assert_eq!(rule.passed, passed, "{what}: {}", rule.reason);
        assert!(rule.reason.contains(reason), "{what}: {}", rule.reason);
    }
    let rule = tests_rule(&tests(vec![]), &none, Some(true));
    assert!(
        rule.reason.contains("is ignored: GitHub was asked"),
        "{}",
        rule.reason
    );
}
