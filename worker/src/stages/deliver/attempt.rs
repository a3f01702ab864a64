//! A further commit on the fix's branch: after the fix's own CI failed, on top of the
//! branch; after a newer push to the failing branch failed too, the fix made again on that
//! push, and the branch moved to it (a rebase: the fix for code nobody runs any more would
//! be reviewed and merged for nothing).

use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::commit::make_commit;
use crate::changes::ChangeSet;
use crate::stages::download::api_error;
use crate::stages::report::comment;
use crate::stages::{short, StageError, StageReport};
use crate::WorkerContext;

/// Where the commit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On top of the fix's branch (fast-forward only): the fix's own CI failed.
    OnTop,
    /// The fix made again on the run's newer failing commit; the branch is moved to it.
    Rebase,
}

/// A commit validated for `run` onto the fix's branch, and a comment on the PR saying what
/// changed. The commit's parent is the run's head: selfheal's last commit for a run of the
/// fix's CI, the newer push for a rebase.
pub async fn push(
    ctx: &WorkerContext,
    run: &Run,
    placement: Placement,
    strategy: &str,
    class: &str,
    changes: &ChangeSet,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    client
        .execute(
            "INSERT INTO fix_attempts (run_id, incident_id, attempt, strategy)
             SELECT $1, $2, coalesce(max(attempt), 0) + 1, $3 FROM fix_attempts WHERE incident_id = $2
             ON CONFLICT (run_id) DO NOTHING",
            &[&run.id, &run.incident_id, &strategy],
        )
        .await?;
    let a = client
        .query_one(
            "SELECT a.attempt, a.commit_sha, a.pushed_at IS NOT NULL, d.branch, d.pr_number
             FROM fix_attempts a JOIN deliveries d ON d.incident_id = a.incident_id AND d.kind = 'pull_request'
             WHERE a.run_id = $1",
            &[&run.id],
        )
        .await?;
    let attempt: i32 = a.get(0);
    let branch: String = a.get(3);
    let pr: Option<i32> = a.get(4);
    if a.get::<_, bool>(2) {
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("attempt {attempt} already pushed to {branch}"),
        });
    }
    let repo = &run.repository_full_name;
    let crab = ctx.github.installation(run.installation_id, repo)?;
    let commit = match a.get::<_, Option<String>>(1) {
        Some(sha) => sha,
        None => {
            let message = match placement {
                Placement::OnTop => format!(
                    "selfheal: fix {class} failure of the fix ({strategy}), attempt {attempt}"
                ),
                Placement::Rebase => format!(
                    "selfheal: fix {class} failure of {} ({strategy}), attempt {attempt}",
                    short(&run.head_sha)
                ),
            };
            let sha = make_commit(&crab, run, changes, &message).await?;
            client
                .execute(
                    "UPDATE fix_attempts SET commit_sha = $2 WHERE run_id = $1",
                    &[&run.id, &sha],
                )
                .await?;
            sha
        }
    };
    if placement == Placement::Rebase {
        // Verify saw the branch holding only selfheal's work, but that was a while ago: a
        // commit someone pushed since would be dropped by the force-push. Read it again (a
        // window of one request remains: GitHub's REST API has no compare-and-swap for refs).
        let current: Value = crab
            .get(format!("/repos/{repo}/git/ref/heads/{branch}"), None::<&()>)
            .await
            .map_err(|e| api_error(e, "the fix's branch"))?;
        let head = current["object"]["sha"].as_str().unwrap_or_default();
        let ours = crate::stages::pr_state::last_pushed(&**client, run.incident_id).await?;
        if head != commit && ours.as_deref() != Some(head) {
            return Ok(StageReport {
                outcome: Outcome::Skipped,
                detail: format!(
                    "not rebased: {branch} moved to {} meanwhile, which is not selfheal's commit; left for review",
                    short(head)
                ),
            });
        }
    }
    let updated: Result<Value, _> = crab
        .patch(
            format!("/repos/{repo}/git/refs/heads/{branch}"),
            Some(&json!({"sha": commit, "force": placement == Placement::Rebase})),
        )
        .await;
    if let Err(e) = updated {
        // Pushed before a crash: fine if the branch is at our commit.
        let current: Value = crab
            .get(format!("/repos/{repo}/git/ref/heads/{branch}"), None::<&()>)
            .await
            .map_err(|e| api_error(e, "the fix's branch"))?;
        if current["object"]["sha"] != commit.as_str() {
            return Err(api_error(e, "pushing the attempt onto the fix's branch"));
        }
    }
    // Pushed, and (for a rebase) what the fix is built on now, land together.
    drop(client);
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE fix_attempts SET pushed_at = now() WHERE run_id = $1",
        &[&run.id],
    )
    .await?;
    let previous: Option<String> = if placement == Placement::Rebase {
        tx.query_one(
            "UPDATE deliveries d SET based_on = $2
             FROM (SELECT based_on FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request') old
             WHERE d.incident_id = $1 AND d.kind = 'pull_request'
             RETURNING old.based_on",
            &[&run.incident_id, &run.head_sha],
        )
        .await?
        .get(0)
    } else {
        None
    };
    tx.commit().await?;
    if let Some(n) = pr {
        let body = match placement {
            Placement::OnTop => format!(
                "The fix's CI failed (run {}, **{class}**). selfheal pushed attempt {attempt}: \
                 `{strategy}`, commit {}, validated in its sandbox.",
                run.github_run_id,
                short(&commit)
            ),
            Placement::Rebase => format!(
                "The branch moved on to {} and its CI still fails (run {}, **{class}**). \
                 selfheal made the fix again on {} (`{strategy}`, validated in its sandbox) and \
                 rebased this pull request onto it: commit {} replaces the fix made for {}.",
                short(&run.head_sha),
                run.github_run_id,
                short(&run.head_sha),
                short(&commit),
                previous.as_deref().map_or("the older commit", short)
            ),
        };
        comment(
            &ctx.github,
            run.installation_id,
            repo,
            n,
            &format!("attempt:{}", run.id),
            &body,
        )
        .await?;
    }
    let done = match placement {
        Placement::OnTop => "pushed attempt",
        Placement::Rebase => "rebased the fix onto the newer push: attempt",
    };
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "{done} {attempt} on {branch} (commit {}, signed by GitHub)",
            short(&commit)
        ),
    })
}
