//! Talking to Jira: the authenticated HTTP calls and the JQL search.
//!
//! HTTP calls to Jira: auth, JSON, and errors that quote Jira and say what to check.
//!
//! JQL: literals, the search and the approximate count.

use super::Jira;
use super::PROPERTY;
use super::codec::IssueView;
use super::labels;
use crate::env;
use crate::http::HttpError;
use anyhow::Result;
use anyhow::anyhow;
use reqwest::Method;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use serde_json::json;
use url::Url;

/// Jira's own words from an error body: `errorMessages`, `errors` (field: message) and the
/// service desk's `errorMessage`, verbatim. Bodies that are not JSON are quoted unless they
/// are HTML pages.
pub fn jira_words(body: &str) -> String {
    let body = body.trim();
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let mut parts: Vec<String> = Vec::new();
        if let Some(list) = v.get("errorMessages").and_then(Value::as_array) {
            parts.extend(
                list.iter()
                    .filter_map(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(map) = v.get("errors").and_then(Value::as_object) {
            for (field, message) in map {
                let message = message
                    .as_str()
                    .map_or_else(|| message.to_string(), str::to_string);
                parts.push(format!("{field}: {message}"));
            }
        }
        if let Some(m) = v.get("errorMessage").and_then(Value::as_str) {
            parts.push(m.to_string());
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    if body.is_empty() || body.starts_with('<') {
        return String::new();
    }
    body.chars().take(300).collect()
}

/// What a request was for: names the action, the permission it needs and what a 404 means.
#[derive(Debug, Clone, Copy)]
pub(super) enum Op<'a> {
    Search,
    Count,
    Read(&'a str),
    Create,
    CreateRequest,
    ServiceDesks,
    Edit(&'a str),
    Comment(&'a str),
    Transition(&'a str, &'a str),
    Approvals(&'a str),
}

/// `site` with `path` appended, one element per path segment. The `url` crate
/// percent-encodes each segment, `/` and `%` included, so an issue key a user passes stays
/// one segment whatever it holds. (It drops `.` and `..` segments: no issue is named so.)
pub(super) fn endpoint(site: &Url, path: &[&str]) -> Result<Url, HttpError> {
    let mut url = site.clone();
    url.path_segments_mut()
        .map_err(|()| HttpError::Build(format!("{site} cannot be the base of a Jira API URL")))?
        .pop_if_empty()
        .extend(path);
    Ok(url)
}

/// Whether Jira answered 404 Not Found.
pub(super) fn not_found(e: &HttpError) -> bool {
    e.status() == Some(StatusCode::NOT_FOUND)
}

impl Jira {
    /// One call through the shared client to `path` (one element per path segment).
    /// Returns the JSON answer (`Null` when empty).
    pub(super) async fn request(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, HttpError> {
        let url = endpoint(&self.site, path)?;
        let jsm = path.get(1) == Some(&"servicedeskapi");
        let response = self
            .http
            .send(|c| {
                let mut rb = c
                    .request(method.clone(), url.clone())
                    .basic_auth(&self.user, Some(self.token.expose_secret()))
                    .header(reqwest::header::ACCEPT, "application/json");
                if jsm {
                    rb = rb.header("X-ExperimentalApi", "opt-in");
                }
                if !query.is_empty() {
                    rb = rb.query(query);
                }
                if let Some(body) = body {
                    rb = rb.json(body);
                }
                rb
            })
            .await?;
        // The path below the site's own (a site may live under a context path).
        let below = self.site.path().trim_end_matches('/').len();
        let unreadable = |message: String| HttpError::Transport {
            service: "Jira",
            method: method.clone(),
            path: url.path().get(below..).unwrap_or(url.path()).to_string(),
            attempts: 1,
            message,
        };
        let text = response
            .text()
            .await
            .map_err(|e| unreadable(format!("the answer could not be read: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            unreadable(format!(
                "the answer is not JSON ({e}); is {} a Jira site?",
                self.base
            ))
        })
    }

    /// [`Self::request`], with a failure explained as one of `op`.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
        op: Op<'_>,
    ) -> Result<Value> {
        self.request(method, path, query, body)
            .await
            .map_err(|e| self.explain(e, op))
    }

    /// Turns a failed call into an error that says what was attempted, quotes Jira, and
    /// says what to check.
    pub(super) fn explain(&self, e: HttpError, op: Op<'_>) -> anyhow::Error {
        let p = &self.project;
        let what = match op {
            Op::Search => format!("search project {p} for changes"),
            Op::Count => format!("count changes in project {p}"),
            Op::Read(k) => format!("read issue {k}"),
            Op::Create => format!("create a {:?} issue in project {p}", self.cfg.issue_type),
            Op::CreateRequest => format!(
                "raise a request of request type {} in project {p}",
                self.cfg.request_type
            ),
            Op::ServiceDesks => "list the service desks".to_string(),
            Op::Edit(k) => format!("update issue {k}"),
            Op::Comment(k) => format!("comment on issue {k}"),
            Op::Transition(k, to) => format!("move issue {k} to {to:?}"),
            Op::Approvals(k) => format!("read the approvals of {k}"),
        };
        let Some(status) = e.status() else {
            return anyhow!(
                "cannot {what}: {e}. Check {} ({}) and the network or proxy",
                env::JIRA_URL,
                self.base
            );
        };
        let words = jira_words(e.body().unwrap_or_default());
        let said = if words.is_empty() {
            String::new()
        } else {
            format!(": {words}")
        };
        let permission = match op {
            Op::Search | Op::Count | Op::Read(_) | Op::ServiceDesks => "Browse projects",
            Op::Create | Op::CreateRequest => "Create issues",
            Op::Edit(_) => "Edit issues",
            Op::Comment(_) => "Add comments",
            Op::Transition(..) => "Transition issues (and Resolve issues for closing transitions)",
            Op::Approvals(_) => "Browse projects, as a Jira Service Management agent",
        };
        let hint = match status.as_u16() {
            401 => format!(
                "The credentials were refused: {} must be the Atlassian account's email address and {} an API token of that account \
                 (not its password); check that the token has not expired or been revoked",
                env::JIRA_USER,
                env::JIRA_TOKEN
            ),
            403 => format!("The account in {} lacks the permission {permission} in project {p}", env::JIRA_USER),
            404 => match op {
                Op::Create => format!(
                    "Project {p} or issue type {:?} does not exist, or the account in {} cannot see it (Browse projects, Create issues)",
                    self.cfg.issue_type,
                    env::JIRA_USER
                ),
                Op::CreateRequest | Op::ServiceDesks => format!(
                    "The service desk or request type {} does not exist, or the account in {} is not a customer or agent of it",
                    self.cfg.request_type,
                    env::JIRA_USER
                ),
                Op::Search | Op::Count => format!(
                    "{} has no JQL search at /rest/api/3/search/jql: changegate needs Jira Cloud",
                    self.base
                ),
                Op::Approvals(k) => format!("{k} is not a Jira Service Management request, or the account in {} is not an agent", env::JIRA_USER),
                Op::Read(k) | Op::Edit(k) | Op::Comment(k) | Op::Transition(k, _) => format!(
                    "Issue {k} does not exist, or the account in {} cannot see it (Browse projects)",
                    env::JIRA_USER
                ),
            },
            400 => match op {
                Op::Create | Op::CreateRequest => format!(
                    "Check [jira] issue_type / request_type, [jira.fields] and [jira.extra_fields] against the create screen of project {p}"
                ),
                Op::Edit(_) => "Labels, the [jira.fields] fields and issue properties must be on the issue's edit screen".to_string(),
                Op::Transition(..) => "Check the transition's screen and [jira.resolutions]".to_string(),
                Op::Search | Op::Count => format!("The JQL was refused; check that project {p} exists"),
                _ => String::new(),
            },
            410 => "This Jira API was removed; changegate needs Jira Cloud's current REST API".to_string(),
            429 => "Jira kept rate-limiting the requests after changegate waited as told (Retry-After); try again later".to_string(),
            s if s >= 500 => "Jira kept failing after retries; try again later".to_string(),
            _ => String::new(),
        };
        let hint = if hint.is_empty() {
            String::new()
        } else if said.ends_with('.') {
            format!(" {hint}")
        } else {
            format!(". {hint}")
        };
        anyhow!("cannot {what}: {e}{said}{hint}")
    }
}

#[cfg(test)]
mod tests_client {
    use super::*;

    #[test]
    fn jira_words_quotes_both_error_shapes() {
        let platform = r#"{"errorMessages":["Field 'priority' is required"],"errors":{"customfield_10100":"Backout plan is required."}}"#;
        assert_eq!(
            jira_words(platform),
            "Field 'priority' is required; customfield_10100: Backout plan is required."
        );
        let jsm = r#"{"errorMessage":"The request type is invalid","i18nErrorMessage":{"i18nKey":"sd.x","parameters":[]}}"#;
        assert_eq!(jira_words(jsm), "The request type is invalid");
        assert_eq!(jira_words("<html><body>Unauthorized</body></html>"), "");
        assert_eq!(jira_words(""), "");
    }

    #[test]
    fn keys_stay_one_path_segment() {
        let site = Url::parse("https://example.atlassian.net").unwrap();
        let path = |key| {
            endpoint(&site, &["rest", "api", "3", "issue", key, "comment"])
                .unwrap()
                .path()
                .to_string()
        };
        assert_eq!(path("CHG-12"), "/rest/api/3/issue/CHG-12/comment");
        assert_eq!(path("../x"), "/rest/api/3/issue/..%2Fx/comment");
        assert_eq!(
            path("a b?c#d%"),
            "/rest/api/3/issue/a%20b%3Fc%23d%25/comment"
        );
        let under = Url::parse("https://jira.example.com/jira/").unwrap();
        assert_eq!(
            endpoint(&under, &["rest", "api", "3", "search", "jql"])
                .unwrap()
                .as_str(),
            "https://jira.example.com/jira/rest/api/3/search/jql"
        );
    }
}

/// JQL string literal.
pub(super) fn q(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// JQL literals for a list: `"a", "b"`, as `labels in (…)` takes them.
pub(super) fn q_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| q(s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `labels in (…)` for every decision kind: the changes that were decided.
pub(super) fn any_kind() -> String {
    format!("labels in ({})", q_list(labels::KINDS.map(labels::kind)))
}

impl Jira {
    /// Issues matching `jql`, one page, with our property, and the next page's token.
    /// `reconcile`: issues the search must see as just written (read-after-write).
    pub(super) async fn search(
        &self,
        jql: &str,
        fields: &[&str],
        max: u32,
        token: Option<&str>,
        reconcile: &[u64],
    ) -> Result<(Vec<IssueView>, Option<String>)> {
        self.search_with(jql, fields, &[PROPERTY], max, token, reconcile)
            .await
    }

    /// [`Self::search`], reading the issue properties `properties`.
    pub(super) async fn search_with(
        &self,
        jql: &str,
        fields: &[&str],
        properties: &[&str],
        max: u32,
        token: Option<&str>,
        reconcile: &[u64],
    ) -> Result<(Vec<IssueView>, Option<String>)> {
        self.search_expanded(jql, fields, properties, None, max, token, reconcile)
            .await
    }

    /// [`Self::search_with`], with what `expand` names (`transitions.fields`: each issue's
    /// transitions as a read of the issue with them gives).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn search_expanded(
        &self,
        jql: &str,
        fields: &[&str],
        properties: &[&str],
        expand: Option<&str>,
        max: u32,
        token: Option<&str>,
        reconcile: &[u64],
    ) -> Result<(Vec<IssueView>, Option<String>)> {
        let mut body = json!({
            "jql": jql,
            "fields": fields,
            "maxResults": max,
            "properties": properties,
        });
        if let Some(expand) = expand {
            body["expand"] = json!(expand);
        }
        if let Some(token) = token {
            body["nextPageToken"] = json!(token);
        }
        if !reconcile.is_empty() {
            body["reconcileIssues"] = json!(reconcile);
        }
        let v = self
            .call(
                Method::POST,
                &["rest", "api", "3", "search", "jql"],
                &[],
                Some(&body),
                Op::Search,
            )
            .await?;
        let issues = v
            .get("issues")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(IssueView::parse).collect::<Result<Vec<_>>>())
            .transpose()?
            .unwrap_or_default();
        let last = v.get("isLast").and_then(Value::as_bool).unwrap_or(false);
        let next = v
            .get("nextPageToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && !last)
            .map(str::to_string);
        Ok((issues, next))
    }

    /// Jira's approximate count of the issues matching `jql`.
    pub(super) async fn count(&self, jql: &str) -> Result<u64> {
        let v = self
            .call(
                Method::POST,
                &["rest", "api", "3", "search", "approximate-count"],
                &[],
                Some(&json!({ "jql": jql })),
                Op::Count,
            )
            .await?;
        v.get("count")
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("Jira's approximate count has no `count`: {v}"))
    }
}

#[cfg(test)]
mod tests_search {
    use super::*;

    #[test]
    fn jql_literals_are_escaped() {
        assert_eq!(q(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(q_list(["x", "y\""]), r#""x", "y\"""#);
    }
}
