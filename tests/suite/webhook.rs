//! Ingest: signatures, limits, malformed input, dedup, outages — against real Postgres and Redis.

use crate::support;

use std::time::Duration;

use github_standin::webhooks::signature;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn valid_signature_creates_incident_run_and_outbox_row() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(1001, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["queued"], true);
    // Stored with the outbox row of its admission, and nothing more until a worker admits it.
    let delivery = body["delivery"].as_str().unwrap();
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM webhook_deliveries d JOIN outbox o USING (delivery_id)
             WHERE d.delivery_id = '{delivery}' AND d.outcome = 'accepted'"
        ))
        .await,
        1
    );
    // Pushed to Redis before the answer; the row's mark is written in the web's next batch.
    env.wait_until(
        &format!("SELECT enqueued_at IS NOT NULL FROM outbox WHERE delivery_id = '{delivery}'"),
        Duration::from_secs(30),
    )
    .await;
    // Taken by three at once: one admits, the others wait for its row and find what it did.
    let first = futures::future::join_all((0..3).map(|_| env.admit(&body))).await;
    let admitted = first
        .iter()
        .find(|a| a["outcome"] == "run_created")
        .cloned()
        .unwrap_or_else(|| panic!("{first:?}"));
    assert!(first.iter().all(|a| *a == admitted), "{first:?}");
    let run_id = run_id_of(&admitted);
    // Admitted again (its job pushed twice, taken by several workers at once): the first
    // admission's outcome, nothing new.
    let again = futures::future::join_all((0..4).map(|_| env.admit(&body))).await;
    assert!(again.iter().all(|a| *a == admitted), "{again:?} {admitted}");
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 2);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM webhook_deliveries WHERE outcome = 'run_created' AND run_id = '{run_id}'"
        ))
        .await,
        1
    );
    env.wait_until(
        &format!("SELECT enqueued_at IS NOT NULL FROM outbox WHERE run_id = '{run_id}'"),
        Duration::from_secs(30),
    )
    .await;
    let db = env.db().await;
    let row = db
        .query_one("SELECT r.status, r.github_run_id, o.stage, o.enqueued_at IS NOT NULL, i.status
                    FROM runs r JOIN outbox o ON o.run_id = r.id JOIN incidents i ON i.id = r.incident_id
                    WHERE r.id = $1", &[&run_id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "queued");
    assert_eq!(row.get::<_, i64>(1), 1001);
    assert_eq!(row.get::<_, String>(2), "triage");
    assert!(row.get::<_, bool>(3), "pushed to Redis at admission");
    assert_eq!(row.get::<_, String>(4), "open");
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'run_created'")
            .await,
        1
    );
}

#[tokio::test]
async fn wrong_signature_is_401_and_stores_nothing() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let body = serde_json::to_vec(&env.failing_run(1, &now())).unwrap();
    let (status, err) = app
        .post_raw(
            &[
                ("x-github-event", "workflow_run".into()),
                ("x-github-delivery", "d-wrong".into()),
                ("x-hub-signature-256", signature("not-the-secret", &body)),
            ],
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        err["error"].as_str().unwrap().contains("signature"),
        "{err}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
}

#[tokio::test]
async fn missing_signature_is_401() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let body = serde_json::to_vec(&env.failing_run(1, &now())).unwrap();
    let (status, err) = app
        .post_raw(
            &[
                ("x-github-event", "workflow_run".into()),
                ("x-github-delivery", "d-missing".into()),
            ],
            body,
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256"),
        "{err}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
}

#[tokio::test]
async fn rotated_secret_is_accepted_alongside_the_new_one() {
    let mut env = TestEnv::new().await;
    env.set("GITHUB_WEBHOOK_SECRET_PREVIOUS", "the-old-secret");
    let app = env.spawn_web().await;
    let payload = env.failing_run(2002, &now());
    let old = app.signing_with("the-old-secret");
    let (status, body) = old.deliver("workflow_run", &payload).await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = app
        .deliver(
            "ping",
            &json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let stranger = app.signing_with("a-third-secret");
    let (status, _) = stranger.deliver("ping", &json!({"zen": "x"})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn oversized_body_is_413_and_stores_nothing() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_MAX_BODY_BYTES", "4096");
    let app = env.spawn_web().await;
    let mut payload = env.failing_run(3003, &now());
    payload["padding"] = Value::from("x".repeat(8192));
    let (status, _) = app.deliver("workflow_run", &payload).await;
    assert_eq!(status, 413);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
}

#[tokio::test]
async fn malformed_json_and_missing_fields_are_400_with_a_reason() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let body = b"{\"action\": \"completed\", ".to_vec();
    let (status, err) = app
        .post_raw(
            &[
                ("x-github-event", "workflow_run".into()),
                ("x-github-delivery", "d-bad-json".into()),
                ("x-hub-signature-256", signature(&app.secret, &body)),
            ],
            body,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("malformed JSON"),
        "{err}"
    );

    let mut payload = env.failing_run(4004, &now());
    payload["workflow_run"]
        .as_object_mut()
        .unwrap()
        .remove("head_sha");
    let (status, err) = app.deliver("workflow_run", &payload).await;
    assert_eq!(status, 400);
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("workflow_run") && msg.contains("missing field `head_sha`"),
        "{err}"
    );

    // octokit's recording has no installation: a GitHub App delivery always does.
    let mut payload = env.failing_run(4005, &now());
    payload.as_object_mut().unwrap().remove("installation");
    let (status, err) = app.deliver("workflow_run", &payload).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("installation"),
        "{err}"
    );

    let (status, err) = app
        .post_raw(
            &[("x-hub-signature-256", signature(&app.secret, b"{}"))],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("x-github-event"),
        "{err}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        0
    );
}

/// JSON that parses but that Postgres will not keep (jsonb refuses `\u0000`) is the sender's
/// fault: a 400 that says why (sending it again fails the same way), nothing half stored, and
/// the next delivery is taken as usual. It was a 500.
#[tokio::test]
async fn json_postgres_cannot_store_is_400_with_the_reason() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    for (event, mut payload) in [
        ("workflow_run", env.failing_run(4101, &now())),
        ("ping", serde_json::json!({"zen": "ok"})),
    ] {
        payload["zen"] = serde_json::json!("nul \u{0} here");
        let (status, err) = app.deliver(event, &payload).await;
        assert_eq!(status, 400, "{event}: {err}");
        let msg = err["error"].as_str().unwrap();
        assert!(
            msg.starts_with("the payload cannot be stored: unsupported Unicode escape sequence"),
            "{event}: {msg}"
        );
    }
    // What serde skips by syntax alone reaches Postgres, which refuses it as it stores it.
    for (body, said) in [
        (
            &br#"{"zen": 1e200000}"#[..],
            "value overflows numeric format",
        ),
        (
            br#"{"zen": "\ud800 alone"}"#,
            "invalid input syntax for type json",
        ),
    ] {
        let (status, err) = app
            .post_raw(
                &[
                    ("x-github-event", "ping".into()),
                    ("x-github-delivery", uuid::Uuid::new_v4().to_string()),
                    ("x-hub-signature-256", signature(&app.secret, body)),
                ],
                body.to_vec(),
            )
            .await;
        assert_eq!(status, 400, "{err}");
        let msg = err["error"].as_str().unwrap();
        assert!(
            msg.starts_with("the payload cannot be stored: ") && msg.contains(said),
            "{msg}"
        );
    }
    for table in [
        "webhook_deliveries",
        "incidents",
        "runs",
        "outbox",
        "audit_log",
    ] {
        assert_eq!(
            env.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    let (status, _) = app
        .deliver("workflow_run", &env.failing_run(4102, &now()))
        .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn duplicate_delivery_is_200_and_creates_nothing_new() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let payload = env.failing_run(5005, &now());
    let (status, first) = app.deliver_as("workflow_run", "dup-1", &payload).await;
    assert_eq!(status, 202, "{first}");
    let first = env.admit(&first).await;
    let (status, again) = app.deliver_as("workflow_run", "dup-1", &payload).await;
    assert_eq!(status, 200);
    assert_eq!(again["status"], "duplicate");
    // The same run under a new delivery id (a manual redelivery) does not open a second run.
    let (status, other) = app.deliver_as("workflow_run", "dup-2", &payload).await;
    assert_eq!(status, 202);
    let other = env.admit(&other).await;
    assert_eq!(other["outcome"], "run_exists");
    assert_eq!(other["run_id"], first["run_id"]);
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
    // Two admissions and the run's first stage.
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 3);
    assert_eq!(
        env.count("SELECT count(*) FROM outbox WHERE run_id IS NOT NULL")
            .await,
        1
    );
    assert_eq!(
        env.count("SELECT failed_runs::bigint FROM incidents").await,
        1
    );
    // Each delivery stored once, with what it came to.
    let outcomes: Vec<(String, String)> = env
        .db()
        .await
        .query(
            "SELECT delivery_id, outcome FROM webhook_deliveries ORDER BY delivery_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("dup-1".to_string(), "run_created".to_string()),
            ("dup-2".to_string(), "run_exists".to_string())
        ]
    );
}

#[tokio::test]
async fn other_events_are_stored_and_acknowledged() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let ping = env
        .fixtures
        .json("github-webhooks/ping/payload.json")
        .unwrap();
    let (status, body) = app.deliver("ping", &ping).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pong")));
    let push = env
        .fixtures
        .json("github-webhooks/push/payload.json")
        .unwrap();
    let (status, body) = app.deliver("push", &push).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("stored")));
    let requested = env
        .fixtures
        .json("github-webhooks/workflow_run/requested.payload.json")
        .unwrap();
    let (status, _) = app.deliver("workflow_run", &requested).await;
    assert_eq!(status, 202);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries").await,
        3
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
}

#[tokio::test]
async fn postgres_down_is_503() {
    let mut env = TestEnv::new().await;
    // Nothing listens there: Postgres is down for this app.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.set(
        "DATABASE_URL",
        &format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
    );
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(6006, &now()))
        .await;
    assert_eq!(status, 503, "{body}");
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let r = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, _) = app
        .deliver("workflow_run", &env.failing_run(7007, &now()))
        .await;
    assert_eq!(status, 202);
    let text = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"selfheal_webhook_deliveries_total{event="workflow_run",outcome="accepted"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn failure_then_success_resolves_the_incident_with_mttr_from_the_view() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (s1, first) = app
        .deliver(
            "workflow_run",
            &env.failing_run(8001, "2026-11-20T10:00:00Z"),
        )
        .await;
    env.admit(&first).await;
    // A second failure joins the open incident; MTTR still counts from the first.
    let (s2, second) = app
        .deliver(
            "workflow_run",
            &env.failing_run(8002, "2026-11-20T10:03:00Z"),
        )
        .await;
    env.admit(&second).await;
    let (s3, body) = app
        .deliver("workflow_run", &env.green_run(8003, "2026-11-20T10:07:30Z"))
        .await;
    assert_eq!((s1, s2, s3), (202, 202, 202));
    assert_eq!(body["status"], "incident_resolved", "{body}");
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT status, failed_runs, mttr_seconds FROM incident_mttr",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "resolved");
    assert_eq!(row.get::<_, i32>(1), 2);
    assert_eq!(row.get::<_, f64>(2), 450.0);
    assert_eq!(env.count("SELECT count(*) FROM incidents").await, 1);
    // The next failure opens a new incident.
    let (s4, fourth) = app
        .deliver(
            "workflow_run",
            &env.failing_run(8004, "2026-11-20T11:00:00Z"),
        )
        .await;
    assert_eq!(s4, 202);
    assert_eq!(env.admit(&fourth).await["outcome"], "run_created");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE status = 'open'")
            .await,
        1
    );
}

/// A failed run admitted after a later green run of its workflow and branch was taken in (a
/// backlog of admissions, or GitHub's order) opens nothing: the branch is green again. One
/// that failed after the green run, or on another branch, still does.
#[tokio::test]
async fn a_failure_admitted_after_a_later_green_run_is_superseded() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // A run as GitHub makes it for a push: created at `created`, finished at `finished`.
    let run = |id: i64, green: bool, created: &str, finished: &str| {
        let mut payload = if green {
            env.green_run(id, finished)
        } else {
            env.failing_run(id, finished)
        };
        payload["workflow_run"]["created_at"] = json!(created);
        payload
    };
    let (_, failed) = app
        .deliver(
            "workflow_run",
            &run(8101, false, "2026-11-20T09:55:00Z", "2026-11-20T10:00:00Z"),
        )
        .await;
    let (_, green) = app
        .deliver(
            "workflow_run",
            &run(8102, true, "2026-11-20T10:06:00Z", "2026-11-20T10:07:30Z"),
        )
        .await;
    assert_eq!(
        green["status"], "stored",
        "no incident to resolve yet: {green}"
    );
    let admitted = env.admit(&failed).await;
    assert_eq!(admitted["outcome"], "superseded", "{admitted}");
    assert!(
        admitted["reason"].as_str().unwrap().contains("run 8102"),
        "{admitted}"
    );
    assert_eq!(env.count("SELECT count(*) FROM incidents").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'superseded' AND reason LIKE '%run 8102%'")
            .await,
        1
    );
    // An older green arriving late does not replace the newer one it would be compared with.
    let (_, older) = app
        .deliver(
            "workflow_run",
            &run(8100, true, "2026-11-20T08:00:00Z", "2026-11-20T09:00:00Z"),
        )
        .await;
    assert_eq!(older["status"], "stored", "{older}");
    assert_eq!(
        env.count("SELECT count(*) FROM branch_passes WHERE github_run_id = 8102")
            .await,
        1
    );
    // Another workflow's green run on the branch says nothing about this one.
    let mut other_workflow = run(8105, true, "2026-11-20T10:19:00Z", "2026-11-20T10:20:00Z");
    other_workflow["workflow_run"]["workflow_id"] = json!(4242);
    app.deliver("workflow_run", &other_workflow).await;

    let (_, later) = app
        .deliver(
            "workflow_run",
            &run(8103, false, "2026-11-20T10:08:00Z", "2026-11-20T10:09:00Z"),
        )
        .await;
    assert_eq!(env.admit(&later).await["outcome"], "run_created");
    let mut other_branch = run(8104, false, "2026-11-20T09:58:00Z", "2026-11-20T10:01:00Z");
    other_branch["workflow_run"]["head_branch"] = json!("release");
    let (_, other) = app.deliver("workflow_run", &other_branch).await;
    assert_eq!(env.admit(&other).await["outcome"], "run_created");

    // A slow green run of an earlier push, finished after a failure of a later one, says
    // nothing of the failed commit.
    let on_slow = |mut payload: Value| {
        payload["workflow_run"]["head_branch"] = json!("slow");
        payload
    };
    let (_, failed) = app
        .deliver(
            "workflow_run",
            &on_slow(run(
                8106,
                false,
                "2026-11-20T11:05:00Z",
                "2026-11-20T11:10:00Z",
            )),
        )
        .await;
    let (_, slow) = app
        .deliver(
            "workflow_run",
            &on_slow(run(
                8107,
                true,
                "2026-11-20T11:00:00Z",
                "2026-11-20T11:20:00Z",
            )),
        )
        .await;
    assert_eq!(slow["status"], "stored", "{slow}");
    assert_eq!(env.admit(&failed).await["outcome"], "run_created");
}

#[tokio::test]
async fn redis_down_at_ingest_then_back_the_run_is_still_processed() {
    // A Redis of this test's own, down at first.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = TestEnv::with_redis(&format!("redis://127.0.0.1:{port}")).await;
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(9009, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], false);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM outbox WHERE enqueued_at IS NULL AND delivery_id IS NOT NULL"
        )
        .await,
        1
    );

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&env.tag);
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = std::process::Command::new(
        std::env::var("SELFHEAL_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
    )
    .args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ])
    .arg(&dir)
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("redis-server");
    // The web's relay pushes the pending row once Redis answers; a worker then runs it.
    env.wait_until(
        "SELECT count(*) = 0 FROM outbox WHERE enqueued_at IS NULL",
        Duration::from_secs(20),
    )
    .await;
    // The worker admits the delivery, then runs its run.
    let mut worker = env.spawn_worker("w1");
    let run_id = env.admitted_by_worker(&body).await;
    let status = env.wait_run(run_id, Duration::from_secs(30)).await;
    assert_eq!(status, "succeeded");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM stage_attempts WHERE stage = 'triage' AND outcome = 'succeeded'"
        )
        .await,
        1
    );
    worker.kill().ok();
    redis.kill().ok();
    worker.wait().ok();
    redis.wait().ok();
}

/// The web marks the outbox rows it pushed through one writer (`outbox::Marks`), not one
/// commit per delivery. With the relay's next pass far away, every row delivered at once is
/// marked, once each: the writer loses none (the relay's first pass, at start, may mark a
/// few it pushed itself; it then pushed them, once, instead of the web).
#[tokio::test]
async fn rows_pushed_at_ingest_are_all_marked_once_by_the_web() {
    let mut env = TestEnv::new().await;
    // The relay's first pass runs at start (nothing to push yet); the next is far away.
    env.set("SELFHEAL_RELAY_INTERVAL_MS", "600000");
    let app = std::sync::Arc::new(env.spawn_web().await);
    let deliveries = 40;
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..deliveries {
        let (app, payload) = (app.clone(), env.failing_run(7000 + i, &now()));
        sent.spawn(async move { app.deliver("workflow_run", &payload).await });
    }
    while let Some(answer) = sent.join_next().await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["queued"], true, "{body}");
    }
    env.wait_until(
        "SELECT count(*) = 40 FROM outbox WHERE enqueued_at IS NOT NULL",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        env.count("SELECT count(*) FROM outbox WHERE attempts <> 1")
            .await,
        0,
        "each row marked once"
    );
}

/// The relay pushes what the web could not, not what it is about to: a row younger than the
/// relay's grace is the web's to push. Without the grace, under load the relay pushed rows the
/// web had just committed (every such job twice), and its row locks held up the web's marks.
#[tokio::test]
async fn the_relay_leaves_a_row_just_committed_to_the_web_that_stores_it() {
    // The web's own Redis is down, so its push fails and the row stays pending.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("redis://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let mut env = TestEnv::with_redis(&dead).await;
    env.set("SELFHEAL_RELAY_INTERVAL_MS", "600000");
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(9101, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], false, "{body}");

    // A relay on a Redis that answers.
    let queue = selfheal_shared::queue::JobQueue::new(
        &redis_url(),
        selfheal_shared::queue::storage_config(&env.tag, Duration::from_secs(30), 3),
    );
    let pool = selfheal_shared::db::pool(&env.database_url, 2).unwrap();
    // Committed a moment ago, however long the failed push and the answer took.
    env.db()
        .await
        .execute("UPDATE outbox SET created_at = now()", &[])
        .await
        .unwrap();
    assert_eq!(
        selfheal_shared::outbox::relay_once(&pool, &queue)
            .await
            .unwrap(),
        0,
        "a row committed a moment ago is left to the web"
    );
    env.db()
        .await
        .execute(
            "UPDATE outbox SET created_at = now() - interval '1 minute'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        selfheal_shared::outbox::relay_once(&pool, &queue)
            .await
            .unwrap(),
        1,
        "past the grace, the relay pushes what the web could not"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM outbox WHERE enqueued_at IS NULL")
            .await,
        0
    );
}

/// A failed run's admission opens its transaction itself, `BEGIN` riding with its first
/// statement. Cancelled mid-way (the worker's job dropped), its connection must not go back to
/// the pool with that transaction still open: the next user would run inside it. It is rolled
/// back first, and what the cancelled admission wrote is gone.
#[tokio::test]
async fn an_admission_cancelled_mid_transaction_leaves_no_open_transaction_in_the_pool() {
    use selfheal_shared::envelope::Envelope;
    use selfheal_shared::events::WorkflowRunEvent;
    use selfheal_shared::failed_run;
    use selfheal_shared::incidents::{self, Delivery, Parsed};

    let env = TestEnv::new().await;
    // One connection: the next `get` hands out the cancelled admission's, if it went back.
    let pool = selfheal_shared::db::pool(&env.database_url, 1).unwrap();
    selfheal_shared::db::migrate(&pool).await.unwrap();
    let gates = selfheal_shared::config::Gates::default();
    for (id, run) in [("cancelled-delivery", 9201), ("warm-delivery", 9202)] {
        let body = serde_json::to_vec(&env.failing_run(run, &now())).unwrap();
        let envelope = Envelope::parse(&body).unwrap();
        let parsed = Parsed::WorkflowRun(WorkflowRunEvent::parse(&body).unwrap());
        let delivery = Delivery {
            id,
            event: "workflow_run",
            payload: std::str::from_utf8(&body).unwrap(),
            envelope: &envelope,
        };
        let accepted = incidents::ingest(pool.get().await.unwrap(), &delivery, &parsed, &gates)
            .await
            .unwrap();
        assert!(
            matches!(accepted, incidents::Ingested::Accepted { .. }),
            "{accepted:?}"
        );
    }
    // Warm: the statements prepared, so that the cancelled attempt sends `BEGIN` and its
    // first statement at its first poll.
    let warm = failed_run::admit(pool.get().await.unwrap(), "warm-delivery")
        .await
        .unwrap();
    assert!(
        matches!(warm, failed_run::Admission::Created { .. }),
        "{warm:?}"
    );

    let client = pool.get().await.unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The run's lock held elsewhere: the admission's transaction stops there, provably open.
    let run_lock = "hashtextextended('selfheal.workflow_run:9201', 0)";
    let holder = env.db().await;
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({run_lock})"))
        .await
        .unwrap();
    let mut admission = Box::pin(failed_run::admit(client, "cancelled-delivery"));
    // Polled until it waits for the lock, the delivery's row already locked and read.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), admission.as_mut())
            .await
            .is_err(),
        "the admission waits for the run's lock"
    );
    let in_transaction = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}
           AND xact_start IS NOT NULL AND wait_event_type = 'Lock'"
    );
    env.wait_until(
        &format!("SELECT ({in_transaction}) = 1"),
        Duration::from_secs(20),
    )
    .await;
    drop(admission);
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({run_lock})"))
        .await
        .unwrap();
    // The pool still serves, on a connection outside any transaction (the same one, rolled
    // back first); whatever a leaked transaction held would be committed here, and counted
    // below.
    let client = pool.get().await.unwrap();
    let outside: bool = client
        .query_one("SELECT pg_current_xact_id_if_assigned() IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        outside,
        "the next user ran inside the cancelled admission's transaction"
    );
    client.batch_execute("COMMIT").await.unwrap();
    drop(client);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM webhook_deliveries WHERE delivery_id = 'cancelled-delivery' AND outcome = 'accepted'"
        )
        .await,
        1,
        "the cancelled admission left its delivery to admit"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM runs").await,
        1,
        "the warm one's"
    );
    // And it is admitted in full the next time.
    let again = failed_run::admit(pool.get().await.unwrap(), "cancelled-delivery")
        .await
        .unwrap();
    assert!(
        matches!(again, failed_run::Admission::Created { .. }),
        "{again:?}"
    );
}

/// Stored bodies are compressed with lz4 (migrations/V17; Debian's Postgres has it), and read
/// back as they were stored.
#[tokio::test]
async fn stored_bodies_are_compressed_with_lz4_and_read_back() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let payload = env.failing_run(9301, &now());
    let (status, body) = app.deliver("workflow_run", &payload).await;
    assert_eq!(status, 202, "{body}");
    let row = env
        .db()
        .await
        .query_one(
            "SELECT pg_column_compression(payload), payload FROM webhook_deliveries",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("lz4"));
    assert_eq!(row.get::<_, Value>(1), payload);
}

#[tokio::test]
async fn a_database_that_cannot_take_writes_is_an_outage_503_not_a_500() {
    let mut env = TestEnv::new().await;
    env.migrate();
    // A failover to a read-only replica refuses writes as a full disk does: an outage, after
    // which GitHub's delivery is asked for again.
    env.db()
        .await
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on',
                 current_database()); END $$;",
        )
        .await
        .unwrap();
    env.set("SELFHEAL_MIGRATE_AT_START", "false");
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(9301, &now()))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("read-only"),
        "{body}"
    );
}
