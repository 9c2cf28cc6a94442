//! The forge's own deployment history (`history import`): GitHub Deployments and their
//! statuses, GitLab deployments. Read through the run's clients (retries, `Retry-After`,
//! the run's budget), 100 to a page, every request counted so that the command can say
//! what the import cost.

use chrono::{DateTime, Utc};

use super::{Forge, ForgeError, github, gitlab};
use crate::domain::imported::ForgeStatus;

/// The most pages of deployments read (100 each); a longer history is cut short, with a
/// warning (`--since` reads less).
pub const MAX_PAGES: u32 = 500;

/// Which forge's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Github,
    Gitlab,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Github => "github",
            Source::Gitlab => "gitlab",
        }
    }
}

/// One deployment as the forge lists it.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The forge's id of the deployment.
    pub id: u64,
    pub sha: String,
    pub environment: String,
    /// When it was created (started).
    pub created_at: DateTime<Utc>,
    /// Its statuses when the listing carries them (GitLab); `None` until asked (GitHub).
    pub statuses: Option<Vec<ForgeStatus>>,
}

/// A listing of deployments.
#[derive(Debug, Default)]
pub struct Listing {
    /// Newest first, as the forge gave them.
    pub deployments: Vec<Deployment>,
    /// Stopped at [`MAX_PAGES`] with more to read.
    pub cut_short: bool,
}

enum Reader<'f> {
    Github(Box<github::History>),
    Gitlab(gitlab::History<'f>),
}

/// Reads one repository's deployment history, counting its requests.
pub struct History<'f> {
    reader: Reader<'f>,
    source: Source,
    requests: u32,
}

impl<'f> History<'f> {
    /// The reader of `repository` (GitHub `owner/name`, GitLab project path) on `source`,
    /// with the run's token for that forge: none is an error naming the variable.
    pub async fn connect(
        forge: &'f Forge<'_>,
        source: Source,
        repository: &str,
    ) -> anyhow::Result<History<'f>> {
        let settings = forge.settings();
        let reader = match source {
            Source::Github => {
                if settings.forge.github_app.is_none() && settings.forge.github_token.is_none() {
                    anyhow::bail!(
                        "no GitHub token to read the deployments of {repository} with: set GITHUB_TOKEN or CHANGEGATE_GITHUB_TOKEN (deployments: read)"
                    );
                }
                Reader::Github(Box::new(github::History::connect(forge, repository).await?))
            }
            Source::Gitlab => Reader::Gitlab(gitlab::History::connect(forge, repository)?),
        };
        Ok(History {
            reader,
            source,
            requests: 0,
        })
    }

    /// The deployments to `environment` (since `since`, when given), newest first.
    pub async fn deployments(
        &mut self,
        environment: &str,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Listing> {
        let listing = match &self.reader {
            Reader::Github(r) => {
                r.deployments(environment, since, MAX_PAGES, &mut self.requests)
                    .await
            }
            Reader::Gitlab(r) => {
                r.deployments(environment, since, MAX_PAGES, &mut self.requests)
                    .await
            }
        };
        listing.map_err(|e| self.context(e))
    }

    /// The statuses of `deployment`: those its listing carried, else asked for (GitHub: one
    /// request, or more for a long list).
    pub async fn statuses(&mut self, deployment: &Deployment) -> anyhow::Result<Vec<ForgeStatus>> {
        if let Some(statuses) = &deployment.statuses {
            return Ok(statuses.clone());
        }
        match &self.reader {
            Reader::Github(r) => r
                .statuses(deployment.id, &mut self.requests)
                .await
                .map_err(|e| self.context(e)),
            Reader::Gitlab(_) => Ok(Vec::new()),
        }
    }

    /// Requests sent so far (each page once; retries of one request are not counted again).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    fn context(&self, e: ForgeError) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot read the deployment history from {}: {e}",
            self.source.as_str()
        )
    }
}
