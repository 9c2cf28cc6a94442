//! The shape of the source, checked: each rule of ARCHITECTURE.md that a careless edit could
//! break is a rule here, run over `src/` by `cargo test`. A rule that no longer fires on
//! the bad example it is given fails its own self-test, so a rule cannot rot silently.

use std::path::{Path, PathBuf};

/// One source file, with its test code cut off: a file's `#[cfg(test)]` module sits at its
/// end, and files named `tests.rs` or under a `tests/` folder are test code entirely.
struct Source {
    /// Relative to `src/`, with `/` separators.
    path: String,
    /// The code before the first `#[cfg(test)]`, comment lines dropped.
    code: String,
}

fn is_test_file(path: &str) -> bool {
    path.ends_with("/tests.rs") || path.contains("/tests/")
}

fn strip(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        // A trailing comment: cut it, so that prose about `println!` is not code.
        let line = line.split(" // ").next().unwrap_or(line);
        code.push_str(line);
        code.push('\n');
    }
    code
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            if is_test_file(&rel) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            out.push(Source {
                code: strip(&text),
                path: rel,
            });
        }
    }
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 50, "found only {} source files", out.len());
    out
}

/// A rule: what it forbids, where it applies, where it is allowed.
struct Rule {
    name: &'static str,
    /// Substrings that break the rule.
    needles: &'static [&'static str],
    /// Path prefixes (relative to `src/`) the rule looks at; empty = everywhere.
    within: &'static [&'static str],
    /// Path prefixes where the needles are the point.
    allowed: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        name: "a policy fact is defined in domain/ only",
        needles: &[
            "fn decision_stands",
            "fn counts_against_allowance",
            "fn final_decision",
            "fn takes_decision",
            "fn standing_decision",
            "fn left_closed",
            "FromStr for CorrelationKey",
            "\"changegate:\"",
            "-> Gate ",
            "-> Gate{",
            "-> Option<Gate>",
        ],
        within: &[],
        allowed: &["domain/"],
    },
    Rule {
        name: "the environment is read in env.rs only",
        needles: &[
            "env::var(",
            "env::var_os(",
            "env::vars(",
            "env::vars_os(",
            "std::env::var",
            "var_os(",
        ],
        within: &[],
        allowed: &["env.rs"],
    },
    Rule {
        name: "only the CLI door prints or exits",
        needles: &[
            "println!",
            "print!(",
            "eprintln!",
            "eprint!(",
            "dbg!(",
            "process::exit",
            "io::stdout()",
        ],
        within: &[],
        allowed: &["cli/", "serve/", "main.rs", "output/console.rs"],
    },
    Rule {
        name: "the domain does no I/O and knows no adapter",
        needles: &[
            "tokio",
            "reqwest",
            "octocrab",
            "rusqlite",
            "clap",
            "std::fs",
            "std::env",
            "std::net",
            "std::process",
            "Utc::now",
            "crate::config",
            "crate::settings",
            "crate::itsm",
            "crate::forge",
            "crate::pipeline",
            "crate::output",
            "crate::http",
            "crate::flow",
            "crate::cli",
        ],
        within: &["domain/"],
        allowed: &[],
    },
    Rule {
        name: "dependencies point down: nothing below the doors imports them",
        needles: &["crate::cli", "crate::serve"],
        within: &[],
        allowed: &["cli/", "serve/", "main.rs"],
    },
    Rule {
        name: "adapters do not import the flow that calls them",
        needles: &["crate::flow"],
        within: &[
            "itsm/",
            "forge/",
            "pipeline/",
            "output/",
            "report/",
            "http.rs",
            "config.rs",
            "settings.rs",
            "env.rs",
        ],
        allowed: &[],
    },
    Rule {
        name: "no stringly errors in library code",
        needles: &[", String>"],
        within: &[],
        allowed: &[],
    },
    Rule {
        name: "no process-wide state",
        needles: &[
            "static mut",
            "Mutex<",
            "OnceLock<",
            "OnceCell<",
            "RwLock<",
            "Cell<",
            "Atomic",
        ],
        within: &[],
        allowed: &[],
    },
    Rule {
        name: "a dry run is guarded once, by itsm::DryRun, not by each backend",
        needles: &["dry_run"],
        within: &["itsm/"],
        allowed: &["itsm/mod.rs", "itsm/dry_run.rs"],
    },
    Rule {
        name: "backends import by name, not by glob",
        needles: &["::*;"],
        within: &["itsm/"],
        allowed: &[],
    },
];

fn starts_any(path: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| path.starts_with(p))
}

/// Every line of `sources` that breaks a rule, as `rule: path:line: text`.
fn violations(sources: &[Source]) -> Vec<String> {
    let mut found = Vec::new();
    for rule in RULES {
        for source in sources {
            if !rule.within.is_empty() && !starts_any(&source.path, rule.within) {
                continue;
            }
            if starts_any(&source.path, rule.allowed) {
                continue;
            }
            for (n, line) in source.code.lines().enumerate() {
                if !rule.needles.iter().any(|needle| line.contains(needle)) {
                    continue;
                }
                // A server runs many gates in one process: a token, a cache or a client
                // kept in a `static` would leak from one run into the next. A `Mutex` held
                // by a value (the forge, a backend) is not process-wide.
                if rule.name == "no process-wide state" && !line.contains("static ") {
                    continue;
                }
                // A stringly error is a `Result` whose error is `String`.
                if rule.name == "no stringly errors in library code" && !line.contains("Result<") {
                    continue;
                }
                found.push(format!(
                    "{}: src/{}:{}: {}",
                    rule.name,
                    source.path,
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

/// The files every backend folder holds, and nothing else but its `tests.rs`: a reader
/// finds the same thing in the same place in every backend.
const BACKEND_FILES: &[&str] = &[
    "mod.rs",
    "client.rs",
    "codec.rs",
    "lifecycle.rs",
    "history.rs",
    "insights.rs",
    "verify.rs",
];

/// Backend folders that break the layout: a missing or an extra file, or a `<backend>.rs`
/// beside its folder.
fn layout_violations(itsm: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(itsm).expect("src/itsm");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !path.is_dir() {
            continue;
        }
        for file in BACKEND_FILES {
            if !path.join(file).is_file() {
                found.push(format!("src/itsm/{name}/ has no {file}"));
            }
        }
        for file in std::fs::read_dir(&path).expect("backend folder") {
            let file = file.expect("directory entry").file_name();
            let file = file.to_string_lossy();
            // `client/` holds the parts of `client.rs` when a backend has more than one
            // connection kind (the ledger's SQLite and PostgreSQL stores).
            let client_parts = file == "client" && path.join("client").is_dir();
            if file != "tests.rs" && !client_parts && !BACKEND_FILES.contains(&file.as_ref()) {
                found.push(format!(
                    "src/itsm/{name}/{file} is not in the backend layout: fold it into one of {}",
                    BACKEND_FILES.join(", ")
                ));
            }
        }
        if itsm.join(format!("{name}.rs")).exists() {
            found.push(format!(
                "src/itsm/{name}.rs sits beside src/itsm/{name}/: use {name}/mod.rs"
            ));
        }
    }
    found
}

#[test]
fn the_source_keeps_its_shape() {
    let mut found = violations(&sources());
    found.extend(layout_violations(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/itsm"),
    ));
    assert!(
        found.is_empty(),
        "the source broke ARCHITECTURE.md's shape:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_rule_fires_on_what_it_forbids() {
    let planted: &[(&str, &str)] = &[
        ("itsm/x/lifecycle.rs", "fn decision_stands(&self) -> bool {"),
        ("pipeline/x.rs", "let v = std::env::var(\"CI\");"),
        ("forge/x.rs", "    eprintln!(\"warning\");"),
        ("domain/x.rs", "let now = Utc::now();"),
        ("flow/x.rs", "use crate::cli::Exit;"),
        ("itsm/x/mod.rs", "use crate::flow::Outcome;"),
        ("forge/x.rs", "fn token() -> Result<Token, String> {"),
        (
            "forge/x.rs",
            "static CACHE: Mutex<Option<Token>> = Mutex::new(None);",
        ),
        ("itsm/x/lifecycle.rs", "if settings.dry_run {"),
        ("itsm/x/codec.rs", "use super::raw::*;"),
    ];
    assert_eq!(planted.len(), RULES.len(), "one planted example a rule");
    for (rule, (path, line)) in RULES.iter().zip(planted) {
        let source = Source {
            path: (*path).to_owned(),
            code: strip(&format!("{line}\n#[cfg(test)]\nmod tests {{ {line} }}\n")),
        };
        let found = violations(&[source]);
        assert!(
            found.iter().filter(|v| v.starts_with(rule.name)).count() == 1,
            "rule `{}` missed or double-counted `{line}` in {path}: {found:?}",
            rule.name
        );
    }
    // Test code, comments and the allowed places are not code under the rules.
    let fine = Source {
        path: "cli/x.rs".into(),
        code: strip("// println! in a comment\nprintln!(\"ok\");\n"),
    };
    assert!(violations(&[fine]).is_empty());

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("acme")).expect("backend folder");
    std::fs::write(dir.path().join("acme.rs"), "").expect("sibling file");
    std::fs::write(dir.path().join("acme/mod.rs"), "").expect("mod.rs");
    std::fs::write(dir.path().join("acme/tests.rs"), "").expect("tests.rs");
    std::fs::write(dir.path().join("acme/raw.rs"), "").expect("a grab-bag");
    let found = layout_violations(dir.path());
    assert!(
        found.iter().any(|v| v.contains("raw.rs is not")),
        "{found:?}"
    );
    assert!(!found.iter().any(|v| v.contains("tests.rs")), "{found:?}");
    assert!(
        found.iter().any(|v| v.contains("has no client.rs")),
        "{found:?}"
    );
    assert!(found.iter().any(|v| v.contains("sits beside")), "{found:?}");
    assert!(
        !found.iter().any(|v| v.contains("has no mod.rs")),
        "{found:?}"
    );
}
