//! The SQLite file: opening it (read-only for a dry run), its migrations, and the one
//! connection every query goes through.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::Ledger;
use super::codec::{load, ts};
use crate::domain::{ChangeFacts, ChangeRecord, Decision, SprintCalendar};

/// Schema migrations, applied in order; `PRAGMA user_version` holds how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
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
];

impl Ledger {
    /// Sets the sprint calendar, so that a pre-approval is checked against the allowance
    /// again, atomically, as it is written.
    pub fn with_calendar(mut self, calendar: SprintCalendar) -> Ledger {
        self.calendar = Some(calendar);
        self
    }

    pub(super) fn recount_allowance(
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

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| anyhow!("ledger connection poisoned"))?;
        f(&mut conn).map_err(|e| ledger_error(&self.path, e))
    }

    pub(super) fn get_row(&self, row_id: i64) -> Result<Option<ChangeRecord>> {
        self.with(|c| load(c, "id = ?1", params![row_id]))
    }
}

/// Opens an existing ledger for reading only. A read-only SQLite connection to a WAL
/// database leaves `-wal` and `-shm` files behind; a read-write one that refuses every
/// write (`query_only`) reads the same and cleans up after itself. A file that cannot be
/// opened for writing is read through a read-only connection.
pub(super) fn open_query_only(path: &Path) -> rusqlite::Result<Connection> {
    match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(conn) => {
            conn.pragma_update(None, "query_only", true)?;
            Ok(conn)
        }
        Err(_) => Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY),
    }
}

/// How long a ledger operation waits for another process's write to finish.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A ledger error in words a user can act on: a damaged file is named as such (and was not
/// written to); anything else keeps SQLite's own message.
pub(super) fn ledger_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
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
pub(super) fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
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

pub(super) fn migrate(conn: &mut Connection, from: i64) -> rusqlite::Result<()> {
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
