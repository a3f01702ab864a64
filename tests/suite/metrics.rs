//! Web's `/metrics`: its own counts of deliveries, and the fleet's figures read from Postgres,
//! checked on the seeded database of the reports (reporting.rs) with known answers.

use crate::reporting::seeded;
use crate::support;

use support::*;

/// The seeded runs by their GitHub run id (1000 x incident + run): (run, incident).
async fn run(db: &tokio_postgres::Client, github: i64) -> (uuid::Uuid, uuid::Uuid) {
    let row = db
        .query_one(
            "SELECT id, incident_id FROM runs WHERE github_run_id = $1",
            &[&github],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn web_metrics_carry_the_fleet_figures_from_postgres_with_known_answers() {
    let mut env = seeded().await;
    let db = env.db().await;
    // Incident 0 (a test failure, first failed 2026-11-17 10:00, green at 10:10): run 0's
    // revert was pushed at 10:03:20 and merged at 10:05; run 1 (a rerun) pushed after the
    // merge. Run 0's diagnosis is confirmed; run 1's is not.
    let (healed, incident) = run(&db, 0).await;
    let (later, _) = run(&db, 1).await;
    for (run, attempt, pushed) in [(healed, 1, 200), (later, 2, 400)] {
        db.execute(
            "INSERT INTO fix_attempts (run_id, incident_id, attempt, strategy, commit_sha, pushed_at)
             VALUES ($1, $2, $3, 'revert_culprit', 'c', '2026-11-17T10:00:00Z'::timestamptz
                     + make_interval(secs => $4::int))",
            &[&run, &incident, &attempt, &pushed],
        )
        .await
        .unwrap();
    }
    // Incident 2's test failure did not reproduce in the sandbox: overturned.
    let (overturned, overturned_incident) = run(&db, 2000).await;
    db.execute(
        "UPDATE patches SET verdict = 'not_reproduced' WHERE run_id = $1",
        &[&overturned],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO validations (run_id, applied, runs, passed, failed, duration_ms, excerpt, verdict)
         VALUES ($1, true, 3, 3, 0, 10, '', 'fixed')",
        &[&healed],
    )
    .await
    .unwrap();
    // Two model requests settled (summed), one not (its reservation is a gauge, not a count).
    db.execute(
        "INSERT INTO ai_spend (run_id, incident_id, installation_id, provider, model, reserved_tokens,
           input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, requests, cost_usd, settled_at)
         VALUES ($1, $2, 1, 'anthropic', 'claude', 5000, 60, 30, 6, 3, 1, 0.15, now()),
                ($1, $2, 1, 'anthropic', 'claude', 5000, 40, 20, 4, 2, 1, 0.10, now())",
        &[&overturned, &overturned_incident],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO ai_spend (run_id, incident_id, installation_id, provider, model, reserved_tokens)
         VALUES ($1, $2, 1, 'openai_compatible', 'm', 1000)",
        &[&overturned, &overturned_incident],
    )
    .await
    .unwrap();
    // In flight on the open incident: a run validating for 90 s (patched before), and a run
    // whose triage job has waited 60 s, never pushed to Redis.
    let open: uuid::Uuid = db
        .query_one("SELECT id FROM incidents WHERE status = 'open'", &[])
        .await
        .unwrap()
        .get(0);
    let (running, queued) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for (id, github, status) in [(running, 90001i64, "running"), (queued, 90002, "queued")] {
        let delivery = format!("live-{github}");
        db.execute(
            "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload)
             VALUES ($1, 'workflow_run', 'accepted', '{}')",
            &[&delivery],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO runs (id, incident_id, delivery_id, installation_id, repository_full_name,
               github_run_id, github_run_attempt, head_sha, conclusion, status)
             VALUES ($1, $2, $3, 1, 'acme/widgets', $4, 1, 'abc', 'failure', $5)",
            &[&id, &open, &delivery, &github, &status],
        )
        .await
        .unwrap();
    }
    db.execute(
        "INSERT INTO stage_attempts (run_id, stage, attempt, worker_id, started_at, finished_at, outcome)
         VALUES ($1, 'patch', 1, 'w', now() - interval '200 s', now() - interval '100 s', 'succeeded'),
                ($1, 'validate', 1, 'w', now() - interval '90 s', NULL, 'running')",
        &[&running],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO outbox (run_id, stage, created_at, enqueued_at) VALUES
           ($1, 'patch', now() - interval '201 s', now() - interval '201 s'),
           ($1, 'validate', now() - interval '95 s', now() - interval '95 s'),
           ($2, 'triage', now() - interval '60 s', NULL)",
        &[&running, &queued],
    )
    .await
    .unwrap();

    // Two denials by selfheal's invariants and one by a repository's own policy, whose
    // invariant name (chosen by the repository) is not a label.
    db.execute(
        "INSERT INTO invariant_denials (run_id, policy, invariant, message) VALUES
           ($1, 'selfheal', 'tests-kept', 'tests-kept: skips a test'),
           ($1, 'selfheal', 'tests-kept', 'tests-kept: removes the test a'),
           ($1, '.github/selfheal/policies/x.rego', 'anything-at-all', 'anything-at-all: no')",
        &[&running],
    )
    .await
    .unwrap();

    db.execute(
        "INSERT INTO proofs (run_id, prover, outcome, command, detail) VALUES
           ($1, 'lean', 'unavailable', 'lake build', 'lake is not in the sandbox'),
           ($1, 'kani', 'failed', 'cargo kani', 'VERIFICATION:- FAILED'),
           ($2, 'kani', 'passed', 'cargo kani', 'Complete - 1 successfully verified harnesses')",
        &[&running, &queued],
    )
    .await
    .unwrap();

    // Redis is away, so the relay cannot push the triage job: it stays unpushed.
    env.set(
        "REDIS_URL",
        &format!("redis://127.0.0.1:{}", support::own_services::free_port()),
    );
    let app = env.spawn_web().await;
    let url = format!("{}/metrics", app.url);
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let value = |sample: &str| sample_value(&page, sample);
    let exact = [
        ("selfheal_fleet_metrics_up", 1.0),
        ("selfheal_runs_in_flight{status=\"running\"}", 1.0),
        ("selfheal_runs_in_flight{status=\"queued\"}", 1.0),
        ("selfheal_incidents_open", 1.0),
        ("selfheal_queue_jobs_waiting", 1.0),
        ("selfheal_outbox_unpushed", 1.0),
        ("selfheal_stage_attempts_running{stage=\"validate\"}", 1.0),
        ("selfheal_stage_attempts_running{stage=\"patch\"}", 0.0),
        ("selfheal_runs_finished_total{status=\"succeeded\"}", 8.0),
        ("selfheal_runs_finished_total{status=\"failed\"}", 0.0),
        // Seven incidents resolved in 600, 1800, 3000, 120, 90, 100 and 60 s.
        ("selfheal_incident_mttr_seconds_count", 7.0),
        ("selfheal_incident_mttr_seconds_sum", 5770.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"60.0\"}", 1.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"300.0\"}", 4.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"600.0\"}", 5.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"1800.0\"}", 6.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"3600.0\"}", 7.0),
        ("selfheal_incident_mttr_seconds_bucket{le=\"+Inf\"}", 7.0),
        (
            "selfheal_diagnoses_settled_total{class=\"test\",outcome=\"confirmed\"}",
            1.0,
        ),
        (
            "selfheal_diagnoses_settled_total{class=\"test\",outcome=\"overturned\"}",
            1.0,
        ),
        ("selfheal_diagnoses_unsettled", 6.0),
        (
            "selfheal_patches_total{class=\"flaky\",strategy=\"rerun\",verdict=\"flaky\"}",
            2.0,
        ),
        (
            "selfheal_patches_total{class=\"test\",strategy=\"ai_patch\",verdict=\"not_reproduced\"}",
            1.0,
        ),
        ("selfheal_validations_total{verdict=\"fixed\"}", 1.0),
        (
            "selfheal_proofs_total{prover=\"lean\",outcome=\"unavailable\"}",
            1.0,
        ),
        (
            "selfheal_proofs_total{prover=\"kani\",outcome=\"failed\"}",
            1.0,
        ),
        (
            "selfheal_invariant_denials_total{policy=\"selfheal\",invariant=\"tests_kept\"}",
            2.0,
        ),
        (
            "selfheal_invariant_denials_total{policy=\"repository\",invariant=\"repository\"}",
            1.0,
        ),
        ("selfheal_pull_requests_total{state=\"opened\"}", 4.0),
        ("selfheal_pull_requests_total{state=\"merged\"}", 3.0),
        (
            "selfheal_ai_tokens_total{provider=\"anthropic\",kind=\"input\"}",
            100.0,
        ),
        (
            "selfheal_ai_tokens_total{provider=\"anthropic\",kind=\"cache_write\"}",
            5.0,
        ),
        (
            "selfheal_ai_tokens_reserved{provider=\"openai_compatible\"}",
            1000.0,
        ),
        ("selfheal_ai_cost_usd_total{provider=\"anthropic\"}", 0.25),
    ];
    for (sample, want) in exact {
        assert_eq!(value(sample), Some(want), "{sample} in:\n{page}");
    }
    assert_eq!(
        value("selfheal_ai_tokens_reserved{provider=\"anthropic\"}"),
        None,
        "a settled request reserves nothing:\n{page}"
    );
    let waited = value("selfheal_queue_oldest_job_age_seconds").unwrap();
    assert!((59.0..120.0).contains(&waited), "{waited}");
    let running_for = value("selfheal_stage_oldest_attempt_seconds").unwrap();
    assert!((89.0..150.0).contains(&running_for), "{running_for}");

    // The proof per class and strategy: the healed run's revert was proved, and no other
    // patch was judged.
    let outcomes = selfheal_shared::reports::patch_outcomes(
        &db,
        None,
        "2026-01-01T00:00:00Z".parse().unwrap(),
    )
    .await
    .unwrap();
    let proofs: Vec<(String, String, i64, i64, Option<f64>)> = outcomes
        .into_iter()
        .filter(|o| o.proofs > 0)
        .map(|o| (o.class, o.strategy, o.proofs, o.proved, o.proved_rate))
        .collect();
    assert_eq!(
        proofs,
        [("test".into(), "revert_culprit".into(), 1, 1, Some(1.0))]
    );
    // The accuracy report reads the same outcomes: of acme/widgets' three test diagnoses that
    // week, one confirmed and one overturned.
    let row = db
        .query_one(
            "SELECT diagnoses, confirmed, overturned, accuracy::float8 FROM report_diagnosis_accuracy
             WHERE repository = 'acme/widgets' AND class = 'test'
               AND week = '2026-11-16T00:00:00Z'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, f64>(3)
        ),
        (3, 1, 1, 0.5)
    );
    let out = env.selfheal(&[
        "report",
        "accuracy",
        "--repo",
        "acme/widgets",
        "--since",
        "3650d",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{out:?}");
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("acme/widgets,2026-11-16T00:00:00Z,test,3,1,1,0.5")),
        "{csv}"
    );
    // Proofs: only passed and failed are attempts; the unavailable Lean proof is not one, and
    // has no success rate.
    let out = env.selfheal(&[
        "report",
        "proofs",
        "--repo",
        "acme/widgets",
        "--since",
        "30d",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{out:?}");
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("repository,week,prover,passed,failed,unavailable,already_failing,not_applicable,attempted,success_rate"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("acme/widgets,") && l.ends_with(",kani,1,1,0,0,0,2,0.5")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("acme/widgets,") && l.ends_with(",lean,0,0,1,0,0,0,")),
        "{csv}"
    );
}

#[tokio::test]
async fn metrics_answer_without_the_fleet_figures_when_postgres_cannot_give_them() {
    let mut env = TestEnv::new().await;
    let closed = support::own_services::free_port();
    env.set(
        "DATABASE_URL",
        &format!("postgres://selfheal@127.0.0.1:{closed}/nothing"),
    );
    let app = env.spawn_web().await;
    // A delivery web cannot store is refused with 503 and counted as such.
    let (status, _) = app
        .deliver("workflow_run", &env.failing_run(42, &now()))
        .await;
    assert_eq!(status, 503);
    let url = format!("{}/metrics", app.url);
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(
        sample_value(&page, "selfheal_fleet_metrics_up"),
        Some(0.0),
        "{page}"
    );
    assert!(!page.contains("selfheal_runs_in_flight"), "{page}");
    assert_eq!(
        sample_value(
            &page,
            "selfheal_webhook_deliveries_total{event=\"workflow_run\",outcome=\"unavailable\"}"
        ),
        Some(1.0),
        "{page}"
    );
}

#[tokio::test]
async fn refused_deliveries_are_counted_and_timed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let url = format!("{}/metrics", app.url);
    let refused =
        "selfheal_webhook_deliveries_total{event=\"workflow_run\",outcome=\"refused_signature\"}";
    // Present before the first refusal, so that the first one is an increase.
    assert_eq!(scrape(&url, refused).await, Some(0.0));
    let forged = app.signing_with("not-the-secret");
    let (status, _) = forged
        .deliver("workflow_run", &env.failing_run(43, &now()))
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .post_raw(
            &[
                ("x-github-event", "workflow_run".into()),
                ("x-github-delivery", "d-bad".into()),
            ],
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, 401, "unsigned comes before malformed");
    let (status, _) = app.deliver("workflow_run", &serde_json::json!([1])).await;
    assert_eq!(status, 400);
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert_eq!(sample_value(&page, refused), Some(2.0), "{page}");
    assert_eq!(
        sample_value(
            &page,
            "selfheal_webhook_deliveries_total{event=\"workflow_run\",outcome=\"refused_malformed\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample_value(
            &page,
            "selfheal_webhook_ingest_duration_seconds_count{event=\"workflow_run\"}"
        ),
        Some(3.0),
        "{page}"
    );
}
