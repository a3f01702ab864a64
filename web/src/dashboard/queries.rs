//! What the dashboard shows, read in one read-only transaction per page (`read`) from the same
//! tables and report views a team queries (docs/reporting.md).

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// Rows a list shows at most.
const LIST_LIMIT: i64 = 100;

pub struct RunRow {
    pub id: Uuid,
    pub repository: String,
    pub branch: String,
    pub status: String,
    pub stage: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub class: Option<String>,
    pub strategy: Option<String>,
    pub verdict: Option<String>,
    pub pr_number: Option<i32>,
    pub pr_url: Option<String>,
    pub merged: bool,
}

/// The newest runs, of one status and one repository when given.
pub async fn runs(
    tx: &Transaction<'_>,
    status: Option<&str>,
    repository: Option<&str>,
) -> Result<Vec<RunRow>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT r.id, r.repository_full_name, i.branch, r.status, r.current_stage,
                    r.created_at, r.finished_at, d.class, p.strategy, p.verdict,
                    dl.pr_number, dl.pr_url, dl.merged_at IS NOT NULL
             FROM runs r
             JOIN incidents i ON i.id = r.incident_id
             LEFT JOIN diagnoses d ON d.run_id = r.id
             LEFT JOIN patches p ON p.run_id = r.id
             LEFT JOIN deliveries dl ON dl.run_id = r.id AND dl.kind = 'pull_request'
             WHERE ($1::text IS NULL OR r.status = $1)
               AND ($2::text IS NULL OR r.repository_full_name = $2)
             ORDER BY r.created_at DESC, r.id
             LIMIT $3",
            &[&status, &repository, &LIST_LIMIT],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RunRow {
            id: r.get(0),
            repository: r.get(1),
            branch: r.get(2),
            status: r.get(3),
            stage: r.get(4),
            created_at: r.get(5),
            finished_at: r.get(6),
            class: r.get(7),
            strategy: r.get(8),
            verdict: r.get(9),
            pr_number: r.get(10),
            pr_url: r.get(11),
            merged: r.get(12),
        })
        .collect())
}

pub struct Attempt {
    pub stage: String,
    pub attempt: i32,
    pub outcome: String,
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub seconds: Option<f64>,
    pub detail: Option<String>,
    pub error: Option<String>,
}

pub struct Diagnosis {
    pub class: String,
    pub tool: Option<String>,
    pub culprit: Option<String>,
    pub command: Option<String>,
    pub excerpt: String,
}

pub struct Patch {
    pub strategy: String,
    pub class: String,
    pub verdict: String,
    pub reason: Option<String>,
    pub diff: Option<String>,
}

pub struct Proof {
    pub verdict: String,
    pub runs: i32,
    pub passed: i32,
    pub failed: i32,
    pub seconds: f64,
    pub reason: Option<String>,
}

pub struct Decision {
    pub verdict: String,
    pub reason: String,
}

pub struct RunPage {
    pub run: RunRow,
    pub github_run_id: i64,
    pub head_sha: String,
    pub failure_reason: Option<String>,
    pub incident: Uuid,
    /// The incident's fix as selfheal last pushed it: what an operator's approval covers.
    pub fix_head: Option<String>,
    pub attempts: Vec<Attempt>,
    pub diagnosis: Option<Diagnosis>,
    pub patch: Option<Patch>,
    pub proof: Option<Proof>,
    pub decision: Option<Decision>,
}

pub async fn run(tx: &Transaction<'_>, id: Uuid) -> Result<Option<RunPage>, tokio_postgres::Error> {
    let Some(head) = tx
        .query_opt(
            "SELECT r.id, r.repository_full_name, i.branch, r.status, r.current_stage,
                    r.created_at, r.finished_at, d.class, p.strategy, p.verdict,
                    dl.pr_number, dl.pr_url, dl.merged_at IS NOT NULL,
                    r.github_run_id, r.head_sha, r.failure_reason, r.incident_id
             FROM runs r
             JOIN incidents i ON i.id = r.incident_id
             LEFT JOIN diagnoses d ON d.run_id = r.id
             LEFT JOIN patches p ON p.run_id = r.id
             LEFT JOIN deliveries dl ON dl.run_id = r.id AND dl.kind = 'pull_request'
             WHERE r.id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let run = RunRow {
        id: head.get(0),
        repository: head.get(1),
        branch: head.get(2),
        status: head.get(3),
        stage: head.get(4),
        created_at: head.get(5),
        finished_at: head.get(6),
        class: head.get(7),
        strategy: head.get(8),
        verdict: head.get(9),
        pr_number: head.get(10),
        pr_url: head.get(11),
        merged: head.get(12),
    };
    let attempts = tx
        .query(
            "SELECT stage, attempt, outcome, worker_id, started_at,
                    extract(epoch FROM finished_at - started_at)::float8, detail, error
             FROM stage_attempts WHERE run_id = $1 ORDER BY id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| Attempt {
            stage: r.get(0),
            attempt: r.get(1),
            outcome: r.get(2),
            worker: r.get(3),
            started_at: r.get(4),
            seconds: r.get(5),
            detail: r.get(6),
            error: r.get(7),
        })
        .collect();
    let diagnosis = tx
        .query_opt(
            "SELECT class, tool, culprit_file || coalesce(':' || culprit_line, ''), command, excerpt
             FROM diagnoses WHERE run_id = $1",
            &[&id],
        )
        .await?
        .map(|r| Diagnosis {
            class: r.get(0),
            tool: r.get(1),
            culprit: r.get(2),
            command: r.get(3),
            excerpt: r.get(4),
        });
    let patch = tx
        .query_opt(
            "SELECT strategy, class, verdict, reason, diff FROM patches WHERE run_id = $1",
            &[&id],
        )
        .await?
        .map(|r| Patch {
            strategy: r.get(0),
            class: r.get(1),
            verdict: r.get(2),
            reason: r.get(3),
            diff: r.get(4),
        });
    let proof = tx
        .query_opt(
            "SELECT verdict, runs, passed, failed, duration_ms::float8 / 1000, reason
             FROM validations WHERE run_id = $1",
            &[&id],
        )
        .await?
        .map(|r| Proof {
            verdict: r.get(0),
            runs: r.get(1),
            passed: r.get(2),
            failed: r.get(3),
            seconds: r.get(4),
            reason: r.get(5),
        });
    let decision = tx
        .query_opt(
            "SELECT verdict, reason FROM verifications WHERE run_id = $1",
            &[&id],
        )
        .await?
        .map(|r| Decision {
            verdict: r.get(0),
            reason: r.get(1),
        });
    let incident: Uuid = head.get(16);
    let fix_head = selfheal_shared::runs::last_pushed(tx, incident).await?;
    Ok(Some(RunPage {
        github_run_id: head.get(13),
        head_sha: head.get(14),
        failure_reason: head.get(15),
        incident,
        fix_head,
        run,
        attempts,
        diagnosis,
        patch,
        proof,
        decision,
    }))
}

pub struct IncidentRow {
    pub repository: String,
    pub branch: String,
    pub workflow: Option<String>,
    pub status: String,
    pub failed_runs: i32,
    pub first_failed_at: DateTime<Utc>,
    pub mttr_seconds: Option<f64>,
    pub healed: bool,
}

/// The newest incidents, from `incident_mttr` and `incident_healed`.
pub async fn incidents(tx: &Transaction<'_>) -> Result<Vec<IncidentRow>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT m.repository, m.branch, m.workflow_name, m.status, m.failed_runs,
                    m.first_failed_at, m.mttr_seconds, h.healed
             FROM incident_mttr m JOIN incident_healed h USING (incident_id)
             ORDER BY m.first_failed_at DESC LIMIT $1",
            &[&LIST_LIMIT],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| IncidentRow {
            repository: r.get(0),
            branch: r.get(1),
            workflow: r.get(2),
            status: r.get(3),
            failed_runs: r.get(4),
            first_failed_at: r.get(5),
            mttr_seconds: r.get(6),
            healed: r.get(7),
        })
        .collect())
}

pub struct Week {
    pub week: DateTime<Utc>,
    pub resolved: i64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

pub struct Rate {
    pub class: String,
    pub strategy: String,
    pub patches: i64,
    pub validated: i64,
    pub delivered: i64,
    pub merged: i64,
}

pub struct Accuracy {
    pub class: String,
    pub confirmed: i64,
    pub overturned: i64,
}

pub struct Quality {
    pub weeks: Vec<Week>,
    pub rates: Vec<Rate>,
    pub accuracy: Vec<Accuracy>,
    pub incidents: i64,
    pub healed: i64,
}

/// The last twelve weeks: MTTR per week of the incidents' first failure, what each strategy
/// made of each class, diagnosis accuracy, and the fix rate.
pub async fn quality(tx: &Transaction<'_>) -> Result<Quality, tokio_postgres::Error> {
    let since = "now() - interval '12 weeks'";
    let weeks = tx
        .query(
            &format!(
                "SELECT date_trunc('week', first_failed_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
                        count(mttr_seconds),
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY mttr_seconds),
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY mttr_seconds)
                 FROM incident_mttr WHERE first_failed_at > {since}
                 GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| Week {
            week: r.get(0),
            resolved: r.get(1),
            p50: r.get(2),
            p95: r.get(3),
        })
        .collect();
    let rates = tx
        .query(
            &format!(
                "SELECT class, strategy, sum(patches)::bigint, sum(validated)::bigint,
                        sum(delivered)::bigint, sum(merged)::bigint
                 FROM report_patch_outcomes WHERE week > {since}
                 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| Rate {
            class: r.get(0),
            strategy: r.get(1),
            patches: r.get(2),
            validated: r.get(3),
            delivered: r.get(4),
            merged: r.get(5),
        })
        .collect();
    let accuracy = tx
        .query(
            &format!(
                "SELECT class, sum(confirmed)::bigint, sum(overturned)::bigint
                 FROM report_diagnosis_accuracy WHERE week > {since}
                 GROUP BY 1 ORDER BY 1"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| Accuracy {
            class: r.get(0),
            confirmed: r.get(1),
            overturned: r.get(2),
        })
        .collect();
    let fix = tx
        .query_one(
            &format!(
                "SELECT coalesce(sum(incidents), 0)::bigint, coalesce(sum(healed), 0)::bigint
                 FROM report_fix_rate WHERE week > {since}"
            ),
            &[],
        )
        .await?;
    Ok(Quality {
        weeks,
        rates,
        accuracy,
        incidents: fix.get(0),
        healed: fix.get(1),
    })
}
