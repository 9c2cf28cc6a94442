//! The ServiceNow backend, driven through the real binary against a stateful in-process
//! fake of the instance: Table API on change_request and sysapproval_approver, the
//! Aggregate API, the sn_chg_rest create and template endpoints, and /oauth_token.do. The
//! fake follows the base system's change models (one state step at a time), its error
//! envelope and its rate limiting (429 + Retry-After), and counts every request.

use std::collections::{BTreeMap, HashMap};
use std::process::Output;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{changegate, git_repo, reference};

mod fake {
    use super::*;

    pub type Rec = BTreeMap<String, String>;

    /// Fields a change_request has on the fake instance; anything else in a query or a write
    /// is recorded as an anomaly (a real instance silently ignores unknown fields, which is
    /// exactly the kind of bug a test should see).
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
    ];

    #[derive(Debug, Clone)]
    pub struct Logged {
        pub method: String,
        pub path: String,
        pub query: String,
        pub at: Instant,
    }

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
        pub journal: Vec<(String, String, String)>,
        pub approvals: Vec<Rec>,
        pub templates: Vec<(String, String, String)>,
        pub log: Vec<Logged>,
        pub anomalies: Vec<String>,
        pub next: u64,
        pub basic: Option<(String, String)>,
        pub oauth_client: Option<(String, String)>,
        pub tokens: Vec<String>,
        pub approve_after: Option<(u32, Verdict)>,
        pub polls: HashMap<String, u32>,
        pub faults: Vec<Fault>,
        pub lookup_delay: Option<Duration>,
        pub deny_delete: bool,
    }

    fn now() -> String {
        Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
    }

    pub fn error(status: u16, message: &str, detail: &str) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(json!({
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
        "NOT IN",
        "IN",
        "ISEMPTY",
        "ISNOTEMPTY",
    ];

    fn parse_query(q: &str, anomalies: &mut Vec<String>) -> Query {
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
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
                })
                .unwrap_or(term.len());
            let (field, rest) = term.split_at(split);
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                anomalies.push(format!("unparsable query term {term:?}"));
                continue;
            };
            if !FIELDS.contains(&field) && !["sysapproval", "approver", "comments"].contains(&field)
            {
                anomalies.push(format!("query on unknown field {field:?}"));
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

        pub fn count(&self, method: &str, path_contains: &str) -> usize {
            self.log
                .iter()
                .filter(|l| l.method == method && l.path.contains(path_contains))
                .count()
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
            self.changes.push(rec);
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

        fn fault(&mut self, req: &Request) -> Option<ResponseTemplate> {
            let method = req.method.as_str();
            let path = req.url.path();
            let fault = self
                .faults
                .iter_mut()
                .find(|f| f.times > 0 && f.method == method && path.contains(f.path_contains))?;
            fault.times -= 1;
            Some(match &fault.kind {
                FaultKind::Status(status, body, retry_after) => {
                    let mut t = ResponseTemplate::new(*status).set_body_json(body.clone());
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
                FaultKind::Malformed => ResponseTemplate::new(200)
                    .set_body_raw(r#"{"result": [{"stats": {"cou"#, "application/json"),
            })
        }

        pub fn handle(&mut self, req: &Request) -> ResponseTemplate {
            self.log.push(Logged {
                method: req.method.to_string(),
                path: req.url.path().to_string(),
                query: req.url.query().unwrap_or("").to_string(),
                at: Instant::now(),
            });
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
                self.anomalies
                    .push(format!("{method} {path} without Accept: application/json"));
                return error(406, "Not Acceptable", "Accept must be application/json");
            }
            if matches!(method.as_str(), "POST" | "PATCH" | "PUT") {
                let ct = req
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !ct.starts_with("application/json") {
                    self.anomalies.push(format!(
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
                ("GET", ["api", "now", "table", "sysapproval_approver"]) => {
                    self.approvals_list(req)
                }
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
                _ => {
                    self.anomalies.push(format!("unexpected {method} {path}"));
                    error(400, "Requested URI does not represent any resource", "")
                }
            }
        }

        fn token(&mut self, req: &Request) -> ResponseTemplate {
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
                return ResponseTemplate::new(401).set_body_json(
                    json!({"error_description": "access_denied", "error": "server_error"}),
                );
            }
            let token = format!("tok-{}", self.id());
            self.tokens.push(token.clone());
            ResponseTemplate::new(200).set_body_json(json!({
                "access_token": token, "refresh_token": "r", "scope": "useraccount", "token_type": "Bearer", "expires_in": 1799
            }))
        }

        fn project(&mut self, rec: &Rec, fields: Option<&str>, exclude_ref: bool) -> Value {
            let mut out = Map::new();
            for (k, v) in rec {
                if let Some(f) = fields {
                    if !f.split(',').any(|x| x == k) {
                        continue;
                    }
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
                    if !FIELDS.contains(&name) {
                        self.anomalies
                            .push(format!("sysparm_fields names unknown field {name:?}"));
                    }
                    // Journal and empty fields read back as "".
                    out.entry(name.to_string()).or_insert(json!(""));
                }
            }
            Value::Object(out)
        }

        fn list(&mut self, req: &Request) -> ResponseTemplate {
            let p = params(req);
            let q = parse_query(
                p.get("sysparm_query").map(String::as_str).unwrap_or(""),
                &mut self.anomalies,
            );
            let limit: usize = p
                .get("sysparm_limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10_000);
            let offset: usize = p
                .get("sysparm_offset")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let exclude =
                p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
            let matched: Vec<Rec> = select(&self.changes, &q).into_iter().cloned().collect();
            let total = matched.len();
            let page: Vec<Value> = matched
                .iter()
                .skip(offset)
                .take(limit)
                .map(|r| self.project(r, p.get("sysparm_fields").map(String::as_str), exclude))
                .collect::<Vec<_>>();
            let mut t = ResponseTemplate::new(200)
                .set_body_json(json!({ "result": page }))
                .insert_header("X-Total-Count", total.to_string());
            if offset + limit < total {
                t = t.insert_header(
                    "Link",
                    format!(
                        "<{}?sysparm_offset={}&sysparm_limit={limit}>;rel=\"next\"",
                        req.url.path(),
                        offset + limit
                    ),
                );
            }
            let by_key = p
                .get("sysparm_query")
                .is_some_and(|q| q.starts_with("correlation_id="));
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

        fn read(&mut self, req: &Request, id: &str) -> ResponseTemplate {
            let Some(i) = self.index(id) else {
                return error(
                    404,
                    "No Record found",
                    "Record doesn't exist or ACL restricts the record retrieval",
                );
            };
            // Approvers act between polls: after N reads of a change waiting for approval.
            if self.changes[i].get("approval").map(String::as_str) == Some("requested") {
                if let Some((after, verdict)) = self.approve_after.clone() {
                    let polls = {
                        let p = self.polls.entry(id.to_string()).or_default();
                        *p += 1;
                        *p
                    };
                    if polls >= after {
                        self.decide(i, &verdict);
                    }
                }
            }
            let p = params(req);
            let exclude =
                p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
            let rec = self.changes[i].clone();
            let body = self.project(&rec, p.get("sysparm_fields").map(String::as_str), exclude);
            ResponseTemplate::new(200).set_body_json(json!({ "result": body }))
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

        fn patch(&mut self, req: &Request, id: &str) -> ResponseTemplate {
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
                    _ => self
                        .anomalies
                        .push(format!("PATCH writes unknown field {k:?}")),
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
                    let approval: Rec = [
                        ("sys_id", sys_id),
                        ("sysapproval", id.to_string()),
                        ("source_table", "change_request".into()),
                        ("state", "requested".into()),
                        ("approver", "Jane Approver".into()),
                        ("comments", String::new()),
                        ("sys_updated_on", now()),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
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
            let exclude =
                p.get("sysparm_exclude_reference_link").map(String::as_str) == Some("true");
            let body = self.project(&next, p.get("sysparm_fields").map(String::as_str), exclude);
            ResponseTemplate::new(200).set_body_json(json!({ "result": body }))
        }

        fn delete(&mut self, id: &str) -> ResponseTemplate {
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
                    ResponseTemplate::new(204)
                }
                None => error(
                    404,
                    "No Record found",
                    "Record doesn't exist or ACL restricts the record retrieval",
                ),
            }
        }

        fn approvals_list(&mut self, req: &Request) -> ResponseTemplate {
            let p = params(req);
            let q = parse_query(
                p.get("sysparm_query").map(String::as_str).unwrap_or(""),
                &mut self.anomalies,
            );
            let display = p.get("sysparm_display_value").map(String::as_str) == Some("true");
            let limit: usize = p
                .get("sysparm_limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10_000);
            let rows: Vec<Value> = select(&self.approvals, &q)
                .into_iter()
                .take(limit)
                .map(|a| {
                    let comments = if display && !a["comments"].is_empty() {
                        format!("{} - Jane Approver (Comments)\n{}", a["sys_updated_on"], a["comments"])
                    } else if display {
                        String::new()
                    } else {
                        // Journal fields read back empty without display values.
                        String::new()
                    };
                    let approver = if display { a["approver"].clone() } else { "a8f98bb0eb32010045e1a5115206fe3a".into() };
                    json!({"sys_id": a["sys_id"], "state": a["state"], "approver": approver, "comments": comments,
                           "sysapproval": a["sysapproval"]})
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(json!({ "result": rows }))
        }

        fn stats(&mut self, req: &Request) -> ResponseTemplate {
            let p = params(req);
            if p.get("sysparm_count").map(String::as_str) != Some("true") {
                self.anomalies
                    .push("stats without sysparm_count=true".into());
            }
            let q = parse_query(
                p.get("sysparm_query").map(String::as_str).unwrap_or(""),
                &mut self.anomalies,
            );
            let rows = select(&self.changes, &q);
            let Some(group_by) = p.get("sysparm_group_by") else {
                return ResponseTemplate::new(200).set_body_json(
                    json!({"result": {"stats": {"count": rows.len().to_string()}}}),
                );
            };
            let fields: Vec<&str> = group_by.split(',').collect();
            for f in &fields {
                if !FIELDS.contains(f) {
                    self.anomalies.push(format!("group by unknown field {f:?}"));
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
            ResponseTemplate::new(200).set_body_json(json!({ "result": result }))
        }

        fn template_list(&mut self, req: &Request) -> ResponseTemplate {
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
            ResponseTemplate::new(200).set_body_json(json!({ "result": rows }))
        }

        fn create(
            &mut self,
            req: &Request,
            kind: &str,
            template: Option<&str>,
        ) -> ResponseTemplate {
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
                    self.anomalies
                        .push(format!("create writes unknown field {k:?}"));
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
            ResponseTemplate::new(200).set_body_json(json!({ "result": out }))
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
            sn.handle(req)
        }
    }
}

use fake::{Fault, FaultKind, Sn, Verdict};

const USER: &str = "svc-changegate";
const PASSWORD: &str = "s3cr3t-P4ss!word";
const TEMPLATE: &str = "Pre-approved application deploy";
const TEMPLATE_ID: &str = "c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6";
const SERVICE_KEY_PREFIX: &str = "changegate:acme/payments-api:production:";

struct Instance {
    server: MockServer,
    sn: Arc<Mutex<Sn>>,
    repo: tempfile::TempDir,
}

impl Instance {
    async fn start(extra_config: &str) -> Instance {
        let sn = Arc::new(Mutex::new(Sn::default()));
        {
            let mut s = sn.lock().unwrap();
            s.basic = Some((USER.into(), PASSWORD.into()));
            s.templates.push((
                TEMPLATE_ID.into(),
                TEMPLATE.into(),
                "ab12cd34ef56ab12cd34ef56ab12cd34".into(),
            ));
        }
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(fake::Responder(sn.clone()))
            .mount(&server)
            .await;
        let repo = git_repo();
        let config = format!(
            "[servicenow]\nstandard_template = \"{TEMPLATE}\"\nassignment_group = \"Payments\"\n\n[approval]\npoll = \"200ms\"\ntimeout = \"5s\"\n{extra_config}"
        );
        std::fs::write(repo.path().join(".changegate.toml"), config).unwrap();
        Instance { server, sn, repo }
    }

    fn sn(&self) -> MutexGuard<'_, Sn> {
        self.sn.lock().unwrap()
    }

    /// The binary, pointed at the fake with basic auth.
    fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = changegate(self.repo.path());
        cmd.env("CHANGEGATE_SERVICENOW_URL", self.server.uri())
            .env("CHANGEGATE_SERVICENOW_USER", USER)
            .env("CHANGEGATE_SERVICENOW_PASSWORD", PASSWORD)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .args(["--backend", "servicenow"])
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn requests(&self) -> usize {
        self.sn().log.len()
    }

    fn head(&self) -> String {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(self.repo.path())
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn key(&self) -> String {
        format!("{SERVICE_KEY_PREFIX}{}", self.head())
    }

    /// A track record that earns pre-approval: `n` successful standard changes closed in
    /// the sprints before this one (spread over `days` days).
    fn seed_history(&self, n: usize, days: i64) {
        let today = Utc::now().date_naive();
        let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let sprint_start = start + chrono::Duration::days((today - start).num_days() / 14 * 14);
        let mut sn = self.sn();
        for i in 0..n {
            let day = sprint_start - chrono::Duration::days(1 + (i as i64 % days));
            let sha = format!("{:040x}", 0xabc0_0000_u64 + i as u64);
            sn.seed_closed(
                &format!("{SERVICE_KEY_PREFIX}{sha}"),
                day,
                "standard",
                "successful",
            );
        }
    }

    fn print_log(&self, label: &str, from: usize) {
        let sn = self.sn();
        eprintln!("{label}: {} requests", sn.log.len() - from);
        for l in &sn.log[from..] {
            eprintln!(
                "  {} {}?{}",
                l.method,
                l.path,
                l.query.chars().take(140).collect::<String>()
            );
        }
    }

    fn assert_clean(&self) {
        let sn = self.sn();
        assert!(
            sn.anomalies.is_empty(),
            "the fake saw requests a real instance would not honour: {:#?}",
            sn.anomalies
        );
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(out).0))
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn pre_approved_is_a_standard_change_from_the_template_implemented_then_closed_successful() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log("pre-approved gate", before);
    let gate_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["decision"], "pre-approved");
    assert_eq!(report["state"], "implementing");
    let id = report["change_id"].as_str().unwrap().to_string();
    let url = report["change_url"].as_str().unwrap();
    assert!(
        url.contains("/nav_to.do?uri=change_request.do?sys_id="),
        "{url}"
    );

    {
        let s = sn.sn();
        let recs = s.find(&sn.key());
        assert_eq!(recs.len(), 1);
        let rec = recs[0];
        assert_eq!(rec["number"], id);
        assert_eq!(rec["type"], "standard");
        assert_eq!(rec["state"], "-1", "Implement");
        assert_eq!(
            rec["std_change_producer_version"],
            "ab12cd34ef56ab12cd34ef56ab12cd34"
        );
        assert_eq!(rec["assignment_group"], "Payments");
        assert!(
            rec["correlation_display"].starts_with("changegate 20"),
            "{}",
            rec["correlation_display"]
        );
        assert!(
            rec["justification"].starts_with("changegate decision: pre-approved (mode enforce)"),
            "{}",
            rec["justification"]
        );
        assert!(!rec["work_start"].is_empty());
        let notes = s.notes(&rec["sys_id"]).join("\n");
        assert!(notes.contains("[pass] track-record"), "{notes}");
        assert_eq!(s.count("POST", "/change/standard/"), 1);
        assert_eq!(s.count("GET", "/change/standard/template"), 1);
    }

    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success", "--format", "json"]);
    sn.print_log("record success", before);
    let record_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let report = json_of(&out);
    assert_eq!(report["state"], "closed");
    assert_eq!(report["outcome"], "success");
    {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0].clone();
        assert_eq!(rec["state"], "3");
        assert_eq!(rec["close_code"], "successful");
        assert!(!rec["close_notes"].is_empty() && !rec["work_end"].is_empty());
    }
    eprintln!(
        "REQUESTS (a) pre-approved: gate {gate_requests} + record {record_requests} = {}",
        gate_requests + record_requests
    );
    // Gate: last closed changes, lookup, stats, template, create, re-read, New→Scheduled,
    // Scheduled→Implement. Record: lookup, Implement→Review, Review→Closed.
    assert_eq!((gate_requests, record_requests), (8, 3));
    sn.assert_clean();
}

#[tokio::test]
async fn needs_approval_waits_for_the_approver_then_passes_and_closes() {
    let sn = Instance::start("").await;
    sn.sn().approve_after = Some((3, Verdict::Approve));
    let before = sn.requests();
    let out = sn.run(&["gate", "--format", "json"]);
    sn.print_log("needs-approval gate", before);
    let gate_requests = sn.requests() - before;
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let report = json_of(&out);
    assert_eq!(report["decision"], "needs-approval");
    assert_eq!(report["state"], "implementing");
    assert_eq!(report["approved_by"], "Jane Approver");
    assert!(
        stderr.matches("waiting for approval of").count() >= 2,
        "{stderr}"
    );
    {
        let s = sn.sn();
        let rec = s.find(&sn.key())[0].clone();
        assert_eq!(rec["type"], "normal");
        assert_eq!(rec["state"], "-1");
        assert!(
            rec["description"].contains("Commits:"),
            "{}",
            rec["description"]
        );
        assert_eq!(s.count("POST", "/change/normal"), 1);
    }
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "failed"]);
    let record_requests = sn.requests() - before;
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let rec = sn.sn().find(&sn.key())[0].clone();
    assert_eq!(
        (rec["state"].as_str(), rec["close_code"].as_str()),
        ("3", "unsuccessful")
    );
    eprintln!(
        "REQUESTS (b) needs-approval approved on the 3rd poll: gate {gate_requests} + record {record_requests} = {}",
        gate_requests + record_requests
    );
    sn.assert_clean();
}

#[tokio::test]
async fn a_rejection_blocks_with_the_approvers_comment() {
    let sn = Instance::start("").await;
    sn.sn().approve_after = Some((2, Verdict::Reject("Not during the sales peak".into())));
    let out = sn.run(&["gate"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("rejected by Jane Approver: Not during the sales peak"),
        "{stdout}"
    );
    let out = sn.run(&["record", "--outcome", "failure", "--format", "json"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(json_of(&out)["outcome"], "cancelled");
    sn.assert_clean();
}

#[tokio::test]
async fn no_approval_before_the_timeout_blocks() {
    let sn = Instance::start("").await;
    let started = Instant::now();
    let out = sn.run(&["gate", "--wait", "1500ms"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    assert!(stdout.contains("approval timed out"), "{stdout}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let s = sn.sn();
    let rec = s.find(&sn.key())[0];
    assert_eq!(
        (rec["state"].as_str(), rec["approval"].as_str()),
        ("-4", "requested")
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_rerun_finds_the_same_record_and_writes_nothing() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    let first = sn.run(&["gate", "--format", "json"]);
    assert_eq!(code(&first), 0, "{:?}", text(&first));
    let before = sn.requests();
    let again = sn.run(&["gate", "--format", "json"]);
    sn.print_log("re-run", before);
    assert_eq!(code(&again), 0, "{:?}", text(&again));
    let (a, b) = (json_of(&first), json_of(&again));
    assert_eq!(a["change_id"], b["change_id"]);
    assert_eq!(b["decision"], "pre-approved");
    assert_eq!(
        b["rules"], a["rules"],
        "the standing decision is read back with its rules"
    );
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    let writes = s.log[before..].iter().filter(|l| l.method != "GET").count();
    assert_eq!(
        writes, 0,
        "a re-run of a standing, implemented change writes nothing"
    );
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn a_crash_after_create_is_completed_by_the_next_run() {
    let sn = Instance::start("").await;
    // The update that sends the new change for approval fails for good (4 tries).
    sn.sn().faults.push(Fault {
        method: "PATCH",
        path_contains: "/change_request/",
        times: 4,
        kind: FaultKind::Status(503, json!({"error": {"message": "Service Unavailable", "detail": null}, "status": "failure"}), None),
    });
    let out = sn.run(&["gate", "--wait", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("Service Unavailable"),
        "{stderr}"
    );
    assert_eq!(sn.sn().find(&sn.key())[0]["state"], "-5");

    sn.sn().approve_after = Some((1, Verdict::Approve));
    let out = sn.run(&["gate"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    assert_eq!(
        s.count("POST", "/sn_chg_rest/"),
        1,
        "the second run completed the first run's record"
    );
    assert_eq!(s.find(&sn.key())[0]["state"], "-1");
    drop(s);
    sn.assert_clean();
}

#[tokio::test]
async fn two_concurrent_gates_leave_one_record() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    // Both lookups answer "nothing yet" before either create lands.
    sn.sn().lookup_delay = Some(Duration::from_millis(1500));
    let (a, b) = both(
        sn.cmd(&["gate", "--format", "json"]),
        sn.cmd(&["gate", "--format", "json"]),
    )
    .await;
    assert_eq!(code(&a), 0, "{:?}", text(&a));
    assert_eq!(code(&b), 0, "{:?}", text(&b));
    assert_eq!(json_of(&a)["change_id"], json_of(&b)["change_id"]);
    let s = sn.sn();
    assert_eq!(
        s.count("POST", "/sn_chg_rest/"),
        2,
        "both runs created a record (the race happened)"
    );
    assert_eq!(
        s.count("DELETE", "/change_request/"),
        1,
        "the later one removed its duplicate"
    );
    let recs = s.find(&sn.key());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["state"], "-1");
    drop(s);
    sn.assert_clean();
}

/// Runs two commands at the same time.
async fn both(mut a: assert_cmd::Command, mut b: assert_cmd::Command) -> (Output, Output) {
    let a = tokio::task::spawn_blocking(move || a.output().unwrap());
    let b = tokio::task::spawn_blocking(move || b.output().unwrap());
    let (a, b) = tokio::join!(a, b);
    (a.unwrap(), b.unwrap())
}

#[tokio::test]
async fn a_duplicate_that_cannot_be_deleted_is_cancelled_and_loses_its_key() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    {
        let mut s = sn.sn();
        s.lookup_delay = Some(Duration::from_millis(1500));
        s.deny_delete = true;
    }
    let (a, b) = both(
        sn.cmd(&["gate", "--format", "json"]),
        sn.cmd(&["gate", "--format", "json"]),
    )
    .await;
    assert_eq!(
        (code(&a), code(&b)),
        (0, 0),
        "{:?} {:?}",
        text(&a),
        text(&b)
    );
    assert_eq!(json_of(&a)["change_id"], json_of(&b)["change_id"]);
    let s = sn.sn();
    assert_eq!(s.find(&sn.key()).len(), 1);
    let dup: Vec<_> = s
        .changes
        .iter()
        .filter(|c| {
            c.get("correlation_display")
                .is_some_and(|d| d.contains("duplicate of"))
        })
        .collect();
    assert_eq!(dup.len(), 1);
    assert_eq!(
        (dup[0]["state"].as_str(), dup[0]["correlation_id"].as_str()),
        ("4", "")
    );
}

#[tokio::test]
async fn rate_limited_then_served_after_retry_after() {
    let sn = Instance::start("").await;
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(reference(
            "servicenow/docs-examples/error.429-rate-limit.json",
        ))
        .unwrap(),
    )
    .unwrap();
    sn.sn().faults.push(Fault {
        method: "GET",
        path_contains: "/table/change_request",
        times: 1,
        kind: FaultKind::Status(429, body, Some(1)),
    });
    let out = sn.run(&["gate", "--wait", "0"]);
    assert_eq!(
        code(&out),
        1,
        "needs approval, not waiting: {:?}",
        text(&out)
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("429"), "{stderr}");
    let s = sn.sn();
    let gap = s.log[1].at.duration_since(s.log[0].at);
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
    assert_eq!(s.find(&sn.key()).len(), 1);
}

#[tokio::test]
async fn server_errors_twice_then_success() {
    let sn = Instance::start("").await;
    let body = json!({"error": {"message": "Internal Server Error", "detail": "Transaction cancelled"}, "status": "failure"});
    sn.sn().faults.push(Fault {
        method: "POST",
        path_contains: "/sn_chg_rest/change/normal",
        times: 2,
        kind: FaultKind::Status(500, body, None),
    });
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    assert_eq!(code(&out), 1, "{:?}", text(&out));
    assert_eq!(json_of(&out)["state"], "awaiting-approval");
    let s = sn.sn();
    assert_eq!(s.count("POST", "/sn_chg_rest/change/normal"), 3);
    assert_eq!(s.find(&sn.key()).len(), 1);
}

#[tokio::test]
async fn malformed_json_fails_closed_with_a_clear_message() {
    let sn = Instance::start("").await;
    sn.sn().faults.push(Fault {
        method: "GET",
        path_contains: "/stats/",
        times: 1,
        kind: FaultKind::Malformed,
    });
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("not the JSON expected")
            && stderr.contains("/api/now/stats/change_request"),
        "{stderr}"
    );
    assert_eq!(
        sn.sn().count("POST", "/sn_chg_rest/"),
        0,
        "nothing written after a broken read"
    );
}

#[tokio::test]
async fn bad_credentials_fail_closed_without_leaking_them() {
    let sn = Instance::start("").await;
    let wrong = "Wr0ng-Pa55-xyz";
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env("CHANGEGATE_SERVICENOW_PASSWORD", wrong)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("User Not Authenticated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("basic auth (CHANGEGATE_SERVICENOW_USER / CHANGEGATE_SERVICENOW_PASSWORD)"),
        "{stderr}"
    );
    let header = fake::basic_header(USER, wrong);
    for secret in [wrong, header.trim_start_matches("Basic ")] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "secret leaked at -vvv:\n{stdout}\n{stderr}"
        );
    }

    // OAuth with a wrong client secret.
    sn.sn().oauth_client = Some(("cg-client".into(), "right-secret".into()));
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env_remove("CHANGEGATE_SERVICENOW_USER")
        .env_remove("CHANGEGATE_SERVICENOW_PASSWORD")
        .env("CHANGEGATE_SERVICENOW_CLIENT_ID", "cg-client")
        .env("CHANGEGATE_SERVICENOW_CLIENT_SECRET", "oauth-Secr3t-value")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("client-credentials grant") && stderr.contains("access_denied"),
        "{stderr}"
    );
    assert!(!stdout.contains("oauth-Secr3t-value") && !stderr.contains("oauth-Secr3t-value"));

    // A bearer token the instance does not know.
    let out = sn
        .cmd(&["-vvv", "gate"])
        .env("CHANGEGATE_SERVICENOW_TOKEN", "tok-not-valid-123")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("a bearer token (CHANGEGATE_SERVICENOW_TOKEN)"),
        "{stderr}"
    );
    assert!(!stdout.contains("tok-not-valid-123") && !stderr.contains("tok-not-valid-123"));
}

#[tokio::test]
async fn oauth_token_is_fetched_once_and_renewed_once_on_401() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    {
        let mut s = sn.sn();
        s.oauth_client = Some(("cg-client".into(), "cg-secret".into()));
        s.basic = None;
    }
    let oauth = |cmd: &mut assert_cmd::Command| {
        cmd.env_remove("CHANGEGATE_SERVICENOW_USER")
            .env_remove("CHANGEGATE_SERVICENOW_PASSWORD")
            .env("CHANGEGATE_SERVICENOW_CLIENT_ID", "cg-client")
            .env("CHANGEGATE_SERVICENOW_CLIENT_SECRET", "cg-secret");
    };
    let mut cmd = sn.cmd(&["gate"]);
    oauth(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(
        sn.sn().count("POST", "/oauth_token.do"),
        1,
        "one token for the whole run"
    );

    // The instance revokes the token mid-run: one 401, a new token, the call retried.
    sn.sn().faults.push(Fault {
        method: "PATCH",
        path_contains: "/change_request/",
        times: 1,
        kind: FaultKind::Status(401, json!({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"}), None),
    });
    let mut cmd = sn.cmd(&["record", "--outcome", "success"]);
    oauth(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(
        s.count("POST", "/oauth_token.do"),
        3,
        "first run 1; second run 1 + 1 after the 401"
    );
    assert_eq!(s.find(&sn.key())[0]["state"], "3");
}

#[tokio::test]
async fn history_request_count_does_not_grow_with_its_size() {
    let mut counts = Vec::new();
    for n in [10, 10_000] {
        let sn = Instance::start("").await;
        sn.seed_history(n, 300);
        let out = sn.run(&["gate", "--dry-run", "--format", "json"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let report = json_of(&out);
        assert_eq!(report["decision"], "pre-approved", "{report}");
        counts.push(sn.requests());
        let out = sn.run(&["policy", "explain"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        sn.assert_clean();
    }
    eprintln!(
        "decision requests: history of 10 → {}, history of 10,000 → {}",
        counts[0], counts[1]
    );
    assert_eq!(counts[0], counts[1]);
    assert_eq!(counts[0], 3, "last closed changes, lookup, stats");
}

#[tokio::test]
async fn record_skips_the_steps_the_instances_workflow_already_made() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    assert_eq!(code(&sn.run(&["gate"])), 0);
    {
        // A workflow on the instance moved the change to Review on its own.
        let mut s = sn.sn();
        let key = sn.key();
        let rec = s
            .changes
            .iter_mut()
            .find(|c| c.get("correlation_id") == Some(&key))
            .unwrap();
        rec.insert("state".into(), "0".into());
    }
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let s = sn.sn();
    assert_eq!(s.find(&sn.key())[0]["state"], "3");
    assert_eq!(
        s.log[before..]
            .iter()
            .filter(|l| l.method == "PATCH")
            .count(),
        1,
        "only Review → Closed"
    );
    // Recording again is harmless.
    drop(s);
    let before = sn.requests();
    let out = sn.run(&["record", "--outcome", "success"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    assert_eq!(
        sn.sn().log[before..]
            .iter()
            .filter(|l| l.method != "GET")
            .count(),
        0
    );
    sn.assert_clean();
}

#[tokio::test]
async fn refusals_carry_servicenows_words_and_the_roles_needed() {
    let sn = Instance::start("").await;
    sn.sn().faults.push(Fault {
        method: "POST",
        path_contains: "/sn_chg_rest/",
        times: 1,
        kind: FaultKind::Status(403, json!({"error": {"message": "Operation Failed", "detail": "ACL Exception Insert Failed due to security constraints"}, "status": "failure"}), None),
    });
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("ACL Exception Insert Failed due to security constraints"),
        "{stderr}"
    );
    assert!(
        stderr.contains("itil") && stderr.contains("sn_change_write"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_missing_assignment_group_is_the_instances_data_policy_message() {
    let sn = Instance::start("").await;
    std::fs::write(
        sn.repo.path().join(".changegate.toml"),
        "[servicenow]\nstandard_template = \"x\"\n",
    )
    .unwrap();
    let out = sn.run(&["gate", "--wait", "0"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("Assignment group is mandatory") && stderr.contains("from New to Assess"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_emergency_is_an_emergency_change_that_goes_ahead() {
    let sn = Instance::start("").await;
    let out = sn.run(&["gate", "--emergency", "payments down", "--format", "json"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stderr}");
    let report = json_of(&out);
    assert_eq!(report["decision"], "pre-approved");
    assert_eq!(report["emergency"], "payments down");
    let s = sn.sn();
    let rec = s.find(&sn.key())[0].clone();
    assert_eq!(rec["type"], "emergency");
    // Sent for (retrospective) approval; the base model allows no further without it.
    assert_eq!(
        (rec["state"].as_str(), rec["approval"].as_str()),
        ("-3", "requested")
    );
    assert!(!rec["work_start"].is_empty());
    assert!(rec["justification"].contains("emergency: payments down"));
    assert!(stderr.contains("before it is approved"), "{stderr}");
}

#[tokio::test]
async fn a_missing_template_is_named() {
    let sn = Instance::start("").await;
    sn.seed_history(10, 10);
    sn.sn().templates.clear();
    let out = sn.run(&["gate"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains(
            "no active standard change template named \"Pre-approved application deploy\""
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn today_decisions_use_this_sprints_allowance() {
    // Two pre-approved changes already today with an allowance of 2: the third needs approval.
    let sn =
        Instance::start("[policy]\nmin_history = 0\n[policy.allowance]\ninitial = 2\nstep = 0\n")
            .await;
    let today = Utc::now().date_naive();
    {
        let mut s = sn.sn();
        for i in 0..2u64 {
            let key = format!("{SERVICE_KEY_PREFIX}{:040x}", 0xdead_0000_u64 + i);
            s.seed_closed(&key, today, "standard", "successful");
        }
    }
    let out = sn.run(&["gate", "--wait", "0", "--format", "json"]);
    let report = json_of(&out);
    assert_eq!(report["decision"], "needs-approval", "{report}");
    let allowance = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "allowance")
        .unwrap()
        .clone();
    assert_eq!(allowance["passed"], false);
    assert!(
        allowance["reason"].as_str().unwrap().contains("2 of 2"),
        "{allowance}"
    );
}
