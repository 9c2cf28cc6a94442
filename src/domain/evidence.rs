//! Evidence an auditor accepts, taken from the forge: who approved the pull/merge request
//! that brought the commit (and on which head), and which checks the commit passed.
//!
//! The forge adapters only read what the forge says into [`ReviewEvidence`] and
//! [`TestsEvidence`]; what counts is decided here: the latest verdict of each reviewer, an
//! approval only on the head that was merged, never the author's own (unless `[approval]
//! separate_author = false`), every required check (or, with none configured, every check
//! but changegate's own) finished and passed. What the pipeline claims
//! (`CHANGEGATE_REVIEWED`, `--tests-passed`) counts only when the forge could not be asked.

use serde::{Deserialize, Serialize};

use super::approval::Author;
use super::decision::{Rule, codes};

/// What the forge said about a change's evidence, and what the pipeline claimed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The reviews of the pull/merge request that brought the commit; `None` when the forge
    /// was not asked (no token, no API, not required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewEvidence>,
    /// The checks and statuses of the commit; `None` when the forge was not asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsEvidence>,
    /// What `CHANGEGATE_REVIEWED` claimed, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_review: Option<bool>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.review.is_none() && self.tests.is_none() && self.claimed_review.is_none()
    }
}

/// One reviewer's review, as the forge listed it (in the forge's order: oldest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub login: String,
    /// GitHub's word, upper case: `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`,
    /// `PENDING`. A GitLab approval is `APPROVED`.
    pub state: String,
    /// The commit the review was given on; `None` when the forge does not tie it to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The pull/merge request that brought the commit, and its reviews.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewEvidence {
    /// `GitHub` or `GitLab`, for the reasons.
    pub forge: String,
    /// The request's number (GitHub) or iid (GitLab); `None`: no merged or open request
    /// brought the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// The request author's forge login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The request's head: what was merged (or, for an open request, what is gated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Whether the forge ties each review to a commit (GitHub does; GitLab's approvals are
    /// the request's current ones, reset on a push where the project says so).
    pub per_commit: bool,
    pub reviews: Vec<Review>,
}

/// How a check or status ended, in changegate's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckState {
    /// Succeeded (GitHub also: `neutral`, `skipped`, as a required check counts them).
    Passed,
    /// Failed, errored, cancelled, timed out, needs action.
    Failed,
    /// Not finished (queued, in progress, pending, running).
    Pending,
    /// Not started and waiting on this pipeline (a GitLab job of a later stage, a manual
    /// job): says nothing about this change's tests.
    NotStarted,
}

/// One check run or commit status of the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub state: CheckState,
    /// The forge's own word (`success`, `failure`, `in_progress`, ...), for the reasons.
    pub word: String,
    /// Whether it belongs to this very pipeline run (a job of this workflow run, this job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub this_run: bool,
}

/// The checks and statuses of the commit, as the forge listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestsEvidence {
    pub forge: String,
    pub sha: String,
    pub checks: Vec<Check>,
}

/// Whether a check or status is changegate's own (`changegate / ENV` check run,
/// `changegate/ENV` status): it says nothing about the change's tests.
pub fn is_changegate_own(name: &str) -> bool {
    name == "changegate" || name.starts_with("changegate /") || name.starts_with("changegate/")
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Names, at most `max` of them, then how many more.
fn listed(names: &[String], max: usize) -> String {
    let mut out = names
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > max {
        out.push_str(&format!(" and {} more", names.len() - max));
    }
    out
}

/// Who approved a change, by the forge's reviews: every reviewer whose latest verdict is an
/// approval on the head, the author aside when `separate_author`.
pub fn approvers(ev: &ReviewEvidence, separate_author: bool) -> Vec<String> {
    latest_verdicts(ev)
        .into_iter()
        .filter(|r| r.state == "APPROVED" && on_head(ev, r))
        .filter(|r| !(separate_author && is_author(ev, &r.login)))
        .map(|r| r.login.clone())
        .collect()
}

/// Each reviewer's latest verdict: their last review that is not a comment or pending.
fn latest_verdicts(ev: &ReviewEvidence) -> Vec<&Review> {
    let mut latest: Vec<&Review> = Vec::new();
    for r in &ev.reviews {
        if matches!(r.state.as_str(), "COMMENTED" | "PENDING") || r.login.is_empty() {
            continue;
        }
        match latest
            .iter_mut()
            .find(|l| l.login.eq_ignore_ascii_case(&r.login))
        {
            Some(slot) => *slot = r,
            None => latest.push(r),
        }
    }
    latest
}

fn on_head(ev: &ReviewEvidence, r: &Review) -> bool {
    if !ev.per_commit {
        return true;
    }
    match (&ev.head, &r.commit) {
        (Some(head), Some(commit)) => head.eq_ignore_ascii_case(commit),
        _ => false,
    }
}

fn is_author(ev: &ReviewEvidence, login: &str) -> bool {
    ev.author
        .as_deref()
        .is_some_and(|a| Author::login(a).is(login))
}

/// The `evidence-review` rule from the forge's answer. `claimed`: what `CHANGEGATE_REVIEWED`
/// said, named in the reason when the forge's answer overrules it.
pub fn review_rule(ev: &ReviewEvidence, separate_author: bool, claimed: Option<bool>) -> Rule {
    let forge = &ev.forge;
    let ignored = if claimed == Some(true) {
        format!(" (CHANGEGATE_REVIEWED=true is ignored: {forge} was asked)")
    } else {
        String::new()
    };
    let fail = |why: String| Rule::new(codes::EVIDENCE_REVIEW, false, format!("{why}{ignored}"));
    let Some(number) = ev.number else {
        return fail(format!(
            "{forge} knows no merged or open pull/merge request that brought this commit"
        ));
    };
    if separate_author && ev.author.is_none() {
        return fail(format!(
            "the author of #{number} is not known, so an approval by someone else cannot be told apart ([approval] separate_author = true)"
        ));
    }
    let latest = latest_verdicts(ev);
    let requested: Vec<String> = latest
        .iter()
        .filter(|r| r.state == "CHANGES_REQUESTED" && on_head(ev, r))
        .map(|r| format!("@{}", r.login))
        .collect();
    if !requested.is_empty() {
        return fail(format!(
            "#{number}: changes requested by {}",
            listed(&requested, 5)
        ));
    }
    let ok = approvers(ev, separate_author);
    let head = ev.head.as_deref().map(short).unwrap_or("its head");
    if !ok.is_empty() {
        let who: Vec<String> = ok.iter().map(|l| format!("@{l}")).collect();
        let on = if ev.per_commit {
            format!(" on its head {head}")
        } else {
            " (GitLab approvals are the request's current ones)".to_string()
        };
        return Rule::new(
            codes::EVIDENCE_REVIEW,
            true,
            format!("#{number} approved by {}{on}", listed(&who, 5)),
        );
    }
    let approved: Vec<&&Review> = latest.iter().filter(|r| r.state == "APPROVED").collect();
    if approved.is_empty() {
        return fail(format!("#{number} has no approving review"));
    }
    if separate_author
        && approved
            .iter()
            .all(|r| is_author(ev, &r.login) || !on_head(ev, r))
        && approved.iter().any(|r| is_author(ev, &r.login))
    {
        let author = ev.author.as_deref().unwrap_or_default();
        return fail(format!(
            "#{number} is approved only by its author @{author}, who may not approve their own change ([approval] separate_author = true)"
        ));
    }
    let older: Vec<String> = approved
        .iter()
        .map(|r| {
            format!(
                "@{} on {}",
                r.login,
                r.commit
                    .as_deref()
                    .map(short)
                    .unwrap_or("a commit no longer known")
            )
        })
        .collect();
    fail(format!(
        "#{number} was approved only on an older commit ({}), not on the head that was merged ({head})",
        listed(&older, 5)
    ))
}

/// The `evidence-tests` rule from the forge's answer: every check in `required` (by check
/// run name or status context) passed; with none required, every check but changegate's own
/// and this run's unfinished jobs passed, and there is at least one. `claimed`: what
/// `--tests-passed` said, named when the forge overrules it.
pub fn tests_rule(ev: &TestsEvidence, required: &[String], claimed: Option<bool>) -> Rule {
    let forge = &ev.forge;
    let sha = short(&ev.sha);
    let ignored = if claimed == Some(true) {
        format!(" (--tests-passed / CHANGEGATE_TESTS_PASSED=true is ignored: {forge} was asked)")
    } else {
        String::new()
    };
    let fail = |why: String| Rule::new(codes::EVIDENCE_TESTS, false, format!("{why}{ignored}"));
    let counted: Vec<&Check> = ev
        .checks
        .iter()
        .filter(|c| !is_changegate_own(&c.name))
        .collect();
    let word = |c: &Check| format!("{} ({})", c.name, c.word);
    if !required.is_empty() {
        let mut missing = Vec::new();
        let mut bad = Vec::new();
        for name in required {
            let of: Vec<&&Check> = counted.iter().filter(|c| &c.name == name).collect();
            if of.is_empty() || of.iter().all(|c| c.state == CheckState::NotStarted) {
                missing.push(name.clone());
            }
            bad.extend(
                of.iter()
                    .filter(|c| matches!(c.state, CheckState::Failed | CheckState::Pending))
                    .map(|c| word(c)),
            );
        }
        if !bad.is_empty() || !missing.is_empty() {
            let mut why = Vec::new();
            if !bad.is_empty() {
                why.push(format!("not passed: {}", listed(&bad, 8)));
            }
            if !missing.is_empty() {
                why.push(format!("missing: {}", listed(&missing, 8)));
            }
            return fail(format!(
                "required checks of {sha} on {forge}: {}",
                why.join("; ")
            ));
        }
        return Rule::new(
            codes::EVIDENCE_TESTS,
            true,
            format!(
                "required checks of {sha} passed on {forge}: {}",
                listed(required, 8)
            ),
        );
    }
    // No list: every other check counts, but this run's own unfinished jobs (this job, and
    // the jobs after it) and jobs not started yet.
    let judged: Vec<&&Check> = counted
        .iter()
        .filter(|c| c.state != CheckState::NotStarted)
        .filter(|c| !(c.this_run && c.state == CheckState::Pending))
        .collect();
    if judged.is_empty() {
        return fail(format!(
            "no finished check or status on {sha} on {forge} (name the ones that must pass in [evidence] required_checks)"
        ));
    }
    let bad: Vec<String> = judged
        .iter()
        .filter(|c| c.state != CheckState::Passed)
        .map(|c| word(c))
        .collect();
    if !bad.is_empty() {
        return fail(format!(
            "checks of {sha} on {forge} not passed: {}",
            listed(&bad, 8)
        ));
    }
    let names: Vec<String> = judged.iter().map(|c| c.name.clone()).collect();
    Rule::new(
        codes::EVIDENCE_TESTS,
        true,
        format!(
            "{} of {sha} passed on {forge}: {}",
            super::words::count(names.len() as u64, "check", "checks"),
            listed(&names, 8)
        ),
    )
}

#[cfg(test)]
#[path = "tests/evidence.rs"]
mod tests;
