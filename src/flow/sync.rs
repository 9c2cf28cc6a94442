//! `sync`: tickets that follow the work. The tickets a change references (ServiceNow
//! numbers, Jira keys of the configured projects) get one note per milestone the work
//! reaches: its pull request opened and merged (`sync`, `gate`), deployed (`record
//! --outcome success`), verified or failed after deploy (`verify`). Each ticket and
//! milestone is written once whatever the number of runs: the writer reads the milestone's
//! marker back first (see [`crate::itsm::Tickets`]).
//!
//! Before any of that, the work items: `sync` with `[announce] source` set, and `serve` on
//! an issue event, scan the source `announce` reads ([`crate::work`]): a ticket an open
//! issue references "entered the backlog", one an issue of the current sprint's milestone
//! (iteration, sprint) references "entered sprint N" ([`scan`]).
//!
//! A ticket that cannot be found or written is a warning: inside `gate`, `record` and
//! `verify` a note never changes the exit code, either way.

use anyhow::Result;
use serde::Serialize;

use super::{Ctx, Exit, change};
use crate::config::WorkSourceKind;
use crate::domain::tickets::{
    self, DeployRef, ItemRef, Milestone, PullRef, SprintRef, TicketPatterns, TicketRef,
    merged_pulls, references,
};
use crate::domain::verify::Verdict;
use crate::domain::{ChangeFacts, ChangeRecord, Platform};
use crate::itsm::{Desks, Noted, Tickets};
use crate::settings::Settings;
use crate::work::{self, SprintWindow, Which, WorkItem};

/// One ticket at one milestone.
#[derive(Debug, Clone, Serialize)]
pub struct SyncLine {
    /// `INC0010001`, `OPS-12`.
    pub ticket: String,
    /// `backlog`, `sprint`, `opened`, `merged`, `deployed`, `verified`, `failed`.
    pub step: &'static str,
    /// What identifies the milestone in the ticket's notes.
    pub marker: String,
    /// What the writer did; `None` in a dry run or when the ticket could not be written
    /// (a warning says why).
    pub noted: Option<Noted>,
}

/// What `sync` did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    pub lines: Vec<SyncLine>,
}

/// The outcome of `changegate sync`.
#[derive(Debug)]
pub struct SyncOutcome {
    pub report: SyncReport,
    pub warnings: Vec<String>,
    /// 0 unless the ITSMs could not be connected at all (a broken configuration).
    pub exit: Exit,
}

/// The milestones a run writes, each with the tickets it concerns.
pub type Plan = Vec<(Milestone, Vec<TicketRef>)>;

/// The tickets the facts reference, by the `[sync]` patterns.
pub fn tickets_of(facts: &ChangeFacts, patterns: &TicketPatterns) -> Vec<TicketRef> {
    references(tickets::texts_of(facts, &[]), patterns)
}

/// Adds the tickets `extra` (a pull request's body, commit messages) and the facts
/// reference to the facts' work items, so that they travel with the change (a later
/// `verify` reads them back from the change's stored facts).
pub fn note_references(settings: &Settings, facts: &mut ChangeFacts, extra: &[String]) {
    let found = references(
        tickets::texts_of(facts, extra),
        &settings.file.sync.patterns(),
    );
    for t in found {
        if !facts.work_items.iter().any(|w| w == t.id()) {
            facts.work_items.push(t.id().to_string());
        }
    }
    facts.work_items.sort();
}

/// What the work itself reached, as the facts show it: a pull request opened (a PR
/// pipeline), or merged (the `closed` event of a merged one; a push whose commits name the
/// requests they merged).
pub fn work_plan(facts: &ChangeFacts, patterns: &TicketPatterns) -> Plan {
    let all = tickets_of(facts, patterns);
    if all.is_empty() {
        return Vec::new();
    }
    let repository = facts
        .repository
        .clone()
        .unwrap_or_else(|| facts.service_id.clone());
    if let Some(pr) = &facts.pull_request {
        let pull = PullRef {
            repository,
            number: pr.number,
            title: pr.title.clone(),
            url: pr.url.clone(),
        };
        let milestone = if pr.merged {
            Milestone::Merged(pull)
        } else {
            Milestone::Opened(pull)
        };
        return vec![(milestone, all)];
    }
    merged_pulls(&facts.commits, &all, patterns)
        .into_iter()
        .map(|(number, tickets)| {
            let pull = PullRef {
                repository: repository.clone(),
                number,
                title: String::new(),
                url: None,
            };
            (Milestone::Merged(pull), tickets)
        })
        .collect()
}

/// A deploy of the facts' commit as the change record names it.
fn deploy_of(facts: &ChangeFacts, change_id: &str, change_url: Option<&str>) -> DeployRef {
    DeployRef {
        service_id: facts.service_id.clone(),
        service: facts.service.clone(),
        environment: facts.environment.clone(),
        commit_sha: facts.commit_sha.clone(),
        change_id: change_id.to_string(),
        change_url: change_url.map(str::to_string),
    }
}

/// Writes the plan's notes. Every failure is a warning, ticket by ticket.
pub async fn write(settings: &Settings, desks: &Desks, plan: &Plan) -> (SyncReport, Vec<String>) {
    let customer_visible = settings.file.sync.customer_visible;
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    for (milestone, tickets) in plan {
        let note = milestone.note();
        let marker = milestone.marker();
        for ticket in tickets {
            let (desk, itsm, how): (Option<&dyn Tickets>, _, _) = match ticket {
                TicketRef::ServiceNow(_) => (
                    desks.servicenow.as_deref(),
                    "ServiceNow",
                    "[servicenow] url or CHANGEGATE_SERVICENOW_URL",
                ),
                TicketRef::Jira(_) => (
                    desks.jira.as_deref(),
                    "Jira",
                    "[jira] url or CHANGEGATE_JIRA_URL",
                ),
            };
            let noted = if settings.dry_run {
                None
            } else if let Some(desk) = desk {
                match desk
                    .note_once(ticket.id(), &note, &marker, customer_visible)
                    .await
                {
                    Ok(Noted::Missing) => {
                        warnings.push(format!(
                            "ticket {ticket} not updated ({}): {itsm} has no such ticket, or the account cannot see it",
                            milestone.step()
                        ));
                        Some(Noted::Missing)
                    }
                    Ok(noted) => Some(noted),
                    Err(e) => {
                        warnings.push(format!(
                            "ticket {ticket} not updated ({}): {e:#}",
                            milestone.step()
                        ));
                        None
                    }
                }
            } else {
                warnings.push(format!(
                    "ticket {ticket} not updated ({}): no {itsm} is configured for tickets (set {how})",
                    milestone.step()
                ));
                None
            };
            lines.push(SyncLine {
                ticket: ticket.to_string(),
                step: milestone.step(),
                marker: marker.clone(),
                noted,
            });
        }
    }
    let report = SyncReport {
        dry_run: settings.dry_run,
        lines,
    };
    (report, warnings)
}

/// Connects the ticket ITSMs and writes the plan; a failure to connect is one warning.
async fn write_plan(settings: &Settings, plan: &Plan) -> Vec<String> {
    if plan.is_empty() || settings.dry_run {
        return Vec::new();
    }
    match crate::itsm::desks(settings) {
        Ok(desks) => write(settings, &desks, plan).await.1,
        Err(e) => vec![format!("tickets not updated: {e:#}")],
    }
}

/// Inside `gate` (with `[sync] enabled`): the work's own milestones.
pub async fn after_gate(settings: &Settings, facts: &ChangeFacts) -> Vec<String> {
    if !settings.file.sync.enabled {
        return Vec::new();
    }
    write_plan(settings, &work_plan(facts, &settings.file.sync.patterns())).await
}

/// Inside `record --outcome success` (with `[sync] enabled`): the work's milestones (the
/// first run that sees a merge writes it) and the deploy.
pub async fn after_deploy(
    settings: &Settings,
    facts: &ChangeFacts,
    change_id: &str,
    change_url: Option<&str>,
) -> Vec<String> {
    if !settings.file.sync.enabled {
        return Vec::new();
    }
    let patterns = settings.file.sync.patterns();
    let mut plan = work_plan(facts, &patterns);
    let all = tickets_of(facts, &patterns);
    if !all.is_empty() {
        plan.push((
            Milestone::Deployed(deploy_of(facts, change_id, change_url)),
            all,
        ));
    }
    write_plan(settings, &plan).await
}

/// Inside `verify` (with `[sync] enabled`): the verdict on a deploy, for the tickets the
/// change's stored facts reference.
pub async fn after_verify(
    settings: &Settings,
    facts: &ChangeFacts,
    record: &ChangeRecord,
    verdict: &Verdict,
) -> Vec<String> {
    if !settings.file.sync.enabled {
        return Vec::new();
    }
    let all = tickets_of(facts, &settings.file.sync.patterns());
    if all.is_empty() {
        return Vec::new();
    }
    let deploy = deploy_of(facts, &record.id, record.url.as_deref());
    let milestone = match verdict {
        Verdict::Succeeded => Milestone::Verified(deploy),
        Verdict::FailedAfterDeploy { incidents } => Milestone::Failed(deploy, incidents.clone()),
        // The deploy itself failed: no deploy milestone was written, none follows.
        Verdict::Failed { .. } => return Vec::new(),
    };
    write_plan(settings, &vec![(milestone, all)]).await
}

/// The work source `sync` scans: `[announce] source`, else the platform's milestone.
fn source_of(settings: &Settings) -> WorkSourceKind {
    match (settings.file.announce.source, settings.platform) {
        (Some(source), _) => source,
        (None, Platform::Gitlab) => WorkSourceKind::GitlabMilestone,
        (None, _) => WorkSourceKind::GithubMilestone,
    }
}

/// What one scanned item reached: the backlog when it is open, the sprint when it is in the
/// sprint's milestone (iteration, sprint).
struct Scanned<'w> {
    item: &'w WorkItem,
    open: bool,
    sprint: Option<SprintRef>,
}

/// The backlog and sprint milestones of `scanned`, each ticket once per milestone (the
/// first item that references it names it in the note).
fn scan_plan(
    scope: &str,
    repository: Option<&str>,
    scanned: &[Scanned<'_>],
    patterns: &TicketPatterns,
) -> Plan {
    let mut plan: Plan = Vec::new();
    let mut seen: Vec<(String, TicketRef)> = Vec::new();
    let mut add = |plan: &mut Plan, milestone: Milestone, tickets: &[TicketRef]| {
        let marker = milestone.marker();
        let fresh: Vec<TicketRef> = tickets
            .iter()
            .filter(|t| !seen.iter().any(|(m, s)| *m == marker && s == *t))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        seen.extend(fresh.iter().map(|t| (marker.clone(), t.clone())));
        plan.push((milestone, fresh));
    };
    for s in scanned {
        let tickets = references([s.item.title.as_str(), s.item.body.as_str()], patterns);
        if tickets.is_empty() {
            continue;
        }
        let item = ItemRef {
            scope: scope.to_string(),
            name: match (repository, s.item.number) {
                (Some(repository), Some(_)) => format!("{repository}{}", s.item.id),
                _ => s.item.id.clone(),
            },
            title: s.item.title.clone(),
            url: Some(s.item.url.clone()).filter(|u| !u.is_empty()),
        };
        if s.open || s.sprint.is_some() {
            add(&mut plan, Milestone::Backlog(item.clone()), &tickets);
        }
        if let Some(sprint) = s.sprint {
            add(&mut plan, Milestone::Sprint(item, sprint), &tickets);
        }
    }
    // Every backlog note before any sprint note.
    plan.sort_by_key(|(m, _)| matches!(m, Milestone::Sprint(..)));
    plan
}

/// The work items' milestones: the open issues of the work source (the backlog) and the
/// issues of the current sprint's milestone, iteration or sprint (`[announce] milestone`,
/// `[announce] jira_board`), for the tickets their titles and descriptions reference.
/// `repository` is the one whose issues are read (GitHub `owner/name`, GitLab path).
pub async fn scan(ctx: &Ctx<'_>, repository: Option<&str>) -> Result<Plan> {
    let s = ctx.settings;
    let section = &s.file.announce;
    let source = source_of(s);
    let jira = match &s.backend_config() {
        Ok(crate::settings::BackendConfig::Jira(c)) => Some(c.access.clone()),
        _ => None,
    };
    let sources = work::Sources {
        forge: ctx.forge,
        repository,
        forge_kind: None,
        jira: jira.as_ref(),
        budget: &s.budget,
    };
    let window = SprintWindow::of(&s.calendar, s.now, Which::Current);
    let (backlog, _) = work::open_issues(&sources, source).await?;
    let sprint = work::issues(
        &sources,
        source,
        &section.milestone,
        section.jira_board,
        window,
    )
    .await?;
    let sprint_ref = SprintRef {
        number: window.number,
        first_day: window.first_day(),
        last_day: window.last_day(),
    };
    let mut scanned: Vec<Scanned<'_>> = Vec::new();
    for item in backlog.iter().filter(|i| !i.is_pull_request) {
        let in_sprint = sprint.items.iter().any(|i| i.id == item.id);
        scanned.push(Scanned {
            item,
            open: true,
            sprint: in_sprint.then_some(sprint_ref),
        });
    }
    // Pull/merge requests have their own steps (opened, merged).
    for item in sprint.items.iter().filter(|i| !i.is_pull_request) {
        if !backlog.iter().any(|b| b.id == item.id) {
            scanned.push(Scanned {
                item,
                open: item.state == work::ItemState::Open,
                sprint: Some(sprint_ref),
            });
        }
    }
    let scope = match (source, repository) {
        (WorkSourceKind::JiraSprint, _) | (_, None) => {
            format!("jira-board-{}", section.jira_board.unwrap_or(0))
        }
        (_, Some(repository)) => repository.to_string(),
    };
    let shown = (source != WorkSourceKind::JiraSprint)
        .then_some(repository)
        .flatten();
    Ok(scan_plan(&scope, shown, &scanned, &s.file.sync.patterns()))
}

/// Writes `plan` (or, in a dry run, only says what it would write).
async fn outcome(
    settings: &Settings,
    plan: &Plan,
    mut warnings: Vec<String>,
) -> Result<SyncOutcome> {
    if settings.dry_run || plan.is_empty() {
        let (report, _) = write(settings, &Desks::default(), plan).await;
        return Ok(SyncOutcome {
            report,
            warnings,
            exit: Exit::Pass,
        });
    }
    let desks = crate::itsm::desks(settings)?;
    let (report, more) = write(settings, &desks, plan).await;
    warnings.extend(more);
    Ok(SyncOutcome {
        report,
        warnings,
        exit: Exit::Pass,
    })
}

/// `changegate sync`: the milestones this pipeline's work reached, written to the tickets
/// it references; with `[announce] source` set, the backlog and sprint milestones of the
/// source's issues too ([`scan`]). Needs no backend: the facts come from the pipeline
/// alone. A source that cannot be read is a warning: the work's own milestones are still
/// written.
pub async fn run(ctx: &Ctx<'_>, commit: Option<&str>) -> Result<SyncOutcome> {
    let s = ctx.settings;
    let facts = change::facts_with_references(ctx, commit)?;
    let mut warnings = Vec::new();
    let mut plan = Vec::new();
    if s.file.announce.source.is_some() {
        match scan(ctx, facts.repository.as_deref()).await {
            Ok(found) => plan = found,
            Err(e) => warnings.push(format!(
                "the backlog and the sprint were not scanned for tickets: {e:#}"
            )),
        }
    }
    plan.extend(work_plan(&facts, &s.file.sync.patterns()));
    outcome(s, &plan, warnings).await
}

/// `serve` on an issue event: the backlog and sprint milestones of `repository`'s issues
/// ([`scan`]); the source is `[announce] source`, else the platform's milestone.
pub async fn run_scan(ctx: &Ctx<'_>, repository: &str) -> Result<SyncOutcome> {
    let plan = scan(ctx, Some(repository)).await?;
    outcome(ctx.settings, &plan, Vec::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Commit, Platform, PullRequest};

    fn facts(pr: Option<PullRequest>, subjects: &[&str]) -> ChangeFacts {
        ChangeFacts {
            platform: Platform::Github,
            service: "shop".into(),
            service_id: "acme/shop".into(),
            environment: "production".into(),
            repository: Some("acme/shop".into()),
            commit_sha: "a".repeat(40),
            branch: None,
            pull_request: pr,
            range: None,
            commits: subjects
                .iter()
                .map(|s| Commit {
                    sha: "b".repeat(40),
                    subject: s.to_string(),
                    author: None,
                    timestamp: None,
                })
                .collect(),
            lines_changed: None,
            paths: Vec::new(),
            paths_unknown: false,
            work_items: Vec::new(),
            run_url: None,
            repository_url: None,
            actor: None,
            author: None,
            tests_passed: None,
            evidence: Default::default(),
        }
    }

    fn patterns() -> TicketPatterns {
        TicketPatterns {
            servicenow_prefixes: vec!["INC".into()],
            jira_projects: vec!["OPS".into()],
        }
    }

    #[test]
    fn a_pull_request_is_opened_until_its_event_says_merged() {
        let pr = PullRequest {
            number: 42,
            title: "Fix INC0010001".into(),
            head_ref: Some("ops-12-fix".into()),
            ..PullRequest::default()
        };
        let plan = work_plan(&facts(Some(pr.clone()), &[]), &patterns());
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].0.step(), "opened");
        assert_eq!(
            plan[0].1,
            [
                TicketRef::ServiceNow("INC0010001".into()),
                TicketRef::Jira("OPS-12".into())
            ]
        );
        let merged = PullRequest { merged: true, ..pr };
        let plan = work_plan(&facts(Some(merged), &[]), &patterns());
        assert_eq!(plan[0].0.marker(), "[changegate:sync merged acme/shop#42]");
    }

    #[test]
    fn a_push_writes_merged_only_for_the_requests_its_commits_name() {
        let plan = work_plan(&facts(None, &["Fix INC0010001 (#42)"]), &patterns());
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].0.marker(), "[changegate:sync merged acme/shop#42]");
        assert!(work_plan(&facts(None, &["Fix INC0010001 directly"]), &patterns()).is_empty());
        assert!(work_plan(&facts(None, &["Nothing referenced (#42)"]), &patterns()).is_empty());
    }
}
