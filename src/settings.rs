//! Flags, environment, `.changegate.toml` and defaults, resolved once into [`Settings`]
//! before the domain sees any of them. Precedence: flags > environment > file > defaults.
//! (clap reads each flag's environment variable, so "flag" below means flag-or-variable.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::config::{
    AnnotateSection, BackendKind, ConfigFile, HttpSection, JiraSection, ServiceNowSection,
};
use crate::domain::change::check_name;
use crate::domain::{Mode, Platform, Policy, SprintCalendar};
use crate::env::{self, Snapshot, Vars};
use crate::http::{self, Budget};
use crate::pipeline::default_config::Governing;

/// Output format of a command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    Markdown,
    Html,
}

/// The global options, as given on the command line or in their environment variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Config file (default: .changegate.toml, if present).
    #[arg(long, global = true, env = env::CONFIG, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where change records are kept.
    #[arg(long, global = true, env = env::BACKEND, value_enum)]
    pub backend: Option<BackendKind>,
    /// Environment deployed to (default: production; GitLab: CI_ENVIRONMENT_NAME).
    #[arg(long, global = true, env = env::ENVIRONMENT, value_name = "NAME")]
    pub environment: Option<String>,
    /// Service deployed (default: the repository name).
    #[arg(long, global = true, env = env::SERVICE, value_name = "NAME")]
    pub service: Option<String>,
    /// enforce (block) or observe (decide and record, never block).
    #[arg(long, global = true, env = env::MODE, value_enum)]
    pub mode: Option<ModeArg>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Decide and print, write nothing to the ledger, the ITSM or the forge.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Path of the embedded ledger (default .changegate/ledger.db).
    #[arg(long, global = true, env = env::LEDGER, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// Write GitLab-style outputs to this dotenv file (default changegate.env under GitLab CI).
    #[arg(long, global = true, env = env::DOTENV, value_name = "PATH")]
    pub dotenv: Option<PathBuf>,
    /// ServiceNow instance URL.
    #[arg(long, global = true, env = env::SERVICENOW_URL, value_name = "URL")]
    pub servicenow_url: Option<String>,
    /// Jira site URL.
    #[arg(long, global = true, env = env::JIRA_URL, value_name = "URL")]
    pub jira_url: Option<String>,
    /// Jira project key.
    #[arg(long, global = true, env = env::JIRA_PROJECT, value_name = "KEY")]
    pub jira_project: Option<String>,
    /// GitHub token for annotations (default GITHUB_TOKEN). Prefer the environment variable.
    #[arg(long, global = true, env = env::CHANGEGATE_GITHUB_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub github_token: Option<String>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Enforce,
    Observe,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Observe => Mode::Observe,
        }
    }
}

/// Everything a command needs to know about how it was asked to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_path: Option<PathBuf>,
    pub file: ConfigFile,
    pub backend: BackendKind,
    pub environment: String,
    /// The service named by flag, environment or file; `None` means "the repository name".
    pub service: Option<String>,
    pub format: Format,
    pub dry_run: bool,
    pub ledger_path: PathBuf,
    pub calendar: SprintCalendar,
    pub policy: Policy,
    pub approval_timeout: Duration,
    pub approval_poll: Duration,
    pub verify_window: Duration,
    pub annotate: AnnotateSection,
    pub servicenow: ServiceNowSection,
    pub jira: JiraSection,
    /// The clock: real time, or `CHANGEGATE_NOW`.
    pub now: DateTime<Utc>,
    /// Set when `CHANGEGATE_NOW` moved the clock; decisions say so.
    pub clock_override: Option<String>,
    /// Where to write the dotenv outputs, if anywhere.
    pub dotenv: Option<PathBuf>,
    /// Where the run is ([`env::platform`] decided, once).
    pub platform: Platform,
    /// The step's `GITHUB_OUTPUT` file, under GitHub Actions.
    pub github_output: Option<PathBuf>,
    /// The step's `GITHUB_STEP_SUMMARY` file, under GitHub Actions.
    pub step_summary: Option<PathBuf>,
    /// The forges' API bases and credentials.
    pub forge: ForgeSettings,
    /// The run's outbound time budget, shared by every client the run builds.
    pub budget: Budget,
    /// The environment as the run found it; later layers read variables from here, never
    /// from the process.
    pub env: Snapshot,
}

/// What the run needs to talk to GitHub and GitLab: API bases and credentials, resolved
/// once with everything else.
#[derive(Debug, Clone)]
pub struct ForgeSettings {
    /// Token for GitHub: `--github-token`/`CHANGEGATE_GITHUB_TOKEN`, else the action's
    /// input, else `GITHUB_TOKEN` ([`github_token`]).
    pub github_token: Option<SecretString>,
    /// GitHub App credentials for annotations; preferred over the token when set.
    pub github_app: Option<GithubApp>,
    /// GitHub REST API base: `GITHUB_API_URL`, else `https://api.github.com`.
    pub github_api_url: String,
    /// GitLab REST API base: `CI_API_V4_URL`.
    pub gitlab_api_url: Option<String>,
    /// Token for GitLab annotations: `CHANGEGATE_GITLAB_TOKEN` (the job token cannot write notes).
    pub gitlab_token: Option<SecretString>,
}

impl ForgeSettings {
    /// The forge settings from the run's environment; `github_token` is [`github_token`]'s
    /// answer, computed once per run.
    pub fn resolve(env: &Snapshot, github_token: Option<SecretString>) -> ForgeSettings {
        let github_app = match (
            env.get(env::GITHUB_APP_ID),
            env.get(env::GITHUB_APP_PRIVATE_KEY),
        ) {
            (Some(id), Some(key)) => Some(GithubApp {
                id: id.trim().to_string(),
                private_key: SecretString::from(key),
            }),
            (None, None) => None,
            _ => {
                tracing::warn!(
                    "GitHub App auth needs both {} and {}; only one is set, so it is not used",
                    env::GITHUB_APP_ID,
                    env::GITHUB_APP_PRIVATE_KEY
                );
                None
            }
        };
        // Without a trailing `/`: paths are appended to it.
        let base = |u: String| u.trim().trim_end_matches('/').to_string();
        ForgeSettings {
            github_token,
            github_app,
            github_api_url: env
                .get(env::GITHUB_API_URL)
                .map(base)
                .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_string()),
            gitlab_api_url: env.get(env::CI_API_V4_URL).map(base),
            gitlab_token: env.get(env::GITLAB_TOKEN).map(SecretString::from),
        }
    }
}

/// The chosen backend with everything it connects with, secrets included: the backend
/// reads nothing itself. Built by [`Settings::backend_config`].
#[derive(Debug)]
pub enum BackendConfig {
    /// The embedded ledger.
    Local(LocalConfig),
    /// The ledger on PostgreSQL.
    Postgres(PostgresConfig),
    /// A ServiceNow instance.
    ServiceNow(Box<ServiceNowConfig>),
    /// A Jira site.
    Jira(Box<JiraConfig>),
}

impl BackendConfig {
    /// Where the records go, as the options and the file name it (`config check`).
    pub fn target(&self) -> String {
        match self {
            BackendConfig::Local(c) => c.path.display().to_string(),
            BackendConfig::Postgres(c) => c.shown.clone(),
            BackendConfig::ServiceNow(c) => c.section.url.clone().unwrap_or_default(),
            BackendConfig::Jira(c) => format!(
                "{} project {}",
                c.section.url.as_deref().unwrap_or_default(),
                c.section.project.as_deref().unwrap_or_default()
            ),
        }
    }
}

/// The embedded ledger's file.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The SQLite file (a regular file, or nothing yet).
    pub path: PathBuf,
}

/// The PostgreSQL ledger: its URL (a secret) and what the run allows it.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `CHANGEGATE_DATABASE_URL`.
    pub url: SecretString,
    /// The URL without its password, for messages and `config check`.
    pub shown: String,
    /// Connect and statement timeouts, inside the run's budget.
    pub timeouts: crate::itsm::local::Timeouts,
    /// Test-only: the pause inside the write transaction (`CHANGEGATE_TEST_PAUSE_IN_TX`).
    pub pause_in_tx: Option<std::time::Duration>,
}

/// A ServiceNow instance: where, how to authenticate, and the `[servicenow]` section.
#[derive(Debug, Clone)]
pub struct ServiceNowConfig {
    /// The instance's base URL, with a trailing `/`.
    pub base: url::Url,
    /// How to authenticate, read from the run's snapshot.
    pub credentials: ServiceNowCredentials,
    /// `[servicenow]` with `--servicenow-url` applied.
    pub section: ServiceNowSection,
}

/// A Jira site: where, the project, the account, and the `[jira]` section.
#[derive(Debug, Clone)]
pub struct JiraConfig {
    /// The site, the project and the account, checked.
    pub access: JiraAccess,
    /// `[jira]` with `--jira-url` / `--jira-project` applied.
    pub section: JiraSection,
}

/// A GitHub App: its id (numeric App ID or client ID, the JWT `iss`) and its private key (PEM).
#[derive(Clone)]
pub struct GithubApp {
    pub id: String,
    pub private_key: SecretString,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

pub const DEFAULT_CONFIG: &str = ".changegate.toml";
pub const DEFAULT_LEDGER: &str = ".changegate/ledger.db";
pub const DEFAULT_DOTENV: &str = "changegate.env";

impl Settings {
    /// Resolves the settings from the flags, the run's environment `env` and the config:
    /// the default branch's (`governing`, for a pull-request pipeline, see
    /// [`crate::pipeline::default_config`]), else the one named or found in `workdir`.
    /// `github_token` is [`github_token`]'s answer, computed once by the caller, which
    /// needed it before the config could be read.
    pub fn resolve_with(
        args: &GlobalArgs,
        env: &Snapshot,
        workdir: &Path,
        governing: Option<&Governing>,
        github_token: Option<SecretString>,
    ) -> Result<Settings> {
        let loaded = load_config(args.config.as_deref(), workdir, governing)?;
        Self::resolve_from(args, env, workdir, loaded, || {
            ForgeSettings::resolve(env, github_token)
        })
    }

    /// These settings with the config file at `explicit` (else the default one in
    /// `workdir`) in place of the one they were resolved with: the policy `policy simulate`
    /// compares a proposal against. What the file decides (backend, names, policy, clock,
    /// URL checks, budget) follows the other file; the flags, the environment snapshot and
    /// the forge settings are these settings' own, not read again.
    pub fn with_config(
        &self,
        args: &GlobalArgs,
        workdir: &Path,
        explicit: Option<&Path>,
    ) -> Result<Settings> {
        let loaded = load_config(explicit, workdir, None)?;
        Self::resolve_from(args, &self.env, workdir, loaded, || self.forge.clone())
    }

    /// The settings from a loaded config; `forge` gives the forge settings when their turn
    /// comes (so a warning about them keeps its place among the others).
    fn resolve_from(
        args: &GlobalArgs,
        env: &Snapshot,
        workdir: &Path,
        (config_path, file): (Option<PathBuf>, ConfigFile),
        forge: impl FnOnce() -> ForgeSettings,
    ) -> Result<Settings> {
        let backend = args.backend.or(file.backend.kind).unwrap_or_default();
        let (environment, environment_from) = match (
            args.environment.clone(),
            env.get(env::CI_ENVIRONMENT_NAME),
            file.environment.clone(),
        ) {
            (Some(e), _, _) => (e, format!("--environment ({})", env::ENVIRONMENT)),
            (None, Some(e), _) => (e, env::CI_ENVIRONMENT_NAME.to_string()),
            (None, None, Some(e)) => (e, "the config's `environment`".to_string()),
            (None, None, None) => ("production".to_string(), String::new()),
        };
        check_name(&environment).map_err(|why| {
            anyhow!("invalid environment name {environment:?} from {environment_from}: {why}")
        })?;
        let service = args.service.clone().or_else(|| file.service.clone());
        if let Some(name) = &service {
            let from = if args.service.is_some() {
                format!("--service ({})", env::SERVICE)
            } else {
                "the config's `service`".to_string()
            };
            check_name(name)
                .map_err(|why| anyhow!("invalid service name {name:?} from {from}: {why}"))?;
        }
        let mode = args.mode.map(Mode::from).or(file.mode).unwrap_or_default();
        let ledger_path = args
            .ledger
            .clone()
            .or_else(|| file.ledger.path.clone())
            .unwrap_or_else(|| workdir.join(DEFAULT_LEDGER));

        let (now, clock_override) = match env.get(env::NOW) {
            Some(text) => {
                let at = DateTime::parse_from_rfc3339(text.trim())
                    .with_context(|| format!("{} must be an RFC 3339 time such as 2026-03-02T10:00:00Z, got {text:?}", env::NOW))?
                    .with_timezone(&Utc);
                if matches!(backend, BackendKind::Local | BackendKind::Postgres) || args.dry_run {
                    (at, Some(at.to_rfc3339()))
                } else {
                    tracing::warn!(
                        "{} is ignored with the {} backend outside --dry-run",
                        env::NOW,
                        backend.as_str()
                    );
                    (Utc::now(), None)
                }
            }
            None => (Utc::now(), None),
        };

        let platform = env::platform(env);
        let github_actions = platform == Platform::Github;
        let dotenv = args
            .dotenv
            .clone()
            .or_else(|| (platform == Platform::Gitlab).then(|| workdir.join(DEFAULT_DOTENV)));
        // The step's files belong to GitHub Actions; elsewhere a stray variable means nothing.
        let step_file = |name: &str| {
            github_actions
                .then(|| env.get(name))
                .flatten()
                .map(PathBuf::from)
        };
        let github_output = step_file(env::GITHUB_OUTPUT);
        let step_summary = step_file(env::GITHUB_STEP_SUMMARY);

        let mut servicenow = file.servicenow.clone();
        if let Some(url) = args.servicenow_url.clone().filter(|u| !u.trim().is_empty()) {
            servicenow.url = Some(url);
        }
        let mut jira = file.jira.clone();
        if let Some(url) = args.jira_url.clone().filter(|u| !u.trim().is_empty()) {
            jira.url = Some(url);
        }
        if let Some(project) = args.jira_project.clone().filter(|p| !p.trim().is_empty()) {
            jira.project = Some(project);
        }
        let forge = forge();
        check_urls(
            &file.http,
            [
                (
                    "the ServiceNow URL",
                    servicenow.url.as_deref(),
                    "CHANGEGATE_SERVICENOW_USER/PASSWORD (or CLIENT_ID/CLIENT_SECRET, or TOKEN)",
                ),
                (
                    "the Jira URL",
                    jira.url.as_deref(),
                    "CHANGEGATE_JIRA_USER/TOKEN",
                ),
                (
                    env::GITHUB_API_URL,
                    Some(forge.github_api_url.as_str()),
                    "CHANGEGATE_GITHUB_TOKEN or GITHUB_TOKEN",
                ),
                (
                    env::CI_API_V4_URL,
                    forge.gitlab_api_url.as_deref(),
                    "CHANGEGATE_GITLAB_TOKEN",
                ),
            ],
        )?;
        let budget = Budget::new(file.http.deadline.0, file.http.timeout.0);

        Ok(Settings {
            calendar: SprintCalendar::new(file.sprint.start, file.sprint.length_days),
            policy: Policy {
                mode,
                params: file.policy.clone(),
                risk: file.risk.clone(),
                evidence: file.evidence.clone(),
                freezes: file.freezes.clone(),
                separate_author: file.approval.separate_author,
            },
            approval_timeout: file.approval.timeout.0,
            approval_poll: file.approval.poll.0,
            verify_window: file.verify.window.0,
            annotate: file.annotate.clone(),
            servicenow,
            jira,
            config_path,
            backend,
            environment,
            service,
            format: args.format,
            dry_run: args.dry_run,
            ledger_path,
            now,
            clock_override,
            dotenv,
            platform,
            github_output,
            step_summary,
            forge,
            budget,
            env: env.clone(),
            file,
        })
    }

    /// Whether the run is inside GitHub Actions (workflow commands, outputs, summary).
    pub fn github_actions(&self) -> bool {
        self.platform == Platform::Github
    }

    pub fn mode(&self) -> Mode {
        self.policy.mode
    }

    /// Everything the chosen backend needs before its first call: the URL, the project and
    /// the credentials for ServiceNow and Jira, a usable ledger path for the local ledger.
    /// Built when the backend is connected, not when the settings are resolved, so a
    /// command that refuses the backend anyway (`approve` on ServiceNow) says that first;
    /// `config check` builds it too, so it finds every error `gate` would find before any
    /// network call.
    pub fn backend_config(&self) -> Result<BackendConfig> {
        Ok(match self.backend {
            BackendKind::Local => {
                self.check_ledger_path()?;
                BackendConfig::Local(LocalConfig {
                    path: self.ledger_path.clone(),
                })
            }
            BackendKind::Postgres => BackendConfig::Postgres(self.postgres_access()?),
            BackendKind::Servicenow => {
                let (base, credentials) = self.servicenow_access()?;
                BackendConfig::ServiceNow(Box::new(ServiceNowConfig {
                    base,
                    credentials,
                    section: self.servicenow.clone(),
                }))
            }
            BackendKind::Jira => BackendConfig::Jira(Box::new(JiraConfig {
                access: self.jira_access()?,
                section: self.jira.clone(),
            })),
        })
    }

    /// `announce`'s chat webhook, from `CHANGEGATE_ANNOUNCE_WEBHOOK_URL` only (the URL is a
    /// secret: never in a file, on the command line, in a log or an error).
    pub fn announce_webhook(&self) -> Result<url::Url> {
        let Some(raw) = self.env.get(env::ANNOUNCE_WEBHOOK_URL) else {
            bail!(
                "[announce] sinks has \"chat\": set {} to the chat's incoming webhook URL (keep it in the CI's secrets)",
                env::ANNOUNCE_WEBHOOK_URL
            );
        };
        crate::http::check_secret_url(&raw)
            .map_err(|why| anyhow::anyhow!("{} {why}", env::ANNOUNCE_WEBHOOK_URL))
    }

    /// Where `serve` keeps what must outlive a delivery (the deliveries it has claimed, the
    /// deployments waiting for their answer) when the backend is an ITSM, which offers no
    /// atomic claim: the PostgreSQL ledger at `CHANGEGATE_DATABASE_URL` when it is set (any
    /// number of replicas share it), else the local ledger file (one replica). The changes
    /// themselves stay in the ITSM.
    pub fn serve_state_config(&self) -> Result<BackendConfig> {
        Ok(if self.env.get(env::DATABASE_URL).is_some() {
            BackendConfig::Postgres(self.postgres_access()?)
        } else {
            self.check_ledger_path()?;
            BackendConfig::Local(LocalConfig {
                path: self.ledger_path.clone(),
            })
        })
    }

    /// The PostgreSQL ledger's URL, from `CHANGEGATE_DATABASE_URL` only (a secret never
    /// belongs in a file or on the command line).
    fn postgres_access(&self) -> Result<PostgresConfig> {
        let Some(url) = self.env.get(env::DATABASE_URL) else {
            bail!(
                "the postgres backend needs {}: a postgres:// URL such as postgres://changegate@db.example.com:5432/changegate?sslmode=verify-full (keep it in the CI's secrets)",
                env::DATABASE_URL
            );
        };
        let shown = match url::Url::parse(url.trim()) {
            Ok(u) => format!(
                "postgres://{}:{}{}",
                u.host_str().unwrap_or("localhost"),
                u.port().unwrap_or(5432),
                u.path()
            ),
            Err(_) => "postgres://(unparsable URL)".to_string(),
        };
        Ok(PostgresConfig {
            url: SecretString::from(url),
            shown,
            timeouts: crate::itsm::local::Timeouts::within(self.budget.request_timeout()),
            pause_in_tx: self.pause_in_tx(),
        })
    }

    /// Test-only: `CHANGEGATE_TEST_PAUSE_IN_TX` seconds, for the kill test of both ledgers.
    pub fn pause_in_tx(&self) -> Option<std::time::Duration> {
        self.env
            .get(env::TEST_PAUSE_IN_TX)
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs)
    }

    /// The ledger path is a file, or nothing yet: a directory or a device (`/dev/null`)
    /// would fail later with SQLite's less helpful words.
    fn check_ledger_path(&self) -> Result<()> {
        let path = &self.ledger_path;
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_file() => bail!(
                "cannot open the ledger {}: it is not a regular file (set {} or [ledger] path to a file)",
                path.display(),
                env::LEDGER
            ),
            _ => Ok(()),
        }
    }

    /// The ServiceNow instance's base URL (with a trailing `/`) and the credentials.
    fn servicenow_access(&self) -> Result<(url::Url, ServiceNowCredentials)> {
        let url = self
            .servicenow
            .url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "the servicenow backend needs the instance URL: set {} or `url` in [servicenow]",
                    env::SERVICENOW_URL
                )
            })?;
        let base = url::Url::parse(&format!("{}/", url.trim_end_matches('/')))
            .with_context(|| format!("invalid ServiceNow URL {url:?}"))?;
        if !matches!(base.scheme(), "https" | "http") {
            bail!("invalid ServiceNow URL {url:?}: it must start with https://");
        }
        Ok((base, ServiceNowCredentials::from_vars(&self.env)?))
    }

    /// Where `sync` writes the tickets the work references (see [`TicketConfigs`]):
    /// ServiceNow when an instance URL is set, Jira when a site URL is, whatever the
    /// backend; each with the credentials its backend would use.
    pub fn ticket_configs(&self) -> Result<TicketConfigs> {
        let set = |url: &Option<String>| url.as_deref().is_some_and(|u| !u.trim().is_empty());
        let servicenow = if set(&self.servicenow.url) {
            let (base, credentials) = self.servicenow_access()?;
            Some(ServiceNowConfig {
                base,
                credentials,
                section: self.servicenow.clone(),
            })
        } else {
            None
        };
        let jira = if set(&self.jira.url) {
            Some(JiraConfig {
                access: self.jira_site_access(false)?,
                section: self.jira.clone(),
            })
        } else {
            None
        };
        Ok(TicketConfigs { servicenow, jira })
    }

    /// The Jira site, the project key and the credentials.
    fn jira_access(&self) -> Result<JiraAccess> {
        self.jira_site_access(true)
    }

    /// The Jira site and the credentials, and the project key when `need_project`
    /// (tickets are named by their own keys).
    fn jira_site_access(&self, need_project: bool) -> Result<JiraAccess> {
        let Some(url) = self.jira.url.clone().filter(|u| !u.trim().is_empty()) else {
            bail!(
                "the jira backend needs the site URL: set [jira] url or {}",
                env::JIRA_URL
            );
        };
        let site = url::Url::parse(url.trim())
            .with_context(|| format!("{} is not a URL: {url:?}", env::JIRA_URL))?;
        if !matches!(site.scheme(), "https" | "http") {
            bail!("{} must be an http(s) URL, got {url:?}", env::JIRA_URL);
        }
        let project = self.jira.project.clone().filter(|p| !p.trim().is_empty());
        let Some(project) = project.or_else(|| (!need_project).then(String::new)) else {
            bail!(
                "the jira backend needs the project key: set [jira] project or {}",
                env::JIRA_PROJECT
            );
        };
        let (user, token) = match (self.env.get(env::JIRA_USER), self.env.get(env::JIRA_TOKEN)) {
            (Some(user), Some(token)) => (user, SecretString::from(token)),
            (user, _) => bail!(
                "the jira backend needs credentials: {} is not set ({} is the Atlassian account's email address, {} an API token of that account)",
                if user.is_none() {
                    env::JIRA_USER
                } else {
                    env::JIRA_TOKEN
                },
                env::JIRA_USER,
                env::JIRA_TOKEN
            ),
        };
        Ok(JiraAccess {
            base: url.trim().trim_end_matches('/').to_string(),
            site,
            project: project.trim().to_string(),
            user,
            token,
        })
    }
}

/// The ITSMs `sync` writes tickets on, each configured or not.
#[derive(Debug, Default)]
pub struct TicketConfigs {
    pub servicenow: Option<ServiceNowConfig>,
    pub jira: Option<JiraConfig>,
}

/// What the Jira backend connects with, resolved and checked. `Debug` leaves the token out.
#[derive(Clone)]
pub struct JiraAccess {
    /// The site URL without a trailing `/`.
    pub base: String,
    pub site: url::Url,
    pub project: String,
    /// `CHANGEGATE_JIRA_USER`: the Atlassian account's email address.
    pub user: String,
    /// `CHANGEGATE_JIRA_TOKEN`: an API token of that account.
    pub token: SecretString,
}

/// How changegate authenticates to the instance. Secrets never print: `Debug` shows only
/// which kind of credential it is.
#[derive(Clone)]
pub enum ServiceNowCredentials {
    /// `CHANGEGATE_SERVICENOW_USER` + `CHANGEGATE_SERVICENOW_PASSWORD`.
    Basic {
        user: String,
        password: SecretString,
    },
    /// `CHANGEGATE_SERVICENOW_CLIENT_ID` + `CHANGEGATE_SERVICENOW_CLIENT_SECRET`: a token from
    /// `/oauth_token.do`, by the client-credentials grant, or by the password grant when a
    /// user and password are set as well.
    OAuth {
        client_id: String,
        client_secret: SecretString,
        user: Option<(String, SecretString)>,
    },
    /// `CHANGEGATE_SERVICENOW_TOKEN`: a bearer token obtained elsewhere.
    Token(SecretString),
}

impl std::fmt::Debug for JiraAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraAccess")
            .field("site", &self.site.as_str())
            .field("project", &self.project)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ServiceNowCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

impl ServiceNowCredentials {
    /// Reads the credentials from the run's environment: a ready token wins, then OAuth,
    /// then basic.
    pub fn from_vars(vars: &dyn Vars) -> Result<ServiceNowCredentials> {
        if let Some(token) = vars.get(env::SERVICENOW_TOKEN) {
            return Ok(ServiceNowCredentials::Token(SecretString::from(token)));
        }
        let user = vars.get(env::SERVICENOW_USER);
        let password = vars.get(env::SERVICENOW_PASSWORD).map(SecretString::from);
        match (
            vars.get(env::SERVICENOW_CLIENT_ID),
            vars.get(env::SERVICENOW_CLIENT_SECRET),
        ) {
            (Some(client_id), Some(secret)) => {
                return Ok(ServiceNowCredentials::OAuth {
                    client_id,
                    client_secret: SecretString::from(secret),
                    user: user.zip(password),
                });
            }
            (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                "OAuth needs both {} and {}; only one is set",
                env::SERVICENOW_CLIENT_ID,
                env::SERVICENOW_CLIENT_SECRET
            ),
            (None, None) => {}
        }
        match (user, password) {
            (Some(user), Some(password)) => Ok(ServiceNowCredentials::Basic { user, password }),
            (Some(_), None) => anyhow::bail!(
                "{} is set but {} is not",
                env::SERVICENOW_USER,
                env::SERVICENOW_PASSWORD
            ),
            (None, Some(_)) => anyhow::bail!(
                "{} is set but {} is not",
                env::SERVICENOW_PASSWORD,
                env::SERVICENOW_USER
            ),
            (None, None) => anyhow::bail!(
                "no ServiceNow credentials: set {} and {} (basic auth), or {} and {} (OAuth), or {} (a bearer token)",
                env::SERVICENOW_USER,
                env::SERVICENOW_PASSWORD,
                env::SERVICENOW_CLIENT_ID,
                env::SERVICENOW_CLIENT_SECRET,
                env::SERVICENOW_TOKEN
            ),
        }
    }

    /// Which credential was used, for error messages. Never a value.
    pub fn describe(&self) -> &'static str {
        match self {
            ServiceNowCredentials::Basic { .. } => {
                "basic auth (CHANGEGATE_SERVICENOW_USER / CHANGEGATE_SERVICENOW_PASSWORD)"
            }
            ServiceNowCredentials::OAuth { user: None, .. } => {
                "an OAuth token from the client-credentials grant (CHANGEGATE_SERVICENOW_CLIENT_ID / CHANGEGATE_SERVICENOW_CLIENT_SECRET)"
            }
            ServiceNowCredentials::OAuth { user: Some(_), .. } => {
                "an OAuth token from the password grant (CHANGEGATE_SERVICENOW_CLIENT_ID / CHANGEGATE_SERVICENOW_CLIENT_SECRET with CHANGEGATE_SERVICENOW_USER / CHANGEGATE_SERVICENOW_PASSWORD)"
            }
            ServiceNowCredentials::Token(_) => "a bearer token (CHANGEGATE_SERVICENOW_TOKEN)",
        }
    }
}

/// Every base URL the run may send credentials to, checked before any request: user info
/// and plain http to another machine are refused (see [`http::check_base_url`]).
fn check_urls<'a>(
    cfg: &HttpSection,
    urls: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'static str)>,
) -> Result<()> {
    for (what, url, creds) in urls {
        if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
            http::check_base_url(what, url, creds, cfg.allow_insecure_http)?;
        }
    }
    Ok(())
}

/// The GitHub token: `--github-token`/`CHANGEGATE_GITHUB_TOKEN`, else the action's
/// `github-token` input, else `GITHUB_TOKEN`. The input arrives in the environment, never on
/// the command line (see `cli::action`). Computed once per run, before the config is read
/// (the default branch's copy may need it), and handed to [`Settings::resolve_with`].
pub fn github_token(args: &GlobalArgs, env: &dyn Vars) -> Option<SecretString> {
    let input_token = (env::platform(env) == Platform::Github)
        .then(|| env.get(env::INPUT_GITHUB_TOKEN))
        .flatten();
    args.github_token
        .clone()
        .or(input_token)
        .or_else(|| env.get(env::GITHUB_TOKEN))
        .filter(|t| !t.trim().is_empty())
        .map(SecretString::from)
}

/// An explicit config path must exist; the default one is optional. In a pull-request
/// pipeline the default branch's config (`governing`) stands in for the work tree's, at the
/// explicit path too when that is inside the checkout (the caller then passes it).
fn load_config(
    explicit: Option<&Path>,
    workdir: &Path,
    governing: Option<&Governing>,
) -> Result<(Option<PathBuf>, ConfigFile)> {
    match governing {
        Some(Governing::Found { label, text }) => {
            let label = PathBuf::from(label);
            let file = ConfigFile::parse(text, &label)?;
            return Ok((Some(label), file));
        }
        // As outside a pull request: a path named explicitly must exist.
        Some(Governing::Missing { label }) if explicit.is_some() => {
            anyhow::bail!(
                "the config file {label} does not exist on the default branch; in a pull \
                 request pipeline an explicit --config/{} path inside the checkout is read from \
                 there. Merge the file to the default branch first, or leave the path unset",
                env::CONFIG
            );
        }
        Some(Governing::Missing { .. }) => {
            return Ok((None, ConfigFile::default()));
        }
        None => {}
    }
    if let Some(path) = explicit {
        return Ok((Some(path.to_path_buf()), ConfigFile::load(path)?));
    }
    let default = workdir.join(DEFAULT_CONFIG);
    if default.is_file() {
        return Ok((Some(default.clone()), ConfigFile::load(&default)?));
    }
    Ok((None, ConfigFile::default()))
}

#[cfg(test)]
#[path = "tests/settings.rs"]
mod tests;
