//! The invariants and the proofs on a validated fix, before deliver writes anything (engine/src/invariants,
//! policies/invariants.rego): a fix that breaks one is not delivered. The denials are kept in
//! `invariant_denials` and the audit log, and said where people look: on the fix's pull
//! request when there is one, else as a failed `selfheal invariants` check run on the failing
//! commit.

use selfheal_engine::invariants::{
    self, Change, Denial, RepositoryPolicy, REPOSITORY_DIR, REPOSITORY_MAX_BYTES,
    REPOSITORY_MAX_FILES,
};
use selfheal_shared::audit;
use selfheal_shared::github::Installation;
use selfheal_shared::runs::Run;
use serde_json::{json, Value};

use super::super::download::api_error;
use super::super::repo_config::RepoConfig;
use super::super::report::{check_run, comment};
use super::super::StageError;
use super::ref_path;
use crate::diagnose::Class;
use crate::WorkerContext;

/// Why the fix may not be delivered, if it may not.
pub(super) async fn refused(
    ctx: &WorkerContext,
    crab: &Installation,
    run: &Run,
    class: Class,
    strategy: &str,
    diff: &str,
    config: &RepoConfig,
) -> Result<Option<String>, StageError> {
    let policies = repository_policies(crab, run).await?;
    let change = Change::describe(
        diff,
        class.as_str(),
        strategy,
        config.max_diff_lines,
        &config.protected_paths,
    );
    // A repository's policies run in children of this binary (`selfheal policy-eval`), with
    // limits on their memory and time; all of it off the async threads.
    // /proc/self/exe rather than the path it was started from: after an upgrade in place
    // that path names the new binary, or nothing.
    let program = std::path::PathBuf::from("/proc/self/exe");
    let denials = tokio::task::spawn_blocking(move || {
        invariants::check(
            &change,
            invariants::DEFAULT_POLICY,
            &policies,
            &invariants::Isolated { program },
        )
    })
    .await
    .map_err(|e| StageError::Permanent(format!("the invariants' evaluation panicked: {e}")))?
    .map_err(|e| StageError::Permanent(e.to_string()))?;
    if denials.is_empty() {
        return Ok(None);
    }
    record(ctx, run, &denials).await?;
    tell(ctx, run, &denials).await?;
    Ok(Some(format!(
        "not delivered: the fix breaks {} invariant(s): {}",
        denials.len(),
        denials
            .iter()
            .map(|d| d.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

/// The repository's own policies, from its default branch as `.github/selfheal.yml` is (so
/// that the commit being fixed cannot drop them): `.rego` files (not `_test.rego`) directly in
/// [`REPOSITORY_DIR`]. Whatever cannot be read is kept with its reason, so that it denies
/// instead of vanishing.
async fn repository_policies(
    crab: &Installation,
    run: &Run,
) -> Result<Vec<RepositoryPolicy>, StageError> {
    let repo = &run.repository_full_name;
    let unreadable = |path: &str, why: String| RepositoryPolicy {
        path: path.to_string(),
        text: Err(why),
    };
    let listing = crab
        ._get_with_headers(
            format!("/repos/{repo}/contents/{REPOSITORY_DIR}"),
            http::HeaderMap::new(),
        )
        .await
        .map_err(|e| api_error(e, REPOSITORY_DIR))?;
    match listing.status().as_u16() {
        404 => return Ok(vec![]),
        200 => {}
        status => {
            return Err(selfheal_shared::github::GitHubError::Status {
                status,
                what: REPOSITORY_DIR.into(),
            }
            .into())
        }
    }
    let text = crab
        .body_to_string(listing)
        .await
        .map_err(|e| api_error(e, REPOSITORY_DIR))?;
    let Ok(Value::Array(entries)) = serde_json::from_str::<Value>(&text) else {
        return Ok(vec![unreadable(
            REPOSITORY_DIR,
            "is not a directory (a file or a link where the policies should be)".into(),
        )]);
    };
    // GitHub lists at most 1,000 entries of a directory: past that, a policy could be out of
    // view.
    if entries.len() >= 1000 {
        return Ok(vec![unreadable(
            REPOSITORY_DIR,
            format!("lists {} entries, and GitHub shows no more than 1,000: some policies may not be seen", entries.len()),
        )]);
    }
    let mut wanted: Vec<(String, &str, Option<u64>)> = entries
        .iter()
        .filter_map(|e| {
            let path = e["path"].as_str()?;
            let lower = path.to_ascii_lowercase();
            (lower.ends_with(".rego") && !lower.ends_with("_test.rego")).then(|| {
                (
                    path.to_string(),
                    e["type"].as_str().unwrap_or("unknown"),
                    e["size"].as_u64(),
                )
            })
        })
        .collect();
    wanted.sort();
    let mut out = Vec::new();
    let mut raw = http::HeaderMap::new();
    raw.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/vnd.github.raw+json"),
    );
    for (i, (path, kind, size)) in wanted.into_iter().enumerate() {
        // Past the cap, `check` denies for the count: these are not read.
        let text = if i >= REPOSITORY_MAX_FILES {
            Err("not read: over the number of policies selfheal evaluates".to_string())
        } else if kind != "file" {
            Err(format!("is a {kind}, not a file"))
        } else if size.is_none_or(|s| s as usize > REPOSITORY_MAX_BYTES) {
            Err(format!(
                "{} bytes, over {REPOSITORY_MAX_BYTES}",
                size.map_or("unknown".to_string(), |s| s.to_string())
            ))
        } else {
            let response = crab
                ._get_with_headers(
                    format!("/repos/{repo}/contents/{}", ref_path(&path)),
                    raw.clone(),
                )
                .await
                .map_err(|e| api_error(e, &path))?;
            match response.status().as_u16() {
                200 => {
                    let body = crab
                        .body_to_string(response)
                        .await
                        .map_err(|e| api_error(e, &path))?;
                    if body.len() > REPOSITORY_MAX_BYTES {
                        Err(format!("{} bytes, over {REPOSITORY_MAX_BYTES}", body.len()))
                    } else {
                        Ok(body)
                    }
                }
                status => Err(format!("GitHub answered {status} for it")),
            }
        };
        out.push(RepositoryPolicy { path, text });
    }
    Ok(out)
}

async fn record(ctx: &WorkerContext, run: &Run, denials: &[Denial]) -> Result<(), StageError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    for d in denials {
        tx.execute(
            "INSERT INTO invariant_denials (run_id, policy, invariant, message)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&run.id, &d.policy, &d.invariant, &d.message],
        )
        .await?;
    }
    audit::append(
        &tx,
        "selfheal:worker",
        "invariants.denied",
        &run.id.to_string(),
        &json!({ "denials": denials }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// On the fix's pull request when it has one (a further attempt), else a check run on the
/// failing commit.
async fn tell(ctx: &WorkerContext, run: &Run, denials: &[Denial]) -> Result<(), StageError> {
    // The messages quote the diff and the repository's own policies: text, never Markdown.
    // At most 40 listed (each message is capped too): GitHub refuses a comment or a summary
    // past 65,536 characters. All of them are in `invariant_denials`.
    const LISTED: usize = 40;
    let more = denials.len().saturating_sub(LISTED);
    let more = if more > 0 {
        format!("\n\n{more} more in the run's record (`invariant_denials`).")
    } else {
        String::new()
    };
    let list = super::super::deliver::markdown::fenced(
        &denials
            .iter()
            .take(LISTED)
            .map(|d| {
                if d.policy == "selfheal" {
                    format!("- {}", d.message)
                } else {
                    format!("- {} ({})", d.message, d.policy)
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let pr = super::open_fix(&*ctx.pool.get().await?, run)
        .await?
        .map(|(n, _, _)| n);
    let summary = format!(
        "selfheal made a fix that passed the sandbox but breaks what every fix must keep, so it is not delivered:\n\n{list}{more}\n\nThe invariants are in selfheal's policies/invariants.rego and this repository's {REPOSITORY_DIR}/."
    );
    match pr {
        Some(n) => {
            comment(
                &ctx.github,
                run.installation_id,
                &run.repository_full_name,
                n,
                &format!("invariants:{}", run.id),
                &summary,
            )
            .await
        }
        None => {
            check_run(
                &ctx.github,
                run,
                "selfheal invariants",
                "failure",
                json!({"title": format!("{} invariant(s) broken: fix not delivered", denials.len()), "summary": summary}),
            )
            .await
        }
    }
}

/// Why the fix may not be delivered for its proofs: a prover that ran on the validated tree
/// (the validate stage, `proofs`) and failed. Said as a failed `selfheal proofs` check run.
pub(super) async fn broken_proofs(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<Option<String>, StageError> {
    let failed: Vec<(String, String, String)> = ctx
        .pool
        .get()
        .await?
        .query(
            "SELECT prover, command, detail FROM proofs WHERE run_id = $1 AND outcome = 'failed'
             ORDER BY prover",
            &[&run.id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let Some(why) = proofs_refuse(&failed) else {
        return Ok(None);
    };
    let summary = format!(
        "selfheal made a fix that passed the sandbox, but a proof of the repository fails on it, so it is not delivered:\n\n{}",
        super::super::deliver::markdown::fenced(&why)
    );
    check_run(
        &ctx.github,
        run,
        "selfheal proofs",
        "failure",
        json!({"title": "a proof fails on the fix: not delivered", "summary": summary}),
    )
    .await?;
    Ok(Some(format!("not delivered: {why}")))
}

/// The reason a set of failed proofs (prover, command, the prover's words) stops a fix.
pub(super) fn proofs_refuse(failed: &[(String, String, String)]) -> Option<String> {
    if failed.is_empty() {
        return None;
    }
    Some(
        failed
            .iter()
            .map(|(prover, command, detail)| {
                let detail: String = detail.chars().take(1000).collect();
                format!("the {prover} proof fails (`{command}`): {detail}")
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::proofs_refuse;

    #[test]
    fn only_a_failed_proof_stops_a_fix() {
        assert_eq!(proofs_refuse(&[]), None);
        let why = proofs_refuse(&[(
            "lean".into(),
            "lake build".into(),
            "error: ./Proofs/Basic.lean:7:2: unsolved goals".into(),
        )])
        .unwrap();
        assert_eq!(
            why,
            "the lean proof fails (`lake build`): error: ./Proofs/Basic.lean:7:2: unsolved goals"
        );
    }
}
