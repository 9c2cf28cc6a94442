//! What keeps `report` flat on a long history (see the schema's eighth migration): the
//! day stamps the triggers keep, the finished sprints' KPI parts `report` keeps, and the
//! few deploys around a sprint's start that its failure episodes need.

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Ledger;
use super::client::{Begin, args};
use super::codec::ts;
use super::insights::{SUMMARY_COLUMNS, summaries};
use crate::domain::kpi::ChangeSummary;
use crate::itsm::{DayStamp, KeptKpis, KeptSprint};

#[async_trait]
impl KeptKpis for Ledger {
    async fn stamps(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DayStamp>> {
        self.read_all(
            "SELECT day, writes, earliest FROM kpi_stamps
             WHERE service_id = ?1 AND environment = ?2 AND day BETWEEN ?3 AND ?4
             ORDER BY day",
            args![service_id, environment, ts(from), ts(to)],
        )
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
            "SELECT start, end_at, sprint, format, stamp, lo, hi, window_from, computed_at, body
             FROM kpi_sprints
             WHERE service_id = ?1 AND environment = ?2 AND start BETWEEN ?3 AND ?4
             ORDER BY start",
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
        // Both read `changes_by_deployed` from `before` on (the current sprint's deploys and
        // the few late ones of earlier changes), and backwards from it for the latest one.
        let rows = self
            .read_all(
                &format!(
                    "SELECT {SUMMARY_COLUMNS} FROM changes INDEXED BY changes_by_deployed
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
                     ORDER BY decided_at"
                ),
                args![service_id, environment, ts(from), ts(before)],
            )
            .await?;
        summaries(&rows)
    }
}
