//! What a change is: its identity, the facts the pipeline gives about it, and the record
//! an ITSM keeps of it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::approval::Author;
use super::decision::{Decision, DecisionKind, Gate, Mode};
use super::evidence::Evidence;

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    Failure,
    Cancelled,
}

impl Outcome {
    /// Parses the outcome words a pipeline may hand over: ours, GitHub's `job.status`
    /// (`success`, `failure`, `cancelled`) and GitLab's `CI_JOB_STATUS` (`failed`, `canceled`).
    pub fn from_word(word: &str) -> Option<Outcome> {
        match word.trim().to_ascii_lowercase().as_str() {
            "success" | "succeeded" => Some(Outcome::Success),
            "failure" | "failed" => Some(Outcome::Failure),
            "cancelled" | "canceled" => Some(Outcome::Cancelled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a change record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    New,
    AwaitingApproval,
    Approved,
    Rejected,
    Implementing,
    Closed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::AwaitingApproval => "awaiting-approval",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Implementing => "implementing",
            State::Closed => "closed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "new" => State::New,
            "awaiting-approval" => State::AwaitingApproval,
            "approved" => State::Approved,
            "rejected" => State::Rejected,
            "implementing" => State::Implementing,
            "closed" => State::Closed,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }

    /// True once the record has been closed one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, State::Closed | State::Cancelled | State::Rejected)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CI system a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Github,
    Gitlab,
    Local,
}

/// The longest service or environment name accepted.
pub const MAX_NAME_LEN: usize = 100;

/// Checks a service or environment name, which becomes part of the correlation key
/// (`changegate:<service>:<environment>:<sha>`) and of every record: not empty, no `:` (the
/// key's separator), letters, digits, spaces and `-_./@+()` only, no space at either end,
/// at most [`MAX_NAME_LEN`] characters. The error says what is wrong.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if name.contains(':') {
        return Err(NameError::Separator);
    }
    if name.trim() != name {
        return Err(NameError::Space);
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || " -_./@+()".contains(*c)))
    {
        return Err(NameError::Char(c));
    }
    Ok(())
}

/// Why a name cannot enter a correlation key; the text completes "... is not usable: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or spaces only.
    #[error("it must not be empty")]
    Empty,
    /// Holds the key's separator.
    #[error("it must not contain ':' (the correlation key's separator)")]
    Separator,
    /// Begins or ends with a space.
    #[error("it must not begin or end with a space")]
    Space,
    /// Longer than [`MAX_NAME_LEN`] characters.
    #[error("it must be at most {MAX_NAME_LEN} characters")]
    TooLong,
    /// Holds a character outside letters, digits, spaces and `-_./@+()`.
    #[error("{0:?} is not allowed (letters, digits, spaces and -_./@+() are)")]
    Char(char),
}

/// Why a stored text is not a correlation key changegate wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// It does not start with [`CorrelationKey::START`].
    #[error("a correlation key starts with {:?}", CorrelationKey::START)]
    Prefix,
    /// A service, environment or commit part is missing or empty.
    #[error("a correlation key is `changegate:<service>:<environment>:<sha>`, each part not empty")]
    Parts,
}

/// What makes a change unique: service identity + environment + full commit SHA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationKey {
    pub service_id: String,
    pub environment: String,
    pub sha: String,
}

impl CorrelationKey {
    /// The first word of every key changegate writes.
    pub const PREFIX: &'static str = "changegate";
    /// What every key changegate writes starts with: the prefix and its separator.
    pub const START: &'static str = "changegate:";

    /// The key of commit `sha` of a service in an environment.
    pub fn new(service_id: &str, environment: &str, sha: &str) -> Self {
        CorrelationKey {
            service_id: service_id.to_string(),
            environment: environment.to_string(),
            sha: sha.to_string(),
        }
    }

    /// The key cut to `max` characters for backends with a short field. Only the service
    /// part is shortened (from the left, keeping its most specific end); the SHA never is.
    pub fn fitted(&self, max: usize) -> String {
        let full = self.to_string();
        if full.len() <= max {
            return full;
        }
        let fixed = Self::PREFIX.len() + 3 + self.environment.len() + self.sha.len();
        let room = max.saturating_sub(fixed);
        let service = &self.service_id;
        let mut start = service.len().saturating_sub(room);
        while !service.is_char_boundary(start) {
            start += 1;
        }
        format!(
            "{}:{}:{}:{}",
            Self::PREFIX,
            &service[start..],
            self.environment,
            self.sha
        )
    }
}

impl fmt::Display for CorrelationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            Self::PREFIX,
            self.service_id,
            self.environment,
            self.sha
        )
    }
}

/// Parses a stored key (`changegate:<service>:<environment>:<sha>`, surrounding spaces
/// ignored). The service part may hold `:` no more than a name may, but a key fitted to a
/// short field (see [`CorrelationKey::fitted`]) has lost its service's start: it parses,
/// with the shortened service.
impl std::str::FromStr for CorrelationKey {
    type Err = KeyError;

    fn from_str(key: &str) -> Result<Self, KeyError> {
        let rest = key
            .trim()
            .strip_prefix(Self::START)
            .ok_or(KeyError::Prefix)?;
        let mut parts = rest.rsplitn(3, ':');
        let mut part = || {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .ok_or(KeyError::Parts)
        };
        let sha = part()?;
        let environment = part()?;
        let service_id = part()?;
        Ok(CorrelationKey::new(service_id, environment, sha))
    }
}

/// A pull or merge request the change came through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub url: Option<String>,
    pub head_sha: Option<String>,
    pub head_ref: Option<String>,
    pub base_ref: Option<String>,
    pub labels: Vec<String>,
    /// Whether the request was approved by a reviewer, when the platform tells.
    pub reviewed: Option<bool>,
    /// The event the run is about says the request was merged (a `pull_request` event of
    /// action `closed` with `merged: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merged: bool,
}

/// One commit in the change's range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
    pub author: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// Everything the pipeline tells about a change, gathered before any decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeFacts {
    pub platform: Platform,
    /// Display name of the service.
    pub service: String,
    /// The service's identity: includes the repository so two repositories never collide.
    pub service_id: String,
    pub environment: String,
    pub repository: Option<String>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub pull_request: Option<PullRequest>,
    /// `(base, head)` of the commits this change deploys, when known.
    pub range: Option<(String, String)>,
    pub commits: Vec<Commit>,
    pub lines_changed: Option<u64>,
    pub paths: Vec<String>,
    /// The touched paths could not all be established (a shallow checkout without platform
    /// data, a listing cut short): `paths` holds those that are known, possibly none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paths_unknown: bool,
    pub work_items: Vec<String>,
    pub run_url: Option<String>,
    pub repository_url: Option<String>,
    pub actor: Option<String>,
    /// Who made the change: the pull/merge request's author, else the commit's (see
    /// [`crate::domain::approval`]); `None` when the pipeline could not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Author>,
    /// Whether the pipeline's tests passed, when the pipeline says.
    pub tests_passed: Option<bool>,
    /// The review and test evidence the forge gave, and what the pipeline claimed.
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub evidence: Evidence,
}

impl ChangeFacts {
    pub fn key(&self) -> CorrelationKey {
        CorrelationKey::new(&self.service_id, &self.environment, &self.commit_sha)
    }

    /// A one-line summary for the change record.
    pub fn summary(&self) -> String {
        let short = self.commit_sha.get(..12).unwrap_or(&self.commit_sha);
        match &self.pull_request {
            Some(pr) => format!(
                "Deploy {} to {}: {} (#{}, {short})",
                self.service, self.environment, pr.title, pr.number
            ),
            None => format!("Deploy {} {short} to {}", self.service, self.environment),
        }
    }

    /// The earliest commit time in the range, for lead time.
    pub fn first_commit_at(&self) -> Option<DateTime<Utc>> {
        self.commits.iter().filter_map(|c| c.timestamp).min()
    }
}

/// The record a backend keeps of a change, in backend-neutral terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// The backend's human identifier (e.g. `CHG0030001`, `CHG-12`).
    pub id: String,
    pub url: Option<String>,
    pub key: String,
    pub state: State,
    pub decision: Option<Decision>,
    pub outcome: Option<Outcome>,
    pub emergency_reason: Option<String>,
    pub approved_by: Option<String>,
    pub approval_comment: Option<String>,
    pub opened_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub approved_at: Option<DateTime<Utc>>,
    pub deployed_at: Option<DateTime<Utc>>,
    pub incidents: Vec<String>,
    /// Who made the change, as its facts recorded it (ledgers keep it; an ITSM does not).
    #[serde(default)]
    pub author: Option<Author>,
    /// Set when a gate's wait for approval ran out while the change still awaited it: the
    /// final word is `blocked` until a human decides.
    #[serde(default)]
    pub timed_out: bool,
    /// The decision was rebuilt from the backend's own fields (a change's type and state,
    /// labels) because changegate's stored text of it is gone: its mode is not known, so it
    /// never stands and the gate decides again.
    #[serde(default)]
    pub decision_inferred: bool,
    /// Set by a gate when the approval the ITSM reports does not count: everyone who gave
    /// it is the change's author, or either side is unknown (see
    /// [`super::approval::itsm_approval_counts`]). The final word is `blocked` while the
    /// change stands approved on that approval alone.
    #[serde(default)]
    pub approval_not_counted: bool,
}

impl ChangeRecord {
    /// Whether a human rejected the change, or the wait for its approval ran out and nobody
    /// has decided since, or the approval it holds does not count (its author gave it).
    pub fn refused(&self) -> bool {
        self.state == State::Rejected
            || (self.timed_out && self.state == State::AwaitingApproval)
            || (self.approval_not_counted && self.state == State::Approved)
    }

    /// The final decision, what every output reports as `decision`: `blocked` after a
    /// rejection or a timed-out wait, the policy's decision otherwise.
    pub fn final_decision(&self) -> Option<DecisionKind> {
        let d = self.decision.as_ref()?;
        Some(if self.refused() {
            DecisionKind::Blocked
        } else {
            d.kind
        })
    }

    /// What a gate run in `mode` does with this change now (see [`DecisionKind::gate`]). The
    /// run's mode, not the one the decision was made under: a rejection blocks an enforce
    /// run whatever mode the change was first decided in.
    pub fn gate(&self, mode: Mode) -> Option<Gate> {
        Some(self.final_decision()?.gate(mode, Some(self.state)))
    }

    /// Whether what the record holds stands on a re-run of a gate in `mode`, or the change
    /// is decided again. A human's rejection always stands (and blocks, see [`Self::gate`]).
    /// Any other decision stands only for the mode it was made under, and never when its
    /// mode is unknown ([`Self::decision_inferred`]): an observe decision never lets an
    /// enforce run pass. Within its mode, a closed or cancelled record's decision stands, a
    /// policy block is decided again (the freeze may have ended) unless the deploy already
    /// went ahead, and a newly declared emergency re-decides a change still waiting for
    /// approval. A closed or cancelled record that never held a decision is left as it is.
    pub fn decision_stands(&self, mode: Mode, emergency_requested: bool) -> bool {
        if self.state == State::Rejected {
            return true;
        }
        let Some(d) = &self.decision else {
            return matches!(self.state, State::Closed | State::Cancelled);
        };
        if self.decision_inferred || d.mode != mode {
            return false;
        }
        if matches!(self.state, State::Closed | State::Cancelled) {
            return true;
        }
        match d.kind {
            DecisionKind::Blocked => self.state == State::Implementing,
            DecisionKind::NeedsApproval => {
                !(emergency_requested
                    && d.emergency.is_none()
                    && self.state == State::AwaitingApproval)
            }
            DecisionKind::PreApproved => true,
        }
    }

    /// The decision this record holds that stands for a gate run in `mode` (see
    /// [`Self::decision_stands`]): the gate reuses it instead of deciding again.
    pub fn standing_decision(&self, mode: Mode, emergency_requested: bool) -> Option<&Decision> {
        self.decision
            .as_ref()
            .filter(|_| self.decision_stands(mode, emergency_requested))
    }

    /// A closed or cancelled record without a decision that stands for `mode`: it is not
    /// reopened, and a new decision is judged without being written to it (only a
    /// pre-approval lets the deploy go ahead).
    pub fn left_closed(&self, mode: Mode, emergency_requested: bool) -> bool {
        matches!(self.state, State::Closed | State::Cancelled)
            && self.standing_decision(mode, emergency_requested).is_none()
    }

    /// Whether a backend writes a new decision made in `mode` on this record: only when its
    /// own does not stand, and never on a closed or cancelled record (its outcome belongs
    /// to the deploy it recorded; the gate judges the new decision without writing it).
    pub fn takes_decision(&self, mode: Mode, emergency_requested: bool) -> bool {
        !self.decision_stands(mode, emergency_requested)
            && !matches!(self.state, State::Closed | State::Cancelled)
    }

    /// The commit of the change, from its correlation key (whose SHA is never shortened).
    pub fn commit_sha(&self) -> Option<&str> {
        self.key
            .rsplit_once(':')
            .map(|(_, sha)| sha)
            .filter(|sha| !sha.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: DecisionKind, mode: Mode, state: State) -> ChangeRecord {
        ChangeRecord {
            id: "CG-1".into(),
            url: None,
            key: format!("changegate:acme/payments-api:production:{}", "a".repeat(40)),
            state,
            decision: Some(Decision {
                kind,
                rules: Vec::new(),
                mode,
                emergency: None,
                sprint: 0,
                allowance: 1,
                allowance_used: 0,
                clock_override: None,
            }),
            outcome: None,
            emergency_reason: None,
            approved_by: None,
            approval_comment: None,
            opened_at: None,
            decided_at: None,
            approved_at: None,
            deployed_at: None,
            incidents: Vec::new(),
            author: None,
            timed_out: false,
            decision_inferred: false,
            approval_not_counted: false,
        }
    }

    #[test]
    fn a_rejection_or_a_timeout_is_the_final_word() {
        use DecisionKind::*;
        let e = Mode::Enforce;
        let rejected = record(NeedsApproval, e, State::Rejected);
        assert_eq!(rejected.final_decision(), Some(Blocked));
        assert_eq!(rejected.gate(e), Some(Gate::Blocked));
        let mut timed_out = record(NeedsApproval, e, State::AwaitingApproval);
        assert_eq!(timed_out.gate(e), Some(Gate::Waiting));
        timed_out.timed_out = true;
        assert_eq!(timed_out.final_decision(), Some(Blocked));
        assert_eq!(timed_out.gate(e), Some(Gate::Blocked));
        // Approved late: the timeout no longer counts.
        timed_out.state = State::Approved;
        assert_eq!(timed_out.final_decision(), Some(NeedsApproval));
        assert_eq!(timed_out.gate(e), Some(Gate::Pass));
        // Approved by its author alone: the approval does not count.
        let mut self_approved = record(NeedsApproval, e, State::Approved);
        self_approved.approval_not_counted = true;
        assert_eq!(self_approved.final_decision(), Some(Blocked));
        assert_eq!(self_approved.gate(e), Some(Gate::Blocked));
        // An observe run never holds a deploy back, whatever the final word.
        assert_eq!(
            record(NeedsApproval, e, State::Rejected).gate(Mode::Observe),
            Some(Gate::Pass)
        );
    }

    #[test]
    fn a_rejection_blocks_an_enforce_run_whatever_mode_it_was_asked_in() {
        let r = record(DecisionKind::NeedsApproval, Mode::Observe, State::Rejected);
        assert!(r.decision_stands(Mode::Enforce, false));
        assert_eq!(r.gate(Mode::Enforce), Some(Gate::Blocked));
    }

    #[test]
    fn which_decisions_stand_on_a_re_run() {
        use DecisionKind::*;
        use State::*;
        let (e, o) = (Mode::Enforce, Mode::Observe);
        // (decision, made under, state, run mode, emergency declared, stands)
        let cases = [
            (PreApproved, e, Implementing, e, false, true),
            (PreApproved, o, Implementing, e, false, false),
            (NeedsApproval, o, AwaitingApproval, e, false, false),
            (NeedsApproval, o, Implementing, e, false, false),
            (NeedsApproval, e, AwaitingApproval, e, false, true),
            (NeedsApproval, e, AwaitingApproval, e, true, false),
            (NeedsApproval, e, Approved, e, true, true),
            (NeedsApproval, e, Rejected, e, true, true),
            (NeedsApproval, e, Rejected, o, false, true),
            (NeedsApproval, o, Rejected, e, false, true),
            (Blocked, e, New, e, false, false),
            (Blocked, o, Implementing, o, false, true),
            (PreApproved, e, Closed, e, false, true),
            (NeedsApproval, o, Closed, o, false, true),
            (PreApproved, o, Closed, e, false, false),
            (NeedsApproval, o, Closed, e, false, false),
            (Blocked, o, Cancelled, e, false, false),
            (NeedsApproval, e, Cancelled, o, false, false),
        ];
        for (kind, made, state, mode, emergency, want) in cases {
            assert_eq!(
                record(kind, made, state).decision_stands(mode, emergency),
                want,
                "{kind} made in {made:?}, {state}, run in {mode:?}, emergency {emergency}"
            );
        }
    }

    #[test]
    fn an_inferred_decision_never_stands_but_a_rejection_does() {
        use DecisionKind::*;
        for (kind, state) in [
            (NeedsApproval, State::Implementing),
            (PreApproved, State::Approved),
            (PreApproved, State::Closed),
        ] {
            let mut r = record(kind, Mode::Enforce, state);
            r.decision_inferred = true;
            assert!(!r.decision_stands(Mode::Enforce, false), "{kind} {state}");
        }
        let mut rejected = record(NeedsApproval, Mode::Enforce, State::Rejected);
        rejected.decision_inferred = true;
        assert!(rejected.decision_stands(Mode::Enforce, false));
    }

    #[test]
    fn a_closed_record_never_takes_a_new_decision() {
        use DecisionKind::*;
        let closed = record(NeedsApproval, Mode::Observe, State::Closed);
        assert!(!closed.decision_stands(Mode::Enforce, false));
        assert!(!closed.takes_decision(Mode::Enforce, false));
        let waiting = record(NeedsApproval, Mode::Observe, State::AwaitingApproval);
        assert!(waiting.takes_decision(Mode::Enforce, false));
    }

    #[test]
    fn a_closed_record_is_left_closed_unless_its_decision_stands_for_the_run() {
        use DecisionKind::*;
        let observed = record(NeedsApproval, Mode::Observe, State::Closed);
        assert!(observed.left_closed(Mode::Enforce, false));
        assert!(observed.standing_decision(Mode::Enforce, false).is_none());
        assert!(!observed.left_closed(Mode::Observe, false));
        assert!(observed.standing_decision(Mode::Observe, false).is_some());
        // Stands as it is, yet holds no decision to reuse: left closed all the same.
        let mut bare = record(PreApproved, Mode::Enforce, State::Cancelled);
        bare.decision = None;
        assert!(bare.decision_stands(Mode::Enforce, false));
        assert!(bare.standing_decision(Mode::Enforce, false).is_none());
        assert!(bare.left_closed(Mode::Enforce, false));
        let open = record(PreApproved, Mode::Observe, State::Implementing);
        assert!(!open.left_closed(Mode::Enforce, false));
    }

    #[test]
    fn the_state_a_decision_sets() {
        let d = |kind| record(kind, Mode::Enforce, State::New).decision.unwrap();
        assert_eq!(d(DecisionKind::PreApproved).state_after(), State::Approved);
        assert_eq!(
            d(DecisionKind::NeedsApproval).state_after(),
            State::AwaitingApproval
        );
        assert_eq!(d(DecisionKind::Blocked).state_after(), State::New);
    }

    #[test]
    fn the_commit_comes_from_the_key() {
        let r = record(DecisionKind::PreApproved, Mode::Enforce, State::New);
        assert_eq!(r.commit_sha(), Some("a".repeat(40).as_str()));
    }

    #[test]
    fn outcome_words_of_both_platforms() {
        assert_eq!(Outcome::from_word("success"), Some(Outcome::Success));
        assert_eq!(Outcome::from_word("failure"), Some(Outcome::Failure));
        assert_eq!(Outcome::from_word("failed"), Some(Outcome::Failure));
        assert_eq!(Outcome::from_word("cancelled"), Some(Outcome::Cancelled));
        assert_eq!(Outcome::from_word("canceled"), Some(Outcome::Cancelled));
        assert_eq!(Outcome::from_word("skipped"), None);
    }

    #[test]
    fn names_in_the_key_are_checked() {
        for good in [
            "payments-api",
            "production",
            "review/fee-42",
            "EU West (1)",
            "é_svc.v2",
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "  ",
            "a:b",
            " lead",
            "trail ",
            "tab\there",
            "semi;colon",
            "$(x)",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn keys_parse_back_into_service_environment_and_sha() {
        let sha = "a".repeat(40);
        let key = CorrelationKey::new("acme/payments-api", "production", &sha);
        assert_eq!(key.to_string().parse::<CorrelationKey>(), Ok(key.clone()));
        assert_eq!(format!(" {key} ").parse::<CorrelationKey>(), Ok(key));
        assert_eq!(
            "changegate:x".parse::<CorrelationKey>(),
            Err(KeyError::Parts)
        );
        assert_eq!(
            "changegate::production:abc".parse::<CorrelationKey>(),
            Err(KeyError::Parts)
        );
        assert_eq!(
            "other:a:b:c".parse::<CorrelationKey>(),
            Err(KeyError::Prefix)
        );
    }

    #[test]
    fn key_is_verbatim_and_fits_by_shortening_the_service_only() {
        let sha = "a".repeat(40);
        let k = CorrelationKey::new("acme/payments-api", "production", &sha);
        assert_eq!(
            k.to_string(),
            format!("changegate:acme/payments-api:production:{sha}")
        );
        let long = CorrelationKey::new(&"x".repeat(120), "production", &sha);
        let fitted = long.fitted(100);
        assert_eq!(fitted.len(), 100);
        assert!(fitted.ends_with(&format!(":production:{sha}")));
    }
}
