//! A failed run on one of the repository's own branches: the delivery ingest sees most, and
//! under load the one that counts. The webhook only stores it, with an outbox row naming it,
//! in one statement (`accept`), and answers; a worker admits it (`admit`): the gates, the
//! dedup by GitHub run, the incident, the run and its first stage, in one transaction. So the
//! webhook does what a bare receiver does (one INSERT, one push), and what ingest promises
//! holds across the two: the delivery is stored and deduplicated by its id before the answer,
//! the outbox row makes its admission certain (the relay pushes it again if Redis loses it),
//! and admission writes the audit rows with the run.
//!
//! Admission sends its statements in three pipelined round trips, `BEGIN` with the first and
//! `COMMIT` with the last. tokio-postgres sends the requests of futures polled together on one
//! connection without waiting, and Postgres runs them in the order they arrive, one after
//! another inside the transaction: so the order written is the order run (`BEGIN` first, the
//! reads after the run's lock, `COMMIT` last). The order holds only if each future sends on
//! its first poll: every statement is prepared first (`prepared`), so nothing awaits before
//! its request is sent. `futures_util::try_join!` polls in the order written.

use deadpool_postgres::{Object, Pool};
use futures_util::try_join;
use serde_json::{json, Value};
use tokio_postgres::Statement;
use uuid::Uuid;

use crate::events::{RunVerdict, WorkflowRunEvent};
use crate::incidents::{self, Delivery, Ingested};
use crate::installations;
use crate::outbox::{self, DispatchError};
use crate::queue::JobQueue;
use crate::stage::{Stage, StageJob};

/// Whether the delivery takes this path: a failed run selfheal may act on, not on one of
/// selfheal's own branches (the fix's CI joins its incident on the general path).
pub(crate) fn applies(ev: &WorkflowRunEvent) -> bool {
    ev.verdict() == RunVerdict::Failed
        && ev.untrusted_reason().is_none()
        && !ev.branch().starts_with("selfheal/")
        // A revert pushed by hand is also recorded (`reverts::by_push`), on the general path.
        && ev.reverted_commits().is_empty()
}

/// The outcome of a failed run's delivery stored and not yet admitted.
pub const ACCEPTED: &str = "accepted";

/// The delivery and the outbox row that names it for admission, in one statement (so one
/// transaction without a `BEGIN` or `COMMIT` of its own); no row when the delivery id was
/// stored before.
const ACCEPT: &str = "WITH stored AS (
        INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, repository_id, outcome, payload)
        VALUES ($1, $2, $3, $4, $5, 'accepted', $6::text::jsonb)
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING delivery_id
    )
    INSERT INTO outbox (delivery_id, traceparent, runs_per_hour)
    SELECT delivery_id, $7, $8 FROM stored RETURNING id";

/// Stores a failed run's delivery with its admission's outbox row, which carries the web's
/// hourly budget (`runs_per_hour`) for the admission to apply: `Accepted`, or `Duplicate`
/// when its id was seen before. The webhook writes these in batches (`accepts`, the same rows
/// for many deliveries at once).
pub(crate) async fn accept(
    client: &Object,
    delivery: &Delivery<'_>,
    traceparent: Option<&str>,
    runs_per_hour: Option<i64>,
) -> Result<Ingested, tokio_postgres::Error> {
    let row = delivery.envelope;
    let stored = client
        .query_opt(
            &client.prepare_cached(ACCEPT).await?,
            &[
                &delivery.id,
                &delivery.event,
                &row.action,
                &row.installation_id,
                &row.repository_id,
                &delivery.payload,
                &traceparent,
                &runs_per_hour,
            ],
        )
        .await?;
    Ok(match stored {
        Some(row) => Ingested::Accepted {
            outbox_id: row.get(0),
        },
        None => Ingested::Duplicate,
    })
}

/// The delivery to admit, locked so that two admissions of it (a job pushed twice) take
/// turns and the second finds the first's outcome.
const LOAD: &str = "SELECT d.event, d.outcome, d.payload::text, d.run_id, d.reason,
            (SELECT incident_id FROM runs WHERE id = d.run_id),
            (SELECT runs_per_hour FROM outbox WHERE delivery_id = d.delivery_id)
       FROM webhook_deliveries d WHERE d.delivery_id = $1 FOR NO KEY UPDATE OF d";
/// What admission came to, when it created no run.
const RECORD_ADMISSION: &str =
    "UPDATE webhook_deliveries SET outcome = $2, reason = $3, run_id = $4 WHERE delivery_id = $1";

/// The incident opened or joined (`incidents::OPEN_INCIDENT`), the run (`incidents::INSERT_RUN`),
/// its first stage's outbox row (`outbox::INSERT_STAGE`), the delivery's outcome and the audit
/// rows, `incident.opened` (when the incident is new) then `run.created`: one statement where
/// there were five, each of which cost Postgres a bind, an execution and an answer of its
/// own. The foreign keys between them are checked at the statement's end, when every row is
/// in.
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
    ), admitted AS (
        UPDATE webhook_deliveries SET outcome = 'run_created', run_id = run.id
          FROM run WHERE delivery_id = $9::text
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
    load: Statement,
    lock: Statement,
    lock_branch: Statement,
    inactive: Statement,
    stopped: Statement,
    passed: Statement,
    budget_used: Statement,
    existing_run: Statement,
    known: Statement,
    add_installation: Statement,
    add_repository: Statement,
    open_run: Statement,
    record_admission: Statement,
}

/// Every statement, prepared once per connection (one pipelined round trip the first time,
/// none after: deadpool caches them on the connection).
async fn prepared(tx: &Object) -> Result<Prepared, tokio_postgres::Error> {
    let (
        load,
        lock,
        lock_branch,
        inactive,
        stopped,
        passed,
        budget_used,
        existing_run,
        known,
        add_installation,
        add_repository,
        open_run,
        record_admission,
    ) = try_join!(
        tx.prepare_cached(LOAD),
        tx.prepare_cached(incidents::LOCK_RUN),
        tx.prepare_cached(incidents::LOCK_BRANCH),
        tx.prepare_cached(installations::INACTIVE),
        tx.prepare_cached(incidents::STOPPED),
        tx.prepare_cached(incidents::PASSED_SINCE),
        tx.prepare_cached(incidents::BUDGET_USED),
        tx.prepare_cached(incidents::EXISTING_RUN),
        tx.prepare_cached(installations::KNOWN),
        tx.prepare_cached(installations::ADD_INSTALLATION),
        tx.prepare_cached(installations::ADD_REPOSITORY),
        tx.prepare_cached(OPEN_RUN),
        tx.prepare_cached(RECORD_ADMISSION),
    )?;
    Ok(Prepared {
        load,
        lock,
        lock_branch,
        inactive,
        stopped,
        passed,
        budget_used,
        existing_run,
        known,
        add_installation,
        add_repository,
        open_run,
        record_admission,
    })
}

/// What admitting a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The incident opened or joined and the run created, its first stage in the outbox.
    Created {
        run_id: Uuid,
        incident_id: Uuid,
        outbox_id: i64,
        stage: Stage,
    },
    /// Another delivery of the same GitHub run attempt created its run first.
    Exists { run_id: Uuid },
    /// A gate said no (an inactive repository, a stopped incident, the hourly budget), or the
    /// stored payload no longer reads as a failed run. (The workflow allowlist is the web's:
    /// a failure it leaves out is never accepted.)
    Ignored { reason: String },
    /// A later run of the same workflow on the same branch passed before this one was
    /// admitted (a backlog, or GitHub's order): the branch is green, nothing to heal.
    Superseded { reason: String },
    /// Admitted before (its job pushed twice, or taken by two workers): what it came to then.
    Earlier {
        outcome: String,
        run_id: Option<Uuid>,
        incident_id: Option<Uuid>,
        reason: Option<String>,
    },
    /// No failed run's delivery is stored under this id.
    Unknown,
}

impl Admission {
    /// The run the delivery created or found.
    pub fn run_id(&self) -> Option<Uuid> {
        match self {
            Admission::Created { run_id, .. } | Admission::Exists { run_id } => Some(*run_id),
            Admission::Earlier { run_id, .. } => *run_id,
            Admission::Ignored { .. } | Admission::Superseded { .. } | Admission::Unknown => None,
        }
    }

    /// The delivery's outcome as `webhook_deliveries.outcome` records it.
    pub fn outcome(&self) -> &str {
        match self {
            Admission::Created { .. } => incidents::RUN_CREATED,
            Admission::Exists { .. } => "run_exists",
            Admission::Ignored { .. } => incidents::IGNORED_INACTIVE,
            Admission::Superseded { .. } => "superseded",
            Admission::Earlier { outcome, .. } => outcome,
            Admission::Unknown => "unknown",
        }
    }

    /// For logs and the operator's tools: the outcome, the run, its incident and the reason.
    pub fn summary(&self) -> Value {
        let (reason, incident_id) = match self {
            Admission::Ignored { reason } | Admission::Superseded { reason } => {
                (Some(reason.as_str()), None)
            }
            Admission::Earlier {
                reason,
                incident_id,
                ..
            } => (reason.as_deref(), *incident_id),
            Admission::Created { incident_id, .. } => (None, Some(*incident_id)),
            Admission::Exists { .. } | Admission::Unknown => (None, None),
        };
        json!({"outcome": self.outcome(), "run_id": self.run_id(), "incident_id": incident_id, "reason": reason})
    }
}

/// Admits a delivery `accept` stored: unless a gate says no, the run is known or a later
/// push went green, opens (or joins) the incident and creates the run with its first stage in
/// the outbox, and records the delivery's outcome, in one transaction whose `BEGIN` goes with
/// the first round trip and `COMMIT` with the last. Admitting it again answers what the first
/// admission came to.
pub async fn admit(client: Object, delivery_id: &str) -> Result<Admission, tokio_postgres::Error> {
    let mut open = Open(Some(client));
    let client = open.client();
    let result = async {
        let s = prepared(client).await?;
        in_transaction(client, &s, delivery_id).await
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

/// `admit`, then the run's first stage pushed straight away (the relay pushes it later when
/// Redis is away): what a worker does with an `AdmitJob`.
pub async fn admit_and_push(
    pool: &Pool,
    queue: &JobQueue,
    delivery_id: &str,
) -> Result<Admission, DispatchError> {
    let admission = admit(pool.get().await?, delivery_id).await?;
    if let Admission::Created {
        run_id,
        outbox_id,
        stage,
        ..
    } = &admission
    {
        let job = StageJob {
            run_id: *run_id,
            stage: *stage,
            traceparent: crate::trace_context::current(),
        };
        if let Err(e) = outbox::dispatch(pool, queue, *outbox_id, job).await {
            tracing::warn!(error = %crate::cause::Chain(&e), run = %run_id, "the run's first stage waits for the outbox relay");
        }
    }
    Ok(admission)
}

/// The outcome of a delivery whose admission failed for a reason other than an outage.
pub const ADMISSION_FAILED: &str = "admission_failed";

/// Records that a delivery cannot be admitted (`reason`: what refused it), so that it no
/// longer waits, nor is pushed again. Only a delivery still waiting is changed.
pub async fn record_failure(
    pool: &Pool,
    delivery_id: &str,
    reason: &str,
) -> Result<u64, DispatchError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE webhook_deliveries SET outcome = $2, reason = $3
             WHERE delivery_id = $1 AND outcome = 'accepted'",
            &[&delivery_id, &ADMISSION_FAILED, &reason],
        )
        .await?)
}

/// The connection of a transaction this path opened itself. Dropped before it was ended (the
/// job was cancelled mid-way), the connection is rolled back before it goes back to the
/// pool, so it is never handed to the next user still open, and the pool's size still
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
    delivery_id: &str,
) -> Result<Admission, tokio_postgres::Error> {
    // 1. The delivery, locked.
    let (_, loaded) = try_join!(tx.batch_execute("BEGIN"), async {
        tx.query_opt(&s.load, &[&delivery_id]).await
    })?;
    let Some(loaded) = loaded else {
        tx.batch_execute("COMMIT").await?;
        return Ok(Admission::Unknown);
    };
    let (event, outcome): (String, String) = (loaded.get(0), loaded.get(1));
    if event != "workflow_run" {
        tx.batch_execute("COMMIT").await?;
        return Ok(Admission::Unknown);
    }
    if outcome != ACCEPTED {
        let run_id: Option<Uuid> = loaded.get(3);
        // `LOAD`'s subquery read its snapshot from before it waited for the row: an admission
        // that committed meanwhile has its run, but not yet its incident, in `LOAD`'s row.
        let incident_id = match (run_id, loaded.get::<_, Option<Uuid>>(5)) {
            (Some(run), None) => tx
                .query_opt("SELECT incident_id FROM runs WHERE id = $1", &[&run])
                .await?
                .map(|row| row.get(0)),
            (_, incident) => incident,
        };
        tx.batch_execute("COMMIT").await?;
        return Ok(Admission::Earlier {
            outcome,
            run_id,
            incident_id,
            reason: loaded.get(4),
        });
    }
    // Parsed as the webhook parsed it before storing it; the same code reads it, so only a
    // payload stored by another version could fail here, and it is recorded, not retried.
    let payload: String = loaded.get(2);
    let ev = match WorkflowRunEvent::parse(payload.as_bytes()) {
        Ok(ev) if applies(&ev) && ev.installation.is_some() => Ok(ev),
        Ok(_) => Err("no longer a failed run selfheal may act on".to_string()),
        Err(e) => Err(e.to_string()),
    }
    .map_err(|cause| format!("the stored payload cannot be admitted: {cause}"));
    let ev = match ev {
        Ok(ev) => ev,
        Err(reason) => {
            try_join!(
                async {
                    tx.execute(
                        &s.record_admission,
                        &[
                            &delivery_id,
                            &incidents::IGNORED_INACTIVE,
                            &reason,
                            &None::<Uuid>,
                        ],
                    )
                    .await
                },
                tx.batch_execute("COMMIT"),
            )?;
            return Ok(Admission::Ignored { reason });
        }
    };
    let wr = &ev.workflow_run;
    let installation_id = ev.installation.as_ref().map(|i| i.id).unwrap_or_default();
    let (repository_id, branch, head_repository_id) =
        (ev.repository.id, ev.branch(), ev.head_repository_id());
    let run_key = wr.id.to_string();
    let runs_per_hour: Option<i64> = loaded.get(6);

    // 2. The run's lock, then its workflow and branch's (`incidents::LOCK_BRANCH`), and
    // everything the gates and the dedup read.
    let (_, _, inactive, stopped, passed, used, existing, known) = try_join!(
        async { tx.execute(&s.lock, &[&run_key]).await },
        async {
            tx.execute(
                &s.lock_branch,
                &[
                    &repository_id,
                    &head_repository_id,
                    &branch,
                    &wr.workflow_id,
                ],
            )
            .await
        },
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
            match wr.created_at {
                Some(created_at) => {
                    tx.query_opt(
                        &s.passed,
                        &[
                            &repository_id,
                            &head_repository_id,
                            &branch,
                            &wr.workflow_id,
                            &created_at,
                        ],
                    )
                    .await
                }
                None => Ok(None),
            }
        },
        async {
            if runs_per_hour.is_some() {
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
    // The gates in the general path's order (`incidents::gate`; the allowlist was the web's).
    let ignored = installations::inactive(inactive.as_ref())
        .or_else(|| stopped.as_ref().map(incidents::stopped_reason))
        .or_else(|| used.and_then(|used| incidents::over_budget(runs_per_hour, used)));
    let settled = match (ignored, existing, passed) {
        (Some(reason), _, _) => Some(Admission::Ignored { reason }),
        (None, Some(run), _) => Some(Admission::Exists { run_id: run.get(0) }),
        (None, None, Some(green)) => Some(Admission::Superseded {
            reason: format!(
                "a later run of this workflow on this branch passed (run {}, created {}): nothing to heal",
                green.get::<_, i64>(1),
                green.get::<_, chrono::DateTime<chrono::Utc>>(0).to_rfc3339()
            ),
        }),
        (None, None, None) => None,
    };
    if let Some(result) = settled {
        let reason = match &result {
            Admission::Ignored { reason } | Admission::Superseded { reason } => {
                Some(reason.as_str())
            }
            _ => None,
        };
        try_join!(
            async {
                tx.execute(
                    &s.record_admission,
                    &[&delivery_id, &result.outcome(), &reason, &result.run_id()],
                )
                .await
            },
            tx.batch_execute("COMMIT"),
        )?;
        return Ok(result);
    }

    // 3. The installation and repository where they changed; then the incident, the run, its
    // first stage's outbox row, the delivery's outcome and the audit rows, in one statement
    // (`OPEN_RUN`).
    let (installation_known, repository_known) =
        installations::known(known.as_ref(), &ev, installation_id);
    let login = installations::login(&ev);
    let (new_incident, run_id, stage) = (Uuid::new_v4(), Uuid::new_v4(), Stage::Triage);
    let opened = incidents::incident_opened_detail(&ev);
    // `OPEN_RUN` sets the incident, known only there.
    let run_detail = incidents::run_created_detail(delivery_id, Uuid::nil(), &ev, None);
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
                    &[
                        &repository_id,
                        &installation_id,
                        &ev.repository.full_name,
                        &delivery_id,
                    ],
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
                    &delivery_id,
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
    Ok(Admission::Created {
        run_id,
        incident_id: opened_run.get("incident_id"),
        outbox_id: opened_run.get("outbox_id"),
        stage,
    })
}
