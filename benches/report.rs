//! The speed and size of `report` on a long history, as a whole process.
//!
//! Seeds a ledger with 100,000 changes over two years for one service and environment
//! (the schema is created by the real binary, then rows are bulk-inserted), then runs the
//! release binary: the default report (6 sprints, text), the HTML page to a file, the
//! whole two years as JSON (52 sprints), and markdown for `--all` services. Each is timed
//! from spawn to exit, with its peak resident memory from `wait4`.
//! Each case also runs on a ledger of 1,000 changes over the same two years, in turns with
//! the large one and with `changegate --version`. Absolute times differ between machines,
//! so the verdicts are ratios of the same run: each report on 100,000 changes against the
//! same report on 1,000 (the report reads only the sprints it shows, so this ratio follows
//! the number of changes in them), and against `--version`. Absolute times are printed as
//! information; peak memory, which does not depend on the machine's speed, keeps an
//! absolute target (100 MB).
//!
//! Run: `cargo bench --bench report` (env `CHANGEGATE_BENCH_RUNS` sets the runs, default 7).

#[path = "support/measure.rs"]
mod measure;
#[path = "support/seed.rs"]
mod seed;

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use measure::{Ratio, interleaved, measure, median, ms, print_ratios};

const CHANGES: u64 = 100_000;
const SMALL: u64 = 1_000;
const DAYS: i64 = 730;
/// The report's clock: just after the seeded history ends.
const NOW: &str = "2026-06-01T12:00:00Z";

const TARGET_RSS_KB: u64 = 100 * 1024;

/// A report on 100,000 changes against the same report on 1,000: at most this much slower.
/// Measured on the 2-core build machine: 4.9× (6 sprints) to 11.2× (`--all`, and the 52
/// sprints that hold nearly all 100,000 changes); the target leaves a third of headroom.
const TARGET_GROWTH: f64 = 15.0;
/// A report on 100,000 changes against `--version`: measured 20× to 63× there. The former
/// absolute target (under 1 s) would be some 430×, too loose to notice anything.
const TARGET_STARTUP: f64 = 100.0;

fn main() {
    let runs = measure::runs(7);
    let bin = Path::new(env!("CARGO_BIN_EXE_changegate"));
    let now: DateTime<Utc> = NOW.parse().expect("NOW is RFC 3339");

    let (dir, ledger) = seed::workdir(bin);
    let (small_dir, small_ledger) = seed::workdir(bin);
    let started = Instant::now();
    let seeded = seed::seed(&ledger, CHANGES, DAYS, now - chrono::Duration::hours(1));
    seed::seed(&small_ledger, SMALL, DAYS, now - chrono::Duration::hours(1));
    println!(
        "seeded {} changes of {} in {} over {} days ({} to {}), and {SMALL} over the same days, in {:.1} s; ledger {:.1} MB",
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
    let version = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.arg("--version");
        cmd
    };
    measure(version());
    let mut ratios = Vec::new();
    let mut rss_met = true;
    println!(
        "\n{runs} runs each, in turns with the same report on {SMALL} changes and --version (after one warm-up run), release binary {}",
        bin.display()
    );
    for (name, args) in &cases {
        let run_in = |workdir: &Path| {
            let mut cmd = seed::clean_command(bin, workdir);
            cmd.env("CHANGEGATE_NOW", NOW).args(args);
            cmd
        };
        let large = || run_in(dir.path());
        let small = || run_in(small_dir.path());
        let out = measure(large()).2;
        assert!(
            out.status.success(),
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        measure(small());
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
        let commands: [&dyn Fn() -> std::process::Command; 3] = [&large, &small, &version];
        let mut measured = interleaved(runs, &commands).into_iter();
        let (mut times, peak) = measured.next().expect("large");
        let (mut small_times, _) = measured.next().expect("small");
        let (mut version_times, _) = measured.next().expect("version");
        let slowest = *times.iter().max().expect("runs");
        let med = median(&mut times);
        let small_med = median(&mut small_times);
        let version_med = median(&mut version_times);
        rss_met &= peak < TARGET_RSS_KB;
        println!(
            "  {name:<36} median {:>9}  slowest {:>9}  on {SMALL} changes {:>9}  --version {:>8}  peak RSS {:>6.1} MB{}",
            ms(med),
            ms(slowest),
            ms(small_med),
            ms(version_med),
            peak as f64 / 1024.0,
            if peak < TARGET_RSS_KB {
                ""
            } else {
                "  (over 100 MB: MISSED)"
            }
        );
        ratios.push(Ratio {
            name: format!("{name}: 100,000 / 1,000 changes"),
            value: med,
            baseline: small_med,
            target: TARGET_GROWTH,
        });
        ratios.push(Ratio {
            name: format!("{name}: 100,000 changes / --version"),
            value: med,
            baseline: version_med,
            target: TARGET_STARTUP,
        });
    }
    let met = print_ratios(&ratios);
    println!(
        "  peak RSS target: under {} MB per run",
        TARGET_RSS_KB / 1024
    );
    assert!(met && rss_met, "a report missed its target");
}
