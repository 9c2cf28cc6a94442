//! The embedded ledger: the default backend, a SQLite file with versioned migrations.
//!
//! The correlation key is unique in the schema, and every write runs in an immediate
//! transaction, so two processes gating the same change at the same moment leave one record.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    Backend, ChangeStore, HistoryQuery, Insights, ManualApproval, ServiceRef, TrackRecord,
    Verification,
};
use crate::domain::kpi::ChangeSummary;
use crate::domain::simulate::RecordedChange;
use crate::domain::verify::{LinkedIncident, Verdict};

mod insights;
use crate::config::BackendKind;
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, History, Outcome,
    SprintCalendar, SprintTally, State,
};

/// Schema migrations, applied in order; `PRAGMA user_version` holds how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: changes, their events and linked incidents.
    "CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        correlation_key TEXT NOT NULL UNIQUE,
        service TEXT NOT NULL,
        service_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        repository TEXT,
        state TEXT NOT NULL,
        decision TEXT,
        decision_json TEXT,
        pre_approved INTEGER NOT NULL DEFAULT 0,
        emergency INTEGER NOT NULL DEFAULT 0,
        emergency_reason TEXT,
        mode TEXT,
        outcome TEXT,
        failed_after_deploy INTEGER NOT NULL DEFAULT 0,
        verified_at INTEGER,
        opened_at INTEGER NOT NULL,
        decided_at INTEGER,
        approved_at INTEGER,
        approved_by TEXT,
        approval_comment TEXT,
        deployed_at INTEGER,
        closed_at INTEGER,
        first_commit_at INTEGER,
        lines_changed INTEGER,
        facts_json TEXT NOT NULL
    );
    CREATE INDEX changes_by_decided ON changes(service_id, environment, decided_at, outcome, pre_approved, emergency);
    CREATE INDEX changes_by_closed ON changes(service_id, environment, closed_at, outcome);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        change_id INTEGER NOT NULL REFERENCES changes(id),
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        detail TEXT
    );
    CREATE INDEX events_by_change ON events(change_id, at);
    CREATE TABLE incidents (
        change_id INTEGER NOT NULL REFERENCES changes(id),
        incident TEXT NOT NULL,
        linked_at INTEGER NOT NULL,
        PRIMARY KEY (change_id, incident)
    );",
    // 2: the facts each standing decision was made on (`policy simulate` re-decides from
    // them; `facts_json` keeps the freshest facts, which a later run may have refreshed),
    // and an index that keeps a scheduled `verify` cheap on a large ledger.
    "ALTER TABLE changes ADD COLUMN decision_facts_json TEXT;
    CREATE INDEX changes_awaiting_verification ON changes(deployed_at)
        WHERE verified_at IS NULL AND outcome IN ('success', 'failure');",
    // 3: the `decision` column holds the final decision, which a human's rejection makes
    // `blocked` (the policy's own stays in `decision_json`); rejections stored before said
    // `needs-approval`.
    "UPDATE changes SET decision = 'blocked' WHERE state = 'rejected' AND decision = 'needs-approval';",
];

// The queries a decision runs. Each reads one index range of one service and environment
// (SQL aggregation, never every row); the row id excludes the change being decided.

/// Closed changes with a success or failure outcome. ?1 service, ?2 environment, ?3 row id to leave out.
const CLOSED_TOTAL_SQL: &str = "SELECT count(*) FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at <= ?4
       AND outcome IN ('success', 'failure') AND id != ?3";

/// The most recent closed outcomes, newest first. ?4 the window, ?5 the clock.
const RECENT_SQL: &str = "SELECT outcome FROM changes INDEXED BY changes_by_closed
     WHERE service_id = ?1 AND environment = ?2 AND closed_at <= ?5
       AND outcome IN ('success', 'failure') AND id != ?3
     ORDER BY closed_at DESC, id DESC LIMIT ?4";

/// Tallies per sprint, by decision time. ?3 start of the first sprint, ?4 sprint length in
/// seconds, ?5 row id to leave out, ?6 the clock. Offsets from ?3, a sprint boundary, are
/// never negative, so integer division is a floor.
const SPRINTS_SQL: &str = "SELECT (decided_at - ?3) / ?4 AS s,
            sum(outcome = 'success'), sum(outcome = 'failure'), sum(outcome = 'cancelled'),
            sum(pre_approved), sum(emergency)
     FROM changes INDEXED BY changes_by_decided
     WHERE service_id = ?1 AND environment = ?2 AND decided_at BETWEEN ?3 AND ?6 AND id != ?5
     GROUP BY s";

/// The commit of the last change deployed successfully (the start of the next range). A
/// success outcome is only ever recorded for a change whose gate passed (`deployed_at` set).
const LAST_SHA_SQL: &str = "SELECT commit_sha FROM changes INDEXED BY changes_by_closed
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

/// The embedded SQLite ledger.
pub struct Ledger {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The sprint calendar, to count the allowance again as a pre-approval is written.
    calendar: Option<SprintCalendar>,
}

fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn from_ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// The human id of a ledger row.
pub fn change_id(row_id: i64) -> String {
    format!("CG-{row_id}")
}

fn parse_change_id(id: &str) -> Option<i64> {
    let id = id.trim();
    id.strip_prefix("CG-").unwrap_or(id).parse().ok()
}

impl Ledger {
    /// Sets the sprint calendar, so that a pre-approval is checked against the allowance
    /// again, atomically, as it is written.
    pub fn with_calendar(mut self, calendar: SprintCalendar) -> Ledger {
        self.calendar = Some(calendar);
        self
    }

    fn recount_allowance(
        &self,
        tx: &Connection,
        row_id: i64,
        facts: &ChangeFacts,
        d: &Decision,
    ) -> rusqlite::Result<Decision> {
        let Some(cal) = self.calendar.filter(|_| d.counts_against_allowance()) else {
            return Ok(d.clone());
        };
        let used: i64 = tx.query_row(
            "SELECT count(*) FROM changes INDEXED BY changes_by_decided
             WHERE service_id = ?1 AND environment = ?2 AND decided_at >= ?3 AND decided_at < ?4
               AND pre_approved = 1 AND id != ?5",
            params![
                facts.service_id,
                facts.environment,
                ts(cal.start_of(d.sprint)),
                ts(cal.end_of(d.sprint)),
                row_id
            ],
            |r| r.get(0),
        )?;
        Ok(d.clone()
            .with_allowance_used(u32::try_from(used).unwrap_or(u32::MAX)))
    }

    /// Opens (creating and migrating it when needed) the ledger at `path`. With
    /// `read_only` nothing is ever written: a missing file reads as an empty ledger.
    pub fn open(path: &Path, read_only: bool) -> Result<Ledger> {
        let conn = if read_only {
            if path.exists() {
                open_query_only(path).map_err(|e| ledger_error(path, e))?
            } else {
                Connection::open_in_memory()?
            }
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.exists()
            {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create the ledger's folder {}", dir.display())
                })?;
                // The default folder sits in the checkout: keep the ledger out of commits.
                std::fs::write(dir.join(".gitignore"), "# changegate ledger\n*\n")
                    .with_context(|| format!("cannot write {}/.gitignore", dir.display()))?;
            }
            Connection::open(path)
                .with_context(|| format!("cannot open the ledger {}", path.display()))?
        };
        let corrupt = |e: rusqlite::Error| ledger_error(path, e);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(corrupt)?;
        // One statement, so both are read from the same snapshot even while another process
        // is creating the schema.
        let (version, objects): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(corrupt)?;
        if version == 0 && objects > 0 {
            // Another program's SQLite database: never add our tables to it.
            bail!(
                "{} is an SQLite database but not a changegate ledger (it has tables of its own and no \
                 changegate schema). It was left untouched: point CHANGEGATE_LEDGER (or [ledger] path) at \
                 a changegate ledger or at a new file",
                path.display()
            );
        }
        let latest = MIGRATIONS.len() as i64;
        if version > latest {
            bail!(
                "the ledger {} has schema version {version}, newer than this changegate knows ({latest}); upgrade changegate",
                path.display()
            );
        }
        let in_memory = read_only && !path.exists();
        if version < latest {
            if read_only && !in_memory {
                bail!(
                    "the ledger {} needs a schema upgrade, which a dry run does not write; run once without --dry-run",
                    path.display()
                );
            }
            if !read_only {
                enable_wal(&conn).map_err(corrupt)?;
            }
            let mut conn = conn;
            migrate(&mut conn, version).map_err(corrupt)?;
            return Ok(Ledger {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                calendar: None,
            });
        }
        Ok(Ledger {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            calendar: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow!("ledger connection poisoned"))?;
        f(&mut conn).map_err(|e| ledger_error(&self.path, e))
    }

    fn get_row(&self, row_id: i64) -> Result<Option<ChangeRecord>> {
        self.with(|c| load(c, "id = ?1", params![row_id]))
    }
}

/// Opens an existing ledger for reading only. A read-only SQLite connection to a WAL
/// database leaves `-wal` and `-shm` files behind; a read-write one that refuses every
/// write (`query_only`) reads the same and cleans up after itself. A file that cannot be
/// opened for writing is read through a read-only connection.
fn open_query_only(path: &Path) -> rusqlite::Result<Connection> {
    match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(conn) => {
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        }
        Err(_) => Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY),
    }
}

/// How long a ledger operation waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A ledger error in words a user can act on: a damaged file is named as such (and was not
/// written to); anything else keeps SQLite's own message.
fn ledger_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => anyhow!(
            "the ledger {} cannot be read ({e}); it is not a changegate ledger or it is damaged. \
             It was left untouched: restore it from a backup, or point CHANGEGATE_LEDGER elsewhere",
            path.display()
        ),
        _ => anyhow::Error::new(e).context(format!("ledger {}", path.display())),
    }
}

/// Switches a new ledger to WAL. SQLite answers "database is locked" at once, without
/// waiting on the busy timeout, when another process holds the file while the journal mode
/// changes (several first runs at the same moment), so the switch is retried here.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5 + fastrand::u64(..20)));
            }
            Err(e) => return Err(e),
        }
    }
}

fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the lock.
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(current.max(from) as usize)
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()
}

fn add_event(
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

const COLUMNS: &str = "id, correlation_key, state, decision_json, outcome, emergency_reason, approved_by, \
     approval_comment, opened_at, decided_at, approved_at, deployed_at, decision";

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, ChangeRecord)> {
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
            timed_out,
            decision_inferred: false,
        },
    ))
}

fn load(
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

#[async_trait]
impl ChangeStore for Ledger {
    async fn find(&self, key: &CorrelationKey) -> Result<Option<ChangeRecord>> {
        let key = key.to_string();
        self.with(|c| load(c, "correlation_key = ?1", params![key]))
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

    async fn last_change_sha(&self, key: &CorrelationKey) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                LAST_SHA_SQL,
                params![key.service_id, key.environment],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

#[async_trait]
impl Verification for Ledger {
    async fn awaiting_verification(
        &self,
        deployed_before: DateTime<Utc>,
    ) -> Result<Vec<ChangeRecord>> {
        self.awaiting_verification_rows(deployed_before)
    }

    async fn linked_incidents(&self, record: &ChangeRecord) -> Result<Vec<LinkedIncident>> {
        self.incidents_of(record)
    }

    async fn record_verification(
        &self,
        record: &ChangeRecord,
        verdict: &Verdict,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.write_verification(record, verdict, now)
    }

    async fn recorded_facts(&self, record: &ChangeRecord) -> Result<Option<ChangeFacts>> {
        let Some(row_id) = parse_change_id(&record.id) else {
            return Ok(None);
        };
        let text: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT facts_json FROM changes WHERE id = ?1",
                [row_id],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

#[async_trait]
impl Insights for Ledger {
    async fn services(&self) -> Result<Vec<ServiceRef>> {
        self.service_list()
    }

    async fn change_summaries(
        &self,
        service_id: &str,
        environment: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ChangeSummary>> {
        self.summaries(service_id, environment, from, to)
    }

    async fn recorded_changes(
        &self,
        service_id: &str,
        environment: &str,
    ) -> Result<Vec<RecordedChange>> {
        self.recorded(service_id, environment)
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

impl Backend for Ledger {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn manual(&self) -> Option<&dyn ManualApproval> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
