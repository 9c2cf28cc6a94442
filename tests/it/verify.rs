//! `incident` and `verify`: a linked incident turns a success into "failed after deploy";
//! verifying again changes nothing.

use rusqlite::types::Value;

use crate::flow::Flow;

const CONFIG: &str = r#"
service = "payments-api"
[sprint]
start = "2026-03-02"
length_days = 14
[policy]
min_history = 0
[policy.allowance]
initial = 10
[approval]
timeout = "1s"
poll = "1s"
[verify]
window = "24h"
"#;

#[test]
fn incident_within_the_window_fails_the_change_and_verify_is_idempotent() {
    let mut f = Flow::new(CONFIG);
    let first = f.commit("2026-03-01T09:00:00Z", 3, "app.txt");
    let d = f.json(0, "2026-03-02T10:00:00Z", &["gate", "--commit", &first]);
    assert_eq!(d["decision"], "pre-approved");
    let cg1 = d["change_id"].as_str().unwrap().to_string();
    f.ok(
        0,
        "2026-03-02T10:10:00Z",
        &["record", "--outcome", "success"],
    );
    let second = f.commit("2026-03-02T11:00:00Z", 2, "app.txt");
    let cg2 = f.json(0, "2026-03-02T12:00:00Z", &["gate", "--commit", &second])["change_id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(
        0,
        "2026-03-02T12:05:00Z",
        &["record", "--outcome", "success", "--commit", &second],
    );
    let third = f.commit("2026-03-02T13:00:00Z", 2, "app.txt");
    let cg3 = f.json(0, "2026-03-02T14:00:00Z", &["gate", "--commit", &third])["change_id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(
        0,
        "2026-03-02T14:05:00Z",
        &["record", "--outcome", "failed", "--commit", &third],
    );

    // The incident is linked to the first change within its window.
    let linked = f.json(
        0,
        "2026-03-02T15:00:00Z",
        &["incident", "--change", &cg1, "--id", "INC-7"],
    );
    assert_eq!(linked["incidents"], serde_json::json!(["INC-7"]));
    assert_eq!(linked["within_window"], true);
    // Linking it twice is harmless.
    f.ok(
        0,
        "2026-03-02T15:01:00Z",
        &["incident", "--change", &cg1, "--id", "INC-7"],
    );
    f.ok(
        0,
        "2026-03-02T15:02:00Z",
        &["incident", "--change", &cg1, "--id", "INC-3"],
    );

    // Before the window has passed nothing is due.
    let early = f.json(0, "2026-03-03T09:59:59Z", &["verify"]);
    assert_eq!(early["verified"], serde_json::json!([]), "{early}");
    assert_eq!(f.column(&cg1, "outcome"), Value::Text("success".into()));

    // After it: the first change failed after deploy, the second stands, the third stays failed.
    let v = f.json(0, "2026-03-03T14:30:00Z", &["verify"]);
    let verified = v["verified"].as_array().unwrap();
    assert_eq!(verified.len(), 3, "{v}");
    assert_eq!(verified[0]["change_id"], cg1.as_str());
    assert_eq!(verified[0]["verdict"], "failed-after-deploy");
    assert_eq!(
        verified[0]["incidents"],
        serde_json::json!(["INC-3", "INC-7"])
    );
    assert_eq!(verified[1]["change_id"], cg2.as_str());
    assert_eq!(verified[1]["verdict"], "succeeded");
    assert_eq!(verified[2]["change_id"], cg3.as_str());
    assert_eq!(verified[2]["verdict"], "failed");
    assert_eq!(v["failed_after_deploy"], 1);
    assert_eq!(f.column(&cg1, "outcome"), Value::Text("failure".into()));
    assert_eq!(f.column(&cg1, "failed_after_deploy"), Value::Integer(1));
    assert_eq!(f.column(&cg2, "outcome"), Value::Text("success".into()));
    assert_eq!(f.column(&cg2, "failed_after_deploy"), Value::Integer(0));

    // The change's status shows the failure and its incidents.
    let status = f.json(0, "2026-03-03T14:31:00Z", &["status", "--change", &cg1]);
    assert_eq!(status["outcome"], "failure");
    assert_eq!(status["incidents"], serde_json::json!(["INC-7", "INC-3"]));

    // The track record counts it: the next decision sees 1 success in 3.
    let fourth = f.commit("2026-03-03T15:00:00Z", 1, "app.txt");
    let d = f.json(
        1,
        "2026-03-03T16:00:00Z",
        &["gate", "--commit", &fourth, "--wait", "0"],
    );
    let track = d["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "track-record")
        .unwrap()
        .clone();
    assert!(
        track["reason"]
            .as_str()
            .unwrap()
            .contains("success rate 33%"),
        "{track}"
    );

    // Verifying again, later, changes nothing at all.
    let before = f.dump();
    let again = f.json(0, "2026-03-04T09:00:00Z", &["verify"]);
    assert_eq!(again["verified"], serde_json::json!([]), "{again}");
    let text = f.ok(0, "2026-03-04T09:00:01Z", &["verify"]);
    assert!(text.starts_with("nothing to verify"), "{text}");
    assert_eq!(f.dump(), before);

    // An incident linked after the window closed is kept, but changes no outcome.
    let late = f.json(
        0,
        "2026-03-04T10:00:00Z",
        &["incident", "--change", &cg2, "--id", "INC-9"],
    );
    assert_eq!(late["within_window"], false);
    assert!(
        late["message"]
            .as_str()
            .unwrap()
            .contains("does not change its outcome"),
        "{late}"
    );
    f.json(0, "2026-03-04T11:00:00Z", &["verify"]);
    assert_eq!(f.column(&cg2, "outcome"), Value::Text("success".into()));
}

#[test]
fn incident_needs_a_known_change_and_a_sane_id() {
    let f = Flow::new(CONFIG);
    let out = f.run(
        "2026-03-02T10:00:00Z",
        &["incident", "--change", "CG-99", "--id", "INC-1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no change CG-99"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f.run(
        "2026-03-02T10:00:00Z",
        &["incident", "--change", "CG-1", "--id", "INC-1\nINC-2"],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = f.run(
        "2026-03-02T10:00:00Z",
        &[
            "--backend",
            "servicenow",
            "incident",
            "--change",
            "CHG1",
            "--id",
            "INC-1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ledger backends only"));
}

#[test]
fn verify_dry_run_writes_nothing() {
    let mut f = Flow::new(CONFIG);
    let sha = f.commit("2026-03-01T09:00:00Z", 3, "app.txt");
    let id = f.json(0, "2026-03-02T10:00:00Z", &["gate", "--commit", &sha])["change_id"]
        .as_str()
        .unwrap()
        .to_string();
    f.ok(
        0,
        "2026-03-02T10:10:00Z",
        &["record", "--outcome", "success"],
    );
    f.ok(
        0,
        "2026-03-02T11:00:00Z",
        &["incident", "--change", &id, "--id", "INC-1"],
    );
    let before = f.dump();
    let v = f.json(0, "2026-03-05T00:00:00Z", &["--dry-run", "verify"]);
    assert_eq!(v["verified"][0]["verdict"], "failed-after-deploy");
    assert_eq!(v["verified"][0]["written"], false);
    assert_eq!(f.dump(), before);
}
