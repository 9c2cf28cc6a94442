//! JQL: literals, the search and the approximate count.

use anyhow::{Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::IssueView;
use super::{Jira, PROPERTY, labels};

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
        let mut body = json!({
            "jql": jql,
            "fields": fields,
            "maxResults": max,
            "properties": properties,
        });
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
mod tests {
    use super::*;

    #[test]
    fn jql_literals_are_escaped() {
        assert_eq!(q(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(q_list(["x", "y\""]), r#""x", "y\"""#);
    }
}
