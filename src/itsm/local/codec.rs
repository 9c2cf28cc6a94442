//! Rows to records and back: timestamps, ledger ids, the event log and the columns read.

use anyhow::Result;
use chrono::{DateTime, TimeZone, Utc};

use super::client::{Row, Tx, Value, args};
use crate::domain::{Author, ChangeRecord, Decision, DecisionKind, Outcome, State};

pub(super) fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

pub(super) fn from_ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// The human id of a ledger row.
pub fn change_id(row_id: i64) -> String {
    format!("CG-{row_id}")
}

pub(super) fn parse_change_id(id: &str) -> Option<i64> {
    let id = id.trim();
    id.strip_prefix("CG-").unwrap_or(id).parse().ok()
}

pub(super) async fn add_event(
    tx: &mut Tx<'_>,
    row_id: i64,
    at: DateTime<Utc>,
    kind: &str,
    actor: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (change_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![row_id, ts(at), kind, actor, detail],
    )
    .await?;
    Ok(())
}

pub(super) const COLUMNS: &str = "id, correlation_key, state, decision_json, outcome, emergency_reason, approved_by, \
     approval_comment, opened_at, decided_at, approved_at, deployed_at, decision, \
     facts_json";

pub(super) fn record_from_row(row: &Row) -> Result<(i64, ChangeRecord)> {
    let id = row.i64(0)?;
    let state = row.string(2)?;
    let decision = row.text(3)?;
    let outcome = row.text(4)?;
    let state = State::parse(&state).unwrap_or(State::New);
    let decision = decision.and_then(|d| serde_json::from_str::<Decision>(&d).ok());
    // A stored `blocked` over a policy decision that was not, on a change still awaiting
    // approval, is a wait that timed out.
    let final_word = row.text(12)?;
    let timed_out = state == State::AwaitingApproval
        && final_word.as_deref() == Some(DecisionKind::Blocked.as_str())
        && decision
            .as_ref()
            .is_some_and(|d| d.kind != DecisionKind::Blocked);
    // The author rides in the facts (an object such as `{"login": "octocat"}`).
    // Read whole and parsed here, not with SQL's JSON functions: the same on both stores.
    let facts = row.text(13)?;
    let author = facts
        .and_then(|f| serde_json::from_str::<serde_json::Value>(&f).ok())
        .and_then(|mut f| f.get_mut("author").map(serde_json::Value::take))
        .and_then(|a| serde_json::from_value::<Author>(a).ok());
    Ok((
        id,
        ChangeRecord {
            id: change_id(id),
            url: None,
            key: row.string(1)?,
            state,
            decision,
            outcome: outcome.as_deref().and_then(Outcome::from_word),
            emergency_reason: row.text(5)?,
            approved_by: row.text(6)?,
            approval_comment: row.text(7)?,
            opened_at: from_ts(row.int(8)?),
            decided_at: from_ts(row.int(9)?),
            approved_at: from_ts(row.int(10)?),
            deployed_at: from_ts(row.int(11)?),
            incidents: Vec::new(),
            author,
            timed_out,
            decision_inferred: false,
            approval_not_counted: false,
        },
    ))
}

/// The change `filter` selects (one row), with its linked incidents.
pub(super) async fn load(
    tx: &mut Tx<'_>,
    filter: &str,
    args: &[Value],
) -> Result<Option<ChangeRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM changes WHERE {filter}");
    let Some(row) = tx.query_opt(&sql, args).await? else {
        return Ok(None);
    };
    let (id, mut record) = record_from_row(&row)?;
    record.incidents = tx
        .query(
            "SELECT incident FROM incidents WHERE change_id = ?1 ORDER BY linked_at, incident",
            args![id],
        )
        .await?
        .iter()
        .map(|r| r.string(0))
        .collect::<Result<_>>()?;
    Ok(Some(record))
}
