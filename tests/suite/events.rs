//! Events out (docs/events.md): every lifecycle change of a real heal reaches a Redis stream and
//! an HTTP endpoint as CloudEvents, at least once, while the endpoint being down slows nothing.

use crate::support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cloudevents::AttributesReader;
use support::*;

#[derive(Clone, Default)]
struct Endpoint {
    down: Arc<AtomicBool>,
    /// What it accepted: the Authorization and Content-Type headers, and the body.
    accepted: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    refused: Arc<Mutex<usize>>,
}

async fn receive(State(e): State<Endpoint>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if e.down.load(Ordering::SeqCst) {
        *e.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    e.accepted
        .lock()
        .unwrap()
        .push((header("authorization"), header("content-type"), body));
    StatusCode::ACCEPTED
}

async fn endpoint() -> (Endpoint, String) {
    let endpoint = Endpoint::default();
    endpoint.down.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(endpoint.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, url)
}

#[tokio::test]
async fn a_heals_events_reach_both_sinks_once_each_though_the_endpoint_was_down_throughout() {
    let mut env = TestEnv::new().await;
    let (endpoint, url) = endpoint().await;
    let stream = format!("{}:events", env.tag);
    env.set("SELFHEAL_EVENTS_HTTP_URL", &url);
    env.set("SELFHEAL_EVENTS_HTTP_TOKEN", "sink-token-0123456789");
    env.set("SELFHEAL_EVENTS_REDIS_STREAM", &stream);
    env.set("SELFHEAL_EVENTS_INTERVAL_MS", "200");
    env.set("SELFHEAL_EVENTS_RETRY_MAX_SECS", "1");
    // The schema first: the test reads the events' tables from the start.
    env.migrate();
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    // The sinks register when the worker starts: events are kept from then on.
    env.wait_until(
        "SELECT count(*) = 2 FROM event_sinks",
        Duration::from_secs(30),
    )
    .await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(2101, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    // The heal does not wait for the endpoint.
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let db = env.db().await;
    // Meanwhile the Redis stream got every event; the endpoint none, though asked.
    env.wait_until(
        "SELECT count(*) = 0 FROM event_deliveries WHERE sink = 'redis' AND delivered_at IS NULL",
        Duration::from_secs(30),
    )
    .await;
    let ids: BTreeSet<String> = db
        .query("SELECT event_id::text FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let types: Vec<String> = db
        .query("SELECT type FROM events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for expected in [
        "dev.selfheal.incident.opened",
        "dev.selfheal.patch.proposed",
        "dev.selfheal.pull_request.opened",
        "dev.selfheal.run.finished",
    ] {
        assert!(types.iter().any(|t| t == expected), "{expected}: {types:?}");
    }
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "dev.selfheal.stage.finished")
            .count(),
        6,
        "{types:?}"
    );
    let mut redis = redis::Client::open(env.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let streamed: BTreeSet<String> = entries
        .iter()
        .map(|(_, fields)| {
            let event: cloudevents::Event =
                serde_json::from_str(&fields.iter().find(|(k, _)| k == "event").unwrap().1)
                    .unwrap();
            event.id().to_string()
        })
        .collect();
    assert_eq!(streamed, ids);
    assert!(
        *endpoint.refused.lock().unwrap() > 0,
        "the endpoint was asked"
    );
    assert!(endpoint.accepted.lock().unwrap().is_empty());
    let failing: i64 = db
        .query_one(
            "SELECT count(*) FROM event_deliveries
             WHERE sink = 'http' AND delivered_at IS NULL AND last_error LIKE '%503%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failing > 0, "the refusal is recorded with its cause");

    // Back up: every event arrives, once, as a CloudEvent with the token.
    endpoint.down.store(false, Ordering::SeqCst);
    env.wait_until(
        "SELECT count(*) = 0 FROM event_deliveries WHERE delivered_at IS NULL",
        Duration::from_secs(30),
    )
    .await;
    let accepted = endpoint.accepted.lock().unwrap().clone();
    let mut received = BTreeSet::new();
    for (authorization, content_type, body) in &accepted {
        assert_eq!(authorization, "Bearer sink-token-0123456789");
        assert!(
            content_type.starts_with("application/cloudevents+json"),
            "{content_type}"
        );
        let event: cloudevents::Event = serde_json::from_slice(body).unwrap();
        assert_eq!(event.source().to_string(), "urn:selfheal");
        assert!(event.ty().starts_with("dev.selfheal."), "{}", event.ty());
        assert!(
            received.insert(event.id().to_string()),
            "{} twice",
            event.id()
        );
    }
    assert_eq!(received, ids);
}

#[tokio::test]
async fn without_a_sink_no_event_is_kept_and_the_app_role_cannot_forge_one() {
    let env = TestEnv::new().await;
    env.migrate();
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(2201, &now()))
        .await;
    assert_eq!(status, 202);
    // Admitted: the incident and the run are in, and their triggers kept nothing.
    assert_eq!(env.admit(&body).await["outcome"], "run_created");
    assert_eq!(env.count("SELECT count(*) FROM events").await, 0);

    // A login role in selfheal_app, as web and the workers connect in production.
    let db = env.db().await;
    let role = format!("{}_events", env.tag);
    db.batch_execute(&format!(
        "CREATE ROLE {role} LOGIN IN ROLE selfheal_app;
         INSERT INTO event_sinks (name) VALUES ('http');"
    ))
    .await
    .unwrap();
    let url = env
        .database_url
        .replacen("postgres@", &format!("{role}@"), 1);
    let app_role = pg(&url).await;
    for forged in [
        "INSERT INTO events (type, subject, data) VALUES ('dev.selfheal.run.finished', 'x', '{}')",
        "SELECT emit_event('dev.selfheal.run.finished', 'x', '{}')",
        "DELETE FROM event_deliveries",
        "DELETE FROM event_sinks",
    ] {
        let err = app_role.batch_execute(forged).await.unwrap_err();
        let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
        assert_eq!(code, "42501", "{forged}: {err:?}");
    }
    // What it may do: change what the triggers watch, which emits through them.
    app_role
        .batch_execute(
            "UPDATE runs SET status = 'failed', failure_reason = 'test' WHERE github_run_id = 2201",
        )
        .await
        .unwrap();
    assert_eq!(
        env.count("SELECT count(*) FROM events WHERE type = 'dev.selfheal.run.finished'")
            .await,
        1
    );
    db.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}
