//! The changegate binary: parse, set up logging, run, map to an exit code.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use changegate::cli::{self, Cli, Command, Exit, action};
use changegate::domain::Platform;
use changegate::env::{self, Snapshot, Vars};
use changegate::output::console;
use changegate::serve::LogFormat;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// One `error:` line on stderr, its control characters escaped: an error can quote a
/// config file's bytes or a remote's body, and must stay one line that starts no workflow
/// command. A closed stderr leaves nowhere to report to, so that error is dropped.
fn report_error(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {}", console::one_line(message));
}

/// A panic is a bug, but the pipeline must still see the documented exit 2 (fail closed)
/// and one line, not a backtrace and 134 (the release build aborts on panic; the hook runs
/// before the abort) or 101.
fn exit_2_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| (l.file(), l.line()));
        let _ = writeln!(
            std::io::stderr(),
            "{}",
            console::panic_line(info.payload(), at)
        );
        std::process::exit(2);
    }));
}

fn init_logging(env: &Snapshot, verbose: u8, quiet: bool, serve: Option<LogFormat>) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        // A server says what it does (each delivery, one line) unless asked to be quiet.
        (false, 0) if serve.is_some() => "info",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    // Our own crate at the chosen level; dependencies one step quieter unless asked.
    let directives = env
        .get(env::LOG)
        .or_else(|| env.get(env::RUST_LOG))
        .unwrap_or_else(|| format!("warn,changegate={default}"));
    // `target=level` directives (`warn,changegate=debug`): the filter without span or
    // field matching, so the binary carries no regular-expression engine for its logs.
    let filter = directives
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    if serve == Some(LogFormat::Json) {
        // One JSON object a line, with its time: what a log collector reads.
        tracing_subscriber::fmt()
            .json()
            .with_writer(console::LogWriter)
            .with_target(false)
            .finish()
            .with(filter)
            .init();
        return;
    }
    let color = std::io::stderr().is_terminal() && env.get(env::NO_COLOR).is_none();
    tracing_subscriber::fmt()
        .with_writer(console::LogWriter)
        .with_ansi(color)
        .with_target(false)
        .without_time()
        .finish()
        .with(filter)
        .init();
}

/// The command line: as given, or, when the binary was started with no arguments as a
/// GitHub container action, the one its `INPUT_*` variables stand for.
fn command_line(env: &Snapshot) -> Result<Vec<OsString>, action::InputError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() > 1 {
        return Ok(args);
    }
    let program = args.first().cloned().unwrap_or_else(|| "changegate".into());
    Ok(action::argv(env, program)?.unwrap_or(args))
}

fn main() -> ExitCode {
    exit_2_on_panic();
    // The one read of the process environment: every layer below sees this snapshot.
    let env = Snapshot::capture();
    let args = match command_line(&env) {
        Ok(args) => args,
        Err(e) => {
            report_error(&e.to_string());
            return Exit::Error.into();
        }
    };
    let cli = match Cli::parse_args(args, &env) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            if env::platform(&env) == Platform::Github {
                // clap quotes a refused value (an action input may come from a branch name),
                // line breaks and all: no line of it may start a workflow command.
                let text = console::neutralise_lines(&e.render().to_string());
                if e.use_stderr() {
                    let _ = write!(std::io::stderr(), "{text}");
                } else {
                    let _ = console::stdout(&text);
                }
            } else {
                let _ = e.print();
            }
            return ExitCode::from(code);
        }
    };
    let serve = match &cli.command {
        Command::Serve(args) => Some(args.log_format),
        _ => None,
    };
    init_logging(&env, cli.global.verbose, cli.global.quiet, serve);
    // A command runs one thing at a time; a server answers many deliveries at once.
    let runtime = match serve {
        Some(_) => tokio::runtime::Builder::new_multi_thread(),
        None => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let workdir = match std::env::current_dir() {
        Ok(dir) => dir,
        Err(e) => {
            report_error(&e.to_string());
            return Exit::Error.into();
        }
    };
    match runtime.block_on(cli::run(cli, env, workdir)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            report_error(&format!("{e:#}"));
            Exit::Error.into()
        }
    }
}
