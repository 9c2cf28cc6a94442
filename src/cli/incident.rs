//! `incident`: link an incident to a change (embedded ledger only; with an ITSM backend the
//! incident is linked in the ITSM, where `verify` finds it).

use anyhow::{Result, bail};
use serde::Serialize;

use super::{Ctx, Exit};
use crate::domain::verify;
use crate::itsm::{self, ManualCommand};
use crate::output::console;
use crate::settings::Format;

#[derive(Debug, Clone, clap::Args)]
pub struct IncidentArgs {
    /// The change that caused the incident (e.g. CG-12).
    #[arg(long = "change", value_name = "ID")]
    pub change_id: String,
    /// The incident's id (e.g. INC-1, INC0012345).
    #[arg(long = "id", value_name = "INCIDENT")]
    pub incident: String,
}

#[derive(Debug, Serialize)]
struct Linked {
    change_id: String,
    incident: String,
    incidents: Vec<String>,
    dry_run: bool,
    /// Whether `verify` will count it: linked within the verification window.
    within_window: bool,
    message: Option<String>,
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

pub async fn run(ctx: &Ctx, args: &IncidentArgs) -> Result<Exit> {
    let s = &ctx.settings;
    itsm::manual_only(s.backend, ManualCommand::Incident)?;
    let incident = valid_incident(&args.incident)?;
    let itsm = itsm::connect(s)?;
    let record = if s.dry_run {
        match itsm.get(&args.change_id).await? {
            Some(mut r) => {
                if !r.incidents.iter().any(|i| i == incident) {
                    r.incidents.push(incident.to_string());
                }
                r
            }
            None => bail!("no change {} in the ledger", args.change_id),
        }
    } else {
        itsm::manual(itsm.as_ref(), ManualCommand::Incident)?
            .link_incident(&args.change_id, incident, s.now)
            .await?
    };
    let due = record
        .deployed_at
        .map(|at| verify::due_at(at, s.verify_window));
    let within_window = due.is_none_or(|due| s.now <= due);
    let message = match (record.deployed_at, due) {
        (_, Some(due)) if !within_window => Some(format!(
            "the verification window of {} closed at {}: this incident does not change its outcome",
            record.id,
            due.format("%Y-%m-%d %H:%M UTC")
        )),
        (None, _) => Some(format!("{} has not been deployed", record.id)),
        _ => None,
    };
    let linked = Linked {
        change_id: record.id.clone(),
        incident: incident.to_string(),
        incidents: record.incidents.clone(),
        dry_run: s.dry_run,
        within_window,
        message,
    };
    match s.format {
        Format::Json => console::json(&linked)?,
        _ => {
            let verb = if s.dry_run {
                "would be linked [dry run: nothing written]"
            } else {
                "linked"
            };
            let mut text = format!(
                "{}: incident {} {verb}; incidents: {}\n",
                linked.change_id,
                linked.incident,
                linked.incidents.join(", ")
            );
            if let Some(m) = &linked.message {
                text.push_str(&format!("  {m}\n"));
            }
            console::human(&text, s.github_actions)?;
        }
    }
    Ok(Exit::Pass)
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
