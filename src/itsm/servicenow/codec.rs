//! A change request as changegate reads it: the flattened record, the base change models,
//! and how its fields map to changegate's states and decisions.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde_json::Value;

use crate::domain::{
    ChangeRecord, CorrelationKey, Decision, DecisionKind, Mode, SprintCalendar, State,
};

/// `correlation_id` holds 100 characters.
pub(super) const KEY_MAX: usize = 100;
/// The label changegate puts in `correlation_display`, before the decision date.
pub(super) const DISPLAY: &str = "changegate";

// Out-of-box `change_request.state` values.
pub(super) const NEW: i64 = -5;
pub(super) const ASSESS: i64 = -4;
pub(super) const AUTHORIZE: i64 = -3;
pub(super) const SCHEDULED: i64 = -2;
pub(super) const IMPLEMENT: i64 = -1;
pub(super) const REVIEW: i64 = 0;
pub(super) const CLOSED: i64 = 3;
pub(super) const CANCELED: i64 = 4;

/// The forward path of each change model (base system; Canceled is reachable from any state
/// before Review).
pub(super) fn model(kind: &str) -> &'static [i64] {
    match kind {
        "standard" => &[NEW, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
        "emergency" => &[NEW, AUTHORIZE, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
        _ => &[NEW, ASSESS, AUTHORIZE, SCHEDULED, IMPLEMENT, REVIEW, CLOSED],
    }
}

pub(super) fn state_label(state: i64) -> String {
    match state {
        NEW => "New".into(),
        ASSESS => "Assess".into(),
        AUTHORIZE => "Authorize".into(),
        SCHEDULED => "Scheduled".into(),
        IMPLEMENT => "Implement".into(),
        REVIEW => "Review".into(),
        CLOSED => "Closed".into(),
        CANCELED => "Canceled".into(),
        other => format!("state {other}"),
    }
}

/// One change request as the instance returned it, every value flattened to a string (the
/// Table API sends strings; `sn_chg_rest` sends `{value, display_value}` with typed values).
#[derive(Debug, Clone, Default)]
pub(super) struct Raw(pub(super) HashMap<String, String>);

pub(super) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Object(m) => m.get("value").map(scalar).unwrap_or_default(),
        Value::Null | Value::Array(_) => String::new(),
    }
}

impl Raw {
    pub(super) fn from_value(v: &Value) -> Result<Raw> {
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("expected a change request object, got {}", kind_of_json(v)))?;
        Ok(Raw(obj
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .map(|(k, v)| (k.clone(), scalar(v)))
            .collect()))
    }

    pub(super) fn get(&self, field: &str) -> &str {
        self.0.get(field).map(|s| s.trim()).unwrap_or("")
    }

    pub(super) fn sys_id(&self) -> &str {
        self.get("sys_id")
    }

    pub(super) fn number(&self) -> &str {
        self.get("number")
    }

    pub(super) fn state(&self) -> Option<i64> {
        let s = self.get("state");
        s.parse::<i64>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
    }

    pub(super) fn kind(&self) -> &str {
        self.get("type")
    }

    pub(super) fn at(&self, field: &str) -> Option<DateTime<Utc>> {
        parse_sn_time(self.get(field))
    }
}

pub(super) fn kind_of_json(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC, as the API sends raw values).
pub(super) fn parse_sn_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| Utc.from_utc_datetime(&t))
}

pub(super) fn sn_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Whether `s` looks like a sys_id (32 hex characters).
pub(super) fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Values inside an encoded query: `^` separates terms, `^^` is a literal caret.
pub(super) fn q(value: &str) -> String {
    value.replace('^', "^^")
}

/// The `correlation_id` prefix shared by every change of a service in an environment.
pub(super) fn key_prefix(service_id: &str, environment: &str) -> String {
    let sha = "0".repeat(40);
    let full = CorrelationKey::new(service_id, environment, &sha).fitted(KEY_MAX);
    full[..full.len() - sha.len()].to_string()
}

pub(super) fn display_for(at: DateTime<Utc>) -> String {
    format!("{DISPLAY} {}", at.format("%Y-%m-%d"))
}

/// The decision day written in `correlation_display` (its first word after the label; a
/// verification mark may follow it).
pub(super) fn display_day(display: &str) -> Option<NaiveDate> {
    let rest = display.trim().strip_prefix(DISPLAY)?;
    let day = rest.split_whitespace().next()?;
    NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()
}

/// The word `verify` adds to `correlation_display`: a change whose display holds it has been
/// verified (queried with `NOT LIKE`).
pub(super) const VERIFIED: &str = "verified";
const FAILED_AFTER_DEPLOY: &str = "verified: failed after deploy";

/// The word a gate adds to `correlation_display` when its wait for approval ran out: a
/// re-run reads the timeout back with the record (the work note says it to humans).
pub(super) const TIMED_OUT: &str = "timed-out";

/// Whether `correlation_display` says a gate's wait for approval ran out.
pub(super) fn display_timed_out(display: &str) -> bool {
    display.split_whitespace().skip(2).any(|w| w == TIMED_OUT)
}

/// Where `verify` left a change, as `correlation_display` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Unverified,
    /// Verified; the recorded outcome stands.
    Verified,
    /// Verified; a success turned into a failure by linked incidents.
    FailedAfterDeploy,
}

pub(super) fn display_mark(display: &str) -> Mark {
    let rest = display.trim().strip_prefix(DISPLAY).unwrap_or("").trim();
    let tail = rest
        .split_once(char::is_whitespace)
        .map_or("", |(_, t)| t.trim());
    if tail.starts_with(FAILED_AFTER_DEPLOY) {
        Mark::FailedAfterDeploy
    } else if tail.starts_with(VERIFIED) {
        Mark::Verified
    } else {
        Mark::Unverified
    }
}

/// `correlation_display` for a decision day and a verification mark.
pub(super) fn display_marked(day: NaiveDate, mark: Mark) -> String {
    let base = format!("{DISPLAY} {}", day.format("%Y-%m-%d"));
    match mark {
        Mark::Unverified => base,
        Mark::Verified => format!("{base} {VERIFIED}"),
        Mark::FailedAfterDeploy => format!("{base} {FAILED_AFTER_DEPLOY}"),
    }
}

/// The change request number's digits (`CHG0030001` → 30001): the order of creation.
pub(super) fn number_seq(number: &str) -> Option<i64> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The change type a decision calls for.
pub(super) fn type_for(decision: Option<&Decision>) -> &'static str {
    match decision {
        Some(d) if d.emergency.is_some() => "emergency",
        Some(d) if d.kind == DecisionKind::PreApproved => "standard",
        _ => "normal",
    }
}

/// Whether a refused state move is a warning rather than an error: in observe mode the gate
/// never blocks, and an emergency goes ahead before its (retrospective) approval.
pub(super) fn tolerant(record: &ChangeRecord) -> bool {
    record
        .decision
        .as_ref()
        .is_some_and(|d| d.mode == Mode::Observe || d.emergency.is_some())
}

/// A decision rebuilt from the record's fields when its text is not there (a human edited
/// `justification`, or the template owns it). Kind from `type`, `approval` and `state`;
/// rules unknown; sprint from the decision day. The mode is unknown (written as enforce for
/// the tallies): the record is marked `decision_inferred`, so the decision never stands.
pub(super) fn fallback_decision(raw: &Raw, calendar: &SprintCalendar) -> Option<Decision> {
    let emergency = (raw.kind() == "emergency").then(|| "emergency change".to_string());
    let approval = raw.get("approval");
    let kind = match raw.kind() {
        "standard" => DecisionKind::PreApproved,
        "emergency" if matches!(approval, "requested" | "rejected") => DecisionKind::NeedsApproval,
        "emergency" => DecisionKind::PreApproved,
        _ if raw.state() == Some(NEW)
            && !matches!(approval, "requested" | "approved" | "rejected") =>
        {
            return None;
        }
        _ => DecisionKind::NeedsApproval,
    };
    let day = display_day(raw.get("correlation_display"))
        .map(|d| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
    Some(Decision {
        kind,
        rules: Vec::new(),
        mode: Mode::Enforce,
        emergency,
        sprint: day.map(|d| calendar.index_of(d)).unwrap_or_default(),
        allowance: 0,
        allowance_used: 0,
        clock_override: None,
    })
}

/// The record's state in changegate's terms.
pub(super) fn map_state(raw: &Raw) -> State {
    let approval = raw.get("approval");
    if approval == "rejected" {
        return State::Rejected;
    }
    match raw.state() {
        Some(CLOSED) => State::Closed,
        Some(CANCELED) => State::Cancelled,
        Some(IMPLEMENT) | Some(REVIEW) => State::Implementing,
        state => match approval {
            "approved" => State::Approved,
            "requested" => State::AwaitingApproval,
            _ => match state {
                Some(ASSESS) | Some(AUTHORIZE) => State::AwaitingApproval,
                Some(SCHEDULED) => State::Approved,
                _ => State::New,
            },
        },
    }
}

/// A comment read from a journal field: the newest entry without its
/// `2026-03-02 10:00:00 - Jane Doe (Comments)` header.
pub(super) fn journal_text(text: &str) -> Option<String> {
    let is_header = |l: &str| {
        let l = l.trim();
        l.len() > 22
            && parse_sn_time(l.get(..19).unwrap_or("")).is_some()
            && l[19..].starts_with(" - ")
            && l.ends_with(')')
    };
    let mut lines = text.lines().peekable();
    let mut out = Vec::new();
    if lines.peek().is_some_and(|l| is_header(l)) {
        lines.next();
    }
    for line in lines {
        if is_header(line) {
            break;
        }
        out.push(line);
    }
    let joined = out.join("\n").trim().to_string();
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(pairs: &[(&str, &str)]) -> Raw {
        Raw(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn states_map_to_changegate_terms() {
        let cases = [
            (
                raw(&[
                    ("state", "-5"),
                    ("approval", "approved"),
                    ("type", "standard"),
                ]),
                State::Approved,
            ),
            (
                raw(&[("state", "-5"), ("approval", "not requested")]),
                State::New,
            ),
            (
                raw(&[("state", "-4"), ("approval", "requested")]),
                State::AwaitingApproval,
            ),
            (
                raw(&[("state", "-3"), ("approval", "not requested")]),
                State::AwaitingApproval,
            ),
            (
                raw(&[("state", "-2"), ("approval", "approved")]),
                State::Approved,
            ),
            (
                raw(&[("state", "-1"), ("approval", "approved")]),
                State::Implementing,
            ),
            (
                raw(&[("state", "0"), ("approval", "approved")]),
                State::Implementing,
            ),
            (
                raw(&[("state", "3"), ("approval", "approved")]),
                State::Closed,
            ),
            (
                raw(&[("state", "4"), ("approval", "rejected")]),
                State::Rejected,
            ),
            (
                raw(&[("state", "4"), ("approval", "requested")]),
                State::Cancelled,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(map_state(&r), want, "{:?}", r.0);
        }
    }

    #[test]
    fn sn_chg_rest_values_flatten_to_table_api_strings() {
        let v = json!({"state": {"value": -5.0, "display_value": "New"}, "active": {"value": true}, "sys_id": {"value": "abc"},
                       "assignment_group": {"link": "https://x/api", "value": "g1"}, "__meta": {"ignoredFields": []}});
        let r = Raw::from_value(&v).unwrap();
        assert_eq!(r.get("state"), "-5");
        assert_eq!(r.state(), Some(-5));
        assert_eq!(r.get("active"), "true");
        assert_eq!(r.get("assignment_group"), "g1");
        assert!(!r.0.contains_key("__meta"));
    }

    #[test]
    fn key_prefix_matches_fitted_keys() {
        let sha = "a".repeat(40);
        for service in ["acme/payments-api", &"x".repeat(150)] {
            let key = CorrelationKey::new(service, "production", &sha).fitted(KEY_MAX);
            assert!(key.starts_with(&key_prefix(service, "production")), "{key}");
        }
    }

    #[test]
    fn decision_day_round_trips_through_correlation_display() {
        let at = DateTime::parse_from_rfc3339("2026-03-02T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            display_day(&display_for(at)),
            NaiveDate::from_ymd_opt(2026, 3, 2)
        );
        assert_eq!(display_day("something else"), None);
        assert_eq!(display_day("changegate superseded"), None);
        let day = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        for mark in [Mark::Unverified, Mark::Verified, Mark::FailedAfterDeploy] {
            let d = display_marked(day, mark);
            assert_eq!(
                (display_day(&d), display_mark(&d)),
                (Some(day), mark),
                "{d}"
            );
        }
        assert_eq!(
            display_marked(day, Mark::FailedAfterDeploy),
            "changegate 2026-03-02 verified: failed after deploy"
        );
        // Only the verification mark contains the word the due query excludes.
        assert!(!display_for(at).contains(VERIFIED));
        assert!(display_marked(day, Mark::Verified).contains(VERIFIED));
    }

    #[test]
    fn numbers_order_by_their_digits() {
        assert_eq!(number_seq("CHG0030001"), Some(30001));
    }

    #[test]
    fn fallback_decision_from_type_approval_and_state() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        let d = fallback_decision(
            &raw(&[
                ("type", "standard"),
                ("state", "-5"),
                ("approval", "approved"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(
            (d.kind, d.mode, d.emergency.is_none()),
            (DecisionKind::PreApproved, Mode::Enforce, true)
        );
        let d = fallback_decision(
            &raw(&[
                ("type", "normal"),
                ("state", "-4"),
                ("approval", "requested"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(d.kind, DecisionKind::NeedsApproval);
        let d = fallback_decision(
            &raw(&[
                ("type", "emergency"),
                ("state", "-3"),
                ("approval", "requested"),
            ]),
            &cal,
        )
        .unwrap();
        assert_eq!(
            (d.kind, d.emergency.is_some()),
            (DecisionKind::NeedsApproval, true)
        );
        assert!(
            fallback_decision(
                &raw(&[
                    ("type", "normal"),
                    ("state", "-5"),
                    ("approval", "not requested")
                ]),
                &cal
            )
            .is_none()
        );
    }

    #[test]
    fn journal_comment_without_its_header() {
        assert_eq!(
            journal_text("2026-03-02 10:00:00 - Jane Approver (Comments)\nNot during peak hours\n\n2026-03-01 09:00:00 - Bob (Comments)\nold").as_deref(),
            Some("Not during peak hours")
        );
        assert_eq!(
            journal_text("plain comment").as_deref(),
            Some("plain comment")
        );
        assert_eq!(journal_text(""), None);
    }

    #[test]
    fn models_follow_the_base_system() {
        assert_eq!(
            model("standard"),
            &[NEW, SCHEDULED, IMPLEMENT, REVIEW, CLOSED]
        );
        assert!(model("normal").contains(&ASSESS));
        assert!(!model("emergency").contains(&ASSESS));
    }
}

pub(super) mod text {
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

    /// [`defuse`] line by line, the newlines kept (a description).
    pub fn defuse_lines(text: &str) -> String {
        text.lines().map(defuse).collect::<Vec<_>>().join("\n")
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
                author: None,
                tests_passed: self.tests,
                evidence: Default::default(),
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
}
