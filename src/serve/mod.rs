//! `changegate serve`: the gate as an HTTP service that GitHub's custom deployment
//! protection rules call. One more door onto the same flow as the CLI: a delivery becomes
//! settings (the server's backend, the repository's default-branch config), the flow runs
//! (`flow::gate`, `flow::record`), and its outcome becomes a callback. What must outlive a
//! process (deliveries seen, deployments waiting for their callback) lives in the backend
//! ([`crate::itsm::Waits`]), never only in memory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::env::{self, Snapshot, Vars};
use crate::flow::Exit;
use crate::itsm::{self, Backend};
use crate::settings::{BackendConfig, ForgeSettings, GithubApp, GlobalArgs, Settings};

mod deployment;
mod github;
mod gitlab;
mod metrics;
mod signature;

/// The largest webhook body taken (GitHub's deployment payloads are a few KiB); a larger one
/// is answered 413 before it is read whole.
const BODY_LIMIT: usize = 1024 * 1024;
/// How long a stopping server waits for work in hand (decisions, callbacks) to finish.
/// A deployment still waiting for approval then stays held in the backend, for the next
/// server to pick up.
const DRAIN: Duration = Duration::from_secs(10);

/// How many deliveries are worked on at once (token, config, decision, callback). The rest
/// wait their turn, holding nothing but their payload, so that a burst of deliveries
/// neither delays the answers to new ones nor grows the memory; a deployment waiting for a
/// person gives its turn back while it waits.
const WORKING: usize = 4;

/// How long `/readyz` waits for a forge.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// `serve`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = env::LISTEN, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Log lines as text, or as JSON objects (one a line) for a log collector.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How often the GitLab projects watched are asked for deployments waiting for
    /// approval (besides at once on each deployment or job hook).
    #[arg(long, env = env::GITLAB_POLL, value_name = "DURATION", default_value = "30s",
          value_parser = gitlab::parse_poll)]
    pub gitlab_poll: Duration,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What every handler and background job shares: resolved once at start.
pub(crate) struct Server {
    /// The server's environment (backend secrets, GitHub API base, App credentials).
    env: Snapshot,
    /// The server's own flags: each delivery's settings start from them.
    global: GlobalArgs,
    /// The server's settings: the backend every delivery is recorded in.
    settings: Settings,
    /// What the server keeps between deliveries: the backend when it is a ledger, else a
    /// ledger beside the ITSM ([`Settings::serve_state_config`]).
    store: Box<dyn Backend>,
    /// What `store` is, as the `service` of the backend-errors metric (`local`, `postgres`).
    store_service: &'static str,
    workdir: PathBuf,
    /// GitHub's webhook secret and App; `None` when the server answers GitLab only.
    secret: Option<SecretString>,
    app: Option<GithubApp>,
    api_url: String,
    /// GitLab deployment approvals; `None` when the server answers GitHub only.
    gitlab: Option<gitlab::Gitlab>,
    metrics: metrics::Metrics,
    /// Work acknowledged and still under way: drained on shutdown.
    tasks: TaskTracker,
    /// Cancelled when the server stops: background loops (the GitLab poll) end.
    stop: CancellationToken,
    /// Turns to work on a delivery ([`WORKING`]).
    turns: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// The backend's store of deliveries and waits (checked at start to exist).
    fn waits(&self) -> Result<&dyn itsm::Waits> {
        self.store.waits().ok_or_else(|| {
            anyhow!(
                "the {} backend cannot keep what serve needs",
                self.settings.backend.as_str()
            )
        })
    }

    /// The service label of the store of deliveries and waits, for the backend-errors metric.
    fn store_service(&self) -> &'static str {
        self.store_service
    }
}

/// Runs the server until SIGTERM (or Ctrl-C): then stops accepting, lets work in hand
/// finish (at most [`DRAIN`]) and ends with exit 0.
pub async fn run(
    args: ServeArgs,
    global: GlobalArgs,
    env: Snapshot,
    workdir: PathBuf,
) -> Result<Exit> {
    let server = Arc::new(prepare(global, env, workdir, args.gitlab_poll)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} ({})", args.listen, env::LISTEN))?;
    let local = listener.local_addr()?;
    // The held waits are taken up before the server says it listens: what was held before
    // it started is resumed, not what another replica takes after.
    resume_held(&server).await?;
    tracing::info!(address = %local, "changegate serve listening on {local}");
    if server.gitlab.is_some() {
        tokio::spawn(gitlab::poll_forever(server.clone()));
    }
    let app = router(server.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .context("the server stopped")?;
    server.stop.cancel();
    server.tasks.close();
    if tokio::time::timeout(DRAIN, server.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "stopping with work in hand after {}s; deployments still waiting stay held in the backend for the next server",
            DRAIN.as_secs()
        );
    } else {
        tracing::info!("stopped; all work in hand finished");
    }
    Ok(Exit::Pass)
}

/// The server's settings, checked before it listens: a server that cannot verify
/// signatures, authenticate as the App or keep its waits does not start (fail closed).
/// It answers GitHub when any of the App's variables is set (then all must be), GitLab
/// when `CHANGEGATE_GITLAB_URL` or its webhook token is set (then all must be), and at
/// least one of them.
fn prepare(
    global: GlobalArgs,
    env: Snapshot,
    workdir: PathBuf,
    gitlab_poll: Duration,
) -> Result<Server> {
    let forge = ForgeSettings::resolve(&env, None);
    let gitlab = gitlab::Gitlab::from_env(&env, gitlab_poll)?;
    let github_named = [
        env::WEBHOOK_SECRET,
        env::GITHUB_APP_ID,
        env::GITHUB_APP_PRIVATE_KEY,
    ]
    .iter()
    .any(|name| env.get(name).is_some());
    let (secret, app) = if github_named || gitlab.is_none() {
        let Some(secret) = env.get(env::WEBHOOK_SECRET) else {
            bail!(
                "{} is not set: serve verifies every GitHub webhook with the secret the GitHub \
                 App was given (for GitLab deployment approvals, set {}, {} and {})",
                env::WEBHOOK_SECRET,
                env::GITLAB_URL,
                env::GITLAB_TOKEN,
                env::GITLAB_WEBHOOK_TOKEN
            );
        };
        let Some(app) = forge.github_app.clone() else {
            bail!(
                "serve acts as a GitHub App: set {} and {}",
                env::GITHUB_APP_ID,
                env::GITHUB_APP_PRIVATE_KEY
            );
        };
        // The App key must sign before the first delivery needs it.
        crate::forge::check_app_key(&app).context("the GitHub App key cannot sign")?;
        (Some(SecretString::from(secret)), Some(app))
    } else {
        (None, None)
    };
    let settings = Settings::resolve_with(&global, &env, &workdir, None, None)?;
    if settings.dry_run {
        bail!("serve does not take --dry-run: GitHub waits for a real answer");
    }
    // The ledgers keep the waits with the changes; beside an ITSM, a ledger keeps them.
    let backend = itsm::connect(&settings)?;
    let (store, store_service) = if backend.waits().is_some() {
        (backend, settings.backend.as_str())
    } else {
        let config = settings.serve_state_config()?;
        let service = match &config {
            BackendConfig::Postgres(_) => "postgres",
            _ => "local",
        };
        let store = itsm::connect_to(&settings, config)
            .context("serve keeps its deliveries and waits in a ledger beside the ITSM")?;
        (store, service)
    };
    if store.waits().is_none() {
        bail!(
            "the {} backend cannot keep the deliveries serve has seen and the deployments waiting for approval",
            settings.backend.as_str()
        );
    }
    Ok(Server {
        api_url: forge.github_api_url.clone(),
        env,
        global,
        settings,
        store,
        store_service,
        workdir,
        secret,
        app,
        gitlab,
        metrics: metrics::Metrics::new(),
        tasks: TaskTracker::new(),
        stop: CancellationToken::new(),
        turns: Arc::new(tokio::sync::Semaphore::new(WORKING)),
    })
}

/// Picks up the deployments a previous server acknowledged and never called back.
async fn resume_held(server: &Arc<Server>) -> Result<()> {
    let held = server
        .waits()?
        .held()
        .await
        .context("cannot read the deployments waiting for a callback")?;
    let deployments = held
        .iter()
        .filter(|w| w.forge == "github" || w.forge == gitlab::FORGE)
        .count();
    if deployments > 0 {
        tracing::info!("picking up {deployments} deployment(s) still waiting for an answer");
    }
    for wait in held {
        match wait.forge.as_str() {
            "github" if server.app.is_some() => {
                server
                    .tasks
                    .spawn(deployment::protect(server.clone(), wait));
            }
            gitlab::FORGE if server.gitlab.is_some() => {
                server.tasks.spawn(gitlab::protect(server.clone(), wait));
            }
            // The projects watched are read by the poll; a wait of a forge this server
            // does not answer stays held for a server that does.
            _ => {}
        }
    }
    Ok(())
}

fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/webhooks/github", post(github::webhook))
        .route("/webhooks/gitlab", post(gitlab::webhook))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(server)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the backend answers and each forge the server answers takes its credentials:
/// GitHub the App's JWT, GitLab the bot token.
async fn readyz(State(server): State<Arc<Server>>) -> Response {
    let backend = match server.waits() {
        Ok(waits) => waits.held().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let forge = match &server.app {
        Some(app) => github_ready(&server.api_url, app).await,
        None => Ok(()),
    };
    let gitlab = match &server.gitlab {
        Some(gitlab) => gitlab.ready().await,
        None => Ok(()),
    };
    match backend.and(forge).and(gitlab) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!("not ready: {e:#}");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
        }
    }
}

/// GitHub answers `GET /app` with the App's JWT (the key signs, GitHub knows the App)
/// within [`READY_WITHIN`]: a probe is not held up by retries.
async fn github_ready(api_url: &str, app: &GithubApp) -> Result<()> {
    let budget = crate::http::Budget::default();
    let http = crate::http::HttpClient::new("GitHub", &budget)?;
    match tokio::time::timeout(READY_WITHIN, crate::forge::check_app(&http, api_url, app)).await {
        Ok(answer) => answer.context("GitHub does not take the App"),
        Err(_) => bail!("GitHub did not answer within {}s", READY_WITHIN.as_secs()),
    }
}

async fn metrics(State(server): State<Arc<Server>>) -> Response {
    match server.metrics.text() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// SIGTERM (what a container runtime sends) or Ctrl-C.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("stop signal: no new connections; finishing the work in hand");
}
