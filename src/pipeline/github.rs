//! GitHub Actions: `GITHUB_*` variables and the event payload at `GITHUB_EVENT_PATH`.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Detected, Vars};
use crate::domain::{Author, Commit, Platform, PullRequest};
use crate::env;

#[derive(Debug, Default, Deserialize)]
struct Event {
    pull_request: Option<PrPayload>,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    commits: Vec<PushCommit>,
    head_commit: Option<PushCommit>,
    /// A force push: `before` need not be an ancestor, and the tree diff may undo files
    /// no listed commit touched.
    #[serde(default)]
    forced: bool,
    pusher: Option<Named>,
    deployment: Option<DeploymentPayload>,
    /// A deployment protection rule's pull requests for the deployed commit.
    #[serde(default)]
    pull_requests: Vec<PrAuthor>,
}

#[derive(Debug, Deserialize)]
struct PrAuthor {
    user: Option<User>,
}

#[derive(Debug, Deserialize)]
struct PrPayload {
    number: u64,
    #[serde(default)]
    title: String,
    html_url: Option<String>,
    body: Option<String>,
    additions: Option<u64>,
    deletions: Option<u64>,
    head: Option<RefPayload>,
    base: Option<RefPayload>,
    #[serde(default)]
    labels: Vec<Named>,
    user: Option<User>,
    /// `true` on the `closed` event of a merged pull request.
    merged: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GitAuthor {
    name: Option<String>,
    email: Option<String>,
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefPayload {
    sha: Option<String>,
    #[serde(rename = "ref")]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Named {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PushCommit {
    id: String,
    #[serde(default)]
    message: String,
    timestamp: Option<String>,
    author: Option<GitAuthor>,
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DeploymentPayload {
    sha: Option<String>,
    /// Who started the deploy: the change's author when no pull request names one.
    creator: Option<User>,
}

fn read_event(vars: &dyn Vars) -> Result<Event> {
    let Some(payload) = vars.event_payload() else {
        return Ok(Event::default());
    };
    let path = &payload.path;
    let text = payload
        .text
        .with_context(|| format!("cannot read the GitHub event payload {path}"))?;
    serde_json::from_str(&text)
        .with_context(|| format!("the GitHub event payload {path} is not valid JSON"))
}

/// GitHub lists at most this many commits in a push payload; a list this long may be cut.
const MAX_PUSH_COMMITS: usize = 2048;

fn is_null_sha(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// Reads the run's metadata from the GitHub Actions environment.
pub fn detect(vars: &dyn Vars) -> Result<Detected> {
    let event = read_event(vars)?;
    let server = vars
        .get(env::GITHUB_SERVER_URL)
        .unwrap_or_else(|| "https://github.com".to_string());
    let repository = vars.get(env::GITHUB_REPOSITORY);
    let repository_url = repository
        .as_ref()
        .map(|r| format!("{}/{r}", server.trim_end_matches('/')));
    let run_url = match (&repository_url, vars.get(env::GITHUB_RUN_ID)) {
        (Some(repo), Some(run)) => Some(
            match vars.get(env::GITHUB_RUN_ATTEMPT).filter(|a| a != "1") {
                Some(attempt) => format!("{repo}/actions/runs/{run}/attempts/{attempt}"),
                None => format!("{repo}/actions/runs/{run}"),
            },
        ),
        _ => None,
    };
    let commit_sha = vars
        .get(env::GITHUB_SHA)
        .or_else(|| event.after.clone().filter(|a| !is_null_sha(a)))
        .or_else(|| event.deployment.as_ref().and_then(|d| d.sha.clone()))
        .unwrap_or_default();
    let branch = vars
        .get(env::GITHUB_HEAD_REF)
        .or_else(|| vars.get(env::GITHUB_REF_NAME));

    let mut texts = Vec::new();
    let mut lines_changed = None;
    let mut pr_range = None;
    let pr_author = event
        .pull_request
        .as_ref()
        .and_then(|pr| pr.user.as_ref())
        .or_else(|| event.pull_requests.iter().find_map(|pr| pr.user.as_ref()))
        .and_then(|u| u.login.clone())
        .filter(|l| !l.is_empty());
    // A deployment event names no commit author: whoever started the deploy stands in, so
    // that they cannot approve it themselves either.
    let deployer = event
        .deployment
        .as_ref()
        .and_then(|d| d.creator.as_ref())
        .and_then(|u| u.login.clone())
        .filter(|l| !l.is_empty());
    let pull_request = event.pull_request.map(|pr| {
        if let Some(body) = pr.body {
            texts.push(body);
        }
        if pr.additions.is_some() || pr.deletions.is_some() {
            // Counts come from outside: a huge value must not wrap round to a small one.
            lines_changed = Some(
                pr.additions
                    .unwrap_or(0)
                    .saturating_add(pr.deletions.unwrap_or(0)),
            );
        }
        let head_sha = pr.head.as_ref().and_then(|h| h.sha.clone());
        pr_range = pr
            .base
            .as_ref()
            .and_then(|b| b.sha.clone())
            .zip(head_sha.clone());
        PullRequest {
            number: pr.number,
            title: pr.title,
            url: pr.html_url,
            head_sha,
            head_ref: pr.head.as_ref().and_then(|h| h.name.clone()),
            base_ref: pr.base.as_ref().and_then(|b| b.name.clone()),
            labels: pr.labels.into_iter().filter_map(|l| l.name).collect(),
            reviewed: None,
            merged: pr.merged == Some(true),
        }
    });
    // A push's `before`: the null SHA for a new branch or tag, which names no range.
    let before = match (&event.before, &event.after) {
        (Some(b), Some(a)) if !is_null_sha(b) && !is_null_sha(a) => Some(b.clone()),
        _ => None,
    };
    // The payload's `commits` list every path of `before..after` only when it has some, a
    // `before` to start from, fewer than GitHub's cap, and the push was not forced (a force
    // push's diff also undoes what only `before` had); `head_commit` alone (a tag, a new
    // branch) says nothing of the commits before it.
    let listed_in_full = before.is_some()
        && !event.forced
        && !event.commits.is_empty()
        && event.commits.len() < MAX_PUSH_COMMITS;
    let push_commits: Vec<&PushCommit> = if event.commits.is_empty() {
        event.head_commit.iter().collect()
    } else {
        event.commits.iter().collect()
    };
    // Work items are often named in the message body, below the subject.
    texts.extend(push_commits.iter().map(|c| c.message.clone()));
    let mut paths: Vec<String> = if listed_in_full {
        push_commits
            .iter()
            .flat_map(|c| c.added.iter().chain(&c.removed).chain(&c.modified).cloned())
            .collect()
    } else {
        Vec::new()
    };
    paths.sort();
    paths.dedup();
    let commits = push_commits
        .iter()
        .map(|c| Commit {
            sha: c.id.clone(),
            subject: c.message.lines().next().unwrap_or("").to_string(),
            author: c.author.as_ref().and_then(|a| a.name.clone()),
            timestamp: c
                .timestamp
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
        .collect();
    // The pull request's author, else the deployed commit's e-mail as the push lists it.
    // The commit's author carries their GitHub login too (`username`), when GitHub knows it.
    let author = pr_author.map(|l| Author::login(&l)).or_else(|| {
        push_commits
            .iter()
            .find(|c| c.id == commit_sha)
            .copied()
            .or(event.head_commit.as_ref())
            .and_then(|c| c.author.as_ref())
            .map(|a| Author {
                login: a.username.clone().filter(|u| !u.is_empty()),
                email: a.email.clone().filter(|e| !e.is_empty()),
            })
            .filter(|a| !a.is_unknown())
            .or_else(|| deployer.map(|l| Author::login(&l)))
    });
    let actor = vars
        .get(env::GITHUB_ACTOR)
        .or_else(|| event.pusher.and_then(|p| p.name));
    Ok(Detected {
        platform: Platform::Github,
        repository,
        repository_url,
        commit_sha,
        branch,
        pull_request,
        range: pr_range,
        before,
        commits,
        paths,
        lines_changed,
        run_url,
        actor,
        author,
        texts,
        claimed_review: None,
    })
}

#[cfg(test)]
#[path = "tests/github.rs"]
mod tests;
