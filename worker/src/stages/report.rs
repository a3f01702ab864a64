//! How selfheal talks to people on GitHub: comments on pull requests (GitHub treats them as
//! issues) and completed check runs on commits.

use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use selfheal_shared::github::GitHubApp;

use super::download::{api_error, status_of};
use super::pr_state::all_pages;
use super::StageError;

/// Says `body` on issue or PR `number` once. GitHub may make a comment and still fail to
/// answer (a 5xx, a timeout): the comment carries a hidden mark with `key`, is posted without
/// octocrab's blind retries, and after such a failure the thread is read for the mark before
/// it is tried again.
pub async fn comment(
    github: &GitHubApp,
    installation: i64,
    repo: &str,
    number: i32,
    key: &str,
    body: &str,
) -> Result<(), StageError> {
    let mark = format!("<!-- selfheal:{key} -->");
    let marked = format!("{body}\n\n{mark}");
    let once = github.installation_once(installation, repo)?;
    let what = format!("commenting on #{number}");
    for attempt in 0..3u32 {
        let sent: Result<Value, _> = once
            .post(
                format!("/repos/{repo}/issues/{number}/comments"),
                Some(&json!({ "body": marked })),
            )
            .await;
        let e = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // A refusal (4xx) or a rate limit is GitHub's answer: it did not comment.
        if status_of(&e).is_some_and(|s| s < 500) {
            return Err(api_error(e, &what));
        }
        tracing::warn!(error = %e, attempt, "commenting failed; checking whether GitHub made the comment");
        let reader = github.installation(installation, repo)?;
        let thread = all_pages(
            &reader,
            &format!("/repos/{repo}/issues/{number}/comments"),
            None,
            &[],
            "the thread's comments",
            10,
        )
        .await?;
        // selfheal's own comment with the mark: anyone can write the mark in theirs.
        if thread.iter().any(|c| {
            c["performed_via_github_app"]["id"].as_u64() == Some(github.app_id())
                && c["body"].as_str().is_some_and(|b| b.contains(&mark))
        }) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
    }
    Err(StageError::Transient(format!(
        "{what}: GitHub kept failing, and the comment is not there"
    )))
}

/// A completed check run named `name` on the run's failing commit; `output` is GitHub's
/// `{title, summary, text}`. Made once, as [`comment`]: keyed by its `external_id`, and after
/// a 5xx or a timeout the commit's check runs are read for the key before trying again.
pub async fn check_run(
    github: &GitHubApp,
    run: &Run,
    name: &str,
    conclusion: &str,
    output: Value,
) -> Result<(), StageError> {
    let repo = &run.repository_full_name;
    let key = format!("selfheal:{}:{name}", run.id);
    let once = github.installation_once(run.installation_id, repo)?;
    let what = format!("reporting `{name}` as a check run");
    for attempt in 0..3u32 {
        let sent: Result<Value, _> = once
            .post(
                format!("/repos/{repo}/check-runs"),
                Some(&json!({
                    "name": name,
                    "head_sha": run.head_sha,
                    "external_id": key,
                    "status": "completed",
                    "conclusion": conclusion,
                    "output": output,
                })),
            )
            .await;
        let e = match sent {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if status_of(&e).is_some_and(|s| s < 500) {
            return Err(api_error(e, &what));
        }
        tracing::warn!(error = %e, attempt, "a check run failed; checking whether GitHub made it");
        let reader = github.installation(run.installation_id, repo)?;
        let listed = all_pages(
            &reader,
            &format!("/repos/{repo}/commits/{}/check-runs", run.head_sha),
            Some("check_runs"),
            // Every run of that name (GitHub's default shows only the latest per name).
            &[("check_name", name), ("filter", "all")],
            "the commit's check runs",
            10,
        )
        .await?;
        if listed.iter().any(|c| {
            c["external_id"] == key.as_str() && c["app"]["id"].as_u64() == Some(github.app_id())
        }) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
    }
    Err(StageError::Transient(format!(
        "{what}: GitHub kept failing, and the check run is not there"
    )))
}
