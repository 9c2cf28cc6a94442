//! `history import`: the forge's own deployment history written into the ledger as closed
//! changes, so that a team's track record (and its trust ramp) starts from what it has
//! already deployed. Each commit deployed to the environment is one change, under the same
//! correlation key a gate of that commit uses: importing twice adds nothing, a later import
//! adds only what is new, and a commit changegate already gated keeps its own record.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ctx, change};
use crate::domain::imported::{self, Finished};
use crate::domain::{ChangeFacts, Outcome};
use crate::forge::deployments::{Deployment, History, MAX_PAGES, Source};
use crate::itsm::{Backend, ImportedChange, Intent};

/// What to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub from: Source,
    /// Only deployments started at or after this moment.
    pub since: Option<DateTime<Utc>>,
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub from: &'static str,
    pub repository: String,
    pub service: String,
    pub environment: String,
    /// Deployments the forge listed for the environment (since `--since`).
    pub deployments: usize,
    /// Changes written (one per commit); in a dry run, the changes that would be.
    pub imported: usize,
    pub success: usize,
    pub failure: usize,
    pub cancelled: usize,
    /// Commits already in the ledger (imported before, or gated by changegate).
    pub already: usize,
    /// Commits none of whose deployments has finished (running, or no status).
    pub unfinished: usize,
    /// Requests sent to the forge.
    pub requests: u32,
    pub dry_run: bool,
    /// What the door shows as warnings (a history cut short).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Reads the history and writes it (a dry run only reads, the ledger included).
pub async fn import(ctx: &Ctx<'_>, backend: &dyn Backend, req: &ImportRequest) -> Result<Imported> {
    let s = ctx.settings;
    let here = change::facts_without_range(ctx, None)?;
    let repository = here.repository.clone().ok_or_else(|| {
        anyhow!(
            "cannot tell which repository to import the history of: run inside the pipeline (GITHUB_REPOSITORY, CI_PROJECT_PATH) or a checkout whose `origin` names it"
        )
    })?;
    let writer = if s.dry_run {
        None
    } else {
        Some(backend.imports().ok_or_else(|| {
            anyhow!(
                "`history import` writes to a ledger (local, postgres); the {} backend is its own record",
                backend.kind().as_str()
            )
        })?)
    };
    let mut history = History::connect(ctx.forge, req.from, &repository).await?;
    let listing = history.deployments(&s.environment, req.since).await?;
    let mut warnings = Vec::new();
    if listing.cut_short {
        warnings.push(format!(
            "the deployment history of {repository} is longer than {} pages; only the newest were read (use --since to import in parts)",
            MAX_PAGES
        ));
    }
    // The forge was asked for this environment; what it answers is checked all the same.
    let listed: Vec<Deployment> = listing
        .deployments
        .into_iter()
        .filter(|d| d.environment == s.environment)
        .filter(|d| req.since.is_none_or(|since| d.created_at >= since))
        .collect();
    let mut by_commit: BTreeMap<String, Vec<Deployment>> = BTreeMap::new();
    for d in &listed {
        by_commit.entry(d.sha.clone()).or_default().push(d.clone());
    }
    let mut out = Imported {
        from: req.from.as_str(),
        repository,
        service: here.service.clone(),
        environment: s.environment.clone(),
        deployments: listed.len(),
        imported: 0,
        success: 0,
        failure: 0,
        cancelled: 0,
        already: 0,
        unfinished: 0,
        requests: 0,
        dry_run: s.dry_run,
        warnings,
    };
    let mut changes = Vec::new();
    for (sha, mut deployments) in by_commit {
        let facts = facts_of(&here, &sha);
        // A commit already in the ledger costs no status request.
        if backend
            .find(&facts.key(), Intent::Read)
            .await?
            .record
            .is_some()
        {
            out.already += 1;
            continue;
        }
        // Newest first: the first finished one is, nearly always, the latest final status;
        // all of them are read only while none has finished.
        deployments.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
        let mut seen = Vec::new();
        for d in deployments {
            let statuses = history.statuses(&d).await?;
            let finished = imported::finished(&statuses);
            let done = finished.is_some();
            seen.push((d, finished));
            if done {
                break;
            }
        }
        match imported::latest_finished(seen) {
            Some((d, finished)) => changes.push(imported_change(facts, &d, finished, req.from)),
            None => out.unfinished += 1,
        }
    }
    // Oldest first, so the ledger's row ids follow the history.
    changes.sort_by_key(|c| c.started_at);
    for c in &changes {
        let written = match writer {
            Some(w) => w.import(c, s.now).await?,
            None => true,
        };
        if !written {
            out.already += 1;
            continue;
        }
        out.imported += 1;
        match c.finished.outcome {
            Outcome::Success => out.success += 1,
            Outcome::Failure => out.failure += 1,
            Outcome::Cancelled => out.cancelled += 1,
        }
    }
    out.requests = history.requests();
    Ok(out)
}

/// The facts an imported change is filed under: this pipeline's service, environment and
/// repository, at the deployed commit; nothing of the pipeline's own run.
fn facts_of(here: &ChangeFacts, sha: &str) -> ChangeFacts {
    ChangeFacts {
        platform: here.platform,
        service: here.service.clone(),
        service_id: here.service_id.clone(),
        environment: here.environment.clone(),
        repository: here.repository.clone(),
        commit_sha: sha.to_string(),
        branch: None,
        pull_request: None,
        range: None,
        commits: Vec::new(),
        lines_changed: None,
        paths: Vec::new(),
        paths_unknown: true,
        work_items: Vec::new(),
        run_url: None,
        repository_url: here.repository_url.clone(),
        actor: None,
        author: None,
        tests_passed: None,
        evidence: Default::default(),
    }
}

fn imported_change(
    facts: ChangeFacts,
    d: &Deployment,
    finished: Finished,
    from: Source,
) -> ImportedChange {
    ImportedChange {
        facts,
        started_at: d.created_at.min(finished.at),
        finished,
        source: format!("{} deployment {}", from.as_str(), d.id),
    }
}
