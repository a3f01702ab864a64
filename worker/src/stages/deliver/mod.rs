//! Deliver stage: carries out what verify decided. A validated fix becomes a commit made
//! through the Git Data API (blobs -> tree -> commit -> ref, so GitHub signs it) and a pull
//! request; a red fix gets a further commit on the same branch; a flaky or infrastructure
//! failure gets its failed jobs rerun; an allowed green fix is merged; a dry run is reported.
//! Every step is recorded before the next, so a worker that dies mid-way resumes, and an
//! incident never gets two PRs.

mod attempt;

use attempt::Placement;
mod commit;
pub mod markdown;
mod pull_request;

use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::download::api_error;
use super::report::{check_run, write_once};
use super::verify::{self, Verdict};
use super::{merge, StageError, StageReport};
use crate::changes::ChangeSet;
use crate::WorkerContext;

/// Reruns per incident before selfheal stops asking GitHub for another.
const MAX_RERUNS: i64 = 2;

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let Some((verdict, reason)) = verify::recorded(ctx, run).await? else {
        return Ok(skipped("nothing delivered: verify recorded no decision"));
    };
    match verdict {
        Verdict::Skip | Verdict::Stop | Verdict::Wait => {
            Ok(skipped(&format!("nothing delivered: {reason}")))
        }
        Verdict::Hold => Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("left for review: {reason}"),
        }),
        Verdict::Merge => merge::merge(ctx, run, "selfheal:policy").await,
        Verdict::DryRun => dry_run_report(ctx, run, &reason).await,
        Verdict::Deliver => deliver_fix(ctx, run).await,
        Verdict::Close => pull_request::close_stale(ctx, run, &reason).await,
    }
}

async fn deliver_fix(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let row = ctx
        .pool
        .get()
        .await?
        .query_one(
            "SELECT verdict, strategy, class, changes, evidence FROM patches WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let verdict: String = row.get(0);
    let strategy: String = row.get(1);
    let class: String = row.get(2);
    if matches!(verdict.as_str(), "flaky" | "rerun") {
        return rerun(ctx, run).await;
    }
    // The change validation laid over the checkout, and nothing else, is what is committed.
    let changes: ChangeSet = row
        .get::<_, Option<Value>>(3)
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| StageError::Permanent(format!("the recorded change is unreadable: {e}")))?
        .ok_or_else(|| {
            StageError::Permanent("no change was recorded with the validated patch".into())
        })?;
    if run.fix_branch.is_some() {
        return attempt::push(ctx, run, Placement::OnTop, &strategy, &class, &changes).await;
    }
    // The incident's PR holds a fix built on an older commit: the branch moved on and failed
    // again (verify checked the PR's branch is still selfheal's to move).
    let based_on: Option<Option<String>> = ctx
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT based_on FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'
               AND pr_number IS NOT NULL AND merged_at IS NULL AND closed_at IS NULL",
            &[&run.incident_id],
        )
        .await?
        .map(|r| r.get(0));
    match based_on {
        Some(on) if on.as_deref() != Some(run.head_sha.as_str()) => {
            // One rebase of an incident at a time: two runs of the newer head (two workflows
            // failing on it) would race their force-pushes. The second waits its turn through
            // the stage's retries (not on a lock that would hold pool connections), then finds
            // it done.
            let mut client = ctx.pool.get().await?;
            let lock = client.transaction().await?;
            let mine: bool = lock
                .query_one(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended('selfheal.rebase:' || $1::text, 0))",
                    &[&run.incident_id.to_string()],
                )
                .await?
                .get(0);
            if !mine {
                return Err(StageError::Transient(
                    "another run is rebasing this incident's fix; trying again".into(),
                ));
            }
            let now_on: Option<String> = lock
                .query_one(
                    "SELECT based_on FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
                    &[&run.incident_id],
                )
                .await?
                .get(0);
            let started: bool = lock
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM fix_attempts WHERE run_id = $1)",
                    &[&run.id],
                )
                .await?
                .get(0);
            let report = if now_on.as_deref() == Some(run.head_sha.as_str()) && !started {
                skipped(&format!(
                    "nothing delivered: the fix was already rebased onto {} for another run",
                    super::short(&run.head_sha)
                ))
            } else {
                attempt::push(ctx, run, Placement::Rebase, &strategy, &class, &changes).await?
            };
            lock.commit().await?;
            Ok(report)
        }
        _ => pull_request::open(ctx, run, &strategy, &class, &changes, &row.get(4)).await,
    }
}

/// Dry run: what selfheal found and would do goes on the failing commit as a neutral check
/// run (visible on the commit and its PR); nothing is pushed, rerun or merged.
async fn dry_run_report(
    ctx: &WorkerContext,
    run: &Run,
    reason: &str,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let p = client
        .query_one(
            "SELECT strategy, class, diff, evidence FROM patches WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let evidence: Value = p.get(3);
    let diff: Option<String> = p.get(2);
    let summary = format!(
        "selfheal diagnosed a **{}** failure and proved a `{}` fix in its sandbox (the command \
         failed {} of {} runs before). It {}; this repository runs selfheal in dry-run mode, so \
         nothing was pushed.",
        p.get::<_, String>(1),
        p.get::<_, String>(0),
        evidence["failed"],
        evidence["runs"],
        reason.split_once(": ").map(|(_, w)| w).unwrap_or(reason),
    );
    check_run(
        &ctx.github,
        run,
        "selfheal (dry run)",
        "neutral",
        json!({
            "title": "selfheal would fix this failure",
            "summary": summary,
            "text": diff.map(|d| markdown::fenced_as(&d, "diff")).unwrap_or_default(),
        }),
    )
    .await?;
    Ok(skipped(&format!(
        "{reason}; nothing pushed, reported as a neutral `selfheal (dry run)` check run"
    )))
}

pub(super) fn skipped(detail: &str) -> StageReport {
    StageReport {
        outcome: Outcome::Skipped,
        detail: detail.to_string(),
    }
}

/// Asks GitHub to rerun the run's failed jobs once ([`write_once`]): a newer attempt of the
/// run means GitHub did it.
async fn rerun_once(ctx: &WorkerContext, run: &Run) -> Result<(), StageError> {
    let repo = &run.repository_full_name;
    let once = ctx.github.installation_once(run.installation_id, repo)?;
    let url = format!(
        "/repos/{repo}/actions/runs/{}/rerun-failed-jobs",
        run.github_run_id
    );
    write_once(
        "rerun-failed-jobs",
        || once.post::<_, Value>(url.as_str(), None::<&()>),
        || rerun_started(ctx, run),
    )
    .await
}

/// Whether the run has an attempt newer than the one that failed: a rerun GitHub started.
async fn rerun_started(ctx: &WorkerContext, run: &Run) -> Result<bool, StageError> {
    let repo = &run.repository_full_name;
    let reader = ctx.github.installation(run.installation_id, repo)?;
    let now: Value = reader
        .get(
            format!("/repos/{repo}/actions/runs/{}", run.github_run_id),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the run"))?;
    Ok(now["run_attempt"]
        .as_i64()
        .is_some_and(|a| a > i64::from(run.github_run_attempt)))
}

async fn rerun(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM deliveries WHERE incident_id = $1 AND kind = 'rerun'",
            &[&run.incident_id],
        )
        .await?
        .get(0);
    let mine = client
        .query_opt(
            "SELECT 1 FROM deliveries WHERE run_id = $1 AND kind = 'rerun'",
            &[&run.id],
        )
        .await?;
    if mine.is_some() {
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: "failed jobs already rerun".into(),
        });
    }
    if done >= MAX_RERUNS {
        return Ok(skipped(&format!(
            "rerun limit reached ({MAX_RERUNS} per incident): not rerunning again"
        )));
    }
    rerun_once(ctx, run).await?;
    client
        .execute(
            "INSERT INTO deliveries (run_id, incident_id, kind) VALUES ($1, $2, 'rerun') ON CONFLICT (run_id, kind) DO NOTHING",
            &[&run.id, &run.incident_id],
        )
        .await?;
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "reran the failed jobs of run {} ({} of {MAX_RERUNS} for this incident)",
            run.github_run_id,
            done + 1
        ),
    })
}
