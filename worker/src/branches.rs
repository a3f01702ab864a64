//! selfheal's branches do not outlive their pull requests. selfheal deletes its branch when
//! it merges or closes its own PR; when a person merges or closes it, this sweep (every
//! worker runs it; a row lock makes one of them take each branch) deletes it as GitHub's
//! "automatically delete head branches" would. A closed PR's branch holding someone else's
//! commit is kept: their work is not selfheal's to drop.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::stages::merge::{delete_branch, BranchDeletion};
use crate::stages::verify::ref_path;
use crate::stages::{pr_state, short, status_of, StageError};
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
pub async fn sweep(ctx: &WorkerContext) -> Result<usize, StageError> {
    if ctx.dry_run {
        return Ok(0);
    }
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT d.incident_id, d.branch, d.merged_at IS NOT NULL, r.installation_id, r.repository_full_name
             FROM deliveries d
             JOIN LATERAL (SELECT installation_id, repository_full_name FROM runs
                           WHERE incident_id = d.incident_id ORDER BY created_at LIMIT 1) r ON true
             WHERE d.kind = 'pull_request' AND d.ref_created AND d.branch IS NOT NULL
               AND d.branch_deleted_at IS NULL
               AND (d.merged_at IS NOT NULL OR d.closed_at IS NOT NULL)
             ORDER BY d.updated_at
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED",
            &[&PER_SWEEP],
        )
        .await?;
    let mut settled = 0;
    for row in rows {
        let incident: Uuid = row.get(0);
        let branch: String = row.get(1);
        let merged: bool = row.get(2);
        let (installation, repo): (i64, String) = (row.get(3), row.get(4));
        let crab = ctx.github.installation(installation, &repo)?;
        let head: Result<Value, _> = crab
            .get(
                format!("/repos/{repo}/git/ref/heads/{}", ref_path(&branch)),
                None::<&()>,
            )
            .await;
        let outcome = match head {
            Err(e) if status_of(&e) == Some(404) => BranchDeletion::AlreadyGone,
            Err(e) => {
                tracing::warn!(error = %e, %branch, "could not read selfheal's branch");
                continue;
            }
            Ok(head) => {
                let head = head["object"]["sha"].as_str().unwrap_or_default();
                let ours = pr_state::last_pushed(&*tx, incident).await?;
                if !merged && ours.as_deref() != Some(head) {
                    tracing::info!(%branch, head = short(head), "closed fix's branch holds someone else's commit: kept");
                    BranchDeletion::Kept
                } else {
                    delete_branch(&crab, &repo, &branch).await
                }
            }
        };
        if outcome.settled() {
            tx.execute(
                "UPDATE deliveries SET branch_deleted_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&incident],
            )
            .await?;
            settled += 1;
        }
    }
    tx.commit().await?;
    Ok(settled)
}
