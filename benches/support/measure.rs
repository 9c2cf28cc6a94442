//! Runs a child process and measures its wall time and peak resident memory (`wait4`).
//! Shared by the benchmarks (`#[path = "support/measure.rs"]`).

#![allow(dead_code)] // each benchmark uses the part it needs

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Wall time (spawn to exit), peak RSS in KiB, and the output of one child process.
pub fn measure(mut cmd: Command) -> (Duration, u64, Output) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("the child starts");
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).ok();
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).ok();
        v
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    let stdout = out_thread.join().expect("stdout thread");
    let stderr = err_thread.join().expect("stderr thread");
    // Reaped by wait4 above; dropping a Child neither waits nor kills.
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(code << 8),
        stdout,
        stderr,
    };
    // ru_maxrss is in KiB on Linux.
    (elapsed, usage.ru_maxrss as u64, output)
}

/// How many runs to time: `CHANGEGATE_BENCH_RUNS`, else `default`; at least 3.
pub fn runs(default: usize) -> usize {
    std::env::var("CHANGEGATE_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
        .max(3)
}

/// The median of some durations.
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A verdict as a ratio of two figures of the same run: `value / baseline` against `target`
/// (at most). Absolute times differ between machines; their ratios do not, much.
pub struct Ratio {
    pub name: String,
    pub value: Duration,
    pub baseline: Duration,
    pub target: f64,
}

impl Ratio {
    pub fn ratio(&self) -> f64 {
        self.value.as_secs_f64() / self.baseline.as_secs_f64().max(1e-9)
    }

    pub fn met(&self) -> bool {
        self.ratio() <= self.target
    }
}

/// Prints the verdict table; returns whether every target was met.
pub fn print_ratios(ratios: &[Ratio]) -> bool {
    println!(
        "\n  {:<66} {:>10} {:>10} {:>8} {:>8}  verdict",
        "ratio (medians of the same run)", "value", "baseline", "ratio", "target"
    );
    let mut all = true;
    for r in ratios {
        all &= r.met();
        println!(
            "  {:<66} {:>10} {:>10} {:>7.2}× {:>7.2}×  {}",
            r.name,
            ms(r.value),
            ms(r.baseline),
            r.ratio(),
            r.target,
            if r.met() { "met" } else { "MISSED" }
        );
    }
    all
}

/// Times several commands in turns (one of each, then again), so that a machine busier in
/// one moment than another slows them alike; returns each one's times in order.
pub fn interleaved(runs: usize, commands: &[&dyn Fn() -> Command]) -> Vec<(Vec<Duration>, u64)> {
    let mut results: Vec<(Vec<Duration>, u64)> = commands
        .iter()
        .map(|_| (Vec::with_capacity(runs), 0))
        .collect();
    for _ in 0..runs {
        for (make, (times, peak)) in commands.iter().zip(results.iter_mut()) {
            let (t, rss, out) = measure(make());
            assert!(
                out.status.code().is_some_and(|c| c != 2),
                "a measured run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            times.push(t);
            *peak = (*peak).max(rss);
        }
    }
    results
}

/// A figure against its target (at most): the verdict is their ratio, `value / target`,
/// met at 1 or below. For counts and sizes that do not depend on the machine's speed.
pub struct Figure {
    pub name: String,
    /// The figure as printed (with its unit).
    pub shown: String,
    pub value: f64,
    /// The target as printed.
    pub target_shown: String,
    pub target: f64,
}

impl Figure {
    pub fn ratio(&self) -> f64 {
        self.value / self.target.max(1e-9)
    }

    pub fn met(&self) -> bool {
        self.value <= self.target
    }
}

/// Prints the figures' table (figure, target, ratio, verdict); returns whether every one
/// was met.
pub fn print_figures(figures: &[Figure]) -> bool {
    println!(
        "\n  {:<66} {:>12} {:>12} {:>8}  verdict",
        "figure", "value", "target", "ratio"
    );
    let mut all = true;
    for f in figures {
        all &= f.met();
        println!(
            "  {:<66} {:>12} {:>12} {:>7.2}×  {}",
            f.name,
            f.shown,
            format!("≤ {}", f.target_shown),
            f.ratio(),
            if f.met() { "met" } else { "MISSED" }
        );
    }
    all
}

/// The median time of 5 runs of one SQL query in-process (its statement cached), and the
/// rows it returns.
pub fn query_time(
    db: &rusqlite::Connection,
    sql: &str,
    args: &[rusqlite::types::Value],
) -> (Duration, usize) {
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
    (median(&mut times), rows)
}
