//! An operator's retry, stop or approve on a run's incident: stored as a command (with its
//! outbox row and an audit row, in one transaction) for a worker to carry out exactly as it
//! carries out `/selfheal` comments, whose checks (dry run, the fix's head and checks,
//! protected paths) apply unchanged. The outcome is on the command row and in the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use selfheal_shared::audit;
use selfheal_shared::job::CommandJob;
use selfheal_shared::outbox;
use serde_json::json;
use uuid::Uuid;

use crate::access::Principal;
use crate::AppState;

pub async fn retry(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
) -> Response {
    request(state, me, id, "retry").await
}

pub async fn stop(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
) -> Response {
    request(state, me, id, "stop").await
}

pub async fn approve(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
) -> Response {
    request(state, me, id, "approve").await
}

async fn request(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Principal>,
    Path(id): Path<String>,
    command: &'static str,
) -> Response {
    let Ok(run) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    };
    match store(&state, &me, run, command).await {
        Ok(Some((command_id, outbox_id))) => {
            let queued =
                crate::webhook::enqueue(&state, outbox_id, CommandJob { command_id }.into()).await;
            tracing::info!(actor = %me.actor, command, command_id, %run, queued, "operator command queued");
            if me.bearer {
                (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"status": "command_queued", "command_id": command_id, "command": command})),
                )
                    .into_response()
            } else {
                Redirect::to(&format!("/dashboard/runs/{run}")).into_response()
            }
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Err(e) => {
            tracing::error!(error = %selfheal_shared::cause::Chain(&e), command, "cannot store an operator's command");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Postgres cannot take the command now; nothing was done\n",
            )
                .into_response()
        }
    }
}

/// The command, its outbox row and the audit row, or `None` for a run that does not exist.
async fn store(
    state: &AppState,
    me: &Principal,
    run: Uuid,
    command: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT r.incident_id, r.installation_id, i.repository_id, r.repository_full_name,
                    (SELECT d.pr_number FROM deliveries d
                      WHERE d.incident_id = r.incident_id AND d.kind = 'pull_request')
             FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = $1",
            &[&run],
        )
        .await?
    else {
        return Ok(None);
    };
    let incident: Uuid = row.get(0);
    let repository: String = row.get(3);
    let pr: Option<i32> = row.get(4);
    let command_id: i64 = tx
        .query_one(
            "INSERT INTO commands (source, role, installation_id, repository_id, repository_full_name,
                                   issue_number, actor, command, incident_id)
             VALUES ('dashboard', $1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                &me.role.as_str(),
                &row.get::<_, i64>(1),
                &row.get::<_, i64>(2),
                &repository,
                &pr,
                &me.actor,
                &command,
                &incident,
            ],
        )
        .await?
        .get(0);
    let outbox_id = outbox::insert_command(&tx, command_id).await?;
    audit::append(
        &tx,
        &me.actor,
        "command.received",
        &format!("command:{command_id}"),
        &json!({"command": command, "via": "dashboard", "name": me.name, "role": me.role.as_str(),
                "run": run, "incident": incident, "repository": repository}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some((command_id, outbox_id)))
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
}
