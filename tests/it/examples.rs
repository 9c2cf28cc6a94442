//! The shipped examples work as written: every `examples/config/*.changegate.toml` passes
//! `changegate config check --config <file>` and selects the backend its name says, once
//! the credentials its backend needs are in the environment (without them it fails, as
//! `gate` would).

use std::path::Path;

use crate::support;

#[test]
fn every_example_config_passes_config_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/config") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(backend) = name.strip_suffix(".changegate.toml") else {
            continue;
        };
        let work = tempfile::tempdir().expect("tempdir");
        let credentials: &[(&str, &str)] = match backend {
            "servicenow" => &[
                ("CHANGEGATE_SERVICENOW_USER", "svc"),
                ("CHANGEGATE_SERVICENOW_PASSWORD", "pw"),
            ],
            "jira" => &[
                ("CHANGEGATE_JIRA_USER", "svc@example.com"),
                ("CHANGEGATE_JIRA_TOKEN", "token"),
            ],
            _ => &[],
        };
        if let Some((missing, _)) = credentials.last() {
            let out = support::changegate(work.path())
                .args(["config", "check", "--config"])
                .arg(&path)
                .envs(credentials[..credentials.len() - 1].iter().copied())
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert!(stderr.contains(missing), "{name}: {stderr}");
        }
        let out = support::changegate(work.path())
            .args(["config", "check", "--format", "json", "--config"])
            .arg(&path)
            .envs(credentials.iter().copied())
            .assert();
        let output = out.get_output();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(doc["ok"], true, "{name}: {doc}");
        assert_eq!(
            doc["backend"], backend,
            "{name} must select the {backend} backend"
        );
        checked.push(backend.to_string());
    }
    checked.sort();
    assert_eq!(checked, ["jira", "local", "servicenow"]);
}
