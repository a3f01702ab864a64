//! The missed-delivery sweeper asks GitHub to redeliver what failed and Postgres never saw.

use crate::support;

use selfheal_shared::config::Role;
use selfheal_shared::db;
use selfheal_shared::github::GitHubApp;
use selfheal_worker::redeliver::sweep_once;
use support::*;

// In octocrab's recorded delivery list, this one failed with a 503; the other got a 200.
const MISSED: &str = "180a8f00-4a7c-11ef-8350-d1961bccd09f";

#[tokio::test]
async fn the_sweeper_redelivers_a_missed_delivery_once() {
    let env = TestEnv::new().await;
    let _app = env.spawn_web().await; // migrates the fresh database
    let config = env.config(Role::Worker);
    let pool = db::pool(config.database_url(), 2).unwrap();
    db::migrate(&pool).await.unwrap();
    let github = GitHubApp::new(&config.github).unwrap();

    assert_eq!(
        sweep_once(&pool, &github).await.unwrap(),
        vec![MISSED.to_string()]
    );
    let attempts: Vec<_> = env
        .standin
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/attempts"))
        .map(|c| (c.method, c.path, c.auth))
        .collect();
    assert_eq!(
        attempts,
        vec![(
            "POST".into(),
            "/app/hook/deliveries/93676014012/attempts".into(),
            "app-jwt".into()
        )]
    );
    // Asked once: the next round leaves it to GitHub.
    assert!(sweep_once(&pool, &github).await.unwrap().is_empty());
    assert_eq!(
        env.count("SELECT count(*) FROM redelivery_requests").await,
        1
    );
}

#[tokio::test]
async fn a_delivery_postgres_has_is_not_redelivered() {
    let env = TestEnv::new().await;
    let app = env.spawn_web().await;
    // The "failed" delivery did reach us after all (GitHub timed out waiting for the answer).
    let ping = env
        .fixtures
        .json("github-webhooks/ping/payload.json")
        .unwrap();
    let (status, _) = app.deliver_as("ping", MISSED, &ping).await;
    assert_eq!(status, 200);
    let config = env.config(Role::Worker);
    let pool = db::pool(config.database_url(), 2).unwrap();
    let github = GitHubApp::new(&config.github).unwrap();
    assert!(sweep_once(&pool, &github).await.unwrap().is_empty());
    assert!(!env
        .standin
        .calls()
        .iter()
        .any(|c| c.path.ends_with("/attempts")));
}
