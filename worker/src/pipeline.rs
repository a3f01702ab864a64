//! One stage of one run: lock, skip if done, attempt with backoff, record, chain the next.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use backon::Retryable;
use selfheal_shared::job::Job;
use selfheal_shared::runs::{self, Outcome, Run};
use selfheal_shared::stage::{Stage, StageJob};
use selfheal_shared::{audit, db, installations, outbox};
use serde_json::json;
use tracing::Instrument;
use uuid::Uuid;

use crate::metrics::AttemptEnd;
use crate::stages;
use crate::WorkerContext;

pub async fn handle(job: Job, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    tracing::debug!(job = job.name(), worker = %ctx.worker_id, "job received");
    // Held for the job's whole life, across a rebuild of the queue worker (lib.rs).
    let _permit = ctx
        .in_flight
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| -> BoxDynError { Box::new(e) })?;
    let _counted = ctx.metrics.job_started();
    match job {
        Job::Admit(job) => crate::admission::handle(job, ctx).await,
        Job::Stage(job) => handle_stage(job, ctx).await,
        Job::Command(job) => crate::chatops::handle(job, ctx).await,
    }
}

async fn handle_stage(job: StageJob, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    let span = tracing::info_span!(
        "stage",
        run = %job.run_id,
        stage = %job.stage,
        worker = %ctx.worker_id,
        repository = tracing::field::Empty,
        incident = tracing::field::Empty,
    );
    // One trace per run: this stage continues the span that made it due, in whichever process.
    if let Some(parent) = &job.traceparent {
        selfheal_shared::trace_context::continue_in(&span, parent);
    }
    // Stage errors are handled inside `process`; what reaches here is selfheal's own
    // bookkeeping failing (Postgres away). Retry that for a while rather than drop the job.
    let bookkeeping = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(500))
        .with_max_delay(std::time::Duration::from_secs(30))
        .with_max_times(10);
    // An attempt an outage interrupted is recorded (not charged) before the stage is taken up
    // again: left `running`, the next try would close it as abandoned, which is charged.
    let interrupted = std::sync::Mutex::new(None::<(i64, String)>);
    let attempt = || async {
        let pending = interrupted.lock().expect("not poisoned").clone();
        if let Some((attempt_id, cause)) = pending {
            let client = ctx.pool.get().await?;
            runs::finish_attempt_uncharged(&client, attempt_id, &cause).await?;
            tracing::warn!(attempt_id, %cause, "attempt interrupted by a Postgres outage recorded; not charged");
            *interrupted.lock().expect("not poisoned") = None;
        }
        let result = process(&ctx, &job).await;
        if let Err(PipelineError::Interrupted { attempt_id, cause }) = &result {
            *interrupted.lock().expect("not poisoned") = Some((*attempt_id, cause.clone()));
        }
        result
    };
    attempt
        .retry(bookkeeping)
        .notify(|e, delay| tracing::warn!(error = %selfheal_shared::cause::Chain(e), ?delay, "stage bookkeeping failed; retrying"))
        .instrument(span)
        .await
        .map_err(|e| {
            tracing::error!(error = %selfheal_shared::cause::Chain(&e), "stage job given up; the run stays where it was");
            e.into()
        })
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The stage lock's session ended under a live worker: Postgres went away (or failed over).
    #[error("{0}")]
    LockLost(String),
    /// An attempt Postgres going away cut short, to be recorded as not charged.
    #[error("attempt {attempt_id} interrupted: {cause}")]
    Interrupted { attempt_id: i64, cause: String },
    /// The stage lock's session could not be set up (its URL or TLS).
    #[error("{0}")]
    Connect(selfheal_shared::db::DbError),
}

impl From<selfheal_shared::db::DbError> for PipelineError {
    fn from(e: selfheal_shared::db::DbError) -> Self {
        match e {
            // A connection refused or cut is Postgres being away, as before.
            selfheal_shared::db::DbError::Query(e) => PipelineError::Db(e),
            other => PipelineError::Connect(other),
        }
    }
}

impl PipelineError {
    /// Whether Postgres going away explains it (a wait cures it), not a wrong statement.
    fn is_outage(&self) -> bool {
        match self {
            PipelineError::Db(e) => db::is_outage(e),
            PipelineError::Pool(e) => db::is_pool_outage(e),
            PipelineError::LockLost(_) | PipelineError::Interrupted { .. } => true,
            PipelineError::Connect(e) => e.is_outage(),
        }
    }
}

/// Attempts Postgres outages may interrupt per stage before the run fails: a database that
/// keeps going away still ends the run, with the reason.
const MAX_UNCHARGED: i64 = 10;

/// Holds a session advisory lock on its own connection: if the worker dies, Postgres drops the
/// connection and the lock with it, so recovery never waits on a dead holder. The other way
/// round matters as much: if the connection drops while the worker lives (a reset, a
/// failover), the lock is free and the stage may be taken elsewhere, so the worker must stop.
struct StageLock {
    _session: tokio_postgres::Client,
    connection: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl StageLock {
    async fn try_acquire(
        database_url: &str,
        run_id: Uuid,
        stage: Stage,
    ) -> Result<Option<Self>, PipelineError> {
        let (client, connection) = selfheal_shared::db::connect(database_url).await?;
        let key = StageJob::lock_key(run_id, stage.as_str());
        let row = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .await?;
        Ok(row.get::<_, bool>(0).then_some(StageLock {
            _session: client,
            connection,
        }))
    }

    /// Resolves when the lock's session has ended (the lock is no longer held). Await it
    /// once: the stage stops there.
    async fn lost(&mut self) -> String {
        match (&mut self.connection).await {
            Ok(Ok(())) => "the lock's Postgres session closed".to_string(),
            Ok(Err(e)) => format!("the lock's Postgres session failed: {e}"),
            Err(e) => format!("the lock's Postgres session task ended: {e}"),
        }
    }
}

async fn process(ctx: &WorkerContext, job: &StageJob) -> Result<(), PipelineError> {
    let Some(run) = runs::load(&ctx.pool.get().await?, job.run_id).await? else {
        tracing::warn!("run not found; dropping job");
        return Ok(());
    };
    if run.is_finished() {
        return Ok(());
    }
    let span = tracing::Span::current();
    span.record("repository", run.repository_full_name.as_str());
    span.record("incident", tracing::field::display(run.incident_id));
    // Uninstalled between the failure and now: stop, and say so.
    let repository_id: i64 = ctx
        .pool
        .get()
        .await?
        .query_one(
            "SELECT repository_id FROM incidents WHERE id = $1",
            &[&run.incident_id],
        )
        .await?
        .get(0);
    if let Some(reason) =
        installations::inactive_reason(&ctx.pool.get().await?, repository_id).await?
    {
        fail_run(ctx, &run, &format!("not acted on: {reason}")).await?;
        return Ok(());
    }
    let Some(mut lock) = StageLock::try_acquire(&ctx.database_url, job.run_id, job.stage).await?
    else {
        tracing::info!("another worker holds this stage; dropping duplicate job");
        return Ok(());
    };
    let client = ctx.pool.get().await?;
    if runs::stage_finished(&client, run.id, job.stage).await? {
        // A redelivered job: the stage's effects happened; make sure the next one is queued.
        drop(client);
        return chain(ctx, &run, job.stage).await;
    }
    let closed = runs::abandon_stale(&client, run.id, job.stage).await?;
    if closed > 0 {
        ctx.metrics.abandoned(job.stage, closed);
        tracing::warn!("previous attempt was abandoned by a lost worker; resuming");
    }
    let policy = job.stage.retry_policy();
    let abandoned = runs::attempts_ended(&client, run.id, job.stage, Outcome::Abandoned).await?;
    if abandoned >= i64::from(policy.max_abandoned) {
        let reason = format!(
            "{} was abandoned {abandoned} times: the worker running it died each time (killed, or out of memory), so it is not tried again",
            job.stage
        );
        tracing::error!(%reason, "stopping a job that keeps killing its worker");
        fail_run(ctx, &run, &reason).await?;
        return Ok(());
    }
    let mut backoffs = policy.backoffs();
    loop {
        let failed = runs::attempts_ended(&client, run.id, job.stage, Outcome::Failed).await?;
        if failed >= i64::from(policy.max_attempts) {
            let reason = format!("{} failed {failed} times", job.stage);
            fail_run(ctx, &run, &reason).await?;
            break;
        }
        let interrupted = runs::attempts_uncharged(&client, run.id, job.stage).await?;
        if interrupted >= MAX_UNCHARGED {
            let reason = format!(
                "{} was interrupted {interrupted} times by Postgres going away, so it is not tried again",
                job.stage
            );
            fail_run(ctx, &run, &reason).await?;
            break;
        }
        let (attempt_id, attempt) =
            runs::start_attempt(&client, run.id, job.stage, &ctx.worker_id).await?;
        tracing::info!(attempt, "stage attempt started");
        match one_attempt(
            ctx, &run, job.stage, &client, &mut lock, attempt_id, attempt,
        )
        .await
        {
            Ok(Attempted::Done) => break,
            Ok(Attempted::Again) => {
                // The last attempt allowed failed: the check above fails the run now, with no
                // backoff first and no retry counted.
                let failed =
                    runs::attempts_ended(&client, run.id, job.stage, Outcome::Failed).await?;
                if failed >= i64::from(policy.max_attempts) {
                    continue;
                }
                ctx.metrics.retried(job.stage);
                if let Some(delay) = backoffs.next() {
                    tokio::time::sleep(delay).await;
                }
            }
            // Postgres went away mid-attempt: the attempt is recorded as not charged once it
            // answers again (handle_stage), and the stage taken up from the start.
            Err(e) if e.is_outage() => {
                return Err(PipelineError::Interrupted {
                    attempt_id,
                    cause: e.to_string(),
                })
            }
            Err(e) => {
                // selfheal's own bookkeeping failed (not the stage): closed, not charged, so the
                // retry does not find it running and charge it as abandoned.
                let cause = e.to_string();
                if let Err(record) =
                    runs::finish_attempt_uncharged(&client, attempt_id, &cause).await
                {
                    tracing::warn!(error = %record, %cause, "could not close the attempt");
                }
                return Err(e);
            }
        }
    }
    drop(lock);
    Ok(())
}

enum Attempted {
    /// The stage finished (the next one queued), or the run failed for good.
    Done,
    /// A transient failure: another attempt after the backoff.
    Again,
}

/// How long a stage's error waits for the lock's session to say whether Postgres went away:
/// both see the outage, in no fixed order.
const OUTAGE_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

async fn one_attempt(
    ctx: &WorkerContext,
    run: &Run,
    stage: Stage,
    client: &deadpool_postgres::Client,
    lock: &mut StageLock,
    attempt_id: i64,
    attempt: i32,
) -> Result<Attempted, PipelineError> {
    let limit = ctx.stage_timeout.unwrap_or(stage.timeout());
    // Measured up to the stage's result, before selfheal's own bookkeeping.
    let started = std::time::Instant::now();
    let mut timed_out = false;
    let executed = tokio::select! {
        // The lock's loss first: a stage that fails because Postgres went away is an
        // interruption, not a failure of the stage.
        biased;
        why = lock.lost() => {
            // Another worker may take the stage now: stop here.
            tracing::warn!(attempt, error = %why, "stage lock lost");
            ctx.metrics.attempt(stage, AttemptEnd::Interrupted, started.elapsed());
            return Err(PipelineError::LockLost(format!("{stage}: stopped, {why}")));
        }
        done = tokio::time::timeout(limit, stages::execute(ctx, run, stage)) => {
            done.unwrap_or_else(|_| {
                timed_out = true;
                Err(stages::StageError::Transient(format!(
                    "{stage} took longer than its limit of {} s: given up as hung",
                    limit.as_secs()
                )))
            })
        }
    };
    let took = started.elapsed();
    match executed {
        Ok(report) => {
            let mut client = ctx.pool.get().await?;
            let tx = client.transaction().await?;
            runs::finish_attempt(&tx, attempt_id, report.outcome, Some(&report.detail), None)
                .await?;
            match stage.next() {
                Some(next) => {
                    outbox::insert(&tx, run.id, next).await?;
                }
                None => close_run(&tx, run).await?,
            }
            tx.commit().await?;
            tracing::info!(attempt, outcome = report.outcome.as_str(), detail = %report.detail, "stage finished");
            let end = if report.outcome == Outcome::Skipped {
                AttemptEnd::Skipped
            } else {
                AttemptEnd::Succeeded
            };
            ctx.metrics.attempt(stage, end, took);
            drop(client);
            chain(ctx, run, stage).await?;
            Ok(Attempted::Done)
        }
        Err(e) => {
            let message = e.to_string();
            if let Ok(why) = tokio::time::timeout(OUTAGE_SETTLE, lock.lost()).await {
                tracing::warn!(attempt, error = %message, lock = %why, "stage failed as Postgres went away");
                ctx.metrics.attempt(stage, AttemptEnd::Interrupted, took);
                return Err(PipelineError::LockLost(format!(
                    "{stage}: {message} ({why})"
                )));
            }
            runs::finish_attempt(client, attempt_id, Outcome::Failed, None, Some(&message)).await?;
            tracing::warn!(attempt, error = %message, "stage attempt failed");
            let end = if timed_out {
                AttemptEnd::TimedOut
            } else {
                AttemptEnd::Failed
            };
            ctx.metrics.attempt(stage, end, took);
            if e.is_permanent() {
                fail_run(ctx, run, &format!("{stage}: {message}")).await?;
                return Ok(Attempted::Done);
            }
            Ok(Attempted::Again)
        }
    }
}

/// Pushes the next stage's outbox row, if any (the relay covers a failure here).
async fn chain(ctx: &WorkerContext, run: &Run, stage: Stage) -> Result<(), PipelineError> {
    let Some(next) = stage.next() else {
        return Ok(());
    };
    let client = ctx.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT id FROM outbox WHERE run_id = $1 AND stage = $2 AND enqueued_at IS NULL",
            &[&run.id, &next.as_str()],
        )
        .await?;
    drop(client);
    if let Some(row) = row {
        let job = StageJob {
            run_id: run.id,
            stage: next,
            traceparent: selfheal_shared::trace_context::current(),
        };
        if let Err(e) = outbox::dispatch(&ctx.pool, &ctx.queue, row.get(0), job).await {
            tracing::warn!(error = %selfheal_shared::cause::Chain(&e), "next stage left to the outbox relay");
        }
    }
    Ok(())
}

/// After the last stage: `succeeded` only if every stage really ran; a stage that was
/// skipped (not implemented yet) makes the run `incomplete`, never a success.
async fn close_run(
    tx: &deadpool_postgres::Transaction<'_>,
    run: &Run,
) -> Result<(), PipelineError> {
    let rows = tx
        .query(
            "SELECT stage, detail FROM stage_attempts WHERE run_id = $1 AND outcome = 'skipped' ORDER BY id",
            &[&run.id],
        )
        .await?;
    let skipped: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} ({})",
                r.get::<_, String>(0),
                r.get::<_, Option<String>>(1).unwrap_or_default()
            )
        })
        .collect();
    let (status, reason) = if skipped.is_empty() {
        ("succeeded", None)
    } else {
        (
            "incomplete",
            Some(format!("skipped: {}", skipped.join(", "))),
        )
    };
    runs::finish(tx, run.id, status, reason.as_deref()).await?;
    audit::append(
        tx,
        "selfheal:worker",
        "run.finished",
        &run.id.to_string(),
        &json!({"status": status, "reason": reason}),
    )
    .await?;
    Ok(())
}

async fn fail_run(ctx: &WorkerContext, run: &Run, reason: &str) -> Result<(), PipelineError> {
    let mut client = ctx.pool.get().await?;
    let tx = client.transaction().await?;
    runs::finish(&tx, run.id, "failed", Some(reason)).await?;
    audit::append(
        &tx,
        "selfheal:worker",
        "run.failed",
        &run.id.to_string(),
        &json!({"reason": reason}),
    )
    .await?;
    tx.commit().await?;
    tracing::error!(%reason, "run failed");
    Ok(())
}
