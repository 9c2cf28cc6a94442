//! JSM approvals: where the approvers of a change stand.

use std::sync::atomic::Ordering;

use anyhow::Result;
use chrono::{DateTime, TimeZone, Utc};
use reqwest::Method;
use serde_json::Value;

use super::Jira;
use super::client::{Op, jira_words, not_found};
use super::issue::str_at;

/// Where the JSM approvals of a change stand.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    Pending,
    Approved {
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
    Declined {
        by: Option<String>,
        at: Option<DateTime<Utc>>,
    },
}

pub(super) fn parse_approvals(v: &Value) -> Verdict {
    let approvals: Vec<&Value> = v
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let names = |a: &Value, decision: &str| -> Vec<String> {
        a.get("approvers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|x| x.get("approverDecision").and_then(Value::as_str) == Some(decision))
                    .filter_map(|x| str_at(x, &["approver", "displayName"]).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let at = |a: &Value| {
        a.get("completedDate")
            .and_then(|d| d.get("epochMillis"))
            .and_then(Value::as_i64)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    };
    let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(", "));
    let decision = |a: &Value| {
        a.get("finalDecision")
            .and_then(Value::as_str)
            .unwrap_or("pending")
            .to_string()
    };
    if let Some(declined) = approvals.iter().find(|a| decision(a) == "declined") {
        // Whoever declined; should no approver be marked so, whoever answered.
        let mut by = names(declined, "declined");
        if by.is_empty() {
            by = names(declined, "approved");
        }
        return Verdict::Declined {
            by: join(by),
            at: at(declined),
        };
    }
    if !approvals.is_empty() && approvals.iter().all(|a| decision(a) == "approved") {
        let by: Vec<String> = approvals
            .iter()
            .flat_map(|a| names(a, "approved"))
            .collect();
        let at = approvals.iter().filter_map(|a| at(a)).max();
        return Verdict::Approved { by: join(by), at };
    }
    Verdict::Pending
}

impl Jira {
    pub(super) async fn approvals(&self, key: &str) -> Result<Verdict> {
        let query = [("start", "0".to_string()), ("limit", "50".to_string())];
        match self
            .request(
                Method::GET,
                &["rest", "servicedeskapi", "request", key, "approval"],
                &query,
                None,
            )
            .await
        {
            Ok(v) => Ok(parse_approvals(&v)),
            Err(e) if not_found(&e) => {
                if !self.warned_no_request.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "{key} has no Jira Service Management approvals ({}): it is approved only by moving it to {:?}",
                        jira_words(e.body().unwrap_or_default()),
                        self.cfg.statuses.implementing
                    );
                }
                Ok(Verdict::Pending)
            }
            Err(e) => Err(self.explain(e, Op::Approvals(key))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn approvals_from_the_reference_payload() {
        let v = crate::itsm::jira::reference("servicedeskapi/get-approvals.json");
        // The example holds one approved and one declined approval: declined wins. (Its
        // declined approval marks no approver as declining: whoever answered is named.)
        match parse_approvals(&v) {
            Verdict::Declined { by, at } => {
                assert_eq!(by.as_deref(), Some("Fred F. User"));
                assert!(at.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approvals_pending_and_approved() {
        let pending = json!({"values": [{"id": "1", "finalDecision": "pending", "approvers": []}]});
        assert_eq!(parse_approvals(&pending), Verdict::Pending);
        assert_eq!(parse_approvals(&json!({"values": []})), Verdict::Pending);
        let ok = json!({"values": [{"id": "1", "finalDecision": "approved", "approvers": [
            {"approver": {"displayName": "Ada"}, "approverDecision": "approved"},
            {"approver": {"displayName": "Bob"}, "approverDecision": "pending"}]}]});
        assert!(
            matches!(parse_approvals(&ok), Verdict::Approved { by: Some(b), .. } if b == "Ada")
        );
    }
}
