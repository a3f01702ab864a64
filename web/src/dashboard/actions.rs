//! An operator's retry, stop or approve on a run's incident: stored as a command (with its
//! outbox row and an audit row, in one transaction) for a worker to carry out exactly as it
//! carries out `/selfheal` comments, whose checks (dry run, the fix's head and checks,
//! protected paths) apply unchanged. The outcome is on the command row and in the audit log.
//! An approval names the fix commit the operator saw (`head`, as the run page's form sends it):
//! the worker merges that commit or nothing.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use selfheal_shared::audit;
use selfheal_shared::job::CommandJob;
use selfheal_shared::outbox;
use serde_json::json;
use uuid::Uuid;

use crate::access::Principal;
use crate::error::PgError;
use crate::AppState;

pub async fn retry(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
) -> Response {
    request(state, me, id, "retry", None).await
}

pub async fn stop(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
) -> Response {
    request(state, me, id, "stop", None).await
}

#[derive(serde::Deserialize)]
pub struct Approval {
    head: Option<String>,
}

pub async fn approve(
    state: State<AppState>,
    me: axum::Extension<Principal>,
    id: Path<String>,
    form: Result<Form<Approval>, FormRejection>,
) -> Response {
    // No form at all reads as no head: the run's existence is answered first, then the head.
    let head = form.ok().and_then(|Form(a)| a.head).unwrap_or_default();
    request(state, me, id, "approve", Some(head)).await
}

/// A full commit id as GitHub writes it (SHA-1, or SHA-256 for repositories that use it).
fn is_commit_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn request(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Principal>,
    Path(id): Path<String>,
    command: &'static str,
    approved_head: Option<String>,
) -> Response {
    let Ok(run) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such run\n").into_response();
    };
    match store(&state, &me, run, command, approved_head.as_deref()).await {
        Ok(Stored::Queued(command_id, outbox_id)) => {
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
        Ok(Stored::NoRun) => (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        Ok(Stored::NoHead) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "an approval names the fix commit you reviewed: send head=<its full commit id>, as the run page's form does; nothing was stored\n",
        )
            .into_response(),
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

enum Stored {
    /// The command's id and its outbox row's.
    Queued(i64, i64),
    NoRun,
    /// An approval without a well-formed commit id.
    NoHead,
}

/// The command, its outbox row and the audit row.
async fn store(
    state: &AppState,
    me: &Principal,
    run: Uuid,
    command: &str,
    approved_head: Option<&str>,
) -> Result<Stored, PgError> {
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
        return Ok(Stored::NoRun);
    };
    if approved_head.is_some_and(|h| !is_commit_id(h)) {
        return Ok(Stored::NoHead);
    }
    let incident: Uuid = row.get(0);
    let repository: String = row.get(3);
    let pr: Option<i32> = row.get(4);
    let command_id: i64 = tx
        .query_one(
            "INSERT INTO commands (source, role, installation_id, repository_id, repository_full_name,
                                   issue_number, actor, command, incident_id, approved_head)
             VALUES ('dashboard', $1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &me.role.as_str(),
                &row.get::<_, i64>(1),
                &row.get::<_, i64>(2),
                &repository,
                &pr,
                &me.actor,
                &command,
                &incident,
                &approved_head,
            ],
        )
        .await?
        .get(0);
    let outbox_id = outbox::insert_command(&tx, command_id).await?;
    let mut detail = json!({"command": command, "via": "dashboard", "name": me.name,
                            "role": me.role.as_str(), "run": run, "incident": incident,
                            "repository": repository});
    if let Some(head) = approved_head {
        detail["head"] = json!(head);
    }
    audit::append(
        &tx,
        &me.actor,
        "command.received",
        &format!("command:{command_id}"),
        &detail,
    )
    .await?;
    tx.commit().await?;
    Ok(Stored::Queued(command_id, outbox_id))
}
