//! The config that governs a pipeline whose gated ref is not the default branch — a
//! pull/merge request, a merge queue, a tag, a push to another branch: the default branch's
//! copy, never the ref's own, so a change cannot loosen its own gate. It is read from git
//! after one fetch of the default branch (a ref already in the checkout may be stale), else
//! from the forge's API. Only an answer that means "no such file on that branch" gives the
//! defaults; anything else that keeps the file unread stops the run (exit 2).

use std::path::{Component, Path, PathBuf};

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::git::{self, FileAtRev};
use crate::domain::Platform;
use crate::env::{self, Vars};
use crate::http::{self, Budget, HttpClient, HttpError};
use crate::settings::DEFAULT_CONFIG;

/// The default branch's config, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Governing {
    /// The text, and where it came from (for error messages).
    Found { label: String, text: String },
    /// The default branch has no such file: defaults govern.
    Missing { label: String },
}

/// Why the config governing a pipeline could not be read. Each one fails the run closed:
/// the gated ref's own copy is never the fallback.
#[derive(Debug, thiserror::Error)]
pub enum PrConfigError {
    #[error(
        "this is a {forge} {kind} pipeline, but its default branch is unknown ({detail}), so the \
         config that governs it cannot be read; only the default branch's own pipelines read \
         the checkout's copy"
    )]
    NoDefaultBranch {
        forge: &'static str,
        kind: String,
        detail: String,
    },
    #[error(
        "the default branch name {0:?} is not a valid git branch name, so the config that \
         governs this pipeline cannot be read"
    )]
    BadBranchName(String),
    #[error(
        "the config file {path} cannot be mapped to a file of the repository ({why}), so its \
         copy on the default branch cannot be read; in a {kind} pipeline the work tree's copy \
         never governs. Fix: name a file inside the repository, or run changegate inside the \
         git checkout"
    )]
    Unmappable {
        path: String,
        kind: String,
        why: String,
    },
    #[error(
        "cannot read {file} from the default branch `{branch}`: {reason}. A pipeline's own \
         copy governs only on the default branch itself, so the run stops. Fix: {fix}"
    )]
    Unreadable {
        file: String,
        branch: String,
        reason: String,
        fix: String,
    },
}

/// Which forge runs the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forge {
    GitHub,
    GitLab,
}

/// A pipeline whose gated ref is not the default branch, and the default branch whose
/// config governs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Governed {
    forge: Forge,
    /// What the pipeline gates, for messages: "pull request", "tag `v1`"...
    kind: String,
    branch: String,
}

/// The pipeline this run is in, when its config must come from the default branch: every
/// CI pipeline except one of the default branch itself. Local runs outside CI read the file
/// as given. A ref that cannot be told to be the default branch counts as another ref. The
/// default branch must be known and a valid branch name (it comes from the payload or the
/// environment, so it is untrusted): otherwise the run cannot know its governing config.
fn governed_pipeline(vars: &dyn Vars) -> Result<Option<Governed>, PrConfigError> {
    let platform = env::platform(vars);
    let (forge, kind, branch) = if platform == Platform::Github {
        let event = vars.get(env::GITHUB_EVENT_NAME).unwrap_or_default();
        // Scheduled runs are always of the default branch, and their payload names none.
        if event == "schedule" {
            return Ok(None);
        }
        let gated = vars.get(env::GITHUB_REF);
        let kind = if event.starts_with("pull_request") {
            "pull request".to_string()
        } else if event == "merge_group" {
            "merge queue".to_string()
        } else {
            match &gated {
                Some(r) => format!("`{event}` on {r}"),
                None => format!("`{event}` (no {} set)", env::GITHUB_REF),
            }
        };
        let branch = github_default_branch(vars, &kind)?;
        let on_default = gated.is_some_and(|r| r == format!("refs/heads/{branch}"));
        if on_default && !event.starts_with("pull_request") && event != "merge_group" {
            return Ok(None);
        }
        (Forge::GitHub, kind, branch)
    } else if platform == Platform::Gitlab {
        let mr = vars.get(env::CI_MERGE_REQUEST_IID).is_some();
        let tag = vars.get(env::CI_COMMIT_TAG);
        let commit_branch = vars.get(env::CI_COMMIT_BRANCH);
        let kind = match (&tag, &commit_branch) {
            _ if mr => "merge request".to_string(),
            (Some(t), _) => format!("tag `{t}`"),
            (None, Some(b)) => format!("branch `{b}`"),
            (None, None) => format!(
                "ref neither branch nor tag (no {} nor {} set)",
                env::CI_COMMIT_BRANCH,
                env::CI_COMMIT_TAG
            ),
        };
        let branch =
            vars.get(env::CI_DEFAULT_BRANCH)
                .ok_or_else(|| PrConfigError::NoDefaultBranch {
                    forge: "GitLab",
                    kind: kind.clone(),
                    detail: format!("{} is not set", env::CI_DEFAULT_BRANCH),
                })?;
        if !mr && tag.is_none() && commit_branch.as_deref() == Some(branch.as_str()) {
            return Ok(None);
        }
        (Forge::GitLab, kind, branch)
    } else {
        return Ok(None);
    };
    if !git::valid_branch_name(&branch) {
        return Err(PrConfigError::BadBranchName(branch));
    }
    Ok(Some(Governed {
        forge,
        kind,
        branch,
    }))
}

/// `repository.default_branch` of the event payload. A pull request's base branch is no
/// stand-in: it may be any branch the author can target.
fn github_default_branch(vars: &dyn Vars, kind: &str) -> Result<String, PrConfigError> {
    #[derive(serde::Deserialize)]
    struct Event {
        repository: Option<Repo>,
    }
    #[derive(serde::Deserialize)]
    struct Repo {
        default_branch: Option<String>,
    }
    let unknown = |detail: String| PrConfigError::NoDefaultBranch {
        forge: "GitHub",
        kind: kind.to_string(),
        detail,
    };
    let payload = vars
        .event_payload()
        .ok_or_else(|| unknown(format!("{} is not set", env::GITHUB_EVENT_PATH)))?;
    let path = &payload.path;
    let text = payload
        .text
        .map_err(|e| unknown(format!("the event payload {path} cannot be read: {e}")))?;
    let event: Event = serde_json::from_str(&text)
        .map_err(|e| unknown(format!("the event payload {path} is not valid JSON: {e}")))?;
    event
        .repository
        .and_then(|r| r.default_branch)
        .filter(|b| !b.trim().is_empty())
        .ok_or_else(|| {
            unknown(format!(
                "the event payload {path} has no repository.default_branch"
            ))
        })
}

/// The git checkout around a directory, found in-process (no child process): the nearest
/// ancestor holding a `.git` entry, as git itself looks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checkout {
    top: PathBuf,
    shallow: bool,
}

fn find_checkout(dir: &Path) -> Option<Checkout> {
    let top = dir
        .ancestors()
        .find(|d| std::fs::symlink_metadata(d.join(".git")).is_ok())?;
    Some(Checkout {
        top: top.to_path_buf(),
        shallow: is_shallow(&top.join(".git")),
    })
}

/// Whether the repository is a shallow clone. A `.git` file (a linked worktree or a
/// submodule) points to the git directory, whose `commondir` holds the shared state. When
/// this cannot be told, shallow: a fetch with `--depth=1` is the one that cannot get long.
fn is_shallow(dot_git: &Path) -> bool {
    let git_dir = if dot_git.is_dir() {
        dot_git.to_path_buf()
    } else {
        let Some(target) = std::fs::read_to_string(dot_git)
            .ok()
            .and_then(|t| t.strip_prefix("gitdir:").map(|p| p.trim().to_string()))
        else {
            return true;
        };
        dot_git
            .parent()
            .map_or_else(|| PathBuf::from(&target), |p| p.join(&target))
    };
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir,
    };
    if !common.is_dir() {
        return true;
    }
    common.join("shallow").exists()
}

/// Why a config path names no file of the repository (the words complete "cannot be mapped
/// to a file of the repository (…)").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotARepoFile {
    #[error("it climbs above the file system's root")]
    AboveRoot,
    #[error("its name is not UTF-8, which the forge cannot be asked for")]
    NotUtf8,
    #[error("it is not a plain path")]
    NotPlain,
    #[error("it is the repository's top directory, not a file")]
    TopDirectory,
}

/// `path` (relative to `cwd`, or absolute) as a path from the repository's top level `top`;
/// `Ok(None)` for a file outside the repository (one the runner provides, which the change
/// cannot edit). `cwd` and `top` are canonical.
fn repo_path(top: &Path, cwd: &Path, path: &Path) -> Result<Option<String>, NotARepoFile> {
    let joined = cwd.join(path);
    let mut normal = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(NotARepoFile::AboveRoot);
                }
            }
            Component::CurDir => {}
            other => normal.push(other.as_os_str()),
        }
    }
    let inside = match normal.strip_prefix(top) {
        Ok(rel) => rel.to_path_buf(),
        // The same place under another name (a symlinked parent directory)?
        Err(_) => match canonical_anyway(&normal)
            .and_then(|c| c.strip_prefix(top).ok().map(Path::to_path_buf))
        {
            Some(rel) => rel,
            None => return Ok(None),
        },
    };
    let mut parts = Vec::new();
    for component in inside.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or(NotARepoFile::NotUtf8)?),
            _ => return Err(NotARepoFile::NotPlain),
        }
    }
    if parts.is_empty() {
        return Err(NotARepoFile::TopDirectory);
    }
    Ok(Some(parts.join("/")))
}

/// `path` canonicalised, or its existing parent canonicalised with the file name added.
fn canonical_anyway(path: &Path) -> Option<PathBuf> {
    path.canonicalize().ok().or_else(|| {
        let parent = path.parent()?.canonicalize().ok()?;
        Some(parent.join(path.file_name()?))
    })
}

/// The CI job's checkout directory, where no `.git` can be found (a checkout without git
/// metadata): the path is still relative to it.
fn ci_workspace(vars: &dyn Vars) -> Option<PathBuf> {
    [env::GITHUB_WORKSPACE, env::CI_PROJECT_DIR]
        .into_iter()
        .find_map(|name| vars.get(name))
        .and_then(|w| Path::new(&w).canonicalize().ok())
}

/// Reads the config file as the default branch has it, in a pipeline whose gated ref is not
/// the default branch; `Ok(None)` in any other run, and for an explicit file outside the
/// repository. The file is `explicit`, else `.changegate.toml` in `workdir` — as outside
/// such pipelines — either one taken relative to the repository's top level, so a run from
/// `svc/` reads the default branch's `svc/.changegate.toml`.
///
/// API calls are charged to `budget`. The settings are not known yet, so plain http to
/// another machine is always refused here (`[http] allow_insecure_http` lives in the very
/// file being read).
pub async fn fetch(
    vars: &dyn Vars,
    workdir: &Path,
    explicit: Option<&Path>,
    github_token: Option<&SecretString>,
    budget: &Budget,
) -> Result<Option<Governing>, PrConfigError> {
    let Some(pr) = governed_pipeline(vars)? else {
        return Ok(None);
    };
    let asked = explicit.unwrap_or(Path::new(DEFAULT_CONFIG));
    let unmappable = |why: String| PrConfigError::Unmappable {
        path: asked.display().to_string(),
        kind: pr.kind.clone(),
        why,
    };
    let cwd = workdir
        .canonicalize()
        .map_err(|e| unmappable(format!("the working directory cannot be resolved: {e}")))?;
    let checkout = find_checkout(&cwd);
    let top = match &checkout {
        Some(c) => c.top.clone(),
        None => ci_workspace(vars)
            .filter(|w| cwd.starts_with(w))
            .ok_or_else(|| {
                unmappable(format!(
                    "no git checkout around {} and it is not under {} or {}",
                    cwd.display(),
                    env::GITHUB_WORKSPACE,
                    env::CI_PROJECT_DIR
                ))
            })?,
    };
    let Some(file) = repo_path(&top, &cwd, asked).map_err(|e| unmappable(e.to_string()))? else {
        return Ok(None);
    };
    let branch = pr.branch.as_str();
    let label = format!("origin/{branch}:{file}");
    // Fully qualified: a tag or local branch named `origin/<branch>` cannot stand in for it.
    let rev = format!("refs/remotes/origin/{branch}");
    // Always fetched first: a reused workspace keeps refs from earlier jobs, and a stale one
    // would let a config the default branch no longer holds govern.
    let (git_could_read, git_said) = match &checkout {
        None => (false, "no git checkout to read it from".to_string()),
        Some(c) => match fetch_within_budget(&cwd, branch, c.shallow, budget).await {
            Ok(()) => match git::file_at(&cwd, &rev, &file) {
                FileAtRev::Found(text) => return Ok(Some(found(label, text))),
                FileAtRev::Missing => return Ok(Some(missing(label))),
                FileAtRev::NoRevision => (
                    true,
                    format!("origin/{branch} is not in the checkout even after `git fetch`"),
                ),
                FileAtRev::NoCheckout => (false, "git cannot read the checkout".to_string()),
            },
            Err(failed) => (
                !failed.no_git,
                format!(
                    "fetching origin/{branch} failed ({failed}); a copy already in the \
                     checkout may be stale, so it is not used"
                ),
            ),
        },
    };
    let read = match pr.forge {
        Forge::GitHub => from_github(vars, branch, &file, github_token, budget).await,
        Forge::GitLab => from_gitlab(vars, branch, &file, budget).await,
    };
    match read {
        Ok(Some(text)) => Ok(Some(found(format!("{branch}:{file}"), text))),
        Ok(None) => Ok(Some(missing(format!("{branch}:{file}")))),
        Err(failed) => Err(PrConfigError::Unreadable {
            file,
            branch: branch.to_string(),
            reason: format!("{} (git: {git_said})", failed.reason),
            // Without git (the container images) fetching would not help.
            fix: if git_could_read {
                format!("{}; {}", failed.fix, fetch_fix(pr.forge, branch))
            } else {
                failed.fix
            },
        }),
    }
}

/// The repository's `.changegate.toml` as its default branch `branch` has it, read through
/// GitHub's contents API (`GITHUB_REPOSITORY`, `GITHUB_API_URL` of `vars`): what governs a
/// deployment a server is asked about, with no checkout at hand. As in a pipeline, only
/// "no such file on that branch" gives the defaults; anything else is an error.
pub async fn github_default_branch_config(
    vars: &dyn Vars,
    branch: &str,
    token: &SecretString,
    budget: &Budget,
) -> Result<Governing, PrConfigError> {
    if !git::valid_branch_name(branch) {
        return Err(PrConfigError::BadBranchName(branch.to_string()));
    }
    let file = DEFAULT_CONFIG;
    match from_github(vars, branch, file, Some(token), budget).await {
        Ok(Some(text)) => Ok(found(format!("{branch}:{file}"), text)),
        Ok(None) => Ok(missing(format!("{branch}:{file}"))),
        Err(failed) => Err(PrConfigError::Unreadable {
            file: file.to_string(),
            branch: branch.to_string(),
            reason: failed.reason,
            fix: failed.fix,
        }),
    }
}

/// The project's `.changegate.toml` as its default branch `branch` has it, read through
/// GitLab's repository files API (`CI_API_V4_URL`, `CI_PROJECT_ID` and
/// `CHANGEGATE_GITLAB_TOKEN` of `vars`): what governs a blocked deployment a server is asked
/// about. As in a pipeline, only "no such file on that branch" gives the defaults.
pub async fn gitlab_default_branch_config(
    vars: &dyn Vars,
    branch: &str,
    budget: &Budget,
) -> Result<Governing, PrConfigError> {
    if !git::valid_branch_name(branch) {
        return Err(PrConfigError::BadBranchName(branch.to_string()));
    }
    let file = DEFAULT_CONFIG;
    match from_gitlab(vars, branch, file, budget).await {
        Ok(Some(text)) => Ok(found(format!("{branch}:{file}"), text)),
        Ok(None) => Ok(missing(format!("{branch}:{file}"))),
        Err(failed) => Err(PrConfigError::Unreadable {
            file: file.to_string(),
            branch: branch.to_string(),
            reason: failed.reason,
            fix: failed.fix,
        }),
    }
}

fn found(label: String, text: String) -> Governing {
    tracing::info!("the config governing this pipeline is {label}");
    Governing::Found { label, text }
}

fn missing(label: String) -> Governing {
    tracing::info!("{label} does not exist: defaults govern this pipeline");
    Governing::Missing { label }
}

/// Why the API could not tell, and what would let it.
#[derive(Debug)]
struct Failure {
    reason: String,
    fix: String,
}

/// The other way out: let git read it, so no API call is needed. A ref already in the
/// checkout does not count (it may be stale): changegate's own fetch has to work.
fn fetch_fix(forge: Forge, branch: &str) -> String {
    match forge {
        Forge::GitHub => format!(
            "or let `git fetch origin {branch}` work in the job (actions/checkout keeps its \
             token for it unless `persist-credentials: false`)"
        ),
        Forge::GitLab => format!(
            "or, where the job has git, let `git fetch origin {branch}` work in it (the job \
             token in the remote URL reads the repository)"
        ),
    }
}

const GITHUB_TOKEN_FIX: &str = "give changegate a token that can read the repository's contents: \
     `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` (or CHANGEGATE_GITHUB_TOKEN) with \
     `permissions: contents: read`";

const GITLAB_TOKEN_FIX: &str = "set CHANGEGATE_GITLAB_TOKEN to a project, group or personal access \
     token with the `read_repository` (or `api`) scope and at least the Reporter role on this \
     project — the CI job token cannot read the repository files API";

const RETRY_FIX: &str = "run the job again once the API answers";

/// GitHub's contents API. `Ok(None)`: the branch has no such file.
///
/// The one fetch of the default branch, charged to the run's outbound budget like any call
/// to the forge: it may take what the budget has left (at most [`git::FETCH_TIMEOUT`]).
async fn fetch_within_budget(
    cwd: &Path,
    branch: &str,
    shallow: bool,
    budget: &Budget,
) -> Result<(), git::FetchFailed> {
    let meter = budget.meter();
    let Some(left) = meter.attempt_timeout() else {
        return Err(git::FetchFailed {
            no_git: false,
            reason: "the run's outbound time budget (http.deadline) is spent".to_string(),
        });
    };
    git::fetch_branch(cwd, branch, shallow, left.min(git::FETCH_TIMEOUT)).await
}

/// GitHub answers 404 both for a missing file and for a repository the token cannot see, so
/// a 404 counts as "no such file" only when the same token can read the branch itself.
async fn from_github(
    vars: &dyn Vars,
    branch: &str,
    file: &str,
    token: Option<&SecretString>,
    budget: &Budget,
) -> Result<Option<String>, Failure> {
    let Some(token) = token else {
        return Err(Failure {
            reason: "no GitHub token to ask the contents API with".into(),
            fix: GITHUB_TOKEN_FIX.into(),
        });
    };
    let Some(repo) = vars.get(env::GITHUB_REPOSITORY) else {
        return Err(Failure {
            reason: format!("{} is not set", env::GITHUB_REPOSITORY),
            fix: "run changegate in the GitHub Actions job, which sets it".into(),
        });
    };
    let api = vars
        .get(env::GITHUB_API_URL)
        .unwrap_or_else(|| "https://api.github.com".into());
    let config_error = |e: ApiUrlError| Failure {
        reason: e.to_string(),
        fix: format!("set {} to the API's base URL", env::GITHUB_API_URL),
    };
    let contents = api_url(&api, env::GITHUB_API_URL, |p| {
        p.extend(["repos"])
            .extend(repo.split('/'))
            .extend(["contents"])
            .extend(file.split('/'));
    })
    .map_err(config_error)?;
    let branch_url = api_url(&api, env::GITHUB_API_URL, |p| {
        p.extend(["repos"])
            .extend(repo.split('/'))
            .extend(["branches", branch]);
    })
    .map_err(config_error)?;
    let mut contents = contents;
    contents.query_pairs_mut().append_pair("ref", branch);
    let auth = format!("Bearer {}", token.expose_secret());
    let headers = |accept: &'static str| {
        vec![
            ("authorization", auth.clone()),
            ("accept", accept.to_string()),
            ("x-github-api-version", "2022-11-28".to_string()),
        ]
    };
    let client = client("GitHub", budget)?;
    let file_err = match get(
        &client,
        &contents,
        &headers("application/vnd.github.raw+json"),
    )
    .await
    {
        Ok(text) => return Ok(Some(text)),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => e,
        Err(e) => return Err(github_failure(&e)),
    };
    match get(
        &client,
        &branch_url,
        &headers("application/vnd.github+json"),
    )
    .await
    {
        Ok(_) => Ok(None),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Err(Failure {
            reason: format!(
                "{}, and it answers 404 for the branch too: the token cannot see this repository, \
                 or it has no branch `{branch}`",
                describe(&file_err)
            ),
            fix: GITHUB_TOKEN_FIX.into(),
        }),
        Err(e) => Err(github_failure(&e)),
    }
}

fn github_failure(e: &HttpError) -> Failure {
    let fix = match e.status() {
        Some(s) if http::retryable(s) => RETRY_FIX,
        None if matches!(e, HttpError::Transport { .. }) => RETRY_FIX,
        _ => GITHUB_TOKEN_FIX,
    };
    Failure {
        reason: describe(e),
        fix: fix.into(),
    }
}

/// GitLab's repository files API. `Ok(None)`: the branch has no such file (`404 File Not
/// Found`); `404 Project Not Found` is a token that cannot see the project.
async fn from_gitlab(
    vars: &dyn Vars,
    branch: &str,
    file: &str,
    budget: &Budget,
) -> Result<Option<String>, Failure> {
    let Some(token) = vars.get(env::GITLAB_TOKEN).map(SecretString::from) else {
        let reason = if vars.get(env::CI_JOB_TOKEN).is_some() {
            format!(
                "{} is not set, and the CI job token cannot read the repository files API",
                env::GITLAB_TOKEN
            )
        } else {
            format!("{} is not set", env::GITLAB_TOKEN)
        };
        return Err(Failure {
            reason,
            fix: GITLAB_TOKEN_FIX.into(),
        });
    };
    let (Some(api), Some(project)) = (
        vars.get(env::CI_API_V4_URL),
        vars.get(env::CI_PROJECT_ID)
            .or_else(|| vars.get(env::CI_PROJECT_PATH)),
    ) else {
        return Err(Failure {
            reason: format!(
                "{} or {} is not set",
                env::CI_API_V4_URL,
                env::CI_PROJECT_ID
            ),
            fix: "run changegate in the GitLab CI job, which sets them".into(),
        });
    };
    let mut url = api_url(&api, env::CI_API_V4_URL, |p| {
        p.extend(["projects", &project, "repository", "files", file, "raw"]);
    })
    .map_err(|e| Failure {
        reason: e.to_string(),
        fix: format!("set {} to the API's base URL", env::CI_API_V4_URL),
    })?;
    url.query_pairs_mut().append_pair("ref", branch);
    let client = client("GitLab", budget)?;
    let headers = [("private-token", token.expose_secret().to_string())];
    match get(&client, &url, &headers).await {
        Ok(text) => Ok(Some(text)),
        Err(e)
            if e.status() == Some(StatusCode::NOT_FOUND) && message(&e) == "404 File Not Found" =>
        {
            Ok(None)
        }
        Err(e) => {
            let fix = match e.status() {
                Some(s) if http::retryable(s) => RETRY_FIX,
                None if matches!(e, HttpError::Transport { .. }) => RETRY_FIX,
                _ => GITLAB_TOKEN_FIX,
            };
            Err(Failure {
                reason: describe(&e),
                fix: fix.into(),
            })
        }
    }
}

fn client(service: &'static str, budget: &Budget) -> Result<HttpClient, Failure> {
    HttpClient::new(service, budget).map_err(|e| Failure {
        reason: e.to_string(),
        fix: RETRY_FIX.into(),
    })
}

/// Why a forge API base URL cannot be used; the message names the variable it came from.
#[derive(Debug, thiserror::Error)]
enum ApiUrlError {
    /// Refused by the base-URL checks every credentialed URL passes.
    #[error(transparent)]
    Refused(#[from] http::UrlError),
    #[error("{var} is not a URL: {source}")]
    NotAUrl {
        var: String,
        #[source]
        source: url::ParseError,
    },
    #[error("{var} cannot take a path")]
    NoPath { var: String },
}

/// `base` with the path segments `extend` adds; `var` names the variable `base` came from.
fn api_url(
    base: &str,
    var: &str,
    extend: impl FnOnce(&mut url::PathSegmentsMut<'_>),
) -> Result<url::Url, ApiUrlError> {
    let creds = if var == env::CI_API_V4_URL {
        "CHANGEGATE_GITLAB_TOKEN"
    } else {
        "CHANGEGATE_GITHUB_TOKEN or GITHUB_TOKEN"
    };
    http::check_base_url(var, base, creds, false)?;
    let mut url = url::Url::parse(base).map_err(|source| ApiUrlError::NotAUrl {
        var: var.to_string(),
        source,
    })?;
    {
        let mut path = url.path_segments_mut().map_err(|()| ApiUrlError::NoPath {
            var: var.to_string(),
        })?;
        path.pop_if_empty();
        extend(&mut path);
    }
    Ok(url)
}

/// GET with retries (5xx, 429, dropped connections); the body of a success.
async fn get(
    client: &HttpClient,
    url: &url::Url,
    headers: &[(&str, String)],
) -> Result<String, HttpError> {
    let response = client
        .send(|c| {
            headers.iter().fold(c.get(url.clone()), |r, (name, value)| {
                r.header(*name, value)
            })
        })
        .await?;
    let path = url.path().to_string();
    response.text().await.map_err(|e| HttpError::Transport {
        service: client.service(),
        method: reqwest::Method::GET,
        path,
        attempts: 1,
        message: format!("reading the answer failed: {e}"),
    })
}

/// The forge's own words for an error answer: its JSON `message`, else the body, on one
/// line and short (it ends up in a log that CI systems scan for commands).
fn message(e: &HttpError) -> String {
    let body = e.body().unwrap_or_default();
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    let mut one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.len() > 300 {
        let mut cut = 300;
        while !one_line.is_char_boundary(cut) {
            cut -= 1;
        }
        one_line.truncate(cut);
        one_line.push('…');
    }
    one_line
}

/// The failed request, the status and the forge's own message.
fn describe(e: &HttpError) -> String {
    match e.status() {
        Some(status) => {
            let said = message(e);
            let retried = if http::retryable(status) {
                " (still, after retries)"
            } else {
                ""
            };
            if said.is_empty() {
                format!("{e}{retried}")
            } else {
                format!("{e}{retried}: {said}")
            }
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A remote that accepts the connection and never answers: the fetch ends with what the
    /// run's budget has left, and what it took is charged to the budget; a spent budget
    /// runs no git at all.
    #[tokio::test]
    async fn the_default_branch_fetch_is_charged_to_the_outbound_budget() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Holds the accepted connection unanswered; left to end with the test process.
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(1).collect();
            std::thread::sleep(std::time::Duration::from_secs(10));
            drop(held);
        });
        let repo = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = std::process::Command::new("git")
                .args(args)
                .current_dir(repo.path())
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        git(&[
            "remote",
            "add",
            "origin",
            &format!("http://127.0.0.1:{port}/repo.git"),
        ]);
        let budget = Budget::new(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(60),
        );
        let started = std::time::Instant::now();
        let err = fetch_within_budget(repo.path(), "main", false, &budget)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(err.reason.contains("did not finish within"), "{err}");
        assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
        assert!(
            budget.spent() >= std::time::Duration::from_millis(1900),
            "{:?}",
            budget.spent()
        );
        // Nothing left: no fetch is tried.
        let err = fetch_within_budget(repo.path(), "main", false, &budget)
            .await
            .unwrap_err();
        assert!(err.reason.contains("http.deadline"), "{err}");
    }

    fn status_error(status: u16, body: &str) -> HttpError {
        HttpError::Status {
            service: "GitLab",
            method: reqwest::Method::GET,
            path: "/api/v4/projects/1/repository/files/.changegate.toml/raw".into(),
            status: StatusCode::from_u16(status).unwrap(),
            body: body.into(),
        }
    }

    #[test]
    fn config_paths_are_taken_from_the_repository_top_level() {
        let top = Path::new("/work/repo");
        let svc = Path::new("/work/repo/svc");
        let map = |p: &str| repo_path(top, svc, Path::new(p));
        assert_eq!(
            map(".changegate.toml"),
            Ok(Some("svc/.changegate.toml".into()))
        );
        assert_eq!(
            map("../shared/gate.toml"),
            Ok(Some("shared/gate.toml".into()))
        );
        assert_eq!(map("./../svc/./x.toml"), Ok(Some("svc/x.toml".into())));
        assert_eq!(
            map("/work/repo/ci/gate.toml"),
            Ok(Some("ci/gate.toml".into()))
        );
        // Outside the repository: the runner's file, read as given.
        assert_eq!(map("../../runner/gate.toml"), Ok(None));
        assert_eq!(map("/etc/changegate.toml"), Ok(None));
        assert_eq!(map(".."), Err(NotARepoFile::TopDirectory));
        assert_eq!(map("../../../../.."), Err(NotARepoFile::AboveRoot));
        assert!(NotARepoFile::AboveRoot.to_string().contains("root"));
    }

    #[test]
    fn the_forges_message_is_one_short_line() {
        let e = status_error(403, r#"{"message":"403 Forbidden\n::error::injected"}"#);
        assert_eq!(message(&e), "403 Forbidden ::error::injected");
        let e = status_error(500, &"x".repeat(1000));
        assert!(message(&e).chars().count() <= 301);
        assert!(describe(&status_error(503, "")).ends_with("(still, after retries)"));
    }

    #[test]
    fn api_urls_encode_the_project_path_and_keep_the_base_path() {
        let url = api_url("https://gitlab.example.com/api/v4/", "CI_API_V4_URL", |p| {
            p.extend([
                "projects",
                "acme/api",
                "repository",
                "files",
                ".changegate.toml",
                "raw",
            ]);
        })
        .unwrap();
        assert_eq!(
            url.path(),
            "/api/v4/projects/acme%2Fapi/repository/files/.changegate.toml/raw"
        );
        assert!(api_url("not a url", "CI_API_V4_URL", |_| {}).is_err());
    }
}
