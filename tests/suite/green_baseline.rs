//! A failure no parser recognises, shown by the lines the same job's last green run did not
//! print: the worker finds that run on the GitHub stand-in (the workflow's successful pushes on
//! the branch, of the repository itself) and its job of the same name, and records which run
//! served (`diagnoses.green_run_id`).

use std::time::Duration;

use github_standin::Knobs;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::*;

/// A publish script's step: an error-word line every run prints (`checking error pages`) and
/// a warning every run prints, then what this run alone printed.
const FAILED: &str = "2020-01-20T17:42:53.0000000Z ##[group]Run ./scripts/publish.sh
2020-01-20T17:42:53.0100000Z ./scripts/publish.sh
2020-01-20T17:42:53.0200000Z shell: /usr/bin/bash -e {0}
2020-01-20T17:42:53.0300000Z ##[endgroup]
2020-01-20T17:42:54.0000000Z checking error pages: 4 found
2020-01-20T17:42:54.1000000Z uploading site (312 files)
2020-01-20T17:42:55.0000000Z warning: failed to compress 2 files, sending them as they are
2020-01-20T17:42:56.0000000Z publish: version 1.4.0 in Cargo.toml but the tag is v1.5.0
2020-01-20T17:42:56.1000000Z refusing to publish a release whose version is not its tag
2020-01-20T17:42:56.2000000Z ##[error]Process completed with exit code 1.
";

/// The same job when it last passed: other timings and counts, the same words.
const GREEN: &str = "2020-01-19T08:02:11.0000000Z ##[group]Run ./scripts/publish.sh
2020-01-19T08:02:11.0100000Z ./scripts/publish.sh
2020-01-19T08:02:11.0200000Z shell: /usr/bin/bash -e {0}
2020-01-19T08:02:11.0300000Z ##[endgroup]
2020-01-19T08:02:12.0000000Z checking error pages: 3 found
2020-01-19T08:02:12.1000000Z uploading site (298 files)
2020-01-19T08:02:13.0000000Z warning: failed to compress 5 files, sending them as they are
2020-01-19T08:02:14.0000000Z published v1.4.0
";

const WORKFLOW: i64 = 2823525;

fn listed(branch: &str, event: &str, conclusion: &str) -> Value {
    json!({"workflow_id": WORKFLOW, "head_branch": branch, "event": event,
        "conclusion": conclusion, "head_sha": "1111111111111111111111111111111111111111"})
}

/// Delivers a failing run and waits for its diagnosis: (excerpt, green_run_id, the diagnose
/// stage's detail, fingerprint).
async fn diagnosed(
    env: &TestEnv,
    app: &App,
    github_run: i64,
) -> (String, Option<i64>, String, String) {
    // The recorded payload's run was a `repository_dispatch`: here, a push's.
    let mut failing = env.failing_run(github_run, &now());
    failing["workflow_run"]["event"] = json!("push");
    diagnosed_run(env, app, failing).await
}

async fn diagnosed_run(
    env: &TestEnv,
    app: &App,
    failing: Value,
) -> (String, Option<i64>, String, String) {
    let (_, body) = app.deliver("workflow_run", &failing).await;
    let run_id: Uuid = env.run_of(&body).await;
    env.wait_until(
        &format!("SELECT count(*) = 1 FROM stage_attempts WHERE run_id = '{run_id}' AND stage = 'diagnose' AND outcome = 'succeeded'"),
        Duration::from_secs(60),
    )
    .await;
    let db = env.db().await;
    let d = db
        .query_one(
            "SELECT class, excerpt, green_run_id, fingerprint, green_log_gzip IS NOT NULL
             FROM diagnoses WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(d.get::<_, String>(0), "unknown");
    // The green log is kept for the patch stage exactly when it chose the excerpt.
    assert_eq!(d.get::<_, bool>(4), d.get::<_, Option<i64>>(2).is_some());
    let detail: String = db
        .query_one(
            "SELECT detail FROM stage_attempts WHERE run_id = $1 AND stage = 'diagnose' AND outcome = 'succeeded'",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    (d.get(1), d.get(2), detail, d.get(3))
}

/// The stand-in's log requests (`GET …/actions/jobs/{id}/logs`) so far.
fn log_requests(env: &TestEnv) -> Vec<String> {
    env.standin
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/logs"))
        .map(|c| c.path)
        .collect()
}

#[tokio::test]
async fn an_unknown_failure_is_shown_by_what_the_last_green_run_did_not_print() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    // Newest last: the green push on the branch (listed as run 7000), then decoys a careless
    // query would take: a fork's pull request on a branch also named master, a pull request
    // from master itself (its run tests a merge with another base, not the branch), a push to
    // another branch, and a failed push.
    let mut fork = listed("master", "pull_request", "success");
    fork["head_repository"] = json!("mallory/octo-repo");
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(GREEN.into()),
        workflow_runs: vec![
            listed("master", "push", "success"),
            fork,
            listed("master", "pull_request", "success"),
            listed("release", "push", "success"),
            listed("master", "push", "failure"),
        ],
        ..Knobs::default()
    });
    let (excerpt, green_run, detail, fingerprint) = diagnosed(&env, &app, 1901).await;
    assert_eq!(green_run, Some(7000), "{detail}");
    assert!(
        detail.contains("shown by what green run 7000 did not print"),
        "{detail}"
    );
    // Only what the green run did not print: the version against the tag.
    assert_eq!(
        excerpt.lines().collect::<Vec<_>>(),
        vec![
            "publish: version 1.4.0 in Cargo.toml but the tag is v1.5.0",
            "refusing to publish a release whose version is not its tag",
        ],
        "{excerpt}"
    );

    // A green run whose log GitHub no longer has (410): asked for, and the error-word lines
    // shown, with nothing failed; the failure keeps its fingerprint.
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        workflow_runs: vec![listed("master", "push", "success")],
        ..Knobs::default()
    });
    let asked = log_requests(&env).len();
    let (excerpt, green_run, detail, same) = diagnosed(&env, &app, 1902).await;
    assert_eq!(green_run, None, "{detail}");
    assert_eq!(
        log_requests(&env).len() - asked,
        2,
        "the failed job's log and the green one's"
    );
    assert!(!detail.contains("without a green run's log"), "{detail}");
    assert!(
        excerpt.starts_with("checking error pages: 4 found"),
        "{excerpt}"
    );
    assert_eq!(same, fingerprint);

    // The newest green run skipped the job (a path filter): the one before it is the baseline.
    let mut skipped = listed("master", "push", "success");
    skipped["skipped_jobs"] = json!(["test"]);
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(GREEN.into()),
        workflow_runs: vec![listed("master", "push", "success"), skipped],
        ..Knobs::default()
    });
    let (_, green_run, detail, _) = diagnosed(&env, &app, 1903).await;
    assert_eq!(green_run, Some(7000), "{detail}");

    // Two jobs of one name (a matrix whose name leaves a dimension out): which leg failed
    // cannot be told, so no baseline; a green log that printed every line chose nothing.
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(GREEN.into()),
        more_failing_jobs: vec!["test".into()],
        workflow_runs: vec![listed("master", "push", "success")],
        ..Knobs::default()
    });
    let (_, green_run, detail, _) = diagnosed(&env, &app, 1904).await;
    assert_eq!(green_run, None, "{detail}");
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(FAILED.into()),
        workflow_runs: vec![listed("master", "push", "success")],
        ..Knobs::default()
    });
    let (excerpt, green_run, detail, _) = diagnosed(&env, &app, 1905).await;
    assert_eq!(green_run, None, "{detail}");
    assert!(!detail.contains("green run"), "{detail}");
    assert!(
        excerpt.starts_with("checking error pages: 4 found"),
        "{excerpt}"
    );
}

/// A pull request's failure is compared with an earlier green run of the same event on its
/// branch, of the repository itself: never a fork's pull request on a branch of the same name,
/// nor a push.
#[tokio::test]
async fn a_pull_requests_failure_is_compared_with_its_own_green_run() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    let mut fork = listed("feature", "pull_request", "success");
    fork["head_repository"] = json!("mallory/octo-repo");
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(GREEN.into()),
        // Newest last: the pull request's own green run (7000), a push (7001), a fork's (7002).
        workflow_runs: vec![
            listed("feature", "pull_request", "success"),
            listed("feature", "push", "success"),
            fork,
        ],
        ..Knobs::default()
    });
    let mut failing = env.failing_run(1907, &now());
    failing["workflow_run"]["event"] = json!("pull_request");
    failing["workflow_run"]["head_branch"] = json!("feature");
    let (excerpt, green_run, detail, _) = diagnosed_run(&env, &app, failing).await;
    assert_eq!(green_run, Some(7000), "{detail}");
    assert!(excerpt.starts_with("publish: version 1.4.0"), "{excerpt}");
}

/// GitHub failing the lookup costs the baseline, not the diagnosis: the reason is in the
/// stage's detail.
#[tokio::test]
async fn github_failing_the_lookup_leaves_the_error_lines() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w1");
    // Every listing of the workflow's runs answered 502 (octocrab's own retries included).
    env.standin.set_knobs(Knobs {
        log_text: Some(FAILED.into()),
        green_log_text: Some(GREEN.into()),
        workflow_runs: vec![listed("master", "push", "success")],
        fail_workflow_runs: 1_000,
        ..Knobs::default()
    });
    let (excerpt, green_run, detail, _) = diagnosed(&env, &app, 1906).await;
    assert_eq!(green_run, None);
    assert!(detail.contains("without a green run's log"), "{detail}");
    assert!(
        excerpt.starts_with("checking error pages: 4 found"),
        "{excerpt}"
    );
}
