//! The config that governs a pull/merge request pipeline: the default branch's
//! `.changegate.toml`, never the pull request's own copy, so a pull request cannot loosen its
//! own gate. Read from git when the checkout has the default branch, else from the
//! platform's API (the container images carry no git), else — with a warning — not at all.

use std::path::Path;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::git::{self, FileAtRev};
use crate::env;
use crate::http::{self, Budget, HttpClient};

/// The default branch's config, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Governing {
    /// The text, and where it came from (for error messages).
    Found { label: String, text: String },
    /// The default branch has no config: defaults govern.
    Missing { label: String },
}

/// In a pull/merge request pipeline, the default branch whose config governs it.
pub fn protected_branch() -> Option<String> {
    if env::var(env::GITHUB_ACTIONS).is_some_and(|v| v == "true")
        && env::var(env::GITHUB_EVENT_NAME).is_some_and(|e| e.starts_with("pull_request"))
    {
        #[derive(serde::Deserialize)]
        struct Event {
            repository: Option<Repo>,
        }
        #[derive(serde::Deserialize)]
        struct Repo {
            default_branch: Option<String>,
        }
        let from_event = env::var(env::GITHUB_EVENT_PATH)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<Event>(&t).ok())
            .and_then(|e| e.repository?.default_branch);
        return from_event.or_else(|| env::var(env::GITHUB_BASE_REF));
    }
    if env::var(env::GITLAB_CI).is_some_and(|v| v == "true")
        && env::var(env::CI_MERGE_REQUEST_IID).is_some()
    {
        return env::var(env::CI_DEFAULT_BRANCH);
    }
    None
}

/// Reads `file` as the default branch has it. `None` outside pull-request pipelines, and
/// when neither git nor the API could tell (a warning says what to do about it).
///
/// The call is charged to `budget`; the settings are not known yet, so plain http to
/// another machine is always refused here (`[http] allow_insecure_http` lives in the very
/// file being fetched).
pub async fn fetch(
    workdir: &Path,
    file: &str,
    github_token: Option<&SecretString>,
    budget: &Budget,
) -> Option<Governing> {
    let branch = protected_branch()?;
    let rev = format!("origin/{branch}");
    match git::file_at(workdir, &rev, file) {
        FileAtRev::Found(text) => {
            return Some(Governing::Found {
                label: format!("{rev}:{file}"),
                text,
            });
        }
        FileAtRev::Missing => {
            return Some(Governing::Missing {
                label: format!("{rev}:{file}"),
            });
        }
        FileAtRev::NoRevision => {}
    }
    match from_api(&branch, file, github_token, budget).await {
        Ok(Some(found)) => Some(found),
        Ok(None) => {
            tracing::warn!(
                "cannot read {file} from the default branch ({rev} is not in this checkout and no API \
                 token can read it); using the pull request's own copy. Fetch the default branch \
                 (e.g. actions/checkout with fetch-depth: 0) or give changegate a token, so that a \
                 pull request cannot loosen its own gate"
            );
            None
        }
        Err(message) => {
            tracing::warn!(
                "cannot read {file} from the default branch: {message}; using the pull request's own copy"
            );
            None
        }
    }
}

/// GitHub's contents API or GitLab's repository files API. `Ok(None)`: no way to ask.
async fn from_api(
    branch: &str,
    file: &str,
    github_token: Option<&SecretString>,
    budget: &Budget,
) -> Result<Option<Governing>, String> {
    let label = format!("{branch}:{file}");
    if env::var(env::GITHUB_ACTIONS).is_some_and(|v| v == "true") {
        let (Some(token), Some(repo)) = (github_token, env::var(env::GITHUB_REPOSITORY)) else {
            return Ok(None);
        };
        let api =
            env::var(env::GITHUB_API_URL).unwrap_or_else(|| "https://api.github.com".to_string());
        http::check_base_url(
            env::GITHUB_API_URL,
            &api,
            "CHANGEGATE_GITHUB_TOKEN or GITHUB_TOKEN",
            false,
        )
        .map_err(|e| e.to_string())?;
        let mut url =
            url::Url::parse(&api).map_err(|e| format!("GITHUB_API_URL is not a URL: {e}"))?;
        url.path_segments_mut()
            .map_err(|()| "GITHUB_API_URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["repos"])
            .extend(repo.split('/'))
            .extend(["contents"])
            .extend(file.split('/'));
        url.query_pairs_mut().append_pair("ref", branch);
        let auth = format!("Bearer {}", token.expose_secret());
        return get(
            url,
            &[
                ("authorization", auth),
                ("accept", "application/vnd.github.raw+json".into()),
            ],
            label,
            budget,
        )
        .await;
    }
    if env::var(env::GITLAB_CI).is_some_and(|v| v == "true") {
        let (Some(api), Some(project)) =
            (env::var(env::CI_API_V4_URL), env::var(env::CI_PROJECT_ID))
        else {
            return Ok(None);
        };
        let header = match (env::var(env::GITLAB_TOKEN), env::var(env::CI_JOB_TOKEN)) {
            (Some(token), _) => ("private-token", token),
            (None, Some(token)) => ("job-token", token),
            (None, None) => return Ok(None),
        };
        http::check_base_url(env::CI_API_V4_URL, &api, "CHANGEGATE_GITLAB_TOKEN", false)
            .map_err(|e| e.to_string())?;
        let mut url =
            url::Url::parse(&api).map_err(|e| format!("CI_API_V4_URL is not a URL: {e}"))?;
        url.path_segments_mut()
            .map_err(|()| "CI_API_V4_URL cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["projects", &project, "repository", "files", file, "raw"]);
        url.query_pairs_mut().append_pair("ref", branch);
        return get(url, &[header], label, budget).await;
    }
    Ok(None)
}

async fn get(
    url: url::Url,
    headers: &[(&str, String)],
    label: String,
    budget: &Budget,
) -> Result<Option<Governing>, String> {
    let client = HttpClient::new("the forge API", budget).map_err(|e| e.to_string())?;
    let result = client
        .send(|c| {
            headers.iter().fold(c.get(url.clone()), |r, (name, value)| {
                r.header(*name, value)
            })
        })
        .await;
    match result {
        Ok(response) => {
            let text = response
                .text()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?;
            Ok(Some(Governing::Found { label, text }))
        }
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
            Ok(Some(Governing::Missing { label }))
        }
        Err(e) => Err(e.to_string()),
    }
}
