//! Validate stage: apply the patch to the repository at the failing SHA in the sandbox and
//! run the failing command N times: all must pass. Recorded either way.

use selfheal_shared::runs::{Outcome, Run};

use super::checkout::checkout;
use super::patch::{dependency_scope, verdict_name};
use super::{StageError, StageReport};
use crate::changes::ChangeSet;
use crate::heal::{self, Verdict};
use crate::workflow::StepCommand;
use crate::WorkerContext;
use selfheal_engine::prove;

pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<StageReport, StageError> {
    let client = ctx.pool.get().await?;
    let row = client
        .query_one(
            "SELECT p.verdict, p.diff, d.command, p.changes, p.step FROM patches p JOIN diagnoses d ON d.run_id = p.run_id WHERE p.run_id = $1",
            &[&run.id],
        )
        .await?;
    drop(client);
    let verdict: String = row.get(0);
    if verdict != "pending" {
        return Ok(StageReport {
            outcome: Outcome::Skipped,
            detail: format!("no patch to validate ({verdict})"),
        });
    }
    let diff: String = row.get::<_, Option<String>>(1).unwrap_or_default();
    let command: String = row.get::<_, Option<String>>(2).unwrap_or_default();
    let changes: ChangeSet = row
        .get::<_, Option<serde_json::Value>>(3)
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| StageError::Permanent(format!("the recorded change is unreadable: {e}")))?
        .unwrap_or_default();
    // The same script the patch stage reproduced the failure with.
    let step = match row.get::<_, Option<serde_json::Value>>(4) {
        Some(v) => serde_json::from_value(v)
            .map_err(|e| StageError::Permanent(format!("the recorded step is unreadable: {e}")))?,
        None => StepCommand::from_log(&command, Vec::new()),
    };
    let sandbox = ctx.sandbox().await?;
    let work = checkout(ctx, run).await?;
    let (sandbox, _) = heal::prepare(
        sandbox,
        work.path(),
        &dependency_scope(run),
        &step,
        &|msg| tracing::info!("{msg}"),
    )
    .await?;
    let (evidence, verdict) = heal::check(
        &sandbox,
        work.path(),
        &step,
        &changes,
        &diff,
        ctx.heal.validate_runs,
        &|msg| tracing::info!("{msg}"),
    )
    .await?;
    // Proofs on the validated tree, recorded before the verdict: a stage retried after a crash
    // finds the patch still pending and proves again.
    let proofs = if matches!(verdict, Verdict::Fixed) {
        prove::prove(&sandbox, work.path(), &changes, &prove::all()).await?
    } else {
        Vec::new()
    };
    let (name, reason) = verdict_name(&verdict);
    let mut client = ctx.pool.get().await?;
    // This attempt's proofs replace an earlier attempt's, with the verdict, at once.
    let tx = client.transaction().await?;
    tx.execute("DELETE FROM proofs WHERE run_id = $1", &[&run.id])
        .await?;
    for proof in &proofs {
        tx
            .execute(
                "INSERT INTO proofs (run_id, prover, outcome, command, detail) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (run_id, prover) DO UPDATE SET outcome = EXCLUDED.outcome,
                   command = EXCLUDED.command, detail = EXCLUDED.detail, created_at = now()",
                &[&run.id, &proof.prover, &proof.outcome.as_str(), &proof.command, &proof.detail],
            )
            .await?;
    }
    if let Some(ev) = &evidence {
        tx.execute(
                "INSERT INTO validations (run_id, applied, runs, passed, failed, duration_ms, excerpt, verdict, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (run_id) DO UPDATE SET applied = EXCLUDED.applied, runs = EXCLUDED.runs, passed = EXCLUDED.passed,
                   failed = EXCLUDED.failed, duration_ms = EXCLUDED.duration_ms, excerpt = EXCLUDED.excerpt,
                   verdict = EXCLUDED.verdict, reason = EXCLUDED.reason, created_at = now()",
                &[
                    &run.id,
                    &(ev.runs > 0),
                    &(ev.runs as i32),
                    &(ev.passed as i32),
                    &(ev.failed as i32),
                    &(ev.duration_ms as i64),
                    &ev.excerpt,
                    &name,
                    &reason,
                ],
            )
            .await?;
    }
    tx.execute(
        "UPDATE patches SET verdict = $2, reason = $3 WHERE run_id = $1",
        &[&run.id, &name, &reason],
    )
    .await?;
    tx.commit().await?;
    match verdict {
        Verdict::Fixed => Ok(StageReport {
            outcome: Outcome::Succeeded,
            detail: evidence
                .map(|ev| {
                    format!(
                        "fixed: the command passes {} of {} runs after the patch",
                        ev.passed, ev.runs
                    )
                })
                .unwrap_or_default(),
        }),
        // Retrying cannot change a rejection: fail the run with the reason.
        _ => Err(StageError::Permanent(format!(
            "patch rejected: {}",
            reason.unwrap_or_default()
        ))),
    }
}
