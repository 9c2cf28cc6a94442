//! One HTTP client for every outbound call: user agent, timeouts, proxies from the
//! environment, bounded retries with backoff, jitter and `Retry-After`, a run-wide time
//! budget, and errors that carry the response body. Credentials are never logged: only
//! method, URL path and status are.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// How long one run may spend on outbound calls (`[http] deadline`), retries and backoff
/// included, and how long one request may take (`[http] timeout`). Every client of a run
/// holds a clone: the time any of them spends is charged to the same account, so a silent
/// remote cannot hold a runner longer than the deadline however many calls the run makes.
/// The approval wait's polls are not charged (see [`outside_budget`]).
#[derive(Debug, Clone)]
pub struct Budget {
    limit: Duration,
    request_timeout: Duration,
    spent: Arc<Mutex<Duration>>,
}

/// `[http] deadline` by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// `[http] timeout` by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Budget {
    fn default() -> Self {
        Budget::new(DEFAULT_DEADLINE, DEFAULT_REQUEST_TIMEOUT)
    }
}

impl Budget {
    /// A fresh budget: nothing spent yet.
    pub fn new(limit: Duration, request_timeout: Duration) -> Budget {
        Budget {
            limit,
            request_timeout,
            spent: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// The whole budget (`http.deadline`).
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The longest one request may take (`http.timeout`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// What the finished calls have used so far.
    pub fn spent(&self) -> Duration {
        *self.lock()
    }

    /// Takes over what `other` has spent: calls made before this budget existed (the
    /// governing config is fetched before the settings are known) count towards it too.
    pub fn absorb(&self, other: &Budget) {
        let extra = other.spent();
        let mut spent = self.lock();
        *spent = spent.saturating_add(extra);
    }

    fn charge(&self, d: Duration) {
        let mut spent = self.lock();
        *spent = spent.saturating_add(d);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Duration> {
        // A poisoned lock still holds a whole Duration.
        self.spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the clock of one call (all its attempts and pauses).
    pub fn meter(&self) -> Meter<'_> {
        Meter {
            budget: self,
            started: Instant::now(),
            outside: WAIT_ENDS.try_with(|end| *end).ok(),
        }
    }
}

tokio::task_local! {
    /// Set while the approval wait polls: the moment its polls must be over by.
    static WAIT_ENDS: Instant;
}

/// Runs `f` (the approval wait's polls) outside the budget: its calls are not charged to
/// `http.deadline` (`approval.timeout` bounds the wait), but each attempt still respects
/// the per-request timeout and none runs, waits or retries past `ends`.
pub async fn outside_budget<F: Future>(ends: Instant, f: F) -> F::Output {
    WAIT_ENDS.scope(ends, f).await
}

/// The clock of one call. Dropping it charges the call's time to the budget (unless the
/// call runs inside [`outside_budget`]).
#[derive(Debug)]
pub struct Meter<'a> {
    budget: &'a Budget,
    started: Instant,
    outside: Option<Instant>,
}

impl Meter<'_> {
    /// What is left for this call: of the run's budget, or of the approval wait. `None`
    /// when nothing is left.
    pub fn remaining(&self) -> Option<Duration> {
        let left = match self.outside {
            Some(ends) => ends.saturating_duration_since(Instant::now()),
            None => self
                .budget
                .limit
                .saturating_sub(self.budget.spent())
                .saturating_sub(self.started.elapsed()),
        };
        (!left.is_zero()).then_some(left)
    }

    /// The timeout of the next attempt: the per-request timeout, or less when less is left.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.remaining()
            .map(|left| left.min(self.budget.request_timeout))
    }

    /// The error for a call that ran out of time; `last` says what the last attempt met.
    pub fn out_of_time(
        &self,
        service: &'static str,
        method: &Method,
        path: &str,
        last: &str,
    ) -> HttpError {
        // A query can carry search terms; the call is named by its method and path.
        let path = path.split('?').next().unwrap_or_default().to_string();
        match self.outside {
            Some(_) => HttpError::WaitOver {
                service,
                method: method.clone(),
                path,
                last: last.to_string(),
            },
            None => HttpError::Deadline {
                service,
                method: method.clone(),
                path,
                spent: self.budget.spent().saturating_add(self.started.elapsed()),
                limit: self.budget.limit,
                last: last.to_string(),
            },
        }
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if self.outside.is_none() {
            self.budget.charge(self.started.elapsed());
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
    /// The run's outbound time budget (`http.deadline`) is spent.
    #[error(
        "{service} call {method} {path} stopped: the run spent {:.1}s on outbound calls, the whole of http.deadline ({}){}",
        spent.as_secs_f64(),
        humantime::format_duration(*limit),
        last_words(last)
    )]
    Deadline {
        service: &'static str,
        method: Method,
        path: String,
        spent: Duration,
        limit: Duration,
        last: String,
    },
    /// A poll of the approval wait ran into the end of the wait.
    #[error(
        "{service} call {method} {path} stopped: the approval wait (approval.timeout plus one request timeout) is over{}",
        last_words(last)
    )]
    WaitOver {
        service: &'static str,
        method: Method,
        path: String,
        last: String,
    },
    #[error("could not build the HTTP client: {0}")]
    Build(String),
}

fn last_words(last: &str) -> String {
    if last.is_empty() {
        String::new()
    } else {
        format!("; last attempt: {last}")
    }
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
    budget: Budget,
    /// The URL itself is a secret (a chat webhook): errors and logs never name its path.
    secret_url: bool,
}

/// The TLS set-up of every client: rustls with the platform verifier (the system's CA
/// store, `SSL_CERT_FILE` and `SSL_CERT_DIR` honoured, so a corporate CA is trusted), whose
/// store is loaded on the first certificate it checks: a run that makes no `https` request
/// (a dry run, a plain-HTTP ITSM) never reads the system's CA certificates.
fn tls_config() -> Result<rustls::ClientConfig, HttpError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = Arc::new(LazyVerifier {
        provider: provider.clone(),
        inner: std::sync::OnceLock::new(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Build(format!("TLS set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform verifier, built (and the CA store read) when the first server certificate
/// is checked; a store that cannot be read fails that handshake, and every later one.
#[derive(Debug)]
struct LazyVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: std::sync::OnceLock<Result<Arc<rustls_platform_verifier::Verifier>, rustls::Error>>,
}

impl LazyVerifier {
    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, rustls::Error> {
        self.inner
            .get_or_init(|| {
                rustls_platform_verifier::Verifier::new(self.provider.clone()).map(Arc::new)
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Who is calling, and where to read about it: remotes' administrators see this in their
/// logs. The repository is Cargo.toml's, named there once.
pub const USER_AGENT: &str = concat!(
    "changegate/",
    env!("CARGO_PKG_VERSION"),
    " (+",
    env!("CARGO_PKG_REPOSITORY"),
    ")"
);

/// A request that timed out is tried once more, never more: a remote that is silent twice
/// in a row is unlikely to answer the third time, and each try costs a whole timeout.
const TIMEOUT_TRIES: u32 = 2;

impl HttpClient {
    /// `service` names the remote in errors and logs ("ServiceNow", "GitHub", ...); `budget`
    /// is the run's (see [`Budget`]). Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`,
    /// as reqwest reads them.
    pub fn new(service: &'static str, budget: &Budget) -> Result<Self, HttpError> {
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .user_agent(USER_AGENT)
            .connect_timeout(budget.request_timeout.min(Duration::from_secs(10)))
            // Requests sent through `send` get their own, shorter timeout when the budget is
            // nearly spent; this one bounds the calls octocrab makes on this client.
            .timeout(budget.request_timeout)
            .build()
            .map_err(|e| HttpError::Build(e.to_string()))?;
        Ok(HttpClient {
            inner,
            service,
            retry: RetryPolicy::default(),
            budget: budget.clone(),
            secret_url: false,
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// For a URL that is itself a secret (a chat webhook's): errors and logs say
    /// "(secret URL)" where they would name the path.
    pub fn with_secret_url(mut self) -> Self {
        self.secret_url = true;
        self
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The run's budget this client charges.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The underlying client, to build requests with.
    pub fn client(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends the request `build` makes, retrying on transport errors, 429 and 5xx (except
    /// 501), and returns the first success. `build` is called again for each try. A
    /// timed-out request is tried at most twice; every try and every pause fits in what is
    /// left of the run's budget, and when it is spent the call fails with
    /// [`HttpError::Deadline`].
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, HttpError> {
        let meter = self.budget.meter();
        let mut attempt = 0;
        let mut timeouts = 0;
        loop {
            attempt += 1;
            let mut request = build(&self.inner)
                .build()
                .map_err(|e| HttpError::Build(e.to_string()))?;
            let method = request.method().clone();
            let path = if self.secret_url {
                "(secret URL)".to_string()
            } else {
                request.url().path().to_string()
            };
            let Some(timeout) = meter.attempt_timeout() else {
                return Err(meter.out_of_time(self.service, &method, &path, ""));
            };
            // Covers connecting, the headers and the body the caller reads afterwards.
            *request.timeout_mut() = Some(timeout);
            let started = Instant::now();
            let last = attempt >= self.retry.attempts;
            match self.inner.execute(request).await {
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(service = self.service, %method, %path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "http");
                    if status.is_success() {
                        return Ok(response);
                    }
                    let retryable = retryable(status);
                    let wait = retry_after(&response);
                    if retryable && !last {
                        let delay = wait
                            .unwrap_or_else(|| self.backoff(attempt))
                            .min(self.retry.max_delay);
                        if meter.remaining().is_none_or(|left| delay >= left) {
                            let why = format!(
                                "answered {status}; a retry in {:.1}s would not fit",
                                delay.as_secs_f64()
                            );
                            return Err(meter.out_of_time(self.service, &method, &path, &why));
                        }
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
                    let timed_out = e.is_timeout();
                    // The query can be long and carry search terms: errors name the path only.
                    let message = describe(&e.without_url());
                    tracing::debug!(service = self.service, %method, %path, error = %message, "http");
                    if timed_out {
                        timeouts += 1;
                    }
                    let Some(left) = meter.remaining() else {
                        return Err(meter.out_of_time(self.service, &method, &path, &message));
                    };
                    if !last && timeouts < TIMEOUT_TRIES {
                        let delay = self.backoff(attempt);
                        if delay >= left {
                            return Err(meter.out_of_time(self.service, &method, &path, &message));
                        }
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

/// Why a base URL is refused before anything is sent to it.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// `user:password@host`: the URL ends up in outputs, logs and comments.
    #[error(
        "{what} {shown} has credentials in it: remove them from the URL and put credentials in {creds}"
    )]
    UserInfo {
        what: String,
        /// The URL with its user info removed.
        shown: String,
        creds: &'static str,
    },
    /// Plain `http://` to another machine: the credentials would cross the network in clear.
    #[error(
        "{what} {url} is plain http:// to a host other than this machine: credentials would be sent in clear; use https://, or set [http] allow_insecure_http = true"
    )]
    Insecure { what: String, url: String },
    #[error("{what} {shown} is not a URL: {reason}")]
    Invalid {
        what: String,
        shown: String,
        reason: String,
    },
}

/// Checks a base URL (ServiceNow, Jira, a forge API) before any request goes to it: no
/// user info (`creds` names where credentials belong), and no plain `http://` to a host
/// other than this machine unless `allow_insecure`. Errors never repeat a password.
pub fn check_base_url(
    what: &str,
    raw: &str,
    creds: &'static str,
    allow_insecure: bool,
) -> Result<(), UrlError> {
    let raw = raw.trim();
    let mut url = url::Url::parse(raw).map_err(|e| UrlError::Invalid {
        what: what.to_string(),
        // An unparsable URL cannot be cleaned: with an `@` it may hold a password.
        shown: if raw.contains('@') {
            "(not shown: it contains '@')".to_string()
        } else {
            format!("{raw:?}")
        },
        reason: e.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Both setters only fail for URLs that cannot have user info, which this one has.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(UrlError::UserInfo {
            what: what.to_string(),
            shown: url.to_string(),
            creds,
        });
    }
    if url.scheme() == "http" && !allow_insecure && !is_loopback(&url) {
        return Err(UrlError::Insecure {
            what: what.to_string(),
            url: url.to_string(),
        });
    }
    Ok(())
}

/// Checks a URL that is itself a secret (a chat webhook's) before anything is sent to it:
/// `https`, or plain `http` to this machine only, and no user info. The error says what is
/// wrong, never the URL.
pub fn check_secret_url(raw: &str) -> Result<url::Url, &'static str> {
    let url = url::Url::parse(raw.trim()).map_err(|_| "is not a URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("has user info in it");
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        _ => Err("is not an https:// URL"),
    }
}

/// This machine: `localhost`, 127.0.0.0/8, `::1`.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `Retry-After` in seconds or as an HTTP date; also GitHub's `x-ratelimit-reset` when the
/// remaining budget is zero.
/// Whether an error answer is worth another try: rate limited, or a server error other
/// than "not implemented" (which a retry cannot change).
pub fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

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
    // Called without the URL: the call is named by its method and path beside this.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_without_user_info_or_clear_text_to_other_hosts() {
        let check = |url: &str, insecure: bool| check_base_url("the URL", url, "VARS", insecure);
        assert!(check("https://example.service-now.com", false).is_ok());
        for local in [
            "http://127.0.0.1:9",
            "http://127.9.9.9",
            "http://LOCALHOST",
            "http://[::1]",
        ] {
            assert!(check(local, false).is_ok(), "{local}");
        }
        let err = check("http://10.0.0.1", false).unwrap_err().to_string();
        assert!(err.contains("allow_insecure_http"), "{err}");
        assert!(check("http://10.0.0.1", true).is_ok());
        // A name that merely starts like this machine's is another host.
        assert!(check("http://localhost.example.com", false).is_err());
        // User info is refused even where clear text is allowed; the password never shows.
        let err = check("http://u:pa55@127.0.0.1", true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("put credentials in VARS") && !err.contains("pa55"),
            "{err}"
        );
        assert!(
            err.contains("http://127.0.0.1/") && !err.contains("u@"),
            "{err}"
        );
        // An unparsable URL with an `@` is not repeated: it may hold a password.
        let err = check("https://u:pa55 word@host", false)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pa55"), "{err}");
    }

    #[test]
    fn the_budget_is_shared_and_charged_when_a_call_ends() {
        let budget = Budget::new(Duration::from_secs(10), Duration::from_secs(60));
        let clone = budget.clone();
        {
            let meter = clone.meter();
            // Less than the budget is left, and no attempt may outlast it.
            assert!(
                meter
                    .attempt_timeout()
                    .is_some_and(|t| t <= Duration::from_secs(10))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(budget.spent() >= Duration::from_millis(20));
        let early = Budget::default();
        early.charge(Duration::from_secs(10));
        budget.absorb(&early);
        let meter = budget.meter();
        assert_eq!(meter.remaining(), None, "the budget is spent");
        let err = meter.out_of_time("ServiceNow", &Method::GET, "/api/now/table/x?q=secret", "");
        let text = err.to_string();
        assert!(
            text.contains("ServiceNow call GET /api/now/table/x stopped")
                && text.contains("http.deadline (10s)")
                && !text.contains("secret"),
            "{text}"
        );
    }
}
