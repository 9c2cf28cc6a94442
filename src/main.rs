//! The changegate binary: parse, set up logging, run, map to an exit code.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use changegate::cli::{self, Cli, Exit, action};
use changegate::env;
use changegate::pipeline::ProcessEnv;

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    // Our own crate at the chosen level; dependencies one step quieter unless asked.
    let directives = env::var(env::LOG)
        .or_else(|| env::var(env::RUST_LOG))
        .unwrap_or_else(|| format!("warn,changegate={default}"));
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let color = std::io::stderr().is_terminal() && env::var(env::NO_COLOR).is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_target(false)
        .without_time()
        .init();
}

/// The command line: as given, or, when the binary was started with no arguments as a
/// GitHub container action, the one its `INPUT_*` variables stand for.
fn command_line() -> Result<Vec<OsString>, action::InputError> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() > 1 {
        return Ok(args);
    }
    let program = args.first().cloned().unwrap_or_else(|| "changegate".into());
    Ok(action::argv(&ProcessEnv, program)?.unwrap_or(args))
}

fn main() -> ExitCode {
    let args = match command_line() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error.into();
        }
    };
    let cli = match Cli::parse_args(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error.into()
        }
    }
}
