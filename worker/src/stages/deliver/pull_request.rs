//! The fix's first delivery: commit, branch, pull request (body, labels, reviewers).

use selfheal_shared::github::Installation;
use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::commit::make_commit;
use super::markdown;
use crate::changes::ChangeSet;
use crate::stages::download::{api_error, status_of};
use crate::stages::{merge, pr_state, repo_config, verify};
use crate::stages::{short, StageError, StageReport};
use crate::WorkerContext;

struct Delivery {
    branch: String,
    commit_sha: Option<String>,
    ref_created: bool,
    pr_number: Option<i32>,
    pr_url: Option<String>,
}

pub async fn open(
    ctx: &WorkerContext,
    run: &Run,
    strategy: &str,
    class: &str,
    changes: &ChangeSet,
    evidence: &Value,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let incident = client
        .query_one(
            "SELECT branch FROM incidents WHERE id = $1",
            &[&run.incident_id],
        )
        .await?;
    let base: String = incident.get(0);
    let branch = format!(
        "selfheal/{}-{}",
        &run.incident_id.simple().to_string()[..8],
        short(&run.head_sha)
    );
    // The idempotency key is the incident: a second run of the same incident finds the PR.
    client
        .execute(
            "INSERT INTO deliveries (run_id, incident_id, kind, branch, based_on) VALUES ($1, $2, 'pull_request', $3, $4)
             ON CONFLICT (incident_id) WHERE kind = 'pull_request' DO NOTHING",
            &[&run.id, &run.incident_id, &branch, &run.head_sha],
        )
        .await?;
    let row = client
        .query_one(
            "SELECT branch, commit_sha, ref_created, pr_number, pr_url FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id],
        )
        .await?;
    let mut d = Delivery {
        branch: row.get(0),
        commit_sha: row.get(1),
        ref_created: row.get(2),
        pr_number: row.get(3),
        pr_url: row.get(4),
    };
    if let Some(n) = d.pr_number {
        // Recorded before a crash: what the fix's CI said meanwhile may still be waiting.
        let pushed = pr_state::last_pushed(&**client, run.incident_id).await?;
        drop(client);
        let mut detail = format!("PR #{n} already open for this incident");
        if let Some(pushed) = pushed {
            if let Some(done) = verify::take_up_early_ci(ctx, run.incident_id, &pushed).await? {
                detail = format!("{detail}; {done}");
            }
        }
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail,
        });
    }
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let repo = &run.repository_full_name;

    if d.commit_sha.is_none() {
        let sha = make_commit(
            &crab,
            run,
            changes,
            &format!("selfheal: fix {class} failure ({strategy})"),
        )
        .await?;
        // Two runs of one incident (a failed run and a person's rerun of it) can deliver at
        // once and both make a commit: the first recorded is the fix's, the other is left
        // dangling (unreferenced, GitHub collects it), so both carry on with one branch and
        // one PR rather than one failing on a branch that "is not selfheal's commit".
        let recorded: String = client
            .query_one(
                "UPDATE deliveries SET commit_sha = coalesce(commit_sha, $2), updated_at = now()
                 WHERE incident_id = $1 AND kind = 'pull_request' RETURNING commit_sha",
                &[&run.incident_id, &sha],
            )
            .await?
            .get(0);
        d.commit_sha = Some(recorded);
    }
    let commit = d.commit_sha.clone().unwrap_or_default();
    if !d.ref_created {
        let created: Result<Value, _> = crab
            .post(
                format!("/repos/{repo}/git/refs"),
                Some(&json!({"ref": format!("refs/heads/{}", d.branch), "sha": commit})),
            )
            .await;
        match created {
            Ok(_) => {}
            // Made before a crash: fine if it points at our commit.
            Err(e) if status_of(&e) == Some(422) => {
                let existing: Value = crab
                    .get(
                        format!("/repos/{repo}/git/ref/heads/{}", d.branch),
                        None::<&()>,
                    )
                    .await
                    .map_err(|e| api_error(e, "the existing branch"))?;
                if existing["object"]["sha"] != commit.as_str() {
                    return Err(StageError::Permanent(format!(
                        "branch {} exists and is not selfheal's commit",
                        d.branch
                    )));
                }
            }
            Err(e) => return Err(api_error(e, "creating the branch")),
        }
        client
            .execute(
                "UPDATE deliveries SET ref_created = true, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&run.incident_id],
            )
            .await?;
    }
    // The first attempt, for loop protection and the merge policy's view of the whole fix.
    client
        .execute(
            "INSERT INTO fix_attempts (run_id, incident_id, attempt, strategy, commit_sha, pushed_at)
             VALUES ($1, $2, 1, $3, $4, now()) ON CONFLICT DO NOTHING",
            &[&run.id, &run.incident_id, &strategy, &commit],
        )
        .await?;
    let owner = repo.split('/').next().unwrap_or_default();
    let body = pr_body(ctx, run, strategy, class, evidence).await?;
    let opened: Result<Value, _> = crab
        .post(
            format!("/repos/{repo}/pulls"),
            Some(&json!({"title": format!("selfheal: fix the {class} failure on {base}"), "head": d.branch, "base": base, "body": body})),
        )
        .await;
    let pr = match opened {
        Ok(pr) => pr,
        // "A pull request already exists": opened before a crash; adopt it.
        Err(e) if status_of(&e) == Some(422) => {
            let list: Vec<Value> = crab
                .get(
                    format!("/repos/{repo}/pulls"),
                    Some(&[
                        ("head", format!("{owner}:{}", d.branch)),
                        ("state", "open".into()),
                    ]),
                )
                .await
                .map_err(|e| api_error(e, "listing pull requests"))?;
            list.into_iter()
                .next()
                .ok_or_else(|| api_error(e, "opening the pull request"))?
        }
        Err(e) => return Err(api_error(e, "opening the pull request")),
    };
    d.pr_number = pr["number"].as_i64().map(|n| n as i32);
    // Labels say what kind of fix this is; adding them again is harmless.
    let labels =
        json!({"labels": ["selfheal", format!("class:{class}"), format!("strategy:{strategy}")]});
    let _: Value = crab
        .post(
            format!(
                "/repos/{repo}/issues/{}/labels",
                d.pr_number.unwrap_or_default()
            ),
            Some(&labels),
        )
        .await
        .map_err(|e| api_error(e, "labelling the pull request"))?;
    let reviewers = match repo_config::load(ctx, &crab, repo).await? {
        Ok(config) => config.reviewers,
        Err(_) => Vec::new(),
    };
    request_reviewers(&crab, repo, d.pr_number.unwrap_or_default(), &reviewers).await?;
    d.pr_url = pr["html_url"].as_str().map(str::to_string);
    drop(client);
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(verify::PR_RECORDED_LOCK, &[&run.incident_id.to_string()])
        .await?;
    tx.execute(
        "UPDATE deliveries SET pr_number = $2, pr_url = $3, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
        &[&run.incident_id, &d.pr_number, &d.pr_url],
    )
    .await?;
    tx.commit().await?;
    drop(client);
    let mut detail = format!(
        "opened PR #{} from {} (commit {}, signed by GitHub)",
        d.pr_number.unwrap_or_default(),
        d.branch,
        short(&commit)
    );
    // The head now: a further attempt may have been pushed before the PR was (its fix's CI
    // failing first).
    let pushed = pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id)
        .await?
        .unwrap_or(commit.clone());
    if let Some(done) = verify::take_up_early_ci(ctx, run.incident_id, &pushed).await? {
        detail = format!("{detail}; {done}");
    }
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail,
    })
}

/// Logins are asked as people, `org/team` as a team. GitHub refuses (422) a reviewer who
/// is not a collaborator; that must not block the fix, so it is logged, not failed on.
async fn request_reviewers(
    crab: &Installation,
    repo: &str,
    number: i32,
    reviewers: &[String],
) -> Result<(), StageError> {
    if reviewers.is_empty() {
        return Ok(());
    }
    let (teams, people): (Vec<&String>, Vec<&String>) =
        reviewers.iter().partition(|r| r.contains('/'));
    let teams: Vec<&str> = teams.iter().filter_map(|t| t.split('/').nth(1)).collect();
    let asked: Result<Value, _> = crab
        .post(
            format!("/repos/{repo}/pulls/{number}/requested_reviewers"),
            Some(&json!({"reviewers": people, "team_reviewers": teams})),
        )
        .await;
    match asked {
        Ok(_) => Ok(()),
        Err(e) if status_of(&e) == Some(422) => {
            tracing::warn!(error = %selfheal_shared::cause::Chain(&e), "GitHub refused the reviewers from the config");
            Ok(())
        }
        Err(e) => Err(api_error(e, "requesting reviewers")),
    }
}

async fn pr_body(
    ctx: &WorkerContext,
    run: &Run,
    strategy: &str,
    class: &str,
    evidence: &Value,
) -> Result<String, StageError> {
    let client = ctx.pool.get().await?;
    let d = client
        .query_one("SELECT tool, culprit_file, culprit_line, command, excerpt, fingerprint FROM diagnoses WHERE run_id = $1", &[&run.id])
        .await?;
    let v = client
        .query_opt(
            "SELECT passed, runs, duration_ms FROM validations WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let after = v
        .map(|v| {
            format!(
                "{} of {} runs pass after the patch ({} ms)",
                v.get::<_, i32>(0),
                v.get::<_, i32>(1),
                v.get::<_, i64>(2)
            )
        })
        .unwrap_or_default();
    let culprit = d
        .get::<_, Option<String>>(1)
        .map(|f| match d.get::<_, Option<i32>>(2) {
            Some(l) => markdown::code(&format!("{f}:{l}")),
            None => markdown::code(&f),
        });
    // What the sandbox could not do as the CI did (toolchain versions): the repository's
    // words inside, so inert code.
    let toolchain = &evidence["toolchain"];
    let mut differs = String::new();
    if let (Some(language), Some(version)) = (
        toolchain["language"].as_str(),
        toolchain["version"].as_str(),
    ) {
        differs.push_str(&format!(
            "- toolchain: {}\n",
            markdown::code(&format!("{language} {version}"))
        ));
    }
    for note in toolchain["notes"].as_array().into_iter().flatten() {
        if let Some(note) = note.as_str() {
            differs.push_str(&format!(
                "- differs from the CI: {}\n",
                markdown::code(note)
            ));
        }
    }
    // Who made the change: the project's own tool, or a model, whose words (its root cause)
    // are untrusted text and shown as code.
    let replayed = evidence["memory"]["used"] == "replayed";
    let reverted = &evidence["culprit"]["culprit"];
    let how = match evidence["ai"]["model"].as_str() {
        _ if reverted.is_object() => {
            let sha = reverted["sha"].as_str().unwrap_or_default();
            let tried: Vec<String> = evidence["culprit"]["tried"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let short = |key: &str| -> String {
                        t[key].as_str().unwrap_or_default().chars().take(7).collect()
                    };
                    // A bisection step reverted the newest commits together.
                    let what = match (t["commits"].as_u64(), t["oldest"].as_str()) {
                        (Some(n), Some(_)) => format!(
                            "the newest {n} together, {} back to {}",
                            markdown::code(&short("sha")),
                            markdown::code(&short("oldest"))
                        ),
                        (Some(n), None) => format!(
                            "the newest {n} together, from {}",
                            markdown::code(&short("sha"))
                        ),
                        (None, _) => markdown::code(&short("sha")),
                    };
                    format!(
                        "- {what}: {}",
                        markdown::code(t["outcome"].as_str().unwrap_or_default())
                    )
                })
                .collect();
            format!(
                "this reverts {}, {} by {}, the commit since the workflow's last green run without which the failing command passes in every sandbox run. Review it: the change it made is undone whole, and its author may prefer to fix it forward.\n\nReverts tried to find it, in the order tried (newest commits first, then bisecting):\n{}",
                markdown::code(sha),
                markdown::code(reverted["title"].as_str().unwrap_or_default()),
                markdown::code(reverted["author"].as_str().unwrap_or_default()),
                tried.join("\n")
            )
        }
        _ if replayed => format!(
            "this failure was fixed before in {}, by a model's patch that was validated and merged there; the same patch applied here, was checked again (files that exist, no test removed or skipped, nothing under `.github/`) and validated in the sandbox. No model was asked. Review it: a model's fix is merged only where the policy allows its class.",
            markdown::code(evidence["memory"]["repository"].as_str().unwrap_or_default()),
        ),
        Some(model) => format!(
            "the model {} proposed this change; selfheal checked it (files that exist, no test removed or skipped, nothing under `.github/`) and validated it in the sandbox. Review it: a model's fix is merged only where the policy allows its class.\n- root cause, in the model's words: {}\n- confidence: {}",
            markdown::code(model),
            markdown::code(evidence["ai"]["root_cause"].as_str().unwrap_or_default()),
            evidence["ai"]["confidence"]
        ),
        None => "the project's own tool made this change; nothing else was touched, and no test was deleted or skipped.".to_string(),
    };
    Ok(format!(
        "CI run {run_id} failed: **{class}** ({tool}){at}.\n\n\
         ### Evidence (selfheal's sandbox, no network)\n\
         - before: {cmd} failed {failed} of {runs} runs\n\
         - after: {after}\n{differs}\n\
         ### Strategy\n`{strategy}`: {how}\n\n\
         <details><summary>Log excerpt</summary>\n\n{excerpt}\n</details>\n\n\
         Fingerprint `{fp}`. Comment `/selfheal stop` to stop selfheal on this incident.\n",
        run_id = run.github_run_id,
        tool = d.get::<_, Option<String>>(0).unwrap_or_default(),
        at = culprit.map(|c| format!(" at {c}")).unwrap_or_default(),
        cmd = markdown::code(&d.get::<_, Option<String>>(3).unwrap_or_default()),
        failed = evidence["failed"],
        runs = evidence["runs"],
        excerpt = markdown::fenced(&d.get::<_, String>(4)),
        fp = d.get::<_, String>(5),
    ))
}

/// Closes selfheal's PR made stale (the incident was resolved by another push): a comment
/// that says why, the PR closed, its branch deleted, recorded. A PR GitHub already shows
/// merged or closed is recorded as such and left alone.
pub async fn close_stale(
    ctx: &WorkerContext,
    run: &Run,
    reason: &str,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let Some(row) = client
        .query_opt(
            "SELECT pr_number, branch FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'
               AND merged_at IS NULL AND closed_at IS NULL",
            &[&run.incident_id],
        )
        .await?
    else {
        return Ok(StageReport {
            outcome: Outcome::Skipped,
            detail: "selfheal's PR is merged or closed already".into(),
        });
    };
    let (number, branch): (Option<i32>, String) = (row.get(0), row.get(1));
    let Some(number) = number else {
        return Ok(StageReport {
            outcome: Outcome::Skipped,
            detail: "no pull request was opened".into(),
        });
    };
    let repo = &run.repository_full_name;
    let crab = ctx.github.installation(run.installation_id, repo)?;
    let pr: Value = crab
        .get(format!("/repos/{repo}/pulls/{number}"), None::<&()>)
        .await
        .map_err(|e| api_error(e, "the stale pull request"))?;
    let mut detail = if pr["merged"] == true {
        client
            .execute(
                "UPDATE deliveries SET merged_at = now(), merge_commit_sha = $2, updated_at = now()
                 WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&run.incident_id, &pr["merge_commit_sha"].as_str()],
            )
            .await?;
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("PR #{number} was merged meanwhile"),
        });
    } else if pr["state"] == "closed" {
        format!("PR #{number} was closed already")
    } else {
        // Closed first: a retry after a failure in between finds it closed and does not
        // comment twice.
        crab.patch::<Value, _>(
            format!("/repos/{repo}/pulls/{number}"),
            Some(&json!({"state": "closed"})),
        )
        .await
        .map_err(|e| api_error(e, "closing the stale pull request"))?;
        let body = format!(
            "The failure this pull request fixes is gone: the workflow passed at {} without it, so selfheal closed this PR. Nothing else to do here.",
            short(&run.head_sha)
        );
        let key = format!("stale:{}", run.incident_id);
        if let Err(e) = crate::stages::report::comment(
            &ctx.github,
            run.installation_id,
            repo,
            number,
            &key,
            &body,
        )
        .await
        {
            tracing::warn!(error = %e, "could not say on the stale PR why it was closed");
        }
        format!("closed PR #{number}: {reason}")
    };
    // The branch goes only while it holds nothing but selfheal's own work.
    let ours =
        super::super::pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id).await?;
    let outcome = if ours.is_some() && pr["head"]["sha"].as_str() == ours.as_deref() {
        merge::delete_branch(&crab, repo, &branch).await
    } else {
        merge::BranchDeletion::Kept
    };
    merge::record_branch(ctx, run.incident_id, &outcome).await?;
    detail.push_str(&outcome.detail(&branch));
    let mut client = client;
    let tx = client.transaction().await?;
    tx.execute(
        "UPDATE deliveries SET closed_at = now(), updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
        &[&run.incident_id],
    )
    .await?;
    selfheal_shared::audit::append(
        &tx,
        "selfheal:verify",
        "pull_request.closed_stale",
        &run.incident_id.to_string(),
        &json!({"repository": repo, "pr": number, "resolved_by": run.head_sha}),
    )
    .await
    .map_err(|e| StageError::Transient(format!("audit: {e}")))?;
    tx.commit().await?;
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail,
    })
}
