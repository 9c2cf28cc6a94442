//! `status`: the change for this pipeline, or one named by its id.

use anyhow::{Result, bail};

use super::{ChangeOutcome, Ctx, Exit, change};
use crate::domain::ChangeFacts;
use crate::itsm::Backend;
use crate::output::Report;

/// The change as the backend holds it; the forge is not told (nothing changed).
pub async fn run(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    facts: ChangeFacts,
    change_id: Option<&str>,
) -> Result<ChangeOutcome> {
    let (Some(record), _) = change::locate(backend, change_id, &facts).await? else {
        match change_id {
            Some(id) => bail!("no change record {id} (check the id, or leave out --change)"),
            None => bail!(
                "no change record for {} (run `changegate gate` for this commit first, or pass --change ID)",
                facts.key()
            ),
        }
    };
    let report = Report::from_record(
        Some(&record),
        &facts,
        ctx.settings.mode(),
        ctx.settings.dry_run,
    );
    Ok(ChangeOutcome {
        report,
        facts,
        exit: Exit::Pass,
        warnings: Vec::new(),
        failure: None,
    })
}
