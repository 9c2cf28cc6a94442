//! Seeds an embedded ledger with a long, realistic history, for benchmarks.
//!
//! The schema is the one the real binary creates: a benchmark first runs `changegate open`
//! in a scratch git checkout ([`workdir`]), then [`seed`] bulk-inserts rows into that
//! ledger in one transaction. Shared by the benchmarks (`#[path = "support/seed.rs"]`).

#![allow(dead_code)] // each benchmark uses the part it needs

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use rusqlite::params;

/// The scratch checkout and clean environment the integration tests use too.
#[path = "../../tests/it/support/scratch.rs"]
mod scratch;

/// The service and environment the seeded history belongs to (the scratch checkout's
/// remote is `acme/payments-api`, so this is what changegate derives there).
pub const SERVICE: &str = "payments-api";
pub const SERVICE_ID: &str = "acme/payments-api";
pub const ENVIRONMENT: &str = "production";

/// A scratch git checkout with one commit and an `origin` remote, and its ledger created
/// by the real binary (`changegate open`). Returns the checkout and the ledger's path.
pub fn workdir(changegate: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    scratch::init_checkout(dir.path());
    let out = clean_command(changegate, dir.path())
        .arg("open")
        .output()
        .expect("changegate runs");
    assert!(
        out.status.success(),
        "changegate open: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ledger = dir.path().join(".changegate/ledger.db");
    assert!(ledger.is_file(), "changegate open created no ledger");
    (dir, ledger)
}

/// The binary with no CI variables of the machine running the benchmark.
pub fn clean_command(changegate: &Path, workdir: &Path) -> Command {
    let mut cmd = Command::new(changegate);
    cmd.current_dir(workdir);
    for key in scratch::machine_ci_vars() {
        cmd.env_remove(key);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// What [`seed`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub changes: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub pre_approved: u64,
    pub emergency: u64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

/// Pre-approved changes per sprint in the seeded history (the default allowance's max is 20).
pub const PRE_APPROVED_PER_SPRINT: u64 = 18;

/// The default sprint calendar: 14-day sprints from Monday 2024-01-01.
fn sprint_of(at: DateTime<Utc>) -> i64 {
    (at.timestamp() - 1_704_067_200).div_euclid(14 * 86_400)
}

/// A small deterministic generator (xorshift), so every run seeds the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Inserts `count` closed changes of [`SERVICE_ID`] in [`ENVIRONMENT`], evenly spread over
/// `days` days ending at `end`, in one transaction. About 93% succeed, 4% fail, 3% are
/// cancelled; 1% are emergencies; the first [`PRE_APPROVED_PER_SPRINT`] changes of each
/// sprint (default calendar) were pre-approved, the rest approved by hand, as the
/// allowance allows. Each row carries facts JSON of a realistic size, as the binary stores.
pub fn seed(ledger: &Path, count: u64, days: i64, end: DateTime<Utc>) -> Seeded {
    let mut db = rusqlite::Connection::open(ledger).expect("open the ledger");
    let tx = db.transaction().expect("begin");
    let first = end - Duration::days(days);
    let step = (days * 86_400) as f64 / count as f64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut s = Seeded {
        changes: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        pre_approved: 0,
        emergency: 0,
        first,
        last: first,
    };
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO changes (correlation_key, service, service_id, environment, commit_sha,
                    repository, state, decision, decision_json, pre_approved, emergency, emergency_reason,
                    mode, outcome, opened_at, decided_at, approved_at, approved_by, deployed_at,
                    closed_at, first_commit_at, lines_changed, facts_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'acme/payments-api', ?6, ?7, NULL, ?8, ?9, ?10,
                    'enforce', ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            )
            .expect("prepare");
        let (mut sprint, mut used) = (i64::MIN, 0);
        for i in 0..count {
            let opened = first + Duration::seconds((i as f64 * step) as i64);
            if sprint_of(opened) != sprint {
                (sprint, used) = (sprint_of(opened), 0);
            }
            let sha = format!("{:040x}", 0x5eed_0000_0000u64 + i);
            let key = format!("changegate:{SERVICE_ID}:{ENVIRONMENT}:{sha}");
            let emergency = rng.below(100) == 0;
            let pre_approved = !emergency && used < PRE_APPROVED_PER_SPRINT && rng.below(100) < 50;
            used += u64::from(pre_approved);
            let roll = rng.below(100);
            let (outcome, state) = match roll {
                0..=3 => ("failure", "closed"),
                4..=6 => ("cancelled", "cancelled"),
                _ => ("success", "closed"),
            };
            let deployed = outcome != "cancelled";
            let decided = opened + Duration::seconds(30);
            let approved = (!pre_approved && !emergency).then(|| decided + Duration::minutes(20));
            let deployed_at = deployed.then(|| approved.unwrap_or(decided) + Duration::seconds(60));
            let closed = approved.unwrap_or(decided) + Duration::minutes(10);
            let lines = 1 + rng.below(600) as i64;
            let facts = serde_json::json!({
                "platform": "github",
                "service": SERVICE,
                "service_id": SERVICE_ID,
                "environment": ENVIRONMENT,
                "repository": "acme/payments-api",
                "commit_sha": sha,
                "branch": "main",
                "pull_request": {
                    "number": 1000 + i, "title": format!("PAY-{}: change number {i}", 1000 + i),
                    "url": format!("https://github.com/acme/payments-api/pull/{}", 1000 + i),
                    "head_sha": sha, "head_ref": "feature", "base_ref": "main",
                    "labels": [], "reviewed": true
                },
                "range": null,
                "commits": [],
                "lines_changed": lines,
                "paths": ["src/payments.rs", "src/rates.rs"],
                "work_items": [format!("PAY-{}", 1000 + i)],
                "run_url": format!("https://github.com/acme/payments-api/actions/runs/{}", 50_000 + i),
                "repository_url": "https://github.com/acme/payments-api",
                "actor": "dev",
                "tests_passed": true
            });
            insert
                .execute(params![
                    key,
                    SERVICE,
                    SERVICE_ID,
                    ENVIRONMENT,
                    sha,
                    state,
                    if pre_approved || emergency {
                        "pre-approved"
                    } else {
                        "needs-approval"
                    },
                    pre_approved,
                    emergency,
                    emergency.then_some("outage"),
                    outcome,
                    opened.timestamp(),
                    decided.timestamp(),
                    approved.map(|t| t.timestamp()),
                    approved.map(|_| "ops-lead"),
                    deployed_at.map(|t| t.timestamp()),
                    closed.timestamp(),
                    (opened - Duration::hours(20)).timestamp(),
                    lines,
                    facts.to_string(),
                ])
                .expect("insert");
            s.changes += 1;
            match outcome {
                "success" => s.succeeded += 1,
                "failure" => s.failed += 1,
                _ => s.cancelled += 1,
            }
            s.pre_approved += u64::from(pre_approved);
            s.emergency += u64::from(emergency);
            s.last = opened;
        }
    }
    tx.commit().expect("commit");
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("checkpoint");
    s
}
