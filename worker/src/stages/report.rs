//! How selfheal talks to people on GitHub: comments on pull requests (GitHub treats them as
//! issues) and completed check runs on commits.

use octocrab::Octocrab;
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
        if thread
            .iter()
            .any(|c| c["body"].as_str().is_some_and(|b| b.contains(&mark)))
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
    }
    Err(StageError::Transient(format!(
        "{what}: GitHub kept failing, and the comment is not there"
    )))
}

/// A completed check run named `name` on the run's failing commit; `output` is GitHub's
/// `{title, summary, text}`.
pub async fn check_run(
    crab: &Octocrab,
    run: &Run,
    name: &str,
    conclusion: &str,
    output: Value,
) -> Result<(), StageError> {
    let _: Value = crab
        .post(
            format!("/repos/{}/check-runs", run.repository_full_name),
            Some(&json!({
                "name": name,
                "head_sha": run.head_sha,
                "status": "completed",
                "conclusion": conclusion,
                "output": output,
            })),
        )
        .await
        .map_err(|e| api_error(e, &format!("reporting `{name}` as a check run")))?;
    Ok(())
}
