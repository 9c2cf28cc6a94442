//! A Jira Software sprint's work (Agile REST API): the board's sprint titled by the
//! pattern or overlapping the sprint's dates, then its issues, 50 to a page.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{
    Candidate, Container, ItemState, MAX_PAGES, SprintWindow, SprintWork, WorkItem, date, pick,
    text,
};
use crate::config::WorkSourceKind;
use crate::http::{Budget, HttpClient};
use crate::settings::JiraAccess;

struct Agile<'a> {
    http: HttpClient,
    access: &'a JiraAccess,
}

impl Agile<'_> {
    /// GET `/rest/agile/1.0/<path>` with `query`, as JSON.
    async fn get(&self, path: &[&str], query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut url = self.access.site.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| anyhow::anyhow!("{} cannot be a base URL", self.access.base))?;
            segments.pop_if_empty();
            segments.extend(["rest", "agile", "1.0"]);
            segments.extend(path);
        }
        let response = self
            .http
            .send(|c| {
                c.request(Method::GET, url.clone())
                    .basic_auth(&self.access.user, Some(self.access.token.expose_secret()))
                    .header(reqwest::header::ACCEPT, "application/json")
                    .query(query)
            })
            .await
            .map_err(|e| anyhow::anyhow!("Jira Software: {e}"))?;
        let body = response
            .text()
            .await
            .map_err(|e| anyhow::anyhow!("Jira Software: the answer could not be read: {e}"))?;
        serde_json::from_str(&body).map_err(|e| {
            anyhow::anyhow!(
                "Jira Software: the answer to /rest/agile/1.0/{} is not JSON ({e}); is {} a Jira site?",
                path.join("/"),
                self.access.base
            )
        })
    }
}

pub(super) async fn read(
    access: &JiraAccess,
    budget: &Budget,
    board: u64,
    pattern: &str,
    sprint: SprintWindow,
) -> anyhow::Result<SprintWork> {
    let agile = Agile {
        http: HttpClient::new("Jira", budget)?,
        access,
    };
    let board_id = board.to_string();
    let mut sprints = Vec::new();
    let mut cut_short = false;
    let mut pages = 0;
    loop {
        let page = agile
            .get(
                &["board", &board_id, "sprint"],
                &[("startAt", sprints.len().to_string())],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the sprints of board {board}: {e}"))?;
        let values = page
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let empty = values.is_empty();
        sprints.extend(values);
        pages += 1;
        if page.get("isLast").and_then(Value::as_bool) != Some(false) || empty {
            break;
        }
        if pages >= MAX_PAGES {
            cut_short = true;
            break;
        }
    }
    let candidates: Vec<Candidate> = sprints
        .iter()
        .map(|s| Candidate {
            title: text(s, "name"),
            start: date(s.get("startDate").and_then(Value::as_str)),
            due: date(s.get("endDate").and_then(Value::as_str)),
        })
        .collect();
    let mut work = SprintWork {
        source: WorkSourceKind::JiraSprint,
        sprint,
        container: None,
        items: Vec::new(),
        cut_short,
    };
    let Some(chosen) = pick(&candidates, pattern, &sprint) else {
        return Ok(work);
    };
    let s = &sprints[chosen];
    let id = s
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow::anyhow!("Jira Software: sprint {:?} has no id", text(s, "name")))?;
    work.container = Some(Container {
        id: id.to_string(),
        title: text(s, "name"),
        url: Some(format!(
            "{}/secure/RapidBoard.jspa?rapidView={board}&sprint={id}",
            access.base
        )),
        start: candidates[chosen].start,
        due: candidates[chosen].due,
    });
    let sprint_id = id.to_string();
    let mut pages = 0;
    loop {
        let page = agile
            .get(
                &["sprint", &sprint_id, "issue"],
                &[
                    ("startAt", work.items.len().to_string()),
                    ("fields", "summary,status,labels,description".to_string()),
                ],
            )
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the issues of sprint {id}: {e}"))?;
        let issues = page
            .get("issues")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let total = page.get("total").and_then(Value::as_u64).unwrap_or(0);
        let empty = issues.is_empty();
        work.items
            .extend(issues.iter().filter_map(|i| issue(i, &access.base)));
        pages += 1;
        if empty || work.items.len() as u64 >= total {
            break;
        }
        if pages >= MAX_PAGES {
            work.cut_short = true;
            break;
        }
    }
    Ok(work)
}

/// The plain text of a description: a string (API v2) or Atlassian Document Format.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let mut out = o
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if let Some(Value::Array(children)) = o.get("content") {
                for child in children {
                    let t = plain(child);
                    if !t.is_empty() {
                        if !out.is_empty() {
                            out.push(' ');
                        }
                        out.push_str(&t);
                    }
                }
            }
            out
        }
        _ => String::new(),
    }
}

fn issue(v: &Value, base: &str) -> Option<WorkItem> {
    let key = v.get("key").and_then(Value::as_str)?.to_string();
    let fields = v.get("fields").cloned().unwrap_or(Value::Null);
    let done = fields
        .get("status")
        .and_then(|s| s.get("statusCategory"))
        .and_then(|c| c.get("key"))
        .and_then(Value::as_str)
        == Some("done");
    Some(WorkItem {
        id: key.clone(),
        number: None,
        title: text(&fields, "summary"),
        url: format!("{base}/browse/{key}"),
        state: if done {
            ItemState::Closed
        } else {
            ItemState::Open
        },
        labels: fields
            .get("labels")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        body: fields.get("description").map(plain).unwrap_or_default(),
        is_pull_request: false,
        pull_requests: Vec::new(),
        branches: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_issue_with_either_description() {
        let a = issue(
            &json!({"key": "OPS-12", "fields": {"summary": "s", "labels": ["x"],
            "status": {"statusCategory": {"key": "done"}}, "description": "Refs INC0010001"}}),
            "https://j",
        )
        .unwrap();
        assert_eq!(a.url, "https://j/browse/OPS-12");
        assert_eq!(a.state, ItemState::Closed);
        assert_eq!(a.body, "Refs INC0010001");
        let b = issue(&json!({"key": "OPS-13", "fields": {"description": {"type": "doc", "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Refs"}, {"type": "text", "text": "PRB0000001"}]}]}}}), "https://j")
        .unwrap();
        assert_eq!(b.body, "Refs PRB0000001");
        assert_eq!(b.state, ItemState::Open);
    }
}
