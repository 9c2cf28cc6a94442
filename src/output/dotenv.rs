//! GitLab's dotenv report: `KEY=value` lines later jobs receive as variables.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::Report;

/// Writes (replaces) the dotenv file with the four outputs.
pub fn write(report: &Report, path: &Path) -> Result<()> {
    let mut text = String::new();
    for (name, value) in report.outputs() {
        let key = format!("CHANGEGATE_{}", name.replace('-', "_").to_ascii_uppercase());
        // dotenv values are one line; ours never hold newlines, but make sure.
        let value = value.replace(['\n', '\r'], " ");
        text.push_str(&format!("{key}={value}\n"));
    }
    if report.dry_run {
        text.push_str("CHANGEGATE_DRY_RUN=true\n");
    }
    let mut file = std::fs::File::create(path)
        .with_context(|| format!("cannot write the dotenv file {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write the dotenv file {}", path.display()))
}
