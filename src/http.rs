//! One HTTP client for every outbound call: user agent, timeouts, proxies from the
//! environment, bounded retries with backoff, jitter and `Retry-After`, and errors that carry
//! the response body. Credentials are never logged: only method, URL path and status are.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};

/// How many times a request is tried in all, and how long to wait between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A request that failed for good.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server answered with an error status. `body` is its own words.
    #[error("{service} answered {status} for {method} {path}")]
    Status {
        service: &'static str,
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error(
        "{service} could not be reached ({method} {path}) after {attempts} attempts: {message}"
    )]
    Transport {
        service: &'static str,
        method: Method,
        path: String,
        attempts: u32,
        message: String,
    },
    #[error("could not build the HTTP client: {0}")]
    Build(String),
}

impl HttpError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn body(&self) -> Option<&str> {
        match self {
            HttpError::Status { body, .. } => Some(body),
            _ => None,
        }
    }
}

/// The shared client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    service: &'static str,
    retry: RetryPolicy,
}

pub const USER_AGENT: &str = concat!("changegate/", env!("CARGO_PKG_VERSION"));

impl HttpClient {
    /// `service` names the remote in errors and logs ("ServiceNow", "GitHub", ...).
    /// Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`, as reqwest reads them.
    pub fn new(service: &'static str) -> Result<Self, HttpError> {
        let inner = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| HttpError::Build(e.to_string()))?;
        Ok(HttpClient {
            inner,
            service,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The underlying client, to build requests with.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends the request `build` makes, retrying on transport errors, 429 and 5xx (except
    /// 501), and returns the first success. `build` is called again for each try.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = build(&self.inner)
                .build()
                .map_err(|e| HttpError::Build(e.to_string()))?;
            let method = request.method().clone();
            let path = request.url().path().to_string();
            let started = std::time::Instant::now();
            let last = attempt >= self.retry.attempts;
            match self.inner.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(service = self.service, %method, %path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "http");
                    if status.is_success() {
                        return Ok(response);
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
                    let wait = retry_after(&response);
                    if retryable && !last {
                        let delay = wait
                            .unwrap_or_else(|| self.backoff(attempt))
                            .min(self.retry.max_delay);
                        tracing::warn!(
                            "{} answered {status} for {method} {path}; retrying in {:.1}s (attempt {attempt} of {})",
                            self.service,
                            delay.as_secs_f64(),
                            self.retry.attempts
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    let body = response.text().await.unwrap_or_default();
                    return Err(HttpError::Status {
                        service: self.service,
                        method,
                        path,
                        status,
                        body: truncate(body, 4000),
                    });
                }
                Err(e) => {
                    let message = describe(&e);
                    tracing::debug!(service = self.service, %method, %path, error = %message, "http");
                    if !last {
                        let delay = self.backoff(attempt);
                        tracing::warn!(
                            "{} could not be reached for {method} {path} ({message}); retrying in {:.1}s (attempt {attempt} of {})",
                            self.service,
                            delay.as_secs_f64(),
                            self.retry.attempts
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(HttpError::Transport {
                        service: self.service,
                        method,
                        path,
                        attempts: attempt,
                        message,
                    });
                }
            }
        }
    }

    /// Exponential backoff with full jitter: a random delay in [base·2ⁿ/2, base·2ⁿ].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base.saturating_mul(1 << (attempt - 1).min(16));
        let capped = exp.min(self.retry.max_delay);
        let half = capped / 2;
        half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
    }
}

/// `Retry-After` in seconds or as an HTTP date; also GitHub's `x-ratelimit-reset` when the
/// remaining budget is zero.
pub fn retry_after(response: &Response) -> Option<Duration> {
    let headers = response.headers();
    if let Some(value) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = value.trim().parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(value.trim()) {
            let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
            return Some(Duration::from_secs(secs as u64));
        }
    }
    let remaining = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok());
    if remaining == Some("0") {
        let reset = headers
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())?;
        let secs = (reset - chrono::Utc::now().timestamp()).max(0);
        return Some(Duration::from_secs(secs as u64));
    }
    None
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The URL inside reqwest's message never carries credentials: they go in headers.
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
