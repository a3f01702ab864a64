//! The reports on a seeded database with known answers: `report_mttr_weekly` and
//! `selfheal report` over it.

mod support;

use std::process::Command;

use chrono::{DateTime, Utc};
use serde_json::Value;
use support::*;

fn selfheal(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_selfheal"))
        .args(args)
        .env_clear()
        .env("DATABASE_URL", &env.database_url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Incidents of two repositories: (repository id, first failure, seconds to green or open,
/// the classes of its runs' diagnoses in run order).
const INCIDENTS: &[(i64, &str, Option<i64>, &[&str])] = &[
    // acme/widgets, week of Monday 2026-11-16: three test failures resolved in 10, 30 and 50
    // minutes (the first one's later run was diagnosed otherwise: the first run's class counts),
    // a format failure still open, and one never diagnosed.
    (10, "2026-11-17T10:00:00Z", Some(600), &["test", "flaky"]),
    (10, "2026-11-18T10:00:00Z", Some(1800), &["test"]),
    (10, "2026-11-19T10:00:00Z", Some(3000), &["test"]),
    (10, "2026-11-20T10:00:00Z", None, &["format"]),
    (10, "2026-11-21T10:00:00Z", Some(120), &[]),
    // acme/tools, Monday 2026-11-23 just after midnight UTC: that week, whatever the clock's zone.
    (11, "2026-11-23T00:30:00Z", Some(90), &["compile"]),
    // Long before: left out by a later `since`.
    (10, "2026-09-01T10:00:00Z", Some(60), &["test"]),
];

async fn seeded() -> TestEnv {
    let env = TestEnv::new().await;
    let (ok, _, err) = selfheal(&env, &["migrate"]);
    assert!(ok, "{err}");
    let db = env.db().await;
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
        for (k, class) in classes.iter().enumerate() {
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
                 VALUES ($1, $2, $3, 1, 'acme/x', $4, 1, 'abc', 'failure', 'succeeded', $5)",
                &[
                    &id,
                    &incident,
                    &delivery,
                    &(1000 * n as i64 + k as i64),
                    &(first + chrono::Duration::seconds(k as i64 + 1)),
                ],
            )
            .await
            .unwrap();
            db.execute(
                "INSERT INTO diagnoses (run_id, class, fingerprint, excerpt) VALUES ($1, $2, 'fp', '')",
                &[&id, class],
            )
            .await
            .unwrap();
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
            (
                week("2026-11-23"),
                "acme/tools",
                "compile",
                1,
                1,
                Some(90.0),
                Some(90.0),
                Some(90.0)
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
         acme/tools,2026-11-23T00:00:00Z,compile,1,1,90.0,90.0,90.0\n"
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
