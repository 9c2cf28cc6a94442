//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub mod gitlab;
pub mod remote;
mod scratch;

use scratch::init_checkout;
pub use scratch::{git, git_at, machine_ci_vars};

/// Real payloads of the services changegate talks to (`tests/fixtures/reference`, see its
/// SOURCES.md). A missing file fails the test that asks for it.
pub fn reference(rel: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(rel);
    assert!(path.is_file(), "missing fixture {}", path.display());
    path
}

/// The changegate binary with a clean environment: no CI variables leak in from the
/// machine running the tests, and logs are quiet unless asked.
pub fn changegate(workdir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("changegate").expect("binary built");
    cmd.current_dir(workdir);
    for key in machine_ci_vars() {
        cmd.env_remove(key);
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A throwaway git repository with one commit, for local runs.
pub fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    init_checkout(dir.path());
    dir
}

/// Makes the checkout's `.changegate.toml` (if any) the default branch's as well, as a
/// pipeline whose gated ref is not the default branch sees it: commits the file and
/// publishes HEAD as `branch` of an `origin` that serves fetches (a bare repository inside
/// `.git`, out of the work tree). Such a pipeline fetches the default branch and reads its
/// config from there, never from the work tree; the `origin` URL's repository name is lost,
/// so such runs must name their repository in the CI variables.
pub fn default_branch_is_head(dir: &Path, branch: &str) {
    let changed = dir.join(".changegate.toml").is_file()
        && !git(dir, &["status", "--porcelain", "--", ".changegate.toml"]).is_empty();
    if changed {
        git(dir, &["add", ".changegate.toml"]);
        git(dir, &["commit", "-q", "-m", "changegate config"]);
    }
    let origin = dir.join(".git/test-origin.git");
    if !origin.exists() {
        git(dir, &["init", "-q", "--bare", &origin.to_string_lossy()]);
    }
    let url = format!("file://{}", origin.display());
    git(dir, &["remote", "set-url", "origin", &url]);
    git(
        dir,
        &[
            "push",
            "-q",
            "-f",
            &url,
            &format!("HEAD:refs/heads/{branch}"),
        ],
    );
}

/// The variables of a GitHub Actions job run for the webhook `event` (a payload file)
/// of kind `event_name`, in `repository` at commit `sha`.
pub fn github_actions<'a>(
    cmd: &'a mut Command,
    event_name: &str,
    event: &Path,
    repository: &str,
    sha: &str,
) -> &'a mut Command {
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", event_name)
        .env("GITHUB_EVENT_PATH", event)
        .env("GITHUB_REPOSITORY", repository)
        .env("GITHUB_SHA", sha)
}

/// The variables of a GitLab CI job of the default branch `main`, in project
/// `project_path` at commit `sha`.
pub fn gitlab_ci<'a>(cmd: &'a mut Command, project_path: &str, sha: &str) -> &'a mut Command {
    cmd.env("GITLAB_CI", "true")
        .env("CI_PROJECT_PATH", project_path)
        .env("CI_COMMIT_SHA", sha)
        .env("CI_COMMIT_BRANCH", "main")
        .env("CI_DEFAULT_BRANCH", "main")
}

/// A `--format json` document (a command's stdout), parsed.
pub fn json_doc(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout).expect("json")
}

/// A server that accepts connections and never answers; counts the connections.
pub struct Silent {
    pub url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Silent {
    pub fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            // Held open, never read nor written: the client waits for an answer.
            let mut open = Vec::new();
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open.push(stream);
            }
        });
        Silent { url, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A YAML file of the repository (a workflow, the GitLab component), parsed.
pub fn yaml(text: &str) -> serde_json::Value {
    serde_norway::from_str(text).expect("valid YAML")
}

/// Copies the file or folder `rel` of `from` to `to/dest` as an artifact carries it: what
/// a job declared as its artifact, and nothing else, reaches the next job's workspace.
/// Returns how many files were copied.
pub fn copy_tree(from: &Path, to: &Path) -> usize {
    if from.is_file() {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, to).expect("copy");
        return 1;
    }
    let mut copied = 0;
    if from.is_dir() {
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            copied += copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    }
    copied
}

/// A client builder for the tests' own HTTP calls. The build's reqwest has no crypto
/// provider of its own (changegate hands it a rustls configuration on ring), so the tests
/// install ring as rustls's default first, as reqwest requires of any client it builds.
pub fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The claims of a GitHub App JWT whose RS256 signature the test App's public key verifies,
/// as GitHub checks it; the error says what is wrong. The signature is checked with ring
/// directly: the build's jsonwebtoken has a provider that signs and verifies nothing.
pub fn app_jwt_claims(jwt: &str) -> Result<serde_json::Value, String> {
    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github-app-test-key.pub.pem"),
    )
    .map_err(|e| e.to_string())?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map_err(|e| e.to_string())?;
    let jsonwebtoken::DecodingKeyKind::SecretOrDer(public_key) = key.kind() else {
        return Err("the fixture's public key is not DER".into());
    };
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| e.to_string())?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(format!("alg {:?}", header.alg));
    }
    // RSASSA-PKCS1-v1_5 with SHA-256 over `header.claims`.
    let (signed, signature) = jwt.rsplit_once('.').ok_or("no signature")?;
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(signed.as_bytes(), &signature)
    .map_err(|_| "bad signature")?;
    let claims: serde_json::Value =
        jsonwebtoken::dangerous::insecure_decode_claims(jwt).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    match (claims["iat"].as_i64(), claims["exp"].as_i64()) {
        (Some(_), Some(exp)) if exp > now => Ok(claims),
        (Some(_), Some(exp)) => Err(format!("expired: exp={exp} now={now}")),
        _ => Err(format!("no iat or exp: {claims}")),
    }
}
