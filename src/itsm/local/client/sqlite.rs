//! The SQLite store: the file (opened read-only for a dry run), its migrations, and the one
//! connection every transaction goes through.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{Mutex, MutexGuard};

use super::{Begin, Row, SchemaStatus, Value, check_version};

/// Schema migrations, applied in order; `PRAGMA user_version` holds how many have run.
pub const MIGRATIONS: &[&str] = &[
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
    // 4: what `changegate serve` keeps between deliveries: the ids it has claimed (webhook
    // deliveries, deployments) and the deployments still waiting for their callback.
    "CREATE TABLE serve_claims (
        space TEXT NOT NULL,
        id TEXT NOT NULL,
        claimed_at INTEGER NOT NULL,
        PRIMARY KEY (space, id)
    );
    CREATE TABLE serve_waits (
        key TEXT PRIMARY KEY,
        forge TEXT NOT NULL,
        payload TEXT NOT NULL,
        since INTEGER NOT NULL
    );",
    // 5: changes imported from the forge's deployment history (`history import`) say where
    // they came from (`github deployment 123`), so reports can tell them from the gate's.
    "ALTER TABLE changes ADD COLUMN imported_from TEXT;",
    // 6: what a decision reads, kept as it is written so that its cost does not grow with
    // the history. `tallies` counts each service and environment's changes per UTC day of
    // their decision (sprints start at midnight UTC and last whole days, so a sprint is a
    // run of whole days); `totals` counts their closed changes with an outcome. Triggers
    // keep both in the transaction of every write to `changes`, whichever command made it;
    // the existing rows are counted once here.
    "CREATE TABLE tallies (
        service_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        day INTEGER NOT NULL,
        succeeded INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        cancelled INTEGER NOT NULL,
        pre_approved INTEGER NOT NULL,
        emergency INTEGER NOT NULL,
        PRIMARY KEY (service_id, environment, day)
    ) WITHOUT ROWID;
    CREATE TABLE totals (
        service_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        closed INTEGER NOT NULL,
        PRIMARY KEY (service_id, environment)
    ) WITHOUT ROWID;
    INSERT INTO tallies
        SELECT service_id, environment, decided_at - decided_at % 86400,
            sum(outcome IS 'success'), sum(outcome IS 'failure'), sum(outcome IS 'cancelled'),
            sum(pre_approved), sum(emergency)
        FROM changes WHERE decided_at IS NOT NULL GROUP BY 1, 2, 3;
    INSERT INTO totals
        SELECT service_id, environment, count(*) FROM changes
        WHERE closed_at IS NOT NULL AND outcome IN ('success', 'failure') GROUP BY 1, 2;
    CREATE TRIGGER changes_tally_in AFTER INSERT ON changes BEGIN
        INSERT INTO tallies
            SELECT NEW.service_id, NEW.environment, NEW.decided_at - NEW.decided_at % 86400,
                NEW.outcome IS 'success', NEW.outcome IS 'failure', NEW.outcome IS 'cancelled',
                NEW.pre_approved, NEW.emergency
            WHERE NEW.decided_at IS NOT NULL
            ON CONFLICT DO UPDATE SET succeeded = succeeded + excluded.succeeded,
                failed = failed + excluded.failed, cancelled = cancelled + excluded.cancelled,
                pre_approved = pre_approved + excluded.pre_approved,
                emergency = emergency + excluded.emergency;
        INSERT INTO totals
            SELECT NEW.service_id, NEW.environment, 1
            WHERE NEW.closed_at IS NOT NULL AND NEW.outcome IN ('success', 'failure')
            ON CONFLICT DO UPDATE SET closed = closed + 1;
    END;
    CREATE TRIGGER changes_tally_out AFTER DELETE ON changes BEGIN
        INSERT INTO tallies
            SELECT OLD.service_id, OLD.environment, OLD.decided_at - OLD.decided_at % 86400,
                -(OLD.outcome IS 'success'), -(OLD.outcome IS 'failure'),
                -(OLD.outcome IS 'cancelled'), -OLD.pre_approved, -OLD.emergency
            WHERE OLD.decided_at IS NOT NULL
            ON CONFLICT DO UPDATE SET succeeded = succeeded + excluded.succeeded,
                failed = failed + excluded.failed, cancelled = cancelled + excluded.cancelled,
                pre_approved = pre_approved + excluded.pre_approved,
                emergency = emergency + excluded.emergency;
        INSERT INTO totals
            SELECT OLD.service_id, OLD.environment, -1
            WHERE OLD.closed_at IS NOT NULL AND OLD.outcome IN ('success', 'failure')
            ON CONFLICT DO UPDATE SET closed = closed - 1;
    END;
    CREATE TRIGGER changes_tally_moved
        AFTER UPDATE OF service_id, environment, decided_at, outcome, pre_approved, emergency, closed_at
        ON changes BEGIN
        INSERT INTO tallies
            SELECT OLD.service_id, OLD.environment, OLD.decided_at - OLD.decided_at % 86400,
                -(OLD.outcome IS 'success'), -(OLD.outcome IS 'failure'),
                -(OLD.outcome IS 'cancelled'), -OLD.pre_approved, -OLD.emergency
            WHERE OLD.decided_at IS NOT NULL
            ON CONFLICT DO UPDATE SET succeeded = succeeded + excluded.succeeded,
                failed = failed + excluded.failed, cancelled = cancelled + excluded.cancelled,
                pre_approved = pre_approved + excluded.pre_approved,
                emergency = emergency + excluded.emergency;
        INSERT INTO tallies
            SELECT NEW.service_id, NEW.environment, NEW.decided_at - NEW.decided_at % 86400,
                NEW.outcome IS 'success', NEW.outcome IS 'failure', NEW.outcome IS 'cancelled',
                NEW.pre_approved, NEW.emergency
            WHERE NEW.decided_at IS NOT NULL
            ON CONFLICT DO UPDATE SET succeeded = succeeded + excluded.succeeded,
                failed = failed + excluded.failed, cancelled = cancelled + excluded.cancelled,
                pre_approved = pre_approved + excluded.pre_approved,
                emergency = emergency + excluded.emergency;
        INSERT INTO totals
            SELECT OLD.service_id, OLD.environment, -1
            WHERE OLD.closed_at IS NOT NULL AND OLD.outcome IN ('success', 'failure')
            ON CONFLICT DO UPDATE SET closed = closed - 1;
        INSERT INTO totals
            SELECT NEW.service_id, NEW.environment, 1
            WHERE NEW.closed_at IS NOT NULL AND NEW.outcome IN ('success', 'failure')
            ON CONFLICT DO UPDATE SET closed = closed + 1;
    END;",
    // 7: what `announce` last published to a sink it cannot read back (the chat webhook),
    // per service, sprint and sink: the next run posts only the differences.
    "CREATE TABLE announcements (
        service_id TEXT NOT NULL,
        sprint INTEGER NOT NULL,
        sink TEXT NOT NULL,
        body TEXT NOT NULL,
        announced_at INTEGER NOT NULL,
        PRIMARY KEY (service_id, sprint, sink)
    ) WITHOUT ROWID;",
    // 8: what keeps `report` flat on a long history. `kpi_stamps` counts, per service,
    // environment and UTC day, the writes to changes decided or deployed that day (it only
    // grows, so a sum over days changes whenever one of them was written) and the earliest
    // decision of any change that touched it; triggers keep it in the transaction of every
    // write to `changes`, and the existing rows are counted once here. `kpi_sprints` holds
    // the KPI parts of finished sprints, with the stamp they were computed at (written by
    // `report`, best-effort). `changes_by_deployed` finds the deploys of earlier sprints'
    // changes that the current sprint's failure episodes start after or end with;
    // `changes_for_kpis` holds every column the KPIs read, so that a sprint's changes are
    // read from it alone, not from the table's rows (facts and all).
    "CREATE TABLE kpi_stamps (
        service_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        day INTEGER NOT NULL,
        writes INTEGER NOT NULL,
        earliest INTEGER NOT NULL,
        PRIMARY KEY (service_id, environment, day)
    ) WITHOUT ROWID;
    CREATE TABLE kpi_sprints (
        service_id TEXT NOT NULL,
        environment TEXT NOT NULL,
        start INTEGER NOT NULL,
        end_at INTEGER NOT NULL,
        sprint INTEGER NOT NULL,
        format INTEGER NOT NULL,
        stamp INTEGER NOT NULL,
        lo INTEGER NOT NULL,
        hi INTEGER NOT NULL,
        window_from INTEGER NOT NULL,
        computed_at INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (service_id, environment, start)
    ) WITHOUT ROWID;
    CREATE INDEX changes_by_deployed ON changes(service_id, environment, deployed_at, decided_at, outcome);
    CREATE INDEX changes_for_kpis ON changes(service_id, environment, decided_at, decision,
        pre_approved, emergency, approved_at, deployed_at, first_commit_at, outcome,
        failed_after_deploy, imported_from);
    INSERT INTO kpi_stamps
        SELECT service_id, environment, d, count(*), min(e) FROM (
            SELECT service_id, environment, decided_at - decided_at % 86400 AS d,
                coalesce(decided_at, deployed_at) AS e
            FROM changes WHERE decided_at IS NOT NULL
            UNION ALL
            SELECT service_id, environment, deployed_at - deployed_at % 86400,
                coalesce(decided_at, deployed_at)
            FROM changes WHERE deployed_at IS NOT NULL
        ) GROUP BY 1, 2, 3;
    CREATE TRIGGER changes_stamp_in AFTER INSERT ON changes BEGIN
        INSERT INTO kpi_stamps
            SELECT NEW.service_id, NEW.environment, d, 1, coalesce(NEW.decided_at, NEW.deployed_at)
            FROM (SELECT NEW.decided_at - NEW.decided_at % 86400 AS d
                  UNION SELECT NEW.deployed_at - NEW.deployed_at % 86400)
            WHERE d IS NOT NULL
            ON CONFLICT DO UPDATE SET writes = writes + 1, earliest = min(earliest, excluded.earliest);
    END;
    CREATE TRIGGER changes_stamp_out AFTER DELETE ON changes BEGIN
        INSERT INTO kpi_stamps
            SELECT OLD.service_id, OLD.environment, d, 1, coalesce(OLD.decided_at, OLD.deployed_at)
            FROM (SELECT OLD.decided_at - OLD.decided_at % 86400 AS d
                  UNION SELECT OLD.deployed_at - OLD.deployed_at % 86400)
            WHERE d IS NOT NULL
            ON CONFLICT DO UPDATE SET writes = writes + 1, earliest = min(earliest, excluded.earliest);
    END;
    CREATE TRIGGER changes_stamp_moved
        AFTER UPDATE OF service_id, environment, decision, pre_approved, emergency, approved_at,
            deployed_at, decided_at, first_commit_at, outcome, failed_after_deploy, imported_from
        ON changes BEGIN
        INSERT INTO kpi_stamps
            SELECT OLD.service_id, OLD.environment, d, 1, coalesce(OLD.decided_at, OLD.deployed_at)
            FROM (SELECT OLD.decided_at - OLD.decided_at % 86400 AS d
                  UNION SELECT OLD.deployed_at - OLD.deployed_at % 86400)
            WHERE d IS NOT NULL
            ON CONFLICT DO UPDATE SET writes = writes + 1, earliest = min(earliest, excluded.earliest);
        INSERT INTO kpi_stamps
            SELECT NEW.service_id, NEW.environment, d, 1, coalesce(NEW.decided_at, NEW.deployed_at)
            FROM (SELECT NEW.decided_at - NEW.decided_at % 86400 AS d
                  UNION SELECT NEW.deployed_at - NEW.deployed_at % 86400)
            WHERE d IS NOT NULL
            ON CONFLICT DO UPDATE SET writes = writes + 1, earliest = min(earliest, excluded.earliest);
    END;",
];

/// How long a ledger operation waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQLite file and its one connection.
pub(in crate::itsm::local) struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The version found when the file was opened (before migrating it).
    opened_at_version: i64,
}

impl SqliteStore {
    /// Opens (creating and migrating it when needed) the ledger at `path`. With
    /// `read_only` nothing is ever written: a missing file reads as an empty ledger.
    pub(in crate::itsm::local) fn open(path: &Path, read_only: bool) -> Result<SqliteStore> {
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
        check_version(version, latest, &format!("the ledger {}", path.display()))?;
        let in_memory = read_only && !path.exists();
        let mut conn = conn;
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
            migrate(&mut conn, version).map_err(corrupt)?;
        }
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            opened_at_version: version,
        })
    }

    pub(in crate::itsm::local) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn conn(&self) -> SqliteConn<'_> {
        SqliteConn {
            conn: self.conn.lock().await,
            path: &self.path,
        }
    }

    /// Opening the file migrated it already; this says from which version.
    pub(super) fn migrate_status(&self) -> Result<SchemaStatus> {
        Ok(SchemaStatus {
            before: self.opened_at_version,
            after: MIGRATIONS.len() as i64,
        })
    }
}

/// The connection, held for one transaction.
pub(in crate::itsm::local) struct SqliteConn<'s> {
    conn: MutexGuard<'s, Connection>,
    path: &'s Path,
}

impl SqliteConn<'_> {
    pub(super) fn begin(&mut self, how: Begin<'_>) -> Result<SqliteTx<'_>> {
        // One writer for the whole file: a write that reads first takes the write lock at
        // once, so no other process's write lands between its read and its write.
        let behavior = match how {
            Begin::Plain => TransactionBehavior::Deferred,
            Begin::Serialised(..) => TransactionBehavior::Immediate,
        };
        let sql = match behavior {
            TransactionBehavior::Immediate => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        self.conn
            .execute_batch(sql)
            .map_err(|e| ledger_error(self.path, e))?;
        Ok(SqliteTx {
            conn: &mut self.conn,
            path: self.path,
            open: true,
        })
    }
}

/// A transaction on the file: rolled back when dropped uncommitted.
pub(in crate::itsm::local) struct SqliteTx<'c> {
    conn: &'c mut Connection,
    path: &'c Path,
    open: bool,
}

impl SqliteTx<'_> {
    pub(super) fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let path = self.path;
        let run = || -> rusqlite::Result<Vec<Row>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let n = stmt.column_count();
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter().map(to_sqlite)))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    row.push(match r.get_ref(i)? {
                        ValueRef::Null => Value::Int(None),
                        ValueRef::Integer(v) => Value::Int(Some(v)),
                        // The ledger writes no floats; a sum over no rows may read as one.
                        ValueRef::Real(v) => Value::Int(Some(v as i64)),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Value::Text(Some(String::from_utf8_lossy(t).into_owned()))
                        }
                    });
                }
                out.push(Row(row));
            }
            Ok(out)
        };
        run().map_err(|e| ledger_error(path, e))
    }

    pub(super) fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| ledger_error(self.path, e))?;
        let n = stmt
            .execute(rusqlite::params_from_iter(args.iter().map(to_sqlite)))
            .map_err(|e| ledger_error(self.path, e))?;
        Ok(n as u64)
    }

    pub(super) fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| ledger_error(self.path, e))
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed statement or an early return: nothing it wrote stands.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Int(Some(n)) => rusqlite::types::Value::Integer(*n),
        Value::Text(Some(t)) => rusqlite::types::Value::Text(t.clone()),
        Value::Int(None) | Value::Text(None) => rusqlite::types::Value::Null,
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

#[cfg(test)]
impl SqliteStore {
    /// The connection itself, for query-plan checks.
    pub(in crate::itsm::local) fn raw(&self) -> MutexGuard<'_, Connection> {
        self.conn.blocking_lock()
    }
}
