//! Ingest's side of the schema: deliveries, installations, repositories, incidents and the
//! runs they open, all written in the one transaction that also writes the outbox row.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Object, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Gates;
use crate::envelope::Envelope;
use crate::events::{
    CheckRunEvent, CheckSuiteEvent, IssueCommentEvent, PullRequestEvent, RunVerdict, StatusEvent,
    WorkflowRunEvent,
};
use crate::external_ci;
use crate::failed_run;
use crate::installations::{self, InstallationEvent};
use crate::stage::Stage;
use crate::{audit, outbox, reverts};

// The statements a failed run's ingest runs, shared by the general path below and the
// pipelined one (`failed_run`).
pub(crate) const STORE: &str =
    "INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, repository_id, outcome, payload)
     VALUES ($1, $2, $3, $4, $5, $7, $6::text::jsonb)
     ON CONFLICT (delivery_id) DO NOTHING";
/// The outcome a delivery that creates a run records.
pub(crate) const RUN_CREATED: &str = "run_created";
/// The outcome of a failed run a gate stopped.
pub(crate) const IGNORED_INACTIVE: &str = "ignored_inactive";
pub(crate) const RECORD_OUTCOME: &str =
    "UPDATE webhook_deliveries SET outcome = $2, reason = $3 WHERE delivery_id = $1";
/// Deliveries of one GitHub run (redeliveries under new ids, or GitHub's own retries) wait
/// for each other here, so the second sees the first's run instead of racing it into a
/// unique violation.
pub(crate) const LOCK_RUN: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('selfheal.workflow_run:' || $1::text, 0))";
pub(crate) const STOPPED: &str = "SELECT stopped_by, stopped_reason FROM incidents
     WHERE repository_id = $1 AND branch = $2 AND workflow_id = $3 AND status = 'open' AND stopped_at IS NOT NULL
       AND head_repository_id = $4";
pub(crate) const BUDGET_USED: &str =
    "SELECT count(*) FROM runs WHERE installation_id = $1 AND created_at > now() - interval '1 hour'";
/// A green run of a workflow on a branch, kept if it is the latest created.
const PASSED: &str = "INSERT INTO branch_passes (repository_id, head_repository_id, branch, workflow_id, run_created_at, github_run_id)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (repository_id, head_repository_id, branch, workflow_id) DO UPDATE
       SET run_created_at = EXCLUDED.run_created_at, github_run_id = EXCLUDED.github_run_id
       WHERE branch_passes.run_created_at < EXCLUDED.run_created_at";
/// The latest green run of the failed run's workflow and branch, if GitHub created it after
/// the failed run ($5): a later push, not a slower run of an earlier one, nor a re-run.
pub(crate) const PASSED_SINCE: &str = "SELECT run_created_at, github_run_id FROM branch_passes
     WHERE repository_id = $1 AND head_repository_id = $2 AND branch = $3 AND workflow_id = $4
       AND run_created_at > $5";
/// A workflow's runs on one branch take turns here where they open or resolve its incident
/// (an admission and a green run's ingest): otherwise an admission that read no green run
/// could commit an incident the concurrent green run's resolve did not see, left open on a
/// green branch.
pub(crate) const LOCK_BRANCH: &str = "SELECT pg_advisory_xact_lock(hashtextextended(
     'selfheal.branch:' || $1::bigint || ':' || $2::bigint || ':' || $3::text || ':' || $4::bigint, 0))";
pub(crate) const EXISTING_RUN: &str =
    "SELECT id FROM runs WHERE github_run_id = $1 AND github_run_attempt = $2 AND trigger = 'workflow_run'";
/// The failed run's incident: opened, or joined when one is open for its branch and workflow.
/// A macro so that the failed-run path's `OPEN_RUN` is built from the same text.
macro_rules! open_incident_sql {
    () => {
        "INSERT INTO incidents (id, repository_id, head_repository_id, branch, workflow_id, workflow_name, status, first_failed_at)
     VALUES ($1, $2, $7, $3, $4, $5, 'open', $6)
     ON CONFLICT (repository_id, head_repository_id, branch, workflow_id) WHERE status = 'open'
     DO UPDATE SET failed_runs = incidents.failed_runs + 1
     RETURNING id, (xmax = 0) AS created"
    };
}
pub(crate) use open_incident_sql;
pub(crate) const OPEN_INCIDENT: &str = open_incident_sql!();
pub(crate) const INSERT_RUN: &str =
    "INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
                       github_run_id, github_run_attempt, head_sha, conclusion, status, fix_branch)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10)";

/// Stores the delivery (`STORE`, prepared) as having come to `outcome`; 0 when its id was
/// stored before.
pub(crate) async fn store(
    client: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    delivery: &Delivery<'_>,
    outcome: &str,
) -> Result<u64, tokio_postgres::Error> {
    let row = delivery.envelope;
    client
        .execute(
            statement,
            &[
                &delivery.id,
                &delivery.event,
                &row.action,
                &row.installation_id,
                &row.repository_id,
                &delivery.payload,
                &outcome,
            ],
        )
        .await
}

#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub id: &'a str,
    pub event: &'a str,
    /// The body as GitHub sent it, stored as such: one JSON object (`envelope` says so).
    pub payload: &'a str,
    pub envelope: &'a Envelope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// This delivery id was seen before; nothing was written.
    Duplicate,
    /// Stored for the record; nothing to act on.
    Stored,
    /// A failed run, stored with an outbox row for a worker to admit (`failed_run::admit`).
    Accepted { outbox_id: i64 },
    /// A failed run (an incident is open), or a run of the fix's own CI: the run's first
    /// stage waits in the outbox.
    RunCreated {
        run_id: Uuid,
        incident_id: Uuid,
        outbox_id: i64,
        stage: Stage,
    },
    /// A `/selfheal` command waits in the outbox for a worker to check and carry out.
    CommandQueued {
        command_id: i64,
        outbox_id: i64,
        command: &'static str,
    },
    /// A failed run already known under another delivery id.
    RunExists { run_id: Uuid },
    /// A green run closed the open incident.
    Resolved { incident_id: Uuid },
    /// An installation or its repositories changed.
    Installation { outcome: &'static str },
    /// A failed run of a repository selfheal must no longer act on.
    Ignored { reason: String },
    /// A run whose code is not the repository's own branch (a fork, a merge queue, a tag):
    /// selfheal never acts on it, red or green.
    Untrusted { reason: String },
    /// A person closed or merged selfheal's own pull request.
    FixClosed { incident_id: Uuid, merged: bool },
    /// A revert of selfheal's merged pull request was merged (GitHub's Revert button).
    FixReverted { incident_id: Uuid },
}

impl Ingested {
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Ingested::Ignored { reason } | Ingested::Untrusted { reason } => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            Ingested::Duplicate => "duplicate",
            Ingested::Stored => "stored",
            Ingested::Accepted { .. } => failed_run::ACCEPTED,
            Ingested::RunCreated { .. } => RUN_CREATED,
            Ingested::CommandQueued { .. } => "command_queued",
            Ingested::RunExists { .. } => "run_exists",
            Ingested::Resolved { .. } => "incident_resolved",
            Ingested::Installation { outcome } => outcome,
            Ingested::Ignored { .. } => IGNORED_INACTIVE,
            Ingested::Untrusted { .. } => "ignored_untrusted",
            Ingested::FixClosed { merged: true, .. } => "fix_merged",
            Ingested::FixClosed { merged: false, .. } => "fix_closed",
            Ingested::FixReverted { .. } => "fix_reverted",
        }
    }
}

/// A delivery's payload, parsed for the events selfheal acts on.
#[derive(Debug)]
pub enum Parsed {
    WorkflowRun(WorkflowRunEvent),
    Installation(InstallationEvent),
    Comment(IssueCommentEvent),
    PullRequest(PullRequestEvent),
    CheckSuite(CheckSuiteEvent),
    CheckRun(CheckRunEvent),
    Status(StatusEvent),
    Other,
}

/// Whether the delivery is a failed run that is only stored, with the outbox row that has a
/// worker admit it (`failed_run::accept`; `accepts` writes those in batches).
pub fn only_accepted(parsed: &Parsed, gates: &Gates) -> bool {
    // A workflow the allowlist leaves out is settled on the general path, from the web's own
    // settings; the budget needs a count, and goes with the delivery.
    matches!(parsed, Parsed::WorkflowRun(ev) if failed_run::applies(ev) && unlisted_workflow(ev, gates).is_none())
}

/// Stores a verified delivery and acts on it, in one transaction on `client`: either
/// everything (delivery, incident, run, outbox row, audit rows) lands, or nothing. A failed
/// run is only stored, with the outbox row that has a worker admit it (`failed_run`).
pub async fn ingest(
    mut client: Object,
    delivery: &Delivery<'_>,
    parsed: &Parsed,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    if only_accepted(parsed, gates) {
        let traceparent = crate::trace_context::current();
        return failed_run::accept(
            &client,
            delivery,
            traceparent.as_deref(),
            gates.runs_per_hour,
        )
        .await;
    }
    let tx = client.transaction().await?;
    let result = ingest_in(&tx, delivery, parsed, gates).await?;
    tx.commit().await?;
    Ok(result)
}

async fn ingest_in(
    tx: &Transaction<'_>,
    delivery: &Delivery<'_>,
    parsed: &Parsed,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    let inserted = store(tx, &tx.prepare_cached(STORE).await?, delivery, "stored").await?;
    if inserted == 0 {
        return Ok(Ingested::Duplicate);
    }

    let result = match parsed {
        Parsed::WorkflowRun(ev) => workflow_run(tx, delivery.id, ev, gates).await?,
        Parsed::Comment(ev) => crate::commands::stored(tx, delivery.id, ev).await?,
        Parsed::PullRequest(ev) => fix_closed(tx, ev).await?,
        Parsed::CheckSuite(ev) => {
            external_ci::reported(tx, delivery.id, external_ci::Report::check_suite(ev)).await?
        }
        Parsed::CheckRun(ev) => {
            external_ci::reported(tx, delivery.id, external_ci::Report::check_run(ev)).await?
        }
        Parsed::Status(ev) => {
            external_ci::reported(tx, delivery.id, external_ci::Report::status(ev)).await?
        }
        Parsed::Installation(ev) => Ingested::Installation {
            outcome: installations::apply(tx, delivery.event, ev).await?,
        },
        Parsed::Other => Ingested::Stored,
    };
    if result != Ingested::Stored {
        tx.execute(
            &tx.prepare_cached(RECORD_OUTCOME).await?,
            &[&delivery.id, &result.outcome(), &result.reason()],
        )
        .await?;
    }
    Ok(result)
}

async fn workflow_run(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    if let Some(reason) = ev.untrusted_reason() {
        return Ok(if ev.verdict() == RunVerdict::Ignored {
            Ingested::Stored
        } else {
            Ingested::Untrusted { reason }
        });
    }
    if ev.verdict() == RunVerdict::Ignored {
        // A run just requested, or cancelled by the next push (`cancel-in-progress`), still
        // says what its push reverts.
        return Ok(match reverts::by_push(tx, ev).await? {
            Some(incident_id) => Ingested::FixReverted { incident_id },
            None => Ingested::Stored,
        });
    }
    tx.execute(
        &tx.prepare_cached(LOCK_RUN).await?,
        &[&ev.workflow_run.id.to_string()],
    )
    .await?;
    // A revert pushed by hand is seen in the run it starts, red or green, before anything else
    // the run means, and whatever the gates say: they decide whether selfheal acts, while a
    // revert is a fact about a fix it made.
    let reverted = reverts::by_push(tx, ev).await?;
    let ingested = match fix_branch(tx, ev).await? {
        Some(fix) => fix_run(tx, delivery_id, ev, &fix).await?,
        None => match ev.verdict() {
            RunVerdict::Failed => match gate(tx, ev, gates).await? {
                Some(reason) => Ingested::Ignored { reason },
                None => open_run(tx, delivery_id, ev).await?,
            },
            RunVerdict::Succeeded => resolve(tx, delivery_id, ev).await?,
            RunVerdict::Ignored => Ingested::Stored,
        },
    };
    Ok(match (ingested, reverted) {
        (Ingested::Stored, Some(incident_id)) => Ingested::FixReverted { incident_id },
        (ingested, _) => ingested,
    })
}

/// Why a failed run must not be acted on, if it must not.
async fn gate(
    tx: &Transaction<'_>,
    ev: &WorkflowRunEvent,
    gates: &Gates,
) -> Result<Option<String>, tokio_postgres::Error> {
    if let Some(reason) = installations::inactive_reason(tx, ev.repository.id).await? {
        return Ok(Some(reason));
    }
    let wr = &ev.workflow_run;
    let stopped = tx
        .query_opt(
            &tx.prepare_cached(STOPPED).await?,
            &[
                &ev.repository.id,
                &ev.branch(),
                &wr.workflow_id,
                &ev.head_repository_id(),
            ],
        )
        .await?;
    if let Some(row) = stopped {
        return Ok(Some(stopped_reason(&row)));
    }
    if let Some(reason) = unlisted_workflow(ev, gates) {
        return Ok(Some(reason));
    }
    if let (Some(_), Some(installation)) = (gates.runs_per_hour, ev.installation.as_ref()) {
        let used: i64 = tx
            .query_one(&tx.prepare_cached(BUDGET_USED).await?, &[&installation.id])
            .await?
            .get(0);
        return Ok(over_budget(gates.runs_per_hour, used));
    }
    Ok(None)
}

/// `STOPPED`'s row, said.
pub(crate) fn stopped_reason(row: &tokio_postgres::Row) -> String {
    format!(
        "selfheal was stopped on this incident by {}: {}",
        row.get::<_, Option<String>>(0).unwrap_or_default(),
        row.get::<_, Option<String>>(1).unwrap_or_default()
    )
}

/// A workflow `SELFHEAL_WORKFLOWS` does not list, if the list is set.
pub(crate) fn unlisted_workflow(ev: &WorkflowRunEvent, gates: &Gates) -> Option<String> {
    let wr = &ev.workflow_run;
    let names = [wr.name.as_deref(), wr.path.as_deref()];
    if gates.workflows.is_empty()
        || gates
            .workflows
            .iter()
            .any(|w| names.contains(&Some(w.as_str())))
    {
        return None;
    }
    let shown = wr.path.as_deref().or(wr.name.as_deref()).unwrap_or("?");
    Some(format!("workflow {shown} is not in SELFHEAL_WORKFLOWS"))
}

/// The installation's hourly budget, used up by `used` runs in the last hour.
pub(crate) fn over_budget(runs_per_hour: Option<i64>, used: i64) -> Option<String> {
    let budget = runs_per_hour?;
    (used >= budget).then(|| format!("installation budget of {budget} runs per hour is used up"))
}

/// The audit detail of a run created for a delivery.
pub(crate) fn run_created_detail(
    delivery_id: &str,
    incident_id: Uuid,
    ev: &WorkflowRunEvent,
    fix_branch: Option<&str>,
) -> Value {
    let wr = &ev.workflow_run;
    let mut detail = json!({"delivery": delivery_id, "incident": incident_id, "github_run_id": wr.id, "head_sha": wr.head_sha});
    if let Some(branch) = fix_branch {
        detail["fix_branch"] = json!(branch);
        detail["conclusion"] = json!(wr.conclusion);
    }
    detail
}

/// The audit detail of an incident opened by a failed run.
pub(crate) fn incident_opened_detail(ev: &WorkflowRunEvent) -> Value {
    json!({"repository": ev.repository.full_name, "branch": ev.branch(), "workflow_id": ev.workflow_run.workflow_id})
}

async fn open_run(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
) -> Result<Ingested, tokio_postgres::Error> {
    let wr = &ev.workflow_run;
    if let Some(run_id) = existing_run(tx, ev).await? {
        return Ok(Ingested::RunExists { run_id });
    }
    lock_branch(tx, ev).await?;
    // The caller has checked that a failed run names its installation.
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    installations::upsert_repository(tx, delivery_id, ev, installation_id).await?;

    let row = tx
        .query_one(
            &tx.prepare_cached(OPEN_INCIDENT).await?,
            &[
                &Uuid::new_v4(),
                &ev.repository.id,
                &ev.branch(),
                &wr.workflow_id,
                &wr.name,
                &wr.updated_at,
                &ev.head_repository_id(),
            ],
        )
        .await?;
    let incident_id: Uuid = row.get("id");
    let created: bool = row.get("created");

    if created {
        audit::append(
            tx,
            "github:webhook",
            "incident.opened",
            &incident_id.to_string(),
            &incident_opened_detail(ev),
        )
        .await?;
    }
    create_run(tx, delivery_id, ev, incident_id, None, Stage::Triage).await
}

/// The run a delivery already created for this GitHub run attempt, if any.
async fn existing_run(
    tx: &Transaction<'_>,
    ev: &WorkflowRunEvent,
) -> Result<Option<Uuid>, tokio_postgres::Error> {
    let wr = &ev.workflow_run;
    Ok(tx
        .query_opt(
            &tx.prepare_cached(EXISTING_RUN).await?,
            &[&wr.id, &wr.run_attempt],
        )
        .await?
        .map(|row| row.get(0)))
}

/// A run of the incident (on `fix_branch` for the fix's own CI), its first stage's outbox
/// row and its audit entry.
async fn create_run(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
    incident_id: Uuid,
    fix_branch: Option<&str>,
    stage: Stage,
) -> Result<Ingested, tokio_postgres::Error> {
    let wr = &ev.workflow_run;
    // Web refuses a failed run without an installation; App deliveries always name one.
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    let run_id = Uuid::new_v4();
    tx.execute(
        &tx.prepare_cached(INSERT_RUN).await?,
        &[
            &run_id,
            &incident_id,
            &delivery_id,
            &installation_id,
            &ev.repository.full_name,
            &wr.id,
            &wr.run_attempt,
            &wr.head_sha,
            &wr.conclusion.as_deref().unwrap_or("failure"),
            &fix_branch,
        ],
    )
    .await?;
    let outbox_id = outbox::insert(tx, run_id, stage).await?;
    let detail = run_created_detail(delivery_id, incident_id, ev, fix_branch);
    audit::append(
        tx,
        "github:webhook",
        "run.created",
        &run_id.to_string(),
        &detail,
    )
    .await?;
    Ok(Ingested::RunCreated {
        run_id,
        incident_id,
        outbox_id,
        stage,
    })
}

/// The incident whose fix lives on this run's branch, when the run is the fix's own CI.
struct FixBranch {
    incident_id: Uuid,
    resolved: bool,
    stopped: Option<String>,
}

async fn fix_branch(
    tx: &Transaction<'_>,
    ev: &WorkflowRunEvent,
) -> Result<Option<FixBranch>, tokio_postgres::Error> {
    if !ev.branch().starts_with("selfheal/") {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            &tx.prepare_cached("SELECT d.incident_id, i.status = 'resolved', i.stopped_reason, i.stopped_at IS NOT NULL
             FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE d.kind = 'pull_request' AND d.branch = $1 AND i.repository_id = $2
               AND i.head_repository_id = $3").await?,
            &[&ev.branch(), &ev.repository.id, &ev.head_repository_id()],
        )
        .await?;
    Ok(row.map(|r| FixBranch {
        incident_id: r.get(0),
        resolved: r.get(1),
        stopped: r
            .get::<_, bool>(3)
            .then(|| r.get::<_, Option<String>>(2).unwrap_or_default()),
    }))
}

/// A run of the fix's own CI joins the incident it fixes: red, it is healed like any failure
/// (loop protection decides in verify whether selfheal tries again); green, it goes straight
/// to verify, which checks the fix's checks and the merge policy.
async fn fix_run(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
    fix: &FixBranch,
) -> Result<Ingested, tokio_postgres::Error> {
    let stage = match ev.verdict() {
        RunVerdict::Failed => Stage::Triage,
        RunVerdict::Succeeded => Stage::Verify,
        RunVerdict::Ignored => return Ok(Ingested::Stored),
    };
    if fix.resolved {
        return Ok(Ingested::Ignored {
            reason: "the fix's CI ran after its incident was resolved".into(),
        });
    }
    if let Some(reason) = &fix.stopped {
        return Ok(Ingested::Ignored {
            reason: format!("selfheal was stopped on this incident: {reason}"),
        });
    }
    if let Some(reason) = installations::inactive_reason(tx, ev.repository.id).await? {
        return Ok(Ingested::Ignored { reason });
    }
    if let Some(run_id) = existing_run(tx, ev).await? {
        return Ok(Ingested::RunExists { run_id });
    }
    create_run(
        tx,
        delivery_id,
        ev,
        fix.incident_id,
        Some(ev.branch()),
        stage,
    )
    .await
}

/// selfheal's pull request closed by a person: merged, the merge is recorded (the merge
/// commit's green run will resolve the incident); closed unmerged, selfheal takes that as
/// "not this fix" and stops on the incident rather than push or open it again.
async fn fix_closed(
    tx: &Transaction<'_>,
    ev: &PullRequestEvent,
) -> Result<Ingested, tokio_postgres::Error> {
    let pr = &ev.pull_request;
    if ev.action == "closed" && pr.merged == Some(true) {
        if let Some((reverted, branch)) = reverts::button(&pr.head.name) {
            return reverts::by_button(tx, ev, reverted, branch).await;
        }
    }
    if ev.action != "closed" || !pr.head.name.starts_with("selfheal/") {
        return Ok(Ingested::Stored);
    }
    let Some(row) = tx
        .query_opt(
            &tx.prepare_cached("SELECT d.incident_id, d.merged_at IS NOT NULL FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE d.kind = 'pull_request' AND d.pr_number = $1 AND d.branch = $2 AND i.repository_id = $3").await?,
            &[&pr.number, &pr.head.name, &ev.repository.id],
        )
        .await?
    else {
        return Ok(Ingested::Stored);
    };
    let incident_id: Uuid = row.get(0);
    let merged = pr.merged.unwrap_or(false);
    if merged {
        if row.get::<_, bool>(1) {
            // selfheal's own merge, reported back.
            return Ok(Ingested::Stored);
        }
        let by = pr
            .merged_by
            .as_ref()
            .map(|u| u.login.as_str())
            .unwrap_or(&ev.sender.login);
        tx.execute(
            &tx.prepare_cached("UPDATE deliveries SET merged_at = now(), merge_commit_sha = $2, decided_by = $3, updated_at = now()
             WHERE incident_id = $1 AND kind = 'pull_request'").await?,
            &[&incident_id, &pr.merge_commit_sha, &format!("github:{by}")],
        )
        .await?;
        audit::append(
            tx,
            &format!("github:{by}"),
            "pull_request.merged",
            &incident_id.to_string(),
            &json!({"repository": ev.repository.full_name, "pr": pr.number, "merge_commit": pr.merge_commit_sha}),
        )
        .await?;
    } else {
        let reason = format!(
            "@{} closed PR #{} without merging",
            ev.sender.login, pr.number
        );
        tx.execute(
            &tx.prepare_cached("UPDATE deliveries SET closed_at = coalesce(closed_at, now()), branch_sweep_claimed_at = NULL,
                    updated_at = now()
             WHERE incident_id = $1 AND kind = 'pull_request'").await?,
            &[&incident_id],
        )
        .await?;
        stop(
            tx,
            incident_id,
            &format!("github:{}", ev.sender.login),
            &reason,
            json!({}),
        )
        .await?;
    }
    Ok(Ingested::FixClosed {
        incident_id,
        merged,
    })
}

/// selfheal stops acting on the open incident, which stays open until its branch is green (so
/// MTTR counts the time people take). `by` is the actor; `detail` adds to the audit entry.
/// Returns whether it was running until now.
pub async fn stop(
    client: &impl GenericClient,
    incident_id: Uuid,
    by: &str,
    reason: &str,
    mut detail: Value,
) -> Result<bool, tokio_postgres::Error> {
    let stopped = client
        .execute(
            &client
                .prepare_cached(
                    "UPDATE incidents SET stopped_at = now(), stopped_by = $2, stopped_reason = $3
             WHERE id = $1 AND stopped_at IS NULL AND status = 'open'",
                )
                .await?,
            &[&incident_id, &by, &reason],
        )
        .await?
        > 0;
    if stopped {
        detail["reason"] = json!(reason);
        audit::append(
            client,
            by,
            "incident.stopped",
            &incident_id.to_string(),
            &detail,
        )
        .await?;
    }
    Ok(stopped)
}

/// `LOCK_BRANCH` for the run's workflow and branch.
async fn lock_branch(
    tx: &Transaction<'_>,
    ev: &WorkflowRunEvent,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &tx.prepare_cached(LOCK_BRANCH).await?,
        &[
            &ev.repository.id,
            &ev.head_repository_id(),
            &ev.branch(),
            &ev.workflow_run.workflow_id,
        ],
    )
    .await?;
    Ok(())
}

async fn resolve(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
) -> Result<Ingested, tokio_postgres::Error> {
    let wr = &ev.workflow_run;
    let resolved_at: DateTime<Utc> = wr.updated_at;
    lock_branch(tx, ev).await?;
    // Remembered, so that a failed run created before this one and admitted after it is not
    // healed (`failed_run::admit`).
    if let Some(created_at) = wr.created_at {
        tx.execute(
            &tx.prepare_cached(PASSED).await?,
            &[
                &ev.repository.id,
                &ev.head_repository_id(),
                &ev.branch(),
                &wr.workflow_id,
                &created_at,
                &wr.id,
            ],
        )
        .await?;
    }
    // Only a green run that finished after the first failure resolves it (deliveries can
    // arrive out of order).
    let row = tx
        .query_opt(
            &tx.prepare_cached("UPDATE incidents SET status = 'resolved', resolved_at = $4, resolved_by_run_id = $5
             WHERE repository_id = $1 AND branch = $2 AND workflow_id = $3 AND status = 'open'
               AND first_failed_at <= $4 AND head_repository_id = $6
             RETURNING id").await?,
            &[
                &ev.repository.id,
                &ev.branch(),
                &wr.workflow_id,
                &resolved_at,
                &wr.id,
                &ev.head_repository_id(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Ingested::Stored);
    };
    let incident_id: Uuid = row.get(0);
    audit::append(
        tx,
        "github:webhook",
        "incident.resolved",
        &incident_id.to_string(),
        &json!({"github_run_id": wr.id, "resolved_at": resolved_at}),
    )
    .await?;
    // Resolved by another push while selfheal's fix is still open: that PR is stale, and a
    // worker closes it (verify, then deliver) with a comment.
    let stale = tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT 1 FROM deliveries WHERE incident_id = $1 AND kind = 'pull_request'
               AND pr_number IS NOT NULL AND merged_at IS NULL AND closed_at IS NULL",
            )
            .await?,
            &[&incident_id],
        )
        .await?;
    if stale.is_some() && existing_run(tx, ev).await?.is_none() {
        return create_run(tx, delivery_id, ev, incident_id, None, Stage::Verify).await;
    }
    Ok(Ingested::Resolved { incident_id })
}
