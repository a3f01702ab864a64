//! The checks that stop or narrow verify before it judges a fix: the incident resolved by
//! another push (a stale fix), a check suite of an app that is not the repository's CI, and
//! a branch whose last commits are all selfheal's own.

use selfheal_shared::github::Installation;
use selfheal_shared::runs::{Run, Trigger};
use serde_json::Value;

use super::{ref_path, Verdict};
use crate::stages::download::api_error;
use crate::stages::repo_config;
use crate::stages::{short, StageError};
use crate::WorkerContext;

/// The incident is resolved. By this green run, while selfheal's PR is open: the fix is stale
/// and is closed, but only when the green commit is the branch's head now (a slow green run
/// of an older commit, finishing after the failure, says nothing about the branch).
pub(super) async fn resolved(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<(Verdict, String), StageError> {
    let meanwhile = || {
        Ok((
            Verdict::Skip,
            "the incident was resolved meanwhile".to_string(),
        ))
    };
    if run.fix_branch.is_some() || run.conclusion != "success" {
        return meanwhile();
    }
    let Some(n) = open_pull_request(ctx, run).await? else {
        return meanwhile();
    };
    let branch = super::incident_branch(ctx, run).await?;
    let repo = &run.repository_full_name;
    let crab = ctx.github.installation(run.installation_id, repo)?;
    let head: Value = crab
        .get(
            format!("/repos/{repo}/git/ref/heads/{}", ref_path(&branch)),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the resolved branch"))?;
    if head["object"]["sha"].as_str() != Some(run.head_sha.as_str()) {
        return Ok((
            Verdict::Skip,
            format!(
                "the incident was resolved by {}, which is not {branch}'s head: PR #{n} is left as it is",
                short(&run.head_sha)
            ),
        ));
    }
    Ok((
        Verdict::Close,
        format!(
            "the incident was resolved by {} without selfheal's fix: PR #{n} is stale",
            short(&run.head_sha)
        ),
    ))
}

/// A run started by an external CI's report decides a merge only when the reporter is the
/// repository's CI as `.github/selfheal.yml` names it: an app listed under `external_ci`
/// (check suites and runs; not selfheal itself), or a status context listed under
/// `external_statuses` and posted by the login it names there.
pub(super) async fn unlisted_ci(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<Option<String>, StageError> {
    let what = match &run.trigger {
        Trigger::WorkflowRun => return Ok(None),
        Trigger::CheckSuite { app_id, app } | Trigger::CheckRun { app_id, app } => {
            let kind = run.trigger.kind().replace('_', " ");
            if u64::try_from(*app_id).ok() == Some(ctx.github.app_id()) {
                return Ok(Some(format!("a {kind} of selfheal's own")));
            }
            format!("a {kind} of `{}`", app.as_deref().unwrap_or_default())
        }
        Trigger::Status { context, creator } => {
            format!("a commit status `{context}` posted by `{creator}`")
        }
    };
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let config = match repo_config::load(ctx, &crab, &run.repository_full_name).await? {
        Ok(c) => c,
        Err(problem) => {
            return Ok(Some(format!(
                "{} is invalid ({problem}): {what} decides nothing",
                repo_config::PATH
            )))
        }
    };
    let path = repo_config::PATH;
    Ok(match &run.trigger {
        Trigger::Status { context, creator } => match config.external_statuses.get(context) {
            None => Some(format!(
                "{what}, a context {path} does not list under external_statuses: the fix's own CI decides"
            )),
            Some(poster) if !poster.eq_ignore_ascii_case(creator) => Some(format!(
                "{what}, not by `{poster}` as {path} says (anyone who may write statuses can post any context): the fix's own CI decides"
            )),
            Some(_) => None,
        },
        Trigger::CheckSuite { app, .. } | Trigger::CheckRun { app, .. } => {
            let app = app.as_deref().unwrap_or_default();
            (!config.external_ci.iter().any(|c| c == app)).then(|| {
                format!(
                    "{what}, which {path} does not list under external_ci: the fix's own CI decides"
                )
            })
        }
        Trigger::WorkflowRun => None,
    })
}

/// How many commits on top of a branch, all selfheal's, make it stop.
const OWN_COMMITS_LIMIT: usize = 3;

/// The failing commit and its first parents, when the last [`OWN_COMMITS_LIMIT`] are all
/// selfheal's (their message's first line starts `selfheal:`, as every commit and merge title
/// it writes does). A message is anyone's to write: at worst someone makes selfheal stop.
pub(super) async fn own_commits_on_top(
    crab: &Installation,
    repo: &str,
    head: &str,
) -> Result<Option<Vec<String>>, StageError> {
    let mut seen = Vec::new();
    let mut sha = head.to_string();
    while seen.len() < OWN_COMMITS_LIMIT {
        let commit: Value = crab
            .get(format!("/repos/{repo}/git/commits/{sha}"), None::<&()>)
            .await
            .map_err(|e| api_error(e, "the failing branch's history"))?;
        let ours = commit["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("selfheal:"));
        if !ours {
            return Ok(None);
        }
        seen.push(sha.clone());
        match commit["parents"][0]["sha"].as_str() {
            Some(parent) => sha = parent.to_string(),
            None => return Ok(None),
        }
    }
    Ok(Some(seen))
}

/// The incident's pull request while selfheal still holds it open (not merged or closed).
pub(super) async fn open_pull_request(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<Option<i32>, StageError> {
    Ok(ctx
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT pr_number FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'
               AND merged_at IS NULL AND closed_at IS NULL",
            &[&run.incident_id],
        )
        .await?
        .and_then(|r| r.get(0)))
}
