//! `config check` and `config schema`.

use std::path::Path;

use anyhow::Result;

use super::Exit;
use crate::config;
use crate::output::console;
use crate::pipeline::default_config::Governing;
use crate::settings::{Format, GlobalArgs, Settings};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check the config file and show the settings it resolves to.
    Check,
    /// Print the JSON schema of .changegate.toml.
    Schema,
}

pub fn run(
    cmd: &ConfigCommand,
    global: &GlobalArgs,
    workdir: &Path,
    governing: Option<&Governing>,
) -> Result<Exit> {
    match cmd {
        ConfigCommand::Schema => {
            console::json(&config::json_schema())?;
            Ok(Exit::Pass)
        }
        ConfigCommand::Check => {
            let s = Settings::resolve_with(global, workdir, governing)?;
            // The same checks `gate` makes before its first call: a config that passes here
            // does not fail there for a missing URL, project or credential.
            s.check_backend()?;
            let source = s.config_path.as_ref().map_or_else(
                || "no config file: defaults".to_string(),
                |p| p.display().to_string(),
            );
            if global.format == Format::Json {
                let doc = serde_json::json!({
                    "ok": true,
                    "config": s.config_path,
                    "backend": s.backend.as_str(),
                    "environment": s.environment,
                    "mode": s.mode().as_str(),
                    "file": s.file,
                });
                console::json(&doc)?;
            } else {
                let p = &s.policy.params;
                let text = format!(
                    "ok: {source}\n  backend {}, environment {}, mode {}\n  \
                     policy: {} closed changes needed, success rate ≥ {:.0}% over last {}\n  \
                     allowance: start {}, +{} per healthy sprint up to {}, ×{} after a bad one, floor {}\n  \
                     {} freeze window(s)\n",
                    s.backend.as_str(),
                    s.environment,
                    s.mode().as_str(),
                    p.min_history,
                    p.min_success_rate * 100.0,
                    p.window,
                    p.allowance.initial,
                    p.allowance.step,
                    p.allowance.max,
                    p.allowance.backoff,
                    p.allowance.floor,
                    s.policy.freezes.len()
                );
                console::human(&text, s.github_actions)?;
            }
            Ok(Exit::Pass)
        }
    }
}
