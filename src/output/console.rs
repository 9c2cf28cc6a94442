//! Everything a command prints goes through here, for two reasons.
//!
//! * A closed stdout (`changegate report | head -1`) is an error that ends the command with
//!   exit 2 and one line on stderr; `println!` would panic on the broken pipe instead.
//! * Under GitHub Actions the runner reads every line of stdout and stderr for workflow
//!   commands (`::set-output …`, `::add-mask::…`), after trimming leading whitespace. The
//!   reports carry untrusted text (file names, PR titles, branch names, an ITSM's words),
//!   so the human report is wrapped in `::stop-commands::<token>` … `::<token>::` with a
//!   token nobody can guess, documents (markdown, HTML) get no line that starts with `::`,
//!   and log lines are kept to one line each.

use std::io::{self, Write};

use anyhow::{Result, anyhow};
use serde::Serialize;

/// Writes `text` to stdout as it is.
pub fn stdout(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => {
                anyhow!("cannot write to stdout: the reading end of the pipe was closed")
            }
            _ => anyhow!("cannot write to stdout: {e}"),
        })
}

/// The one JSON document of `--format json`, pretty-printed. JSON escapes every control
/// character inside its strings, so no line of it can start a workflow command.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    stdout(&(serde_json::to_string_pretty(value)? + "\n"))
}

/// A human report: as it is, or under GitHub Actions between stop-commands markers.
pub fn human(text: &str, github_actions: bool) -> Result<()> {
    if github_actions {
        stdout(&stop_commands(text))
    } else {
        stdout(text)
    }
}

/// A markdown or HTML document. Under GitHub Actions a line that would start with `::` has
/// its first colon written as the character reference `&#58;`, which both formats render
/// as `:`; wrapping would put the markers into a file the output is redirected to.
pub fn document(text: &str, github_actions: bool) -> Result<()> {
    if github_actions {
        stdout(&neutralise_lines(text))
    } else {
        stdout(text)
    }
}

/// `text` between `::stop-commands::<token>` and `::<token>::`: the runner runs no workflow
/// command in between. The token is 128 random bits, new on every run and absent from
/// `text`, so the text cannot end the block early.
pub fn stop_commands(text: &str) -> String {
    let token = loop {
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        if !text.contains(&token) {
            break token;
        }
    };
    let newline = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    format!("::stop-commands::{token}\n{text}{newline}::{token}::\n")
}

/// Every line that, as the runner trims it, would start with `::`, with that first colon
/// written as `&#58;`.
pub fn neutralise_lines(text: &str) -> String {
    if !text.contains("::") {
        return text.to_string();
    }
    text.split_inclusive('\n')
        .flat_map(|line| line.split_inclusive('\r'))
        .map(|line| {
            let start = line.len() - line.trim_start().len();
            if line[start..].starts_with("::") {
                format!("{}&#58;{}", &line[..start], &line[start + 1..])
            } else {
                line.to_string()
            }
        })
        .collect()
}

/// One line of text: line breaks and other control characters in it written as escapes.
/// For a line on stderr that carries an untrusted value.
pub fn one_line(text: &str) -> String {
    crate::config::escape_controls(text)
}

/// The one stderr line a panic ends the run with (exit 2, failed closed): what panicked and
/// where, on one line whatever the message holds, so it starts no workflow command and a
/// pipeline sees one `error:` line rather than a backtrace.
pub fn panic_line(payload: &(dyn std::any::Any + Send), location: Option<(&str, u32)>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string());
    let at = location
        .map(|(file, line)| format!(" at {file}:{line}"))
        .unwrap_or_default();
    format!(
        "error: {}",
        one_line(&format!("internal error: {what}{at} (please report)"))
    )
}

/// stderr for log events, each kept on one line: a line break inside a message (a file
/// name, a remote's error body) is written as `\n`, so no part of it starts a line of its
/// own, let alone a workflow command. Errors writing stderr are dropped: there is nowhere
/// left to report them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let escaped = body.replace('\r', "\\r").replace('\n', "\\n");
        let _ = io::stderr().write_all(format!("{escaped}{end}").as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_commands_wraps_with_a_fresh_token() {
        let a = stop_commands("x\n::set-output name=decision::pre-approved\n");
        let b = stop_commands("x");
        let lines: Vec<&str> = a.lines().collect();
        let token = lines[0].strip_prefix("::stop-commands::").unwrap();
        assert_eq!(token.len(), 32);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(lines.last().unwrap(), &format!("::{token}::"));
        assert!(!b.contains(token));
        assert!(b.ends_with("::\n") && b.contains("\nx\n"));
    }

    #[test]
    fn a_panic_is_one_error_line() {
        let caught = std::panic::catch_unwind(|| panic!("bad\n::error::x {}", 1)).unwrap_err();
        let line = panic_line(caught.as_ref(), Some(("src/x.rs", 7)));
        assert_eq!(
            line,
            "error: internal error: bad\\n::error::x 1 at src/x.rs:7 (please report)"
        );
        assert!(!line.contains('\n'));
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(42u8)).unwrap_err();
        assert_eq!(
            panic_line(caught.as_ref(), None),
            "error: internal error: a panic (please report)"
        );
    }

    #[test]
    fn neutralised_lines_never_start_with_two_colons() {
        let text =
            "| a |\n::add-mask::x\n   ::error title=pwned::y\r::set-output name=a::b\nok :: fine\n";
        let out = neutralise_lines(text);
        for line in out.split(['\n', '\r']) {
            assert!(!line.trim_start().starts_with("::"), "{line:?}");
        }
        assert!(out.contains("&#58;:add-mask::x") && out.contains("ok :: fine"));
    }
}
