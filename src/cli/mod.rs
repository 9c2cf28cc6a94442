//! The command line: clap definitions, and one file per command.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::env::Snapshot;
use crate::forge::Forge;
use crate::http::Budget;
use crate::pipeline::default_config;
use crate::settings::{self, GlobalArgs, Settings};

/// What every command gets (the flow's context: settings, workdir, variables, forge), and
/// how a command ended; the door re-exports them from the flow.
pub use crate::flow::{Ctx, Exit};

pub mod action;
mod announce;
mod approve;
mod change;
mod config;
mod gate;
mod history;
mod incident;
mod ledger;
mod policy;
mod present;
mod record;
pub mod reference;
mod report;
mod simulate;
mod status;
mod sync;
pub mod usage;
mod verify;

/// changegate: opens a change record for a deploy, decides whether it is pre-approved from
/// the team's track record, and passes or blocks the deploy by its exit code.
///
/// Exit codes: 0 pass, 1 blocked, 2 error.
#[derive(Debug, Parser)]
#[command(
    name = "changegate",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 pass, 1 blocked (the deploy must not proceed), 2 error (fail closed)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open or update the change, decide, wait for approval if needed; the exit code tells the pipeline.
    Gate(gate::GateArgs),
    /// Only open or update the change record; print its id.
    Open(change::ChangeArgs),
    /// Record the deploy outcome and close the change.
    Record(record::RecordArgs),
    /// After the verification window: a change with a linked incident becomes a failure ("failed after deploy").
    Verify(verify::VerifyArgs),
    /// Show the change for this pipeline (or --change ID).
    Status(status::StatusArgs),
    /// Tickets that follow the work: the tickets a pull request or an issue references hear of its step (backlog, sprint, opened, merged).
    Sync(sync::SyncArgs),
    /// KPIs per sprint: text, markdown, json, or html with charts (--format).
    Report(report::ReportArgs),
    /// The trust state: `explain` it; `simulate` the history under other policy values.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The config file: `check` it, print its JSON `schema`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Ledgers only (local, postgres): approve a change waiting for approval.
    Approve(approve::DecideArgs),
    /// Ledgers only (local, postgres): reject a change waiting for approval.
    Reject(approve::DecideArgs),
    /// Ledgers only (local, postgres): link an incident to a change (--change ID --id INC-1).
    Incident(incident::IncidentArgs),
    /// Run the gate as an HTTP service for GitHub's custom deployment protection rules.
    Serve(crate::serve::ServeArgs),
    /// Ledgers only (local, postgres): `migrate` the ledger's schema by hand (every command
    /// migrates it when needed).
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Ledgers only (local, postgres): `import` the forge's deployment history (GitHub
    /// Deployments, GitLab deployments) as closed changes, so the trust ramp starts from it.
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// The sprint's upcoming changes, each with its status, published to a sticky tracking
    /// issue (edited in place; nothing written when nothing changed).
    Announce(announce::AnnounceArgs),
}

impl Cli {
    /// Parses a command line, refusing a global option or a format the command does not use
    /// (see [`usage`]). An empty environment variable counts as unset, as it does
    /// everywhere in changegate: CI systems set variables to "" for inputs left out (a
    /// GitLab component's `variables:`, an action's `env:`), and that must not read as an
    /// empty `--config` or an invalid `--backend`. `env` is the run's environment, which
    /// clap reads again for the options' variables: the two agree, as both are taken at start.
    pub fn parse_args(args: Vec<OsString>, env: &Snapshot) -> Result<Cli, clap::Error> {
        let mut cmd = usage::tailor(empty_env_is_unset(Cli::command(), env));
        let matches = cmd.try_get_matches_from_mut(args)?;
        usage::check(&cmd, &matches)?;
        Cli::from_arg_matches(&matches)
    }
}

fn empty_env_is_unset(cmd: clap::Command, env: &Snapshot) -> clap::Command {
    cmd.mut_args(|arg| {
        // Set in the process yet unset for changegate: present, and blank.
        let empty = arg
            .get_env()
            .is_some_and(|name| name.to_str().is_some_and(|name| env.is_set_blank(name)));
        if empty { arg.env(None) } else { arg }
    })
    .mut_subcommands(|sub| empty_env_is_unset(sub, env))
}

/// Runs the parsed command line in `workdir`, with the environment `env` the run started
/// with (the only one any layer reads).
pub async fn run(cli: Cli, env: Snapshot, workdir: PathBuf) -> Result<Exit> {
    // The server is its own door: each delivery reads its repository's config itself.
    if let Command::Serve(args) = cli.command {
        return crate::serve::run(args, cli.global, env, workdir).await;
    }
    // In a pull/merge request pipeline the default branch's copy governs; the schema needs
    // no config at all. The config is not read yet: the default budget covers fetching it,
    // and what that spends counts towards the configured one.
    let early = Budget::default();
    let github_token = settings::github_token(&cli.global, &env);
    let governing = match &cli.command {
        Command::Config(config::ConfigCommand::Schema) => None,
        _ => {
            default_config::fetch(
                &env,
                &workdir,
                cli.global.config.as_deref(),
                github_token.as_ref(),
                &early,
            )
            .await?
        }
    };
    if let Command::Config(cmd) = &cli.command {
        let sources = config::Sources {
            env: &env,
            workdir: &workdir,
            governing: governing.as_ref(),
            github_token,
        };
        return config::run(cmd, &cli.global, sources);
    }
    let settings = Settings::resolve_with(
        &cli.global,
        &env,
        &workdir,
        governing.as_ref(),
        github_token,
    )?;
    settings.budget.absorb(&early);
    // One forge per run: every annotation of the run shares its clients and App token.
    let forge = Forge::new(&settings);
    let ctx = Ctx {
        settings: &settings,
        workdir: &workdir,
        forge: &forge,
    };
    let global = cli.global;
    match cli.command {
        Command::Gate(args) => gate::run(&ctx, &args).await,
        Command::Open(args) => gate::open(&ctx, &args).await,
        Command::Record(args) => record::run(&ctx, &args).await,
        Command::Verify(args) => verify::run(&ctx, &args).await,
        Command::Incident(args) => incident::run(&ctx, &args).await,
        Command::Status(args) => status::run(&ctx, &args).await,
        Command::Sync(args) => sync::run(&ctx, &args).await,
        Command::Report(args) => report::run(&ctx, &args).await,
        Command::Policy(cmd) => policy::run(&ctx, &cmd, &global).await,
        Command::Approve(args) => approve::run(&ctx, &args, true).await,
        Command::Reject(args) => approve::run(&ctx, &args, false).await,
        Command::Ledger(cmd) => ledger::run(&ctx, &cmd).await,
        Command::History(cmd) => history::run(&ctx, &cmd).await,
        Command::Announce(args) => announce::run(&ctx, &args).await,
        Command::Config(_) | Command::Serve(_) => Ok(Exit::Error),
    }
}
