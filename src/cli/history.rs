//! `history import`: seed the ledger (SQLite or PostgreSQL) with the forge's own
//! deployment history, so that the trust ramp starts from what the team has deployed.

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, Utc};

use super::{Ctx, Exit, present};
use crate::flow;
use crate::forge::deployments::Source;
use crate::itsm;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum HistoryCommand {
    /// Ledgers only (local, postgres): write the forge's finished deployments to this
    /// environment as closed changes (marked imported; importing twice adds nothing).
    Import(ImportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// GitHub Deployments and their statuses (GITHUB_TOKEN or CHANGEGATE_GITHUB_TOKEN, GITHUB_API_URL).
    Github,
    /// GitLab deployments (CHANGEGATE_GITLAB_TOKEN, CI_API_V4_URL).
    Gitlab,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The forge whose deployment history is read.
    #[arg(long, value_enum)]
    pub from: From,
    /// Only deployments started on or after this date (YYYY-MM-DD, UTC) or moment (RFC 3339).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
}

/// `--since`: a date (midnight UTC) or an RFC 3339 moment.
fn since(text: &str) -> Result<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    match DateTime::parse_from_rfc3339(t) {
        Ok(at) => Ok(at.with_timezone(&Utc)),
        Err(_) => bail!(
            "invalid --since {t:?}: give a date (2026-01-31) or an RFC 3339 moment (2026-01-31T12:00:00Z)"
        ),
    }
}

pub async fn run(ctx: &Ctx<'_>, cmd: &HistoryCommand) -> Result<Exit> {
    let HistoryCommand::Import(args) = cmd;
    let s = ctx.settings;
    itsm::ledger_only(s.backend, "history import")?;
    let req = flow::import::ImportRequest {
        from: match args.from {
            From::Github => Source::Github,
            From::Gitlab => Source::Gitlab,
        },
        since: args.since.as_deref().map(since).transpose()?,
    };
    let backend = itsm::connect(s)?;
    let imported = flow::import::import(ctx, backend.as_ref(), &req).await?;
    present::imported(s, &imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_moment() {
        assert_eq!(
            since("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            since("2026-01-31T12:00:00+02:00").unwrap().to_rfc3339(),
            "2026-01-31T10:00:00+00:00"
        );
        assert!(since("yesterday").is_err());
        assert!(since("2026-13-01").is_err());
    }
}
