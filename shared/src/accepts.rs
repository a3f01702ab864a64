//! Failed runs' deliveries stored in batches: the webhook's hot path, written the way a
//! database's group commit writes. Each request hands its delivery to `Accepts` and waits for
//! its answer; a writer takes every delivery waiting when it is free and stores them all, each
//! with the outbox row of its admission, in one statement (one transaction). At a steady
//! trickle a batch is one delivery, written at once; under load, while the `WRITERS`
//! statements are in Postgres, the next deliveries gather and go together, and Postgres binds,
//! runs, commits and answers once per batch instead of once per delivery.
//!
//! What `failed_run::accept` promised for one delivery holds for each in a batch: stored with
//! its outbox row or not at all, deduplicated by its id (against what is stored, and within
//! the batch), answered only once committed. A batch Postgres refuses for a payload it cannot
//! store is split in halves until the payload is alone, so a hostile payload costs the others
//! a few statements (about twice the batch's base-2 logarithm), and its own request a 400.
//! Any other failure (an outage, a lock or statement timeout) is every waiting request's
//! answer at once: a 503, which GitHub's redelivery covers. The writers' sessions give up
//! on a lock and on a statement (`LOCK_TIMEOUT`, `STATEMENT_TIMEOUT`), so a session that holds
//! a delivery id and never commits holds up one batch for seconds, not the webhook for ever.
//! A request that went away before its delivery was taken (the client gone, the admission's
//! timeout answered 408) is not written: its sender was told it failed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::incidents::{Delivery, Ingested};

/// Batch statements in Postgres at once. More than one, so that a batch being written never
/// keeps the next from starting; few, so that under load deliveries gather into batches
/// instead of each taking a statement of its own. Measured with `selfheal bench ingest` on two
/// cores (docs/performance.md): 2 did better than 1, 4 or 8. Also the writers' pool's size.
pub const WRITERS: usize = 2;
/// Deliveries in one statement at most.
const MAX_BATCH: usize = 128;
/// Payload bytes in one statement at most (a larger delivery goes alone): Postgres refuses a
/// message over 1 GB, and a batch's parameters are held in memory while it is written.
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Deliveries waiting for a writer at most; a request waits (within its own timeout) for room.
const WAITING: usize = 2 * MAX_BATCH;
/// How long a writer's statement waits for a row lock (a delivery id another session has
/// inserted and not committed), and how long it may run.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(2);
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a delivery could not be stored. Shared: one failure of a batch is each of its
/// deliveries' answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcceptError {
    #[error("Postgres pool: {0}")]
    Pool(#[source] Arc<deadpool_postgres::PoolError>),
    #[error("Postgres: {0}")]
    Db(#[source] Arc<tokio_postgres::Error>),
    /// The writers are gone (the server shutting down, or a writer that panicked).
    #[error("the delivery writers have stopped")]
    Stopped,
}

impl From<deadpool_postgres::PoolError> for AcceptError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        AcceptError::Pool(Arc::new(e))
    }
}

impl From<tokio_postgres::Error> for AcceptError {
    fn from(e: tokio_postgres::Error) -> Self {
        AcceptError::Db(Arc::new(e))
    }
}

impl AcceptError {
    /// Postgres refused what a payload holds (`db::payload_refused`): the payload's fault,
    /// not the batch's.
    fn refused_payload(&self) -> bool {
        matches!(self, AcceptError::Db(e) if crate::db::payload_refused(e))
    }
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

/// What the writers have done so far (for tests and benchmarks: how much batching did).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Statements that stored deliveries.
    pub statements: u64,
    pub deliveries: u64,
    /// Statements refused for a payload, each then split in halves.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counts {
    statements: AtomicU64,
    deliveries: AtomicU64,
    refused: AtomicU64,
}

/// The handle requests hand their deliveries to; cheap to clone.
#[derive(Clone)]
pub struct Accepts {
    pending: mpsc::Sender<Pending>,
    counts: Arc<Counts>,
}

impl Accepts {
    /// Starts the writers on `pool` (its own: `WRITERS` connections whose sessions time out,
    /// `db::pool_with_timeouts`). They end once every `Accepts` clone is dropped and what was
    /// handed to them is written: await the handle at shutdown.
    pub fn start(pool: Pool) -> (Accepts, tokio::task::JoinHandle<()>) {
        let (pending, mut received) = mpsc::channel::<Pending>(WAITING);
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
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
                let (pool, counts) = (pool.clone(), shared.clone());
                running.spawn(async move {
                    write(&pool, batch, &counts).await;
                    drop(writer);
                });
                // Reap what has finished, so the set does not grow with the batches.
                while let Some(done) = running.try_join_next() {
                    reaped(done);
                }
            }
            while let Some(done) = running.join_next().await {
                reaped(done);
            }
        });
        (Accepts { pending, counts }, dispatcher)
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
            .await
            .map_err(|_| AcceptError::Stopped)?;
        answered.await.map_err(|_| AcceptError::Stopped)?
    }

    pub fn written(&self) -> Written {
        Written {
            statements: self.counts.statements.load(Ordering::Relaxed),
            deliveries: self.counts.deliveries.load(Ordering::Relaxed),
            refused: self.counts.refused.load(Ordering::Relaxed),
        }
    }
}

/// A writer that panicked is logged with its cause; its requests were answered `Stopped`
/// when their senders dropped.
fn reaped(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %crate::cause::Chain(&e), "a delivery writer failed; its requests were answered 503");
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

async fn write(pool: &Pool, batch: Vec<Pending>, counts: &Counts) {
    // A request that has gone has been answered already (408, or nobody to answer).
    let mut batch: Vec<Pending> = batch
        .into_iter()
        .filter(|p| !p.answer.is_closed())
        .collect();
    // A delivery id twice in one batch (GitHub's redelivery racing the original): the first
    // goes in this round, the others in the next, where they find it stored (or, if it was
    // refused, are judged on their own payload).
    while !batch.is_empty() {
        batch.sort_by(|a, b| a.id.cmp(&b.id));
        let mut repeats = Vec::new();
        let mut unique: Vec<Pending> = Vec::with_capacity(batch.len());
        for pending in batch {
            match unique.last() {
                Some(last) if last.id == pending.id => repeats.push(pending),
                _ => unique.push(pending),
            }
        }
        for part in by_size(unique) {
            write_split(pool, part, counts).await;
        }
        batch = repeats;
    }
}

/// Consecutive parts of at most `MAX_BATCH_BYTES` of payload (a larger delivery alone).
fn by_size(batch: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut parts: Vec<Vec<Pending>> = Vec::new();
    let mut bytes = 0;
    for pending in batch {
        let size = pending.payload.len();
        match parts.last_mut() {
            Some(part) if bytes + size <= MAX_BATCH_BYTES => part.push(pending),
            _ => {
                bytes = 0;
                parts.push(vec![pending]);
            }
        }
        bytes += size;
    }
    parts
}

/// Writes `batch` in one statement; when Postgres refuses a payload in it, the two halves
/// apart, and so on down to the payload alone.
async fn write_split(pool: &Pool, batch: Vec<Pending>, counts: &Counts) {
    let mut parts = vec![batch];
    while let Some(mut part) = parts.pop() {
        match write_together(pool, &part).await {
            Ok(outbox_ids) => {
                counts.statements.fetch_add(1, Ordering::Relaxed);
                counts
                    .deliveries
                    .fetch_add(part.len() as u64, Ordering::Relaxed);
                for pending in part {
                    let ingested = match outbox_ids.get(&pending.id) {
                        Some(&outbox_id) => Ingested::Accepted { outbox_id },
                        None => Ingested::Duplicate,
                    };
                    let _ = pending.answer.send(Ok(ingested));
                }
            }
            Err(e) if part.len() > 1 && e.refused_payload() => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %crate::cause::Chain(&e), deliveries = part.len(), "a batch of deliveries was refused for a payload; writing its halves apart");
                let second = part.split_off(part.len() / 2);
                // The first half next: popped last in, first out.
                parts.push(second);
                parts.push(part);
            }
            Err(e) => {
                if !e.refused_payload() {
                    tracing::warn!(error = %crate::cause::Chain(&e), deliveries = part.len(), "deliveries not stored; answered 503");
                }
                for pending in part {
                    let _ = pending.answer.send(Err(e.clone()));
                }
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
