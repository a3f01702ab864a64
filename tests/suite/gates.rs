//! Safe-rollout gates: a workflow allowlist, a per-installation budget, and dry-run.

use crate::support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn only_allowlisted_workflows_are_acted_on() {
    let mut env = TestEnv::new().await;
    env.set(
        "SELFHEAL_WORKFLOWS",
        "ci.yml, .github/workflows/release.yml",
    );
    let app = env.spawn_web().await;
    // The recorded run is of .github/workflows/test.yml: not on the list.
    // The allowlist is the web's: a failure it leaves out is settled in the answer.
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(7101, &now()))
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("ignored")));
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains(".github/workflows/test.yml"),
        "{body}"
    );
    let mut listed = env.failing_run(7102, &now());
    listed["workflow_run"]["path"] = ".github/workflows/release.yml".into();
    let (_, body) = app.deliver("workflow_run", &listed).await;
    assert_eq!(env.admit(&body).await["outcome"], "run_created");
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
}

/// The budget a failure is admitted under is the web's, recorded with the delivery: a worker
/// process started with another (or none) applies the web's.
#[tokio::test]
async fn a_worker_admits_under_the_webs_budget_not_its_own() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RUNS_PER_HOUR", "1");
    env.worker_vars
        .insert("SELFHEAL_RUNS_PER_HOUR".into(), "1000".into());
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let mut outcomes = Vec::new();
    for id in [7151, 7152] {
        let (_, answer) = app
            .deliver("workflow_run", &env.failing_run(id, &now()))
            .await;
        outcomes.push(env.admission_by_worker(&answer).await);
    }
    assert_eq!(outcomes[0]["outcome"], "run_created", "{outcomes:?}");
    assert_eq!(outcomes[1]["outcome"], "ignored_inactive", "{outcomes:?}");
    assert!(
        outcomes[1]["reason"]
            .as_str()
            .unwrap()
            .contains("budget of 1 runs per hour"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_installation_budget_caps_runs_per_hour() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_RUNS_PER_HOUR", "2");
    let app = env.spawn_web().await;
    let mut statuses = Vec::new();
    for id in 7201..7204 {
        let (_, answer) = app
            .deliver("workflow_run", &env.failing_run(id, &now()))
            .await;
        let body = env.admit(&answer).await;
        statuses.push(body["outcome"].as_str().unwrap().to_string());
        if body["outcome"] == "ignored_inactive" {
            assert!(
                body["reason"]
                    .as_str()
                    .unwrap()
                    .contains("budget of 2 runs per hour"),
                "{body}"
            );
        }
    }
    assert_eq!(statuses, ["run_created", "run_created", "ignored_inactive"]);
}

#[tokio::test]
async fn dry_run_diagnoses_validates_and_reports_but_never_pushes_or_merges() {
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_DRY_RUN", "true");
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7301, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, Duration::from_secs(60)).await;
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT outcome, detail FROM stage_attempts WHERE run_id = $1 AND stage = 'deliver'",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "skipped");
    assert!(
        row.get::<_, String>(1)
            .contains("dry run (SELFHEAL_DRY_RUN): would open a pull request"),
        "{}",
        row.get::<_, String>(1)
    );
    assert_eq!(
        env.count("SELECT count(*) FROM validations WHERE verdict = 'fixed'")
            .await,
        1
    );
    // The one write: a neutral check run on the failing commit saying what selfheal would do.
    let writes: Vec<String> = env
        .standin
        .calls()
        .into_iter()
        .filter(|c| c.method != "GET" && !c.path.ends_with("/access_tokens"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(writes, ["POST /repos/octo-org/octo-repo/check-runs"]);
    let check = env.standin.check_runs()[0].clone();
    assert_eq!(check["name"], "selfheal (dry run)");
    assert_eq!(check["conclusion"], "neutral");
    assert_eq!(check["head_sha"], env.standin.head_sha().as_str());
    let summary = check["output"]["summary"].as_str().unwrap();
    assert!(summary.contains("**format** failure"), "{summary}");
    assert!(summary.contains("would open a pull request"), "{summary}");
    assert!(check["output"]["text"]
        .as_str()
        .unwrap()
        .starts_with("```diff\n"));
    assert!(env.standin.pulls().is_empty());
}
