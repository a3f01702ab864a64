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

/// Merges the incident's PR; `head` guards against merging a commit nobody checked. One
/// merge per incident at a time (two verify runs, a green workflow run and a green check
/// suite, may both decide to merge): the second finds it merged.
pub async fn merge_incident(
    ctx: &WorkerContext,
    installation_id: i64,
    repo: &str,
    incident_id: Uuid,
    head: Option<&str>,
    actor: &str,
) -> Result<String, StageError> {
    // A session lock on a connection of its own: released below, or when the worker dies.
    let lock = ctx.pool.get().await?;
    let key = format!("selfheal.merge:{incident_id}");
    lock.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
        .await?;
    let result = merge_locked(ctx, installation_id, repo, incident_id, head, actor).await;
    if let Err(e) = lock
        .execute(
            "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
            &[&key],
        )
        .await
    {
        // Not back to the pool holding the lock: the connection is closed, and the lock with it.
        tracing::warn!(error = %e, "could not release the merge lock; closing its connection");
        drop(deadpool_postgres::Object::take(lock));
    }
    result
}

async fn merge_locked(
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
            "SELECT pr_number, merged_at IS NOT NULL, merge_commit_sha, branch,
                    merge_requested_at IS NOT NULL
             FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident_id],
        )
        .await?;
    let Some(number) = row.as_ref().and_then(|r| r.get::<_, Option<i32>>(0)) else {
        return Ok("no pull request to merge".into());
    };
    let row = row.expect("a row with a PR number");
    if row.get::<_, bool>(1) {
        return Ok(format!(
            "PR #{number} already merged ({})",
            row.get::<_, Option<String>>(2).unwrap_or_default()
        ));
    }
    let pr = Pull {
        repo,
        number,
        incident_id,
        branch: row.get(3),
    };
    let crab = ctx.github.installation(installation_id, repo)?;
    // Asked before and never recorded: the worker that asked may have died after GitHub
    // merged. Read first; asking again would be refused (405) and the merge left unrecorded.
    if row.get::<_, bool>(4) {
        let state = pull_request(&crab, repo, number).await?;
        if state.merged {
            return pr.record(ctx, &crab, &state.merged_as(actor)).await;
        }
    }
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
    client
        .execute(
            "UPDATE deliveries SET merge_requested_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident_id],
        )
        .await?;
    let merged: Result<Value, _> = crab
        .put(format!("/repos/{repo}/pulls/{number}/merge"), Some(&body))
        .await;
    let source = match merged {
        Ok(answer) => {
            let merged = Merged {
                sha: answer["sha"].as_str().unwrap_or_default().to_string(),
                method: Some(method.as_str()),
                actor: actor.to_string(),
            };
            return pr.record(ctx, &crab, &merged).await;
        }
        Err(octocrab::Error::GitHub { source, .. })
            if matches!(source.status_code.as_u16(), 405 | 409 | 422) =>
        {
            source
        }
        Err(e) => return Err(api_error(e, "merging the pull request")),
    };
    // Not mergeable (405), head moved (409), or refused by a rule (422): GitHub's word, unless
    // it is merged already (by a person in GitHub's UI, say) or only behind its base.
    let state = pull_request(&crab, repo, number).await?;
    if state.merged {
        return pr.record(ctx, &crab, &state.merged_as(actor)).await;
    }
    let status = source.status_code.as_u16();
    // Behind its base where branch protection wants it up to date: GitHub merges the base
    // into the branch, and the new head's CI decides (a later green run merges).
    if let (405, Some(head), Some("behind")) = (status, head, state.mergeable_state.as_deref()) {
        return update_branch(ctx, &crab, repo, incident_id, number, head).await;
    }
    let why = format!("GitHub refused the merge ({status}): {}", source.message);
    client
        .execute(
            "UPDATE deliveries SET merge_error = $2, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident_id, &why],
        )
        .await?;
    // Said where people look: branch protection (a review, a check selfheal does not see)
    // wants a person now.
    let body = format!(
        "selfheal would merge this fix, but GitHub refused: {}. Left for review.",
        super::deliver::markdown::code(&why)
    );
    let key = format!("merge-refused:{incident_id}:{}", head.unwrap_or("any"));
    if let Err(e) =
        super::report::comment(&ctx.github, installation_id, repo, number, &key, &body).await
    {
        tracing::warn!(error = %e, "could not say on the PR why it was not merged");
    }
    Ok(format!("{why}; PR #{number} left for review"))
}

/// selfheal's pull request of one incident, being merged.
struct Pull<'a> {
    repo: &'a str,
    number: i32,
    incident_id: Uuid,
    branch: Option<String>,
}

/// A merge GitHub made: from its answer to selfheal's request, or found on the pull request.
struct Merged<'a> {
    sha: String,
    /// The method selfheal asked for; unknown for a merge found made.
    method: Option<&'a str>,
    /// Who merged, as the audit log names them.
    actor: String,
}

impl Pull<'_> {
    /// Records the merge (commit, audit entry), then deletes selfheal's branch.
    async fn record(
        &self,
        ctx: &WorkerContext,
        crab: &selfheal_shared::github::Installation,
        merged: &Merged<'_>,
    ) -> Result<String, StageError> {
        let (repo, number, incident_id) = (self.repo, self.number, self.incident_id);
        let mut client = ctx.pool.get().await?;
        let tx = client.transaction().await?;
        // Once: two workers may both find the merge made (the merge lock's session can die
        // with a Postgres restart); only the first records it and its audit entry.
        let recorded = tx
            .execute(
                "UPDATE deliveries SET merged_at = now(), merge_commit_sha = $2, merge_error = NULL,
                        decided_by = CASE WHEN $3 LIKE 'selfheal:%' THEN decided_by ELSE $3 END, updated_at = now()
                 WHERE incident_id = $1 AND kind = 'pull_request' AND merged_at IS NULL",
                &[&incident_id, &merged.sha, &merged.actor],
            )
            .await?;
        if recorded == 0 {
            return Ok(format!(
                "PR #{number} already merged ({})",
                short(&merged.sha)
            ));
        }
        audit::append(
            &tx,
            &merged.actor,
            "pull_request.merged",
            &incident_id.to_string(),
            &json!({"repository": repo, "pr": number, "merge_commit": merged.sha, "method": merged.method}),
        )
        .await
        .map_err(|e| StageError::Transient(format!("audit: {e}")))?;
        tx.commit().await?;
        let tidied = match &self.branch {
            Some(branch) => {
                let outcome = delete_branch(crab, repo, branch).await;
                record_branch(ctx, incident_id, &outcome).await?;
                outcome.detail(branch)
            }
            None => String::new(),
        };
        Ok(match merged.method {
            Some(method) => format!(
                "merged PR #{number} ({method}, commit {}){tidied}",
                short(&merged.sha)
            ),
            None => format!(
                "PR #{number} found merged by {} (commit {}){tidied}",
                merged.actor,
                short(&merged.sha)
            ),
        })
    }
}

#[derive(serde::Deserialize)]
struct Login {
    login: String,
    /// `Bot` for an App's account (`<slug>[bot]`), `User` for a person.
    #[serde(rename = "type", default)]
    kind: String,
}

/// The fields of a pull request a merge reads.
#[derive(serde::Deserialize)]
struct PullState {
    #[serde(default)]
    merged: bool,
    merge_commit_sha: Option<String>,
    merged_by: Option<Login>,
    /// Who opened it: selfheal's App, for its own pull requests.
    user: Option<Login>,
    mergeable_state: Option<String>,
}

impl PullState {
    /// The merge found made. Merged by the App's bot account that opened the PR is selfheal's
    /// own merge, recorded as `ours`; anyone else is `github:<login>` (`github:unknown` when
    /// GitHub names no one, as for a deleted account).
    fn merged_as(&self, ours: &str) -> Merged<'static> {
        let opener = self.user.as_ref().map(|l| l.login.as_str());
        Merged {
            sha: self.merge_commit_sha.clone().unwrap_or_default(),
            method: None,
            actor: match &self.merged_by {
                Some(by) if by.kind == "Bot" && Some(by.login.as_str()) == opener => {
                    ours.to_string()
                }
                Some(by) => format!("github:{}", by.login),
                None => "github:unknown".to_string(),
            },
        }
    }
}

async fn pull_request(
    crab: &selfheal_shared::github::Installation,
    repo: &str,
    number: i32,
) -> Result<PullState, StageError> {
    crab.get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
        .await
        .map_err(|e| api_error(e, "the pull request"))
}

/// What became of selfheal's branch after its PR was merged or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchDeletion {
    Deleted,
    /// Someone (or GitHub's auto-delete) was first: 422 "Reference does not exist", or 404.
    AlreadyGone,
    /// It holds someone else's commit and the PR was not merged.
    Kept,
    /// GitHub refused or failed (a protected branch, a 5xx): tried again later.
    NotDeleted(String),
}

impl BranchDeletion {
    /// Nothing left to do for this branch.
    pub fn settled(&self) -> bool {
        !matches!(self, BranchDeletion::NotDeleted(_))
    }

    /// As a stage's detail says it.
    pub fn detail(&self, branch: &str) -> String {
        match self {
            BranchDeletion::Deleted => format!("; deleted branch {branch}"),
            BranchDeletion::AlreadyGone => format!("; branch {branch} was already gone"),
            BranchDeletion::Kept => {
                format!("; branch {branch} kept: it holds someone else's commit")
            }
            BranchDeletion::NotDeleted(why) => format!("; branch {branch} not deleted ({why})"),
        }
    }
}

/// Deletes selfheal's branch once its PR is merged or closed, as a person would: best effort
/// (the branch may be gone already, or protected).
pub async fn delete_branch(
    crab: &selfheal_shared::github::Installation,
    repo: &str,
    branch: &str,
) -> BranchDeletion {
    let deleted = crab
        ._delete(format!(
            "/repos/{repo}/git/refs/heads/{}",
            super::verify::ref_path(branch)
        ))
        .await;
    match deleted {
        Ok(r) if r.status().is_success() => BranchDeletion::Deleted,
        Ok(r) => {
            let status = r.status().as_u16();
            let said = crab.body_to_string(r).await.unwrap_or_default();
            // 422 is also GitHub's answer for a protected branch or a ruleset: only its
            // "Reference does not exist" means someone was first.
            if status == 404 || (status == 422 && said.contains("Reference does not exist")) {
                return BranchDeletion::AlreadyGone;
            }
            tracing::warn!(%branch, status, answer = %said, "GitHub did not delete selfheal's branch");
            BranchDeletion::NotDeleted(format!("GitHub answered {status}"))
        }
        Err(e) => {
            tracing::warn!(%branch, error = %e, "could not delete selfheal's branch");
            BranchDeletion::NotDeleted(e.to_string())
        }
    }
}

/// Records that selfheal's branch needs nothing more, when it does not.
pub async fn record_branch(
    ctx: &WorkerContext,
    incident: uuid::Uuid,
    outcome: &BranchDeletion,
) -> Result<(), StageError> {
    if outcome.settled() {
        ctx.pool
            .get()
            .await?
            .execute(
                "UPDATE deliveries SET branch_deleted_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&incident],
            )
            .await?;
    }
    Ok(())
}

/// `PUT /pulls/{n}/update-branch` for a PR behind its base: GitHub makes a merge commit of the
/// base into selfheal's branch (asynchronously). Its new head is recorded as selfheal's own
/// only when it is exactly that merge (first parent selfheal's head, made by GitHub), so that
/// a commit someone else pushes meanwhile is not taken for it.
async fn update_branch(
    ctx: &WorkerContext,
    crab: &selfheal_shared::github::Installation,
    repo: &str,
    incident_id: Uuid,
    number: i32,
    head: &str,
) -> Result<String, StageError> {
    let asked: Result<Value, _> = crab
        .put(
            format!("/repos/{repo}/pulls/{number}/update-branch"),
            Some(&json!({"expected_head_sha": head})),
        )
        .await;
    if let Err(e) = asked {
        let why = match &e {
            octocrab::Error::GitHub { source, .. } => format!(
                "GitHub could not update the branch ({}): {}",
                source.status_code.as_u16(),
                source.message
            ),
            _ => return Err(api_error(e, "updating the branch")),
        };
        ctx.pool
            .get()
            .await?
            .execute(
                "UPDATE deliveries SET merge_error = $2, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&incident_id, &why],
            )
            .await?;
        return Ok(format!("{why}; PR #{number} left for review"));
    }
    // GitHub answers 202 and merges in the background: wait a little for the new head.
    for _ in 0..10 {
        let pr: Value = crab
            .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
            .await
            .map_err(|e| api_error(e, "the pull request"))?;
        let new_head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
        if !new_head.is_empty() && new_head != head {
            let commit: Value = crab
                .get(format!("/repos/{repo}/git/commits/{new_head}"), None::<&()>)
                .await
                .map_err(|e| api_error(e, "the updated branch's commit"))?;
            let parents: Vec<&str> = commit["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["sha"].as_str())
                .collect();
            // GitHub's own merge: signed (verified), selfheal's head then the base's.
            let base = pr["base"]["ref"].as_str().unwrap_or_default();
            let base_head: Value = crab
                .get(
                    format!(
                        "/repos/{repo}/git/ref/heads/{}",
                        super::verify::ref_path(base)
                    ),
                    None::<&()>,
                )
                .await
                .map_err(|e| api_error(e, "the base branch"))?;
            let verified = commit["verification"]["verified"] == true;
            if parents.len() != 2
                || parents[0] != head
                || base_head["object"]["sha"].as_str() != Some(parents[1])
                || !verified
            {
                return Ok(format!(
                    "PR #{number} was behind its base; after update-branch its head {} is not GitHub's signed merge of the base onto selfheal's {}: left for review",
                    short(&new_head),
                    short(head)
                ));
            }
            ctx.pool
                .get()
                .await?
                .execute(
                    "UPDATE deliveries SET branch_updated_sha = $2, branch_updated_at = now(), merge_error = NULL, updated_at = now()
                     WHERE incident_id = $1 AND kind = 'pull_request'",
                    &[&incident_id, &new_head],
                )
                .await?;
            return Ok(format!(
                "PR #{number} was behind its base: brought up to date (merge commit {}); its CI decides",
                short(&new_head)
            ));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(format!(
        "PR #{number} was behind its base: update-branch asked, the new head did not show within 10 s; left for review"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(merged_by: serde_json::Value) -> PullState {
        serde_json::from_value(json!({
            "merged": true,
            "merge_commit_sha": "abc",
            "merged_by": merged_by,
            "user": {"login": "selfheal[bot]", "type": "Bot"},
        }))
        .unwrap()
    }

    #[test]
    fn a_merge_found_is_selfheals_only_when_its_bot_made_it() {
        let ours = state(json!({"login": "selfheal[bot]", "type": "Bot"}));
        assert_eq!(ours.merged_as("selfheal:policy").actor, "selfheal:policy");
        let person = state(json!({"login": "alice", "type": "User"}));
        assert_eq!(person.merged_as("selfheal:policy").actor, "github:alice");
        // A person whose login is the bot's cannot exist; a person's account that opened the
        // PR is still a person.
        let mut opened_by_person = state(json!({"login": "mallory", "type": "User"}));
        opened_by_person.user = Some(Login {
            login: "mallory".into(),
            kind: "User".into(),
        });
        assert_eq!(
            opened_by_person.merged_as("selfheal:policy").actor,
            "github:mallory"
        );
        let nobody = state(serde_json::Value::Null);
        assert_eq!(nobody.merged_as("selfheal:policy").actor, "github:unknown");
    }
}
