//! The labels changegate writes. All are `[a-z0-9-]`, so every Jira site accepts them and
//! `labels = "…"` matches them exactly.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

use crate::domain::{Decision, DecisionKind, Mode, Outcome};

/// On every change issue changegate opened.
pub const MARK: &str = "changegate";
/// On an issue a parallel run created for a change that already had one.
pub const DUPLICATE: &str = "changegate-duplicate";
pub const EMERGENCY: &str = "changegate-emergency";
pub const OBSERVE: &str = "changegate-observe";
/// On a change `verify` has settled: it is never verified (nor written) again.
pub const VERIFIED: &str = "changegate-verified";
/// On a success `verify` turned into a failure (its outcome label is then the failure's).
pub const FAILED_AFTER_DEPLOY: &str = "changegate-failed-after-deploy";
/// On a change whose gate's wait for approval ran out: a re-run reads the timeout back with
/// the issue (the comment says it to humans). A new decision removes it.
pub const TIMED_OUT: &str = "changegate-timed-out";
const DAY: &str = "changegate-day-";
const SERVICE: &str = "changegate-svc-";

/// FNV-1a, 64 bits: stable across versions and platforms.
fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One label per service and environment: the history's scope.
pub fn service(service_id: &str, environment: &str) -> String {
    format!(
        "{SERVICE}{:016x}",
        fnv1a64(&format!("{service_id}:{environment}"))
    )
}

/// Whether `label` is a service label (not a change's, which goes on with the commit).
pub fn is_service(label: &str) -> bool {
    label
        .strip_prefix(SERVICE)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One label per change: service, environment and commit.
pub fn key(service_id: &str, environment: &str, sha: &str) -> String {
    let sha: String = sha
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(200)
        .collect();
    format!("{}-{sha}", service(service_id, environment))
}

pub fn kind(kind: DecisionKind) -> String {
    format!("changegate-{}", kind.as_str())
}

pub const KINDS: [DecisionKind; 3] = [
    DecisionKind::PreApproved,
    DecisionKind::NeedsApproval,
    DecisionKind::Blocked,
];

pub fn outcome(outcome: Outcome) -> String {
    format!("changegate-{}", outcome.as_str())
}

/// The day (UTC) the change was decided: sprints start at midnight UTC, so the day
/// places a change in its sprint exactly, whatever the Jira user's time zone.
pub fn day(date: NaiveDate) -> String {
    format!("{DAY}{}", date.format("%Y%m%d"))
}

pub fn parse_day(label: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(label.strip_prefix(DAY)?, "%Y%m%d").ok()
}

pub fn is_day(label: &str) -> bool {
    label.starts_with(DAY)
}

/// Whether `list` holds `label`.
pub(super) fn has(list: &[String], label: &str) -> bool {
    list.iter().any(|l| l == label)
}

/// The decision the labels tell, when the property is gone: kind, mode and emergency.
pub(super) fn decision(list: &[String]) -> Option<Decision> {
    let kind = KINDS.into_iter().find(|k| has(list, &kind(*k)))?;
    Some(Decision {
        kind,
        rules: Vec::new(),
        mode: if has(list, OBSERVE) {
            Mode::Observe
        } else {
            Mode::Enforce
        },
        emergency: has(list, EMERGENCY).then(|| "emergency (from the issue's labels)".to_string()),
        sprint: 0,
        allowance: 0,
        allowance_used: 0,
        clock_override: None,
    })
}

/// The labels of a decision taken `now`.
pub(super) fn of_decision(d: &Decision, now: DateTime<Utc>) -> Vec<String> {
    let mut out = vec![kind(d.kind), day(now.date_naive())];
    if d.emergency.is_some() {
        out.push(EMERGENCY.to_string());
    }
    if d.mode == Mode::Observe {
        out.push(OBSERVE.to_string());
    }
    out
}

/// Whether `label` is one [`of_decision`] writes: replaced when the change is decided again.
pub(super) fn is_decision(label: &str) -> bool {
    KINDS.iter().any(|k| label == kind(*k))
        || is_day(label)
        || label == EMERGENCY
        || label == OBSERVE
        || label == TIMED_OUT
}

/// The `update.labels` operations of an issue edit: the removals, then the additions.
pub(super) fn ops<'a>(
    remove: impl IntoIterator<Item = &'a str>,
    add: impl IntoIterator<Item = &'a str>,
) -> Value {
    let remove = remove.into_iter().map(|l| json!({ "remove": l }));
    let add = add.into_iter().map(|l| json!({ "add": l }));
    Value::Array(remove.chain(add).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_plain_and_distinct() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let a = key("acme/payments-api", "production", sha);
        let b = key("acme/payments-api", "staging", sha);
        assert_ne!(a, b);
        assert!(a.starts_with(&service("acme/payments-api", "production")));
        assert!(a.ends_with(sha));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        assert!(a.len() < 255);
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(parse_day(&day(date)), Some(date));
        assert_eq!(kind(DecisionKind::PreApproved), "changegate-pre-approved");
        assert!(is_service(&service("acme/payments-api", "production")));
        assert!(!is_service(&a));
        assert!(!is_service(VERIFIED));
    }

    #[test]
    fn decision_from_labels_keeps_kind_mode_and_emergency() {
        let d = decision(&[
            kind(DecisionKind::NeedsApproval),
            OBSERVE.into(),
            EMERGENCY.into(),
        ])
        .unwrap();
        assert_eq!(d.kind, DecisionKind::NeedsApproval);
        assert_eq!(d.mode, Mode::Observe);
        assert!(d.emergency.is_some());
        assert!(decision(&["x".into()]).is_none());
    }
}
