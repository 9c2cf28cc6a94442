//! The speed and size of one gate decision on a long history, as a whole process.
//!
//! Seeds a ledger with 100,000 changes over two years for one service and environment,
//! then times `changegate gate --dry-run` (process start to exit, git calls included),
//! measures its peak resident memory, times `--help`, and shows the plans of the
//! decision's SQL queries. Targets on a release build: decision < 50 ms, peak RSS < 30 MB,
//! `--help` < 10 ms.
//!
//! Run: `cargo bench --bench gate` (env `CHANGEGATE_BENCH_RUNS` sets the runs, default 15).

#[path = "support/measure.rs"]
mod measure;
#[path = "support/seed.rs"]
mod seed;

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use measure::{measure, median, ms};

const CHANGES: u64 = 100_000;
const DAYS: i64 = 730;
/// The decision's clock: just after the seeded history ends.
const NOW: &str = "2026-06-01T12:00:00Z";

const TARGET_DECISION: Duration = Duration::from_millis(50);
const TARGET_RSS_KB: u64 = 30 * 1024;
const TARGET_HELP: Duration = Duration::from_millis(10);

fn verdict(ok: bool) -> &'static str {
    if ok { "target met" } else { "TARGET MISSED" }
}

fn query_plans(ledger: &Path, exclude_id: i64, now: DateTime<Utc>) {
    let db =
        rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the ledger");
    println!("\nquery plans and times of the decision's SQL (in-process, median of 5):");
    let from = now.timestamp() - 26 * 14 * 86_400;
    for (name, sql) in changegate::itsm::local::DECISION_QUERIES {
        use rusqlite::types::Value::{Integer, Text};
        let (svc, env) = (
            Text(seed::SERVICE_ID.into()),
            Text(seed::ENVIRONMENT.into()),
        );
        let at = now.timestamp();
        let args: Vec<rusqlite::types::Value> = match name {
            "closed_total" => vec![svc, env, Integer(exclude_id), Integer(at)],
            "recent" => vec![svc, env, Integer(exclude_id), Integer(20), Integer(at)],
            "sprints" => vec![
                svc,
                env,
                Integer(from),
                Integer(14 * 86_400),
                Integer(exclude_id),
                Integer(at),
            ],
            _ => vec![svc, env],
        };
        let mut stmt = db
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let mut stmt = db.prepare_cached(sql).expect("prepare");
            rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |_| Ok(()))
                .expect("query")
                .count();
            times.push(started.elapsed());
        }
        println!(
            "  {name:<16} {:>9}  {rows:>3} row(s)  {}",
            ms(median(&mut times)),
            plan.join("; ")
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs = measure::runs(15);
    let bin = Path::new(env!("CARGO_BIN_EXE_changegate"));
    let now: DateTime<Utc> = NOW.parse().expect("NOW is RFC 3339");

    let (dir, ledger) = seed::workdir(bin);
    let started = Instant::now();
    let seeded = seed::seed(&ledger, CHANGES, DAYS, now - chrono::Duration::hours(1));
    println!(
        "seeded {} changes of {} in {} over {} days ({} to {}) in {:.1} s: {} succeeded, {} failed, {} cancelled, {} pre-approved, {} emergencies; ledger {:.1} MB",
        seeded.changes,
        seed::SERVICE_ID,
        seed::ENVIRONMENT,
        DAYS,
        seeded.first.format("%Y-%m-%d"),
        seeded.last.format("%Y-%m-%d"),
        started.elapsed().as_secs_f64(),
        seeded.succeeded,
        seeded.failed,
        seeded.cancelled,
        seeded.pre_approved,
        seeded.emergency,
        std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
    );
    let head_id: i64 = rusqlite::Connection::open(&ledger)
        .expect("open")
        .query_row("SELECT min(id) FROM changes", [], |r| r.get(0))
        .expect("the opened change");

    let gate = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.env("CHANGEGATE_NOW", NOW)
            .args(["gate", "--dry-run", "--format", "json"]);
        cmd
    };
    // One warm-up run (page cache, dynamic loader), then the measured runs.
    let (_, _, out) = measure(gate());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gate printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!(
        "\ndecision: {} (exit {:?})",
        doc["decision"],
        out.status.code()
    );
    for rule in doc["rules"].as_array().into_iter().flatten() {
        println!(
            "  {} {:<14} {}",
            if rule["passed"] == true { "✓" } else { "✗" },
            rule["code"].as_str().unwrap_or(""),
            rule["reason"].as_str().unwrap_or("")
        );
    }
    assert!(
        doc["rules"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("over last 20")),
        "the decision did not read the seeded history: {doc}"
    );

    let mut times = Vec::with_capacity(runs);
    let mut peak = 0;
    for _ in 0..runs {
        let (t, rss, out) = measure(gate());
        assert!(
            out.status.code().is_some_and(|c| c != 2),
            "gate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        times.push(t);
        peak = peak.max(rss);
    }
    let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
    let med = median(&mut times);

    let mut help = Vec::with_capacity(runs);
    let mut help_rss = 0;
    for _ in 0..runs {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.arg("--help");
        let (t, rss, out) = measure(cmd);
        assert_eq!(out.status.code(), Some(0));
        help.push(t);
        help_rss = help_rss.max(rss);
    }
    let help_min = *help.iter().min().unwrap();
    let help_med = median(&mut help);

    println!("\ngate --dry-run, whole process, {runs} runs on {CHANGES} changes:");
    println!(
        "  time      min {}  median {}  max {}   (target < {}: {})",
        ms(min),
        ms(med),
        ms(max),
        ms(TARGET_DECISION),
        verdict(med < TARGET_DECISION)
    );
    println!(
        "  peak RSS  {:.1} MB   (target < {} MB: {})",
        peak as f64 / 1024.0,
        TARGET_RSS_KB / 1024,
        verdict(peak < TARGET_RSS_KB)
    );
    println!("--help, {runs} runs:");
    println!(
        "  time      min {}  median {}   peak RSS {:.1} MB   (target < {}: {})",
        ms(help_min),
        ms(help_med),
        help_rss as f64 / 1024.0,
        ms(TARGET_HELP),
        verdict(help_med < TARGET_HELP)
    );
    query_plans(&ledger, head_id, now);
}
