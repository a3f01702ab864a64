//! A green run of the fix's own CI: every check of the PR's head green, the head
//! selfheal's own, and the merge policy's decision over the PR's own files.

use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use super::Verdict;
use crate::policy::{self, MergeInput};
use crate::stages::download::api_error;
use crate::stages::repo_config::{self, RepoConfig};
use crate::stages::{pr_state, short, StageError};
use crate::WorkerContext;

/// A green run of the fix's own CI: merge if every check of the PR's head is green and the
/// policy allows.
pub(super) async fn fix_passed(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<(Verdict, String, Value), StageError> {
    let row = ctx
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT pr_number, merged_at IS NOT NULL FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id],
        )
        .await?;
    let Some(number) = row.as_ref().and_then(|r| r.get::<_, Option<i32>>(0)) else {
        return Ok((
            Verdict::Skip,
            "no pull request for this incident".into(),
            json!([]),
        ));
    };
    if row.as_ref().is_some_and(|r| r.get::<_, bool>(1)) {
        return Ok((
            Verdict::Skip,
            format!("PR #{number} is already merged"),
            json!([]),
        ));
    }
    let repo = &run.repository_full_name;
    let crab = ctx.github.installation(run.installation_id, repo)?;
    let pr: Value = crab
        .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
        .await
        .map_err(|e| api_error(e, "the pull request"))?;
    if pr["state"] != "open" {
        return Ok((Verdict::Skip, format!("PR #{number} is closed"), json!([])));
    }
    let head = pr["head"]["sha"].as_str().unwrap_or_default();
    if head != run.head_sha {
        return Ok((
            Verdict::Wait,
            format!(
                "PR #{number} moved on to {}; that commit's CI decides",
                short(head)
            ),
            json!([]),
        ));
    }
    // Anyone with write access can push to selfheal's branch: only selfheal's own last
    // commit is merged by policy. Anything else is for people to review.
    let ours = pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id).await?;
    if ours.as_deref() != Some(head) {
        return Ok((
            Verdict::Hold,
            format!(
                "PR #{number}'s head {} is not the commit selfheal pushed ({}): someone else pushed to the branch, so it is left for review",
                short(head),
                ours.as_deref().map_or("none", short)
            ),
            json!([]),
        ));
    }
    // Dry run switched on after the PR was opened still means: merge nothing.
    if ctx.dry_run {
        return Ok((
            Verdict::Hold,
            format!(
                "dry run (SELFHEAL_DRY_RUN): would judge PR #{number} for merging; left for review"
            ),
            json!([]),
        ));
    }
    let mut checks = pr_state::checks_on(&crab, repo, head).await?;
    let config = repo_config::load(ctx, &crab, repo).await?;
    if let Ok(config) = &config {
        pr_state::pin_statuses(&crab, repo, head, &config.external_statuses, &mut checks).await?;
    }
    if !checks.running_workflows.is_empty() {
        return Ok((
            Verdict::Wait,
            format!(
                "{} of the fix's workflow runs still going ({}); the last to finish decides",
                checks.running_workflows.len(),
                checks.running_workflows.join(", ")
            ),
            json!([]),
        ));
    }
    let pending = checks.pending();
    if !pending.is_empty() {
        let reason = format!(
            "{} of the fix's checks still running ({}); the last to finish decides",
            pending.len(),
            pending.join(", ")
        );
        return Ok((Verdict::Wait, reason, Value::Array(checks.all.clone())));
    }
    let failed = checks.failed();
    let green = checks.green();
    let config = match config {
        Ok(c) => c,
        Err(problem) => {
            return Ok((
                Verdict::Hold,
                format!("{} is invalid ({problem})", repo_config::PATH),
                Value::Array(checks.all.clone()),
            ))
        }
    };
    if config.dry_run {
        return Ok((
            Verdict::Hold,
            format!(
                "dry run ({}): would judge PR #{number} for merging; left for review",
                repo_config::PATH
            ),
            Value::Array(checks.all.clone()),
        ));
    }
    // The policy judges what the PR holds now, as GitHub shows it, not what selfheal recorded.
    let files = pr_state::pr_files(&crab, repo, number).await?;
    let (allow, reasons, source) = merge_decision(ctx, run, green, &config, &files).await?;
    let summary = if green {
        format!("all {} checks green", checks.all.len())
    } else if checks.all.is_empty() {
        "no checks reported".to_string()
    } else {
        format!("checks failed: {}", failed.join(", "))
    };
    Ok(if allow {
        (
            Verdict::Merge,
            format!("{summary}; merge allowed by {source}"),
            Value::Array(checks.all.clone()),
        )
    } else {
        (
            Verdict::Hold,
            format!(
                "{summary}; merge denied by {source}: {}",
                reasons.join("; ")
            ),
            Value::Array(checks.all.clone()),
        )
    })
}

/// Evaluates the merge policy over the pull request's own files, and records the decision
/// on the delivery.
async fn merge_decision(
    ctx: &WorkerContext,
    run: &Run,
    checks_green: bool,
    config: &RepoConfig,
    files: &[pr_state::PrFile],
) -> Result<(bool, Vec<String>, String), StageError> {
    let client = ctx.pool.get().await?;
    // The incident's class is its first fix's; later attempts fix the fix.
    let class = client
        .query_opt(
            "SELECT p.class FROM fix_attempts a JOIN patches p ON p.run_id = a.run_id
             WHERE a.incident_id = $1 ORDER BY a.attempt LIMIT 1",
            &[&run.incident_id],
        )
        .await?
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|| "unknown".into());
    let diff = pr_state::as_diff(files);
    let input = MergeInput {
        class,
        diff_lines: files
            .iter()
            .map(|f| (f.additions + f.deletions).max(0) as usize)
            .sum(),
        touched_paths: pr_state::touched_paths(files),
        unreadable_paths: pr_state::unreadable_paths(files),
        protected_paths: config.protected_paths.clone(),
        max_diff_lines: config.max_diff_lines,
        auto_merge_classes: config
            .auto_merge_classes
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        checks_green,
        tests_deleted: crate::heal::refuses(&diff).is_some(),
    };
    let (source, text) = policy_text().map_err(StageError::Permanent)?;
    let decision = policy::decide(&text, &input)
        .map_err(|e| StageError::Permanent(format!("merge policy {source}: {e}")))?;
    let verdict = if decision.allow { "allowed" } else { "denied" };
    client
        .execute(
            "UPDATE deliveries SET merge_decision = $2, merge_reasons = $3, decided_by = $4, updated_at = now()
             WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id, &verdict, &serde_json::to_value(&decision.reasons).unwrap_or_default(), &source],
        )
        .await?;
    Ok((decision.allow, decision.reasons, source))
}

/// decision so that a change applies without a restart.
fn policy_text() -> Result<(String, String), String> {
    match std::env::var("SELFHEAL_MERGE_POLICY") {
        Ok(path) if !path.trim().is_empty() => std::fs::read_to_string(&path)
            .map(|text| (path.clone(), text))
            .map_err(|e| format!("SELFHEAL_MERGE_POLICY {path}: {e}")),
        _ => Ok((
            "policies/merge.rego".into(),
            policy::DEFAULT_POLICY.to_string(),
        )),
    }
}
