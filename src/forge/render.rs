//! What the annotations say: the sticky comment, the check run's title and summary, and the
//! commit status description. Pure functions of the report, the facts and the record.
//!
//! Every piece of text that did not come from changegate itself (titles, branch names, rule
//! reasons naming paths, approvers, comments, ids) goes through [`escape`]; no untrusted
//! text ever starts a line, so nothing can become a heading, a list, a table or a quick action.

use chrono::{DateTime, Utc};

use super::Standing;
use crate::domain::{ChangeFacts, ChangeRecord, DecisionKind, Mode, State};
use crate::output::Report;
use crate::output::markdown::{escape, link};

/// Longest PR title shown; the rest is cut (the PR page has the full one).
const TITLE_MAX: usize = 120;
/// GitHub and GitLab cut commit status descriptions at 140 characters.
const DESCRIPTION_MAX: usize = 140;

/// The hidden marker that finds the sticky comment again: one per service and environment.
/// Values are percent-encoded down to `[A-Za-z0-9._/-]` so that nothing can close the HTML
/// comment or collide with another environment's marker.
pub fn marker(service_id: &str, environment: &str) -> String {
    format!(
        "<!-- changegate:annotation environment={} service={} -->",
        marker_value(environment),
        marker_value(service_id)
    )
}

/// The hidden marker of the sprint notice (`announce`): one per service and sprint.
pub fn announce_marker(service_id: &str, sprint: i64) -> String {
    format!(
        "<!-- changegate:announce service={} sprint={sprint} -->",
        marker_value(service_id)
    )
}

/// Untrusted text for Slack's `mrkdwn` (the announce chat post): `&`, `<` and `>` escaped
/// as Slack asks, so no `<!channel>`, `<@user>` or link can be smuggled in; newlines and
/// control characters become spaces; formatting marks are left as they are (they cannot
/// reach anyone).
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A Slack link `<url|text>` whose text is untrusted (escaped, `|` dropped); a URL that is
/// not http(s) or holds `|`, `<` or `>` leaves the text alone.
pub fn slack_link(text: &str, url: Option<&str>) -> String {
    let shown = slack_escape(text).replace('|', "¦");
    match url.filter(|u| {
        (u.starts_with("https://") || u.starts_with("http://")) && !u.contains(['|', '<', '>', ' '])
    }) {
        Some(url) => format!("<{url}|{shown}>"),
        None => shown,
    }
}

fn marker_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The words for a standing, as a headline.
fn headline(standing: Standing, report: &Report) -> (&'static str, &'static str) {
    match standing {
        Standing::Open => ("🕓", "change opened, not decided yet"),
        Standing::Waiting => ("⏳", "waiting for approval"),
        Standing::Passed if report.decision == Some(DecisionKind::NeedsApproval) => {
            ("✅", "approved")
        }
        Standing::Passed => ("✅", "pre-approved"),
        Standing::Observed => ("👀", "observe mode: not enforced"),
        Standing::Blocked if report.state == Some(State::Rejected) => ("⛔", "rejected"),
        Standing::Blocked => ("⛔", "blocked"),
        Standing::Deployed => ("🚀", "deployed"),
        Standing::Failed => ("❌", "deploy failed"),
        Standing::Cancelled => ("⚪", "deploy cancelled"),
    }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Cuts `s` to `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Allowance used after this change and what is left, when the decision is known.
fn allowance(report: &Report) -> Option<(u32, u32, u32)> {
    let sprint = report.sprint.as_ref()?;
    let counts = report.decision == Some(DecisionKind::PreApproved) && report.emergency.is_none();
    let used = sprint.used + u32::from(counts);
    Some((
        used,
        sprint.allowance,
        sprint.allowance.saturating_sub(used),
    ))
}

/// The sticky comment on the pull/merge request.
pub fn comment(
    marker: &str,
    standing: Standing,
    report: &Report,
    facts: &ChangeFacts,
    record: Option<&ChangeRecord>,
) -> String {
    let mut md = String::new();
    md.push_str(marker);
    md.push('\n');
    let (icon, words) = headline(standing, report);
    md.push_str(&format!(
        "### {icon} changegate: {words} · {} → {}\n\n",
        escape(&report.service),
        escape(&report.environment)
    ));

    let decision = report.decision.map_or("not decided", DecisionKind::as_str);
    let state = report.state.map_or("none", State::as_str);
    let change = match &report.change_id {
        Some(id) => link(id, report.change_url.as_deref()),
        None => "not recorded".to_string(),
    };
    md.push_str(&format!(
        "**Decision** {decision} · **State** {state} · **Change** {change}  \n"
    ));
    let mut deploying = format!("**Commit** {}", escape(short_sha(&facts.commit_sha)));
    if let Some(branch) = &facts.branch {
        deploying.push_str(&format!(" on {}", escape(branch)));
    }
    if let Some(pr) = &facts.pull_request {
        deploying.push_str(&format!(
            " · **PR** \\#{} {}",
            pr.number,
            escape(&cut(&pr.title, TITLE_MAX))
        ));
    }
    md.push_str(&deploying);
    md.push_str("\n\n");

    if report.mode == Mode::Observe {
        md.push_str("> Observe mode: the decision is recorded, never enforced.\n\n");
    }
    if let Some(reason) = &report.emergency {
        md.push_str(&format!("**Emergency change:** {}\n\n", escape(reason)));
    }
    if let Some(message) = &report.message {
        md.push_str(&format!("**Note:** {}\n\n", escape(message)));
    }

    for rule in &report.rules {
        let mark = if rule.passed { "✅" } else { "❌" };
        md.push_str(&format!(
            "- {mark} **{}** {}\n",
            escape(&rule.code),
            escape(&rule.reason)
        ));
    }
    if !report.rules.is_empty() {
        md.push('\n');
    }
    if let Some((used, of, left)) = allowance(report) {
        let this =
            if report.decision == Some(DecisionKind::PreApproved) && report.emergency.is_none() {
                " (this one included)"
            } else {
                ""
            };
        md.push_str(&format!(
            "**Sprint allowance** {used} of {of} pre-approved changes used{this} · {left} left\n\n"
        ));
    }

    let timeline = timeline(report, record);
    if !timeline.is_empty() {
        md.push_str("**Timeline**\n");
        for line in timeline {
            md.push_str(&format!("- {line}\n"));
        }
        md.push('\n');
    }
    if !report.incidents.is_empty() {
        let list: Vec<String> = report.incidents.iter().map(|i| escape(i)).collect();
        md.push_str(&format!("**Incidents** {}\n\n", list.join(", ")));
    }
    let run = facts
        .run_url
        .as_deref()
        .map(|u| format!(" · {}", link("pipeline run", Some(u))))
        .unwrap_or_default();
    md.push_str(&format!("<sub>Updated by changegate{run}</sub>\n"));
    md
}

/// Opened, decided, approved/rejected by, deployed, outcome: what the record knows.
fn timeline(report: &Report, record: Option<&ChangeRecord>) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(record) = record else { return lines };
    if let Some(at) = record.opened_at {
        lines.push(format!("{} opened", when(at)));
    }
    if let (Some(at), Some(decision)) = (record.decided_at, report.decision) {
        lines.push(format!("{} decided: {decision}", when(at)));
    }
    if let Some(by) = &record.approved_by {
        let verb = if record.state == State::Rejected {
            "rejected"
        } else {
            "approved"
        };
        let at = record
            .approved_at
            .map(|t| format!("{} ", when(t)))
            .unwrap_or_default();
        let comment = record
            .approval_comment
            .as_deref()
            .map(|c| format!(": “{}”", escape(&cut(c, 200))))
            .unwrap_or_default();
        lines.push(format!("{at}{verb} by {}{comment}", escape(by)));
    }
    if let Some(at) = record.deployed_at {
        lines.push(format!("{} deployed", when(at)));
    }
    if let Some(outcome) = report.outcome {
        lines.push(format!("outcome: {outcome}"));
    }
    lines
}

/// The check run's title: one line, what a reviewer sees in the checks list.
pub fn check_title(standing: Standing, report: &Report) -> String {
    let (_, words) = headline(standing, report);
    match &report.change_id {
        Some(id) => cut(&format!("{words} ({id})"), 200),
        None => words.to_string(),
    }
}

/// The check run's summary: the rules and the allowance, as markdown.
pub fn check_summary(report: &Report) -> String {
    let mut md = String::new();
    let decision = report.decision.map_or("not decided", DecisionKind::as_str);
    let state = report.state.map_or("none", State::as_str);
    md.push_str(&format!("**Decision** {decision} · **State** {state}"));
    if let Some(id) = &report.change_id {
        md.push_str(&format!(
            " · **Change** {}",
            link(id, report.change_url.as_deref())
        ));
    }
    md.push_str("\n\n");
    for rule in &report.rules {
        let mark = if rule.passed { "✅" } else { "❌" };
        md.push_str(&format!(
            "- {mark} **{}** {}\n",
            escape(&rule.code),
            escape(&rule.reason)
        ));
    }
    if let Some((used, of, left)) = allowance(report) {
        md.push_str(&format!(
            "\n**Sprint allowance** {used} of {of} used · {left} left\n"
        ));
    }
    md
}

/// GitHub keeps at most this many characters of a deployment review's comment.
pub const REVIEW_MAX: usize = 1024;

/// The comment of a deployment protection rule's answer: the decision, each rule with its
/// reason, the change's link, and what a person said or the clock did; at most
/// [`REVIEW_MAX`] characters, cut rule by rule so the decision and the link always show.
pub fn deployment_review(report: &Report) -> String {
    let standing = super::standing(report);
    let (icon, words) = headline(standing, report);
    let mut head = format!("{icon} **changegate: {words}**");
    if let Some(id) = &report.change_id {
        head.push_str(&format!(" · {}", link(id, report.change_url.as_deref())));
    }
    head.push_str(&format!(
        " · {} → {}",
        escape(&report.service),
        escape(&report.environment)
    ));
    let mut tail = String::new();
    if let Some(message) = &report.message {
        tail.push_str(&format!("\n\n{}", escape(&cut(message, 300))));
    }
    if let Some(comment) = &report.approval_comment {
        tail.push_str(&format!("\n\n> {}", escape(&cut(comment, 200))));
    }
    let mut rules = String::new();
    let room = REVIEW_MAX.saturating_sub(head.chars().count() + tail.chars().count() + 2);
    for rule in &report.rules {
        let mark = if rule.passed { "✅" } else { "❌" };
        let line = format!(
            "\n- {mark} **{}** {}",
            escape(&rule.code),
            escape(&rule.reason)
        );
        if rules.chars().count() + line.chars().count() > room {
            rules.push_str("\n- …");
            break;
        }
        rules.push_str(&line);
    }
    let body = if rules.is_empty() {
        format!("{head}{tail}")
    } else {
        format!("{head}\n{rules}{tail}")
    };
    cut(&body, REVIEW_MAX)
}

/// The comment of a rejection because no decision could be made (fail closed): the error,
/// one line, cut to fit.
pub fn deployment_failed(error: &str) -> String {
    let line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cut(
        &format!(
            "⛔ **changegate: rejected, as no decision could be made** (fails closed): {}",
            escape(&line)
        ),
        REVIEW_MAX,
    )
}

/// A status report while a deployment waits for a person: no decision yet.
pub fn deployment_waiting(change_id: &str, remaining: std::time::Duration) -> String {
    cut(
        &format!(
            "⏳ **changegate: waiting for approval** of {} (at most {} more); the deployment \
             goes ahead when it is approved, and is rejected when it is rejected or the wait ends.",
            escape(change_id),
            crate::domain::words::duration(remaining)
        ),
        REVIEW_MAX,
    )
}

/// A commit status description: plain text, at most 140 characters.
pub fn status_description(standing: Standing, report: &Report) -> String {
    let (_, words) = headline(standing, report);
    let text = match &report.change_id {
        Some(id) => format!("{words} · {id}"),
        None => words.to_string(),
    };
    let plain: String = text.chars().filter(|c| !c.is_control()).collect();
    cut(&plain, DESCRIPTION_MAX)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{Decision, Outcome, Platform, PullRequest, Rule};
    use crate::forge::standing;
    use crate::output::SprintInfo;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).single().unwrap()
    }

    fn facts(title: &str) -> ChangeFacts {
        ChangeFacts {
            platform: Platform::Github,
            service: "payments-api".into(),
            service_id: "acme/payments-api".into(),
            environment: "production".into(),
            repository: Some("acme/payments-api".into()),
            commit_sha: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            branch: Some("feature/readme".into()),
            pull_request: Some(PullRequest {
                number: 2,
                title: title.into(),
                url: Some("https://github.com/acme/payments-api/pull/2".into()),
                head_sha: Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821".into()),
                ..PullRequest::default()
            }),
            range: None,
            commits: Vec::new(),
            lines_changed: Some(42),
            paths: Vec::new(),
            paths_unknown: false,
            work_items: Vec::new(),
            run_url: Some("https://github.com/acme/payments-api/actions/runs/7".into()),
            repository_url: None,
            actor: None,
            author: None,
            tests_passed: None,
            evidence: Default::default(),
        }
    }

    fn decision(kind: DecisionKind, rules: Vec<Rule>, used: u32) -> Decision {
        Decision {
            kind,
            rules,
            mode: Mode::Enforce,
            emergency: None,
            sprint: 4,
            allowance: 4,
            allowance_used: used,
            clock_override: None,
        }
    }

    fn record(decision: Decision, state: State) -> ChangeRecord {
        ChangeRecord {
            id: "CHG-7".into(),
            url: Some("https://itsm.example.com/change/CHG-7".into()),
            key: "changegate:acme/payments-api:production:ec26c3e57ca3a959ca5aad62de7213c562f8c821"
                .into(),
            state,
            decision: Some(decision),
            outcome: None,
            emergency_reason: None,
            approved_by: None,
            approval_comment: None,
            opened_at: Some(at(10, 0)),
            decided_at: Some(at(10, 0)),
            approved_at: None,
            deployed_at: None,
            incidents: Vec::new(),
            author: None,
            timed_out: false,
            decision_inferred: false,
            approval_not_counted: false,
        }
    }

    fn passing() -> Vec<Rule> {
        vec![
            Rule::new("track-record", true, "success rate 100% over last 12 ≥ 90%"),
            Rule::new("allowance", true, "allowance 1 of 4 used this sprint"),
            Rule::new("risk-size", true, "42 lines changed ≤ 800"),
            Rule::new("freeze", true, "no freeze window active"),
        ]
    }

    #[test]
    fn a_deployment_review_says_the_decision_rules_and_change_and_fits_githubs_limit() {
        let r = record(
            decision(DecisionKind::PreApproved, passing(), 1),
            State::Implementing,
        );
        let report = Report::from_record(Some(&r), &facts("x"), Mode::Enforce, false);
        let text = deployment_review(&report);
        assert!(
            text.starts_with("✅ **changegate: pre-approved**"),
            "{text}"
        );
        assert!(
            text.contains("[CHG\\-7](https://itsm.example.com/change/CHG-7)"),
            "{text}"
        );
        assert!(
            text.contains("- ✅ **risk\\-size** 42 lines changed ≤ 800"),
            "{text}"
        );

        // Many long rules: cut rule by rule, the head and the human's words kept.
        let long: Vec<Rule> = (0..40)
            .map(|i| Rule::new(&format!("rule-{i}"), false, "x".repeat(100)))
            .collect();
        let mut r = record(
            decision(DecisionKind::NeedsApproval, long, 1),
            State::Rejected,
        );
        r.approval_comment = Some("not during the sale".into());
        let report = Report::from_record(Some(&r), &facts("x"), Mode::Enforce, false);
        let text = deployment_review(&report);
        assert!(
            text.chars().count() <= REVIEW_MAX,
            "{}",
            text.chars().count()
        );
        assert!(
            text.contains("CHG\\-7") && text.contains("rule\\-0"),
            "{text}"
        );
        assert!(
            text.contains("- …") && text.ends_with("> not during the sale"),
            "{text}"
        );
    }

    #[test]
    fn a_failure_comment_is_one_escaped_line() {
        let text = deployment_failed("cannot read\n::error::x <b>");
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.contains("rejected, as no decision could be made"),
            "{text}"
        );
        assert!(!text.contains("<b>"), "{text}");
        assert!(deployment_failed(&"y".repeat(5000)).chars().count() <= REVIEW_MAX);
    }

    fn render(record: &ChangeRecord, facts: &ChangeFacts) -> String {
        let report = Report::from_record(Some(record), facts, Mode::Enforce, false);
        let m = marker(&facts.service_id, &facts.environment);
        comment(&m, standing(&report), &report, facts, Some(record))
    }

    #[test]
    fn pre_approved() {
        let mut r = record(
            decision(DecisionKind::PreApproved, passing(), 1),
            State::Implementing,
        );
        r.deployed_at = Some(at(10, 1));
        insta::assert_snapshot!(render(
            &r,
            &facts("Update the README with new information.")
        ));
    }

    #[test]
    fn needs_approval_waiting() {
        let mut rules = passing();
        rules[0] = Rule::new(
            "track-record",
            false,
            "3 closed changes, 5 needed for a track record",
        );
        rules.push(Rule::new(
            "risk-paths",
            false,
            "touches sensitive paths: migrations/0042_add_index.sql",
        ));
        let r = record(
            decision(DecisionKind::NeedsApproval, rules, 1),
            State::AwaitingApproval,
        );
        insta::assert_snapshot!(render(&r, &facts("Add an index to payments")));
    }

    #[test]
    fn blocked_by_freeze() {
        let mut rules = passing();
        rules[3] = Rule::new(
            "freeze",
            false,
            "freeze window active until 2027-01-04 00:00 UTC: year-end freeze",
        );
        let r = record(decision(DecisionKind::Blocked, rules, 2), State::New);
        insta::assert_snapshot!(render(&r, &facts("Bump the fee table")));
    }

    #[test]
    fn failed_outcome_after_approval() {
        let mut rules = passing();
        rules[1] = Rule::new("allowance", false, "allowance 4 of 4 used this sprint");
        let mut r = record(
            decision(DecisionKind::NeedsApproval, rules, 4),
            State::Closed,
        );
        r.approved_by = Some("alice".into());
        r.approval_comment = Some("ok for tonight".into());
        r.approved_at = Some(at(10, 30));
        r.deployed_at = Some(at(10, 31));
        r.outcome = Some(Outcome::Failure);
        r.incidents = vec!["INC0012345".into()];
        insta::assert_snapshot!(render(&r, &facts("Switch the card processor")));
    }

    #[test]
    fn hostile_title_is_shown_harmless() {
        let title = "<script>alert(1)</script> cc @org/team\n| a | b |\n|---|---|\n| [x](https://evil.example) | **y** |";
        let r = record(
            decision(DecisionKind::PreApproved, passing(), 0),
            State::Implementing,
        );
        let body = render(&r, &facts(title));
        insta::assert_snapshot!(body);
        let shown = body.lines().find(|l| l.contains("**PR**")).unwrap();
        assert!(!body.contains("<script"), "{body}");
        assert!(!body.contains("@org"), "{body}");
        assert!(!shown.contains("](https://evil"), "{shown}");
        assert!(!shown.contains(" | "), "{shown}");
        assert!(!shown.contains("**y**"), "{shown}");
        // The table did not become lines of its own: the body has no table row at all.
        assert!(
            !body.lines().any(|l| l.trim_start().starts_with('|')),
            "{body}"
        );
        // Only our own marker is an HTML comment.
        assert_eq!(body.matches("<!--").count(), 1, "{body}");
    }

    #[test]
    fn marker_is_per_environment_and_cannot_be_closed() {
        let a = marker("acme/payments-api", "production");
        let b = marker("acme/payments-api", "staging");
        assert_ne!(a, b);
        assert!(!a.contains(&b) && !b.contains(&a));
        let evil = marker("x --> <b>", "prod");
        assert_eq!(evil.matches("-->").count(), 1, "{evil}");
        assert_eq!(evil.matches('<').count(), 1, "{evil}");
    }

    #[test]
    fn status_description_is_short_plain_text() {
        let r = record(
            decision(DecisionKind::NeedsApproval, passing(), 0),
            State::AwaitingApproval,
        );
        let f = facts("t");
        let report = Report::from_record(Some(&r), &f, Mode::Enforce, false);
        assert_eq!(
            status_description(standing(&report), &report),
            "waiting for approval · CHG-7"
        );
        let mut long = report.clone();
        long.change_id = Some("X".repeat(300));
        assert_eq!(
            status_description(standing(&long), &long).chars().count(),
            140
        );
    }

    #[test]
    fn allowance_counts_this_change_when_pre_approved() {
        let r = record(
            decision(DecisionKind::PreApproved, passing(), 1),
            State::Implementing,
        );
        let f = facts("t");
        let mut report = Report::from_record(Some(&r), &f, Mode::Enforce, false);
        assert_eq!(allowance(&report), Some((2, 4, 2)));
        report.decision = Some(DecisionKind::NeedsApproval);
        assert_eq!(allowance(&report), Some((1, 4, 3)));
        report.sprint = Some(SprintInfo {
            index: 4,
            allowance: 1,
            used: 3,
        });
        assert_eq!(allowance(&report), Some((3, 1, 0)));
    }
}
