//! The report's sprints from what the ledger keeps: a finished sprint's KPI part is
//! computed once and kept with the write stamps of the days it was computed from; while
//! those stamps stand (no change decided or deployed on those days was written since), it
//! is read back instead of its changes. The current sprint is always computed from its
//! changes. When any finished sprint of the report must be computed again, the whole range
//! is, from its changes, exactly as a ledger without kept parts reports it; the finished
//! sprints are then kept (best-effort: a ledger that cannot be written still reports, and a
//! dry run keeps nothing).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use super::{Ctx, window_changes, window_from};
use crate::domain::kpi::{self, KpiInput, PartReach, SprintPart};
use crate::itsm::{Backend, DayStamp, KeptKpis, KeptSprint, ServiceRef};

/// The layout of a kept part's body (a serialized [`SprintPart`]); a part kept in another
/// layout is computed again.
pub(super) const KEPT_FORMAT: i64 = 1;

/// Unix seconds.
fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The midnight (UTC) of `t`, as the ledger's stamps name days.
fn day(t: i64) -> i64 {
    t - t % 86_400
}

/// The stamps of the days from `lo` to `hi`: the sum of their writes, and the earliest
/// decision of any change that touched them (`None`: no day stamped).
fn stamp_of(stamps: &[DayStamp], lo: i64, hi: i64) -> (i64, Option<i64>) {
    let (lo, hi) = (day(lo), day(hi));
    stamps
        .iter()
        .filter(|d| d.day >= lo && d.day <= hi)
        .fold((0, None), |(sum, earliest), d| {
            (
                sum + d.writes,
                Some(earliest.map_or(d.earliest, |e: i64| e.min(d.earliest))),
            )
        })
}

/// A kept part still true for a report reading from `from` at `now`: the same layout and
/// sprint dates, finished, computed from deploys all visible from `from` at `now`, its
/// days' writes as they were, and no change decided before either reading's start (one
/// that one of them saw and the other not) touching those days.
fn usable(
    k: &KeptSprint,
    sprint: i64,
    ctx: &Ctx<'_>,
    from: DateTime<Utc>,
    stamps: &[DayStamp],
) -> Option<SprintPart> {
    let cal = &ctx.settings.calendar;
    let now = secs(ctx.settings.now);
    let fits = k.format == KEPT_FORMAT
        && k.sprint == sprint
        && k.start == secs(cal.start_of(sprint))
        && k.end == secs(cal.end_of(sprint))
        && k.end <= now
        && k.hi <= now
        && k.lo >= secs(from);
    if !fits {
        return None;
    }
    let (stamp, earliest) = stamp_of(stamps, k.lo, k.hi);
    if stamp != k.stamp || earliest.is_some_and(|e| e < k.window_from.max(secs(from))) {
        return None;
    }
    serde_json::from_str(&k.body).ok()
}

/// The part of each sprint of `range` (the last one the current sprint), oldest first.
pub(super) async fn parts(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    kept: &dyn KeptKpis,
    service: &ServiceRef,
    range: RangeInclusive<i64>,
) -> Result<Vec<(i64, SprintPart)>> {
    let s = ctx.settings;
    let cal = &s.calendar;
    let (first, current) = (*range.start(), *range.end());
    let (svc, env) = (service.service_id.as_str(), service.environment.as_str());
    let from = window_from(ctx, first);
    let cannot = || format!("cannot read the kept KPIs of {svc}");
    // The stamps first: a write landing after them makes what is kept below look stale to
    // the next report, never the other way round.
    let stamps = kept
        .stamps(svc, env, from, s.now)
        .await
        .with_context(cannot)?;
    let rows = if current > first {
        kept.kept_sprints(svc, env, cal.start_of(first), cal.start_of(current - 1))
            .await
            .with_context(cannot)?
    } else {
        Vec::new()
    };
    let by_start: BTreeMap<i64, &KeptSprint> = rows.iter().map(|k| (k.start, k)).collect();
    let mut parts = Vec::with_capacity(range.clone().count());
    for sprint in first..current {
        let found = by_start
            .get(&secs(cal.start_of(sprint)))
            .and_then(|k| usable(k, sprint, ctx, from, &stamps));
        match found {
            Some(part) => parts.push((sprint, part)),
            None => break,
        }
    }
    if parts.len() as i64 == current - first {
        // Every finished sprint kept: the current one from its own changes and the deploys
        // of earlier changes its failure episodes can start after or end with.
        let start = cal.start_of(current);
        let mut changes = kept
            .deploys_around(svc, env, from, start)
            .await
            .with_context(cannot)?;
        changes.extend(
            backend
                .change_summaries(svc, env, start, s.now)
                .await
                .with_context(|| format!("cannot read the changes of {svc}"))?,
        );
        let computed = kpi::parts(&KpiInput {
            calendar: *cal,
            sprints: current..=current,
            now: s.now,
            changes: &changes,
            allowance: &BTreeMap::new(),
        });
        parts.extend(computed.into_iter().map(|(sprint, part, _)| (sprint, part)));
        return Ok(parts);
    }
    let changes = window_changes(ctx, backend, service, first).await?;
    let computed = kpi::parts(&KpiInput {
        calendar: *cal,
        sprints: range,
        now: s.now,
        changes: &changes,
        allowance: &BTreeMap::new(),
    });
    if !s.dry_run {
        let keep: Vec<KeptSprint> = computed
            .iter()
            .filter_map(|(sprint, part, reach)| keepable(ctx, from, &stamps, *sprint, part, reach))
            .collect();
        if let Err(e) = kept.keep_sprints(svc, env, &keep).await {
            // The report stands without them; the next one computes them again.
            tracing::debug!("the KPIs of {svc} in {env} were not kept: {e:#}");
        }
    }
    Ok(computed
        .into_iter()
        .map(|(sprint, part, _)| (sprint, part))
        .collect())
}

/// A finished sprint's part as kept, when it can be: its failure episodes all ended, each
/// of its failures had a deploy before it in what was read, and no change decided before
/// the reading's start touched the days it was computed from.
fn keepable(
    ctx: &Ctx<'_>,
    from: DateTime<Utc>,
    stamps: &[DayStamp],
    sprint: i64,
    part: &SprintPart,
    reach: &PartReach,
) -> Option<KeptSprint> {
    let cal = &ctx.settings.calendar;
    let now = secs(ctx.settings.now);
    let (start, end) = (secs(cal.start_of(sprint)), secs(cal.end_of(sprint)));
    let (lo, hi) = (secs(reach.lo?), secs(reach.hi));
    if end > now || hi > now || lo < secs(from) || part.unrestored_failures > 0 {
        return None;
    }
    let (stamp, earliest) = stamp_of(stamps, lo, hi);
    if earliest.is_some_and(|e| e < secs(from)) {
        return None;
    }
    Some(KeptSprint {
        start,
        end,
        sprint,
        format: KEPT_FORMAT,
        stamp,
        lo,
        hi,
        window_from: secs(from),
        computed_at: now,
        body: serde_json::to_string(part).ok()?,
    })
}
