//! Self-tests of the harness: a stray request or an anomaly fails the test that owns the
//! fake, a matched request does not, and the opt-out holds.

use std::panic::{AssertUnwindSafe, catch_unwind};

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::{Remote, UNEXPECTED};

/// Sends `GET {remote}{path_and_query}` and returns the status (no proxy: the fake is local).
async fn get(remote: &Remote, path_and_query: &str) -> u16 {
    let client = crate::support::http().no_proxy().build().expect("client");
    client
        .get(format!("{}{path_and_query}", remote.uri()))
        .send()
        .await
        .expect("the fake answers")
        .status()
        .as_u16()
}

/// Drops `remote` and returns the panic message, if dropping it failed the test.
fn drop_message(remote: Remote) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(|| drop(remote))).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn an_unexpected_request_is_answered_loudly_and_fails_the_test_at_drop() {
    let remote = Remote::start().await;
    assert_eq!(get(&remote, "/repos/x/y?per_page=5").await, UNEXPECTED);
    let message = drop_message(remote).expect("dropping the fake fails the test");
    assert!(
        message.contains("unexpected request: GET /repos/x/y?per_page=5"),
        "{message}"
    );
}

#[tokio::test]
async fn a_flagged_anomaly_fails_the_test_at_drop() {
    let remote = Remote::start().await;
    remote.flag("query on unknown field \"colour\"");
    let message = drop_message(remote).expect("dropping the fake fails the test");
    assert!(message.contains("unknown field \"colour\""), "{message}");
}

#[tokio::test]
async fn matched_requests_leave_the_test_green() {
    let remote = Remote::start().await;
    Mock::given(method("GET"))
        .and(path("/known"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&remote)
        .await;
    assert_eq!(get(&remote, "/known").await, 200);
    remote.verify().await;
    assert_eq!(drop_message(remote), None);
}

#[tokio::test]
async fn an_excused_stray_request_does_not_fail_the_test() {
    let mut remote = Remote::start().await;
    remote.expect_unmatched("the self-test sends it on purpose");
    assert_eq!(get(&remote, "/stray").await, UNEXPECTED);
    remote.verify().await;
    assert_eq!(drop_message(remote), None);
}

#[tokio::test]
#[should_panic(expected = "unexpected request: DELETE /gone")]
async fn verify_fails_at_once() {
    let remote = Remote::start().await;
    let status = crate::support::http()
        .no_proxy()
        .build()
        .expect("client")
        .delete(format!("{}/gone", remote.uri()))
        .send()
        .await
        .expect("the fake answers")
        .status();
    assert_eq!(status.as_u16(), UNEXPECTED);
    remote.verify().await;
}

/// As the fakes are used: the fake lives to the end of the test body and its drop fails the
/// test, with no explicit check.
#[tokio::test]
#[should_panic(expected = "unexpected request: GET /never-mounted")]
async fn a_stray_request_fails_a_test_that_never_checks() {
    let remote = Remote::start().await;
    assert_eq!(get(&remote, "/never-mounted").await, UNEXPECTED);
}
