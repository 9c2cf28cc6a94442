//! The work items of a sprint: what `announce` publishes and `sync` follows. Read from the
//! source `[announce] source` names — a GitHub milestone, a GitLab milestone or iteration,
//! a Jira Software sprint — and joined with the pull/merge requests and branches that name
//! each item, so that every item carries what its status is made of.
//!
//! Which milestone (iteration, sprint) is the sprint's: the one titled by `[announce]
//! milestone` with `{n}` the sprint's number, or, with no pattern, the one whose due date
//! (or dates) falls inside the sprint ([`pick`]). Nothing found is an answer, not an error:
//! [`SprintWork::container`] is `None` and there are no items.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::config::WorkSourceKind;
use crate::domain::sprint::SprintCalendar;
use crate::forge::Forge;
use crate::http::Budget;
use crate::settings::JiraAccess;

mod github;
mod gitlab;
mod jira;
#[cfg(test)]
mod tests;

/// The most pages of any one listing read (100 items each, 50 for Jira).
pub const MAX_PAGES: u32 = 20;

/// Which sprint: the one now falls in, or the one after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    Current,
    Next,
}

impl std::str::FromStr for Which {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Which> {
        match s.trim().to_ascii_lowercase().as_str() {
            "current" => Ok(Which::Current),
            "next" => Ok(Which::Next),
            other => anyhow::bail!("--sprint must be `current` or `next`, got {other:?}"),
        }
    }
}

/// One sprint of the calendar: its number and its dates (`end` is the next one's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SprintWindow {
    pub number: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl SprintWindow {
    /// The sprint `which` as seen at `now` on `calendar`.
    pub fn of(calendar: &SprintCalendar, now: DateTime<Utc>, which: Which) -> SprintWindow {
        let current = calendar.index_of(now);
        let number = match which {
            Which::Current => current,
            Which::Next => current + 1,
        };
        SprintWindow {
            number,
            start: calendar.start_of(number),
            end: calendar.end_of(number),
        }
    }

    /// The first day of the sprint.
    pub fn first_day(&self) -> NaiveDate {
        self.start.date_naive()
    }

    /// The last day of the sprint (the day before the next one starts).
    pub fn last_day(&self) -> NaiveDate {
        (self.end - Duration::seconds(1)).date_naive()
    }

    /// The title `pattern` names for this sprint (`{n}` replaced by its number).
    pub fn title(&self, pattern: &str) -> String {
        pattern.replace("{n}", &self.number.to_string())
    }
}

/// An item open or closed, in its tracker's own terms folded to two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    Open,
    Closed,
}

/// Where a pull/merge request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrState {
    Draft,
    Open,
    Merged,
    /// Closed without being merged.
    Closed,
}

/// A pull request (GitHub) or merge request (GitLab) of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullRequest {
    /// The PR number (GitHub) or MR iid (GitLab).
    pub number: u64,
    pub title: String,
    pub url: String,
    pub state: PrState,
    /// Its source branch.
    pub branch: String,
    /// Its head commit, when the forge gave it.
    pub head_sha: Option<String>,
    /// The commit the merge put on the target branch, once merged.
    pub merge_sha: Option<String>,
    /// Its description (references to tickets live there).
    pub body: String,
}

/// One work item of the sprint: an issue (GitHub, GitLab, Jira) or a pull/merge request put
/// in the milestone itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkItem {
    /// As people write it: `#12` (GitHub issue or PR), `#12` (GitLab issue), `!12` (GitLab
    /// merge request), `OPS-12` (Jira).
    pub id: String,
    /// The issue/PR number or iid; `None` for Jira.
    pub number: Option<u64>,
    pub title: String,
    pub url: String,
    pub state: ItemState,
    pub labels: Vec<String>,
    /// Its description, for the references to tickets in it.
    pub body: String,
    /// The item is a pull/merge request (then it is also first in `pull_requests`).
    pub is_pull_request: bool,
    /// The pull/merge requests that name the item (title, description, branch), or the item
    /// itself.
    pub pull_requests: Vec<PullRequest>,
    /// Branches that name the item (`12-fix-x`, `feature/OPS-12-y`) and have no PR yet.
    pub branches: Vec<String>,
}

/// The milestone, iteration or sprint the items were read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The source's own id (GitHub milestone number, GitLab milestone or iteration id, Jira
    /// sprint id).
    pub id: String,
    pub title: String,
    pub url: Option<String>,
    pub start: Option<NaiveDate>,
    pub due: Option<NaiveDate>,
}

/// What a source holds for one sprint.
#[derive(Debug, Clone, Serialize)]
pub struct SprintWork {
    pub source: WorkSourceKind,
    pub sprint: SprintWindow,
    /// `None`: no milestone (iteration, sprint) matched; `items` is then empty.
    pub container: Option<Container>,
    /// In the source's order (GitHub: newest first; Jira: rank).
    pub items: Vec<WorkItem>,
    /// A listing was longer than [`MAX_PAGES`]: some items or links are missing.
    pub cut_short: bool,
}

/// What reading a source needs: the run's forge (its clients and tokens), the repository
/// (GitHub `owner/name`, GitLab project path) and, for a Jira sprint, the site's account.
pub struct Sources<'a, 'f> {
    pub forge: &'f Forge<'a>,
    /// The repository whose milestones, issues and PRs are read; with a Jira sprint, the one
    /// whose PRs are joined to the issues (none: no PRs).
    pub repository: Option<&'f str>,
    /// Which forge the repository is on, when a Jira sprint's items are joined to PRs.
    pub forge_kind: Option<ForgeKind>,
    pub jira: Option<&'f JiraAccess>,
    pub budget: &'f Budget,
}

/// A forge, for joining PRs to the items of a source that is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    Github,
    Gitlab,
}

/// A candidate milestone (iteration, sprint) as [`pick`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub title: String,
    pub start: Option<NaiveDate>,
    pub due: Option<NaiveDate>,
}

/// Which of `candidates` is the sprint's. With a `pattern`: the one titled so (`{n}` the
/// sprint's number; case and surrounding blanks ignored), the first when several are.
/// Without one: among those with both dates, the one overlapping the sprint most (the
/// earliest on a tie); else the first whose due date falls inside the sprint.
pub fn pick(candidates: &[Candidate], pattern: &str, sprint: &SprintWindow) -> Option<usize> {
    if !pattern.trim().is_empty() {
        let want = sprint.title(pattern.trim()).to_lowercase();
        return candidates
            .iter()
            .position(|c| c.title.trim().to_lowercase() == want);
    }
    let (first, last) = (sprint.first_day(), sprint.last_day());
    let mut best: Option<(usize, i64, NaiveDate)> = None;
    for (i, c) in candidates.iter().enumerate() {
        if let (Some(start), Some(due)) = (c.start, c.due) {
            let overlap = (due.min(last) - start.max(first)).num_days() + 1;
            if overlap > 0
                && best.is_none_or(|(_, o, s)| overlap > o || (overlap == o && start < s))
            {
                best = Some((i, overlap, start));
            }
        }
    }
    if let Some((i, _, _)) = best {
        return Some(i);
    }
    candidates
        .iter()
        .position(|c| c.due.is_some_and(|d| d >= first && d <= last))
}

/// Does `pr` name the item `id` (`#12`, `OPS-12`) in its title, description or branch?
/// A number is named as `#12` in the text, or by a branch whose last part starts `12-`
/// (GitLab's own naming) or reads `issue-12`; a key anywhere, as a whole word.
pub fn names(pr: &PullRequest, id: &str) -> bool {
    let texts = [pr.title.as_str(), pr.body.as_str(), pr.branch.as_str()];
    if crate::pipeline::workitems::extract(texts)
        .iter()
        .any(|found| found == id)
    {
        return true;
    }
    branch_names(&pr.branch, id)
}

/// Does branch `branch` name item `id`?
pub fn branch_names(branch: &str, id: &str) -> bool {
    if let Some(number) = id.strip_prefix('#') {
        let last = branch.rsplit('/').next().unwrap_or(branch).to_lowercase();
        let words: Vec<&str> = last
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        return words.first() == Some(&number)
            || words.windows(2).any(|w| w[0] == "issue" && w[1] == number);
    }
    crate::pipeline::workitems::extract([branch])
        .iter()
        .any(|found| found == id)
}

/// Joins `prs` and `branches` to `items`: each item gets the PRs that name it (after its
/// own, when it is one) and the branches that name it and are no PR's branch.
pub fn link(items: &mut [WorkItem], prs: &[PullRequest], branches: &[String]) {
    for item in items.iter_mut() {
        for pr in prs {
            let own = item.is_pull_request && item.number == Some(pr.number);
            if own {
                // The listing's PR is fuller than the item's own view of it.
                if let Some(first) = item.pull_requests.first_mut() {
                    *first = pr.clone();
                }
                continue;
            }
            if !item.is_pull_request
                && names(pr, &item.id)
                && !item.pull_requests.iter().any(|p| p.number == pr.number)
            {
                item.pull_requests.push(pr.clone());
            }
        }
        if item.is_pull_request {
            continue;
        }
        for branch in branches {
            let has_pr = prs.iter().any(|p| &p.branch == branch);
            if !has_pr && branch_names(branch, &item.id) && !item.branches.contains(branch) {
                item.branches.push(branch.clone());
            }
        }
    }
}

/// The work of `sprint` in `source`, its items joined to the PRs and branches that name
/// them. `pattern` is `[announce] milestone`; `board` is `[announce] jira_board`.
pub async fn read(
    sources: &Sources<'_, '_>,
    source: WorkSourceKind,
    pattern: &str,
    board: Option<u64>,
    sprint: SprintWindow,
) -> anyhow::Result<SprintWork> {
    read_with(sources, source, pattern, board, sprint, true).await
}

/// The issues in `sprint`'s milestone (iteration, sprint) of `source`, as [`read`] finds
/// them, without the pull/merge requests: no join, and no merge request put in a GitLab
/// milestone (what `sync` needs for the "entered sprint N" step).
pub async fn issues(
    sources: &Sources<'_, '_>,
    source: WorkSourceKind,
    pattern: &str,
    board: Option<u64>,
    sprint: SprintWindow,
) -> anyhow::Result<SprintWork> {
    read_with(sources, source, pattern, board, sprint, false).await
}

/// The open issues of `source`'s repository (GitHub, GitLab), in or out of any milestone:
/// the backlog `sync` scans. A Jira Software source has none here (its board's backlog is
/// not read: the sprint's issues are). `true` with them when the listing was cut short.
pub async fn open_issues(
    sources: &Sources<'_, '_>,
    source: WorkSourceKind,
) -> anyhow::Result<(Vec<WorkItem>, bool)> {
    match source {
        WorkSourceKind::GithubMilestone => {
            let repository = repository(sources, "GITHUB_REPOSITORY")?;
            github::open_issues(sources.forge, repository).await
        }
        WorkSourceKind::GitlabMilestone | WorkSourceKind::GitlabIteration => {
            let repository = repository(sources, "CI_PROJECT_PATH")?;
            gitlab::open_issues(sources.forge, repository).await
        }
        WorkSourceKind::JiraSprint => Ok((Vec::new(), false)),
    }
}

async fn read_with(
    sources: &Sources<'_, '_>,
    source: WorkSourceKind,
    pattern: &str,
    board: Option<u64>,
    sprint: SprintWindow,
    join: bool,
) -> anyhow::Result<SprintWork> {
    let mut work = match source {
        WorkSourceKind::GithubMilestone => {
            let repository = repository(sources, "GITHUB_REPOSITORY")?;
            github::read(sources.forge, repository, pattern, sprint, join).await?
        }
        WorkSourceKind::GitlabMilestone | WorkSourceKind::GitlabIteration => {
            let repository = repository(sources, "CI_PROJECT_PATH")?;
            let iteration = source == WorkSourceKind::GitlabIteration;
            gitlab::read(sources.forge, repository, pattern, sprint, iteration, join).await?
        }
        WorkSourceKind::JiraSprint => {
            let Some(access) = sources.jira else {
                anyhow::bail!(
                    "[announce] source = \"jira-sprint\" needs the Jira site: set [jira] url and project, CHANGEGATE_JIRA_USER and CHANGEGATE_JIRA_TOKEN"
                );
            };
            let Some(board) = board else {
                anyhow::bail!(
                    "[announce] source = \"jira-sprint\" needs [announce] jira_board, the board whose sprints are read"
                );
            };
            let mut work = jira::read(access, sources.budget, board, pattern, sprint).await?;
            if let (Some(repository), Some(kind)) = (sources.repository, sources.forge_kind)
                && join
                && !work.items.is_empty()
            {
                let since = sprint.start - (sprint.end - sprint.start);
                let (prs, branches, cut) = match kind {
                    ForgeKind::Github => {
                        github::pulls_and_branches(sources.forge, repository, since).await?
                    }
                    ForgeKind::Gitlab => {
                        gitlab::pulls_and_branches(sources.forge, repository, since).await?
                    }
                };
                link(&mut work.items, &prs, &branches);
                work.cut_short |= cut;
            }
            work
        }
    };
    work.items.sort_by_key(|item| item.number.unwrap_or(0));
    Ok(work)
}

fn repository<'s>(sources: &'s Sources<'_, '_>, variable: &str) -> anyhow::Result<&'s str> {
    sources.repository.ok_or_else(|| {
        anyhow::anyhow!("no repository to read the sprint's work from: run in CI or set {variable}")
    })
}

/// A date `YYYY-MM-DD`, or the date part of an RFC 3339 instant (in UTC).
pub(crate) fn date(text: Option<&str>) -> Option<NaiveDate> {
    let text = text?.trim();
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(d);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc).date_naive())
        .or_else(|| {
            // Jira: `2015-04-11T15:22:00.000+1000`.
            DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
                .ok()
                .map(|t| t.with_timezone(&Utc).date_naive())
        })
}

/// A string field of a JSON object ("" when absent or not a string).
pub(crate) fn text(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_string()
}
