//! Sessions as Postgres knows them: every sign-in opens one (with its audit row, in one
//! transaction), every request with a session cookie checks it is still open, and signing out
//! or an admin ends it. The cookie alone is not enough: a copied one is worth nothing once its
//! session has ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use selfheal_shared::audit;
use serde_json::json;
use uuid::Uuid;

use super::Principal;
use crate::error::PgError;

/// Opens a session for `p` signed in `via` (`oidc`, `token`) and records the sign-in.
pub async fn open(
    pool: &Pool,
    p: &Principal,
    via: &str,
    lifetime: Duration,
) -> Result<Uuid, PgError> {
    let id = Uuid::new_v4();
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO dashboard_sessions (id, actor, name, role, via, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        &[
            &id,
            &p.actor,
            &p.name,
            &p.role.as_str(),
            &via,
            &(lifetime.as_secs() as f64),
        ],
    )
    .await?;
    audit::append(
        &tx,
        &p.actor,
        "dashboard.login",
        "dashboard",
        &json!({"outcome": "signed_in", "role": p.role.as_str(), "name": p.name, "via": via,
                "session": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Whether the session is open: not ended, not expired.
pub async fn is_open(pool: &Pool, id: Uuid) -> Result<bool, PgError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT 1 FROM dashboard_sessions WHERE id = $1 AND ended_at IS NULL AND expires_at > now()",
            &[&id],
        )
        .await?
        .is_some())
}

/// Ends the session, by its owner signing out or by an admin, with its audit row; false when
/// it was not open.
pub async fn end(pool: &Pool, id: Uuid, by: &str, action: &str) -> Result<bool, PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "UPDATE dashboard_sessions SET ended_at = now(), ended_by = $2
             WHERE id = $1 AND ended_at IS NULL AND expires_at > now() RETURNING actor",
            &[&id, &by],
        )
        .await?
    else {
        return Ok(false);
    };
    let owner: String = row.get(0);
    audit::append(
        &tx,
        by,
        action,
        &format!("session:{id}"),
        &json!({"of": owner}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// An open session, as an admin sees it.
pub struct OpenSession {
    pub id: Uuid,
    pub actor: String,
    pub name: String,
    pub role: String,
    pub via: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Every open session, newest first.
pub async fn list_open(pool: &Pool) -> Result<Vec<OpenSession>, PgError> {
    let client = pool.get().await?;
    Ok(client
        .query(
            "SELECT id, actor, name, role, via, created_at, expires_at FROM dashboard_sessions
             WHERE ended_at IS NULL AND expires_at > now() ORDER BY created_at DESC LIMIT 500",
            &[],
        )
        .await?
        .iter()
        .map(|r| OpenSession {
            id: r.get(0),
            actor: r.get(1),
            name: r.get(2),
            role: r.get(3),
            via: r.get(4),
            created_at: r.get(5),
            expires_at: r.get(6),
        })
        .collect())
}
