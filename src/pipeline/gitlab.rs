//! GitLab CI: the `CI_*` predefined variables, for branch and merge request pipelines.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::{Detected, Vars};
use crate::domain::approval::email_in;
use crate::domain::{Author, Commit, Platform, PullRequest};
use crate::env;

fn is_null_sha(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

/// Reads the run's metadata from the GitLab CI environment.
pub fn detect(vars: &dyn Vars) -> Result<Detected> {
    let commit_sha = vars.get(env::CI_COMMIT_SHA).unwrap_or_default();
    let project_url = vars.get(env::CI_PROJECT_URL);
    let pull_request = vars.get(env::CI_MERGE_REQUEST_IID).and_then(|iid| {
        let number = iid.parse::<u64>().ok()?;
        let mr_project = vars
            .get(env::CI_MERGE_REQUEST_PROJECT_URL)
            .or_else(|| project_url.clone());
        Some(PullRequest {
            number,
            title: vars.get(env::CI_MERGE_REQUEST_TITLE).unwrap_or_default(),
            url: mr_project
                .map(|p| format!("{}/-/merge_requests/{number}", p.trim_end_matches('/'))),
            head_sha: vars.get(env::CI_MERGE_REQUEST_SOURCE_BRANCH_SHA),
            head_ref: vars.get(env::CI_MERGE_REQUEST_SOURCE_BRANCH_NAME),
            base_ref: vars.get(env::CI_MERGE_REQUEST_TARGET_BRANCH_NAME),
            labels: vars
                .get(env::CI_MERGE_REQUEST_LABELS)
                .map(|l| {
                    l.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            reviewed: None,
            // A merge request pipeline runs before the merge.
            merged: false,
        })
    });
    let range = match (&pull_request, vars.get(env::CI_MERGE_REQUEST_DIFF_BASE_SHA)) {
        (Some(_), Some(base)) => Some((base, commit_sha.clone())),
        _ => None,
    };
    // The push's start: the range's only when the backend knows no deployed commit.
    let before = vars
        .get(env::CI_COMMIT_BEFORE_SHA)
        .filter(|b| !is_null_sha(b));
    // GitLab names the head commit's title and time; git adds the rest of the range.
    let commits = vars
        .get(env::CI_COMMIT_TITLE)
        .map(|title| Commit {
            sha: commit_sha.clone(),
            subject: title,
            author: vars.get(env::CI_COMMIT_AUTHOR),
            timestamp: vars
                .get(env::CI_COMMIT_TIMESTAMP)
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc)),
        })
        .into_iter()
        .collect::<Vec<_>>();
    Ok(Detected {
        platform: Platform::Gitlab,
        repository: vars.get(env::CI_PROJECT_PATH),
        repository_url: project_url,
        commit_sha,
        branch: vars
            .get(env::CI_MERGE_REQUEST_SOURCE_BRANCH_NAME)
            .or_else(|| vars.get(env::CI_COMMIT_REF_NAME)),
        pull_request,
        range,
        before,
        // Only the head commit is named by GitLab: git lists the whole range when it can.
        commits,
        paths: Vec::new(),
        lines_changed: None,
        run_url: vars
            .get(env::CI_PIPELINE_URL)
            .or_else(|| vars.get(env::CI_JOB_URL)),
        actor: vars.get(env::GITLAB_USER_LOGIN),
        // GitLab names no merge request author in a job's variables: the commit's e-mail.
        author: vars
            .get(env::CI_COMMIT_AUTHOR)
            .and_then(|a| email_in(&a).map(str::to_string))
            .map(|e| Author::email(&e)),
        // The head commit's whole message: work items are often named below the subject;
        // a merge request's description names its tickets.
        texts: vars
            .get(env::CI_COMMIT_MESSAGE)
            .into_iter()
            .chain(
                vars.get(env::CI_MERGE_REQUEST_DESCRIPTION)
                    .filter(|_| vars.get(env::CI_MERGE_REQUEST_IID).is_some()),
            )
            .collect(),
        claimed_review: None,
    })
}

#[cfg(test)]
#[path = "tests/gitlab.rs"]
mod tests;
