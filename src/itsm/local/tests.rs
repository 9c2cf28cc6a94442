//! The embedded ledger: the history a decision reads, and the plans of its queries.

use chrono::NaiveDate;

use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{
    ChangeFacts, ChangeRecord, CorrelationKey, Decision, DecisionKind, History, Outcome, State,
};
use crate::domain::{Mode, Platform, SprintCalendar};
use crate::itsm::local::client::Timeouts;
use crate::itsm::{
    Admission, Announcements, ChangeStore, HistoryQuery, Intent, ManualApproval, PendingWait,
    TrackRecord, Waits,
};

pub(crate) fn calendar() -> SprintCalendar {
    SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14)
}

/// `day` days and `hour` hours after the start of sprint 0.
fn at(day: i64, hour: i64) -> DateTime<Utc> {
    calendar().start_of(0) + chrono::Duration::hours(day * 24 + hour)
}

fn facts(service_id: &str, c: char) -> ChangeFacts {
    ChangeFacts {
        platform: Platform::Local,
        service: "api".into(),
        service_id: service_id.into(),
        environment: "production".into(),
        repository: None,
        commit_sha: c.to_string().repeat(40),
        branch: None,
        pull_request: None,
        range: None,
        commits: Vec::new(),
        lines_changed: None,
        paths: Vec::new(),
        paths_unknown: false,
        work_items: Vec::new(),
        run_url: None,
        repository_url: None,
        actor: None,
        author: None,
        tests_passed: None,
        evidence: Default::default(),
    }
}

fn decision(kind: DecisionKind, emergency: Option<&str>) -> Decision {
    Decision {
        kind,
        rules: Vec::new(),
        mode: Mode::Enforce,
        emergency: emergency.map(str::to_string),
        sprint: 0,
        allowance: 2,
        allowance_used: 0,
        clock_override: None,
    }
}

pub(crate) struct Fixture {
    _dir: Option<tempfile::TempDir>,
    pub(crate) ledger: Ledger,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) name: &'static str,
}

/// The PostgreSQL server the tests use (`CHANGEGATE_TEST_DATABASE_URL`, which `.ci/test`
/// starts and sets). Under CI (`CI=true`) a missing server fails the test; locally the
/// PostgreSQL half is skipped with a note.
fn test_database_url() -> Option<String> {
    match std::env::var("CHANGEGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CHANGEGATE_TEST_DATABASE_URL is not set under CI: run the tests through .ci/test"
            );
            eprintln!(
                "note: CHANGEGATE_TEST_DATABASE_URL is not set; the PostgreSQL ledger is not tested (run .ci/test)"
            );
            None
        }
    }
}

/// A fresh database on the test server, for one test: tests run in parallel.
fn fresh_database(rt: &tokio::runtime::Runtime, admin: &str) -> String {
    let name = format!("cg_unit_{:016x}", fastrand::u64(..));
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    });
    let mut url = url::Url::parse(admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The same empty ledger on each store: SQLite, and PostgreSQL when a server is there.
pub(crate) fn ledgers() -> Vec<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Ledger::open(&dir.path().join("ledger.db"), false)
        .unwrap()
        .with_calendar(calendar());
    let mut out = vec![Fixture {
        _dir: Some(dir),
        ledger: sqlite,
        rt: runtime(),
        name: "sqlite",
    }];
    if let Some(admin) = test_database_url() {
        let rt = runtime();
        let url = fresh_database(&rt, &admin);
        let ledger = Ledger::postgres(
            &secrecy::SecretString::from(url),
            false,
            Timeouts::within(std::time::Duration::from_secs(30)),
        )
        .unwrap()
        .with_calendar(calendar());
        out.push(Fixture {
            _dir: None,
            ledger,
            rt,
            name: "postgres",
        });
    }
    out
}

impl Fixture {
    /// A fixture around a ledger opened by the test.
    pub(crate) fn on(ledger: Ledger) -> Fixture {
        Fixture {
            _dir: None,
            ledger,
            rt: runtime(),
            name: "sqlite",
        }
    }

    pub(crate) fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Gates a change at `decided`, deploys it when `deploy`, records `outcome` at `closed`.
    fn change(
        &self,
        f: &ChangeFacts,
        d: &Decision,
        decided: DateTime<Utc>,
        deploy: bool,
        outcome: Option<(Outcome, DateTime<Utc>)>,
    ) -> ChangeRecord {
        self.run(async {
            let mut r = self.ledger.open(f, Some(d), None, decided).await.unwrap();
            if deploy {
                r = self.ledger.start(&r, decided).await.unwrap();
            }
            if let Some((o, closed)) = outcome {
                r = self
                    .ledger
                    .record_outcome(&r, o, "", None, closed)
                    .await
                    .unwrap();
            }
            r
        })
    }

    /// The counts a decision reads (`tallies`, `totals`) agree with the changes they count.
    fn assert_counts_agree(&self) {
        // Service, environment, then `keys` more key columns and `counts` counts; a row
        // whose counts all went back to zero may stay, and counts as absent.
        let rows = |sql: &str, keys: usize, counts: usize| -> Vec<(String, String, Vec<i64>)> {
            self.run(self.ledger.read_all(sql, &[]))
                .unwrap()
                .iter()
                .map(|r| {
                    let numbers: Vec<i64> =
                        (2..2 + keys + counts).map(|i| r.i64(i).unwrap()).collect();
                    (r.string(0).unwrap(), r.string(1).unwrap(), numbers)
                })
                .filter(|(_, _, numbers)| numbers[keys..].iter().any(|c| *c != 0))
                .collect()
        };
        let tallied = rows(
            "SELECT service_id, environment, day, succeeded, failed, cancelled, pre_approved, emergency
             FROM tallies ORDER BY 1, 2, 3",
            1,
            5,
        );
        let counted = rows(
            "SELECT service_id, environment, decided_at - decided_at % 86400 AS d,
                sum(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END),
                sum(CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END),
                sum(CASE WHEN outcome = 'cancelled' THEN 1 ELSE 0 END),
                sum(pre_approved), sum(emergency)
             FROM changes WHERE decided_at IS NOT NULL
             GROUP BY service_id, environment, d ORDER BY 1, 2, 3",
            1,
            5,
        );
        assert_eq!(tallied, counted, "{}: tallies", self.name);
        let totals = rows(
            "SELECT service_id, environment, closed FROM totals ORDER BY 1, 2",
            0,
            1,
        );
        let closed = rows(
            "SELECT service_id, environment, count(*) FROM changes
             WHERE closed_at IS NOT NULL AND outcome IN ('success', 'failure')
             GROUP BY service_id, environment ORDER BY 1, 2",
            0,
            1,
        );
        assert_eq!(totals, closed, "{}: totals", self.name);
        self.assert_stamps_cover();
    }

    /// The day stamps `report` reads (`kpi_stamps`) cover every change: each day a change
    /// was decided or deployed on is stamped, no later than the change's decision.
    fn assert_stamps_cover(&self) {
        let touched = self
            .run(self.ledger.ints_for_test(
                "SELECT t.d, t.e, coalesce(k.writes, 0), coalesce(k.earliest, t.e + 1)
                 FROM (SELECT service_id, environment, d, min(e) AS e FROM (
                         SELECT service_id, environment, decided_at - decided_at % 86400 AS d,
                             coalesce(decided_at, deployed_at) AS e
                         FROM changes WHERE decided_at IS NOT NULL
                         UNION ALL
                         SELECT service_id, environment, deployed_at - deployed_at % 86400,
                             coalesce(decided_at, deployed_at)
                         FROM changes WHERE deployed_at IS NOT NULL) AS x
                       GROUP BY service_id, environment, d) AS t
                 LEFT JOIN kpi_stamps k ON k.service_id = t.service_id
                     AND k.environment = t.environment AND k.day = t.d
                 ORDER BY t.d",
            ))
            .unwrap();
        for row in &touched {
            let [day, earliest_change, writes, stamped_earliest] = row[..] else {
                panic!("{}: four columns", self.name)
            };
            assert!(writes > 0, "{}: day {day} not stamped", self.name);
            assert!(
                stamped_earliest <= earliest_change,
                "{}: day {day} stamped earliest {stamped_earliest}, a change decided {earliest_change}",
                self.name
            );
        }
    }

    /// Every stamp's writes added up: grows with every write to a change.
    fn stamp_writes(&self) -> i64 {
        self.run(
            self.ledger
                .ints_for_test("SELECT CAST(coalesce(sum(writes), 0) AS BIGINT) FROM kpi_stamps"),
        )
        .unwrap()[0][0]
    }

    fn history(&self, exclude: Option<&str>, window: u32) -> History {
        self.run(self.ledger.history(&HistoryQuery {
            service_id: "acme/api",
            environment: "production",
            window,
            calendar: calendar(),
            from_sprint: 0,
            now: at(20, 0),
            exclude_key: exclude,
            found: None,
        }))
        .unwrap()
    }
}

#[test]
fn history_aggregates_by_sprint_and_leaves_the_current_change_out() {
    for l in ledgers() {
        let pre = decision(DecisionKind::PreApproved, None);
        let needs = decision(DecisionKind::NeedsApproval, None);
        let emergency = decision(DecisionKind::PreApproved, Some("outage"));
        // Sprint 0: a pre-approved success, an approved failure.
        l.change(
            &facts("acme/api", 'a'),
            &pre,
            at(1, 0),
            true,
            Some((Outcome::Success, at(1, 1))),
        );
        let b = l.change(&facts("acme/api", 'b'), &needs, at(2, 0), false, None);
        l.run(
            l.ledger
                .decide_by_hand(&b.id, true, "alice", None, at(2, 1)),
        )
        .unwrap();
        let b = l.run(l.ledger.refresh(&b)).unwrap();
        l.run(l.ledger.start(&b, at(2, 2))).unwrap();
        let b = l.run(l.ledger.refresh(&b)).unwrap();
        l.run(
            l.ledger
                .record_outcome(&b, Outcome::Failure, "", None, at(3, 0)),
        )
        .unwrap();
        // Sprint 1: a pre-approved change never deployed (cancelled), an emergency success,
        // and the change being decided now.
        l.change(
            &facts("acme/api", 'c'),
            &pre,
            at(15, 0),
            false,
            Some((Outcome::Success, at(15, 1))),
        );
        l.change(
            &facts("acme/api", 'd'),
            &emergency,
            at(16, 0),
            true,
            Some((Outcome::Success, at(16, 1))),
        );
        let current = l.change(&facts("acme/api", 'e'), &pre, at(17, 0), false, None);
        // Another service's changes never count.
        l.change(
            &facts("acme/web", 'f'),
            &pre,
            at(17, 0),
            true,
            Some((Outcome::Failure, at(17, 1))),
        );

        let h = l.history(Some(&current.key), 2);
        assert_eq!(h.closed_total, 3, "a, b and d; c was cancelled");
        assert_eq!(
            h.recent,
            [Outcome::Success, Outcome::Failure],
            "d then b, newest first, window 2"
        );
        let s0 = h.tally(0);
        assert_eq!(
            (
                s0.succeeded,
                s0.failed,
                s0.cancelled,
                s0.pre_approved,
                s0.emergency
            ),
            (1, 1, 0, 1, 0)
        );
        let s1 = h.tally(1);
        // c used the allowance though it was cancelled; d was an emergency, which does not.
        assert_eq!(
            (
                s1.succeeded,
                s1.failed,
                s1.cancelled,
                s1.pre_approved,
                s1.emergency
            ),
            (1, 0, 1, 1, 1)
        );
        assert_eq!(h.sprints.len(), 2);

        // Not excluded, the current change uses the allowance too.
        let h = l.history(None, 20);
        assert_eq!(h.tally(1).pre_approved, 2);
        assert_eq!(h.recent.len(), 3);

        assert_eq!(
            l.run(
                l.ledger
                    .last_change_sha(&CorrelationKey::new("acme/api", "production", "f00d"))
            )
            .unwrap()
            .sha,
            Some("d".repeat(40)),
            "the last successful deploy: e is only decided, c never deployed, b failed"
        );
        assert_eq!(
            l.run(
                l.ledger
                    .last_change_sha(&CorrelationKey::new("acme/api", "staging", "f00d"))
            )
            .unwrap()
            .sha,
            None
        );
        l.assert_counts_agree();
    }
}

#[test]
fn every_write_to_a_change_stamps_the_days_report_reads() {
    for l in ledgers() {
        let mut writes = l.stamp_writes();
        let mut grew = |what: &str| {
            let now = l.stamp_writes();
            assert!(now > writes, "{}: {what} stamped nothing", l.name);
            writes = now;
            l.assert_stamps_cover();
        };
        let a = l.change(
            &facts("acme/api", 'a'),
            &decision(DecisionKind::NeedsApproval, None),
            at(1, 0),
            false,
            None,
        );
        grew("a decision");
        let a = l
            .run(l.ledger.decide_by_hand(&a.id, true, "lead", None, at(1, 2)))
            .unwrap();
        grew("an approval");
        let a = l.run(l.ledger.start(&a, at(3, 5))).unwrap();
        grew("a deploy days later");
        let a = l
            .run(
                l.ledger
                    .record_outcome(&a, Outcome::Success, "", None, at(3, 6)),
            )
            .unwrap();
        grew("an outcome");
        l.run(l.ledger.write_verification(
            &a,
            &crate::domain::verify::Verdict::FailedAfterDeploy {
                incidents: vec!["INC1".into()],
            },
            at(4, 0),
        ))
        .unwrap();
        grew("a verification");
        l.run(
            l.ledger
                .exec_for_test(&["DELETE FROM events".into(), "DELETE FROM changes".into()]),
        )
        .unwrap();
        grew("a delete");
        // The days stay stamped: the stamps only grow, so a kept sum changes.
        let days = l
            .run(
                l.ledger
                    .ints_for_test("SELECT day, writes, earliest FROM kpi_stamps ORDER BY day"),
            )
            .unwrap();
        let day = |d: i64| {
            let t = at(d, 0).timestamp();
            t - t % 86_400
        };
        assert_eq!(
            days.iter().map(|r| r[0]).collect::<Vec<_>>(),
            vec![day(1), day(3)],
            "{}: the decision's and the deploy's days",
            l.name
        );
        assert!(
            days.iter().all(|r| r[2] == at(1, 0).timestamp()),
            "{}: {days:?}",
            l.name
        );
    }
}

#[test]
fn migrating_stamps_the_existing_changes() {
    // A ledger of schema 7 with changes, opened by this changegate: the stamps are built
    // from the changes, and the triggers stamp what is written after.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..7] {
            db.execute_batch(sql).unwrap();
        }
        db.pragma_update(None, "user_version", 7).unwrap();
        db.execute_batch(&format!(
            "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                 state, opened_at, decided_at, deployed_at, facts_json)
             VALUES ('k1', 'api', 'acme/api', 'production', 'a', 'closed', {d1}, {d1}, {p1}, '{{}}'),
                    ('k2', 'api', 'acme/api', 'production', 'b', 'closed', {d2}, {d2}, NULL, '{{}}'),
                    ('k3', 'api', 'acme/web', 'staging', 'c', 'open', {d2}, NULL, NULL, '{{}}');",
            d1 = at(1, 3).timestamp(),
            p1 = at(5, 1).timestamp(),
            d2 = at(1, 9).timestamp(),
        ))
        .unwrap();
    }
    let ledger = Ledger::open(&path, false).unwrap();
    let l = Fixture::on(ledger);
    let day = |d: i64| {
        let t = at(d, 0).timestamp();
        t - t % 86_400
    };
    let stamps = l
        .run(
            l.ledger
                .ints_for_test("SELECT day, writes, earliest FROM kpi_stamps ORDER BY day"),
        )
        .unwrap();
    assert_eq!(
        stamps,
        vec![
            vec![day(1), 2, at(1, 3).timestamp()],
            vec![day(5), 1, at(1, 3).timestamp()]
        ]
    );
    l.assert_stamps_cover();
    let services = l.run(crate::itsm::Insights::services(&l.ledger)).unwrap();
    assert_eq!(
        services
            .iter()
            .map(|s| s.service_id.as_str())
            .collect::<Vec<_>>(),
        vec!["acme/api"],
        "a service with no decided change is not listed"
    );
}

#[test]
fn migrating_postgres_stamps_the_existing_changes() {
    // A PostgreSQL ledger of schema 6 with changes, reached by this changegate: the same
    // stamps as the SQLite migration builds.
    let Some(admin) = test_database_url() else {
        return;
    };
    let rt = runtime();
    let url = fresh_database(&rt, &admin);
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        for sql in &client::POSTGRES_MIGRATIONS[..6] {
            client.batch_execute(sql).await.unwrap();
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE changegate_schema (version BIGINT NOT NULL);
                 INSERT INTO changegate_schema VALUES (6);
                 INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                     state, opened_at, decided_at, deployed_at, facts_json)
                 VALUES ('k1', 'api', 'acme/api', 'production', 'a', 'closed', {d1}, {d1}, {p1}, '{{}}'),
                        ('k2', 'api', 'acme/api', 'production', 'b', 'closed', {d2}, {d2}, NULL, '{{}}'),
                        ('k3', 'api', 'acme/web', 'staging', 'c', 'open', {d2}, NULL, NULL, '{{}}');",
                d1 = at(1, 3).timestamp(),
                p1 = at(5, 1).timestamp(),
                d2 = at(1, 9).timestamp(),
            ))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    });
    let ledger = Ledger::postgres(
        &secrecy::SecretString::from(url),
        false,
        Timeouts::within(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    let l = Fixture {
        _dir: None,
        ledger,
        rt,
        name: "postgres",
    };
    let status = l.run(l.ledger.migrate()).unwrap();
    assert_eq!((status.before, status.after), (6, 7));
    let day = |d: i64| {
        let t = at(d, 0).timestamp();
        t - t % 86_400
    };
    let stamps = l
        .run(
            l.ledger
                .ints_for_test("SELECT day, writes, earliest FROM kpi_stamps ORDER BY day"),
        )
        .unwrap();
    assert_eq!(
        stamps,
        vec![
            vec![day(1), 2, at(1, 3).timestamp()],
            vec![day(5), 1, at(1, 3).timestamp()]
        ]
    );
    l.assert_stamps_cover();
    // Written after: stamped by the trigger.
    let before = l.stamp_writes();
    l.run(l.ledger.exec_for_test(&[
        "UPDATE changes SET outcome = 'success' WHERE correlation_key = 'k2'".into(),
    ]))
    .unwrap();
    assert!(l.stamp_writes() > before);
}

#[test]
fn open_is_idempotent_and_a_standing_decision_is_kept() {
    for l in ledgers() {
        let f = facts("acme/api", 'a');
        let first = l.change(
            &f,
            &decision(DecisionKind::NeedsApproval, None),
            at(1, 0),
            false,
            None,
        );
        let again = l.change(
            &f,
            &decision(DecisionKind::PreApproved, None),
            at(1, 1),
            false,
            None,
        );
        assert_eq!(first.id, again.id);
        assert_eq!(
            again.decision.map(|d| d.kind),
            Some(DecisionKind::NeedsApproval)
        );
        assert_eq!(again.state, State::AwaitingApproval);
        let h = l.history(None, 20);
        assert_eq!(
            h.tally(0).pre_approved,
            0,
            "the allowance is not used by a re-run"
        );
        l.assert_counts_agree();
    }
}

#[test]
fn decision_queries_read_their_index_only_on_postgres_too() {
    // PostgreSQL's planner picks its own plans (a sequential scan where one service is the
    // whole table is fair); what the schema owes it is an index that answers each query
    // alone. With sequential and bitmap scans off, each query must be an index-only scan:
    // the row id that leaves out the change being decided is in the index (INCLUDE).
    let Some(admin) = test_database_url() else {
        return;
    };
    let rt = runtime();
    let url = fresh_database(&rt, &admin);
    let ledger = Ledger::postgres(
        &secrecy::SecretString::from(url.clone()),
        false,
        Timeouts::within(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    rt.block_on(async {
        ledger.migrate().await.unwrap();
        let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        // A visibility map, as autovacuum keeps it: index-only scans skip the heap by it.
        // A history of one service, in the parameters' values below ('1', '2', times 1..).
        for statement in [
            "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                state, outcome, opened_at, decided_at, closed_at, facts_json)
             SELECT 'k' || g, 's', '1', '2', 'sha', 'closed',
                CASE WHEN g % 10 = 0 THEN 'failure' ELSE 'success' END, g, g, g, '{}'
             FROM generate_series(1, 5000) g",
            "VACUUM ANALYZE changes",
            "SET enable_seqscan = off",
            "SET enable_bitmapscan = off",
        ] {
            pg.batch_execute(statement).await.unwrap();
        }
        for (name, sql) in DECISION_QUERIES {
            let sql = client::to_postgres(sql);
            let n = sql.matches('$').count();
            let args: Vec<String> = (1..=n).map(|i| format!("'{i}'")).collect();
            // Literals in place of the parameters: EXPLAIN of a generic plan needs PostgreSQL 16.
            let mut literal = sql.clone();
            for i in (1..=n).rev() {
                literal = literal.replace(&format!("${i}"), &args[i - 1]);
            }
            let plan: Vec<String> = pg
                .query(&format!("EXPLAIN {literal}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect();
            let plan = plan.join("; ");
            if name != "last_change_sha" {
                assert!(
                    plan.contains("Index Only Scan"),
                    "{name} reads the table: {plan}"
                );
            } else {
                assert!(plan.contains("Index Scan"), "{name}: {plan}");
            }
        }
        drop(pg);
        let _ = task.await;
    });
}

#[test]
fn decision_queries_read_their_index_only() {
    // SQLite's plans are pinned with INDEXED BY; PostgreSQL's planner picks its own.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db"), false).unwrap();
    let client::Store::Sqlite(store) = &ledger.store else {
        unreachable!("opened a SQLite ledger")
    };
    let conn = store.raw();
    for (name, sql) in DECISION_QUERIES {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let args: Vec<rusqlite::types::Value> = (0..n)
            .map(|i| rusqlite::types::Value::Integer(i as i64))
            .collect();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("SEARCH changes USING"), "{name}: {plan}");
        assert!(
            !plan.contains("SCAN changes"),
            "{name} scans the table: {plan}"
        );
        if name != "last_change_sha" {
            // The one row it returns is read from the table: the SHA is not in the index.
            assert!(
                plan.contains("COVERING INDEX"),
                "{name} reads the table: {plan}"
            );
        }
    }
}

/// The SQLite VM steps of one run of `sql` with `args`, which must find something.
fn vm_steps(
    conn: &rusqlite::Connection,
    name: &str,
    sql: &str,
    args: Vec<rusqlite::types::Value>,
) -> i32 {
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |_| Ok(()))
        .unwrap()
        .count();
    assert!(rows > 0, "{name} found nothing");
    stmt.get_status(rusqlite::StatementStatus::VmStep)
}

/// Each query does the same work (within 5 %) at 100,000 changes as at 1,000.
fn assert_same_work(small: &[(&str, i32)], large: &[(&str, i32)]) {
    for ((name, s), (_, l)) in small.iter().zip(large) {
        eprintln!("{name}: {s} VM steps at 1,000 changes, {l} at 100,000");
        assert!(
            f64::from(*l) <= f64::from(*s) * 1.05,
            "{name}: {l} steps at 100,000 changes against {s} at 1,000"
        );
    }
}

/// The work (SQLite VM steps) of each decision query on a ledger of `n` changes of one
/// service over 400 days (every day has some), the clock at noon of the next day.
fn decision_work(n: i64) -> Vec<(&'static str, i32)> {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db"), false).unwrap();
    let client::Store::Sqlite(store) = &ledger.store else {
        unreachable!("opened a SQLite ledger")
    };
    let conn = store.raw();
    let start = at(0, 0).timestamp();
    conn.execute(
        "WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1)
         INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
             state, outcome, pre_approved, opened_at, decided_at, closed_at, facts_json)
         SELECT 'k' || i, 'api', 'acme/api', 'production', 'sha', 'closed',
             CASE WHEN i % 10 = 0 THEN 'failure' WHEN i % 10 = 1 THEN 'cancelled' ELSE 'success' END,
             i % 3 = 0, t, t, t + 600, '{}'
         FROM (SELECT i, ?2 + (i % 400) * 86400 + (i * 7919) % 85000 AS t FROM g)",
        rusqlite::params![n, start],
    )
    .unwrap();
    let now = at(400, 12).timestamp();
    let from = calendar().start_of(2).timestamp();
    let exclude = 5;
    DECISION_QUERIES
        .iter()
        .map(|(name, sql)| {
            use rusqlite::types::Value::{Integer, Text};
            let (svc, env) = (Text("acme/api".into()), Text("production".into()));
            let args = match *name {
                "closed_total" => vec![svc, env, Integer(exclude), Integer(now)],
                "recent" => vec![svc, env, Integer(exclude), Integer(20), Integer(now)],
                "sprints" => vec![
                    svc,
                    env,
                    Integer(from),
                    Integer(14 * 86_400),
                    Integer(exclude),
                    Integer(now),
                    Integer(now - now.rem_euclid(86_400)),
                ],
                _ => vec![svc, env],
            };
            (*name, vm_steps(&conn, name, sql, args))
        })
        .collect()
}

#[test]
fn a_decision_does_the_same_work_at_1000_and_100000_changes() {
    // What a decision reads does not grow with the history: whole days come from the
    // tallies, and only the clock's own day, the window and the change being decided are
    // read row by row. (Before the tallies, `closed_total` and `sprints` read every closed
    // change and every change of the last sprints: 100 times the work here.)
    assert_same_work(&decision_work(1_000), &decision_work(100_000));
}

/// The work (SQLite VM steps) of each query of a warm report (every finished sprint kept)
/// on a ledger of `n` changes of one service over 400 days, and 20 changes in the current
/// sprint, with a part kept for each of the 5 finished sprints of a 6-sprint report.
fn report_work(n: i64) -> Vec<(&'static str, i32)> {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db"), false).unwrap();
    let client::Store::Sqlite(store) = &ledger.store else {
        unreachable!("opened a SQLite ledger")
    };
    let conn = store.raw();
    let cal = calendar();
    let start = at(0, 0).timestamp();
    let insert = "INSERT INTO changes (correlation_key, service, service_id, environment,
             commit_sha, state, decision, outcome, pre_approved, opened_at, decided_at,
             deployed_at, closed_at, facts_json)
         SELECT ?3 || i, 'api', 'acme/api', 'production', 'sha', 'closed', 'pre-approved',
             CASE WHEN i % 10 = 0 THEN 'failure' WHEN i % 10 = 1 THEN 'cancelled' ELSE 'success' END,
             i % 3 = 0, t, t, t + 600, t + 900, '{}'
         FROM (WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < ?1)
               SELECT i, ?2 + t AS t FROM (SELECT i, %SPREAD% AS t FROM g))";
    conn.execute(
        &insert.replace("%SPREAD%", "(i % 400) * 86400 + (i * 7919) % 85000"),
        rusqlite::params![n, start, "k"],
    )
    .unwrap();
    let current = 30;
    let sprint_start = cal.start_of(current).timestamp();
    conn.execute(
        &insert.replace("%SPREAD%", "i * 7200"),
        rusqlite::params![20, sprint_start, "now"],
    )
    .unwrap();
    for sprint in current - 5..current {
        conn.execute(
            "INSERT INTO kpi_sprints VALUES ('acme/api', 'production', ?1, ?2, ?3, 1, 0, ?1, ?2, ?1, ?2, '{}')",
            rusqlite::params![
                cal.start_of(sprint).timestamp(),
                cal.end_of(sprint).timestamp(),
                sprint
            ],
        )
        .unwrap();
    }
    let now = sprint_start + 2 * 86_400 + 3600;
    let from = cal.start_of(current - 6).timestamp();
    REPORT_QUERIES
        .iter()
        .map(|(name, sql)| {
            use rusqlite::types::Value::{Integer, Text};
            let (svc, env) = (Text("acme/api".into()), Text("production".into()));
            let args = match *name {
                "services" => vec![],
                "stamps" => vec![svc, env, Integer(from), Integer(now)],
                "kept_sprints" => vec![
                    svc,
                    env,
                    Integer(cal.start_of(current - 5).timestamp()),
                    Integer(cal.start_of(current - 1).timestamp()),
                ],
                "deploys_around" => vec![svc, env, Integer(from), Integer(sprint_start)],
                _ => vec![svc, env, Integer(sprint_start), Integer(now)],
            };
            (*name, vm_steps(&conn, name, sql, args))
        })
        .collect()
}

#[test]
fn a_warm_report_does_the_same_work_at_1000_and_100000_changes() {
    // A report with every finished sprint kept reads the day stamps, the kept parts, the
    // current sprint's changes and the few deploys around its start: none of it grows with
    // the history. (Reading every change of the six sprints instead reads 100 times the
    // changes at 100,000 as at 1,000 here.)
    assert_same_work(&report_work(1_000), &report_work(100_000));
}

#[test]
fn the_report_queries_read_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger.db"), false).unwrap();
    let client::Store::Sqlite(store) = &ledger.store else {
        unreachable!("opened a SQLite ledger")
    };
    let conn = store.raw();
    for (name, sql) in REPORT_QUERIES {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(
                    (0..stmt.parameter_count()).map(|_| rusqlite::types::Value::Integer(0)),
                ),
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let plan = plan.join("; ");
        assert!(
            !plan.contains("SCAN changes"),
            "{name} scans the changes: {plan}"
        );
    }
}

#[test]
fn pre_approvals_decided_at_once_never_overrun_the_allowance() {
    for l in ledgers() {
        // Three changes decided from the same history (0 of 2 used): the third write finds
        // the allowance taken and goes to approval, as deciding it again would.
        let stale = decision(DecisionKind::PreApproved, None);
        let kinds: Vec<DecisionKind> = ['a', 'b', 'c']
            .into_iter()
            .map(|c| {
                let r = l
                    .run(
                        l.ledger
                            .open(&facts("acme/api", c), Some(&stale), None, at(1, 0)),
                    )
                    .unwrap();
                r.decision.unwrap().kind
            })
            .collect();
        assert_eq!(
            kinds,
            [
                DecisionKind::PreApproved,
                DecisionKind::PreApproved,
                DecisionKind::NeedsApproval
            ],
            "{}",
            l.name
        );
        let third = l
            .run(l.ledger.find(&facts("acme/api", 'c').key(), Intent::Read))
            .unwrap()
            .record
            .unwrap();
        assert_eq!(third.state, State::AwaitingApproval);
        assert_eq!(third.decision.unwrap().allowance_used, 2);
        // Two days later the first day is a whole day counted in the tallies: the same.
        let fourth = l
            .run(
                l.ledger
                    .open(&facts("acme/api", 'd'), Some(&stale), None, at(3, 0)),
            )
            .unwrap()
            .decision
            .unwrap();
        assert_eq!(
            (fourth.kind, fourth.allowance_used),
            (DecisionKind::NeedsApproval, 2),
            "{}",
            l.name
        );
        l.assert_counts_agree();
    }
}

#[test]
fn re_runs_leave_no_gaps_in_change_ids() {
    for l in ledgers() {
        let d = decision(DecisionKind::NeedsApproval, None);
        for _ in 0..3 {
            let r = l
                .run(
                    l.ledger
                        .open(&facts("acme/api", 'a'), Some(&d), None, at(1, 0)),
                )
                .unwrap();
            assert_eq!(r.id, "CG-1");
        }
        let next = l
            .run(
                l.ledger
                    .open(&facts("acme/api", 'b'), Some(&d), None, at(1, 1)),
            )
            .unwrap();
        assert_eq!(next.id, "CG-2");
    }
}

#[test]
fn the_author_is_kept_with_the_change_and_read_back_with_it() {
    for l in ledgers() {
        let mut f = facts("acme/api", 'a');
        f.author = Some(crate::domain::Author {
            login: Some("octocat".into()),
            email: Some("octo@example.com".into()),
        });
        let needs = decision(DecisionKind::NeedsApproval, None);
        let opened = l.change(&f, &needs, at(1, 0), false, None);
        assert_eq!(opened.author, f.author, "{}", l.name);
        let read = l.run(l.ledger.get(&opened.id)).unwrap().unwrap();
        assert_eq!(read.author, f.author, "{}", l.name);
        // A change opened before the author was kept reads back without one.
        let older = l.change(&facts("acme/api", 'b'), &needs, at(1, 1), false, None);
        assert_eq!(older.author, None, "{}", l.name);
    }
}

#[test]
fn what_serve_keeps_is_claimed_once_and_held_until_released() {
    for f in ledgers() {
        let l = &f.ledger;
        f.run(async {
            assert!(l.claim("github-delivery", "d-1", at(0, 1)).await.unwrap());
            assert!(!l.claim("github-delivery", "d-1", at(0, 2)).await.unwrap());
            // Another space is another id.
            assert!(l.claim("github-deployment", "d-1", at(0, 2)).await.unwrap());
            let wait = |key: &str, hour| PendingWait {
                key: key.into(),
                forge: "github".into(),
                payload: format!("{{\"key\":\"{key}\"}}"),
                since: at(0, hour),
            };
            l.hold(&wait("b", 3)).await.unwrap();
            l.hold(&wait("a", 4)).await.unwrap();
            // Held again: changes nothing.
            l.hold(&wait("b", 5)).await.unwrap();
            assert_eq!(l.held().await.unwrap(), vec![wait("b", 3), wait("a", 4)]);
            l.release("b").await.unwrap();
            assert_eq!(l.held().await.unwrap(), vec![wait("a", 4)]);
            // Admission: the delivery, the deployment and its wait in one write.
            let admit = |delivery: &'static str, w: PendingWait| async move {
                l.admit("delivery", delivery, "deployment", &w)
                    .await
                    .unwrap()
            };
            assert_eq!(admit("d-2", wait("c", 6)).await, Admission::Taken);
            // The same delivery again; another delivery of a deployment already taken.
            assert_eq!(admit("d-2", wait("e", 7)).await, Admission::SeenDelivery);
            assert_eq!(admit("d-3", wait("c", 7)).await, Admission::SeenDeployment);
            assert_eq!(
                l.held().await.unwrap(),
                vec![wait("a", 4), wait("c", 6)],
                "only the taken delivery's wait is held"
            );
            l.release("c").await.unwrap();
            // Admissions that arrive while the ledger is busy are written together, in one
            // transaction, and each is answered as if it had come alone.
            let busy = l.conn().await.unwrap();
            let (_, x, y, x_again, z) = tokio::join!(
                biased;
                async move {
                    tokio::task::yield_now().await;
                    drop(busy);
                },
                admit("d-10", wait("x", 8)),
                admit("d-10", wait("y", 8)),
                admit("d-11", wait("x", 9)),
                admit("d-12", wait("z", 9)),
            );
            assert_eq!(
                (x, y, x_again, z),
                (
                    Admission::Taken,
                    Admission::SeenDelivery,
                    Admission::SeenDeployment,
                    Admission::Taken
                )
            );
            assert_eq!(
                l.held().await.unwrap(),
                vec![wait("a", 4), wait("x", 8), wait("z", 9)]
            );
            l.release("x").await.unwrap();
            l.release("z").await.unwrap();
        });
        // A second connection (another process, a restarted server) sees the same.
        if let Some(dir) = &f._dir {
            let again = Ledger::open(&dir.path().join("ledger.db"), false).unwrap();
            f.run(async {
                assert_eq!(again.held().await.unwrap().len(), 1);
                assert!(
                    !again
                        .claim("github-delivery", "d-1", at(1, 0))
                        .await
                        .unwrap()
                );
            });
        }
    }
}

#[test]
fn what_announce_told_the_chat_is_kept_per_service_sprint_and_sink_and_replaced() {
    for f in ledgers() {
        let l = &f.ledger;
        f.run(async {
            assert_eq!(l.last_announced("acme/api", 3, "chat").await.unwrap(), None);
            l.keep_announced("acme/api", 3, "chat", "[1]", at(0, 1))
                .await
                .unwrap();
            l.keep_announced("acme/api", 4, "chat", "[4]", at(0, 1))
                .await
                .unwrap();
            l.keep_announced("acme/api", 3, "chat", "[2]", at(0, 2))
                .await
                .unwrap();
            assert_eq!(
                l.last_announced("acme/api", 3, "chat").await.unwrap(),
                Some("[2]".to_string()),
                "{}",
                f.name
            );
            assert_eq!(
                l.last_announced("acme/api", 4, "chat").await.unwrap(),
                Some("[4]".to_string())
            );
            assert_eq!(l.last_announced("acme/web", 3, "chat").await.unwrap(), None);
        });
    }
}

#[test]
fn an_admission_the_store_refuses_does_not_take_the_others_of_its_write_down() {
    // PostgreSQL refuses a NUL byte in text (SQLite keeps it): the write of the batch fails,
    // and each admission is then written alone.
    for f in ledgers().into_iter().filter(|f| f.name == "postgres") {
        let l = &f.ledger;
        f.run(async {
            let wait = |key: &str, payload: &str| PendingWait {
                key: key.into(),
                forge: "github".into(),
                payload: payload.into(),
                since: at(0, 1),
            };
            let (refused, taken) = (wait("a", "nul\u{0}"), wait("b", "{}"));
            let busy = l.conn().await.unwrap();
            let (_, bad, good) = tokio::join!(
                biased;
                async move {
                    tokio::task::yield_now().await;
                    drop(busy);
                },
                l.admit("delivery", "d-1", "deployment", &refused),
                l.admit("delivery", "d-2", "deployment", &taken),
            );
            assert!(bad.is_err(), "{bad:?}");
            assert_eq!(good.unwrap(), Admission::Taken);
            assert_eq!(l.held().await.unwrap(), vec![wait("b", "{}")]);
            // Nothing of the refused one stands: it can be delivered again.
            assert_eq!(
                l.admit("delivery", "d-1", "deployment", &wait("a", "{}"))
                    .await
                    .unwrap(),
                Admission::Taken
            );
        });
    }
}
