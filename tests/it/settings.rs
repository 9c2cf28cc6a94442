//! Settings resolution that the gate's integrity depends on.

use std::path::{Path, PathBuf};

use crate::support::{changegate, git, git_repo, github_actions, json_doc, reference};

const FROZEN: &str = "[[freeze]]\nfrom = \"2020-01-01T00:00:00Z\"\nto = \"2100-01-01T00:00:00Z\"\nreason = \"locked down\"\n";

/// A repo whose default branch (`master`, as in the reference payload) freezes every deploy,
/// and a pull-request branch that deletes the freeze from its own copy of the config.
fn repo_with_loosening_pr(fetch_default_branch: bool) -> (tempfile::TempDir, PathBuf) {
    let repo = git_repo();
    let dir = repo.path();
    git(dir, &["branch", "-m", "master"]);
    std::fs::write(dir.join(".changegate.toml"), FROZEN).expect("write");
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "freeze"]);
    if fetch_default_branch {
        git(dir, &["update-ref", "refs/remotes/origin/master", "HEAD"]);
    }
    git(dir, &["checkout", "-q", "-b", "loosen"]);
    std::fs::write(dir.join(".changegate.toml"), "").expect("write");
    git(dir, &["commit", "-q", "-am", "drop the freeze"]);
    let event = dir.join("event.json");
    std::fs::copy(
        reference("github-webhooks/examples/pull_request/opened.payload.json"),
        &event,
    )
    .expect("copy payload");
    (repo, event)
}

/// A dry-run `gate` of the reference pull request, in a GitHub Actions job.
fn pr_gate_cmd(dir: &Path, event: &Path) -> assert_cmd::Command {
    let mut cmd = changegate(dir);
    cmd.args(["gate", "--wait", "0", "--dry-run", "--format", "json"]);
    github_actions(
        &mut cmd,
        "pull_request",
        event,
        "Codertocat/Hello-World",
        "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
    );
    cmd
}

fn pr_gate(dir: &Path, event: &Path) -> assert_cmd::assert::Assert {
    pr_gate_cmd(dir, event).assert()
}

#[test]
fn a_pull_request_cannot_loosen_its_own_gate() {
    let (repo, event) = repo_with_loosening_pr(true);
    let out = pr_gate(repo.path(), &event)
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc = json_doc(&out);
    assert_eq!(doc["decision"], "blocked", "{doc}");
    assert!(doc.to_string().contains("locked down"), "{doc}");
}

#[test]
fn without_the_default_branch_it_warns_and_uses_the_pull_requests_copy() {
    let (repo, event) = repo_with_loosening_pr(false);
    let assert = pr_gate(repo.path(), &event).code(1);
    let out = assert.get_output();
    let doc = json_doc(&out.stdout);
    assert_eq!(doc["decision"], "needs-approval", "{doc}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read .changegate.toml from the default branch"),
        "{stderr}"
    );
}

/// The container images carry no git: the default branch's config then comes from the
/// GitHub contents API, with the workflow token.
#[test]
fn without_git_history_the_default_branch_config_comes_from_the_api() {
    use wiremock::matchers::{header, method, path, query_param};
    let (repo, event) = repo_with_loosening_pr(false);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(async {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(method("GET"))
            .and(path(
                "/repos/Codertocat/Hello-World/contents/.changegate.toml",
            ))
            .and(query_param("ref", "master"))
            .and(header("authorization", "Bearer ghs_test"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_string(FROZEN))
            .expect(1)
            .mount(&server)
            .await;
        server
    });
    let out = pr_gate_cmd(repo.path(), &event)
        .env("GITHUB_API_URL", server.uri())
        .env("GITHUB_TOKEN", "ghs_test")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let doc = json_doc(&out.stdout);
    assert_eq!(doc["decision"], "blocked", "{doc}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("ghs_test"), "{stderr}");
    runtime.block_on(server.verify());
}

const SN_PASSWORD: &str = "hunter2-Secret";

/// `config check` with these variables set.
fn config_check(config: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let repo = git_repo();
    std::fs::write(repo.path().join(".changegate.toml"), config).expect("write");
    let mut cmd = changegate(repo.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.args(["config", "check"]).output().expect("run");
    drop(repo);
    out
}

#[test]
fn credentials_in_a_base_url_are_refused_without_repeating_them() {
    for (var, url, creds) in [
        (
            "CHANGEGATE_SERVICENOW_URL",
            format!("https://svc:{SN_PASSWORD}@example.service-now.com"),
            "put credentials in CHANGEGATE_SERVICENOW_USER/PASSWORD",
        ),
        (
            "CHANGEGATE_JIRA_URL",
            format!("https://me%40example.com:{SN_PASSWORD}@example.atlassian.net"),
            "put credentials in CHANGEGATE_JIRA_USER/TOKEN",
        ),
        (
            "GITHUB_API_URL",
            format!("https://x-access-token:{SN_PASSWORD}@ghe.example.com/api/v3"),
            "put credentials in CHANGEGATE_GITHUB_TOKEN",
        ),
        (
            "CI_API_V4_URL",
            format!("https://oauth2:{SN_PASSWORD}@gitlab.example.com/api/v4"),
            "put credentials in CHANGEGATE_GITLAB_TOKEN",
        ),
    ] {
        let out = config_check("", &[(var, &url)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stdout}{stderr}");
        assert!(stderr.contains(creds), "{var}: {stderr}");
        assert!(
            !stderr.contains(SN_PASSWORD) && !stdout.contains(SN_PASSWORD),
            "{var} leaked: {stdout}{stderr}"
        );
    }
    // A user name alone is refused too, and the URL is shown without it.
    let out = config_check(
        "[servicenow]\nurl = \"https://svc@example.service-now.com\"\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("https://example.service-now.com/") && !stderr.contains("svc@"),
        "{stderr}"
    );
}

#[test]
fn a_gate_with_credentials_in_the_url_sends_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://svc:{SN_PASSWORD}@{}",
        listener.local_addr().expect("addr")
    );
    let repo = git_repo();
    let out = changegate(repo.path())
        .env("CHANGEGATE_SERVICENOW_URL", &url)
        .env("CHANGEGATE_SERVICENOW_USER", "svc")
        .env("CHANGEGATE_SERVICENOW_PASSWORD", SN_PASSWORD)
        .env("NO_PROXY", "127.0.0.1")
        .args(["--backend", "servicenow", "-vvv", "gate", "--wait", "0"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("put credentials in CHANGEGATE_SERVICENOW_USER/PASSWORD"),
        "{stderr}"
    );
    assert!(!stdout.contains(SN_PASSWORD) && !stderr.contains(SN_PASSWORD));
    assert!(
        listener.accept().is_err(),
        "a connection was made to the refused URL"
    );
}

#[test]
fn plain_http_to_another_host_needs_allow_insecure_http() {
    // TEST-NET addresses: refused while the settings are resolved, before any request.
    for (var, url) in [
        ("CHANGEGATE_SERVICENOW_URL", "http://192.0.2.1"),
        ("CHANGEGATE_JIRA_URL", "http://jira.example.com"),
        ("GITHUB_API_URL", "http://192.0.2.1/api/v3"),
    ] {
        let out = config_check("", &[(var, url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.contains("plain http://") && stderr.contains("allow_insecure_http = true"),
            "{var}: {stderr}"
        );
        let out = config_check("[http]\nallow_insecure_http = true\n", &[(var, url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{var}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("plain http allowed to any host"),
            "{var}: {stdout}"
        );
    }
    // This machine stays allowed: the test fakes listen there.
    for url in [
        "http://127.0.0.1:8080",
        "http://127.3.2.1",
        "http://localhost:1",
        "http://[::1]:80",
    ] {
        let out = config_check("", &[("CHANGEGATE_SERVICENOW_URL", url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{url}: {stderr}");
    }
}
