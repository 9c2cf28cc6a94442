//! Table-driven tests of every policy rule, and of how the rules combine into a decision.

// Tables of tuples read best inline.
#![allow(clippy::type_complexity)]

use chrono::{DateTime, NaiveDate, Utc};

use super::*;
use crate::domain::change::{Platform, PullRequest};
use crate::domain::decision::Gate;
use crate::domain::history::SprintTally;

/// The calendar every test uses: sprint 1 starts on Monday 2026-01-19, 14 days long, so
/// sprint 0 is the one from Monday 2026-01-05.
fn calendar() -> SprintCalendar {
    SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 19).unwrap(), 14)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Wednesday of sprint 3.
const NOW: &str = "2026-02-18T10:00:00Z";

fn facts() -> ChangeFacts {
    ChangeFacts {
        platform: Platform::Local,
        service: "payments-api".into(),
        service_id: "acme/payments-api".into(),
        environment: "production".into(),
        repository: Some("acme/payments-api".into()),
        commit_sha: "a".repeat(40),
        branch: Some("main".into()),
        pull_request: None,
        range: None,
        commits: Vec::new(),
        lines_changed: Some(10),
        paths: vec!["src/lib.rs".into()],
        paths_unknown: false,
        work_items: Vec::new(),
        run_url: None,
        repository_url: None,
        actor: None,
        author: None,
        tests_passed: None,
        evidence: Default::default(),
    }
}

fn pr(labels: &[&str], reviewed: Option<bool>) -> PullRequest {
    PullRequest {
        number: 7,
        title: "Fix rounding".into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        reviewed,
        ..PullRequest::default()
    }
}

/// `ok` successes then `bad` failures, newest first, all counted as closed.
fn history(ok: usize, bad: usize) -> History {
    let mut recent = vec![Outcome::Success; ok];
    recent.extend(vec![Outcome::Failure; bad]);
    History {
        closed_total: (ok + bad) as u64,
        recent,
        sprints: Default::default(),
    }
}

/// A healthy history: enough closed changes, all succeeded, a fresh allowance of 2.
fn healthy() -> History {
    history(20, 0)
}

fn policy() -> Policy {
    Policy::default() // min_history 5, window 20, 90%, allowance initial 2
}

fn decide_with(
    facts: &ChangeFacts,
    history: &History,
    policy: &Policy,
    now: &str,
    emergency: Option<&str>,
) -> Decision {
    decide(&DecisionInput {
        facts,
        history,
        policy,
        calendar: calendar(),
        now: at(now),
        emergency: emergency.map(str::to_string),
        clock_override: None,
    })
}

fn rule<'a>(d: &'a Decision, code: &str) -> &'a Rule {
    d.rules
        .iter()
        .find(|r| r.code == code)
        .unwrap_or_else(|| panic!("no rule {code} in {:#?}", d.rules))
}

fn has_rule(d: &Decision, code: &str) -> bool {
    d.rules.iter().any(|r| r.code == code)
}

#[test]
fn a_healthy_change_is_pre_approved_with_every_rule_listed() {
    let d = decide_with(&facts(), &healthy(), &policy(), NOW, None);
    assert_eq!(d.kind, DecisionKind::PreApproved, "{:#?}", d.rules);
    let codes: Vec<&str> = d.rules.iter().map(|r| r.code.as_str()).collect();
    assert_eq!(
        codes,
        [codes::TRACK_RECORD, codes::ALLOWANCE, codes::FREEZE]
    );
    assert!(d.rules.iter().all(|r| r.passed));
    assert_eq!(d.sprint, 3);
    assert_eq!((d.allowance, d.allowance_used), (2, 0));
    assert_eq!(d.emergency, None);
    assert_eq!(d.mode, Mode::Enforce);
}

#[test]
fn track_record() {
    struct Case {
        name: &'static str,
        ok: usize,
        bad: usize,
        closed_total: Option<u64>,
        min_history: u32,
        window: u32,
        rate: f64,
        passed: bool,
        reason: &'static str,
    }
    let base = Case {
        name: "",
        ok: 0,
        bad: 0,
        closed_total: None,
        min_history: 5,
        window: 20,
        rate: 0.9,
        passed: true,
        reason: "",
    };
    let cases = [
        Case {
            name: "no history at all",
            passed: false,
            reason: "0 closed changes, 5 needed for a track record",
            ..base
        },
        Case {
            name: "one closed change is one, not one changes",
            ok: 1,
            passed: false,
            reason: "1 closed change, 5 needed for a track record",
            ..base
        },
        Case {
            name: "too few closed",
            ok: 4,
            passed: false,
            reason: "4 closed changes, 5 needed for a track record",
            ..base
        },
        Case {
            name: "exactly min_history",
            ok: 5,
            reason: "success rate 100% over last 5 ≥ 90%",
            ..base
        },
        Case {
            name: "rate exactly at target",
            ok: 18,
            bad: 2,
            reason: "success rate 90% over last 20 ≥ 90%",
            ..base
        },
        Case {
            name: "rate above target",
            ok: 23,
            bad: 2,
            window: 25,
            reason: "success rate 92% over last 25 ≥ 90%",
            ..base
        },
        Case {
            name: "rate below target",
            ok: 17,
            bad: 3,
            passed: false,
            reason: "success rate 85% over last 20 < 90%",
            ..base
        },
        Case {
            // The ledger returns at most `window` outcomes, but the rule must not read past it
            // either: the 2 old failures beyond the window of 10 do not count.
            name: "window bounds the rate",
            ok: 10,
            bad: 2,
            window: 10,
            reason: "success rate 100% over last 10 ≥ 90%",
            ..base
        },
        Case {
            name: "window of recent failures fails whatever the total",
            ok: 0,
            bad: 3,
            closed_total: Some(500),
            window: 3,
            passed: false,
            reason: "success rate 0% over last 3 < 90%",
            ..base
        },
        Case {
            name: "min_history 0 with no history",
            min_history: 0,
            reason: "no closed changes yet, none needed for a track record",
            ..base
        },
        Case {
            // A backend that counts closed changes but returns none of their outcomes has not
            // established a track record: fail closed.
            name: "closed changes counted but no outcome read",
            ok: 0,
            bad: 0,
            closed_total: Some(12),
            passed: false,
            reason: "unknown: 12 closed changes counted but no outcome could be read to rate",
            ..base
        },
        Case {
            name: "lower target",
            ok: 3,
            bad: 2,
            rate: 0.6,
            reason: "success rate 60% over last 5 ≥ 60%",
            ..base
        },
    ];
    for c in cases {
        let mut h = history(c.ok, c.bad);
        if let Some(total) = c.closed_total {
            h.closed_total = total;
        }
        let mut p = policy();
        p.params.min_history = c.min_history;
        p.params.window = c.window;
        p.params.min_success_rate = c.rate;
        let d = decide_with(&facts(), &h, &p, NOW, None);
        let r = rule(&d, codes::TRACK_RECORD);
        assert_eq!(r.passed, c.passed, "{}: {}", c.name, r.reason);
        assert_eq!(r.reason, c.reason, "{}", c.name);
        let want = if c.passed {
            DecisionKind::PreApproved
        } else {
            DecisionKind::NeedsApproval
        };
        assert_eq!(d.kind, want, "{}", c.name);
    }
}

#[test]
fn allowance() {
    // (name, this sprint's pre-approved count, allowance params tweak, passed, reason)
    let cases: &[(&str, u32, u32, bool, &str)] = &[
        ("none used", 0, 2, true, "allowance 0 of 2 used this sprint"),
        ("one left", 1, 2, true, "allowance 1 of 2 used this sprint"),
        (
            "used = allowance",
            2,
            2,
            false,
            "allowance 2 of 2 used this sprint",
        ),
        (
            "used beyond allowance",
            3,
            2,
            false,
            "allowance 3 of 2 used this sprint",
        ),
        (
            "zero allowance",
            0,
            0,
            false,
            "allowance 0 of 0 used this sprint",
        ),
        ("3 of 4", 3, 4, true, "allowance 3 of 4 used this sprint"),
    ];
    for &(name, used, initial, passed, reason) in cases {
        let mut h = healthy();
        // Only the current sprint (3) has decisions: the ramp starts there at `initial`.
        h.sprints.insert(
            3,
            SprintTally {
                pre_approved: used,
                ..SprintTally::default()
            },
        );
        let mut p = policy();
        p.params.allowance.initial = initial;
        let d = decide_with(&facts(), &h, &p, NOW, None);
        let r = rule(&d, codes::ALLOWANCE);
        assert_eq!((r.passed, r.reason.as_str()), (passed, reason), "{name}");
        assert_eq!((d.allowance, d.allowance_used), (initial, used), "{name}");
        let want = if passed {
            DecisionKind::PreApproved
        } else {
            DecisionKind::NeedsApproval
        };
        assert_eq!(d.kind, want, "{name}");
    }
}

#[test]
fn allowance_comes_from_the_ramp_replay() {
    // A healthy sprint 2 (≥ min_changes at target) grows sprint 3's allowance 2 → 4.
    let mut h = healthy();
    h.sprints.insert(
        2,
        SprintTally {
            succeeded: 5,
            pre_approved: 2,
            ..SprintTally::default()
        },
    );
    h.sprints.insert(
        3,
        SprintTally {
            pre_approved: 3,
            ..SprintTally::default()
        },
    );
    let d = decide_with(&facts(), &h, &policy(), NOW, None);
    assert_eq!(
        rule(&d, codes::ALLOWANCE).reason,
        "allowance 3 of 4 used this sprint"
    );
    assert_eq!(d.kind, DecisionKind::PreApproved);
    // A bad sprint 2 halves it: 2 → 1, and 1 of 1 is used up.
    h.sprints.insert(
        2,
        SprintTally {
            succeeded: 1,
            failed: 1,
            ..SprintTally::default()
        },
    );
    h.sprints.insert(
        3,
        SprintTally {
            pre_approved: 1,
            ..SprintTally::default()
        },
    );
    let d = decide_with(&facts(), &h, &policy(), NOW, None);
    assert_eq!(
        rule(&d, codes::ALLOWANCE).reason,
        "allowance 1 of 1 used this sprint"
    );
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
}

#[test]
fn risk_size() {
    // (name, max_lines_changed, lines_changed, rule present, passed, reason)
    let cases: &[(&str, Option<u64>, Option<u64>, bool, bool, &str)] = &[
        ("no limit configured", None, Some(10_000), false, true, ""),
        (
            "below the limit",
            Some(800),
            Some(10),
            true,
            true,
            "10 lines changed ≤ 800",
        ),
        (
            "at the limit",
            Some(800),
            Some(800),
            true,
            true,
            "800 lines changed ≤ 800",
        ),
        (
            "above the limit",
            Some(800),
            Some(801),
            true,
            false,
            "801 lines changed > 800",
        ),
        (
            "one line",
            Some(0),
            Some(1),
            true,
            false,
            "1 line changed > 0",
        ),
        (
            "unknown lines",
            Some(800),
            None,
            true,
            false,
            "lines changed unknown: the checkout has no commit range — fetch-depth: 0, or a \
             token that can read the PR's files",
        ),
    ];
    for &(name, max, lines, present, passed, reason) in cases {
        let mut f = facts();
        f.lines_changed = lines;
        let mut p = policy();
        p.risk.max_lines_changed = max;
        let d = decide_with(&f, &healthy(), &p, NOW, None);
        assert_eq!(has_rule(&d, codes::RISK_SIZE), present, "{name}");
        if present {
            let r = rule(&d, codes::RISK_SIZE);
            assert_eq!((r.passed, r.reason.as_str()), (passed, reason), "{name}");
        }
        let want = if passed {
            DecisionKind::PreApproved
        } else {
            DecisionKind::NeedsApproval
        };
        assert_eq!(d.kind, want, "{name}");
    }
}

#[test]
fn risk_paths() {
    let globs = ["migrations/**", "infra/**", "*.tf"];
    // (name, patterns, paths, rule present, passed, reason)
    let cases: &[(&str, &[&str], &[&str], bool, bool, &str)] = &[
        (
            "no patterns configured",
            &[],
            &["migrations/001.sql"],
            false,
            true,
            "",
        ),
        (
            "miss",
            &globs,
            &["src/lib.rs", "README.md"],
            true,
            true,
            "no sensitive paths among 2 touched",
        ),
        (
            "no paths touched (an empty commit)",
            &globs,
            &[],
            true,
            true,
            "no sensitive paths among 0 touched",
        ),
        (
            "hit",
            &globs,
            &["src/lib.rs", "migrations/001_init.sql"],
            true,
            false,
            "touches sensitive paths: migrations/001_init.sql",
        ),
        (
            "nested hit",
            &globs,
            &["infra/prod/main.tf"],
            true,
            false,
            "touches sensitive paths: infra/prod/main.tf",
        ),
        (
            "extension glob",
            &globs,
            &["deploy/vpc.tf"],
            true,
            false,
            "touches sensitive paths: deploy/vpc.tf",
        ),
        (
            "prefix is not a folder match",
            &globs,
            &["src/migrations.rs"],
            true,
            true,
            "no sensitive paths among 1 touched",
        ),
        (
            "many hits are summarised",
            &globs,
            &[
                "migrations/1.sql",
                "migrations/2.sql",
                "migrations/3.sql",
                "migrations/4.sql",
                "infra/a",
            ],
            true,
            false,
            "touches sensitive paths: migrations/1.sql, migrations/2.sql, migrations/3.sql and 2 more",
        ),
        (
            "an invalid pattern fails safe",
            &["migrations/{"],
            &["src/lib.rs"],
            true,
            false,
            "invalid sensitive path pattern: migrations/{",
        ),
    ];
    for &(name, patterns, paths, present, passed, reason) in cases {
        let mut f = facts();
        f.paths = paths.iter().map(|p| p.to_string()).collect();
        let mut p = policy();
        p.risk.sensitive_paths = patterns.iter().map(|p| p.to_string()).collect();
        let d = decide_with(&f, &healthy(), &p, NOW, None);
        assert_eq!(has_rule(&d, codes::RISK_PATHS), present, "{name}");
        if present {
            let r = rule(&d, codes::RISK_PATHS);
            assert_eq!((r.passed, r.reason.as_str()), (passed, reason), "{name}");
        }
        let want = if passed {
            DecisionKind::PreApproved
        } else {
            DecisionKind::NeedsApproval
        };
        assert_eq!(d.kind, want, "{name}");
    }
}

fn freeze(from: &str, to: &str, environments: &[&str]) -> Freeze {
    Freeze {
        from: at(from),
        to: at(to),
        reason: "year-end freeze".into(),
        environments: environments.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn freeze_windows() {
    // (name, freeze, now, blocked)
    let all = freeze("2026-12-21T00:00:00Z", "2027-01-04T00:00:00Z", &[]);
    let staging = freeze("2026-12-21T00:00:00Z", "2027-01-04T00:00:00Z", &["staging"]);
    let prod = freeze(
        "2026-12-21T00:00:00Z",
        "2027-01-04T00:00:00Z",
        &["staging", "production"],
    );
    let cases: &[(&str, &Freeze, &str, bool)] = &[
        (
            "inside, all environments",
            &all,
            "2026-12-24T12:00:00Z",
            true,
        ),
        ("at its very start", &all, "2026-12-21T00:00:00Z", true),
        (
            "ended (the end is exclusive)",
            &all,
            "2027-01-04T00:00:00Z",
            false,
        ),
        ("ended long ago", &all, "2027-02-01T00:00:00Z", false),
        ("not started yet", &all, "2026-12-20T23:59:59Z", false),
        (
            "another environment",
            &staging,
            "2026-12-24T12:00:00Z",
            false,
        ),
        ("listed environment", &prod, "2026-12-24T12:00:00Z", true),
    ];
    for &(name, f, now, blocked) in cases {
        let mut p = policy();
        p.freezes = vec![f.clone()];
        let d = decide_with(&facts(), &healthy(), &p, now, None);
        let r = rule(&d, codes::FREEZE);
        assert_eq!(r.passed, !blocked, "{name}: {}", r.reason);
        if blocked {
            assert_eq!(d.kind, DecisionKind::Blocked, "{name}");
            assert_eq!(
                r.reason, "freeze window active until 2027-01-04 00:00 UTC: year-end freeze",
                "{name}"
            );
        } else {
            assert_eq!(r.reason, "no freeze window active", "{name}");
            assert_eq!(d.kind, DecisionKind::PreApproved, "{name}");
        }
    }
}

#[test]
fn freeze_blocks_even_when_other_rules_would_need_approval() {
    let mut p = policy();
    p.freezes = vec![freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[])];
    let d = decide_with(&facts(), &history(0, 0), &p, NOW, None);
    assert_eq!(d.kind, DecisionKind::Blocked);
    assert!(!rule(&d, codes::TRACK_RECORD).passed);
}

#[test]
fn freeze_without_reason_says_until_when() {
    let mut p = policy();
    let mut f = freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[]);
    f.reason.clear();
    p.freezes = vec![f];
    let d = decide_with(&facts(), &healthy(), &p, NOW, None);
    assert_eq!(
        rule(&d, codes::FREEZE).reason,
        "freeze window active until 2026-03-01 00:00 UTC"
    );
}

#[test]
fn emergency_overrides_freeze_allowance_and_track_record() {
    let mut p = policy();
    p.freezes = vec![freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[])];
    p.params.allowance.initial = 0;
    let d = decide_with(&facts(), &history(1, 3), &p, NOW, Some("payments down"));
    assert_eq!(d.kind, DecisionKind::PreApproved, "{:#?}", d.rules);
    assert_eq!(d.emergency.as_deref(), Some("payments down"));
    for code in [codes::FREEZE, codes::ALLOWANCE, codes::TRACK_RECORD] {
        let r = rule(&d, code);
        assert!(!r.passed, "{code} is reported as it is");
        assert!(
            r.reason.ends_with(" (overridden: emergency)"),
            "{code}: {}",
            r.reason
        );
    }
    let e = rule(&d, codes::EMERGENCY);
    assert!(e.passed);
    assert_eq!(e.reason, "emergency declared: payments down");
    assert_eq!(d.kind.gate(d.mode, None), Gate::Pass);
}

#[test]
fn emergency_does_not_override_risk_or_evidence() {
    let mut f = facts();
    f.paths = vec!["migrations/9.sql".into()];
    let mut p = policy();
    p.risk.sensitive_paths = vec!["migrations/**".into()];
    let d = decide_with(&f, &healthy(), &p, NOW, Some("hotfix"));
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
    assert!(!rule(&d, codes::RISK_PATHS).reason.contains("overridden"));

    let mut p = policy();
    p.evidence.require_tests = true;
    let d = decide_with(&facts(), &healthy(), &p, NOW, Some("hotfix"));
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
}

#[test]
fn a_line_break_in_a_file_name_does_not_slip_past_a_sensitive_path() {
    let mut f = facts();
    f.paths = vec!["migrations/x\n::set-output name=decision::pre-approved".into()];
    let mut p = policy();
    p.risk.sensitive_paths = vec!["migrations/**".into()];
    let d = decide_with(&f, &healthy(), &p, NOW, None);
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
    assert!(!rule(&d, codes::RISK_PATHS).passed);
}

#[test]
fn emergency_sources() {
    // (name, --emergency flag, PR labels, policy label, declared reason)
    let cases: &[(&str, Option<&str>, Option<&[&str]>, &str, Option<&str>)] = &[
        ("none", None, None, "emergency", None),
        (
            "flag",
            Some("db on fire"),
            None,
            "emergency",
            Some("db on fire"),
        ),
        (
            "blank flag is no emergency",
            Some("   "),
            None,
            "emergency",
            None,
        ),
        (
            "flag is trimmed",
            Some("  db on fire "),
            None,
            "emergency",
            Some("db on fire"),
        ),
        (
            "label",
            None,
            Some(&["bug", "emergency"]),
            "emergency",
            Some("label 'emergency' on pull request #7"),
        ),
        (
            "label, any case",
            None,
            Some(&["EMERGENCY"]),
            "emergency",
            Some("label 'emergency' on pull request #7"),
        ),
        (
            "configured label",
            None,
            Some(&["hotfix"]),
            "hotfix",
            Some("label 'hotfix' on pull request #7"),
        ),
        ("other labels only", None, Some(&["bug"]), "emergency", None),
        ("label disabled", None, Some(&["emergency", ""]), "", None),
        (
            "flag wins over label",
            Some("outage"),
            Some(&["emergency"]),
            "emergency",
            Some("outage"),
        ),
    ];
    for &(name, flag, labels, label, want) in cases {
        let mut f = facts();
        f.pull_request = labels.map(|l| pr(l, None));
        let mut p = policy();
        p.params.emergency_label = label.to_string();
        p.freezes = vec![freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[])];
        let d = decide_with(&f, &healthy(), &p, NOW, flag);
        assert_eq!(d.emergency.as_deref(), want, "{name}");
        assert_eq!(has_rule(&d, codes::EMERGENCY), want.is_some(), "{name}");
        let kind = if want.is_some() {
            DecisionKind::PreApproved
        } else {
            DecisionKind::Blocked
        };
        assert_eq!(d.kind, kind, "{name}");
    }
}

#[test]
fn emergency_approve_sends_to_expedited_approval() {
    let mut p = policy();
    p.params.emergency = EmergencyHandling::Approve;
    p.freezes = vec![freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[])];
    // Even with a perfect record and during a freeze: a human approves the emergency.
    let d = decide_with(&facts(), &healthy(), &p, NOW, Some("outage"));
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
    assert_eq!(d.emergency.as_deref(), Some("outage"));
    assert!(
        rule(&d, codes::FREEZE)
            .reason
            .ends_with("(overridden: emergency)")
    );
    // Without an emergency, `approve` changes nothing.
    let d = decide_with(&facts(), &healthy(), &policy_with_approve(), NOW, None);
    assert_eq!(d.kind, DecisionKind::PreApproved);
}

fn policy_with_approve() -> Policy {
    let mut p = policy();
    p.params.emergency = EmergencyHandling::Approve;
    p
}

#[test]
fn evidence() {
    // (name, require_review, require_tests, pr reviewed (None = no PR), tests_passed, expected rules)
    type Want = &'static [(&'static str, bool, &'static str)];
    let cases: &[(&str, bool, bool, Option<Option<bool>>, Option<bool>, Want)] = &[
        ("nothing required", false, false, None, None, &[]),
        (
            "review: approved",
            true,
            false,
            Some(Some(true)),
            None,
            &[(
                codes::EVIDENCE_REVIEW,
                true,
                "CHANGEGATE_REVIEWED says the pull request was approved (the forge cannot be asked)",
            )],
        ),
        (
            "review: not approved",
            true,
            false,
            Some(Some(false)),
            None,
            &[(
                codes::EVIDENCE_REVIEW,
                false,
                "pull request has no approving review",
            )],
        ),
        (
            "review: PR, unknown",
            true,
            false,
            Some(None),
            None,
            &[(
                codes::EVIDENCE_REVIEW,
                false,
                "no review evidence for this change",
            )],
        ),
        (
            "review: no PR",
            true,
            false,
            None,
            None,
            &[(
                codes::EVIDENCE_REVIEW,
                false,
                "no review evidence for this change",
            )],
        ),
        (
            "tests: passed",
            false,
            true,
            None,
            Some(true),
            &[(
                codes::EVIDENCE_TESTS,
                true,
                "the pipeline says the tests passed (the forge cannot be asked)",
            )],
        ),
        (
            "tests: failed",
            false,
            true,
            None,
            Some(false),
            &[(codes::EVIDENCE_TESTS, false, "tests failed")],
        ),
        (
            "tests: unknown",
            false,
            true,
            None,
            None,
            &[(codes::EVIDENCE_TESTS, false, "no test result reported")],
        ),
        (
            "both present",
            true,
            true,
            Some(Some(true)),
            Some(true),
            &[
                (
                    codes::EVIDENCE_REVIEW,
                    true,
                    "CHANGEGATE_REVIEWED says the pull request was approved (the forge cannot be asked)",
                ),
                (
                    codes::EVIDENCE_TESTS,
                    true,
                    "the pipeline says the tests passed (the forge cannot be asked)",
                ),
            ],
        ),
        (
            "not required, failing anyway",
            false,
            false,
            Some(Some(false)),
            Some(false),
            &[],
        ),
    ];
    for &(name, review, tests, reviewed, tests_passed, want) in cases {
        let mut f = facts();
        f.pull_request = reviewed.map(|r| pr(&[], r));
        f.tests_passed = tests_passed;
        let mut p = policy();
        p.evidence.require_review = review;
        p.evidence.require_tests = tests;
        let d = decide_with(&f, &healthy(), &p, NOW, None);
        let got: Vec<(&str, bool, &str)> = d
            .rules
            .iter()
            .filter(|r| r.code.starts_with("evidence-"))
            .map(|r| (r.code.as_str(), r.passed, r.reason.as_str()))
            .collect();
        assert_eq!(got, want, "{name}");
        let want_kind = if want.iter().all(|(_, passed, _)| *passed) {
            DecisionKind::PreApproved
        } else {
            DecisionKind::NeedsApproval
        };
        assert_eq!(d.kind, want_kind, "{name}");
    }
}

#[test]
fn observe_mode_is_carried_and_never_blocks_now() {
    let mut p = policy();
    p.mode = Mode::Observe;
    p.freezes = vec![freeze("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", &[])];
    let d = decide_with(&facts(), &history(0, 0), &p, NOW, None);
    // The decision is the one enforce mode would make; the mode says not to act on it.
    assert_eq!(d.kind, DecisionKind::Blocked);
    assert_eq!(d.mode, Mode::Observe);
    assert_eq!(d.kind.gate(d.mode, None), Gate::Pass);

    let d = decide_with(&facts(), &history(0, 0), &policy(), NOW, None);
    assert_eq!(d.mode, Mode::Enforce);
    assert_eq!(d.kind.gate(d.mode, None), Gate::Waiting);
}

#[test]
fn clock_override_is_carried() {
    let f = facts();
    let h = healthy();
    let p = policy();
    let d = decide(&DecisionInput {
        facts: &f,
        history: &h,
        policy: &p,
        calendar: calendar(),
        now: at(NOW),
        emergency: None,
        clock_override: Some("2026-02-18T10:00:00+00:00".into()),
    });
    assert_eq!(
        d.clock_override.as_deref(),
        Some("2026-02-18T10:00:00+00:00")
    );
}

#[test]
fn needs_approval_lists_every_failure() {
    let mut f = facts();
    f.lines_changed = Some(5000);
    f.paths = vec!["infra/vpc.tf".into()];
    let mut p = policy();
    p.risk.max_lines_changed = Some(800);
    p.risk.sensitive_paths = vec!["infra/**".into()];
    p.params.allowance.initial = 0;
    let d = decide_with(&f, &history(2, 0), &p, NOW, None);
    assert_eq!(d.kind, DecisionKind::NeedsApproval);
    let failed: Vec<&str> = d.failed_rules().map(|r| r.code.as_str()).collect();
    assert_eq!(
        failed,
        [
            codes::TRACK_RECORD,
            codes::ALLOWANCE,
            codes::RISK_SIZE,
            codes::RISK_PATHS
        ]
    );
}

#[test]
fn deciding_is_deterministic() {
    let mut p = policy();
    p.risk.sensitive_paths = vec!["infra/**".into()];
    let mut h = healthy();
    h.sprints.insert(
        2,
        SprintTally {
            succeeded: 4,
            ..SprintTally::default()
        },
    );
    let a = decide_with(&facts(), &h, &p, NOW, None);
    let b = decide_with(&facts(), &h.clone(), &p.clone(), NOW, None);
    assert_eq!(a, b);
}

#[test]
fn unknown_facts_fail_unless_when_unknown_pass() {
    let mut f = facts();
    f.lines_changed = None;
    f.paths = Vec::new();
    f.paths_unknown = true;
    let mut p = policy();
    p.risk.max_lines_changed = Some(800);
    p.risk.sensitive_paths = vec!["migrations/**".into()];
    let d = decide_with(&f, &healthy(), &p, NOW, None);
    assert_eq!(d.kind, DecisionKind::NeedsApproval, "{:?}", d.rules);
    for code in [codes::RISK_SIZE, codes::RISK_PATHS] {
        let r = rule(&d, code);
        assert!(!r.passed, "{code}");
        assert!(
            r.reason
                .contains("unknown: the checkout has no commit range"),
            "{}",
            r.reason
        );
    }
    assert_eq!(
        rule(&d, codes::RISK_PATHS).reason,
        "touched paths unknown: the checkout has no commit range — fetch-depth: 0, or a token \
         that can read the PR's files"
    );

    // A sensitive path among those known fails as a hit, whether or not more are unknown.
    f.paths = vec!["migrations/9.sql".into()];
    let d = decide_with(&f, &healthy(), &p, NOW, None);
    assert_eq!(
        rule(&d, codes::RISK_PATHS).reason,
        "touches sensitive paths: migrations/9.sql"
    );

    // The team's choice: unknown passes, and says so.
    f.paths = Vec::new();
    p.risk.when_unknown = WhenUnknown::Pass;
    let d = decide_with(&f, &healthy(), &p, NOW, None);
    assert_eq!(d.kind, DecisionKind::PreApproved, "{:?}", d.rules);
    assert_eq!(
        rule(&d, codes::RISK_SIZE).reason,
        "lines changed unknown (no commit range; [risk] when_unknown = \"pass\")"
    );
    assert!(rule(&d, codes::RISK_PATHS).passed);
}

/// `migrations/`, `migrations`, `/migrations/**` (CODEOWNERS style) and `./migrations/**`
/// all mean the directory: each one matches what is under it, and nothing merely named alike.
#[test]
fn sensitive_path_patterns_in_directory_styles_match_the_directory() {
    for pattern in [
        "migrations/",
        "migrations",
        "/migrations/**",
        "./migrations/**",
        "/migrations/",
        "migrations/**",
    ] {
        let mut set = globset::GlobSetBuilder::new();
        for g in sensitive_globs(pattern).unwrap() {
            set.add(g);
        }
        let set = set.build().unwrap();
        for path in ["migrations/001.sql", "migrations/2024/002.sql"] {
            assert!(set.is_match(path), "{pattern} should match {path}");
        }
        for path in [
            "src/migrations.rs",
            "migrations.md",
            "db/migrations/001.sql",
        ] {
            assert!(!set.is_match(path), "{pattern} should not match {path}");
        }
    }
    // A file named as such is matched too.
    let globs = sensitive_globs("/Dockerfile").unwrap();
    assert!(
        globs
            .iter()
            .any(|g| g.compile_matcher().is_match("Dockerfile"))
    );
}

/// Patterns no touched path could ever match are refused, saying why.
#[test]
fn sensitive_path_patterns_that_never_match_are_refused() {
    for (pattern, why) in [
        ("../migrations/**", "`..`"),
        ("migrations/./x", "`.`"),
        ("migrations//x", "`//`"),
        ("!migrations/**", "no negation"),
        ("migrations\\**", "`/`"),
        (" migrations/**", "spaces"),
        ("", "empty"),
        ("/", "whole repository"),
        ("./", "whole repository"),
        ("migrations/{", "not a valid glob"),
    ] {
        let err = sensitive_globs(pattern).unwrap_err().to_string();
        assert!(err.contains(why), "{pattern:?}: {err}");
    }
}
