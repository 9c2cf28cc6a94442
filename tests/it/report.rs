//! `report` over a history made by the real binary: figures worked out from the script,
//! a golden markdown and text report, and the HTML page in a headless browser.

use std::path::Path;
use std::process::Command;

use crate::flow::{self, Flow};

const NOW: &str = "2026-04-03T12:00:00Z";

fn sprint(doc: &serde_json::Value, n: i64) -> &serde_json::Value {
    doc["services"][0]["sprints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sprint"] == n)
        .unwrap()
}

#[test]
fn report_over_a_scripted_history() {
    let (f, _) = flow::scripted_history();
    let doc = f.json(0, NOW, &["report", "--sprints", "3"]);
    let svc = &doc["services"][0];
    assert_eq!(svc["service"], "payments-api");
    assert_eq!(svc["service_id"], "acme/payments-api");

    // Sprint 1: 5 changes; 2 pre-approved of an allowance of 2; 3 waited for approval
    // (60, 120 and 30 minutes: median 60, p90 rank ceil(2.7) = 3 → 120).
    let s1 = sprint(&doc, 1);
    assert_eq!(
        (
            s1["changes"].as_u64(),
            s1["pre_approved"].as_u64(),
            s1["allowance"].as_u64()
        ),
        (Some(5), Some(2), Some(2))
    );
    assert_eq!(s1["needs_approval"], 3);
    assert_eq!(s1["approval_wait"]["median_secs"], 3600);
    assert_eq!(s1["approval_wait"]["p90_secs"], 7200);
    // 4 successes, 1 failure.
    assert_eq!(s1["success_rate"], 0.8);
    assert_eq!(s1["failed"], 1);
    // Lead time: committed the day before at 09:00. Pre-approved changes deploy at 10:00
    // (25h), approved ones at 10:00 + wait + 1 min: 26h01m, 27h01m. CG-5's range starts at
    // the last successful deploy, so it ships CG-4's failed commit too (committed 03-04
    // 09:00, deployed 03-06 10:31): 49h31m. Sorted 25h, 25h, 26h01m, 27h01m, 49h31m:
    // median 26h01m.
    assert_eq!(s1["lead_time"]["median_secs"], 26 * 3600 + 60);
    // CG-4 failed (deployed 03-05 10:00); CG-5 restored it (deployed 03-06 10:31): 24h31m.
    assert_eq!(s1["time_to_restore"]["median_secs"], 24 * 3600 + 31 * 60);
    // 5 deployments over 14 days.
    assert_eq!(s1["deployments"], 5);
    assert_eq!(s1["deployment_frequency_per_day"], 5.0 / 14.0);

    // Sprint 2: allowance grew to 4; CG-6, CG-7 pre-approved; the emergency CG-9 does not
    // use the allowance. CG-7 failed after deploy (INC-42).
    let s2 = sprint(&doc, 2);
    assert_eq!(
        (
            s2["changes"].as_u64(),
            s2["pre_approved"].as_u64(),
            s2["allowance"].as_u64()
        ),
        (Some(5), Some(2), Some(4))
    );
    assert_eq!(
        (s2["emergency"].as_u64(), s2["failed_after_deploy"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(s2["success_rate"], 0.8);
    assert_eq!(s2["change_failure_rate"], 0.2);
    // CG-7 (deployed 03-17 10:00) restored by CG-8 (03-19 12:01): 2d 2h 1m.
    assert_eq!(
        s2["time_to_restore"]["median_secs"],
        2 * 86_400 + 2 * 3600 + 60
    );

    // Sprint 3 (current: 4.5 days in on 04-03 12:00): allowance 6; CG-13 rejected and
    // cancelled; CG-12 failed; 3 deployments.
    let s3 = sprint(&doc, 3);
    assert_eq!(
        (
            s3["changes"].as_u64(),
            s3["pre_approved"].as_u64(),
            s3["allowance"].as_u64()
        ),
        (Some(4), Some(2), Some(6))
    );
    // The rejected CG-13 counts as blocked, not as still needing approval.
    assert_eq!(
        (s3["blocked"].as_u64(), s3["needs_approval"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (s3["cancelled"].as_u64(), s3["deployments"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(s3["success_rate"], 2.0 / 3.0);
    assert_eq!(s3["deployment_frequency_per_day"], 3.0 / 4.5);

    // Totals over the three sprints.
    let total = &doc["services"][0]["total"];
    assert_eq!(
        (
            total["changes"].as_u64(),
            total["failed_after_deploy"].as_u64()
        ),
        (Some(14), Some(1))
    );
    assert_eq!(total["success_rate"], 10.0 / 13.0);

    // --all finds the one service; a name outside the repository finds it too.
    let all = f.json(0, NOW, &["report", "--all", "--sprints", "3"]);
    assert_eq!(all["services"], doc["services"]);
    let outside = tempfile::tempdir().unwrap();
    let by_name = crate::support::changegate(outside.path())
        .env("CHANGEGATE_NOW", NOW)
        .env("CHANGEGATE_LEDGER", &f.ledger)
        .args([
            "--config",
            f.dir().join(".changegate.toml").to_str().unwrap(),
        ])
        .args([
            "--format",
            "json",
            "report",
            "--sprints",
            "3",
            "--service",
            "payments-api",
        ])
        .output()
        .unwrap();
    assert!(
        by_name.status.success(),
        "{}",
        String::from_utf8_lossy(&by_name.stderr)
    );
    let by_name: serde_json::Value = serde_json::from_slice(&by_name.stdout).unwrap();
    assert_eq!(by_name["services"], doc["services"]);

    // Golden reports.
    insta::assert_snapshot!("report_text", f.ok(0, NOW, &["report", "--sprints", "3"]));
    insta::assert_snapshot!(
        "report_markdown",
        f.ok(
            0,
            NOW,
            &["--format", "markdown", "report", "--sprints", "3"]
        )
    );

    // The HTML page, to a file.
    let out = tempfile::tempdir().unwrap();
    let html = out.path().join("kpis.html");
    f.ok(
        0,
        NOW,
        &[
            "--format",
            "html",
            "report",
            "--sprints",
            "3",
            "--output",
            html.to_str().unwrap(),
        ],
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 4);
    browser_renders(&html);
}

#[test]
fn report_of_an_empty_ledger_and_bad_input() {
    let f = Flow::new(flow::HISTORY_CONFIG);
    let text = f.ok(0, NOW, &["report"]);
    assert!(text.contains("KPIs of the last 6 sprints"), "{text}");
    let out = f.run(NOW, &["report", "--sprints", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The chromium binary the screenshot test runs (Debian: `apt-get install -y chromium`).
fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate;
        }
    }
    panic!("the HTML report test needs a headless Chromium: apt-get install -y chromium");
}

fn headless(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Opens the page in headless Chromium: it must load without errors, lay out the four
/// charts (read back from the DOM Chromium built) and paint a non-trivial screenshot.
fn browser_renders(html: &Path) {
    let url = format!("file://{}", html.display());
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(profile.path())
        .args(["--enable-logging=stderr", "--v=0", "--dump-dom"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom_text.matches("<svg").count(),
        4,
        "the DOM holds the four charts"
    );
    assert!(
        dom_text.matches("<rect").count() > 20 && dom_text.contains("<path"),
        "the charts have bars and lines"
    );
    let log = String::from_utf8_lossy(&dom.stderr);
    for bad in ["Refused to", "Uncaught", "ERR_", "Failed to load"] {
        assert!(!log.contains(bad), "the page logged {bad:?}:\n{log}");
    }

    let png = html.with_extension("png");
    let profile = tempfile::tempdir().unwrap();
    let shot = headless(profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,1600")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // A blank 1200×1600 page compresses to a few kilobytes; charts and a table do not.
    assert!(
        bytes.len() > 40_000,
        "the screenshot looks empty ({} bytes)",
        bytes.len()
    );
    if let Some(dir) = std::env::var_os("CHANGEGATE_KEEP_SCREENSHOT") {
        std::fs::copy(&png, Path::new(&dir).join("report.png")).unwrap();
        std::fs::copy(html, Path::new(&dir).join("report.html")).unwrap();
    }
}

/// A checkout with no remote names its service after its folder, for `report` as for `gate`.
#[test]
fn report_in_a_checkout_without_a_remote_finds_the_gated_service() {
    let repo = crate::support::git_repo();
    let ok = std::process::Command::new("git")
        .args(["remote", "remove", "origin"])
        .current_dir(repo.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    crate::support::changegate(repo.path())
        .args(["gate", "--wait", "0"])
        .assert()
        .code(1);
    let out = crate::support::changegate(repo.path())
        .args(["--format", "json", "report"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(doc.to_string().contains("\"needs_approval\":1"), "{doc}");
}

/// Rows of the ledger's kept sprint KPIs.
fn kept_rows(ledger: &Path) -> i64 {
    let db = rusqlite::Connection::open(ledger).unwrap();
    db.query_row("SELECT count(*) FROM kpi_sprints", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_report_from_kept_sprints_prints_what_the_changes_give() {
    // The first report keeps the finished sprints; the next reads them back and prints the
    // same, in every format. After a change to a finished sprint, the report is the one a
    // ledger without kept sprints prints.
    let (f, _) = flow::scripted_history();
    let formats = ["text", "markdown", "json", "html"];
    let reports = |f: &Flow| -> Vec<String> {
        formats
            .iter()
            .map(|format| {
                f.ok(
                    0,
                    NOW,
                    &["--format", format, "report", "--all", "--sprints", "3"],
                )
            })
            .collect()
    };
    // A dry run keeps nothing.
    let dry = f.ok(0, NOW, &["--dry-run", "report", "--sprints", "3"]);
    assert_eq!(kept_rows(&f.ledger), 0);
    let cold = reports(&f);
    assert_eq!(kept_rows(&f.ledger), 2, "sprints 1 and 2 are finished");
    assert_eq!(reports(&f), cold);
    assert_eq!(cold[0], dry);
    // CG-2 (sprint 1) turned into a failure after the fact.
    let db = rusqlite::Connection::open(&f.ledger).unwrap();
    db.execute(
        "UPDATE changes SET outcome = 'failure' WHERE id = (SELECT min(id) + 1 FROM changes)",
        [],
    )
    .unwrap();
    let after = reports(&f);
    assert_ne!(after, cold, "the change shows");
    db.execute("DELETE FROM kpi_sprints", []).unwrap();
    assert_eq!(reports(&f), after, "the same from the changes alone");
}
