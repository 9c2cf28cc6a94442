//! What the change-centred commands share: which change, as options.

use anyhow::Result;

use super::Ctx;
use crate::domain::ChangeFacts;
use crate::env;
use crate::flow::{self, change::ChangeRequest};
use crate::itsm::Backend;

/// Which change a command is about, and the evidence a decision weighs (`gate`, `open`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChangeArgs {
    /// The commit deployed (default: what CI checked out, or HEAD).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Whether the pipeline's tests passed (evidence).
    #[arg(long, env = env::TESTS_PASSED, value_name = "BOOL")]
    pub tests_passed: Option<bool>,
}

/// Which commit a command is about, for the commands that take no evidence (`record`,
/// `status`, `policy`): they find a change, they do not decide one.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommitArgs {
    /// The commit deployed (default: what CI checked out, or HEAD).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
}

impl From<&CommitArgs> for ChangeArgs {
    fn from(args: &CommitArgs) -> ChangeArgs {
        ChangeArgs {
            commit: args.commit.clone(),
            tests_passed: None,
        }
    }
}

impl From<&ChangeArgs> for ChangeRequest {
    fn from(args: &ChangeArgs) -> ChangeRequest {
        ChangeRequest {
            commit: args.commit.clone(),
            tests_passed: args.tests_passed,
        }
    }
}

/// Gathers the facts of this pipeline's change (see [`flow::change::facts`]).
pub async fn facts(ctx: &Ctx<'_>, backend: &dyn Backend, args: &ChangeArgs) -> Result<ChangeFacts> {
    flow::change::facts(ctx, backend, &args.into()).await
}

/// The same, with the lookup of the change made on the way (see [`flow::change::gather`]).
pub async fn gather(
    ctx: &Ctx<'_>,
    backend: &dyn Backend,
    args: &ChangeArgs,
) -> Result<flow::change::Gathered> {
    flow::change::gather(ctx, backend, &args.into()).await
}
