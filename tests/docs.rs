//! The documentation, checked: the reference under `docs/reference/` is what the code
//! generates today (the command line, the config schema, the environment, the action's and
//! the GitLab component's inputs), and every relative link in the README and `docs/` leads
//! to a file (and heading) that exists.
//!
//! A stale page fails the test; `CHANGEGATE_UPDATE_DOCS=1 cargo test --locked --test docs`
//! writes the pages again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use changegate::cli::reference::{self, GENERATED, Page, cell};
use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn default_cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.is_empty() => "`\"\"`".into(),
        Some(other) => format!("`{}`", cell(&text(Some(other)))),
    }
}

/// `docs/reference/action.md`: the GitHub Action's inputs and outputs, from `action.yml`.
fn action_page() -> String {
    let action = yaml(&root().join("action.yml"));
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n\n# GitHub Action reference\n");
    let _ = writeln!(
        out,
        "{}\n\nFrom [`action.yml`](../../action.yml). Inputs left empty count as not given. \
         Secrets (ServiceNow, Jira, PostgreSQL) go in the step's `env:`, never in `with:`: see \
         [environment variables](environment.md).\n",
        cell(&text(action.get("description")))
    );
    out.push_str("## Inputs\n\n| input | required | default | description |\n|---|---|---|---|\n");
    if let Some(Value::Mapping(inputs)) = action.get("inputs") {
        for (name, input) in inputs {
            let required = match input.get("required") {
                Some(Value::Bool(true)) => "yes",
                _ => "no",
            };
            let _ = writeln!(
                out,
                "| `{}` | {required} | {} | {} |",
                text(Some(name)),
                default_cell(input.get("default")),
                cell(&text(input.get("description")))
            );
        }
    }
    out.push_str("\n## Outputs\n\n| output | description |\n|---|---|\n");
    if let Some(Value::Mapping(outputs)) = action.get("outputs") {
        for (name, output) in outputs {
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                text(Some(name)),
                cell(&text(output.get("description")))
            );
        }
    }
    out.push('\n');
    out
}

/// `docs/reference/gitlab-component.md`: each component's `spec: inputs:`, from
/// `gitlab/templates/*.yml` (the spec is the file's first YAML document).
fn component_page() -> String {
    let dir = root().join("gitlab/templates");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no component under {}", dir.display());
    let mut out = String::new();
    let _ = writeln!(out, "{GENERATED}\n\n# GitLab CI/CD component reference\n");
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let whole = read(&file);
        let first = whole.split("\n---").next().unwrap_or("");
        let spec: Value = serde_norway::from_str(first)
            .unwrap_or_else(|e| panic!("{}'s spec: {e}", file.display()));
        let _ = writeln!(
            out,
            "## `{name}`\n\nFrom [`gitlab/templates/{name}.yml`](../../gitlab/templates/{name}.yml). \
             An input with no default is required.\n\n\
             | input | type | default | allowed | description |\n|---|---|---|---|---|"
        );
        let inputs = spec.get("spec").and_then(|s| s.get("inputs"));
        let Some(Value::Mapping(inputs)) = inputs else {
            panic!("{} has no spec: inputs:", file.display());
        };
        for (input, about) in inputs {
            let allowed = match (about.get("options"), about.get("regex")) {
                (Some(Value::Sequence(options)), _) => options
                    .iter()
                    .map(|o| format!("`{}`", cell(&text(Some(o)))))
                    .collect::<Vec<_>>()
                    .join(", "),
                (_, Some(regex)) => format!("`{}`", cell(&text(Some(regex)))),
                _ => String::new(),
            };
            let ty = text(about.get("type"));
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {allowed} | {} |",
                text(Some(input)),
                if ty.is_empty() { "string" } else { &ty },
                default_cell(about.get("default")),
                cell(&text(about.get("description")))
            );
        }
        out.push('\n');
    }
    out
}

fn expected() -> Vec<Page> {
    let mut pages = reference::pages();
    pages.push(Page {
        file: "action.md",
        text: action_page(),
    });
    pages.push(Page {
        file: "gitlab-component.md",
        text: component_page(),
    });
    pages
}

#[test]
fn the_generated_reference_is_fresh() {
    let dir = root().join("docs/reference");
    let update = std::env::var_os("CHANGEGATE_UPDATE_DOCS").is_some_and(|v| v == "1");
    let pages = expected();
    let mut stale = Vec::new();
    for page in &pages {
        let path = dir.join(page.file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == page.text {
            continue;
        }
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &page.text).unwrap();
        } else {
            stale.push(format!("docs/reference/{}", page.file));
        }
    }
    // A page the generator no longer makes must not linger as if it were current.
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // The config schema is generated from the config types by a unit test of its own
        // (`config::tests::the_committed_schema_is_the_generated_one`): the types derive it
        // in test builds only.
        let kept = ["README.md", "config.schema.json"];
        if !kept.contains(&name.as_str()) && !pages.iter().any(|p| p.file == name) {
            stale.push(format!(
                "docs/reference/{name} (not generated any more: delete it)"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the generated reference is stale: {}\nregenerate it with: \
         CHANGEGATE_UPDATE_DOCS=1 cargo test --locked --test docs",
        stale.join(", ")
    );
}

#[test]
fn the_reference_covers_every_input_and_command() {
    let pages = expected();
    let page = |f: &str| &pages.iter().find(|p| p.file == f).unwrap().text;
    let action = yaml(&root().join("action.yml"));
    if let Some(Value::Mapping(inputs)) = action.get("inputs") {
        assert!(inputs.len() > 10);
        for name in inputs.keys() {
            let row = format!("| `{}` |", text(Some(name)));
            assert!(page("action.md").contains(&row), "{row} missing");
        }
    } else {
        panic!("action.yml has no inputs");
    }
    assert!(page("gitlab-component.md").contains("| `deploy_job` | string |  |"));
    assert!(page("environment.md").contains("| `CHANGEGATE_DATABASE_URL` |"));
}

// ---------------------------------------------------------------------------------------
// Links.

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md")];
    for extra in ["CONTRIBUTING.md", "ARCHITECTURE.md"] {
        if root().join(extra).exists() {
            files.push(root().join(extra));
        }
    }
    walk(&root().join("docs"), &mut files);
    files.sort();
    files
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces
/// as `-`; a repeated anchor gets `-1`, `-2`, ...
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` links outside code, in one file.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code may hold `](`: leave it out.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_leads_somewhere() {
    let files = markdown_files();
    assert!(files.len() > 5, "found only {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let body = read(file);
        let here = file.parent().unwrap();
        for target in links(&body) {
            if target.is_empty()
                || target.contains("://")
                || target.starts_with("mailto:")
                || target.starts_with('<')
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                here.join(path)
            };
            let name = file.strip_prefix(root()).unwrap_or(file).display();
            if !dest.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor
                && dest.extension().is_some_and(|x| x == "md")
                && !anchors(&read(&dest)).iter().any(|a| a == anchor)
            {
                broken.push(format!("{name}: {target}: no such heading"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_sees_what_it_checks() {
    let md = "# A title, with: punctuation\n## Twice\n## Twice\n[a](x.md#y) `[b](no)`\n```\n[c](no)\n```\n";
    assert_eq!(
        anchors(md),
        ["a-title-with-punctuation", "twice", "twice-1"]
    );
    assert_eq!(links(md), ["x.md#y"]);
}

/// The README shows the tested examples whole: a copy that drifted from its file would show
/// a workflow no test runs.
#[test]
fn the_readme_shows_the_tested_examples_as_they_are() {
    let readme = read(&root().join("README.md"));
    for example in [
        "examples/github/deploy.yml",
        "examples/gitlab/.gitlab-ci.yml",
    ] {
        let text = read(&root().join(example));
        let fenced = format!("```yaml\n{}```\n", text);
        assert!(
            readme.contains(&fenced),
            "README.md must show {example} exactly as it is, in a ```yaml block: copy the file in again"
        );
    }
}
