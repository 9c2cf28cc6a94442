//! The embedded ledger: the default backend, a SQLite file with versioned migrations.
//!
//! The correlation key is unique in the schema, and every write runs in an immediate
//! transaction, so two processes gating the same change at the same moment leave one record.

mod client;
mod codec;
mod history;
mod insights;
mod lifecycle;
mod verify;

pub use codec::change_id;
pub use history::DECISION_QUERIES;

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::{Backend, ManualApproval, Waits};

use crate::config::BackendKind;
use crate::domain::SprintCalendar;

/// The embedded SQLite ledger.
pub struct Ledger {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// The sprint calendar, to count the allowance again as a pre-approval is written.
    calendar: Option<SprintCalendar>,
}

impl Backend for Ledger {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn manual(&self) -> Option<&dyn ManualApproval> {
        Some(self)
    }

    fn waits(&self) -> Option<&dyn Waits> {
        Some(self)
    }
}

#[cfg(test)]
mod tests;
