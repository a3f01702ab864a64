//! Verify stage: decides, before anything is written to GitHub, what deliver may do.
//!
//! For a failed run (on the incident's branch, or the fix's own CI failing on selfheal's
//! branch): is there a validated fix, does the repository's config allow it, and is an attempt
//! left (loop protection)? For a green run of the fix's own CI: are all the fix's checks
//! green, and does the merge policy allow the merge? The verdict is recorded in
//! `verifications`; deliver only carries it out.

use selfheal_shared::github::Installation;
use selfheal_shared::incidents;
use selfheal_shared::runs::{Outcome, Run};
use serde_json::{json, Value};

use super::download::api_error;
use super::repo_config::{self};
use super::report::comment;
use super::{pr_state, short, StageError, StageReport};
use crate::diagnose::Class;
use crate::WorkerContext;

mod guards;
mod invariants;
mod merging;

pub use merging::{take_up_early_ci, PR_RECORDED_LOCK};

use guards::{own_commits_on_top, resolved, unlisted_ci};
use merging::fix_passed;

/// What deliver is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rerun the failed jobs, open the PR, or push a further attempt onto it.
    Deliver,
    /// The fix's checks are green and the policy allows: merge.
    Merge,
    /// The fix's checks are green but the policy says no: leave it for review.
    Hold,
    /// Not decidable yet (checks still running, the branch moved on).
    Wait,
    /// Loop protection: selfheal has commented and stopped on this incident.
    Stop,
    /// Nothing to deliver, or not allowed here.
    Skip,
    /// Dry run: report what would be delivered on the commit, push nothing.
    DryRun,
    /// The incident was resolved by another push while selfheal's PR was open: close it.
    Close,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Deliver => "deliver",
            Verdict::Merge => "merge",
            Verdict::Hold => "hold",
            Verdict::Wait => "wait",
            Verdict::Stop => "stop",
            Verdict::Skip => "skip",
            Verdict::DryRun => "dry_run",
            Verdict::Close => "close",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        [
            Verdict::Deliver,
            Verdict::Merge,
            Verdict::Hold,
            Verdict::Wait,
            Verdict::Stop,
            Verdict::Skip,
            Verdict::DryRun,
            Verdict::Close,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    fn outcome(self) -> Outcome {
        match self {
            Verdict::Wait | Verdict::Skip | Verdict::DryRun => Outcome::Skipped,
            _ => Outcome::Succeeded,
        }
    }
}

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    // Decided before a crash: the decision stands (its side effects happened).
    if let Some(row) = client
        .query_opt(
            "SELECT verdict, reason FROM verifications WHERE run_id = $1",
            &[&run.id],
        )
        .await?
    {
        let verdict = Verdict::parse(row.get(0)).unwrap_or(Verdict::Skip);
        return Ok(report(verdict, row.get(1)));
    }
    let incident = client
        .query_one(
            "SELECT status, stopped_at IS NOT NULL, stopped_by, stopped_reason FROM incidents WHERE id = $1",
            &[&run.incident_id],
        )
        .await?;
    drop(client);
    let (verdict, reason, checks) = if incident.get::<_, String>(0) == "resolved" {
        let (v, r) = resolved(ctx, run).await?;
        (v, r, json!([]))
    } else if incident.get::<_, bool>(1) {
        (
            Verdict::Skip,
            format!(
                "selfheal was stopped on this incident by {}: {}",
                incident.get::<_, Option<String>>(2).unwrap_or_default(),
                incident.get::<_, Option<String>>(3).unwrap_or_default()
            ),
            json!([]),
        )
    } else if let Some(why) = unlisted_ci(ctx, run).await? {
        (Verdict::Skip, why, json!([]))
    } else if run.fix_branch.is_some() && run.conclusion == "success" {
        fix_passed(ctx, run).await?
    } else {
        let (v, r) = before_delivery(ctx, run).await?;
        (v, r, json!([]))
    };
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    // One failure, one fix: the same failure (fingerprint) at the same commit, failing in
    // several workflows, gets one fix (reruns of flaky jobs stay per run). The lock makes two
    // such runs decide in turn.
    let (verdict, reason) = if verdict == Verdict::Deliver && run.fix_branch.is_none() {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('selfheal.one_fix:' || $1 || ':' || $2, 0))",
            &[&run.repository_full_name, &run.head_sha],
        )
        .await?;
        let twin = tx
            .query_opt(
                "SELECT other.run_id, r.github_run_id FROM diagnoses mine
                 JOIN diagnoses other ON other.fingerprint = mine.fingerprint AND other.run_id <> mine.run_id
                 JOIN runs r ON r.id = other.run_id
                 -- Its fix still stands: not stopped (a person closing that PR stops it), and
                 -- not delivered-then-dropped (its PR open, or not opened yet).
                 JOIN incidents oi ON oi.id = r.incident_id AND oi.stopped_at IS NULL
                 LEFT JOIN deliveries od ON od.incident_id = r.incident_id AND od.kind = 'pull_request'
                 JOIN verifications v ON v.run_id = other.run_id AND v.verdict = 'deliver'
                 JOIN patches mp ON mp.run_id = mine.run_id AND mp.verdict = 'fixed'
                 JOIN patches op ON op.run_id = other.run_id AND op.verdict = 'fixed'
                 WHERE mine.run_id = $1 AND r.head_sha = $2 AND r.repository_full_name = $3
                   AND r.incident_id <> $4 AND r.fix_branch IS NULL
                   AND (od.incident_id IS NULL OR (od.closed_at IS NULL))
                 LIMIT 1",
                &[&run.id, &run.head_sha, &run.repository_full_name, &run.incident_id],
            )
            .await?;
        match twin {
            Some(t) => (
                Verdict::Skip,
                format!(
                    "one failure, one fix: the same failure at {} is delivered for CI run {} (run {})",
                    short(&run.head_sha),
                    t.get::<_, i64>(1),
                    t.get::<_, uuid::Uuid>(0)
                ),
            ),
            None => (verdict, reason),
        }
    } else {
        (verdict, reason)
    };
    if verdict == Verdict::Wait && reason.starts_with(merging::AWAITING_PR) {
        // Deliver may have recorded the PR since this run looked: then it will not see this
        // wait (it read before this commits), so decide again now that there is a PR.
        tx.execute(merging::PR_RECORDED_LOCK, &[&run.incident_id.to_string()])
            .await?;
        let recorded: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE incident_id = $1
                 AND kind = 'pull_request' AND pr_number IS NOT NULL)",
                &[&run.incident_id],
            )
            .await?
            .get(0);
        if recorded {
            return Err(StageError::Transient(
                "the fix's pull request was recorded meanwhile; deciding again".into(),
            ));
        }
    }
    tx.execute(
        "INSERT INTO verifications (run_id, verdict, reason, checks) VALUES ($1, $2, $3, $4)
         ON CONFLICT (run_id) DO NOTHING",
        &[&run.id, &verdict.as_str(), &reason, &checks],
    )
    .await?;
    tx.commit().await?;
    Ok(report(verdict, reason))
}

fn report(verdict: Verdict, reason: String) -> StageReport {
    StageReport {
        outcome: verdict.outcome(),
        detail: format!("{}: {reason}", verdict.as_str()),
    }
}

/// The verdict deliver carries out (recorded by this stage).
pub async fn recorded(
    ctx: &WorkerContext,
    run: &Run,
) -> Result<Option<(Verdict, String)>, StageError> {
    let row = ctx
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT verdict, reason FROM verifications WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    Ok(row.and_then(|r| Verdict::parse(r.get(0)).map(|v| (v, r.get(1)))))
}

async fn before_delivery(ctx: &WorkerContext, run: &Run) -> Result<(Verdict, String), StageError> {
    let row = ctx
        .pool
        .get()
        .await?
        .query_opt(
            "SELECT verdict, class, diff, strategy FROM patches WHERE run_id = $1",
            &[&run.id],
        )
        .await?;
    let Some(row) = row else {
        return Ok((Verdict::Skip, "no patch stage result".into()));
    };
    let verdict: String = row.get(0);
    let class = Class::parse(&row.get::<_, String>(1)).unwrap_or(Class::Unknown);
    let diff: Option<String> = row.get(2);
    let deliverable = matches!(verdict.as_str(), "flaky" | "rerun" | "fixed");
    let crab = ctx
        .github
        .installation(run.installation_id, &run.repository_full_name)?;
    // The fix's own CI failed: selfheal builds on that commit only if it is its own. A commit
    // someone else pushed onto the branch would otherwise become the parent of selfheal's next
    // attempt, and be merged with it under selfheal's name.
    if run.fix_branch.is_some() {
        let ours = pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id).await?;
        if ours.as_deref() != Some(run.head_sha.as_str()) {
            return Ok((
                Verdict::Hold,
                format!(
                    "this run is of {}, not of the commit selfheal last pushed ({}): someone else pushed to the branch (or the run is of an older attempt), so selfheal builds nothing on it",
                    short(&run.head_sha),
                    ours.as_deref().map_or("none", short)
                ),
            ));
        }
    }
    if !deliverable {
        if run.fix_branch.is_some() {
            let why = format!(
                "the fix's own CI failed ({}) and selfheal has no further fix ({verdict})",
                class.as_str()
            );
            return stop(ctx, run, &why).await;
        }
        return Ok((Verdict::Skip, format!("nothing to deliver ({verdict})")));
    }
    let would = match verdict.as_str() {
        "fixed" if run.fix_branch.is_some() => "push a further attempt onto the fix's branch",
        "fixed" => "open a pull request with the validated fix",
        _ => "rerun the failed jobs",
    };
    // A tag pushed under a plain name looks like a branch in the webhook: before anything is
    // written, the branch must be one of the repository's.
    if run.fix_branch.is_none() {
        let branch = incident_branch(ctx, run).await?;
        let found: Result<Value, _> = crab
            .get(
                format!(
                    "/repos/{}/git/ref/heads/{}",
                    run.repository_full_name,
                    ref_path(&branch)
                ),
                None::<&()>,
            )
            .await;
        match found {
            // A newer push supersedes: a fix (or rerun) for a commit the branch has moved
            // past would be for code nobody runs any more; the new head's CI decides.
            Ok(r)
                if r["object"]["sha"]
                    .as_str()
                    .is_some_and(|h| h != run.head_sha) =>
            {
                let head = r["object"]["sha"].as_str().unwrap_or_default();
                return Ok((
                    Verdict::Skip,
                    format!(
                        "superseded: {branch} has moved on from {} to {}; nothing delivered for the older commit",
                        short(&run.head_sha),
                        short(head)
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) if super::status_of(&e) == Some(404) => {
                return Ok((
                    Verdict::Skip,
                    format!(
                        "{branch} is not a branch of the repository (a tag?): nothing delivered"
                    ),
                ))
            }
            Err(e) => return Err(api_error(e, "the failing branch")),
        }
    }
    if ctx.dry_run {
        return Ok((
            Verdict::DryRun,
            format!("dry run (SELFHEAL_DRY_RUN): would {would}"),
        ));
    }
    let config = match repo_config::load(ctx, &crab, &run.repository_full_name).await? {
        Err(problem) => {
            repo_config::report_bad_config(&ctx.github, run, &problem).await?;
            return Ok((
                Verdict::Skip,
                format!(
                    "{} is invalid ({problem}): nothing delivered; reported as a failed check run",
                    repo_config::PATH
                ),
            ));
        }
        Ok(config) => config,
    };
    if config.dry_run {
        return Ok((
            Verdict::DryRun,
            format!("dry run ({}): would {would}", repo_config::PATH),
        ));
    }
    if let Some(why) = config.refuses(class, diff.as_deref()) {
        return Ok((Verdict::Skip, format!("not delivered: {why}")));
    }
    if verdict == "fixed" {
        // A fix is held to the invariants through its diff: without one it cannot be.
        let Some(diff) = diff.as_deref() else {
            return Ok((
                Verdict::Skip,
                "not delivered: the fix has no diff to hold to the invariants".into(),
            ));
        };
        let strategy: String = row.get(3);
        if let Some(why) =
            invariants::refused(ctx, &crab, run, class, &strategy, diff, &config).await?
        {
            return Ok((Verdict::Skip, why));
        }
        if let Some(why) = invariants::broken_proofs(ctx, run).await? {
            return Ok((Verdict::Skip, why));
        }
    }
    // Loop guard at GitHub's level: a branch whose last commits are all selfheal's own (its
    // merged fixes failing again) gets no further fix on top; people decide. After the
    // dry-run gates: a dry run writes nothing, a comment included.
    if run.fix_branch.is_none() {
        if let Some(ours) =
            own_commits_on_top(&crab, &run.repository_full_name, &run.head_sha).await?
        {
            let why = format!(
                "the last {} commits of the failing branch ({}) are all selfheal's own",
                ours.len(),
                ours.iter().map(|s| short(s)).collect::<Vec<_>>().join(", ")
            );
            let body = format!(
                "selfheal stops here: {why}, and this commit fails again. Another fix on top of its own fixes needs a person; comment `/selfheal retry` on a pull request of this incident, or push a fix, to go on."
            );
            // Once: no blind retry (a duplicate commit comment is noise on the commit).
            let once = ctx
                .github
                .installation_once(run.installation_id, &run.repository_full_name)?;
            let said: Result<Value, _> = once
                .post(
                    format!(
                        "/repos/{}/commits/{}/comments",
                        run.repository_full_name, run.head_sha
                    ),
                    Some(&json!({"body": body})),
                )
                .await;
            if let Err(e) = said {
                tracing::warn!(error = %e, "could not say on the commit why selfheal stops");
            }
            return stop(ctx, run, &why).await;
        }
    }
    if verdict != "fixed" && run.fix_branch.is_none() {
        return Ok((Verdict::Deliver, "rerun the failed jobs".into()));
    }
    let mut rebase = None;
    if run.fix_branch.is_none() {
        if let Some((n, branch, based_on)) = open_fix(&*ctx.pool.get().await?, run).await? {
            if based_on.as_deref() == Some(run.head_sha.as_str()) {
                return Ok((
                    Verdict::Deliver,
                    format!("the incident's fix is already PR #{n}; its own CI decides"),
                ));
            }
            // The branch moved on and fails again: the PR's fix is for code nobody runs any
            // more. It is made again on the new head and the PR's branch moved to it, but
            // only while the branch is selfheal's alone: a force-push would drop the
            // commits someone else added to it.
            if let Some(theirs) = rebase_over_others(ctx, &crab, run, &branch).await? {
                return Ok((
                    Verdict::Hold,
                    format!(
                        "PR #{n} is built on {}, not on the newer failing commit {}, but {theirs}: it is not rebased over their work, and left for review",
                        based_on.as_deref().map_or("an older commit", short),
                        short(&run.head_sha)
                    ),
                ));
            }
            rebase = Some((n, based_on));
        }
    }
    // Every commit pushed for the incident counts, and so does every rerun of the fix's CI,
    // since the last `/selfheal retry` (which gives the incident a fresh budget).
    let made: i64 = ctx
        .pool
        .get()
        .await?
        .query_one(
            "WITH since AS (SELECT coalesce(max(created_at), '-infinity') AS t FROM commands
                            WHERE incident_id = $1 AND command = 'retry' AND status = 'done')
             SELECT (SELECT count(*) FROM fix_attempts, since
                     WHERE incident_id = $1 AND run_id <> $2 AND created_at > since.t)
                  + (SELECT count(*) FROM deliveries d JOIN runs r ON r.id = d.run_id, since
                     WHERE d.incident_id = $1 AND d.kind = 'rerun' AND r.fix_branch IS NOT NULL
                       AND d.run_id <> $2 AND d.created_at > since.t)",
            &[&run.incident_id, &run.id],
        )
        .await?
        .get(0);
    if made >= i64::from(config.max_attempts) {
        let why = format!(
            "the fix's own CI failed after {made} attempt(s), the most {} allows (max_attempts)",
            repo_config::PATH
        );
        return stop(ctx, run, &why).await;
    }
    let what = match (&rebase, verdict.as_str()) {
        (Some((n, based_on)), _) => format!(
            "{} fix made again on {} and PR #{n} rebased onto it (it was built on {})",
            row.get::<_, String>(3),
            short(&run.head_sha),
            based_on.as_deref().map_or("an older commit", short)
        ),
        (None, "fixed") => format!("{} fix", row.get::<_, String>(3)),
        _ => "rerun of the fix's failed jobs".to_string(),
    };
    Ok((
        Verdict::Deliver,
        format!("{what}, attempt {} of {}", made + 1, config.max_attempts),
    ))
}

/// The branch the incident is on (the failing one; not selfheal's).
async fn incident_branch(ctx: &WorkerContext, run: &Run) -> Result<String, StageError> {
    Ok(ctx
        .pool
        .get()
        .await?
        .query_one(
            "SELECT branch FROM incidents WHERE id = $1",
            &[&run.incident_id],
        )
        .await?
        .get(0))
}

/// The incident's pull request, once opened.
/// The incident's open pull request: its number, branch and the commit its fix is built on.
async fn open_fix(
    client: &tokio_postgres::Client,
    run: &Run,
) -> Result<Option<(i32, String, Option<String>)>, StageError> {
    Ok(client
        .query_opt(
            "SELECT pr_number, branch, based_on FROM deliveries
             WHERE incident_id = $1 AND kind = 'pull_request' AND pr_number IS NOT NULL
               AND merged_at IS NULL AND closed_at IS NULL",
            &[&run.incident_id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// Who else's commit a rebase of selfheal's branch would drop, if any: the branch's head on
/// GitHub is not the commit selfheal last pushed there.
async fn rebase_over_others(
    ctx: &WorkerContext,
    crab: &Installation,
    run: &Run,
    branch: &str,
) -> Result<Option<String>, StageError> {
    let ours = pr_state::last_pushed(&**ctx.pool.get().await?, run.incident_id).await?;
    let head: Value = crab
        .get(
            format!(
                "/repos/{}/git/ref/heads/{}",
                run.repository_full_name,
                ref_path(branch)
            ),
            None::<&()>,
        )
        .await
        .map_err(|e| api_error(e, "the fix's branch"))?;
    let head = head["object"]["sha"].as_str().unwrap_or_default();
    Ok((ours.as_deref() != Some(head)).then(|| {
        format!(
            "its branch {branch} is at {}, which is not the commit selfheal pushed ({}): someone else pushed to it",
            short(head),
            ours.as_deref().map_or("none", short)
        )
    }))
}

/// Loop protection: say on the PR what was tried, then stop acting on the incident.
async fn stop(ctx: &WorkerContext, run: &Run, why: &str) -> Result<(Verdict, String), StageError> {
    let client = ctx.pool.get().await?;
    let tried = client
        .query(
            "SELECT a.attempt, a.strategy, a.commit_sha, r.github_run_id
             FROM fix_attempts a JOIN runs r ON r.id = a.run_id
             WHERE a.incident_id = $1 ORDER BY a.attempt",
            &[&run.incident_id],
        )
        .await?;
    let pr: Option<i32> = client
        .query_opt(
            "SELECT pr_number FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'",
            &[&run.incident_id],
        )
        .await?
        .and_then(|r| r.get(0));
    drop(client);
    let mut lines: Vec<String> = tried
        .iter()
        .map(|r| {
            let sha: Option<String> = r.get(2);
            format!(
                "- attempt {}: `{}`, commit {} (after CI run {})",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                sha.as_deref().map(short).unwrap_or("?"),
                r.get::<_, i64>(3)
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("- no commit was pushed".into());
    }
    let mut reason = format!("stopped: {why}");
    if let Some(n) = pr {
        let body = format!(
            "selfheal stops here: {why}.\n\nWhat it tried:\n{}\n\nThe latest failure is CI run {}. \
             This needs a person; comment `/selfheal retry` to let selfheal try again.",
            lines.join("\n"),
            run.github_run_id
        );
        comment(
            &ctx.github,
            run.installation_id,
            &run.repository_full_name,
            n,
            &format!("stop:{}", run.id),
            &body,
        )
        .await?;
        reason.push_str(&format!("; commented on PR #{n}"));
    }
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    incidents::stop(
        &tx,
        run.incident_id,
        "selfheal:loop-protection",
        why,
        json!({"run": run.id, "attempts": tried.len()}),
    )
    .await?;
    tx.commit().await?;
    Ok((Verdict::Stop, reason))
}

/// A branch name as a URL path: each segment percent-encoded (`#`, `%`, `?` and non-ASCII
/// are legal in git refs), the `/` between segments kept.
pub(crate) fn ref_path(branch: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'^')
        .add(b'|')
        .add(b'\\');
    branch
        .split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    #[test]
    fn branch_names_are_encoded_segment_by_segment() {
        assert_eq!(super::ref_path("feature/fix#1"), "feature/fix%231");
        assert_eq!(super::ref_path("50%/x?y"), "50%25/x%3Fy");
        assert_eq!(super::ref_path("main"), "main");
        assert_eq!(super::ref_path("café"), "caf%C3%A9");
    }
}
