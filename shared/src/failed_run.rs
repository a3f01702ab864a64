//! A failed run on one of the repository's own branches: the delivery ingest sees most, and
//! under load the one that counts. The general path (`incidents`) sends its dozen statements
//! one after another, each waiting for the answer before it; here they go in three pipelined
//! round trips. tokio-postgres sends the requests of futures polled together on one
//! connection without waiting, and Postgres runs them in the order they arrive, one after
//! another inside the transaction: so the order written is the order run (the reads after the
//! run's lock, the outbox row after its run, `incident.opened` before `run.created`), and
//! what ingest promises (one transaction, dedup, the outbox, the audit rows) is unchanged.
//!
//! The order holds only if each future sends on its first poll: every statement is prepared
//! first (`prepared`), so nothing awaits before its request is sent. `futures_util::try_join!`
//! polls in the order written.

use deadpool_postgres::Transaction;
use futures_util::try_join;
use tokio_postgres::Statement;
use uuid::Uuid;

use crate::config::Gates;
use crate::events::{RunVerdict, WorkflowRunEvent};
use crate::incidents::{self, Delivery, Ingested};
use crate::stage::Stage;
use crate::{audit, installations, outbox};

/// Whether the delivery takes this path: a failed run selfheal may act on, not on one of
/// selfheal's own branches (the fix's CI joins its incident on the general path).
pub(crate) fn applies(ev: &WorkflowRunEvent) -> bool {
    ev.verdict() == RunVerdict::Failed
        && ev.untrusted_reason().is_none()
        && !ev.branch().starts_with("selfheal/")
}

struct Prepared {
    store: Statement,
    lock: Statement,
    inactive: Statement,
    stopped: Statement,
    budget_used: Statement,
    existing_run: Statement,
    known: Statement,
    add_installation: Statement,
    add_repository: Statement,
    open_incident: Statement,
    append: Statement,
    insert_run: Statement,
    insert_stage: Statement,
    record_outcome: Statement,
}

/// Every statement, prepared once per connection (one pipelined round trip the first time,
/// none after: deadpool caches them on the connection).
async fn prepared(tx: &Transaction<'_>) -> Result<Prepared, tokio_postgres::Error> {
    let (
        store,
        lock,
        inactive,
        stopped,
        budget_used,
        existing_run,
        known,
        add_installation,
        add_repository,
        open_incident,
        append,
        insert_run,
        insert_stage,
        record_outcome,
    ) = try_join!(
        tx.prepare_cached(incidents::STORE),
        tx.prepare_cached(incidents::LOCK_RUN),
        tx.prepare_cached(installations::INACTIVE),
        tx.prepare_cached(incidents::STOPPED),
        tx.prepare_cached(incidents::BUDGET_USED),
        tx.prepare_cached(incidents::EXISTING_RUN),
        tx.prepare_cached(installations::KNOWN),
        tx.prepare_cached(installations::ADD_INSTALLATION),
        tx.prepare_cached(installations::ADD_REPOSITORY),
        tx.prepare_cached(incidents::OPEN_INCIDENT),
        tx.prepare_cached(audit::APPEND_EACH),
        tx.prepare_cached(incidents::INSERT_RUN),
        tx.prepare_cached(outbox::INSERT_STAGE),
        tx.prepare_cached(incidents::RECORD_OUTCOME),
    )?;
    Ok(Prepared {
        store,
        lock,
        inactive,
        stopped,
        budget_used,
        existing_run,
        known,
        add_installation,
        add_repository,
        open_incident,
        append,
        insert_run,
        insert_stage,
        record_outcome,
    })
}

/// Stores the delivery and, unless a gate says no or the run is known, opens (or joins) the
/// incident and creates the run with its first stage in the outbox. Inside the caller's
/// transaction, as `incidents::ingest`.
pub(crate) async fn ingest(
    tx: &Transaction<'_>,
    delivery: &Delivery<'_>,
    ev: &WorkflowRunEvent,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    let s = prepared(tx).await?;
    let wr = &ev.workflow_run;
    // The caller has checked that a failed run names its installation.
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    let (repository_id, branch, head_repository_id) =
        (ev.repository.id, ev.branch(), ev.head_repository_id());
    let run_key = wr.id.to_string();
    let count_budget = gates.runs_per_hour.is_some() && ev.installation.is_some();

    // 1. The delivery, the run's lock, and everything the gates and the dedup read.
    let (stored, _, inactive, stopped, used, existing, known) = try_join!(
        // Stored as what nearly every such delivery comes to; the few that a gate or the
        // dedup settles are updated below. One write of the row, not two.
        incidents::store(tx, &s.store, delivery, incidents::RUN_CREATED),
        async { tx.execute(&s.lock, &[&run_key]).await },
        async { tx.query_opt(&s.inactive, &[&repository_id]).await },
        async {
            tx.query_opt(
                &s.stopped,
                &[
                    &repository_id,
                    &branch,
                    &wr.workflow_id,
                    &head_repository_id,
                ],
            )
            .await
        },
        async {
            if count_budget {
                let row = tx.query_one(&s.budget_used, &[&installation_id]).await?;
                Ok(Some(row.get::<_, i64>(0)))
            } else {
                Ok(None)
            }
        },
        async {
            tx.query_opt(&s.existing_run, &[&wr.id, &wr.run_attempt])
                .await
        },
        async {
            tx.query_opt(&s.known, &[&installation_id, &repository_id])
                .await
        },
    )?;
    if stored == 0 {
        return Ok(Ingested::Duplicate);
    }
    // The gates in the general path's order (`incidents::gate`).
    let ignored = installations::inactive(inactive.as_ref())
        .or_else(|| stopped.as_ref().map(incidents::stopped_reason))
        .or_else(|| incidents::unlisted_workflow(ev, gates))
        .or_else(|| used.and_then(|used| incidents::over_budget(gates, used)));
    let settled = match (ignored, existing) {
        (Some(reason), _) => Some(Ingested::Ignored { reason }),
        (None, Some(run)) => Some(Ingested::RunExists { run_id: run.get(0) }),
        (None, None) => None,
    };
    if let Some(result) = settled {
        tx.execute(
            &s.record_outcome,
            &[&delivery.id, &result.outcome(), &result.reason()],
        )
        .await?;
        return Ok(result);
    }

    // 2. The installation and repository where they changed, and the incident.
    let (installation_known, repository_known) =
        installations::known(known.as_ref(), ev, installation_id);
    let login = installations::login(ev);
    let new_incident = Uuid::new_v4();
    let (_, _, incident) = try_join!(
        async {
            if installation_known {
                Ok(0)
            } else {
                tx.execute(&s.add_installation, &[&installation_id, &login])
                    .await
            }
        },
        async {
            if repository_known {
                Ok(0)
            } else {
                tx.execute(
                    &s.add_repository,
                    &[&repository_id, &installation_id, &ev.repository.full_name],
                )
                .await
            }
        },
        async {
            tx.query_one(
                &s.open_incident,
                &[
                    &new_incident,
                    &repository_id,
                    &branch,
                    &wr.workflow_id,
                    &wr.name,
                    &wr.updated_at,
                    &head_repository_id,
                ],
            )
            .await
        },
    )?;
    let incident_id: Uuid = incident.get("id");
    let created: bool = incident.get("created");

    // 3. The run, its first stage's outbox row, the audit rows.
    let run_id = Uuid::new_v4();
    let stage = Stage::Triage;
    let (incident_subject, run_subject) = (incident_id.to_string(), run_id.to_string());
    let opened = incidents::incident_opened_detail(ev);
    let run_detail = incidents::run_created_detail(delivery.id, incident_id, ev, None);
    let conclusion = wr.conclusion.as_deref().unwrap_or("failure");
    // `incident.opened` before `run.created`, in one call.
    let (mut actions, mut subjects, mut details) = (
        vec!["run.created"],
        vec![run_subject.as_str()],
        vec![run_detail],
    );
    if created {
        actions.insert(0, "incident.opened");
        subjects.insert(0, incident_subject.as_str());
        details.insert(0, opened);
    }
    let (_, outbox_row, _) = try_join!(
        async {
            tx.execute(
                &s.insert_run,
                &[
                    &run_id,
                    &incident_id,
                    &delivery.id,
                    &installation_id,
                    &ev.repository.full_name,
                    &wr.id,
                    &wr.run_attempt,
                    &wr.head_sha,
                    &conclusion,
                    &None::<&str>,
                ],
            )
            .await
        },
        async {
            tx.query_one(&s.insert_stage, &[&run_id, &stage.as_str()])
                .await
        },
        async {
            tx.query_one(
                &s.append,
                &[&"github:webhook", &actions, &subjects, &details],
            )
            .await
        },
    )?;
    Ok(Ingested::RunCreated {
        run_id,
        incident_id,
        outbox_id: outbox_row.get(0),
        stage,
    })
}
