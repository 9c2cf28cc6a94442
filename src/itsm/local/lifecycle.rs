//! A change's life in the ledger: find, open, start, record the outcome or a refusal; and the
//! human decisions (`approve`, `reject`, `incident`) only the ledger takes.

use anyhow::{Result, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::itsm::{ChangeStore, Intent, Lookup, ManualApproval, PendingWait, Waits};

use super::Ledger;
use super::codec::{COLUMNS, add_event, from_ts, load, parse_change_id, record_from_row, ts};
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, Outcome, State,
};

#[async_trait]
impl ChangeStore for Ledger {
    async fn find(&self, key: &CorrelationKey, _intent: Intent) -> Result<Lookup> {
        let full = key.to_string();
        let record = self.with(|c| load(c, "correlation_key = ?1", params![full]))?;
        Ok(Lookup::of(key, record))
    }

    async fn get(&self, id: &str) -> Result<Option<ChangeRecord>> {
        match parse_change_id(id) {
            Some(row_id) => self.get_row(row_id),
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
        let record = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Looked up first, under the write lock: an insert that would conflict never
            // runs, so row ids (and change ids) have no gaps.
            let known: Option<i64> = tx
                .query_row("SELECT id FROM changes WHERE correlation_key = ?1", [&key], |r| r.get(0))
                .optional()?;
            let inserted = if known.is_none() {
                tx.execute(
                    "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha, repository,
                                          state, opened_at, first_commit_at, lines_changed, facts_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'new', ?7, ?8, ?9, ?10)",
                    params![
                        key,
                        facts.service,
                        facts.service_id,
                        facts.environment,
                        facts.commit_sha,
                        facts.repository,
                        ts(now),
                        first_commit,
                        lines,
                        facts_json
                    ],
                )?
            } else {
                0
            };
            let Some((row_id, existing)) =
                tx.query_row(&format!("SELECT {COLUMNS} FROM changes WHERE correlation_key = ?1"), [&key], record_from_row).optional()?
            else {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            };
            if inserted > 0 {
                add_event(&tx, row_id, now, "opened", facts.actor.as_deref(), None)?;
            } else if existing.state == State::New || existing.state == State::AwaitingApproval {
                // A later run may know more (e.g. the PR); keep the freshest facts.
                tx.execute(
                    "UPDATE changes SET facts_json = ?2, lines_changed = coalesce(?3, lines_changed),
                            first_commit_at = coalesce(?4, first_commit_at) WHERE id = ?1",
                    params![row_id, facts_json, lines, first_commit],
                )?;
            }
            if let Some(d) = decision
                && existing.takes_decision(d.mode, d.emergency.is_some()) {
                    // Counted again under the write lock: two changes decided at the same
                    // moment never both take the last free slot of the allowance.
                    let d = &self.recount_allowance(&tx, row_id, facts, d)?;
                    let counts = d.counts_against_allowance();
                    tx.execute(
                        "UPDATE changes SET decision = ?2, decision_json = ?3, decided_at = ?4, state = ?5,
                                pre_approved = ?6, emergency = ?7, emergency_reason = ?8, mode = ?9,
                                decision_facts_json = ?10
                         WHERE id = ?1",
                        params![
                            row_id,
                            d.kind.as_str(),
                            serde_json::to_string(d).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                            ts(now),
                            d.state_after().as_str(),
                            counts,
                            d.emergency.is_some(),
                            d.emergency,
                            d.mode.as_str(),
                            facts_json
                        ],
                    )?;
                    add_event(&tx, row_id, now, "decided", None, Some(d.kind.as_str()))?;
                }
            let record = load(&tx, "id = ?1", params![row_id])?;
            tx.commit()?;
            Ok(record)
        })?;
        record.ok_or_else(|| anyhow!("the change {key} vanished from the ledger"))
    }

    async fn refresh(&self, record: &ChangeRecord) -> Result<ChangeRecord> {
        self.get(&record.id)
            .await?
            .ok_or_else(|| anyhow!("the change {} is no longer in the ledger", record.id))
    }

    async fn start(&self, record: &ChangeRecord, now: DateTime<Utc>) -> Result<ChangeRecord> {
        let row_id =
            parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE changes SET state = 'implementing', deployed_at = coalesce(deployed_at, ?2)
                 WHERE id = ?1 AND state IN ('new', 'approved', 'awaiting-approval')",
                params![row_id, ts(now)],
            )?;
            if n > 0 {
                add_event(&tx, row_id, now, "implementing", None, None)?;
            }
            tx.commit()
        })?;
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
        let row_id =
            parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))?;
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE changes SET outcome = ?2, state = ?3, closed_at = ?4 WHERE id = ?1 AND outcome IS NULL",
                params![row_id, outcome.as_str(), state.as_str(), ts(now)],
            )?;
            if n > 0 {
                add_event(&tx, row_id, now, "outcome", None, Some(&format!("{outcome}: {notes}")))?;
            }
            tx.commit()
        })?;
        self.refresh(record).await
    }

    async fn record_refusal(
        &self,
        record: &ChangeRecord,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<ChangeRecord> {
        let row_id =
            parse_change_id(&record.id).ok_or_else(|| anyhow!("bad ledger id {}", record.id))?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Only a change still awaiting approval: one approved meanwhile has passed.
            let n = tx.execute(
                "UPDATE changes SET decision = 'blocked'
                 WHERE id = ?1 AND state = 'awaiting-approval' AND decision IS NOT NULL AND decision != 'blocked'",
                params![row_id],
            )?;
            if n > 0 {
                add_event(&tx, row_id, now, "timed-out", None, Some(why))?;
            }
            tx.commit()
        })?;
        self.refresh(record).await
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
            .get_row(row_id)?
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE changes SET state = ?2, approved_by = ?3, approval_comment = ?4, approved_at = ?5,
                        decision = CASE WHEN decision IS NULL THEN NULL ELSE ?7 END
                 WHERE id = ?1 AND state = ?6",
                params![row_id, target.as_str(), by, comment, ts(now), from, final_word.as_str()],
            )?;
            if n > 0 {
                add_event(&tx, row_id, now, kind, Some(by), comment)?;
            }
            tx.commit()
        })?;
        self.get_row(row_id)?
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
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "INSERT OR IGNORE INTO incidents (change_id, incident, linked_at) SELECT id, ?2, ?3 FROM changes WHERE id = ?1",
                params![row_id, incident, ts(now)],
            )?;
            if n > 0 {
                add_event(&tx, row_id, now, "incident", None, Some(incident))?;
            }
            tx.commit()
        })?;
        self.get_row(row_id)?
            .ok_or_else(|| anyhow!("no change {id} in the ledger"))
    }
}

#[async_trait]
impl Waits for Ledger {
    async fn claim(&self, space: &str, id: &str, now: DateTime<Utc>) -> Result<bool> {
        // The primary key decides: of two claims at once, in one process or two, one inserts.
        let inserted = self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO serve_claims (space, id, claimed_at) VALUES (?1, ?2, ?3)",
                params![space, id, ts(now)],
            )
        })?;
        Ok(inserted == 1)
    }

    async fn hold(&self, wait: &PendingWait) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO serve_waits (key, forge, payload, since) VALUES (?1, ?2, ?3, ?4)",
                params![wait.key, wait.forge, wait.payload, ts(wait.since)],
            )
        })?;
        Ok(())
    }

    async fn held(&self) -> Result<Vec<PendingWait>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT key, forge, payload, since FROM serve_waits ORDER BY since, key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(PendingWait {
                    key: r.get(0)?,
                    forge: r.get(1)?,
                    payload: r.get(2)?,
                    since: from_ts(r.get(3)?).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
    }

    async fn release(&self, key: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM serve_waits WHERE key = ?1", params![key]))?;
        Ok(())
    }
}
