//! The GitHub container action's door. The runner starts the image's entrypoint with no
//! arguments and hands every input over as `INPUT_<NAME>`: the input name upper-cased with
//! its hyphens kept (`INPUT_DRY-RUN`), an empty value meaning "not given". [`argv`] turns
//! those into an ordinary command line that clap then parses like any other, so there is
//! one parser and one set of checks for both doors.
//!
//! Nothing goes through a shell: every value becomes exactly one argument, written as
//! `--flag=value` so that a value starting with `-` stays a value and cannot become a flag.
//!
//! `github-token` is deliberately not turned into an argument: a process's arguments are
//! readable by every process on the host (`/proc/<pid>/cmdline`, `ps`), its environment is
//! not. [`crate::settings::Settings`] reads it from `INPUT_GITHUB-TOKEN` instead.

use std::ffi::OsString;

use super::usage;
use crate::env;
use crate::env::Vars;

/// The commands the action may run, as written in its `command` input.
pub const COMMANDS: &[&str] = &[
    "gate",
    "open",
    "record",
    "verify",
    "status",
    "sync",
    "announce",
    "report",
    "policy explain",
    "policy simulate",
    "config check",
    "approve",
    "reject",
    "incident",
    "history import",
];

/// Another name of `history import` in the `command` input, as the docs' first-run
/// step writes it.
pub const IMPORT_HISTORY: &str = "import-history";

/// Inputs that become the global flag of the same name.
const GLOBAL: &[(&str, &str)] = &[
    (env::INPUT_ENVIRONMENT, "--environment"),
    (env::INPUT_SERVICE, "--service"),
    (env::INPUT_BACKEND, "--backend"),
    (env::INPUT_CONFIG, "--config"),
    (env::INPUT_MODE, "--mode"),
    (env::INPUT_SERVICENOW_URL, "--servicenow-url"),
    (env::INPUT_JIRA_URL, "--jira-url"),
    (env::INPUT_JIRA_PROJECT, "--jira-project"),
    (env::INPUT_FORMAT, "--format"),
];

/// Inputs that belong to some commands: (variable, input name, flag, those commands).
const SPECIFIC: &[(&str, &str, &str, &[&str])] = &[
    (env::INPUT_WAIT, "wait", "--wait", &["gate"]),
    (env::INPUT_EMERGENCY, "emergency", "--emergency", &["gate"]),
    (env::INPUT_OUTCOME, "outcome", "--outcome", &["record"]),
    (
        env::INPUT_CHANGE,
        "change",
        "--change",
        &["approve", "reject", "status", "incident"],
    ),
    // Empty: the binary takes the user who started the run (GITHUB_ACTOR).
    (env::INPUT_BY, "by", "--by", &["approve", "reject"]),
    (
        env::INPUT_COMMENT,
        "comment",
        "--comment",
        &["approve", "reject"],
    ),
    (env::INPUT_FROM, "from", "--from", &["history import"]),
    (env::INPUT_SINCE, "since", "--since", &["history import"]),
    (env::INPUT_SPRINTS, "sprints", "--sprints", &["report"]),
    (env::INPUT_SPRINT, "sprint", "--sprint", &["announce"]),
    (env::INPUT_OUTPUT, "output", "--output", &["report"]),
    (env::INPUT_INCIDENT, "incident", "--id", &["incident"]),
];

/// An action input that cannot be turned into a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown command {0:?} in the action's `command` input: use one of {list}", list = COMMANDS.join(", "))]
    UnknownCommand(String),
    #[error(
        "the action input `{input}` applies only to `command: {only}`, not to `command: {command}`: remove it from this step"
    )]
    NotForCommand {
        input: &'static str,
        only: String,
        command: String,
    },
    #[error(
        "the action input `{input}` does not apply to `command: {command}`: remove it from this step"
    )]
    NotUsedBy {
        input: &'static str,
        command: String,
    },
    #[error("the action input `dry-run` must be true or false, got {0:?}")]
    NotABoolean(String),
    #[error("the action input `{0}` must be true or false, got {1:?}")]
    NotABooleanInput(&'static str, String),
    #[error("`command: {0}` needs the action input `{1}`")]
    MissingInput(&'static str, &'static str),
    #[error(
        "`command: record` needs the action input `outcome` (for example `outcome: ${{{{ job.status }}}}`)"
    )]
    MissingOutcome,
}

/// The command line the action's inputs stand for, starting with `program`; `None` when
/// `INPUT_COMMAND` is not set (the binary was not started as a container action).
pub fn argv(vars: &dyn Vars, program: OsString) -> Result<Option<Vec<OsString>>, InputError> {
    let Some(raw) = vars.get(env::INPUT_COMMAND) else {
        return Ok(None);
    };
    let mut words: Vec<&str> = raw.split_whitespace().collect();
    if words == [IMPORT_HISTORY] {
        words = vec!["history", "import"];
    }
    let command = words.join(" ");
    if !COMMANDS.contains(&command.as_str()) {
        return Err(InputError::UnknownCommand(raw));
    }
    let value = |name: &str| vars.get(name).map(|v| v.trim().to_string());

    // The same table the command line is checked against: an input the command would
    // ignore is refused here, in the action's words.
    let applies = |flag: &'static str| -> Result<(), InputError> {
        let input = flag.trim_start_matches('-');
        match usage::uses(&command) {
            Some(u) if !u.option(&input.replace('-', "_")) => Err(InputError::NotUsedBy {
                input,
                command: command.clone(),
            }),
            _ => Ok(()),
        }
    };
    let mut args = vec![program];
    args.extend(words.iter().map(OsString::from));
    for (name, flag) in GLOBAL {
        if let Some(v) = value(name) {
            applies(flag)?;
            args.push(format!("{flag}={v}").into());
        }
    }
    if let Some(v) = value(env::INPUT_DRY_RUN) {
        match v.to_ascii_lowercase().as_str() {
            "true" => {
                applies("--dry-run")?;
                args.push("--dry-run".into());
            }
            "false" => {}
            _ => return Err(InputError::NotABoolean(v)),
        }
    }
    for (name, input, flag, only) in SPECIFIC {
        if let Some(v) = value(name) {
            if !only.contains(&command.as_str()) {
                return Err(InputError::NotForCommand {
                    input,
                    only: only.join("` or `command: "),
                    command,
                });
            }
            args.push(format!("{flag}={v}").into());
        }
    }
    if let Some(v) = value(env::INPUT_ALL) {
        match v.to_ascii_lowercase().as_str() {
            "true" if command == "report" => args.push("--all".into()),
            "true" => {
                return Err(InputError::NotForCommand {
                    input: "all",
                    only: "report".to_string(),
                    command,
                });
            }
            "false" => {}
            _ => return Err(InputError::NotABooleanInput("all", v)),
        }
    }
    // `set`: one KEY=VALUE a line, each its own `--set`.
    if let Some(v) = value(env::INPUT_SET) {
        if command != "policy simulate" {
            return Err(InputError::NotForCommand {
                input: "set",
                only: "policy simulate".to_string(),
                command,
            });
        }
        for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
            args.push(format!("--set={line}").into());
        }
    }
    if command == "incident" && value(env::INPUT_INCIDENT).is_none() {
        return Err(InputError::MissingInput("incident", "incident"));
    }
    if command == "incident" && value(env::INPUT_CHANGE).is_none() {
        return Err(InputError::MissingInput("incident", "change"));
    }
    if command == "record" && value(env::INPUT_OUTCOME).is_none() {
        return Err(InputError::MissingOutcome);
    }
    // The action runs on GitHub: its history is GitHub's unless `from` says otherwise.
    if command == "history import" && value(env::INPUT_FROM).is_none() {
        args.push("--from=github".into());
    }
    Ok(Some(args))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Result<Option<Vec<String>>, InputError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        argv(&vars, "changegate".into()).map(|a| {
            a.map(|a| {
                a.into_iter()
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect()
            })
        })
    }

    #[test]
    fn import_history_reads_github_by_default() {
        for command in ["history import", "import-history"] {
            assert_eq!(
                run(&[
                    ("INPUT_COMMAND", command),
                    ("INPUT_SINCE", "2025-01-01"),
                    ("INPUT_DRY-RUN", "true"),
                ])
                .unwrap()
                .unwrap(),
                [
                    "changegate",
                    "history",
                    "import",
                    "--dry-run",
                    "--since=2025-01-01",
                    "--from=github"
                ]
            );
        }
        assert_eq!(
            run(&[
                ("INPUT_COMMAND", "history import"),
                ("INPUT_FROM", "gitlab")
            ])
            .unwrap()
            .unwrap(),
            ["changegate", "history", "import", "--from=gitlab"]
        );
        assert!(matches!(
            run(&[("INPUT_COMMAND", "gate"), ("INPUT_FROM", "github")]),
            Err(InputError::NotForCommand { input: "from", .. })
        ));
    }

    #[test]
    fn announce_takes_its_sprint_the_dry_run_and_the_format() {
        assert_eq!(
            run(&[
                ("INPUT_COMMAND", "announce"),
                ("INPUT_SPRINT", "next"),
                ("INPUT_DRY-RUN", "true"),
                ("INPUT_FORMAT", "json"),
            ])
            .unwrap()
            .unwrap(),
            [
                "changegate",
                "announce",
                "--format=json",
                "--dry-run",
                "--sprint=next"
            ]
        );
        assert!(matches!(
            run(&[("INPUT_COMMAND", "gate"), ("INPUT_SPRINT", "next")]),
            Err(InputError::NotForCommand {
                input: "sprint",
                ..
            })
        ));
    }

    #[test]
    fn no_command_input_means_not_an_action() {
        assert_eq!(run(&[]), Ok(None));
        assert_eq!(
            run(&[("INPUT_COMMAND", ""), ("INPUT_ENVIRONMENT", "prod")]),
            Ok(None)
        );
    }

    #[test]
    fn every_input_maps_to_its_flag() {
        let args = run(&[
            ("INPUT_COMMAND", "gate"),
            ("INPUT_ENVIRONMENT", "production"),
            ("INPUT_SERVICE", "payments-api"),
            ("INPUT_BACKEND", "servicenow"),
            ("INPUT_CONFIG", "deploy/.changegate.toml"),
            ("INPUT_MODE", "observe"),
            ("INPUT_DRY-RUN", "true"),
            ("INPUT_WAIT", "30m"),
            ("INPUT_EMERGENCY", "payments down since 09:12"),
            ("INPUT_SERVICENOW-URL", "https://acme.service-now.com"),
            ("INPUT_JIRA-URL", "https://acme.atlassian.net"),
            ("INPUT_JIRA-PROJECT", "CHG"),
            ("INPUT_GITHUB-TOKEN", "ghs_secret"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args,
            [
                "changegate",
                "gate",
                "--environment=production",
                "--service=payments-api",
                "--backend=servicenow",
                "--config=deploy/.changegate.toml",
                "--mode=observe",
                "--servicenow-url=https://acme.service-now.com",
                "--jira-url=https://acme.atlassian.net",
                "--jira-project=CHG",
                "--dry-run",
                "--wait=30m",
                "--emergency=payments down since 09:12",
            ]
        );
        assert!(
            !args.iter().any(|a| a.contains("ghs_secret")),
            "the token never goes on the command line"
        );
    }

    #[test]
    fn empty_inputs_are_not_given_and_values_are_trimmed() {
        let args = run(&[
            ("INPUT_COMMAND", " record "),
            ("INPUT_ENVIRONMENT", " staging "),
            ("INPUT_SERVICE", ""),
            ("INPUT_DRY-RUN", "false"),
            ("INPUT_WAIT", ""),
            ("INPUT_OUTCOME", "failure"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args,
            [
                "changegate",
                "record",
                "--environment=staging",
                "--outcome=failure"
            ]
        );
    }

    #[test]
    fn two_word_commands() {
        let args = run(&[("INPUT_COMMAND", "policy   explain")])
            .unwrap()
            .unwrap();
        assert_eq!(args, ["changegate", "policy", "explain"]);
        let args = run(&[
            ("INPUT_COMMAND", "config check"),
            ("INPUT_CONFIG", "x.toml"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(args, ["changegate", "config", "check", "--config=x.toml"]);
    }

    #[test]
    fn only_known_commands_run() {
        for bad in [
            "gate; rm -rf /",
            "gate && curl evil",
            "$(id)",
            "approve --by me",
            "policy",
            "--help",
            "gate --dry-run",
            "Gate",
        ] {
            assert_eq!(
                run(&[("INPUT_COMMAND", bad)]),
                Err(InputError::UnknownCommand(bad.to_string())),
                "{bad}"
            );
        }
        let message = InputError::UnknownCommand("gate; rm -rf /".into()).to_string();
        assert!(message.contains("gate, open, record"), "{message}");
    }

    #[test]
    fn approve_and_reject_take_change_by_and_comment() {
        let args = run(&[
            ("INPUT_COMMAND", "approve"),
            ("INPUT_CHANGE", "CG-7"),
            ("INPUT_BY", "octocat"),
            ("INPUT_COMMENT", "checked the rollout plan; $(id)"),
            ("INPUT_ENVIRONMENT", "production"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args,
            [
                "changegate",
                "approve",
                "--environment=production",
                "--change=CG-7",
                "--by=octocat",
                "--comment=checked the rollout plan; $(id)"
            ]
        );
        // `by` left empty: the binary takes the user who started the run.
        let args = run(&[("INPUT_COMMAND", "reject"), ("INPUT_BY", "")])
            .unwrap()
            .unwrap();
        assert_eq!(args, ["changegate", "reject"]);
        let err = run(&[("INPUT_COMMAND", "gate"), ("INPUT_BY", "octocat")]).unwrap_err();
        assert_eq!(
            err,
            InputError::NotForCommand {
                input: "by",
                only: "approve` or `command: reject".into(),
                command: "gate".into()
            }
        );
        assert!(
            err.to_string()
                .contains("applies only to `command: approve` or `command: reject`"),
            "{err}"
        );
        // Inputs that only other commands take are refused for approve.
        assert!(run(&[("INPUT_COMMAND", "approve"), ("INPUT_WAIT", "0")]).is_err());
        assert!(
            run(&[
                ("INPUT_COMMAND", "approve"),
                ("INPUT_SERVICENOW-URL", "https://acme.service-now.com")
            ])
            .is_err()
        );
    }

    #[test]
    fn a_value_that_looks_like_a_flag_stays_a_value() {
        let args = run(&[
            ("INPUT_COMMAND", "gate"),
            ("INPUT_ENVIRONMENT", "--dry-run"),
            ("INPUT_EMERGENCY", "-v; rm -rf /"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            args,
            [
                "changegate",
                "gate",
                "--environment=--dry-run",
                "--emergency=-v; rm -rf /"
            ]
        );
    }

    #[test]
    fn dry_run_must_be_a_boolean() {
        let args = run(&[("INPUT_COMMAND", "status"), ("INPUT_DRY-RUN", "TRUE")])
            .unwrap()
            .unwrap();
        assert_eq!(args, ["changegate", "status", "--dry-run"]);
        assert_eq!(
            run(&[("INPUT_COMMAND", "gate"), ("INPUT_DRY-RUN", "yes please")]),
            Err(InputError::NotABoolean("yes please".into()))
        );
    }

    #[test]
    fn global_inputs_only_with_commands_that_use_them() {
        assert_eq!(
            run(&[
                ("INPUT_COMMAND", "verify"),
                ("INPUT_SERVICE", "payments-api")
            ]),
            Err(InputError::NotUsedBy {
                input: "service",
                command: "verify".into()
            })
        );
        assert_eq!(
            run(&[("INPUT_COMMAND", "config check"), ("INPUT_DRY-RUN", "true")]),
            Err(InputError::NotUsedBy {
                input: "dry-run",
                command: "config check".into()
            })
        );
        // Every input the action documents applies to `gate`, and the backend's to every
        // command that reads change records; the ledger's own commands take the ledger's.
        for command in COMMANDS {
            if ["approve", "reject", "history import", "incident"].contains(command) {
                let mut ledger = vec![
                    ("INPUT_COMMAND", *command),
                    ("INPUT_BACKEND", "local"),
                    ("INPUT_CONFIG", "x.toml"),
                    ("INPUT_ENVIRONMENT", "production"),
                    ("INPUT_SERVICE", "payments-api"),
                ];
                if *command == "incident" {
                    // An incident names its change: no environment or service to find it by.
                    ledger.truncate(3);
                    ledger.extend([("INPUT_CHANGE", "CG-1"), ("INPUT_INCIDENT", "INC-1")]);
                }
                assert!(run(&ledger).is_ok(), "{command}: {:?}", run(&ledger));
                continue;
            }
            let backend = [
                ("INPUT_COMMAND", *command),
                ("INPUT_BACKEND", "servicenow"),
                ("INPUT_CONFIG", "x.toml"),
                ("INPUT_SERVICENOW-URL", "https://acme.service-now.com"),
                ("INPUT_JIRA-URL", "https://acme.atlassian.net"),
                ("INPUT_JIRA-PROJECT", "CHG"),
                ("INPUT_OUTCOME", "success"),
            ];
            let backend = if *command == "record" {
                &backend[..]
            } else {
                &backend[..6]
            };
            assert!(run(backend).is_ok(), "{command}");
        }
        let message = InputError::NotUsedBy {
            input: "service",
            command: "verify".into(),
        }
        .to_string();
        assert!(message.contains("remove it from this step"), "{message}");
    }

    #[test]
    fn command_specific_inputs_only_with_their_command() {
        assert_eq!(
            run(&[("INPUT_COMMAND", "gate"), ("INPUT_OUTCOME", "success")]),
            Err(InputError::NotForCommand {
                input: "outcome",
                only: "record".into(),
                command: "gate".into()
            })
        );
        assert_eq!(
            run(&[
                ("INPUT_COMMAND", "record"),
                ("INPUT_OUTCOME", "success"),
                ("INPUT_WAIT", "0")
            ]),
            Err(InputError::NotForCommand {
                input: "wait",
                only: "gate".into(),
                command: "record".into()
            })
        );
        assert_eq!(
            run(&[("INPUT_COMMAND", "record")]),
            Err(InputError::MissingOutcome)
        );
        assert!(
            InputError::MissingOutcome
                .to_string()
                .contains("${{ job.status }}")
        );
    }
}
