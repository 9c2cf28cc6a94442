//! The speed and size of one gate decision on a long history, as a whole process.
//!
//! Seeds a ledger with 1,000,000 changes over two years for one service and environment
//! (`CHANGEGATE_BENCH_CHANGES` sets another number), and another with 1,000 changes over the
//! same two years, then times `changegate gate
//! --dry-run` on each (process start to exit, git calls included), `changegate --version`
//! and `--help`, in turns, measures peak resident memory, and shows the plans of the
//! decision's SQL queries.
//!
//! Absolute times differ from one machine to the next (a busy 2-core runner takes twice as
//! long as a quiet one), so the verdicts are ratios of figures measured in the same run:
//! the decision on 1,000,000 changes against the same on 1,000 (does it grow with the
//! history?) and against `--version` (what does a decision cost beyond starting the
//! process?). Absolute times are printed as information. Peak memory does not depend on
//! the machine's speed and keeps an absolute target.
//!
//! Run: `cargo bench --bench gate` (env `CHANGEGATE_BENCH_RUNS` sets the runs, default 15).

#[path = "support/measure.rs"]
mod measure;
#[path = "support/seed.rs"]
mod seed;

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};

use measure::{
    Figure, Ratio, interleaved, measure, median, ms, print_figures, print_ratios, query_time,
};

/// The large ledger, unless `CHANGEGATE_BENCH_CHANGES` says otherwise.
const CHANGES: u64 = 1_000_000;
const SMALL: u64 = 1_000;
const DAYS: i64 = 730;
/// The decision's clock: just after the seeded history ends.
const NOW: &str = "2026-06-01T12:00:00Z";

/// The decision on the large ledger against the same on 1,000 changes: at most this much
/// slower (the performance issue's target 1: 1.3× at 1,000,000 changes). The decision reads
/// whole days from the ledger's tallies, so only the clock's own day grows with the history.
const TARGET_GROWTH: f64 = 1.3;
/// The decision on the large ledger against `--version`: at most this many times as long.
/// 50 ms against the 2.3 ms of `--version` there is 21×; the performance issue's target for
/// later is 4×.
const TARGET_STARTUP: f64 = 20.0;
const TARGET_RSS_KB: u64 = 30 * 1024;
/// Start-up: a decision on the 1,000-change ledger against `--version`, at most this many
/// times as long (the performance issue's target 3).
const TARGET_DECISION_STARTUP: f64 = 4.0;
/// Child processes of one local gate (target 2: at most one, the pull request pipeline's
/// `git fetch`, which a local gate never needs).
const TARGET_CHILDREN: f64 = 1.0;
/// Peak RSS of any gate (target 6).
const TARGET_GATE_RSS_KB: u64 = 12 * 1024;
/// The stripped release binary (target 7), in bytes.
const TARGET_BINARY_BYTES: u64 = 8_000_000;

/// The size of the binary `cargo build --release --locked` makes (target 7). Not the one
/// this bench ran: a bench builds the binary with the dev-dependencies' features unified
/// into its dependencies (tokio's `full`, for one), which makes it larger. The release
/// build writes to the same path, so it runs after every measurement; it relinks the
/// binary when an earlier `cargo build --release` left its dependencies built, and builds
/// them first otherwise (minutes).
fn release_binary_size(bin: &std::path::Path) -> u64 {
    let started = Instant::now();
    let built = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--bin",
            "changegate",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(built, "cargo build --release --locked failed");
    println!(
        "\n(the release binary, as `cargo build --release --locked` makes it: built in {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0)
}

/// The `git` calls one `gate --dry-run` makes in `workdir`, counted by a `git` on `PATH`
/// that logs its arguments and runs the real one; and whether the same gate with no git on
/// `PATH` at all prints the same decision.
fn git_children(make: &dyn Fn(Option<&std::ffi::OsStr>) -> std::process::Command) -> (usize, bool) {
    let shim = tempfile::tempdir().expect("tempdir");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("git"))
        .find(|p| p.is_file())
        .expect("git on PATH");
    let log = shim.path().join("calls.log");
    let script = shim.path().join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .expect("write the shim");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut with_shim = std::ffi::OsString::from(shim.path());
    with_shim.push(":");
    with_shim.push(&path);
    let counted = make(Some(&with_shim)).output().expect("gate runs");
    let calls = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let empty = tempfile::tempdir().expect("tempdir");
    let without = make(Some(empty.path().as_os_str()))
        .output()
        .expect("gate runs");
    let decision = |out: &std::process::Output| {
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            doc["decision"].clone(),
            doc["rules"].clone(),
            out.status.code(),
        )
    };
    (calls, decision(&counted) == decision(&without))
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
                Integer(at - at.rem_euclid(86_400)),
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
        let (time, rows) = query_time(&db, sql, &args);
        println!(
            "  {name:<16} {:>9}  {rows:>3} row(s)  {}",
            ms(time),
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
    let (small_dir, small_ledger) = seed::workdir(bin);
    let started = Instant::now();
    let changes = std::env::var("CHANGEGATE_BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHANGES);
    let large = thousands(changes);
    let seeded = seed::seed(&ledger, changes, DAYS, now - chrono::Duration::hours(1));
    seed::seed(&small_ledger, SMALL, DAYS, now - chrono::Duration::hours(1));
    println!(
        "seeded {} changes of {} in {} over {} days ({} to {}), and {SMALL} over the same days, in {:.1} s: {} succeeded, {} failed, {} cancelled, {} pre-approved, {} emergencies; ledger {:.1} MB",
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

    let gate_in = |workdir: &Path| {
        let mut cmd = seed::clean_command(bin, workdir);
        cmd.env("CHANGEGATE_NOW", NOW)
            .args(["gate", "--dry-run", "--format", "json"]);
        cmd
    };
    let gate = || gate_in(dir.path());
    let gate_small = || gate_in(small_dir.path());
    let version = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.arg("--version");
        cmd
    };
    let help = || {
        let mut cmd = seed::clean_command(bin, dir.path());
        cmd.arg("--help");
        cmd
    };
    // One warm-up run of each (page cache, dynamic loader), then the measured runs.
    let warm_ups: [&dyn Fn() -> std::process::Command; 3] = [&gate_small, &version, &help];
    for make in warm_ups {
        measure(make());
    }
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

    let commands: [&dyn Fn() -> std::process::Command; 4] = [&gate, &gate_small, &version, &help];
    let mut measured = interleaved(runs, &commands).into_iter();
    let mut next = || {
        let (mut times, peak) = measured.next().expect("one result per command");
        let (min, max) = (
            *times.iter().min().expect("runs"),
            *times.iter().max().expect("runs"),
        );
        (min, median(&mut times), max, peak)
    };
    let (min, med, max, peak) = next();
    let (small_min, small_med, small_max, small_peak) = next();
    let (version_min, version_med, _, _) = next();
    let (help_min, help_med, _, help_rss) = next();

    println!(
        "\nwhole processes, {runs} runs each in turns (information: absolute times vary by machine):"
    );
    println!(
        "  gate --dry-run, {large} changes  min {}  median {}  max {}  peak RSS {:.1} MB",
        ms(min),
        ms(med),
        ms(max),
        peak as f64 / 1024.0
    );
    println!(
        "  gate --dry-run, {SMALL} changes    min {}  median {}  max {}  peak RSS {:.1} MB",
        ms(small_min),
        ms(small_med),
        ms(small_max),
        small_peak as f64 / 1024.0
    );
    println!(
        "  --version                          min {}  median {}",
        ms(version_min),
        ms(version_med)
    );
    println!(
        "  --help                             min {}  median {}  peak RSS {:.1} MB",
        ms(help_min),
        ms(help_med),
        help_rss as f64 / 1024.0
    );
    let met = print_ratios(&[
        Ratio {
            name: format!("gate on {large} changes / gate on 1,000 changes"),
            value: med,
            baseline: small_med,
            target: TARGET_GROWTH,
        },
        Ratio {
            name: format!("gate on {large} changes / --version"),
            value: med,
            baseline: version_med,
            target: TARGET_STARTUP,
        },
    ]);
    println!(
        "  peak RSS of gate on {large} changes: {:.1} MB (target < {} MB: {})",
        peak as f64 / 1024.0,
        TARGET_RSS_KB / 1024,
        if peak < TARGET_RSS_KB {
            "met"
        } else {
            "MISSED"
        }
    );
    if !met || peak >= TARGET_RSS_KB {
        println!("  (a target was missed)");
    }

    let small_decision = {
        let (_, _, out) = measure(gate_small());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["decision"]
            .clone()
    };
    let (children, same_without_git) = git_children(&|path| {
        let mut cmd = gate_small();
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        cmd
    });
    let size = release_binary_size(bin);
    println!(
        "\nthe performance issue's targets 2, 3, 6 and 7 (the 1,000-change decision is {small_decision}; \
         the same decision with no git on PATH: {}):",
        if same_without_git { "yes" } else { "NO" }
    );
    let startup = Ratio {
        name: "start-up: gate on 1,000 changes / --version".into(),
        value: small_med,
        baseline: version_med,
        target: TARGET_DECISION_STARTUP,
    };
    let rss = peak.max(small_peak);
    let figures_met = print_figures(&[
        Figure {
            name: "child processes of one local gate --dry-run".into(),
            shown: children.to_string(),
            value: children as f64,
            target_shown: format!("{TARGET_CHILDREN}"),
            target: TARGET_CHILDREN,
        },
        Figure {
            name: format!(
                "start-up: gate on 1,000 changes / --version ({} / {})",
                ms(small_med),
                ms(version_med)
            ),
            shown: format!("{:.2}×", startup.ratio()),
            value: startup.ratio(),
            target_shown: format!("{TARGET_DECISION_STARTUP}×"),
            target: TARGET_DECISION_STARTUP,
        },
        Figure {
            name: format!("peak RSS of gate (1,000 and {large} changes)"),
            shown: format!("{:.1} MB", rss as f64 / 1024.0),
            value: rss as f64,
            target_shown: format!("{} MB", TARGET_GATE_RSS_KB / 1024),
            target: TARGET_GATE_RSS_KB as f64,
        },
        Figure {
            name: "stripped release binary".into(),
            shown: format!("{size} B"),
            value: size as f64,
            target_shown: format!("{TARGET_BINARY_BYTES} B"),
            target: TARGET_BINARY_BYTES as f64,
        },
    ]);
    if !figures_met || !same_without_git {
        println!("  (a target was missed)");
    }
    query_plans(&ledger, head_id, now);
}

/// 1000000 as "1,000,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
