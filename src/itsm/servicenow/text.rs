//! The text changegate writes on a change request: the description built from the
//! pipeline's facts, and the decision (written to `justification` and as a work note) in a
//! form a human reads and changegate parses back on a re-run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::change::{Platform, PullRequest};
use crate::domain::{ChangeFacts, Decision, DecisionKind, Mode, Rule};

/// ServiceNow renders `[code]…[/code]` in journal fields as HTML. Text from the pipeline
/// (PR titles, commit subjects, branch names, paths) is untrusted: the tags are defused.
/// Newlines are folded for one-line values.
pub fn defuse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lower = text.to_ascii_lowercase();
    let mut i = 0;
    while i < text.len() {
        let rest = &lower[i..];
        if rest.starts_with("[code]") || rest.starts_with("[/code]") {
            // `[ code ]` displays as written and is not a tag.
            let len = if rest.starts_with("[code]") { 6 } else { 7 };
            out.push_str("[ ");
            out.push_str(&text[i + 1..i + len - 1]);
            out.push_str(" ]");
            i += len;
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        out.push(c);
        i += c.len_utf8();
    }
    out
}

pub fn one_line(text: &str) -> String {
    defuse(&text.replace(['\r', '\n'], " "))
}

/// Cuts to at most `max` characters.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The change's description: commit range, pull request, work items, run, actor, commits.
pub fn description(facts: &ChangeFacts) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "Deploy of {} to {} at commit {}, recorded by changegate.",
        one_line(&facts.service),
        one_line(&facts.environment),
        facts.commit_sha
    ));
    if let Some(repo) = facts
        .repository_url
        .as_deref()
        .or(facts.repository.as_deref())
    {
        out.push(format!("Repository: {}", one_line(repo)));
    }
    if let Some(branch) = &facts.branch {
        out.push(format!("Branch: {}", one_line(branch)));
    }
    if let Some((base, head)) = &facts.range {
        let lines = facts
            .lines_changed
            .map(|n| format!(", {n} lines changed"))
            .unwrap_or_default();
        out.push(format!(
            "Commit range: {base}..{head} ({} commits{lines})",
            facts.commits.len()
        ));
    } else if let Some(n) = facts.lines_changed {
        out.push(format!("Lines changed: {n}"));
    }
    if let Some(pr) = &facts.pull_request {
        let url = pr
            .url
            .as_deref()
            .map(|u| format!(" {}", one_line(u)))
            .unwrap_or_default();
        out.push(format!(
            "Pull request: #{} {}{url}",
            pr.number,
            one_line(&pr.title)
        ));
    }
    if !facts.work_items.is_empty() {
        out.push(format!(
            "Work items: {}",
            one_line(&facts.work_items.join(", "))
        ));
    }
    if let Some(run) = &facts.run_url {
        out.push(format!("Pipeline run: {}", one_line(run)));
    }
    if let Some(actor) = &facts.actor {
        out.push(format!("Triggered by: {}", one_line(actor)));
    }
    if let Some(passed) = facts.tests_passed {
        out.push(format!(
            "Tests passed: {}",
            if passed { "yes" } else { "no" }
        ));
    }
    if !facts.commits.is_empty() {
        out.push("Commits:".to_string());
        const SHOWN: usize = 20;
        for c in facts.commits.iter().take(SHOWN) {
            let short = c.sha.get(..12).unwrap_or(&c.sha);
            let author = c
                .author
                .as_deref()
                .map(|a| format!(" ({})", one_line(a)))
                .unwrap_or_default();
            out.push(format!("- {short} {}{author}", one_line(&c.subject)));
        }
        if facts.commits.len() > SHOWN {
            out.push(format!("- … and {} more", facts.commits.len() - SHOWN));
        }
    }
    out.join("\n")
}

const HEAD: &str = "changegate decision: ";

/// The decision as text: a headline, one line per rule, the emergency and clock notes.
/// [`parse_decision`] reads it back.
pub fn render_decision(d: &Decision, at: DateTime<Utc>) -> String {
    let mut out = vec![
        format!(
            "{HEAD}{} (mode {}) at {}",
            d.kind.as_str(),
            d.mode.as_str(),
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        format!(
            "sprint {}: {} of {} pre-approved changes used",
            d.sprint, d.allowance_used, d.allowance
        ),
    ];
    for rule in &d.rules {
        out.push(format!(
            "[{}] {}: {}",
            if rule.passed { "pass" } else { "FAIL" },
            rule.code,
            one_line(&rule.reason)
        ));
    }
    if let Some(reason) = &d.emergency {
        out.push(format!("emergency: {}", one_line(reason)));
    }
    if let Some(clock) = &d.clock_override {
        out.push(format!(
            "clock set by CHANGEGATE_NOW to {}",
            one_line(clock)
        ));
    }
    out.join("\n")
}

/// Reads a decision written by [`render_decision`]; `None` when the text is not one (a human
/// edited it, or the instance's template owns the field).
pub fn parse_decision(text: &str) -> Option<(Decision, DateTime<Utc>)> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let head = lines.next()?.strip_prefix(HEAD)?;
    let (kind, rest) = head.split_once(" (mode ")?;
    let kind = DecisionKind::parse(kind.trim())?;
    let (mode, rest) = rest.split_once(") at ")?;
    let mode = match mode.trim() {
        "enforce" => Mode::Enforce,
        "observe" => Mode::Observe,
        _ => return None,
    };
    let at = DateTime::parse_from_rfc3339(rest.trim())
        .ok()?
        .with_timezone(&Utc);
    let mut decision = Decision {
        kind,
        rules: Vec::new(),
        mode,
        emergency: None,
        sprint: 0,
        allowance: 0,
        allowance_used: 0,
        clock_override: None,
    };
    for line in lines {
        if let Some(rest) = line.strip_prefix("sprint ") {
            let (sprint, rest) = rest.split_once(": ")?;
            decision.sprint = sprint.trim().parse().ok()?;
            let (used, rest) = rest.split_once(" of ")?;
            decision.allowance_used = used.trim().parse().ok()?;
            decision.allowance = rest.split_whitespace().next()?.parse().ok()?;
        } else if let Some((passed, rest)) = rule_line(line) {
            let (code, reason) = rest.split_once(": ")?;
            decision
                .rules
                .push(Rule::new(code.trim(), passed, reason.trim()));
        } else if let Some(reason) = line.strip_prefix("emergency: ") {
            decision.emergency = Some(reason.to_string());
        } else if let Some(clock) = line.strip_prefix("clock set by CHANGEGATE_NOW to ") {
            decision.clock_override = Some(clock.to_string());
        }
    }
    Some((decision, at))
}

/// `justification` holds 4,000 characters on a base instance.
pub const JUSTIFICATION_MAX: usize = 4000;

const FACTS: &str = "facts: ";

/// What the policy read of a change's facts, and its first commit: written as one JSON line
/// after the decision in `justification`, so that `policy simulate` can decide the change
/// again and `report` can tell its lead time. Paths that do not fit the field are counted,
/// not listed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FactsLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_commit: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Paths left out so that the line fits.
    #[serde(skip_serializing_if = "is_zero")]
    pub paths_omitted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<bool>,
    /// The pull request's number, review and labels (an emergency label is a decision input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl FactsLine {
    pub fn of(facts: &ChangeFacts) -> FactsLine {
        let pr = facts.pull_request.as_ref();
        FactsLine {
            first_commit: facts.first_commit_at(),
            lines: facts.lines_changed,
            paths: facts.paths.clone(),
            paths_omitted: 0,
            tests: facts.tests_passed,
            pr: pr.map(|p| p.number),
            reviewed: pr.and_then(|p| p.reviewed),
            labels: pr.map(|p| p.labels.clone()).unwrap_or_default(),
        }
    }

    /// The facts a decision is made on, as far as the line tells (no commits, branch or run).
    pub fn into_facts(
        self,
        service: &str,
        service_id: &str,
        environment: &str,
        sha: &str,
    ) -> ChangeFacts {
        let pull_request = (self.pr.is_some()
            || self.reviewed.is_some()
            || !self.labels.is_empty())
        .then(|| PullRequest {
            number: self.pr.unwrap_or_default(),
            labels: self.labels,
            reviewed: self.reviewed,
            ..PullRequest::default()
        });
        ChangeFacts {
            platform: Platform::Local,
            service: service.to_string(),
            service_id: service_id.to_string(),
            environment: environment.to_string(),
            repository: None,
            commit_sha: sha.to_string(),
            branch: None,
            pull_request,
            range: None,
            commits: Vec::new(),
            lines_changed: self.lines,
            // A list cut to fit the field no longer tells every path touched.
            paths_unknown: self.paths_omitted > 0,
            paths: self.paths,
            work_items: Vec::new(),
            run_url: None,
            repository_url: None,
            actor: None,
            tests_passed: self.tests,
        }
    }
}

/// The facts line, at most `budget` characters: as many paths as fit, the rest counted.
/// `None` when not even the line without paths fits.
pub fn render_facts(facts: &FactsLine, budget: usize) -> Option<String> {
    let render = |keep: usize| {
        let mut line = facts.clone();
        line.paths_omitted += line.paths.len() - keep;
        line.paths.truncate(keep);
        // Paths and labels come from the pipeline: `[code]` tags are defused here too.
        serde_json::to_string(&line)
            .ok()
            .map(|json| defuse(&format!("{FACTS}{json}")))
            .filter(|text| text.chars().count() <= budget)
    };
    if let Some(all) = render(facts.paths.len()) {
        return Some(all);
    }
    // The most paths that fit: the length grows with the number kept.
    let (mut fits, mut too_many) = (0, facts.paths.len());
    let mut best = render(0)?;
    while too_many - fits > 1 {
        let mid = fits + (too_many - fits) / 2;
        match render(mid) {
            Some(text) => {
                fits = mid;
                best = text;
            }
            None => too_many = mid,
        }
    }
    Some(best)
}

/// The facts line of a `justification`, if it has one.
pub fn parse_facts(text: &str) -> Option<FactsLine> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(FACTS))
        .and_then(|json| serde_json::from_str(json).ok())
}

fn rule_line(line: &str) -> Option<(bool, &str)> {
    line.strip_prefix("[pass] ")
        .map(|r| (true, r))
        .or_else(|| line.strip_prefix("[FAIL] ").map(|r| (false, r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::codes;

    fn decision() -> Decision {
        Decision {
            kind: DecisionKind::NeedsApproval,
            rules: vec![
                Rule::new(
                    codes::TRACK_RECORD,
                    true,
                    "success rate 100% over last 10 ≥ 90%",
                ),
                Rule::new(
                    codes::RISK_PATHS,
                    false,
                    "touches sensitive paths: migrations/1.sql\nand [code]<b>x</b>[/code]",
                ),
            ],
            mode: Mode::Observe,
            emergency: Some("prod down".into()),
            sprint: 42,
            allowance: 4,
            allowance_used: 1,
            clock_override: None,
        }
    }

    #[test]
    fn decision_round_trips_through_its_text() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = render_decision(&decision(), at);
        assert!(!text.contains("[code]"), "{text}");
        let (back, when) = parse_decision(&text).expect("parses");
        assert_eq!(when, at);
        assert_eq!(back.kind, DecisionKind::NeedsApproval);
        assert_eq!(back.mode, Mode::Observe);
        assert_eq!(back.emergency.as_deref(), Some("prod down"));
        assert_eq!(
            (back.sprint, back.allowance, back.allowance_used),
            (42, 4, 1)
        );
        assert_eq!(back.rules.len(), 2);
        assert!(!back.rules[1].passed);
        assert_eq!(back.rules[0].reason, "success rate 100% over last 10 ≥ 90%");
    }

    #[test]
    fn facts_round_trip_and_paths_that_do_not_fit_are_counted() {
        let line = FactsLine {
            first_commit: Some(
                DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            lines: Some(12),
            paths: vec!["src/a.rs".into(), "migrations/[code]1.sql".into()],
            tests: Some(true),
            pr: Some(42),
            reviewed: Some(false),
            labels: vec!["emergency".into()],
            ..FactsLine::default()
        };
        let text = render_facts(&line, 1000).unwrap();
        assert!(!text.contains("[code]"), "{text}");
        let justification = format!("{}\n{text}", render_decision(&decision(), Utc::now()));
        let back = parse_facts(&justification).unwrap();
        assert_eq!(back.paths[1], "migrations/[ code ]1.sql");
        assert_eq!(
            (back.lines, back.tests, back.pr, back.reviewed),
            (Some(12), Some(true), Some(42), Some(false))
        );
        assert_eq!(back.first_commit, line.first_commit);
        // The decision still parses with the facts line after it.
        assert_eq!(parse_decision(&justification).unwrap().0.rules.len(), 2);

        let many = FactsLine {
            paths: (0..500)
                .map(|i| format!("src/module_{i:03}/file.rs"))
                .collect(),
            ..FactsLine::default()
        };
        let text = render_facts(&many, 1000).unwrap();
        assert!(text.chars().count() <= 1000);
        let back = parse_facts(&text).unwrap();
        assert!(back.paths.len() > 10, "{}", back.paths.len());
        assert_eq!(back.paths.len() + back.paths_omitted, 500);
        assert_eq!(back.paths[..], many.paths[..back.paths.len()]);
        assert!(render_facts(&many, 5).is_none());

        let facts = back.into_facts("payments-api", "acme/payments-api", "production", "abc");
        assert_eq!(
            facts.key().to_string(),
            "changegate:acme/payments-api:production:abc"
        );
        assert!(facts.pull_request.is_none());
    }

    #[test]
    fn foreign_text_is_not_a_decision() {
        assert!(parse_decision("Needed for the quarterly release").is_none());
        assert!(parse_decision("").is_none());
    }

    #[test]
    fn code_tags_are_defused_in_any_case() {
        assert_eq!(
            defuse("a [CODE]<img>[/Code] b"),
            "a [ CODE ]<img>[ /Code ] b"
        );
        assert_eq!(defuse("plain [WIP] é"), "plain [WIP] é");
    }
}
