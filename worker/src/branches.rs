//! selfheal's branches do not outlive their pull requests. selfheal deletes its branch when
//! it merges or closes its own PR; when a person merges or closes it, this sweep (every
//! worker runs it; a row lock makes one of them take each branch) deletes it as GitHub's
//! "automatically delete head branches" would. A branch holding a commit its PR did not (someone
//! else's work) is kept, and so is the branch of a PR reopened meanwhile.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::stages::merge::{delete_branch, BranchDeletion};
use crate::stages::verify::ref_path;
use crate::stages::{api_error, pr_state, short, status_of, StageError};
use crate::WorkerContext;

/// Branches taken per sweep (each a GitHub call or two, under a row lock).
const PER_SWEEP: i64 = 5;

pub async fn sweep_forever(ctx: Arc<WorkerContext>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&ctx).await {
            tracing::warn!(error = %e, "deleting the branches of merged or closed fixes failed");
        }
    }
}

/// Deletes the branches of selfheal's merged or closed PRs; returns how many were settled.
/// Each is claimed first (a claim lasts five minutes: a dead worker's, or a failed try's, is
/// taken again then), and GitHub is asked outside any transaction.
pub async fn sweep(ctx: &WorkerContext) -> Result<usize, StageError> {
    if ctx.dry_run {
        return Ok(0);
    }
    let client = ctx.pool.get().await?;
    let rows = client
        .query(
            "UPDATE deliveries SET branch_sweep_claimed_at = now()
             WHERE (incident_id, kind) IN (
                 SELECT d.incident_id, d.kind FROM deliveries d
                 WHERE d.kind = 'pull_request' AND d.ref_created AND d.branch IS NOT NULL
                   AND d.pr_number IS NOT NULL AND d.branch_deleted_at IS NULL
                   AND (d.merged_at IS NOT NULL OR d.closed_at IS NOT NULL)
                   AND (d.branch_sweep_claimed_at IS NULL
                        OR d.branch_sweep_claimed_at < now() - interval '5 minutes')
                 ORDER BY d.updated_at LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING incident_id, branch, pr_number,
                       (SELECT installation_id FROM runs WHERE incident_id = deliveries.incident_id ORDER BY created_at LIMIT 1),
                       (SELECT repository_full_name FROM runs WHERE incident_id = deliveries.incident_id ORDER BY created_at LIMIT 1)",
            &[&PER_SWEEP],
        )
        .await?;
    drop(client);
    let mut settled = 0;
    for row in rows {
        let incident: Uuid = row.get(0);
        let branch: String = row.get(1);
        let number: i32 = row.get(2);
        let (installation, repo): (i64, String) = (row.get(3), row.get(4));
        let outcome = match tidy(ctx, incident, installation, &repo, number, &branch).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(error = %e, %branch, "could not tidy selfheal's branch; tried again later");
                continue;
            }
        };
        let client = ctx.pool.get().await?;
        match outcome {
            Tidy::Done(outcome) if outcome.settled() => {
                client
                    .execute(
                        "UPDATE deliveries SET branch_deleted_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                        &[&incident],
                    )
                    .await?;
                settled += 1;
            }
            // Failed: the claim stays, so the next try waits for it to lapse.
            Tidy::Done(_) => {}
            Tidy::Reopened => {
                client
                    .execute(
                        "UPDATE deliveries SET closed_at = NULL, branch_sweep_claimed_at = NULL, updated_at = now()
                         WHERE incident_id = $1 AND kind = 'pull_request' AND merged_at IS NULL
                           -- Still this sweep's claim: a close that arrived meanwhile cleared it.
                           AND branch_sweep_claimed_at IS NOT NULL",
                        &[&incident],
                    )
                    .await?;
            }
        }
    }
    Ok(settled)
}

enum Tidy {
    Done(BranchDeletion),
    /// The PR is open again: its branch is its head, and stays.
    Reopened,
}

/// The branch goes when the PR is closed and the branch still holds only what the PR held:
/// for a merged PR its head (a commit pushed after the merge is someone's unmerged work), for
/// one closed unmerged selfheal's own last commit.
async fn tidy(
    ctx: &WorkerContext,
    incident: Uuid,
    installation: i64,
    repo: &str,
    number: i32,
    branch: &str,
) -> Result<Tidy, StageError> {
    let crab = ctx.github.installation(installation, repo)?;
    let pr: Value = crab
        .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
        .await
        .map_err(|e| api_error(e, "the fix's pull request"))?;
    if pr["state"] != "closed" {
        return Ok(Tidy::Reopened);
    }
    let head = match crab
        .get::<Value, _>(
            format!("/repos/{repo}/git/ref/heads/{}", ref_path(branch)),
            None::<&()>,
        )
        .await
    {
        Ok(head) => head["object"]["sha"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(e) if status_of(&e) == Some(404) => return Ok(Tidy::Done(BranchDeletion::AlreadyGone)),
        Err(e) => return Err(api_error(e, "the fix's branch")),
    };
    let expected = if pr["merged"] == true {
        pr["head"]["sha"].as_str().map(str::to_string)
    } else {
        pr_state::last_pushed(&**ctx.pool.get().await?, incident).await?
    };
    if expected.as_deref() != Some(head.as_str()) {
        tracing::info!(%branch, head = short(&head), "selfheal's branch holds a commit that is not its PR's: kept");
        return Ok(Tidy::Done(BranchDeletion::Kept));
    }
    Ok(Tidy::Done(delete_branch(&crab, repo, branch).await))
}
