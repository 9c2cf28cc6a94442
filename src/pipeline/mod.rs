//! Where the facts about a change come from: GitHub Actions, GitLab CI, or a local git
//! checkout. Detection reads environment variables through [`Vars`] so tests can hand in
//! their own.

use std::path::Path;

use anyhow::{Result, anyhow, bail};

use crate::domain::{Author, ChangeFacts, Commit, Platform, PullRequest};
use crate::env;
use crate::settings::Settings;

pub mod default_config;
pub mod git;
pub mod github;
pub mod gitlab;
pub mod workitems;

use crate::env::Vars;

/// What the platform said about the run, before the service and environment are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub platform: Platform,
    /// `owner/name` (GitHub) or the project path (GitLab) or what the git remote says.
    pub repository: Option<String>,
    pub repository_url: Option<String>,
    pub commit_sha: String,
    pub branch: Option<String>,
    pub pull_request: Option<PullRequest>,
    /// `(base, head)` of a pull/merge request (its base and the commit gated). A push's
    /// range is not here: it starts at the last deployed commit where the backend knows it.
    pub range: Option<(String, String)>,
    /// The push's `before` (GitHub push payload, GitLab `CI_COMMIT_BEFORE_SHA`): the start
    /// of the range only when the backend knows no deployed commit.
    pub before: Option<String>,
    /// Commits the platform listed (a push payload), when it did.
    pub commits: Vec<Commit>,
    /// Every path of `before..commit` as the push payload listed them; empty when the
    /// payload's list is not known to be whole (no `commits`, a new branch or tag, a list
    /// cut at GitHub's cap).
    pub paths: Vec<String>,
    pub lines_changed: Option<u64>,
    pub run_url: Option<String>,
    pub actor: Option<String>,
    /// Who made the change, when the platform tells: the pull/merge request's author, else
    /// the commit's e-mail. Git fills in the commit's e-mail when the platform does not.
    pub author: Option<Author>,
    /// Extra text to look for work items in (PR body, ...).
    pub texts: Vec<String>,
    /// What `CHANGEGATE_REVIEWED` claims, when set.
    pub claimed_review: Option<bool>,
}

/// Detects the platform and reads what it tells. `commit` overrides the commit SHA.
pub fn detect(vars: &dyn Vars, workdir: &Path, commit: Option<&str>) -> Result<Detected> {
    let mut detected = match env::platform(vars) {
        Platform::Github => github::detect(vars)?,
        Platform::Gitlab => gitlab::detect(vars)?,
        Platform::Local => git::detect(workdir)?,
    };
    if let Some(given) = commit {
        detected.commit_sha = commit_flag(given, workdir)?;
    }
    if detected.commit_sha.is_empty() {
        bail!("no commit to gate: not in CI and not in a git checkout; pass --commit SHA");
    }
    // What the pipeline claims counts only where the forge cannot be asked (see
    // `domain::evidence`); a push has no pull request in its payload, so the claim is kept
    // apart from it.
    if let Some(reviewed) = vars.get(env::REVIEWED) {
        let reviewed = matches!(reviewed.trim(), "true" | "1" | "yes");
        detected.claimed_review = Some(reviewed);
        if let Some(pr) = detected.pull_request.as_mut() {
            pr.reviewed = Some(reviewed);
        }
    }
    Ok(detected)
}

/// The full SHA `--commit` names: hex, 7 to 40 characters (64 in a SHA-256 repository).
/// A full SHA stands as given (the commit may be absent from a shallow checkout); an
/// abbreviated one is resolved through the checkout. Anything else is an error naming the
/// flag: the SHA becomes part of the correlation key and of the record.
pub fn commit_flag(given: &str, workdir: &Path) -> Result<String> {
    let sha = given.trim().to_ascii_lowercase();
    if !(7..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "--commit {given:?} is not a commit SHA: it must be 7 to 40 hex digits (64 in a \
             SHA-256 repository)"
        );
    }
    if sha.len() == 40 || sha.len() == 64 {
        return Ok(sha);
    }
    if sha.len() > 40 {
        bail!("--commit {given:?} is not a commit SHA: a full SHA has 40 or 64 hex digits");
    }
    git::resolve_commit(workdir, &sha).ok_or_else(|| {
        anyhow!(
            "--commit {given:?} does not name exactly one commit of this checkout; pass the full SHA"
        )
    })
}

/// The default service name: the repository's last path segment.
pub fn default_service(repository: Option<&str>, workdir: &Path) -> String {
    repository
        .and_then(|r| r.rsplit('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            workdir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "service".to_string())
}

/// The service's identity: the repository is part of it, so that two repositories that
/// name the same service never share a track record or a correlation key.
pub fn service_id(repository: Option<&str>, service: &str) -> String {
    match repository {
        Some(repo) if repo.rsplit('/').next() == Some(service) => repo.to_string(),
        Some(repo) => format!("{repo}/{service}"),
        None => service.to_string(),
    }
}

impl Detected {
    /// Completes the facts: the commit range, its lines, paths and work items from git where
    /// the checkout has them. A pull/merge request's range is its own; otherwise the range
    /// starts at `deployed_sha`, the last commit the backend knows was deployed successfully
    /// to this environment, so that a change that was blocked, rejected or failed ships
    /// with the next one in its facts; the push's `before` only when there is none.
    pub fn into_facts(
        self,
        service: &str,
        environment: &str,
        deployed_sha: Option<&str>,
        tests_passed: Option<bool>,
        workdir: &Path,
    ) -> ChangeFacts {
        let range = self
            .range
            .clone()
            .or_else(|| {
                deployed_sha
                    .filter(|p| *p != self.commit_sha)
                    .map(|p| (p.to_string(), self.commit_sha.clone()))
            })
            .or_else(|| self.before.clone().map(|b| (b, self.commit_sha.clone())));
        // The payload's paths describe `before..commit`: they stand for the range only when
        // it is that one, and only when git cannot tell.
        let payload_paths = match (&range, &self.before) {
            (Some((base, _)), Some(before)) if base == before && !self.paths.is_empty() => {
                Some(self.paths)
            }
            _ => None,
        };
        let mut commits = self.commits;
        let mut paths = Vec::new();
        let mut paths_known = false;
        let mut lines = self.lines_changed;
        let mut bodies = Vec::new();
        // Git tells what the range ships when the objects are there (a shallow CI checkout
        // may lack them: the platform's data, or its API, then stands in).
        if let Some(stats) = git::range_stats(
            workdir,
            range.as_ref().map(|(b, _)| b.as_str()),
            &self.commit_sha,
        ) {
            if commits.len() < stats.commits.len() {
                commits = stats.commits;
            }
            paths = stats.paths;
            paths_known = true;
            if lines.is_none() {
                lines = stats.lines;
            }
            bodies = stats.bodies;
        } else if let Some(listed) = payload_paths {
            paths = listed;
            paths_known = true;
        }
        let mut texts: Vec<&str> = commits.iter().map(|c| c.subject.as_str()).collect();
        if let Some(pr) = &self.pull_request {
            texts.push(&pr.title);
            if let Some(head) = &pr.head_ref {
                texts.push(head);
            }
        }
        if let Some(branch) = &self.branch {
            texts.push(branch);
        }
        texts.extend(self.texts.iter().map(String::as_str));
        texts.extend(bodies.iter().map(String::as_str));
        let work_items = workitems::extract(texts);
        let author = self
            .author
            .or_else(|| git::author_email(workdir, &self.commit_sha).map(|e| Author::email(&e)));
        ChangeFacts {
            platform: self.platform,
            service: service.to_string(),
            service_id: service_id(self.repository.as_deref(), service),
            environment: environment.to_string(),
            repository: self.repository,
            commit_sha: self.commit_sha,
            branch: self.branch,
            pull_request: self.pull_request,
            range,
            commits,
            lines_changed: lines,
            paths,
            paths_unknown: !paths_known,
            work_items,
            run_url: self.run_url,
            repository_url: self.repository_url,
            actor: self.actor,
            author,
            tests_passed,
            evidence: crate::domain::evidence::Evidence {
                claimed_review: self.claimed_review,
                ..Default::default()
            },
        }
    }
}

/// What a platform's API tells about a change's files.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlatformFiles {
    /// Every path touched (both paths of a rename), as far as the listing went.
    pub paths: Vec<String>,
    /// Lines added plus removed; `None` when some file's count is missing.
    pub lines: Option<u64>,
    /// False when the platform cut the listing short: more files may be touched.
    pub complete: bool,
}

/// Fills the facts git could not establish (a shallow checkout) from the platform's API:
/// a pull/merge request's files and counts, else the comparison of the commit range. Asks
/// only when a risk rule needs a missing fact, so a checkout with the range costs no
/// request. A failed or impossible request leaves the facts unknown (a warning says why):
/// the risk rules then decide by `[risk] when_unknown`.
pub async fn fill_from_platform(
    settings: &Settings,
    forge: &crate::forge::Forge<'_>,
    facts: &mut ChangeFacts,
) {
    let risk = &settings.policy.risk;
    let need_lines = risk.max_lines_changed.is_some() && facts.lines_changed.is_none();
    let need_paths = !risk.sensitive_paths.is_empty() && facts.paths_unknown;
    if !need_lines && !need_paths {
        return;
    }
    let asked = forge.change_files(facts).await;
    match asked {
        Ok(Some(files)) => {
            if facts.lines_changed.is_none() {
                facts.lines_changed = files.lines;
            }
            if facts.paths_unknown {
                facts.paths = files.paths;
                facts.paths_unknown = !files.complete;
            }
        }
        Ok(None) => tracing::info!(
            "the checkout has no commit range and the platform cannot be asked for the change's files"
        ),
        Err(e) => tracing::warn!("cannot read the change's files from the platform: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_identity_includes_the_repository() {
        assert_eq!(
            service_id(Some("acme/payments-api"), "payments-api"),
            "acme/payments-api"
        );
        assert_eq!(
            service_id(Some("acme/monorepo"), "billing"),
            "acme/monorepo/billing"
        );
        assert_eq!(service_id(None, "billing"), "billing");
        assert_eq!(
            default_service(Some("acme/payments-api"), Path::new("/x")),
            "payments-api"
        );
    }
}
