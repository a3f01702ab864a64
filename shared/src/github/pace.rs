//! Writes paced per installation, across every worker of the fleet. GitHub's secondary rate
//! limits punish bursts of content-creating requests (80 a minute; "wait at least one second
//! between each request" for POST, PATCH, PUT and DELETE, its REST guide says), and a bare
//! 403 for one lasts at least a minute. Replicas share Redis, so the turn is a Redis key:
//! `SET NX PX interval` per installation; whoever sets it writes, the others wait out its TTL.
//! A secondary limit GitHub answered anyway pauses the installation's writes on every worker.

use std::time::Duration;

use redis::aio::ConnectionManager;

pub struct WritePacer {
    interval: Duration,
    prefix: String,
    redis: Option<ConnectionManager>,
}

impl WritePacer {
    /// No pacing (a tool that writes once, or tests of something else).
    pub fn unpaced() -> Self {
        WritePacer {
            interval: Duration::ZERO,
            prefix: String::new(),
            redis: None,
        }
    }

    /// Paced through the Redis at `redis_url`, under `prefix` (the queue's, so that two
    /// deployments on one Redis pace apart).
    pub async fn connect(
        redis_url: &str,
        prefix: &str,
        interval: Duration,
    ) -> Result<Self, redis::RedisError> {
        if interval.is_zero() {
            return Ok(Self::unpaced());
        }
        let client = redis::Client::open(redis_url)?;
        let redis = ConnectionManager::new(client).await?;
        Ok(WritePacer {
            interval,
            prefix: prefix.to_string(),
            redis: Some(redis),
        })
    }

    fn key(&self, installation_id: i64) -> String {
        format!("{}:pace:{installation_id}", self.prefix)
    }

    /// Waits for the installation's turn to write. Redis away does not stop a write: the
    /// pacing is a courtesy to GitHub, and GitHub's own limit (waited out) is the backstop.
    pub async fn wait_turn(&self, installation_id: i64) {
        let Some(redis) = &self.redis else {
            return;
        };
        let key = self.key(installation_id);
        let ms = self.interval.as_millis().max(1) as u64;
        loop {
            let mut conn = redis.clone();
            let taken: Result<Option<String>, _> = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query_async(&mut conn)
                .await;
            match taken {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, installation_id, "write pacing unavailable (Redis); writing unpaced");
                    return;
                }
            }
            let left: Result<i64, _> = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await;
            // -2: gone meanwhile; -1: no TTL (cannot happen with PX): try again at once.
            let wait = left.unwrap_or(0).clamp(1, 120_000) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// GitHub said the installation is writing too fast: no worker writes for it for `wait`.
    pub async fn pause(&self, installation_id: i64, wait: Duration) {
        let Some(redis) = &self.redis else {
            return;
        };
        let mut conn = redis.clone();
        let key = self.key(installation_id);
        let ms = wait.as_millis().max(1) as u64;
        // Never shortens a longer pause another worker set (PEXPIRE … GT, Redis 7).
        let set: Result<(), _> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms)
            .arg("GT")
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = set {
            tracing::warn!(error = %e, installation_id, "could not pause the installation's writes (Redis)");
        }
    }
}
