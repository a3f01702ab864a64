//! Merging selfheal's pull request through the API, for the policy (after verify) or for a
//! person (`/selfheal approve`). GitHub keeps its own rules: branch protection can still
//! refuse, and then the refusal is recorded and the PR left for review.

use selfheal_shared::audit;
use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};
use uuid::Uuid;

use super::download::api_error;
use super::repo_config;
use super::{short, StageError, StageReport};
use crate::WorkerContext;

/// The deliver stage's merge, when verify found the run's commit green and allowed.
pub async fn merge(ctx: &WorkerContext, run: &Run, actor: &str) -> Result<StageReport, StageError> {
    let detail = merge_incident(
        ctx,
        run.installation_id,
        &run.repository_full_name,
        run.incident_id,
        Some(&run.head_sha),
        actor,
    )
    .await?;
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail,
    })
}

/// Merges the incident's PR; `head` guards against merging a commit nobody checked.
pub async fn merge_incident(
    ctx: &WorkerContext,
    installation_id: i64,
    repo: &str,
    incident_id: Uuid,
    head: Option<&str>,
    actor: &str,
) -> Result<String, StageError> {
    let client = ctx.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT pr_number, merged_at IS NOT NULL, merge_commit_sha, branch FROM deliveries
             WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident_id],
        )
        .await?;
    let Some(number) = row.as_ref().and_then(|r| r.get::<_, Option<i32>>(0)) else {
        return Ok("no pull request to merge".into());
    };
    if let Some(r) = row.as_ref().filter(|r| r.get::<_, bool>(1)) {
        return Ok(format!(
            "PR #{number} already merged ({})",
            r.get::<_, Option<String>>(2).unwrap_or_default()
        ));
    }
    let crab = ctx.github.installation(installation_id, repo)?;
    let method = match repo_config::load(ctx, &crab, repo).await? {
        Ok(config) => config.merge_method,
        Err(_) => repo_config::MergeMethod::default(),
    };
    let mut body = json!({
        "merge_method": method.as_str(),
        "commit_title": format!("selfheal: fix the failing build (#{number})"),
    });
    if let Some(sha) = head {
        body["sha"] = Value::from(sha);
    }
    let merged: Result<Value, _> = crab
        .put(format!("/repos/{repo}/pulls/{number}/merge"), Some(&body))
        .await;
    match merged {
        Ok(answer) => {
            let sha = answer["sha"].as_str().unwrap_or_default().to_string();
            let mut client = ctx.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE deliveries SET merged_at = now(), merge_commit_sha = $2, merge_error = NULL,
                        decided_by = CASE WHEN $3 LIKE 'github:%' THEN $3 ELSE decided_by END, updated_at = now()
                 WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&incident_id, &sha, &actor],
            )
            .await?;
            audit::append(
                &tx,
                actor,
                "pull_request.merged",
                &incident_id.to_string(),
                &json!({"repository": repo, "pr": number, "merge_commit": sha, "method": method.as_str()}),
            )
            .await
            .map_err(|e| StageError::Transient(format!("audit: {e}")))?;
            tx.commit().await?;
            let branch: Option<String> = row.as_ref().and_then(|r| r.get(3));
            let tidied = match branch {
                Some(branch) => delete_branch(&crab, repo, &branch).await,
                None => String::new(),
            };
            Ok(format!(
                "merged PR #{number} ({}, commit {}){tidied}",
                method.as_str(),
                short(&sha)
            ))
        }
        // Not mergeable (405), head moved (409), or refused by a rule (422): GitHub's word.
        Err(octocrab::Error::GitHub { source, .. })
            if matches!(source.status_code.as_u16(), 405 | 409 | 422) =>
        {
            let why = format!(
                "GitHub refused the merge ({}): {}",
                source.status_code.as_u16(),
                source.message
            );
            client
                .execute(
                    "UPDATE deliveries SET merge_error = $2, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                    &[&incident_id, &why],
                )
                .await?;
            Ok(format!("{why}; PR #{number} left for review"))
        }
        Err(e) => Err(api_error(e, "merging the pull request")),
    }
}

/// Deletes selfheal's branch once its PR is merged or closed, as a person would: best effort
/// (the branch may be gone already, or protected), said in the stage's detail.
pub async fn delete_branch(crab: &octocrab::Octocrab, repo: &str, branch: &str) -> String {
    let deleted = crab
        ._delete(
            format!(
                "/repos/{repo}/git/refs/heads/{}",
                super::verify::ref_path(branch)
            ),
            None::<&()>,
        )
        .await;
    match deleted {
        Ok(r) if r.status().is_success() => format!("; deleted branch {branch}"),
        Ok(r) => {
            let status = r.status().as_u16();
            tracing::warn!(%branch, status, "GitHub did not delete selfheal's branch");
            format!("; branch {branch} not deleted (GitHub answered {status})")
        }
        Err(e) => {
            tracing::warn!(%branch, error = %e, "could not delete selfheal's branch");
            format!("; branch {branch} not deleted ({e})")
        }
    }
}
