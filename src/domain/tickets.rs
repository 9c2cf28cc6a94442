//! Tickets that follow the work: which ITSM tickets a change's texts reference, the
//! milestones the work linked to them reaches, and the note each milestone writes, exactly
//! once per ticket (the note's [`Milestone::marker`] is what a writer reads back before it
//! writes).
//!
//! Pure: the texts come from the pipeline, the notes go to the ITSM adapters, which escape
//! every line for their markup.

use std::collections::BTreeSet;
use std::fmt;

use chrono::NaiveDate;

use super::change::{ChangeFacts, Commit};

/// What counts as a reference: ServiceNow numbers (a prefix and its digits) and the keys of
/// the Jira projects named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketPatterns {
    /// Upper-case letters, such as `INC`, `PRB`, `RITM`, `CHG`.
    pub servicenow_prefixes: Vec<String>,
    /// Jira project keys, such as `OPS`.
    pub jira_projects: Vec<String>,
}

/// ServiceNow numbers carry this many digits at least (the base instance's 7)…
const MIN_DIGITS: usize = 7;
/// …and no more than this (an instance may lengthen them).
const MAX_DIGITS: usize = 12;
/// A Jira issue number has at most this many digits.
const MAX_ISSUE_DIGITS: usize = 9;

/// A ticket referenced by the work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TicketRef {
    /// A ServiceNow task's number (`INC0010001`): an incident, problem, request item, change.
    ServiceNow(String),
    /// A Jira issue key (`OPS-12`).
    Jira(String),
}

impl TicketRef {
    /// The ticket's number or key, as the ITSM shows it.
    pub fn id(&self) -> &str {
        match self {
            TicketRef::ServiceNow(n) | TicketRef::Jira(n) => n,
        }
    }
}

impl fmt::Display for TicketRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Why a prefix or a project key cannot be a pattern (for the config's error).
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if !(2..=8).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("must be 2 to 8 upper-case letters, such as \"INC\"");
    }
    Ok(())
}

/// Why a string cannot be a Jira project key.
pub fn check_project(key: &str) -> Result<(), &'static str> {
    let mut bytes = key.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_uppercase());
    if !first_ok
        || !(2..=10).contains(&key.len())
        || !bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(
            "must be a Jira project key: 2 to 10 upper-case letters, digits or _, starting with a letter, such as \"OPS\"",
        );
    }
    Ok(())
}

/// The distinct tickets `texts` reference, sorted. A reference stands on its own: not
/// preceded or followed by a letter or digit (`XINC0010001` and `OPS-12a` are none), and
/// matched without regard to case (branch names are often lower case), written upper case.
pub fn references<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    patterns: &TicketPatterns,
) -> Vec<TicketRef> {
    let mut found = BTreeSet::new();
    for text in texts {
        scan(text.as_bytes(), patterns, &mut found);
    }
    found.into_iter().collect()
}

fn scan(text: &[u8], patterns: &TicketPatterns, found: &mut BTreeSet<TicketRef>) {
    let standalone_start = |i: usize| i == 0 || !text[i - 1].is_ascii_alphanumeric();
    let ends_at = |i: usize| text.get(i).is_none_or(|b| !b.is_ascii_alphanumeric());
    let digits_from = |i: usize| {
        text.get(i..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    for i in 0..text.len() {
        if !text[i].is_ascii_alphabetic() || !standalone_start(i) {
            continue;
        }
        let rest = &text[i..];
        for prefix in &patterns.servicenow_prefixes {
            let p = prefix.as_bytes();
            if rest.len() > p.len() && rest[..p.len()].eq_ignore_ascii_case(p) {
                let n = digits_from(i + p.len());
                if (MIN_DIGITS..=MAX_DIGITS).contains(&n) && ends_at(i + p.len() + n) {
                    let id = &text[i..i + p.len() + n];
                    found.insert(TicketRef::ServiceNow(upper(id)));
                }
            }
        }
        for project in &patterns.jira_projects {
            let p = project.as_bytes();
            if rest.len() > p.len() + 1
                && rest[..p.len()].eq_ignore_ascii_case(p)
                && rest[p.len()] == b'-'
            {
                let start = i + p.len() + 1;
                let n = digits_from(start);
                if (1..=MAX_ISSUE_DIGITS).contains(&n) && text[start] != b'0' && ends_at(start + n)
                {
                    found.insert(TicketRef::Jira(upper(&text[i..start + n])));
                }
            }
        }
    }
}

/// ASCII bytes (a matched reference is ASCII only) as an upper-case string.
fn upper(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_ascii_uppercase()
}

/// The texts of a change that may reference tickets: its work items, the pull request's
/// title and branch, the branch, the commits' subjects; `extra` adds what the pipeline saw
/// beyond the facts (a pull request's body, commit messages).
pub fn texts_of<'a>(facts: &'a ChangeFacts, extra: &'a [String]) -> Vec<&'a str> {
    let mut texts: Vec<&str> = facts.work_items.iter().map(String::as_str).collect();
    if let Some(pr) = &facts.pull_request {
        texts.push(&pr.title);
        texts.extend(pr.head_ref.as_deref());
    }
    texts.extend(facts.branch.as_deref());
    texts.extend(facts.commits.iter().map(|c| c.subject.as_str()));
    texts.extend(extra.iter().map(String::as_str));
    texts
}

/// A pull/merge request, as a milestone names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef {
    /// `owner/name` or the project's path.
    pub repository: String,
    pub number: u64,
    /// Its title, untrusted text (empty when unknown).
    pub title: String,
    pub url: Option<String>,
}

/// A work item (an issue of GitHub or GitLab, a Jira Software issue), as a milestone names
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    /// Where the item lives, as the marker names it: the repository (`owner/name`, the
    /// project's path) or the Jira board (`jira-board-12`).
    pub scope: String,
    /// The item as people write it: `acme/shop#12`, `OPS-12`.
    pub name: String,
    /// Its title, untrusted text (empty when unknown).
    pub title: String,
    pub url: Option<String>,
}

/// A sprint, as the "entered sprint N" milestone names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SprintRef {
    pub number: i64,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
}

/// A deploy, as a milestone names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRef {
    pub service_id: String,
    pub service: String,
    pub environment: String,
    pub commit_sha: String,
    /// The change record (`CHG0030001`) and its link.
    pub change_id: String,
    pub change_url: Option<String>,
}

/// A step the work linked to a ticket reached. Each is written once per ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Milestone {
    /// A work item referencing the ticket exists: the ticket entered the backlog (once
    /// per ticket and repository, or board, whatever the number of items).
    Backlog(ItemRef),
    /// A work item referencing the ticket is in the sprint's milestone, iteration or
    /// sprint (once per ticket, sprint and repository, or board).
    Sprint(ItemRef, SprintRef),
    /// A pull/merge request referencing the ticket was opened.
    Opened(PullRef),
    /// It was merged.
    Merged(PullRef),
    /// The work was deployed to an environment.
    Deployed(DeployRef),
    /// The deploy was verified: no incident linked within the window.
    Verified(DeployRef),
    /// The deploy failed after it went out: incidents were linked to it.
    Failed(DeployRef, Vec<String>),
}

impl Milestone {
    /// What the step is called in a report (`opened`, `merged`, `deployed`, ...).
    pub fn step(&self) -> &'static str {
        match self {
            Milestone::Backlog(_) => "backlog",
            Milestone::Sprint(..) => "sprint",
            Milestone::Opened(_) => "opened",
            Milestone::Merged(_) => "merged",
            Milestone::Deployed(_) => "deployed",
            Milestone::Verified(_) => "verified",
            Milestone::Failed(..) => "failed",
        }
    }

    /// The text that identifies this milestone in a note, read back before writing: the
    /// step and what reached it (the request, or the service, environment and commit).
    /// Built only of names changegate checked (repositories, services, environments, SHAs,
    /// numbers), never of titles: a title cannot forge another milestone's marker.
    pub fn marker(&self) -> String {
        let subject = match self {
            Milestone::Backlog(item) => safe(&item.scope),
            Milestone::Sprint(item, sprint) => format!("{} {}", sprint.number, safe(&item.scope)),
            Milestone::Opened(pr) | Milestone::Merged(pr) => {
                format!("{}#{}", safe(&pr.repository), pr.number)
            }
            Milestone::Deployed(d) | Milestone::Verified(d) | Milestone::Failed(d, _) => {
                let short = d.commit_sha.get(..12).unwrap_or(&d.commit_sha);
                format!(
                    "{} {} {}",
                    safe(&d.service_id),
                    safe(&d.environment),
                    safe(short)
                )
            }
        };
        format!("[changegate:sync {} {subject}]", self.step())
    }

    /// What `sync` for a ticket at this milestone says: the lines of the note, the marker
    /// last. Titles stay untrusted: each writer escapes every line for its markup.
    pub fn note(&self) -> Vec<String> {
        let mut lines = match self {
            Milestone::Backlog(item) => item_lines("Entered the backlog".to_string(), item),
            Milestone::Sprint(item, sprint) => item_lines(
                format!(
                    "Entered sprint {} ({} to {})",
                    sprint.number, sprint.first_day, sprint.last_day
                ),
                item,
            ),
            Milestone::Opened(pr) => pull_lines("opened", pr),
            Milestone::Merged(pr) => pull_lines("merged", pr),
            Milestone::Deployed(d) => {
                deploy_lines(format!("Deployed to {}: {}", d.environment, d.service), d)
            }
            Milestone::Verified(d) => deploy_lines(
                format!(
                    "Verified in {}: {}, no incident linked within the verification window",
                    d.environment, d.service
                ),
                d,
            ),
            Milestone::Failed(d, incidents) => deploy_lines(
                format!(
                    "Failed after deploy to {}: {}, incidents {} linked",
                    d.environment,
                    d.service,
                    incidents.join(", ")
                ),
                d,
            ),
        };
        lines.push(self.marker());
        lines
    }
}

fn item_lines(headline: String, item: &ItemRef) -> Vec<String> {
    let title = one_line(&item.title);
    let mut lines = vec![if title.is_empty() {
        format!("{headline}: {}", item.name)
    } else {
        format!("{headline}: {} {title}", item.name)
    }];
    lines.extend(item.url.iter().filter(|u| is_web(u)).cloned());
    lines
}

fn pull_lines(step: &str, pr: &PullRef) -> Vec<String> {
    let title = one_line(&pr.title);
    let mut lines = vec![if title.is_empty() {
        format!("Pull request {}#{} {step}", pr.repository, pr.number)
    } else {
        format!(
            "Pull request {}#{} {step}: {title}",
            pr.repository, pr.number
        )
    }];
    lines.extend(pr.url.iter().filter(|u| is_web(u)).cloned());
    lines
}

fn deploy_lines(headline: String, d: &DeployRef) -> Vec<String> {
    let short = d.commit_sha.get(..12).unwrap_or(&d.commit_sha);
    let mut lines = vec![headline, format!("Change {} (commit {short})", d.change_id)];
    lines.extend(d.change_url.iter().filter(|u| is_web(u)).cloned());
    lines
}

/// A link is shown only when it is one.
fn is_web(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Untrusted text on one line, cut to a sane length.
fn one_line(text: &str) -> String {
    let folded: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let folded = folded.trim();
    match folded.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &folded[..end]),
        None => folded.to_string(),
    }
}

/// A marker's part: no space, bracket or control character of its own.
fn safe(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || "[]^".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The pull/merge requests a push's commits say they merged: GitHub's squash subject
/// `… (#42)`, its merge subject `Merge pull request #42 from …`, GitLab's `See merge request
/// group/project!42`. With the tickets each one's subject references; when the range
/// merged exactly one request, every ticket of the range went with it.
pub fn merged_pulls(
    commits: &[Commit],
    all: &[TicketRef],
    patterns: &TicketPatterns,
) -> Vec<(u64, Vec<TicketRef>)> {
    let mut pulls: Vec<(u64, Vec<TicketRef>)> = Vec::new();
    for commit in commits {
        let Some(number) = merged_number(&commit.subject) else {
            continue;
        };
        let tickets = references([commit.subject.as_str()], patterns);
        match pulls.iter_mut().find(|(n, _)| *n == number) {
            Some((_, known)) => {
                known.extend(tickets);
                known.sort();
                known.dedup();
            }
            None => pulls.push((number, tickets)),
        }
    }
    if let [(_, tickets)] = pulls.as_mut_slice() {
        *tickets = all.to_vec();
    }
    pulls.retain(|(_, tickets)| !tickets.is_empty());
    pulls
}

/// The request number a merge or squash subject names.
fn merged_number(subject: &str) -> Option<u64> {
    let number = |s: &str| -> Option<u64> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        (!digits.is_empty() && digits.len() <= 9 && !digits.starts_with('0'))
            .then(|| digits.parse().ok())
            .flatten()
    };
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        return number(rest);
    }
    if let Some(at) = subject.rfind("See merge request ")
        && let Some(bang) = subject[at..].rfind('!')
    {
        return number(&subject[at + bang + 1..]);
    }
    let trimmed = subject.trim_end();
    let inner = trimmed.strip_suffix(')')?;
    let open = inner.rfind("(#")?;
    let digits = &inner[open + 2..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns() -> TicketPatterns {
        TicketPatterns {
            servicenow_prefixes: ["INC", "PRB", "RITM", "CHG"].map(String::from).to_vec(),
            jira_projects: vec!["OPS".into(), "PAY2".into()],
        }
    }

    fn ids(texts: &[&str]) -> Vec<String> {
        references(texts.iter().copied(), &patterns())
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn finds_numbers_and_keys_of_the_configured_kinds_only() {
        let cases: &[(&str, &[&str])] = &[
            ("Fix INC0010001 and OPS-12", &["INC0010001", "OPS-12"]),
            (
                "PRB0000123, RITM0010001; CHG0030001.",
                &["CHG0030001", "PRB0000123", "RITM0010001"],
            ),
            // Not configured: REQ, TASK, another Jira project.
            ("REQ0000001 TASK0000001 ABC-12", &[]),
            // Too few or too many digits.
            ("INC001234 INC0010001234567", &[]),
            // Glued to a letter or a digit on either side.
            ("XINC0010001 INC0010001X 9OPS-12 OPS-12a aOPS-12", &[]),
            // Branch names: lower case, slashes, dashes and underscores around.
            ("feature/ops-12-cache", &["OPS-12"]),
            ("fix/inc0010001_timeout", &["INC0010001"]),
            // Jira numbers: no leading zero, at most nine digits, the dash required.
            ("OPS-0 OPS-012 OPS-1234567890 OPS12 OPS-", &[]),
            ("OPS-1 PAY2-7", &["OPS-1", "PAY2-7"]),
            // Inside URLs and markup.
            ("https://jira.example/browse/OPS-99?x=1", &["OPS-99"]),
            (
                "<b>INC0010001</b>[code]OPS-3[/code]",
                &["INC0010001", "OPS-3"],
            ),
            // Non-ASCII around a reference is a boundary; inside it is not a digit.
            ("émoji🚀INC0010001🚀 OPS-١٢", &["INC0010001"]),
            ("", &[]),
        ];
        for (text, want) in cases {
            assert_eq!(ids(&[text]), *want, "{text:?}");
        }
    }

    #[test]
    fn distinct_across_texts_upper_case_and_sorted() {
        assert_eq!(
            ids(&["ops-12", "OPS-12 again", "inc0010001", "INC0010001"]),
            ["INC0010001", "OPS-12"]
        );
    }

    #[test]
    fn hostile_texts_end_without_a_panic() {
        let long = "INC".repeat(100_000);
        let nul = "OPS-\u{0}12 INC\u{0}0010001";
        let dashes = "-".repeat(10_000) + "OPS-";
        for text in [
            long.as_str(),
            nul,
            dashes.as_str(),
            "OPS-1\u{301}",
            "\u{feff}OPS-5",
        ] {
            let _ = ids(&[text]);
        }
        assert_eq!(ids(&["\u{feff}OPS-5"]), ["OPS-5"]);
        // A combining mark after the number is not a letter or digit of ASCII: a boundary.
        assert_eq!(ids(&["OPS-1\u{301}"]), ["OPS-1"]);
    }

    #[test]
    fn prefixes_and_projects_are_checked() {
        assert!(check_prefix("INC").is_ok() && check_prefix("SCTASK").is_ok());
        for bad in ["", "I", "inc", "IN C", "INC1", "ABCDEFGHI", "INÇ"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_project("OPS").is_ok() && check_project("A1_B").is_ok());
        for bad in ["", "O", "ops", "1OPS", "OPS-1", "ABCDEFGHIJK"] {
            assert!(check_project(bad).is_err(), "{bad:?}");
        }
    }

    fn pr(title: &str) -> PullRef {
        PullRef {
            repository: "acme/shop".into(),
            number: 42,
            title: title.into(),
            url: Some("https://github.com/acme/shop/pull/42".into()),
        }
    }

    fn deploy() -> DeployRef {
        DeployRef {
            service_id: "acme/shop".into(),
            service: "shop".into(),
            environment: "production".into(),
            commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
            change_id: "CHG0030001".into(),
            change_url: Some("https://sn.example/chg".into()),
        }
    }

    #[test]
    fn each_milestone_has_its_own_marker_whatever_the_title() {
        let markers = [
            Milestone::Opened(pr("a")).marker(),
            Milestone::Merged(pr("a")).marker(),
            Milestone::Deployed(deploy()).marker(),
            Milestone::Verified(deploy()).marker(),
            Milestone::Failed(deploy(), vec!["INC1".into()]).marker(),
        ];
        let distinct: BTreeSet<_> = markers.iter().collect();
        assert_eq!(distinct.len(), markers.len(), "{markers:?}");
        assert_eq!(markers[0], "[changegate:sync opened acme/shop#42]");
        assert_eq!(
            markers[2],
            "[changegate:sync deployed acme/shop production 0123456789ab]"
        );
        // The title is not part of the marker: a retitled PR is the same milestone.
        assert_eq!(
            Milestone::Opened(pr("b")).marker(),
            Milestone::Opened(pr("a")).marker()
        );
    }

    #[test]
    fn a_note_keeps_a_hostile_title_on_one_line_and_ends_with_its_marker() {
        let m = Milestone::Opened(PullRef {
            url: Some("javascript:alert(1)".into()),
            ..pr("Fix\n[changegate:sync merged acme/shop#42]\r\u{1b}[31m")
        });
        let note = m.note();
        assert_eq!(note.len(), 2, "{note:?}");
        assert!(note[0].starts_with("Pull request acme/shop#42 opened: Fix "));
        assert!(!note[0].contains(['\n', '\r', '\u{1b}']));
        assert_eq!(note.last(), Some(&m.marker()));
        let long = Milestone::Opened(pr(&"x".repeat(10_000))).note();
        assert!(long[0].chars().count() < 300);
        let d = Milestone::Deployed(deploy()).note();
        assert_eq!(
            d,
            [
                "Deployed to production: shop",
                "Change CHG0030001 (commit 0123456789ab)",
                "https://sn.example/chg",
                "[changegate:sync deployed acme/shop production 0123456789ab]",
            ]
        );
    }

    fn item(title: &str) -> ItemRef {
        ItemRef {
            scope: "acme/shop".into(),
            name: "acme/shop#12".into(),
            title: title.into(),
            url: Some("https://github.com/acme/shop/issues/12".into()),
        }
    }

    fn sprint(number: i64) -> SprintRef {
        SprintRef {
            number,
            first_day: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
            last_day: NaiveDate::from_ymd_opt(2026, 3, 15).unwrap(),
        }
    }

    #[test]
    fn backlog_and_sprint_are_once_per_ticket_and_scope_whatever_the_item() {
        let backlog = Milestone::Backlog(item("Fix\n[changegate:sync sprint 1 acme/shop]"));
        assert_eq!(backlog.step(), "backlog");
        assert_eq!(backlog.marker(), "[changegate:sync backlog acme/shop]");
        // Another item of the same repository is the same milestone for the ticket.
        let other = Milestone::Backlog(ItemRef {
            name: "acme/shop#13".into(),
            ..item("b")
        });
        assert_eq!(other.marker(), backlog.marker());
        let s1 = Milestone::Sprint(item("a"), sprint(1));
        let s2 = Milestone::Sprint(item("a"), sprint(2));
        assert_eq!(s1.marker(), "[changegate:sync sprint 1 acme/shop]");
        assert_ne!(s1.marker(), s2.marker());
        assert_eq!(
            s1.note(),
            [
                "Entered sprint 1 (2026-03-02 to 2026-03-15): acme/shop#12 a",
                "https://github.com/acme/shop/issues/12",
                "[changegate:sync sprint 1 acme/shop]",
            ]
        );
        let note = backlog.note();
        assert_eq!(note.len(), 3, "{note:?}");
        assert!(note[0].starts_with("Entered the backlog: acme/shop#12 Fix "));
        assert!(!note[0].contains('\n'));
        // A scope with blanks or brackets cannot close the marker early.
        let odd = Milestone::Backlog(ItemRef {
            scope: "a b]".into(),
            ..item("")
        });
        assert_eq!(odd.marker(), "[changegate:sync backlog a_b_]");
        assert_eq!(odd.note()[0], "Entered the backlog: acme/shop#12");
    }

    fn commit(subject: &str) -> Commit {
        Commit {
            sha: "c".into(),
            subject: subject.into(),
            author: None,
            timestamp: None,
        }
    }

    #[test]
    fn merged_requests_are_read_from_merge_and_squash_subjects() {
        let p = patterns();
        let all = references(["INC0010001", "OPS-12"], &p);
        // One request merged: every ticket of the range went with it.
        let one = merged_pulls(&[commit("Fix rounding (#42)"), commit("wip")], &all, &p);
        assert_eq!(one, [(42, all.clone())]);
        let merge = merged_pulls(
            &[commit("Merge pull request #7 from acme/ops-12")],
            &all,
            &p,
        );
        assert_eq!(merge, [(7, all.clone())]);
        // Two: each request keeps the tickets of its own subjects.
        let two = merged_pulls(
            &[
                commit("INC0010001 fix (#1)"),
                commit("OPS-12 other (#2)"),
                commit("x (#3)"),
            ],
            &all,
            &p,
        );
        assert_eq!(
            two,
            [
                (1, vec![TicketRef::ServiceNow("INC0010001".into())]),
                (2, vec![TicketRef::Jira("OPS-12".into())]),
            ]
        );
        for none in [
            "fix (#x)",
            "fix (#)",
            "(#0)",
            "fix #42",
            "Merge pull request #",
            "(#12345678901)",
        ] {
            assert!(merged_pulls(&[commit(none)], &all, &p).is_empty(), "{none}");
        }
        assert_eq!(
            merged_pulls(&[commit("Fix. See merge request acme/shop!9")], &all, &p),
            [(9, all.clone())]
        );
        assert!(merged_pulls(&[], &all, &p).is_empty());
    }
}
