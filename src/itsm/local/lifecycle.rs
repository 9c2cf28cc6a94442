//! A change's life in the ledger: find, open, start, record the outcome or a refusal; and the
//! human decisions (`approve`, `reject`, `incident`) only a ledger takes.

use anyhow::{Result, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::itsm::{
    Admission, Announcements, ChangeStore, ImportedChange, Imports, Intent, Lookup, ManualApproval,
    PendingWait, Waits,
};

use super::Ledger;
use super::client::{Begin, args};
use super::codec::{COLUMNS, add_event, from_ts, load, parse_change_id, record_from_row, ts};
use crate::domain::approval::Approver;
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, Outcome, State,
};

fn row_of(record: &ChangeRecord) -> Result<i64> {
    parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))
}

#[async_trait]
impl ChangeStore for Ledger {
    async fn find(&self, key: &CorrelationKey, _intent: Intent) -> Result<Lookup> {
        let full = key.to_string();
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        let record = load(&mut tx, "correlation_key = ?1", args![full]).await?;
        tx.commit().await?;
        Ok(Lookup::of(key, record))
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        match parse_change_id(id) {
            Some(row_id) => self.get_row(row_id).await,
            None => Ok(None),
        }
    }

    async fn open(
        &self,
        facts: &ChangeFacts,
        decision: Option<&Decision>,
        // The ledger looks the key up again under its write lock, where two runs cannot race.
        _found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let key = facts.key().to_string();
        let facts_json = serde_json::to_string(facts)?;
        let lines = facts.lines_changed.and_then(|n| i64::try_from(n).ok());
        let first_commit = facts.first_commit_at().map(ts);
        let mut conn = self.conn().await?;
        let mut tx = conn
            .begin(Begin::Serialised(&facts.service_id, &facts.environment))
            .await?;
        // Looked up first, under the write lock: an insert that would conflict never runs,
        // so row ids (and change ids) have no gaps.
        let known = tx
            .query_opt(
                "SELECT id FROM changes WHERE correlation_key = ?1",
                args![&key],
            )
            .await?;
        let inserted = if known.is_none() {
            tx.execute(
                "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha, repository,
                                      state, opened_at, first_commit_at, lines_changed, facts_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?10)",
                args![
                    &key,
                    &facts.service,
                    &facts.service_id,
                    &facts.environment,
                    &facts.commit_sha,
                    &facts.repository,
                    ts(now),
                    first_commit,
                    lines,
                    &facts_json
                ],
            )
            .await?
        } else {
            0
        };
        let row = tx
            .query_one(
                &format!("SELECT {COLUMNS} FROM changes WHERE correlation_key = ?1"),
                args![&key],
            )
            .await?;
        let (row_id, existing) = record_from_row(&row)?;
        if inserted > 0 {
            add_event(&mut tx, row_id, now, "opened", facts.actor.as_deref(), None).await?;
        } else if existing.state == State::New || existing.state == State::AwaitingApproval {
            // A later run may know more (e.g. the PR); keep the freshest facts.
            tx.execute(
                "UPDATE changes SET facts_json = ?2, lines_changed = coalesce(?3, lines_changed),
                        first_commit_at = coalesce(?4, first_commit_at) WHERE id = ?1",
                args![row_id, &facts_json, lines, first_commit],
            )
            .await?;
        }
        if let Some(d) = decision
            && existing.takes_decision(d.mode, d.emergency.is_some())
        {
            // Counted again under the write lock: two changes decided at the same moment
            // never both take the last free slot of the allowance.
            let d = &self
                .recount_allowance(&mut tx, row_id, facts, d, now)
                .await?;
            let counts = d.counts_against_allowance();
            tx.execute(
                "UPDATE changes SET decision = ?2, decision_json = ?3, decided_at = ?4, state = ?5,
                        pre_approved = ?6, emergency = ?7, emergency_reason = ?8, mode = ?9,
                        decision_facts_json = ?10
                 WHERE id = ?1",
                args![
                    row_id,
                    d.kind.as_str(),
                    serde_json::to_string(d)?,
                    ts(now),
                    d.state_after().as_str(),
                    counts,
                    d.emergency.is_some(),
                    &d.emergency,
                    d.mode.as_str(),
                    &facts_json
                ],
            )
            .await?;
            add_event(&mut tx, row_id, now, "decided", None, Some(d.kind.as_str())).await?;
        }
        // Test-only: a kill here must leave nothing of this transaction behind.
        self.pause_point().await;
        let record = load(&mut tx, "id = ?1", args![row_id]).await?;
        tx.commit().await?;
        record.ok_or_else(|| anyhow!("the change {key} vanished from the ledger"))
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        self.get(&record.id)
            .await?
            .ok_or_else(|| anyhow!("the change {} is no longer in the ledger", record.id))
    }

    /// A ledger's approvals are `changegate approve`'s, checked when they are given.
    async fn approvers(&self, _record: &ChangeRecord) -> Result<Option<Vec<Approver>>> {
        Ok(None)
    }

    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord> {
        let row_id = row_of(record)?;
        {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin(Begin::Plain).await?;
            let n = tx
                .execute(
                    "UPDATE changes SET state = 'implementing', deployed_at = coalesce(deployed_at, ?2)
                     WHERE id = ?1 AND state IN ('new', 'approved', 'awaiting-approval')",
                    args![row_id, ts(now)],
                )
                .await?;
            if n > 0 {
                add_event(&mut tx, row_id, now, "implementing", None, None).await?;
            }
            tx.commit().await?;
        }
        self.refresh(record).await
    }

    async fn record_outcome(
        &self,
        record: &ChangeRecord,
        outcome: Outcome,
        notes: &str,
        // The ledger's key is unique: no duplicates to tidy up.
        _found: Option<&Lookup>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let row_id = row_of(record)?;
        // A change whose gate never passed was not deployed, whatever the job says: it is
        // cancelled, and counts in no success rate.
        let outcome = if record.deployed_at.is_none() {
            Outcome::Cancelled
        } else {
            outcome
        };
        let state = if outcome == Outcome::Cancelled && record.state != State::Rejected {
            State::Cancelled
        } else if outcome == Outcome::Cancelled {
            State::Rejected
        } else {
            State::Closed
        };
        {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin(Begin::Plain).await?;
            let n = tx
                .execute(
                    "UPDATE changes SET outcome = ?2, state = ?3, closed_at = ?4 WHERE id = ?1 AND outcome IS NULL",
                    args![row_id, outcome.as_str(), state.as_str(), ts(now)],
                )
                .await?;
            if n > 0 {
                let detail = format!("{outcome}: {notes}");
                add_event(&mut tx, row_id, now, "outcome", None, Some(&detail)).await?;
            }
            tx.commit().await?;
        }
        self.refresh(record).await
    }

    async fn record_refusal(
        &self,
        record: &ChangeRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let row_id = row_of(record)?;
        {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin(Begin::Plain).await?;
            // Only a change still awaiting approval: one approved meanwhile has passed.
            let n = tx
                .execute(
                    "UPDATE changes SET decision = 'blocked'
                     WHERE id = ?1 AND state = 'awaiting-approval' AND decision IS NOT NULL AND decision != 'blocked'",
                    args![row_id],
                )
                .await?;
            if n > 0 {
                add_event(&mut tx, row_id, now, "timed-out", None, Some(why)).await?;
            }
            tx.commit().await?;
        }
        self.refresh(record).await
    }
}

#[async_trait]
impl Imports for Ledger {
    async fn import(&self, change: &ImportedChange, now: DateTime<Utc>) -> Result<bool> {
        let facts = &change.facts;
        let key = facts.key().to_string();
        let outcome = change.finished.outcome;
        let state = if outcome == Outcome::Cancelled {
            State::Cancelled
        } else {
            State::Closed
        };
        let mut conn = self.conn().await?;
        let mut tx = conn
            .begin(Begin::Serialised(&facts.service_id, &facts.environment))
            .await?;
        // Looked up under the write lock, as `open` does: whoever wrote the key first (a
        // gate, an earlier or a simultaneous import) keeps it.
        let known = tx
            .query_opt(
                "SELECT id FROM changes WHERE correlation_key = ?1",
                args![&key],
            )
            .await?;
        if known.is_some() {
            tx.commit().await?;
            return Ok(false);
        }
        // Decided and deployed when the deployment started, closed when it finished; never
        // pre-approved (no allowance used), and verified: the forge's outcome is final.
        tx.execute(
            "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha, repository,
                                  state, pre_approved, emergency, outcome, opened_at, decided_at,
                                  deployed_at, closed_at, verified_at, facts_json, imported_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8, ?9, ?9, ?9, ?10, ?10, ?11, ?12)",
            args![
                &key,
                &facts.service,
                &facts.service_id,
                &facts.environment,
                &facts.commit_sha,
                &facts.repository,
                state.as_str(),
                outcome.as_str(),
                ts(change.started_at),
                ts(change.finished.at),
                serde_json::to_string(facts)?,
                &change.source
            ],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT id FROM changes WHERE correlation_key = ?1",
                args![&key],
            )
            .await?;
        let detail = format!("{outcome} ({})", change.source);
        add_event(&mut tx, row.i64(0)?, now, "imported", None, Some(&detail)).await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl ManualApproval for Ledger {
    async fn decide_by_hand(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        comment: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let row_id = parse_change_id(id)
            .ok_or_else(|| anyhow!("{id:?} is not a ledger change id (like CG-12)"))?;
        let current = self
            .get_row(row_id)
            .await?
            .ok_or_else(|| anyhow!("no change {id} in the ledger"))?;
        let target = if approve {
            State::Approved
        } else {
            State::Rejected
        };
        if current.state == target {
            return Ok(current);
        }
        // Approving a rejected change overturns the rejection (an approver may change their
        // mind, as in any ITSM); the rejection stays in the event log, and why it was
        // overturned is recorded with who did it.
        let overturn = approve && current.state == State::Rejected;
        if overturn && comment.is_none_or(|c| c.trim().is_empty()) {
            bail!(
                "change {id} was rejected{}; approving it overturns the rejection: say why with --comment",
                current
                    .approved_by
                    .as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default()
            );
        }
        if current.state != State::AwaitingApproval && !overturn {
            bail!(
                "change {id} is not waiting for approval (its state is {})",
                current.state
            );
        }
        // The final decision: `blocked` once rejected, the policy's again once approved.
        let final_word = if approve {
            current
                .decision
                .as_ref()
                .map_or(DecisionKind::NeedsApproval, |d| d.kind)
        } else {
            DecisionKind::Blocked
        };
        let from = current.state.as_str();
        let kind = if overturn {
            "overturned"
        } else {
            target.as_str()
        };
        {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin(Begin::Plain).await?;
            let n = tx
                .execute(
                    "UPDATE changes SET state = ?2, approved_by = ?3, approval_comment = ?4, approved_at = ?5,
                            decision = CASE WHEN decision IS NULL THEN NULL ELSE ?7 END
                     WHERE id = ?1 AND state = ?6",
                    args![
                        row_id,
                        target.as_str(),
                        by,
                        comment,
                        ts(now),
                        from,
                        final_word.as_str()
                    ],
                )
                .await?;
            if n > 0 {
                add_event(&mut tx, row_id, now, kind, Some(by), comment).await?;
            }
            tx.commit().await?;
        }
        self.get_row(row_id)
            .await?
            .ok_or_else(|| anyhow!("no change {id} in the ledger"))
    }

    async fn link_incident(
        &self,
        id: &str,
        incident: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let row_id = parse_change_id(id)
            .ok_or_else(|| anyhow!("{id:?} is not a ledger change id (like CG-12)"))?;
        {
            let mut conn = self.conn().await?;
            let mut tx = conn.begin(Begin::Plain).await?;
            let n = tx
                .execute(
                    "INSERT INTO incidents (change_id, incident, linked_at) SELECT id, ?2, ?3 FROM changes WHERE id = ?1
                     ON CONFLICT DO NOTHING",
                    args![row_id, incident, ts(now)],
                )
                .await?;
            if n > 0 {
                add_event(&mut tx, row_id, now, "incident", None, Some(incident)).await?;
            }
            tx.commit().await?;
        }
        self.get_row(row_id)
            .await?
            .ok_or_else(|| anyhow!("no change {id} in the ledger"))
    }
}

#[async_trait]
impl Waits for Ledger {
    async fn claim(&self, space: &str, id: &str, now: DateTime<Utc>) -> Result<bool> {
        // The primary key decides: of two claims at once, in one process or two, one inserts.
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        let inserted = tx
            .execute(
                "INSERT INTO serve_claims (space, id, claimed_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                args![space, id, ts(now)],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    async fn hold(&self, wait: &PendingWait) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        tx.execute(
            "INSERT INTO serve_waits (key, forge, payload, since) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            args![wait.key.as_str(), wait.forge.as_str(), wait.payload.as_str(), ts(wait.since)],
        )
        .await?;
        tx.commit().await
    }

    async fn admit(
        &self,
        space: &str,
        delivery: &str,
        deployments: &str,
        wait: &PendingWait,
    ) -> Result<Admission> {
        // Queued, then written by whichever admission takes the connection first, together
        // with every other one queued by then: one transaction, one sync to disk for a
        // burst, instead of a burst waiting for one sync each.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let seq = self.admissions.push(Queued {
            seq: 0,
            space: space.to_string(),
            delivery: delivery.to_string(),
            deployments: deployments.to_string(),
            wait: wait.clone(),
            reply,
        })?;
        match self.conn().await {
            Ok(mut conn) => {
                let batch = self.admissions.take()?;
                if !batch.is_empty() {
                    self.write_admissions(&mut conn, batch).await;
                }
            }
            // Not connected: this admission is withdrawn, unless a write already took it.
            Err(e) => {
                if self.admissions.withdraw(seq)? {
                    return Err(e);
                }
            }
        }
        answer
            .await
            .map_err(|_| anyhow!("the write that carried the admission was interrupted"))?
    }

    async fn held(&self) -> Result<Vec<PendingWait>> {
        let rows = self
            .read_all(
                "SELECT key, forge, payload, since FROM serve_waits ORDER BY since, key",
                args![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingWait {
                    key: r.string(0)?,
                    forge: r.string(1)?,
                    payload: r.string(2)?,
                    since: from_ts(r.int(3)?).unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn release(&self, key: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        tx.execute("DELETE FROM serve_waits WHERE key = ?1", args![key])
            .await?;
        tx.commit().await
    }
}

#[async_trait]
impl Announcements for Ledger {
    async fn last_announced(
        &self,
        service_id: &str,
        sprint: i64,
        sink: &str,
    ) -> Result<Option<String>> {
        let rows = self
            .read_all(
                "SELECT body FROM announcements WHERE service_id = ?1 AND sprint = ?2 AND sink = ?3",
                args![service_id, sprint, sink],
            )
            .await?;
        rows.first().map(|r| r.string(0)).transpose()
    }

    async fn keep_announced(
        &self,
        service_id: &str,
        sprint: i64,
        sink: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        tx.execute(
            "INSERT INTO announcements (service_id, sprint, sink, body, announced_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (service_id, sprint, sink) DO UPDATE SET body = excluded.body, announced_at = excluded.announced_at",
            args![service_id, sprint, sink, body, ts(now)],
        )
        .await?;
        tx.commit().await
    }
}

/// One admission waiting for its write.
pub(super) struct Queued {
    seq: u64,
    space: String,
    delivery: String,
    deployments: String,
    wait: PendingWait,
    reply: tokio::sync::oneshot::Sender<Result<Admission>>,
}

/// The admissions queued for the next write ([`Waits::admit`]).
#[derive(Default)]
pub(super) struct Admissions {
    queue: std::sync::Mutex<(u64, Vec<Queued>)>,
}

impl Admissions {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, (u64, Vec<Queued>)>> {
        self.queue
            .lock()
            .map_err(|_| anyhow!("the ledger's admission queue is unusable"))
    }

    /// Queues `q`; its sequence number.
    fn push(&self, mut q: Queued) -> Result<u64> {
        let mut queue = self.lock()?;
        queue.0 += 1;
        q.seq = queue.0;
        let seq = q.seq;
        queue.1.push(q);
        Ok(seq)
    }

    /// Every admission queued, in order.
    fn take(&self) -> Result<Vec<Queued>> {
        Ok(std::mem::take(&mut self.lock()?.1))
    }

    /// Removes admission `seq` if no write has taken it yet.
    fn withdraw(&self, seq: u64) -> Result<bool> {
        let mut queue = self.lock()?;
        let before = queue.1.len();
        queue.1.retain(|q| q.seq != seq);
        Ok(queue.1.len() < before)
    }
}

impl Ledger {
    /// Writes `batch` in one transaction and tells each admission what became of it. When
    /// that write fails (nothing of it stands), each admission is written alone: one
    /// admission's trouble is not the others', and two servers on one PostgreSQL ledger
    /// whose batches claim the same deployments in another order (a deadlock, one of the
    /// two refused) each get their admissions written.
    async fn write_admissions(&self, conn: &mut super::client::Conn<'_>, batch: Vec<Queued>) {
        match write_batch(conn, &batch).await {
            Ok(admissions) => {
                for (q, admission) in batch.into_iter().zip(admissions) {
                    let _ = q.reply.send(Ok(admission));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(q) = batch.into_iter().next() {
                    let _ = q.reply.send(Err(e));
                }
            }
            Err(_) => {
                for q in batch {
                    let alone = write_batch(conn, std::slice::from_ref(&q))
                        .await
                        .and_then(|a| {
                            a.first()
                                .copied()
                                .ok_or_else(|| anyhow!("the ledger wrote no admission"))
                        });
                    let _ = q.reply.send(alone);
                }
            }
        }
    }
}

/// Writes the admissions of `batch` in one transaction, all or nothing: what each one was.
async fn write_batch(
    conn: &mut super::client::Conn<'_>,
    batch: &[Queued],
) -> Result<Vec<Admission>> {
    let claim = "INSERT INTO serve_claims (space, id, claimed_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
    let mut tx = conn.begin(Begin::Plain).await?;
    let mut admissions = Vec::with_capacity(batch.len());
    for q in batch {
        let at = ts(q.wait.since);
        let admission = if tx
            .execute(claim, args![q.space.as_str(), q.delivery.as_str(), at])
            .await?
            == 0
        {
            Admission::SeenDelivery
        } else if tx
            .execute(
                claim,
                args![q.deployments.as_str(), q.wait.key.as_str(), at],
            )
            .await?
            == 0
        {
            Admission::SeenDeployment
        } else {
            tx.execute(
                "INSERT INTO serve_waits (key, forge, payload, since) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                args![q.wait.key.as_str(), q.wait.forge.as_str(), q.wait.payload.as_str(), at],
            )
            .await?;
            Admission::Taken
        };
        admissions.push(admission);
    }
    tx.commit().await?;
    Ok(admissions)
}
