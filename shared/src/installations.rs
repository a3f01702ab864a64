//! `installation` and `installation_repositories` events keep the installations and
//! repositories tables current. A repository whose installation is gone (deleted, suspended,
//! or the repository removed from it) is never acted on again.

use deadpool_postgres::GenericClient;
use serde::Deserialize;
use serde_json::json;

use crate::audit;
use crate::events::{parse_payload, PayloadError};

#[derive(Debug, Deserialize)]
pub struct InstallationEvent {
    pub action: String,
    pub installation: Installation,
    #[serde(default)]
    pub repositories: Option<Vec<Repo>>,
    #[serde(default)]
    pub repositories_added: Vec<Repo>,
    #[serde(default)]
    pub repositories_removed: Vec<Repo>,
}

#[derive(Debug, Deserialize)]
pub struct Installation {
    pub id: i64,
    pub account: Account,
}

#[derive(Debug, Deserialize)]
pub struct Account {
    pub login: String,
}

#[derive(Debug, Deserialize)]
pub struct Repo {
    pub id: i64,
    pub full_name: String,
}

impl InstallationEvent {
    pub fn parse(event: &str, body: &[u8]) -> Result<Self, PayloadError> {
        parse_payload(event, body)
    }
}

/// Applies the event; returns what changed, for the delivery's outcome.
pub async fn apply(
    client: &impl GenericClient,
    event: &str,
    ev: &InstallationEvent,
) -> Result<&'static str, tokio_postgres::Error> {
    let id = ev.installation.id;
    let login = &ev.installation.account.login;
    client
        .execute(
            "INSERT INTO installations (id, account_login) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET account_login = EXCLUDED.account_login",
            &[&id, login],
        )
        .await?;
    let outcome = match (event, ev.action.as_str()) {
        ("installation", "created")
        | ("installation", "unsuspend")
        | ("installation", "new_permissions_accepted") => {
            client
                .execute(
                    "UPDATE installations SET deleted_at = NULL, suspended_at = NULL WHERE id = $1",
                    &[&id],
                )
                .await?;
            for r in ev.repositories.iter().flatten() {
                add_repository(client, id, r).await?;
            }
            "installation_active"
        }
        ("installation", "deleted") => {
            client
                .execute(
                    "UPDATE installations SET deleted_at = now() WHERE id = $1",
                    &[&id],
                )
                .await?;
            client
                .execute("UPDATE repositories SET removed_at = now() WHERE installation_id = $1 AND removed_at IS NULL", &[&id])
                .await?;
            "installation_deleted"
        }
        ("installation", "suspend") => {
            client
                .execute(
                    "UPDATE installations SET suspended_at = now() WHERE id = $1",
                    &[&id],
                )
                .await?;
            "installation_suspended"
        }
        ("installation_repositories", _) => {
            for r in &ev.repositories_added {
                add_repository(client, id, r).await?;
            }
            for r in &ev.repositories_removed {
                client
                    .execute(
                        "UPDATE repositories SET removed_at = now() WHERE id = $1",
                        &[&r.id],
                    )
                    .await?;
            }
            "repositories_updated"
        }
        _ => "stored",
    };
    audit::append(
        client,
        "github:webhook",
        &format!("{event}.{}", ev.action),
        &id.to_string(),
        &json!({
            "account": login,
            "added": ev.repositories_added.iter().chain(ev.repositories.iter().flatten()).map(|r| &r.full_name).collect::<Vec<_>>(),
            "removed": ev.repositories_removed.iter().map(|r| &r.full_name).collect::<Vec<_>>(),
        }),
    )
    .await?;
    Ok(outcome)
}

async fn add_repository(
    client: &impl GenericClient,
    installation_id: i64,
    r: &Repo,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO repositories (id, installation_id, full_name) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET installation_id = EXCLUDED.installation_id,
               full_name = EXCLUDED.full_name, removed_at = NULL",
            &[&r.id, &installation_id, &r.full_name],
        )
        .await?;
    Ok(())
}

/// Why selfheal must not act on this repository, if it must not.
pub async fn inactive_reason(
    client: &impl GenericClient,
    repository_id: i64,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT r.removed_at IS NOT NULL, i.deleted_at IS NOT NULL, i.suspended_at IS NOT NULL
             FROM repositories r JOIN installations i ON i.id = r.installation_id WHERE r.id = $1",
            &[&repository_id],
        )
        .await?;
    Ok(row.and_then(|r| {
        if r.get::<_, bool>(1) {
            Some("the GitHub App was uninstalled".to_string())
        } else if r.get::<_, bool>(2) {
            Some("the GitHub App installation is suspended".to_string())
        } else if r.get::<_, bool>(0) {
            Some("the repository was removed from the GitHub App installation".to_string())
        } else {
            None
        }
    }))
}
