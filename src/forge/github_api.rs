//! The GitHub REST transport: octocrab over our own reqwest client (so timeouts, the user
//! agent and `HTTPS_PROXY`/`NO_PROXY` are the same as for every other call), with our own
//! retry and rate-limit policy on top.
//!
//! octocrab's built-in retry is switched off on purpose. Its default (`Simple(3)`) retries a
//! 429 at once, ignoring `Retry-After`, and never recognises a 403 rate limit; its
//! `HandleRateLimits` waits as long as `x-ratelimit-reset` says (up to an hour: a pipeline
//! would hang) and either retries no bare 403 (missing secondary limits) or every 403 (turning
//! a refused permission into minutes of waiting). Here, following GitHub's guidance:
//! `retry-after` wins; else `x-ratelimit-remaining: 0` waits for `x-ratelimit-reset`; else a
//! 429, or a 403 whose message says "rate limit", is a secondary limit and backs off from 60 s.
//! A wait longer than [`MAX_WAIT`] is not waited for: the call fails (a warning) instead.

use std::time::Duration;

use octocrab::Octocrab;
use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use crate::http::{Budget, HttpClient, HttpError};

/// Tries per call, all causes together.
const ATTEMPTS: u32 = 4;
/// The longest single wait for a rate limit; beyond it the call gives up.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);
/// The most pages read from one listing (100 items each).
const MAX_PAGES: usize = 50;

/// A GitHub call that failed for good.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Status {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("GitHub rate limit on {method} {path}: {why}")]
    RateLimited {
        method: Method,
        path: String,
        why: String,
    },
    #[error("GitHub could not be reached ({method} {path}) after {ATTEMPTS} attempts: {message}")]
    Transport {
        method: Method,
        path: String,
        message: String,
    },
    #[error("unexpected answer from GitHub to {method} {path}: {message}")]
    Decode {
        method: Method,
        path: String,
        message: String,
    },
    /// The run's outbound time budget is spent.
    #[error(transparent)]
    OutOfTime(HttpError),
    #[error("{0}")]
    Setup(String),
}

impl ApiError {
    /// The token may not do this (a read-only token, a missing permission, no access):
    /// GitHub answers 403, or 404 where it hides what exists.
    pub(crate) fn refused(&self) -> bool {
        matches!(
            self,
            ApiError::Status {
                status: 403 | 404,
                ..
            }
        )
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An authenticated GitHub API. Cheap to clone: octocrab shares its client.
#[derive(Clone)]
pub(crate) struct Api {
    crab: Octocrab,
    base: url::Url,
    budget: Budget,
}

impl Api {
    /// `base_url` is `GITHUB_API_URL` (`https://api.github.com`, `https://HOST/api/v3`, a
    /// test server); `bearer` a token or an App JWT.
    pub(crate) fn new(
        http: &HttpClient,
        base_url: &str,
        bearer: &SecretString,
    ) -> Result<Api, ApiError> {
        let base = url::Url::parse(base_url).map_err(|e| {
            ApiError::Setup(format!("GITHUB_API_URL {base_url:?} is not a URL: {e}"))
        })?;
        let crab = Octocrab::builder()
            .base_uri(base_url)
            .map_err(|e| {
                ApiError::Setup(format!("GITHUB_API_URL {base_url:?} is not usable: {e}"))
            })?
            .add_header(
                reqwest::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .personal_token(bearer.clone())
            .build_with_reqwest(http.client().clone())
            .map_err(|e| ApiError::Setup(format!("cannot set up the GitHub client: {e}")))?;
        Ok(Api {
            crab,
            base,
            budget: http.budget().clone(),
        })
    }

    /// One call, retried on transport errors, 5xx and rate limits; the body on success.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(HeaderMap, String), ApiError> {
        // octocrab sends on our client (its per-request timeout), but not through
        // `HttpClient::send`: the budget is applied here, around each attempt and pause.
        let meter = self.budget.meter();
        let out_of_time =
            |last: &str| ApiError::OutOfTime(meter.out_of_time("GitHub", &method, path, last));
        let mut attempt = 0;
        let mut timeouts = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let started = std::time::Instant::now();
            let Some(timeout) = meter.attempt_timeout() else {
                return Err(out_of_time(""));
            };
            let exchange = async {
                let sent = match method {
                    Method::GET => self.crab._get(path).await,
                    Method::POST => self.crab._post(path, body).await,
                    Method::PATCH => self.crab._patch(path, body).await,
                    Method::DELETE => self.crab._delete(path, None::<&()>).await,
                    _ => return Err(None),
                };
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let headers = response.headers().clone();
                        let text = self.crab.body_to_string(response).await.unwrap_or_default();
                        Ok((status, headers, text))
                    }
                    Err(e) => Err(Some(e.to_string())),
                }
            };
            let outcome = match tokio::time::timeout(timeout, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => Err(Some(format!(
                    "no answer within {:.1}s",
                    timeout.as_secs_f64()
                ))),
            };
            let (status, headers, text) = match outcome {
                Ok(answer) => answer,
                Err(None) => return Err(ApiError::Setup(format!("unsupported method {method}"))),
                Err(Some(message)) => {
                    tracing::debug!(%method, path, error = %message, "github");
                    // Whichever timer fired (ours or the client's), a failure after the whole
                    // timeout is a timeout: tried once more at most.
                    if started.elapsed() >= timeout {
                        timeouts += 1;
                    }
                    let Some(left) = meter.remaining() else {
                        return Err(out_of_time(&message));
                    };
                    if last || timeouts >= 2 {
                        return Err(ApiError::Transport {
                            method,
                            path: path.to_string(),
                            message,
                        });
                    }
                    let delay = backoff(attempt);
                    if delay >= left {
                        return Err(out_of_time(&message));
                    }
                    tracing::warn!(
                        "GitHub could not be reached for {method} {path} ({message}); retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            tracing::debug!(%method, path, status, "github");
            if (200..300).contains(&status) {
                return Ok((headers, text));
            }
            let message = super::api_message(&text);
            if let Some(wait) = rate_limit_wait(
                status,
                &headers,
                &text,
                attempt,
                chrono::Utc::now().timestamp(),
            ) {
                if wait > MAX_WAIT {
                    let why = format!(
                        "{message} (the limit lifts in {}s, longer than changegate waits)",
                        wait.as_secs()
                    );
                    return Err(ApiError::RateLimited {
                        method,
                        path: path.to_string(),
                        why,
                    });
                }
                if last {
                    let why = format!("{message} (still limited after {ATTEMPTS} attempts)");
                    return Err(ApiError::RateLimited {
                        method,
                        path: path.to_string(),
                        why,
                    });
                }
                if meter.remaining().is_none_or(|left| wait >= left) {
                    return Err(out_of_time(&format!(
                        "rate limited ({message}); waiting {}s would not fit",
                        wait.as_secs()
                    )));
                }
                tracing::warn!(
                    "GitHub rate limit on {method} {path} ({message}): waiting {}s",
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status >= 500 && status != 501 && !last {
                let delay = backoff(attempt);
                if meter.remaining().is_none_or(|left| delay >= left) {
                    return Err(out_of_time(&format!(
                        "answered {status}; a retry in {:.1}s would not fit",
                        delay.as_secs_f64()
                    )));
                }
                tracing::warn!(
                    "GitHub answered {status} to {method} {path}; retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(ApiError::Status {
                method,
                path: path.to_string(),
                status,
                message,
            });
        }
    }

    /// A call whose answer is JSON.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let (_, text) = self.call(method.clone(), path, body).await?;
        serde_json::from_str(&text).map_err(|e| ApiError::Decode {
            method,
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// Every item of a listing, following the `Link: rel="next"` pages.
    pub(crate) async fn all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(path.to_string());
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            let (headers, text) = self.call(Method::GET, &page, None).await?;
            let batch: Vec<T> = serde_json::from_str(&text).map_err(|e| ApiError::Decode {
                method: Method::GET,
                path: page.clone(),
                message: e.to_string(),
            })?;
            items.extend(batch);
            if pages >= MAX_PAGES {
                tracing::warn!("stopped reading {path} after {MAX_PAGES} pages");
                break;
            }
            next = next_link(&headers).and_then(|url| self.same_origin_path(&url));
        }
        Ok(items)
    }

    /// The path and query of a `Link` URL, when it points at our API: a link elsewhere is
    /// not followed (the token goes only where it was configured to go).
    pub(crate) fn same_origin_path(&self, link: &str) -> Option<String> {
        let url = url::Url::parse(link).ok()?;
        if url.origin() != self.base.origin() {
            tracing::warn!(
                "not following a pagination link to another host: {}",
                url.origin().ascii_serialization()
            );
            return None;
        }
        Some(match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        })
    }
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""))
            .then(|| url.to_string())
    })
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long to wait before trying again, when the answer is a rate limit; `None` when it is
/// not one (a plain 403 is a permission problem and is not retried).
pub(crate) fn rate_limit_wait(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    attempt: u32,
    now: i64,
) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    if let Some(secs) = header_u64(headers, "retry-after") {
        return Some(Duration::from_secs(secs));
    }
    if header_u64(headers, "x-ratelimit-remaining") == Some(0)
        && let Some(reset) = header_u64(headers, "x-ratelimit-reset")
    {
        let secs = (reset as i64 - now).max(1);
        return Some(Duration::from_secs(secs as u64));
    }
    if status == 429 || body.to_ascii_lowercase().contains("rate limit") {
        // A secondary limit without headers: at least a minute, then exponentially longer.
        return Some(Duration::from_secs(
            60u64.saturating_mul(1 << (attempt.saturating_sub(1)).min(6)),
        ));
    }
    None
}

/// Exponential backoff with jitter for transport errors and 5xx: ~0.5 s, 1 s, 2 s.
fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << (attempt.saturating_sub(1)).min(6));
    Duration::from_millis(base / 2 + fastrand::u64(0..=base / 2))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rate_limits_primary_secondary_and_plain_refusals() {
        let now = 1_000_000;
        // Retry-After wins, on 403 and 429.
        assert_eq!(
            rate_limit_wait(403, &headers(&[("retry-after", "7")]), "", 1, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(429, &headers(&[("retry-after", "3")]), "", 1, now),
            Some(Duration::from_secs(3))
        );
        // Primary limit: wait until the reset.
        let primary = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1000030"),
        ]);
        assert_eq!(
            rate_limit_wait(403, &primary, "API rate limit exceeded", 1, now),
            Some(Duration::from_secs(30))
        );
        // Secondary limit without headers: a minute, then longer.
        let secondary = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
        assert_eq!(
            rate_limit_wait(403, &HeaderMap::new(), secondary, 1, now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_wait(403, &HeaderMap::new(), secondary, 2, now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            rate_limit_wait(429, &HeaderMap::new(), "", 1, now),
            Some(Duration::from_secs(60))
        );
        // A refusal is not a rate limit, even with budget headers present.
        let budget = headers(&[
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1000030"),
        ]);
        assert_eq!(
            rate_limit_wait(
                403,
                &budget,
                r#"{"message":"Resource not accessible by integration"}"#,
                1,
                now
            ),
            None
        );
        assert_eq!(rate_limit_wait(404, &HeaderMap::new(), "", 1, now), None);
        assert_eq!(
            rate_limit_wait(500, &headers(&[("retry-after", "1")]), "", 1, now),
            None
        );
    }

    #[test]
    fn link_header_next() {
        let h = headers(&[(
            "link",
            r#"<https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=5>; rel="last""#,
        )]);
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/issues/2/comments?per_page=100&page=2")
        );
        let last_page = headers(&[(
            "link",
            r#"<https://api.github.com/x?page=1>; rel="first", <https://api.github.com/x?page=4>; rel="prev""#,
        )]);
        assert_eq!(next_link(&last_page), None);
    }
}
