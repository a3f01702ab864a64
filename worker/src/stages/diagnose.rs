//! Diagnose stage: the failed jobs' logs through the deterministic parsers; the diagnosis is
//! stored and its fingerprint put on the incident.

use std::io::Read;

use selfheal_shared::runs::{Outcome, Run, Trigger};

use super::{green_log, triage, StageError, StageReport};
use crate::diagnose::{self, Class, Diagnosis};
use crate::WorkerContext;

pub fn gunzip(data: &[u8]) -> Result<String, StageError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut text)
        .map_err(|e| StageError::Permanent(format!("stored log is unreadable: {e}")))?;
    Ok(text)
}

/// The times of the first failed step triage recorded (`[{"number", "name", "started_at",
/// "completed_at"}]`, in the API's order), when it recorded them.
pub(super) fn first_failed(steps: Option<&serde_json::Value>) -> Option<diagnose::StepWindow> {
    let first = steps?
        .as_array()?
        .iter()
        .filter_map(|s| Some((s["number"].as_i64()?, s)))
        .min_by_key(|(number, _)| *number)?
        .1;
    diagnose::StepWindow::parse(first["started_at"].as_str(), first["completed_at"].as_str())
}

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "SELECT github_job_id, log_gzip, failed_steps, job_name FROM job_logs WHERE run_id = $1 ORDER BY id",
            &[&run.id],
        )
        .await?;
    // The job's row, its log and step window (kept for the green comparison), its diagnosis.
    let mut best: Option<(usize, String, Option<diagnose::StepWindow>, Diagnosis)> = None;
    for (i, row) in rows.iter().enumerate() {
        // GitHub's job logs: no output line may pass for another CI's marker; the step is the
        // first the jobs API says failed, found by its times.
        let steps: Option<serde_json::Value> = row.get(2);
        let (log, window) = (gunzip(row.get(1))?, first_failed(steps.as_ref()));
        let d = diagnose::diagnose_github(&log, window);
        let known = d.class != Class::Unknown;
        if best.is_none()
            || (known
                && best
                    .as_ref()
                    .is_some_and(|(.., b)| b.class == Class::Unknown))
        {
            best = Some((i, log, window, d));
        }
    }
    let Some((i, log, window, mut d)) = best else {
        return Err(StageError::Permanent(
            "triage stored no failed job log to diagnose".into(),
        ));
    };
    let row = &rows[i];
    let job_id: i64 = row.get(0);
    let mut green: Option<(i64, Vec<u8>)> = None;
    let mut baseline = String::new();
    // Not held while GitHub is asked.
    drop(client);
    if d.class == Class::Unknown {
        let found = tokio::time::timeout(GREEN_LOOKUP, green_baseline(ctx, run, row.get(3)))
            .await
            .unwrap_or_else(|_| {
                Err(StageError::Transient(format!(
                    "GitHub did not answer within {GREEN_LOOKUP:?}"
                )))
            });
        match found {
            Ok(Some(passed)) => {
                let since = diagnose::diagnose_github_since(&log, window, &passed.text);
                // A green log that printed every line chose nothing: the excerpt is as before.
                if since.since_green {
                    d = since;
                    let gz = triage::gzip(passed.text.as_bytes()).map_err(|e| {
                        StageError::Transient(format!("compressing the green log: {e}"))
                    })?;
                    baseline = format!(
                        "; shown by what green run {} did not print",
                        passed.github_run_id
                    );
                    green = Some((passed.github_run_id, gz));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the last green run's log is not known; the unknown failure is shown by its error lines");
                baseline = format!("; without a green run's log: {e}");
            }
        }
    }
    let (green_run_id, green_log) = green.unzip();
    let client = ctx.pool.get().await?;
    let tests = serde_json::to_value(&d.failing_tests).unwrap_or_default();
    let line = d.culprit_line.and_then(|l| i32::try_from(l).ok());
    client
        .execute(
            "INSERT INTO diagnoses (run_id, github_job_id, class, tool, culprit_file, culprit_line, failing_tests, fingerprint, command, excerpt, green_run_id, green_log_gzip)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (run_id) DO UPDATE SET github_job_id = EXCLUDED.github_job_id, class = EXCLUDED.class,
               tool = EXCLUDED.tool, culprit_file = EXCLUDED.culprit_file, culprit_line = EXCLUDED.culprit_line,
               failing_tests = EXCLUDED.failing_tests, fingerprint = EXCLUDED.fingerprint,
               command = EXCLUDED.command, excerpt = EXCLUDED.excerpt, green_run_id = EXCLUDED.green_run_id,
               green_log_gzip = EXCLUDED.green_log_gzip",
            &[&run.id, &job_id, &d.class.as_str(), &d.tool, &d.culprit_file, &line, &tests, &d.fingerprint, &d.command, &d.excerpt, &green_run_id, &green_log],
        )
        .await?;
    client
        .execute(
            "UPDATE incidents SET fingerprint = $2 WHERE id = $1 AND fingerprint IS NULL",
            &[&run.incident_id, &d.fingerprint],
        )
        .await?;
    let culprit = match (&d.culprit_file, d.culprit_line) {
        (Some(f), Some(l)) => format!(" at {f}:{l}"),
        (Some(f), None) => format!(" in {f}"),
        _ => String::new(),
    };
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "{} ({}){culprit}, fingerprint {}{baseline}",
            d.class.as_str(),
            d.tool.as_deref().unwrap_or("unknown tool"),
            d.fingerprint
        ),
    })
}

/// How long the green run's log is looked for: GitHub's rate limits make a client wait up to
/// an hour, far past the stage's own time limit, and the diagnosis does not need it.
const GREEN_LOOKUP: std::time::Duration = std::time::Duration::from_secs(90);

/// The failed job's log in the workflow's last green run on the branch, for a workflow run
/// on a branch people push to (selfheal's own fix has no green history of its own).
async fn green_baseline(
    ctx: &WorkerContext,
    run: &Run,
    job_name: &str,
) -> Result<Option<green_log::GreenLog>, StageError> {
    if run.fix_branch.is_some() || !matches!(run.trigger, Trigger::WorkflowRun) {
        return Ok(None);
    }
    let client = ctx.pool.get().await?;
    // The failed run's own event: a pull request's earlier green run is its baseline, a
    // push's the branch's last green push.
    let incident = client
        .query_one(
            "SELECT i.branch, i.workflow_id, d.payload->'workflow_run'->>'event'
             FROM runs r JOIN incidents i ON i.id = r.incident_id
             JOIN webhook_deliveries d ON d.delivery_id = r.delivery_id
             WHERE r.id = $1",
            &[&run.id],
        )
        .await?;
    // Back to the pool before GitHub is asked: the lookup can take seconds.
    drop(client);
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    green_log::last_green(
        ctx,
        &crab,
        &green_log::Wanted {
            repo: &run.repository_full_name,
            workflow_id: incident.get(1),
            branch: incident.get::<_, &str>(0),
            event: incident.get::<_, Option<&str>>(2).unwrap_or("push"),
            job_name,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_failed_step_by_number_gives_the_window() {
        let steps = json!([
            {"number": 5, "name": "Upload results", "started_at": "2026-11-20T09:00:05Z", "completed_at": "2026-11-20T09:00:06Z"},
            {"number": 4, "name": "Test", "started_at": "2026-11-20T09:00:01Z", "completed_at": "2026-11-20T09:00:04Z"},
        ]);
        let window = first_failed(Some(&steps)).unwrap();
        assert_eq!(window.started.to_rfc3339(), "2026-11-20T09:00:01+00:00");
        assert_eq!(window.completed.to_rfc3339(), "2026-11-20T09:00:04+00:00");
        // Recorded before the times were, or without them: none.
        assert_eq!(
            first_failed(Some(&json!([{"number": 4, "name": "Test"}]))),
            None
        );
        assert_eq!(first_failed(Some(&json!([]))), None);
        assert_eq!(first_failed(None), None);
    }
}
