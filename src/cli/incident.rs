//! `incident`: link an incident to a change (the ledgers only, local or postgres; with an ITSM backend the
//! incident is linked in the ITSM, where `verify` finds it).

use anyhow::{Result, bail};

use super::{Ctx, Exit, present};
use crate::flow;
use crate::itsm::{self, ManualCommand};

#[derive(Debug, Clone, clap::Args)]
pub struct IncidentArgs {
    /// The change that caused the incident (e.g. CG-12).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: String,
    /// The incident's id (e.g. INC-1, INC0012345).
    #[arg(long = "id", value_name = "INCIDENT")]
    pub incident: String,
}

/// An incident id is data: one line, printable, of a sane length.
fn valid_incident(id: &str) -> Result<&str> {
    let id = id.trim();
    if id.is_empty() || id.len() > 100 || id.chars().any(char::is_control) {
        bail!(
            "invalid incident id {id:?}: give the incident's id, e.g. --id INC-1 (one line, at most 100 characters)"
        );
    }
    Ok(id)
}

/// `incident`: the ledgers only (local, postgres); a checked id linked through the flow.
pub async fn run(ctx: &Ctx<'_>, args: &IncidentArgs) -> Result<Exit> {
    let s = &ctx.settings;
    itsm::manual_only(s.backend, ManualCommand::Incident)?;
    let incident = valid_incident(&args.incident)?;
    let backend = itsm::connect(s)?;
    let linked =
        flow::ledger::link_incident(ctx, backend.as_ref(), &args.change_id, incident).await?;
    present::linked(s, &linked)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_ids_are_one_printable_line() {
        assert_eq!(valid_incident(" INC-1 ").unwrap(), "INC-1");
        assert!(valid_incident("").is_err());
        assert!(valid_incident("INC-1\nINC-2").is_err());
        assert!(valid_incident(&"x".repeat(101)).is_err());
    }
}
