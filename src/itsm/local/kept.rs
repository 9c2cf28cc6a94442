//! What keeps `report` flat on a long history (see the schema's eighth migration): the
//! day stamps the triggers keep, the finished sprints' KPI parts `report` keeps, and the
//! few deploys around a sprint's start that its failure episodes need.

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Ledger;
use super::client::{Begin, args};
use super::codec::ts;
use super::insights::{SERVICES_SQL, SUMMARIES_SQL, summaries};
use crate::domain::kpi::ChangeSummary;
use crate::itsm::{DayStamp, KeptKpis, KeptSprint};

/// The stamps of the days from ?3 to ?4.
pub(super) const STAMPS_SQL: &str = "SELECT day, writes, earliest FROM kpi_stamps
     WHERE service_id = ?1 AND environment = ?2 AND day BETWEEN ?3 AND ?4
     ORDER BY day";

/// The kept parts of the sprints starting from ?3 to ?4.
pub(super) const KEPT_SPRINTS_SQL: &str =
    "SELECT start, end_at, sprint, format, stamp, lo, hi, window_from, computed_at, body
     FROM kpi_sprints
     WHERE service_id = ?1 AND environment = ?2 AND start BETWEEN ?3 AND ?4
     ORDER BY start";

/// The deploys of changes decided from ?3 up to ?4 that were deployed at or after ?4, and
/// the latest before it: `changes_by_deployed` read from ?4 on (the current sprint's deploys
/// and the few late ones of earlier changes), and backwards from it for the latest one.
pub(super) const DEPLOYS_AROUND_SQL: &str =
    "SELECT decided_at, decision, pre_approved, emergency, approved_at, deployed_at,
        first_commit_at, outcome, failed_after_deploy, imported_from
     FROM changes INDEXED BY changes_by_deployed
     WHERE service_id = ?1 AND environment = ?2
       AND decided_at >= ?3 AND decided_at < ?4
       AND outcome IN ('success', 'failure')
       AND deployed_at >= coalesce(
           (SELECT deployed_at FROM changes INDEXED BY changes_by_deployed
            WHERE service_id = ?1 AND environment = ?2 AND deployed_at < ?4
              AND decided_at >= ?3 AND decided_at < ?4
              AND outcome IN ('success', 'failure')
            ORDER BY deployed_at DESC LIMIT 1),
           ?4)
     ORDER BY decided_at";

/// What a report reads from a ledger beyond the decision's queries, by name, for
/// query-plan and work checks (tests, the benchmark): the services, the day stamps, the
/// kept parts, the deploys around the current sprint's start and its changes.
pub const REPORT_QUERIES: [(&str, &str); 5] = [
    ("services", SERVICES_SQL),
    ("stamps", STAMPS_SQL),
    ("kept_sprints", KEPT_SPRINTS_SQL),
    ("deploys_around", DEPLOYS_AROUND_SQL),
    ("current_changes", SUMMARIES_SQL),
];

#[async_trait]
impl KeptKpis for Ledger {
    async fn stamps(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayStamp>> {
        self.read_all(STAMPS_SQL, args![service_id, environment, ts(from), ts(to)])
            .await?
            .iter()
            .map(|r| {
                Ok(DayStamp {
                    day: r.i64(0)?,
                    writes: r.i64(1)?,
                    earliest: r.i64(2)?,
                })
            })
            .collect()
    }

    async fn kept_sprints(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<KeptSprint>> {
        self.read_all(
            KEPT_SPRINTS_SQL,
            args![service_id, environment, ts(from), ts(to)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(KeptSprint {
                start: r.i64(0)?,
                end: r.i64(1)?,
                sprint: r.i64(2)?,
                format: r.i64(3)?,
                stamp: r.i64(4)?,
                lo: r.i64(5)?,
                hi: r.i64(6)?,
                window_from: r.i64(7)?,
                computed_at: r.i64(8)?,
                body: r.string(9)?,
            })
        })
        .collect()
    }

    async fn keep_sprints(
        &self,
        service_id: &str,
        environment: &str,
        rows: &[KeptSprint],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        for k in rows {
            tx.execute(
                "INSERT INTO kpi_sprints (service_id, environment, start, end_at, sprint, format,
                     stamp, lo, hi, window_from, computed_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (service_id, environment, start) DO UPDATE SET
                     end_at = excluded.end_at, sprint = excluded.sprint, format = excluded.format,
                     stamp = excluded.stamp, lo = excluded.lo, hi = excluded.hi,
                     window_from = excluded.window_from, computed_at = excluded.computed_at,
                     body = excluded.body",
                args![
                    service_id,
                    environment,
                    k.start,
                    k.end,
                    k.sprint,
                    k.format,
                    k.stamp,
                    k.lo,
                    k.hi,
                    k.window_from,
                    k.computed_at,
                    k.body.as_str()
                ],
            )
            .await?;
        }
        tx.commit().await
    }

    async fn deploys_around(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        before: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        let rows = self
            .read_all(
                DEPLOYS_AROUND_SQL,
                args![service_id, environment, ts(from), ts(before)],
            )
            .await?;
        summaries(&rows)
    }
}
