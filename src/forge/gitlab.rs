//! GitLab: the sticky note on each merge request of the change, and a commit status.
//! Through our [`HttpClient`] (retries, `Retry-After`, proxies), with `CHANGEGATE_GITLAB_TOKEN`
//! (a personal, project or group access token with the `api` scope: the job token may
//! neither write notes nor post statuses).

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use chrono::{DateTime, Utc};

use super::deployments::{Deployment, Listing};
use super::{Annotation, Done, Forge, ForgeError, api_message};
use crate::domain::ChangeFacts;
use crate::domain::evidence::{Check, CheckState, Evidence, Review, ReviewEvidence, TestsEvidence};
use crate::domain::imported::ForgeStatus;
use crate::http::{HttpClient, HttpError};
use crate::pipeline::PlatformFiles;

/// The most pages read from one listing (100 items each).
const MAX_PAGES: u32 = 50;

struct GitLab<'f> {
    http: &'f HttpClient,
    api: String,
    token: SecretString,
    /// The URL-encoded project path, as `:id`.
    project: String,
    /// The token's own user id, looked up when first needed.
    me: Option<u64>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    system: bool,
    author: Option<User>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    #[serde(default)]
    state: String,
}

fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// An error in one line: GitLab's own message, with a hint when the token was refused.
fn describe(e: &HttpError) -> String {
    match e {
        HttpError::Status {
            status,
            method,
            path,
            body,
            ..
        } => {
            let hint = match status.as_u16() {
                401 => " (is CHANGEGATE_GITLAB_TOKEN valid?)",
                403 | 404 => " (the token needs the `api` scope and at least the Developer role)",
                _ => "",
            };
            format!(
                "GitLab answered {status} to {method} {path}: {}{hint}",
                api_message(body)
            )
        }
        other => other.to_string(),
    }
}

/// Annotates the change on GitLab: notes on its merge request(s), then the commit status.
pub(crate) async fn annotate(forge: &Forge<'_>, a: &Annotation, facts: &ChangeFacts) -> Done {
    let settings = forge.settings();
    let Some(token) = settings.forge.gitlab_token.clone() else {
        return Done::Skipped("no GitLab token (CHANGEGATE_GITLAB_TOKEN)".to_string());
    };
    let Some(api) = settings.forge.gitlab_api_url.clone() else {
        return Done::Skipped("CI_API_V4_URL is not set".to_string());
    };
    let Some(project) = facts.repository.as_deref() else {
        return Done::Skipped("CI_PROJECT_PATH is not set".to_string());
    };
    let http = match forge.gitlab_http() {
        Ok(h) => h,
        Err(e) => {
            return Done::Annotated {
                problems: vec![e.to_string()],
            };
        }
    };
    let mut gl = GitLab {
        http,
        api,
        token,
        project: enc(project),
        me: None,
    };
    let mut problems = Vec::new();
    let requests = match &facts.pull_request {
        Some(mr) => Ok(vec![mr.number]),
        None => gl.merge_requests_of_commit(&facts.commit_sha).await,
    };
    match requests {
        Ok(iids) => {
            for iid in iids {
                if let Err(e) = gl.upsert_note(iid, a).await {
                    problems.push(format!("note on merge request !{iid}: {}", describe(&e)));
                }
            }
        }
        Err(e) => problems.push(format!(
            "cannot list the merge requests of commit {}: {}",
            facts.commit_sha,
            describe(&e)
        )),
    }
    if let Err(e) = gl.commit_status(&facts.commit_sha, a).await {
        problems.push(format!(
            "commit status `{}`: {}",
            a.status_context,
            describe(&e)
        ));
    }
    Done::Annotated { problems }
}

/// One file of a merge request's diffs or of a comparison.
#[derive(Deserialize)]
struct FileDiff {
    #[serde(default)]
    old_path: String,
    #[serde(default)]
    new_path: String,
    #[serde(default)]
    diff: String,
    #[serde(default)]
    too_large: bool,
    #[serde(default)]
    collapsed: bool,
}

#[derive(Deserialize)]
struct Comparison {
    #[serde(default)]
    diffs: Vec<FileDiff>,
    #[serde(default)]
    compare_timeout: bool,
}

/// Lines added and removed in one file's unified diff (GitLab's `diff` has no `---`/`+++`
/// header: every `+`/`-` line is content). Saturates.
pub(crate) fn diff_lines(diff: &str) -> u64 {
    diff.lines()
        .filter(|l| l.starts_with('+') || l.starts_with('-'))
        .fold(0u64, |n, _| n.saturating_add(1))
}

/// The files and line counts of the change as GitLab knows them: the comparison of its
/// commit range (GitLab gives no counts: they are counted from the diff text). `Ok(None)`:
/// nothing to ask with (no token, no project, no range).
pub(crate) async fn change_files(
    forge: &Forge<'_>,
    facts: &ChangeFacts,
) -> Result<Option<PlatformFiles>, ForgeError> {
    let Some(gl) = GitLab::of_facts(forge, facts).map_err(ForgeError::Http)? else {
        return Ok(None);
    };
    // Keyed to the commit gated (a merge request pipeline's diff base and commit), never the
    // merge request's diffs, which describe its latest push.
    let Some((base, head)) = &facts.range else {
        return Ok(None);
    };
    let path = format!(
        "{}/repository/compare?from={}&to={}&straight=true",
        gl.project_path(),
        enc(base),
        enc(head)
    );
    let c: Comparison =
        gl.json(Method::GET, &path, None)
            .await
            .map_err(|source| ForgeError::GitLab {
                message: describe(&source),
                source,
            })?;
    let (diffs, mut complete) = (c.diffs, !c.compare_timeout);
    let mut lines = 0u64;
    let mut counted = complete;
    let mut paths = Vec::new();
    for d in diffs {
        // An empty diff may be one GitLab left out for its size: its lines are not known.
        if d.diff.is_empty() || d.too_large || d.collapsed {
            counted = false;
        }
        lines = lines.saturating_add(diff_lines(&d.diff));
        if !d.old_path.is_empty() && d.old_path != d.new_path {
            paths.push(d.old_path);
        }
        if d.new_path.is_empty() {
            complete = false;
        } else {
            paths.push(d.new_path);
        }
    }
    Ok(Some(PlatformFiles {
        paths,
        lines: counted.then_some(lines),
        complete,
    }))
}

#[derive(Deserialize)]
struct ApiEnvironment {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct ApiDeployment {
    id: u64,
    sha: String,
    #[serde(default)]
    status: String,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    environment: Option<ApiEnvironment>,
}

/// The deployment history of one project on GitLab (`history import`): one listing, each
/// deployment with its status (its last change is `updated_at`).
pub(crate) struct History<'f> {
    gl: GitLab<'f>,
}

impl<'f> History<'f> {
    /// The run's client for `project` (its path), with `CHANGEGATE_GITLAB_TOKEN` and
    /// `CI_API_V4_URL`.
    pub(crate) fn connect(forge: &'f Forge<'_>, project: &str) -> anyhow::Result<History<'f>> {
        let settings = forge.settings();
        let token = settings.forge.gitlab_token.clone().ok_or_else(|| {
            anyhow::anyhow!("no GitLab token to read the deployments of {project} with: set CHANGEGATE_GITLAB_TOKEN (read_api scope)")
        })?;
        let api = settings.forge.gitlab_api_url.clone().ok_or_else(|| {
            anyhow::anyhow!("no GitLab API URL: set CI_API_V4_URL (e.g. https://gitlab.com/api/v4)")
        })?;
        Ok(History {
            gl: GitLab {
                http: forge.gitlab_http()?,
                api,
                token,
                project: enc(project),
                me: None,
            },
        })
    }

    /// The deployments to `environment`, last updated first, 100 a page, while
    /// `x-next-page` names a page and at most `max_pages`; with `since`, only those updated
    /// since (a deployment started later was updated later too). Sorted by `updated_at`
    /// because GitLab (16.0 on) refuses `updated_after` with any other order ("`updated_at`
    /// filter requires `updated_at` sort"). Each page adds one to `requests`.
    pub(crate) async fn deployments(
        &self,
        environment: &str,
        since: Option<DateTime<Utc>>,
        max_pages: u32,
        requests: &mut u32,
    ) -> Result<Listing, ForgeError> {
        let mut path = format!(
            "{}/deployments?environment={}&order_by=updated_at&sort=desc",
            self.gl.project_path(),
            enc(environment)
        );
        if let Some(since) = since {
            path.push_str(&format!(
                "&updated_after={}",
                enc(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            ));
        }
        let mut listing = Listing::default();
        let mut page = 1;
        loop {
            let paged = format!("{path}&per_page=100&page={page}");
            *requests += 1;
            let fail = |source: HttpError| ForgeError::GitLab {
                message: describe(&source),
                source,
            };
            let response = self
                .gl
                .send(Method::GET, &paged, None)
                .await
                .map_err(fail)?;
            let status = response.status();
            let next = response
                .headers()
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            let text = response.text().await.unwrap_or_default();
            let batch: Vec<ApiDeployment> = serde_json::from_str(&text).map_err(|e| {
                fail(HttpError::Status {
                    service: "GitLab",
                    method: Method::GET,
                    path: paged.clone(),
                    status,
                    body: format!("unexpected answer: {e}"),
                })
            })?;
            listing.deployments.extend(batch.into_iter().map(|d| {
                let at = d.updated_at.unwrap_or(d.created_at);
                Deployment {
                    id: d.id,
                    sha: d.sha,
                    environment: d.environment.map(|e| e.name).unwrap_or_default(),
                    created_at: d.created_at,
                    statuses: Some(vec![ForgeStatus {
                        state: d.status,
                        at,
                    }]),
                }
            }));
            match next {
                Some(n) if n > page && page < max_pages => page = n,
                Some(n) if n > page => {
                    listing.cut_short = true;
                    return Ok(listing);
                }
                _ => return Ok(listing),
            }
        }
    }
}

/// Read access to one project's planning listings (milestones, iterations, issues, merge
/// requests, branches) for [`crate::work`]: a GET below `/projects/:id`, every page while
/// `x-next-page` names one, as JSON values the caller decodes.
pub(crate) struct Reader<'f> {
    gl: GitLab<'f>,
}

impl<'f> Reader<'f> {
    /// The run's client for `project` (its path), with `CHANGEGATE_GITLAB_TOKEN` and
    /// `CI_API_V4_URL`.
    pub(crate) fn connect(forge: &'f Forge<'_>, project: &str) -> anyhow::Result<Reader<'f>> {
        let History { gl } = History::connect(forge, project)?;
        Ok(Reader { gl })
    }

    /// One write below the project (`POST /issues`, `PUT /issues/:iid`): GitLab's answer.
    pub(crate) async fn write(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ForgeError> {
        let full = format!("{}{path}", self.gl.project_path());
        self.gl
            .json(method, &full, Some(body))
            .await
            .map_err(|source| ForgeError::GitLab {
                message: describe(&source),
                source,
            })
    }

    /// Every item of the listing at `path` (below the project, with its query).
    pub(crate) async fn all(&self, path: &str) -> Result<Vec<serde_json::Value>, ForgeError> {
        let full = format!("{}{path}", self.gl.project_path());
        self.gl
            .all(&full)
            .await
            .map_err(|source| ForgeError::GitLab {
                message: describe(&source),
                source,
            })
    }
}

impl<'f> GitLab<'f> {
    /// A client for the facts' project; `Ok(None)` when there is nothing to ask with (no
    /// token, no API URL, no project).
    fn of_facts(forge: &'f Forge<'_>, facts: &ChangeFacts) -> Result<Option<Self>, HttpError> {
        let settings = forge.settings();
        let (Some(token), Some(api), Some(project)) = (
            settings.forge.gitlab_token.clone(),
            settings.forge.gitlab_api_url.clone(),
            facts.repository.as_deref(),
        ) else {
            return Ok(None);
        };
        Ok(Some(GitLab {
            http: forge.gitlab_http()?,
            api,
            token,
            project: enc(project),
            me: None,
        }))
    }
}

impl GitLab<'_> {
    fn request(&self, client: &reqwest::Client, method: Method, path: &str) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Ok(mut value) = HeaderValue::from_str(self.token.expose_secret()) {
            value.set_sensitive(true);
            headers.insert("PRIVATE-TOKEN", value);
        }
        client
            .request(method, format!("{}{path}", self.api))
            .headers(headers)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, HttpError> {
        self.http
            .send(|c| {
                let r = self.request(c, method.clone(), path);
                match body {
                    Some(b) => r.json(b),
                    None => r,
                }
            })
            .await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, HttpError> {
        let response = self.send(method.clone(), path, body).await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| HttpError::Status {
            service: "GitLab",
            method,
            path: path.to_string(),
            status,
            body: format!("unexpected answer: {e}"),
        })
    }

    /// Every item of a listing, page after page while `x-next-page` names one.
    async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, HttpError> {
        let mut items = Vec::new();
        let mut page = 1;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let paged = format!("{path}{sep}per_page=100&page={page}");
            let response = self.send(Method::GET, &paged, None).await?;
            let status = response.status();
            let next = response
                .headers()
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            let text = response.text().await.unwrap_or_default();
            let batch: Vec<T> = serde_json::from_str(&text).map_err(|e| HttpError::Status {
                service: "GitLab",
                method: Method::GET,
                path: paged.clone(),
                status,
                body: format!("unexpected answer: {e}"),
            })?;
            items.extend(batch);
            match next {
                Some(n) if n > page && n <= MAX_PAGES => page = n,
                _ => return Ok(items),
            }
        }
    }

    fn project_path(&self) -> String {
        format!("/projects/{}", self.project)
    }

    /// The open or merged merge requests that contain the commit (a branch pipeline).
    async fn merge_requests_of_commit(&self, sha: &str) -> Result<Vec<u64>, HttpError> {
        let mrs: Vec<MergeRequest> = self
            .all(&format!(
                "{}/repository/commits/{}/merge_requests",
                self.project_path(),
                enc(sha)
            ))
            .await?;
        Ok(mrs
            .into_iter()
            .filter(|m| m.state == "opened" || m.state == "merged")
            .map(|m| m.iid)
            .collect())
    }

    async fn me(&mut self) -> Result<u64, HttpError> {
        if let Some(id) = self.me {
            return Ok(id);
        }
        let me: User = self.json(Method::GET, "/user", None).await?;
        self.me = Some(me.id);
        Ok(me.id)
    }

    /// Updates our marked note in place, or creates it. Only notes written by the token's
    /// own user count: a note someone else wrote with our marker in it is left alone.
    async fn upsert_note(&mut self, iid: u64, a: &Annotation) -> Result<(), HttpError> {
        let notes_path = format!("{}/merge_requests/{iid}/notes", self.project_path());
        let notes: Vec<Note> = self
            .all(&format!("{notes_path}?sort=asc&order_by=created_at"))
            .await?;
        let marked: Vec<Note> = notes
            .into_iter()
            .filter(|n| !n.system && n.body.contains(&a.marker))
            .collect();
        let mut ours = None;
        if !marked.is_empty() {
            let me = self.me().await?;
            ours = marked
                .into_iter()
                .find(|n| n.author.as_ref().is_some_and(|u| u.id == me));
        }
        let body = json!({ "body": a.comment });
        match ours {
            Some(note) if note.body == a.comment => Ok(()),
            Some(note) => {
                self.send(
                    Method::PUT,
                    &format!("{notes_path}/{}", note.id),
                    Some(&body),
                )
                .await?;
                Ok(())
            }
            None => {
                self.send(Method::POST, &notes_path, Some(&body)).await?;
                Ok(())
            }
        }
    }

    /// The commit status `changegate/<environment>`. GitLab refuses to "move" a status to
    /// the state it already has; that is not a failure.
    async fn commit_status(&self, sha: &str, a: &Annotation) -> Result<(), HttpError> {
        let mut body = json!({
            "state": a.standing.gitlab_state(),
            "name": a.status_context,
            "description": a.description,
        });
        if let Some(url) = &a.details_url {
            body["target_url"] = json!(url);
        }
        match self
            .send(
                Method::POST,
                &format!("{}/statuses/{}", self.project_path(), enc(sha)),
                Some(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(HttpError::Status { status, body, .. })
                if status.as_u16() == 400 && body.contains("Cannot transition status") =>
            {
                tracing::debug!(
                    "commit status already {}: {}",
                    a.standing.gitlab_state(),
                    api_message(&body)
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deployment approvals, for `changegate serve`: the blocked deployments of a project, one
// deployment, and the bot user's approval or rejection.

/// A project, as a server needs it to read its config and key its changes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Project {
    pub id: u64,
    pub path_with_namespace: String,
    pub default_branch: Option<String>,
    pub web_url: Option<String>,
}

/// A deployment (`GET /projects/:id/deployments`), the part a server reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct BlockedDeployment {
    pub id: u64,
    pub sha: String,
    #[serde(rename = "ref", default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub status: String,
    pub environment: DeploymentEnvironment,
    #[serde(default)]
    pub user: Option<DeploymentUser>,
    #[serde(default)]
    pub deployable: Option<Deployable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DeploymentEnvironment {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DeploymentUser {
    pub username: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Deployable {
    #[serde(default)]
    pub pipeline: Option<Pipeline>,
    /// The deployed commit, as the deploy job's `CI_COMMIT_*` variables name it.
    #[serde(default)]
    pub commit: Option<DeployedCommit>,
}

/// The deployed commit of a deployment's job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct DeployedCommit {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub author_name: Option<String>,
    #[serde(default)]
    pub author_email: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Pipeline {
    pub web_url: Option<String>,
}

/// A GitLab API error in one line, the token never in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApprovalsError(String);

/// GitLab's deployments API with the server's bot token (`CHANGEGATE_GITLAB_TOKEN`).
pub struct Approvals<'h> {
    http: &'h HttpClient,
    api: String,
    token: SecretString,
}

impl<'h> Approvals<'h> {
    /// `api` is the API root (`<url>/api/v4`, no trailing `/`).
    pub fn new(http: &'h HttpClient, api: &str, token: SecretString) -> Approvals<'h> {
        Approvals {
            http,
            api: api.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn on(&self, project: &str) -> GitLab<'h> {
        GitLab {
            http: self.http,
            api: self.api.clone(),
            token: self.token.clone(),
            project: enc(project),
            me: None,
        }
    }

    /// The bot user: the token is taken.
    pub async fn me(&self) -> Result<(), ApprovalsError> {
        let gl = self.on("");
        gl.json::<User>(Method::GET, "/user", None)
            .await
            .map(|_| ())
            .map_err(|e| ApprovalsError(describe(&e)))
    }

    /// The project by id or path.
    pub async fn project(&self, project: &str) -> Result<Project, ApprovalsError> {
        let gl = self.on(project);
        gl.json(Method::GET, &gl.project_path(), None)
            .await
            .map_err(|e| ApprovalsError(describe(&e)))
    }

    /// The project's deployments waiting for approval (`status=blocked`), every page.
    pub async fn blocked(&self, project: u64) -> Result<Vec<BlockedDeployment>, ApprovalsError> {
        let gl = self.on(&project.to_string());
        gl.all(&format!("{}/deployments?status=blocked", gl.project_path()))
            .await
            .map_err(|e| ApprovalsError(describe(&e)))
    }

    /// One deployment.
    pub async fn deployment(
        &self,
        project: u64,
        deployment: u64,
    ) -> Result<BlockedDeployment, ApprovalsError> {
        let gl = self.on(&project.to_string());
        gl.json(
            Method::GET,
            &format!("{}/deployments/{deployment}", gl.project_path()),
            None,
        )
        .await
        .map_err(|e| ApprovalsError(describe(&e)))
    }

    /// Approves or rejects the deployment as the bot user, with `comment`.
    pub async fn answer(
        &self,
        project: u64,
        deployment: u64,
        approved: bool,
        comment: &str,
    ) -> Result<(), ApprovalsError> {
        let gl = self.on(&project.to_string());
        let body = json!({
            "status": if approved { "approved" } else { "rejected" },
            "comment": comment,
        });
        gl.send(
            Method::POST,
            &format!("{}/deployments/{deployment}/approval", gl.project_path()),
            Some(&body),
        )
        .await
        .map(|_| ())
        .map_err(|e| ApprovalsError(describe(&e)))
    }
}

/// A merge request of a commit, as `GET /repository/commits/:sha/merge_requests` lists it.
#[derive(Deserialize)]
struct MergeRequestOfCommit {
    iid: u64,
    #[serde(default)]
    state: String,
    author: Option<Username>,
    /// The request's head.
    sha: Option<String>,
    merge_commit_sha: Option<String>,
    squash_commit_sha: Option<String>,
}

#[derive(Deserialize)]
struct Username {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct MergeRequestApprovals {
    #[serde(default)]
    approved_by: Vec<Approver>,
}

#[derive(Deserialize)]
struct Approver {
    user: Option<Username>,
}

#[derive(Deserialize)]
struct CommitStatus {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    target_url: Option<String>,
    #[serde(default)]
    allow_failure: bool,
}

/// The review and test evidence of the change as GitLab knows it: the merge request that
/// brought the commit (`GET /repository/commits/:sha/merge_requests`; in a merge request
/// pipeline, that request), its approvals, and the commit's statuses (its pipelines' jobs
/// and external statuses). `Ok(None)`: nothing to ask with (no token, no API, no project).
/// A failed call is an error: evidence that cannot be read fails closed.
pub(crate) async fn evidence(
    forge: &Forge<'_>,
    facts: &ChangeFacts,
    want_review: bool,
    want_tests: bool,
) -> Result<Option<Evidence>, ForgeError> {
    let Some(gl) = GitLab::of_facts(forge, facts).map_err(ForgeError::Http)? else {
        return Ok(None);
    };
    let failed = |source: HttpError| ForgeError::GitLab {
        message: describe(&source),
        source,
    };
    let mut out = Evidence::default();
    if want_review {
        let listed: Vec<MergeRequestOfCommit> = gl
            .all(&format!(
                "{}/repository/commits/{}/merge_requests",
                gl.project_path(),
                enc(&facts.commit_sha)
            ))
            .await
            .map_err(failed)?;
        let wanted = facts.pull_request.as_ref().map(|mr| mr.number);
        let mr = bringing_request(listed, &facts.commit_sha, wanted);
        let mut reviews = Vec::new();
        if let Some(mr) = &mr {
            let approvals: MergeRequestApprovals = gl
                .json(
                    Method::GET,
                    &format!("{}/merge_requests/{}/approvals", gl.project_path(), mr.iid),
                    None,
                )
                .await
                .map_err(failed)?;
            reviews = approvals
                .approved_by
                .into_iter()
                .filter_map(|a| a.user)
                .filter(|u| !u.username.is_empty())
                .map(|u| Review {
                    login: u.username,
                    state: "APPROVED".to_string(),
                    commit: None,
                })
                .collect();
        }
        out.review = Some(ReviewEvidence {
            forge: "GitLab".to_string(),
            number: mr.as_ref().map(|m| m.iid),
            author: mr
                .as_ref()
                .and_then(|m| m.author.as_ref())
                .map(|a| a.username.clone())
                .filter(|a| !a.is_empty()),
            head: mr.and_then(|m| m.sha),
            per_commit: false,
            reviews,
        });
    }
    if want_tests {
        let statuses: Vec<CommitStatus> = gl
            .all(&format!(
                "{}/repository/commits/{}/statuses",
                gl.project_path(),
                enc(&facts.commit_sha)
            ))
            .await
            .map_err(failed)?;
        let job = crate::env::Vars::get(&forge.settings().env, crate::env::CI_JOB_URL);
        let checks = statuses
            .into_iter()
            .map(|s| {
                let state = match s.status.as_str() {
                    "success" => CheckState::Passed,
                    // GitLab passes a pipeline whose allowed-to-fail job failed.
                    "failed" if s.allow_failure => CheckState::Passed,
                    "failed" | "canceled" => CheckState::Failed,
                    // Later stages and manual jobs of a pipeline have not started.
                    "created" | "manual" | "scheduled" | "skipped" => CheckState::NotStarted,
                    _ => CheckState::Pending,
                };
                let word = if s.status == "failed" && s.allow_failure {
                    "failed, allowed to fail".to_string()
                } else {
                    s.status
                };
                Check {
                    this_run: job.is_some() && s.target_url == job,
                    name: s.name,
                    state,
                    word,
                }
            })
            .collect();
        out.tests = Some(TestsEvidence {
            forge: "GitLab".to_string(),
            sha: facts.commit_sha.clone(),
            checks,
        });
    }
    Ok(Some(out))
}

/// The merge request that brought `sha`: the one the pipeline names, else the merged one
/// whose merge or squash commit it is, else a merged one that contains it, else an open
/// one whose head it is.
fn bringing_request(
    listed: Vec<MergeRequestOfCommit>,
    sha: &str,
    wanted: Option<u64>,
) -> Option<MergeRequestOfCommit> {
    let mut listed = listed;
    let is = |s: &Option<String>| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sha));
    let pick: [&dyn Fn(&MergeRequestOfCommit) -> bool; 4] = [
        &|m| wanted == Some(m.iid),
        &|m| {
            wanted.is_none()
                && m.state == "merged"
                && (is(&m.merge_commit_sha) || is(&m.squash_commit_sha))
        },
        &|m| wanted.is_none() && m.state == "merged",
        &|m| wanted.is_none() && m.state == "opened" && is(&m.sha),
    ];
    for p in pick {
        if let Some(i) = listed.iter().position(p) {
            return Some(listed.swap_remove(i));
        }
    }
    None
}
