//! JQL: literals, the search and the approximate count.

use anyhow::{Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};

use super::client::Op;
use super::issue::IssueView;
use super::{Jira, PROPERTY};

/// JQL string literal.
pub(super) fn q(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Jira {
    /// Issues matching `jql`, one page, with our property.
    pub(super) async fn search(
        &self,
        jql: &str,
        fields: &[&str],
        max: u32,
        token: Option<&str>,
        reconcile: &[u64],
    ) -> Result<(Vec<IssueView>, Option<String>)> {
        let mut body = json!({
            "jql": jql,
            "fields": fields,
            "maxResults": max,
            "properties": [PROPERTY],
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
    }
}
