//! `installation` and `installation_repositories` events keep the tables current; an
//! uninstalled repository is never acted on again.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn installation_events_keep_the_tables_current() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let created = env
        .fixtures
        .json("github-webhooks/installation/created.payload.json")
        .unwrap();
    let (status, body) = app.deliver("installation", &created).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("installation_active"))
    );
    let db = env.db().await;
    let row = db
        .query_one(
            "SELECT account_login FROM installations WHERE id = 957387",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Codertocat");
    assert_eq!(env.count("SELECT count(*) FROM repositories WHERE installation_id = 957387 AND removed_at IS NULL").await, 1);

    let added = env
        .fixtures
        .json("github-webhooks/installation_repositories/added.payload.json")
        .unwrap();
    let (status, _) = app.deliver("installation_repositories", &added).await;
    assert_eq!(status, 202);
    assert_eq!(env.count("SELECT count(*) FROM repositories WHERE installation_id = 957387 AND removed_at IS NULL").await, 2);

    // The recorded removal is for another installation (2, octocat/Hello-World): adapted here
    // to remove Codertocat/Space from 957387.
    let mut removed = env
        .fixtures
        .json("github-webhooks/installation_repositories/removed.payload.json")
        .unwrap();
    removed["installation"]["id"] = Value::from(957387);
    removed["installation"]["account"]["login"] = Value::from("Codertocat");
    removed["repositories_removed"][0]["id"] = Value::from(186853007);
    removed["repositories_removed"][0]["full_name"] = Value::from("Codertocat/Space");
    let (status, _) = app.deliver("installation_repositories", &removed).await;
    assert_eq!(status, 202);
    assert_eq!(
        env.count(
            "SELECT count(*) FROM repositories WHERE id = 186853007 AND removed_at IS NOT NULL"
        )
        .await,
        1
    );

    let mut suspend = env
        .fixtures
        .json("github-webhooks/installation/suspend.payload.json")
        .unwrap();
    suspend["installation"]["id"] = Value::from(957387);
    let (status, body) = app.deliver("installation", &suspend).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("installation_suspended"))
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM installations WHERE id = 957387 AND suspended_at IS NOT NULL"
        )
        .await,
        1
    );
    assert!(
        env.count("SELECT count(*) FROM audit_log WHERE action LIKE 'installation%'")
            .await
            >= 4
    );
}

/// The recorded `installation.deleted` payload, adapted to the installation the failing
/// run fixtures use (4242).
fn uninstall(env: &TestEnv) -> Value {
    let mut deleted = env
        .fixtures
        .json("github-webhooks/installation/deleted.payload.json")
        .unwrap();
    deleted["installation"]["id"] = Value::from(INSTALLATION_ID);
    deleted
}

#[tokio::test]
async fn an_uninstalled_repository_is_never_acted_on_again() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(5101, &now()))
        .await;
    assert_eq!(status, 202);
    assert_eq!(env.admit(&body).await["outcome"], "run_created");
    let (status, body) = app.deliver("installation", &uninstall(&env)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("installation_deleted"))
    );
    // A later failure (a late or manual redelivery) is stored, not acted on.
    let (status, body) = app
        .deliver("workflow_run", &env.failing_run(5102, &now()))
        .await;
    assert_eq!(status, 202);
    let body = env.admit(&body).await;
    assert_eq!(body["outcome"], "ignored_inactive", "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("uninstalled"),
        "{body}"
    );
    assert_eq!(env.count("SELECT count(*) FROM runs").await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM webhook_deliveries WHERE outcome = 'ignored_inactive'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_run_queued_before_the_uninstall_stops_without_calling_github() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(5201, &now()))
        .await;
    let run_id = env.run_of(&body).await;
    let (status, _) = app.deliver("installation", &uninstall(&env)).await;
    assert_eq!(status, 202);
    let _worker = env.spawn_worker("w");
    assert_eq!(
        env.wait_run(run_id, Duration::from_secs(30)).await,
        "failed"
    );
    let reason: String = env
        .db()
        .await
        .query_one("SELECT failure_reason FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, "not acted on: the GitHub App was uninstalled");
    assert!(
        env.standin.calls().is_empty(),
        "no call to GitHub: {:?}",
        env.standin.calls()
    );
    assert_eq!(env.count("SELECT count(*) FROM stage_attempts").await, 0);
}
