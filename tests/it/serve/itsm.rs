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
        self.sn
            .lock()
            .unwrap()
            .changes
            .iter()
            .filter(|c| c["correlation_id"].ends_with(SHA))
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
