//! The Redis queue (apalis-redis) that carries jobs (stages, commands) to the workers.
//!
//! The producer connects lazily and forgets a broken connection, so the web server starts and
//! keeps answering while Redis is down; the outbox keeps what could not be pushed.

use std::time::Duration;

use apalis::prelude::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use tokio::sync::Mutex;

use crate::job::Job;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("REDIS_URL is not a valid Redis URL: {0}")]
    Url(String),
    #[error("Redis is unreachable: {0}")]
    Connect(String),
    #[error("pushing the job to Redis failed: {0}")]
    Push(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Storage settings shared by producers and workers: both must agree on the queue's keys.
pub fn storage_config(
    prefix: &str,
    heartbeat: Duration,
    missed_heartbeats: usize,
) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(format!("{prefix}:{}", Job::QUEUE))
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(missed_heartbeats)
}

pub async fn connect_storage(
    redis_url: &str,
    config: apalis_redis::Config,
) -> Result<RedisStorage<Job>, QueueError> {
    let client = redis::Client::open(redis_url).map_err(|e| QueueError::Url(e.to_string()))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    let conn: ConnectionManager = client
        .get_connection_manager_with_config(manager_config)
        .await
        .map_err(|e| QueueError::Connect(e.to_string()))?;
    Ok(RedisStorage::new(conn).with_config(config))
}

pub struct JobQueue {
    redis_url: String,
    config: apalis_redis::Config,
    storage: Mutex<Option<RedisStorage<Job>>>,
    timeout: Duration,
}

impl JobQueue {
    pub fn new(redis_url: &str, config: apalis_redis::Config) -> Self {
        JobQueue {
            redis_url: redis_url.to_string(),
            config,
            storage: Mutex::new(None),
            timeout: Duration::from_secs(3),
        }
    }

    pub async fn push(&self, job: impl Into<Job>) -> Result<(), QueueError> {
        // The lock covers finding the connection only: clones share one multiplexed
        // connection, so pushes run side by side instead of one at a time.
        let mut storage = {
            let mut guard = self.storage.lock().await;
            if guard.is_none() {
                let storage = tokio::time::timeout(
                    self.timeout,
                    connect_storage(&self.redis_url, self.config.clone()),
                )
                .await
                .map_err(|_| QueueError::Timeout(self.timeout))??;
                *guard = Some(storage);
            }
            guard
                .clone()
                .ok_or_else(|| QueueError::Connect("no connection".into()))?
        };
        let result = match tokio::time::timeout(self.timeout, storage.push(job.into())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(QueueError::Push(e.to_string())),
            Err(_) => Err(QueueError::Timeout(self.timeout)),
        };
        if result.is_err() {
            // Start from a fresh connection next time rather than reuse a broken one.
            *self.storage.lock().await = None;
        }
        result
    }

    /// Readiness probe: can Redis be reached right now?
    pub async fn ping(&self) -> Result<(), QueueError> {
        let client = redis::Client::open(self.redis_url.as_str())
            .map_err(|e| QueueError::Connect(e.to_string()))?;
        let fut = async {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| QueueError::Connect(e.to_string()))?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| QueueError::Connect(e.to_string()))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| QueueError::Timeout(self.timeout))??;
        Ok(())
    }
}
