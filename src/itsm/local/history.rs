//! The track record a decision reads, in a few indexed SQL aggregates whatever its size.

use anyhow::Result;
use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::itsm::{HistoryQuery, Since, TrackRecord};

use super::Ledger;
use super::codec::ts;
use crate::domain::{CorrelationKey, History, Outcome, SprintTally};

// The queries a decision runs. Each reads one index range of one service and environment
// (SQL aggregation, never every row); the row id excludes the change being decided.

/// Closed changes with a success or failure outcome. ?1 service, ?2 environment, ?3 row id to leave out.
pub(super) const CLOSED_TOTAL_SQL: &str =
    "SELECT count(*) FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at <= ?4
       AND outcome IN ('success', 'failure') AND id != ?3";

/// The most recent closed outcomes, newest first. ?4 the window, ?5 the clock.
pub(super) const RECENT_SQL: &str = "SELECT outcome FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at <= ?5
       AND outcome IN ('success', 'failure') AND id != ?3
     ORDER BY closed_at DESC, id DESC LIMIT ?4";

/// Tallies per sprint, by decision time. ?3 start of the first sprint, ?4 sprint length in
/// seconds, ?5 row id to leave out, ?6 the clock. Offsets from ?3, a sprint boundary, are
/// never negative, so integer division is a floor.
pub(super) const SPRINTS_SQL: &str = "SELECT (decided_at - ?3) / ?4 AS s,
            sum(outcome = 'success'), sum(outcome = 'failure'), sum(outcome = 'cancelled'),
            sum(pre_approved), sum(emergency)
     FROM changes INDEXED BY changes_by_decided
     WHERE service_id = ?1 AND environment = ?2 AND decided_at BETWEEN ?3 AND ?6 AND id != ?5
     GROUP BY s";

/// The commit of the last change deployed successfully (the start of the next range). A
/// success outcome is only ever recorded for a change whose gate passed (`deployed_at` set).
pub(super) const LAST_SHA_SQL: &str = "SELECT commit_sha FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at IS NOT NULL
       AND outcome = 'success'
     ORDER BY closed_at DESC, id DESC LIMIT 1";

/// The decision's queries by name, for query-plan checks (tests, the benchmark).
pub const DECISION_QUERIES: [(&str, &str); 4] = [
    ("closed_total", CLOSED_TOTAL_SQL),
    ("recent", RECENT_SQL),
    ("sprints", SPRINTS_SQL),
    ("last_change_sha", LAST_SHA_SQL),
];

#[async_trait]
impl TrackRecord for Ledger {
    async fn history(&self, q: &HistoryQuery<'_>) -> Result<History> {
        let from = ts(q.calendar.start_of(q.from_sprint));
        let len = q.calendar.length_secs();
        // Nothing after the clock counts: a what-if run at CHANGEGATE_NOW sees the history
        // as it stood then (outcomes recorded later aside, which the sprint tallies keep).
        let now = ts(q.now);
        self.with(|c| {
            // The change being decided is left out by its row id, not its key: the row id is
            // in every index, so each query below reads its index alone (covering), never
            // the table, however long the history.
            let exclude: i64 = match q.exclude_key {
                Some(key) => c
                    .query_row(
                        "SELECT id FROM changes WHERE correlation_key = ?1",
                        [key],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(-1),
                None => -1,
            };
            let closed_total: i64 = c.query_row(
                CLOSED_TOTAL_SQL,
                params![q.service_id, q.environment, exclude, now],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(RECENT_SQL)?;
            let recent = stmt
                .query_map(
                    params![q.service_id, q.environment, exclude, q.window, now],
                    |r| r.get::<_, String>(0),
                )?
                .filter_map(|o| o.map(|o| Outcome::from_word(&o)).transpose())
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare_cached(SPRINTS_SQL)?;
            let rows = stmt.query_map(
                params![q.service_id, q.environment, from, len, exclude, now],
                |r| {
                    let count = |i: usize| -> rusqlite::Result<u32> {
                        Ok(u32::try_from(r.get::<_, Option<i64>>(i)?.unwrap_or(0))
                            .unwrap_or(u32::MAX))
                    };
                    Ok((
                        q.from_sprint + r.get::<_, i64>(0)?,
                        SprintTally {
                            succeeded: count(1)?,
                            failed: count(2)?,
                            cancelled: count(3)?,
                            pre_approved: count(4)?,
                            emergency: count(5)?,
                        },
                    ))
                },
            )?;
            let sprints = rows.collect::<rusqlite::Result<_>>()?;
            Ok(History {
                closed_total: u64::try_from(closed_total).unwrap_or(0),
                recent,
                sprints,
            })
        })
    }

    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        let sha = self.with(|c| {
            c.query_row(
                LAST_SHA_SQL,
                params![key.service_id, key.environment],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(Since { sha, found: None })
    }
}
