//! The ledger's reads and writes for the "check" step: verification, KPI summaries and the
//! recorded decisions `policy simulate` replays. Each query reads only the columns it needs.
//! And what keeps `report` flat on a long history (see the schema's eighth migration): the
//! day stamps the triggers keep, the finished sprints' KPI parts `report` keeps, and the
//! few deploys around a sprint's start that its failure episodes need.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Ledger;
use super::client::{Begin, Row, args};
use super::codec::{COLUMNS, add_event, change_id, from_ts, parse_change_id, record_from_row, ts};
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::{RecordedChange, Stamp};
use crate::domain::verify::{LinkedIncident, Verdict};
use crate::domain::{ChangeFacts, ChangeRecord, Decision, DecisionKind, Outcome};
use crate::itsm::{DayStamp, Insights, KeptKpis, KeptSprint, ServiceRef};

/// Every service and environment with a decided change: the pairs from the day stamps (a
/// row per day, however many changes), the display name from one indexed lookup per pair,
/// the latest decided change's. A pair whose changes were all deleted keeps its stamps and
/// has no name: not listed.
pub(super) const SERVICES_SQL: &str = "SELECT service_id, environment, service FROM (
        SELECT d.service_id, d.environment,
            (SELECT c.service FROM changes c INDEXED BY changes_by_decided
             WHERE c.service_id = d.service_id AND c.environment = d.environment
               AND c.decided_at IS NOT NULL
             ORDER BY c.decided_at DESC LIMIT 1) AS service
        FROM (SELECT DISTINCT service_id, environment FROM kpi_stamps) d
     ) AS named
     WHERE service IS NOT NULL
     ORDER BY service_id, environment";

/// The changes of a service and environment decided from ?3 to ?4, for the KPIs
/// ([`summaries`] reads its columns), from the index that holds them all.
pub(super) const SUMMARIES_SQL: &str =
    "SELECT decided_at, decision, pre_approved, emergency, approved_at, deployed_at,
        first_commit_at, outcome, failed_after_deploy, imported_from
     FROM changes INDEXED BY changes_for_kpis
     WHERE service_id = ?1 AND environment = ?2 AND decided_at BETWEEN ?3 AND ?4
     ORDER BY decided_at";

/// The KPIs' view of rows read with the columns of [`SUMMARIES_SQL`]. A change without a decision is one
/// imported from the forge's history (in the deployment measures), or none the KPIs can use.
pub(super) fn summaries(rows: &[Row]) -> Result<Vec<ChangeSummary>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let decision = r.text(1)?.as_deref().and_then(DecisionKind::parse);
        let outcome = r.text(7)?;
        let imported = r.text(9)?.is_some();
        let Some(decided_at) = from_ts(r.int(0)?).filter(|_| decision.is_some() || imported) else {
            continue;
        };
        out.push(ChangeSummary {
            decided_at,
            decision,
            pre_approved: r.flag(2)?,
            emergency: r.flag(3)?,
            approved_at: from_ts(r.int(4)?),
            deployed_at: from_ts(r.int(5)?),
            first_commit_at: from_ts(r.int(6)?),
            outcome: outcome.as_deref().and_then(Outcome::from_word),
            failed_after_deploy: r.flag(8)?,
        });
    }
    Ok(out)
}

/// A stored JSON document that no longer parses: named, never silently skipped.
fn bad_json(what: &str, row: i64, e: serde_json::Error) -> anyhow::Error {
    anyhow!("{what} of {} cannot be read: {e}", change_id(row))
}

impl Ledger {
    pub(super) async fn awaiting_verification_rows(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        self.read_all(
            &format!(
                "SELECT {COLUMNS} FROM changes INDEXED BY changes_awaiting_verification
                 WHERE verified_at IS NULL AND outcome IN ('success', 'failure') AND deployed_at <= ?1
                 ORDER BY deployed_at, id"
            ),
            args![ts(deployed_before)],
        )
        .await?
        .iter()
        .map(|r| record_from_row(r).map(|(_, record)| record))
        .collect()
    }

    pub(super) async fn incidents_of(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        let row =
            parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))?;
        self.read_all(
            "SELECT incident, linked_at FROM incidents WHERE change_id = ?1 ORDER BY linked_at, incident",
            args![row],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(LinkedIncident {
                id: r.string(0)?,
                linked_at: from_ts(r.int(1)?),
            })
        })
        .collect()
    }

    pub(super) async fn write_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let row =
            parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))?;
        let judged = record
            .outcome
            .ok_or_else(|| anyhow!("{} has no outcome to verify", record.id))?;
        let detail = match verdict {
            Verdict::Succeeded => {
                "succeeded: no incident within the verification window".to_string()
            }
            Verdict::FailedAfterDeploy { incidents } => {
                format!("failed after deploy: {}", incidents.join(", "))
            }
            Verdict::Failed { incidents } if incidents.is_empty() => {
                "failed: the deploy failed".to_string()
            }
            Verdict::Failed { incidents } => format!(
                "failed: the deploy failed; incidents {}",
                incidents.join(", ")
            ),
        };
        let after_deploy = matches!(verdict, Verdict::FailedAfterDeploy { .. });
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        // Only a change not verified yet, with the outcome that was judged: a second run (or
        // two schedules racing) writes nothing.
        let n = tx
            .execute(
                "UPDATE changes SET verified_at = ?2, outcome = ?3, failed_after_deploy = ?4
                 WHERE id = ?1 AND verified_at IS NULL AND outcome = ?5",
                args![
                    row,
                    ts(now),
                    verdict.outcome().as_str(),
                    after_deploy,
                    judged.as_str()
                ],
            )
            .await?;
        if n > 0 {
            add_event(&mut tx, row, now, "verified", None, Some(&detail)).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl Insights for Ledger {
    async fn services(&self) -> Result<Vec<ServiceRef>> {
        self.read_all(SERVICES_SQL, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(ServiceRef {
                    service_id: r.string(0)?,
                    environment: r.string(1)?,
                    service: r.string(2)?,
                })
            })
            .collect()
    }

    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        let rows = self
            .read_all(
                SUMMARIES_SQL,
                args![service_id, environment, ts(from), ts(to)],
            )
            .await?;
        summaries(&rows)
    }

    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        // The order of writes within a second comes from the event log.
        let events = tx
            .query(
                "SELECT e.change_id, e.kind, e.at, e.id FROM events e JOIN changes c ON c.id = e.change_id
                 WHERE c.service_id = ?1 AND c.environment = ?2 AND e.kind IN ('decided', 'outcome', 'verified')
                 ORDER BY e.id",
                args![service_id, environment],
            )
            .await?;
        let changes = tx
            .query(
                "SELECT id, coalesce(decision_facts_json, facts_json), decision_json, decided_at, outcome,
                        failed_after_deploy, closed_at, verified_at
                 FROM changes INDEXED BY changes_by_decided
                 WHERE service_id = ?1 AND environment = ?2 AND decided_at IS NOT NULL AND decision_json IS NOT NULL
                 ORDER BY decided_at, id",
                args![service_id, environment],
            )
            .await?;
        tx.commit().await?;
        let mut log: HashMap<i64, Vec<(String, Stamp)>> = HashMap::new();
        for r in &events {
            let (change, kind, at, seq) = (r.i64(0)?, r.string(1)?, r.i64(2)?, r.i64(3)?);
            if let Some(at) = from_ts(Some(at)) {
                log.entry(change)
                    .or_default()
                    .push((kind, Stamp { at, seq }));
            }
        }
        let mut out = Vec::with_capacity(changes.len());
        for r in &changes {
            let row = r.i64(0)?;
            let facts: ChangeFacts =
                serde_json::from_str(&r.string(1)?).map_err(|e| bad_json("the facts", row, e))?;
            let decision: Decision = serde_json::from_str(&r.string(2)?)
                .map_err(|e| bad_json("the decision", row, e))?;
            let Some(decided_at) = from_ts(r.int(3)?) else {
                continue;
            };
            let outcome = r.text(4)?;
            let after_deploy = r.flag(5)?;
            let closed_at = from_ts(r.int(6)?);
            let verified_at = from_ts(r.int(7)?);
            let events = log.remove(&row).unwrap_or_default();
            let stamp_of = |kind: &str, at: Option<DateTime<Utc>>| {
                let at = at?;
                Some(
                    events
                        .iter()
                        .rev()
                        .find(|(k, s)| k == kind && s.at == at)
                        .map_or(Stamp { at, seq: 0 }, |(_, s)| *s),
                )
            };
            let decided = stamp_of("decided", Some(decided_at)).unwrap_or(Stamp {
                at: decided_at,
                seq: 0,
            });
            let superseded = events
                .iter()
                .filter(|(k, s)| k == "decided" && *s < decided)
                .map(|(_, s)| *s)
                .collect();
            // A failure after deploy was recorded as a success first.
            let first = if after_deploy {
                Some(Outcome::Success)
            } else {
                outcome.as_deref().and_then(Outcome::from_word)
            };
            out.push(RecordedChange {
                id: change_id(row),
                row,
                facts,
                decision,
                decided,
                superseded,
                outcome: first.zip(stamp_of("outcome", closed_at)),
                failed_after_deploy: if after_deploy {
                    stamp_of("verified", verified_at)
                } else {
                    None
                },
            });
        }
        Ok(out)
    }
}

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
