//! What a release ships, checked offline: the repository is named once (Cargo.toml) and
//! every file that names it or a version agrees; the release workflow builds every target
//! with checksums and build provenance attestations, beside the images; and `install.sh`
//! installs a release whose checksum matches, and refuses one whose checksum does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::support::{self, remote::Remote};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `owner/name` of Cargo.toml's `repository`, and the crate's version.
fn repository_and_version() -> (String, String) {
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let package = manifest["package"].as_table().expect("[package]");
    let url = package["repository"].as_str().expect("repository");
    let repo = url
        .strip_prefix("https://github.com/")
        .expect("a GitHub repository URL")
        .to_string();
    assert_eq!(repo.split('/').count(), 2, "{url}");
    assert_eq!(
        env!("CARGO_PKG_REPOSITORY"),
        url,
        "the code's CARGO_PKG_REPOSITORY"
    );
    let version = package["version"].as_str().expect("version").to_string();
    (repo, version)
}

/// Every file outside the code that names the repository, an image or a release.
fn shipped_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for rel in [
        "README.md",
        "action.yml",
        "Dockerfile",
        "install.sh",
        "examples",
        "gitlab",
        "docs",
        ".github/workflows",
    ] {
        collect(&root().join(rel), &mut out);
    }
    out
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            collect(&entry.expect("entry").path(), out);
        }
    } else if path
        .extension()
        .and_then(|e| e.to_str())
        .is_none_or(|e| matches!(e, "md" | "yml" | "yaml" | "json" | "toml" | "sh"))
    {
        out.push(path.to_path_buf());
    }
}

#[test]
fn the_repository_is_named_once_and_every_file_agrees() {
    let (repo, version) = repository_and_version();
    let files = shipped_files();
    assert!(files.len() > 10, "{files:?}");
    // The action, pinned to a release tag: `changegate/changegate@v0.1.0`.
    let action = Regex::new(r"uses:\s*([\w.-]+/changegate)@(\S+)").unwrap();
    // An image: `ghcr.io/changegate/changegate:0.1.0-gitlab`.
    let image = Regex::new(r"ghcr\.io/([\w.<>-]+/[\w.-]+?)(?::([\w.${}-]+))?\b").unwrap();
    // The GitLab component: `$CI_SERVER_FQDN/changegate/changegate/changegate@0.1.0`.
    let component = Regex::new(r"\$CI_SERVER_FQDN/([\w.-]+/[\w.-]+)/changegate@(\S+)").unwrap();
    // A link to the repository.
    let link = Regex::new(r"github\.com/([\w.-]+/changegate)\b").unwrap();
    let mut seen = (0, 0, 0, 0);
    for file in &files {
        let name = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for placeholder in ["OWNER/changegate", "ghcr.io/OWNER", "<owner>/changegate"] {
            assert!(
                !text.contains(placeholder),
                "{name} still names the placeholder {placeholder}"
            );
        }
        let examples = name.starts_with("examples/") || name.starts_with("gitlab/");
        for c in action.captures_iter(&text) {
            seen.0 += 1;
            assert_eq!(&c[1], repo, "{name}: {}", &c[0]);
            assert_eq!(
                &c[2],
                format!("v{version}"),
                "{name}: {} must name a release that exists",
                &c[0]
            );
        }
        for c in image.captures_iter(&text) {
            seen.1 += 1;
            // The release workflow builds the name from Cargo.toml at run time.
            if c[1].contains('$') {
                continue;
            }
            assert_eq!(&c[1], repo, "{name}: {}", &c[0]);
            if let Some(tag) = c.get(2).map(|t| t.as_str())
                && (examples || name == "action.yml")
            {
                assert!(
                    tag.starts_with(&version),
                    "{name}: {} must name the version {version}",
                    &c[0]
                );
            }
        }
        for c in component.captures_iter(&text) {
            seen.2 += 1;
            assert_eq!(&c[1], repo, "{name}: {}", &c[0]);
            assert_eq!(&c[2], version, "{name}: {}", &c[0]);
        }
        for c in link.captures_iter(&text) {
            seen.3 += 1;
            assert_eq!(&c[1], repo, "{name}: {}", &c[0]);
        }
    }
    // Each kind was found (a pattern that matches nothing checks nothing).
    assert!(
        seen.0 >= 5 && seen.1 >= 3 && seen.2 >= 2 && seen.3 >= 2,
        "{seen:?}"
    );
    assert!(
        read("install.sh").contains(&format!("REPOSITORY=\"{repo}\"")),
        "install.sh downloads from {repo}"
    );
}

/// dist's config: the targets, the archive format and the checksum.
fn dist_config() -> toml::Table {
    let text = read("dist-workspace.toml");
    let t: toml::Table = text.parse().expect("dist-workspace.toml");
    t["dist"].as_table().expect("[dist]").clone()
}

#[test]
fn the_release_workflow_builds_every_target_with_checksums_and_attestations() {
    let dist = dist_config();
    let mut targets: Vec<&str> = dist["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "aarch64-apple-darwin",
            "aarch64-unknown-linux-musl",
            "x86_64-apple-darwin",
            "x86_64-pc-windows-msvc",
            "x86_64-unknown-linux-musl",
        ],
        "Linux (static), macOS and Windows"
    );
    // install.sh reads `changegate-<target>.tar.gz` and its `.sha256`.
    assert_eq!(dist["unix-archive"].as_str(), Some(".tar.gz"));
    assert_eq!(
        dist.get("checksum").and_then(|c| c.as_str()),
        Some("sha256")
    );
    assert_eq!(dist["github-attestations"].as_bool(), Some(true));
    assert_eq!(dist["ci"].as_str(), Some("github"));

    let wf = support::yaml(&read(".github/workflows/release.yml"));
    let jobs = wf["jobs"].as_object().expect("jobs");
    // dist's pipeline: plan, build, host (the GitHub release), announce.
    for job in [
        "plan",
        "build-local-artifacts",
        "build-global-artifacts",
        "host",
        "announce",
    ] {
        assert!(jobs.contains_key(job), "release.yml has no {job} job");
    }
    let build = &jobs["build-local-artifacts"];
    assert_eq!(
        build["strategy"]["matrix"],
        "${{ fromJson(needs.plan.outputs.val).ci.github.artifacts_matrix }}",
        "the build matrix is dist's plan of the targets above"
    );
    let steps = build["steps"].as_array().expect("steps");
    let uses = |s: &Value, action: &str| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{action}@")))
    };
    // `actions/attest` (the successor of attest-build-provenance) signs a SLSA build
    // provenance attestation of every archive the job built.
    let attest = steps
        .iter()
        .find(|s| uses(s, "actions/attest") || uses(s, "actions/attest-build-provenance"))
        .expect("the build attests the archives' provenance");
    assert!(
        attest["with"]["subject-path"]
            .as_str()
            .is_some_and(|p| p.starts_with("target/distrib/")),
        "{attest}"
    );
    assert_eq!(build["permissions"]["id-token"], "write", "{build}");
    assert_eq!(build["permissions"]["attestations"], "write", "{build}");
    // The build uploads what dist built (archives, their .sha256); the host job publishes
    // them with the unified checksum file.
    assert!(steps.iter().any(|s| uses(s, "actions/upload-artifact")));
    let host = serde_json::to_string(&jobs["host"]).unwrap_or_default();
    assert!(host.contains("dist host"), "{host}");
    // Every action is pinned by commit SHA.
    let pinned = Regex::new(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$").unwrap();
    for (name, job) in jobs {
        for step in job["steps"].as_array().into_iter().flatten() {
            if let Some(u) = step["uses"].as_str() {
                assert!(pinned.is_match(u), "{name}: {u} is not pinned by SHA");
            }
        }
    }
    // The images are still built, checked and published from the same tag.
    let images = jobs
        .values()
        .find(|j| {
            j["uses"]
                .as_str()
                .is_some_and(|u| u.contains("publish-images.yml"))
        })
        .expect("release.yml publishes the images");
    assert!(images["needs"].to_string().contains("plan"), "{images}");
    let images = support::yaml(&read(".github/workflows/publish-images.yml"));
    let run: String = images["jobs"]["image"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect();
    for part in ["docker build --target", "test \"$size\" -lt", "docker push"] {
        assert!(run.contains(part), "publish-images.yml lost {part:?}");
    }
}

// ---- install.sh against a release on a loopback server --------------------------------

/// The target install.sh picks on this machine.
fn this_target() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("no release for {other}"),
    };
    let os = match std::env::consts::OS {
        "linux" => "unknown-linux-musl",
        "macos" => "apple-darwin",
        other => panic!("no release for {other}"),
    };
    format!("{arch}-{os}")
}

/// A release archive as dist lays it out: `changegate-<target>/changegate` (this build's
/// binary), gzipped tar; and its `.sha256` line.
fn fake_release(dir: &Path, target: &str) -> (Vec<u8>, String) {
    let folder = format!("changegate-{target}");
    std::fs::create_dir_all(dir.join(&folder)).expect("mkdir");
    std::fs::copy(
        assert_cmd::cargo::cargo_bin("changegate"),
        dir.join(&folder).join("changegate"),
    )
    .expect("copy the binary");
    let archive = dir.join(format!("{folder}.tar.gz"));
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -cf - \"$1\" | gzip -1 > \"$2\"")
        .arg("sh")
        .arg(&folder)
        .arg(&archive)
        .current_dir(dir)
        .status()
        .expect("tar");
    assert!(status.success());
    let bytes = std::fs::read(&archive).expect("archive");
    let sum = sha256_hex(&archive);
    (bytes, format!("{sum} *{folder}.tar.gz\n"))
}

fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_string()
}

/// Serves the archive and `checksum` under `/releases/v0.1.0/`, each expected once.
async fn serve(archive: Vec<u8>, checksum: String, target: &str) -> Remote {
    let server = Remote::start().await;
    let name = format!("changegate-{target}.tar.gz");
    Mock::given(method("GET"))
        .and(path(format!("/releases/v0.1.0/{name}")))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(archive))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/releases/v0.1.0/{name}.sha256")))
        .respond_with(ResponseTemplate::new(200).set_body_string(checksum))
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// Runs install.sh for v0.1.0 from `server` into `to`, off the async runtime (the server
/// answers on it).
async fn install(server: &Remote, to: &Path) -> std::process::Output {
    let base = format!("{}/releases/v0.1.0", server.uri());
    let to = to.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg(root().join("install.sh"))
            .args(["--version", "v0.1.0", "--to"])
            .arg(&to)
            .env("CHANGEGATE_INSTALL_BASE_URL", base)
            .env_remove("CHANGEGATE_INSTALL_DIR")
            .output()
            .expect("sh runs")
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_sh_installs_a_release_whose_checksum_matches() {
    let target = this_target();
    let work = tempfile::tempdir().expect("tempdir");
    let (archive, checksum) = fake_release(work.path(), &target);
    let server = serve(archive, checksum, &target).await;
    let to = work.path().join("bin");
    let out = install(&server, &to).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("checksum ok"), "{stderr}");
    // The installed binary runs and is this build.
    let version = Command::new(to.join("changegate"))
        .arg("--version")
        .output()
        .expect("the installed binary runs");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("changegate {}", env!("CARGO_PKG_VERSION"))
    );
    // Nothing but the binary is left in the directory.
    let left: Vec<_> = std::fs::read_dir(&to)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["changegate"]);
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_sh_refuses_a_release_whose_checksum_does_not_match() {
    let target = this_target();
    let work = tempfile::tempdir().expect("tempdir");
    let (archive, _) = fake_release(work.path(), &target);
    // The checksum of other bytes: a tampered archive, or a tampered checksum file.
    let wrong = format!(
        "{} *changegate-{target}.tar.gz\n",
        "0123456789abcdef".repeat(4)
    );
    let server = serve(archive, wrong, &target).await;
    let to = work.path().join("bin");
    std::fs::create_dir_all(&to).expect("mkdir");
    // An earlier install stays as it was.
    std::fs::write(to.join("changegate"), "the old one").expect("write");
    let out = install(&server, &to).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("checksum mismatch") && stderr.contains("nothing was installed"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&to)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["changegate"], "no partial file left behind");
    assert_eq!(
        std::fs::read_to_string(to.join("changegate")).expect("read"),
        "the old one"
    );
    server.verify().await;
}

#[test]
fn install_sh_refuses_plain_http_off_this_machine() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new("sh")
        .arg(root().join("install.sh"))
        .args(["--to"])
        .arg(work.path().join("bin"))
        .env(
            "CHANGEGATE_INSTALL_BASE_URL",
            "http://mirror.example.com/changegate",
        )
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("must be https://"), "{stderr}");
    assert!(!work.path().join("bin").exists());
}
