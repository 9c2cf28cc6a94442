//! The 100,000-change decision on the PostgreSQL ledger, as a whole process, against the same
//! decision on the embedded SQLite ledger and against `--version`, measured in one run.
//!
//! The history is the gate benchmark's (the same seed, `support/seed.rs`), written to SQLite
//! and copied row for row into a fresh PostgreSQL database at `CHANGEGATE_TEST_DATABASE_URL`
//! (`.ci/with-postgres cargo bench --bench postgres` starts one and runs this). Without that URL the benchmark
//! prints a note and stops.
//!
//! Run: `CHANGEGATE_TEST_DATABASE_URL=postgres://… cargo bench --bench postgres`.

#[path = "support/measure.rs"]
mod measure;
#[path = "support/seed.rs"]
mod seed;

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use measure::{Ratio, interleaved, measure, median, ms, print_ratios};

const CHANGES: u64 = 100_000;
const DAYS: i64 = 730;
const NOW: &str = "2026-06-01T12:00:00Z";
/// PostgreSQL over a local socket against SQLite in the process: at most this much slower.
const TARGET_VS_SQLITE: f64 = 3.0;
/// Against `--version`: the gate benchmark's target for SQLite, doubled for the connection.
const TARGET_STARTUP: f64 = 40.0;

fn literal(v: rusqlite::types::Value) -> String {
    use rusqlite::types::Value::{Blob, Integer, Null, Real, Text};
    match v {
        Null => "NULL".into(),
        Integer(n) => n.to_string(),
        Real(f) => f.to_string(),
        Text(t) => format!("'{}'", t.replace('\'', "''")),
        Blob(_) => panic!("the ledger holds no blobs"),
    }
}

fn main() {
    let Some(admin) = std::env::var("CHANGEGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    else {
        println!(
            "note: CHANGEGATE_TEST_DATABASE_URL is not set: no PostgreSQL server, nothing measured (run it through .ci/with-postgres)"
        );
        return;
    };
    let runs = measure::runs(15);
    let bin = Path::new(env!("CARGO_BIN_EXE_changegate"));
    let now: DateTime<Utc> = NOW.parse().expect("NOW is RFC 3339");
    let (dir, ledger) = seed::workdir(bin);
    let started = Instant::now();
    let seeded = seed::seed(&ledger, CHANGES, DAYS, now - chrono::Duration::hours(1));

    // A fresh database with changegate's schema, then the SQLite rows copied in.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let name = format!("cg_bench_{:016x}", fastrand::u64(..));
    let mut url = url::Url::parse(&admin).expect("the test URL");
    url.set_path(&format!("/{name}"));
    let url = url.to_string();
    let db = rusqlite::Connection::open(&ledger).expect("open the ledger");
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('changes') ORDER BY cid")
        .expect("columns")
        .query_map([], |r| r.get(0))
        .expect("columns")
        .collect::<Result<_, _>>()
        .expect("columns");
    rt.block_on(async {
        let (admin_client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(conn);
        admin_client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the database");
    });
    let pg = |cmd: &mut std::process::Command| {
        cmd.env("CHANGEGATE_BACKEND", "postgres")
            .env("CHANGEGATE_DATABASE_URL", &url);
    };
    let mut migrate = seed::clean_command(bin, dir.path());
    pg(&mut migrate);
    let out = migrate.args(["ledger", "migrate"]).output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        // Row by row from SQLite in chunks, never the whole table in memory: the gate
        // processes below are forked from this one, and a fork starts with its parent's
        // resident pages, which would show in their peak RSS.
        let mut stmt = db
            .prepare(&format!(
                "SELECT {} FROM changes ORDER BY id",
                columns.join(", ")
            ))
            .expect("rows");
        let mut rows = stmt.query([]).expect("rows");
        let mut chunk = Vec::with_capacity(2_000);
        loop {
            let row = rows.next().expect("a row");
            if let Some(r) = row {
                let vals: Vec<String> = (0..columns.len())
                    .map(|i| r.get::<_, rusqlite::types::Value>(i).map(literal))
                    .collect::<Result<_, _>>()
                    .expect("values");
                chunk.push(format!("({})", vals.join(", ")));
            }
            if chunk.len() == 2_000 || (row.is_none() && !chunk.is_empty()) {
                client
                    .batch_execute(&format!(
                        "INSERT INTO changes ({}) VALUES {}",
                        columns.join(", "),
                        chunk.join(", ")
                    ))
                    .await
                    .expect("copy the rows");
                chunk.clear();
            }
            if row.is_none() {
                break;
            }
        }
        client
            .batch_execute(
                "SELECT setval(pg_get_serial_sequence('changes', 'id'), (SELECT max(id) FROM changes))",
            )
            .await
            .expect("the sequence");
        // What autovacuum does to a table this size soon after a bulk load: statistics
        // for the planner and the visibility map that lets the decision's queries read
        // their indexes alone.
        client
            .batch_execute("VACUUM ANALYZE changes")
            .await
            .expect("vacuum");
    });
    println!(
        "seeded {} changes of {} in {} (the gate benchmark's seed) into SQLite and copied them to PostgreSQL, in {:.1} s",
        seeded.changes,
        seed::SERVICE_ID,
        seed::ENVIRONMENT,
        started.elapsed().as_secs_f64()
    );

    let gate_sqlite = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.env("CHANGEGATE_NOW", NOW)
            .args(["gate", "--dry-run", "--format", "json"]);
        cmd
    };
    let gate_pg = || {
        let mut cmd = gate_sqlite();
        pg(&mut cmd);
        cmd
    };
    let version = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.arg("--version");
        cmd
    };
    measure(version());
    let (_, _, pg_out) = measure(gate_pg());
    let (_, _, sqlite_out) = measure(gate_sqlite());
    let decision = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gate printed no JSON ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    };
    let (pg_doc, sqlite_doc) = (decision(&pg_out), decision(&sqlite_out));
    assert_eq!(
        pg_doc["rules"], sqlite_doc["rules"],
        "the two stores decided differently"
    );
    println!(
        "\ndecision on both stores: {} ({})",
        pg_doc["decision"], pg_doc["rules"][0]["reason"]
    );

    let commands: [&dyn Fn() -> std::process::Command; 3] = [&gate_pg, &gate_sqlite, &version];
    let mut measured = interleaved(runs, &commands).into_iter();
    let mut next = || {
        let (mut times, peak) = measured.next().expect("one result per command");
        let (min, max) = (
            *times.iter().min().expect("runs"),
            *times.iter().max().expect("runs"),
        );
        (min, median(&mut times), max, peak)
    };
    let (pg_min, pg_med, pg_max, pg_peak) = next();
    let (sq_min, sq_med, sq_max, _) = next();
    let (v_min, v_med, _, _) = next();
    println!(
        "\nwhole processes, {runs} runs each in turns (information: absolute times vary by machine):"
    );
    println!(
        "  gate --dry-run on PostgreSQL, {CHANGES} changes  min {}  median {}  max {}  peak RSS {:.1} MB",
        ms(pg_min),
        ms(pg_med),
        ms(pg_max),
        pg_peak as f64 / 1024.0
    );
    println!(
        "  gate --dry-run on SQLite,     {CHANGES} changes  min {}  median {}  max {}",
        ms(sq_min),
        ms(sq_med),
        ms(sq_max)
    );
    println!(
        "  --version                                     min {}  median {}",
        ms(v_min),
        ms(v_med)
    );
    let met = print_ratios(&[
        Ratio {
            name: "gate on PostgreSQL / gate on SQLite (100,000 changes)".into(),
            value: pg_med,
            baseline: sq_med,
            target: TARGET_VS_SQLITE,
        },
        Ratio {
            name: "gate on PostgreSQL (100,000 changes) / --version".into(),
            value: pg_med,
            baseline: v_med,
            target: TARGET_STARTUP,
        },
    ]);
    if !met {
        println!("  (a target was missed)");
    }
}
