//! `announce`: the sprint's planned work, each item with its status as of now, grouped by
//! status, and published where people look. The items come from [`crate::work`]; a merged
//! item's deploy is the change the backend holds for its merge commit in the run's
//! environment. The notice is rendered once per target markup (untrusted titles escaped)
//! and each sink edits its one copy in place; an unchanged notice writes nothing.

use anyhow::{Result, bail};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Ctx;
use crate::config::{AnnounceSink, WorkSourceKind};
use crate::domain::{CorrelationKey, Outcome, Platform};
use crate::forge::render;
use crate::itsm::{Backend, Intent};
use crate::output::markdown::{escape, link};
use crate::work::{self, ItemState, PrState, SprintWindow, SprintWork, Which, WorkItem};

/// Where an item stands, in the order the notice lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Failed after deploy: the deploy's change recorded a failure (or `verify` found an
    /// incident).
    FailedAfterDeploy,
    /// Deployed to the run's environment: its change closed with success.
    Deployed,
    /// Merged, not deployed yet.
    Merged,
    /// An open, ready pull/merge request.
    InReview,
    /// A branch or a draft pull/merge request.
    InProgress,
    /// Nothing started.
    Planned,
    /// Closed with no pull/merge request merged.
    Closed,
}

impl Status {
    pub fn words(self, environment: &str) -> String {
        match self {
            Status::FailedAfterDeploy => format!("Failed after deploy to {environment}"),
            Status::Deployed => format!("Deployed to {environment}"),
            Status::Merged => "Merged".into(),
            Status::InReview => "In review".into(),
            Status::InProgress => "In progress".into(),
            Status::Planned => "Planned".into(),
            Status::Closed => "Closed without a merge".into(),
        }
    }
}

/// The change that deployed an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deploy {
    pub change_id: String,
    pub change_url: Option<String>,
}

/// One line of the notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub url: String,
    pub status: Status,
    /// The pull/merge request the status comes from, when one does.
    pub pull_request: Option<(u64, String)>,
    pub deploy: Option<Deploy>,
    /// What the policy's own risk rules (`[risk]`: size, sensitive paths) say of its pull
    /// request, when one exists and `[risk]` has rules: the reasons of those that fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk: Vec<String>,
}

/// The notice of one service and sprint.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub service: String,
    pub environment: String,
    pub sprint: SprintWindow,
    pub source: WorkSourceKind,
    /// The milestone (iteration, sprint) title and link; `None` when none matched.
    pub milestone: Option<(String, Option<String>)>,
    /// Grouped: in [`Status`] order, each group in the source's order.
    pub entries: Vec<Entry>,
    /// Some listing was cut short: items or links may be missing.
    pub cut_short: bool,
}

impl Notice {
    /// "Upcoming changes — payments-api, sprint 3 (2026-02-02 – 2026-02-15)".
    pub fn title(&self) -> String {
        format!(
            "Upcoming changes — {}, sprint {} ({} – {})",
            self.service,
            self.sprint.number,
            self.sprint.first_day(),
            self.sprint.last_day()
        )
    }
}

/// What `announce` did: the notice, and what each sink wrote.
#[derive(Debug, Serialize)]
pub struct AnnounceOutcome {
    pub notice: Notice,
    /// The service's id, as the notice's marker names it.
    pub service_id: String,
    /// One line per sink: "created …", "edited …", "unchanged …", "dry run: would …".
    pub published: Vec<String>,
    pub dry_run: bool,
}

/// The status of `item`, from its PRs and branches and, once merged, the change that
/// deployed its merge commit (looked up by `deploy_of`).
pub fn status_of(item: &WorkItem, deploy: Option<(&Deploy, Option<Outcome>)>) -> Status {
    let prs = &item.pull_requests;
    if prs.iter().any(|p| p.state == PrState::Merged) {
        return match deploy {
            Some((_, Some(Outcome::Failure))) => Status::FailedAfterDeploy,
            Some((_, Some(Outcome::Success))) => Status::Deployed,
            _ => Status::Merged,
        };
    }
    if prs.iter().any(|p| p.state == PrState::Open) {
        return Status::InReview;
    }
    if item.state == ItemState::Closed {
        return Status::Closed;
    }
    if prs.iter().any(|p| p.state == PrState::Draft) || !item.branches.is_empty() {
        return Status::InProgress;
    }
    Status::Planned
}

/// Runs `announce` for sprint `which`: reads the work, derives each status (the backend
/// answers for merged items), renders and publishes to every configured sink.
pub async fn run(ctx: &Ctx<'_>, backend: &dyn Backend, which: Which) -> Result<AnnounceOutcome> {
    let settings = ctx.settings;
    let section = &settings.file.announce;
    let facts = super::change::facts_without_range(ctx, None)?;
    let source = match (section.source, settings.platform) {
        (Some(s), _) => s,
        (None, Platform::Gitlab) => WorkSourceKind::GitlabMilestone,
        (None, _) => WorkSourceKind::GithubMilestone,
    };
    let sprint = SprintWindow::of(&settings.calendar, settings.now, which);
    let jira = match &settings.backend_config() {
        Ok(crate::settings::BackendConfig::Jira(c)) => Some(c.access.clone()),
        _ => None,
    };
    let forge_kind = match settings.platform {
        Platform::Gitlab => Some(work::ForgeKind::Gitlab),
        Platform::Github => Some(work::ForgeKind::Github),
        _ => None,
    };
    let sources = work::Sources {
        forge: ctx.forge,
        repository: facts.repository.as_deref(),
        forge_kind,
        jira: jira.as_ref(),
        budget: &settings.budget,
    };
    let work = work::read(
        &sources,
        source,
        &section.milestone,
        section.jira_board,
        sprint,
    )
    .await?;
    let notice = notice(
        ctx,
        backend,
        &facts.service_id,
        &facts.service,
        facts.repository.as_deref(),
        work,
    )
    .await?;
    let mut published = Vec::new();
    for sink in &section.sinks {
        match sink {
            AnnounceSink::ForgeIssue => published.push(
                forge_issue(ctx, &notice, &facts.service_id, facts.repository.as_deref()).await?,
            ),
            AnnounceSink::Chat => {
                published.push(chat(ctx, backend, &notice, &facts.service_id).await?)
            }
            AnnounceSink::Itsm => {
                published.push(itsm_notice(ctx, backend, &notice, &facts.service_id).await?)
            }
        }
    }
    Ok(AnnounceOutcome {
        notice,
        service_id: facts.service_id.clone(),
        published,
        dry_run: settings.dry_run,
    })
}

async fn notice(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    service_id: &str,
    service: &str,
    repository: Option<&str>,
    work: SprintWork,
) -> Result<Notice> {
    let environment = ctx.settings.environment.clone();
    let risk = &ctx.settings.policy.risk;
    let risk_rules = risk.max_lines_changed.is_some() || !risk.sensitive_paths.is_empty();
    let mut entries = Vec::new();
    for item in &work.items {
        let merged = item
            .pull_requests
            .iter()
            .find(|p| p.state == PrState::Merged);
        let mut deploy = None;
        if let Some(sha) = merged.and_then(|p| p.merge_sha.as_deref()) {
            let key = CorrelationKey::new(service_id, &environment, sha);
            let lookup = backend.find(&key, Intent::Read).await?;
            if let Some(record) = lookup.record {
                deploy = Some((
                    Deploy {
                        change_id: record.id.clone(),
                        change_url: record.url.clone(),
                    },
                    record.outcome,
                ));
            }
        }
        let status = status_of(item, deploy.as_ref().map(|(d, o)| (d, *o)));
        let pr = merged
            .or_else(|| item.pull_requests.iter().find(|p| p.state == PrState::Open))
            .or_else(|| item.pull_requests.first())
            .map(|p| (p.number, p.url.clone()));
        let flagged = merged
            .or_else(|| {
                item.pull_requests
                    .iter()
                    .find(|p| matches!(p.state, PrState::Open | PrState::Draft))
            })
            .filter(|_| risk_rules);
        let risk = match (flagged, repository) {
            (Some(p), Some(repository)) => {
                let (paths, lines) = pr_files(ctx, repository, p.number).await?;
                crate::domain::policy::risk_flags(&paths, Some(lines), risk)
            }
            _ => Vec::new(),
        };
        entries.push(Entry {
            id: item.id.clone(),
            title: item.title.clone(),
            url: item.url.clone(),
            status,
            risk,
            pull_request: pr,
            deploy: deploy
                .filter(|_| matches!(status, Status::Deployed | Status::FailedAfterDeploy))
                .map(|(d, _)| d),
        });
    }
    // Stable: the source's order within each status.
    entries.sort_by_key(|e| e.status);
    Ok(Notice {
        service: service.to_string(),
        environment,
        sprint: work.sprint,
        source: work.source,
        milestone: work.container.map(|c| (c.title, c.url)),
        entries,
        cut_short: work.cut_short,
    })
}

/// The paths a pull/merge request touches (both sides of a rename) and its lines changed,
/// as the forge lists its files: what the policy's risk rules read.
async fn pr_files(ctx: &Ctx<'_>, repository: &str, number: u64) -> Result<(Vec<String>, u64)> {
    let mut paths = Vec::new();
    let mut lines = 0u64;
    match ctx.settings.platform {
        Platform::Gitlab => {
            let reader = crate::forge::gitlab::Reader::connect(ctx.forge, repository)?;
            let diffs = reader
                .all(&format!("/merge_requests/{number}/diffs"))
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the files of !{number}: {e}"))?;
            for d in &diffs {
                for key in ["old_path", "new_path"] {
                    if let Some(p) = d.get(key).and_then(Value::as_str)
                        && !paths.iter().any(|x| x == p)
                    {
                        paths.push(p.to_string());
                    }
                }
                let diff = d.get("diff").and_then(Value::as_str).unwrap_or_default();
                lines = lines.saturating_add(crate::forge::gitlab::diff_lines(diff));
            }
        }
        _ => {
            let reader = crate::forge::github::Reader::connect(ctx.forge, repository)
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach {repository} on GitHub: {e}"))?;
            let (files, _) = reader
                .pages(
                    &format!("/pulls/{number}/files?per_page=100"),
                    work::MAX_PAGES,
                    "pull requests: read",
                    |_| true,
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the files of #{number}: {e}"))?;
            for f in &files {
                for key in ["filename", "previous_filename"] {
                    if let Some(p) = f.get(key).and_then(Value::as_str) {
                        paths.push(p.to_string());
                    }
                }
                let n = |k: &str| f.get(k).and_then(Value::as_u64).unwrap_or(0);
                lines = lines.saturating_add(n("additions").saturating_add(n("deletions")));
            }
        }
    }
    Ok((paths, lines))
}

/// The notice in Markdown (GitHub, GitLab): every untrusted text escaped, the marker first.
pub fn markdown(notice: &Notice, service_id: &str) -> String {
    let mut out = render::announce_marker(service_id, notice.sprint.number);
    out.push_str(&format!("\n## {}\n\n", escape(&notice.title())));
    match &notice.milestone {
        Some((title, url)) => out.push_str(&format!(
            "From {} {}.\n",
            notice.source.as_str(),
            link(title, url.as_deref())
        )),
        None => out.push_str(&format!(
            "No {} matches this sprint.\n",
            notice.source.as_str()
        )),
    }
    let mut last = None;
    for e in &notice.entries {
        if last != Some(e.status) {
            let n = notice
                .entries
                .iter()
                .filter(|x| x.status == e.status)
                .count();
            out.push_str(&format!(
                "\n### {} ({n})\n\n",
                e.status.words(&escape(&notice.environment))
            ));
            last = Some(e.status);
        }
        out.push_str(&format!(
            "- {} {}",
            link(&e.id, Some(&e.url)),
            escape(&e.title)
        ));
        if let Some((n, url)) = &e.pull_request
            && !e.id.ends_with(&format!("{n}"))
        {
            out.push_str(&format!(" — PR {}", link(&format!("#{n}"), Some(url))));
        }
        if let Some(d) = &e.deploy {
            out.push_str(&format!(
                " — change {}",
                link(&d.change_id, d.change_url.as_deref())
            ));
        }
        if !e.risk.is_empty() {
            out.push_str(&format!(" — **risk:** {}", escape(&e.risk.join("; "))));
        }
        out.push('\n');
    }
    if notice.cut_short {
        out.push_str("\n_Some listings were too long to read whole: items may be missing._\n");
    }
    out
}

/// The notice as plain text (the console).
pub fn text(notice: &Notice) -> String {
    let mut out = format!("{}\n", notice.title());
    match &notice.milestone {
        Some((title, _)) => out.push_str(&format!("from {} {title:?}\n", notice.source.as_str())),
        None => out.push_str(&format!(
            "no {} matches this sprint\n",
            notice.source.as_str()
        )),
    }
    let mut last = None;
    for e in &notice.entries {
        if last != Some(e.status) {
            out.push_str(&format!("\n{}:\n", e.status.words(&notice.environment)));
            last = Some(e.status);
        }
        out.push_str(&format!(
            "  {} {}",
            e.id,
            e.title.replace(['\n', '\r'], " ")
        ));
        if let Some(d) = &e.deploy {
            out.push_str(&format!(" ({})", d.change_id));
        }
        if !e.risk.is_empty() {
            out.push_str(&format!(" [risk: {}]", e.risk.join("; ")));
        }
        out.push('\n');
    }
    out
}

/// The tracking issue on GitHub: found again by its marker among the issues updated since
/// the sprint before, edited when its text differs, created when there is none.
async fn forge_issue(
    ctx: &Ctx<'_>,
    notice: &Notice,
    service_id: &str,
    repository: Option<&str>,
) -> Result<String> {
    let settings = ctx.settings;
    match settings.platform {
        Platform::Github => {}
        Platform::Gitlab => return gitlab_issue(ctx, notice, service_id, repository).await,
        _ => bail!(
            "[announce] sinks: \"forge-issue\" needs GitHub Actions or GitLab CI (the tracking issue lives in the project)"
        ),
    }
    let Some(repository) = repository else {
        bail!("no repository for the tracking issue: set GITHUB_REPOSITORY");
    };
    let body = markdown(notice, service_id);
    let title = notice.title();
    let marker = render::announce_marker(service_id, notice.sprint.number);
    let reader = crate::forge::github::Reader::connect(ctx.forge, repository)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {repository} on GitHub: {e}"))?;
    let since = notice.sprint.start - (notice.sprint.end - notice.sprint.start) * 2;
    let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (issues, _) = reader
        .pages(
            &format!("/issues?state=all&since={since}&per_page=100"),
            work::MAX_PAGES,
            "issues: read",
            |_| true,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot look for the tracking issue: {e}"))?;
    let found = issues.iter().find(|i| {
        i.get("pull_request").is_none()
            && i.get("body")
                .and_then(Value::as_str)
                .is_some_and(|b| b.starts_with(&marker))
    });
    let dry = settings.dry_run;
    match found {
        Some(issue) => {
            let number = issue.get("number").and_then(Value::as_u64).unwrap_or(0);
            let same = issue.get("body").and_then(Value::as_str) == Some(body.as_str())
                && issue.get("title").and_then(Value::as_str) == Some(title.as_str());
            if same {
                return Ok(format!("tracking issue #{number}: unchanged"));
            }
            if dry {
                return Ok(format!("dry run: would edit tracking issue #{number}"));
            }
            reader
                .write(
                    Method::PATCH,
                    &format!("/issues/{number}"),
                    &json!({"title": title, "body": body}),
                    "issues: write",
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot edit tracking issue #{number}: {e}"))?;
            Ok(format!("tracking issue #{number}: edited"))
        }
        None if dry => Ok("dry run: would create the tracking issue".to_string()),
        None => {
            let created = reader
                .write(
                    Method::POST,
                    "/issues",
                    &json!({"title": title, "body": body}),
                    "issues: write",
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the tracking issue: {e}"))?;
            let number = created.get("number").and_then(Value::as_u64).unwrap_or(0);
            Ok(format!("tracking issue #{number}: created"))
        }
    }
}

/// The label GitLab's tracking issues carry: the listing that finds them again.
pub const GITLAB_LABEL: &str = "changegate-announce";

/// The tracking issue on GitLab: among the project's issues labelled [`GITLAB_LABEL`], the
/// one whose description starts with the marker; edited when its text differs, created when
/// there is none.
async fn gitlab_issue(
    ctx: &Ctx<'_>,
    notice: &Notice,
    service_id: &str,
    project: Option<&str>,
) -> Result<String> {
    let Some(project) = project else {
        bail!("no project for the tracking issue: set CI_PROJECT_PATH");
    };
    let body = markdown(notice, service_id);
    let title = notice.title();
    let marker = render::announce_marker(service_id, notice.sprint.number);
    let reader = crate::forge::gitlab::Reader::connect(ctx.forge, project)?;
    let issues = reader
        .all(&format!("/issues?labels={GITLAB_LABEL}&scope=all"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot look for the tracking issue: {e}"))?;
    let found = issues.iter().find(|i| {
        i.get("description")
            .and_then(Value::as_str)
            .is_some_and(|b| b.starts_with(&marker))
    });
    let dry = ctx.settings.dry_run;
    match found {
        Some(issue) => {
            let iid = issue.get("iid").and_then(Value::as_u64).unwrap_or(0);
            let same = issue.get("description").and_then(Value::as_str) == Some(body.as_str())
                && issue.get("title").and_then(Value::as_str) == Some(title.as_str());
            if same {
                return Ok(format!("tracking issue #{iid}: unchanged"));
            }
            if dry {
                return Ok(format!("dry run: would edit tracking issue #{iid}"));
            }
            reader
                .write(
                    Method::PUT,
                    &format!("/issues/{iid}"),
                    &json!({"title": title, "description": body}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot edit tracking issue #{iid}: {e}"))?;
            Ok(format!("tracking issue #{iid}: edited"))
        }
        None if dry => Ok("dry run: would create the tracking issue".to_string()),
        None => {
            let created = reader
                .write(
                    Method::POST,
                    "/issues",
                    &json!({"title": title, "description": body, "labels": GITLAB_LABEL}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the tracking issue: {e}"))?;
            let iid = created.get("iid").and_then(Value::as_u64).unwrap_or(0);
            Ok(format!("tracking issue #{iid}: created"))
        }
    }
}

/// The notice as the ITSM keeps it: plain lines, grouped by status.
pub fn itsm_lines(notice: &Notice) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some((title, url)) = &notice.milestone {
        lines.push(format!(
            "From {} \"{}\"{}",
            notice.source.as_str(),
            one_line(title),
            url.as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        ));
    }
    let mut last = None;
    for e in &notice.entries {
        if last != Some(e.status) {
            let n = notice
                .entries
                .iter()
                .filter(|x| x.status == e.status)
                .count();
            lines.push(format!("{} ({n}):", e.status.words(&notice.environment)));
            last = Some(e.status);
        }
        let mut line = format!("- {} {} ({})", e.id, one_line(&e.title), e.url);
        if let Some(d) = &e.deploy {
            line.push_str(&format!(" — change {}", d.change_id));
        }
        if !e.risk.is_empty() {
            line.push_str(&format!(" — risk: {}", e.risk.join("; ")));
        }
        lines.push(line);
    }
    if notice.cut_short {
        lines.push("Some listings were too long to read whole: items may be missing.".into());
    }
    lines
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The notice as an ITSM keeps it.
fn sprint_notice(notice: &Notice, service_id: &str) -> crate::itsm::SprintNotice {
    crate::itsm::SprintNotice {
        service_id: service_id.to_string(),
        sprint: notice.sprint.number,
        start: notice.sprint.start,
        end: notice.sprint.end,
        title: notice.title(),
        lines: itsm_lines(notice),
    }
}

/// The ITSM's notice (ServiceNow: the sprint's umbrella change; Jira: one issue), edited
/// in place when it says something else, created when there is none.
async fn itsm_notice(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    notice: &Notice,
    service_id: &str,
) -> Result<String> {
    let Some(notices) = backend.notices() else {
        bail!(
            "[announce] sinks: \"itsm\" needs backend.kind = \"servicenow\" or \"jira\" (the {} backend keeps no notices)",
            backend.kind().as_str()
        );
    };
    let wanted = sprint_notice(notice, service_id);
    let what = match backend.kind() {
        crate::config::BackendKind::Servicenow => "umbrella change",
        _ => "notice issue",
    };
    let found = notices.find_notice(&wanted).await?;
    match (&found, ctx.settings.dry_run) {
        (Some(kept), _) if kept.same => Ok(format!("{what} {}: unchanged", kept.id)),
        (Some(kept), true) => Ok(format!("dry run: would edit {what} {}", kept.id)),
        (None, true) => Ok(format!("dry run: would create the {what}")),
        (Some(kept), false) => {
            let kept = notices.write_notice(&wanted, Some(kept)).await?;
            Ok(format!("{what} {}: edited", kept.id))
        }
        (None, false) => {
            let kept = notices.write_notice(&wanted, None).await?;
            Ok(format!("{what} {}: created", kept.id))
        }
    }
}

/// What the chat was last told of one item: kept on the ITSM's sprint notice or in the
/// ledger, so that the next post says only what moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    pub id: String,
    pub title: String,
    pub status: Status,
    #[serde(default)]
    pub change: Option<String>,
}

impl Told {
    fn of(e: &Entry) -> Told {
        Told {
            id: e.id.clone(),
            title: e.title.clone(),
            status: e.status,
            change: e.deploy.as_ref().map(|d| d.change_id.clone()),
        }
    }
}

/// One line of a chat update: an item new to the sprint, gone from it, or moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moved<'a> {
    Added(&'a Entry),
    Removed(Told),
    Changed { entry: &'a Entry, from: Status },
}

/// What moved between what the chat was told (`before`) and `notice`, in the notice's order,
/// the items gone last.
pub fn moved<'a>(before: &[Told], notice: &'a Notice) -> Vec<Moved<'a>> {
    let mut out = Vec::new();
    for e in &notice.entries {
        match before.iter().find(|t| t.id == e.id) {
            None => out.push(Moved::Added(e)),
            Some(t) if *t != Told::of(e) => out.push(Moved::Changed {
                entry: e,
                from: t.status,
            }),
            Some(_) => {}
        }
    }
    for t in before {
        if !notice.entries.iter().any(|e| e.id == t.id) {
            out.push(Moved::Removed(t.clone()));
        }
    }
    out
}

/// The ledger's sink name for the chat's memory.
const CHAT: &str = "chat";

/// Slack's limit on a section's text; longer groups are cut with a count of what is left.
const SECTION_MAX: usize = 2900;

fn slack_line(e: &Entry) -> String {
    let mut line = format!(
        "• {} {}",
        render::slack_link(&e.id, Some(&e.url)),
        render::slack_escape(&e.title)
    );
    if let Some((n, url)) = &e.pull_request
        && !e.id.ends_with(&format!("{n}"))
    {
        line.push_str(&format!(
            " — PR {}",
            render::slack_link(&format!("#{n}"), Some(url))
        ));
    }
    if let Some(d) = &e.deploy {
        line.push_str(&format!(
            " — change {}",
            render::slack_link(&d.change_id, d.change_url.as_deref())
        ));
    }
    if !e.risk.is_empty() {
        line.push_str(&format!(
            " — :warning: {}",
            render::slack_escape(&e.risk.join("; "))
        ));
    }
    line
}

/// A section block of `lines`, cut to Slack's limit.
fn section(head: &str, lines: &[String]) -> Value {
    let mut text = head.to_string();
    for (i, line) in lines.iter().enumerate() {
        if text.len() + line.len() + 1 > SECTION_MAX {
            text.push_str(&format!("\n… and {} more", lines.len() - i));
            break;
        }
        text.push('\n');
        text.push_str(line);
    }
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// The whole notice as a Slack message: the title as the notification's text, a header,
/// and one section per status.
pub fn slack_notice(notice: &Notice) -> Value {
    let title = notice.title();
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": cut(&title, 150)}})];
    let mut last = None;
    let mut lines = Vec::new();
    let mut head = String::new();
    for e in &notice.entries {
        if last != Some(e.status) {
            if last.is_some() {
                blocks.push(section(&head, &lines));
            }
            let n = notice
                .entries
                .iter()
                .filter(|x| x.status == e.status)
                .count();
            head = format!(
                "*{} ({n})*",
                render::slack_escape(&e.status.words(&notice.environment))
            );
            lines.clear();
            last = Some(e.status);
        }
        lines.push(slack_line(e));
    }
    if last.is_some() {
        blocks.push(section(&head, &lines));
    } else {
        blocks.push(section("Nothing planned for this sprint yet.", &[]));
    }
    json!({"text": title, "blocks": blocks})
}

/// What moved since the last post, as a Slack message.
pub fn slack_update(notice: &Notice, moves: &[Moved<'_>]) -> Value {
    let env = &notice.environment;
    let text = format!(
        "{}: {} update{}",
        notice.title(),
        moves.len(),
        if moves.len() == 1 { "" } else { "s" }
    );
    let lines: Vec<String> = moves
        .iter()
        .map(|m| match m {
            Moved::Added(e) => format!("{} — new: {}", slack_line(e), e.status.words(env)),
            Moved::Changed { entry, from } if *from == entry.status => format!(
                "{} — {}, updated",
                slack_line(entry),
                entry.status.words(env)
            ),
            Moved::Changed { entry, from } => format!(
                "{} — {} → {}",
                slack_line(entry),
                from.words(env),
                entry.status.words(env)
            ),
            Moved::Removed(t) => format!(
                "• {} {} — no longer in the sprint",
                render::slack_escape(&t.id),
                render::slack_escape(&t.title)
            ),
        })
        .collect();
    json!({"text": text, "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": cut(&notice.title(), 150)}},
        section("*What moved since the last announcement*", &lines),
    ]})
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Where the chat's memory lives: on an ITSM, the sprint's notice (found, or created as the
/// `itsm` sink would); on a ledger, its table. Always the one place for a backend, so that
/// two runners never hold two memories.
enum Memory<'a> {
    Notice {
        notices: &'a dyn crate::itsm::Notices,
        wanted: Box<crate::itsm::SprintNotice>,
        found: Option<crate::itsm::KeptNotice>,
    },
    Ledger(&'a dyn crate::itsm::Announcements),
}

/// The chat webhook: the whole notice the first time, then only what moved since the last
/// post; nothing moved, nothing posted. What was told is kept on the ITSM's sprint notice
/// (a ServiceNow umbrella change's work note, a Jira issue property), so that it needs no
/// ledger, or in the ledger that is the backend.
async fn chat(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    notice: &Notice,
    service_id: &str,
) -> Result<String> {
    let settings = ctx.settings;
    let url = settings.announce_webhook()?;
    let sprint = notice.sprint.number;
    let memory = match (backend.notices(), backend.announcements()) {
        (Some(notices), _) => {
            let wanted = Box::new(sprint_notice(notice, service_id));
            let found = notices.find_notice(&wanted).await?;
            Memory::Notice {
                notices,
                wanted,
                found,
            }
        }
        (None, Some(ledger)) => Memory::Ledger(ledger),
        (None, None) => bail!(
            "the {} backend keeps no memory of what the chat was told",
            backend.kind().as_str()
        ),
    };
    let body = match &memory {
        Memory::Notice {
            notices,
            found: Some(kept),
            ..
        } => notices.last_told(kept).await?,
        Memory::Notice { found: None, .. } => None,
        Memory::Ledger(ledger) => ledger.last_announced(service_id, sprint, CHAT).await?,
    };
    let told: Option<Vec<Told>> = match body {
        Some(body) => Some(serde_json::from_str(&body).map_err(|e| {
            anyhow::anyhow!("what the chat was last told cannot be read back: {e}")
        })?),
        None => None,
    };
    let now: Vec<Told> = notice.entries.iter().map(Told::of).collect();
    let (payload, what) = match &told {
        None => (slack_notice(notice), "the whole notice".to_string()),
        Some(before) => {
            let moves = moved(before, notice);
            if moves.is_empty() {
                return Ok("chat: unchanged, nothing posted".to_string());
            }
            let n = moves.len();
            (
                slack_update(notice, &moves),
                format!("{n} update{}", if n == 1 { "" } else { "s" }),
            )
        }
    };
    if settings.dry_run {
        return Ok(format!("dry run: would post {what} to chat"));
    }
    let http =
        crate::http::HttpClient::new("the chat webhook", &settings.budget)?.with_secret_url();
    http.send(|c| c.post(url.clone()).json(&payload))
        .await
        .map_err(|e| {
            // The webhook's own words (`no_service`, `invalid_payload`): never the URL.
            let said = e
                .body()
                .map(|b| format!(": {}", b.trim().chars().take(200).collect::<String>()))
                .unwrap_or_default();
            anyhow::anyhow!("cannot post to chat: {e}{said}")
        })?;
    let body = serde_json::to_string(&now)?;
    match memory {
        Memory::Notice {
            notices,
            wanted,
            found,
        } => {
            // The notice is kept true while it is written to: created the first time, edited
            // when it says something else (as the `itsm` sink would).
            let kept = match found {
                Some(kept) if kept.same => kept,
                found => notices.write_notice(&wanted, found.as_ref()).await?,
            };
            notices.keep_told(&kept, &body).await?;
        }
        Memory::Ledger(ledger) => {
            ledger
                .keep_announced(service_id, sprint, CHAT, &body, settings.now)
                .await?
        }
    }
    Ok(format!("chat: posted {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::PullRequest;

    fn item(prs: &[PrState], branches: &[&str], state: ItemState) -> WorkItem {
        WorkItem {
            id: "#1".into(),
            number: Some(1),
            title: "t".into(),
            url: "u".into(),
            state,
            labels: vec![],
            body: String::new(),
            is_pull_request: false,
            pull_requests: prs
                .iter()
                .enumerate()
                .map(|(i, s)| PullRequest {
                    number: i as u64 + 10,
                    title: String::new(),
                    url: String::new(),
                    state: *s,
                    branch: String::new(),
                    head_sha: None,
                    merge_sha: None,
                    body: String::new(),
                })
                .collect(),
            branches: branches.iter().map(|b| b.to_string()).collect(),
        }
    }

    fn entry(id: &str, status: Status) -> Entry {
        Entry {
            id: id.into(),
            title: format!("<!channel> {id}"),
            url: format!("https://x/{id}"),
            status,
            pull_request: None,
            deploy: None,
            risk: Vec::new(),
        }
    }

    fn notice_of(entries: Vec<Entry>) -> Notice {
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Notice {
            service: "api".into(),
            environment: "production".into(),
            sprint: SprintWindow {
                number: 1,
                start,
                end: start + chrono::Duration::days(14),
            },
            source: WorkSourceKind::GithubMilestone,
            milestone: None,
            entries,
            cut_short: false,
        }
    }

    #[test]
    fn the_chat_hears_what_was_added_moved_or_dropped_and_nothing_else() {
        let before = notice_of(vec![
            entry("#1", Status::Planned),
            entry("#2", Status::InReview),
            entry("#3", Status::Planned),
        ]);
        let told: Vec<Told> = before.entries.iter().map(Told::of).collect();
        assert!(moved(&told, &before).is_empty());
        let after = notice_of(vec![
            entry("#1", Status::InReview),
            entry("#2", Status::InReview),
            entry("#4", Status::Planned),
        ]);
        let moves = moved(&told, &after);
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert!(matches!(
            moves[0],
            Moved::Changed {
                from: Status::Planned,
                ..
            }
        ));
        assert!(matches!(moves[1], Moved::Added(e) if e.id == "#4"));
        assert!(matches!(&moves[2], Moved::Removed(t) if t.id == "#3"));
        let post = slack_update(&after, &moves).to_string();
        assert!(post.contains("Planned → In review"), "{post}");
        assert!(post.contains("no longer in the sprint"), "{post}");
        assert!(!post.contains("#2"), "{post}");
        // Untrusted titles cannot ping a channel.
        assert!(!post.contains("<!channel>"), "{post}");
        assert!(post.contains("&lt;!channel&gt;"), "{post}");
    }

    #[test]
    fn statuses_from_prs_branches_and_the_deploy() {
        use PrState::{Draft, Merged};
        let (open, closed) = (ItemState::Open, ItemState::Closed);
        let d = Deploy {
            change_id: "CHG1".into(),
            change_url: None,
        };
        assert_eq!(status_of(&item(&[], &[], open), None), Status::Planned);
        assert_eq!(
            status_of(&item(&[], &["1-x"], open), None),
            Status::InProgress
        );
        assert_eq!(
            status_of(&item(&[Draft], &[], open), None),
            Status::InProgress
        );
        assert_eq!(
            status_of(&item(&[Draft, PrState::Open], &[], open), None),
            Status::InReview
        );
        assert_eq!(
            status_of(&item(&[Merged], &[], closed), None),
            Status::Merged
        );
        assert_eq!(
            status_of(&item(&[Merged], &[], closed), Some((&d, None))),
            Status::Merged
        );
        assert_eq!(
            status_of(
                &item(&[Merged], &[], closed),
                Some((&d, Some(Outcome::Success)))
            ),
            Status::Deployed
        );
        assert_eq!(
            status_of(
                &item(&[Merged], &[], closed),
                Some((&d, Some(Outcome::Failure)))
            ),
            Status::FailedAfterDeploy
        );
        assert_eq!(
            status_of(&item(&[PrState::Closed], &[], closed), None),
            Status::Closed
        );
    }
}
