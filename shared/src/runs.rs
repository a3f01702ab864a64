//! The worker's side of the schema: runs and their stage attempts.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::stage::Stage;

#[derive(Debug, Clone)]
pub struct Run {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub installation_id: i64,
    pub repository_full_name: String,
    pub github_run_id: i64,
    /// Which attempt of the workflow run failed (a rerun is attempt 2, with its own jobs).
    pub github_run_attempt: i32,
    pub head_sha: String,
    pub status: String,
    /// `failure`, `timed_out`, or `success` for a green run of the fix's own CI.
    pub conclusion: String,
    /// Set when this is a run of the fix's own CI, on selfheal's branch.
    pub fix_branch: Option<String>,
    pub trigger: Trigger,
}

/// What started a run: a workflow run (its id and attempt), or an external CI's report on
/// selfheal's fix (its id, attempt 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    WorkflowRun,
    /// A completed check suite of an app (id, slug).
    CheckSuite {
        app_id: i64,
        app: Option<String>,
    },
    /// A completed check run of an app (id, slug).
    CheckRun {
        app_id: i64,
        app: Option<String>,
    },
    /// A commit status, which names its CI by `context` only, and who posted it.
    Status {
        context: String,
        creator: String,
    },
}

impl Trigger {
    /// As stored in `runs.trigger`.
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::WorkflowRun => "workflow_run",
            Trigger::CheckSuite { .. } => "check_suite",
            Trigger::CheckRun { .. } => "check_run",
            Trigger::Status { .. } => "status",
        }
    }

    /// As stored in `runs.trigger_app_id`, `runs.trigger_app` and `runs.trigger_by`: the
    /// app; or a status's context (no app id) and its poster.
    pub fn reporter(&self) -> (Option<i64>, Option<String>, Option<String>) {
        match self {
            Trigger::WorkflowRun => (None, None, None),
            Trigger::CheckSuite { app_id, app } | Trigger::CheckRun { app_id, app } => {
                (Some(*app_id), app.clone(), None)
            }
            Trigger::Status { context, creator } => {
                (None, Some(context.clone()), Some(creator.clone()))
            }
        }
    }

    fn from_row(
        kind: &str,
        app_id: Option<i64>,
        app: Option<String>,
        by: Option<String>,
    ) -> Trigger {
        match kind {
            "check_suite" => Trigger::CheckSuite {
                app_id: app_id.unwrap_or_default(),
                app,
            },
            "check_run" => Trigger::CheckRun {
                app_id: app_id.unwrap_or_default(),
                app,
            },
            "status" => Trigger::Status {
                context: app.unwrap_or_default(),
                creator: by.unwrap_or_default(),
            },
            // The column's CHECK constraint admits nothing else.
            _ => Trigger::WorkflowRun,
        }
    }
}

impl Run {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "incomplete" | "failed")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The stage did not run; the detail says why (e.g. not implemented).
    Skipped,
    Failed,
    /// Left `running` by a worker that died; closed by the next worker to take the stage.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
        }
    }
}

pub async fn load(
    client: &impl GenericClient,
    run_id: Uuid,
) -> Result<Option<Run>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT id, incident_id, installation_id, repository_full_name, github_run_id, head_sha, status,
                    conclusion, fix_branch, github_run_attempt, trigger, trigger_app_id, trigger_app, trigger_by
             FROM runs WHERE id = $1",
            &[&run_id],
        )
        .await?;
    Ok(row.map(|r| Run {
        id: r.get(0),
        incident_id: r.get(1),
        installation_id: r.get(2),
        repository_full_name: r.get(3),
        github_run_id: r.get(4),
        head_sha: r.get(5),
        status: r.get(6),
        conclusion: r.get(7),
        fix_branch: r.get(8),
        github_run_attempt: r.get(9),
        trigger: Trigger::from_row(r.get(10), r.get(11), r.get(12), r.get(13)),
    }))
}

/// Whether the stage already finished for this run (a redelivered or recovered job).
pub async fn stage_finished(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT 1 FROM stage_attempts WHERE run_id = $1 AND stage = $2 AND outcome IN ('succeeded', 'skipped')",
            &[&run_id, &stage.as_str()],
        )
        .await?;
    Ok(row.is_some())
}

/// Attempts left `running` by a worker that died are closed as abandoned. Only called while
/// holding the run's stage lock, so no live worker owns them.
pub async fn abandon_stale(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            // Started before the Postgres server now running: a restart cut it off (its worker
            // may be waiting to record that), which does not count against the stage (V13).
            "UPDATE stage_attempts SET outcome = 'abandoned', finished_at = now(),
                    charged = started_at >= pg_postmaster_start_time(),
                    error = CASE WHEN started_at < pg_postmaster_start_time()
                                 THEN 'interrupted by a Postgres restart, and its worker did not record it'
                                 ELSE 'worker lost mid-stage' END
             WHERE run_id = $1 AND stage = $2 AND outcome = 'running'",
            &[&run_id, &stage.as_str()],
        )
        .await
}

/// Attempts of this stage that ended with `outcome`. Failed ones use up the retry budget;
/// abandoned ones (a worker died) do not, but are bounded on their own.
pub async fn attempts_ended(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
    outcome: Outcome,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM stage_attempts WHERE run_id = $1 AND stage = $2 AND outcome = $3 AND charged",
            &[&run_id, &stage.as_str(), &outcome.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn start_attempt(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
    worker_id: &str,
) -> Result<(i64, i32), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE runs SET status = 'running', current_stage = $2 WHERE id = $1 AND status IN ('queued', 'running')",
            &[&run_id, &stage.as_str()],
        )
        .await?;
    let row = client
        .query_one(
            "INSERT INTO stage_attempts (run_id, stage, attempt, worker_id, outcome)
             SELECT $1, $2, coalesce(max(attempt), 0) + 1, $3, 'running'
             FROM stage_attempts WHERE run_id = $1 AND stage = $2
             RETURNING id, attempt",
            &[&run_id, &stage.as_str(), &worker_id],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

pub async fn finish_attempt(
    client: &impl GenericClient,
    attempt_id: i64,
    outcome: Outcome,
    detail: Option<&str>,
    error: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE stage_attempts SET outcome = $2, detail = $3, error = $4, finished_at = now() WHERE id = $1",
            &[&attempt_id, &outcome.as_str(), &detail, &error],
        )
        .await?;
    Ok(())
}

/// Records an attempt that Postgres going away interrupted: `failed`, but not charged against
/// the stage's retries (V13). Only a running attempt: one another worker closed stays closed.
pub async fn finish_attempt_uncharged(
    client: &impl GenericClient,
    attempt_id: i64,
    error: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE stage_attempts SET outcome = 'failed', charged = false, error = $2, finished_at = now()
             WHERE id = $1 AND outcome = 'running'",
            &[&attempt_id, &error],
        )
        .await?;
    Ok(())
}

/// Attempts of this stage that outages interrupted (not charged), to bound them.
pub async fn attempts_uncharged(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*) FROM stage_attempts WHERE run_id = $1 AND stage = $2 AND NOT charged",
            &[&run_id, &stage.as_str()],
        )
        .await?;
    Ok(row.get(0))
}

/// Closes the run. `incomplete` says the pipeline went through but some stage was skipped.
pub async fn finish(
    client: &impl GenericClient,
    run_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE runs SET status = $2, failure_reason = $3, finished_at = now(), current_stage = NULL
             WHERE id = $1 AND finished_at IS NULL",
            &[&run_id, &status, &reason],
        )
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub stage: String,
    pub attempt: i32,
    pub worker_id: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn attempts(
    client: &impl GenericClient,
    run_id: Uuid,
) -> Result<Vec<AttemptRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT stage, attempt, worker_id, outcome, detail, error, started_at, finished_at
             FROM stage_attempts WHERE run_id = $1 ORDER BY id",
            &[&run_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AttemptRow {
            stage: r.get(0),
            attempt: r.get(1),
            worker_id: r.get(2),
            outcome: r.get(3),
            detail: r.get(4),
            error: r.get(5),
            started_at: r.get(6),
            finished_at: r.get(7),
        })
        .collect())
}

/// The last commit selfheal itself pushed for the incident (its first fix or a later attempt).
pub async fn last_pushed(
    client: &impl tokio_postgres::GenericClient,
    incident: Uuid,
) -> Result<Option<String>, tokio_postgres::Error> {
    // selfheal's own commits, and GitHub's merge of the base into its branch when selfheal
    // asked for it (update-branch): whichever came last.
    Ok(client
        .query_opt(
            "SELECT sha FROM (
                 SELECT commit_sha AS sha, pushed_at AS at FROM fix_attempts
                 WHERE incident_id = $1 AND pushed_at IS NOT NULL AND commit_sha IS NOT NULL
                 UNION ALL
                 SELECT branch_updated_sha, branch_updated_at FROM deliveries
                 WHERE incident_id = $1 AND kind = 'pull_request' AND branch_updated_sha IS NOT NULL
             ) pushed ORDER BY at DESC LIMIT 1",
            &[&incident],
        )
        .await?
        .map(|r| r.get(0)))
}
