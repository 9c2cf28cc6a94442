//! The fake ServiceNow instance: one stateful responder behind wiremock.

use super::*;
use crate::support::remote::{UNEXPECTED, Watch};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

pub type Rec = BTreeMap<String, String>;

/// Fields a change_request has on the fake instance; anything else in a query or a write
/// is flagged as an anomaly and fails the test when its `Remote` is dropped (a real
/// instance silently ignores unknown fields, which is exactly the kind of bug a test
/// should see).
const FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "type",
    "state",
    "approval",
    "approval_set",
    "correlation_id",
    "correlation_display",
    "justification",
    "close_code",
    "close_notes",
    "work_start",
    "work_end",
    "sys_created_on",
    "sys_updated_on",
    "closed_at",
    "short_description",
    "description",
    "assignment_group",
    "work_notes",
    "comments",
    "category",
    "cmdb_ci",
    "std_change_producer_version",
    "active",
    "phase",
    "backout_plan",
    "implementation_plan",
    "test_plan",
    "risk",
    "impact",
    "priority",
    "upon_reject",
    "parent",
    "start_date",
    "end_date",
];

/// Fields of an incident on the fake instance.
const INCIDENT_FIELDS: &[&str] = &[
    "sys_id",
    "number",
    "state",
    "caused_by",
    "rfc",
    "short_description",
    "sys_created_on",
    "sys_updated_on",
];

/// Fields of an approval on the fake instance.
const APPROVAL_FIELDS: &[&str] = &["sys_id", "sysapproval", "approver", "comments", "state"];

/// An answer of the fake instance: sent by wiremock for a call on its own, or carried (status,
/// headers, Base64 body) in a Batch API answer for a call inside `POST /api/now/v1/batch`.
/// The builder is wiremock's `ResponseTemplate`'s, whose parts cannot be read back.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    mime: Option<String>,
    delay: Option<Duration>,
}

impl Answer {
    pub fn new(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            mime: None,
            delay: None,
        }
    }

    pub fn set_body_json<B: serde::Serialize>(mut self, body: B) -> Answer {
        self.body = serde_json::to_vec(&body).unwrap();
        self.mime = Some("application/json".into());
        self
    }

    pub fn set_body_raw(mut self, body: &str, mime: &str) -> Answer {
        self.body = body.as_bytes().to_vec();
        self.mime = Some(mime.into());
        self
    }

    pub fn set_body_string(self, body: impl Into<String>) -> Answer {
        self.set_body_raw(&body.into(), "text/plain")
    }

    pub fn insert_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Answer {
        let name = name.into();
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        self.headers.push((name, value.into()));
        self
    }

    pub fn set_delay(mut self, delay: Duration) -> Answer {
        self.delay = Some(delay);
        self
    }

    /// The answer as wiremock sends it.
    pub fn into_template(self) -> ResponseTemplate {
        let mut t = ResponseTemplate::new(self.status);
        if let Some(mime) = &self.mime {
            t = t.set_body_raw(self.body, mime);
        }
        for (name, value) in self.headers {
            t = t.insert_header(name.as_str(), value.as_str());
        }
        match self.delay {
            Some(d) => t.set_delay(d),
            None => t,
        }
    }

    /// The answer as a Batch API item carries it.
    fn serviced(&self, id: &str, exclude_headers: bool) -> Value {
        let mut headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        if let Some(mime) = &self.mime {
            headers.push(json!({"name": "Content-Type", "value": mime}));
        }
        let mut item = json!({
            "id": id,
            "status_code": self.status,
            "status_text": status_text(self.status),
            "headers": if exclude_headers { Vec::new() } else { headers },
            "body": BASE64.encode(&self.body),
            "execution_time": 1,
        });
        if self.status >= 400 {
            let message = serde_json::from_slice::<Value>(&self.body)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or_else(|| status_text(self.status).to_string());
            item["error_message"] = json!(message);
        }
        item
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        406 => "Not Acceptable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Whether the instance offers the Batch API (`POST /api/now/v1/batch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchApi {
    #[default]
    Offered,
    /// Not there (an older release, or the endpoint disabled): 404.
    Missing,
    /// There, but not for this user (an ACL on the endpoint): 403.
    Forbidden,
}

/// One round trip to the instance; a batch's calls are its `items`.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// The `Host` header: the instance the client meant (through a proxy, not the fake's).
    pub host: String,
    pub path: String,
    pub query: String,
    pub at: Instant,
    /// The calls a `POST /api/now/v1/batch` carried, in order.
    pub items: Vec<Logged>,
}

impl Logged {
    fn of(req: &Request) -> Logged {
        Logged {
            method: req.method.to_string(),
            host: req
                .headers
                .get("host")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
            path: req.url.path().to_string(),
            query: req.url.query().unwrap_or("").to_string(),
            at: Instant::now(),
            items: Vec::new(),
        }
    }

    /// Whether this round trip was a batch.
    pub fn is_batch(&self) -> bool {
        self.path == BATCH_PATH
    }
}

const BATCH_PATH: &str = "/api/now/v1/batch";

#[derive(Debug, Clone)]
pub enum Verdict {
    Approve,
    Reject(String),
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer this status with this body (and `Retry-After` seconds when given).
    Status(u16, Value, Option<u64>),
    /// A 200 whose body is cut off mid-JSON.
    Malformed,
    /// No answer for ten minutes: a silent instance.
    Silent,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub times: u32,
    pub kind: FaultKind,
}

#[derive(Default)]
pub struct Sn {
    pub changes: Vec<Rec>,
    pub incidents: Vec<Rec>,
    pub journal: Vec<(String, String, String)>,
    pub approvals: Vec<Rec>,
    /// Standard change templates: `(sys_id, name, version sys_id)`.
    pub templates: Vec<(String, String, String)>,
    /// Templates changes were once made from that can no longer be used: dot-walks from
    /// old changes still name them (as active), creating from them answers 404.
    pub retired_templates: Vec<(String, String, String)>,
    pub log: Vec<Logged>,
    /// Where anomalies and unknown routes go: the test's `Remote`'s list, checked at drop.
    pub watch: Watch,
    pub next: u64,
    pub basic: Option<(String, String)>,
    pub oauth_client: Option<(String, String)>,
    pub tokens: Vec<String>,
    pub approve_after: Option<(u32, Verdict)>,
    /// The user the approvals of new changes are asked of: `sys_user` fields `sys_id`,
    /// `name`, `user_name`, `email`. Default: Jane Approver.
    pub approver: Option<Rec>,
    pub polls: HashMap<String, u32>,
    pub faults: Vec<Fault>,
    pub lookup_delay: Option<Duration>,
    pub deny_delete: bool,
    pub batch_api: BatchApi,
}

/// The approver of every change unless a test names another.
pub fn jane() -> Rec {
    user(
        "a8f98bb0eb32010045e1a5115206fe3a",
        "Jane Approver",
        "jane.approver",
        "jane.approver@example.com",
    )
}

/// A `sys_user`: its sys_id, name, user name and e-mail.
pub fn user(sys_id: &str, name: &str, user_name: &str, email: &str) -> Rec {
    [
        ("sys_id", sys_id),
        ("name", name),
        ("user_name", user_name),
        ("email", email),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn now() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn error(status: u16, message: &str, detail: &str) -> Answer {
    Answer::new(status).set_body_json(json!({
        "error": {"message": message, "detail": detail},
        "status": "failure"
    }))
}

fn model(kind: &str) -> &'static [i64] {
    match kind {
        "standard" => &[-5, -2, -1, 0, 3],
        "emergency" => &[-5, -3, -2, -1, 0, 3],
        _ => &[-5, -4, -3, -2, -1, 0, 3],
    }
}

fn label(state: i64) -> &'static str {
    match state {
        -5 => "New",
        -4 => "Assess",
        -3 => "Authorize",
        -2 => "Scheduled",
        -1 => "Implement",
        0 => "Review",
        3 => "Closed",
        4 => "Canceled",
        _ => "?",
    }
}

/// One term of an encoded query.
#[derive(Debug)]
struct Cond {
    field: String,
    op: String,
    value: String,
}

struct Query {
    /// AND of OR-groups.
    groups: Vec<Vec<Cond>>,
    order: Vec<(String, bool)>,
}

const OPS: &[&str] = &[
    "!=",
    ">=",
    "<=",
    "=",
    ">",
    "<",
    "STARTSWITH",
    "ENDSWITH",
    "LIKE",
    "NOT LIKE",
    "NOT IN",
    "IN",
    "ISEMPTY",
    "ISNOTEMPTY",
];

fn parse_query(q: &str, fields: &[&str], anomalies: &Watch) -> Query {
    let mut query = Query {
        groups: Vec::new(),
        order: Vec::new(),
    };
    let q = q.replace("^^", "\u{1}");
    for term in q.split('^').filter(|t| !t.is_empty()) {
        let term = term.replace('\u{1}', "^");
        if let Some(f) = term.strip_prefix("ORDERBYDESC") {
            query.order.push((f.to_string(), true));
            continue;
        }
        if let Some(f) = term.strip_prefix("ORDERBY") {
            query.order.push((f.to_string(), false));
            continue;
        }
        let (or, term) = match term.strip_prefix("OR") {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => {
                (true, rest.to_string())
            }
            _ => (false, term),
        };
        let split = term
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
            .unwrap_or(term.len());
        let (field, rest) = term.split_at(split);
        let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
            anomalies.flag(format!("unparsable query term {term:?}"));
            continue;
        };
        if !fields.contains(&field) {
            anomalies.flag(format!("query on unknown field {field:?}"));
        }
        let cond = Cond {
            field: field.to_string(),
            op: op.to_string(),
            value: rest[op.len()..].to_string(),
        };
        match (or, query.groups.last_mut()) {
            (true, Some(g)) => g.push(cond),
            _ => query.groups.push(vec![cond]),
        }
    }
    query
}

fn cmp_values(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

fn holds(rec: &Rec, c: &Cond) -> bool {
    let v = rec.get(&c.field).map(String::as_str).unwrap_or("");
    use std::cmp::Ordering::*;
    match c.op.as_str() {
        "=" => v == c.value,
        "!=" => v != c.value,
        ">=" => !v.is_empty() && cmp_values(v, &c.value) != Less,
        "<=" => !v.is_empty() && cmp_values(v, &c.value) != Greater,
        ">" => !v.is_empty() && cmp_values(v, &c.value) == Greater,
        "<" => !v.is_empty() && cmp_values(v, &c.value) == Less,
        "STARTSWITH" => v.starts_with(&c.value),
        "ENDSWITH" => v.ends_with(&c.value),
        "LIKE" => v.contains(&c.value),
        "NOT LIKE" => !v.contains(&c.value),
        "IN" => c.value.split(',').any(|x| x == v),
        "NOT IN" => !c.value.split(',').any(|x| x == v),
        "ISEMPTY" => v.is_empty(),
        "ISNOTEMPTY" => !v.is_empty(),
        _ => false,
    }
}

fn select<'a>(rows: &'a [Rec], q: &Query) -> Vec<&'a Rec> {
    let mut out: Vec<&Rec> = rows
        .iter()
        .filter(|r| q.groups.iter().all(|g| g.iter().any(|c| holds(r, c))))
        .collect();
    out.sort_by(|a, b| {
        for (field, desc) in &q.order {
            let x = a.get(field).map(String::as_str).unwrap_or("");
            let y = b.get(field).map(String::as_str).unwrap_or("");
            // Empty values sort lowest, as NULLs do.
            let o = match (x.is_empty(), y.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => cmp_values(x, y),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    out
}

fn params(req: &Request) -> HashMap<String, String> {
    req.url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `sysparm_limit` (default 10,000) and `sysparm_offset` of a list request.
fn paging(p: &HashMap<String, String>) -> (usize, usize) {
    let get = |k: &str, default| p.get(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    (get("sysparm_limit", 10_000), get("sysparm_offset", 0))
}

/// A Table API list answer: the page, `X-Total-Count`, and a `Link` to the next page when
/// there is one.
fn list_reply(
    req: &Request,
    page: Vec<Value>,
    total: usize,
    limit: usize,
    offset: usize,
) -> Answer {
    let t = Answer::new(200)
        .set_body_json(json!({ "result": page }))
        .insert_header("X-Total-Count", total.to_string());
    if offset + limit >= total {
        return t;
    }
    t.insert_header(
        "Link",
        format!(
            "<{}?sysparm_offset={}&sysparm_limit={limit}>;rel=\"next\"",
            req.url.path(),
            offset + limit
        ),
    )
}

pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{password}").as_bytes()))
}

impl Sn {
    pub fn id(&mut self) -> String {
        self.next += 1;
        format!("{:016x}{:016x}", 0x5e41_0000_u64, self.next)
    }

    fn number(&mut self) -> String {
        format!("CHG{:07}", 30_000 + self.changes.len() + 1)
    }

    pub fn find(&self, key: &str) -> Vec<&Rec> {
        self.changes
            .iter()
            .filter(|c| c.get("correlation_id").map(String::as_str) == Some(key))
            .collect()
    }

    pub fn notes(&self, sys_id: &str) -> Vec<String> {
        self.journal
            .iter()
            .filter(|(id, el, _)| id == sys_id && el == "work_notes")
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    /// The calls the instance served, whether on their own or inside a batch.
    pub fn calls(&self, from: usize) -> impl Iterator<Item = &Logged> {
        self.log[from..].iter().flat_map(|l| {
            if l.is_batch() {
                l.items.iter().collect::<Vec<_>>()
            } else {
                vec![l]
            }
        })
    }

    /// Calls (on their own or in a batch) of `method` on a path holding `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.calls(0)
            .filter(|l| l.method == method && l.path.contains(path_contains))
            .count()
    }

    /// Round trips since `from` that were batches.
    pub fn batches(&self, from: usize) -> usize {
        self.log[from..].iter().filter(|l| l.is_batch()).count()
    }

    /// Adds a closed change to the history (as if an earlier changegate run had made it).
    pub fn seed_closed(&mut self, key: &str, day: NaiveDate, kind: &str, close_code: &str) {
        let sys_id = self.id();
        let number = self.number();
        let at = format!("{} 12:00:00", day.format("%Y-%m-%d"));
        let rec: Rec = [
            ("sys_id", sys_id),
            ("number", number),
            ("type", kind.to_string()),
            ("state", "3".to_string()),
            ("approval", "approved".to_string()),
            ("correlation_id", key.to_string()),
            (
                "correlation_display",
                format!("changegate {}", day.format("%Y-%m-%d")),
            ),
            ("close_code", close_code.to_string()),
            ("close_notes", "Deploy success".to_string()),
            ("sys_created_on", at.clone()),
            ("closed_at", at.clone()),
            ("work_start", at),
            ("active", "false".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut rec = rec;
        // A standard change made by an earlier run came from the (first) template.
        if let (true, Some((_, _, version))) = (kind == "standard", self.templates.first()) {
            rec.insert("std_change_producer_version".into(), version.clone());
        }
        self.changes.push(rec);
    }

    /// Adds a change request with `fields` over the defaults of a closed changegate change;
    /// returns its sys_id.
    pub fn push_change(&mut self, fields: &[(&str, &str)]) -> String {
        let sys_id = self.id();
        let mut rec: Rec = [
            ("sys_id", sys_id.as_str()),
            ("type", "normal"),
            ("state", "3"),
            ("approval", "approved"),
            ("active", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        rec.insert("number".into(), self.number());
        for (k, v) in fields {
            assert!(FIELDS.contains(k), "the fake has no change field {k}");
            rec.insert(k.to_string(), v.to_string());
        }
        self.changes.push(rec);
        sys_id
    }

    /// Opens an incident, created at `created` (`YYYY-MM-DD HH:MM:SS`), caused by the
    /// change `caused_by` and/or associated with the change `rfc` (sys_ids); returns its number.
    pub fn add_incident(
        &mut self,
        caused_by: Option<&str>,
        rfc: Option<&str>,
        created: &str,
        state: &str,
    ) -> String {
        let sys_id = self.id();
        let number = format!("INC{:07}", 10_000 + self.incidents.len() + 1);
        let rec: Rec = [
            ("sys_id", sys_id.as_str()),
            ("number", number.as_str()),
            ("state", state),
            ("caused_by", caused_by.unwrap_or("")),
            ("rfc", rfc.unwrap_or("")),
            ("short_description", "Payments failing after deploy"),
            ("sys_created_on", created),
            ("sys_updated_on", created),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        self.incidents.push(rec);
        number
    }

    /// Requests that wrote something (anything but GET).
    pub fn writes(&self, from: usize) -> Vec<String> {
        self.calls(from)
            .filter(|l| l.method != "GET")
            .map(|l| format!("{} {}", l.method, l.path))
            .collect()
    }

    fn authorized(&mut self, req: &Request) -> bool {
        let header = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(token) = header.strip_prefix("Bearer ") {
            return self.tokens.iter().any(|t| t == token);
        }
        match &self.basic {
            Some((u, p)) => header == basic_header(u, p),
            None => false,
        }
    }

    fn fault(&mut self, req: &Request) -> Option<Answer> {
        let method = req.method.as_str();
        let path = req.url.path();
        let fault = self
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(f.path_contains))?;
        fault.times -= 1;
        Some(match &fault.kind {
            FaultKind::Status(status, body, retry_after) => {
                let mut t = Answer::new(*status).set_body_json(body.clone());
                if let Some(secs) = retry_after {
                    t = t
                        .insert_header("Retry-After", secs.to_string())
                        .insert_header("X-RateLimit-Limit", "100")
                        .insert_header(
                            "X-RateLimit-Reset",
                            (Utc::now().timestamp() + *secs as i64).to_string(),
                        );
                }
                t
            }
            FaultKind::Malformed => {
                Answer::new(200).set_body_raw(r#"{"result": [{"stats": {"cou"#, "application/json")
            }
            FaultKind::Silent => Answer::new(200).set_delay(Duration::from_secs(600)),
        })
    }

    /// One round trip: logged, then answered.
    pub fn handle(&mut self, req: &Request) -> Answer {
        self.log.push(Logged::of(req));
        self.dispatch(req)
    }

    /// Answers one call, on its own or inside a batch: the same routes, checks and faults.
    fn dispatch(&mut self, req: &Request) -> Answer {
        if let Some(t) = self.fault(req) {
            return t;
        }
        let path = req.url.path().to_string();
        let method = req.method.as_str().to_string();
        if path == "/oauth_token.do" && method == "POST" {
            return self.token(req);
        }
        if !self.authorized(req) {
            return error(
                401,
                "User Not Authenticated",
                "Required to provide Auth information",
            );
        }
        let accept = req
            .headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !accept.contains("application/json") {
            self.watch
                .flag(format!("{method} {path} without Accept: application/json"));
            return error(406, "Not Acceptable", "Accept must be application/json");
        }
        if matches!(method.as_str(), "POST" | "PATCH" | "PUT") {
            let ct = req
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/json") {
                self.watch.flag(format!(
                    "{method} {path} without Content-Type: application/json"
                ));
                return error(
                    400,
                    "Invalid Content-Type",
                    "Content-Type must be application/json",
                );
            }
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["api", "now", "table", "change_request"]) => self.list(req),
            ("GET", ["api", "now", "table", "change_request", id]) => self.read(req, id),
            ("PATCH", ["api", "now", "table", "change_request", id]) => self.patch(req, id),
            ("DELETE", ["api", "now", "table", "change_request", id]) => self.delete(id),
            ("GET", ["api", "now", "table", "sysapproval_approver"]) => self.approvals_list(req),
            ("GET", ["api", "now", "table", "incident"]) => self.incident_list(req),
            ("GET", ["api", "now", "table", "sys_journal_field"]) => self.journal_list(req),
            ("GET", ["api", "now", "stats", "change_request"]) => self.stats(req),
            ("GET", ["api", "sn_chg_rest", "change", "standard", "template"]) => {
                self.template_list(req)
            }
            ("POST", ["api", "sn_chg_rest", "change", "standard", template]) => {
                self.create(req, "standard", Some(template))
            }
            (
                "POST",
                [
                    "api",
                    "sn_chg_rest",
                    "change",
                    kind @ ("normal" | "emergency"),
                ],
            ) => self.create(req, kind, None),
            ("POST", ["api", "now", "v1", "batch"]) => self.batch(req),
            // Answered loudly, not with the instance's 400: see `support::remote`.
            _ => self.unexpected(req),
        }
    }

    fn unexpected(&self, req: &Request) -> Answer {
        let line = match req.url.query() {
            Some(q) => format!("{} {}?{q}", req.method, req.url.path()),
            None => format!("{} {}", req.method, req.url.path()),
        };
        self.watch.flag(format!("unexpected request: {line}"));
        Answer::new(UNEXPECTED).set_body_string(format!("unexpected request: {line}"))
    }

    /// The Batch API (api-contracts-2 §1): each item is decoded into the call it stands for
    /// and answered by [`Sn::dispatch`], in order, under the batch's own credentials; the
    /// answer carries each item's status, headers and Base64 body. A batch stays 200 when
    /// its items fail.
    fn batch(&mut self, req: &Request) -> Answer {
        match self.batch_api {
            BatchApi::Offered => {}
            BatchApi::Missing => {
                return error(
                    404,
                    "Requested URI does not represent any resource",
                    "No resource at /api/now/v1/batch",
                );
            }
            BatchApi::Forbidden => {
                return error(
                    403,
                    "User Not Authorized",
                    "Not authorized to use the REST Batch API",
                );
            }
        }
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "Invalid json", "The payload is not valid JSON");
        };
        for k in body.keys() {
            if !matches!(k.as_str(), "batch_request_id" | "rest_requests") {
                self.watch.flag(format!("batch has unknown field {k:?}"));
            }
        }
        let Some(Value::Array(items)) = body.get("rest_requests") else {
            return error(400, "Invalid request", "rest_requests is required");
        };
        let mut serviced = Vec::new();
        let mut delay: Option<Duration> = None;
        for item in items {
            let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
            if let Some(obj) = item.as_object() {
                for k in obj.keys() {
                    if !matches!(
                        k.as_str(),
                        "id" | "method" | "url" | "headers" | "body" | "exclude_response_headers"
                    ) {
                        self.watch
                            .flag(format!("batch item has unknown field {k:?}"));
                    }
                }
            }
            let (Some(id), Some(method), Some(url)) = (text("id"), text("method"), text("url"))
            else {
                self.watch
                    .flag(format!("batch item without id, method or url: {item}"));
                continue;
            };
            if !url.starts_with("/api/") {
                self.watch.flag(format!(
                    "batch item url {url:?} is not a path on the instance"
                ));
            }
            let mut headers = wiremock::http::HeaderMap::new();
            if let Some(auth) = req.headers.get("authorization") {
                headers.insert("authorization", auth.clone());
            }
            for h in item
                .get("headers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(name), Some(value)) = (
                    h.get("name").and_then(Value::as_str),
                    h.get("value").and_then(Value::as_str),
                ) else {
                    self.watch
                        .flag(format!("batch item header is not {{name, value}}: {h}"));
                    continue;
                };
                headers.insert(
                    wiremock::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            let body = match item.get("body") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(b)) => match BASE64.decode(b) {
                    Ok(raw) => raw,
                    Err(e) => {
                        self.watch
                            .flag(format!("batch item {id} body is not Base64: {e}"));
                        serviced.push(
                            error(400, "Invalid body", "body is not Base64").serviced(&id, false),
                        );
                        continue;
                    }
                },
                Some(other) => {
                    self.watch
                        .flag(format!("batch item {id} body is not a string: {other}"));
                    continue;
                }
            };
            if method == "GET" && !body.is_empty() {
                self.watch
                    .flag(format!("batch item {id} is a GET with a body"));
            }
            let sub = Request {
                url: req.url.join(&url).unwrap(),
                method: method.parse().unwrap(),
                headers,
                body,
            };
            let exclude = item
                .get("exclude_response_headers")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let logged = Logged::of(&sub);
            if let Some(last) = self.log.last_mut() {
                last.items.push(logged);
            }
            let answer = self.dispatch(&sub);
            delay = delay.max(answer.delay);
            serviced.push(answer.serviced(&id, exclude));
        }
        let mut answer = Answer::new(200).set_body_json(json!({
            "batch_request_id": body.get("batch_request_id").cloned().unwrap_or(Value::Null),
            "serviced_requests": serviced,
            "unserviced_requests": [],
        }));
        if let Some(d) = delay {
            answer = answer.set_delay(d);
        }
        answer
    }

    fn token(&mut self, req: &Request) -> Answer {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let ok = match &self.oauth_client {
            Some((id, secret)) => {
                form.get("grant_type").map(String::as_str) == Some("client_credentials")
                    && form.get("client_id") == Some(id)
                    && form.get("client_secret") == Some(secret)
            }
            None => false,
        };
        if !ok {
            return Answer::new(401).set_body_json(
                json!({"error_description": "access_denied", "error": "server_error"}),
            );
        }
        let token = format!("tok-{}", self.id());
        self.tokens.push(token.clone());
        Answer::new(200).set_body_json(json!({
            "access_token": token, "refresh_token": "r", "scope": "useraccount", "token_type": "Bearer", "expires_in": 1799
        }))
    }

    fn project(&mut self, rec: &Rec, fields: Option<&str>, exclude_ref: bool) -> Value {
        let mut out = Map::new();
        for (k, v) in rec {
            if let Some(f) = fields
                && !f.split(',').any(|x| x == k)
            {
                continue;
            }
            let value = if k == "assignment_group" && !exclude_ref && !v.is_empty() {
                json!({"link": format!("https://instance/api/now/table/sys_user_group/{v}"), "value": v})
            } else {
                json!(v)
            };
            out.insert(k.clone(), value);
        }
        if let Some(f) = fields {
            for name in f.split(',') {
                if let Some(walk) = name.strip_prefix("std_change_producer_version.") {
                    let version = rec
                        .get("std_change_producer_version")
                        .cloned()
                        .unwrap_or_default();
                    let template = self
                        .templates
                        .iter()
                        .chain(&self.retired_templates)
                        .find(|(_, _, v)| !version.is_empty() && *v == version);
                    let value = match (walk, template) {
                        ("std_change_producer", Some((id, _, _))) => id.clone(),
                        ("std_change_producer.name", Some((_, n, _))) => n.clone(),
                        ("std_change_producer.active", Some(_)) => "true".into(),
                        (_, Some(_)) => {
                            self.watch
                                .flag(format!("sysparm_fields walks to unknown field {name:?}"));
                            String::new()
                        }
                        (_, None) => String::new(),
                    };
                    out.insert(name.to_string(), json!(value));
                    continue;
                }
                if !FIELDS.contains(&name) {
                    self.watch
                        .flag(format!("sysparm_fields names unknown field {name:?}"));
                }
                // Journal and empty fields read back as "".
                out.entry(name.to_string()).or_insert(json!(""));
            }
        }
        Value::Object(out)
    }

    fn list(&mut self, req: &Request) -> Answer {
        let p = params(req);
        let q = parse_query(
            p.get("sysparm_query").map(String::as_str).unwrap_or(""),
            FIELDS,
            &self.watch,
        );
        let (limit, offset) = paging(&p);
        let exclude = p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
        let matched: Vec<Rec> = select(&self.changes, &q).into_iter().cloned().collect();
        let total = matched.len();
        let page: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| self.project(r, p.get("sysparm_fields").map(String::as_str), exclude))
            .collect::<Vec<_>>();
        let t = list_reply(req, page, total, limit, offset);
        // A lookup by key: alone, or in a gate's combined query (`^ORcorrelation_id=`).
        let by_key = p
            .get("sysparm_query")
            .is_some_and(|q| q.starts_with("correlation_id=") || q.contains("^ORcorrelation_id="));
        match self.lookup_delay.filter(|_| by_key) {
            Some(d) => t.set_delay(d),
            None => t,
        }
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.changes
            .iter()
            .position(|c| c.get("sys_id").map(String::as_str) == Some(id))
    }

    fn read(&mut self, req: &Request, id: &str) -> Answer {
        let Some(i) = self.index(id) else {
            return error(
                404,
                "No Record found",
                "Record doesn't exist or ACL restricts the record retrieval",
            );
        };
        // Approvers act between polls: after N reads of a change waiting for approval.
        if self.changes[i].get("approval").map(String::as_str) == Some("requested")
            && let Some((after, verdict)) = self.approve_after.clone()
        {
            let polls = {
                let p = self.polls.entry(id.to_string()).or_default();
                *p += 1;
                *p
            };
            if polls >= after {
                self.decide(i, &verdict);
            }
        }
        let p = params(req);
        let exclude = p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
        let rec = self.changes[i].clone();
        let body = self.project(&rec, p.get("sysparm_fields").map(String::as_str), exclude);
        Answer::new(200).set_body_json(json!({ "result": body }))
    }

    /// An approver decides: the change's approval flips and it moves on (approved →
    /// Scheduled) or is cancelled (rejected, upon_reject = cancel).
    pub fn decide(&mut self, i: usize, verdict: &Verdict) {
        let id = self.changes[i]["sys_id"].clone();
        let at = now();
        let (state, approval, comment) = match verdict {
            Verdict::Approve => ("-2", "approved", "Looks good".to_string()),
            Verdict::Reject(c) => ("4", "rejected", c.clone()),
        };
        let c = &mut self.changes[i];
        c.insert("approval".into(), approval.into());
        c.insert("approval_set".into(), at.clone());
        c.insert("state".into(), state.into());
        if state == "4" {
            c.insert("closed_at".into(), at.clone());
            c.insert("active".into(), "false".into());
        }
        for a in self.approvals.iter_mut().filter(|a| a["sysapproval"] == id) {
            a.insert("state".into(), approval.into());
            a.insert("comments".into(), comment.clone());
            a.insert("sys_updated_on".into(), at.clone());
        }
    }

    fn patch(&mut self, req: &Request, id: &str) -> Answer {
        let Some(i) = self.index(id) else {
            return error(
                404,
                "No Record found",
                "Record doesn't exist or ACL restricts the record retrieval",
            );
        };
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "Invalid json", "The payload is not valid JSON");
        };
        let mut next = self.changes[i].clone();
        let mut notes = Vec::new();
        for (k, v) in &body {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            match k.as_str() {
                "work_notes" | "comments" => notes.push((k.clone(), v)),
                "state" => {}
                _ if FIELDS.contains(&k.as_str()) => {
                    next.insert(k.clone(), v);
                }
                _ => self.watch.flag(format!("PATCH writes unknown field {k:?}")),
            }
        }
        if let Some(to) = body.get("state") {
            let to: i64 = to
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| to.as_i64())
                .unwrap_or(99);
            let from: i64 = next["state"].parse().unwrap_or(99);
            let kind = next.get("type").cloned().unwrap_or_default();
            let path = model(&kind);
            let pos = |s: i64| path.iter().position(|p| *p == s);
            let approved = next.get("approval").map(String::as_str) == Some("approved");
            let refuse = |why: String| error(403, "Operation Failed", &why);
            let step_ok = match (pos(from), pos(to)) {
                _ if to == 4 => (-5..=-1).contains(&from),
                (Some(a), Some(b)) => b == a + 1,
                _ => false,
            };
            if !step_ok {
                return refuse(format!(
                    "Invalid state transition from {} to {}",
                    label(from),
                    label(to)
                ));
            }
            let gated = matches!(
                (kind.as_str(), from),
                ("normal", -4) | ("normal", -3) | ("emergency", -3)
            );
            if gated && to != 4 && !approved {
                return refuse(format!(
                    "{} cannot move to {} before it is approved",
                    label(from),
                    label(to)
                ));
            }
            if to == -4 && next.get("assignment_group").is_none_or(|g| g.is_empty()) {
                return refuse("Data Policy Exception: Assignment group is mandatory".into());
            }
            if to == 3
                && (next.get("close_code").is_none_or(|c| c.is_empty())
                    || next.get("close_notes").is_none_or(|c| c.is_empty()))
            {
                return refuse(
                    "Data Policy Exception: Close code and Close notes are mandatory".into(),
                );
            }
            next.insert("state".into(), to.to_string());
            let asks = (to == -4 && kind == "normal") || (to == -3 && kind == "emergency");
            if asks && next["approval"] != "requested" {
                next.insert("approval".into(), "requested".into());
                let sys_id = self.id();
                let user = self.approver.clone().unwrap_or_else(jane);
                let mut approval: Rec = [
                    ("sys_id", sys_id),
                    ("sysapproval", id.to_string()),
                    ("source_table", "change_request".into()),
                    ("state", "requested".into()),
                    ("approver", user["sys_id"].clone()),
                    ("comments", String::new()),
                    ("sys_updated_on", now()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                // The approver's sys_user, as a dot-walk from the reference reads it.
                for (field, value) in &user {
                    approval.insert(format!("approver.{field}"), value.clone());
                }
                self.approvals.push(approval);
            }
            if to == 3 || to == 4 {
                next.insert("closed_at".into(), now());
                next.insert("active".into(), "false".into());
            }
        }
        next.insert("sys_updated_on".into(), now());
        for (el, v) in notes {
            self.journal.push((id.to_string(), el, v));
        }
        self.changes[i] = next.clone();
        let p = params(req);
        let exclude = p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
        let body = self.project(&next, p.get("sysparm_fields").map(String::as_str), exclude);
        Answer::new(200).set_body_json(json!({ "result": body }))
    }

    fn delete(&mut self, id: &str) -> Answer {
        if self.deny_delete {
            return error(
                403,
                "Operation Failed",
                "ACL Exception Delete Failed due to security constraints",
            );
        }
        match self.index(id) {
            Some(i) => {
                self.changes.remove(i);
                Answer::new(204)
            }
            None => error(
                404,
                "No Record found",
                "Record doesn't exist or ACL restricts the record retrieval",
            ),
        }
    }

    /// The Table API on `incident`: query, fields, pages, `X-Total-Count`. Reference fields
    /// (`caused_by`, `rfc`) are `{link, value}` unless `sysparm_exclude_reference_link=true`.
    /// The journal of one record, as `sys_journal_field` lists it: bounded by
    /// `element_id` and a `valueLIKE`, newest first when asked (entries are kept in the
    /// order they were written).
    fn journal_list(&mut self, req: &Request) -> Answer {
        let p = params(req);
        let query = p.get("sysparm_query").cloned().unwrap_or_default();
        let (mut element_id, mut element, mut like, mut newest_first) = (None, None, None, false);
        for term in query.split('^').filter(|t| !t.is_empty()) {
            if let Some(v) = term.strip_prefix("element_id=") {
                element_id = Some(v.to_string());
            } else if let Some(v) = term.strip_prefix("element=") {
                element = Some(v.to_string());
            } else if let Some(v) = term.strip_prefix("valueLIKE") {
                like = Some(v.to_string());
            } else if term == "ORDERBYDESCsys_created_on" {
                newest_first = true;
            } else {
                self.watch.flag(format!("journal query term {term:?}"));
            }
        }
        if let Some(f) = p.get("sysparm_fields") {
            for name in f.split(',') {
                if !["sys_id", "element", "element_id", "value", "sys_created_on"].contains(&name) {
                    self.watch
                        .flag(format!("journal sysparm_fields names {name:?}"));
                }
            }
        }
        let (Some(element_id), Some(like)) = (element_id, like) else {
            self.watch
                .flag(format!("unbounded journal query {query:?}"));
            return error(400, "bad query", "");
        };
        let mut rows: Vec<Value> = self
            .journal
            .iter()
            .enumerate()
            .filter(|(_, (id, el, v))| {
                *id == element_id && element.as_deref().is_none_or(|e| e == el) && v.contains(&like)
            })
            .map(|(i, (id, el, v))| {
                json!({"sys_id": format!("{:032x}", i + 1), "element_id": id, "element": el,
                    "value": v, "sys_created_on": format!("2026-03-02 10:00:{:02}", i % 60)})
            })
            .collect();
        if newest_first {
            rows.reverse();
        }
        let (limit, offset) = paging(&p);
        let page: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
        Answer::new(200).set_body_json(json!({ "result": page }))
    }

    fn incident_list(&mut self, req: &Request) -> Answer {
        let p = params(req);
        let q = parse_query(
            p.get("sysparm_query").map(String::as_str).unwrap_or(""),
            INCIDENT_FIELDS,
            &self.watch,
        );
        let (limit, offset) = paging(&p);
        let exclude = p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
        let fields = p.get("sysparm_fields").cloned();
        if let Some(f) = &fields {
            for name in f.split(',') {
                if !INCIDENT_FIELDS.contains(&name) {
                    self.watch.flag(format!(
                        "incident sysparm_fields names unknown field {name:?}"
                    ));
                }
            }
        }
        let matched: Vec<Rec> = select(&self.incidents, &q).into_iter().cloned().collect();
        let total = matched.len();
        let page: Vec<Value> = matched
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| {
                let mut out = Map::new();
                for (k, v) in r {
                    if fields.as_deref().is_some_and(|f| !f.split(',').any(|x| x == k)) {
                        continue;
                    }
                    let value = if matches!(k.as_str(), "caused_by" | "rfc") && !exclude && !v.is_empty() {
                        json!({"link": format!("https://instance/api/now/table/change_request/{v}"), "value": v})
                    } else {
                        json!(v)
                    };
                    out.insert(k.clone(), value);
                }
                Value::Object(out)
            })
            .collect();
        list_reply(req, page, total, limit, offset)
    }

    fn approvals_list(&mut self, req: &Request) -> Answer {
        let p = params(req);
        let q = parse_query(
            p.get("sysparm_query").map(String::as_str).unwrap_or(""),
            APPROVAL_FIELDS,
            &self.watch,
        );
        let display = p.get("sysparm_display_value").map(String::as_str) == Some("true");
        let fields: Vec<String> = p
            .get("sysparm_fields")
            .map(|f| f.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let (limit, _) = paging(&p);
        let rows: Vec<Value> = select(&self.approvals, &q)
            .into_iter()
            .take(limit)
            .map(|a| {
                // Journal fields read back empty without display values.
                let name = &a["approver.name"];
                let comments = if display && !a["comments"].is_empty() {
                    format!("{} - {name} (Comments)\n{}", a["sys_updated_on"], a["comments"])
                } else {
                    String::new()
                };
                // A reference shows its display value (the user's name) or its sys_id.
                let approver = if display { name.clone() } else { a["approver"].clone() };
                let mut row = json!({"sys_id": a["sys_id"], "state": a["state"], "approver": approver, "comments": comments,
                       "sysapproval": a["sysapproval"]});
                // Dot-walked fields of the approver's sys_user, when asked for by name.
                for field in fields.iter().filter_map(|f| f.strip_prefix("approver.")) {
                    match a.get(&format!("approver.{field}")) {
                        Some(v) => row[format!("approver.{field}")] = json!(v),
                        None => self.watch.flag(format!("sysapproval_approver: dot-walk to an unknown sys_user field {field:?}")),
                    }
                }
                row
            })
            .collect();
        Answer::new(200).set_body_json(json!({ "result": rows }))
    }

    fn stats(&mut self, req: &Request) -> Answer {
        let p = params(req);
        if p.get("sysparm_count").map(String::as_str) != Some("true") {
            self.watch.flag("stats without sysparm_count=true");
        }
        let q = parse_query(
            p.get("sysparm_query").map(String::as_str).unwrap_or(""),
            FIELDS,
            &self.watch,
        );
        let rows = select(&self.changes, &q);
        let Some(group_by) = p.get("sysparm_group_by") else {
            return Answer::new(200)
                .set_body_json(json!({"result": {"stats": {"count": rows.len().to_string()}}}));
        };
        let fields: Vec<&str> = group_by.split(',').collect();
        for f in &fields {
            if !FIELDS.contains(f) {
                self.watch.flag(format!("group by unknown field {f:?}"));
            }
        }
        let mut groups: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for r in rows {
            let k = fields
                .iter()
                .map(|f| r.get(*f).cloned().unwrap_or_default())
                .collect();
            *groups.entry(k).or_default() += 1;
        }
        let result: Vec<Value> = groups
            .into_iter()
            .map(|(k, n)| {
                json!({
                    "stats": {"count": n.to_string()},
                    "groupby_fields": fields.iter().zip(k).map(|(f, v)| json!({"field": f, "value": v})).collect::<Vec<_>>()
                })
            })
            .collect();
        Answer::new(200).set_body_json(json!({ "result": result }))
    }

    fn template_list(&mut self, req: &Request) -> Answer {
        let p = params(req);
        let query = p.get("sysparm_query").cloned().unwrap_or_default();
        let wanted = query
            .split('^')
            .find_map(|t| t.strip_prefix("name="))
            .map(str::to_string);
        let rows: Vec<Value> = self
            .templates
            .iter()
            .filter(|(_, name, _)| wanted.as_deref().is_none_or(|w| w == name))
            .map(|(id, name, _)| {
                json!({"sys_id": {"value": id, "display_value": id}, "name": {"value": name, "display_value": name},
                       "active": {"value": true, "display_value": "true"}})
            })
            .collect();
        Answer::new(200).set_body_json(json!({ "result": rows }))
    }

    fn create(&mut self, req: &Request, kind: &str, template: Option<&str>) -> Answer {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
            return error(400, "Invalid json", "The payload is not valid JSON");
        };
        let mut rec: Rec = Rec::new();
        let mut ignored = Vec::new();
        let template = match template {
            Some(t) => match self.templates.iter().find(|(id, _, _)| id == t) {
                Some(found) => Some(found.clone()),
                None => return error(404, "No Record found", "Template not found"),
            },
            None => None,
        };
        let sys_id = self.id();
        let at = now();
        for (k, v) in &body {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let template_owned = template.is_some()
                && [
                    "description",
                    "backout_plan",
                    "implementation_plan",
                    "test_plan",
                ]
                .contains(&k.as_str());
            if !FIELDS.contains(&k.as_str()) {
                self.watch
                    .flag(format!("create writes unknown field {k:?}"));
                ignored.push(k.clone());
            } else if template_owned
                || k == "state"
                || k == "type"
                || k == "approval"
                || k.starts_with("sys_")
            {
                ignored.push(k.clone());
            } else if k == "work_notes" || k == "comments" {
                self.journal.push((sys_id.clone(), k.clone(), v));
            } else {
                rec.insert(k.clone(), v);
            }
        }
        rec.insert("sys_id".into(), sys_id);
        rec.insert("number".into(), self.number());
        rec.insert("type".into(), kind.into());
        rec.insert("state".into(), "-5".into());
        rec.insert("active".into(), "true".into());
        rec.insert("phase".into(), "requested".into());
        rec.insert("upon_reject".into(), "cancel".into());
        rec.insert("sys_created_on".into(), at.clone());
        rec.insert("sys_updated_on".into(), at);
        rec.insert(
            "approval".into(),
            if kind == "standard" {
                "approved"
            } else {
                "not requested"
            }
            .into(),
        );
        if let Some((_, name, version)) = &template {
            rec.insert("std_change_producer_version".into(), version.clone());
            rec.insert(
                "description".into(),
                format!("{name}: deploy the application through the pipeline"),
            );
            rec.insert("implementation_plan".into(), "Run the pipeline".into());
            rec.entry("short_description".into())
                .or_insert_with(|| name.clone());
        }
        self.changes.push(rec.clone());
        // sn_chg_rest: every field {value, display_value}, numbers typed.
        let mut out = Map::new();
        for (k, v) in &rec {
            let value = match (k.as_str(), v.parse::<f64>()) {
                ("state" | "impact" | "priority" | "risk", Ok(n)) => json!(n),
                _ => json!(v),
            };
            let display = if k == "state" {
                label(v.parse().unwrap_or(99)).to_string()
            } else {
                v.clone()
            };
            out.insert(k.clone(), json!({"value": value, "display_value": display}));
        }
        for f in [
            "justification",
            "close_code",
            "work_start",
            "approval_set",
            "correlation_display",
            "correlation_id",
        ] {
            out.entry(f.to_string())
                .or_insert(json!({"value": "", "display_value": ""}));
        }
        out.insert("__meta".into(), json!({"ignoredFields": ignored}));
        Answer::new(200).set_body_json(json!({ "result": out }))
    }
}

/// The wiremock responder: every request goes to the one stateful instance.
pub struct Responder(pub Arc<Mutex<Sn>>);

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut sn = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sn.handle(req).into_template()
    }
}
