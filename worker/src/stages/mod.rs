//! Dispatch to each stage's implementation.

use selfheal_shared::github::GitHubError;
use selfheal_shared::runs::{Outcome, Run};
use selfheal_shared::stage::Stage;

use crate::WorkerContext;

mod checkout;
mod culprits;
pub(crate) mod deliver;
mod diagnose;
mod download;
mod green_log;
mod history;
pub(crate) mod merge;
mod patch;
pub(crate) mod pr_state;
pub(crate) mod repo_config;
pub(crate) mod report;
mod triage;
mod validate;
pub(crate) mod verify;

pub(crate) use download::{api_error, status_of};
pub(crate) use report::comment;

/// A commit's short name, as people read it (`abc1234`).
pub(crate) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

pub struct StageReport {
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Worth another attempt (network, 5xx, rate limit, database hiccup).
    #[error("{0}")]
    Transient(String),
    /// Will fail the same way every time (404, bad credentials): fail the run now.
    #[error("{0}")]
    Permanent(String),
    /// A download GitHub no longer has (404, or 410 for what expired): permanent, and a caller
    /// that can do without it (one job's log among several) goes on.
    #[error("{what}: GitHub answered {status}")]
    Gone { status: u16, what: String },
}

impl StageError {
    /// Whether another attempt would fail the same way.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StageError::Permanent(_) | StageError::Gone { .. })
    }
}

impl From<GitHubError> for StageError {
    fn from(e: GitHubError) -> Self {
        if e.is_permanent() {
            StageError::Permanent(e.to_string())
        } else {
            StageError::Transient(e.to_string())
        }
    }
}

impl From<crate::sandbox::SandboxError> for StageError {
    fn from(e: crate::sandbox::SandboxError) -> Self {
        StageError::Transient(format!("sandbox: {e}"))
    }
}

impl From<tokio_postgres::Error> for StageError {
    fn from(e: tokio_postgres::Error) -> Self {
        // "db error" alone says nothing: keep the server's message.
        match e.as_db_error() {
            Some(db) => StageError::Transient(format!("Postgres: {}", db.message())),
            None => StageError::Transient(format!("Postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StageError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StageError::Transient(format!("Postgres: {e}"))
    }
}

pub async fn execute(
    ctx: &WorkerContext,
    run: &Run,
    stage: Stage,
) -> Result<StageReport, StageError> {
    match stage {
        Stage::Triage => triage::run(ctx, run).await,
        Stage::Diagnose => diagnose::run(ctx, run).await,
        Stage::Patch => patch::run(ctx, run).await,
        Stage::Validate => validate::run(ctx, run).await,
        Stage::Verify => verify::run(ctx, run).await,
        Stage::Deliver => deliver::run(ctx, run).await,
    }
}
