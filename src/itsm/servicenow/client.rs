//! The ServiceNow REST client: credentials (basic, OAuth, bearer token), the JSON envelope,
//! and errors that carry ServiceNow's own words. Every call goes through [`HttpClient`], so
//! timeouts, proxies and retries (429 with `Retry-After`, 5xx) are the shared ones.
//!
//! Calls that do not depend on each other's answers go in one round trip through the Batch
//! API ([`SnClient::batch`]), or one by one on an instance that refuses it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{ACCEPT, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::http::{HttpClient, HttpError};

pub use crate::settings::ServiceNowCredentials as Credentials;

/// An error ServiceNow answered with, in its own words, plus what we make of it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SnError {
    pub status: Option<StatusCode>,
    pub message: String,
}

/// ServiceNow's `{"error": {"message", "detail"}, "status": "failure"}`, as one line; `None`
/// when the body is not that (401s may be HTML or empty).
pub fn error_text(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let err = v.get("error")?;
    let text = |key: &str| {
        err.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // OAuth errors are flat: {"error": "server_error", "error_description": "access_denied"}.
    if let Some(code) = err.as_str() {
        let description = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Some(if description.is_empty() {
            code.to_string()
        } else {
            format!("{code}: {description}")
        });
    }
    match (text("message"), text("detail")) {
        (Some(m), Some(d)) if m != d => Some(format!("{m}: {d}")),
        (Some(m), _) => Some(m),
        (None, Some(d)) => Some(d),
        (None, None) => None,
    }
}

/// What a 403 usually means, to help whoever configures the integration user.
const ROLES_HINT: &str = "the integration user usually needs the itil role (or sn_change_write to create and \
     update change requests and sn_change_read to read them), read access to change_request for the \
     Aggregate API, read access to sysapproval_approver, and for verify read access to incident and \
     update access to closed change requests; a business rule or data policy on the instance can also \
     refuse an update";

/// One answer: status, headers and the raw body.
pub struct Reply {
    pub headers: HeaderMap,
    pub body: String,
    pub what: String,
}

impl Reply {
    /// Parses the body as JSON, with a clear error when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            let snippet: String = self.body.chars().take(120).collect();
            anyhow!(
                "ServiceNow answered {} with a body that is not the JSON expected ({e}); it began with {snippet:?}",
                self.what
            )
        })
    }

    /// `X-Total-Count`, when present.
    pub fn total_count(&self) -> Option<u64> {
        self.headers
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    }
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

/// The REST client of one instance.
pub struct SnClient {
    http: HttpClient,
    base: url::Url,
    creds: Credentials,
    /// The OAuth token, fetched on the first call and again before it expires: a credential
    /// of the connection, shared by every call, not a copy of anything a call returns.
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// The instance answered the Batch API with 404 or 403 (not installed, or not for this
    /// user): a fact of the connection, so the rest of the run sends calls one by one
    /// instead of asking again.
    batch_refused: AtomicBool,
}

/// ServiceNow's Batch API (the versioned path: the unversioned one is not a resource).
const BATCH: &str = "api/now/v1/batch";

/// One call of a [`SnClient::batch`]: what [`SnClient::call`] takes.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// The Batch API's answer (`serviced_requests`; ids not among them were not run).
#[derive(serde::Deserialize)]
struct BatchReply {
    #[serde(default)]
    serviced_requests: Vec<Serviced>,
}

#[derive(serde::Deserialize)]
struct Serviced {
    id: String,
    status_code: u16,
    #[serde(default)]
    headers: Vec<NameValue>,
    /// Base64 of the item's own answer.
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
}

#[derive(serde::Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

/// A request body.
pub enum Body<'a> {
    None,
    Json(&'a Value),
}

impl SnClient {
    pub fn new(http: HttpClient, base: url::Url, creds: Credentials) -> SnClient {
        SnClient {
            http,
            base,
            creds,
            token: tokio::sync::Mutex::new(None),
            batch_refused: AtomicBool::new(false),
        }
    }

    /// The full URL of `path` on the instance, with `query`.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<url::Url> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| anyhow!("cannot build the ServiceNow URL for {path}: {e}"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends `calls` in order, in one round trip: one `POST /api/now/v1/batch`, whose items
    /// the instance runs one after another. Returns each call's answer, as [`SnClient::call`]
    /// would, up to and including the first that failed (the callers' later calls only make
    /// sense after the earlier ones; an item the instance ran after a failure is not read).
    ///
    /// An item answered 401, 429 or 5xx, or left unrun, is sent again with the rest one by
    /// one, through the shared retries and the OAuth token's renewal. An instance that refuses the Batch API (404, 403) gets
    /// the calls one by one, and so does every later batch of the run. Any other failure of
    /// the batch itself is an error, as for a single call.
    pub async fn batch(&self, calls: &[Call]) -> Result<Vec<Result<Reply>>> {
        if calls.len() < 2 || self.batch_refused.load(Ordering::Relaxed) {
            return Ok(self.one_by_one(calls).await);
        }
        let mut items = Vec::with_capacity(calls.len());
        for (i, c) in calls.iter().enumerate() {
            let url = self.url(&c.path, &c.query)?;
            let mut headers = vec![json!({"name": "Accept", "value": "application/json"})];
            let mut item = json!({
                "id": i.to_string(),
                "method": c.method.as_str(),
                "url": self.relative(&url),
                "exclude_response_headers": false,
            });
            if let Some(body) = &c.body {
                headers.push(json!({"name": "Content-Type", "value": "application/json"}));
                let raw = serde_json::to_vec(body)
                    .map_err(|e| anyhow!("cannot encode a ServiceNow request body: {e}"))?;
                item["body"] = json!(BASE64.encode(raw));
            }
            item["headers"] = Value::Array(headers);
            items.push(item);
        }
        let body = json!({"batch_request_id": "changegate", "rest_requests": items});
        let reply = match self.call(Method::POST, BATCH, &[], Body::Json(&body)).await {
            Ok(reply) => reply,
            Err(e) if refuses_batch(&e) => {
                tracing::info!(
                    "ServiceNow refused its Batch API ({e:#}); sending requests one at a time for the rest of this run"
                );
                self.batch_refused.store(true, Ordering::Relaxed);
                return Ok(self.one_by_one(calls).await);
            }
            Err(e) => return Err(e),
        };
        let answer: BatchReply = reply.json()?;
        let mut out = Vec::with_capacity(calls.len());
        for (i, c) in calls.iter().enumerate() {
            let id = i.to_string();
            let what = format!("{} {}", c.method, self.url(&c.path, &[])?.path());
            match answer.serviced_requests.iter().find(|s| s.id == id) {
                Some(s) if !transient(s.status_code) => {
                    let r = self.item_reply(s, what);
                    let failed = r.is_err();
                    out.push(r);
                    if failed {
                        break;
                    }
                }
                other => {
                    if other.is_some_and(|s| s.status_code == 401) {
                        // As for a call on its own: the token is renewed before the retry.
                        *self.token.lock().await = None;
                    }
                    tracing::info!(
                        "ServiceNow {} {what} in a batch; sending it again on its own",
                        match other {
                            Some(s) => format!("answered {}", s.status_code),
                            None => "did not run".to_string(),
                        }
                    );
                    out.extend(self.one_by_one(&calls[i..]).await);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// `calls` one at a time, up to and including the first that fails.
    async fn one_by_one(&self, calls: &[Call]) -> Vec<Result<Reply>> {
        let mut out = Vec::with_capacity(calls.len());
        for c in calls {
            let body = match &c.body {
                Some(v) => Body::Json(v),
                None => Body::None,
            };
            let r = self.call(c.method.clone(), &c.path, &c.query, body).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    }

    /// A URL as a batch item names it: its path on the instance and query.
    fn relative(&self, url: &url::Url) -> String {
        let full = &url[url::Position::BeforePath..];
        let prefix = self.base.path().trim_end_matches('/');
        full.strip_prefix(prefix).unwrap_or(full).to_string()
    }

    /// One batch item's answer as a [`Reply`], or the error a single call would give.
    fn item_reply(&self, s: &Serviced, what: String) -> Result<Reply> {
        let raw = match s.body.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
            Some(b) => BASE64.decode(b).map_err(|e| {
                anyhow!(
                    "ServiceNow answered {what} in a batch with a body that is not Base64 ({e})"
                )
            })?,
            None => Vec::new(),
        };
        let body = String::from_utf8_lossy(&raw).into_owned();
        let status = StatusCode::from_u16(s.status_code).map_err(|_| {
            anyhow!(
                "ServiceNow answered {what} in a batch with the status {}",
                s.status_code
            )
        })?;
        if status.is_client_error() || status.is_server_error() {
            let body = if error_text(&body).is_none() {
                // The item's body may be empty; the batch's own words then say why.
                s.error_message
                    .as_deref()
                    .map(|m| json!({"error": {"message": m}}).to_string())
                    .unwrap_or(body)
            } else {
                body
            };
            return Err(SnError {
                status: Some(status),
                message: self.explain_status(status, Some(&body), &what),
            }
            .into());
        }
        let mut headers = HeaderMap::new();
        for h in &s.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                headers.append(name, value);
            }
        }
        Ok(Reply {
            headers,
            body,
            what,
        })
    }

    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// Sends one call. With OAuth, a 401 drops the cached token, fetches a new one and
    /// retries once. Errors carry ServiceNow's own message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body<'_>,
    ) -> Result<Reply> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| anyhow!("cannot build the ServiceNow URL for {path}: {e}"))?;
        let what = format!("{method} {}", url.path());
        let mut refreshed = false;
        loop {
            let bearer = self.bearer().await?;
            let sent = self
                .http
                .send(|c| {
                    let mut rb = c
                        .request(method.clone(), url.clone())
                        .query(query)
                        .header(ACCEPT, "application/json");
                    rb = match (&self.creds, &bearer) {
                        (_, Some(token)) => rb.bearer_auth(token.expose_secret()),
                        (Credentials::Basic { user, password }, None) => {
                            rb.basic_auth(user, Some(password.expose_secret()))
                        }
                        _ => rb,
                    };
                    if let Body::Json(v) = &body {
                        rb = rb.json(v);
                    }
                    rb
                })
                .await;
            match sent {
                Ok(response) => {
                    let headers = response.headers().clone();
                    let body = response.text().await.map_err(|e| {
                        anyhow!("ServiceNow's answer to {what} could not be read: {e}")
                    })?;
                    return Ok(Reply {
                        headers,
                        body,
                        what,
                    });
                }
                Err(HttpError::Status {
                    status: StatusCode::UNAUTHORIZED,
                    ..
                }) if matches!(self.creds, Credentials::OAuth { .. }) && !refreshed => {
                    tracing::info!(
                        "ServiceNow answered 401 for {what}; fetching a new OAuth token and retrying once"
                    );
                    *self.token.lock().await = None;
                    refreshed = true;
                }
                Err(e) => return Err(self.explain(e, &what).into()),
            }
        }
    }

    /// GET returning parsed JSON and the reply (for headers).
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(T, Reply)> {
        let reply = self.call(Method::GET, path, query, Body::None).await?;
        Ok((reply.json()?, reply))
    }

    /// Turns an HTTP failure into an error that says what ServiceNow said and what to do.
    fn explain(&self, e: HttpError, what: &str) -> SnError {
        let status = e.status();
        let message = match status {
            Some(s) => self.explain_status(s, e.body(), what),
            None => e.to_string(),
        };
        SnError { status, message }
    }

    /// What an error status means, in ServiceNow's words (from `body`) and ours.
    fn explain_status(&self, status: StatusCode, body: Option<&str>, what: &str) -> String {
        let said = body.and_then(error_text);
        let said_suffix = said
            .as_deref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        match status {
            StatusCode::UNAUTHORIZED => format!(
                "ServiceNow rejected the credentials (401) for {what}{said_suffix}; tried {}{}",
                self.creds.describe(),
                if matches!(self.creds, Credentials::OAuth { .. }) {
                    ", with a freshly fetched token"
                } else {
                    ""
                }
            ),
            StatusCode::FORBIDDEN => {
                format!("ServiceNow refused {what} (403){said_suffix}; {ROLES_HINT}")
            }
            StatusCode::NOT_FOUND => {
                format!("ServiceNow found nothing at {what} (404){said_suffix}")
            }
            StatusCode::TOO_MANY_REQUESTS => {
                format!(
                    "ServiceNow kept rate-limiting {what} (429){said_suffix}; retried with backoff, giving up"
                )
            }
            s if s.is_server_error() => format!(
                "ServiceNow failed on {what} ({s}){said_suffix}; retried with backoff, giving up"
            ),
            s => format!("ServiceNow refused {what} ({s}){said_suffix}"),
        }
    }

    /// The bearer token to send, if the credentials use one; fetches or refreshes it.
    async fn bearer(&self) -> Result<Option<SecretString>> {
        match &self.creds {
            Credentials::Basic { .. } => Ok(None),
            Credentials::Token(t) => Ok(Some(t.clone())),
            Credentials::OAuth { .. } => {
                let mut cached = self.token.lock().await;
                if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
                    return Ok(Some(t.token.clone()));
                }
                let fresh = self.fetch_token().await?;
                let token = fresh.token.clone();
                *cached = Some(fresh);
                Ok(Some(token))
            }
        }
    }

    /// `POST /oauth_token.do`. The token is refreshed 60 s before it expires.
    async fn fetch_token(&self) -> Result<CachedToken> {
        let Credentials::OAuth {
            client_id,
            client_secret,
            user,
        } = &self.creds
        else {
            anyhow::bail!("no OAuth credentials");
        };
        let url = self
            .base
            .join("oauth_token.do")
            .map_err(|e| anyhow!("cannot build the ServiceNow token URL: {e}"))?;
        let response = self
            .http
            .send(|c| {
                let mut form: Vec<(&str, &str)> = vec![
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose_secret()),
                ];
                match user {
                    Some((name, password)) => {
                        form.push(("grant_type", "password"));
                        form.push(("username", name.as_str()));
                        form.push(("password", password.expose_secret()));
                    }
                    None => form.push(("grant_type", "client_credentials")),
                }
                c.post(url.clone()).header(ACCEPT, "application/json").form(&form)
            })
            .await
            .map_err(|e| {
                let said = e.body().and_then(error_text).map(|s| format!(": {s}")).unwrap_or_default();
                match e.status() {
                    Some(s) if s.is_client_error() => SnError {
                        status: Some(s),
                        message: format!(
                            "ServiceNow refused to issue an OAuth token ({s}) at POST /oauth_token.do{said}; tried {}",
                            self.creds.describe()
                        ),
                    },
                    _ => self.explain(e, "POST /oauth_token.do"),
                }
            })?;
        let body = response.text().await.map_err(|e| {
            anyhow!("ServiceNow's answer to POST /oauth_token.do could not be read: {e}")
        })?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            access_token: String,
            #[serde(default)]
            expires_in: Option<Value>,
        }
        // Never echo this body: it holds the token.
        let reply: TokenReply = serde_json::from_str(&body).map_err(|e| {
            anyhow!(
                "ServiceNow answered POST /oauth_token.do with a body that is not a token ({e})"
            )
        })?;
        let lifetime = reply
            .expires_in
            .as_ref()
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .unwrap_or(1800);
        let lifetime = Duration::from_secs(lifetime);
        let margin = Duration::from_secs(60).min(lifetime / 2);
        tracing::debug!(
            "ServiceNow issued an OAuth token valid for {}s",
            lifetime.as_secs()
        );
        Ok(CachedToken {
            token: SecretString::from(reply.access_token),
            refresh_at: Instant::now() + lifetime - margin,
        })
    }
}

/// Whether the instance refused the Batch API itself (not installed, or not for this user).
fn refuses_batch(e: &anyhow::Error) -> bool {
    e.downcast_ref::<SnError>()
        .and_then(|s| s.status)
        .is_some_and(|s| s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN)
}

/// A batch item's status that a retry may change: the call is sent again on its own, where
/// 429 and 5xx are retried with backoff and a 401 fetches a new OAuth token.
fn transient(status: u16) -> bool {
    status == 401 || status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_reads_the_envelope() {
        let body = r#"{"error":{"message":"Rate limit exceeded","detail":"Rate limit of 100 requests per hour for Table API exceeded"},"status":"failure"}"#;
        assert_eq!(
            error_text(body).as_deref(),
            Some("Rate limit exceeded: Rate limit of 100 requests per hour for Table API exceeded")
        );
        assert_eq!(
            error_text(r#"{"error":{"message":"No Record found","detail":null}}"#).as_deref(),
            Some("No Record found")
        );
        assert_eq!(error_text("<html>401</html>"), None);
        assert_eq!(
            error_text(r#"{"error_description":"access_denied","error":"server_error"}"#)
                .as_deref(),
            Some("server_error: access_denied")
        );
    }

    fn client(base: &str) -> SnClient {
        let http = HttpClient::new("ServiceNow", &crate::http::Budget::default()).unwrap();
        let creds = Credentials::Basic {
            user: "svc".into(),
            password: SecretString::from("hunter2"),
        };
        SnClient::new(http, url::Url::parse(base).unwrap(), creds)
    }

    #[test]
    fn a_batch_item_names_its_path_on_the_instance_with_its_query() {
        let sn = client("https://acme.service-now.com/");
        let url = sn
            .url(
                "api/now/table/change_request",
                &[("sysparm_query", "a=b^c".to_string())],
            )
            .unwrap();
        assert_eq!(
            sn.relative(&url),
            "/api/now/table/change_request?sysparm_query=a%3Db%5Ec"
        );
        // Behind a path (a reverse proxy), the item's URL is still the instance's own.
        let sn = client("https://proxy.example/sn/");
        let url = sn.url("api/now/table/change_request/1", &[]).unwrap();
        assert_eq!(sn.relative(&url), "/api/now/table/change_request/1");
    }

    #[test]
    fn a_batch_items_answer_reads_as_its_own_call_would() {
        let sn = client("https://acme.service-now.com/");
        let ok = Serviced {
            id: "0".into(),
            status_code: 200,
            headers: vec![NameValue {
                name: "X-Total-Count".into(),
                value: "7".into(),
            }],
            body: Some(BASE64.encode(br#"{"result":[]}"#)),
            error_message: None,
        };
        let reply = sn.item_reply(&ok, "GET /api/now/table/x".into()).unwrap();
        assert_eq!(reply.body, r#"{"result":[]}"#);
        assert_eq!(reply.total_count(), Some(7));

        let refused = Serviced {
            id: "1".into(),
            status_code: 403,
            headers: Vec::new(),
            body: Some(BASE64.encode(
                br#"{"error":{"message":"Operation Failed","detail":"Invalid state transition"},"status":"failure"}"#,
            )),
            error_message: Some("Operation Failed".into()),
        };
        let Err(e) = sn.item_reply(&refused, "PATCH /api/now/table/change_request/1".into()) else {
            panic!("a 403 item is an error");
        };
        let sn_error = e.downcast_ref::<SnError>().unwrap();
        assert_eq!(sn_error.status, Some(StatusCode::FORBIDDEN));
        assert!(
            sn_error.message.starts_with(
                "ServiceNow refused PATCH /api/now/table/change_request/1 (403): Operation Failed: Invalid state transition;"
            ),
            "{}",
            sn_error.message
        );

        // No body: the batch's own error message says why.
        let bare = Serviced {
            body: None,
            error_message: Some("No Record found".into()),
            status_code: 404,
            ..refused
        };
        let Err(e) = sn.item_reply(&bare, "GET /x".into()) else {
            panic!("a 404 item is an error");
        };
        assert!(e.to_string().contains("(404): No Record found"), "{e}");
        assert!(transient(503) && transient(429) && transient(401) && !transient(404));
    }

    #[test]
    fn credentials_debug_names_the_kind_only() {
        let c = Credentials::Basic {
            user: "svc".into(),
            password: SecretString::from("hunter2"),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("svc"),
            "{shown}"
        );
        let c = Credentials::Token(SecretString::from("tok-123"));
        assert!(!format!("{c:?}").contains("tok-123"));
    }
}
