//! A fix's own CI may never come: workflows that run only on the default branch, path
//! filters that skip selfheal's change. Past a deadline after selfheal's last push to its
//! branch with no run of the fix's CI recorded since, the PR says so (once, whichever worker
//! claims it) and is left for review.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::stages::{short, StageError};
use crate::WorkerContext;

/// Looks every `interval` for fixes past `deadline`, until the process ends.
pub async fn watch_forever(ctx: Arc<WorkerContext>, deadline: Duration, interval: Duration) {
    if deadline.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if let Err(e) = overdue(&ctx, deadline).await {
            tracing::warn!(error = %e, "checking fixes for a CI that never came failed");
        }
    }
}

/// Says on each overdue fix's PR that no CI came; returns how many.
pub async fn overdue(ctx: &WorkerContext, deadline: Duration) -> Result<usize, StageError> {
    let client = ctx.pool.get().await?;
    // The last push: selfheal's last commit, or its update of the branch with the base.
    let rows = client
        .query(
            "WITH pushed AS (
                 SELECT d.incident_id, d.pr_number, d.branch,
                        greatest((SELECT max(a.pushed_at) FROM fix_attempts a WHERE a.incident_id = d.incident_id),
                                 d.branch_updated_at) AS at
                 FROM deliveries d JOIN incidents i ON i.id = d.incident_id
                 WHERE d.kind = 'pull_request' AND d.pr_number IS NOT NULL AND d.merged_at IS NULL
                   AND d.closed_at IS NULL AND d.ci_deadline_said_at IS NULL
                   -- Unclaimed, or claimed by a worker that died before saying it.
                   AND (d.ci_deadline_at IS NULL OR d.ci_deadline_at < now() - interval '5 minutes')
                   AND i.status = 'open' AND i.stopped_at IS NULL
             )
             SELECT p.incident_id, p.pr_number, r.installation_id, r.repository_full_name
             FROM pushed p
             JOIN LATERAL (SELECT installation_id, repository_full_name FROM runs
                           WHERE incident_id = p.incident_id ORDER BY created_at LIMIT 1) r ON true
             WHERE p.at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM runs f WHERE f.incident_id = p.incident_id
                               AND f.fix_branch = p.branch AND f.created_at > p.at)",
            &[&deadline.as_secs_f64()],
        )
        .await?;
    let mut said = 0;
    for row in rows {
        let incident: Uuid = row.get(0);
        let number: i32 = row.get(1);
        let (installation, repo): (i64, String) = (row.get(2), row.get(3));
        let sha = crate::stages::pr_state::last_pushed(&**client, incident).await?;
        // One worker claims it (a claim five minutes old is a dead worker's); a failure to
        // comment gives the claim back.
        let claimed = client
            .execute(
                "UPDATE deliveries SET ci_deadline_at = now(), updated_at = now()
                 WHERE incident_id = $1 AND kind = 'pull_request' AND ci_deadline_said_at IS NULL
                   AND (ci_deadline_at IS NULL OR ci_deadline_at < now() - interval '5 minutes')",
                &[&incident],
            )
            .await?;
        if claimed == 0 {
            continue;
        }
        // CI that reported without a run selfheal records (a red external suite, commit
        // statuses, a workflow still running): it did come. Noted, not said.
        if let (Some(head), Ok(crab)) = (&sha, ctx.github.installation(installation, &repo)) {
            let checks = crate::stages::pr_state::checks_on(&crab, &repo, head).await?;
            if !checks.all.is_empty() || !checks.running_workflows.is_empty() {
                client
                    .execute(
                        "UPDATE deliveries SET ci_deadline_said_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                        &[&incident],
                    )
                    .await?;
                continue;
            }
        }
        let minutes = deadline.as_secs().div_ceil(60);
        let body = format!(
            "No CI has reported on selfheal's commit {} in {minutes} minute(s): the repository's workflows may run only on the default branch, or filter paths this fix does not touch. selfheal cannot prove the fix on GitHub, so it leaves this PR for review.",
            sha.as_deref().map_or("?", short)
        );
        let posted = crate::stages::report::comment(
            &ctx.github,
            installation,
            &repo,
            number,
            &format!("ci-deadline:{incident}"),
            &body,
        )
        .await;
        if let Err(e) = posted {
            tracing::warn!(error = %e, pr = number, "could not say on the PR that its CI never came");
            client
                .execute(
                    "UPDATE deliveries SET ci_deadline_at = NULL WHERE incident_id = $1 AND kind = 'pull_request'",
                    &[&incident],
                )
                .await?;
            continue;
        }
        client
            .execute(
                "UPDATE deliveries SET ci_deadline_said_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&incident],
            )
            .await?;
        selfheal_shared::audit::append(
            &client,
            "selfheal:deadline",
            "fix.ci_never_came",
            &incident.to_string(),
            &json!({"repository": repo, "pr": number, "commit": sha, "deadline_secs": deadline.as_secs()}),
        )
        .await
        .map_err(|e| StageError::Transient(format!("audit: {e}")))?;
        tracing::info!(pr = number, %repo, "the fix's CI never came: said on the PR");
        said += 1;
    }
    Ok(said)
}
