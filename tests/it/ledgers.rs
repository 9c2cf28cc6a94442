//! The ledger on both stores, through the real binary: SQLite (a file) and PostgreSQL (a
//! fresh database on the server `.ci/test` starts). Under CI a missing server fails.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{git_repo, json_doc, machine_ci_vars};

/// The binary as a std process (to spawn many), with a clean environment.
pub(crate) fn changegate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_changegate"));
    cmd.current_dir(dir);
    for key in machine_ci_vars() {
        cmd.env_remove(key);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

pub(crate) const NOW: &str = "2026-03-04T10:00:00Z";

/// Where a test's ledger lives.
pub(crate) enum Store {
    Sqlite,
    Postgres(String),
}

impl Store {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub(crate) fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("CHANGEGATE_NOW", NOW);
        match self {
            Store::Sqlite => cmd.env("CHANGEGATE_BACKEND", "local"),
            Store::Postgres(url) => cmd
                .env("CHANGEGATE_BACKEND", "postgres")
                .env("CHANGEGATE_DATABASE_URL", url),
        }
    }

    /// Rows in `table`, read straight from the store.
    pub(crate) fn count(&self, dir: &Path, table: &str) -> i64 {
        match self {
            Store::Sqlite => {
                let path = dir.join(".changegate/ledger.db");
                if !path.exists() {
                    return 0;
                }
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap()
            }
            Store::Postgres(url) => runtime().block_on(async {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let exists: bool = client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                    .await
                    .unwrap()
                    .get(0);
                if !exists {
                    return 0;
                }
                client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .unwrap()
                    .get(0)
            }),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// SQLite, and PostgreSQL in a fresh database when the test server is there.
pub(crate) fn stores() -> Vec<Store> {
    let mut out = vec![Store::Sqlite];
    match std::env::var("CHANGEGATE_TEST_DATABASE_URL") {
        Ok(admin) if !admin.trim().is_empty() => {
            let name = format!("cg_it_{:016x}", fastrand::u64(..));
            runtime().block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .unwrap();
            });
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            out.push(Store::Postgres(url.to_string()));
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CHANGEGATE_TEST_DATABASE_URL is not set under CI: run the tests through .ci/test"
            );
            eprintln!(
                "note: CHANGEGATE_TEST_DATABASE_URL is not set; the PostgreSQL ledger is not tested (run .ci/test)"
            );
        }
    }
    out
}

pub(crate) fn run(store: &Store, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = changegate(dir);
    store.apply(&mut cmd).args(args);
    cmd.output().unwrap()
}

pub(crate) fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Gate, approve, gate again, record, incident, verify, report, explain: the same on both
/// stores; `ledger migrate` says the schema is current.
#[test]
fn a_change_lives_the_same_on_both_stores() {
    for store in stores() {
        let repo = git_repo();
        let dir = repo.path();
        let name = store.name();
        let out = run(&store, dir, &["gate", "--wait", "0", "--format", "json"]);
        assert_eq!(code(&out), 1, "{name}: {}", text(&out));
        let doc = json_doc(&out.stdout);
        assert_eq!(doc["change_id"], "CG-1", "{name}: {doc}");
        assert_eq!(doc["decision"], "needs-approval", "{name}: {doc}");

        let out = run(
            &store,
            dir,
            &[
                "approve", "--change", "CG-1", "--by", "alice", "--format", "json",
            ],
        );
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));

        let out = run(&store, dir, &["gate", "--wait", "0", "--format", "json"]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert_eq!(json_doc(&out.stdout)["change_id"], "CG-1");

        let out = run(&store, dir, &["record", "--outcome", "success"]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        let out = run(
            &store,
            dir,
            &["incident", "--change", "CG-1", "--id", "INC-7"],
        );
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));

        let status = run(&store, dir, &["status", "--format", "json"]);
        assert_eq!(code(&status), 0, "{name}: {}", text(&status));
        let doc = json_doc(&status.stdout);
        assert_eq!(doc["outcome"], "success", "{name}: {doc}");
        assert_eq!(doc["approved_by"], "alice", "{name}: {doc}");
        assert_eq!(doc["incidents"][0], "INC-7", "{name}: {doc}");

        for args in [
            &["report", "--format", "json"][..],
            &["policy", "explain", "--format", "json"][..],
        ] {
            let out = run(&store, dir, args);
            assert_eq!(code(&out), 0, "{name} {args:?}: {}", text(&out));
        }

        let out = run(&store, dir, &["ledger", "migrate"]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("up to date"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(store.count(dir, "changes"), 1, "{name}");
    }
}

/// A gate killed inside its write transaction (the test-only pause point) leaves nothing
/// half-written: no change, no event; the next gate makes the change whole.
#[test]
fn a_gate_killed_inside_its_transaction_leaves_nothing_behind() {
    for store in stores() {
        let repo = git_repo();
        let dir = repo.path();
        let name = store.name();
        // The schema first, so the kill lands in the change's transaction.
        assert_eq!(code(&run(&store, dir, &["ledger", "migrate"])), 0, "{name}");
        let mut cmd = changegate(dir);
        store
            .apply(&mut cmd)
            .env("CHANGEGATE_TEST_PAUSE_IN_TX", "60")
            .args(["gate", "--wait", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        // Wait for the pause point's warning: the process is inside the transaction.
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !seen.contains("test-only pause point") && std::time::Instant::now() < deadline {
            let mut buf = [0u8; 512];
            let n = std::io::Read::read(&mut stderr, &mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("test-only pause point"), "{name}: {seen}");
        child.kill().unwrap();
        child.wait().unwrap();
        // PostgreSQL rolls back when the connection drops; give the server a moment.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            store.count(dir, "changes"),
            0,
            "{name}: a change half-written"
        );
        assert_eq!(
            store.count(dir, "events"),
            0,
            "{name}: an event half-written"
        );

        let out = run(&store, dir, &["gate", "--wait", "0", "--format", "json"]);
        assert_eq!(code(&out), 1, "{name}: {}", text(&out));
        let id = json_doc(&out.stdout)["change_id"].clone();
        // SQLite's row ids are transactional; a PostgreSQL sequence is not, so the killed
        // insert may have taken CG-1's number (a gap, never a half-written change).
        match store {
            Store::Sqlite => assert_eq!(id, "CG-1"),
            Store::Postgres(_) => assert!(id == "CG-1" || id == "CG-2", "{id}"),
        }
        assert_eq!(store.count(dir, "changes"), 1, "{name}");
        assert_eq!(store.count(dir, "events"), 2, "{name}: opened and decided");
    }
}

/// 200 gates at once over 20 services (10 commits each), an allowance of 3 per service:
/// one record per change, exactly 3 pre-approved per service (exit 0), the others wait
/// for approval (exit 1), none fails.
#[test]
fn two_hundred_gates_at_once_never_overrun_an_allowance() {
    for store in stores() {
        let repo = git_repo();
        let dir = repo.path();
        let name = store.name();
        std::fs::write(
            dir.join(".changegate.toml"),
            "[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 3\n",
        )
        .unwrap();
        let shas: Vec<String> = (0..10).map(|i| format!("{:040x}", 0xc0ffee + i)).collect();
        let mut children = Vec::new();
        for svc in 0..20 {
            for sha in &shas {
                let mut cmd = changegate(dir);
                store.apply(&mut cmd);
                cmd.env("GITLAB_CI", "true")
                    .env("CI_PROJECT_PATH", format!("acme/svc{svc}"))
                    .env("CI_COMMIT_SHA", sha)
                    .env("CI_COMMIT_BRANCH", "main")
                    .env("CI_DEFAULT_BRANCH", "main")
                    .args([
                        "gate",
                        "--wait",
                        "0",
                        "--format",
                        "json",
                        "--environment",
                        "production",
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                children.push((svc, cmd.spawn().unwrap()));
            }
        }
        let mut pre_approved = [0u32; 20];
        let mut ids = std::collections::BTreeSet::new();
        for (svc, child) in children {
            let out = child.wait_with_output().unwrap();
            let c = code(&out);
            assert!(c == 0 || c == 1, "{name}: exit {c}: {}", text(&out));
            let doc = json_doc(&out.stdout);
            if c == 0 {
                assert_eq!(doc["decision"], "pre-approved", "{name}: {doc}");
                pre_approved[svc] += 1;
            } else {
                assert_eq!(doc["decision"], "needs-approval", "{name}: {doc}");
            }
            assert!(ids.insert(doc["change_id"].to_string()), "{name}: {doc}");
        }
        assert_eq!(pre_approved, [3; 20], "{name}");
        assert_eq!(store.count(dir, "changes"), 200, "{name}");
    }
}

/// A PostgreSQL ledger that cannot be reached fails closed (exit 2) after its retries,
/// naming the host and never the password; a URL missing is named too.
#[test]
fn an_unreachable_database_fails_closed_without_showing_the_password() {
    let repo = git_repo();
    let dir = repo.path();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:s3cr3t-pw@127.0.0.1:{port}/ledger?sslmode=disable");
    let out = run(&Store::Postgres(url), dir, &["gate", "--wait", "0"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains("s3cr3t-pw"), "{all}");
    assert!(all.contains(&format!("127.0.0.1:{port}/ledger")), "{all}");
    assert!(all.contains("attempts"), "{all}");

    let mut cmd = changegate(dir);
    cmd.env("CHANGEGATE_BACKEND", "postgres")
        .args(["gate", "--wait", "0"]);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("CHANGEGATE_DATABASE_URL"),
        "{}",
        text(&out)
    );
}

/// sslmode with libpq's meanings, against the test server's TLS (a throwaway CA, a
/// certificate for `localhost`): `require` encrypts without verifying, `verify-full` checks
/// the chain and the host name, and refuses a name the certificate does not carry.
#[test]
fn sslmode_encrypts_and_verifies_as_libpq_does() {
    let Some(Store::Postgres(url)) = stores().pop() else {
        return;
    };
    let ca = std::env::var("CHANGEGATE_TEST_CA").expect(".ci/with-postgres sets the test CA");
    let repo = git_repo();
    let dir = repo.path();
    let with = |host: &str, query: &str| {
        let mut u = url::Url::parse(&url).unwrap();
        u.set_host(Some(host)).unwrap();
        u.set_query(Some(query));
        Store::Postgres(u.to_string())
    };
    let verify = format!("sslmode=verify-full&sslrootcert={ca}");
    for (store, want) in [
        (with("127.0.0.1", "sslmode=require"), 0),
        (with("localhost", &verify), 0),
        (
            with("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
            0,
        ),
        // The certificate names localhost, not 127.0.0.1.
        (with("127.0.0.1", &verify), 2),
        // Not signed by the system's roots.
        (with("localhost", "sslmode=verify-full"), 2),
    ] {
        let out = run(&store, dir, &["ledger", "migrate"]);
        assert_eq!(code(&out), want, "{}", text(&out));
    }
}
