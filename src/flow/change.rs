//! What the change-centred flows share: which change, its facts; and `open`.

use anyhow::{Result, anyhow};

use super::{ChangeOutcome, Ctx, Exit, annotated};
use crate::domain::change::check_name;
use crate::domain::{ChangeFacts, ChangeRecord, CorrelationKey};
use crate::env;
use crate::itsm::{Backend, Intent, Lookup, Since};
use crate::output::Report;
use crate::pipeline;

/// Which change a flow is about, and the evidence a decision weighs.
#[derive(Debug, Clone, Default)]
pub struct ChangeRequest {
    /// The commit deployed (default: what CI checked out, or HEAD).
    pub commit: Option<String>,
    /// Whether the pipeline's tests passed (evidence).
    pub tests_passed: Option<bool>,
}

/// A change's facts, and the backend's lookup of its record when gathering them made one.
#[derive(Debug)]
pub struct Gathered {
    /// The facts of this pipeline's change.
    pub facts: ChangeFacts,
    /// The lookup the backend made while reading the commit range (see
    /// [`crate::itsm::Since`]): hand it to the gate or `open`, which then find nothing again.
    pub found: Option<Lookup>,
}

/// Gathers the facts of this pipeline's change (see [`gather`]), for a flow that does not
/// write the change.
pub async fn facts(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    req: &ChangeRequest,
) -> Result<ChangeFacts> {
    Ok(gather(ctx, backend, req).await?.facts)
}

/// Gathers the facts of this pipeline's change. Outside a pull/merge request the commit
/// range runs from the last commit the backend knows was deployed successfully to the same
/// service and environment (else from the push's `before`): what this deploy ships. The
/// lookup of the change the backend made on the way comes with them.
pub async fn gather(ctx: &Ctx<'_>, backend: &dyn Backend, req: &ChangeRequest) -> Result<Gathered> {
    let detected = pipeline::detect(&ctx.settings.env, ctx.workdir, req.commit.as_deref())?;
    let service = service_name(ctx, &detected)?;
    let service_id = pipeline::service_id(detected.repository.as_deref(), &service);
    let since = if detected.range.is_none() {
        let key = CorrelationKey::new(&service_id, &ctx.settings.environment, &detected.commit_sha);
        backend.last_change_sha(&key).await?
    } else {
        Since::default()
    };
    let previous = since.sha;
    let extra = sync_texts(ctx, &detected);
    let mut facts = detected.into_facts(
        &service,
        &ctx.settings.environment,
        previous.as_deref(),
        req.tests_passed,
        ctx.workdir,
    );
    pipeline::fill_from_platform(ctx.settings, ctx.forge, &mut facts).await;
    evidence_from_forge(ctx, &mut facts).await?;
    if let Some(extra) = extra {
        super::sync::note_references(ctx.settings, &mut facts, &extra);
    }
    // A lookup of another key than the facts' (the platform's facts named another commit)
    // is of no use to the flows that follow.
    let key = facts.key().to_string();
    let found = since.found.filter(|f| f.key() == key);
    Ok(Gathered { facts, found })
}

/// The review and test evidence `[evidence]` requires, from the forge: the pull/merge
/// request that brought the commit and its approvals, the commit's checks. Where the forge
/// cannot be asked (no token, no API) what the pipeline claims stands in; where it was
/// asked and did not answer, the run fails (exit 2) rather than decide without it. The
/// request's author becomes the change's author (who may not approve it).
async fn evidence_from_forge(ctx: &Ctx<'_>, facts: &mut ChangeFacts) -> Result<()> {
    let required = &ctx.settings.policy.evidence;
    if !required.require_review && !required.require_tests {
        return Ok(());
    }
    let Some(asked) = ctx
        .forge
        .evidence(facts, required.require_review, required.require_tests)
        .await?
    else {
        tracing::info!(
            "the forge cannot be asked for review and test evidence (no token or API): the pipeline's claims stand"
        );
        return Ok(());
    };
    if let Some(login) = asked.review.as_ref().and_then(|r| r.author.clone()) {
        // The request's author is the change's author, whoever pushed or merged it.
        facts.author.get_or_insert_with(Default::default).login = Some(login);
    }
    facts.evidence.review = asked.review;
    facts.evidence.tests = asked.tests;
    Ok(())
}

/// The service: as settings name it (checked there), else the repository's name, which is
/// checked here as it goes into the correlation key too.
fn service_name(ctx: &Ctx<'_>, detected: &pipeline::Detected) -> Result<String> {
    if let Some(service) = &ctx.settings.service {
        return Ok(service.clone());
    }
    let service = pipeline::default_service(detected.repository.as_deref(), ctx.workdir);
    check_name(&service).map_err(|why| {
        anyhow!(
            "the service name {service:?}, taken from the repository or directory name, is not \
             usable: {why}; name the service with --service ({})",
            env::SERVICE
        )
    })?;
    Ok(service)
}

/// The facts without the commit range since the last recorded change: for flows that
/// only need to find the change (`record`, `status`), this spares the backend a lookup.
pub fn facts_without_range(ctx: &Ctx<'_>, commit: Option<&str>) -> Result<ChangeFacts> {
    let detected = pipeline::detect(&ctx.settings.env, ctx.workdir, commit)?;
    let service = service_name(ctx, &detected)?;
    let extra = sync_texts(ctx, &detected);
    let mut facts =
        detected.into_facts(&service, &ctx.settings.environment, None, None, ctx.workdir);
    if let Some(extra) = extra {
        super::sync::note_references(ctx.settings, &mut facts, &extra);
    }
    Ok(facts)
}

/// [`facts_without_range`], with the tickets `[sync]` looks for among the work items
/// whether or not `[sync] enabled` (for `changegate sync` itself).
pub fn facts_with_references(ctx: &Ctx<'_>, commit: Option<&str>) -> Result<ChangeFacts> {
    let detected = pipeline::detect(&ctx.settings.env, ctx.workdir, commit)?;
    let service = service_name(ctx, &detected)?;
    let extra = detected.texts.clone();
    let mut facts =
        detected.into_facts(&service, &ctx.settings.environment, None, None, ctx.workdir);
    super::sync::note_references(ctx.settings, &mut facts, &extra);
    Ok(facts)
}

/// With `[sync] enabled`, the texts beyond the facts in which `sync` looks for tickets (a
/// pull request's body, a push's commit messages): its references then travel with the
/// change's facts.
fn sync_texts(ctx: &Ctx<'_>, detected: &pipeline::Detected) -> Option<Vec<String>> {
    ctx.settings
        .file
        .sync
        .enabled
        .then(|| detected.texts.clone())
}

/// A record by its id, or else the one for this pipeline's correlation key (with the
/// lookup that found it, for the writes that follow).
pub async fn locate(
    backend: &dyn Backend,
    id: Option<&str>,
    facts: &ChangeFacts,
) -> Result<(Option<ChangeRecord>, Option<Lookup>)> {
    match id {
        Some(id) => Ok((backend.get(id).await?, None)),
        None => {
            let found = backend.find(&facts.key(), Intent::Read).await?;
            Ok((found.record.clone(), Some(found)))
        }
    }
}

/// `open`: only open or update the record (a dry run only looks it up).
pub async fn open(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    gathered: Gathered,
) -> Result<ChangeOutcome> {
    let s = ctx.settings;
    let Gathered { facts, found } = gathered;
    let record = if s.dry_run {
        backend.find(&facts.key(), Intent::Read).await?.record
    } else {
        Some(backend.open(&facts, None, found.as_ref(), s.now).await?)
    };
    let report = Report::from_record(record.as_ref(), &facts, s.mode(), s.dry_run);
    Ok(annotated(ctx, report, facts, record.as_ref(), Exit::Pass).await)
}
