//! The reports on a seeded database with known answers: `report_mttr_weekly` and
//! `selfheal report` over it.

use crate::support;

use chrono::{DateTime, Utc};
use serde_json::Value;
use support::*;

fn selfheal(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = env.selfheal(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A run of an incident: its diagnosis's class, and what the patch stage made of it
/// (strategy, verdict), and its pull request (seconds after the first failure it was merged,
/// `Some(None)` when opened and not merged).
type Run = (
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<Option<i64>>,
);

/// Incidents of two repositories: (repository id, first failure, seconds to green or open,
/// its runs in order).
const INCIDENTS: &[(i64, &str, Option<i64>, &[Run])] = &[
    // acme/widgets, week of Monday 2026-11-16: three test failures resolved in 10, 30 and 50
    // minutes (the first one's later run was diagnosed otherwise: the first run's class counts),
    // a format failure still open, and one never diagnosed.
    // Healed by selfheal: its revert merged 5 minutes in, before the branch went green.
    (
        10,
        "2026-11-17T10:00:00Z",
        Some(600),
        &[
            ("test", Some(("revert_culprit", "fixed")), Some(Some(300))),
            ("flaky", Some(("rerun", "flaky")), None),
        ],
    ),
    // The model's fix was delivered but people fixed it their way.
    (
        10,
        "2026-11-18T10:00:00Z",
        Some(1800),
        &[("test", Some(("ai_patch", "fixed")), Some(None))],
    ),
    (
        10,
        "2026-11-19T10:00:00Z",
        Some(3000),
        &[("test", Some(("ai_patch", "rejected")), None)],
    ),
    // Merged, but the branch is still red: not healed.
    (
        10,
        "2026-11-20T10:00:00Z",
        None,
        &[("format", Some(("format", "fixed")), Some(Some(100)))],
    ),
    (10, "2026-11-21T10:00:00Z", Some(120), &[]),
    // acme/tools, Monday 2026-11-23 just after midnight UTC: that week, whatever the clock's zone.
    (
        11,
        "2026-11-23T00:30:00Z",
        Some(90),
        &[("compile", Some(("hand_off", "handed_off")), None)],
    ),
    // Green 100 s in, by people: selfheal's fix merged after that did not heal it.
    (
        11,
        "2026-11-24T10:00:00Z",
        Some(100),
        &[("compile", Some(("ai_patch", "fixed")), Some(Some(200)))],
    ),
    // Long before: left out by a later `since`; the same flaky failure as in November.
    (
        10,
        "2026-09-01T10:00:00Z",
        Some(60),
        &[("flaky", Some(("rerun", "flaky")), None)],
    ),
];

pub(crate) async fn seeded() -> TestEnv {
    let env = TestEnv::new().await;
    env.migrate();
    // Not UTC, as many servers are not: the weeks are UTC's all the same.
    env.db()
        .await
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L',
                 current_database(), 'America/New_York'); END $$;",
        )
        .await
        .unwrap();
    let db = env.db().await;
    let zone: String = db.query_one("SHOW timezone", &[]).await.unwrap().get(0);
    assert_eq!(zone, "America/New_York");
    db.batch_execute(
        "INSERT INTO installations (id, account_login) VALUES (1, 'acme');
         INSERT INTO repositories (id, installation_id, full_name) VALUES
           (10, 1, 'acme/widgets'), (11, 1, 'acme/tools');",
    )
    .await
    .unwrap();
    let mut run = 0;
    for (n, (repo, first, took, classes)) in INCIDENTS.iter().enumerate() {
        let first = at(first);
        let resolved = took.map(|s| first + chrono::Duration::seconds(s));
        let incident = uuid::Uuid::new_v4();
        db.execute(
            "INSERT INTO incidents (id, repository_id, head_repository_id, branch, workflow_id,
               status, first_failed_at, resolved_at)
             VALUES ($1, $2, $2, 'main', 7, $3, $4, $5)",
            &[
                &incident,
                repo,
                &if resolved.is_some() {
                    "resolved"
                } else {
                    "open"
                },
                &first,
                &resolved,
            ],
        )
        .await
        .unwrap();
        for (k, (class, patch, pr)) in classes.iter().enumerate() {
            run += 1;
            let id = uuid::Uuid::new_v4();
            let delivery = format!("d-{run}");
            db.execute(
                "INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload)
                 VALUES ($1, 'workflow_run', 'accepted', '{}')",
                &[&delivery],
            )
            .await
            .unwrap();
            db.execute(
                "INSERT INTO runs (id, incident_id, delivery_id, installation_id,
                   repository_full_name, github_run_id, github_run_attempt, head_sha, conclusion,
                   status, created_at)
                 VALUES ($1, $2, $3, 1, $6, $4, 1, 'abc', 'failure', 'succeeded', $5)",
                &[
                    &id,
                    &incident,
                    &delivery,
                    &(1000 * n as i64 + k as i64),
                    &(first + chrono::Duration::seconds(k as i64 + 1)),
                    &if *repo == 10 {
                        "acme/widgets"
                    } else {
                        "acme/tools"
                    },
                ],
            )
            .await
            .unwrap();
            let tests = serde_json::json!([format!("tests::{class}_{n}")]);
            db.execute(
                "INSERT INTO diagnoses (run_id, class, fingerprint, excerpt, failing_tests)
                 VALUES ($1, $2, $3, '', $4)",
                &[&id, class, &format!("fp-{class}"), &tests],
            )
            .await
            .unwrap();
            if let Some((strategy, verdict)) = patch {
                db.execute(
                    "INSERT INTO patches (run_id, strategy, class, verdict, evidence)
                     VALUES ($1, $2, $3, $4, '{}')",
                    &[&id, strategy, class, verdict],
                )
                .await
                .unwrap();
            }
            if let Some(merged) = pr {
                let merged_at = merged.map(|s| first + chrono::Duration::seconds(s));
                db.execute(
                    "INSERT INTO deliveries (run_id, incident_id, kind, pr_number, merged_at)
                     VALUES ($1, $2, 'pull_request', $3, $4)",
                    &[&id, &incident, &run, &merged_at],
                )
                .await
                .unwrap();
            }
        }
    }
    env
}

#[tokio::test]
async fn mttr_per_repository_week_and_class_has_the_known_answers() {
    let env = seeded().await;
    let rows =
        selfheal_shared::reports::mttr_weekly(&env.db().await, None, at("2026-10-01T00:00:00Z"))
            .await
            .unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.week.to_rfc3339(),
                r.repository.as_str(),
                r.class.as_str(),
                r.incidents,
                r.resolved,
                r.mttr_p50_seconds,
                r.mttr_p95_seconds,
                r.mttr_mean_seconds,
            )
        })
        .collect();
    let week = |d: &str| format!("{d}T00:00:00+00:00");
    assert_eq!(
        got,
        vec![
            // 90 and 100 s.
            (
                week("2026-11-23"),
                "acme/tools",
                "compile",
                2,
                2,
                Some(95.0),
                Some(99.5),
                Some(95.0)
            ),
            (
                week("2026-11-16"),
                "acme/widgets",
                "format",
                1,
                0,
                None,
                None,
                None
            ),
            // p95 of 600, 1800 and 3000 s, interpolated: 1800 + 0.9 * 1200.
            (
                week("2026-11-16"),
                "acme/widgets",
                "test",
                3,
                3,
                Some(1800.0),
                Some(2880.0),
                Some(1800.0)
            ),
            (
                week("2026-11-16"),
                "acme/widgets",
                "unknown",
                1,
                1,
                Some(120.0),
                Some(120.0),
                Some(120.0)
            ),
        ]
    );
    // One repository; and the September incident is there when asked for.
    let tools = selfheal_shared::reports::mttr_weekly(
        &env.db().await,
        Some("acme/tools"),
        at("2026-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(tools.len(), 1);
    let all =
        selfheal_shared::reports::mttr_weekly(&env.db().await, None, at("2026-01-01T00:00:00Z"))
            .await
            .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].week.to_rfc3339(), week("2026-08-31"));
}

#[tokio::test]
async fn selfheal_report_prints_the_view_as_a_table_csv_or_json() {
    let env = seeded().await;
    // The seeded weeks are in the past of any day this runs: a long `since` reaches them.
    let (ok, json, err) = selfheal(&env, &["report", "--since", "3650d", "--format", "json"]);
    assert!(ok, "{err}");
    let json: Value = serde_json::from_str(&json).unwrap();
    let test = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["class"] == "test" && r["week"] == "2026-11-16T00:00:00Z")
        .unwrap();
    assert_eq!(test["incidents"], 3);
    assert_eq!(test["mttr_p95_seconds"], 2880.0);

    let (ok, csv, _) = selfheal(
        &env,
        &[
            "report",
            "--since",
            "3650d",
            "--repo",
            "acme/tools",
            "--format",
            "csv",
        ],
    );
    assert!(ok);
    assert_eq!(
        csv,
        "repository,week,class,incidents,resolved,mttr_p50_seconds,mttr_p95_seconds,mttr_mean_seconds\n\
         acme/tools,2026-11-23T00:00:00Z,compile,2,2,95.0,99.5,95.0\n"
    );

    let (ok, table, _) = selfheal(&env, &["report", "--since", "3650d"]);
    assert!(ok);
    let test_line = table
        .lines()
        .find(|l| l.starts_with("2026-11-16") && l.contains(" test "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        test_line.contains("30m 00s") && test_line.contains("48m 00s"),
        "{table}"
    );
    assert!(table.starts_with("week"), "{table}");

    // A bad duration is named, and nothing is printed.
    let (ok, out, err) = selfheal(&env, &["report", "--since", "a month"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("--since"), "{err}");
}

#[tokio::test]
async fn fix_rate_patch_outcomes_and_flaky_failures_have_the_known_answers() {
    let env = seeded().await;
    let db = env.db().await;
    let since = at("2026-10-01T00:00:00Z");
    let rates: Vec<_> = selfheal_shared::reports::fix_rate(&db, None, since)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.repository,
                r.week.to_rfc3339(),
                r.incidents,
                r.resolved,
                r.healed,
                r.fix_rate,
            )
        })
        .collect();
    assert_eq!(
        rates,
        vec![
            // Green before selfheal's fix was merged: not healed.
            (
                "acme/tools".into(),
                "2026-11-23T00:00:00+00:00".into(),
                2,
                2,
                0,
                0.0
            ),
            // Five incidents, four resolved, one of them by selfheal's merged fix.
            (
                "acme/widgets".into(),
                "2026-11-16T00:00:00+00:00".into(),
                5,
                4,
                1,
                0.2
            ),
        ]
    );
    let outcomes: Vec<_> = selfheal_shared::reports::patch_outcomes(&db, None, since)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o.class,
                o.strategy,
                (o.patches, o.validated, o.delivered, o.merged),
                o.validated_rate,
                o.merged_rate,
            )
        })
        .collect();
    let row = |c: &str, s: &str, n: (i64, i64, i64, i64), v: f64, m: Option<f64>| {
        (c.to_string(), s.to_string(), n, v, m)
    };
    assert_eq!(
        outcomes,
        vec![
            row("compile", "ai_patch", (1, 1, 1, 1), 1.0, Some(1.0)),
            row("compile", "hand_off", (1, 0, 0, 0), 0.0, None),
            row("flaky", "rerun", (1, 0, 0, 0), 0.0, None),
            row("format", "format", (1, 1, 1, 1), 1.0, Some(1.0)),
            row("test", "ai_patch", (2, 1, 1, 0), 0.5, Some(0.0)),
            row("test", "revert_culprit", (1, 1, 1, 1), 1.0, Some(1.0)),
        ]
    );
    // The widgets' flaky failure, seen in September and November; the latest run's tests.
    let flaky = selfheal_shared::reports::flaky_tests(&db, Some("acme/widgets"), since)
        .await
        .unwrap();
    assert_eq!(flaky.len(), 1, "{flaky:?}");
    assert_eq!(flaky[0].fingerprint, "fp-flaky");
    assert_eq!(flaky[0].runs, 2);
    assert_eq!(
        flaky[0].first_seen.to_rfc3339(),
        "2026-09-01T10:00:01+00:00"
    );
    assert_eq!(flaky[0].failing_tests, "tests::flaky_0");
    assert!(
        selfheal_shared::reports::flaky_tests(&db, Some("acme/tools"), since)
            .await
            .unwrap()
            .is_empty()
    );
    // The command prints them: one aligned column per field.
    let (ok, table, err) = selfheal(&env, &["report", "fix-rate", "--since", "3650d"]);
    assert!(ok, "{err}");
    assert!(table.starts_with("repository"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("acme/widgets") && l.trim_end().ends_with("0.2")),
        "{table}"
    );
    let (ok, json, _) = selfheal(
        &env,
        &["report", "flaky", "--since", "3650d", "--format", "json"],
    );
    assert!(ok);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["runs"], 2);
}

#[tokio::test]
async fn the_cost_of_runs_per_installation_and_week_has_the_known_answers() {
    let env = seeded().await;
    let db = env.db().await;
    // Runs by their seeded GitHub run id (1000 x incident + run).
    let run = |github: i64| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT id, incident_id FROM runs WHERE github_run_id = $1",
                    &[&github],
                )
                .await
                .unwrap();
            (row.get::<_, uuid::Uuid>(0), row.get::<_, uuid::Uuid>(1))
        }
    };
    // The model asked twice: one request settled (1,200 tokens, 5 cents), one never settled
    // (counted at its 3,000-token reservation, no cost known).
    let (ai_run, ai_incident) = run(1000).await;
    let (open_run, open_incident) = run(2000).await;
    db.execute(
        "INSERT INTO ai_spend (run_id, incident_id, installation_id, provider, model, reserved_tokens,
           input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, requests, cost_usd, settled_at)
         VALUES ($1, $2, 1, 'anthropic', 'claude', 5000, 1000, 200, 0, 0, 1, 0.05, now())",
        &[&ai_run, &ai_incident],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO ai_spend (run_id, incident_id, installation_id, provider, model, reserved_tokens)
         VALUES ($1, $2, 1, 'anthropic', 'claude', 3000)",
        &[&open_run, &open_incident],
    )
    .await
    .unwrap();
    // The healed incident's run: 2 minutes patching, 3 validating; the model's: 1 patching,
    // and a validation still running (not counted).
    let (healed_run, _) = run(0).await;
    for (id, stage, seconds) in [
        (healed_run, "patch", Some(120)),
        (healed_run, "validate", Some(180)),
        (ai_run, "patch", Some(60)),
        (ai_run, "validate", None),
    ] {
        db.execute(
            "INSERT INTO stage_attempts (run_id, stage, attempt, worker_id, started_at, finished_at, outcome)
             VALUES ($1, $2, 1, 'w', '2026-11-17T12:00:00Z',
                     '2026-11-17T12:00:00Z'::timestamptz + make_interval(secs => $3::int), $4)",
            &[&id, &stage, &seconds.unwrap_or(0), &if seconds.is_some() { "succeeded" } else { "running" }],
        )
        .await
        .unwrap();
    }
    db.execute(
        "UPDATE stage_attempts SET finished_at = NULL WHERE outcome = 'running'",
        &[],
    )
    .await
    .unwrap();
    let weeks = selfheal_shared::reports::cost_weekly(&db, None, at("2026-10-01T00:00:00Z"))
        .await
        .unwrap();
    let got: Vec<_> = weeks
        .iter()
        .map(|w| {
            (
                w.week.to_rfc3339(),
                w.runs,
                w.ai_tokens,
                w.ai_cost_usd,
                w.patch_validate_minutes,
                w.healed,
                w.ai_tokens_per_fix,
                w.minutes_per_fix,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "2026-11-23T00:00:00+00:00".into(),
                2,
                0,
                None,
                0.0,
                0,
                None,
                None
            ),
            // Five runs of the widgets' week: 1,200 + 3,000 tokens, 2 + 3 + 1 minutes, one fix.
            (
                "2026-11-16T00:00:00+00:00".into(),
                5,
                4200,
                Some(0.05),
                6.0,
                1,
                Some(4200.0),
                Some(6.0)
            ),
        ]
    );
    assert!(
        selfheal_shared::reports::cost_weekly(&db, Some(2), at("2026-10-01T00:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    let (ok, csv, err) = selfheal(
        &env,
        &[
            "report",
            "cost",
            "--installation",
            "1",
            "--since",
            "3650d",
            "--format",
            "csv",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        csv.starts_with("installation_id,week,runs,ai_tokens,ai_cost_usd,patch_validate_minutes,healed,ai_tokens_per_fix,minutes_per_fix\n"),
        "{csv}"
    );
}
