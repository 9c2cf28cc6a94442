//! A GitLab milestone's or iteration's work: the milestone (project and ancestor groups) or
//! iteration (by title or dates), its issues (and, for a milestone, its merge requests),
//! the project's recently updated merge requests and its branches, joined to the items that
//! they name.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{
    Candidate, Container, ItemState, PrState, PullRequest, SprintWindow, SprintWork, WorkItem,
    date, link, pick, text,
};
use crate::config::WorkSourceKind;
use crate::forge::Forge;
use crate::forge::gitlab::Reader;

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

pub(super) async fn read(
    forge: &Forge<'_>,
    project: &str,
    pattern: &str,
    sprint: SprintWindow,
    iteration: bool,
    join: bool,
) -> anyhow::Result<SprintWork> {
    let reader = Reader::connect(forge, project)?;
    let what = if iteration {
        "iterations"
    } else {
        "milestones"
    };
    let listing = if iteration {
        "/iterations?state=all"
    } else {
        "/milestones?include_ancestors=true"
    };
    let containers = reader
        .all(listing)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the {what} of {project} on GitLab: {e}"))?;
    let candidates: Vec<Candidate> = containers
        .iter()
        .map(|m| Candidate {
            title: text(m, "title"),
            start: date(m.get("start_date").and_then(Value::as_str)),
            due: date(m.get("due_date").and_then(Value::as_str)),
        })
        .collect();
    let mut work = SprintWork {
        source: if iteration {
            WorkSourceKind::GitlabIteration
        } else {
            WorkSourceKind::GitlabMilestone
        },
        sprint,
        container: None,
        items: Vec::new(),
        cut_short: false,
    };
    let Some(chosen) = pick(&candidates, pattern, &sprint) else {
        return Ok(work);
    };
    let m = &containers[chosen];
    let id = m.get("id").and_then(Value::as_u64).unwrap_or(0);
    let title = text(m, "title");
    work.container = Some(Container {
        id: id.to_string(),
        title: title.clone(),
        url: Some(text(m, "web_url")).filter(|u| !u.is_empty()),
        start: candidates[chosen].start,
        due: candidates[chosen].due,
    });
    let filter = if iteration {
        format!("iteration_id={id}")
    } else {
        format!("milestone={}", enc(&title))
    };
    let issues = reader
        .all(&format!("/issues?{filter}&scope=all"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the issues of {title:?} on GitLab: {e}"))?;
    work.items = issues.iter().filter_map(issue).collect();
    if !iteration && join {
        let mrs = reader
            .all(&format!("/merge_requests?{filter}&state=all&scope=all"))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot read the merge requests of {title:?} on GitLab: {e}")
            })?;
        work.items.extend(mrs.iter().filter_map(merge_request_item));
    }
    if join && !work.items.is_empty() {
        let since = sprint.start - (sprint.end - sprint.start);
        let (prs, branches) = listings(&reader, project, since).await?;
        link(&mut work.items, &prs, &branches);
    }
    Ok(work)
}

/// The project's open issues.
pub(super) async fn open_issues(
    forge: &Forge<'_>,
    project: &str,
) -> anyhow::Result<(Vec<WorkItem>, bool)> {
    let reader = Reader::connect(forge, project)?;
    let issues = reader
        .all("/issues?state=opened&scope=all")
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the open issues of {project} on GitLab: {e}"))?;
    Ok((issues.iter().filter_map(issue).collect(), false))
}

/// The project's merge requests updated since `since` and its branches.
pub(super) async fn pulls_and_branches(
    forge: &Forge<'_>,
    project: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<(Vec<PullRequest>, Vec<String>, bool)> {
    let reader = Reader::connect(forge, project)?;
    let (prs, branches) = listings(&reader, project, since).await?;
    Ok((prs, branches, false))
}

async fn listings(
    reader: &Reader<'_>,
    project: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<(Vec<PullRequest>, Vec<String>)> {
    let since = enc(&since.to_rfc3339_opts(SecondsFormat::Secs, true));
    let mrs = reader
        .all(&format!(
            "/merge_requests?state=all&scope=all&updated_after={since}"
        ))
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the merge requests of {project}: {e}"))?;
    let branches = reader
        .all("/repository/branches")
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the branches of {project}: {e}"))?;
    Ok((
        mrs.iter().filter_map(merge_request).collect(),
        branches
            .iter()
            .map(|b| text(b, "name"))
            .filter(|n| !n.is_empty())
            .collect(),
    ))
}

fn labels(v: &Value) -> Vec<String> {
    v.get("labels")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| match l {
                    Value::String(s) => Some(s.clone()),
                    other => other.get("name").and_then(Value::as_str).map(String::from),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn issue(v: &Value) -> Option<WorkItem> {
    let iid = v.get("iid").and_then(Value::as_u64)?;
    Some(WorkItem {
        id: format!("#{iid}"),
        number: Some(iid),
        title: text(v, "title"),
        url: text(v, "web_url"),
        state: if text(v, "state") == "closed" {
            ItemState::Closed
        } else {
            ItemState::Open
        },
        labels: labels(v),
        body: text(v, "description"),
        is_pull_request: false,
        pull_requests: Vec::new(),
        branches: Vec::new(),
    })
}

fn merge_request(v: &Value) -> Option<PullRequest> {
    let iid = v.get("iid").and_then(Value::as_u64)?;
    let state = match text(v, "state").as_str() {
        "merged" => PrState::Merged,
        "closed" | "locked" => PrState::Closed,
        _ if v.get("draft").and_then(Value::as_bool) == Some(true)
            || v.get("work_in_progress").and_then(Value::as_bool) == Some(true) =>
        {
            PrState::Draft
        }
        _ => PrState::Open,
    };
    let merge_sha = ["merge_commit_sha", "squash_commit_sha"]
        .iter()
        .map(|k| text(v, k))
        .find(|s| !s.is_empty())
        .filter(|_| state == PrState::Merged);
    Some(PullRequest {
        number: iid,
        title: text(v, "title"),
        url: text(v, "web_url"),
        state,
        branch: text(v, "source_branch"),
        head_sha: Some(text(v, "sha")).filter(|s| !s.is_empty()),
        merge_sha,
        body: text(v, "description"),
    })
}

/// A merge request put in the milestone: an item of its own.
fn merge_request_item(v: &Value) -> Option<WorkItem> {
    let pr = merge_request(v)?;
    Some(WorkItem {
        id: format!("!{}", pr.number),
        number: Some(pr.number),
        title: pr.title.clone(),
        url: pr.url.clone(),
        state: match pr.state {
            PrState::Merged | PrState::Closed => ItemState::Closed,
            PrState::Open | PrState::Draft => ItemState::Open,
        },
        labels: labels(v),
        body: pr.body.clone(),
        is_pull_request: true,
        pull_requests: vec![pr],
        branches: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn issues_and_merge_requests() {
        let i = issue(
            &json!({"iid": 7, "title": "t", "state": "opened", "labels": ["a"],
            "description": "Refs INC0010001", "web_url": "https://gitlab.example/g/p/-/issues/7"}),
        )
        .unwrap();
        assert_eq!(i.id, "#7");
        assert_eq!(i.state, ItemState::Open);
        assert_eq!(i.body, "Refs INC0010001");
        let mr = merge_request_item(&json!({"iid": 9, "state": "merged", "source_branch": "7-x",
            "merge_commit_sha": null, "squash_commit_sha": "abc", "sha": "def"}))
        .unwrap();
        assert_eq!(mr.id, "!9");
        assert_eq!(mr.state, ItemState::Closed);
        assert_eq!(mr.pull_requests[0].merge_sha.as_deref(), Some("abc"));
        let draft = merge_request(&json!({"iid": 10, "state": "opened", "draft": true})).unwrap();
        assert_eq!(draft.state, PrState::Draft);
    }
}
