//! A forge's own deployment history read as closed changes (`history import`): what a
//! deployment's statuses mean as an outcome, and which deployment of a commit speaks for
//! the change. Pure: the forge adapters read the words, the ledger writes the result.

use chrono::{DateTime, Utc};

use super::change::Outcome;

/// One status a forge gave a deployment: its word (GitHub's `state`, GitLab's `status`)
/// and when it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeStatus {
    pub state: String,
    pub at: DateTime<Utc>,
}

/// How a finished deployment ended, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub outcome: Outcome,
    pub at: DateTime<Utc>,
}

/// What one status word says: an outcome, "superseded" (GitHub's `inactive`), or nothing
/// final (queued, pending, in progress, running, created, blocked, waiting, or a word
/// changegate does not know: never guessed into an outcome).
enum Word {
    Final(Outcome),
    Inactive,
    NotFinal,
}

fn word(state: &str) -> Word {
    match state.trim().to_ascii_lowercase().as_str() {
        "success" => Word::Final(Outcome::Success),
        // GitHub `failure`, `error`; GitLab `failed`.
        "failure" | "error" | "failed" => Word::Final(Outcome::Failure),
        "canceled" | "cancelled" => Word::Final(Outcome::Cancelled),
        "inactive" => Word::Inactive,
        _ => Word::NotFinal,
    }
}

/// A deployment's final word from its statuses (in any order): `None` when it has no
/// status, is still running (its latest status is not final), or went `inactive` without
/// having finished. `inactive` after a final status (GitHub marks a deployment inactive
/// when a newer one replaces it) keeps that status's outcome and time.
pub fn finished(statuses: &[ForgeStatus]) -> Option<Finished> {
    let mut ordered: Vec<&ForgeStatus> = statuses.iter().collect();
    // Stable: statuses given in the same second keep the forge's order (oldest first).
    ordered.sort_by_key(|s| s.at);
    let latest = ordered.last()?;
    match word(&latest.state) {
        Word::Final(outcome) => Some(Finished {
            outcome,
            at: latest.at,
        }),
        Word::NotFinal => None,
        Word::Inactive => ordered
            .iter()
            .rev()
            .find_map(|s| match word(&s.state) {
                Word::Final(outcome) => Some(Some(Finished { outcome, at: s.at })),
                Word::Inactive => None,
                // Running when it was superseded: it never finished.
                Word::NotFinal => Some(None),
            })
            .flatten(),
    }
}

/// The change of a commit deployed more than once to one environment: the deployment whose
/// final status came last. `deployments` pairs each deployment's start with its final
/// word; unfinished ones are `None` and never chosen.
pub fn latest_finished<T>(deployments: Vec<(T, Option<Finished>)>) -> Option<(T, Finished)> {
    deployments
        .into_iter()
        .filter_map(|(d, f)| f.map(|f| (d, f)))
        .max_by_key(|(_, f)| f.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-03-02T10:{minute:02}:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    fn s(state: &str, minute: u32) -> ForgeStatus {
        ForgeStatus {
            state: state.into(),
            at: at(minute),
        }
    }

    #[test]
    fn final_words_and_what_is_still_running() {
        use Outcome::*;
        type Case = (Vec<ForgeStatus>, Option<(Outcome, u32)>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![s("queued", 1), s("in_progress", 2)], None),
            (
                vec![s("in_progress", 1), s("success", 3)],
                Some((Success, 3)),
            ),
            // Newest first, as GitHub lists them: the order given does not matter.
            (
                vec![s("success", 3), s("in_progress", 1)],
                Some((Success, 3)),
            ),
            (vec![s("failure", 2)], Some((Failure, 2))),
            (vec![s("error", 2)], Some((Failure, 2))),
            (vec![s("failed", 2)], Some((Failure, 2))),
            (vec![s("canceled", 2)], Some((Cancelled, 2))),
            (vec![s("success", 2), s("inactive", 9)], Some((Success, 2))),
            (vec![s("failure", 2), s("inactive", 9)], Some((Failure, 2))),
            (vec![s("in_progress", 2), s("inactive", 9)], None),
            (vec![s("inactive", 9)], None),
            (vec![s("success", 2), s("running", 5)], None),
            (vec![s("created", 1), s("blocked", 2)], None),
            (vec![s("SUCCESS", 2)], Some((Success, 2))),
            (vec![s("exploded", 2)], None),
        ];
        for (statuses, want) in cases {
            let got = finished(&statuses).map(|f| (f.outcome, f.at));
            assert_eq!(
                got,
                want.map(|(o, m)| (o, at(m))),
                "{:?}",
                statuses.iter().map(|s| &s.state).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_commit_deployed_twice_takes_the_latest_final_status() {
        let fin = |outcome, m| Some(Finished { outcome, at: at(m) });
        let chosen = latest_finished(vec![
            ("first", fin(Outcome::Success, 5)),
            ("again", fin(Outcome::Failure, 20)),
            ("running", None),
        ]);
        assert_eq!(
            chosen.map(|(d, f)| (d, f.outcome)),
            Some(("again", Outcome::Failure))
        );
        assert_eq!(latest_finished::<&str>(vec![("running", None)]), None);
    }
}
