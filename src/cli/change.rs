//! What the change-centred commands share: which change, its facts, and how results go out.

use anyhow::{Result, anyhow};

use super::{Ctx, Exit};
use crate::domain::change::check_name;
use crate::domain::{ChangeFacts, ChangeRecord, CorrelationKey};
use crate::env;
use crate::itsm::Backend;
use crate::output::{Report, console, dotenv, github};
use crate::pipeline::{self, ProcessEnv};
use crate::settings::Format;

/// Which change a command is about, and the evidence a decision weighs (`gate`, `open`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChangeArgs {
    /// The commit deployed (default: what CI checked out, or HEAD).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Whether the pipeline's tests passed (evidence).
    #[arg(long, env = env::TESTS_PASSED, value_name = "BOOL")]
    pub tests_passed: Option<bool>,
}

/// Which commit a command is about, for the commands that take no evidence (`record`,
/// `status`, `policy`): they find a change, they do not decide one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommitArgs {
    /// The commit deployed (default: what CI checked out, or HEAD).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
}

impl From<&CommitArgs> for ChangeArgs {
    fn from(args: &CommitArgs) -> ChangeArgs {
        ChangeArgs {
            commit: args.commit.clone(),
            tests_passed: None,
        }
    }
}

/// Gathers the facts of this pipeline's change. Outside a pull/merge request the commit
/// range runs from the last commit the backend knows was deployed successfully to the same
/// service and environment (else from the push's `before`): what this deploy ships.
pub async fn facts(ctx: &Ctx, itsm: &dyn Backend, args: &ChangeArgs) -> Result<ChangeFacts> {
    let detected = pipeline::detect(&ProcessEnv, &ctx.workdir, args.commit.as_deref())?;
    let service = service_name(ctx, &detected)?;
    let service_id = pipeline::service_id(detected.repository.as_deref(), &service);
    let previous = if detected.range.is_none() {
        let key = CorrelationKey::new(&service_id, &ctx.settings.environment, &detected.commit_sha);
        itsm.last_change_sha(&key).await?
    } else {
        None
    };
    let mut facts = detected.into_facts(
        &service,
        &ctx.settings.environment,
        previous.as_deref(),
        args.tests_passed,
        &ctx.workdir,
    );
    pipeline::fill_from_platform(&ctx.settings, &mut facts).await;
    Ok(facts)
}

/// The service: as settings name it (checked there), else the repository's name, which is
/// checked here as it goes into the correlation key too.
fn service_name(ctx: &Ctx, detected: &pipeline::Detected) -> Result<String> {
    if let Some(service) = &ctx.settings.service {
        return Ok(service.clone());
    }
    let service = pipeline::default_service(detected.repository.as_deref(), &ctx.workdir);
    check_name(&service).map_err(|why| {
        anyhow!(
            "the service name {service:?}, taken from the repository or directory name, is not \
             usable: {why}; name the service with --service ({})",
            env::SERVICE
        )
    })?;
    Ok(service)
}

/// The facts without the commit range since the last recorded change: for commands that
/// only need to find the change (`record`, `status`), this spares the backend a lookup.
pub async fn facts_without_range(ctx: &Ctx, args: &ChangeArgs) -> Result<ChangeFacts> {
    let detected = pipeline::detect(&ProcessEnv, &ctx.workdir, args.commit.as_deref())?;
    let service = service_name(ctx, &detected)?;
    Ok(detected.into_facts(
        &service,
        &ctx.settings.environment,
        None,
        args.tests_passed,
        &ctx.workdir,
    ))
}

/// Prints the report and writes the job's own outputs (these are written in a dry run too,
/// marked as such: they belong to the job, not to any system of record).
pub fn emit(ctx: &Ctx, report: &Report, facts: &ChangeFacts, exit: Exit) -> Result<()> {
    match ctx.settings.format {
        Format::Text => console::human(&report.text(), ctx.settings.github_actions)?,
        Format::Json => console::json(report)?,
        // The job summary's markdown, for a step summary or a comment of one's own.
        Format::Markdown => {
            console::document(&github::summary(report, facts), ctx.settings.github_actions)?
        }
        // Refused when the command line is parsed (`usage`); never half-written here.
        Format::Html => anyhow::bail!("a change's report has no html format"),
    }
    if ctx.settings.github_actions {
        if let Some(path) = env::var(env::GITHUB_OUTPUT) {
            github::write_outputs(report, path.as_ref())?;
        }
        if let Some(path) = env::var(env::GITHUB_STEP_SUMMARY) {
            github::write_summary(report, facts, path.as_ref())?;
        }
        if exit == Exit::Blocked {
            let failed: Vec<String> = report
                .rules
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.reason.clone())
                .collect();
            let why = report.message.clone().unwrap_or_else(|| failed.join("; "));
            let line = github::command(
                "error",
                &format!(
                    "changegate blocked the deploy of {} to {}: {why}",
                    report.service, report.environment
                ),
            );
            // With --format json or markdown stdout holds only the document.
            if ctx.settings.format != Format::Text {
                eprintln!("{line}");
            } else {
                console::stdout(&format!("{line}\n"))?;
            }
        }
    }
    if let Some(path) = &ctx.settings.dotenv {
        dotenv::write(report, path)?;
    }
    Ok(())
}

/// A record by `--change ID`, or else the one for this pipeline's correlation key.
pub async fn locate(
    ctx: &Ctx,
    itsm: &dyn Backend,
    id: Option<&str>,
    facts: &ChangeFacts,
) -> Result<Option<ChangeRecord>> {
    let _ = ctx;
    match id {
        Some(id) => itsm.get(id).await,
        None => itsm.find(&facts.key()).await,
    }
}
