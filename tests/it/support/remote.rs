//! One harness for every fake remote (ServiceNow, Jira, GitHub, GitLab): a wiremock server
//! that fails the test on any request nobody expected and on any anomaly a stateful fake
//! saw, whether or not the test remembers to check.
//!
//! Why a harness and not wiremock's 404: a client may read a 404 as "not found" and carry
//! on, so a request to a route the fake does not know could pass a test unseen. Here an
//! unmatched request is answered 599 (no real service sends it, no client maps it to a
//! domain answer) and recorded; a stateful fake that answers everything itself reports
//! unknown routes, fields and query terms through a [`Watch`]; and when the [`Remote`] is
//! dropped at the end of the test it panics with the whole list.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The status an unexpected request is answered with: outside every API's vocabulary, so
/// the client under test fails loudly instead of reading it as an answer.
pub const UNEXPECTED: u16 = 599;

/// What a fake saw that a test did not ask for: unmatched requests and anomalies, in order.
///
/// Cloned into responders; every clone writes to the same list.
#[derive(Debug, Clone, Default)]
pub struct Watch(Arc<Mutex<Vec<String>>>);

impl Watch {
    /// Records an anomaly: a request the fake answered but a real service would not honour
    /// as the client meant (an unknown field, an unknown query term, a missing header).
    pub fn flag(&self, anomaly: impl Into<String>) {
        self.lock().push(anomaly.into());
    }

    /// Records `req` as a request nobody expected and returns the loud answer to send.
    pub fn unexpected(&self, req: &Request) -> ResponseTemplate {
        let line = describe(req);
        self.flag(format!("unexpected request: {line}"));
        ResponseTemplate::new(UNEXPECTED).set_body_string(format!("unexpected request: {line}"))
    }

    /// Everything recorded so far.
    pub fn problems(&self) -> Vec<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // A responder that panicked mid-push must not hide what was already recorded.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `METHOD PATH?QUERY`, as a failing test names the request.
fn describe(req: &Request) -> String {
    match req.url.query() {
        Some(q) => format!("{} {}?{q}", req.method, req.url.path()),
        None => format!("{} {}", req.method, req.url.path()),
    }
}

/// A fake remote: a wiremock server whose unmatched requests and flagged anomalies fail the
/// test when it is dropped (or at [`Remote::verify`]).
///
/// Derefs to the [`MockServer`], so mocks mount on it as on a bare server.
pub struct Remote {
    server: MockServer,
    watch: Watch,
    /// Why this test may leave problems behind; `None` for every test but a few.
    excused: Option<&'static str>,
}

impl Remote {
    /// Starts the server with a catch-all of the lowest priority that records and answers
    /// [`UNEXPECTED`]: any mock a test mounts wins over it.
    pub async fn start() -> Remote {
        let server = MockServer::start().await;
        let watch = Watch::default();
        let catch = watch.clone();
        Mock::given(any())
            .respond_with(move |req: &Request| catch.unexpected(req))
            .with_priority(u8::MAX)
            .named("a request nobody expected")
            .mount(&server)
            .await;
        Remote {
            server,
            watch,
            excused: None,
        }
    }

    /// The handle a stateful fake reports anomalies and unknown routes through.
    pub fn watch(&self) -> Watch {
        self.watch.clone()
    }

    /// Records an anomaly (see [`Watch::flag`]).
    pub fn flag(&self, anomaly: impl Into<String>) {
        self.watch.flag(anomaly);
    }

    /// Opts this test out of the check at drop: it sends a stray request on purpose (or the
    /// code under test does today, and the lead was told). `reason` says which and why.
    pub fn expect_unmatched(&mut self, reason: &'static str) {
        self.excused = Some(reason);
    }

    /// Fails the test now if any request went unmatched or any anomaly was flagged
    /// (unless excused), then checks wiremock's own `expect` counts.
    pub async fn verify(&self) {
        self.assert_clean();
        self.server.verify().await;
    }

    /// The synchronous half of [`Remote::verify`]: unmatched requests and anomalies only.
    pub fn assert_clean(&self) {
        if self.excused.is_some() {
            return;
        }
        let problems = self.watch.problems();
        assert!(
            problems.is_empty(),
            "the fake at {} saw what a real service would not honour as meant:\n  {}",
            self.server.uri(),
            problems.join("\n  ")
        );
    }
}

impl Deref for Remote {
    type Target = MockServer;

    fn deref(&self) -> &MockServer {
        &self.server
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A second panic while unwinding would abort the whole test binary and hide the
        // first failure, which is the one to read.
        if !std::thread::panicking() {
            self.assert_clean();
        }
    }
}

#[cfg(test)]
mod tests;
