//! `/selfheal retry | explain | stop | approve`: carried out only for people GitHub says have
//! write access to the repository (collaborator permission API); every command, refused or
//! done, is in the audit log with its actor.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use selfheal_shared::github::Installation;
use selfheal_shared::job::CommandJob;
use selfheal_shared::{audit, incidents};
use serde_json::{json, Value};
use tracing::Instrument;
use uuid::Uuid;

use crate::stages::repo_config::{self, RepoConfig};
use crate::stages::{api_error, comment, merge, pr_state, short, status_of, StageError};
use crate::WorkerContext;

struct Command {
    id: i64,
    installation_id: i64,
    repository_id: i64,
    repo: String,
    /// The PR (or issue) commented on; a dashboard command's is its incident's PR, if any.
    issue: Option<i32>,
    actor: String,
    command: String,
    /// From the dashboard: the role the person signed in with, and the incident they chose.
    dashboard: Option<(String, Uuid)>,
    /// How replies name the person: `@login`, or the dashboard's actor.
    who: String,
    /// A dashboard approval's fix commit, as the operator saw it.
    approved_head: Option<String>,
}

pub async fn handle(job: CommandJob, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("command", command_id = job.command_id, worker = %ctx.worker_id);
    let policy = CommandJob::retry_policy();
    let mut backoffs = policy.backoffs();
    async {
        for attempt in 1..=policy.max_attempts {
            match process(&ctx, job.command_id).await {
                Ok(()) => return Ok(()),
                Err(StageError::Permanent(e)) => {
                    finish_failed(&ctx, job.command_id, &e).await?;
                    return Ok(());
                }
                Err(e @ StageError::Gone { .. }) => {
                    finish_failed(&ctx, job.command_id, &e.to_string()).await?;
                    return Ok(());
                }
                Err(StageError::Transient(e)) if attempt < policy.max_attempts => {
                    tracing::warn!(attempt, error = %e, "command attempt failed; retrying");
                    if let Some(delay) = backoffs.next() {
                        tokio::time::sleep(delay).await;
                    }
                }
                Err(StageError::Transient(e)) => {
                    finish_failed(&ctx, job.command_id, &e).await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

async fn finish_failed(ctx: &WorkerContext, id: i64, error: &str) -> Result<(), BoxDynError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "UPDATE commands SET status = 'failed', result = $2, finished_at = now() WHERE id = $1 AND status = 'queued'",
            &[&id, &error],
        )
        .await?;
    if n > 0 {
        audit::append(
            &tx,
            "selfheal:worker",
            "command.failed",
            &format!("command:{id}"),
            &json!({"error": error}),
        )
        .await?;
    }
    tx.commit().await?;
    tracing::error!(%error, "command failed");
    Ok(())
}

async fn process(ctx: &WorkerContext, id: i64) -> Result<(), StageError> {
    let mut client = ctx.pool.get().await?;
    // The row stays locked while the command runs: a duplicate job skips it, and a worker
    // that dies leaves it queued for the job's redelivery.
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT id, installation_id, repository_id, repository_full_name, issue_number, actor, command,
                    source, role, incident_id, approved_head
             FROM commands WHERE id = $1 AND status = 'queued' FOR UPDATE SKIP LOCKED",
            &[&id],
        )
        .await?
    else {
        return Ok(());
    };
    let source: String = row.get(7);
    let actor: String = row.get(5);
    let dashboard = (source == "dashboard").then(|| {
        (
            row.get::<_, Option<String>>(8).unwrap_or_default(),
            row.get::<_, Uuid>(9),
        )
    });
    let cmd = Command {
        id: row.get(0),
        installation_id: row.get(1),
        repository_id: row.get(2),
        repo: row.get(3),
        issue: row.get(4),
        // A dashboard actor's subject may look like a mention or markup: the PR names the
        // command, and the audit log names the person.
        who: match dashboard {
            Some(_) => format!(
                "An operator on selfheal's dashboard (command {})",
                row.get::<_, i64>(0)
            ),
            None => format!("@{actor}"),
        },
        actor,
        command: row.get(6),
        dashboard,
        approved_head: row.get(10),
    };
    let crab = ctx.github.installation(cmd.installation_id, &cmd.repo)?;
    // A comment's author is GitHub's to vouch for; a dashboard command's, the role web checked
    // when the person signed in (checked again here: a viewer's command does nothing).
    let (permission, actor, may_write) = match &cmd.dashboard {
        Some((role, _)) => (
            role.clone(),
            cmd.actor.clone(),
            matches!(role.as_str(), "operator" | "admin"),
        ),
        None => {
            let permission = permission(&crab, &cmd).await?;
            let may_write = matches!(permission.as_str(), "admin" | "write");
            (permission, format!("github:{}", cmd.actor), may_write)
        }
    };
    let incident = match (&cmd.dashboard, may_write, cmd.issue) {
        (_, false, _) => None,
        (Some((_, incident)), true, _) => Some(*incident),
        (None, true, Some(issue)) => find_incident(ctx, &crab, &cmd, issue).await?,
        (None, true, None) => None,
    };
    let (status, result) = match (may_write, &incident) {
        (false, _) => (
            "refused",
            format!(
                "{}: `/selfheal {}` needs write access to this repository (GitHub says: {permission}).",
                cmd.who, cmd.command
            ),
        ),
        (true, None) => (
            "failed",
            format!(
                "{}: selfheal has no incident for #{}: nothing to {}.",
                cmd.who,
                cmd.issue.unwrap_or_default(),
                cmd.command
            ),
        ),
        (true, Some(incident)) => execute(ctx, &crab, &cmd, *incident, &actor).await?,
    };
    if let Some(issue) = cmd.issue {
        comment(
            &ctx.github,
            cmd.installation_id,
            &cmd.repo,
            issue,
            &format!("command:{}", cmd.id),
            &result,
        )
        .await?;
    }
    tx.execute(
        // A dashboard command keeps the incident it named, refused or not.
        "UPDATE commands SET status = $2, permission = $3, result = $4, incident_id = coalesce($5, incident_id), finished_at = now() WHERE id = $1",
        &[&cmd.id, &status, &permission, &result, &incident],
    )
    .await?;
    audit::append(
        &tx,
        &actor,
        &format!("command.{status}"),
        &format!("command:{}", cmd.id),
        &json!({"command": cmd.command, "repository": cmd.repo, "issue": cmd.issue, "permission": permission,
                "source": if cmd.dashboard.is_some() { "dashboard" } else { "comment" }, "result": result}),
    )
    .await
    .map_err(|e| StageError::Transient(format!("audit: {e}")))?;
    tx.commit().await?;
    tracing::info!(command = %cmd.command, %status, "command handled");
    Ok(())
}

/// GitHub's word on what the commenter may do here: their base permission (`admin`, `write`, `read`).
async fn permission(crab: &Installation, cmd: &Command) -> Result<String, StageError> {
    let answer: Result<Value, _> = crab
        .get(
            format!("/repos/{}/collaborators/{}/permission", cmd.repo, cmd.actor),
            None::<&()>,
        )
        .await;
    let answer = match answer {
        Ok(a) => a,
        // Not a collaborator (or not a user GitHub knows): no access at all.
        Err(e) if status_of(&e) == Some(404) => return Ok("none".into()),
        Err(e) => return Err(api_error(e, "the commenter's permission")),
    };
    // `permission` is the base role (admin, write, read, none): what access the person has.
    // `role_name` is a role's name, which an organisation's custom roles choose freely.
    Ok(answer["permission"].as_str().unwrap_or("none").to_string())
}

/// The incident a comment is about: selfheal's own PR, or else the PR whose branch is failing.
async fn find_incident(
    ctx: &WorkerContext,
    crab: &Installation,
    cmd: &Command,
    issue: i32,
) -> Result<Option<Uuid>, StageError> {
    let client = ctx.pool.get().await?;
    if let Some(row) = client
        .query_opt(
            "SELECT d.incident_id FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE d.kind = 'pull_request' AND d.pr_number = $1 AND i.repository_id = $2",
            &[&issue, &cmd.repository_id],
        )
        .await?
    {
        return Ok(Some(row.get(0)));
    }
    let pr: Result<Value, _> = crab
        .get(format!("/repos/{}/pulls/{issue}", cmd.repo), None::<&()>)
        .await;
    let Ok(pr) = pr else {
        return Ok(None);
    };
    let Some(branch) = pr["head"]["ref"].as_str() else {
        return Ok(None);
    };
    // A fork's pull request whose branch has the same name is not the repository's branch.
    if pr["head"]["repo"]["id"].as_i64() != Some(cmd.repository_id) {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "SELECT id FROM incidents WHERE repository_id = $1 AND head_repository_id = $1
               AND branch = $2 AND status = 'open'
             ORDER BY opened_at DESC LIMIT 1",
            &[&cmd.repository_id, &branch],
        )
        .await?
        .map(|r| r.get(0)))
}

async fn execute(
    ctx: &WorkerContext,
    crab: &Installation,
    cmd: &Command,
    incident: Uuid,
    actor: &str,
) -> Result<(&'static str, String), StageError> {
    // Not the locked `commands` row: this connection is not the one holding its lock.
    let client = ctx.pool.get().await?;
    // Dry run holds for people's commands too: nothing that writes code or reruns CI.
    let config = if matches!(cmd.command.as_str(), "retry" | "approve") {
        let config = repo_config::load(ctx, crab, &cmd.repo).await?;
        if let Some(why) = dry_run(ctx, &config) {
            return Ok((
                "refused",
                format!(
                    "{}: selfheal runs in dry-run mode here ({why}): `/selfheal {}` would write to this repository, so it does nothing.",
                    cmd.who, cmd.command
                ),
            ));
        }
        config.ok()
    } else {
        None
    };
    let done = |text: String| Ok(("done", text));
    match cmd.command.as_str() {
        "stop" => {
            incidents::stop(
                &client,
                incident,
                actor,
                &format!("/selfheal stop by {}", cmd.who),
                json!({"command": cmd.id}),
            )
            .await?;
            done(format!(
                "selfheal stopped on this incident at {}'s request: it will not push, rerun or merge anything more for it. `/selfheal retry` resumes.",
                cmd.who
            ))
        }
        "retry" => {
            client
                .execute(
                    "UPDATE incidents SET stopped_at = NULL, stopped_by = NULL, stopped_reason = NULL WHERE id = $1",
                    &[&incident],
                )
                .await?;
            let latest = client
                .query_opt(
                    "SELECT github_run_id FROM runs WHERE incident_id = $1 AND conclusion <> 'success'
                     ORDER BY created_at DESC LIMIT 1",
                    &[&incident],
                )
                .await?;
            let Some(latest) = latest else {
                return done("nothing to retry: no failed run recorded".into());
            };
            let run_id: i64 = latest.get(0);
            // A new attempt of the failed run comes back as a webhook and is healed afresh.
            let _: Value = crab
                .post(
                    format!(
                        "/repos/{}/actions/runs/{run_id}/rerun-failed-jobs",
                        cmd.repo
                    ),
                    None::<&()>,
                )
                .await
                .map_err(|e| api_error(e, "rerun-failed-jobs"))?;
            done(format!(
                "selfheal will try again: it asked GitHub to rerun the failed jobs of run {run_id}, and heals what fails."
            ))
        }
        "approve" => {
            // A config that did not load made `dry_run` refuse above.
            let config = config.unwrap_or_default();
            approve(ctx, crab, cmd, incident, actor, &config).await
        }
        _ => done(explain(ctx, incident).await?),
    }
}

/// Why selfheal is in dry-run mode for this repository, if it is.
fn dry_run(ctx: &WorkerContext, config: &Result<RepoConfig, String>) -> Option<String> {
    if ctx.dry_run {
        return Some("SELFHEAL_DRY_RUN".into());
    }
    match config {
        Ok(config) if config.dry_run => Some(repo_config::PATH.into()),
        Ok(_) => None,
        // A broken config allows nothing: treat it like a dry run, and say why.
        Err(problem) => Some(format!("{} is invalid: {problem}", repo_config::PATH)),
    }
}

/// A person's approval merges selfheal's own last commit, as it stands when the command is
/// carried out, and nothing else: not a commit someone pushed onto the branch since, not a
/// change to a protected path, not while a check is red or running. The merge names the head
/// it checked, so a push in between makes GitHub refuse it (409).
async fn approve(
    ctx: &WorkerContext,
    crab: &Installation,
    cmd: &Command,
    incident: Uuid,
    actor: &str,
    config: &RepoConfig,
) -> Result<(&'static str, String), StageError> {
    let client = ctx.pool.get().await?;
    let refuse = |why: String| Ok(("refused", format!("{}: not merged: {why}.", cmd.who)));
    let Some(number) = client
        .query_opt(
            "SELECT pr_number FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident],
        )
        .await?
        .and_then(|r| r.get::<_, Option<i32>>(0))
    else {
        return refuse("selfheal has no pull request for this incident".into());
    };
    let pr: Value = crab
        .get(format!("/repos/{}/pulls/{number}", cmd.repo), None::<&()>)
        .await
        .map_err(|e| api_error(e, "the pull request"))?;
    let head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
    // An approval covers what its author could see: not an attempt selfheal pushed after it.
    let newer = client
        .query_opt(
            "SELECT a.commit_sha FROM fix_attempts a, commands c
             WHERE a.incident_id = $1 AND c.id = $2
               AND a.pushed_at > coalesce(c.comment_created_at, c.created_at)
             ORDER BY a.attempt DESC LIMIT 1",
            &[&incident, &cmd.id],
        )
        .await?;
    if let Some(row) = newer {
        let sha: String = row.get(0);
        return refuse(format!(
            "selfheal pushed {} after this approval was written; approve again once you have looked at it",
            short(&sha)
        ));
    }
    let ours = pr_state::last_pushed(&**client, incident).await?;
    if let Some(seen) = cmd
        .approved_head
        .as_deref()
        .filter(|seen| ours.as_deref() != Some(*seen))
    {
        return refuse(format!(
            "the approval was for {}, but selfheal's fix is now {}; look at it and approve again",
            short(seen),
            ours.as_deref().map_or("none", short)
        ));
    }
    if ours.as_deref() != Some(head.as_str()) {
        return refuse(format!(
            "PR #{number}'s head {} is not the commit selfheal pushed ({}); someone pushed to the branch since, so review and merge it yourself",
            short(&head),
            ours.as_deref().map_or("none", short)
        ));
    }
    let checks = pr_state::checks_on(crab, &cmd.repo, &head).await?;
    if !checks.green() {
        let mut waiting: Vec<String> = checks.running_workflows.clone();
        waiting.extend(checks.pending().into_iter().map(str::to_string));
        let failed = checks.failed();
        return refuse(if !failed.is_empty() {
            format!("checks failed on {}: {}", short(&head), failed.join(", "))
        } else if !waiting.is_empty() {
            format!("checks still running: {}", waiting.join(", "))
        } else {
            "no checks reported on the fix".into()
        });
    }
    let files = pr_state::pr_files(crab, &cmd.repo, number).await?;
    for path in pr_state::touched_paths(&files) {
        if let Some(p) = config.protected_by(&path) {
            return refuse(format!(
                "the pull request touches {path}, under protected path {p}; selfheal never merges that"
            ));
        }
    }
    let detail = merge::merge_incident(
        ctx,
        cmd.installation_id,
        &cmd.repo,
        incident,
        Some(&head),
        actor,
    )
    .await?;
    Ok(("done", format!("{} approved: {detail}.", cmd.who)))
}

/// What selfheal knows and did about the incident, from its own records.
async fn explain(ctx: &WorkerContext, incident: Uuid) -> Result<String, StageError> {
    let client = ctx.pool.get().await?;
    let i = client
        .query_one(
            "SELECT branch, status, failed_runs, stopped_reason FROM incidents WHERE id = $1",
            &[&incident],
        )
        .await?;
    let mut out = format!(
        "**selfheal on `{}`**: incident {}, {} failed run(s){}.\n",
        i.get::<_, String>(0),
        i.get::<_, String>(1),
        i.get::<_, i32>(2),
        i.get::<_, Option<String>>(3)
            .map(|r| format!(", stopped ({r})"))
            .unwrap_or_default()
    );
    let runs = client
        .query(
            "SELECT r.github_run_id, r.status, coalesce(r.fix_branch, ''), d.class, d.tool, p.strategy, p.verdict, v.verdict, v.reason
             FROM runs r LEFT JOIN diagnoses d ON d.run_id = r.id LEFT JOIN patches p ON p.run_id = r.id
             LEFT JOIN verifications v ON v.run_id = r.id
             WHERE r.incident_id = $1 ORDER BY r.created_at",
            &[&incident],
        )
        .await?;
    for r in &runs {
        let fix = if r.get::<_, String>(2).is_empty() {
            ""
        } else {
            " (the fix's CI)"
        };
        out.push_str(&format!(
            "- run {}{fix}: {}; diagnosis {} ({}); patch `{}` → {}; verify: {} {}\n",
            r.get::<_, i64>(0),
            r.get::<_, String>(1),
            r.get::<_, Option<String>>(3).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<String>>(4).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<String>>(5).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<String>>(6).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<String>>(7).unwrap_or_else(|| "-".into()),
            r.get::<_, Option<String>>(8).unwrap_or_default(),
        ));
    }
    if let Some(d) = client
        .query_opt(
            "SELECT pr_number, merge_decision, merge_reasons, decided_by, merged_at IS NOT NULL, merge_error
             FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&incident],
        )
        .await?
    {
        out.push_str(&format!(
            "\nPR #{}: merge {} by {}{}{}{}\n",
            d.get::<_, Option<i32>>(0).unwrap_or_default(),
            d.get::<_, Option<String>>(1).unwrap_or_else(|| "not decided yet".into()),
            d.get::<_, Option<String>>(3).unwrap_or_else(|| "-".into()),
            d.get::<_, Option<Value>>(2)
                .and_then(|v| v.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")))
                .filter(|s| !s.is_empty())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            if d.get::<_, bool>(4) { "; merged" } else { "" },
            d.get::<_, Option<String>>(5).map(|e| format!("; {e}")).unwrap_or_default(),
        ));
    }
    Ok(out)
}
