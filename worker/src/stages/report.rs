//! How selfheal talks to people on GitHub: comments on pull requests (GitHub treats them as
//! issues) and completed check runs on commits.

use octocrab::Octocrab;
use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use super::download::api_error;
use super::StageError;

pub async fn comment(
    crab: &Octocrab,
    repo: &str,
    number: i32,
    body: &str,
) -> Result<(), StageError> {
    let _: Value = crab
        .post(
            format!("/repos/{repo}/issues/{number}/comments"),
            Some(&json!({ "body": body })),
        )
        .await
        .map_err(|e| api_error(e, &format!("commenting on #{number}")))?;
    Ok(())
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
