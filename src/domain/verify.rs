//! Verification: after the window, a change that caused an incident did not succeed.
//!
//! "A change succeeded when it was implemented successfully *and* no incident was linked to
//! it within the verification window." The verdict depends only on the change and its
//! incidents, never on when `verify` happens to run, so a scheduled run is deterministic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::change::Outcome;

/// An incident linked to a change, and when the link was made (when the backend tells).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIncident {
    pub id: String,
    pub linked_at: Option<DateTime<Utc>>,
}

/// What verification concludes about one deployed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Deployed successfully and no incident within the window: the success stands.
    Succeeded,
    /// Deployed "successfully" but incidents were linked within the window: now a failure.
    FailedAfterDeploy { incidents: Vec<String> },
    /// The deploy itself failed; incidents (if any) are noted, the outcome stays a failure.
    Failed { incidents: Vec<String> },
}

impl Verdict {
    /// The outcome the change has once verified.
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Succeeded => Outcome::Success,
            Verdict::FailedAfterDeploy { .. } | Verdict::Failed { .. } => Outcome::Failure,
        }
    }

    pub fn incidents(&self) -> &[String] {
        match self {
            Verdict::Succeeded => &[],
            Verdict::FailedAfterDeploy { incidents } | Verdict::Failed { incidents } => incidents,
        }
    }
}

/// When a change deployed at `deployed_at` may be verified.
pub fn due_at(deployed_at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    deployed_at
        .checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The verdict on a change with a recorded `outcome` (success or failure), deployed at
/// `deployed_at`. Incidents linked after the window closed do not count; an incident whose
/// link time the backend does not tell counts (fail safe: it was linked to this change).
pub fn judge(
    outcome: Outcome,
    deployed_at: DateTime<Utc>,
    window: Duration,
    incidents: &[LinkedIncident],
) -> Verdict {
    let due = due_at(deployed_at, window);
    let mut within: Vec<String> = incidents
        .iter()
        .filter(|i| i.linked_at.is_none_or(|at| at <= due))
        .map(|i| i.id.clone())
        .collect();
    within.sort();
    within.dedup();
    match outcome {
        Outcome::Success if within.is_empty() => Verdict::Succeeded,
        Outcome::Success => Verdict::FailedAfterDeploy { incidents: within },
        Outcome::Failure | Outcome::Cancelled => Verdict::Failed { incidents: within },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn inc(id: &str, linked: Option<&str>) -> LinkedIncident {
        LinkedIncident {
            id: id.into(),
            linked_at: linked.map(at),
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn incidents_within_the_window_turn_a_success_into_a_failure() {
        let deployed = at("2026-03-02T10:00:00Z");
        let table: &[(&str, Outcome, Vec<LinkedIncident>, Verdict)] = &[
            ("no incident", Outcome::Success, vec![], Verdict::Succeeded),
            (
                "one inside",
                Outcome::Success,
                vec![
                    inc("INC-2", Some("2026-03-03T09:00:00Z")),
                    inc("INC-1", Some("2026-03-02T11:00:00Z")),
                ],
                Verdict::FailedAfterDeploy {
                    incidents: vec!["INC-1".into(), "INC-2".into()],
                },
            ),
            (
                "exactly at the end of the window counts",
                Outcome::Success,
                vec![inc("INC-1", Some("2026-03-03T10:00:00Z"))],
                Verdict::FailedAfterDeploy {
                    incidents: vec!["INC-1".into()],
                },
            ),
            (
                "one second after does not",
                Outcome::Success,
                vec![inc("INC-1", Some("2026-03-03T10:00:01Z"))],
                Verdict::Succeeded,
            ),
            (
                "unknown link time counts",
                Outcome::Success,
                vec![inc("INC-9", None)],
                Verdict::FailedAfterDeploy {
                    incidents: vec!["INC-9".into()],
                },
            ),
            (
                "a failed deploy stays failed, incidents noted",
                Outcome::Failure,
                vec![inc("INC-1", None)],
                Verdict::Failed {
                    incidents: vec!["INC-1".into()],
                },
            ),
        ];
        for (name, outcome, incidents, want) in table {
            assert_eq!(&judge(*outcome, deployed, DAY, incidents), want, "{name}");
        }
    }

    #[test]
    fn verdict_outcomes() {
        assert_eq!(Verdict::Succeeded.outcome(), Outcome::Success);
        assert_eq!(
            Verdict::FailedAfterDeploy { incidents: vec![] }.outcome(),
            Outcome::Failure
        );
        assert_eq!(
            due_at(at("2026-03-02T10:00:00Z"), DAY),
            at("2026-03-03T10:00:00Z")
        );
    }
}
