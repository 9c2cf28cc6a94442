//! `policy simulate`: replaying the recorded history under the current policy reproduces
//! every decision; other values give the figures worked out here by hand.

use crate::flow::{self, Flow};

const NOW: &str = "2026-04-03T12:00:00Z";

fn column(doc: &serde_json::Value, side: &str, field: &str) -> Vec<u64> {
    doc[side]["sprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .collect()
}

fn kinds(doc: &serde_json::Value, side: &str) -> Vec<String> {
    doc["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[side].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn simulate_reproduces_the_history_and_weighs_other_values() {
    let (f, ids) = flow::scripted_history();

    // The current values: every change decided again exactly as it was, rule for rule.
    let same = f.json(0, NOW, &["policy", "simulate"]);
    assert_eq!(same["changes"], 14);
    assert_eq!(same["current_reproduces_recorded"], true, "{same:#}");
    assert_eq!(same["current"]["same_as_recorded"], 14);
    assert_eq!(same["differences"], serde_json::json!([]));
    // What the policy decided each change, read independently of simulate (a rejected
    // change's final decision is `blocked`; the policy's own is beside it).
    let recorded: Vec<String> = ids
        .iter()
        .map(|id| {
            let doc = f.json(0, NOW, &["status", "--change", id]);
            doc.get("policy_decision")
                .unwrap_or(&doc["decision"])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds(&same, "current"), recorded);
    assert_eq!(kinds(&same, "recorded"), recorded);
    let listed: Vec<&str> = same["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["change_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Pre-approved: CG-3, CG-4 | CG-6, CG-7 | CG-11, CG-12 (the emergency CG-9 uses no
    // allowance); failed of those: CG-4, CG-7 (after deploy), CG-12.
    assert_eq!(same["current"]["pre_approved"], 6);
    assert_eq!(same["current"]["pre_approved_failed"], 3);
    assert_eq!(same["current"]["needs_approval"], 7);
    assert_eq!(same["current"]["emergency"], 1);
    assert_eq!(column(&same, "current", "allowance"), [2, 4, 6]);
    assert_eq!(column(&same, "current", "pre_approved"), [2, 2, 2]);
    assert_eq!(same["proposed"], same["current"]);

    // A lower target (70%): CG-8 (5 of 7 = 71%) passes the track record; CG-13 and CG-14
    // (9 of 12 = 75%) too. Every sprint still met 70%, so the allowance grows as before.
    let low = f.json(
        0,
        NOW,
        &["policy", "simulate", "--set", "policy.min_success_rate=0.7"],
    );
    assert_eq!(low["current_reproduces_recorded"], true);
    assert_eq!(low["differences"][0]["key"], "policy.min_success_rate");
    assert_eq!(low["proposed"]["pre_approved"], 9);
    assert_eq!(low["proposed"]["pre_approved_failed"], 3);
    // CG-13 was rejected in reality: never deployed, so its outcome is unknown.
    assert_eq!(low["proposed"]["pre_approved_unknown"], 1);
    assert_eq!(low["proposed"]["needs_approval"], 4);
    assert_eq!(column(&low, "proposed", "allowance"), [2, 4, 6]);
    assert_eq!(column(&low, "proposed", "pre_approved"), [2, 3, 4]);
    let changed: Vec<&str> = low["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["current"] != d["proposed"])
        .map(|d| d["change_id"].as_str().unwrap())
        .collect();
    assert_eq!(changed, [ids[7].as_str(), &ids[12], &ids[13]]);

    // Another file as the proposal: a first allowance of 1. CG-4 then waits for approval;
    // sprint 1 still meets the target, so the ramp climbs 1 → 3 → 5.
    let other = f.dir().join("other.toml");
    std::fs::write(
        &other,
        flow::HISTORY_CONFIG.replace("initial = 2", "initial = 1"),
    )
    .unwrap();
    let one = f.json(
        0,
        NOW,
        &["--config", other.to_str().unwrap(), "policy", "simulate"],
    );
    assert_eq!(
        one["current"]["pre_approved"], 6,
        "the current policy is still .changegate.toml"
    );
    assert_eq!(one["proposed"]["pre_approved"], 5);
    assert_eq!(one["proposed"]["pre_approved_failed"], 2);
    assert_eq!(column(&one, "proposed", "allowance"), [1, 3, 5]);
    assert_eq!(column(&one, "proposed", "pre_approved"), [1, 2, 2]);
    // --set applies on top of the file.
    let both = f.json(
        0,
        NOW,
        &[
            "--config",
            other.to_str().unwrap(),
            "policy",
            "simulate",
            "--set",
            "policy.allowance.step=4",
        ],
    );
    assert_eq!(column(&both, "proposed", "allowance"), [1, 5, 9]);

    // The text shows both columns and says the history is reproduced.
    let text = f.ok(
        0,
        NOW,
        &["policy", "simulate", "--set", "policy.min_success_rate=0.7"],
    );
    assert!(
        text.contains("proposed: policy.min_success_rate = 0.7 (current 0.8)"),
        "{text}"
    );
    assert!(
        text.contains("the current policy reproduces all 14 recorded decisions exactly"),
        "{text}"
    );
    insta::assert_snapshot!("simulate_text", text);
}

#[test]
fn simulate_rejects_bad_values() {
    let f = Flow::new(flow::HISTORY_CONFIG);
    for (set, names_the_argument) in [
        ("policy.allowance.stepp=3", true),
        ("policy.min_success_rate=2", true),
        ("policy.allowance.lookback_sprints=100000", true),
        ("sprint.length_days=7", false),
        ("nonsense", true),
    ] {
        let out = f.run(NOW, &["policy", "simulate", "--set", set]);
        assert_eq!(out.status.code(), Some(2), "{set}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The error names the argument, never a line of the restated config nobody wrote.
        assert!(
            !names_the_argument || stderr.contains(set),
            "{set}: {stderr}"
        );
        assert!(!stderr.contains("line "), "{set}: {stderr}");
    }
}
