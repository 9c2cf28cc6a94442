//! `config check` and `config schema`.

use std::path::Path;

use anyhow::Result;
use secrecy::SecretString;

use super::Exit;
use crate::config;
use crate::domain::words;
use crate::env::Snapshot;
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

/// What `config check` resolves the settings from, as `cli::run` gathered it.
pub struct Sources<'a> {
    pub env: &'a Snapshot,
    pub workdir: &'a Path,
    pub governing: Option<&'a Governing>,
    pub github_token: Option<SecretString>,
}

pub fn run(cmd: &ConfigCommand, global: &GlobalArgs, sources: Sources<'_>) -> Result<Exit> {
    match cmd {
        ConfigCommand::Schema => {
            console::json(&config::json_schema())?;
            Ok(Exit::Pass)
        }
        ConfigCommand::Check => {
            let s = Settings::resolve_with(
                global,
                sources.env,
                sources.workdir,
                sources.governing,
                sources.github_token,
            )?;
            // The same checks `gate` makes before its first call: a config that passes here
            // does not fail there for a missing URL, project or credential.
            let backend = s.backend_config()?;
            let source = s.config_path.as_ref().map_or_else(
                || "no config file: defaults".to_string(),
                |p| p.display().to_string(),
            );
            // Where the records go, as the options and the file resolve it.
            let target = backend.target();
            if global.format == Format::Json {
                let doc = serde_json::json!({
                    "ok": true,
                    "config": s.config_path,
                    "backend": s.backend.as_str(),
                    "target": target,
                    "environment": s.environment,
                    "service": s.service,
                    "mode": s.mode().as_str(),
                    "file": s.file,
                });
                console::json(&doc)?;
            } else {
                use std::fmt::Write as _;
                let mut text = format!("ok: {source}\n");
                let p = &s.policy.params;
                let http = &s.file.http;
                let _ = writeln!(
                    text,
                    "  backend {} ({target}), environment {}, mode {}",
                    s.backend.as_str(),
                    s.environment,
                    s.mode().as_str()
                );
                if let Some(service) = &s.service {
                    let _ = writeln!(text, "  service {service}");
                }
                let _ = writeln!(
                    text,
                    "  policy: {} needed, success rate ≥ {:.0}% over the last {}",
                    words::count(p.min_history, "closed change", "closed changes"),
                    p.min_success_rate * 100.0,
                    words::count(p.window, "closed change", "closed changes")
                );
                let _ = writeln!(
                    text,
                    "  allowance: start {}, +{} per healthy sprint up to {}, ×{} after a bad one, floor {}",
                    p.allowance.initial,
                    p.allowance.step,
                    p.allowance.max,
                    p.allowance.backoff,
                    p.allowance.floor
                );
                let _ = writeln!(
                    text,
                    "  {}",
                    words::count(
                        s.policy.freezes.len() as u64,
                        "freeze window",
                        "freeze windows"
                    )
                );
                let _ = writeln!(
                    text,
                    "  outbound calls: {} in all per run (http.deadline), {} per request; plain http {}",
                    http.deadline,
                    http.timeout,
                    if http.allow_insecure_http {
                        "allowed to any host"
                    } else {
                        "only to this machine"
                    }
                );
                console::human(&text, s.github_actions())?;
            }
            Ok(Exit::Pass)
        }
    }
}
