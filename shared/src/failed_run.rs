//! A failed run on one of the repository's own branches: the delivery ingest sees most, and
//! under load the one that counts. The general path (`incidents`) sends its dozen statements
//! one after another, each waiting for the answer before it; here they go in two pipelined
//! round trips, `BEGIN` with the first and `COMMIT` with the last. tokio-postgres sends the
//! requests of futures polled together on one connection without waiting, and Postgres runs
//! them in the order they arrive, one after another inside the transaction: so the order
//! written is the order run (`BEGIN` first, the reads after the run's lock, `COMMIT` last),
//! and what ingest promises (one transaction, dedup, the outbox, the audit rows) is
//! unchanged.
//!
//! The order holds only if each future sends on its first poll: every statement is prepared
//! first (`prepared`), so nothing awaits before its request is sent. `futures_util::try_join!`
//! polls in the order written.

use deadpool_postgres::Object;
use futures_util::try_join;
use tokio_postgres::Statement;
use uuid::Uuid;

use crate::config::Gates;
use crate::events::{RunVerdict, WorkflowRunEvent};
use crate::incidents::{self, Delivery, Ingested};
use crate::installations;
use crate::stage::Stage;

/// Whether the delivery takes this path: a failed run selfheal may act on, not on one of
/// selfheal's own branches (the fix's CI joins its incident on the general path).
pub(crate) fn applies(ev: &WorkflowRunEvent) -> bool {
    ev.verdict() == RunVerdict::Failed
        && ev.untrusted_reason().is_none()
        && !ev.branch().starts_with("selfheal/")
        // A revert pushed by hand is also recorded (`reverts::by_push`), on the general path.
        && ev.reverted_commits().is_empty()
}

/// The incident opened or joined (`incidents::OPEN_INCIDENT`), the run (`incidents::INSERT_RUN`),
/// its first stage's outbox row (`outbox::INSERT_STAGE`) and the audit rows, `incident.opened`
/// (when the incident is new) then `run.created`: one statement where there were four, each of
/// which cost Postgres a bind, an execution and an answer of its own. The foreign keys
/// between them are checked at the statement's end, when every row is in.
const OPEN_RUN: &str = concat!(
    "WITH incident AS (",
    incidents::open_incident_sql!(),
    "), run AS (
        INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
                          github_run_id, github_run_attempt, head_sha, conclusion, status)
        SELECT $8::uuid, incident.id, $9::text, $10::bigint, $11::text, $12::bigint, $13::int,
               $14::text, $15::text, 'queued'
          FROM incident
        RETURNING id
    ), stage AS (
        INSERT INTO outbox (run_id, stage, traceparent) SELECT run.id, $16::text, $19::text FROM run
        RETURNING id
    )
    SELECT incident.id AS incident_id, stage.id AS outbox_id,
           audit_append_each('github:webhook',
               CASE WHEN incident.created THEN ARRAY['incident.opened', 'run.created']
                    ELSE ARRAY['run.created'] END,
               CASE WHEN incident.created THEN ARRAY[incident.id::text, $8::uuid::text]
                    ELSE ARRAY[$8::uuid::text] END,
               CASE WHEN incident.created
                    THEN ARRAY[$17::jsonb, $18::jsonb || jsonb_build_object('incident', incident.id)]
                    ELSE ARRAY[$18::jsonb || jsonb_build_object('incident', incident.id)] END)
      FROM incident, stage"
);

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
    open_run: Statement,
    record_outcome: Statement,
}

/// Every statement, prepared once per connection (one pipelined round trip the first time,
/// none after: deadpool caches them on the connection).
async fn prepared(tx: &Object) -> Result<Prepared, tokio_postgres::Error> {
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
        open_run,
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
        tx.prepare_cached(OPEN_RUN),
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
        open_run,
        record_outcome,
    })
}

/// Stores the delivery and, unless a gate says no or the run is known, opens (or joins) the
/// incident and creates the run with its first stage in the outbox: in one transaction, as
/// `incidents::ingest`, whose `BEGIN` goes with the first round trip and `COMMIT` with the
/// last.
pub(crate) async fn ingest(
    client: Object,
    delivery: &Delivery<'_>,
    ev: &WorkflowRunEvent,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    let mut open = Open(Some(client));
    let client = open.client();
    let result = async {
        let s = prepared(client).await?;
        in_transaction(client, &s, delivery, ev, gates).await
    }
    .await;
    if result.is_err() {
        // Whatever failed, nothing is kept; a connection that cannot even roll back is
        // dropped with the guard, which ends its transaction too.
        if client.batch_execute("ROLLBACK").await.is_err() {
            return result;
        }
    }
    // Ended, committed or rolled back: back to the pool.
    drop(open.0.take());
    result
}

/// The connection of a transaction this path opened itself. Dropped before it was ended (the
/// request was cancelled mid-way), the connection is rolled back before it goes back to the
/// pool, so it is never handed to the next request still open, and the pool's size still
/// bounds the connections to Postgres; one that cannot roll back leaves the pool and closes,
/// and Postgres rolls back for it.
struct Open(Option<Object>);

impl Open {
    fn client(&self) -> &Object {
        self.0
            .as_ref()
            .expect("the connection is held until the transaction ends")
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

async fn in_transaction(
    tx: &Object,
    s: &Prepared,
    delivery: &Delivery<'_>,
    ev: &WorkflowRunEvent,
    gates: &Gates,
) -> Result<Ingested, tokio_postgres::Error> {
    let wr = &ev.workflow_run;
    // The caller has checked that a failed run names its installation.
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    let (repository_id, branch, head_repository_id) =
        (ev.repository.id, ev.branch(), ev.head_repository_id());
    let run_key = wr.id.to_string();
    let count_budget = gates.runs_per_hour.is_some() && ev.installation.is_some();

    // 1. The delivery, the run's lock, and everything the gates and the dedup read.
    let (_, stored, _, inactive, stopped, used, existing, known) = try_join!(
        tx.batch_execute("BEGIN"),
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
        tx.batch_execute("COMMIT").await?;
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
        let (outcome, reason) = (result.outcome(), result.reason());
        try_join!(
            async {
                tx.execute(&s.record_outcome, &[&delivery.id, &outcome, &reason])
                    .await
            },
            tx.batch_execute("COMMIT"),
        )?;
        return Ok(result);
    }

    // 2. The installation and repository where they changed; then the incident, the run, its
    // first stage's outbox row and the audit rows, in one statement (`OPEN_RUN`).
    let (installation_known, repository_known) =
        installations::known(known.as_ref(), ev, installation_id);
    let login = installations::login(ev);
    let (new_incident, run_id, stage) = (Uuid::new_v4(), Uuid::new_v4(), Stage::Triage);
    let opened = incidents::incident_opened_detail(ev);
    // `OPEN_RUN` sets the incident, known only there.
    let run_detail = incidents::run_created_detail(delivery.id, Uuid::nil(), ev, None);
    let conclusion = wr.conclusion.as_deref().unwrap_or("failure");
    // A statement that fails aborts the transaction: the `COMMIT` after it then rolls back,
    // and `try_join!` answers with the statement's error, the first to arrive. Nothing here may
    // fail on this side once sent (as `query_one` would on a row count other than one, were
    // `OPEN_RUN` ever to return none): the `COMMIT` would still be sent after it, and commit.
    let (_, _, opened_run, _) = try_join!(
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
                &s.open_run,
                &[
                    &new_incident,
                    &repository_id,
                    &branch,
                    &wr.workflow_id,
                    &wr.name,
                    &wr.updated_at,
                    &head_repository_id,
                    &run_id,
                    &delivery.id,
                    &installation_id,
                    &ev.repository.full_name,
                    &wr.id,
                    &wr.run_attempt,
                    &wr.head_sha,
                    &conclusion,
                    &stage.as_str(),
                    &opened,
                    &run_detail,
                    &crate::trace_context::current(),
                ],
            )
            .await
        },
        tx.batch_execute("COMMIT"),
    )?;
    let incident_id: Uuid = opened_run.get("incident_id");
    Ok(Ingested::RunCreated {
        run_id,
        incident_id,
        outbox_id: opened_run.get("outbox_id"),
        stage,
    })
}
