//! Jira Service Management: change issues, JSM approvals, workflow transitions by name, and
//! history from JQL.
//!
//! How a change is kept in Jira:
//! - one issue of the configured issue type (or one JSM request of the configured request
//!   type) per correlation key;
//! - the correlation key verbatim, the decision with every rule, and the deploy's times and
//!   outcome in the issue property [`PROPERTY`] (JSON, read back with every issue read);
//! - labels that JQL can match exactly: [`labels::MARK`], one per service and environment
//!   ([`labels::service`]), one per change ([`labels::key`]), the decision kind, the day it
//!   was decided (UTC) and the outcome. Labels hold no ':' and no '/', so the service part is
//!   a hash; the property's verbatim key is compared on every lookup, so lookups are exact.
//!
//! A gate reads its change and its track record in one search of the service's newest
//! changes when they fit in a page (`history::survey`); `record` finds its change with the
//! workflow transitions and moves it on without reading it again.
//!
//! Jira has no unique constraint: two runs that both find nothing both create. After every
//! create the run searches again with read-after-write consistency for its own issue; the
//! lowest issue id wins, and the other run retires its issue as a duplicate.

mod client;
mod codec;
mod history;
mod insights;
mod lifecycle;
mod verify;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use secrecy::SecretString;

use super::Backend;
use crate::config::{BackendKind, JiraSection};
use crate::http::HttpClient;

pub use client::jira_words;
pub use codec::{Stored, labels};

/// The issue property holding the key, the decision and the deploy's times and outcome.
pub const PROPERTY: &str = "changegate.change";
/// The issue property of `announce`'s sprint notice: its key, title and text as written.
pub const NOTICE: &str = "changegate.announce";
/// The notice issue's property holding what the chat was last told of its sprint.
pub const CHAT_TOLD: &str = "changegate.announce.chat";
/// The issue property holding the facts the standing decision was made on.
pub const FACTS: &str = "changegate.facts";

/// Names as Jira shows them (statuses, transitions, project keys): trimmed, in any case.
fn eq(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The Jira Service Management backend.
pub struct Jira {
    http: HttpClient,
    /// The site URL as configured (no trailing `/`), for messages and browse links.
    base: String,
    /// The same, parsed: API URLs are built on it segment by segment.
    site: url::Url,
    user: String,
    token: SecretString,
    project: String,
    cfg: JiraSection,
    /// The service desk's id, configured or looked up once: a fact of the site, not of a
    /// change, so a memo for the life of the backend is not a cache between calls.
    service_desk: Mutex<Option<String>>,
    warned_no_request: AtomicBool,
    /// The changes `verify` found due, by issue key, with their links. A per-run memo: the
    /// `Verification` port hands records, not issues, between `awaiting_verification` and
    /// `linked_incidents`, and the links were read with the search.
    verifying: Mutex<HashMap<String, codec::IssueView>>,
    /// The issue type of `announce`'s sprint notice (`[announce] jira_issue_type`).
    notice_type: String,
}

impl std::fmt::Debug for Jira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jira")
            .field("base", &self.base)
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Jira {
    /// The backend the resolved site config describes (its account: `CHANGEGATE_JIRA_USER`,
    /// the Atlassian account's email, and `CHANGEGATE_JIRA_TOKEN`, its API token, as the
    /// settings read them); the run's budget and dry run come from `settings`.
    pub fn connect(
        config: &crate::settings::JiraConfig,
        settings: &crate::settings::Settings,
    ) -> Result<Jira> {
        let cfg = config.section.clone();
        let access = config.access.clone();
        let service_desk = Some(cfg.service_desk.trim().to_string()).filter(|s| !s.is_empty());
        Ok(Jira {
            http: HttpClient::new("Jira", &settings.budget)?,
            base: access.base,
            site: access.site,
            user: access.user,
            token: access.token,
            project: access.project,
            cfg,
            service_desk: Mutex::new(service_desk),
            warned_no_request: AtomicBool::new(false),
            verifying: Mutex::new(HashMap::new()),
            notice_type: settings.file.announce.jira_issue_type.trim().to_string(),
        })
    }

    pub(super) fn browse(&self, key: &str) -> String {
        format!("{}/browse/{key}", self.base)
    }
}

impl Backend for Jira {
    fn kind(&self) -> BackendKind {
        BackendKind::Jira
    }

    fn notices(&self) -> Option<&dyn super::Notices> {
        Some(self)
    }
}

/// A real Jira payload from the test fixtures (`tests/fixtures/reference/jira/<path>`).
#[cfg(test)]
fn reference(path: &str) -> serde_json::Value {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference/jira/"
    );
    let text = std::fs::read_to_string(format!("{dir}{path}")).expect("fixture exists");
    serde_json::from_str(&text).expect("reference payloads are JSON")
}
