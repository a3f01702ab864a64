//! Missed-delivery sweeper. GitHub does not retry a webhook delivery that failed (our server
//! down, a 5xx, a timeout): periodically list the app's recent deliveries and ask GitHub to
//! redeliver each failed one that Postgres has not seen, once.

use std::time::Duration;

use deadpool_postgres::Pool;
use selfheal_shared::github::GitHubApp;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct HookDelivery {
    id: i64,
    guid: String,
    status_code: i32,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("GitHub: {0}")]
    GitHub(#[from] octocrab::Error),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// One pass. Returns the guids it asked GitHub to redeliver.
pub async fn sweep_once(pool: &Pool, github: &GitHubApp) -> Result<Vec<String>, SweepError> {
    let client = pool.get().await?;
    // One replica sweeps at a time; the others skip this round.
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock(7261836374)", &[])
        .await?
        .get(0);
    if !locked {
        return Ok(Vec::new());
    }
    let result = sweep_locked(&client, github).await;
    client
        .execute("SELECT pg_advisory_unlock(7261836374)", &[])
        .await?;
    result
}

async fn sweep_locked(
    client: &deadpool_postgres::Client,
    github: &GitHubApp,
) -> Result<Vec<String>, SweepError> {
    let deliveries: Vec<HookDelivery> = github
        .app()
        .get("/app/hook/deliveries", Some(&[("per_page", "100")]))
        .await?;
    let ok = |d: &HookDelivery| (200..300).contains(&d.status_code);
    let mut requested = Vec::new();
    for d in deliveries.iter().filter(|d| !ok(d)) {
        // A later attempt of the same delivery got through: nothing missed.
        if deliveries
            .iter()
            .any(|other| other.guid == d.guid && ok(other))
        {
            continue;
        }
        let seen = client
            .query_opt(
                "SELECT 1 FROM webhook_deliveries WHERE delivery_id = $1
                 UNION ALL SELECT 1 FROM redelivery_requests WHERE guid = $1",
                &[&d.guid],
            )
            .await?;
        if seen.is_some() {
            continue;
        }
        let _: serde_json::Value = github
            .app()
            .post(
                format!("/app/hook/deliveries/{}/attempts", d.id),
                None::<&()>,
            )
            .await?;
        client
            .execute(
                "INSERT INTO redelivery_requests (guid, hook_delivery, event, status_code) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (guid) DO NOTHING",
                &[&d.guid, &d.id, &d.event, &d.status_code],
            )
            .await?;
        tracing::info!(guid = %d.guid, event = ?d.event, status = d.status_code, "asked GitHub to redeliver a missed delivery");
        requested.push(d.guid.clone());
    }
    Ok(requested)
}

pub async fn sweep_forever(pool: Pool, github: std::sync::Arc<GitHubApp>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = sweep_once(&pool, &github).await {
            tracing::warn!(error = %selfheal_shared::cause::Chain(&e), "missed-delivery sweep failed; next round will retry");
        }
    }
}
