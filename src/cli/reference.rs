//! The reference pages generated from the code, so they cannot drift from it: the command
//! line from clap, the config file from its JSON schema, the environment from
//! [`env::DESCRIBED`]. `tests/docs.rs` renders them (with the action's and the GitLab
//! component's inputs, which it reads from their YAML) and fails when a committed page under
//! `docs/reference/` differs. Nothing here reads or writes a file; the output is the same on
//! every machine.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command, CommandFactory};
use serde_json::{Map, Value};

use crate::cli::{Cli, usage};
use crate::config;
use crate::env;

/// The first line of every generated page.
pub const GENERATED: &str = "<!-- Generated from the code by tests/docs.rs: do not edit. Regenerate with `CHANGEGATE_UPDATE_DOCS=1 cargo test --locked --test docs`. -->";

/// One generated page: its path under `docs/reference/` and its markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub file: &'static str,
    pub text: String,
}

/// The pages the library can render (the YAML-based ones are the test's).
pub fn pages() -> Vec<Page> {
    vec![
        Page {
            file: "cli.md",
            text: cli(),
        },
        Page {
            file: "config.md",
            text: config_keys(),
        },
        Page {
            file: "environment.md",
            text: environment(),
        },
    ]
}

/// Text fit for one markdown table cell: one line, pipes escaped.
pub fn cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.replace('|', "\\|")
}

/// Code in a table cell: backticks around it, pipes escaped.
fn code(text: &str) -> String {
    format!("`{}`", cell(text))
}

// ---------------------------------------------------------------------------------------
// The command line.

/// `docs/reference/cli.md`: every command, its options, their variables and defaults, and
/// the global options each command takes (as `--help` shows them).
pub fn cli() -> String {
    let root = usage::tailor(Cli::command());
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n\n# Command-line reference\n");
    if let Some(about) = root.get_about() {
        let _ = writeln!(out, "{}\n", about.to_string().trim());
    }
    if let Some(after) = root.get_after_help() {
        let _ = writeln!(out, "{}\n", after.to_string().trim());
    }
    out.push_str(
        "Global options go before or after the command (`changegate -v gate` is \
         `changegate gate -v`). Each command takes only the global options listed under it: \
         one given on the command line to a command that does not use it is an error \
         (exit 2); the same setting from its environment variable is never refused.\n\n",
    );

    let globals: Vec<&Arg> = root
        .get_arguments()
        .filter(|a| a.is_global_set() && !is_builtin(a))
        .collect();
    out.push_str("## Global options\n\n");
    args_table(&mut out, &globals);

    out.push_str("## Commands\n\n");
    let mut commands = Vec::new();
    collect(&root, "changegate", &mut commands);
    for (path, _) in &commands {
        let _ = writeln!(out, "- [`{path}`](#{})", anchor(path));
    }
    out.push('\n');
    for (path, cmd) in &commands {
        command_section(&mut out, path, cmd);
    }
    out
}

fn is_builtin(arg: &Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version")
}

/// Every visible command under `cmd`, depth first, with its full path.
fn collect<'a>(cmd: &'a Command, path: &str, out: &mut Vec<(String, &'a Command)>) {
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        out.push((sub_path.clone(), sub));
        collect(sub, &sub_path, out);
    }
}

/// GitHub's anchor for a heading made of `path` in backticks.
fn anchor(path: &str) -> String {
    path.to_lowercase().replace(' ', "-")
}

fn command_section(out: &mut String, path: &str, cmd: &Command) {
    let _ = writeln!(out, "## `{path}`\n");
    let about = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    if !about.trim().is_empty() {
        let _ = writeln!(out, "{}\n", about.trim());
    }
    let subs: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        out.push_str("Subcommands: ");
        let names: Vec<String> = subs
            .iter()
            .map(|s| {
                let p = format!("{path} {}", s.get_name());
                format!("[`{}`](#{})", s.get_name(), anchor(&p))
            })
            .collect();
        let _ = writeln!(out, "{}.\n", names.join(", "));
    }
    let own: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_global_set() && !a.is_hide_set() && !is_builtin(a))
        .collect();
    let positionals: Vec<String> = own
        .iter()
        .filter(|a| a.is_positional())
        .map(|a| value_name(a))
        .collect();
    let mut synopsis = format!("{path} [OPTIONS]");
    for p in &positionals {
        synopsis.push(' ');
        synopsis.push_str(p);
    }
    if !subs.is_empty() {
        synopsis.push_str(" <COMMAND>");
    }
    let _ = writeln!(out, "```text\n{synopsis}\n```\n");
    if !own.is_empty() {
        args_table(out, &own);
    }
    let globals: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set() && !a.is_hide_set() && !is_builtin(a))
        .map(|a| format!("`{}`", flag(a)))
        .collect();
    if !globals.is_empty() {
        let _ = writeln!(out, "Global options: {}.\n", globals.join(", "));
    }
    // `usage::tailor` words each command's `--format` help as the formats it writes.
    let formats = cmd
        .get_arguments()
        .find(|a| a.get_id() == "format" && !a.is_hide_set())
        .and_then(|a| a.get_help())
        .map(|h| h.to_string());
    if let Some(formats) = formats.filter(|f| f.contains(':')) {
        let _ = writeln!(out, "{}.\n", cell(&formats));
    }
}

fn args_table(out: &mut String, args: &[&Arg]) {
    out.push_str("| option | value | default | environment | description |\n");
    out.push_str("|---|---|---|---|---|\n");
    for arg in args {
        let value = if takes_value(arg) {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if values.is_empty() {
                code(&value_name(arg))
            } else {
                code(&values.join("|"))
            }
        } else {
            String::new()
        };
        // A flag's "default" is clap's `false` or `0`: nothing a reader needs.
        let defaults: Vec<String> = if takes_value(arg) {
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect()
        } else {
            Vec::new()
        };
        let default = if defaults.is_empty() {
            String::new()
        } else {
            code(&defaults.join(", "))
        };
        let env = arg
            .get_env()
            .map(|e| code(&e.to_string_lossy()))
            .unwrap_or_default();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| cell(&h.to_string()))
            .unwrap_or_default();
        let repeat = if matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
            && !help.contains("repeatable")
        {
            " (repeatable)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {} | {value} | {default} | {env} | {help}{repeat} |",
            code(&flag(arg))
        );
    }
    out.push('\n');
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(
            arg.get_action(),
            ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
        )
}

fn value_name(arg: &Arg) -> String {
    let name = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|n| n.to_string())
        .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
    format!("<{name}>")
}

fn flag(arg: &Arg) -> String {
    match (arg.get_short(), arg.get_long()) {
        (Some(s), Some(l)) => format!("-{s}, --{l}"),
        (None, Some(l)) => format!("--{l}"),
        (Some(s), None) => format!("-{s}"),
        (None, None) => value_name(arg),
    }
}

// ---------------------------------------------------------------------------------------
// The config file.

/// `docs/reference/config.md`: every key of `.changegate.toml` with its type, default and
/// description, table by table, from [`config::json_schema`].
pub fn config_keys() -> String {
    let schema = config::json_schema();
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n\n# Config file reference\n");
    out.push_str(
        "Every key of `.changegate.toml`, from the JSON schema `changegate config schema` \
         prints (the same types parse the file). Everything has a default; unknown keys and \
         wrong types are errors naming the key and its line. Durations are written like \
         `30s`, `15m`, `4h` or `1h 30m`.\n\n",
    );
    let mut tables = Vec::new();
    table(&schema, "", "", defs, &mut tables);
    for (name, about, rows) in tables {
        if name.is_empty() {
            out.push_str("## Top-level keys\n\n");
        } else {
            let _ = writeln!(out, "## `{name}`\n");
        }
        if !about.is_empty() {
            let _ = writeln!(out, "{}\n", cell(&about));
        }
        out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
        for row in rows {
            out.push_str(&row);
        }
        out.push('\n');
    }
    out
}

/// A table of the file: its TOML heading (empty for the top level), what it is, its rows.
type Table = (String, String, Vec<String>);

/// The keys of the object `schema` (at the dotted path `name`, under `heading`), then its
/// sub-tables, in the order the schema lists them.
fn table(
    schema: &Value,
    name: &str,
    heading: &str,
    defs: &Map<String, Value>,
    out: &mut Vec<Table>,
) {
    let resolved = resolve(schema, defs);
    let about = if name.is_empty() {
        String::new()
    } else {
        description(schema, defs)
    };
    let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut subtables = Vec::new();
    for (key, prop) in props {
        let full = if name.is_empty() {
            key.clone()
        } else {
            format!("{name}.{key}")
        };
        if let Some(inner) = sub_table(prop, defs) {
            let sub_heading = if prop.get("type").and_then(Value::as_str) == Some("array") {
                format!("[[{full}]]")
            } else {
                format!("[{full}]")
            };
            subtables.push((full, sub_heading, inner));
            continue;
        }
        let default = if required.contains(&key.as_str()) {
            "required".to_string()
        } else {
            prop.get("default")
                .map(render_default)
                .unwrap_or_else(|| "—".into())
        };
        rows.push(format!(
            "| `{key}` | {} | {default} | {} |\n",
            cell(&type_of(prop, defs)),
            cell(&description(prop, defs))
        ));
    }
    out.push((heading.to_string(), about, rows));
    for (full, sub_heading, inner) in subtables {
        table(inner, &full, &sub_heading, defs, out);
    }
}

/// The object schema a property opens as a table of its own: a `$ref` to an object with
/// properties, or an array of such objects (`[[freeze]]`).
fn sub_table<'a>(prop: &'a Value, defs: &'a Map<String, Value>) -> Option<&'a Value> {
    let candidate = match prop.get("type").and_then(Value::as_str) {
        Some("array") => prop.get("items")?,
        _ => prop,
    };
    let resolved = resolve(candidate, defs);
    resolved.get("properties").map(|_| candidate)
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        .and_then(|name| defs.get(name))
        .unwrap_or(schema)
}

/// The property's description, else its type's, with each named value's meaning.
fn description(prop: &Value, defs: &Map<String, Value>) -> String {
    let target = nullable_target(prop);
    let own = prop.get("description").and_then(Value::as_str);
    let of_type = resolve(target, defs)
        .get("description")
        .and_then(Value::as_str);
    let mut text = own.or(of_type).unwrap_or("").to_string();
    let variants: Vec<String> = resolve(target, defs)
        .get("oneOf")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    let name = v.get("const")?.as_str()?;
                    let about = v.get("description")?.as_str()?;
                    Some(format!("`{name}`: {about}"))
                })
                .collect()
        })
        .unwrap_or_default();
    if !variants.is_empty() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&variants.join(" "));
    }
    text
}

/// `anyOf: [X, null]` is an optional X.
fn nullable_target(prop: &Value) -> &Value {
    prop.get("anyOf")
        .and_then(Value::as_array)
        .and_then(|alts| {
            alts.iter()
                .find(|a| a.get("type").and_then(Value::as_str) != Some("null"))
        })
        .unwrap_or(prop)
}

fn type_of(prop: &Value, defs: &Map<String, Value>) -> String {
    let target = nullable_target(prop);
    let resolved = resolve(target, defs);
    if target.get("$ref").and_then(Value::as_str) == Some("#/$defs/Duration") {
        return "duration".into();
    }
    if let Some(values) = enum_values(resolved) {
        return values
            .iter()
            .map(|v| format!("`\"{v}\"`"))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    let kind = match resolved.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_string(),
        _ => "any".into(),
    };
    let mut text = match kind.as_str() {
        "array" => {
            let item = resolved
                .get("items")
                .map(|i| type_of(i, defs))
                .unwrap_or_else(|| "any".into());
            format!("array of {item}")
        }
        "object" => match resolved.get("additionalProperties") {
            Some(inner @ Value::Object(_)) => format!("table of {}", type_of(inner, defs)),
            _ => "table".into(),
        },
        "string" => match resolved.get("format").and_then(Value::as_str) {
            Some("date-time") => "date-time (RFC 3339)".into(),
            Some("date") => "date (YYYY-MM-DD)".into(),
            _ => "string".into(),
        },
        other => other.to_string(),
    };
    let min = resolved.get("minimum").map(number);
    let max = resolved.get("maximum").map(number);
    match (min, max) {
        (Some(lo), Some(hi)) => {
            let _ = write!(text, ", {lo} to {hi}");
        }
        (Some(lo), None) => {
            let _ = write!(text, ", at least {lo}");
        }
        (None, Some(hi)) => {
            let _ = write!(text, ", at most {hi}");
        }
        (None, None) => {}
    }
    text
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

/// The names an enum-like schema allows: `enum`, or `oneOf` of `const`s and `enum`s.
fn enum_values(schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(
            values
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        );
    }
    let alts = schema.get("oneOf").and_then(Value::as_array)?;
    let mut names = Vec::new();
    for alt in alts {
        if let Some(name) = alt.get("const").and_then(Value::as_str) {
            names.push(name.to_string());
        } else if let Some(values) = alt.get("enum").and_then(Value::as_array) {
            names.extend(values.iter().filter_map(Value::as_str).map(String::from));
        } else {
            return None;
        }
    }
    Some(names)
}

fn render_default(v: &Value) -> String {
    match v {
        Value::Null => "unset".into(),
        Value::String(s) if s.is_empty() => "`\"\"`".into(),
        Value::String(s) => code(&format!("\"{s}\"")),
        Value::Array(a) if a.is_empty() => "`[]`".into(),
        Value::Object(o) if o.is_empty() => "`{}`".into(),
        other => code(&other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// The environment.

/// `docs/reference/environment.md`: the variables a person sets, with their meaning, and
/// the platform's variables changegate reads.
pub fn environment() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n\n# Environment variables\n");
    out.push_str(
        "Precedence: flags > environment > config file > defaults. An empty variable counts \
         as unset (runners set empty inputs). Secrets never appear in any output, at any \
         verbosity. `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are honoured for every \
         outbound call; `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system's CA store.\n\n",
    );
    out.push_str("## Set by you\n\n| variable | meaning |\n|---|---|\n");
    for (name, about) in env::DESCRIBED {
        let _ = writeln!(out, "| `{name}` | {} |", cell(about));
    }
    out.push('\n');
    let described = |n: &&str| env::DESCRIBED.iter().any(|(d, _)| d == n);
    // Each platform's variables by their prefixes.
    let groups: [(&str, &[&str]); 3] = [
        ("GitHub Actions sets", &["GITHUB_"]),
        ("The GitHub Action passes its inputs as", &["INPUT_"]),
        ("GitLab CI sets", &["CI_", "GITLAB_"]),
    ];
    out.push_str("## Read from the platform\n\n");
    for (title, prefixes) in groups {
        let names: Vec<String> = env::ALL
            .iter()
            .filter(|n| !described(n) && prefixes.iter().any(|p| n.starts_with(p)))
            .map(|n| format!("`{n}`"))
            .collect();
        let _ = writeln!(out, "{title}: {}.\n", names.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_starts_with_the_generated_mark_and_is_stable() {
        let first = pages();
        assert_eq!(first, pages());
        for page in &first {
            assert!(page.text.starts_with(GENERATED), "{}", page.file);
        }
    }

    #[test]
    fn the_cli_page_has_every_command_and_its_variables() {
        let text = cli();
        for needle in [
            "## `changegate gate`",
            "## `changegate policy simulate`",
            "`CHANGEGATE_SERVICENOW_URL`",
            "`--wait`",
        ] {
            assert!(text.contains(needle), "{needle} missing from the CLI page");
        }
    }

    #[test]
    fn the_config_page_has_keys_with_defaults_and_bounds() {
        let text = config_keys();
        assert!(text.contains("## `[policy.allowance]`"), "{text}");
        assert!(text.contains("## `[[freeze]]`"), "{text}");
        assert!(
            text.contains("| `min_success_rate` | number, 0 to 1 | `0.9` |"),
            "{text}"
        );
        assert!(
            text.contains("| `from` | date-time (RFC 3339) | required |"),
            "{text}"
        );
    }

    #[test]
    fn a_table_cell_stays_one_cell() {
        assert_eq!(cell("a | b\n c"), "a \\| b c");
    }
}
