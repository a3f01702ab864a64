//! External CI reporting on selfheal's fix through the Checks API (`check_suite` completed,
//! from an app other than GitHub Actions, whose runs come as `workflow_run`): a green suite
//! on the commit selfheal last pushed to its branch re-triggers verify, as a green workflow
//! run does. Recorded as a run of the incident (`trigger` = `check_suite`, attempt 0: a
//! suite has no attempts, and no workflow run has attempt 0).

use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::events::CheckSuiteEvent;
use crate::incidents::Ingested;
use crate::installations;
use crate::outbox;
use crate::stage::Stage;

pub async fn completed(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &CheckSuiteEvent,
) -> Result<Ingested, tokio_postgres::Error> {
    let suite = &ev.check_suite;
    let branch = suite.head_branch.as_deref().unwrap_or_default();
    if ev.action != "completed" || ev.is_actions() || !branch.starts_with("selfheal/") {
        return Ok(Ingested::Stored);
    }
    if suite.conclusion.as_deref() != Some("success") {
        // A red external check is one of the fix's checks: the next verify (a green run, a
        // green suite) sees it and holds; selfheal cannot read an external CI's logs to heal.
        return Ok(Ingested::Stored);
    }
    // Concurrent redeliveries of one suite wait for each other here, so the second sees the
    // first's run instead of racing it into a unique violation.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('selfheal.check_suite:' || $1::text, 0))",
        &[&suite.id.to_string()],
    )
    .await?;
    // The incident whose open fix is this branch, and the commit selfheal last pushed to it.
    let row = tx
        .query_opt(
            "SELECT d.incident_id, i.status, i.stopped_at IS NOT NULL,
                    (SELECT sha FROM (
                        SELECT a.commit_sha AS sha, a.pushed_at AS at FROM fix_attempts a
                        WHERE a.incident_id = d.incident_id AND a.pushed_at IS NOT NULL
                          AND a.commit_sha IS NOT NULL
                        UNION ALL
                        SELECT d.branch_updated_sha, d.branch_updated_at WHERE d.branch_updated_sha IS NOT NULL
                     ) p ORDER BY at DESC LIMIT 1)
             FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE d.kind = 'pull_request' AND d.branch = $1 AND i.repository_id = $2
               AND d.merged_at IS NULL AND d.closed_at IS NULL",
            &[&branch, &ev.repository.id],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Ingested::Stored);
    };
    let (incident_id, status, stopped, ours): (Uuid, String, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if status != "open" || stopped {
        return Ok(Ingested::Ignored {
            reason: "the fix's external CI reported after its incident was resolved or stopped"
                .into(),
        });
    }
    if ours.as_deref() != Some(suite.head_sha.as_str()) {
        return Ok(Ingested::Ignored {
            reason: format!(
                "check suite {} is of {}, not of the commit selfheal last pushed",
                suite.id, suite.head_sha
            ),
        });
    }
    if let Some(reason) = installations::inactive_reason(tx, ev.repository.id).await? {
        return Ok(Ingested::Ignored { reason });
    }
    if let Some(row) = tx
        .query_opt(
            "SELECT id FROM runs WHERE github_run_id = $1 AND github_run_attempt = 0 AND trigger = 'check_suite'",
            &[&suite.id],
        )
        .await?
    {
        return Ok(Ingested::RunExists { run_id: row.get(0) });
    }
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    let run_id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
                           github_run_id, github_run_attempt, head_sha, conclusion, status, fix_branch,
                           trigger, trigger_app_id, trigger_app)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 'success', 'queued', $8, 'check_suite', $9, $10)",
        &[
            &run_id,
            &incident_id,
            &delivery_id,
            &installation_id,
            &ev.repository.full_name,
            &suite.id,
            &suite.head_sha,
            &branch,
            &suite.app.id,
            &suite.app.slug,
        ],
    )
    .await?;
    let outbox_id = outbox::insert(tx, run_id, Stage::Verify).await?;
    audit::append(
        tx,
        "github:webhook",
        "run.created",
        &run_id.to_string(),
        &json!({"delivery": delivery_id, "incident": incident_id, "check_suite": suite.id,
                "head_sha": suite.head_sha, "fix_branch": branch, "conclusion": "success"}),
    )
    .await?;
    Ok(Ingested::RunCreated {
        run_id,
        incident_id,
        outbox_id,
        stage: Stage::Verify,
    })
}
