//! A GitHub milestone's work: the milestone (by title or due date), its issues and pull
//! requests (one listing: GitHub lists PRs among issues), the repository's recent pull
//! requests and its branches, joined to the items that they name.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    Candidate, Container, ItemState, MAX_PAGES, PrState, PullRequest, SprintWindow, SprintWork,
    WorkItem, date, link, pick, text,
};
use crate::config::WorkSourceKind;
use crate::forge::Forge;
use crate::forge::github::Reader;

pub(super) async fn read(
    forge: &Forge<'_>,
    repository: &str,
    pattern: &str,
    sprint: SprintWindow,
    join: bool,
) -> anyhow::Result<SprintWork> {
    let reader = connect(forge, repository).await?;
    let fail = |e| anyhow::anyhow!("cannot read the milestones of {repository} on GitHub: {e}");
    let (milestones, mut cut_short) = reader
        .pages(
            "/milestones?state=all&per_page=100",
            MAX_PAGES,
            "issues: read",
            |_| true,
        )
        .await
        .map_err(fail)?;
    let candidates: Vec<Candidate> = milestones
        .iter()
        .map(|m| Candidate {
            title: text(m, "title"),
            start: None,
            due: date(m.get("due_on").and_then(Value::as_str)),
        })
        .collect();
    let mut work = SprintWork {
        source: WorkSourceKind::GithubMilestone,
        sprint,
        container: None,
        items: Vec::new(),
        cut_short,
    };
    let Some(chosen) = pick(&candidates, pattern, &sprint) else {
        return Ok(work);
    };
    let milestone = &milestones[chosen];
    let number = milestone.get("number").and_then(Value::as_u64).unwrap_or(0);
    work.container = Some(Container {
        id: number.to_string(),
        title: text(milestone, "title"),
        url: Some(text(milestone, "html_url")).filter(|u| !u.is_empty()),
        start: None,
        due: candidates[chosen].due,
    });
    let (issues, cut) = reader
        .pages(
            &format!("/issues?milestone={number}&state=all&per_page=100"),
            MAX_PAGES,
            "issues: read",
            |_| true,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the issues of milestone {number}: {e}"))?;
    cut_short |= cut;
    work.items = issues.iter().filter_map(item).collect();
    if join && !work.items.is_empty() {
        let since = sprint.start - (sprint.end - sprint.start);
        let (prs, branches, cut) = listings(&reader, since).await?;
        cut_short |= cut;
        link(&mut work.items, &prs, &branches);
    }
    work.cut_short = cut_short;
    Ok(work)
}

/// The repository's open issues (pull requests left out), newest first.
pub(super) async fn open_issues(
    forge: &Forge<'_>,
    repository: &str,
) -> anyhow::Result<(Vec<WorkItem>, bool)> {
    let reader = connect(forge, repository).await?;
    let (issues, cut_short) = reader
        .pages(
            "/issues?state=open&per_page=100",
            MAX_PAGES,
            "issues: read",
            |_| true,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the open issues of {repository}: {e}"))?;
    let items = issues
        .iter()
        .filter_map(item)
        .filter(|i| !i.is_pull_request)
        .collect();
    Ok((items, cut_short))
}

/// The repository's pull requests updated since `since` and its branches.
pub(super) async fn pulls_and_branches(
    forge: &Forge<'_>,
    repository: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<(Vec<PullRequest>, Vec<String>, bool)> {
    let reader = connect(forge, repository).await?;
    listings(&reader, since).await
}

async fn connect(forge: &Forge<'_>, repository: &str) -> anyhow::Result<Reader> {
    let settings = forge.settings();
    if settings.forge.github_app.is_none() && settings.forge.github_token.is_none() {
        anyhow::bail!(
            "no GitHub token to read the milestones of {repository} with: set GITHUB_TOKEN or CHANGEGATE_GITHUB_TOKEN (issues: read, pull requests: read, contents: read)"
        );
    }
    Reader::connect(forge, repository)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {repository} on GitHub: {e}"))
}

async fn listings(
    reader: &Reader,
    since: DateTime<Utc>,
) -> anyhow::Result<(Vec<PullRequest>, Vec<String>, bool)> {
    let repository = reader.repository();
    // Newest update first: stop after the first page that reaches back before `since`.
    let (pulls, cut_pulls) = reader
        .pages(
            "/pulls?state=all&sort=updated&direction=desc&per_page=100",
            MAX_PAGES,
            "pull requests: read",
            |page| {
                page.iter().all(|p| {
                    p.get("updated_at")
                        .and_then(Value::as_str)
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_none_or(|t| t >= since)
                })
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the pull requests of {repository}: {e}"))?;
    let (branches, cut_branches) = reader
        .pages(
            "/branches?per_page=100",
            MAX_PAGES,
            "contents: read",
            |_| true,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the branches of {repository}: {e}"))?;
    Ok((
        pulls.iter().filter_map(pull).collect(),
        branches
            .iter()
            .map(|b| text(b, "name"))
            .filter(|n| !n.is_empty())
            .collect(),
        cut_pulls || cut_branches,
    ))
}

/// An issue of the listing (a PR among them when it has `pull_request`).
fn item(v: &Value) -> Option<WorkItem> {
    let number = v.get("number").and_then(Value::as_u64)?;
    let labels = v
        .get("labels")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| match l {
                    Value::String(s) => Some(s.clone()),
                    other => other.get("name").and_then(Value::as_str).map(String::from),
                })
                .collect()
        })
        .unwrap_or_default();
    let state = if text(v, "state") == "closed" {
        ItemState::Closed
    } else {
        ItemState::Open
    };
    let pr = v.get("pull_request").filter(|p| p.is_object());
    let pull_requests = pr
        .map(|p| {
            let merged = p.get("merged_at").is_some_and(|m| !m.is_null());
            vec![PullRequest {
                number,
                title: text(v, "title"),
                url: text(p, "html_url"),
                state: pr_state(merged, state == ItemState::Closed, v),
                branch: String::new(),
                head_sha: None,
                merge_sha: None,
                body: text(v, "body"),
            }]
        })
        .unwrap_or_default();
    Some(WorkItem {
        id: format!("#{number}"),
        number: Some(number),
        title: text(v, "title"),
        url: text(v, "html_url"),
        state,
        labels,
        body: text(v, "body"),
        is_pull_request: pr.is_some(),
        pull_requests,
        branches: Vec::new(),
    })
}

fn pr_state(merged: bool, closed: bool, v: &Value) -> PrState {
    if merged {
        PrState::Merged
    } else if closed {
        PrState::Closed
    } else if v.get("draft").and_then(Value::as_bool) == Some(true) {
        PrState::Draft
    } else {
        PrState::Open
    }
}

/// A pull request of `GET /pulls`.
fn pull(v: &Value) -> Option<PullRequest> {
    let number = v.get("number").and_then(Value::as_u64)?;
    let merged = v.get("merged_at").is_some_and(|m| !m.is_null());
    let head = v.get("head");
    Some(PullRequest {
        number,
        title: text(v, "title"),
        url: text(v, "html_url"),
        state: pr_state(merged, text(v, "state") == "closed", v),
        branch: head.map(|h| text(h, "ref")).unwrap_or_default(),
        head_sha: head.map(|h| text(h, "sha")).filter(|s| !s.is_empty()),
        merge_sha: Some(text(v, "merge_commit_sha")).filter(|s| merged && !s.is_empty()),
        body: text(v, "body"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_issue_and_a_pull_request_of_the_listing() {
        let issue = item(
            &json!({"number": 3, "title": "Fix <b>", "html_url": "https://github.com/o/r/issues/3",
            "state": "open", "labels": [{"name": "bug"}, "ui"], "body": null}),
        )
        .unwrap();
        assert_eq!(issue.id, "#3");
        assert_eq!(issue.labels, vec!["bug", "ui"]);
        assert!(!issue.is_pull_request);
        assert_eq!(issue.body, "");
        let pr = item(&json!({"number": 4, "title": "t", "state": "closed", "html_url": "u",
            "pull_request": {"html_url": "https://github.com/o/r/pull/4", "merged_at": "2026-01-02T00:00:00Z"}}))
        .unwrap();
        assert!(pr.is_pull_request);
        assert_eq!(pr.pull_requests[0].state, PrState::Merged);
        let draft = pull(
            &json!({"number": 5, "state": "open", "draft": true, "merged_at": null,
            "head": {"ref": "5-x", "sha": "abc"}, "merge_commit_sha": "test-merge"}),
        )
        .unwrap();
        assert_eq!(draft.state, PrState::Draft);
        assert_eq!(draft.branch, "5-x");
        // A PR not merged has no merge commit, whatever GitHub's test merge says.
        assert_eq!(draft.merge_sha, None);
    }
}
