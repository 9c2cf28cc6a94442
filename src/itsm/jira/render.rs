//! What changegate writes into issues: the description and comments, in ADF.

use serde_json::Value;

use crate::domain::{ChangeFacts, Decision, DecisionKind, Outcome};

/// Rich text in Atlassian Document Format, as `/rest/api/3` wants it. Text goes in text
/// nodes, never in markup, so untrusted text cannot format or link anything.
pub(super) mod adf {
    use serde_json::{Value, json};

    pub fn doc(blocks: Vec<Value>) -> Value {
        json!({"type": "doc", "version": 1, "content": blocks})
    }

    pub fn text(text: &str) -> Value {
        json!({"type": "text", "text": text})
    }

    /// Bold text.
    pub fn strong(text: &str) -> Value {
        json!({"type": "text", "text": text, "marks": [{"type": "strong"}]})
    }

    /// A link only for http(s) URLs; anything else stays text.
    pub fn link(url: &str) -> Value {
        if url.starts_with("https://") || url.starts_with("http://") {
            json!({"type": "text", "text": url, "marks": [{"type": "link", "attrs": {"href": url}}]})
        } else {
            text(url)
        }
    }

    pub fn para(nodes: Vec<Value>) -> Value {
        json!({"type": "paragraph", "content": nodes})
    }

    pub fn line(t: &str) -> Value {
        para(vec![text(t)])
    }

    pub fn labelled(label: &str, value: &str) -> Value {
        para(vec![strong(label), text(&format!(" {value}"))])
    }

    pub fn bullets(items: &[String]) -> Value {
        json!({
            "type": "bulletList",
            "content": items.iter().map(|i| json!({"type": "listItem", "content": [line(i)]})).collect::<Vec<_>>(),
        })
    }
}

/// The description of a new change issue: the pipeline's facts, one per paragraph.
pub(super) fn description(facts: &ChangeFacts) -> Value {
    let mut blocks = vec![adf::line(&format!(
        "Deploy of {} to {}, opened by changegate from the pipeline's metadata.",
        facts.service, facts.environment
    ))];
    blocks.push(adf::labelled("Commit:", &facts.commit_sha));
    if let Some((base, head)) = &facts.range {
        blocks.push(adf::labelled(
            "Commit range:",
            &format!("{base}..{head} ({} commits)", facts.commits.len()),
        ));
    }
    if let Some(repo) = &facts.repository {
        blocks.push(adf::labelled("Repository:", repo));
    }
    if let Some(branch) = &facts.branch {
        blocks.push(adf::labelled("Branch:", branch));
    }
    if let Some(pr) = &facts.pull_request {
        let mut nodes = vec![
            adf::strong("Pull request:"),
            adf::text(&format!(" #{} {}", pr.number, pr.title)),
        ];
        if let Some(url) = &pr.url {
            nodes.push(adf::text(" "));
            nodes.push(adf::link(url));
        }
        blocks.push(adf::para(nodes));
    }
    if !facts.work_items.is_empty() {
        blocks.push(adf::labelled("Work items:", &facts.work_items.join(", ")));
    }
    if let Some(lines) = facts.lines_changed {
        blocks.push(adf::labelled(
            "Size:",
            &format!("{lines} lines changed in {} files", facts.paths.len()),
        ));
    }
    if let Some(passed) = facts.tests_passed {
        blocks.push(adf::labelled(
            "Tests:",
            if passed { "passed" } else { "failed" },
        ));
    }
    if let Some(url) = &facts.run_url {
        blocks.push(adf::para(vec![
            adf::strong("Pipeline run:"),
            adf::text(" "),
            adf::link(url),
        ]));
    }
    if let Some(actor) = &facts.actor {
        blocks.push(adf::labelled("Triggered by:", actor));
    }
    if !facts.commits.is_empty() {
        let mut items: Vec<String> = facts
            .commits
            .iter()
            .take(20)
            .map(|c| format!("{} {}", c.sha.get(..12).unwrap_or(&c.sha), c.subject))
            .collect();
        if facts.commits.len() > 20 {
            items.push(format!("… and {} more", facts.commits.len() - 20));
        }
        blocks.push(adf::bullets(&items));
    }
    blocks.push(adf::labelled("Correlation key:", &facts.key().to_string()));
    adf::doc(blocks)
}

/// The comment that records the final decision after a rejection or a timed-out wait.
pub(super) fn refusal_comment(why: &str) -> Value {
    adf::doc(vec![adf::para(vec![
        adf::strong("changegate decision: blocked"),
        adf::text(&format!(" ({why}); the deploy does not go ahead.")),
    ])])
}

/// The comment that records a decision: kind, mode, allowance and every rule.
pub(super) fn decision_comment(d: &Decision) -> Value {
    let mut blocks = vec![adf::para(vec![
        adf::strong(&format!("changegate decision: {}", d.kind)),
        adf::text(&format!(" ({} mode)", d.mode.as_str())),
    ])];
    if let Some(reason) = &d.emergency {
        blocks.push(adf::line(&format!(
            "Emergency change: {reason}. Flagged for review after the deploy."
        )));
    }
    blocks.push(adf::line(&format!(
        "Sprint {}: {} of {} pre-approved changes used before this one.",
        d.sprint, d.allowance_used, d.allowance
    )));
    let rules: Vec<String> = d
        .rules
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}",
                if r.passed { "✔" } else { "✘" },
                r.code,
                r.reason
            )
        })
        .collect();
    if !rules.is_empty() {
        blocks.push(adf::bullets(&rules));
    }
    match d.kind {
        DecisionKind::NeedsApproval => blocks.push(adf::line(
            "Waiting for approval in Jira Service Management.",
        )),
        DecisionKind::PreApproved => blocks.push(adf::line(
            "Pre-approved: moved to implementation when the gate passes.",
        )),
        DecisionKind::Blocked => blocks.push(adf::line("Blocked: the deploy must not proceed.")),
    }
    if let Some(at) = &d.clock_override {
        blocks.push(adf::line(&format!(
            "Decided with the clock set to {at} (CHANGEGATE_NOW)."
        )));
    }
    adf::doc(blocks)
}

/// The comment that records the deploy's outcome: `kept`, and what the job said when that
/// differs, then the job's notes.
pub(super) fn outcome_comment(kept: Outcome, said: Outcome, notes: &str) -> Value {
    let mut blocks = vec![adf::para(vec![adf::strong(&format!(
        "changegate: deploy {kept}"
    ))])];
    if kept != said {
        blocks.push(adf::line(&format!(
            "The gate never passed, so nothing was deployed: recorded as {kept} (the job said {said})."
        )));
    }
    if !notes.trim().is_empty() {
        blocks.push(adf::line(notes));
    }
    adf::doc(blocks)
}

/// The comment `verify` adds to a success it turned into a failure.
pub(super) fn verification_comment(incidents: &[String]) -> Value {
    adf::doc(vec![
        adf::para(vec![adf::strong("changegate verify: failed after deploy")]),
        adf::line(&format!(
            "Incidents linked within the verification window: {}.",
            incidents.join(", ")
        )),
        adf::line(
            "The deploy went through, but it now counts as a failure in this service's track record and trust ramp.",
        ),
    ])
}

/// The comment on an issue retired as the duplicate of `winner`.
pub(super) fn duplicate_note(winner: &str) -> Value {
    adf::doc(vec![adf::line(&format!(
        "Duplicate of {winner}: a parallel changegate run opened it for the same change first. This issue is not used."
    ))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_stays_text() {
        assert_eq!(
            adf::link("javascript:alert(1)"),
            adf::text("javascript:alert(1)")
        );
        assert_eq!(
            adf::link("https://ci.example.com/run/1")["marks"][0]["attrs"]["href"],
            "https://ci.example.com/run/1"
        );
        let note = outcome_comment(Outcome::Cancelled, Outcome::Success, "[x](https://evil)");
        let last = &note["content"][2]["content"][0];
        assert_eq!(last, &adf::text("[x](https://evil)"));
    }
}
