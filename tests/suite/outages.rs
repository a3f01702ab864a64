//! Postgres and Redis going away under running workers: a Redis restart, a worker started
//! before its database, a database restarted mid-stage. Each test runs on a Postgres server or
//! a Redis of its own (support::own_services), which it crashes and starts again.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use support::own_services::{OwnPostgres, OwnRedis};
use support::*;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The worker process has not exited.
fn alive(worker: &mut Worker, what: &str) {
    if let Some(status) = worker.try_wait().unwrap() {
        panic!("the worker exited ({status}) {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_does_not_stop_the_worker_and_it_takes_work_again() {
    let dir = scratch();
    let mut redis = OwnRedis::start(dir.path());
    let env = TestEnv::with_redis(&redis.url()).await;
    let app = env.spawn_web().await;
    let mut worker = env.spawn_worker("w");
    env.wait_workers_registered(1).await;
    env.fail_and_heal(&app, 1).await;

    // Everything Redis held is gone: connections cut, queue and registrations lost.
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.start_again();
    tokio::time::sleep(Duration::from_secs(3)).await;
    alive(&mut worker, "after a Redis restart");

    // A failure on another branch (its own incident) is taken up by the same worker.
    let mut payload = env.failing_run(2, &now());
    payload["workflow_run"]["head_branch"] = "other".into();
    let (status, body) = app.deliver("workflow_run", &payload).await;
    assert_eq!(status, 202, "{body}");
    // The worker admits it, then runs it.
    let run = env.admitted_by_worker(&body).await;
    // Final, whatever the verdict on a second failure of the same commit: a worker took it up.
    let status = env.wait_run(run, Duration::from_secs(60)).await;
    assert!(
        env.count(&format!(
            "SELECT count(*) FROM stage_attempts WHERE run_id = '{run}' AND stage = 'deliver'"
        ))
        .await
            > 0,
        "the run went through every stage ({status})"
    );
    alive(&mut worker, "after healing again");
    let log = env.worker_log("w");
    assert!(
        log.lines().any(
            |l| l.contains("the queue worker stopped without being asked") && l.contains("cause=")
        ),
        "the rebuild is logged with its cause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_while_postgres_is_down_waits_for_it() {
    let dir = scratch();
    let postgres = OwnPostgres::start(dir.path());
    let env = TestEnv::on(&postgres.admin_url(), &redis_url()).await;
    postgres.crash();
    let mut worker = env.spawn_worker("early");
    tokio::time::sleep(Duration::from_secs(4)).await;
    alive(&mut worker, "while Postgres was down");
    postgres.start_again();

    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(1, &now()))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        env.wait_run(env.run_of(&body).await, Duration::from_secs(60))
            .await,
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_pointed_at_a_database_that_does_not_exist_exits_at_once_with_the_cause() {
    let dir = scratch();
    let postgres = OwnPostgres::start(dir.path());
    let mut env = TestEnv::on(&postgres.admin_url(), &redis_url()).await;
    // Not an outage: no wait cures a database that does not exist.
    let missing = env.database_url.replace(&env.tag, "no_such_database");
    env.set("DATABASE_URL", &missing);
    let mut worker = env.spawn_worker("misconfigured");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a worker pointed at a database that does not exist is still waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    let log = env.worker_log("misconfigured");
    assert!(log.contains("no_such_database"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stage_does_not_use_up_the_stages_retries() {
    let dir = scratch();
    let postgres = OwnPostgres::start(dir.path());
    let env = TestEnv::on(&postgres.admin_url(), &redis_url()).await;
    let app = env.spawn_web().await;
    // Triage waits on GitHub's jobs list: the stage is in flight when Postgres goes.
    // Long enough to crash Postgres under it, short enough that the last attempt (held too)
    // leaves the rest of the pipeline its time.
    env.standin.set_knobs(Knobs {
        jobs_delay_ms: 8_000,
        ..Knobs::default()
    });
    let mut worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(1, &now()))
        .await;
    let run = env.run_of(&body).await;
    // Three restarts: as many as the stage's abandoned attempts may be, one more than its
    // failures would leave.
    for restart in 1..=3 {
        env.wait_until(
            "SELECT count(*) = 1 FROM stage_attempts WHERE stage = 'triage' AND outcome = 'running'",
            Duration::from_secs(60),
        )
        .await;
        postgres.crash();
        tokio::time::sleep(Duration::from_millis(500)).await;
        postgres.start_again();
        env.wait_until(
            &format!("SELECT count(*) >= {restart} FROM stage_attempts WHERE stage = 'triage' AND outcome <> 'running'"),
            Duration::from_secs(60),
        )
        .await;
    }
    env.standin.set_knobs(Knobs::default());
    assert_eq!(
        env.wait_run(run, Duration::from_secs(120)).await,
        "succeeded"
    );
    alive(&mut worker, "after three database restarts");
    let db = env.db().await;
    let rows = db
        .query(
            "SELECT outcome, charged, coalesce(error, '') FROM stage_attempts
             WHERE run_id = $1 AND stage = 'triage' ORDER BY attempt",
            &[&run],
        )
        .await
        .unwrap();
    let attempts: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let interrupted: Vec<_> = attempts.iter().filter(|a| !a.1).collect();
    assert_eq!(interrupted.len(), 3, "{attempts:?}");
    // Recorded by its worker (failed), or, when recovery got there first, closed as cut off by
    // the restart (abandoned): never charged, always with its cause.
    assert!(
        interrupted
            .iter()
            .all(|a| matches!(a.0.as_str(), "failed" | "abandoned") && !a.2.is_empty()),
        "each interrupted attempt is recorded with its cause: {attempts:?}"
    );
    assert_eq!(attempts.last().unwrap().0, "succeeded", "{attempts:?}");
}
