//! Patch stage: reproduce the failure in the sandbox on the repository at the failing SHA and
//! make a patch with the deterministic strategy for its class. Stored with its evidence.

use std::sync::Arc;

use selfheal_shared::incidents;
use selfheal_shared::runs::{Outcome, Run, Trigger};

use super::checkout::checkout;
use super::culprits;
use super::diagnose::{first_failed, gunzip};
use super::{StageError, StageReport};
use crate::ai_spend::Ledger;
use crate::fix_memory;
use crate::heal::{self, Verdict};
use crate::workflow;
use crate::WorkerContext;

pub fn verdict_name(v: &Verdict) -> (&'static str, Option<String>) {
    match v {
        Verdict::Pending => ("pending", None),
        Verdict::Fixed => ("fixed", None),
        Verdict::Flaky => ("flaky", None),
        Verdict::Rerun => ("rerun", None),
        Verdict::NotReproduced { reason } => ("not_reproduced", Some(reason.clone())),
        Verdict::Rejected { reason } => ("rejected", Some(reason.clone())),
        Verdict::HandedOff { reason } => ("handed_off", Some(reason.clone())),
    }
}

/// Runs of one repository share its dependency cache; no other repository's runs do.
pub fn dependency_scope(run: &Run) -> String {
    format!(
        "github:{}:{}",
        run.installation_id, run.repository_full_name
    )
}

/// The heal's options with the model's requests (if a model is configured) held to the
/// incident's and the installation's budgets and recorded against this run, and told what the
/// model proposed for the incident's earlier runs.
fn charged_to(ctx: &WorkerContext, run: &Run, earlier_patches: Vec<String>) -> heal::HealOptions {
    let mut options = ctx.heal.clone();
    if let Some(assistant) = options.assistant.as_mut() {
        assistant.earlier_patches = earlier_patches;
    }
    if let (Some(assistant), Some(ai)) = (options.assistant.as_mut(), &ctx.ai) {
        assistant.budget = Some(Arc::new(Ledger::for_run(
            ctx.pool.clone(),
            run,
            ai.budget,
            ai.prices,
        )));
    }
    options
}

/// The commits since the workflow's last green run on the branch, for a test or compile
/// failure of a workflow run on a branch people push to (not selfheal's own fix). GitHub not
/// answering costs the run this strategy, not the run: the reason is recorded instead.
async fn culprit_candidates(
    ctx: &WorkerContext,
    run: &Run,
    class: &str,
    branch: String,
    workflow_id: i64,
) -> culprits::Listed {
    let applies = matches!(class, "test" | "compile")
        && run.fix_branch.is_none()
        && matches!(run.trigger, Trigger::WorkflowRun);
    if !applies {
        return culprits::Listed::default();
    }
    let listed = async {
        let crab = ctx
            .github
            .installation(run.installation_id, &run.repository_full_name)?;
        culprits::since_last_green(
            &crab,
            ctx.github.git_url(),
            &run.repository_full_name,
            workflow_id,
            &branch,
            &run.head_sha,
        )
        .await
    }
    .await;
    listed.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the commits since the last green run are not known; no culprit is looked for");
        culprits::Listed {
            candidates: Vec::new(),
            skipped: vec![format!("the commits since the last green run are not known: {e}")],
        }
    })
}

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let row = client
        .query_one(
            "SELECT d.command, l.log_gzip, l.job_name, d.fingerprint, d.class, i.branch, i.workflow_id,
                    l.failed_steps, d.green_log_gzip
             FROM diagnoses d
             JOIN runs r ON r.id = d.run_id
             JOIN incidents i ON i.id = r.incident_id
             JOIN job_logs l ON l.run_id = d.run_id AND l.github_job_id = d.github_job_id
             WHERE d.run_id = $1",
            &[&run.id],
        )
        .await?;
    // The fix that healed this failure before, if any: looked up before the client goes back.
    let fingerprint: String = row.get(3);
    let memory = fix_memory::remembered(&**client, run, &fingerprint, ctx.fix_memory).await?;
    let earlier: Vec<String> = client
        .query(
            "SELECT p.diff FROM patches p JOIN runs r ON r.id = p.run_id
             WHERE r.incident_id = $1 AND p.run_id <> $2 AND p.strategy = 'ai_patch'
               AND p.diff IS NOT NULL",
            &[&run.incident_id, &run.id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let class: String = row.get(4);
    let listed = culprit_candidates(ctx, run, &class, row.get(5), row.get(6)).await;
    let Some(command): Option<String> = row.get(0) else {
        return Err(StageError::Permanent(
            "the log does not show which command failed".into(),
        ));
    };
    let log = gunzip(row.get(1))?;
    let window = first_failed(row.get::<_, Option<serde_json::Value>>(7).as_ref());
    let job_name: Option<String> = row.get(2);
    // The green run's log the diagnosis compared an unknown failure with, if it did.
    let green = row.get::<_, Option<&[u8]>>(8).map(gunzip).transpose()?;
    let sandbox = ctx.sandbox().await?;
    let work = checkout(ctx, run).await?;
    // The step as the workflow at the failing commit defines it, checked against the log.
    let step = workflow::reproduce(work.path(), &command, job_name.as_deref());
    let report = heal::propose(
        sandbox,
        work.path(),
        &dependency_scope(run),
        &step,
        Some(&heal::JobLog {
            log: &log,
            window,
            green: green.as_deref(),
        }),
        &heal::HealOptions {
            memory,
            culprits: listed.candidates,
            culprits_skipped: listed.skipped,
            ..charged_to(ctx, run, earlier)
        },
        &|msg| tracing::info!("{msg}"),
    )
    .await?;
    let (verdict, reason) = verdict_name(&report.verdict);
    let mut evidence = serde_json::to_value(&report.before).unwrap_or_default();
    // What the model was asked, answered and spent, with the run's other evidence.
    if let Some(ai) = &report.ai {
        evidence["ai"] = serde_json::to_value(ai).unwrap_or_default();
    }
    if let Some(memory) = &report.memory {
        evidence["memory"] = serde_json::to_value(memory).unwrap_or_default();
    }
    if let Some(culprit) = &report.culprit {
        evidence["culprit"] = serde_json::to_value(culprit).unwrap_or_default();
    }
    let remembered_from = report
        .memory
        .as_ref()
        .and_then(|m| uuid::Uuid::parse_str(&m.from_run).ok());
    let memory_use = report
        .memory
        .as_ref()
        .filter(|_| remembered_from.is_some())
        .map(|m| m.used.as_str());
    let changes = report
        .changes
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StageError::Permanent(format!("cannot record the change: {e}")))?;
    let step_json = serde_json::to_value(&report.step)
        .map_err(|e| StageError::Permanent(format!("cannot record the step: {e}")))?;
    let client = ctx.pool.get().await?;
    client
        .execute(
            "INSERT INTO patches (run_id, strategy, diff, class, verdict, reason, evidence, changes, step, remembered_from, memory_use)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (run_id) DO UPDATE SET strategy = EXCLUDED.strategy, diff = EXCLUDED.diff, class = EXCLUDED.class,
               verdict = EXCLUDED.verdict, reason = EXCLUDED.reason, evidence = EXCLUDED.evidence,
               changes = EXCLUDED.changes, step = EXCLUDED.step, remembered_from = EXCLUDED.remembered_from,
               memory_use = EXCLUDED.memory_use, created_at = now()",
            &[&run.id, &report.strategy.as_str(), &report.patch, &report.diagnosis.class.as_str(), &verdict, &reason, &evidence, &changes, &step_json, &remembered_from, &memory_use],
        )
        .await?;
    // The model came back with a change that did not fix the incident before: selfheal stops
    // on it, as `/selfheal stop` would, rather than loop.
    if report.ai.as_ref().is_some_and(|ai| ai.repeated) {
        incidents::stop(
            &client,
            run.incident_id,
            "selfheal",
            "the model proposed the change it proposed for an earlier run of this incident",
            serde_json::json!({"run_id": run.id}),
        )
        .await?;
    }
    let runs = format!(
        "{} of {} runs failed before",
        report.before.failed, report.before.runs
    );
    let detail = match &report.verdict {
        Verdict::Pending => {
            let lines = report.patch.as_deref().map_or(0, |p| p.lines().count());
            format!("{}: {lines}-line diff ({runs})", report.strategy.as_str())
        }
        Verdict::Flaky => format!("flaky: {runs}; plan: rerun the failed jobs, no code change"),
        Verdict::Rerun => format!(
            "{}: plan: rerun the failed jobs, no code change ({runs})",
            report.diagnosis.class.as_str()
        ),
        other => format!(
            "{}: {} ({runs})",
            verdict,
            verdict_name(other).1.unwrap_or_default()
        ),
    };
    let outcome = if matches!(report.verdict, Verdict::Pending) {
        Outcome::Succeeded
    } else {
        Outcome::Skipped
    };
    Ok(StageReport { outcome, detail })
}
