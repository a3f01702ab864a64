//! Transactional outbox: a job (a delivery to admit, a run's stage, a command) is written to Postgres in the same
//! transaction as the state that calls for it, then pushed to Redis. Whatever could not be
//! pushed (Redis down, a crash in between) the relay pushes later. A job may thus reach Redis
//! twice; stages and commands are idempotent, so that is harmless, while a lost job would not
//! be.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::db::DbError;
use crate::job::{AdmitJob, CommandJob, Job};
use crate::queue::{JobQueue, QueueError};
use crate::stage::{Stage, StageJob};

pub(crate) const INSERT_STAGE: &str =
    "INSERT INTO outbox (run_id, stage, traceparent) VALUES ($1, $2, $3)
     ON CONFLICT (run_id, stage) DO UPDATE SET stage = EXCLUDED.stage
     RETURNING id";

pub async fn insert(
    client: &impl GenericClient,
    run_id: Uuid,
    stage: Stage,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            &client.prepare_cached(INSERT_STAGE).await?,
            &[&run_id, &stage.as_str(), &crate::trace_context::current()],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn insert_command(
    client: &impl GenericClient,
    command_id: i64,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            &client
                .prepare_cached(
                    "INSERT INTO outbox (command_id) VALUES ($1)
             ON CONFLICT (command_id) DO UPDATE SET command_id = EXCLUDED.command_id
             RETURNING id",
                )
                .await?,
            &[&command_id],
        )
        .await?;
    Ok(row.get(0))
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<tokio_postgres::Error> for DispatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        DispatchError::Db(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for DispatchError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DispatchError::Db(e.into())
    }
}

/// Pushes one committed outbox row now (the fast path after a commit).
pub async fn dispatch(
    pool: &Pool,
    queue: &JobQueue,
    outbox_id: i64,
    job: impl Into<Job>,
) -> Result<(), DispatchError> {
    match queue.push(job).await {
        Ok(()) => {
            let client = pool.get().await?;
            client
                .execute(
                    &client.prepare_cached("UPDATE outbox SET enqueued_at = now(), attempts = attempts + 1 WHERE id = $1").await?,
                    &[&outbox_id],
                )
                .await?;
            Ok(())
        }
        Err(e) => {
            record_push_failure(pool, outbox_id, &e).await;
            Err(e.into())
        }
    }
}

/// The web's marks of pushed rows, written in batches by one task rather than one UPDATE (and
/// one commit) per delivery: under load that second commit per request cost as much as the
/// ingest's own. Whatever accumulated while one batch was written goes in the next, so a
/// quiet server writes each mark at once and a busy one in few statements. A mark lost (the
/// process killed before its batch) costs a second push by the relay, never a lost job:
/// stages and commands are idempotent.
#[derive(Clone)]
pub struct Marks {
    pushed: tokio::sync::mpsc::UnboundedSender<i64>,
}

impl Marks {
    /// Starts the writer. It ends once every `Marks` clone is dropped and what they sent is
    /// written: await the handle at shutdown.
    pub fn start(pool: Pool) -> (Marks, tokio::task::JoinHandle<()>) {
        let (pushed, mut received) = tokio::sync::mpsc::unbounded_channel::<i64>();
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while received.recv_many(&mut batch, MARK_BATCH).await > 0 {
                if let Err(e) = mark_pushed(&pool, &batch).await {
                    tracing::warn!(error = %crate::cause::Chain(&e), rows = batch.len(), "marking pushed outbox rows failed; the relay will push them again");
                }
                batch.clear();
            }
        });
        (Marks { pushed }, writer)
    }

    fn pushed(&self, outbox_id: i64) {
        // Closed only when the writer is gone (shutdown): the relay covers the row.
        let _ = self.pushed.send(outbox_id);
    }
}

/// Marks written in one statement at most.
const MARK_BATCH: usize = 1_000;

async fn mark_pushed(pool: &Pool, ids: &[i64]) -> Result<(), DispatchError> {
    let client = pool.get().await?;
    client
        .execute(
            // A row the relay pushed (and marked) meanwhile keeps its own mark.
            &client
                .prepare_cached(
                    "UPDATE outbox SET enqueued_at = now(), attempts = attempts + 1
                     WHERE id = ANY($1) AND enqueued_at IS NULL",
                )
                .await?,
            &[&ids],
        )
        .await?;
    Ok(())
}

/// `dispatch`, with the mark left to `marks`.
pub async fn dispatch_batched(
    pool: &Pool,
    queue: &JobQueue,
    marks: &Marks,
    outbox_id: i64,
    job: impl Into<Job>,
) -> Result<(), DispatchError> {
    match queue.push(job).await {
        Ok(()) => {
            marks.pushed(outbox_id);
            Ok(())
        }
        Err(e) => {
            record_push_failure(pool, outbox_id, &e).await;
            Err(e.into())
        }
    }
}

async fn record_push_failure(pool: &Pool, outbox_id: i64, e: &QueueError) {
    if let Ok(client) = pool.get().await {
        let _ = client
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                &[&outbox_id, &e.to_string()],
            )
            .await;
    }
}

/// How long a committed row is left to the process that wrote it, which pushes it straight
/// after its commit. Without it, under load the relay pushed rows the web had just committed
/// (those jobs twice), and its row locks held up the web's marks. A row pushed again by
/// `requeue_*` keeps its old `created_at`, so it goes at the next pass.
pub const PUSH_GRACE: Duration = Duration::from_secs(3);

/// Pushes every pending row older than `PUSH_GRACE` once. Rows are locked while pushed, so several relays (one per
/// process) never push the same row at the same time. Returns how many were pushed.
pub async fn relay_once(pool: &Pool, queue: &JobQueue) -> Result<usize, DispatchError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            &tx.prepare_cached(
                "SELECT id, run_id, stage, command_id, traceparent, delivery_id FROM outbox WHERE enqueued_at IS NULL
                   AND created_at < now() - make_interval(secs => $1)
             ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&PUSH_GRACE.as_secs_f64()],
        )
        .await?;
    let mut pushed = 0;
    for row in rows {
        let id: i64 = row.get(0);
        let job = match (
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<i64>>(3),
            row.get::<_, Option<String>>(5),
        ) {
            (_, _, Some(delivery_id)) => Job::Admit(AdmitJob {
                delivery_id,
                traceparent: row.get(4),
            }),
            (_, Some(command_id), None) => Job::Command(CommandJob { command_id }),
            (Some(stage), None, None) => match stage.parse::<Stage>() {
                Ok(stage) => Job::Stage(StageJob {
                    run_id: row.get(1),
                    stage,
                    traceparent: row.get(4),
                }),
                Err(_) => {
                    tracing::error!(outbox_id = id, %stage, "outbox row names an unknown stage; left in place");
                    continue;
                }
            },
            (None, None, None) => continue,
        };
        match queue.push(job).await {
            Ok(()) => {
                tx.execute(
                    &tx.prepare_cached("UPDATE outbox SET enqueued_at = now(), attempts = attempts + 1 WHERE id = $1").await?,
                    &[&id],
                )
                .await?;
                pushed += 1;
            }
            Err(e) => {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
                    )
                    .await?,
                    &[&id, &e.to_string()],
                )
                .await?;
                tx.commit().await?;
                return Err(e.into());
            }
        }
    }
    tx.commit().await?;
    Ok(pushed)
}

/// Puts back for another push the jobs Redis was given but no worker started within
/// `after`: the queue lost them (a Redis flush, a failover without persistence, a queue
/// bug). Admissions, stages and commands are idempotent, so a job that was only slow and now
/// reaches a worker twice does no harm. Returns how many were put back.
pub async fn requeue_unstarted(pool: &Pool, after: Duration) -> Result<u64, DispatchError> {
    let client = pool.get().await?;
    let secs = after.as_secs_f64();
    let stages = client
        .execute(
            &client.prepare_cached("UPDATE outbox o SET enqueued_at = NULL, last_error = 'pushed, but no worker started it in time: pushed again'
             FROM runs r
             WHERE r.id = o.run_id AND r.status IN ('queued', 'running')
               AND o.enqueued_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM stage_attempts a WHERE a.run_id = o.run_id AND a.stage = o.stage)").await?,
            &[&secs],
        )
        .await?;
    let commands = client
        .execute(
            &client.prepare_cached("UPDATE outbox o SET enqueued_at = NULL, last_error = 'pushed, but no worker started it in time: pushed again'
             FROM commands c
             WHERE c.id = o.command_id AND c.status = 'queued'
               AND o.enqueued_at < now() - make_interval(secs => $1)").await?,
            &[&secs],
        )
        .await?;
    let admissions = client
        .execute(
            &client.prepare_cached("UPDATE outbox o SET enqueued_at = NULL, last_error = 'pushed, but no worker admitted it in time: pushed again'
             FROM webhook_deliveries d
             WHERE d.delivery_id = o.delivery_id AND d.outcome = 'accepted'
               AND o.enqueued_at < now() - make_interval(secs => $1)").await?,
            &[&secs],
        )
        .await?;
    Ok(stages + commands + admissions)
}

/// Stages a worker started and lost, whatever Redis remembers (it may have lost the job with
/// its data): the run is still queued or running, the stage has attempts but never finished,
/// nothing happened to it for `after`, and no worker holds its lock (a worker's session lock
/// dies with the worker). Each is pushed again; the worker that takes it closes the lost
/// attempt as abandoned, and a stage abandoned too often fails its run with the reason, so no
/// run is left `running` for ever.
pub async fn requeue_orphaned(pool: &Pool, after: Duration) -> Result<u64, DispatchError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            &tx.prepare_cached("SELECT o.id, o.run_id, o.stage FROM outbox o JOIN runs r ON r.id = o.run_id
             WHERE o.stage IS NOT NULL AND o.enqueued_at < now() - make_interval(secs => $1)
               AND r.status IN ('queued', 'running')
               AND NOT EXISTS (SELECT 1 FROM stage_attempts f WHERE f.run_id = o.run_id AND f.stage = o.stage
                               AND f.outcome IN ('succeeded', 'skipped'))
               AND (SELECT max(coalesce(a.finished_at, a.started_at)) FROM stage_attempts a
                    WHERE a.run_id = o.run_id AND a.stage = o.stage) < now() - make_interval(secs => $1)
             -- A sample each pass: more than a hundred long stages that live workers hold
             -- would otherwise hide every orphan behind them.
             ORDER BY random() LIMIT 100
             FOR UPDATE OF o SKIP LOCKED").await?,
            &[&after.as_secs_f64()],
        )
        .await?;
    let mut requeued = 0;
    for row in rows {
        let (id, run_id, stage): (i64, Uuid, String) = (row.get(0), row.get(1), row.get(2));
        // Held only until this transaction ends: a worker taking the stage meanwhile finds
        // it locked and drops its copy, and the push below brings it back.
        let free: bool = tx
            .query_one(
                &tx.prepare_cached("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                    .await?,
                &[&StageJob::lock_key(run_id, &stage)],
            )
            .await?
            .get(0);
        if free {
            tx.execute(
                &tx.prepare_cached("UPDATE outbox SET enqueued_at = NULL,
                        last_error = 'its worker was lost mid-stage (no worker holds it): pushed again'
                 WHERE id = $1").await?,
                &[&id],
            )
            .await?;
            requeued += 1;
        }
    }
    tx.commit().await?;
    Ok(requeued)
}

/// Runs the relay until the process ends: pushes what is pending every `every`, and every
/// `requeue_after` puts back what was pushed but never started, or started and lost.
pub async fn relay_forever(
    pool: Pool,
    queue: std::sync::Arc<JobQueue>,
    every: Duration,
    requeue_after: Duration,
) {
    let mut failing = false;
    let mut last_requeue = tokio::time::Instant::now();
    loop {
        if !requeue_after.is_zero() && last_requeue.elapsed() >= requeue_after {
            last_requeue = tokio::time::Instant::now();
            match requeue_unstarted(&pool, requeue_after).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "jobs pushed but never started: pushing again"),
                Err(e) => {
                    tracing::warn!(error = %crate::cause::Chain(&e), "looking for lost jobs failed; will retry")
                }
            }
            match requeue_orphaned(&pool, requeue_after).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    jobs = n,
                    "stages whose worker was lost mid-stage: pushing again"
                ),
                Err(e) => {
                    tracing::warn!(error = %crate::cause::Chain(&e), "looking for stages lost mid-way failed; will retry")
                }
            }
        }
        // The audit rows committed since the last tick join the chain.
        if let Ok(client) = pool.get().await {
            if let Err(e) = crate::audit::link_backlog(&client).await {
                tracing::warn!(error = %crate::cause::Chain(&e), "linking audit rows failed; will retry");
            }
        }
        match relay_once(&pool, &queue).await {
            Ok(n) => {
                if n > 0 || failing {
                    tracing::info!(pushed = n, "outbox relay pushed pending jobs");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %crate::cause::Chain(&e), "outbox relay cannot push yet; will retry");
                }
                failing = true;
            }
        }
        tokio::time::sleep(every).await;
    }
}
