//! Which global options and output formats each command takes.
//!
//! Global options parse before or after the command (`changegate -v gate` is
//! `changegate gate -v`), but each command's `--help` lists only the ones it uses, and one
//! given on the command line to a command that does not use it is refused (exit 2) rather
//! than silently ignored. A value from an environment variable is never refused: CI sets
//! them once for every job. One table, [`COMMANDS`], says what each command uses; the
//! GitHub action checks its inputs against the same table.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, error::ErrorKind};

use crate::settings::Format;

/// Every command takes these: logging and the output format (its values are checked apart).
const ALWAYS: &[&str] = &["verbose", "quiet", "format"];

/// A command that reads or writes change records: the backend and how to reach it.
const RECORDS: &[&str] = &[
    "config",
    "backend",
    "ledger",
    "servicenow_url",
    "jira_url",
    "jira_project",
    "dry_run",
    // Annotations, and the default branch's config in a pull-request pipeline.
    "github_token",
];

/// The embedded ledger's hand-run commands.
const LEDGER: &[&str] = &["config", "backend", "ledger", "dry_run"];

/// Which service and environment.
const WHICH: &[&str] = &["environment", "service"];

/// What a change-centred command writes besides its report.
const CHANGE: &[&str] = &["mode", "dotenv"];

const TEXT_JSON: &[Format] = &[Format::Text, Format::Json];
const TEXT_JSON_MARKDOWN: &[Format] = &[Format::Text, Format::Json, Format::Markdown];
const ALL_FORMATS: &[Format] = &[Format::Text, Format::Json, Format::Markdown, Format::Html];

/// What one command uses: the groups of global options, and the output formats.
pub struct Uses {
    /// The command as typed, subcommands separated by a space (`policy explain`).
    pub command: &'static str,
    options: &'static [&'static [&'static str]],
    pub formats: &'static [Format],
}

/// Every command that runs something. Parents (`policy`, `config`) show the union of
/// their subcommands'.
pub const COMMANDS: &[Uses] = &[
    Uses {
        command: "gate",
        options: &[RECORDS, WHICH, CHANGE],
        formats: TEXT_JSON_MARKDOWN,
    },
    Uses {
        command: "open",
        options: &[RECORDS, WHICH, CHANGE],
        formats: TEXT_JSON_MARKDOWN,
    },
    Uses {
        command: "record",
        options: &[RECORDS, WHICH, CHANGE],
        formats: TEXT_JSON_MARKDOWN,
    },
    Uses {
        command: "status",
        options: &[RECORDS, WHICH, CHANGE],
        formats: TEXT_JSON_MARKDOWN,
    },
    // The tickets the work references: no change record is read or written.
    Uses {
        command: "sync",
        options: &[RECORDS, WHICH],
        formats: TEXT_JSON,
    },
    // Every change due, whatever its service and environment.
    Uses {
        command: "verify",
        options: &[RECORDS, &["mode"]],
        formats: TEXT_JSON,
    },
    Uses {
        command: "report",
        options: &[RECORDS, WHICH],
        formats: ALL_FORMATS,
    },
    Uses {
        command: "policy explain",
        options: &[RECORDS, WHICH],
        formats: TEXT_JSON,
    },
    Uses {
        command: "policy simulate",
        options: &[RECORDS, WHICH, &["mode"]],
        formats: TEXT_JSON,
    },
    // It shows the settings the options resolve to; it writes nothing.
    Uses {
        command: "config check",
        options: &[
            &[
                "config",
                "backend",
                "ledger",
                "servicenow_url",
                "jira_url",
                "jira_project",
                "github_token",
                "mode",
            ],
            WHICH,
        ],
        formats: TEXT_JSON,
    },
    // The schema is JSON whatever the format; it reads no config.
    Uses {
        command: "config schema",
        options: &[],
        formats: TEXT_JSON,
    },
    Uses {
        command: "approve",
        options: &[LEDGER, WHICH],
        formats: TEXT_JSON,
    },
    Uses {
        command: "reject",
        options: &[LEDGER, WHICH],
        formats: TEXT_JSON,
    },
    Uses {
        command: "incident",
        options: &[LEDGER],
        formats: TEXT_JSON,
    },
    // The backend every delivery is recorded in; each repository's config comes from its
    // default branch, so no `--config`, and GitHub waits for real answers: no dry run.
    Uses {
        command: "serve",
        options: &[&[
            "backend",
            "ledger",
            "servicenow_url",
            "jira_url",
            "jira_project",
        ]],
        formats: &[Format::Text],
    },
    // The forge's history into the ledger of this service and environment; the GitHub
    // token reads the deployments.
    // Reads the work and the deploys' changes; writes the notice (not in a dry run).
    Uses {
        command: "announce",
        options: &[RECORDS, WHICH, &["github_token"]],
        formats: TEXT_JSON_MARKDOWN,
    },
    Uses {
        command: "history import",
        options: &[LEDGER, WHICH, &["github_token"]],
        formats: TEXT_JSON,
    },
    // Migrating writes: a dry run has nothing to do.
    Uses {
        command: "ledger migrate",
        options: &[&["config", "backend", "ledger"]],
        formats: TEXT_JSON,
    },
];

impl Uses {
    /// Whether the command uses the global option with this id (`dry_run`).
    pub fn option(&self, id: &str) -> bool {
        ALWAYS.contains(&id) || self.options.iter().any(|group| group.contains(&id))
    }
}

/// What `command` (as typed: `policy explain`) uses; `None` for a parent or `help`.
pub fn uses(command: &str) -> Option<&'static Uses> {
    COMMANDS.iter().find(|u| u.command == command)
}

/// Whether any subcommand under `prefix` (a parent such as `policy`) uses the option.
fn some_child_uses(prefix: &str, id: &str) -> bool {
    COMMANDS
        .iter()
        .filter(|u| {
            u.command
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .any(|u| u.option(id))
}

/// The global options' ids.
fn globals(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().to_string())
        .collect()
}

/// Builds `cmd` (which copies the global options into every subcommand) and hides in each
/// subcommand's help the global options it does not use.
pub fn tailor(mut cmd: Command) -> Command {
    cmd.build();
    let globals = globals(&cmd);
    cmd.mut_subcommands(|sc| hide_unused(sc, "", &globals))
}

fn hide_unused(sc: Command, parent: &str, globals: &[String]) -> Command {
    let path = if parent.is_empty() {
        sc.get_name().to_string()
    } else {
        format!("{parent} {}", sc.get_name())
    };
    let used = |id: &str| match uses(&path) {
        Some(u) => u.option(id),
        None => some_child_uses(&path, id),
    };
    if uses(&path).is_none() && !COMMANDS.iter().any(|u| u.command.starts_with(&path)) {
        // `help`: clap's own, with no global options.
        return sc;
    }
    let formats = uses(&path).map(|u| u.formats);
    sc.mut_args(|a| {
        let id = a.get_id().as_str();
        if globals.iter().any(|g| g == id) && !used(id) {
            a.hide(true)
        } else if let (Some(formats), "format") = (formats, id) {
            // The formats this command writes, not every format some command writes.
            let names: Vec<&str> = formats.iter().map(|f| name(*f)).collect();
            a.help(format!("Output format: {}", names.join(", ")))
                .hide_possible_values(true)
        } else {
            a
        }
    })
    .mut_subcommands(|child| hide_unused(child, &path, globals))
}

/// Refuses a global option given on the command line to a command that does not use it, and
/// an output format the command cannot write. `cmd` is the [`tailor`]ed command `matches`
/// came from.
pub fn check(cmd: &Command, matches: &ArgMatches) -> Result<(), clap::Error> {
    let mut path = Vec::new();
    let mut levels = vec![matches];
    let mut m = matches;
    while let Some((name, sub)) = m.subcommand() {
        path.push(name.to_string());
        levels.push(sub);
        m = sub;
    }
    let command = path.join(" ");
    let Some(uses) = uses(&command) else {
        return Ok(());
    };
    let mut problem = None;
    for arg in cmd.get_arguments().filter(|a| a.is_global_set()) {
        let id = arg.get_id().as_str();
        let given = levels
            .iter()
            .any(|m| m.value_source(id) == Some(ValueSource::CommandLine));
        if given && !uses.option(id) {
            let flag = arg.get_long().unwrap_or(id);
            problem = Some((
                ErrorKind::ArgumentConflict,
                format!(
                    "--{flag} does not apply to `changegate {command}`; `changegate {command} --help` lists the options it takes"
                ),
            ));
            break;
        }
    }
    if problem.is_none()
        && let Some(format) = m.get_one::<Format>("format").copied()
        && !uses.formats.contains(&format)
    {
        let names: Vec<&str> = uses.formats.iter().map(|f| name(*f)).collect();
        problem = Some((
            ErrorKind::InvalidValue,
            format!(
                "`changegate {command}` cannot write --format {}: use {}",
                name(format),
                names.join(", ")
            ),
        ));
    }
    let Some((kind, message)) = problem else {
        return Ok(());
    };
    // The error shows the command's own usage line.
    let mut leaf = cmd.clone();
    for name in &path {
        let Some(sub) = leaf.find_subcommand(name).cloned() else {
            break;
        };
        leaf = sub;
    }
    Err(leaf.error(kind, message))
}

/// A format as written on the command line.
fn name(format: Format) -> &'static str {
    match format {
        Format::Text => "text",
        Format::Json => "json",
        Format::Markdown => "markdown",
        Format::Html => "html",
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    fn leaves(cmd: &Command, prefix: &str, out: &mut Vec<String>) {
        for sc in cmd.get_subcommands().filter(|sc| sc.get_name() != "help") {
            let path = format!("{prefix}{}", sc.get_name());
            if sc.has_subcommands() {
                leaves(sc, &format!("{path} "), out);
            } else {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_command_is_in_the_table_and_only_those() {
        let mut commands = Vec::new();
        leaves(&Cli::command(), "", &mut commands);
        let mut table: Vec<String> = COMMANDS.iter().map(|u| u.command.to_string()).collect();
        commands.sort();
        table.sort();
        assert_eq!(commands, table);
    }

    #[test]
    fn the_table_names_only_global_options() {
        let globals = globals(&Cli::command());
        for u in COMMANDS {
            for id in u.options.iter().flat_map(|g| g.iter()).chain(ALWAYS) {
                assert!(globals.iter().any(|g| g == id), "{}: {id}", u.command);
            }
            assert!(u.formats.contains(&Format::Text), "{}", u.command);
        }
    }

    #[test]
    fn every_option_has_help_text() {
        fn walk(cmd: &Command, path: &str) {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{path} --{id} has no help text");
            }
            for sc in cmd.get_subcommands() {
                walk(sc, &format!("{path} {}", sc.get_name()));
            }
        }
        walk(&tailor(Cli::command()), "changegate");
    }

    #[test]
    fn help_hides_the_globals_a_command_does_not_use() {
        let cmd = tailor(Cli::command());
        let shown = |path: &[&str], id: &str| {
            let sc = path
                .iter()
                .try_fold(&cmd, |c, name| c.find_subcommand(name))
                .unwrap();
            sc.get_arguments()
                .any(|a| a.get_id() == id && !a.is_hide_set())
        };
        assert!(!shown(&["approve"], "servicenow_url"));
        assert!(shown(&["approve"], "ledger"));
        assert!(shown(&["gate"], "servicenow_url"));
        assert!(!shown(&["verify"], "service"));
        assert!(!shown(&["config", "schema"], "config"));
        // A parent shows what any of its subcommands uses.
        assert!(shown(&["policy"], "service"));
        assert!(!shown(&["policy"], "dotenv"));
        let help = |path: &[&str]| {
            let sc = path
                .iter()
                .try_fold(&cmd, |c, name| c.find_subcommand(name))
                .unwrap();
            let format = sc.get_arguments().find(|a| a.get_id() == "format").unwrap();
            format.get_help().unwrap().to_string()
        };
        assert_eq!(help(&["gate"]), "Output format: text, json, markdown");
        assert_eq!(
            help(&["report"]),
            "Output format: text, json, markdown, html"
        );
        assert_eq!(help(&["policy", "explain"]), "Output format: text, json");
        // The top level lists every global option.
        assert!(shown(&[], "servicenow_url"));
    }
}
