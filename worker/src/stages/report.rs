//! How selfheal talks to people on GitHub: comments on pull requests (GitHub treats them as
//! issues) and completed check runs on commits.

use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use selfheal_shared::github::GitHubApp;

use super::download::{api_error, status_of};
use super::pr_state::all_pages;
use super::StageError;

/// A write GitHub may make and still fail to answer (a 5xx, a timeout), made once: `post`
/// goes out without octocrab's blind retries, and after such a failure `happened` reads GitHub
/// back before it is tried again. A refusal (4xx) is GitHub's answer, except after an
/// unanswered try, when it may be saying the write is done already: read back first.
pub async fn write_once<P, PF, H, HF>(what: &str, post: P, happened: H) -> Result<(), StageError>
where
    P: Fn() -> PF,
    PF: std::future::Future<Output = Result<Value, octocrab::Error>>,
    H: Fn() -> HF,
    HF: std::future::Future<Output = Result<bool, StageError>>,
{
    for attempt in 0..3u32 {
        let e = match post().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if status_of(&e).is_some_and(|s| s < 500) {
            if attempt > 0 && happened().await? {
                return Ok(());
            }
            return Err(api_error(e, what));
        }
        tracing::warn!(error = %e, attempt, "{what} failed; checking whether GitHub did it");
        if happened().await? {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
    }
    Err(StageError::Transient(format!(
        "{what}: GitHub kept failing, and it is not done"
    )))
}

/// Says `body` on issue or PR `number` once ([`write_once`]): the comment carries a hidden
/// mark with `key`, and only selfheal's own comment with it counts as made (anyone can write
/// the mark in theirs).
pub async fn comment(
    github: &GitHubApp,
    installation: i64,
    repo: &str,
    number: i32,
    key: &str,
    body: &str,
) -> Result<(), StageError> {
    let mark = format!("<!-- selfheal:{key} -->");
    let body = json!({ "body": format!("{body}\n\n{mark}") });
    let url = format!("/repos/{repo}/issues/{number}/comments");
    let once = github.installation_once(installation, repo)?;
    let reader = github.installation(installation, repo)?;
    write_once(
        &format!("commenting on #{number}"),
        || once.post::<_, Value>(url.as_str(), Some(&body)),
        || async {
            let thread = all_pages(&reader, &url, None, &[], "the thread's comments", 10).await?;
            Ok(thread.iter().any(|c| {
                c["performed_via_github_app"]["id"].as_u64() == Some(github.app_id())
                    && c["body"].as_str().is_some_and(|b| b.contains(&mark))
            }))
        },
    )
    .await
}

/// A completed check run named `name` on the run's failing commit; `output` is GitHub's
/// `{title, summary, text}`. Made once ([`write_once`]), keyed by its `external_id`: only
/// selfheal's own run with it counts as made.
pub async fn check_run(
    github: &GitHubApp,
    run: &Run,
    name: &str,
    conclusion: &str,
    output: Value,
) -> Result<(), StageError> {
    let repo = &run.repository_full_name;
    let key = format!("selfheal:{}:{name}", run.id);
    let body = json!({
        "name": name,
        "head_sha": run.head_sha,
        "external_id": key,
        "status": "completed",
        "conclusion": conclusion,
        "output": output,
    });
    let url = format!("/repos/{repo}/check-runs");
    let listed_at = format!("/repos/{repo}/commits/{}/check-runs", run.head_sha);
    let once = github.installation_once(run.installation_id, repo)?;
    let reader = github.installation(run.installation_id, repo)?;
    write_once(
        &format!("reporting `{name}` as a check run"),
        || once.post::<_, Value>(url.as_str(), Some(&body)),
        || async {
            let listed = all_pages(
                &reader,
                &listed_at,
                Some("check_runs"),
                // Every run of that name (GitHub's default shows only the latest per name).
                &[("check_name", name), ("filter", "all")],
                "the commit's check runs",
                10,
            )
            .await?;
            Ok(listed.iter().any(|c| {
                c["external_id"] == key.as_str() && c["app"]["id"].as_u64() == Some(github.app_id())
            }))
        },
    )
    .await
}
