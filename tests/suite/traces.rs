//! Traces (docs/traces.md): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, web and two workers (each
//! its own process) export a run as one trace to a local OTLP/HTTP receiver: the webhook's
//! span, then each stage a child of the one before, whichever worker ran it, with the
//! repository, incident and stage on the spans and no secret anywhere in what is exported.

use crate::support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use support::*;

type Received = Arc<Mutex<Vec<Bytes>>>;

async fn collect(State(received): State<Received>, body: Bytes) -> StatusCode {
    received.lock().unwrap().push(body);
    StatusCode::OK
}

/// A span as exported: its ids, name, service and attributes (as strings).
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    service: String,
    attributes: HashMap<String, String>,
}

fn text(value: &Value) -> String {
    match value {
        Value::Object(v) => v
            .values()
            .next()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_default(),
        other => other.to_string(),
    }
}

fn attributes(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| (a["key"].as_str().unwrap().to_string(), text(&a["value"])))
        .collect()
}

fn spans(bodies: &[Bytes]) -> Vec<Span> {
    let mut out = Vec::new();
    for body in bodies {
        let export: Value = serde_json::from_slice(body).expect("OTLP/JSON");
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = attributes(&resource["resource"]["attributes"])
                .remove("service.name")
                .unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push(Span {
                        trace: span["traceId"].as_str().unwrap().to_string(),
                        id: span["spanId"].as_str().unwrap().to_string(),
                        parent: span["parentSpanId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        name: span["name"].as_str().unwrap().to_string(),
                        service: service.clone(),
                        attributes: attributes(&span["attributes"]),
                    });
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn a_run_is_one_trace_from_the_webhook_through_every_stage_in_every_worker() {
    let mut env = TestEnv::new().await;
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    env.set("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
    // Exported within a fraction of a second, not the SDK's default 5 s.
    env.set("OTEL_BSP_SCHEDULE_DELAY", "200");
    env.migrate();
    let (web, _web_process) = env.spawn_web_process("web").await;
    let _a = env.spawn_worker("a");
    let _b = env.spawn_worker("b");
    let (_, body) = web
        .deliver("workflow_run", &env.failing_run(8101, &now()))
        .await;
    // A worker admits it, in the webhook's trace.
    let run = env.admitted_by_worker(&body).await;
    assert_eq!(
        env.wait_run(run, Duration::from_secs(60)).await,
        "succeeded"
    );

    // Every stage's span reaches the receiver (each worker exports on its own schedule).
    let run_text = run.to_string();
    let started = Instant::now();
    let all = loop {
        let all = spans(&received.lock().unwrap().clone());
        let stages = all
            .iter()
            .filter(|s| s.name == "stage" && s.attributes.get("run") == Some(&run_text))
            .count();
        let admitted = all.iter().any(|s| s.name == "admit");
        if (stages >= 6 && admitted) || started.elapsed() > Duration::from_secs(30) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let webhook = all
        .iter()
        .find(|s| {
            s.name == "webhook"
                && s.attributes.get("event").map(String::as_str) == Some("workflow_run")
        })
        .unwrap_or_else(|| panic!("no webhook span in {all:#?}"));
    assert_eq!(webhook.service, "selfheal-web");
    let mut stages: Vec<&Span> = all
        .iter()
        .filter(|s| s.name == "stage" && s.attributes.get("run") == Some(&run_text))
        .collect();
    let order = [
        "triage", "diagnose", "patch", "validate", "verify", "deliver",
    ];
    stages.sort_by_key(|s| {
        order
            .iter()
            .position(|o| s.attributes.get("stage").map(String::as_str) == Some(*o))
            .unwrap_or(usize::MAX)
    });
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s.attributes["stage"].as_str())
        .collect();
    assert_eq!(names, order, "{stages:#?}");
    // One trace: the admission the webhook's child, each stage the child of the one before,
    // the first the admission's.
    let delivery = body["delivery"].as_str().unwrap();
    let admit = all
        .iter()
        .find(|s| {
            s.name == "admit" && s.attributes.get("delivery").map(String::as_str) == Some(delivery)
        })
        .unwrap_or_else(|| panic!("no admit span in {all:#?}"));
    assert_eq!(
        (
            admit.trace.as_str(),
            admit.parent.as_str(),
            admit.service.as_str()
        ),
        (
            webhook.trace.as_str(),
            webhook.id.as_str(),
            "selfheal-worker"
        ),
        "{admit:#?}"
    );
    let mut parent = admit;
    for stage in &stages {
        assert_eq!(stage.trace, webhook.trace, "{stage:#?}");
        assert_eq!(
            stage.parent, parent.id,
            "{} under {}",
            stage.attributes["stage"], parent.name
        );
        assert_eq!(stage.service, "selfheal-worker");
        assert_eq!(
            stage.attributes.get("repository").map(String::as_str),
            Some("octo-org/octo-repo"),
            "{stage:#?}"
        );
        assert!(stage.attributes.contains_key("incident"), "{stage:#?}");
        parent = stage;
    }
    // What Postgres kept for a relay to push later carries the same trace.
    let db = env.db().await;
    let contexts: Vec<Option<String>> = db
        .query(
            "SELECT traceparent FROM outbox WHERE run_id = $1 ORDER BY id",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(contexts.len(), 6);
    let admission: Option<String> = db
        .query_one(
            "SELECT traceparent FROM outbox WHERE delivery_id = $1",
            &[&delivery],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        admission.is_some_and(|c| c.contains(&webhook.trace)),
        "the admission's outbox row carries the webhook's trace"
    );
    for context in &contexts {
        let context = context
            .as_deref()
            .expect("every stage job carries its trace");
        assert!(context.contains(&webhook.trace), "{context}");
    }
    // Nothing secret was exported: not the webhook secret, a token, the database's URL.
    for body in received.lock().unwrap().iter() {
        let body = String::from_utf8_lossy(body);
        for secret in [
            env.secret.as_str(),
            "ghs_",
            "postgres://",
            "Bearer",
            "BEGIN RSA",
        ] {
            assert!(!body.contains(secret), "{secret} exported");
        }
    }
}
