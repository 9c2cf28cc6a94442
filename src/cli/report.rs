//! `report`: KPIs per sprint for this service (or `--all` in the ledger), as text,
//! markdown, JSON or a self-contained HTML page.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::{Ctx, Exit};
use crate::domain::kpi::{self, KpiInput};
use crate::domain::ramp;
use crate::itsm::{self, Backend, HistoryQuery, ServiceRef};
use crate::output::console;
use crate::pipeline::{self, ProcessEnv};
use crate::report::{self, KpiReport, ServiceReport};
use crate::settings::Format;

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// How many sprints to report, the current one included.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=520))]
    pub sprints: u32,
    /// Every service and environment in the ledger, not only this one.
    #[arg(long)]
    pub all: bool,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The service and environment this run is about: from the repository (or CI) and the
/// settings, or else by the name given with `--service` among those in the ledger.
async fn this_service(ctx: &Ctx, itsm: &dyn Backend) -> Result<ServiceRef> {
    let s = &ctx.settings;
    let detected = pipeline::detect(&ProcessEnv, &ctx.workdir, None).ok();
    let repository = detected.as_ref().and_then(|d| d.repository.clone());
    // The same service the gate names here: the repository's, or the checkout's folder.
    if let Some(name) = s.service.clone().or_else(|| {
        detected
            .as_ref()
            .map(|d| pipeline::default_service(d.repository.as_deref(), &ctx.workdir))
    }) {
        let service_id = pipeline::service_id(repository.as_deref(), &name);
        let known = itsm.services().await?;
        let in_env = |r: &&ServiceRef| r.environment == s.environment;
        if let Some(found) = known
            .iter()
            .filter(in_env)
            .find(|r| r.service_id == service_id)
        {
            return Ok(found.clone());
        }
        // Outside the repository: the name alone, when it is not ambiguous.
        let by_name: Vec<&ServiceRef> = known
            .iter()
            .filter(in_env)
            .filter(|r| r.service == name || r.service_id == name)
            .collect();
        match by_name.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => bail!(
                "--service {name} names several services in {}: {}; run in the service's repository or use --all",
                s.environment,
                many.iter()
                    .map(|r| r.service_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
        return Ok(ServiceRef {
            service_id,
            service: name,
            environment: s.environment.clone(),
        });
    }
    bail!(
        "cannot tell which service to report on: run in its repository, pass --service NAME, or use --all"
    )
}

/// The KPIs of one service over `sprints` sprints ending with the current one.
async fn service_report(
    ctx: &Ctx,
    itsm: &dyn Backend,
    service: ServiceRef,
    sprints: u32,
) -> Result<ServiceReport> {
    let s = &ctx.settings;
    let p = &s.policy.params;
    let current = s.calendar.index_of(s.now);
    let first = current - i64::from(sprints) + 1;
    let history = itsm
        .history(&HistoryQuery {
            service_id: &service.service_id,
            environment: &service.environment,
            window: p.window,
            calendar: s.calendar,
            from_sprint: first - i64::from(p.allowance.lookback_sprints),
            now: s.now,
            exclude_key: None,
        })
        .await
        .with_context(|| format!("cannot read the history of {}", service.service_id))?;
    // The allowance each sprint had, replayed as the gate replays it for that sprint.
    let allowance: BTreeMap<i64, u32> = (first..=current)
        .map(|sprint| {
            (
                sprint,
                ramp::allowance_for(&history, &p.allowance, p.min_success_rate, sprint),
            )
        })
        .collect();
    // One sprint before the first is read as context: a failure restored in the range may
    // have started there. Nothing decided after the clock counts (what-if runs).
    let changes = itsm
        .change_summaries(
            &service.service_id,
            &service.environment,
            s.calendar.start_of(first - 1),
            s.now,
        )
        .await
        .with_context(|| format!("cannot read the changes of {}", service.service_id))?;
    let table = kpi::compute(&KpiInput {
        calendar: s.calendar,
        sprints: first..=current,
        now: s.now,
        changes: &changes,
        allowance: &allowance,
    });
    Ok(ServiceReport {
        service: service.service,
        service_id: service.service_id,
        environment: service.environment,
        table,
    })
}

pub async fn run(ctx: &Ctx, args: &ReportArgs) -> Result<Exit> {
    let s = &ctx.settings;
    let itsm = itsm::connect(s)?;
    let services = if args.all {
        itsm.services().await?
    } else {
        vec![this_service(ctx, itsm.as_ref()).await?]
    };
    let mut report = KpiReport {
        generated_at: s.now,
        sprint_length_days: s.calendar.length_days(),
        target_success_rate: s.policy.params.min_success_rate,
        services: Vec::with_capacity(services.len()),
    };
    for service in services {
        report
            .services
            .push(service_report(ctx, itsm.as_ref(), service, args.sprints).await?);
    }
    let rendered = match s.format {
        Format::Text => report::text::render(&report),
        Format::Markdown => report::markdown::render(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => report::html::render(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write the report to {}", path.display()))?,
        None => match s.format {
            Format::Text => console::human(&rendered, s.github_actions)?,
            Format::Json => console::stdout(&rendered)?,
            Format::Markdown | Format::Html => console::document(&rendered, s.github_actions)?,
        },
    }
    Ok(Exit::Pass)
}
