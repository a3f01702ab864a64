//! A green run of the fix's own CI: every check of the PR's head green, the head
//! selfheal's own, and the merge policy's decision over the PR's own files.

use selfheal_shared::audit;
use selfheal_shared::runs::{self, Run};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Verdict;
use crate::policy::{self, MergeInput};
use crate::stages::download::api_error;
use crate::stages::repo_config::{self, RepoConfig};
use crate::stages::{merge, pr_state, short, StageError};
use crate::WorkerContext;

/// The start of the reason a green run of the fix's CI waits with while its PR is not recorded.
pub(super) const AWAITING_PR: &str = "the fix's CI finished before its pull request was recorded";

/// The end of the reason of a verdict decided by `take_up_early_ci`.
const TAKEN_UP: &str = " (decided when the pull request was recorded)";

/// Serialises recording an incident's PR with a fix run deciding that it has none: whichever
/// comes second sees the other.
pub const PR_RECORDED_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('selfheal.pr_recorded:' || $1::text, 0))";

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
            "SELECT pr_number, merged_at IS NOT NULL, commit_sha FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id],
        )
        .await?;
    let Some(number) = row.as_ref().and_then(|r| r.get::<_, Option<i32>>(0)) else {
        // The branch is pushed before the PR is opened, so the fix's CI can finish first (the
        // worker opening the PR may even die between). Deliver takes this run up when it
        // records the PR (`take_up_early_ci`); skipping it would leave the fix unmerged.
        // The first commit is recorded before its branch is pushed (a worker killed right
        // after the push has recorded nothing else); later ones in `fix_attempts` likewise.
        let first = row.as_ref().and_then(|r| r.get::<_, Option<String>>(2));
        let pushed = pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id).await?;
        let ours = |sha: &Option<String>| sha.as_deref() == Some(run.head_sha.as_str());
        if row.is_some() && (ours(&first) || ours(&pushed)) {
            return Ok((
                Verdict::Wait,
                format!(
                    "{AWAITING_PR} ({}); decided when the pull request is recorded",
                    short(&run.head_sha)
                ),
                json!([]),
            ));
        }
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
    // Where the pull request goes as GitHub says now (a person may have changed its base, or
    // GitHub moved it when a branch was renamed or deleted).
    let base = Base {
        branch: pr["base"]["ref"].as_str().map(String::from),
        default_branch: pr["base"]["repo"]["default_branch"]
            .as_str()
            .map(String::from),
    };
    let (allow, reasons, source) = merge_decision(ctx, run, green, &config, &files, base).await?;
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

/// The pull request's base branch and its repository's default branch, as GitHub gave them.
struct Base {
    branch: Option<String>,
    default_branch: Option<String>,
}

/// Evaluates the merge policy over the pull request's own files, and records the decision
/// on the delivery.
async fn merge_decision(
    ctx: &WorkerContext,
    run: &Run,
    checks_green: bool,
    config: &RepoConfig,
    files: &[pr_state::PrFile],
    base: Base,
) -> Result<(bool, Vec<String>, String), StageError> {
    let client = ctx.pool.get().await?;
    // The incident's class is its first fix's; later attempts fix the fix. A model's patch in
    // any attempt makes the fix a model's.
    let (class, strategy) = client
        .query_opt(
            "SELECT (SELECT p.class FROM fix_attempts a JOIN patches p ON p.run_id = a.run_id
                     WHERE a.incident_id = $1 ORDER BY a.attempt LIMIT 1),
                    CASE WHEN EXISTS (SELECT 1 FROM fix_attempts a JOIN patches p ON p.run_id = a.run_id
                                      WHERE a.incident_id = $1 AND p.strategy = 'ai_patch')
                         THEN 'ai_patch'
                         ELSE (SELECT p.strategy FROM fix_attempts a JOIN patches p ON p.run_id = a.run_id
                               WHERE a.incident_id = $1 ORDER BY a.attempt LIMIT 1) END",
            &[&run.incident_id],
        )
        .await?
        .map(|r| {
            (
                r.get::<_, Option<String>>(0),
                r.get::<_, Option<String>>(1),
            )
        })
        .unwrap_or_default();
    let class = class.unwrap_or_else(|| "unknown".into());
    let strategy = strategy.unwrap_or_else(|| "unknown".into());
    // The pull request's own base, as GitHub gave it; what the run's delivery said of the
    // incident's branch and the repository only where GitHub's answer lacks it.
    let recorded = client
        .query_opt(
            "SELECT i.branch, d.payload->'repository'->>'default_branch'
               FROM runs r JOIN incidents i ON i.id = r.incident_id
               LEFT JOIN webhook_deliveries d ON d.delivery_id = r.delivery_id
              WHERE r.id = $1",
            &[&run.id],
        )
        .await?
        .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
    let (recorded_branch, recorded_default) = recorded.unwrap_or_default();
    let base_branch = base.branch.unwrap_or(recorded_branch);
    // Unknown counts as the default branch: the stricter case.
    let base_is_default_branch = base
        .default_branch
        .or(recorded_default)
        .is_none_or(|d| d == base_branch);
    let diff = pr_state::as_diff(files);
    let input = MergeInput {
        class,
        strategy,
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
        base_branch,
        base_is_default_branch,
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

/// Called by deliver once it has recorded the incident's PR: a green run of the fix's CI on
/// the commit selfheal pushed that came before (and waited, `AWAITING_PR`) is decided now,
/// and merged if allowed. Also a decision to merge that a worker did not live to carry out.
/// Returns what was done, for the deliver stage's record.
pub async fn take_up_early_ci(
    ctx: &WorkerContext,
    incident: Uuid,
    pushed: &str,
) -> Result<Option<String>, StageError> {
    let client = ctx.pool.get().await?;
    // Only what waited for the PR, or what a take-up decided to merge and did not live to:
    // another wait (checks still running) is the next CI run's to decide, and a merge
    // GitHub refused stays refused.
    let row = client
        .query_opt(
            "SELECT r.id, v.verdict, i.stopped_at IS NOT NULL, i.status = 'resolved'
             FROM runs r JOIN verifications v ON v.run_id = r.id
             JOIN incidents i ON i.id = r.incident_id
             JOIN deliveries d ON d.incident_id = r.incident_id AND d.kind = 'pull_request'
             WHERE r.incident_id = $1 AND r.fix_branch IS NOT NULL AND r.conclusion = 'success'
               AND r.head_sha = $2 AND d.merged_at IS NULL AND d.merge_error IS NULL
               AND ((v.verdict = 'wait' AND starts_with(v.reason, $3))
                    OR (v.verdict = 'merge' AND v.reason LIKE '%' || $4))
             ORDER BY r.created_at DESC LIMIT 1",
            &[&incident, &pushed, &AWAITING_PR, &TAKEN_UP],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    // A person stopped selfheal on the incident, or it was resolved, while the PR was being
    // opened: nothing is merged (verify's own first checks, which this run passed earlier).
    let settled = if row.get::<_, bool>(2) {
        Some("selfheal was stopped on this incident meanwhile")
    } else if row.get::<_, bool>(3) {
        Some("the incident was resolved meanwhile")
    } else {
        None
    };
    let Some(early) = runs::load(&client, row.get(0)).await? else {
        return Ok(None);
    };
    drop(client);
    let mut verdict = Verdict::parse(row.get(1)).unwrap_or(Verdict::Skip);
    if verdict == Verdict::Wait {
        let (decided, reason, checks) = match settled {
            Some(why) => (Verdict::Skip, why.to_string(), json!([])),
            None => fix_passed(ctx, &early).await?,
        };
        let reason = format!("{reason}{TAKEN_UP}");
        let mut client = ctx.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE verifications SET verdict = $2, reason = $3, checks = $4
                 WHERE run_id = $1 AND verdict = 'wait'",
                &[&early.id, &decided.as_str(), &reason, &checks],
            )
            .await?;
        if changed == 0 {
            // Another worker took it up meanwhile; its decision stands.
            return Ok(None);
        }
        audit::append(
            &tx,
            "selfheal:worker",
            "verification.taken_up",
            &early.id.to_string(),
            &json!({"verdict": decided.as_str(), "reason": reason}),
        )
        .await?;
        tx.commit().await?;
        verdict = decided;
        if verdict != Verdict::Merge {
            return Ok(Some(format!(
                "the fix's CI (run {}) had finished first: {}: {reason}",
                early.github_run_id,
                verdict.as_str()
            )));
        }
    }
    if verdict != Verdict::Merge {
        return Ok(None);
    }
    if let Some(why) = settled {
        return Ok(Some(format!("not merged: {why}")));
    }
    let merged = merge::merge(ctx, &early, "selfheal:policy").await?;
    Ok(Some(format!(
        "the fix's CI (run {}) had finished first: {}",
        early.github_run_id, merged.detail
    )))
}
