//! `changegate serve` on ServiceNow: the change lives in the instance, as the step's does;
//! what the server keeps between deliveries (the deliveries it has claimed, the deployments
//! waiting for their answer) lives in a ledger beside it, so a restart loses nothing.

use super::*;
use crate::servicenow::fake::{self, Sn, Verdict};

const USER: &str = "svc-changegate";
const PASSWORD: &str = "s3cr3t-P4ss!word";
const TEMPLATE: &str = "Pre-approved application deploy";

struct Instance {
    server: Remote,
    sn: Arc<Mutex<Sn>>,
}

impl Instance {
    async fn start() -> Instance {
        let server = Remote::start().await;
        let sn = Arc::new(Mutex::new(Sn {
            watch: server.watch(),
            ..Sn::default()
        }));
        {
            let mut s = sn.lock().unwrap();
            s.basic = Some((USER.into(), PASSWORD.into()));
            s.templates.push((
                "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6".into(),
                TEMPLATE.into(),
                "ab12cd34ef56ab12cd34ef56ab12cd34".into(),
            ));
        }
        Mock::given(wiremock::matchers::any())
            .respond_with(fake::Responder(sn.clone()))
            .mount(&server)
            .await;
        Instance { server, sn }
    }

    /// The server's environment for this instance.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CHANGEGATE_BACKEND", "servicenow".into()),
            ("CHANGEGATE_SERVICENOW_URL", self.server.uri()),
            ("CHANGEGATE_SERVICENOW_USER", USER.into()),
            ("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD.into()),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("no_proxy", "127.0.0.1,localhost".into()),
        ]
    }

    /// The changes of the deployed commit, as the instance holds them.
    fn changes(&self) -> Vec<(String, String, String)> {
        self.changes_of(SHA)
    }

    /// The changes of commit `sha`: (number, state, close code).
    fn changes_of(&self, sha: &str) -> Vec<(String, String, String)> {
        self.sn
            .lock()
            .unwrap()
            .changes
            .iter()
            .filter(|c| c["correlation_id"].ends_with(sha))
            .map(|c| {
                (
                    c["number"].to_string(),
                    c["state"].to_string(),
                    c.get("close_code").cloned().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// The repository's `.changegate.toml` on its default branch, for ServiceNow.
fn config(extra: &str) -> String {
    format!(
        "[servicenow]\nstandard_template = \"{TEMPLATE}\"\nassignment_group = \"Payments\"\n\n{extra}"
    )
}

fn start(dir: &Path, gh: &FakeGitHub, sn: &Instance) -> Serve {
    let env = sn.env();
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Serve::start_with(dir, &gh.server.uri(), &extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn on_servicenow_a_pre_approved_deployment_is_approved_and_its_outcome_closes_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let sn = Instance::start().await;
    let gh = FakeGitHub::start(Some(&config(PRE_APPROVE))).await;
    let serve = start(dir.path(), &gh, &sn);
    assert_eq!(get(&serve, "/readyz").await.0, 200);
    let body = protection_rule(&gh.server.uri());
    // Two deliveries of one deployment at once: one change in the instance, one callback.
    let (a, b) = tokio::join!(
        signed(&serve, "deployment_protection_rule", "d-1", &body),
        signed(&serve, "deployment_protection_rule", "d-2", &body)
    );
    let mut codes = [a, b];
    codes.sort_unstable();
    assert_eq!(codes, [200, 202], "{}", serve.log());
    let callbacks = gh.until("decision", |c| !c.is_empty()).await;
    assert_eq!(callbacks[0]["state"], "approved", "{callbacks:?}");
    let comment = callbacks[0]["comment"].as_str().unwrap();
    assert!(
        comment.contains("pre-approved") && comment.contains("CHG0030001"),
        "{comment}"
    );
    let changes = sn.changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].1, "-1", "implementing: {changes:?}");
    // The ledger beside the instance keeps the server's claims, never a change.
    assert!(ledger(dir.path()).is_file());
    assert!(super::changes(dir.path()).is_empty());

    let status = deployment_status(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_status", "d-3", &status).await,
        202
    );
    let started = Instant::now();
    while sn.changes()[0].1 != "3" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?} {}",
            sn.changes(),
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sn.changes()[0].2, "successful", "{:?}", sn.changes());
    assert_eq!(gh.decisions().len(), 1);
    let log = serve.log();
    assert!(!log.contains(PASSWORD), "{log}");
    assert_eq!(serve.stop(), Some(0));
    gh.server.verify().await;
    sn.server.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_servicenow_a_wait_for_the_approver_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sn = Instance::start().await;
    let gh = FakeGitHub::start(Some(&config(&needs_approval("60s")))).await;
    let serve = start(dir.path(), &gh, &sn);
    let body = protection_rule(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_protection_rule", "d-1", &body).await,
        202
    );
    let callbacks = gh.until("status report", |c| !c.is_empty()).await;
    assert!(callbacks[0].get("state").is_none(), "{callbacks:?}");
    let comment = callbacks[0]["comment"].as_str().unwrap();
    assert!(
        comment.contains("waiting for approval") && comment.contains("CHG0030001"),
        "{comment}"
    );
    // Stopped while the change waits in the instance: the wait stays in the ledger.
    assert_eq!(serve.stop(), Some(0));
    // The approver decides in ServiceNow while no server runs.
    {
        let mut s = sn.sn.lock().unwrap();
        let i = s
            .changes
            .iter()
            .position(|c| c["correlation_id"].ends_with(SHA))
            .unwrap();
        s.decide(i, &Verdict::Approve);
    }
    let serve = start(dir.path(), &gh, &sn);
    let callbacks = gh
        .until("decision", |c| c.iter().any(|c| c.get("state").is_some()))
        .await;
    let decisions: Vec<&Value> = callbacks
        .iter()
        .filter(|c| c.get("state").is_some())
        .collect();
    assert_eq!(decisions.len(), 1, "{callbacks:?}");
    assert_eq!(decisions[0]["state"], "approved", "{callbacks:?}");
    assert_eq!(sn.changes().len(), 1, "{:?}", sn.changes());
    assert_eq!(serve.stop(), Some(0));
    gh.server.verify().await;
    sn.server.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_servicenow_sharing_a_postgres_ledger_answer_a_deployment_once() {
    // A fresh database on the test server (made on a runtime of its own).
    let stores = tokio::task::spawn_blocking(crate::ledgers::stores)
        .await
        .unwrap();
    let Some(url) = stores.into_iter().find_map(|s| match s {
        crate::ledgers::Store::Postgres(url) => Some(url),
        crate::ledgers::Store::Sqlite => None,
    }) else {
        return;
    };
    let sn = Instance::start().await;
    let gh = FakeGitHub::start(Some(&config(PRE_APPROVE))).await;
    let mut env = sn.env();
    env.push(("CHANGEGATE_DATABASE_URL", url));
    let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Each replica in its own directory: nothing shared but the database.
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Serve::start_with(one.path(), &gh.server.uri(), &extra);
    let b = Serve::start_with(two.path(), &gh.server.uri(), &extra);
    let body = protection_rule(&gh.server.uri());
    // GitHub retries a delivery to whichever replica the balancer picks; and a second
    // delivery of the same deployment may arrive at the other one at the same moment.
    let (x, y, z) = tokio::join!(
        signed(&a, "deployment_protection_rule", "d-1", &body),
        signed(&b, "deployment_protection_rule", "d-1", &body),
        signed(&b, "deployment_protection_rule", "d-2", &body)
    );
    let mut codes = [x, y, z];
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 202], "{}{}", a.log(), b.log());
    gh.until("decision", |c| !c.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gh.decisions().len(), 1, "{:?}", gh.callbacks());
    assert_eq!(sn.changes().len(), 1, "{:?}", sn.changes());
    // The replicas kept no ledger file of their own.
    assert!(!ledger(one.path()).exists() && !ledger(two.path()).exists());
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    gh.server.verify().await;
    sn.server.assert_clean();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_jira_a_pre_approved_deployment_is_approved_and_its_outcome_completes_the_issue() {
    use crate::jira::{Fake, State};
    let dir = tempfile::tempdir().unwrap();
    let site = Remote::start().await;
    let state = Arc::new(Mutex::new(State::new(site.watch())));
    Mock::given(wiremock::matchers::any())
        .respond_with(Fake(state.clone()))
        .mount(&site)
        .await;
    let gh = FakeGitHub::start(Some(PRE_APPROVE)).await;
    let serve = Serve::start_with(
        dir.path(),
        &gh.server.uri(),
        &[
            ("CHANGEGATE_BACKEND", "jira"),
            ("CHANGEGATE_JIRA_URL", &site.uri()),
            ("CHANGEGATE_JIRA_USER", crate::jira::USER),
            ("CHANGEGATE_JIRA_TOKEN", crate::jira::TOKEN),
            ("CHANGEGATE_JIRA_PROJECT", "CHG"),
            ("NO_PROXY", "127.0.0.1,localhost"),
            ("no_proxy", "127.0.0.1,localhost"),
        ],
    );
    let body = protection_rule(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_protection_rule", "d-1", &body).await,
        202
    );
    let callbacks = gh.until("decision", |c| !c.is_empty()).await;
    assert_eq!(callbacks[0]["state"], "approved", "{callbacks:?}");
    let issues = || -> Vec<(String, String)> {
        let s = state.lock().unwrap();
        s.issues
            .iter()
            .map(|i| (i.key.clone(), i.status.clone()))
            .collect()
    };
    let found = issues();
    assert_eq!(found.len(), 1, "{found:?}");
    let comment = callbacks[0]["comment"].as_str().unwrap();
    assert!(
        comment.contains(&found[0].0.replace('-', "\\-")),
        "{comment}"
    );

    let status = deployment_status(&gh.server.uri());
    assert_eq!(
        signed(&serve, "deployment_status", "d-2", &status).await,
        202
    );
    let started = Instant::now();
    while issues()[0].1 != "Completed" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?} {}",
            issues(),
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = serve.log();
    assert!(!log.contains(crate::jira::TOKEN), "{log}");
    assert_eq!(serve.stop(), Some(0));
    gh.server.verify().await;
    site.assert_clean();
}

// ---------------------------------------------------------------------------------------
// GitLab deployment approvals on ServiceNow and Jira: the change lives in the ITSM, the
// server's claims and waits in the ledger beside it, the answer goes to GitLab.

mod gitlab {
    use super::super::gitlab::{HOOK_TOKEN, hook, serve_with};
    use super::*;
    use crate::jira::{Fake, State};
    use crate::support::gitlab::{
        BOT_TOKEN, FakeGitLab, PROJECT_ID, SHA as GL_SHA, deployment, deployment_hook,
    };

    /// A GitLab server watching the fake's project, on the backend `env` names.
    fn start(dir: &Path, gl: &FakeGitLab, env: &[(&'static str, String)]) -> Serve {
        let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        serve_with(dir, &gl.url(), &PROJECT_ID.to_string(), &extra)
    }

    /// Waits until `done` holds (or fails the test after 30s, with the server's log).
    async fn until(serve: &Serve, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {what}: {}",
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The deployment ran to `status` in GitLab, and GitLab says so in a Deployment Hook.
    async fn deployed(serve: &Serve, gl: &FakeGitLab, id: u64, status: &str) {
        gl.state.lock().unwrap().deployments[0]["status"] = status.into();
        let body = deployment_hook(id, status);
        assert_eq!(
            hook(serve, "Deployment Hook", &body, Some(HOOK_TOKEN)).await,
            202
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_servicenow_a_blocked_deployment_pre_approved_is_approved_and_its_outcome_closes_the_change()
     {
        let dir = tempfile::tempdir().unwrap();
        let sn = Instance::start().await;
        let gl = FakeGitLab::start(
            Some(&config(PRE_APPROVE)),
            vec![deployment(1, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &sn.env());
        let approvals = gl.until("approval", |a| !a.is_empty()).await;
        assert_eq!(approvals[0].0, 1);
        assert_eq!(approvals[0].1["status"], "approved", "{approvals:?}");
        let comment = approvals[0].1["comment"].as_str().unwrap();
        assert!(
            comment.contains("pre-approved") && comment.contains("CHG0030001"),
            "{comment}"
        );
        let changes = sn.changes_of(GL_SHA);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, "-1", "implementing: {changes:?}");
        // The ledger beside the instance keeps the server's claims, never a change.
        assert!(ledger(dir.path()).is_file());
        assert!(super::super::changes(dir.path()).is_empty());

        deployed(&serve, &gl, 1, "success").await;
        until(&serve, "closed change", || {
            sn.changes_of(GL_SHA)[0].1 == "3"
        })
        .await;
        let changes = sn.changes_of(GL_SHA);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].2, "successful", "{changes:?}");
        assert_eq!(gl.approvals().len(), 1, "answered once");
        let log = serve.log();
        assert!(!log.contains(PASSWORD) && !log.contains(BOT_TOKEN), "{log}");
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        sn.server.assert_clean();
    }

    /// A server whose blocked deployment waits for the ServiceNow approver: the change is
    /// raised and nothing is answered yet. Its index in the instance.
    async fn waiting_on_servicenow(serve: &Serve, gl: &FakeGitLab, sn: &Instance) -> usize {
        until(serve, "change raised", || sn.changes_of(GL_SHA).len() == 1).await;
        // A few polls of the approval: still nobody has decided.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(gl.approvals().is_empty(), "nobody decided yet");
        let s = sn.sn.lock().unwrap();
        s.changes
            .iter()
            .position(|c| c["correlation_id"].ends_with(GL_SHA))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_servicenow_a_blocked_deployment_is_approved_after_the_change_is_approved() {
        let dir = tempfile::tempdir().unwrap();
        let sn = Instance::start().await;
        let gl = FakeGitLab::start(
            Some(&config(&needs_approval("60s"))),
            vec![deployment(2, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &sn.env());
        let i = waiting_on_servicenow(&serve, &gl, &sn).await;
        sn.sn.lock().unwrap().decide(i, &Verdict::Approve);
        let approvals = gl.until("approval", |a| !a.is_empty()).await;
        assert_eq!(approvals.len(), 1, "{approvals:?}");
        assert_eq!(approvals[0].0, 2);
        assert_eq!(approvals[0].1["status"], "approved", "{approvals:?}");
        let comment = approvals[0].1["comment"].as_str().unwrap();
        assert!(comment.contains("CHG0030001"), "{comment}");
        assert_eq!(sn.changes_of(GL_SHA).len(), 1);
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        sn.server.assert_clean();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_servicenow_a_blocked_deployment_is_rejected_after_the_change_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let sn = Instance::start().await;
        let gl = FakeGitLab::start(
            Some(&config(&needs_approval("60s"))),
            vec![deployment(3, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &sn.env());
        let i = waiting_on_servicenow(&serve, &gl, &sn).await;
        sn.sn
            .lock()
            .unwrap()
            .decide(i, &Verdict::Reject("Not during the sales peak".into()));
        let approvals = gl.until("rejection", |a| !a.is_empty()).await;
        assert_eq!(approvals.len(), 1, "{approvals:?}");
        assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
        let comment = approvals[0].1["comment"].as_str().unwrap();
        assert!(comment.contains("CHG0030001"), "{comment}");
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        sn.server.assert_clean();
    }

    /// A Jira site scripted by `script`, and the server's environment for it.
    async fn jira(
        script: impl FnOnce(&mut State),
    ) -> (Remote, Arc<Mutex<State>>, Vec<(&'static str, String)>) {
        let site = Remote::start().await;
        let state = Arc::new(Mutex::new(State::new(site.watch())));
        script(&mut state.lock().unwrap());
        Mock::given(wiremock::matchers::any())
            .respond_with(Fake(state.clone()))
            .mount(&site)
            .await;
        let env = vec![
            ("CHANGEGATE_BACKEND", "jira".to_string()),
            ("CHANGEGATE_JIRA_URL", site.uri()),
            ("CHANGEGATE_JIRA_USER", crate::jira::USER.to_string()),
            ("CHANGEGATE_JIRA_TOKEN", crate::jira::TOKEN.to_string()),
            ("CHANGEGATE_JIRA_PROJECT", "CHG".to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_string()),
            ("no_proxy", "127.0.0.1,localhost".to_string()),
        ];
        (site, state, env)
    }

    /// The site's issues: (key, status).
    fn issues(state: &Arc<Mutex<State>>) -> Vec<(String, String)> {
        let s = state.lock().unwrap();
        s.issues
            .iter()
            .map(|i| (i.key.clone(), i.status.clone()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_jira_a_blocked_deployment_pre_approved_is_approved_and_its_outcome_completes_the_issue()
     {
        let dir = tempfile::tempdir().unwrap();
        let (site, state, env) = jira(|_| {}).await;
        let gl = FakeGitLab::start(
            Some(PRE_APPROVE),
            vec![deployment(4, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &env);
        let approvals = gl.until("approval", |a| !a.is_empty()).await;
        assert_eq!(approvals[0].1["status"], "approved", "{approvals:?}");
        let found = issues(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        let comment = approvals[0].1["comment"].as_str().unwrap();
        assert!(
            comment.contains("pre-approved") && comment.contains(&found[0].0.replace('-', "\\-")),
            "{comment}"
        );
        assert!(super::super::changes(dir.path()).is_empty());

        deployed(&serve, &gl, 4, "success").await;
        until(&serve, "completed issue", || {
            issues(&state)[0].1 == "Completed"
        })
        .await;
        assert_eq!(issues(&state).len(), 1);
        assert_eq!(gl.approvals().len(), 1, "answered once");
        let log = serve.log();
        assert!(
            !log.contains(crate::jira::TOKEN) && !log.contains(BOT_TOKEN),
            "{log}"
        );
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        site.assert_clean();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_jira_a_blocked_deployment_is_approved_after_the_request_is_approved() {
        let dir = tempfile::tempdir().unwrap();
        let (site, state, env) = jira(|s| s.script.approve_after = Some(2)).await;
        let gl = FakeGitLab::start(
            Some(&needs_approval("60s")),
            vec![deployment(5, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &env);
        let approvals = gl.until("approval", |a| !a.is_empty()).await;
        assert_eq!(approvals.len(), 1, "{approvals:?}");
        assert_eq!(approvals[0].0, 5);
        assert_eq!(approvals[0].1["status"], "approved", "{approvals:?}");
        let found = issues(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        let comment = approvals[0].1["comment"].as_str().unwrap();
        assert!(
            comment.contains(&found[0].0.replace('-', "\\-")),
            "{comment}"
        );
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        site.assert_clean();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_jira_a_blocked_deployment_is_rejected_after_the_request_is_declined() {
        let dir = tempfile::tempdir().unwrap();
        let (site, state, env) = jira(|s| s.script.decline_after = Some(2)).await;
        let gl = FakeGitLab::start(
            Some(&needs_approval("60s")),
            vec![deployment(6, "production", "blocked")],
        )
        .await;
        let serve = start(dir.path(), &gl, &env);
        let approvals = gl.until("rejection", |a| !a.is_empty()).await;
        assert_eq!(approvals.len(), 1, "{approvals:?}");
        assert_eq!(approvals[0].1["status"], "rejected", "{approvals:?}");
        let found = issues(&state);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, "Declined", "{found:?}");
        assert_eq!(serve.stop(), Some(0));
        gl.server.verify().await;
        site.assert_clean();
    }
}
