//! The Jira Service Management backend, driven through the real binary against a stateful
//! in-process fake of the Jira endpoints it uses (shapes from `reference/jira-shapes.md`,
//! `reference/api-contracts.md` §2 and the payloads in `reference/jira/`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use changegate::itsm::jira::{PROPERTY, labels};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::support::remote::{Remote, Watch};
use crate::support::{changegate, git_at, git_repo};

pub(crate) const USER: &str = "deploy-bot@example.com";
pub(crate) const TOKEN: &str = "jira-api-token-s3cr3t-value";
const SERVICE_ID: &str = "acme/payments-api";
const ENV: &str = "production";

// ---- the fake ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Approval {
    decision: String,
    approver: String,
    /// The approver's address, when their profile shows it.
    email: String,
    reads: u32,
    /// When the approver answered (the fake's clock).
    at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Issue {
    id: u64,
    pub(crate) key: String,
    pub(crate) status: String,
    labels: Vec<String>,
    fields: Map<String, Value>,
    props: Map<String, Value>,
    comments: Vec<Value>,
    resolution: Option<String>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    approval: Option<Approval>,
    /// Index lag: invisible to this many more searches that do not reconcile it.
    hidden_for: u32,
    /// The changelog: when, and the changed items (`field`, `to`, `toString`, ...).
    history: Vec<(DateTime<Utc>, Vec<Value>)>,
}

/// What the "humans" and the workflow do, and how the site misbehaves.
#[derive(Debug, Default, Clone)]
pub(crate) struct Script {
    /// The approval is granted (by `approver`) on the read after this many reads.
    pub(crate) approve_after: Option<u32>,
    /// Who grants it: display name and e-mail address (default Ada Approver, whose
    /// profile hides her address).
    approver: Option<(String, String)>,
    /// The approval is declined (by "Bob Boss") on the read after this many reads.
    pub(crate) decline_after: Option<u32>,
    /// An automation moves every new issue to this status right after it is created.
    status_on_create: Option<String>,
    /// The next N requests are answered 429 with Retry-After: 1.
    throttle: u32,
    /// Fields the create screen requires: field id → Jira's message.
    required: BTreeMap<String, String>,
    /// Issues per search page at most (Jira may return fewer than asked); default 100.
    page_cap: Option<usize>,
    /// Issue links show the linked issue's key and status only, not its type.
    links_without_type: bool,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Where unknown routes, fields and JQL terms go: the `Remote`'s list, checked at drop.
    pub(crate) watch: Watch,
    pub(crate) issues: Vec<Issue>,
    next_id: u64,
    pub(crate) script: Script,
    /// Every request: method, path, status answered.
    log: Vec<(String, String, u16)>,
    /// Issue links: (id, inward issue key, outward issue key), of type Problem/Incident
    /// ("is caused by" / "causes").
    links: Vec<(u64, String, String)>,
    next_incident: u64,
}

impl State {
    /// A site with no issues, its anomalies going to `watch`.
    pub(crate) fn new(watch: Watch) -> State {
        State {
            watch,
            ..State::default()
        }
    }
}

#[derive(Clone)]
pub(crate) struct Fake(pub(crate) Arc<Mutex<State>>);

fn category(status: &str) -> &'static str {
    match status {
        "Open" => "new",
        "Completed" | "Failed" | "Canceled" | "Declined" => "done",
        _ => "indeterminate",
    }
}

fn jira_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn error(status: u16, messages: &[&str], errors: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"errorMessages": messages, "errors": errors}))
}

/// The transitions a status offers: id, name, target, resolution screen.
fn transitions_from(status: &str) -> Vec<(&'static str, &'static str, &'static str, bool)> {
    let mut out = Vec::new();
    if category(status) == "done" {
        return out;
    }
    if matches!(status, "Open" | "Awaiting implementation") {
        out.push(("11", "Implement", "Implementing", false));
    }
    if status == "Open" {
        out.push(("51", "Request approval", "Waiting for approval", false));
    }
    if status == "Implementing" {
        out.push(("21", "Complete", "Completed", true));
        out.push(("31", "Mark as failed", "Failed", true));
    }
    out.push(("41", "Cancel", "Canceled", true));
    out
}

fn status_json(name: &str) -> Value {
    let cat = category(name);
    json!({
        "self": "https://example.atlassian.net/rest/api/3/status/1",
        "name": name,
        "id": "1",
        "statusCategory": {"id": 2, "key": cat, "colorName": "blue-gray", "name": cat},
    })
}

impl Issue {
    fn view(
        &self,
        base: &str,
        fields: &[String],
        properties: &[String],
        transitions: bool,
    ) -> Value {
        let mut f = Map::new();
        for name in fields {
            match name.as_str() {
                "status" => {
                    f.insert("status".into(), status_json(&self.status));
                }
                "labels" => {
                    f.insert("labels".into(), json!(self.labels));
                }
                "created" => {
                    f.insert("created".into(), json!(jira_time(self.created)));
                }
                "resolution" => {
                    f.insert(
                        "resolution".into(),
                        json!(self.resolution.as_ref().map(|r| json!({"name": r}))),
                    );
                }
                other => {
                    if let Some(v) = self.fields.get(other) {
                        f.insert(other.into(), v.clone());
                    }
                }
            }
        }
        let mut v = json!({
            "id": self.id.to_string(),
            "key": self.key,
            "self": format!("{base}/rest/api/3/issue/{}", self.id),
            "fields": f,
        });
        if !properties.is_empty() {
            let props: Map<String, Value> = properties
                .iter()
                .filter_map(|p| self.props.get(p).map(|v| (p.clone(), v.clone())))
                .collect();
            v["properties"] = Value::Object(props);
        }
        if transitions {
            v["transitions"] = json!(
                transitions_from(&self.status)
                    .into_iter()
                    .map(|(id, name, to, screen)| {
                        let mut t = json!({
                            "id": id, "name": name, "to": status_json(to), "hasScreen": screen,
                            "isGlobal": false, "isInitial": false, "isAvailable": true, "isConditional": false,
                            "fields": {},
                        });
                        if screen {
                            t["fields"] = json!({"resolution": {
                                "required": true, "schema": {"type": "resolution", "system": "resolution"},
                                "name": "Resolution", "key": "resolution", "operations": ["set"],
                                "allowedValues": [{"name": "Done", "id": "1"}, {"name": "Won't Do", "id": "2"}],
                            }});
                        }
                        t
                    })
                    .collect::<Vec<_>>()
            );
        }
        v
    }

    fn apply_labels(&mut self, ops: &Value) {
        for op in ops.as_array().into_iter().flatten() {
            if let Some(l) = op.get("add").and_then(Value::as_str)
                && !self.labels.iter().any(|x| x == l)
            {
                self.labels.push(l.to_string());
            }
            if let Some(l) = op.get("remove").and_then(Value::as_str) {
                self.labels.retain(|x| x != l);
            }
        }
        self.sync_approval();
    }

    fn apply_props(&mut self, props: Option<&Value>) {
        for p in props.and_then(Value::as_array).into_iter().flatten() {
            if let (Some(k), Some(v)) = (p.get("key").and_then(Value::as_str), p.get("value")) {
                self.props.insert(k.to_string(), v.clone());
            }
        }
    }

    /// JSM opens an approval when a change that needs one is raised.
    fn sync_approval(&mut self) {
        if self.approval.is_none() && self.labels.iter().any(|l| l == "changegate-needs-approval") {
            self.approval = Some(Approval {
                decision: "pending".into(),
                approver: String::new(),
                email: String::new(),
                reads: 0,
                at: None,
            });
            if self.status == "Open" {
                self.status = "Waiting for approval".into();
            }
        }
    }
}

// -- a small JQL evaluator for the clauses changegate sends --

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Op(String),
    Open,
    Close,
    Comma,
}

fn tokens(jql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let chars: Vec<char> = jql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if c == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if "=!<>".contains(c) {
            let mut s = c.to_string();
            if i + 1 < chars.len() && chars[i + 1] == '=' {
                s.push('=');
                i += 1;
            }
            out.push(Tok::Op(s));
            i += 1;
        } else {
            let mut s = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || "_-.".contains(chars[i])) {
                s.push(chars[i]);
                i += 1;
            }
            assert!(!s.is_empty(), "JQL the fake cannot read: {jql}");
            out.push(Tok::Word(s));
        }
    }
    out
}

#[derive(Debug)]
enum Clause {
    Cmp(String, String, String),
    In(String, Vec<String>, bool),
    /// `issue in linkedIssues("KEY")`.
    LinkedTo(String),
}

#[derive(Debug)]
struct Query {
    clauses: Vec<Clause>,
    /// The ORDER BY field, lower case.
    order: Option<String>,
    desc: bool,
}

/// Fields an issue's create or edit body may set on the fake site: the system fields
/// changegate writes, and any custom field (`customfield_NNNNN`: a site's own ids, which the
/// fake cannot check against a screen it does not have).
const ISSUE_FIELDS: &[&str] = &["project", "issuetype", "summary", "description", "labels"];

/// Fields a search or a read may ask for: what the fake's issues hold, and any custom
/// field. Jira leaves an unknown field out of its answer, which a client reads as empty.
const READ_FIELDS: &[&str] = &[
    "status",
    "labels",
    "created",
    "updated",
    "resolution",
    "resolutiondate",
    "issuelinks",
    "summary",
    "description",
    "issuetype",
    "project",
];

/// Flags, in `watch`, each of `fields` the fake's issues cannot have.
fn check_read_fields(watch: &Watch, what: &str, fields: &[String]) {
    for f in fields {
        if !READ_FIELDS.contains(&f.as_str()) && !f.starts_with("customfield_") {
            watch.flag(format!("{what} asks for unknown field {f:?}"));
        }
    }
}

/// Query parameters of the GET routes the fake serves (issue, changelog, approvals).
const QUERY_PARAMS: &[&str] = &[
    "fields",
    "properties",
    "expand",
    "startAt",
    "maxResults",
    "start",
    "limit",
];

/// Fields the fake's JQL knows; a search on any other is flagged (Jira would answer 400,
/// or match nothing for a misspelt custom field).
const JQL_FIELDS: &[&str] = &[
    "project",
    "labels",
    "updated",
    "created",
    "issuetype",
    "issue",
];

/// Flags, in `watch`, each key of `body` not in `known`, and each field of its `fields`
/// object (or of `fields_key`) that is neither a known issue field nor a custom field.
fn check_body(watch: &Watch, what: &str, body: &Value, known: &[&str], fields_key: &str) {
    for k in body.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !known.contains(&k.as_str()) {
            watch.flag(format!("{what} with unknown body key {k:?}"));
        }
    }
    for k in body[fields_key]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if !ISSUE_FIELDS.contains(&k.as_str()) && !k.starts_with("customfield_") {
            watch.flag(format!("{what} sets unknown field {k:?}"));
        }
    }
}

/// Parses `jql`, flagging in `watch` what the fake cannot read and fields it does not know.
fn read_jql(watch: &Watch, jql: &str) -> Result<Query, String> {
    let q = parse_jql(jql).inspect_err(|e| watch.flag(format!("JQL the fake cannot read: {e}")))?;
    for c in &q.clauses {
        let field = match c {
            Clause::Cmp(f, _, _) | Clause::In(f, _, _) => f.as_str(),
            Clause::LinkedTo(_) => "issue",
        };
        if !JQL_FIELDS.contains(&field) {
            watch.flag(format!("JQL on unknown field {field:?}: {jql}"));
        }
    }
    if let Some(f) = q
        .order
        .as_ref()
        .filter(|f| !["created", "updated", "key"].contains(&f.as_str()))
    {
        watch.flag(format!("JQL ordered by unknown field {f:?}: {jql}"));
    }
    Ok(q)
}

fn parse_jql(jql: &str) -> Result<Query, String> {
    let toks = tokens(jql);
    let mut i = 0;
    let mut clauses = Vec::new();
    let mut desc = false;
    let mut order = None;
    let word = |t: Option<&Tok>| match t {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let value = |t: Option<&Tok>| match t {
        Some(Tok::Str(s)) | Some(Tok::Word(s)) => Some(s.clone()),
        _ => None,
    };
    loop {
        let field = word(toks.get(i)).ok_or(format!("expected a field at {i} in {jql}"))?;
        i += 1;
        let negated = word(toks.get(i)).as_deref() == Some("not");
        if negated {
            i += 1;
        }
        if word(toks.get(i)).as_deref() == Some("in")
            && word(toks.get(i + 1)).as_deref() == Some("linkedissues")
        {
            // issue in linkedIssues("KEY")
            let key = match (toks.get(i + 2), toks.get(i + 3), toks.get(i + 4)) {
                (Some(Tok::Open), Some(Tok::Str(k) | Tok::Word(k)), Some(Tok::Close)) => k.clone(),
                _ => return Err(format!("bad linkedIssues() in {jql}")),
            };
            if field != "issue" || negated {
                return Err(format!("unsupported JQL: {jql}"));
            }
            i += 5;
            clauses.push(Clause::LinkedTo(key));
        } else if word(toks.get(i)).as_deref() == Some("in") {
            i += 1;
            if toks.get(i) != Some(&Tok::Open) {
                return Err(format!("expected ( in {jql}"));
            }
            i += 1;
            let mut list = Vec::new();
            while toks.get(i) != Some(&Tok::Close) {
                list.push(value(toks.get(i)).ok_or(format!("bad list in {jql}"))?);
                i += 1;
                if toks.get(i) == Some(&Tok::Comma) {
                    i += 1;
                }
            }
            i += 1;
            clauses.push(Clause::In(field, list, negated));
        } else if let Some(Tok::Op(op)) = toks.get(i) {
            i += 1;
            let v = value(toks.get(i)).ok_or(format!("expected a value in {jql}"))?;
            i += 1;
            clauses.push(Clause::Cmp(field, op.clone(), v));
        } else {
            return Err(format!("unsupported JQL: {jql}"));
        }
        match word(toks.get(i)).as_deref() {
            Some("and") => i += 1,
            Some("order") => {
                i += 2; // ORDER BY
                order = word(toks.get(i));
                i += 1;
                desc = word(toks.get(i)).as_deref() == Some("desc");
                break;
            }
            None if i >= toks.len() => break,
            _ => return Err(format!("unsupported JQL: {jql}")),
        }
    }
    Ok(Query {
        clauses,
        order,
        desc,
    })
}

fn issue_type(issue: &Issue) -> String {
    issue.fields["issuetype"]["name"]
        .as_str()
        .unwrap_or("Change")
        .to_string()
}

fn matches(issue: &Issue, q: &Query, links: &[(u64, String, String)]) -> bool {
    q.clauses.iter().all(|c| match c {
        Clause::Cmp(f, op, v) if f == "project" && op == "=" => {
            issue.key.starts_with(&format!("{v}-"))
        }
        Clause::Cmp(f, op, v) if f == "labels" && op == "=" => issue.labels.contains(v),
        Clause::Cmp(f, op, v) if f == "labels" && op == "!=" => !issue.labels.contains(v),
        Clause::Cmp(f, op, v) if (f == "updated" || f == "created") && op == ">=" => {
            let day = NaiveDate::parse_from_str(v, "%Y-%m-%d").expect("JQL date");
            let t = if f == "updated" {
                issue.updated
            } else {
                issue.created
            };
            t.date_naive() >= day
        }
        // `created <= "2026-03-04"`: at or before that day's midnight (the user's zone: UTC).
        Clause::Cmp(f, op, v) if f == "created" && op == "<=" => {
            let day = NaiveDate::parse_from_str(v, "%Y-%m-%d").expect("JQL date");
            issue.created <= day.and_hms_opt(0, 0, 0).unwrap().and_utc()
        }
        Clause::In(f, list, negated) if f == "labels" => {
            issue.labels.iter().any(|l| list.contains(l)) != *negated
        }
        Clause::In(f, list, negated) if f == "issuetype" => {
            list.iter()
                .any(|t| t.eq_ignore_ascii_case(&issue_type(issue)))
                != *negated
        }
        Clause::LinkedTo(key) => links
            .iter()
            .any(|(_, a, b)| (a == key && *b == issue.key) || (b == key && *a == issue.key)),
        other => panic!("the fake does not evaluate {other:?}"),
    })
}

fn basic(user: &str, token: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{token}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(A[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

impl Respond for Fake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let method = req.method.to_string();
        let path = req.url.path().to_string();
        let response = st.handle(req);
        let code = response_status(&response);
        st.log.push((method, path, code));
        response
    }
}

/// wiremock does not expose a template's status; the fake keeps its own answer codes.
fn response_status(r: &ResponseTemplate) -> u16 {
    // ResponseTemplate's Debug output carries `status_code: NNN`.
    let text = format!("{r:?}");
    text.split("status_code: ")
        .nth(1)
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

impl State {
    /// `fields.issuelinks` of the issue `v` shows: the other issue of each link, with its
    /// summary, status, priority and type (or its status alone, as in the reference
    /// payload, when the script says so).
    fn add_links(&self, v: &mut Value, base: &str) {
        let key = v["key"].as_str().unwrap_or_default().to_string();
        let mut out = Vec::new();
        for (id, inward, outward) in &self.links {
            let (side, other) = if *inward == key {
                ("outwardIssue", outward)
            } else if *outward == key {
                ("inwardIssue", inward)
            } else {
                continue;
            };
            let Some(o) = self.issues.iter().find(|i| i.key == *other) else {
                continue;
            };
            let mut fields = json!({"status": status_json(&o.status)});
            if !self.script.links_without_type {
                fields["summary"] = o
                    .fields
                    .get("summary")
                    .cloned()
                    .unwrap_or(json!("a change"));
                fields["priority"] = json!({"id": "3", "name": "Medium"});
                fields["issuetype"] = o
                    .fields
                    .get("issuetype")
                    .cloned()
                    .unwrap_or(json!({"id": "10010", "name": "Change", "subtask": false}));
            }
            let mut link = json!({
                "id": id.to_string(),
                "self": format!("{base}/rest/api/3/issueLink/{id}"),
                "type": {"id": "10300", "name": "Problem/Incident", "inward": "is caused by", "outward": "causes"},
            });
            link[side] = json!({"id": o.id.to_string(), "key": o.key, "self": format!("{base}/rest/api/3/issue/{}", o.id), "fields": fields});
            out.push(link);
        }
        v["fields"]["issuelinks"] = Value::Array(out);
    }

    fn issue_mut(&mut self, key: &str) -> Option<&mut Issue> {
        self.issues
            .iter_mut()
            .find(|i| i.key == key || i.id.to_string() == key)
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let base = format!("{}://{}", req.url.scheme(), req.url.authority());
        if self.script.throttle > 0 {
            self.script.throttle -= 1;
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .insert_header("X-RateLimit-Reset", "2026-01-01T00:00Z")
                .insert_header("RateLimit-Reason", "jira-burst-based")
                .set_body_string("Rate limit exceeded.");
        }
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != basic(USER, TOKEN) {
            return ResponseTemplate::new(401).set_body_string("");
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let query: BTreeMap<String, String> = req
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // Jira ignores a query parameter it does not know: the request "works" and means
        // something else than the client thought.
        for k in query.keys() {
            if !QUERY_PARAMS.contains(&k.as_str()) {
                self.watch.flag(format!(
                    "{} {} with unknown query parameter {k:?}",
                    req.method,
                    req.url.path()
                ));
            }
        }
        let segs: Vec<&str> = req.url.path().trim_start_matches('/').split('/').collect();
        let now = Utc::now();
        match (req.method.as_str(), segs.as_slice()) {
            ("POST", ["rest", "api", "3", "search", "jql"]) => {
                check_body(&self.watch, "search", &body, &["jql", "fields", "properties", "maxResults", "nextPageToken", "reconcileIssues", "expand", "fieldsByKeys"], "");
                let jql = body["jql"].as_str().unwrap_or_default();
                let q = match read_jql(&self.watch, jql) {
                    Ok(q) => q,
                    Err(e) => return error(400, &[&e], json!({})),
                };
                let reconcile: Vec<u64> = body["reconcileIssues"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                let fields: Vec<String> = body["fields"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
                check_read_fields(&self.watch, "search", &fields);
                let props: Vec<String> = body["properties"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
                let cap = self.script.page_cap.unwrap_or(100);
                let max = (body["maxResults"].as_u64().unwrap_or(50) as usize).min(cap);
                let start: usize = body["nextPageToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
                let mut hits: Vec<&mut Issue> = Vec::new();
                for issue in self.issues.iter_mut() {
                    if !matches(issue, &q, &self.links) {
                        continue;
                    }
                    if issue.hidden_for > 0 && !reconcile.contains(&issue.id) {
                        issue.hidden_for -= 1;
                        continue;
                    }
                    hits.push(issue);
                }
                hits.sort_by_key(|i| i.id);
                if q.desc {
                    hits.reverse();
                }
                let total = hits.len();
                // `expand` is a comma string; `transitions.fields` gives each issue's
                // transitions as a read of the issue with them does.
                let expand = match &body["expand"] {
                    Value::Null => String::new(),
                    Value::String(e) => e.clone(),
                    other => {
                        self.watch.flag(format!("search expand is not a string: {other}"));
                        String::new()
                    }
                };
                for e in expand.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                    if !["transitions", "transitions.fields", "names", "schema", "changelog", "renderedFields", "operations", "editmeta", "versionedRepresentations"].contains(&e) {
                        self.watch.flag(format!("search expands unknown {e:?}"));
                    }
                }
                let transitions = expand.split(',').any(|e| e.trim().starts_with("transitions"));
                let mut page: Vec<Value> = hits.iter().skip(start).take(max).map(|i| i.view(&base, &fields, &props, transitions)).collect();
                if fields.iter().any(|f| f == "issuelinks") {
                    for v in &mut page {
                        self.add_links(v, &base);
                    }
                }
                let end = start + page.len();
                let mut out = json!({"issues": page, "isLast": end >= total});
                if end < total {
                    out["nextPageToken"] = json!(end.to_string());
                }
                ResponseTemplate::new(200).set_body_json(out)
            }
            ("POST", ["rest", "api", "3", "search", "approximate-count"]) => {
                let q = match read_jql(&self.watch, body["jql"].as_str().unwrap_or_default()) {
                    Ok(q) => q,
                    Err(e) => return error(400, &[&e], json!({})),
                };
                let n = self.issues.iter().filter(|i| matches(i, &q, &self.links)).count();
                ResponseTemplate::new(200).set_body_json(json!({"count": n}))
            }
            ("POST", ["rest", "api", "3", "issue"]) => {
                check_body(&self.watch, "create", &body, &["fields", "properties", "update"], "fields");
                let f = &body["fields"];
                if f["project"]["key"] != json!("CHG") {
                    return error(400, &[], json!({"project": "valid project is required"}));
                }
                if f["issuetype"]["name"] != json!("Change") {
                    return error(400, &[], json!({"issuetype": "Specify a valid issue type"}));
                }
                let missing: Map<String, Value> = self
                    .script
                    .required
                    .iter()
                    .filter(|(id, _)| f.get(id.as_str()).is_none())
                    .map(|(id, m)| (id.clone(), json!(m)))
                    .collect();
                if !missing.is_empty() {
                    return error(400, &[], Value::Object(missing));
                }
                self.next_id += 1;
                let id = 10000 + self.next_id;
                let key = format!("CHG-{}", self.next_id);
                let mut issue = Issue {
                    id,
                    key: key.clone(),
                    status: "Open".into(),
                    labels: f["labels"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect(),
                    fields: f.as_object().cloned().unwrap_or_default(),
                    props: Map::new(),
                    comments: Vec::new(),
                    resolution: None,
                    created: now,
                    updated: now,
                    approval: None,
                    hidden_for: 0,
                    history: Vec::new(),
                };
                issue.apply_props(body.get("properties"));
                issue.sync_approval();
                if let Some(s) = &self.script.status_on_create {
                    issue.status = s.clone();
                }
                self.issues.push(issue);
                ResponseTemplate::new(201).set_body_json(json!({"id": id.to_string(), "key": key, "self": format!("{base}/rest/api/3/issue/{id}")}))
            }
            ("GET", ["rest", "api", "3", "issue", key]) => {
                let fields: Vec<String> = query.get("fields").map(|f| f.split(',').map(str::to_string).collect()).unwrap_or_default();
                check_read_fields(&self.watch, "read", &fields);
                let props: Vec<String> = query.get("properties").map(|f| f.split(',').map(str::to_string).collect()).unwrap_or_default();
                let transitions = query.get("expand").is_some_and(|e| e.contains("transitions"));
                let Some(mut v) = self.issue_mut(key).map(|i| i.view(&base, &fields, &props, transitions)) else {
                    return error(404, &["Issue does not exist or you do not have permission to see it."], json!({}));
                };
                if fields.iter().any(|f| f == "issuelinks") {
                    self.add_links(&mut v, &base);
                }
                ResponseTemplate::new(200).set_body_json(v)
            }
            ("GET", ["rest", "api", "3", "issue", key, "changelog"]) => {
                let Some(i) = self.issue_mut(key) else {
                    return error(404, &["Issue does not exist or you do not have permission to see it."], json!({}));
                };
                let start: usize = query.get("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
                let max: usize = query.get("maxResults").and_then(|v| v.parse().ok()).unwrap_or(100).min(100);
                let total = i.history.len();
                let values: Vec<Value> = i
                    .history
                    .iter()
                    .enumerate()
                    .skip(start)
                    .take(max)
                    .map(|(n, (at, items))| json!({
                        "id": (30000 + n).to_string(),
                        "author": {"accountId": "qm:9", "displayName": "Someone"},
                        "created": jira_time(*at),
                        "items": items,
                    }))
                    .collect();
                let end = start + values.len();
                ResponseTemplate::new(200).set_body_json(json!({
                    "self": format!("{base}/rest/api/3/issue/{}/changelog?startAt={start}&maxResults={max}", i.id),
                    "maxResults": max, "startAt": start, "total": total, "isLast": end >= total,
                    "values": values,
                }))
            }
            ("PUT", ["rest", "api", "3", "issue", key]) => {
                check_body(&self.watch, "edit", &body, &["fields", "properties", "update"], "fields");
                for k in body["update"].as_object().into_iter().flatten().map(|(k, _)| k) {
                    if k != "labels" {
                        self.watch.flag(format!("edit updates unknown field {k:?}"));
                    }
                }
                let Some(i) = self.issue_mut(key) else {
                    return error(404, &["Issue does not exist or you do not have permission to see it."], json!({}));
                };
                let before = i.labels.join(" ");
                if let Some(ops) = body["update"].get("labels") {
                    i.apply_labels(ops);
                }
                if let Some(fields) = body["fields"].as_object() {
                    for (k, v) in fields {
                        if k == "labels" {
                            i.labels = v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
                            i.sync_approval();
                        } else {
                            i.fields.insert(k.clone(), v.clone());
                        }
                    }
                }
                i.apply_props(body.get("properties"));
                i.updated = now;
                let after = i.labels.join(" ");
                if before != after {
                    i.history.push((now, vec![json!({"field": "labels", "fieldtype": "jira", "from": null, "fromString": before, "to": null, "toString": after})]));
                }
                ResponseTemplate::new(204)
            }
            ("POST", ["rest", "api", "3", "issue", key, "comment"]) => {
                let Some(i) = self.issue_mut(key) else {
                    return error(404, &["Issue does not exist or you do not have permission to see it."], json!({}));
                };
                if body["body"]["type"] != json!("doc") {
                    return error(400, &["Comment body is not valid!"], json!({}));
                }
                i.comments.push(body.clone());
                i.updated = now;
                let n = i.comments.len();
                ResponseTemplate::new(201).set_body_json(json!({"id": format!("{}", 20000 + n), "body": body["body"], "jsdPublic": false}))
            }
            ("POST", ["rest", "api", "3", "issue", key, "transitions"]) => {
                let Some(i) = self.issue_mut(key) else {
                    return error(404, &["Issue does not exist or you do not have permission to see it."], json!({}));
                };
                let id = body["transition"]["id"].as_str().unwrap_or_default().to_string();
                let Some((_, _, to, screen)) = transitions_from(&i.status).into_iter().find(|t| t.0 == id) else {
                    return error(400, &[&format!("Transition id '{id}' is not valid for this issue.")], json!({}));
                };
                let resolution = body["fields"]["resolution"]["name"].as_str();
                if screen {
                    match resolution {
                        Some("Done" | "Won't Do") => i.resolution = resolution.map(str::to_string),
                        _ => return error(400, &[], json!({"resolution": "Resolution is required."})),
                    }
                } else if body.get("fields").is_some() {
                    return error(400, &[], json!({"resolution": "Field 'resolution' cannot be set. It is not on the appropriate screen, or unknown."}));
                }
                i.status = to.to_string();
                i.apply_props(body.get("properties"));
                i.updated = now;
                ResponseTemplate::new(204)
            }
            ("GET", ["rest", "servicedeskapi", "request", key, "approval"]) => {
                let script = self.script.clone();
                let Some(i) = self.issue_mut(key) else {
                    return ResponseTemplate::new(404).set_body_json(json!({"errorMessage": "The request could not be found."}));
                };
                let mut values = Vec::new();
                if let Some(a) = i.approval.as_mut() {
                    a.reads += 1;
                    if a.decision == "pending" {
                        if script.approve_after.is_some_and(|n| a.reads > n) {
                            let (name, email) = script.approver.clone().unwrap_or(("Ada Approver".into(), String::new()));
                            a.decision = "approved".into();
                            a.approver = name;
                            a.email = email;
                            a.at = Some(now);
                        } else if script.decline_after.is_some_and(|n| a.reads > n) {
                            a.decision = "declined".into();
                            a.approver = "Bob Boss".into();
                            a.at = Some(now);
                        }
                    }
                    let a = a.clone();
                    // The workflow follows the approval.
                    if i.status == "Waiting for approval" {
                        match a.decision.as_str() {
                            "approved" => i.status = "Awaiting implementation".into(),
                            "declined" => i.status = "Declined".into(),
                            _ => {}
                        }
                    }
                    let approvers = if a.approver.is_empty() {
                        json!([{"approver": {"accountId": "qm:1", "displayName": "Ada Approver"}, "approverDecision": "pending"}])
                    } else {
                        let mut user = json!({"accountId": "qm:2", "displayName": a.approver});
                        if !a.email.is_empty() {
                            user["emailAddress"] = json!(a.email);
                        }
                        json!([{"approver": user, "approverDecision": a.decision}])
                    };
                    let mut v = json!({
                        "id": "1", "name": "Change approval", "finalDecision": a.decision, "canAnswerApproval": false,
                        "approvers": approvers,
                        "createdDate": {"iso8601": "2026-01-01T10:00:00+0000", "epochMillis": 1767261600000i64},
                        "_links": {"self": format!("{base}/rest/servicedeskapi/request/{}/approval/1", i.id)},
                    });
                    if a.decision != "pending" {
                        let at = a.at.unwrap_or_else(|| DateTime::from_timestamp_millis(1767265200000).unwrap());
                        v["completedDate"] = json!({"iso8601": at.format("%Y-%m-%dT%H:%M:%S%z").to_string(), "epochMillis": at.timestamp_millis()});
                    }
                    values.push(v);
                }
                ResponseTemplate::new(200).set_body_json(json!({
                    "_expands": [], "size": values.len(), "start": 0, "limit": 50, "isLastPage": true,
                    "_links": {"base": format!("{base}/rest/servicedeskapi"), "context": "context"},
                    "values": values,
                }))
            }
            ("GET", ["rest", "servicedeskapi", "servicedesk"]) => ResponseTemplate::new(200).set_body_json(json!({
                "size": 2, "start": 0, "limit": 50, "isLastPage": true, "_links": {},
                "values": [
                    {"id": "7", "projectId": "10100", "projectName": "IT Help", "projectKey": "HELP"},
                    {"id": "9", "projectId": "10200", "projectName": "Changes", "projectKey": "CHG"},
                ],
            })),
            ("POST", ["rest", "servicedeskapi", "request"]) => {
                check_body(&self.watch, "request", &body, &["serviceDeskId", "requestTypeId", "requestFieldValues", "isAdfRequest", "raiseOnBehalfOf", "requestParticipants"], "requestFieldValues");
                if body["serviceDeskId"] != json!("9") || body["requestTypeId"] != json!("42") {
                    return ResponseTemplate::new(400).set_body_json(json!({"errorMessage": "The request type is invalid", "i18nErrorMessage": {"i18nKey": "sd.request.type.invalid", "parameters": []}}));
                }
                self.next_id += 1;
                let id = 10000 + self.next_id;
                let key = format!("CHG-{}", self.next_id);
                let mut fields = Map::new();
                fields.insert("summary".into(), body["requestFieldValues"]["summary"].clone());
                fields.insert("description".into(), body["requestFieldValues"]["description"].clone());
                fields.insert("requestType".into(), json!("42"));
                self.issues.push(Issue {
                    id,
                    key: key.clone(),
                    status: "Open".into(),
                    labels: Vec::new(),
                    fields,
                    props: Map::new(),
                    comments: Vec::new(),
                    resolution: None,
                    created: now,
                    updated: now,
                    approval: None,
                    hidden_for: 0,
                    history: Vec::new(),
                });
                ResponseTemplate::new(201).set_body_json(json!({
                    "issueId": id.to_string(), "issueKey": key, "requestTypeId": "42", "serviceDeskId": "9",
                    "currentStatus": {"status": "Open", "statusCategory": "NEW"},
                    "_links": {"web": format!("{base}/servicedesk/customer/portal/9/{key}"), "agent": format!("{base}/browse/{key}")},
                }))
            }
            // Not Jira's 404: a client could read that as "no such issue" (see `support::remote`).
            _ => self.watch.unexpected(req),
        }
    }
}

/// A running fake and a repository to run the binary in.
struct Site {
    server: Remote,
    state: Arc<Mutex<State>>,
    repo: tempfile::TempDir,
    sha: String,
}

impl Site {
    async fn start(script: Script, config: &str) -> Site {
        let server = Remote::start().await;
        let state = Arc::new(Mutex::new(State {
            watch: server.watch(),
            script,
            ..State::default()
        }));
        Mock::given(any())
            .respond_with(Fake(state.clone()))
            .mount(&server)
            .await;
        let repo = git_repo();
        std::fs::write(
            repo.path().join(".changegate.toml"),
            format!("[approval]\npoll = \"200ms\"\ntimeout = \"5s\"\n{config}"),
        )
        .expect("config");
        let sha = String::from_utf8(
            std::process::Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(repo.path())
                .output()
                .expect("git")
                .stdout,
        )
        .expect("utf8")
        .trim()
        .to_string();
        Site {
            server,
            state,
            repo,
            sha,
        }
    }

    /// Runs the binary against the fake; returns exit code, stdout, stderr.
    async fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with(args, TOKEN).await
    }

    async fn run_with(&self, args: &[&str], token: &str) -> (i32, String, String) {
        let mut cmd = changegate(self.repo.path());
        cmd.args(["--backend", "jira", "--format", "json"])
            .args(args)
            .env("CHANGEGATE_JIRA_URL", self.server.uri())
            .env("CHANGEGATE_JIRA_USER", USER)
            .env("CHANGEGATE_JIRA_TOKEN", token)
            .env("CHANGEGATE_JIRA_PROJECT", "CHG");
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
            .await
            .expect("joined");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn issue(&self, key: &str) -> Issue {
        self.with(|s| {
            s.issues
                .iter()
                .find(|i| i.key == key)
                .cloned()
                .expect("issue")
        })
    }

    /// Requests since `from` (an index into the log), by "METHOD path-shape".
    fn counts(&self, from: usize) -> BTreeMap<String, usize> {
        self.with(|s| {
            let mut out = BTreeMap::new();
            for (m, p, _) in &s.log[from..] {
                let shape: Vec<&str> = p
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with("CHG-") {
                            "{key}"
                        } else {
                            seg
                        }
                    })
                    .collect();
                *out.entry(format!("{m} {}", shape.join("/"))).or_insert(0) += 1;
            }
            out
        })
    }

    fn log_len(&self) -> usize {
        self.with(|s| s.log.len())
    }

    /// The requests since `from` that write (neither a read nor a search).
    fn writes(&self, from: usize) -> Vec<String> {
        self.counts(from)
            .into_keys()
            .filter(|k| !k.starts_with("GET ") && !k.contains("/search/"))
            .collect()
    }

    /// Commits a change to the repository at `when` (author and committer time); returns
    /// its SHA.
    fn commit(&self, at: DateTime<Utc>) -> String {
        let when = at.to_rfc3339();
        let git = |args: &[&str]| git_at(self.repo.path(), &when, args);
        let n = git(&["rev-list", "--count", "HEAD"]);
        std::fs::write(
            self.repo.path().join("app.txt"),
            format!("change {n} at {when}\n"),
        )
        .expect("write");
        git(&["add", "app.txt"]);
        git(&["commit", "-q", "-m", &format!("PAY-{n}: change {n}")]);
        git(&["rev-parse", "HEAD"])
    }

    /// An incident issue, linked to `change` at `when` (as "is caused by"); returns its key.
    fn link_incident(&self, change: &str, t: DateTime<Utc>) -> String {
        self.with(|s| {
            s.next_incident += 1;
            let key = format!("INC-{}", s.next_incident);
            let id = 20000 + s.next_incident;
            let mut fields = Map::new();
            fields.insert("issuetype".into(), json!({"id": "10004", "name": "Incident", "subtask": false}));
            fields.insert("summary".into(), json!("Checkout errors after the deploy"));
            s.issues.push(Issue {
                id,
                key: key.clone(),
                status: "Open".into(),
                labels: Vec::new(),
                fields,
                props: Map::new(),
                comments: Vec::new(),
                resolution: None,
                created: t,
                updated: t,
                approval: None,
                hidden_for: 0,
                history: vec![(t, vec![json!({"field": "Link", "fieldtype": "jira", "from": null, "fromString": null, "to": change, "toString": format!("This issue causes {change}")})])],
            });
            let link_id = 40000 + s.links.len() as u64;
            s.links.push((link_id, change.to_string(), key.clone()));
            let c = s.issue_mut(change).expect("the change exists");
            c.history.push((t, vec![json!({"field": "Link", "fieldtype": "jira", "from": null, "fromString": null, "to": key, "toString": format!("This issue is caused by {key}")})]));
            c.updated = t;
            key
        })
    }

    /// Closed, successful changes of this service decided `days_ago`, as earlier runs left them.
    fn seed_history(&self, n: usize, days_ago: i64) {
        for _ in 0..n {
            self.seed_change(days_ago, "success");
        }
    }

    /// One closed pre-approved change decided `days_ago` with `outcome`.
    fn seed_change(&self, days_ago: i64, outcome: &str) {
        self.with(|s| {
            {
                s.next_id += 1;
                let sha = format!("{:040x}", 0xabc000 + s.next_id);
                let key = format!("changegate:{SERVICE_ID}:{ENV}:{sha}");
                let decided = Utc::now() - Duration::days(days_ago);
                let mut props = Map::new();
                props.insert(PROPERTY.into(), json!({"key": key, "commit": sha, "outcome": outcome, "decided_at": decided, "deployed_at": decided}));
                s.issues.push(Issue {
                    id: 10000 + s.next_id,
                    key: format!("CHG-{}", s.next_id),
                    status: if outcome == "success" { "Completed" } else { "Failed" }.into(),
                    labels: vec![
                        labels::MARK.into(),
                        labels::service(SERVICE_ID, ENV),
                        labels::key(SERVICE_ID, ENV, &sha),
                        "changegate-pre-approved".into(),
                        labels::day(decided.date_naive()),
                        format!("changegate-{outcome}"),
                    ],
                    fields: Map::new(),
                    props,
                    comments: Vec::new(),
                    resolution: Some("Done".into()),
                    created: decided,
                    updated: decided,
                    approval: None,
                    hidden_for: 0,
                    history: Vec::new(),
                });
            }
        });
    }
}

fn json_out(stdout: &str) -> Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {stdout}"))
}

fn comment_text(c: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        if let Some(t) = v.get("text").and_then(Value::as_str) {
            out.push_str(t);
            out.push('\n');
        }
        for child in v
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(child, out);
        }
    }
    let mut out = String::new();
    walk(&c["body"], &mut out);
    out
}

fn total(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().sum()
}

// ---- the tests ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_approved_gate_then_record_with_counted_requests() {
    let site = Site::start(Script::default(), "").await;
    site.seed_history(5, 20);

    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["decision"], "pre-approved", "{report}");
    assert_eq!(report["state"], "implementing");
    assert_eq!(report["change_id"], "CHG-6");
    assert_eq!(
        report["change_url"],
        format!("{}/browse/CHG-6", site.server.uri())
    );
    let gate = site.counts(0);

    let issue = site.issue("CHG-6");
    assert_eq!(issue.status, "Implementing");
    assert!(
        issue
            .labels
            .contains(&labels::key(SERVICE_ID, ENV, &site.sha)),
        "{:?}",
        issue.labels
    );
    assert!(
        issue
            .labels
            .contains(&"changegate-pre-approved".to_string())
    );
    let stored = &issue.props[PROPERTY];
    assert_eq!(
        stored["key"],
        format!("changegate:{SERVICE_ID}:{ENV}:{}", site.sha)
    );
    assert_eq!(stored["decision"]["kind"], "pre-approved");
    assert!(stored["deployed_at"].is_string(), "{stored}");
    assert_eq!(issue.fields["issuetype"]["name"], "Change");
    assert!(
        issue.fields["summary"]
            .as_str()
            .unwrap()
            .contains("payments-api")
    );
    // The decision, with every rule, as one comment.
    assert_eq!(issue.comments.len(), 1);
    let note = comment_text(&issue.comments[0]);
    for code in ["track-record", "allowance", "freeze"] {
        assert!(note.contains(code), "{note}");
    }
    assert!(
        note.contains("5 closed") || note.contains("success rate 100%"),
        "{note}"
    );
    assert_eq!(
        issue.comments[0]["properties"][0]["key"],
        "sd.public.comment"
    );

    let mark = site.log_len();
    let (code, out, err) = site.run(&["record", "--outcome", "success"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["state"], "closed");
    assert_eq!(report["outcome"], "success");
    let record = site.counts(mark);

    let issue = site.issue("CHG-6");
    assert_eq!(issue.status, "Completed");
    assert_eq!(
        issue.resolution.as_deref(),
        Some("Done"),
        "the Complete screen needs a resolution"
    );
    assert!(issue.labels.contains(&"changegate-success".to_string()));
    assert_eq!(issue.props[PROPERTY]["outcome"], "success");
    assert_eq!(issue.comments.len(), 2);

    eprintln!(
        "requests for a pre-approved gate: {} {gate:#?}",
        total(&gate)
    );
    eprintln!("requests for record: {} {record:#?}", total(&record));
    // Gate: one search for the change and the track record (the service's changes fit in
    // a page), create, the duplicate check, comment, read + transition. Record: the lookup
    // (with the transitions: no second read), comment, edit, transition. (Before the
    // searches were folded: 9 + 5.)
    assert_eq!(total(&gate), 6, "{gate:#?}");
    assert_eq!(gate.get("POST /rest/api/3/search/jql"), Some(&2));
    assert_eq!(total(&record), 4, "{record:#?}");
    assert_eq!(
        record.get("GET /rest/api/3/issue/{key}"),
        None,
        "{record:#?}"
    );
    assert!(total(&gate) + total(&record) <= 10);
    assert_eq!(gate.get("POST /rest/api/3/issue"), Some(&1));
    assert_eq!(
        gate.get("POST /rest/api/3/issue/{key}/transitions"),
        Some(&1)
    );
    assert_eq!(
        record.get("POST /rest/api/3/issue/{key}/transitions"),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_jql_uses_the_allowance() {
    // A healthy earlier sprint grew the allowance from 2 to 4; four pre-approved changes
    // this sprint have used it up.
    let site = Site::start(Script::default(), "").await;
    site.seed_history(5, 20);
    site.seed_history(4, 0);
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["decision"], "needs-approval", "{report}");
    let allowance = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "allowance")
        .unwrap()
        .clone();
    assert_eq!(allowance["passed"], false, "{allowance}");
    assert!(
        allowance["reason"]
            .as_str()
            .unwrap()
            .contains("allowance 4 of 4"),
        "{allowance}"
    );
    let track = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "track-record")
        .unwrap()
        .clone();
    assert_eq!(track["passed"], true, "{track}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_granted_on_a_later_poll() {
    let site = Site::start(
        Script {
            approve_after: Some(2),
            ..Script::default()
        },
        "",
    )
    .await;
    // No history: the track record fails, so the change needs approval.
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["decision"], "needs-approval");
    assert_eq!(report["state"], "implementing");
    assert_eq!(report["approved_by"], "Ada Approver");
    assert!(err.contains("waiting for approval of CHG-1"), "{err}");
    assert!(
        err.contains("a change approver in jira approves CHG-1 at "),
        "{err}"
    );
    let issue = site.issue("CHG-1");
    assert_eq!(issue.status, "Implementing");
    // Three polls, the third sees the approval; once more for who gave it, which
    // [approval] separate_author checks.
    assert_eq!(issue.approval.as_ref().unwrap().reads, 4);
    let counts = site.counts(0);
    assert_eq!(
        counts["GET /rest/servicedeskapi/request/{key}/approval"], 4,
        "{counts:#?}"
    );
}

/// Separation of duties on an approval JSM reports: the change's author (the commit's
/// e-mail, dev@example.com) approving it does not count, and says which rule; with
/// `[approval] separate_author = false` it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_by_the_changes_author_does_not_count() {
    let by_author = Script {
        approve_after: Some(1),
        approver: Some(("Dev One".into(), "DEV@example.com".into())),
        ..Script::default()
    };
    let site = Site::start(by_author.clone(), "").await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("blocked"), Some("approved")),
        "{report}"
    );
    assert_eq!(report["policy_decision"], "needs-approval");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("CHG-1 was approved in jira only by its author dev@example.com (approved by Dev One (DEV@example.com))"),
        "{message}"
    );
    assert!(
        message.contains("[approval] separate_author = true"),
        "{message}"
    );
    // Not moved to implementation; JSM hears why, once.
    assert_eq!(site.issue("CHG-1").status, "Awaiting implementation");
    let refusals = || {
        site.issue("CHG-1")
            .comments
            .iter()
            .map(comment_text)
            .filter(|c| {
                c.starts_with("changegate decision: blocked") && c.contains("only by its author")
            })
            .count()
    };
    assert_eq!(refusals(), 1);
    // A re-run stays blocked and writes nothing more.
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(json_out(&out)["decision"], "blocked");
    assert_eq!(refusals(), 1);
    assert_eq!(site.issue("CHG-1").status, "Awaiting implementation");

    // Switched off, the author's approval counts.
    let site = Site::start(by_author, "separate_author = false\n").await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["state"], "implementing");
    assert_eq!(site.issue("CHG-1").status, "Implementing");

    // Another person's approval counts (by e-mail too, not only by name).
    let site = Site::start(
        Script {
            approve_after: Some(1),
            approver: Some(("Ada Approver".into(), "ada@example.com".into())),
            ..Script::default()
        },
        "",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["state"], "implementing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_blocks_with_the_approvers_name() {
    let site = Site::start(
        Script {
            decline_after: Some(1),
            ..Script::default()
        },
        "",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("blocked"), Some("rejected"))
    );
    assert_eq!(report["policy_decision"], "needs-approval");
    assert_eq!(report["approved_by"], "Bob Boss");
    assert_eq!(report["message"], "rejected by Bob Boss");
    assert_eq!(site.issue("CHG-1").status, "Declined");
    let blocked_comments = || {
        site.issue("CHG-1")
            .comments
            .iter()
            .map(comment_text)
            .filter(|c| c.starts_with("changegate decision: blocked"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        blocked_comments(),
        ["changegate decision: blocked\n (rejected by Bob Boss); the deploy does not go ahead.\n"]
    );

    // A re-run asked to wait returns at once, blocked, after reading the approvals again.
    let mark = site.log_len();
    let started = std::time::Instant::now();
    let (code, out, err) = site.run(&["gate", "--wait", "60s"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("blocked"), Some("rejected"))
    );
    assert_eq!(report["message"], "rejected by Bob Boss");
    let counts = site.counts(mark);
    assert_eq!(
        counts["GET /rest/servicedeskapi/request/{key}/approval"], 1,
        "{counts:#?}"
    );
    assert_eq!(
        counts.get("PUT /rest/api/3/issue/{key}"),
        None,
        "{counts:#?}"
    );
    assert_eq!(blocked_comments().len(), 1, "the note is written once");

    // The job records whatever happened; nothing was deployed, and Declined stays.
    let mark = site.log_len();
    let (code, out, err) = site.run(&["record", "--outcome", "failure"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["outcome"], "cancelled");
    assert_eq!(report["state"], "rejected");
    let counts = site.counts(mark);
    assert_eq!(
        counts.get("POST /rest/api/3/issue/{key}/transitions"),
        None,
        "{counts:#?}"
    );
    let issue = site.issue("CHG-1");
    assert_eq!(issue.status, "Declined");
    assert!(issue.labels.contains(&"changegate-cancelled".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_timeout_blocks() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site.run(&["gate", "--wait", "1s"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("blocked"), Some("awaiting-approval"))
    );
    assert_eq!(report["policy_decision"], "needs-approval");
    assert_eq!(report["message"], "approval timed out after 1 second");
    assert_eq!(site.issue("CHG-1").status, "Waiting for approval");
    let polls = site.counts(0)["GET /rest/servicedeskapi/request/{key}/approval"];
    assert!(
        (3..=8).contains(&polls),
        "polled {polls} times in 1s at 200ms"
    );
    // Approved late, in Jira: the re-run re-reads the approvals and passes.
    approve_in_jira(&site, "CHG-1");
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("needs-approval"), Some("implementing"))
    );
    assert_eq!(report["approved_by"], "Ada Approver");
}

/// An approver approves `key` in Jira (changing their mind, if they had declined it): the
/// approval flips and the workflow follows it.
fn approve_in_jira(site: &Site, key: &str) {
    site.with(|s| {
        let i = s.issues.iter_mut().find(|i| i.key == key).expect("issue");
        let a = i.approval.as_mut().expect("an approval");
        a.decision = "approved".into();
        a.approver = "Ada Approver".into();
        a.at = Some(Utc::now());
        i.status = "Awaiting implementation".into();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_then_approved_in_jira_passes_on_rerun() {
    let site = Site::start(
        Script {
            decline_after: Some(0),
            ..Script::default()
        },
        "",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(json_out(&out)["decision"], "blocked");
    approve_in_jira(&site, "CHG-1");
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["decision"].as_str(), report["state"].as_str()),
        (Some("needs-approval"), Some("implementing"))
    );
    assert_eq!(site.issue("CHG-1").status, "Implementing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_then_enforce_on_the_same_commit_decides_again() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site.run(&["--mode", "observe", "gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = site
        .run(&["--mode", "enforce", "gate", "--wait", "0"])
        .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (
            report["mode"].as_str(),
            report["decision"].as_str(),
            report["state"].as_str()
        ),
        (
            Some("enforce"),
            Some("needs-approval"),
            Some("awaiting-approval")
        )
    );
    let issue = site.issue("CHG-1");
    assert!(
        !issue.labels.contains(&labels::OBSERVE.to_string()),
        "{:?}",
        issue.labels
    );
    assert_eq!(site.with(|s| s.issues.len()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_finds_the_same_issue() {
    let site = Site::start(Script::default(), "[policy]\nmin_history = 0\n").await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["decision"], "pre-approved");
    let mark = site.log_len();
    let (code, out2, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out2}\n{err}");
    let (a, b) = (json_out(&out), json_out(&out2));
    assert_eq!(a["change_id"], b["change_id"]);
    assert_eq!(b["decision"], "pre-approved");
    assert_eq!(
        b["rules"], a["rules"],
        "the standing decision is kept, not re-decided"
    );
    assert_eq!(site.with(|s| s.issues.len()), 1);
    assert_eq!(site.issue("CHG-1").comments.len(), 1);
    let rerun = site.counts(mark);
    assert_eq!(rerun.get("POST /rest/api/3/issue"), None, "{rerun:#?}");
    assert_eq!(
        rerun.get("POST /rest/api/3/search/approximate-count"),
        None,
        "no history read for a standing decision"
    );
    eprintln!("requests for a re-run: {} {rerun:#?}", total(&rerun));
    // The survey (which finds the issue), the read before the transition check.
    assert_eq!(total(&rerun), 2, "{rerun:#?}");
}

/// More changes than a search page holds: the survey cannot tell the change is not there,
/// so it is looked up by its key; a re-run finds it the same way, and `record` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_more_changes_than_a_page_finds_its_change_by_key() {
    let site = Site::start(
        Script {
            page_cap: Some(10),
            ..Script::default()
        },
        "",
    )
    .await;
    site.seed_history(30, 20);
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let first = json_out(&out);
    assert_eq!(first["decision"], "pre-approved", "{first}");
    assert_eq!(first["change_id"], "CHG-31");
    let mark = site.log_len();
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let again = json_out(&out);
    assert_eq!(again["change_id"], "CHG-31");
    let rerun = site.counts(mark);
    assert_eq!(rerun.get("POST /rest/api/3/issue"), None, "{rerun:#?}");
    let (code, out, err) = site.run(&["record", "--outcome", "success"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["state"], "closed");
    assert_eq!(site.issue("CHG-31").status, "Completed");
    assert_eq!(site.with(|s| s.issues.len()), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_run_converges_on_the_lower_id() {
    // Another run created this change's issue a moment ago; the search index has not
    // caught up with it yet, so this run creates too, then notices and stands down.
    let site = Site::start(Script::default(), "[policy]\nmin_history = 0\n").await;
    site.with(|s| {
        s.next_id += 1;
        let key = format!("changegate:{SERVICE_ID}:{ENV}:{}", site.sha);
        let mut props = Map::new();
        props.insert(PROPERTY.into(), json!({"key": key}));
        let now = Utc::now();
        s.issues.push(Issue {
            id: 10001,
            key: "CHG-1".into(),
            status: "Open".into(),
            labels: vec![
                labels::MARK.into(),
                labels::service(SERVICE_ID, ENV),
                labels::key(SERVICE_ID, ENV, &site.sha),
            ],
            fields: Map::new(),
            props,
            comments: Vec::new(),
            resolution: None,
            created: now,
            updated: now,
            approval: None,
            hidden_for: 1,
            history: Vec::new(),
        });
    });
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["change_id"], "CHG-1", "{err}");
    let first = site.issue("CHG-1");
    assert_eq!(first.status, "Implementing");
    assert_eq!(first.props[PROPERTY]["decision"]["kind"], "pre-approved");
    let dup = site.issue("CHG-2");
    assert_eq!(dup.status, "Canceled");
    assert!(
        dup.labels.contains(&labels::DUPLICATE.to_string()),
        "{:?}",
        dup.labels
    );
    assert!(
        !dup.labels
            .contains(&labels::key(SERVICE_ID, ENV, &site.sha))
    );
    // Later lookups see one change.
    let (code, out, _) = site.run(&["status"]).await;
    assert_eq!(code, 0);
    assert_eq!(json_out(&out)["change_id"], "CHG-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_the_workflow_already_made_are_skipped() {
    // An automation moves new changes straight to Implementing.
    let site = Site::start(
        Script {
            status_on_create: Some("Implementing".into()),
            ..Script::default()
        },
        "[policy]\nmin_history = 0\n",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["state"], "implementing");
    let gate = site.counts(0);
    assert_eq!(
        gate.get("POST /rest/api/3/issue/{key}/transitions"),
        None,
        "{gate:#?}"
    );
    assert!(site.issue("CHG-1").props[PROPERTY]["deployed_at"].is_string());

    // Someone (or the deployment integration) completes it before the job records.
    site.with(|s| s.issues[0].status = "Completed".into());
    let mark = site.log_len();
    let (code, out, err) = site.run(&["record", "--outcome", "success"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["state"], "closed");
    assert_eq!(report["outcome"], "success");
    let record = site.counts(mark);
    assert_eq!(
        record.get("POST /rest/api/3/issue/{key}/transitions"),
        None,
        "{record:#?}"
    );
    let issue = site.issue("CHG-1");
    assert!(issue.labels.contains(&"changegate-success".to_string()));
    assert_eq!(issue.comments.len(), 2);

    // Recording twice is harmless.
    let (code, out, _) = site.run(&["record", "--outcome", "failure"]).await;
    assert_eq!(code, 0);
    assert_eq!(json_out(&out)["outcome"], "success");
    assert_eq!(site.issue("CHG-1").comments.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_then_served() {
    let site = Site::start(
        Script {
            throttle: 2,
            ..Script::default()
        },
        "[policy]\nmin_history = 0\n",
    )
    .await;
    let started = std::time::Instant::now();
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["state"], "implementing");
    let throttled = site.with(|s| s.log.iter().filter(|(_, _, c)| *c == 429).count());
    assert_eq!(throttled, 2);
    assert!(err.contains("429"), "the retry is logged: {err}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_errors_are_quoted_verbatim() {
    let mut required = BTreeMap::new();
    required.insert(
        "customfield_10100".to_string(),
        "Backout plan is required.".to_string(),
    );
    let site = Site::start(
        Script {
            required,
            ..Script::default()
        },
        "[policy]\nmin_history = 0\n",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("customfield_10100: Backout plan is required."),
        "{err}"
    );
    assert!(err.contains("400"), "{err}");
    assert!(
        err.contains("[jira.extra_fields]"),
        "the hint says where to fix it: {err}"
    );
    assert_eq!(site.with(|s| s.issues.len()), 0);

    // With the field supplied, the same gate goes through.
    std::fs::write(
        site.repo.path().join(".changegate.toml"),
        "[policy]\nmin_history = 0\n[jira.extra_fields]\ncustomfield_10100 = \"Roll back with the previous image\"\n",
    )
    .unwrap();
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        site.issue("CHG-1").fields["customfield_10100"],
        "Roll back with the previous image"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_explained_and_never_printed() {
    let site = Site::start(Script::default(), "").await;
    let wrong = "wrong-token-value-123";
    let (code, out, err) = site.run_with(&["gate", "-vv"], wrong).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains("CHANGEGATE_JIRA_TOKEN") && err.contains("API token"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !out.contains(wrong),
        "the token leaked"
    );
    assert!(!err.contains(TOKEN) && !out.contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_raised_as_jsm_requests() {
    let site = Site::start(
        Script::default(),
        "[policy]\nmin_history = 0\n[jira]\nrequest_type = \"42\"\n",
    )
    .await;
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["change_id"], "CHG-1");
    let issue = site.issue("CHG-1");
    assert_eq!(issue.fields["requestType"], "42");
    assert!(
        issue
            .labels
            .contains(&labels::key(SERVICE_ID, ENV, &site.sha))
    );
    assert_eq!(issue.props[PROPERTY]["decision"]["kind"], "pre-approved");
    assert_eq!(issue.status, "Implementing");
    let counts = site.counts(0);
    assert_eq!(counts["POST /rest/servicedeskapi/request"], 1);
    assert_eq!(counts["GET /rest/servicedeskapi/servicedesk"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_fails_closed() {
    let site = Site::start(Script::default(), "").await;
    let out = tokio::task::spawn_blocking({
        let dir = site.repo.path().to_path_buf();
        move || {
            changegate(Path::new(&dir))
                .args(["--backend", "jira", "gate"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CHANGEGATE_JIRA_URL"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_requests_do_not_grow_with_the_history() {
    // The same history read two ways (pages of 100: tallies from one search; pages of 10:
    // too many pages, so approximate counts per sprint), and a history ten times larger.
    async fn explain(changes: usize, page_cap: usize) -> (Value, usize) {
        let site = Site::start(
            Script {
                page_cap: Some(page_cap),
                ..Script::default()
            },
            "",
        )
        .await;
        for i in 0..changes {
            let days_ago = 1 + (i as i64 * 7) % 300;
            site.seed_change(days_ago, if i % 10 == 0 { "failure" } else { "success" });
        }
        let (code, out, err) = site.run(&["policy", "explain"]).await;
        assert_eq!(code, 0, "{out}\n{err}");
        (json_out(&out), total(&site.counts(0)))
    }
    let (searched, few) = explain(60, 100).await;
    let (counted, many_pages) = explain(60, 10).await;
    let (_, ten_times) = explain(600, 10).await;
    eprintln!(
        "history requests: {few} (60 changes, one tally search), {many_pages} (60 changes counted per sprint), {ten_times} (600 changes)"
    );
    assert_eq!(
        many_pages, ten_times,
        "requests must not grow with the history"
    );
    // One search: the page of the service's changes is the whole track record.
    assert_eq!(few, 1, "{few}");
    for key in [
        "allowance",
        "used",
        "closed_total",
        "recent_window",
        "recent_success_rate",
        "next_allowance",
    ] {
        assert_eq!(
            searched[key], counted[key],
            "{key}: {searched} vs {counted}"
        );
    }
    assert_eq!(searched["closed_total"], 60);
    let rates = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["replay"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["sprint"].clone(),
                    s["allowance"].clone(),
                    s["tally"]["failed"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(rates(&searched), rates(&counted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_never_waits_nor_blocks() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site.run(&["--mode", "observe", "gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["decision"], "needs-approval");
    assert_eq!(report["mode"], "observe");
    let issue = site.issue("CHG-1");
    // The approval step offers no move to Implementing: the change stays where it is,
    // and the deploy's start is still recorded.
    assert_eq!(issue.status, "Waiting for approval");
    assert!(issue.labels.contains(&labels::OBSERVE.to_string()));
    assert!(issue.props[PROPERTY]["deployed_at"].is_string());
    assert_eq!(
        site.counts(0)
            .get("GET /rest/servicedeskapi/request/{key}/approval"),
        None,
        "observe mode does not wait"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let site = Site::start(Script::default(), "[policy]\nmin_history = 0\n").await;
    let (code, out, err) = site.run(&["--dry-run", "gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["decision"], "pre-approved");
    let writes: Vec<String> = site
        .counts(0)
        .into_keys()
        .filter(|k| !k.contains("/search/") && !k.starts_with("GET "))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(site.with(|s| s.issues.len()), 0);
}

/// `open` and `record` in a dry run write nothing either, before and after the change exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_of_open_and_record_write_nothing() {
    let site = Site::start(Script::default(), "[policy]\nmin_history = 0\n").await;
    for args in [
        &["--dry-run", "open"][..],
        &["--dry-run", "record", "--outcome", "success"],
    ] {
        let mark = site.log_len();
        let _ = site.run(args).await;
        assert!(
            site.writes(mark).is_empty(),
            "{args:?}: {:?}",
            site.writes(mark)
        );
    }
    assert_eq!(site.with(|s| s.issues.len()), 0);
    let (code, out, err) = site.run(&["gate"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    for args in [
        &["--dry-run", "gate"][..],
        &["--dry-run", "open"],
        &["--dry-run", "record", "--outcome", "success"],
    ] {
        let mark = site.log_len();
        let (code, out, err) = site.run(args).await;
        assert_eq!(code, 0, "{args:?}: {out}\n{err}");
        assert!(
            site.writes(mark).is_empty(),
            "{args:?}: {:?}",
            site.writes(mark)
        );
    }
}

mod check;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_change_ships_in_the_range_of_the_next() {
    let site = Site::start(
        Script::default(),
        "[policy]\nmin_history = 0\n[risk]\nsensitive_paths = [\"migrations/**\"]\n",
    )
    .await;
    let dir = site.repo.path();
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = site.run(&["record", "--outcome", "success"]).await;
    assert_eq!(code, 0, "{out}\n{err}");

    let when = Utc::now().to_rfc3339();
    std::fs::create_dir_all(dir.join("migrations")).expect("mkdir");
    std::fs::write(dir.join("migrations/001_drop.sql"), "drop table t;\n").expect("write");
    git_at(dir, &when, &["add", "migrations"]);
    git_at(dir, &when, &["commit", "-q", "-m", "PAY-2: drop t"]);
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let (code, out, err) = site.run(&["record", "--outcome", "failure"]).await;
    assert_eq!(code, 0, "{out}\n{err}");

    // The next change starts at the last successful deploy, not at the blocked one.
    site.commit(Utc::now());
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    let paths = report["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["code"] == "risk-paths")
        .expect("risk-paths");
    assert_eq!(
        paths["reason"], "touches sensitive paths: migrations/001_drop.sql",
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_observe_decision_does_not_let_an_enforce_run_pass() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site
        .run(&["--mode", "observe", "gate", "--wait", "0"])
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    // Nobody approved it (observe mode deployed anyway); someone completes it in Jira.
    site.with(|s| {
        let i = s
            .issues
            .iter_mut()
            .find(|i| i.key == "CHG-1")
            .expect("issue");
        assert_eq!(i.status, "Waiting for approval");
        i.status = "Completed".into();
    });
    let mark = site.log_len();
    let (code, out, err) = site
        .run(&["--mode", "enforce", "gate", "--wait", "0"])
        .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["mode"].as_str(), report["decision"].as_str()),
        (Some("enforce"), Some("needs-approval"))
    );
    let writes = site
        .counts(mark)
        .keys()
        .filter(|k| !k.starts_with("GET ") && !k.contains("/search"))
        .count();
    assert_eq!(writes, 0, "the closed issue is not reopened");
    assert_eq!(site.issue("CHG-1").status, "Completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_read_from_labels_alone_is_decided_again() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site
        .run(&["--mode", "observe", "gate", "--wait", "0"])
        .await;
    assert_eq!(code, 0, "{out}\n{err}");
    site.with(|s| {
        // The workflow let the observe change into Implementing, the property's decision is
        // gone and someone tidied the observe label away: the labels alone would read as an
        // enforce decision that already passed.
        let i = s
            .issues
            .iter_mut()
            .find(|i| i.key == "CHG-1")
            .expect("issue");
        i.status = "Implementing".into();
        if let Some(Value::Object(p)) = i.props.get_mut(PROPERTY) {
            p.remove("decision");
        }
        i.labels.retain(|l| l != labels::OBSERVE);
    });
    let (code, out, err) = site
        .run(&["--mode", "enforce", "gate", "--wait", "0"])
        .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (report["mode"].as_str(), report["decision"].as_str()),
        (Some("enforce"), Some("needs-approval"))
    );
    assert_ne!(report["state"], "implementing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_after_a_timed_out_wait_says_blocked_as_the_ledger_does() {
    let site = Site::start(Script::default(), "").await;
    let (code, out, err) = site.run(&["gate", "--wait", "1s"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(json_out(&out)["decision"], "blocked");
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json_out(&out);
    assert_eq!(
        (
            report["decision"].as_str(),
            report["policy_decision"].as_str(),
            report["state"].as_str()
        ),
        (
            Some("blocked"),
            Some("needs-approval"),
            Some("awaiting-approval")
        )
    );
    // Approved late: the timeout no longer counts.
    approve_in_jira(&site, "CHG-1");
    let (code, out, err) = site.run(&["gate", "--wait", "0"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(json_out(&out)["decision"], "needs-approval");
}
