//! The log of the same job in the workflow's last green run on the branch, for a failure no
//! parser recognises: diagnosis then shows the failed step's lines that run did not print,
//! rather than every line that reads like an error (`diagnose::diagnose_github_since`,
//! measured in docs/diagnosis.md). Found among the workflow's successful runs on the branch of
//! the failed run's own event (a push's last green push, a pull request's earlier green run),
//! of the repository itself (a fork's pull request can run on a branch of the same name); then
//! that run's job of the same name.

use selfheal_shared::github::Installation;
use serde::Deserialize;

use super::download::api_error;
use super::{pr_state, triage, StageError};
use crate::WorkerContext;

#[derive(Deserialize)]
struct Runs {
    workflow_runs: Vec<RunRef>,
}

/// A successful run of a workflow, as the runs listing gives it.
#[derive(Deserialize)]
pub(super) struct RunRef {
    pub id: i64,
    pub head_sha: String,
    head_repository: Option<RepoRef>,
}

#[derive(Deserialize)]
struct RepoRef {
    full_name: String,
}

#[derive(Deserialize)]
struct Job {
    id: i64,
    name: String,
    conclusion: Option<String>,
}

/// The green log found: its run, and the text.
pub struct GreenLog {
    pub github_run_id: i64,
    pub text: String,
}

/// Which failing job to find a green log for.
pub struct Wanted<'a> {
    pub repo: &'a str,
    pub workflow_id: i64,
    pub branch: &'a str,
    /// The failed run's event (`push`, `pull_request`, `schedule`, …): green runs of the same.
    pub event: &'a str,
    pub job_name: &'a str,
}

/// The workflow's successful runs of `event` on `branch` (the first page, newest first), of
/// the repository itself: a fork's pull request can run on a branch of the same name. The
/// culprit search starts from the first (`culprits`), the green baseline looks through them.
pub(super) async fn green_runs(
    crab: &Installation,
    repo: &str,
    workflow_id: i64,
    branch: &str,
    event: &str,
) -> Result<Vec<RunRef>, StageError> {
    let runs: Runs = crab
        .get(
            format!("/repos/{repo}/actions/workflows/{workflow_id}/runs"),
            Some(&[
                ("branch", branch),
                ("status", "success"),
                ("event", event),
                ("per_page", "10"),
            ]),
        )
        .await
        .map_err(|e| api_error(e, "the workflow's successful runs"))?;
    Ok(runs
        .workflow_runs
        .into_iter()
        .filter(|r| {
            r.head_repository
                .as_ref()
                .is_none_or(|h| h.full_name == repo)
        })
        .collect())
}

/// Green runs looked at, newest first, for one that ran the job (a run can skip a job: a
/// path filter, an `if:`).
const MAX_RUNS: usize = 3;

/// The job's log in the last green run that ran it, `Ok(None)` when there is no such run or
/// job (a new branch, a new job, a job name two jobs share, a log GitHub no longer keeps), or
/// why GitHub could not be asked.
pub async fn last_green(
    ctx: &WorkerContext,
    crab: &Installation,
    wanted: &Wanted<'_>,
) -> Result<Option<GreenLog>, StageError> {
    let Wanted {
        repo,
        workflow_id,
        branch,
        event,
        job_name,
    } = *wanted;
    for green in green_runs(crab, repo, workflow_id, branch, event)
        .await?
        .iter()
        .take(MAX_RUNS)
    {
        let listed = pr_state::all_pages(
            crab,
            &format!("/repos/{repo}/actions/runs/{}/jobs", green.id),
            Some("jobs"),
            &[],
            "the green run's jobs",
            10,
        )
        .await?;
        let named: Vec<Job> = listed
            .into_iter()
            .filter_map(|j| serde_json::from_value::<Job>(j).ok())
            .filter(|j| j.name == job_name)
            .collect();
        // A matrix whose `name:` leaves a dimension out names several jobs alike: which one
        // failed cannot be told, and another leg's log is no baseline.
        if named.len() > 1 {
            return Ok(None);
        }
        let Some(job) = named
            .into_iter()
            .find(|j| j.conclusion.as_deref() == Some("success"))
        else {
            continue;
        };
        return match triage::download_log(ctx, crab, repo, job.id).await {
            Ok((bytes, _, _)) => Ok(Some(GreenLog {
                github_run_id: green.id,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })),
            Err(StageError::Gone { .. }) => Ok(None),
            Err(e) => Err(e),
        };
    }
    Ok(None)
}
