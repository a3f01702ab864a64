//! Diagnose stage: the failed jobs' logs through the deterministic parsers; the diagnosis is
//! stored and its fingerprint put on the incident.

use std::io::Read;

use selfheal_shared::runs::{Outcome, Run};

use super::{StageError, StageReport};
use crate::diagnose::{self, Class, Diagnosis};
use crate::WorkerContext;

pub fn gunzip(data: &[u8]) -> Result<String, StageError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut text)
        .map_err(|e| StageError::Permanent(format!("stored log is unreadable: {e}")))?;
    Ok(text)
}

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "SELECT github_job_id, log_gzip FROM job_logs WHERE run_id = $1 ORDER BY id",
            &[&run.id],
        )
        .await?;
    let mut best: Option<(i64, Diagnosis)> = None;
    for row in &rows {
        // GitHub's job logs: no output line may pass for another CI's marker.
        let d = diagnose::diagnose_as(&gunzip(row.get(1))?, diagnose::Ci::GithubActions);
        let known = d.class != Class::Unknown;
        if best.is_none()
            || (known
                && best
                    .as_ref()
                    .is_some_and(|(_, b)| b.class == Class::Unknown))
        {
            best = Some((row.get(0), d));
        }
    }
    let Some((job_id, d)) = best else {
        return Err(StageError::Permanent(
            "triage stored no failed job log to diagnose".into(),
        ));
    };
    let tests = serde_json::to_value(&d.failing_tests).unwrap_or_default();
    let line = d.culprit_line.and_then(|l| i32::try_from(l).ok());
    client
        .execute(
            "INSERT INTO diagnoses (run_id, github_job_id, class, tool, culprit_file, culprit_line, failing_tests, fingerprint, command, excerpt)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (run_id) DO UPDATE SET github_job_id = EXCLUDED.github_job_id, class = EXCLUDED.class,
               tool = EXCLUDED.tool, culprit_file = EXCLUDED.culprit_file, culprit_line = EXCLUDED.culprit_line,
               failing_tests = EXCLUDED.failing_tests, fingerprint = EXCLUDED.fingerprint,
               command = EXCLUDED.command, excerpt = EXCLUDED.excerpt",
            &[&run.id, &job_id, &d.class.as_str(), &d.tool, &d.culprit_file, &line, &tests, &d.fingerprint, &d.command, &d.excerpt],
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
            "{} ({}){culprit}, fingerprint {}",
            d.class.as_str(),
            d.tool.as_deref().unwrap_or("unknown tool"),
            d.fingerprint
        ),
    })
}
