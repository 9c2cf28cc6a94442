//! The flow without a door: a gate run on the embedded ledger, its outcome returned to the
//! caller (as a server would take it), nothing printed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::domain::{DecisionKind, Gate, State};
use crate::env::Snapshot;
use crate::flow::change::{self, ChangeRequest};
use crate::flow::gate::{self, GateRequest};
use crate::flow::{Ctx, Exit, Silent};
use crate::forge::Forge;
use crate::settings::{GlobalArgs, Settings};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev One")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev One")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn only_a_pass_lets_the_deploy_go() {
    assert_eq!(Exit::from(Gate::Pass), Exit::Pass);
    assert_eq!(Exit::from(Gate::Blocked), Exit::Blocked);
    assert_eq!(Exit::from(Gate::Waiting), Exit::Blocked);
}

#[tokio::test]
async fn a_gate_hands_its_outcome_to_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    std::fs::write(d.join("README"), "x\n").unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "first"]);
    let args = GlobalArgs {
        service: Some("payments".into()),
        ..GlobalArgs::default()
    };
    // No CI platform: the facts come from the checkout.
    let env = Snapshot::from_pairs::<&str>([]);
    let settings = Settings::resolve_with(&args, &env, d, None, None).unwrap();
    let forge = Forge::new(&settings);
    let ctx = Ctx {
        settings: &settings,
        workdir: d,
        forge: &forge,
    };
    let backend = crate::itsm::connect(&settings).unwrap();
    let req = GateRequest {
        wait: Some(Duration::ZERO),
        emergency: None,
    };
    // No track record yet: the change needs approval, and the gate does not wait.
    for run in 0..2 {
        let gathered = change::gather(&ctx, backend.as_ref(), &ChangeRequest::default())
            .await
            .unwrap();
        let outcome = gate::run(&ctx, backend.as_ref(), gathered, &req, &Silent)
            .await
            .unwrap();
        assert_eq!(
            outcome.exit,
            Exit::Blocked,
            "run {run}: {:?}",
            outcome.report
        );
        assert_eq!(outcome.report.decision, Some(DecisionKind::NeedsApproval));
        assert_eq!(outcome.report.state, Some(State::AwaitingApproval));
        assert!(outcome.report.change_id.is_some());
        assert!(outcome.warnings.is_empty() && outcome.failure.is_none());
    }
}
