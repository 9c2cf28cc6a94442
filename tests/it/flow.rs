//! A scripted change history driven through the real binary: gate, approve, record,
//! incident and verify at chosen instants (`CHANGEGATE_NOW`), into one embedded ledger.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support;

pub struct Flow {
    pub repo: tempfile::TempDir,
    pub ledger: PathBuf,
    commits: u32,
}

impl Flow {
    /// A git repository (`acme/payments-api`) with `config` as its `.changegate.toml`.
    pub fn new(config: &str) -> Flow {
        let repo = support::git_repo();
        std::fs::write(repo.path().join(".changegate.toml"), config).expect("write config");
        let ledger = repo.path().join("ledger.db");
        Flow {
            repo,
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
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(self.dir())
                .env("GIT_AUTHOR_NAME", "Dev")
                .env("GIT_AUTHOR_EMAIL", "dev@example.com")
                .env("GIT_COMMITTER_NAME", "Dev")
                .env("GIT_COMMITTER_EMAIL", "dev@example.com")
                .env("GIT_AUTHOR_DATE", at)
                .env("GIT_COMMITTER_DATE", at)
                .output()
                .expect("git runs");
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["add", "-A"]);
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
