//! `installation` and `installation_repositories` events keep the installations and
//! repositories tables current. A repository whose installation is gone (deleted, suspended,
//! or the repository removed from it) is never acted on again.

use deadpool_postgres::{GenericClient, Transaction};
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::Row;

use crate::audit;
use crate::events::{parse_payload, PayloadError, WorkflowRunEvent};

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
            &client
                .prepare_cached(
                    "INSERT INTO installations (id, account_login) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET account_login = EXCLUDED.account_login",
                )
                .await?,
            &[&id, login],
        )
        .await?;
    let outcome = match (event, ev.action.as_str()) {
        ("installation", "created")
        | ("installation", "unsuspend")
        | ("installation", "new_permissions_accepted") => {
            client
                .execute(
                    &client.prepare_cached("UPDATE installations SET deleted_at = NULL, suspended_at = NULL WHERE id = $1").await?,
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
                    &client
                        .prepare_cached("UPDATE installations SET deleted_at = now() WHERE id = $1")
                        .await?,
                    &[&id],
                )
                .await?;
            client
                .execute(&client.prepare_cached("UPDATE repositories SET removed_at = now() WHERE installation_id = $1 AND removed_at IS NULL").await?, &[&id])
                .await?;
            "installation_deleted"
        }
        ("installation", "suspend") => {
            client
                .execute(
                    &client
                        .prepare_cached(
                            "UPDATE installations SET suspended_at = now() WHERE id = $1",
                        )
                        .await?,
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
                        &client
                            .prepare_cached(
                                "UPDATE repositories SET removed_at = now() WHERE id = $1",
                            )
                            .await?,
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
            &client
                .prepare_cached(
                    "INSERT INTO repositories (id, installation_id, full_name, seen_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (id) DO UPDATE SET installation_id = EXCLUDED.installation_id,
               full_name = EXCLUDED.full_name, removed_at = NULL, seen_at = now()",
                )
                .await?,
            &[&r.id, &installation_id, &r.full_name],
        )
        .await?;
    Ok(())
}

/// Why a repository must not be acted on (uninstalled, suspended, removed): see `inactive`.
pub(crate) const INACTIVE: &str =
    "SELECT r.removed_at IS NOT NULL, i.deleted_at IS NOT NULL, i.suspended_at IS NOT NULL
     FROM repositories r JOIN installations i ON i.id = r.installation_id WHERE r.id = $1";
/// What selfheal knows of a failed run's installation ($1) and repository ($2): see `known`.
pub(crate) const KNOWN: &str = "SELECT i.account_login, r.installation_id, r.full_name
     FROM installations i LEFT JOIN repositories r ON r.id = $2
     WHERE i.id = $1";
pub(crate) const ADD_INSTALLATION: &str = "INSERT INTO installations (id, account_login) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET account_login = coalesce(EXCLUDED.account_login, installations.account_login)";
/// The repository as delivery `$4` names it, unless a delivery received later already did: a
/// failed run is admitted after it was received, and an old name must not undo a new one.
pub(crate) const ADD_REPOSITORY: &str = "INSERT INTO repositories (id, installation_id, full_name, seen_at)
     VALUES ($1, $2, $3, coalesce((SELECT received_at FROM webhook_deliveries WHERE delivery_id = $4), now()))
     ON CONFLICT (id) DO UPDATE SET installation_id = EXCLUDED.installation_id, full_name = EXCLUDED.full_name,
       seen_at = EXCLUDED.seen_at
     WHERE repositories.seen_at IS NULL OR repositories.seen_at <= EXCLUDED.seen_at";

/// Why selfheal must not act on this repository, if it must not.
pub async fn inactive_reason(
    client: &impl GenericClient,
    repository_id: i64,
) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_opt(&client.prepare_cached(INACTIVE).await?, &[&repository_id])
        .await?;
    Ok(inactive(row.as_ref()))
}

/// `INACTIVE`'s answer, read.
pub(crate) fn inactive(row: Option<&Row>) -> Option<String> {
    let r = row?;
    if r.get::<_, bool>(1) {
        Some("the GitHub App was uninstalled".to_string())
    } else if r.get::<_, bool>(2) {
        Some("the GitHub App installation is suspended".to_string())
    } else if r.get::<_, bool>(0) {
        Some("the repository was removed from the GitHub App installation".to_string())
    } else {
        None
    }
}

/// The installation account's login a failed run names.
pub(crate) fn login(ev: &WorkflowRunEvent) -> Option<&str> {
    ev.installation
        .as_ref()
        .and_then(|i| i.account.as_ref())
        .map(|a| a.login.as_str())
}

/// From `KNOWN`'s answer: whether the installation, and the repository, are kept as the run
/// names them. Written only when they would change: an upsert locks the row until commit, and
/// every failure of an installation's repositories would otherwise queue on that one row.
pub(crate) fn known(
    row: Option<&Row>,
    ev: &WorkflowRunEvent,
    installation_id: i64,
) -> (bool, bool) {
    match row {
        None => (false, false),
        Some(row) => (
            login(ev).is_none() || row.get::<_, Option<&str>>(0) == login(ev),
            row.get::<_, Option<i64>>(1) == Some(installation_id)
                && row.get::<_, Option<&str>>(2) == Some(ev.repository.full_name.as_str()),
        ),
    }
}

/// The installation and repository a failed run names, as selfheal keeps them.
pub(crate) async fn upsert_repository(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &WorkflowRunEvent,
    installation_id: i64,
) -> Result<(), tokio_postgres::Error> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(KNOWN).await?,
            &[&installation_id, &ev.repository.id],
        )
        .await?;
    let (installation_known, repository_known) = known(row.as_ref(), ev, installation_id);
    if !installation_known {
        tx.execute(
            &tx.prepare_cached(ADD_INSTALLATION).await?,
            &[&installation_id, &login(ev)],
        )
        .await?;
    }
    if !repository_known {
        tx.execute(
            &tx.prepare_cached(ADD_REPOSITORY).await?,
            &[
                &ev.repository.id,
                &installation_id,
                &ev.repository.full_name,
                &delivery_id,
            ],
        )
        .await?;
    }
    Ok(())
}
