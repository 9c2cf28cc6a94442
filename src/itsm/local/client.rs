//! The ledger's two stores behind one small interface: a SQLite file (`client/sqlite.rs`) or
//! a PostgreSQL database (`client/postgres.rs`). Everything else in the ledger is written
//! once, against [`Store`], [`Tx`] and [`Row`], in SQL both stores run.
//!
//! What differs between the stores, and nothing more, is named here:
//!
//! | difference | SQLite | PostgreSQL |
//! |---|---|---|
//! | placeholders | `?1` | `$1` (rewritten by `to_postgres`) |
//! | index hints | `INDEXED BY` (the decision's plans are pinned) | dropped (the planner picks) |
//! | the schema | `MIGRATIONS` in `client/sqlite.rs`, `PRAGMA user_version` | its own migrations, `changegate_schema` |
//! | a write that must not race | `BEGIN IMMEDIATE` (one writer for the file) | `pg_advisory_xact_lock` on the service+environment |
//! | the connection | a file, opened read-only for a dry run | a URL (TLS, timeouts, retries), one connection |

mod postgres;
mod sqlite;

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};

#[cfg(test)]
pub(super) use postgres::MIGRATIONS as POSTGRES_MIGRATIONS;
pub(super) use postgres::PostgresStore;
pub use sqlite::MIGRATIONS;
pub(super) use sqlite::SqliteStore;

use super::Ledger;
use super::codec::{load, ts};
use crate::config::BackendKind;
use crate::domain::{ChangeFacts, ChangeRecord, Decision, SprintCalendar};

/// Where the ledger's rows live.
pub(super) enum Store {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

/// A statement as written (SQLite's `?N` placeholders and `INDEXED BY` hints), as
/// PostgreSQL runs it: `?N` to `$N`, and the `INDEXED BY name` hints dropped (PostgreSQL has no hints). Quoted
/// text is copied as it is.
pub(super) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.char_indices().peekable();
    let mut quoted = false;
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
        } else if quoted {
            out.push(c);
        } else if c == '?' {
            out.push('$');
        } else if c == 'I' && sql[i..].starts_with("INDEXED BY ") {
            // Skip the hint and the index name after it.
            let rest = &sql[i + "INDEXED BY ".len()..];
            let name_len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            let skip = "INDEXED BY ".len() + name_len;
            while chars.peek().is_some_and(|(j, _)| *j < i + skip) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A value bound to a statement or read from a row: the ledger stores only integers (times
/// as Unix seconds, flags as 0/1) and text.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(Some(i64::from(v)))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(Some(v.to_string()))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(Some(v))
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        Value::Text(v.map(str::to_string))
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        Value::Text(v)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        Value::Text(v.clone())
    }
}

/// The arguments of a statement: `args![a, b, c]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::itsm::local::client::Value::from($v)),*][..] };
}
pub(super) use args;

/// One row read, its columns in the statement's order.
#[derive(Debug, Clone)]
pub(super) struct Row(pub(super) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .ok_or_else(|| anyhow!("the ledger returned no column {i}"))
    }

    /// An integer column (NULL is `None`).
    pub(super) fn int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) => Ok(None),
            Value::Text(Some(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("the ledger's column {i} holds {t:?}, not a number")),
        }
    }

    /// An integer column that is never NULL.
    pub(super) fn i64(&self, i: usize) -> Result<i64> {
        self.int(i)?
            .ok_or_else(|| anyhow!("the ledger's column {i} is unexpectedly empty"))
    }

    /// A 0/1 flag.
    pub(super) fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)?.unwrap_or(0) != 0)
    }

    /// A text column (NULL is `None`).
    pub(super) fn text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            Value::Int(None) => Ok(None),
            Value::Int(Some(n)) => Ok(Some(n.to_string())),
        }
    }

    /// A text column that is never NULL.
    pub(super) fn string(&self, i: usize) -> Result<String> {
        self.text(i)?
            .ok_or_else(|| anyhow!("the ledger's column {i} is unexpectedly empty"))
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy)]
pub(super) enum Begin<'a> {
    /// Reads, and writes of one row guarded by their own `WHERE` (idempotent on their own).
    Plain,
    /// A write that reads before it writes (the allowance, the change id): serialised per
    /// service and environment (`service_id`, `environment`).
    Serialised(&'a str, &'a str),
}

/// A connection taken from the store for one transaction.
pub(super) enum Conn<'s> {
    Sqlite(sqlite::SqliteConn<'s>),
    Postgres(postgres::PostgresConn<'s>),
}

impl Conn<'_> {
    /// Begins a transaction.
    pub(super) async fn begin(&mut self, how: Begin<'_>) -> Result<Tx<'_>> {
        match self {
            Conn::Sqlite(c) => Ok(Tx::Sqlite(c.begin(how)?)),
            Conn::Postgres(c) => Ok(Tx::Postgres(c.begin(how).await?)),
        }
    }
}

/// An open transaction: rolled back unless committed.
pub(super) enum Tx<'c> {
    Sqlite(sqlite::SqliteTx<'c>),
    Postgres(postgres::PostgresTx<'c>),
}

impl Tx<'_> {
    /// Every row `sql` returns.
    pub(super) async fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(t) => t.query(sql, args),
            Tx::Postgres(t) => t.query(sql, args).await,
        }
    }

    /// The first row `sql` returns, if any.
    pub(super) async fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args).await?.into_iter().next())
    }

    /// The one row `sql` returns.
    pub(super) async fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row> {
        self.query_opt(sql, args)
            .await?
            .ok_or_else(|| anyhow!("the ledger returned no row where one was expected"))
    }

    /// Runs `sql`; how many rows it changed.
    pub(super) async fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        match self {
            Tx::Sqlite(t) => t.execute(sql, args),
            Tx::Postgres(t) => t.execute(sql, args).await,
        }
    }

    /// Makes the writes stand.
    pub(super) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit(),
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

impl Store {
    async fn conn(&self) -> Result<Conn<'_>> {
        match self {
            Store::Sqlite(s) => Ok(Conn::Sqlite(s.conn().await)),
            Store::Postgres(p) => Ok(Conn::Postgres(p.conn().await?)),
        }
    }
}

/// The schema version a store holds against the one this changegate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The version found before migrating.
    pub before: i64,
    /// The version now.
    pub after: i64,
}

impl Ledger {
    /// The embedded ledger at `path` (see [`SqliteStore::open`]).
    pub fn open(path: &std::path::Path, read_only: bool) -> Result<Ledger> {
        Ok(Ledger::on(Store::Sqlite(SqliteStore::open(
            path, read_only,
        )?)))
    }

    /// The ledger on PostgreSQL at `url`. Nothing connects until the first query; the
    /// schema is migrated then (never in a dry run).
    pub fn postgres(
        url: &secrecy::SecretString,
        read_only: bool,
        timeouts: Timeouts,
    ) -> Result<Ledger> {
        Ok(Ledger::on(Store::Postgres(Box::new(PostgresStore::new(
            url, read_only, timeouts,
        )?))))
    }

    fn on(store: Store) -> Ledger {
        Ledger {
            store,
            calendar: None,
            pause_in_tx: None,
            admissions: super::lifecycle::Admissions::default(),
        }
    }

    /// Sets the sprint calendar, so that a pre-approval is checked against the allowance
    /// again, atomically, as it is written.
    pub fn with_calendar(mut self, calendar: SprintCalendar) -> Ledger {
        self.calendar = Some(calendar);
        self
    }

    /// Test-only: holds the write transaction of `open` this long before it commits, so
    /// that a test can kill the process inside it (`CHANGEGATE_TEST_PAUSE_IN_TX`).
    pub fn with_pause_in_tx(mut self, pause: Option<Duration>) -> Ledger {
        self.pause_in_tx = pause;
        self
    }

    pub(super) async fn pause_point(&self) {
        if let Some(pause) = self.pause_in_tx {
            tracing::warn!(
                "pausing {}s inside the ledger's transaction (test-only pause point)",
                pause.as_secs()
            );
            tokio::time::sleep(pause).await;
        }
    }

    /// Which backend kind this ledger is.
    pub(super) fn kind_of(&self) -> BackendKind {
        match self.store {
            Store::Sqlite(_) => BackendKind::Local,
            Store::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// The SQLite file, for the embedded ledger.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.store {
            Store::Sqlite(s) => Some(s.path()),
            Store::Postgres(_) => None,
        }
    }

    /// Applies the migrations this changegate knows (`changegate ledger migrate`); a store
    /// written by a newer changegate is refused.
    pub async fn migrate(&self) -> Result<SchemaStatus> {
        match &self.store {
            Store::Sqlite(s) => s.migrate_status(),
            Store::Postgres(p) => p.migrate_status().await,
        }
    }

    /// A connection for one transaction; errors name the store.
    pub(super) async fn conn(&self) -> Result<Conn<'_>> {
        self.store.conn().await
    }

    /// Every row of one read (each store's errors name the store).
    pub(super) async fn read_all(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        let rows = tx.query(sql, args).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The sprint's pre-approvals other than `row_id`'s, counted under the write lock: the
    /// whole days before `now`'s midnight from the tallies, the rest from the changes.
    pub(super) async fn recount_allowance(
        &self,
        tx: &mut Tx<'_>,
        row_id: i64,
        facts: &ChangeFacts,
        d: &Decision,
        now: DateTime<Utc>,
    ) -> Result<Decision> {
        let Some(cal) = self.calendar.filter(|_| d.counts_against_allowance()) else {
            return Ok(d.clone());
        };
        let (start, end) = (ts(cal.start_of(d.sprint)), ts(cal.end_of(d.sprint)));
        let now = ts(now);
        let midnight = (now - now.rem_euclid(86_400)).clamp(start, end);
        let used = tx
            .query_one(
                "SELECT coalesce(sum(pa), 0) FROM (
                    SELECT pre_approved AS pa FROM tallies
                    WHERE service_id = ?1 AND environment = ?2 AND day >= ?3 AND day < ?6
                    UNION ALL
                    SELECT pre_approved FROM changes INDEXED BY changes_by_decided
                    WHERE service_id = ?1 AND environment = ?2 AND decided_at >= ?6 AND decided_at < ?4
                      AND pre_approved = 1 AND id != ?5
                    UNION ALL
                    SELECT -pre_approved FROM changes
                    WHERE id = ?5 AND decided_at >= ?3 AND decided_at < ?6
                 ) AS counted",
                args![
                    facts.service_id.as_str(),
                    facts.environment.as_str(),
                    start,
                    end,
                    row_id,
                    midnight
                ],
            )
            .await?
            .i64(0)?;
        Ok(d.clone()
            .with_allowance_used(u32::try_from(used).unwrap_or(u32::MAX)))
    }

    /// Test-only: runs statements written for both stores (no arguments), in one
    /// transaction.
    #[cfg(test)]
    pub(crate) async fn exec_for_test(&self, statements: &[String]) -> Result<()> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        for sql in statements {
            tx.execute(sql, &[]).await?;
        }
        tx.commit().await
    }

    /// Test-only: the integers one query returns, row by row.
    #[cfg(test)]
    pub(crate) async fn ints_for_test(&self, sql: &str) -> Result<Vec<Vec<i64>>> {
        self.read_all(sql, &[])
            .await?
            .iter()
            .map(|r| (0..r.0.len()).map(|i| r.i64(i)).collect())
            .collect()
    }

    pub(super) async fn get_row(&self, row_id: i64) -> Result<Option<ChangeRecord>> {
        let mut conn = self.conn().await?;
        let mut tx = conn.begin(Begin::Plain).await?;
        let record = load(&mut tx, "id = ?1", args![row_id]).await?;
        tx.commit().await?;
        Ok(record)
    }
}

/// How long the PostgreSQL ledger waits, inside the run's budget.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To connect (each attempt).
    pub connect: Duration,
    /// For one statement, a lock wait included.
    pub statement: Duration,
}

impl Timeouts {
    /// Both from the run's HTTP budget: a connect within the per-request timeout (at most
    /// 10 s), a statement within it.
    pub fn within(request_timeout: Duration) -> Timeouts {
        Timeouts {
            connect: request_timeout.min(Duration::from_secs(10)),
            statement: request_timeout,
        }
    }
}

/// Refuses a schema newer than this changegate's.
pub(super) fn check_version(found: i64, latest: i64, what: &str) -> Result<()> {
    if found > latest {
        bail!(
            "{what} has schema version {found}, newer than this changegate knows ({latest}); upgrade changegate"
        );
    }
    Ok(())
}

#[cfg(test)]
mod dialect_tests {
    use super::to_postgres;

    #[test]
    fn placeholders_and_hints_are_rewritten_outside_quotes() {
        assert_eq!(
            to_postgres(
                "SELECT count(*) FROM changes c INDEXED BY changes_by_closed WHERE a = ?1 AND b != '?2' AND c = ?12"
            ),
            "SELECT count(*) FROM changes c  WHERE a = $1 AND b != '?2' AND c = $12"
        );
    }
}
