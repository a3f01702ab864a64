//! Deliver stage: a validated fix becomes a commit made through the Git Data API (blobs ->
//! tree -> commit -> ref, so GitHub signs it) and a pull request; a flaky or infrastructure
//! failure gets its failed jobs rerun instead. Every step is recorded before the next, so a
//! worker that dies between ref and PR resumes, and an incident never gets two PRs.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use octocrab::Octocrab;
use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::checkout::checkout;
use super::download::api_error;
use super::verify::{self, Verdict};
use super::{merge, repo_config, StageError, StageReport};
use crate::WorkerContext;

/// Reruns per incident before selfheal stops asking GitHub for another.
const MAX_RERUNS: i64 = 2;

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let Some((verdict, reason)) = verify::recorded(ctx, run).await? else {
        return Ok(skipped("nothing delivered: verify recorded no decision"));
    };
    match verdict {
        Verdict::Skip | Verdict::Stop | Verdict::Wait => {
            Ok(skipped(&format!("nothing delivered: {reason}")))
        }
        Verdict::Hold => Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("left for review: {reason}"),
        }),
        Verdict::Merge => merge::merge(ctx, run, "selfheal:policy").await,
        Verdict::DryRun => dry_run_report(ctx, run, &reason).await,
        Verdict::Deliver => deliver_fix(ctx, run).await,
    }
}

async fn deliver_fix(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let row = ctx
        .pool
        .get()
        .await?
        .query_one(
            "SELECT verdict, strategy, class, diff, evidence FROM patches WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let verdict: String = row.get(0);
    let strategy: String = row.get(1);
    let class: String = row.get(2);
    let diff: Option<String> = row.get(3);
    let diff = diff.as_deref().unwrap_or_default();
    match (verdict.as_str(), run.fix_branch.is_some()) {
        ("flaky" | "rerun", _) => rerun(ctx, run).await,
        (_, true) => push_attempt(ctx, run, &strategy, &class, diff).await,
        (_, false) => pull_request(ctx, run, &strategy, &class, diff, &row.get(4)).await,
    }
}

/// Dry run: what selfheal found and would do goes on the failing commit as a neutral check
/// run (visible on the commit and its PR); nothing is pushed, rerun or merged.
async fn dry_run_report(
    ctx: &WorkerContext,
    run: &Run,
    reason: &str,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let p = client
        .query_one(
            "SELECT strategy, class, diff, evidence FROM patches WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let evidence: Value = p.get(3);
    let diff: Option<String> = p.get(2);
    let summary = format!(
        "selfheal diagnosed a **{}** failure and proved a `{}` fix in its sandbox (the command \
         failed {} of {} runs before). It {}; this repository runs selfheal in dry-run mode, so \
         nothing was pushed.",
        p.get::<_, String>(1),
        p.get::<_, String>(0),
        evidence["failed"],
        evidence["runs"],
        reason.split_once(": ").map(|(_, w)| w).unwrap_or(reason),
    );
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let _: Value = crab
        .post(
            format!("/repos/{}/check-runs", run.repository_full_name),
            Some(&json!({
                "name": "selfheal (dry run)",
                "head_sha": run.head_sha,
                "status": "completed",
                "conclusion": "neutral",
                "output": {
                    "title": "selfheal would fix this failure",
                    "summary": summary,
                    "text": diff.map(|d| format!("```diff\n{d}\n```")).unwrap_or_default(),
                },
            })),
        )
        .await
        .map_err(|e| api_error(e, "reporting the dry run as a check run"))?;
    Ok(skipped(&format!(
        "{reason}; nothing pushed, reported as a neutral `selfheal (dry run)` check run"
    )))
}

/// The fix's own CI failed and verify allowed another attempt: a commit on top of the fix's
/// branch (fast-forward only), and a comment on the PR saying what changed.
async fn push_attempt(
    ctx: &WorkerContext,
    run: &Run,
    strategy: &str,
    class: &str,
    diff: &str,
) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    client
        .execute(
            "INSERT INTO fix_attempts (run_id, incident_id, attempt, strategy)
             SELECT $1, $2, coalesce(max(attempt), 0) + 1, $3 FROM fix_attempts WHERE incident_id = $2
             ON CONFLICT (run_id) DO NOTHING",
            &[&run.id, &run.incident_id, &strategy],
        )
        .await?;
    let a = client
        .query_one(
            "SELECT a.attempt, a.commit_sha, a.pushed_at IS NOT NULL, d.branch, d.pr_number
             FROM fix_attempts a JOIN deliveries d ON d.incident_id = a.incident_id AND d.kind = 'pull_request'
             WHERE a.run_id = $1",
            &[&run.id],
        )
        .await?;
    let attempt: i32 = a.get(0);
    let branch: String = a.get(3);
    let pr: Option<i32> = a.get(4);
    if a.get::<_, bool>(2) {
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("attempt {attempt} already pushed to {branch}"),
        });
    }
    let repo = &run.repository_full_name;
    let crab = ctx.github.installation(run.installation_id, repo)?;
    let commit = match a.get::<_, Option<String>>(1) {
        Some(sha) => sha,
        None => {
            let sha = make_commit(
                ctx,
                &crab,
                run,
                diff,
                &format!(
                    "selfheal: fix {class} failure of the fix ({strategy}), attempt {attempt}"
                ),
            )
            .await?;
            client
                .execute(
                    "UPDATE fix_attempts SET commit_sha = $2 WHERE run_id = $1",
                    &[&run.id, &sha],
                )
                .await?;
            sha
        }
    };
    let updated: Result<Value, _> = crab
        .patch(
            format!("/repos/{repo}/git/refs/heads/{branch}"),
            Some(&json!({"sha": commit, "force": false})),
        )
        .await;
    if let Err(e) = updated {
        // Pushed before a crash: fine if the branch is at our commit.
        let current: Value = crab
            .get(format!("/repos/{repo}/git/ref/heads/{branch}"), None::<&()>)
            .await
            .map_err(|e| api_error(e, "the fix's branch"))?;
        if current["object"]["sha"] != commit.as_str() {
            return Err(api_error(e, "pushing the attempt onto the fix's branch"));
        }
    }
    client
        .execute(
            "UPDATE fix_attempts SET pushed_at = now() WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    if let Some(n) = pr {
        let body = format!(
            "The fix's CI failed (run {}, **{class}**). selfheal pushed attempt {attempt}: \
             `{strategy}`, commit {}, validated in its sandbox.",
            run.github_run_id,
            &commit[..commit.len().min(7)]
        );
        let _: Value = crab
            .post(
                format!("/repos/{repo}/issues/{n}/comments"),
                Some(&json!({ "body": body })),
            )
            .await
            .map_err(|e| api_error(e, "commenting on the pull request"))?;
    }
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "pushed attempt {attempt} onto {branch} (commit {}, signed by GitHub)",
            &commit[..commit.len().min(7)]
        ),
    })
}

fn skipped(detail: &str) -> StageReport {
    StageReport {
        outcome: Outcome::Skipped,
        detail: detail.to_string(),
    }
}

fn status_of(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

async fn rerun(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM deliveries WHERE incident_id = $1 AND kind = 'rerun'",
            &[&run.incident_id],
        )
        .await?
        .get(0);
    let mine = client
        .query_opt(
            "SELECT 1 FROM deliveries WHERE run_id = $1 AND kind = 'rerun'",
            &[&run.id],
        )
        .await?;
    if mine.is_some() {
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: "failed jobs already rerun".into(),
        });
    }
    if done >= MAX_RERUNS {
        return Ok(skipped(&format!(
            "rerun limit reached ({MAX_RERUNS} per incident): not rerunning again"
        )));
    }
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let _: Value = crab
        .post(
            format!(
                "/repos/{}/actions/runs/{}/rerun-failed-jobs",
                run.repository_full_name, run.github_run_id
            ),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "rerun-failed-jobs"))?;
    client
        .execute(
            "INSERT INTO deliveries (run_id, incident_id, kind) VALUES ($1, $2, 'rerun') ON CONFLICT (run_id, kind) DO NOTHING",
            &[&run.id, &run.incident_id],
        )
        .await?;
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "reran the failed jobs of run {} ({} of {MAX_RERUNS} for this incident)",
            run.github_run_id,
            done + 1
        ),
    })
}

struct Delivery {
    branch: String,
    commit_sha: Option<String>,
    ref_created: bool,
    pr_number: Option<i32>,
    pr_url: Option<String>,
}

async fn pull_request(
    ctx: &WorkerContext,
    run: &Run,
    strategy: &str,
    class: &str,
    diff: &str,
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
        &run.head_sha[..run.head_sha.len().min(7)]
    );
    // The idempotency key is the incident: a second run of the same incident finds the PR.
    client
        .execute(
            "INSERT INTO deliveries (run_id, incident_id, kind, branch) VALUES ($1, $2, 'pull_request', $3)
             ON CONFLICT (incident_id) WHERE kind = 'pull_request' DO NOTHING",
            &[&run.id, &run.incident_id, &branch],
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
        return Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: format!("PR #{n} already open for this incident"),
        });
    }
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    let repo = &run.repository_full_name;

    if d.commit_sha.is_none() {
        let sha = make_commit(
            ctx,
            &crab,
            run,
            diff,
            &format!("selfheal: fix {class} failure ({strategy})"),
        )
        .await?;
        client
            .execute(
                "UPDATE deliveries SET commit_sha = $2, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
                &[&run.incident_id, &sha],
            )
            .await?;
        d.commit_sha = Some(sha);
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
    client
        .execute(
            "UPDATE deliveries SET pr_number = $2, pr_url = $3, updated_at = now() WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id, &d.pr_number, &d.pr_url],
        )
        .await?;
    Ok(StageReport {
        outcome: Outcome::Succeeded,
        detail: format!(
            "opened PR #{} from {} (commit {}, signed by GitHub)",
            d.pr_number.unwrap_or_default(),
            d.branch,
            &commit[..commit.len().min(7)]
        ),
    })
}

/// Logins are asked as people, `org/team` as a team. GitHub refuses (422) a reviewer who
/// is not a collaborator; that must not block the fix, so it is logged, not failed on.
async fn request_reviewers(
    crab: &Octocrab,
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
            tracing::warn!(error = %e, "GitHub refused the reviewers from the config");
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
            Some(l) => format!("`{f}:{l}`"),
            None => format!("`{f}`"),
        });
    Ok(format!(
        "CI run {run_id} failed: **{class}** ({tool}){at}.\n\n\
         ### Evidence (selfheal's sandbox, no network)\n\
         - before: `{cmd}` failed {failed} of {runs} runs\n\
         - after: {after}\n\n\
         ### Strategy\n`{strategy}`: the project's own tool made this change; nothing else was touched, and no test was deleted or skipped.\n\n\
         <details><summary>Log excerpt</summary>\n\n```\n{excerpt}\n```\n</details>\n\n\
         Fingerprint `{fp}`. Comment `/selfheal stop` to stop selfheal on this incident.\n",
        run_id = run.github_run_id,
        tool = d.get::<_, Option<String>>(0).unwrap_or_default(),
        at = culprit.map(|c| format!(" at {c}")).unwrap_or_default(),
        cmd = d.get::<_, Option<String>>(3).unwrap_or_default(),
        failed = evidence["failed"],
        runs = evidence["runs"],
        excerpt = d.get::<_, String>(4),
        fp = d.get::<_, String>(5),
    ))
}

/// Applies the diff to the files at the failing SHA (diffy, in memory) and writes the result
/// through the Git Data API: a blob per changed file, a tree on the commit's tree, a commit.
async fn make_commit(
    ctx: &WorkerContext,
    crab: &Octocrab,
    run: &Run,
    diff: &str,
    message: &str,
) -> Result<String, StageError> {
    let repo = &run.repository_full_name;
    let work = checkout(ctx, run).await?;
    let changes = apply_in_memory(work.path(), diff)?;
    let head: Value = crab
        .get(
            format!("/repos/{repo}/git/commits/{}", run.head_sha),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the failing commit"))?;
    let base_tree = head["tree"]["sha"].as_str().unwrap_or_default().to_string();
    let mut entries = Vec::new();
    for (path, change) in changes {
        match change {
            Some((content, mode)) => {
                let blob: Value = crab
                    .post(
                        format!("/repos/{repo}/git/blobs"),
                        Some(&json!({"content": base64::engine::general_purpose::STANDARD.encode(content), "encoding": "base64"})),
                    )
                    .await
                    .map_err(|e| api_error(e, "creating a blob"))?;
                entries
                    .push(json!({"path": path, "mode": mode, "type": "blob", "sha": blob["sha"]}));
            }
            None => {
                entries.push(json!({"path": path, "mode": "100644", "type": "blob", "sha": null}))
            }
        }
    }
    let tree: Value = crab
        .post(
            format!("/repos/{repo}/git/trees"),
            Some(&json!({"base_tree": base_tree, "tree": entries})),
        )
        .await
        .map_err(|e| api_error(e, "creating the tree"))?;
    // No author or committer: GitHub then signs the commit as the app and marks it verified.
    let commit: Value = crab
        .post(
            format!("/repos/{repo}/git/commits"),
            Some(&json!({"message": message, "tree": tree["sha"], "parents": [run.head_sha]})),
        )
        .await
        .map_err(|e| api_error(e, "creating the commit"))?;
    commit["sha"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| StageError::Transient("commit without a sha".into()))
}

/// Path -> new (content, mode), or None for a deleted file.
type Changes = BTreeMap<String, Option<(Vec<u8>, &'static str)>>;

/// Applies a multi-file unified diff with diffy. Renames and binary changes are refused with
/// the reason: deterministic strategies do not make them.
pub fn apply_in_memory(root: &Path, diff: &str) -> Result<Changes, StageError> {
    let mut out = Changes::new();
    for section in diff.split("diff --git ").filter(|s| !s.trim().is_empty()) {
        let body = match section.find("\n--- ") {
            Some(i) => &section[i + 1..],
            None => {
                return Err(StageError::Permanent(format!(
                    "cannot deliver a change without a text diff: {}",
                    section.lines().next().unwrap_or_default()
                )))
            }
        };
        let patch = diffy::Patch::from_str(body)
            .map_err(|e| StageError::Permanent(format!("unreadable patch: {e}")))?;
        let target = patch
            .modified()
            .map(|p| p.trim_start_matches("b/").to_string());
        let source = patch
            .original()
            .map(|p| p.trim_start_matches("a/").to_string());
        match (source.as_deref(), target.as_deref()) {
            (Some(_), Some("/dev/null")) | (Some(_), None) => {
                out.insert(source.unwrap_or_default(), None);
            }
            (src, Some(path)) => {
                let original = match src {
                    Some("/dev/null") | None => String::new(),
                    Some(p) => std::fs::read_to_string(root.join(p))
                        .map_err(|e| StageError::Permanent(format!("{p}: {e}")))?,
                };
                let patched = diffy::apply(&original, &patch).map_err(|e| {
                    StageError::Permanent(format!("patch does not apply to {path}: {e}"))
                })?;
                let executable = file_is_executable(&root.join(path));
                out.insert(
                    path.to_string(),
                    Some((
                        patched.into_bytes(),
                        if executable { "100755" } else { "100644" },
                    )),
                );
            }
            _ => return Err(StageError::Permanent("patch names no file".into())),
        }
    }
    Ok(out)
}

fn file_is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::apply_in_memory;

    #[test]
    fn applies_a_git_diff_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn a(){}\nfn b() {}\n").unwrap();
        let diff = "diff --git a/src/lib.rs b/src/lib.rs\nindex 1..2 100644\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,2 @@\n-fn a(){}\n+fn a() {}\n fn b() {}\n";
        let changes = apply_in_memory(dir.path(), diff).unwrap();
        let (content, mode) = changes["src/lib.rs"].clone().unwrap();
        assert_eq!(
            String::from_utf8(content).unwrap(),
            "fn a() {}\nfn b() {}\n"
        );
        assert_eq!(mode, "100644");
        let bad = diff.replace("-fn a(){}", "-fn z(){}");
        assert!(apply_in_memory(dir.path(), &bad)
            .unwrap_err()
            .to_string()
            .contains("does not apply"));
    }
}
