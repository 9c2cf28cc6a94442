//! Every environment variable changegate reads, in one place, and the one read of the
//! process environment ([`Snapshot::capture`]).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};

use crate::domain::Platform;

pub const CONFIG: &str = "CHANGEGATE_CONFIG";
pub const BACKEND: &str = "CHANGEGATE_BACKEND";
pub const ENVIRONMENT: &str = "CHANGEGATE_ENVIRONMENT";
pub const SERVICE: &str = "CHANGEGATE_SERVICE";
pub const MODE: &str = "CHANGEGATE_MODE";
pub const LEDGER: &str = "CHANGEGATE_LEDGER";
/// The PostgreSQL ledger's `postgres://` URL (a secret: it may carry the password).
pub const DATABASE_URL: &str = "CHANGEGATE_DATABASE_URL";
/// Test-only: seconds the ledger holds its write transaction open before committing, so a
/// test can kill a gate inside it. Never set it in a pipeline.
pub const TEST_PAUSE_IN_TX: &str = "CHANGEGATE_TEST_PAUSE_IN_TX";
pub const DOTENV: &str = "CHANGEGATE_DOTENV";
pub const NOW: &str = "CHANGEGATE_NOW";
pub const LOG: &str = "CHANGEGATE_LOG";
pub const RUST_LOG: &str = "RUST_LOG";
pub const NO_COLOR: &str = "NO_COLOR";
pub const TESTS_PASSED: &str = "CHANGEGATE_TESTS_PASSED";
pub const REVIEWED: &str = "CHANGEGATE_REVIEWED";
/// Set by the GitLab component: the prefix of its jobs' names, so that a waiting gate can
/// name the manual jobs `<prefix>-approve` and `<prefix>-reject` as the way to decide.
pub const JOB_PREFIX: &str = "CHANGEGATE_JOB_PREFIX";

pub const SERVICENOW_URL: &str = "CHANGEGATE_SERVICENOW_URL";
pub const SERVICENOW_USER: &str = "CHANGEGATE_SERVICENOW_USER";
pub const SERVICENOW_PASSWORD: &str = "CHANGEGATE_SERVICENOW_PASSWORD";
pub const SERVICENOW_CLIENT_ID: &str = "CHANGEGATE_SERVICENOW_CLIENT_ID";
pub const SERVICENOW_CLIENT_SECRET: &str = "CHANGEGATE_SERVICENOW_CLIENT_SECRET";
pub const SERVICENOW_TOKEN: &str = "CHANGEGATE_SERVICENOW_TOKEN";

pub const JIRA_URL: &str = "CHANGEGATE_JIRA_URL";
pub const JIRA_USER: &str = "CHANGEGATE_JIRA_USER";
pub const JIRA_TOKEN: &str = "CHANGEGATE_JIRA_TOKEN";
pub const JIRA_PROJECT: &str = "CHANGEGATE_JIRA_PROJECT";

pub const GITHUB_TOKEN: &str = "GITHUB_TOKEN";
pub const CHANGEGATE_GITHUB_TOKEN: &str = "CHANGEGATE_GITHUB_TOKEN";
pub const GITHUB_APP_ID: &str = "CHANGEGATE_GITHUB_APP_ID";
pub const GITHUB_APP_PRIVATE_KEY: &str = "CHANGEGATE_GITHUB_APP_PRIVATE_KEY";
pub const GITLAB_TOKEN: &str = "CHANGEGATE_GITLAB_TOKEN";

// `changegate serve`.
pub const LISTEN: &str = "CHANGEGATE_LISTEN";
pub const WEBHOOK_SECRET: &str = "CHANGEGATE_WEBHOOK_SECRET";
/// The GitLab instance serve answers deployment approvals on (base URL; the API is
/// `<url>/api/v4`), the secret token its webhooks carry, the projects it watches
/// (comma-separated ids or paths) besides those that sent a hook, and how often it looks.
pub const GITLAB_URL: &str = "CHANGEGATE_GITLAB_URL";
pub const GITLAB_WEBHOOK_TOKEN: &str = "CHANGEGATE_GITLAB_WEBHOOK_TOKEN";
pub const GITLAB_PROJECTS: &str = "CHANGEGATE_GITLAB_PROJECTS";
pub const GITLAB_POLL: &str = "CHANGEGATE_GITLAB_POLL";

// GitHub Actions.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
pub const GITHUB_SHA: &str = "GITHUB_SHA";
pub const GITHUB_REF: &str = "GITHUB_REF";
pub const GITHUB_REF_NAME: &str = "GITHUB_REF_NAME";
pub const GITHUB_HEAD_REF: &str = "GITHUB_HEAD_REF";
pub const GITHUB_BASE_REF: &str = "GITHUB_BASE_REF";
pub const GITHUB_EVENT_NAME: &str = "GITHUB_EVENT_NAME";
pub const GITHUB_EVENT_PATH: &str = "GITHUB_EVENT_PATH";
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";
pub const GITHUB_RUN_ATTEMPT: &str = "GITHUB_RUN_ATTEMPT";
pub const GITHUB_ACTOR: &str = "GITHUB_ACTOR";
pub const GITHUB_TRIGGERING_ACTOR: &str = "GITHUB_TRIGGERING_ACTOR";
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
pub const GITHUB_WORKSPACE: &str = "GITHUB_WORKSPACE";

// GitHub container action inputs, exactly as the runner names them: `INPUT_` and the
// input name upper-cased, hyphens kept (so they cannot be shell variables, only env entries).
pub const INPUT_COMMAND: &str = "INPUT_COMMAND";
pub const INPUT_ENVIRONMENT: &str = "INPUT_ENVIRONMENT";
pub const INPUT_SERVICE: &str = "INPUT_SERVICE";
pub const INPUT_BACKEND: &str = "INPUT_BACKEND";
pub const INPUT_CONFIG: &str = "INPUT_CONFIG";
pub const INPUT_OUTCOME: &str = "INPUT_OUTCOME";
pub const INPUT_WAIT: &str = "INPUT_WAIT";
pub const INPUT_MODE: &str = "INPUT_MODE";
pub const INPUT_DRY_RUN: &str = "INPUT_DRY-RUN";
pub const INPUT_EMERGENCY: &str = "INPUT_EMERGENCY";
pub const INPUT_GITHUB_TOKEN: &str = "INPUT_GITHUB-TOKEN";
pub const INPUT_SERVICENOW_URL: &str = "INPUT_SERVICENOW-URL";
pub const INPUT_JIRA_URL: &str = "INPUT_JIRA-URL";
pub const INPUT_JIRA_PROJECT: &str = "INPUT_JIRA-PROJECT";
pub const INPUT_CHANGE: &str = "INPUT_CHANGE";
pub const INPUT_BY: &str = "INPUT_BY";
pub const INPUT_COMMENT: &str = "INPUT_COMMENT";
pub const INPUT_FROM: &str = "INPUT_FROM";
pub const INPUT_SINCE: &str = "INPUT_SINCE";
pub const INPUT_FORMAT: &str = "INPUT_FORMAT";
pub const INPUT_SPRINTS: &str = "INPUT_SPRINTS";
pub const INPUT_SPRINT: &str = "INPUT_SPRINT";
pub const INPUT_OUTPUT: &str = "INPUT_OUTPUT";
pub const INPUT_ALL: &str = "INPUT_ALL";
pub const INPUT_INCIDENT: &str = "INPUT_INCIDENT";
pub const INPUT_SET: &str = "INPUT_SET";

// GitLab CI.
pub const GITLAB_CI: &str = "GITLAB_CI";
pub const CI_API_V4_URL: &str = "CI_API_V4_URL";
pub const CI_PROJECT_PATH: &str = "CI_PROJECT_PATH";
pub const CI_PROJECT_ID: &str = "CI_PROJECT_ID";
pub const CI_PROJECT_URL: &str = "CI_PROJECT_URL";
pub const CI_PROJECT_NAME: &str = "CI_PROJECT_NAME";
pub const CI_COMMIT_SHA: &str = "CI_COMMIT_SHA";
pub const CI_COMMIT_BEFORE_SHA: &str = "CI_COMMIT_BEFORE_SHA";
pub const CI_COMMIT_REF_NAME: &str = "CI_COMMIT_REF_NAME";
pub const CI_COMMIT_BRANCH: &str = "CI_COMMIT_BRANCH";
pub const CI_COMMIT_TAG: &str = "CI_COMMIT_TAG";
pub const CI_PROJECT_DIR: &str = "CI_PROJECT_DIR";
pub const CI_COMMIT_TITLE: &str = "CI_COMMIT_TITLE";
pub const CI_COMMIT_MESSAGE: &str = "CI_COMMIT_MESSAGE";
pub const CI_COMMIT_TIMESTAMP: &str = "CI_COMMIT_TIMESTAMP";
pub const CI_COMMIT_AUTHOR: &str = "CI_COMMIT_AUTHOR";
pub const CI_MERGE_REQUEST_IID: &str = "CI_MERGE_REQUEST_IID";
pub const CI_MERGE_REQUEST_TITLE: &str = "CI_MERGE_REQUEST_TITLE";
pub const CI_MERGE_REQUEST_DESCRIPTION: &str = "CI_MERGE_REQUEST_DESCRIPTION";
pub const CI_MERGE_REQUEST_LABELS: &str = "CI_MERGE_REQUEST_LABELS";
pub const CI_MERGE_REQUEST_SOURCE_BRANCH_NAME: &str = "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME";
pub const CI_MERGE_REQUEST_TARGET_BRANCH_NAME: &str = "CI_MERGE_REQUEST_TARGET_BRANCH_NAME";
pub const CI_MERGE_REQUEST_SOURCE_BRANCH_SHA: &str = "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA";
pub const CI_MERGE_REQUEST_DIFF_BASE_SHA: &str = "CI_MERGE_REQUEST_DIFF_BASE_SHA";
pub const CI_MERGE_REQUEST_PROJECT_URL: &str = "CI_MERGE_REQUEST_PROJECT_URL";
pub const CI_PIPELINE_URL: &str = "CI_PIPELINE_URL";
pub const CI_JOB_URL: &str = "CI_JOB_URL";
pub const CI_ENVIRONMENT_NAME: &str = "CI_ENVIRONMENT_NAME";
pub const CI_DEFAULT_BRANCH: &str = "CI_DEFAULT_BRANCH";
pub const GITLAB_USER_LOGIN: &str = "GITLAB_USER_LOGIN";
pub const GITLAB_USER_EMAIL: &str = "GITLAB_USER_EMAIL";
/// `announce`'s chat webhook (Slack-compatible): a secret, since the URL alone lets anyone
/// post; never logged, never in an error.
pub const ANNOUNCE_WEBHOOK_URL: &str = "CHANGEGATE_ANNOUNCE_WEBHOOK_URL";

pub const CI_JOB_STATUS: &str = "CI_JOB_STATUS";
pub const CI_JOB_TOKEN: &str = "CI_JOB_TOKEN";

/// Every name above: what [`Snapshot::capture`] copies out of the process environment.
/// A test checks that no constant is missing from it.
pub const ALL: &[&str] = &[
    CONFIG,
    BACKEND,
    ENVIRONMENT,
    SERVICE,
    MODE,
    LEDGER,
    DATABASE_URL,
    TEST_PAUSE_IN_TX,
    DOTENV,
    NOW,
    LOG,
    RUST_LOG,
    NO_COLOR,
    TESTS_PASSED,
    REVIEWED,
    JOB_PREFIX,
    SERVICENOW_URL,
    SERVICENOW_USER,
    SERVICENOW_PASSWORD,
    SERVICENOW_CLIENT_ID,
    SERVICENOW_CLIENT_SECRET,
    SERVICENOW_TOKEN,
    JIRA_URL,
    JIRA_USER,
    JIRA_TOKEN,
    JIRA_PROJECT,
    GITHUB_TOKEN,
    CHANGEGATE_GITHUB_TOKEN,
    GITHUB_APP_ID,
    GITHUB_APP_PRIVATE_KEY,
    GITLAB_TOKEN,
    LISTEN,
    WEBHOOK_SECRET,
    GITLAB_URL,
    GITLAB_WEBHOOK_TOKEN,
    GITLAB_PROJECTS,
    GITLAB_POLL,
    ANNOUNCE_WEBHOOK_URL,
    GITHUB_ACTIONS,
    GITHUB_API_URL,
    GITHUB_SERVER_URL,
    GITHUB_REPOSITORY,
    GITHUB_SHA,
    GITHUB_REF,
    GITHUB_REF_NAME,
    GITHUB_HEAD_REF,
    GITHUB_BASE_REF,
    GITHUB_EVENT_NAME,
    GITHUB_EVENT_PATH,
    GITHUB_RUN_ID,
    GITHUB_RUN_ATTEMPT,
    GITHUB_ACTOR,
    GITHUB_TRIGGERING_ACTOR,
    GITHUB_OUTPUT,
    GITHUB_STEP_SUMMARY,
    GITHUB_WORKSPACE,
    INPUT_COMMAND,
    INPUT_ENVIRONMENT,
    INPUT_SERVICE,
    INPUT_BACKEND,
    INPUT_CONFIG,
    INPUT_OUTCOME,
    INPUT_WAIT,
    INPUT_MODE,
    INPUT_DRY_RUN,
    INPUT_EMERGENCY,
    INPUT_GITHUB_TOKEN,
    INPUT_SERVICENOW_URL,
    INPUT_JIRA_URL,
    INPUT_JIRA_PROJECT,
    INPUT_CHANGE,
    INPUT_BY,
    INPUT_COMMENT,
    INPUT_FROM,
    INPUT_SINCE,
    INPUT_FORMAT,
    INPUT_SPRINTS,
    INPUT_SPRINT,
    INPUT_OUTPUT,
    INPUT_ALL,
    INPUT_INCIDENT,
    INPUT_SET,
    GITLAB_CI,
    CI_API_V4_URL,
    CI_PROJECT_PATH,
    CI_PROJECT_ID,
    CI_PROJECT_URL,
    CI_PROJECT_NAME,
    CI_COMMIT_SHA,
    CI_COMMIT_BEFORE_SHA,
    CI_COMMIT_REF_NAME,
    CI_COMMIT_BRANCH,
    CI_COMMIT_TAG,
    CI_PROJECT_DIR,
    CI_COMMIT_TITLE,
    CI_COMMIT_MESSAGE,
    CI_COMMIT_TIMESTAMP,
    CI_COMMIT_AUTHOR,
    CI_MERGE_REQUEST_IID,
    CI_MERGE_REQUEST_TITLE,
    CI_MERGE_REQUEST_DESCRIPTION,
    CI_MERGE_REQUEST_LABELS,
    CI_MERGE_REQUEST_SOURCE_BRANCH_NAME,
    CI_MERGE_REQUEST_TARGET_BRANCH_NAME,
    CI_MERGE_REQUEST_SOURCE_BRANCH_SHA,
    CI_MERGE_REQUEST_DIFF_BASE_SHA,
    CI_MERGE_REQUEST_PROJECT_URL,
    CI_PIPELINE_URL,
    CI_JOB_URL,
    CI_ENVIRONMENT_NAME,
    CI_DEFAULT_BRANCH,
    GITLAB_USER_LOGIN,
    GITLAB_USER_EMAIL,
    CI_JOB_STATUS,
    CI_JOB_TOKEN,
];

/// What each variable a person sets means, for the generated reference
/// (`docs/reference/environment.md`). Every `CHANGEGATE_*` name in [`ALL`] is here (a test
/// checks it); the platform's own variables that changegate reads are listed there by name.
pub const DESCRIBED: &[(&str, &str)] = &[
    (
        CONFIG,
        "The config file (`--config`); an explicit path must exist. Default `.changegate.toml` in the directory changegate runs in.",
    ),
    (
        BACKEND,
        "Where change records live (`--backend`): `local`, `postgres`, `servicenow` or `jira`.",
    ),
    (
        ENVIRONMENT,
        "The environment deployed to (`--environment`); default `production`, or `CI_ENVIRONMENT_NAME` under GitLab CI.",
    ),
    (
        SERVICE,
        "The service deployed (`--service`); default the repository name.",
    ),
    (MODE, "`enforce` (default) or `observe` (`--mode`)."),
    (
        LEDGER,
        "Path of the embedded SQLite ledger (`--ledger`); default `.changegate/ledger.db`.",
    ),
    (
        DATABASE_URL,
        "The PostgreSQL ledger's `postgres://user:password@host:5432/db` URL, with libpq's `sslmode` and `sslrootcert`. A secret: read from the environment only, never logged.",
    ),
    (
        ANNOUNCE_WEBHOOK_URL,
        "The chat sink of `announce`: a Slack-compatible incoming webhook URL. A secret: read from the environment only, never logged nor shown in an error.",
    ),
    (
        TEST_PAUSE_IN_TX,
        "Test-only: seconds a ledger write holds its transaction open. Never set it in a pipeline.",
    ),
    (
        DOTENV,
        "Where to write the dotenv outputs (`--dotenv`); default `changegate.env` under GitLab CI.",
    ),
    (
        NOW,
        "The clock (RFC 3339), for what-if runs and tests; honoured only with a ledger backend or `--dry-run`, and every decision made under it says so.",
    ),
    (
        LOG,
        "Log filter on stderr: a default level and `target=level` pairs, e.g. `warn,changegate=debug` (no span or field filters).",
    ),
    (RUST_LOG, "Log filter, when `CHANGEGATE_LOG` is unset."),
    (NO_COLOR, "Set: no colour in the logs."),
    (
        TESTS_PASSED,
        "`true`/`false`: the pipeline's word that the tests passed (`--tests-passed`). Counts only when the forge cannot be asked; `false` always fails `evidence-tests`.",
    ),
    (
        REVIEWED,
        "`true`/`false`: the pipeline's word that the change was reviewed. Counts only when the forge cannot be asked; `false` always fails `evidence-review`.",
    ),
    (
        JOB_PREFIX,
        "Set by the GitLab component: a waiting gate names its manual jobs `<prefix>-approve` / `<prefix>-reject`.",
    ),
    (
        SERVICENOW_URL,
        "The ServiceNow instance's base URL (`--servicenow-url`).",
    ),
    (
        SERVICENOW_USER,
        "ServiceNow basic authentication: the integration user.",
    ),
    (
        SERVICENOW_PASSWORD,
        "ServiceNow basic authentication: its password (a secret).",
    ),
    (
        SERVICENOW_CLIENT_ID,
        "ServiceNow OAuth client-credentials grant: the client id.",
    ),
    (
        SERVICENOW_CLIENT_SECRET,
        "ServiceNow OAuth client-credentials grant: the client secret (a secret).",
    ),
    (
        SERVICENOW_TOKEN,
        "A ServiceNow bearer token, instead of a user or client (a secret).",
    ),
    (JIRA_URL, "The Jira site's base URL (`--jira-url`)."),
    (
        JIRA_USER,
        "The Jira user (an e-mail address on Jira Cloud).",
    ),
    (JIRA_TOKEN, "The Jira user's API token (a secret)."),
    (JIRA_PROJECT, "The Jira project key (`--jira-project`)."),
    (
        GITHUB_TOKEN,
        "The GitHub token for annotations, evidence, the default branch's config and `history import`; `CHANGEGATE_GITHUB_TOKEN` wins when both are set (a secret).",
    ),
    (
        CHANGEGATE_GITHUB_TOKEN,
        "The GitHub token (`--github-token`), preferred over `GITHUB_TOKEN` (a secret).",
    ),
    (
        GITHUB_APP_ID,
        "A GitHub App's id: changegate mints installation tokens instead of using a token (`serve` needs it).",
    ),
    (
        GITHUB_APP_PRIVATE_KEY,
        "The GitHub App's private key, PEM (a secret).",
    ),
    (
        GITLAB_TOKEN,
        "The GitLab token: annotations and evidence (`api` / `read_api`), the default branch's config (`read_repository`), `history import`; for `serve`, the bot user's token (a secret).",
    ),
    (
        LISTEN,
        "`serve`: the address to listen on (`--listen`); default `0.0.0.0:8080`.",
    ),
    (
        WEBHOOK_SECRET,
        "`serve`: the GitHub App's webhook secret; required to answer GitHub (a secret).",
    ),
    (
        GITLAB_URL,
        "`serve`: the GitLab instance whose deployment approvals it answers (the API is `<url>/api/v4`).",
    ),
    (
        GITLAB_WEBHOOK_TOKEN,
        "`serve`: the secret token GitLab's webhooks carry (a secret).",
    ),
    (
        GITLAB_PROJECTS,
        "`serve`: GitLab projects (ids or paths, comma-separated) polled from the start.",
    ),
    (
        GITLAB_POLL,
        "`serve`: how often blocked GitLab deployments are looked for (`--gitlab-poll`); default `30s`.",
    ),
    (
        GITHUB_API_URL,
        "GitHub's API base (set by Actions; `https://HOST/api/v3` for GitHub Enterprise Server).",
    ),
    (CI_API_V4_URL, "GitLab's API base (set by GitLab CI)."),
    (
        GITHUB_ACTOR,
        "GitHub Actions: the user who started the job; `approve`/`reject`'s default `--by`, checked against the change's author.",
    ),
    (
        GITHUB_TRIGGERING_ACTOR,
        "GitHub Actions: the user who re-ran the job; checked against the change's author too.",
    ),
    (
        GITLAB_USER_LOGIN,
        "GitLab CI: the user who started the job; `approve`/`reject`'s default `--by`, checked against the change's author.",
    ),
    (
        GITLAB_USER_EMAIL,
        "GitLab CI: that user's e-mail, checked against the change's author too.",
    ),
];

/// A source of environment variables: the run's [`Snapshot`], or a test's own map.
pub trait Vars: Send + Sync {
    /// The variable's value; empty (or only blanks) counts as unset, because runners set
    /// empty inputs and CI templates set empty variables for options left out.
    fn get(&self, name: &str) -> Option<String>;

    /// The GitHub event payload `GITHUB_EVENT_PATH` names, read from disk at most once per
    /// source (detection and the default branch's config both want it); `None` when the
    /// variable is unset.
    fn event_payload(&self) -> Option<EventPayload> {
        let path = self.get(GITHUB_EVENT_PATH)?;
        Some(EventPayload::read(path))
    }
}

impl Vars for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }
}

/// The GitHub event payload file: its path and what reading it gave. Each reader parses the
/// text into the shape it needs and words a failure its own way.
#[derive(Debug, Clone)]
pub struct EventPayload {
    /// The path, as `GITHUB_EVENT_PATH` gave it.
    pub path: String,
    /// The file's text, or why it could not be read.
    pub text: Result<Arc<str>, Unreadable>,
}

/// Why a file could not be read: the I/O error, shared (it is not `Clone`) by every reader
/// of the one read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(Arc<std::io::Error>);

impl EventPayload {
    fn read(path: String) -> EventPayload {
        let text = std::fs::read_to_string(&path)
            .map(Arc::from)
            .map_err(|e| Unreadable(Arc::new(e)));
        EventPayload { path, text }
    }
}

/// The environment as the run found it at start, taken once in `main` and handed down:
/// nothing else in changegate reads the process environment, so every layer sees the same
/// values and tests can hand in their own.
#[derive(Clone, Default)]
pub struct Snapshot {
    vars: HashMap<&'static str, OsString>,
    event: Arc<OnceLock<Option<EventPayload>>>,
}

impl std::fmt::Debug for Snapshot {
    // Values include tokens and passwords: only the names print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().copied().collect();
        names.sort_unstable();
        f.debug_struct("Snapshot")
            .field("set", &names)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Copies every variable changegate reads ([`ALL`]) out of the process environment.
    pub fn capture() -> Snapshot {
        Self::from_pairs(
            ALL.iter()
                .filter_map(|name| std::env::var_os(name).map(|v| (*name, v))),
        )
    }

    /// A snapshot of the given variables only (names outside [`ALL`] are ignored, as
    /// [`Snapshot::capture`] would never see them).
    pub fn from_pairs<V: Into<OsString>>(
        pairs: impl IntoIterator<Item = (&'static str, V)>,
    ) -> Snapshot {
        let vars = pairs
            .into_iter()
            .filter_map(|(name, value)| {
                let known = ALL.iter().find(|n| **n == name)?;
                Some((*known, value.into()))
            })
            .collect();
        Snapshot {
            vars,
            event: Arc::default(),
        }
    }

    /// Whether the variable is present but blank: changegate counts it as unset, and clap,
    /// which reads the options' variables itself, must be told so.
    pub fn is_set_blank(&self, name: &str) -> bool {
        self.vars
            .get(name)
            .is_some_and(|v| v.to_string_lossy().trim().is_empty())
    }

    /// The raw value, as the process had it (not necessarily UTF-8); empty counts as unset.
    pub fn get_os(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(name)
            .map(OsString::as_os_str)
            .filter(|v| !v.to_string_lossy().trim().is_empty())
    }
}

/// A run's environment made by a server for one webhook delivery: the server's own
/// variables (backend, secrets, logging) that [`Snapshot::retain`] keeps, plus what the
/// delivery tells (repository, commit), and the delivery's payload standing in for the
/// event file. Nothing here reads the process environment again.
impl Snapshot {
    /// Keeps only the variables `keep` says yes to.
    pub fn retain(mut self, keep: impl Fn(&str) -> bool) -> Snapshot {
        self.vars.retain(|name, _| keep(name));
        self
    }

    /// Sets `name` (a name of [`ALL`]; any other is ignored, as [`Snapshot::capture`]
    /// would never see it).
    pub fn with(mut self, name: &str, value: impl Into<OsString>) -> Snapshot {
        if let Some(known) = ALL.iter().find(|n| **n == name) {
            self.vars.insert(known, value.into());
        }
        self
    }

    /// The event payload, given as text rather than a file: `label` names it in messages
    /// (and is what `GITHUB_EVENT_PATH` says).
    pub fn with_event(self, label: &str, text: Arc<str>) -> Snapshot {
        let mut env = self.with(GITHUB_EVENT_PATH, label);
        let cell = OnceLock::new();
        let _ = cell.set(Some(EventPayload {
            path: label.to_string(),
            text: Ok(text),
        }));
        env.event = Arc::new(cell);
        env
    }
}

impl Vars for Snapshot {
    /// As `std::env::var` did: a value that is not UTF-8 counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        self.get_os(name)
            .and_then(OsStr::to_str)
            .map(str::to_string)
    }

    fn event_payload(&self) -> Option<EventPayload> {
        self.event
            .get_or_init(|| {
                let path = self.get(GITHUB_EVENT_PATH)?;
                Some(EventPayload::read(path))
            })
            .clone()
    }
}

/// Where the run is: GitHub Actions when `GITHUB_ACTIONS` is `true`, else GitLab CI when
/// `GITLAB_CI` is `true`, else a local run. The one place that decides it: outputs,
/// workflow commands, detection and the governing config all follow this answer.
pub fn platform(vars: &dyn Vars) -> Platform {
    let is_true = |name: &str| vars.get(name).is_some_and(|v| v == "true");
    if is_true(GITHUB_ACTIONS) {
        Platform::Github
    } else if is_true(GITLAB_CI) {
        Platform::Gitlab
    } else {
        Platform::Local
    }
}

/// The user who started this CI job, by every name the platform gives, login first:
/// GitHub's `GITHUB_ACTOR`, and `GITHUB_TRIGGERING_ACTOR` (who re-ran it, when another
/// user did); GitLab's `GITLAB_USER_LOGIN` and `GITLAB_USER_EMAIL`. Empty outside CI.
pub fn ci_user(vars: &dyn Vars) -> Vec<String> {
    let names: &[&str] = match platform(vars) {
        Platform::Github => &[GITHUB_ACTOR, GITHUB_TRIGGERING_ACTOR],
        Platform::Gitlab => &[GITLAB_USER_LOGIN, GITLAB_USER_EMAIL],
        Platform::Local => &[],
    };
    names
        .iter()
        .filter_map(|name| vars.get(name))
        .map(|v| v.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_ci_user_is_the_platforms_actor() {
        let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let github = vars(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "octocat"),
            ("GITLAB_USER_LOGIN", "x"),
        ]);
        assert_eq!(ci_user(&github), ["octocat"]);
        // A re-run by another user: both are the person deciding.
        let rerun = vars(&[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_ACTOR", "hubot"),
            ("GITHUB_TRIGGERING_ACTOR", "octocat"),
        ]);
        assert_eq!(ci_user(&rerun), ["hubot", "octocat"]);
        let gitlab = vars(&[
            ("GITLAB_CI", "true"),
            ("GITLAB_USER_LOGIN", "dev"),
            ("GITLAB_USER_EMAIL", "dev@example.com"),
            ("GITHUB_ACTOR", "y"),
        ]);
        assert_eq!(ci_user(&gitlab), ["dev", "dev@example.com"]);
        let local = vars(&[("GITHUB_ACTOR", "octocat"), ("GITLAB_USER_LOGIN", "dev")]);
        assert!(ci_user(&local).is_empty());
    }

    #[test]
    fn the_snapshot_captures_every_declared_name() {
        let text = include_str!("env.rs");
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": &str = \""))
            .filter_map(|(_, v)| v.split('"').next())
            .collect();
        assert!(declared.len() > 50);
        for name in declared {
            assert!(ALL.contains(&name), "{name} is missing from env::ALL");
        }
    }

    #[test]
    fn every_changegate_variable_is_described_once() {
        for name in ALL.iter().filter(|n| n.starts_with("CHANGEGATE_")) {
            let n = DESCRIBED.iter().filter(|(d, _)| d == name).count();
            assert_eq!(n, 1, "{name} must be described once in env::DESCRIBED");
        }
        for (name, about) in DESCRIBED {
            assert!(
                ALL.contains(name),
                "{name} is described but not in env::ALL"
            );
            assert!(!about.trim().is_empty(), "{name} has an empty description");
        }
    }

    #[test]
    fn blank_counts_as_unset_and_only_known_names_are_kept() {
        let env = Snapshot::from_pairs([
            (GITHUB_ACTIONS, "true"),
            (SERVICE, "  "),
            ("SOMETHING_ELSE", "x"),
        ]);
        assert_eq!(env.get(GITHUB_ACTIONS).as_deref(), Some("true"));
        assert_eq!(env.get(SERVICE), None);
        assert!(env.is_set_blank(SERVICE));
        assert_eq!(env.get("SOMETHING_ELSE"), None);
        assert_eq!(platform(&env), Platform::Github);
        assert_eq!(platform(&Snapshot::default()), Platform::Local);
        assert!(!format!("{env:?}").contains("true"));
    }

    #[test]
    fn the_event_payload_is_read_once_per_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.json");
        std::fs::write(&path, "{}").unwrap();
        let env = Snapshot::from_pairs([(GITHUB_EVENT_PATH, path.as_os_str())]);
        let first = env.event_payload().unwrap();
        std::fs::remove_file(&path).unwrap();
        // Gone from disk, still the same answer: the one read is shared.
        let again = env.clone().event_payload().unwrap();
        assert_eq!(first.text.unwrap().as_ref(), "{}");
        assert_eq!(again.text.unwrap().as_ref(), "{}");
    }
}
