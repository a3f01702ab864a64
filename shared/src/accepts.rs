//! Failed runs' deliveries stored in batches: the webhook's hot path, written the way a
//! database's group commit writes. Each request hands its delivery to `Accepts` and waits for
//! its answer; a writer takes every delivery waiting when it is free and stores them all, each
//! with the outbox row of its admission, in one statement (one transaction). At a steady
//! trickle a batch is one delivery, written at once; under load, while `WRITERS` statements are
//! in Postgres, the next deliveries gather and go together. Per delivery, Postgres then parses,
//! plans, starts and commits once per batch rather than once each, and that is most of what it
//! spent on a delivery beside the payload's own parsing (`docs/performance.md`).
//!
//! What `failed_run::accept` promised for one delivery holds for each in a batch: stored with
//! its outbox row or not at all, deduplicated by its id (against what is stored, and within
//! the batch), answered only once committed. A batch the database refuses (one payload
//! Postgres cannot store, an outage) is written again delivery by delivery, so each gets its
//! own answer and a hostile payload costs the others nothing. A request that goes away before
//! its answer (a client gone, the admission's timeout) leaves its delivery to be written: the
//! outbox relay pushes what nobody pushed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::failed_run;
use crate::incidents::{Delivery, Ingested};

/// Batch statements in Postgres at once. More than one, so that a batch being written never
/// keeps the next from starting; few, so that under load deliveries gather into batches
/// instead of each taking a statement of its own. Measured with `selfheal bench ingest` on two
/// cores: 1, 2, 4 and 8 writers gave 0.73x, 0.79-0.89x, 0.76-0.77x and 0.71x the bare
/// receiver's rate (`docs/performance.md`).
pub const WRITERS: usize = 2;
/// Deliveries in one statement at most (about 20 KB each: a few MB of parameters).
const MAX_BATCH: usize = 128;

/// Why a delivery could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The writer is gone (the server shutting down).
    #[error("the delivery writer has stopped")]
    Stopped,
}

/// One delivery, owned, waiting for a writer.
struct Pending {
    id: String,
    event: String,
    action: Option<String>,
    installation_id: Option<i64>,
    repository_id: Option<i64>,
    payload: String,
    traceparent: Option<String>,
    runs_per_hour: Option<i64>,
    answer: oneshot::Sender<Result<Ingested, AcceptError>>,
}

/// Statements and deliveries written so far (for benchmarks and tests: how much batching did).
#[derive(Debug, Default)]
struct Written {
    statements: AtomicU64,
    deliveries: AtomicU64,
}

/// The handle requests hand their deliveries to; cheap to clone. Its channel is unbounded:
/// what waits in it is bounded by the requests the webhook handles at once (`max_in_flight`).
#[derive(Clone)]
pub struct Accepts {
    pending: mpsc::UnboundedSender<Pending>,
    written: Arc<Written>,
}

impl Accepts {
    /// Starts the writers on `pool`. They end once every `Accepts` clone is dropped and what
    /// was handed to them is written: await the handle at shutdown.
    pub fn start(pool: Pool) -> (Accepts, tokio::task::JoinHandle<()>) {
        let (pending, mut received) = mpsc::unbounded_channel::<Pending>();
        let written = Arc::new(Written::default());
        let counts = written.clone();
        let dispatcher = tokio::spawn(async move {
            let writers = Arc::new(Semaphore::new(WRITERS));
            let mut running = tokio::task::JoinSet::new();
            loop {
                // A writer first, then whatever waits: while every writer is busy, deliveries
                // gather in the channel and the next free one takes them all.
                let Ok(writer) = writers.clone().acquire_owned().await else {
                    break;
                };
                let mut batch = Vec::new();
                if received.recv_many(&mut batch, MAX_BATCH).await == 0 {
                    break;
                }
                let (pool, counts) = (pool.clone(), counts.clone());
                running.spawn(async move {
                    write(&pool, batch, &counts).await;
                    drop(writer);
                });
                // Reap what has finished, so the set does not grow with the batches.
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        });
        (Accepts { pending, written }, dispatcher)
    }

    /// Stores a failed run's delivery with its admission's outbox row, as
    /// `failed_run::accept` does: `Accepted`, or `Duplicate` when its id was stored before.
    pub async fn accept(
        &self,
        delivery: &Delivery<'_>,
        runs_per_hour: Option<i64>,
    ) -> Result<Ingested, AcceptError> {
        let (answer, answered) = oneshot::channel();
        let envelope = delivery.envelope;
        self.pending
            .send(Pending {
                id: delivery.id.to_string(),
                event: delivery.event.to_string(),
                action: envelope.action.clone(),
                installation_id: envelope.installation_id,
                repository_id: envelope.repository_id,
                payload: delivery.payload.to_string(),
                // Read here, in the request's span: the writer's task has none.
                traceparent: crate::trace_context::current(),
                runs_per_hour,
                answer,
            })
            .map_err(|_| AcceptError::Stopped)?;
        answered.await.map_err(|_| AcceptError::Stopped)?
    }

    /// (statements, deliveries) written since start.
    pub fn written(&self) -> (u64, u64) {
        (
            self.written.statements.load(Ordering::Relaxed),
            self.written.deliveries.load(Ordering::Relaxed),
        )
    }
}

/// Every delivery of the batch, with its outbox row, in one statement. The rows go in by
/// delivery id, so two batches holding the same ids wait for each other in one order and
/// never deadlock.
const ACCEPT_BATCH: &str = "WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::text[], $7::text[], $8::bigint[])
            AS i(delivery_id, event, action, installation_id, repository_id, payload,
                 traceparent, runs_per_hour)
    ), stored AS (
        INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, repository_id, outcome, payload)
        SELECT delivery_id, event, action, installation_id, repository_id, 'accepted', payload::jsonb
          FROM input ORDER BY delivery_id
        ON CONFLICT (delivery_id) DO NOTHING
        RETURNING delivery_id
    )
    INSERT INTO outbox (delivery_id, traceparent, runs_per_hour)
    SELECT stored.delivery_id, input.traceparent, input.runs_per_hour
      FROM stored JOIN input USING (delivery_id)
    RETURNING delivery_id, id";

async fn write(pool: &Pool, mut batch: Vec<Pending>, written: &Written) {
    // A delivery id twice in one batch (GitHub's redelivery racing the original): the first
    // is written, the others answer as the duplicates they are once it is.
    batch.sort_by(|a, b| a.id.cmp(&b.id));
    let mut repeats = Vec::new();
    let mut unique: Vec<Pending> = Vec::with_capacity(batch.len());
    for pending in batch {
        match unique.last() {
            Some(last) if last.id == pending.id => repeats.push(pending),
            _ => unique.push(pending),
        }
    }
    match write_together(pool, &unique).await {
        Ok(outbox_ids) => {
            written.statements.fetch_add(1, Ordering::Relaxed);
            written
                .deliveries
                .fetch_add(unique.len() as u64, Ordering::Relaxed);
            for pending in unique {
                let ingested = match outbox_ids.get(&pending.id) {
                    Some(&outbox_id) => Ingested::Accepted { outbox_id },
                    None => Ingested::Duplicate,
                };
                let _ = pending.answer.send(Ok(ingested));
            }
            for pending in repeats {
                let _ = pending.answer.send(Ok(Ingested::Duplicate));
            }
        }
        Err(e) => {
            if unique.len() > 1 {
                tracing::info!(error = %crate::cause::Chain(&e), deliveries = unique.len(), "a batch of deliveries was refused; writing them one by one");
            }
            // One by one, in the order sorted (repeats after the first, which they then
            // find stored): each answered with what Postgres says of it alone.
            for pending in unique.into_iter().chain(repeats) {
                let alone = write_alone(pool, &pending).await;
                if alone.is_ok() {
                    written.statements.fetch_add(1, Ordering::Relaxed);
                    written.deliveries.fetch_add(1, Ordering::Relaxed);
                }
                let _ = pending.answer.send(alone);
            }
        }
    }
}

async fn write_together(
    pool: &Pool,
    batch: &[Pending],
) -> Result<HashMap<String, i64>, AcceptError> {
    let client = pool.get().await?;
    let ids: Vec<&str> = batch.iter().map(|p| p.id.as_str()).collect();
    let events: Vec<&str> = batch.iter().map(|p| p.event.as_str()).collect();
    let actions: Vec<Option<&str>> = batch.iter().map(|p| p.action.as_deref()).collect();
    let installations: Vec<Option<i64>> = batch.iter().map(|p| p.installation_id).collect();
    let repositories: Vec<Option<i64>> = batch.iter().map(|p| p.repository_id).collect();
    let payloads: Vec<&str> = batch.iter().map(|p| p.payload.as_str()).collect();
    let traceparents: Vec<Option<&str>> = batch.iter().map(|p| p.traceparent.as_deref()).collect();
    let budgets: Vec<Option<i64>> = batch.iter().map(|p| p.runs_per_hour).collect();
    let rows = client
        .query(
            &client.prepare_cached(ACCEPT_BATCH).await?,
            &[
                &ids,
                &events,
                &actions,
                &installations,
                &repositories,
                &payloads,
                &traceparents,
                &budgets,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect())
}

async fn write_alone(pool: &Pool, pending: &Pending) -> Result<Ingested, AcceptError> {
    let client = pool.get().await?;
    let envelope = crate::envelope::Envelope {
        action: pending.action.clone(),
        installation_id: pending.installation_id,
        repository_id: pending.repository_id,
    };
    let delivery = Delivery {
        id: &pending.id,
        event: &pending.event,
        payload: &pending.payload,
        envelope: &envelope,
    };
    Ok(failed_run::accept(
        &client,
        &delivery,
        pending.traceparent.as_deref(),
        pending.runs_per_hour,
    )
    .await?)
}
