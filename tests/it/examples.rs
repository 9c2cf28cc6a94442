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

/// Every image the Dockerfile makes is built, measured and started in the CI workflow and
/// published by the release workflow (publish-images.yml); the server's image runs as the non-root user.
#[test]
fn every_image_target_is_built_in_ci_and_released_and_serve_is_not_root() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let ci = std::fs::read_to_string(root.join(".github/workflows/ci.yml")).unwrap();
    let release =
        std::fs::read_to_string(root.join(".github/workflows/publish-images.yml")).unwrap();
    // `FROM <base> AS <name>` lines, the build stage aside.
    let stages: Vec<(String, String)> = dockerfile
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                ["FROM", base, "AS", name] => Some((base.to_string(), name.to_string())),
                _ => None,
            }
        })
        .filter(|(_, name)| name != "build")
        .collect();
    let names: Vec<&str> = stages.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["runtime", "action", "gitlab", "serve"]);
    let loop_line = release
        .lines()
        .find(|l| l.trim_start().starts_with("for target in"))
        .unwrap();
    for name in &names {
        assert!(
            ci.contains(&format!("--target {name} ")),
            "ci.yml does not build {name}"
        );
        assert!(
            loop_line
                .split_whitespace()
                .any(|w| w.trim_end_matches(';') == *name),
            "publish-images.yml does not build {name}: {loop_line}"
        );
    }
    // The serve stage inherits the runtime's non-root user and sets no other.
    let serve = dockerfile.split("AS serve").nth(1).unwrap();
    let serve = serve.split("\nFROM ").next().unwrap();
    assert!(!serve.contains("USER"), "{serve}");
    assert!(stages.contains(&("runtime".into(), "serve".into())));
    let runtime = dockerfile.split("AS runtime").nth(1).unwrap();
    let runtime = runtime.split("\nFROM ").next().unwrap();
    assert!(runtime.contains("USER 65532:65532"), "{runtime}");
    assert!(
        ci.contains("\"65532:65532\""),
        "the CI workflow checks the server's user"
    );
    assert!(
        release.contains("-serve\""),
        "the release publishes the server's image"
    );
}
