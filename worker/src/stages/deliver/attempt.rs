//! A further attempt after the fix's own CI failed: a commit on top of the fix's branch.

use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::commit::make_commit;
use crate::changes::ChangeSet;
use crate::stages::download::api_error;
use crate::stages::report::comment;
use crate::stages::{short, StageError, StageReport};
use crate::WorkerContext;

/// The fix's own CI failed and verify allowed another attempt: a commit on top of the fix's
/// branch (fast-forward only), and a comment on the PR saying what changed.
pub async fn push(
    ctx: &WorkerContext,
    run: &Run,
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
            let sha = make_commit(
                &crab,
                run,
                changes,
                &format!(
                    "selfheal: fix {class} failure of the fix ({strategy}), attempt {attempt}"
                ),
            )
            .await?;
            client
                .execute(
                    "UPDATE fix_attempts SET commit_sha = $2 WHERE run_id = $1",
                    &[&run.id, &sha],
                )
                .await?;
            sha
        }
    };
    let updated: Result<Value, _> = crab
        .patch(
            format!("/repos/{repo}/git/refs/heads/{branch}"),
            Some(&json!({"sha": commit, "force": false})),
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
    client
        .execute(
            "UPDATE fix_attempts SET pushed_at = now() WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    if let Some(n) = pr {
        let body = format!(
            "The fix's CI failed (run {}, **{class}**). selfheal pushed attempt {attempt}: \
             `{strategy}`, commit {}, validated in its sandbox.",
            run.github_run_id,
            short(&commit)
        );
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
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "pushed attempt {attempt} onto {branch} (commit {}, signed by GitHub)",
            short(&commit)
        ),
    })
}
