//! The speed and size of `report` on a long history, as a whole process.
//!
//! Seeds a ledger with 100,000 changes over two years for one service and environment
//! (the schema is created by the real binary, then rows are bulk-inserted), then runs the
//! release binary: the default report (6 sprints, text), the HTML page to a file, the
//! whole two years as JSON (52 sprints), and markdown for `--all` services. Each is timed
//! from spawn to exit, with its peak resident memory from `wait4`.
//! Targets on a release build: under 1 s and under 100 MB each.
//!
//! Run: `cargo bench --bench report` (env `CHANGEGATE_BENCH_RUNS` sets the runs, default 7).

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
/// The report's clock: just after the seeded history ends.
const NOW: &str = "2026-06-01T12:00:00Z";

const TARGET_TIME: Duration = Duration::from_secs(1);
const TARGET_RSS_KB: u64 = 100 * 1024;

fn main() {
    let runs = measure::runs(7);
    let bin = Path::new(env!("CARGO_BIN_EXE_changegate"));
    let now: DateTime<Utc> = NOW.parse().expect("NOW is RFC 3339");

    let (dir, ledger) = seed::workdir(bin);
    let started = Instant::now();
    let seeded = seed::seed(&ledger, CHANGES, DAYS, now - chrono::Duration::hours(1));
    println!(
        "seeded {} changes of {} in {} over {} days ({} to {}) in {:.1} s; ledger {:.1} MB",
        seeded.changes,
        seed::SERVICE_ID,
        seed::ENVIRONMENT,
        DAYS,
        seeded.first.format("%Y-%m-%d"),
        seeded.last.format("%Y-%m-%d"),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0) as f64 / 1e6,
    );

    let html = dir.path().join("kpis.html");
    let cases: [(&str, Vec<String>); 4] = [
        ("report (6 sprints, text)", vec!["report".into()]),
        (
            "report --format html --output",
            vec![
                "--format".into(),
                "html".into(),
                "report".into(),
                "--output".into(),
                html.display().to_string(),
            ],
        ),
        (
            "report --sprints 52 --format json",
            vec![
                "--format".into(),
                "json".into(),
                "report".into(),
                "--sprints".into(),
                "52".into(),
            ],
        ),
        (
            "report --all --format markdown",
            vec![
                "--format".into(),
                "markdown".into(),
                "report".into(),
                "--all".into(),
            ],
        ),
    ];
    let mut all_met = true;
    println!(
        "\n{runs} runs each (after one warm-up run), release binary {}",
        bin.display()
    );
    for (name, args) in &cases {
        let run = || {
            let mut cmd = seed::clean_command(bin, dir.path());
            cmd.env("CHANGEGATE_NOW", NOW).args(args);
            measure(cmd)
        };
        let (_, _, out) = run();
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name.contains("json") {
            let doc: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("one JSON document");
            let changes: u64 = doc["services"][0]["sprints"]
                .as_array()
                .expect("sprints")
                .iter()
                .map(|s| s["changes"].as_u64().unwrap_or(0))
                .sum();
            assert!(
                changes > 90_000,
                "the report did not read the seeded history: {changes} changes"
            );
            println!("  (the 52-sprint report counts {changes} changes)");
        }
        let mut times = Vec::with_capacity(runs);
        let mut peak = 0;
        for _ in 0..runs {
            let (t, rss, out) = run();
            assert!(out.status.success());
            times.push(t);
            peak = peak.max(rss);
        }
        let slowest = *times.iter().max().expect("runs");
        let med = median(&mut times);
        let ok = slowest < TARGET_TIME && peak < TARGET_RSS_KB;
        all_met &= ok;
        println!(
            "  {name:<36} median {:>9}  slowest {:>9}  peak RSS {:>6.1} MB  {}",
            ms(med),
            ms(slowest),
            peak as f64 / 1024.0,
            if ok { "target met" } else { "TARGET MISSED" }
        );
    }
    println!(
        "\ntargets: under {} and under {} MB per run",
        ms(TARGET_TIME),
        TARGET_RSS_KB / 1024
    );
    assert!(all_met, "a report missed its target");
}
