//! Sends the lifecycle events the database's triggers wrote (migration V24) to the configured
//! sinks, as CloudEvents 1.0 in structured JSON: at least once (the event's id is for the
//! receiver's dedup), outside any stage's transaction, so that a sink that is down delays its
//! own events and nothing else. Every worker sends; a delivery is leased to one at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cloudevents::{EventBuilder, EventBuilderV10};
use deadpool_postgres::Pool;
use secrecy::ExposeSecret;
use selfheal_shared::cause::Chain;
use selfheal_shared::config::{EventsConfig, HttpSink};
use uuid::Uuid;

/// Events one worker claims from one sink at a time.
const BATCH: i64 = 100;
/// How long a sink may take to take one event.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a round holds its events (the claim's lease) and how long it may send: it stops
/// in time to record what it sent before another worker may claim them again.
const LEASE_SECS: f64 = 120.0;
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// A Redis stream keeps about this many events (`XADD ... MAXLEN ~`): its readers are expected
/// to keep up, and Redis's memory is the queue's too.
const STREAM_MAX_LEN: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("building the CloudEvent: {0}")]
    Build(#[from] cloudevents::event::EventBuilderError),
    #[error("encoding the CloudEvent: {0}")]
    Encode(#[from] serde_json::Error),
    /// Without its URL, which may carry a secret.
    #[error("HTTP sink: {0}")]
    Http(reqwest::Error),
    #[error("the sink took longer than {0:?}")]
    Timeout(Duration),
    #[error("HTTP sink answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("Redis sink: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One event as the database holds it.
struct Stored {
    id: i64,
    event_id: Uuid,
    kind: String,
    subject: String,
    data: serde_json::Value,
    at: DateTime<Utc>,
    attempts: i32,
}

enum Sink {
    Http {
        client: reqwest::Client,
        sink: HttpSink,
    },
    Redis {
        // Boxed: with TLS compiled in, a client carries its certificates and outweighs the
        // HTTP sink many times.
        client: Box<redis::Client>,
        stream: String,
        connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    },
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Http { .. } => "http",
            Sink::Redis { .. } => "redis",
        }
    }

    async fn send(&self, json: &str, event_id: Uuid) -> Result<(), EventsError> {
        match self {
            Sink::Http { client, sink } => {
                let mut request = client
                    .post(sink.url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/cloudevents+json; charset=utf-8",
                    )
                    .body(json.to_string());
                if let Some(token) = &sink.token {
                    request = request.bearer_auth(token.expose_secret());
                }
                let status = request
                    .send()
                    .await
                    .map_err(|e| EventsError::Http(e.without_url()))?
                    .status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(EventsError::Refused(status))
                }
            }
            Sink::Redis {
                client,
                stream,
                connection,
            } => {
                let mut held = connection.lock().await;
                if held.is_none() {
                    *held = Some(client.get_multiplexed_async_connection().await?);
                }
                let conn = held.as_mut().expect("connected above");
                let sent: Result<String, _> = redis::cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_MAX_LEN)
                    .arg("*")
                    .arg("id")
                    .arg(event_id.to_string())
                    .arg("event")
                    .arg(json)
                    .query_async(conn)
                    .await;
                if sent.is_err() {
                    // Connected again at the next try.
                    *held = None;
                }
                sent.map(|_| ()).map_err(EventsError::from)
            }
        }
    }
}

/// Registers the configured sinks (events are kept for registered sinks only), then sends
/// what is due every `interval`, each sink in a loop of its own, until the process ends.
pub async fn deliver_forever(pool: Pool, config: EventsConfig, redis_url: String) {
    let mut sinks = Vec::new();
    if let Some(sink) = &config.http {
        // No redirects: the endpoint is the configured one, not wherever it points.
        match reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => sinks.push(Sink::Http {
                client,
                sink: sink.clone(),
            }),
            Err(e) => {
                tracing::error!(error = %Chain(&e), "events: no HTTP client; the HTTP sink gets nothing")
            }
        }
    }
    if let Some(stream) = &config.redis_stream {
        match redis::Client::open(redis_url.as_str()) {
            Ok(client) => sinks.push(Sink::Redis {
                client: Box::new(client),
                stream: stream.clone(),
                connection: tokio::sync::Mutex::new(None),
            }),
            Err(e) => {
                tracing::error!(error = %Chain(&e), "events: REDIS_URL refused; the Redis sink gets nothing")
            }
        }
    }
    let loops = sinks.into_iter().map(|sink| {
        let (pool, config) = (pool.clone(), config.clone());
        tokio::spawn(async move { deliver_to(pool, config, sink).await })
    });
    futures::future::join_all(loops).await;
}

/// One sink's loop: one that is slow or down holds up only its own events.
async fn deliver_to(pool: Pool, config: EventsConfig, sink: Sink) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut registered = false;
    loop {
        tick.tick().await;
        if !registered {
            match register(&pool, &sink).await {
                Ok(()) => registered = true,
                Err(e) => {
                    tracing::warn!(sink = sink.name(), error = %Chain(&e), "events: cannot register the sink yet");
                    continue;
                }
            }
        }
        if let Err(e) = deliver_due(&pool, &config, &sink).await {
            tracing::warn!(sink = sink.name(), error = %Chain(&e), "events: delivery round failed; the events stay due");
        }
    }
}

async fn register(pool: &Pool, sink: &Sink) -> Result<(), EventsError> {
    pool.get()
        .await?
        .execute(
            "INSERT INTO event_sinks (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&sink.name()],
        )
        .await?;
    Ok(())
}

/// The pause before the next try of an event refused `attempts` times: 1 s, doubling, at most
/// `max`.
fn backoff(attempts: i32, max: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    Duration::from_secs(1u64 << doublings).min(max)
}

/// Claims up to `BATCH` due events of `sink` (a lease, in one short statement), sends them in
/// order with no connection held, and records what happened under the same lease. The first
/// refusal, or `ROUND_LIMIT`, ends the round: the rest are released for the next one.
async fn deliver_due(pool: &Pool, config: &EventsConfig, sink: &Sink) -> Result<(), EventsError> {
    let lease = Uuid::new_v4();
    let rows = pool
        .get()
        .await?
        .query(
            "WITH due AS (
                 SELECT event_id FROM event_deliveries
                 WHERE sink = $1 AND delivered_at IS NULL AND next_attempt_at <= now()
                   AND (leased_until IS NULL OR leased_until < now())
                 ORDER BY event_id LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE event_deliveries d
             SET leased_until = now() + make_interval(secs => $3), lease = $4,
                 attempts = d.attempts + 1
             FROM due, events e
             WHERE d.sink = $1 AND d.event_id = due.event_id AND e.id = d.event_id
             RETURNING e.id, e.event_id, e.type, e.subject, e.data, e.created_at, d.attempts",
            &[&sink.name(), &BATCH, &LEASE_SECS, &lease],
        )
        .await?;
    let mut due: Vec<Stored> = rows
        .iter()
        .map(|r| Stored {
            id: r.get(0),
            event_id: r.get(1),
            kind: r.get(2),
            subject: r.get(3),
            data: r.get(4),
            at: r.get(5),
            attempts: r.get(6),
        })
        .collect();
    due.sort_by_key(|e| e.id);
    let started = std::time::Instant::now();
    let mut sent = Vec::new();
    let mut refused = None;
    for event in &due {
        if started.elapsed() > ROUND_LIMIT {
            break;
        }
        let outcome = match cloud_event(config, event) {
            Ok(json) => tokio::time::timeout(SEND_TIMEOUT, sink.send(&json, event.event_id))
                .await
                .unwrap_or(Err(EventsError::Timeout(SEND_TIMEOUT))),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => sent.push(event.id),
            Err(e) => {
                // As text: some of the causes cannot cross an await (not Sync).
                refused = Some((event, Chain(&e).to_string()));
                break;
            }
        }
    }
    let client = pool.get().await?;
    if !sent.is_empty() {
        client
            .execute(
                "UPDATE event_deliveries
                 SET delivered_at = now(), leased_until = NULL, lease = NULL, last_error = NULL
                 WHERE sink = $1 AND event_id = ANY($2) AND lease = $3",
                &[&sink.name(), &sent, &lease],
            )
            .await?;
    }
    let mut refused_id = None;
    if let Some((event, error)) = refused {
        let wait = backoff(event.attempts, config.retry_max);
        tracing::warn!(sink = sink.name(), event = %event.event_id, attempts = event.attempts, ?wait, %error, "events: the sink refused an event; trying again later");
        client
            .execute(
                "UPDATE event_deliveries
                 SET leased_until = NULL, lease = NULL, last_error = $3,
                     next_attempt_at = now() + make_interval(secs => $4::float8)
                 WHERE sink = $1 AND event_id = $2 AND lease = $5",
                &[&sink.name(), &event.id, &error, &wait.as_secs_f64(), &lease],
            )
            .await?;
        refused_id = Some(event.id);
    }
    // What the round did not try (after a refusal, or past its time): free for the next
    // round, uncharged.
    let untried: Vec<i64> = due
        .iter()
        .map(|e| e.id)
        .filter(|id| !sent.contains(id) && refused_id != Some(*id))
        .collect();
    if !untried.is_empty() {
        client
            .execute(
                "UPDATE event_deliveries
                 SET leased_until = NULL, lease = NULL, attempts = attempts - 1
                 WHERE sink = $1 AND event_id = ANY($2) AND lease = $3",
                &[&sink.name(), &untried, &lease],
            )
            .await?;
    }
    Ok(())
}

/// The event as a CloudEvent 1.0 in structured JSON mode.
fn cloud_event(config: &EventsConfig, event: &Stored) -> Result<String, EventsError> {
    let built = EventBuilderV10::new()
        .id(event.event_id.to_string())
        .source(config.source.as_str())
        .ty(event.kind.as_str())
        .subject(event.subject.as_str())
        .time(event.at)
        .data("application/json", event.data.clone())
        .build()?;
    Ok(serde_json::to_string(&built)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_the_most() {
        let max = Duration::from_secs(300);
        let waits: Vec<u64> = (1..=10).map(|a| backoff(a, max).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(i32::MAX, max), max);
    }

    #[test]
    fn an_event_is_a_cloud_event_with_its_id_type_subject_and_data() {
        let config = EventsConfig::default();
        let stored = Stored {
            id: 1,
            event_id: Uuid::new_v4(),
            kind: "dev.selfheal.run.finished".into(),
            subject: "run-1".into(),
            data: serde_json::json!({"status": "succeeded"}),
            at: Utc::now(),
            attempts: 1,
        };
        let json: serde_json::Value =
            serde_json::from_str(&cloud_event(&config, &stored).unwrap()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], stored.event_id.to_string());
        assert_eq!(json["source"], "urn:selfheal");
        assert_eq!(json["type"], "dev.selfheal.run.finished");
        assert_eq!(json["subject"], "run-1");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["data"]["status"], "succeeded");
    }
}
