//! External CI reporting on selfheal's fix: a green check suite or check run of an app other
//! than GitHub Actions (whose runs come as `workflow_run`), or a successful commit status,
//! on the commit selfheal last pushed to its branch re-triggers verify, as a green workflow
//! run does. Recorded as a run of the incident (`trigger` = `check_suite`, `check_run` or
//! `status`, with the report's id and attempt 0: no workflow run has attempt 0). Whether the
//! reporter is the repository's CI is verify's to judge (`external_ci` and
//! `external_statuses` in the repository's `.github/selfheal.yml`), since only the worker
//! reads the repository.

use deadpool_postgres::Transaction;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::events::{self, CheckRunEvent, CheckSuiteEvent, StatusEvent};
use crate::incidents::Ingested;
use crate::installations;
use crate::outbox;
use crate::runs::Trigger;
use crate::stage::Stage;

/// One report of an external CI, whichever API it came through.
pub struct Report<'a> {
    pub trigger: Trigger,
    /// The suite's, check run's or status's id: with `trigger`, what makes a redelivery the
    /// same run.
    pub id: i64,
    pub head_sha: &'a str,
    /// selfheal's branches the report may be on: a suite's or check run's branch; for a
    /// status, every selfheal branch that contains its commit.
    pub branches: Vec<&'a str>,
    pub green: bool,
    pub repository_id: i64,
    pub repository: &'a str,
    pub installation_id: i64,
}

impl<'a> Report<'a> {
    /// A completed suite, not GitHub Actions'.
    pub fn check_suite(ev: &'a CheckSuiteEvent) -> Option<Self> {
        let suite = &ev.check_suite;
        (ev.action == "completed" && !ev.is_actions()).then(|| Report {
            trigger: Trigger::CheckSuite {
                app_id: suite.app.id,
                app: suite.app.slug.clone(),
            },
            id: suite.id,
            head_sha: &suite.head_sha,
            branches: ours(suite.head_branch.as_deref()),
            green: suite.conclusion.as_deref() == Some("success"),
            repository_id: ev.repository.id,
            repository: &ev.repository.full_name,
            installation_id: ev.installation.as_ref().map(|i| i.id).unwrap_or_default(),
        })
    }

    /// A completed check run, not GitHub Actions'.
    pub fn check_run(ev: &'a CheckRunEvent) -> Option<Self> {
        let run = &ev.check_run;
        (ev.action == "completed" && !events::is_actions(&run.app)).then(|| Report {
            trigger: Trigger::CheckRun {
                app_id: run.app.id,
                app: run.app.slug.clone(),
            },
            id: run.id,
            head_sha: &run.head_sha,
            branches: ours(run.check_suite.head_branch.as_deref()),
            green: run.conclusion.as_deref() == Some("success"),
            repository_id: ev.repository.id,
            repository: &ev.repository.full_name,
            installation_id: ev.installation.as_ref().map(|i| i.id).unwrap_or_default(),
        })
    }

    /// A final commit status (`pending` says nothing yet).
    pub fn status(ev: &'a StatusEvent) -> Option<Self> {
        (ev.state != "pending").then(|| Report {
            trigger: Trigger::Status {
                context: ev.context.clone(),
                creator: ev.sender.login.clone(),
            },
            id: ev.id,
            head_sha: &ev.sha,
            // A status names no branch of its own, only (up to ten) branches that contain
            // its commit.
            branches: ev
                .branches
                .iter()
                .map(|b| b.name.as_str())
                .filter(|b| b.starts_with("selfheal/"))
                .collect(),
            green: ev.state == "success",
            repository_id: ev.repository.id,
            repository: &ev.repository.full_name,
            installation_id: ev.installation.as_ref().map(|i| i.id).unwrap_or_default(),
        })
    }
}

fn ours(branch: Option<&str>) -> Vec<&str> {
    branch
        .filter(|b| b.starts_with("selfheal/"))
        .into_iter()
        .collect()
}

/// Acts on a report: a green one on selfheal's last commit creates a verify run.
pub async fn reported(
    tx: &Transaction<'_>,
    delivery_id: &str,
    report: Option<Report<'_>>,
) -> Result<Ingested, tokio_postgres::Error> {
    let Some(report) = report else {
        return Ok(Ingested::Stored);
    };
    if report.branches.is_empty() {
        return Ok(Ingested::Stored);
    }
    if !report.green {
        // A red external check is one of the fix's checks: the next verify (a green run, a
        // green suite) sees it and holds; selfheal cannot read an external CI's logs to heal.
        return Ok(Ingested::Stored);
    }
    let kind = report.trigger.kind();
    // Concurrent redeliveries of one report wait for each other here, so the second sees the
    // first's run instead of racing it into a unique violation.
    tx.execute(
        &tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('selfheal.' || $1::text || ':' || $2::text, 0))").await?,
        &[&kind, &report.id.to_string()],
    )
    .await?;
    // The incidents whose open fix is one of these branches, and the commit selfheal last
    // pushed to each.
    let rows = tx
        .query(
            &tx.prepare_cached("SELECT d.incident_id, i.status, i.stopped_at IS NOT NULL,
                    d.branch, (SELECT sha FROM (
                        SELECT a.commit_sha AS sha, a.pushed_at AS at FROM fix_attempts a
                        WHERE a.incident_id = d.incident_id AND a.pushed_at IS NOT NULL
                          AND a.commit_sha IS NOT NULL
                        UNION ALL
                        SELECT d.branch_updated_sha, d.branch_updated_at WHERE d.branch_updated_sha IS NOT NULL
                     ) p ORDER BY at DESC LIMIT 1)
             FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE d.kind = 'pull_request' AND d.branch = ANY($1) AND i.repository_id = $2
               AND d.merged_at IS NULL AND d.closed_at IS NULL").await?,
            &[&report.branches, &report.repository_id],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Ingested::Stored);
    }
    let Some(row) = rows
        .iter()
        .find(|r| r.get::<_, Option<&str>>(4) == Some(report.head_sha))
    else {
        return Ok(Ingested::Ignored {
            reason: format!(
                "{} {} is of {}, not of the commit selfheal last pushed",
                kind.replace('_', " "),
                report.id,
                report.head_sha
            ),
        });
    };
    let (incident_id, status, stopped, branch): (Uuid, String, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if status != "open" || stopped {
        return Ok(Ingested::Ignored {
            reason: "the fix's external CI reported after its incident was resolved or stopped"
                .into(),
        });
    }
    if let Some(reason) = installations::inactive_reason(tx, report.repository_id).await? {
        return Ok(Ingested::Ignored { reason });
    }
    if let Some(row) = tx
        .query_opt(
            &tx.prepare_cached("SELECT id FROM runs WHERE github_run_id = $1 AND github_run_attempt = 0 AND trigger = $2").await?,
            &[&report.id, &kind],
        )
        .await?
    {
        return Ok(Ingested::RunExists { run_id: row.get(0) });
    }
    let (app_id, app, by) = report.trigger.reporter();
    let run_id = Uuid::new_v4();
    tx.execute(
        &tx.prepare_cached("INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
                           github_run_id, github_run_attempt, head_sha, conclusion, status, fix_branch,
                           trigger, trigger_app_id, trigger_app, trigger_by)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7, 'success', 'queued', $8, $9, $10, $11, $12)").await?,
        &[
            &run_id,
            &incident_id,
            &delivery_id,
            &report.installation_id,
            &report.repository,
            &report.id,
            &report.head_sha,
            &branch,
            &kind,
            &app_id,
            &app,
            &by,
        ],
    )
    .await?;
    let outbox_id = outbox::insert(tx, run_id, Stage::Verify).await?;
    audit::append(
        tx,
        "github:webhook",
        "run.created",
        &run_id.to_string(),
        &json!({"delivery": delivery_id, "incident": incident_id, "trigger": kind, "report": report.id,
                "reporter": app, "posted_by": by, "head_sha": report.head_sha, "fix_branch": branch,
                "conclusion": "success"}),
    )
    .await?;
    Ok(Ingested::RunCreated {
        run_id,
        incident_id,
        outbox_id,
        stage: Stage::Verify,
    })
}
