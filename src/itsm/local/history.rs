//! The track record a decision reads, in a few indexed SQL aggregates whatever its size.

use anyhow::Result;
use async_trait::async_trait;

use crate::itsm::{HistoryQuery, Since, TrackRecord};

use super::Ledger;
use super::client::{Begin, args};
use super::codec::ts;
use crate::domain::{CorrelationKey, History, Outcome, SprintTally};

// The queries a decision runs. Each reads a number of rows that does not grow with the
// history: the counts kept as changes are written (`tallies` per UTC day, `totals`; see the
// schema's sixth migration), and of the changes themselves only today's (not yet a whole
// day), those closed after the clock (none, unless a what-if run set it back), the window's
// most recent outcomes and the change being decided, which each count leaves out by its
// row id (?3 / ?5).

/// Closed changes with a success or failure outcome, at the clock (?4): the running total,
/// less those closed after the clock, less the change being decided.
pub(super) const CLOSED_TOTAL_SQL: &str =
    "SELECT coalesce((SELECT closed FROM totals WHERE service_id = ?1 AND environment = ?2), 0)
        - (SELECT count(*) FROM changes INDEXED BY changes_by_closed
           WHERE service_id = ?1 AND environment = ?2 AND closed_at > ?4
             AND outcome IN ('success', 'failure'))
        - (SELECT count(*) FROM changes
           WHERE id = ?3 AND closed_at <= ?4 AND outcome IN ('success', 'failure'))";

/// The most recent closed outcomes, newest first. ?4 the window, ?5 the clock.
pub(super) const RECENT_SQL: &str = "SELECT outcome FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at <= ?5
       AND outcome IN ('success', 'failure') AND id != ?3
     ORDER BY closed_at DESC, id DESC LIMIT ?4";

/// Tallies per sprint, by decision time: the whole days from ?3 (the first sprint's start,
/// a midnight) to ?7 (the clock's midnight) from `tallies`, the clock's own day up to the
/// clock (?6) from the changes, and the change being decided (?5) taken back out of the
/// days it is counted in. ?4 is the sprint length in seconds; offsets from ?3 are never
/// negative, so integer division is a floor.
pub(super) const SPRINTS_SQL: &str = "SELECT s, sum(ok), sum(bad), sum(cx), sum(pa), sum(em) FROM (
        SELECT (day - ?3) / ?4 AS s, succeeded AS ok, failed AS bad, cancelled AS cx,
               pre_approved AS pa, emergency AS em
        FROM tallies WHERE service_id = ?1 AND environment = ?2 AND day >= ?3 AND day < ?7
        UNION ALL
        SELECT (decided_at - ?3) / ?4, CASE WHEN outcome = 'success' THEN 1 ELSE 0 END,
               CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END,
               CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END, pre_approved, emergency
        FROM changes INDEXED BY changes_by_decided
        WHERE service_id = ?1 AND environment = ?2 AND decided_at BETWEEN ?7 AND ?6 AND id != ?5
        UNION ALL
        SELECT (decided_at - ?3) / ?4, -CASE WHEN outcome = 'success' THEN 1 ELSE 0 END,
               -CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END,
               -CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END, -pre_approved, -emergency
        FROM changes WHERE id = ?5 AND decided_at >= ?3 AND decided_at < ?7
     ) AS counted GROUP BY s";

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
        // The clock's midnight (UTC), and never before the first sprint's start: whole days
        // before it are read from the tallies.
        let midnight = (now - now.rem_euclid(86_400)).max(from);
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        // The change being decided is left out by its row id, not its key: the row id is in
        // every index, so each query below reads its index alone (covering), never the
        // table, however long the history.
        let exclude = match q.exclude_key {
            Some(key) => tx
                .query_opt(
                    "SELECT id FROM changes WHERE correlation_key = ?1",
                    args![key],
                )
                .await?
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(-1),
            None => -1,
        };
        let closed_total = tx
            .query_one(
                CLOSED_TOTAL_SQL,
                args![q.service_id, q.environment, exclude, now],
            )
            .await?
            .i64(0)?;
        let recent = tx
            .query(
                RECENT_SQL,
                args![q.service_id, q.environment, exclude, q.window, now],
            )
            .await?
            .iter()
            .map(|r| r.string(0))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .filter_map(|o| Outcome::from_word(o))
            .collect();
        let rows = tx
            .query(
                SPRINTS_SQL,
                args![
                    q.service_id,
                    q.environment,
                    from,
                    len,
                    exclude,
                    now,
                    midnight
                ],
            )
            .await?;
        tx.commit().await?;
        let count = |r: &super::client::Row, i: usize| -> Result<u32> {
            Ok(u32::try_from(r.int(i)?.unwrap_or(0)).unwrap_or(u32::MAX))
        };
        let sprints = rows
            .iter()
            .map(|r| {
                Ok((
                    q.from_sprint + r.i64(0)?,
                    SprintTally {
                        succeeded: count(r, 1)?,
                        failed: count(r, 2)?,
                        cancelled: count(r, 3)?,
                        pre_approved: count(r, 4)?,
                        emergency: count(r, 5)?,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(History {
            closed_total: u64::try_from(closed_total).unwrap_or(0),
            recent,
            sprints,
        })
    }

    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Since> {
        let sha = self
            .read_all(
                LAST_SHA_SQL,
                args![key.service_id.as_str(), key.environment.as_str()],
            )
            .await?
            .first()
            .map(|r| r.string(0))
            .transpose()?;
        Ok(Since { sha, found: None })
    }
}
