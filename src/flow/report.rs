//! `report`: KPIs per sprint for this service (or every service in the backend).

mod kept;

use std::collections::BTreeMap;

use super::Ctx;
use crate::domain::kpi::{self, KpiInput};
use crate::domain::ramp;
use crate::itsm::{Backend, HistoryQuery, ServiceRef};
use crate::pipeline;
use crate::report::{KpiReport, ServiceReport};
use anyhow::{Context, Result, bail};

/// The service and environment this run is about: from the repository (or CI) and the
/// settings, or else by the name given with `--service` among those in the ledger.
async fn this_service(ctx: &Ctx<'_>, backend: &dyn Backend) -> Result<ServiceRef> {
    let s = ctx.settings;
    let detected = pipeline::detect(&ctx.settings.env, ctx.workdir, None).ok();
    let repository = detected.as_ref().and_then(|d| d.repository.clone());
    // The same service the gate names here: the repository's, or the checkout's folder.
    if let Some(name) = s.service.clone().or_else(|| {
        detected
            .as_ref()
            .map(|d| pipeline::default_service(d.repository.as_deref(), ctx.workdir))
    }) {
        let service_id = pipeline::service_id(repository.as_deref(), &name);
        let known = backend.services().await?;
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
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    service: ServiceRef,
    sprints: u32,
) -> Result<ServiceReport> {
    let s = ctx.settings;
    let p = &s.policy.params;
    let current = s.calendar.index_of(s.now);
    let first = current - i64::from(sprints) + 1;
    let history = backend
        .history(&HistoryQuery {
            service_id: &service.service_id,
            environment: &service.environment,
            window: p.window,
            calendar: s.calendar,
            from_sprint: first - i64::from(p.allowance.lookback_sprints),
            now: s.now,
            exclude_key: None,
            found: None,
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
    let reading = kept::Reading {
        calendar: s.calendar,
        now: s.now,
        keep: !s.dry_run,
    };
    let parts = match backend.kept_kpis() {
        Some(kept) => {
            let (parts, source) =
                kept::parts(&reading, backend, kept, &service, first..=current).await?;
            tracing::debug!("the KPIs of {}: {source:?}", service.service_id);
            parts
        }
        None => {
            let changes = kept::window_changes(&reading, backend, &service, first).await?;
            kpi::parts(&KpiInput {
                calendar: s.calendar,
                sprints: first..=current,
                now: s.now,
                changes: &changes,
                allowance: &allowance,
            })
            .into_iter()
            .map(|(sprint, part, _)| (sprint, part))
            .collect()
        }
    };
    let table = kpi::table(&s.calendar, s.now, &parts, &allowance);
    Ok(ServiceReport {
        service: service.service,
        service_id: service.service_id,
        environment: service.environment,
        table,
    })
}

/// The KPIs of this service (or, with `all`, of every service the backend knows) over
/// `sprints` sprints ending with the current one.
pub async fn kpis(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    all: bool,
    sprints: u32,
) -> Result<KpiReport> {
    let s = ctx.settings;
    let services = if all {
        backend.services().await?
    } else {
        vec![this_service(ctx, backend).await?]
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
            .push(service_report(ctx, backend, service, sprints).await?);
    }
    Ok(report)
}
