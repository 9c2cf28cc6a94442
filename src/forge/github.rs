//! GitHub: the sticky comment on each pull request of the change, and a check run (or, where
//! the token may not write checks, a commit status) on the commit.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use chrono::{DateTime, Utc};

use super::deployments::{Deployment, Listing};
use super::github_api::{Api, ApiError, next_link};
use super::{Annotation, Done, Forge, ForgeError, github_app};
use crate::domain::ChangeFacts;
use crate::domain::evidence::{Check, CheckState, Evidence, Review, ReviewEvidence, TestsEvidence};
use crate::domain::imported::ForgeStatus;
use crate::pipeline::PlatformFiles;

/// How the token's own comments are recognised, so that a comment someone else wrote with
/// our marker in it is never taken for ours (nor overwritten).
enum Author {
    /// Actions' `GITHUB_TOKEN` and App installation tokens comment as a bot.
    Bot,
    /// A personal token comments as its user; looked up when first needed.
    User(Option<String>),
}

struct GitHub {
    api: Api,
    owner: String,
    repo: String,
    author: Author,
}

#[derive(Deserialize)]
struct User {
    login: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
    user: Option<User>,
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    #[serde(default)]
    state: String,
    merged_at: Option<String>,
}

#[derive(Deserialize)]
struct CheckRuns {
    #[serde(default)]
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    #[serde(default)]
    name: String,
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Annotates the change on GitHub: comments on its pull request(s), then the check run.
pub(crate) async fn annotate(forge: &Forge<'_>, a: &Annotation, facts: &ChangeFacts) -> Done {
    let settings = forge.settings();
    let Some((owner, repo)) = facts.repository.as_deref().and_then(|r| r.split_once('/')) else {
        return Done::Skipped("GITHUB_REPOSITORY is not set".to_string());
    };
    if settings.forge.github_app.is_none() && settings.forge.github_token.is_none() {
        return Done::Skipped(
            "no GitHub token (GITHUB_TOKEN, CHANGEGATE_GITHUB_TOKEN or a GitHub App)".to_string(),
        );
    }
    let mut gh = match GitHub::connect(forge, owner, repo).await {
        Ok(gh) => gh,
        Err(e) => {
            return Done::Annotated {
                problems: vec![e.to_string()],
            };
        }
    };
    let mut problems = Vec::new();

    // A pull_request pipeline names its PR; the checks then go on the PR's head commit,
    // where the PR shows them (GITHUB_SHA is the merge commit of the PR's merge ref).
    let (pulls, sha) = match &facts.pull_request {
        Some(pr) => (
            Ok(vec![pr.number]),
            pr.head_sha
                .clone()
                .unwrap_or_else(|| facts.commit_sha.clone()),
        ),
        None => (
            gh.pulls_of_commit(&facts.commit_sha).await,
            facts.commit_sha.clone(),
        ),
    };
    match pulls {
        Ok(numbers) => {
            for number in numbers {
                if let Err(e) = gh.upsert_comment(number, a).await {
                    problems.push(format!(
                        "comment on pull request #{number}: {e}{}",
                        hint(&e, "pull-requests: write")
                    ));
                }
            }
        }
        Err(e) => problems.push(format!(
            "cannot list the pull requests of commit {sha}: {e}"
        )),
    }
    if let Some(problem) = gh.check_or_status(&sha, a).await {
        problems.push(problem);
    }
    Done::Annotated { problems }
}

/// One file of a pull request or a comparison.
#[derive(Deserialize)]
struct ChangedFile {
    filename: String,
    previous_filename: Option<String>,
    #[serde(default)]
    additions: u64,
    #[serde(default)]
    deletions: u64,
}

#[derive(Deserialize)]
struct Comparison {
    #[serde(default)]
    files: Vec<ChangedFile>,
}

/// GitHub lists at most this many files of a comparison; a listing this long may have been
/// cut short.
const MAX_COMPARE_FILES: usize = 300;

/// The files and line counts of the change as GitHub knows them: the comparison of its
/// commit range, keyed to the commit gated (a pull request's base and head from the event,
/// not the pull request's files, which describe its latest push: a re-run of an older
/// commit would be judged by a newer one's files). `Ok(None)`: nothing to ask with (no
/// token, no repository, no range).
pub(crate) async fn change_files(
    forge: &Forge<'_>,
    facts: &ChangeFacts,
) -> Result<Option<PlatformFiles>, ForgeError> {
    let settings = forge.settings();
    let Some((owner, repo)) = facts.repository.as_deref().and_then(|r| r.split_once('/')) else {
        return Ok(None);
    };
    if settings.forge.github_app.is_none() && settings.forge.github_token.is_none() {
        return Ok(None);
    }
    let Some((base, head)) = &facts.range else {
        return Ok(None);
    };
    let path = format!(
        "/repos/{}/{}/compare/{}...{}",
        enc(owner),
        enc(repo),
        enc(base),
        enc(head)
    );
    let gh = GitHub::connect(forge, owner, repo).await?;
    let files: Vec<ChangedFile> = gh
        .api
        .json::<Comparison>(Method::GET, &path, None)
        .await
        .map(|c| c.files)
        .map_err(|e| ForgeError::GitHub {
            hint: hint(&e, "contents: read"),
            source: e,
        })?;
    let complete = files.len() < MAX_COMPARE_FILES;
    let mut lines = 0u64;
    let mut paths = Vec::new();
    for f in files {
        lines = lines.saturating_add(f.additions.saturating_add(f.deletions));
        paths.extend(f.previous_filename);
        paths.push(f.filename);
    }
    Ok(Some(PlatformFiles {
        paths,
        lines: complete.then_some(lines),
        complete,
    }))
}

#[derive(Deserialize)]
struct ApiDeployment {
    id: u64,
    sha: String,
    #[serde(default)]
    environment: String,
    created_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ApiStatus {
    state: String,
    created_at: DateTime<Utc>,
}

/// The deployment history of one repository on GitHub (`history import`): the listing, then
/// each deployment's statuses, one request each (GitHub has no other way to give them).
pub(crate) struct History {
    gh: GitHub,
}

impl History {
    /// The run's client for `repository` (`owner/repo`).
    pub(crate) async fn connect(
        forge: &Forge<'_>,
        repository: &str,
    ) -> Result<History, ForgeError> {
        let (owner, repo) = repository
            .split_once('/')
            .ok_or_else(|| ForgeError::Repository(repository.to_string()))?;
        Ok(History {
            gh: GitHub::connect(forge, owner, repo).await?,
        })
    }

    /// The deployments to `environment`, newest first, 100 a page; stops after the first
    /// page that reaches back before `since` (GitHub lists deployments newest first) and
    /// after `max_pages`. Each page adds one to `requests`.
    pub(crate) async fn deployments(
        &self,
        environment: &str,
        since: Option<DateTime<Utc>>,
        max_pages: u32,
        requests: &mut u32,
    ) -> Result<Listing, ForgeError> {
        let mut listing = Listing::default();
        let mut next = Some(format!(
            "{}/deployments?environment={}&per_page=100",
            self.gh.repo_path(),
            enc(environment)
        ));
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            *requests += 1;
            let (headers, batch): (_, Vec<ApiDeployment>) =
                call_json(&self.gh.api, Method::GET, &page, None, "deployments: read").await?;
            // Newest first: once a page reaches back before `since`, later pages are older.
            // A page that is not in that order says nothing of the next: read on.
            let newest_first = batch.windows(2).all(|w| w[0].created_at >= w[1].created_at);
            let reached = newest_first
                && since.is_some_and(|since| batch.iter().any(|d| d.created_at < since));
            listing
                .deployments
                .extend(batch.into_iter().map(|d| Deployment {
                    id: d.id,
                    sha: d.sha,
                    environment: d.environment,
                    created_at: d.created_at,
                    statuses: None,
                }));
            if reached {
                break;
            }
            next = next_link(&headers).and_then(|url| self.gh.api.same_origin_path(&url));
            if next.is_some() && pages >= max_pages {
                listing.cut_short = true;
                break;
            }
        }
        Ok(listing)
    }

    /// The statuses of deployment `id`, every page (one request a page, counted).
    pub(crate) async fn statuses(
        &self,
        id: u64,
        requests: &mut u32,
    ) -> Result<Vec<ForgeStatus>, ForgeError> {
        let mut out = Vec::new();
        let mut next = Some(format!(
            "{}/deployments/{id}/statuses?per_page=100",
            self.gh.repo_path()
        ));
        while let Some(page) = next.take() {
            *requests += 1;
            let (headers, batch): (_, Vec<ApiStatus>) =
                call_json(&self.gh.api, Method::GET, &page, None, "deployments: read").await?;
            out.extend(batch.into_iter().map(|s| ForgeStatus {
                state: s.state,
                at: s.created_at,
            }));
            next = next_link(&headers).and_then(|url| self.gh.api.same_origin_path(&url));
        }
        Ok(out)
    }
}

/// Read access to one repository's planning listings (milestones, issues, pull requests,
/// branches) for [`crate::work`]: a GET below the repository, page after page while the
/// `Link` header names a next page, as JSON values the caller decodes.
pub(crate) struct Reader {
    gh: GitHub,
}

impl Reader {
    /// The run's client for `repository` (`owner/repo`).
    pub(crate) async fn connect(forge: &Forge<'_>, repository: &str) -> Result<Reader, ForgeError> {
        let (owner, repo) = repository
            .split_once('/')
            .ok_or_else(|| ForgeError::Repository(repository.to_string()))?;
        Ok(Reader {
            gh: GitHub::connect(forge, owner, repo).await?,
        })
    }

    /// `path` (below `/repos/OWNER/NAME`, with its query) and its next pages, at most
    /// `max_pages`; `more` sees each page and may stop the reading early. The second value
    /// says whether pages were left unread because of `max_pages`.
    pub(crate) async fn pages(
        &self,
        path: &str,
        max_pages: u32,
        permission: &str,
        mut more: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Result<(Vec<serde_json::Value>, bool), ForgeError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{}{path}", self.gh.repo_path()));
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            let (headers, batch): (_, Vec<serde_json::Value>) =
                call_json(&self.gh.api, Method::GET, &page, None, permission).await?;
            let go_on = more(&batch);
            out.extend(batch);
            if !go_on {
                break;
            }
            next = next_link(&headers).and_then(|url| self.gh.api.same_origin_path(&url));
            if next.is_some() && pages >= max_pages {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    /// One write below the repository (`POST /issues`, `PATCH /issues/N`): GitHub's answer.
    pub(crate) async fn write(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
        permission: &str,
    ) -> Result<serde_json::Value, ForgeError> {
        let full = format!("{}{path}", self.gh.repo_path());
        let (_, answer) = call_json(&self.gh.api, method, &full, Some(body), permission).await?;
        Ok(answer)
    }

    /// The repository read, `OWNER/NAME`.
    pub(crate) fn repository(&self) -> String {
        format!("{}/{}", self.gh.owner, self.gh.repo)
    }
}

/// One call below GitHub's API, its answer decoded as `T`: a refusal names the permission
/// the token needs, an answer that is not a `T` is a decode error naming the call.
async fn call_json<T: serde::de::DeserializeOwned>(
    api: &Api,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    permission: &str,
) -> Result<(reqwest::header::HeaderMap, T), ForgeError> {
    let (headers, text) = api.call(method.clone(), path, body).await.map_err(|e| {
        let hint = hint(&e, permission);
        ForgeError::GitHub { source: e, hint }
    })?;
    let decoded = serde_json::from_str(&text).map_err(|e| ForgeError::GitHub {
        source: ApiError::Decode {
            method,
            path: path.to_string(),
            message: e.to_string(),
        },
        hint: String::new(),
    })?;
    Ok((headers, decoded))
}

/// A hint on the permission a refused call needs.
fn hint(e: &ApiError, permission: &str) -> String {
    if e.refused() {
        format!(" (the token needs `{permission}`)")
    } else {
        String::new()
    }
}

impl GitHub {
    /// The run's client for `owner/repo`, authenticated by the App's installation token or
    /// the token given. The HTTP client, octocrab and the App token come from the forge.
    async fn connect(forge: &Forge<'_>, owner: &str, repo: &str) -> Result<GitHub, ForgeError> {
        let settings = forge.settings();
        let http = forge.github_http().map_err(ForgeError::Http)?;
        let base = settings.forge.github_api_url.as_str();
        let (token, author) = match (&settings.forge.github_app, &settings.forge.github_token) {
            (Some(app), _) => {
                let token = github_app::installation_token(
                    forge.app_tokens(),
                    http,
                    base,
                    app,
                    owner,
                    repo,
                )
                .await?;
                (token, Author::Bot)
            }
            (None, Some(token)) => {
                // `ghs_`: a server-to-server token (Actions' GITHUB_TOKEN, an App's).
                let author = if token.expose_secret().starts_with("ghs_") {
                    Author::Bot
                } else {
                    Author::User(None)
                };
                (token.clone(), author)
            }
            (None, None) => return Err(ForgeError::NoToken),
        };
        let api = forge.github_api(http, &token)?;
        Ok(GitHub {
            api,
            owner: enc(owner),
            repo: enc(repo),
            author,
        })
    }

    fn repo_path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.repo)
    }

    /// The open or merged pull requests that contain the commit (a push pipeline).
    async fn pulls_of_commit(&self, sha: &str) -> Result<Vec<u64>, ApiError> {
        let pulls: Vec<Pull> = self
            .api
            .all(&format!(
                "{}/commits/{}/pulls?per_page=100",
                self.repo_path(),
                enc(sha)
            ))
            .await?;
        Ok(pulls
            .into_iter()
            .filter(|p| p.state == "open" || p.merged_at.is_some())
            .map(|p| p.number)
            .collect())
    }

    async fn is_ours(&mut self, user: Option<&User>) -> Result<bool, ApiError> {
        let Some(user) = user else { return Ok(false) };
        match &mut self.author {
            Author::Bot => Ok(user.kind == "Bot"),
            Author::User(known) => {
                if known.is_none() {
                    let me: User = self.api.json(Method::GET, "/user", None).await?;
                    *known = Some(me.login);
                }
                Ok(known.as_deref() == Some(user.login.as_str()))
            }
        }
    }

    /// Edits our marked comment in place, or creates it; later duplicates (two jobs racing)
    /// are removed so that one comment per environment remains.
    async fn upsert_comment(&mut self, number: u64, a: &Annotation) -> Result<(), ApiError> {
        let issue = format!("{}/issues/{number}/comments", self.repo_path());
        let comments: Vec<Comment> = self.api.all(&format!("{issue}?per_page=100")).await?;
        let mut ours = Vec::new();
        for c in comments {
            if c.body.as_deref().is_some_and(|b| b.contains(&a.marker))
                && self.is_ours(c.user.as_ref()).await?
            {
                ours.push(c);
            }
        }
        let body = json!({ "body": a.comment });
        let Some((first, duplicates)) = ours.split_first() else {
            self.api.call(Method::POST, &issue, Some(&body)).await?;
            return Ok(());
        };
        if first.body.as_deref() != Some(a.comment.as_str()) {
            // Comments are edited on the repository, without the issue number.
            self.api
                .call(
                    Method::PATCH,
                    &format!("{}/issues/comments/{}", self.repo_path(), first.id),
                    Some(&body),
                )
                .await?;
        }
        for dup in duplicates {
            let path = format!("{}/issues/comments/{}", self.repo_path(), dup.id);
            if let Err(e) = self.api.call(Method::DELETE, &path, None).await {
                tracing::warn!("could not remove a duplicate changegate comment: {e}");
            }
        }
        Ok(())
    }

    /// The check run; where the token may not write checks, a commit status instead. The
    /// problem, in a sentence, when neither could be written.
    async fn check_or_status(&self, sha: &str, a: &Annotation) -> Option<String> {
        let check = match self.check_run(sha, a).await {
            Ok(()) => return None,
            Err(e) if e.refused() => e,
            Err(e) => return Some(format!("check run `{}`: {e}", a.check_name)),
        };
        match self.commit_status(sha, a).await {
            Ok(()) => {
                tracing::info!(
                    "check run refused ({check}); commit status `{}` set instead",
                    a.status_context
                );
                None
            }
            Err(status) if status.refused() => Some(format!(
                "check run `{}` refused ({check}) and commit status `{}` refused too ({status}): the token needs `checks: write` or `statuses: write`",
                a.check_name, a.status_context
            )),
            Err(status) => Some(format!(
                "check run `{}` refused ({check}); commit status `{}` failed: {status}",
                a.check_name, a.status_context
            )),
        }
    }

    async fn check_run(&self, sha: &str, a: &Annotation) -> Result<(), ApiError> {
        let mut body = json!({
            "name": a.check_name,
            "output": { "title": a.title, "summary": a.summary },
        });
        match a.standing.check_conclusion() {
            Some(conclusion) => {
                body["status"] = json!("completed");
                body["conclusion"] = json!(conclusion);
            }
            None => body["status"] = json!("in_progress"),
        }
        if let Some(url) = &a.details_url {
            body["details_url"] = json!(url);
        }
        if let Some(id) = &a.change_id {
            body["external_id"] = json!(id);
        }
        let existing: CheckRuns = self
            .api
            .json(
                Method::GET,
                &format!(
                    "{}/commits/{}/check-runs?check_name={}&filter=latest&per_page=10",
                    self.repo_path(),
                    enc(sha),
                    enc(&a.check_name)
                ),
                None,
            )
            .await?;
        match existing.check_runs.iter().find(|c| c.name == a.check_name) {
            Some(run) => {
                self.api
                    .call(
                        Method::PATCH,
                        &format!("{}/check-runs/{}", self.repo_path(), run.id),
                        Some(&body),
                    )
                    .await?;
            }
            None => {
                body["head_sha"] = json!(sha);
                self.api
                    .call(
                        Method::POST,
                        &format!("{}/check-runs", self.repo_path()),
                        Some(&body),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn commit_status(&self, sha: &str, a: &Annotation) -> Result<(), ApiError> {
        let mut body = json!({
            "state": a.standing.github_state(),
            "context": a.status_context,
            "description": a.description,
        });
        if let Some(url) = &a.details_url {
            body["target_url"] = json!(url);
        }
        self.api
            .call(
                Method::POST,
                &format!("{}/statuses/{}", self.repo_path(), enc(sha)),
                Some(&body),
            )
            .await?;
        Ok(())
    }
}

/// Why a deployment protection rule could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The callback names another host than the API: a forged payload could otherwise make
    /// changegate send its installation token anywhere.
    #[error(
        "the deployment callback URL is not under GITHUB_API_URL ({base}): refused, nothing sent"
    )]
    Foreign { base: String },
    #[error("GitHub refused the deployment review: {0}")]
    Api(String),
}

/// Whether `callback` lies under the API base `base` (same scheme, host and port, and
/// under its path: `https://HOST/api/v3/...` on GitHub Enterprise Server).
pub fn callback_allowed(base: &str, callback: &str) -> bool {
    let (Ok(base), Ok(callback)) = (url::Url::parse(base), url::Url::parse(callback)) else {
        return false;
    };
    let prefix = format!("{}/", base.path().trim_end_matches('/'));
    base.origin() == callback.origin()
        && callback.username().is_empty()
        && callback.password().is_none()
        && callback.path().starts_with(&prefix)
}

/// Answers a deployment protection rule: `POST` the review body to its callback URL with
/// the run's token (an installation token of the App whose rule it is). A body without
/// `state` is a status report; with it, the decision.
pub async fn review_deployment(
    http: &crate::http::HttpClient,
    base: &str,
    token: &secrecy::SecretString,
    callback: &str,
    body: &serde_json::Value,
) -> Result<(), ReviewError> {
    if !callback_allowed(base, callback) {
        return Err(ReviewError::Foreign {
            base: base.to_string(),
        });
    }
    let api = Api::new(http, base, token).map_err(|e| ReviewError::Api(e.to_string()))?;
    api.call(Method::POST, callback, Some(body))
        .await
        .map_err(|e| ReviewError::Api(format!("{e}{}", hint(&e, "deployments: write"))))?;
    Ok(())
}

#[cfg(test)]
mod review_tests {
    use super::callback_allowed;

    #[test]
    fn a_callback_must_lie_under_the_api_base() {
        let api = "https://api.github.com";
        let ok = "https://api.github.com/repos/o/r/actions/runs/1/deployment_protection_rule";
        assert!(callback_allowed(api, ok));
        assert!(!callback_allowed(api, "https://evil.example/repos/o/r"));
        assert!(!callback_allowed(api, "http://api.github.com/repos/o/r"));
        assert!(!callback_allowed(
            api,
            "https://api.github.com:444/repos/o/r"
        ));
        assert!(!callback_allowed(api, "https://x@api.github.com/repos/o/r"));
        assert!(!callback_allowed(api, "not a url"));
        let ghes = "https://ghe.example/api/v3";
        assert!(callback_allowed(
            ghes,
            "https://ghe.example/api/v3/repos/o/r"
        ));
        assert!(!callback_allowed(
            ghes,
            "https://ghe.example/api/v30/repos/o/r"
        ));
        assert!(!callback_allowed(ghes, "https://ghe.example/login"));
    }
}

/// A pull request of a commit, as `GET /commits/{sha}/pulls` lists it.
#[derive(Deserialize)]
struct PullOfCommit {
    number: u64,
    #[serde(default)]
    state: String,
    merged_at: Option<String>,
    merge_commit_sha: Option<String>,
    user: Option<User>,
    head: Option<PullHead>,
}

#[derive(Deserialize)]
struct PullHead {
    sha: String,
}

#[derive(Deserialize)]
struct ApiReview {
    user: Option<User>,
    #[serde(default)]
    state: String,
    commit_id: Option<String>,
}

#[derive(Deserialize)]
struct ListedRuns {
    #[serde(default)]
    check_runs: Vec<ListedRun>,
}

#[derive(Deserialize)]
struct ListedRun {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    conclusion: Option<String>,
    details_url: Option<String>,
}

#[derive(Deserialize)]
struct CombinedStatus {
    #[serde(default)]
    statuses: Vec<ContextStatus>,
}

#[derive(Deserialize)]
struct ContextStatus {
    #[serde(default)]
    context: String,
    #[serde(default)]
    state: String,
}

/// The most pages of check runs read (100 each).
const MAX_CHECK_PAGES: u32 = 10;

/// The review and test evidence of the change as GitHub knows it: the pull request that
/// brought the commit (the event's own, else `GET /commits/{sha}/pulls`), its reviews, and
/// the commit's check runs and combined status. `Ok(None)`: nothing to ask with (no token,
/// no repository). A failed call is an error: evidence that cannot be read fails closed.
pub(crate) async fn evidence(
    forge: &Forge<'_>,
    facts: &ChangeFacts,
    want_review: bool,
    want_tests: bool,
) -> Result<Option<Evidence>, ForgeError> {
    let settings = forge.settings();
    let Some((owner, repo)) = facts.repository.as_deref().and_then(|r| r.split_once('/')) else {
        return Ok(None);
    };
    if settings.forge.github_app.is_none() && settings.forge.github_token.is_none() {
        return Ok(None);
    }
    let gh = GitHub::connect(forge, owner, repo).await?;
    let refused = |permission: &'static str| {
        move |e: ApiError| ForgeError::GitHub {
            hint: hint(&e, permission),
            source: e,
        }
    };
    let mut out = Evidence::default();
    if want_review {
        let (number, author, head) = match &facts.pull_request {
            // A pull_request pipeline: the event names the request, its author and head.
            Some(pr) => (
                Some(pr.number),
                facts.author.as_ref().and_then(|a| a.login.clone()),
                pr.head_sha.clone(),
            ),
            None => {
                let pulls: Vec<PullOfCommit> = gh
                    .api
                    .all(&format!(
                        "{}/commits/{}/pulls?per_page=100",
                        gh.repo_path(),
                        enc(&facts.commit_sha)
                    ))
                    .await
                    .map_err(refused("pull-requests: read"))?;
                match bringing_pull(pulls, &facts.commit_sha) {
                    Some(p) => (
                        Some(p.number),
                        p.user.map(|u| u.login),
                        p.head.map(|h| h.sha),
                    ),
                    None => (None, None, None),
                }
            }
        };
        let mut reviews = Vec::new();
        if let Some(number) = number {
            let listed: Vec<ApiReview> = gh
                .api
                .all(&format!(
                    "{}/pulls/{number}/reviews?per_page=100",
                    gh.repo_path()
                ))
                .await
                .map_err(refused("pull-requests: read"))?;
            reviews = listed
                .into_iter()
                .filter_map(|r| {
                    Some(Review {
                        login: r.user?.login,
                        state: r.state.to_ascii_uppercase(),
                        commit: r.commit_id,
                    })
                })
                .collect();
        }
        out.review = Some(ReviewEvidence {
            forge: "GitHub".to_string(),
            number,
            author,
            head,
            per_commit: true,
            reviews,
        });
    }
    if want_tests {
        // A pull_request pipeline's GITHUB_SHA is a merge commit: the checks are the head's.
        let sha = facts
            .pull_request
            .as_ref()
            .and_then(|pr| pr.head_sha.clone())
            .unwrap_or_else(|| facts.commit_sha.clone());
        let run = crate::env::Vars::get(&settings.env, crate::env::GITHUB_RUN_ID)
            .map(|id| format!("/actions/runs/{id}/"));
        let mut checks = Vec::new();
        let mut next = Some(format!(
            "{}/commits/{}/check-runs?per_page=100",
            gh.repo_path(),
            enc(&sha)
        ));
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            let (headers, text) = gh
                .api
                .call(Method::GET, &page, None)
                .await
                .map_err(refused("checks: read"))?;
            let listed: ListedRuns = serde_json::from_str(&text).map_err(|e| {
                ForgeError::from(ApiError::Decode {
                    method: Method::GET,
                    path: page.clone(),
                    message: e.to_string(),
                })
            })?;
            checks.extend(listed.check_runs.into_iter().map(|r| {
                let this_run = run
                    .as_deref()
                    .is_some_and(|run| r.details_url.as_deref().is_some_and(|u| u.contains(run)));
                let (state, word) = check_run_state(&r.status, r.conclusion.as_deref());
                Check {
                    name: r.name,
                    state,
                    word,
                    this_run,
                }
            }));
            next = next_link(&headers).and_then(|url| gh.api.same_origin_path(&url));
            if next.is_some() && pages >= MAX_CHECK_PAGES {
                // Unread runs could be failures: say so rather than judge a part.
                checks.push(Check {
                    name: format!("more than {} check runs", pages * 100),
                    state: CheckState::Pending,
                    word: "not all read".to_string(),
                    this_run: false,
                });
                break;
            }
        }
        let combined: CombinedStatus = gh
            .api
            .json(
                Method::GET,
                &format!(
                    "{}/commits/{}/status?per_page=100",
                    gh.repo_path(),
                    enc(&sha)
                ),
                None,
            )
            .await
            .map_err(refused("statuses: read"))?;
        checks.extend(combined.statuses.into_iter().map(|s| {
            let state = match s.state.as_str() {
                "success" => CheckState::Passed,
                "pending" => CheckState::Pending,
                _ => CheckState::Failed,
            };
            Check {
                name: s.context,
                state,
                word: s.state,
                this_run: false,
            }
        }));
        out.tests = Some(TestsEvidence {
            forge: "GitHub".to_string(),
            sha,
            checks,
        });
    }
    Ok(Some(out))
}

/// The pull request that brought `sha`: the merged one whose merge commit it is, else a
/// merged one that contains it, else an open one whose head it is.
fn bringing_pull(pulls: Vec<PullOfCommit>, sha: &str) -> Option<PullOfCommit> {
    let merged_as = |p: &PullOfCommit| {
        p.merged_at.is_some()
            && p.merge_commit_sha
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(sha))
    };
    let mut pulls = pulls;
    if let Some(i) = pulls.iter().position(merged_as) {
        return Some(pulls.swap_remove(i));
    }
    if let Some(i) = pulls.iter().position(|p| p.merged_at.is_some()) {
        return Some(pulls.swap_remove(i));
    }
    let open_at = |p: &PullOfCommit| {
        p.state == "open"
            && p.head
                .as_ref()
                .is_some_and(|h| h.sha.eq_ignore_ascii_case(sha))
    };
    pulls.iter().position(open_at).map(|i| pulls.swap_remove(i))
}

/// A check run's state: `completed` runs by their conclusion (`neutral` and `skipped` pass,
/// as GitHub counts them for a required check), the others pending.
fn check_run_state(status: &str, conclusion: Option<&str>) -> (CheckState, String) {
    if status != "completed" {
        return (CheckState::Pending, status.to_string());
    }
    match conclusion {
        Some(c @ ("success" | "neutral" | "skipped")) => (CheckState::Passed, c.to_string()),
        Some(c) => (CheckState::Failed, c.to_string()),
        None => (
            CheckState::Pending,
            "completed without a conclusion".to_string(),
        ),
    }
}
