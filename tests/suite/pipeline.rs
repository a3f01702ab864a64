//! Workers as real processes: staged jobs through Redis, crashes, retries, shutdown.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use nix::sys::signal::Signal;
use support::*;

#[tokio::test]
async fn a_run_goes_through_every_stage_heals_and_says_what_was_skipped() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1101, &now()))
        .await;
    // The worker admits it, and runs it.
    let run_id = env.admitted_by_worker(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let db = env.db().await;
    let rows = db
        .query("SELECT stage, outcome, coalesce(detail, '') FROM stage_attempts WHERE run_id = $1 ORDER BY id", &[&run_id])
        .await
        .unwrap();
    let got: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let stages: Vec<(&str, &str)> = got
        .iter()
        .map(|(a, b, _)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("triage", "succeeded"),
            ("diagnose", "succeeded"),
            ("patch", "succeeded"),
            ("validate", "succeeded"),
            ("verify", "succeeded"),
            ("deliver", "succeeded"),
        ]
    );
    assert_eq!(got[0].2, "1 of 2 jobs failed: test [Run Tests]");
    assert!(
        got[1].2.starts_with("format (rustfmt) at src/lib.rs:1"),
        "{}",
        got[1].2
    );
    assert!(got[3].2.contains("passes 3 of 3 runs"), "{}", got[3].2);
    assert_eq!(got[4].2, "deliver: format fix, attempt 1 of 3");
    assert!(
        got[5].2.starts_with("opened PR #1 from selfheal/"),
        "{}",
        got[5].2
    );
    let reason: Option<String> = db
        .query_one("SELECT failure_reason FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, None, "every stage ran");

    // Triage stored the failed job's log (compressed) and its failed step, with when it ran.
    let row = db
        .query_one("SELECT job_name, failed_steps, original_bytes, truncated, length(log_gzip) FROM job_logs WHERE run_id = $1", &[&run_id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "test");
    assert_eq!(
        row.get::<_, serde_json::Value>(1),
        serde_json::json!([{"number": 7, "name": "Run Tests",
            "started_at": "2020-01-20T09:42:53.000-08:00", "completed_at": "2020-01-20T09:42:59.000-08:00"}])
    );
    let original = env.fixtures.ci_log("rustfmt-check.log").unwrap().len() as i64;
    assert_eq!(row.get::<_, i64>(2), original);
    assert!(!row.get::<_, bool>(3));
    assert!(row.get::<_, i32>(4) > 0);

    // Diagnosis on the incident; the patch and its proof in Postgres.
    let fp: String = db.query_one("SELECT i.fingerprint FROM incidents i JOIN runs r ON r.incident_id = i.id WHERE r.id = $1", &[&run_id]).await.unwrap().get(0);
    let d = db
        .query_one(
            "SELECT class, tool, fingerprint, command FROM diagnoses WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (d.get::<_, String>(0), d.get::<_, String>(1)),
        ("format".into(), "rustfmt".into())
    );
    assert_eq!(d.get::<_, String>(2), fp);
    assert_eq!(d.get::<_, String>(3), "cargo fmt --all -- --check");
    let p = db
        .query_one(
            "SELECT strategy, verdict, diff, evidence FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (p.get::<_, String>(0), p.get::<_, String>(1)),
        ("format".into(), "fixed".into())
    );
    assert!(p.get::<_, String>(2).contains("+pub struct Config {"));
    assert_eq!(p.get::<_, serde_json::Value>(3)["failed"], 3);
    let v = db
        .query_one(
            "SELECT applied, passed, failed, verdict FROM validations WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert!(v.get::<_, bool>(0));
    assert_eq!(
        (
            v.get::<_, i32>(1),
            v.get::<_, i32>(2),
            v.get::<_, String>(3)
        ),
        (3, 0, "fixed".into())
    );

    // What GitHub saw: a token exchange with the app's JWT, then calls with the installation token.
    let calls = env.standin.calls();
    let seen: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.path.clone(), c.auth.clone()))
        .collect();
    assert_eq!(
        seen[0],
        (
            "/app/installations/4242/access_tokens".into(),
            "app-jwt".into()
        )
    );
    assert_eq!(
        seen[1],
        (
            // The jobs of the attempt that failed.
            "/repos/octo-org/octo-repo/actions/runs/1101/attempts/1/jobs".into(),
            "installation-token".into()
        )
    );
    assert_eq!(
        seen[2],
        (
            "/repos/octo-org/octo-repo/actions/jobs/399444497/logs".into(),
            "installation-token".into()
        )
    );
    assert_eq!(
        seen[3].1, "none",
        "the pre-signed log URL gets no credentials"
    );
    // Every token was narrowed to the one repository.
    let scopes = env.standin.token_requests();
    assert_eq!(
        scopes.len(),
        1,
        "one installation token, cached across the run's stages"
    );
    assert!(
        scopes
            .iter()
            .all(|b| b["repositories"] == serde_json::json!(["octo-repo"])),
        "{scopes:?}"
    );
    let tarballs: Vec<&(String, String)> = seen
        .iter()
        .filter(|(p, _)| p.contains("/tarball/"))
        .collect();
    assert_eq!(
        tarballs.len(),
        2,
        "patch and validate each fetch the failing SHA; deliver commits the recorded change"
    );
    let head = env.standin.head_sha();
    assert!(tarballs
        .iter()
        .all(|(p, a)| p.ends_with(&format!("/tarball/{head}")) && a == "installation-token"));
}

/// Web and a worker, the stand-in serving examples/rust-culprit (its tests fail) with the CI
/// log of that failure, and failing run `run` delivered: its id.
async fn failing_tests_delivered(env: &TestEnv, run: i64) -> (App, Worker, uuid::Uuid) {
    let app = env.spawn_web().await;
    let culprit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rust-culprit");
    env.standin.set_knobs(Knobs {
        repo_dir: Some(culprit.display().to_string()),
        log_fixture: Some("cargo-test-panic.log".into()),
        ..Knobs::default()
    });
    let worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(run, &now()))
        .await;
    (app, worker, env.run_of(&body).await)
}

#[tokio::test]
async fn a_failure_without_a_deterministic_fix_is_handed_off_never_healed() {
    let env = TestEnv::new().await;
    let (_app, _worker, run_id) = failing_tests_delivered(&env, 1102).await;
    let status = env.wait_run(run_id, Duration::from_secs(60)).await;
    let db = env.db().await;
    let p = db
        .query_one(
            "SELECT strategy, verdict, reason FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    // No green run the stand-in knows of, so no commit to revert, and no model: handed off,
    // never "fixed".
    assert_eq!(p.get::<_, String>(1), "handed_off");
    assert!(p
        .get::<_, String>(2)
        .contains("no model service is configured"));
    assert_eq!(status, "incomplete");
    assert_eq!(env.count("SELECT count(*) FROM validations").await, 0);
}

#[tokio::test]
async fn a_model_service_past_the_installations_daily_budget_is_not_asked() {
    let mut env = TestEnv::new().await;
    let model = ai_standin::spawn(Some("sk-ant-budget-0123456789")).await;
    env.set("ANTHROPIC_API_KEY", "sk-ant-budget-0123456789");
    env.set("ANTHROPIC_BASE_URL", &model.url);
    // Less than any prompt needs: the request is never sent.
    env.set("SELFHEAL_AI_INSTALLATION_DAILY_TOKENS", "900");
    let (_app, _worker, run_id) = failing_tests_delivered(&env, 1103).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(90)).await,
        "incomplete"
    );
    let db = env.db().await;
    let p = db
        .query_one(
            "SELECT strategy, verdict, reason, evidence FROM patches WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(p.get::<_, String>(0), "ai_patch");
    assert_eq!(p.get::<_, String>(1), "handed_off");
    let reason: String = p.get(2);
    assert!(
        reason.contains("the token budget is spent: 900 tokens left"),
        "{reason}"
    );
    assert!(model.received().is_empty(), "the model was asked");
    // The grant was reserved against the run and settled as nothing spent.
    let spend = db
        .query_one(
            "SELECT reserved_tokens, input_tokens + output_tokens, requests, settled_at IS NOT NULL, provider
             FROM ai_spend WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(spend.get::<_, i64>(0), 900);
    assert_eq!(spend.get::<_, i64>(1), 0);
    assert_eq!(spend.get::<_, i32>(2), 0);
    assert!(spend.get::<_, bool>(3));
    assert_eq!(spend.get::<_, String>(4), "anthropic");
}

#[tokio::test]
async fn sigkill_mid_triage_another_worker_completes_the_run_once() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 60_000,
        ..Knobs::default()
    });
    let mut first = env.spawn_worker("doomed");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1201, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    // The first worker is inside triage, waiting on GitHub.
    env.wait_until(
        "SELECT count(*) = 1 FROM stage_attempts WHERE stage = 'triage' AND outcome = 'running'",
        Duration::from_secs(20),
    )
    .await;
    signal(&first, Signal::SIGKILL);
    first.wait().ok();
    env.standin.set_knobs(Knobs::default());
    let _second = env.spawn_worker("rescuer");
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(40)).await,
        "succeeded"
    );
    let db = env.db().await;
    let rows = db
        .query("SELECT outcome, worker_id FROM stage_attempts WHERE run_id = $1 AND stage = 'triage' ORDER BY attempt", &[&run_id])
        .await
        .unwrap();
    let outcomes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(outcomes, vec!["abandoned", "succeeded"]);
    let workers: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert_ne!(workers[0], workers[1], "another worker finished it");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM stage_attempts WHERE stage = 'triage' AND outcome = 'succeeded'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn two_workers_share_the_queue_without_doing_a_job_twice() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_WORKER_CONCURRENCY", "1");
    let app = env.spawn_web().await;
    // Slow GitHub so that one worker cannot take everything.
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 300,
        ..Knobs::default()
    });
    let mut a = env.spawn_worker("a");
    let mut b = env.spawn_worker("b");
    env.wait_workers_registered(2).await;
    let mut answers = Vec::new();
    for i in 0..6 {
        let mut payload = env.failing_run(1300 + i, &now());
        // Separate workflows, so each failure is its own incident.
        payload["workflow_run"]["workflow_id"] = serde_json::Value::from(90 + i);
        let (status, body) = app.deliver("workflow_run", &payload).await;
        assert_eq!(status, 202, "{body}");
        answers.push(body);
    }
    // The workers admit them, each once.
    let mut run_ids = Vec::new();
    for body in &answers {
        run_ids.push(env.admitted_by_worker(body).await);
    }
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'run.created'")
            .await,
        6
    );
    let mut finished = Vec::new();
    for id in &run_ids {
        finished.push(env.wait_run(*id, Duration::from_secs(60)).await);
    }
    // The same failure at the same commit: one fix, the other five skip at verify (one
    // failure, one fix), every stage of every run done once.
    finished.sort();
    assert_eq!(
        finished,
        [
            "incomplete",
            "incomplete",
            "incomplete",
            "incomplete",
            "incomplete",
            "succeeded"
        ]
    );
    assert_eq!(env.standin.pulls().len(), 1);
    assert_eq!(
        env.count("SELECT count(*) FROM verifications WHERE reason LIKE 'one failure, one fix%'")
            .await,
        5
    );
    assert_eq!(
        env.count("SELECT count(*) FROM stage_attempts").await,
        6 * 6,
        "one attempt per stage per run"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM stage_attempts WHERE outcome IN ('failed', 'abandoned')")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT worker_id) FROM stage_attempts WHERE stage = 'triage'")
            .await,
        2
    );
    let jobs_calls = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/jobs"))
        .count();
    assert_eq!(jobs_calls, 6, "each run triaged once");
    for w in [&mut a, &mut b] {
        w.kill().ok();
        w.wait().ok();
    }
}

#[tokio::test]
async fn a_transient_github_error_is_retried_with_backoff() {
    let mut env = TestEnv::new().await;
    let metrics = env.worker_metrics();
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        // octocrab retries a 5xx five times within one request (SELFHEAL_GITHUB_MAX_RETRIES);
        // the seventh 502 outlasts that, and the stage's own backoff takes over.
        fail_jobs: 7,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1401, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(30)).await,
        "succeeded"
    );
    let db = env.db().await;
    let rows = db
        .query("SELECT outcome, coalesce(error, '') FROM stage_attempts WHERE run_id = $1 AND stage = 'triage' ORDER BY attempt", &[&run_id])
        .await
        .unwrap();
    let got: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "failed");
    assert!(got[0].1.contains("502"), "{got:?}");
    assert_eq!(got[1].0, "succeeded");
    let asked = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/actions/runs/1401/attempts/1/jobs"))
        .count();
    assert_eq!(
        asked, 8,
        "six tries in the first attempt, two in the second"
    );
    // What the worker says of it: one failed attempt, one retry, then success, and every
    // other stage once.
    let count = |outcome: &str, stage: &str| {
        format!("selfheal_stage_duration_seconds_count{{stage=\"{stage}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(
        scrape(&metrics, &count("failed", "triage")).await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&metrics, &count("succeeded", "triage")).await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&metrics, "selfheal_stage_retries_total{stage=\"triage\"}").await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&metrics, "selfheal_stage_retries_total{stage=\"patch\"}").await,
        Some(0.0)
    );
    assert_eq!(
        scrape(&metrics, &count("failed", "diagnose")).await,
        None,
        "no diagnose attempt failed"
    );
    assert_eq!(
        scrape(&metrics, "selfheal_worker_concurrency").await,
        Some(4.0)
    );
    // The run is committed before its last job has returned: the gauge follows shortly.
    let started = std::time::Instant::now();
    while scrape(&metrics, "selfheal_worker_jobs_in_flight").await != Some(0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "jobs still in flight"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Redis loses the queue's pending jobs, as a flush or a failover without persistence would:
/// apalis-redis keeps a pushed job in `scheduled` (due now) until a worker promotes it to
/// `active`. Returns how many of the two keys held something.
async fn lose_the_queue(env: &TestEnv) -> usize {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL")
        .arg(format!("{}:jobs:scheduled", env.tag))
        .arg(format!("{}:jobs:active", env.tag))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_job_the_queue_loses_is_pushed_again() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_REQUEUE_AFTER_SECS", "2");
    let app = env.spawn_web().await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1451, &now()))
        .await;
    assert_eq!(body["queued"], true, "{body}");
    let run_id = env.run_of(&body).await;
    // Redis loses the queue (a flush, a failover without persistence) before any worker runs.
    assert_eq!(
        lose_the_queue(&env).await,
        1,
        "the job was waiting in Redis"
    );
    let _worker = env.spawn_worker("w");
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let note: String = env
        .db()
        .await
        .query_one(
            "SELECT last_error FROM outbox WHERE run_id = $1 AND stage = 'triage'",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(note.contains("no worker started it in time"), "{note}");
}

/// The admission of a failed run is a job like a stage: Redis losing it before any worker took
/// it loses nothing, Postgres says the delivery is still `accepted` and the relay pushes it
/// again; a worker process admits it and runs its run.
#[tokio::test]
async fn an_admission_the_queue_loses_is_pushed_again_and_a_worker_admits_it() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_REQUEUE_AFTER_SECS", "2");
    let app = env.spawn_web().await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1461, &now()))
        .await;
    assert_eq!(body["queued"], true, "{body}");
    assert_eq!(
        lose_the_queue(&env).await,
        1,
        "the admission waited in Redis"
    );
    let _worker = env.spawn_worker("w");
    let run_id = env.admitted_by_worker(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "succeeded"
    );
    let note: Option<String> = env
        .db()
        .await
        .query_one(
            "SELECT last_error FROM outbox WHERE delivery_id = $1",
            &[&body["delivery"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        note.as_deref()
            .is_some_and(|n| n.contains("no worker admitted it in time")),
        "{note:?}"
    );
}

/// A delivery Postgres refuses to admit for what it holds (here a constraint the test adds on
/// the runs a failure would create) would be refused again each time: the worker records it as
/// `admission_failed` with the cause instead of retrying it for ever, and the next failure is
/// admitted as usual.
#[tokio::test]
async fn an_admission_postgres_refuses_for_its_data_is_recorded_as_failed_with_the_cause() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    env.wait_until(
        "SELECT to_regclass('runs') IS NOT NULL",
        Duration::from_secs(30),
    )
    .await;
    env.db()
        .await
        .batch_execute(
            "ALTER TABLE runs ADD CONSTRAINT test_refuses_run_1471 CHECK (github_run_id <> 1471)",
        )
        .await
        .unwrap();
    let (_, refused) = app
        .deliver("workflow_run", &env.failing_run(1471, &now()))
        .await;
    let admitted = env.admission_by_worker(&refused).await;
    assert_eq!(admitted["outcome"], "admission_failed", "{admitted}");
    assert!(
        admitted["reason"]
            .as_str()
            .unwrap()
            .contains("test_refuses_run_1471"),
        "{admitted}"
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
    let (_, next) = app
        .deliver("workflow_run", &env.failing_run(1472, &now()))
        .await;
    assert_eq!(
        env.admission_by_worker(&next).await["outcome"],
        "run_created"
    );
}

#[tokio::test]
async fn stages_in_flight_when_redis_lost_everything_and_their_worker_died_are_run_again() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_REQUEUE_AFTER_SECS", "2");
    let app = env.spawn_web().await;
    // Triage waits on GitHub long enough to be caught in the middle.
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 60_000,
        ..Knobs::default()
    });
    let mut first = env.spawn_worker("doomed");
    let mut runs = Vec::new();
    for id in [1471, 1472] {
        let (_, body) = app
            .deliver("workflow_run", &env.failing_run(id, &now()))
            .await;
        runs.push(env.run_of(&body).await);
    }
    env.wait_until(
        "SELECT count(*) = 2 FROM stage_attempts WHERE stage = 'triage' AND outcome = 'running'",
        Duration::from_secs(40),
    )
    .await;
    // Redis loses everything it held for this deployment (a restart without persistence),
    // apalis's record of the jobs in flight included; then their worker dies.
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.tag))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the queue's keys were in Redis");
    let _: usize = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    signal(&first, Signal::SIGKILL);
    first.wait().ok();
    env.standin.set_knobs(Knobs::default());
    // Postgres knows what must still run: the next worker finishes every run.
    let _second = env.spawn_worker("rescuer");
    for run in &runs {
        assert_eq!(
            env.wait_run(*run, Duration::from_secs(60)).await,
            "succeeded"
        );
        let outcomes: Vec<String> = env
            .db()
            .await
            .query(
                "SELECT outcome FROM stage_attempts WHERE run_id = $1 AND stage = 'triage' ORDER BY attempt",
                &[run],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        // (A slow machine may see GitHub's read timeout fail an attempt before the kill.)
        assert!(outcomes.contains(&"abandoned".to_string()), "{outcomes:?}");
        assert_eq!(outcomes.last().map(String::as_str), Some("succeeded"));
        let note: String = env
            .db()
            .await
            .query_one(
                "SELECT last_error FROM outbox WHERE run_id = $1 AND stage = 'triage'",
                &[run],
            )
            .await
            .unwrap()
            .get(0);
        assert!(note.contains("its worker was lost mid-stage"), "{note}");
    }
}

#[tokio::test]
async fn a_stage_that_hangs_past_its_limit_is_given_up_and_the_run_fails_with_the_reason() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_STAGE_TIMEOUT_SECS", "1");
    let metrics = env.worker_metrics();
    let app = env.spawn_web().await;
    // GitHub never answers the jobs list (well, not for ten minutes): the worker is alive and
    // holds the stage, so nothing but a limit would ever end it.
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 600_000,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1481, &now()))
        .await;
    let run = env.run_of(&body).await;
    assert_eq!(env.wait_run(run, Duration::from_secs(90)).await, "failed");
    let db = env.db().await;
    let reason: String = db
        .query_one("SELECT failure_reason FROM runs WHERE id = $1", &[&run])
        .await
        .unwrap()
        .get(0);
    assert!(reason.contains("triage failed 5 times"), "{reason}");
    let errors: Vec<String> = db
        .query(
            "SELECT error FROM stage_attempts WHERE run_id = $1 AND stage = 'triage'",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(errors.len(), 5);
    assert!(
        errors
            .iter()
            .all(|e| e.contains("triage took longer than its limit of 1 s")),
        "{errors:?}"
    );
    // Five attempts timed out, each about its limit; four were retried, the fifth failed
    // the run with no retry.
    let timed_out = "selfheal_stage_duration_seconds_count{stage=\"triage\",outcome=\"timed_out\"}";
    assert_eq!(scrape(&metrics, timed_out).await, Some(5.0));
    let took = scrape(
        &metrics,
        "selfheal_stage_duration_seconds_sum{stage=\"triage\",outcome=\"timed_out\"}",
    )
    .await
    .unwrap();
    assert!((5.0..7.5).contains(&took), "{took}");
    assert_eq!(
        scrape(&metrics, "selfheal_stage_retries_total{stage=\"triage\"}").await,
        Some(4.0)
    );
}

#[tokio::test]
async fn a_stage_that_keeps_failing_fails_the_run_with_the_reason() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        fail_jobs: 100,
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1501, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "failed"
    );
    let db = env.db().await;
    let reason: String = db
        .query_one("SELECT failure_reason FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "triage failed 5 times");
    assert_eq!(
        env.count(
            "SELECT count(*) FROM stage_attempts WHERE stage = 'triage' AND outcome = 'failed'"
        )
        .await,
        5
    );
    assert_eq!(
        env.count("SELECT count(*) FROM stage_attempts WHERE stage <> 'triage'")
            .await,
        0
    );
}

#[tokio::test]
async fn sigterm_lets_the_stage_in_flight_finish() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 1500,
        ..Knobs::default()
    });
    let mut worker = env.spawn_worker("graceful");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1601, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_until(
        "SELECT count(*) = 1 FROM stage_attempts WHERE stage = 'triage' AND outcome = 'running'",
        Duration::from_secs(20),
    )
    .await;
    signal(&worker, Signal::SIGTERM);
    let status = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "worker exits cleanly on SIGTERM: {status}"
    );
    let db = env.db().await;
    let outcome: String = db
        .query_one(
            "SELECT outcome FROM stage_attempts WHERE run_id = $1 AND stage = 'triage'",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        outcome, "succeeded",
        "the stage in flight finished before exit"
    );
    // The next stage is queued, not lost: another worker carries on.
    let _next = env.spawn_worker("next");
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(30)).await,
        "succeeded"
    );
}

/// GitHub's jobs API says which step failed first; the log alone would blame the last one.
/// Here the tests' step (`cargo fmt --check`, which the jobs list marks failed and times) is
/// followed by an `if: always()` upload that fails as well: the worker diagnoses and heals the
/// step GitHub names, found in the log by its times, not the upload.
#[tokio::test]
async fn the_step_github_says_failed_is_diagnosed_not_a_later_one_that_failed_too() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The recorded log, stamped within the failed step's times in the jobs list
    // (2020-01-20T17:42:53Z to 17:42:59Z), then the upload's failure after it.
    let log = env
        .fixtures
        .ci_log("rustfmt-check.log")
        .unwrap()
        .replace("2026-11-20T09:14:0", "2020-01-20T17:42:5");
    let log = format!(
        "{}\n2020-01-20T17:43:01.1000000Z ##[group]Run ./upload-results.sh\n\
         2020-01-20T17:43:01.1100000Z ./upload-results.sh\n\
         2020-01-20T17:43:01.1200000Z ##[endgroup]\n\
         2020-01-20T17:43:01.6000000Z curl: (6) Could not resolve host: results.example.com\n\
         2020-01-20T17:43:01.7000000Z ##[error]Process completed with exit code 6.\n",
        log.trim_end_matches('\n')
    );
    assert!(selfheal_engine::diagnose::diagnose_github(&log, None)
        .command
        .is_some_and(|c| c.contains("upload-results")));
    env.standin.set_knobs(Knobs {
        log_text: Some(log),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w1");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1102, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    let status = env.wait_run(run_id, Duration::from_secs(60)).await;
    let stages: Vec<(String, String, Option<String>)> = env
        .db()
        .await
        .query(
            "SELECT stage, outcome, detail FROM stage_attempts WHERE run_id = $1 ORDER BY id",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(status, "succeeded", "{stages:#?}");
    let d = env
        .db()
        .await
        .query_one(
            "SELECT class, tool, command FROM diagnoses WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            d.get::<_, String>(0),
            d.get::<_, String>(1),
            d.get::<_, String>(2)
        ),
        (
            "format".into(),
            "rustfmt".into(),
            "cargo fmt --all -- --check".into()
        )
    );
}

fn sandbox_containers_of(pid: u32) -> usize {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.selfheal.sandbox.pid={pid}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn the_sandbox_container_of_a_sigkilled_worker_is_removed_by_the_next_worker() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // A scenario log (not a recorded one): the failed step is a slow command, so the worker
    // is inside its sandbox container when it is killed.
    let log = "##[group]Run sleep 300; exit 1\nsleep 300; exit 1\nshell: /usr/bin/bash -e {0}\n##[endgroup]\n##[error]Process completed with exit code 1.\n";
    env.standin.set_knobs(Knobs {
        log_text: Some(log.into()),
        ..Knobs::default()
    });
    let mut doomed = env.spawn_worker("doomed");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1701, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    let pid = doomed.id();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sandbox_containers_of(pid) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started its sandbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&doomed, Signal::SIGKILL);
    doomed.wait().ok();

    // The next worker takes the stage over; its sandbox start sweeps the orphan.
    let mut rescuer = env.spawn_worker("rescuer");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sandbox_containers_of(pid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan container was not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_until(
        &format!("SELECT count(*) = 1 FROM stage_attempts WHERE run_id = '{run_id}' AND stage = 'patch' AND outcome = 'abandoned'"),
        Duration::from_secs(30),
    )
    .await;
    signal(&rescuer, Signal::SIGKILL);
    rescuer.wait().ok();
    // Leave nothing behind for other tests: the rescuer's own container goes at the next sweep.
    let _ = selfheal_engine::sandbox::Sandbox::connect(
        selfheal_engine::sandbox::Images::Recipe,
        Default::default(),
    )
    .await;
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_is_stopped_with_the_reason() {
    let mut env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // Triage hangs long enough for each worker to be killed in the middle of it, the way a
    // job that runs its worker out of memory kills it.
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 120_000,
        ..Knobs::default()
    });
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1601, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    for attempt in 1..=3 {
        let mut worker = env.spawn_worker(&format!("doomed-{attempt}"));
        env.wait_until(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM stage_attempts WHERE run_id = '{run_id}'
                 AND stage = 'triage' AND attempt = {attempt} AND outcome = 'running')"
            ),
            Duration::from_secs(60),
        )
        .await;
        signal(&worker, Signal::SIGKILL);
        worker.wait().unwrap();
    }
    let metrics = env.worker_metrics();
    let _last = env.spawn_worker("survivor");
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(60)).await,
        "failed"
    );
    // The survivor closed the third attempt (each doomed worker closed the one before).
    assert_eq!(
        scrape(&metrics, "selfheal_stage_abandoned_total{stage=\"triage\"}").await,
        Some(1.0)
    );
    let reason: String = env
        .db()
        .await
        .query_one("SELECT failure_reason FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.starts_with("triage was abandoned 3 times"),
        "{reason}"
    );
    assert_eq!(
        env.count("SELECT count(*) FROM stage_attempts WHERE outcome = 'running'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_failed_download_never_records_the_presigned_url() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The log's pre-signed URL points at a port nothing listens on: every download fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    env.standin.set_knobs(Knobs {
        signed_url_base: Some(format!("http://127.0.0.1:{port}")),
        ..Knobs::default()
    });
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1701, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(90)).await,
        "failed"
    );
    let db = env.db().await;
    let recorded: String = db
        .query_one(
            "SELECT coalesce(r.failure_reason, '') || ' ' || coalesce(string_agg(a.error, ' '), '')
             FROM runs r LEFT JOIN stage_attempts a ON a.run_id = r.id WHERE r.id = $1 GROUP BY r.failure_reason",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        recorded.contains("log"),
        "the failure is recorded: {recorded}"
    );
    assert!(!recorded.contains("urlSignature"), "{recorded}");
    assert!(
        !recorded.contains(&format!("127.0.0.1:{port}")),
        "{recorded}"
    );
}
