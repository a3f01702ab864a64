//! selfheal's merged fixes that people reverted: they count against its precision
//! (`report_precision`) and fix memory forgets them. Seen two ways: GitHub's Revert button (a
//! merged pull request from the branch it makes), and a `git revert` pushed by hand (the run
//! the push starts, whose head commit's message names the reverted commit).

use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::events::{PullRequestEvent, WorkflowRunEvent};
use crate::incidents::Ingested;

/// The number and branch of selfheal's pull request a branch reverts, when it is the branch
/// GitHub's Revert button makes (`revert-<number>-<the reverted pull request's branch>`).
pub(crate) fn button(branch: &str) -> Option<(i32, &str)> {
    let (number, reverted) = branch.strip_prefix("revert-")?.split_once('-')?;
    if !reverted.starts_with("selfheal/") || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((number.parse().ok()?, reverted))
}

/// A merged revert of selfheal's merged fix: the fix counts against its precision
/// (`report_precision`). Only the first revert is kept.
pub(crate) async fn by_button(
    tx: &Transaction<'_>,
    ev: &PullRequestEvent,
    reverted: i32,
    branch: &str,
) -> Result<Ingested, tokio_postgres::Error> {
    let pr = &ev.pull_request;
    let by = pr
        .merged_by
        .as_ref()
        .map(|u| u.login.as_str())
        .unwrap_or(&ev.sender.login);
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE deliveries d SET reverted_at = coalesce(d.reverted_at, $5, now()),
                        reverted_by = coalesce(d.reverted_by, $3), updated_at = now()
                 FROM incidents i
                 WHERE i.id = d.incident_id AND d.kind = 'pull_request' AND d.pr_number = $1
                   AND i.repository_id = $2 AND d.branch = $4 AND d.merged_at IS NOT NULL
                 RETURNING d.incident_id",
            )
            .await?,
            &[
                &reverted,
                &ev.repository.id,
                &format!("github:{by} #{}", pr.number),
                &branch,
                &pr.merged_at,
            ],
        )
        .await?
    else {
        return Ok(Ingested::Stored);
    };
    let incident_id: Uuid = row.get(0);
    audit::append(
        tx,
        &format!("github:{by}"),
        "pull_request.reverted",
        &incident_id.to_string(),
        &json!({"repository": ev.repository.full_name, "pr": reverted, "revert_pr": pr.number}),
    )
    .await?;
    Ok(Ingested::FixReverted { incident_id })
}

/// A push whose head commit reverts selfheal's fix on the branch it was merged into (the
/// commit it was merged as, or with a merge commit the fix's own commit): the first incident
/// whose fix it reverts (a push reverting several is recorded for each). Only the first
/// revert of a fix is kept, so the several workflows one push starts, and each of their
/// deliveries (`requested` to `completed`), record it once. The push's time is the run's
/// creation, which GitHub makes as the push arrives.
///
/// The message is the pusher's word: anyone whose commit lands on the branch with git's line
/// in its message (a contributor's squash-merged pull request keeps theirs) marks the fix
/// reverted without undoing it. It weighs on the precision report and fix memory only, never
/// on what selfheal does to the repository.
pub(crate) async fn by_push(
    tx: &Transaction<'_>,
    ev: &WorkflowRunEvent,
) -> Result<Option<Uuid>, tokio_postgres::Error> {
    let reverted = ev.reverted_commits();
    if reverted.is_empty() {
        return Ok(None);
    }
    let wr = &ev.workflow_run;
    let by = wr.actor.as_ref().map_or("push", |a| a.login.as_str());
    let short = wr.head_sha.get(..12).unwrap_or(&wr.head_sha);
    let rows = tx
        .query(
            &tx.prepare_cached(
                "UPDATE deliveries d SET reverted_at = coalesce($5, now()), reverted_by = $4, updated_at = now()
                 FROM incidents i
                 WHERE i.id = d.incident_id AND d.kind = 'pull_request' AND d.merged_at IS NOT NULL
                   AND d.reverted_at IS NULL
                   AND (d.merge_commit_sha = ANY($1) OR d.commit_sha = ANY($1))
                   AND i.repository_id = $2 AND i.branch = $3
                 RETURNING d.incident_id, d.pr_number",
            )
            .await?,
            &[
                &reverted,
                &ev.repository.id,
                &ev.branch(),
                &format!("github:{by} {short}"),
                &wr.created_at,
            ],
        )
        .await?;
    for row in &rows {
        let incident_id: Uuid = row.get(0);
        audit::append(
            tx,
            &format!("github:{by}"),
            "pull_request.reverted",
            &incident_id.to_string(),
            &json!({"repository": ev.repository.full_name, "pr": row.get::<_, Option<i32>>(1), "revert_commit": wr.head_sha}),
        )
        .await?;
    }
    Ok(rows.first().map(|row| row.get(0)))
}

#[cfg(test)]
mod tests {
    use super::button;

    #[test]
    fn a_revert_is_seen_by_the_branch_githubs_revert_button_makes() {
        assert_eq!(
            button("revert-15-selfheal/abc-123"),
            Some((15, "selfheal/abc-123"))
        );
        assert_eq!(button("revert-15-feature/x"), None);
        assert_eq!(button("revert-x5-selfheal/abc"), None);
        assert_eq!(button("selfheal/abc"), None);
        assert_eq!(button("revert--selfheal/abc"), None);
    }
}
