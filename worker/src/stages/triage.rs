//! Triage: which jobs of the failed run failed, at which steps, and their logs (stored
//! gzip-compressed, keeping the tail when a log is over the cap: the error is at the end).

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use selfheal_shared::github::Installation;
use selfheal_shared::runs::{Outcome, Run};
use serde::Deserialize;
use serde_json::json;

use super::download::download;
use super::pr_state;
use super::{StageError, StageReport};
use crate::WorkerContext;

#[derive(Debug, Deserialize)]
struct Job {
    id: i64,
    name: String,
    conclusion: Option<String>,
    #[serde(default)]
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: String,
    number: i64,
    conclusion: Option<String>,
    /// When it ran: diagnosis looks for its end in the log by these.
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
}

fn failed(conclusion: Option<&str>) -> bool {
    matches!(conclusion, Some("failure") | Some("timed_out"))
}

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let repo = &run.repository_full_name;
    // The jobs of the attempt that failed, not of a rerun begun since (which has its own),
    // every page of them.
    let listed = pr_state::all_pages(
        &crab,
        &format!(
            "/repos/{repo}/actions/runs/{}/attempts/{}/jobs",
            run.github_run_id, run.github_run_attempt
        ),
        Some("jobs"),
        &[],
        "the run's jobs",
        10,
    )
    .await?;
    let total = listed.len();
    let jobs: Vec<Job> = listed
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| StageError::Permanent(format!("the run's jobs are unreadable: {e}")))?;
    let failed_jobs: Vec<&Job> = jobs
        .iter()
        .filter(|j| failed(j.conclusion.as_deref()))
        .collect();

    let mut summary = Vec::new();
    let mut without_log = Vec::new();
    for job in &failed_jobs {
        let steps: Vec<_> = job
            .steps
            .iter()
            .filter(|s| failed(s.conclusion.as_deref()))
            .map(|s| {
                json!({"number": s.number, "name": s.name,
                    "started_at": s.started_at, "completed_at": s.completed_at})
            })
            .collect();
        let (log, original_bytes, truncated) = match download_log(ctx, &crab, repo, job.id).await {
            Ok(log) => log,
            // GitHub no longer has it (expired past the retention: 410; deleted: 404): the
            // other jobs still say why the run failed.
            Err(StageError::Gone { status, .. }) => {
                tracing::warn!(job = %job.name, status, "the job's log is gone; triage goes on without it");
                without_log.push(format!(
                    "{} (log {})",
                    job.name,
                    if status == 410 {
                        "expired"
                    } else {
                        "not found"
                    }
                ));
                continue;
            }
            Err(e) => return Err(e),
        };
        let gz = gzip(&log).map_err(|e| StageError::Transient(format!("compressing log: {e}")))?;
        let client = ctx.pool.get().await?;
        client
            .execute(
                "INSERT INTO job_logs (run_id, github_job_id, job_name, conclusion, failed_steps, log_gzip, original_bytes, truncated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (run_id, github_job_id) DO UPDATE SET
                   job_name = EXCLUDED.job_name, conclusion = EXCLUDED.conclusion, failed_steps = EXCLUDED.failed_steps,
                   log_gzip = EXCLUDED.log_gzip, original_bytes = EXCLUDED.original_bytes,
                   truncated = EXCLUDED.truncated, fetched_at = now()",
                &[
                    &run.id,
                    &job.id,
                    &job.name,
                    &job.conclusion,
                    &serde_json::Value::Array(steps.clone()),
                    &gz,
                    &(original_bytes as i64),
                    &truncated,
                ],
            )
            .await?;
        let step_names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
        summary.push(format!("{} [{}]", job.name, step_names.join(", ")));
    }
    let mut detail = if failed_jobs.is_empty() {
        format!("none of the run's {total} jobs is marked failed")
    } else {
        format!(
            "{} of {total} jobs failed: {}",
            failed_jobs.len(),
            summary.join("; ")
        )
    };
    if !without_log.is_empty() {
        detail.push_str(&format!(
            "; skipped, GitHub has no log: {}",
            without_log.join(", ")
        ));
    }
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail,
    })
}

/// The job's log (GitHub redirects to a pre-signed URL); only the tail is kept past the cap.
pub(super) async fn download_log(
    ctx: &WorkerContext,
    crab: &Installation,
    repo: &str,
    job_id: i64,
) -> Result<(Vec<u8>, usize, bool), StageError> {
    let mut tail = TailBuffer::new(ctx.log_cap_bytes);
    let what = format!("logs of job {job_id}");
    download(
        ctx,
        crab,
        format!("/repos/{repo}/actions/jobs/{job_id}/logs"),
        &what,
        |chunk| {
            tail.push(chunk);
            Ok(())
        },
    )
    .await?;
    Ok(tail.finish())
}

pub(super) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// Keeps the last `cap` bytes of a stream without holding more than twice that.
struct TailBuffer {
    cap: usize,
    buf: Vec<u8>,
    seen: usize,
}

impl TailBuffer {
    fn new(cap: usize) -> Self {
        TailBuffer {
            cap,
            buf: Vec::new(),
            seen: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.seen += chunk.len();
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.cap.saturating_mul(2) {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
    }

    fn finish(mut self) -> (Vec<u8>, usize, bool) {
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
        }
        let truncated = self.seen > self.buf.len();
        (self.buf, self.seen, truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::TailBuffer;

    #[test]
    fn tail_buffer_keeps_the_end() {
        let mut t = TailBuffer::new(10);
        for i in 0..100u8 {
            t.push(&[i; 3]);
        }
        let (buf, seen, truncated) = t.finish();
        assert_eq!(seen, 300);
        assert!(truncated);
        assert_eq!(buf.len(), 10);
        assert_eq!(*buf.last().unwrap(), 99);
        let mut t = TailBuffer::new(10);
        t.push(b"short");
        assert_eq!(t.finish(), (b"short".to_vec(), 5, false));
    }
}
