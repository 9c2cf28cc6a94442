//! Rows to records and back: timestamps, ledger ids, the event log and the columns read.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

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

pub(super) fn add_event(
    c: &Connection,
    row_id: i64,
    at: DateTime<Utc>,
    kind: &str,
    actor: Option<&str>,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO events (change_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![row_id, ts(at), kind, actor, detail],
    )?;
    Ok(())
}

pub(super) const COLUMNS: &str = "id, correlation_key, state, decision_json, outcome, emergency_reason, approved_by, \
     approval_comment, opened_at, decided_at, approved_at, deployed_at, decision, \
     json_extract(facts_json, '$.author')";

pub(super) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, ChangeRecord)> {
    let id: i64 = row.get(0)?;
    let state: String = row.get(2)?;
    let decision: Option<String> = row.get(3)?;
    let outcome: Option<String> = row.get(4)?;
    let state = State::parse(&state).unwrap_or(State::New);
    let decision = decision.and_then(|d| serde_json::from_str::<Decision>(&d).ok());
    // A stored `blocked` over a policy decision that was not, on a change still awaiting
    // approval, is a wait that timed out.
    let final_word: Option<String> = row.get(12)?;
    let timed_out = state == State::AwaitingApproval
        && final_word.as_deref() == Some(DecisionKind::Blocked.as_str())
        && decision
            .as_ref()
            .is_some_and(|d| d.kind != DecisionKind::Blocked);
    // The author rides in the facts (an object such as `{"login": "octocat"}`).
    let author: Option<String> = row.get(13)?;
    let author = author.and_then(|a| serde_json::from_str::<Author>(&a).ok());
    Ok((
        id,
        ChangeRecord {
            id: change_id(id),
            url: None,
            key: row.get(1)?,
            state,
            decision,
            outcome: outcome.as_deref().and_then(Outcome::from_word),
            emergency_reason: row.get(5)?,
            approved_by: row.get(6)?,
            approval_comment: row.get(7)?,
            opened_at: from_ts(row.get(8)?),
            decided_at: from_ts(row.get(9)?),
            approved_at: from_ts(row.get(10)?),
            deployed_at: from_ts(row.get(11)?),
            incidents: Vec::new(),
            author,
            timed_out,
            decision_inferred: false,
        },
    ))
}

pub(super) fn load(
    c: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Option<ChangeRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM changes WHERE {filter}");
    let Some((id, mut record)) = c.query_row(&sql, args, record_from_row).optional()? else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(
        "SELECT incident FROM incidents WHERE change_id = ?1 ORDER BY linked_at, incident",
    )?;
    record.incidents = stmt
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(record))
}
