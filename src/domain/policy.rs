//! The pre-approval policy: a pure function of (change, history, policy, clock).

use chrono::{DateTime, Utc};
use globset::{Glob, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use super::change::{ChangeFacts, Outcome};
use super::decision::{Decision, DecisionKind, Mode, Rule, codes};
use super::evidence;
use super::history::History;
use super::ramp::{self, AllowanceParams};
use super::sprint::SprintCalendar;
use super::words;

/// What an emergency does: pass at once, or go to expedited human approval. Either way it
/// overrides the freeze, the allowance and the track record (never the risk and evidence
/// rules) and uses no allowance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum EmergencyHandling {
    #[default]
    Pass,
    Approve,
}

/// `[policy]`: the track record, the trust ramp and emergencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct PolicyParams {
    /// Closed changes needed before any change can be pre-approved (at most 10000).
    #[cfg_attr(test, schemars(range(max = 10_000)))]
    pub min_history: u32,
    /// How many of the most recent closed changes the success rate is taken over (1 to 10000).
    #[cfg_attr(test, schemars(range(min = 1, max = 10_000)))]
    pub window: u32,
    /// Success rate (0..=1) the track record and each sprint must meet.
    #[cfg_attr(test, schemars(range(min = 0.0, max = 1.0)))]
    pub min_success_rate: f64,
    pub allowance: AllowanceParams,
    /// A pull-request label that declares an emergency.
    pub emergency_label: String,
    /// `pass` (default) or `approve` (expedited human approval).
    pub emergency: EmergencyHandling,
}

impl Default for PolicyParams {
    fn default() -> Self {
        PolicyParams {
            min_history: 5,
            window: 20,
            min_success_rate: 0.9,
            allowance: AllowanceParams::default(),
            emergency_label: "emergency".to_string(),
            emergency: EmergencyHandling::Pass,
        }
    }
}

/// What a risk rule does when its facts cannot be established.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum WhenUnknown {
    /// The rule fails with the reason: the change goes to approval.
    #[default]
    Fail,
    /// The rule passes, saying the fact is unknown.
    Pass,
}

/// `[risk]`: what makes a change too risky to pre-approve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RiskLimits {
    /// More lines changed than this needs approval.
    pub max_lines_changed: Option<u64>,
    /// Glob patterns from the repository's root (e.g. `migrations/**`, or `migrations/` for
    /// all below it); touching any needs approval.
    pub sensitive_paths: Vec<String>,
    /// `fail` (default): a risk rule whose facts are unknown (a shallow checkout and no
    /// platform data) fails, sending the change to approval; `pass` lets it pass.
    pub when_unknown: WhenUnknown,
}

/// The globs a `[risk] sensitive_paths` pattern stands for, matched against paths from the
/// repository's root. As in CODEOWNERS and .gitignore: a leading `/` or `./` anchors at the
/// root (which every pattern is anyway), and a pattern also covers everything under it when
/// it names a directory (`migrations`, `migrations/`). The error says why a pattern could
/// never match a touched path, or is not a glob.
pub fn sensitive_globs(pattern: &str) -> Result<Vec<Glob>, PatternError> {
    if pattern.trim() != pattern || pattern.is_empty() {
        return Err(PatternError::Spaces);
    }
    if pattern.starts_with('!') {
        return Err(PatternError::Negation);
    }
    if pattern.contains('\\') {
        return Err(PatternError::Backslash);
    }
    let mut rest = pattern.strip_prefix('/').unwrap_or(pattern);
    while let Some(r) = rest.strip_prefix("./") {
        rest = r;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest == "." {
        return Err(PatternError::WholeRepository);
    }
    if let Some(part) = rest
        .split('/')
        .find(|p| p.is_empty() || *p == "." || *p == "..")
    {
        let part = if part.is_empty() { "//" } else { part };
        return Err(PatternError::NotPlain(part.to_owned()));
    }
    [rest.to_string(), format!("{rest}/**")]
        .iter()
        .map(|p| Glob::new(p).map_err(PatternError::Glob))
        .collect()
}

/// Why a `[risk] sensitive_paths` pattern is refused: it could never match a touched path,
/// or it is not a glob. Read after the pattern ("pattern \"x\" {error}").
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("has leading or trailing spaces, or is empty")]
    Spaces,
    #[error("starts with `!`: there is no negation; list only what is sensitive")]
    Negation,
    #[error("contains `\\`: paths are separated by `/`")]
    Backslash,
    #[error("names the whole repository; write `**` if every path is sensitive")]
    WholeRepository,
    #[error("contains `{0}`: touched paths are plain paths from the repository's root")]
    NotPlain(String),
    #[error("is not a valid glob: {0}")]
    Glob(#[source] globset::Error),
}

/// Why a risk fact is unknown, and what would make it known.
pub const UNKNOWN_FACTS: &str = "unknown: the checkout has no commit range — fetch-depth: 0, \
                                 or a token that can read the PR's files";

/// The rule for a fact that could not be established.
fn unknown_rule(code: &str, what: &str, when: WhenUnknown) -> Rule {
    match when {
        WhenUnknown::Fail => Rule::new(code, false, format!("{what} {UNKNOWN_FACTS}")),
        WhenUnknown::Pass => Rule::new(
            code,
            true,
            format!("{what} unknown (no commit range; [risk] when_unknown = \"pass\")"),
        ),
    }
}

/// `[evidence]`: what must be shown before pre-approval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceRequirements {
    /// The pull/merge request that brought the commit must be approved, on the head that
    /// was merged, by someone other than its author (see `[approval] separate_author`);
    /// read from the forge. `CHANGEGATE_REVIEWED` counts only where the forge cannot be asked.
    pub require_review: bool,
    /// The commit's checks must have passed: its GitHub check runs and commit statuses or
    /// its GitLab commit statuses; `--tests-passed` / `CHANGEGATE_TESTS_PASSED` count only
    /// where the forge cannot be asked.
    pub require_tests: bool,
    /// Check run names / status contexts that must have passed (`require_tests`). Empty:
    /// every check of the commit but changegate's own (and this run's unfinished jobs) must
    /// have passed, and there must be at least one.
    #[cfg_attr(test, schemars(length(max = 100)))]
    pub required_checks: Vec<String>,
}

/// `[[freeze]]`: a window in which every change is blocked, but declared emergencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// When the freeze starts (RFC 3339, e.g. `2026-12-21T00:00:00Z`).
    pub from: DateTime<Utc>,
    /// When it ends (exclusive); after `from`.
    pub to: DateTime<Utc>,
    /// Why, shown in the blocked decision's reason.
    #[serde(default)]
    pub reason: String,
    /// Environments the freeze applies to; empty means all.
    #[serde(default)]
    pub environments: Vec<String>,
}

impl Freeze {
    pub fn active(&self, now: DateTime<Utc>, environment: &str) -> bool {
        self.from <= now
            && now < self.to
            && (self.environments.is_empty() || self.environments.iter().any(|e| e == environment))
    }
}

/// The whole policy, as resolved from settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub params: PolicyParams,
    pub risk: RiskLimits,
    pub evidence: EvidenceRequirements,
    pub freezes: Vec<Freeze>,
    /// `[approval] separate_author`: an author's own review is no review evidence.
    pub separate_author: bool,
}

/// Everything the policy looks at.
#[derive(Debug, Clone)]
pub struct DecisionInput<'a> {
    pub facts: &'a ChangeFacts,
    pub history: &'a History,
    pub policy: &'a Policy,
    pub calendar: SprintCalendar,
    pub now: DateTime<Utc>,
    /// `--emergency REASON`.
    pub emergency: Option<String>,
    /// Set when the clock was overridden, to be carried on the decision.
    pub clock_override: Option<String>,
}

fn pct(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

fn track_record(history: &History, p: &PolicyParams) -> Rule {
    if history.closed_total < u64::from(p.min_history) {
        return Rule::new(
            codes::TRACK_RECORD,
            false,
            format!(
                "{}, {} needed for a track record",
                words::count(history.closed_total, "closed change", "closed changes"),
                p.min_history
            ),
        );
    }
    let recent: Vec<_> = history.recent.iter().take(p.window as usize).collect();
    if recent.is_empty() {
        // With `policy.min_history = 0` there is nothing to rate yet, and that passes. A
        // backend that counts enough closed changes but hands back none of their outcomes has
        // not established the track record: that fails closed.
        return if p.min_history == 0 {
            Rule::new(
                codes::TRACK_RECORD,
                true,
                "no closed changes yet, none needed for a track record",
            )
        } else {
            Rule::new(
                codes::TRACK_RECORD,
                false,
                format!(
                    "unknown: {} counted but no outcome could be read to rate",
                    words::count(history.closed_total, "closed change", "closed changes")
                ),
            )
        };
    }
    let ok = recent.iter().filter(|o| ***o == Outcome::Success).count();
    let rate = ok as f64 / recent.len() as f64;
    let passed = rate >= p.min_success_rate;
    Rule::new(
        codes::TRACK_RECORD,
        passed,
        format!(
            "success rate {} over last {} {} {}",
            pct(rate),
            recent.len(),
            if passed { "≥" } else { "<" },
            pct(p.min_success_rate)
        ),
    )
}

fn lines_changed(n: u64) -> String {
    words::count(n, "line changed", "lines changed")
}

fn risk_rules(facts: &ChangeFacts, risk: &RiskLimits) -> Vec<Rule> {
    risk_rules_of(&facts.paths, facts.paths_unknown, facts.lines_changed, risk)
}

/// The policy's own risk rules (`[risk]`: size, sensitive paths) over a pull request's
/// paths and lines changed, as `announce` flags its items: the reasons of those that fail.
pub fn risk_flags(paths: &[String], lines_changed: Option<u64>, risk: &RiskLimits) -> Vec<String> {
    risk_rules_of(paths, false, lines_changed, risk)
        .into_iter()
        .filter(|r| !r.passed)
        .map(|r| r.reason)
        .collect()
}

fn risk_rules_of(
    paths: &[String],
    paths_unknown: bool,
    lines: Option<u64>,
    risk: &RiskLimits,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    if let Some(max) = risk.max_lines_changed {
        rules.push(match lines {
            Some(n) if n > max => Rule::new(
                codes::RISK_SIZE,
                false,
                format!("{} > {max}", lines_changed(n)),
            ),
            Some(n) => Rule::new(
                codes::RISK_SIZE,
                true,
                format!("{} ≤ {max}", lines_changed(n)),
            ),
            None => unknown_rule(codes::RISK_SIZE, "lines changed", risk.when_unknown),
        });
    }
    if !risk.sensitive_paths.is_empty() {
        let mut builder = GlobSetBuilder::new();
        let mut bad = Vec::new();
        for pattern in &risk.sensitive_paths {
            match sensitive_globs(pattern) {
                Ok(globs) => {
                    for g in globs {
                        builder.add(g);
                    }
                }
                Err(_) => bad.push(pattern.as_str()),
            }
        }
        // Patterns are validated when settings load; an unparsable one fails safe here.
        let set = builder.build().ok();
        let hits: Vec<&str> = match &set {
            Some(set) => paths
                .iter()
                .filter(|p| set.is_match(p.as_str()) || set.is_match(without_controls(p)))
                .map(String::as_str)
                .collect(),
            None => Vec::new(),
        };
        rules.push(if !bad.is_empty() || set.is_none() {
            Rule::new(
                codes::RISK_PATHS,
                false,
                format!("invalid sensitive path pattern: {}", bad.join(", ")),
            )
        } else if hits.is_empty() && paths_unknown {
            unknown_rule(codes::RISK_PATHS, "touched paths", risk.when_unknown)
        } else if hits.is_empty() {
            Rule::new(
                codes::RISK_PATHS,
                true,
                format!("no sensitive paths among {} touched", paths.len()),
            )
        } else {
            let shown: Vec<&str> = hits.iter().take(3).copied().collect();
            let more = hits.len().saturating_sub(shown.len());
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Rule::new(
                codes::RISK_PATHS,
                false,
                format!("touches sensitive paths: {}{tail}", shown.join(", ")),
            )
        });
    }
    rules
}

/// A path with its control characters as `_`: a glob's `*` does not match a line break, and
/// a file named `migrations/x\n…` must not slip past `migrations/**`.
fn without_controls(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

fn evidence_rules(facts: &ChangeFacts, policy: &Policy) -> Vec<Rule> {
    let ev = &policy.evidence;
    let mut rules = Vec::new();
    let claimed_review = facts
        .evidence
        .claimed_review
        .or_else(|| facts.pull_request.as_ref().and_then(|pr| pr.reviewed));
    if ev.require_review
        && let Some(asked) = &facts.evidence.review
    {
        rules.push(stricter_claim(
            evidence::review_rule(asked, policy.separate_author, claimed_review),
            claimed_review,
            "CHANGEGATE_REVIEWED=false",
        ));
    } else if ev.require_review {
        // The forge could not be asked: what the pipeline says is all there is.
        rules.push(match claimed_review {
            Some(true) => Rule::new(
                codes::EVIDENCE_REVIEW,
                true,
                "CHANGEGATE_REVIEWED says the pull request was approved (the forge cannot be asked)",
            ),
            Some(false) => Rule::new(
                codes::EVIDENCE_REVIEW,
                false,
                "pull request has no approving review",
            ),
            None => Rule::new(
                codes::EVIDENCE_REVIEW,
                false,
                "no review evidence for this change",
            ),
        });
    }
    if ev.require_tests
        && let Some(asked) = &facts.evidence.tests
    {
        rules.push(stricter_claim(
            evidence::tests_rule(asked, &ev.required_checks, facts.tests_passed),
            facts.tests_passed,
            "the pipeline says its tests failed (--tests-passed false)",
        ));
    } else if ev.require_tests {
        rules.push(match facts.tests_passed {
            Some(true) => Rule::new(
                codes::EVIDENCE_TESTS,
                true,
                "the pipeline says the tests passed (the forge cannot be asked)",
            ),
            Some(false) => Rule::new(codes::EVIDENCE_TESTS, false, "tests failed"),
            None => Rule::new(codes::EVIDENCE_TESTS, false, "no test result reported"),
        });
    }
    rules
}

/// The forge's answer, unless the pipeline said no: a claim can only make evidence
/// stricter once the forge was asked, never let a change through.
fn stricter_claim(rule: Rule, claimed: Option<bool>, said: &str) -> Rule {
    if rule.passed && claimed == Some(false) {
        Rule::new(&rule.code, false, format!("{said}, though {}", rule.reason))
    } else {
        rule
    }
}

/// The emergency declared for this change, by flag or by pull-request label.
fn emergency_reason(input: &DecisionInput<'_>) -> Option<String> {
    if let Some(reason) = input
        .emergency
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        return Some(reason.to_string());
    }
    let label = &input.policy.params.emergency_label;
    let pr = input.facts.pull_request.as_ref()?;
    pr.labels
        .iter()
        .any(|l| !label.is_empty() && l.eq_ignore_ascii_case(label))
        .then(|| format!("label '{label}' on pull request #{}", pr.number))
}

/// Decides a change. Every rule is evaluated and reported, whatever the outcome.
pub fn decide(input: &DecisionInput<'_>) -> Decision {
    let p = &input.policy.params;
    let sprint = input.calendar.index_of(input.now);
    let allowance = ramp::allowance_for(input.history, &p.allowance, p.min_success_rate, sprint);
    let used = input.history.tally(sprint).pre_approved;
    let emergency = emergency_reason(input);
    let overridden = |mut rule: Rule| {
        if emergency.is_some() && !rule.passed {
            rule.reason.push_str(" (overridden: emergency)");
        }
        rule
    };

    let mut rules = vec![
        overridden(track_record(input.history, p)),
        overridden(Rule::new(
            codes::ALLOWANCE,
            used < allowance,
            format!("allowance {used} of {allowance} used this sprint"),
        )),
    ];
    rules.extend(risk_rules(input.facts, &input.policy.risk));
    let freeze = input
        .policy
        .freezes
        .iter()
        .find(|f| f.active(input.now, &input.facts.environment));
    rules.push(overridden(match freeze {
        Some(f) => Rule::new(
            codes::FREEZE,
            false,
            format!(
                "freeze window active until {}{}",
                f.to.format("%Y-%m-%d %H:%M UTC"),
                if f.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", f.reason)
                }
            ),
        ),
        None => Rule::new(codes::FREEZE, true, "no freeze window active"),
    }));
    rules.extend(evidence_rules(input.facts, input.policy));
    if let Some(reason) = &emergency {
        rules.push(Rule::new(
            codes::EMERGENCY,
            true,
            format!("emergency declared: {reason}"),
        ));
    }

    let overridable = [codes::TRACK_RECORD, codes::ALLOWANCE, codes::FREEZE];
    let blocking_failures = rules
        .iter()
        .filter(|r| !r.passed)
        .filter(|r| emergency.is_none() || !overridable.contains(&r.code.as_str()))
        .count();
    let kind = if freeze.is_some() && emergency.is_none() {
        DecisionKind::Blocked
    } else if emergency.is_some() && p.emergency == EmergencyHandling::Approve {
        DecisionKind::NeedsApproval
    } else if blocking_failures == 0 {
        DecisionKind::PreApproved
    } else {
        DecisionKind::NeedsApproval
    };

    Decision {
        kind,
        rules,
        mode: input.policy.mode,
        emergency,
        sprint,
        allowance,
        allowance_used: used,
        clock_override: input.clock_override.clone(),
    }
}

#[cfg(test)]
#[path = "tests/policy.rs"]
mod tests;
