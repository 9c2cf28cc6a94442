//! The shape that keeps the flow a library: only the CLI door (and `main.rs`, and the one
//! stdout writer) prints or exits, and no state outlives a run in a `static`. Checks of the
//! source, so that the shape cannot slip back unnoticed.

use std::path::{Path, PathBuf};

/// Where printing and exiting are allowed, relative to `src/`.
const DOOR: &[&str] = &["cli/", "main.rs", "output/console.rs"];

/// What prints to the process's streams or ends the process. Spelled in pieces so that
/// this file does not trip its own check.
fn forbidden() -> Vec<String> {
    ["print", "println", "eprint", "eprintln", "dbg"]
        .iter()
        .map(|m| format!("{m}!("))
        .chain([format!("process::{}(", "exit")])
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_cli_door_prints_or_exits() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let forbidden = forbidden();
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if DOOR.iter().any(|d| rel.starts_with(d)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Comments may name what they explain.
            let code = line.split("//").next().unwrap_or_default();
            for f in &forbidden {
                // `eprintln!(` contains `println!(`: report the line once.
                if code.contains(f.as_str()) {
                    found.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
                    break;
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "printing or exiting outside the CLI door (return it in the flow's outcome instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_process_wide_mutable_state() {
    // A server runs many gates in one process: a token, a cache or a client kept in a
    // `static` would leak from one run into the next. They belong to a run's values (the
    // forge, the backend).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mutable = ["Mutex", "RwLock", "Cell<", "Atomic", "OnceLock"];
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains(&format!("{} ", "static")) && mutable.iter().any(|m| code.contains(m))
            {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "process-wide mutable state (keep it in a run's value instead):\n{}",
        found.join("\n")
    );
}
