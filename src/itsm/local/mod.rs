//! The ledger: changegate's own record of changes, on one of two stores: the embedded
//! SQLite file (`backend.kind = "local"`, the default) or a PostgreSQL database
//! (`backend.kind = "postgres"`, for runners whose workspace does not outlive the job).
//!
//! The ledger's logic (what `open` writes, the decision's aggregates, `verify`, the KPIs,
//! `approve`) is written once against `client::Store`; the differences between the stores
//! are the short list in `client.rs`. The correlation key is unique in the schema, and every
//! write that reads first runs serialised (SQLite: an immediate transaction; PostgreSQL: an
//! advisory lock on the service and environment), so two processes gating at the same moment
//! leave one record and never overrun the allowance.

mod client;
mod codec;
mod history;
mod insights;
mod lifecycle;
mod verify;

pub use client::{MIGRATIONS, SchemaStatus, Timeouts};
pub use codec::change_id;
pub use history::DECISION_QUERIES;
pub use insights::REPORT_QUERIES;

use std::time::Duration;

use super::{Announcements, Backend, Imports, KeptKpis, ManualApproval, Waits};

use crate::config::BackendKind;
use crate::domain::SprintCalendar;

/// The ledger, on SQLite or PostgreSQL.
pub struct Ledger {
    store: client::Store,
    /// The sprint calendar, to count the allowance again as a pre-approval is written.
    calendar: Option<SprintCalendar>,
    /// Test-only: how long `open` holds its transaction before committing.
    pause_in_tx: Option<Duration>,
    /// Admissions waiting for the next write ([`Waits::admit`]): written together, in one
    /// transaction and one sync to disk.
    admissions: lifecycle::Admissions,
}

impl Backend for Ledger {
    fn kind(&self) -> BackendKind {
        self.kind_of()
    }

    fn manual(&self) -> Option<&dyn ManualApproval> {
        Some(self)
    }

    fn waits(&self) -> Option<&dyn Waits> {
        Some(self)
    }

    fn imports(&self) -> Option<&dyn Imports> {
        Some(self)
    }

    fn announcements(&self) -> Option<&dyn Announcements> {
        Some(self)
    }

    fn kept_kpis(&self) -> Option<&dyn KeptKpis> {
        Some(self)
    }
}

#[cfg(test)]
pub(crate) mod tests;
