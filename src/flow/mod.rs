//! The gate's flow, as a library: what each command does with resolved settings, a backend
//! and the forge, returned as an outcome. Nothing here prints, writes a file of the job's
//! (outputs, summary, dotenv) or exits: the door that called (the CLI today, a server
//! tomorrow) presents the outcome its own way, as cargo-deny's `check(ctx, sink)` leaves
//! output and exit code to its binary.
//!
//! Dependencies: flow imports the domain, the ports (`backend`, `forge`, `pipeline`) and the
//! report type; the doors import flow.

use std::path::Path;
use std::process::ExitCode;

use crate::domain::{ChangeFacts, ChangeRecord, Gate};
use crate::forge::{AnnotateError, Forge};
use crate::output::Report;
use crate::settings::Settings;

pub mod announce;
pub mod change;
pub mod gate;
pub mod import;
pub mod ledger;
pub mod policy;
pub mod record;
pub mod report;
pub mod status;
pub mod sync;
pub mod verify;

/// How a command ended. Pipelines tell "blocked" from "the gate is broken" by the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: pass / done.
    Pass,
    /// 1: blocked; the deploy must not proceed.
    Blocked,
    /// 2: error; failed closed.
    Error,
}

impl From<Gate> for Exit {
    /// Only a pass lets the deploy go ahead; waiting is blocked for the pipeline.
    fn from(gate: Gate) -> Exit {
        match gate {
            Gate::Pass => Exit::Pass,
            Gate::Blocked | Gate::Waiting => Exit::Blocked,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        match e {
            Exit::Pass => ExitCode::SUCCESS,
            Exit::Blocked => ExitCode::from(1),
            Exit::Error => ExitCode::from(2),
        }
    }
}

/// What every flow gets from its door: the resolved settings (with the snapshot of the
/// environment the pipeline's facts are read from), where it runs, and the run's forge.
pub struct Ctx<'a> {
    /// Resolved once by the door.
    pub settings: &'a Settings,
    /// The checkout the run is about.
    pub workdir: &'a Path,
    /// Built once per run; every annotation of the run shares its clients.
    pub forge: &'a Forge<'a>,
}

/// The outcome of a command about one change (`gate`, `open`, `record`, `status`).
#[derive(Debug)]
pub struct ChangeOutcome {
    /// What the door shows and writes (stdout, step outputs, summary, dotenv).
    pub report: Report,
    /// The facts the report is about (the job summary shows them).
    pub facts: ChangeFacts,
    /// What the pipeline is told.
    pub exit: Exit,
    /// Warnings for the door to show (an annotation that failed, not required).
    pub warnings: Vec<String>,
    /// A required annotation that failed, found after the report was complete: the door
    /// presents the report, then ends with this error (exit 2).
    pub failure: Option<AnnotateError>,
}

/// Progress while a flow waits (for an approval); the door shows it as it likes.
pub trait Progress: Send + Sync {
    /// One poll found the change still waiting.
    fn waiting(&self, wait: &Waiting);
    /// A warning that should not wait for the outcome (an annotation made before the
    /// wait that failed).
    fn warning(&self, text: &str);
}

/// Where a wait for approval stands after one poll.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The change waited for.
    pub change_id: String,
    /// Since the wait began.
    pub elapsed: std::time::Duration,
    /// Until the wait ends.
    pub remaining: std::time::Duration,
    /// Until the next poll.
    pub next: std::time::Duration,
    /// Who may approve the change and exactly how (see [`gate::how_to_approve`]).
    pub how: String,
}

/// A [`Progress`] that shows nothing (a server's callback needs only the outcome).
pub struct Silent;

impl Progress for Silent {
    fn waiting(&self, _: &Waiting) {}
    fn warning(&self, _: &str) {}
}

/// The outcome once the forge was told: its warnings, or the error a required
/// annotation ends with, go with the report.
pub(crate) async fn annotated(
    ctx: &Ctx<'_>,
    report: Report,
    facts: ChangeFacts,
    record: Option<&ChangeRecord>,
    exit: Exit,
) -> ChangeOutcome {
    let (warnings, failure) = match ctx.forge.annotate(&report, &facts, record).await {
        Ok(warnings) => (warnings, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    ChangeOutcome {
        report,
        facts,
        exit,
        warnings,
        failure,
    }
}

#[cfg(test)]
mod tests;
