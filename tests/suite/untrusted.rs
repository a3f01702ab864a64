//! Untrusted input at ingest: fork pull requests, merge queues and tags are never healed,
//! replayed comments run once, concurrent redeliveries of one run make one run, and header
//! values never become metric labels. Against real Postgres and Redis.

use crate::support;

use serde_json::{json, Value};
use support::*;

const FORK_REPO_ID: i64 = 999_000_111;

/// The recorded failing run, as GitHub sends it for a fork's pull request: the head lives in
/// the fork, and `pull_requests` is empty because the PR is not the repository's own.
fn from_fork(mut payload: Value) -> Value {
    let run = &mut payload["workflow_run"];
    run["event"] = json!("pull_request");
    run["head_repository"]["id"] = json!(FORK_REPO_ID);
    run["head_repository"]["full_name"] = json!("mallory/octo-repo");
    run["pull_requests"] = json!([]);
    payload
}

async fn delivery_outcome(env: &TestEnv, delivery: &str) -> (String, Option<String>) {
    let row = env
        .db()
        .await
        .query_one(
            "SELECT outcome, reason FROM webhook_deliveries WHERE delivery_id = $1",
            &[&delivery],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_failing_run_from_a_fork_is_recorded_with_its_reason_and_never_healed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver_as(
            "workflow_run",
            "d-fork",
            &from_fork(env.failing_run(5001, &now())),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "ignored_untrusted", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("mallory/octo-repo"),
        "{body}"
    );
    let (outcome, reason) = delivery_outcome(&env, "d-fork").await;
    assert_eq!(outcome, "ignored_untrusted");
    assert!(reason.unwrap().contains("fork"));
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM incidents").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM outbox").await, 0);

    // A payload whose head repository is null (the fork was deleted) is no safer.
    let mut deleted = env.failing_run(5002, &now());
    deleted["workflow_run"]["head_repository"] = Value::Null;
    let (_, body) = app.deliver("workflow_run", &deleted).await;
    assert_eq!(body["status"], "ignored_untrusted", "{body}");
    // Nor is a run of the repository's workflow started by a fork's pull request.
    let mut target = env.failing_run(5003, &now());
    target["workflow_run"]["event"] = json!("pull_request_target");
    let (_, body) = app.deliver("workflow_run", &target).await;
    assert_eq!(body["status"], "ignored_untrusted", "{body}");
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);

    // The same run from the repository's own branch is healed: the check is not "refuse all".
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(5004, &now()))
        .await;
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(env.admit(&body).await["outcome"], "run_created", "{body}");
}

#[tokio::test]
async fn merge_queue_tag_and_branchless_runs_are_not_healed() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let mut queue = env.failing_run(6001, &now());
    queue["workflow_run"]["event"] = json!("merge_group");
    queue["workflow_run"]["head_branch"] = json!("gh-readonly-queue/master/pr-12-abc");
    let mut queue_branch_only = env.failing_run(6002, &now());
    queue_branch_only["workflow_run"]["head_branch"] = json!("gh-readonly-queue/master/pr-13");
    let mut tag = env.failing_run(6003, &now());
    tag["workflow_run"]["head_branch"] = Value::Null;
    let mut release = env.failing_run(6004, &now());
    release["workflow_run"]["event"] = json!("release");
    release["workflow_run"]["head_branch"] = json!("v1.2.0");
    for (what, payload) in [
        ("merge queue", queue),
        ("merge queue branch", queue_branch_only),
        ("no branch", tag),
        ("release", release),
    ] {
        let (status, body) = app.deliver("workflow_run", &payload).await;
        assert_eq!(status, 202, "{what}: {body}");
        assert_eq!(body["status"], "ignored_untrusted", "{what}: {body}");
    }
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 0);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'ignored_untrusted' AND reason IS NOT NULL")
            .await,
        4
    );
}

#[tokio::test]
async fn a_fork_can_neither_resolve_the_incident_nor_pass_for_the_fix_ci() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7001, &now()))
        .await;
    let body = env.admit(&body).await;
    assert_eq!(body["outcome"], "run_created", "{body}");
    let incident: uuid::Uuid = body["incident_id"].as_str().unwrap().parse().unwrap();
    let run_id = env.run_of(&body).await;

    // A green run of the same branch name in a fork does not close the base incident.
    let mut green = env.green_run(7002, &now());
    green["workflow_run"]["head_repository"]["id"] = json!(FORK_REPO_ID);
    let (_, body) = app.deliver("workflow_run", &green).await;
    assert_eq!(body["status"], "ignored_untrusted", "{body}");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE status = 'open'")
            .await,
        1
    );

    // selfheal's fix branch for this incident exists in the repository; a fork's branch of
    // the same name, green, must not be taken for the fix's CI (which would go on to merge).
    let branch = format!("selfheal/{}-abc1234", &incident.simple().to_string()[..8]);
    env.db()
        .await
        .execute(
            "INSERT INTO deliveries (run_id, incident_id, kind, branch, commit_sha, pr_number)
             VALUES ($1, $2, 'pull_request', $3, 'abc1234', 1)",
            &[&run_id, &incident, &branch],
        )
        .await
        .unwrap();
    let fork_fix = from_fork(env.fix_run(7003, &branch, "abc1234", "success"));
    let (_, body) = app.deliver("workflow_run", &fork_fix).await;
    assert_eq!(body["status"], "ignored_untrusted", "{body}");
    // The repository's own run of that branch is the fix's CI.
    let own_fix = env.fix_run(7004, &branch, "abc1234", "success");
    let (_, body) = app.deliver("workflow_run", &own_fix).await;
    assert_eq!(body["status"], "run_created", "{body}");
    assert_eq!(body["stage"], "verify", "{body}");
    assert_eq!(
        env.count("SELECT count(*) FROM runs WHERE fix_branch IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn concurrent_deliveries_of_one_run_all_succeed_and_make_one_run() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let payload = env.failing_run(8001, &now());
    let ids: Vec<String> = (0..20).map(|i| format!("d-race-{i}")).collect();
    let answers = futures::future::join_all(
        ids.iter()
            .map(|id| app.deliver_as("workflow_run", id, &payload)),
    )
    .await;
    for (status, body) in &answers {
        assert!(
            (200..300).contains(status),
            "every delivery of the run is answered 2xx: {status} {body}"
        );
    }
    // Admitted at once, as workers would: one run, the others find it.
    let admitted = futures::future::join_all(answers.iter().map(|(_, body)| env.admit(body))).await;
    let created = admitted
        .iter()
        .filter(|b| b["outcome"] == "run_created")
        .count();
    assert_eq!(created, 1, "{admitted:?}");
    assert!(
        admitted
            .iter()
            .all(|b| b["run_id"] == admitted[0]["run_id"]),
        "{admitted:?}"
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(
        env.count("SELECT failed_runs::bigint FROM incidents").await,
        1,
        "redeliveries of one run are not further failures"
    );
}

#[tokio::test]
async fn a_replayed_comment_is_one_command() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let comment = env.comment(1, "octocat", "/selfheal stop");
    let (_, first) = app.deliver_as("issue_comment", "d-c1", &comment).await;
    assert_eq!(first["status"], "command_queued", "{first}");
    let (status, replay) = app.deliver_as("issue_comment", "d-c2", &comment).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(replay["status"], "ignored", "{replay}");
    assert!(
        replay["reason"].as_str().unwrap().contains("already"),
        "{replay}"
    );
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 1);
}

#[tokio::test]
async fn an_unknown_event_header_is_no_metric_label() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    for i in 0..3 {
        let (status, _) = app
            .deliver(&format!("made-up-event-{i}"), &json!({"zen": "x"}))
            .await;
        assert_eq!(status, 202);
    }
    let metrics = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("made-up-event"), "{metrics}");
    assert!(metrics.contains("event=\"other\""), "{metrics}");
}

#[tokio::test]
async fn a_tag_that_looks_like_a_branch_gets_nothing_delivered() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    // GitHub sends a tag push's run as `event: push` with the bare tag name as its branch.
    let mut tag = env.failing_run(5101, &now());
    tag["workflow_run"]["event"] = json!("push");
    tag["workflow_run"]["head_branch"] = json!("v1.2.0");
    let (_, body) = app.deliver("workflow_run", &tag).await;
    assert_eq!(
        env.admit(&body).await["outcome"],
        "run_created",
        "ingest cannot tell: {body}"
    );
    let run_id = env.run_of(&body).await;
    env.wait_run(run_id, std::time::Duration::from_secs(90))
        .await;
    let row = env
        .db()
        .await
        .query_one(
            "SELECT verdict, reason FROM verifications WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "skip");
    let reason: String = row.get(1);
    assert!(reason.contains("v1.2.0 is not a branch"), "{reason}");
    let writes: Vec<String> = env
        .standin
        .calls()
        .iter()
        .filter(|c| c.method != "GET")
        .filter(|c| c.path.contains("/git/") || c.path.contains("/pulls"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert!(writes.is_empty(), "nothing pushed: {writes:?}");
}

#[tokio::test]
async fn a_request_waiting_for_a_slot_or_trickling_its_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = TestEnv::new().await;
    env.set("SELFHEAL_MAX_IN_FLIGHT", "1");
    env.set("SELFHEAL_REQUEST_TIMEOUT_SECS", "1");
    let app = env.spawn_web().await;
    // A client takes the only slot and sends its body one byte, then nothing.
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /webhooks/github HTTP/1.1\r\nhost: selfheal\r\ncontent-type: application/json\r\n\
          x-github-event: ping\r\nx-github-delivery: d-slow\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The next request waits for the slot (the trickler holds it until its own timeout), and
    // is answered within its timeout all the same: queueing for a slot counts.
    let started = std::time::Instant::now();
    let (status, body) = app.deliver("ping", &json!({"zen": "x"})).await;
    let waited = started.elapsed();
    assert!(status == 200 || status == 408, "{status} {body}");
    assert!(
        waited > std::time::Duration::from_millis(500),
        "it waited for the only slot: {waited:?}"
    );
    assert!(
        waited < std::time::Duration::from_millis(2500),
        "{waited:?}"
    );
    // The trickling client gets its 408 too, instead of holding the slot for ever.
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // With the slot free again, deliveries are handled.
    let (status, _) = app.deliver("ping", &json!({"zen": "x"})).await;
    assert_eq!(status, 200);
}
