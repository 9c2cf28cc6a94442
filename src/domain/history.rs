//! The track record the policy reads: small, aggregated, whatever the size of the ledger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::change::Outcome;

/// Per-sprint counts of changes, by the sprint they were decided in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SprintTally {
    /// Closed with outcome success (and not turned into a failure by a linked incident).
    pub succeeded: u32,
    /// Closed as failed, including failed after deploy.
    pub failed: u32,
    pub cancelled: u32,
    /// Pre-approved decisions made in the sprint (emergencies excluded): the allowance used.
    pub pre_approved: u32,
    pub emergency: u32,
}

impl SprintTally {
    /// Closed changes that count in a success rate (cancelled ones do not).
    pub fn closed(&self) -> u32 {
        self.succeeded + self.failed
    }

    pub fn success_rate(&self) -> Option<f64> {
        let closed = self.closed();
        (closed > 0).then(|| f64::from(self.succeeded) / f64::from(closed))
    }
}

/// History of one service in one environment, as the policy needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// All closed changes with a success or failure outcome.
    pub closed_total: u64,
    /// Outcomes of the most recent closed changes, newest first, at most `policy.window`.
    pub recent: Vec<Outcome>,
    /// Tallies by sprint index (see [`super::SprintCalendar`]).
    pub sprints: BTreeMap<i64, SprintTally>,
}

impl History {
    pub fn tally(&self, sprint: i64) -> SprintTally {
        self.sprints.get(&sprint).copied().unwrap_or_default()
    }
}
