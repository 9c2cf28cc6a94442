//! Settings resolved from a snapshot of the environment, never from the process's own.

use std::path::Path;

use secrecy::ExposeSecret;

use super::*;
use crate::env::Snapshot;

fn resolve(args: &GlobalArgs, env: &Snapshot) -> Result<Settings> {
    // An empty directory: no default config file is found.
    let dir = tempfile::tempdir()?;
    let token = github_token(args, env);
    Settings::resolve_with(args, env, dir.path(), None, token)
}

#[test]
fn the_platform_and_the_step_files_come_from_the_snapshot() {
    let actions = Snapshot::from_pairs([
        (env::GITHUB_ACTIONS, "true"),
        (env::GITHUB_OUTPUT, "/tmp/out"),
        (env::GITHUB_STEP_SUMMARY, "/tmp/summary"),
    ]);
    let s = resolve(&GlobalArgs::default(), &actions).unwrap();
    assert_eq!(s.platform, Platform::Github);
    assert!(s.github_actions());
    assert_eq!(s.github_output.as_deref(), Some(Path::new("/tmp/out")));
    assert_eq!(s.step_summary.as_deref(), Some(Path::new("/tmp/summary")));
    assert_eq!(s.dotenv, None);

    // The step's files mean nothing outside GitHub Actions; GitLab gets its dotenv.
    let gitlab = Snapshot::from_pairs([(env::GITLAB_CI, "true"), (env::GITHUB_OUTPUT, "/tmp/out")]);
    let s = resolve(&GlobalArgs::default(), &gitlab).unwrap();
    assert_eq!(s.platform, Platform::Gitlab);
    assert!(!s.github_actions());
    assert_eq!(s.github_output, None);
    assert!(s.dotenv.is_some_and(|p| p.ends_with(DEFAULT_DOTENV)));

    let local = resolve(&GlobalArgs::default(), &Snapshot::default()).unwrap();
    assert_eq!(local.platform, Platform::Local);
}

#[test]
fn the_github_token_is_the_flag_then_the_action_input_then_github_token() {
    let token = |args: &GlobalArgs, env: &Snapshot| {
        github_token(args, env).map(|t| t.expose_secret().to_string())
    };
    let env = Snapshot::from_pairs([
        (env::GITHUB_ACTIONS, "true"),
        (env::INPUT_GITHUB_TOKEN, "input"),
        (env::GITHUB_TOKEN, "plain"),
    ]);
    let flagged = GlobalArgs {
        github_token: Some("flag".into()),
        ..GlobalArgs::default()
    };
    assert_eq!(token(&flagged, &env).as_deref(), Some("flag"));
    assert_eq!(
        token(&GlobalArgs::default(), &env).as_deref(),
        Some("input")
    );
    // The action's input counts only inside GitHub Actions.
    let outside = Snapshot::from_pairs([
        (env::INPUT_GITHUB_TOKEN, "input"),
        (env::GITHUB_TOKEN, "plain"),
    ]);
    assert_eq!(
        token(&GlobalArgs::default(), &outside).as_deref(),
        Some("plain")
    );
    assert_eq!(token(&GlobalArgs::default(), &Snapshot::default()), None);

    let s = resolve(&GlobalArgs::default(), &env).unwrap();
    let resolved = s.forge.github_token.map(|t| t.expose_secret().to_string());
    assert_eq!(resolved.as_deref(), Some("input"));
}

#[test]
fn backend_configs_carry_their_secrets_from_the_snapshot_and_never_print_them() {
    let args = GlobalArgs {
        backend: Some(BackendKind::Servicenow),
        servicenow_url: Some("https://acme.service-now.com".into()),
        ..GlobalArgs::default()
    };
    let env = Snapshot::from_pairs([
        (env::SERVICENOW_USER, "svc"),
        (env::SERVICENOW_PASSWORD, "hunter2"),
    ]);
    let s = resolve(&args, &env).unwrap();
    let BackendConfig::ServiceNow(config) = s.backend_config().unwrap() else {
        panic!("not the ServiceNow backend");
    };
    assert_eq!(config.base.as_str(), "https://acme.service-now.com/");
    assert!(matches!(
        &config.credentials,
        ServiceNowCredentials::Basic { user, .. } if user == "svc"
    ));
    assert!(!format!("{config:?}").contains("hunter2"));

    // No credentials in the snapshot: the same words as ever, at connect time.
    let bare = resolve(&args, &Snapshot::default()).unwrap();
    let err = bare.backend_config().unwrap_err().to_string();
    assert!(err.starts_with("no ServiceNow credentials"), "{err}");

    let jira = GlobalArgs {
        backend: Some(BackendKind::Jira),
        jira_url: Some("https://acme.atlassian.net".into()),
        jira_project: Some("OPS".into()),
        ..GlobalArgs::default()
    };
    let env = Snapshot::from_pairs([
        (env::JIRA_USER, "me@acme.example"),
        (env::JIRA_TOKEN, "s3cret"),
    ]);
    let s = resolve(&jira, &env).unwrap();
    let BackendConfig::Jira(config) = s.backend_config().unwrap() else {
        panic!("not the Jira backend");
    };
    assert_eq!(config.access.project, "OPS");
    assert_eq!(config.access.token.expose_secret(), "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
    let err = resolve(&jira, &Snapshot::default())
        .unwrap()
        .backend_config()
        .unwrap_err()
        .to_string();
    assert!(err.contains(env::JIRA_USER), "{err}");
}

#[test]
fn a_variant_with_another_config_keeps_the_flags_and_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let proposal = dir.path().join("proposal.toml");
    std::fs::write(&proposal, "environment = \"staging\"\n").unwrap();
    let env = Snapshot::from_pairs([(env::GITHUB_ACTIONS, "true"), (env::GITHUB_TOKEN, "t")]);
    let args = GlobalArgs {
        config: Some(proposal.clone()),
        ..GlobalArgs::default()
    };
    let s =
        Settings::resolve_with(&args, &env, dir.path(), None, github_token(&args, &env)).unwrap();
    assert_eq!(s.environment, "staging");
    let usual = s.with_config(&args, dir.path(), None).unwrap();
    assert_eq!(usual.environment, "production");
    assert_eq!(usual.config_path, None);
    assert_eq!(usual.platform, Platform::Github);
    assert!(usual.forge.github_token.is_some());
}
