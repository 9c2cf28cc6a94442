//! A scripted change history driven through the real binary: gate, approve, record,
//! incident and verify at chosen instants (`CHANGEGATE_NOW`), into one embedded ledger.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support;

pub struct Flow {
    pub repo: tempfile::TempDir,
    /// Outside the repository, so that commits never pick it up.
    _state: tempfile::TempDir,
    pub ledger: PathBuf,
    commits: u32,
}

impl Flow {
    /// A git repository (`acme/payments-api`) with `config` as its `.changegate.toml`.
    pub fn new(config: &str) -> Flow {
        let repo = support::git_repo();
        std::fs::write(repo.path().join(".changegate.toml"), config).expect("write config");
        let state = tempfile::tempdir().expect("tempdir");
        let ledger = state.path().join("ledger.db");
        Flow {
            repo,
            _state: state,
            ledger,
            commits: 0,
        }
    }

    pub fn dir(&self) -> &Path {
        self.repo.path()
    }

    /// Runs changegate at `now` with `args`; returns the output whatever the exit code.
    pub fn run(&self, now: &str, args: &[&str]) -> Output {
        support::changegate(self.dir())
            .env("CHANGEGATE_NOW", now)
            .env("CHANGEGATE_LEDGER", &self.ledger)
            .args(args)
            // A gate that waits for approval by mistake must fail the test, not hang it.
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .expect("changegate runs")
    }

    /// Runs and requires exit code `code`; returns stdout.
    pub fn ok(&self, code: i32, now: &str, args: &[&str]) -> String {
        let out = self.run(now, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "changegate {args:?} at {now}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs with `--format json` and exit code `code`; returns the document.
    pub fn json(&self, code: i32, now: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(code, now, &all)).expect("one JSON document")
    }

    /// Commits a change to the repository, authored and committed at `at`; returns its SHA.
    pub fn commit(&mut self, at: &str, lines: usize, path: &str) -> String {
        self.commits += 1;
        let file = self.dir().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let body: String = (0..lines)
            .map(|i| format!("change {} line {i}\n", self.commits))
            .collect();
        std::fs::write(&file, body).expect("write");
        let git = |args: &[&str]| support::git_at(self.dir(), at, args);
        git(&["add", "--", path]);
        git(&[
            "commit",
            "-q",
            "-m",
            &format!("PAY-{}: change {}", self.commits, self.commits),
        ]);
        git(&["rev-parse", "HEAD"])
    }

    /// Every row of the ledger's tables, in order: to show that a run wrote nothing.
    pub fn dump(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(&self.ledger).expect("open ledger");
        let mut rows = Vec::new();
        for table in ["changes", "events", "incidents"] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .expect("prepare");
            let n = stmt.column_count();
            let mut q = stmt.query([]).expect("query");
            while let Some(r) = q.next().expect("row") {
                let cells: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get_ref(i).expect("cell")))
                    .collect();
                rows.push(format!("{table}: {}", cells.join(" | ")));
            }
        }
        rows
    }

    /// One column of one change (`CG-n`), for assertions.
    pub fn column(&self, id: &str, column: &str) -> rusqlite::types::Value {
        let conn = rusqlite::Connection::open(&self.ledger).expect("open ledger");
        let row: i64 = id.trim_start_matches("CG-").parse().expect("ledger id");
        conn.query_row(
            &format!("SELECT {column} FROM changes WHERE id = ?1"),
            [row],
            |r| r.get(0),
        )
        .expect("column")
    }
}

/// What a human does with a change that needs approval, and after how many minutes.
#[derive(Debug, Clone, Copy)]
pub enum Human {
    Nobody,
    Approve(i64),
    Reject(i64),
}

fn at(day: &str, offset_min: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339(&format!("{day}T10:00:00Z")).expect("day");
    (base + chrono::Duration::minutes(offset_min))
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Flow {
    /// One change, start to end: commit the day before, gate at 10:00 on `day` (expecting
    /// `decision`), the human's decision, the deploy and its `outcome` 10 minutes later.
    /// Returns the change id.
    pub fn change(
        &mut self,
        day: &str,
        lines: usize,
        decision: &str,
        human: Human,
        outcome: &str,
        emergency: Option<&str>,
    ) -> String {
        let yesterday = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("day")
            - chrono::Duration::days(1);
        // A new file per change: its lines are exactly the lines changed.
        let path = format!("src/change-{}.txt", self.commits + 1);
        self.commit(&format!("{yesterday}T09:00:00Z"), lines, &path);
        let mut gate = vec!["gate", "--wait", "0"];
        if let Some(reason) = emergency {
            gate.extend(["--emergency", reason]);
        }
        let code = if decision == "pre-approved" { 0 } else { 1 };
        let d = self.json(code, &at(day, 0), &gate);
        assert_eq!(d["decision"], decision, "{day}: {d}");
        let id = d["change_id"].as_str().expect("change id").to_string();
        let mut deployed = 0;
        match human {
            Human::Nobody => {}
            Human::Approve(min) => {
                self.ok(
                    0,
                    &at(day, min),
                    &["approve", "--change", &id, "--by", "alice"],
                );
                self.json(0, &at(day, min + 1), &gate);
                deployed = min + 1;
            }
            Human::Reject(min) => {
                self.ok(
                    0,
                    &at(day, min),
                    &[
                        "reject",
                        "--change",
                        &id,
                        "--by",
                        "bob",
                        "--comment",
                        "not now",
                    ],
                );
                self.json(1, &at(day, min + 1), &gate);
                deployed = min + 1;
            }
        }
        self.ok(
            0,
            &at(day, deployed + 10),
            &["record", "--outcome", outcome],
        );
        id
    }
}

/// The config of the scripted history.
pub const HISTORY_CONFIG: &str = r#"
service = "payments-api"
[sprint]
start = "2026-03-02"
length_days = 14
[policy]
min_history = 2
window = 20
min_success_rate = 0.8
[policy.allowance]
initial = 2
step = 2
max = 20
backoff = 0.5
min_changes = 3
[risk]
max_lines_changed = 50
[approval]
timeout = "1s"
poll = "1s"
[verify]
window = "24h"
"#;

/// One scripted change: day, lines, expected decision, the human, outcome, emergency.
type Step<'a> = (&'a str, usize, &'a str, Human, &'a str, Option<&'a str>);

/// Fourteen changes over three sprints (from 2026-03-02, 14 days each), every decision
/// asserted as it is made. Returns the flow and the change ids in order.
pub fn scripted_history() -> (Flow, Vec<String>) {
    use Human::*;
    #[rustfmt::skip]
    let script: [Step<'_>; 14] = [
        // Sprint 1: no track record yet, then the first pre-approvals.
        ("2026-03-02", 3, "needs-approval", Approve(60), "success", None),  // #1: no history
        ("2026-03-03", 3, "needs-approval", Approve(120), "success", None), // #2: 1 closed of 2 needed
        ("2026-03-04", 3, "pre-approved", Nobody, "success", None),         // #3: 2 of 2 ok
        ("2026-03-05", 3, "pre-approved", Nobody, "failure", None),         // #4: allowance 1 of 2 used
        ("2026-03-06", 3, "needs-approval", Approve(30), "success", None),  // #5: 3/4 = 75% < 80%
        // Sprint 2: sprint 1 closed 5 at 80%: the allowance grows from 2 to 4.
        ("2026-03-16", 3, "pre-approved", Nobody, "success", None),         // #6: 4/5 = 80%
        ("2026-03-17", 3, "pre-approved", Nobody, "success", None),         // #7: then INC-42, verify
        ("2026-03-19", 3, "needs-approval", Approve(120), "success", None), // #8: 5/7 = 71%
        ("2026-03-20", 3, "pre-approved", Nobody, "success", Some("payment outage hotfix")), // #9
        ("2026-03-21", 60, "needs-approval", Approve(45), "success", None), // #10: 60 lines > 50
        // Sprint 3: sprint 2 closed 5 at 80%: the allowance grows to 6.
        ("2026-03-30", 3, "pre-approved", Nobody, "success", None),         // #11: 8/10 = 80%
        ("2026-03-31", 3, "pre-approved", Nobody, "failure", None),         // #12: 9/11
        ("2026-04-01", 3, "needs-approval", Reject(20), "cancelled", None), // #13: 9/12 = 75%
        ("2026-04-02", 3, "needs-approval", Approve(60), "success", None),  // #14: still 75%
    ];
    let mut f = Flow::new(HISTORY_CONFIG);
    let mut ids: Vec<String> = Vec::with_capacity(script.len());
    for (n, (day, lines, decision, human, outcome, emergency)) in script.into_iter().enumerate() {
        ids.push(f.change(day, lines, decision, human, outcome, emergency));
        if n + 1 == 7 {
            // #7 caused an incident; verify turns it into a failure after deploy.
            f.ok(
                0,
                &at("2026-03-17", 300),
                &["incident", "--change", &ids[6], "--id", "INC-42"],
            );
            f.ok(0, &at("2026-03-18", 120), &["verify"]);
        }
    }
    f.ok(0, &at("2026-04-03", 120), &["verify"]);
    (f, ids)
}
