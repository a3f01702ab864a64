//! `/selfheal` commands in a pull request comment, as ingest stores them: a command row and
//! its outbox row, in the delivery's transaction, for a worker to carry out.

use deadpool_postgres::Transaction;
use serde_json::json;

use crate::events::{CommandRequest, IssueCommentEvent};
use crate::incidents::Ingested;
use crate::{audit, installations, outbox};

/// Stores a `/selfheal` command for a worker: whether the actor may give it is GitHub's to
/// say (collaborator permission), which is a network call that does not belong in ingest.
pub(crate) async fn stored(
    tx: &Transaction<'_>,
    delivery_id: &str,
    ev: &IssueCommentEvent,
) -> Result<Ingested, tokio_postgres::Error> {
    let command = match ev.command() {
        None => return Ok(Ingested::Stored),
        Some(CommandRequest::Unknown(word)) => {
            return Ok(Ingested::Ignored {
                reason: format!(
                    "unknown command /selfheal {word} (known: {})",
                    crate::events::COMMANDS.join(", ")
                ),
            })
        }
        Some(CommandRequest::Command(c)) => c,
    };
    let Some(installation) = &ev.installation else {
        return Ok(Ingested::Ignored {
            reason: "a command outside a GitHub App installation".into(),
        });
    };
    if let Some(reason) = installations::inactive_reason(tx, ev.repository.id).await? {
        return Ok(Ingested::Ignored { reason });
    }
    let row = tx
        .query_opt(
            &tx.prepare_cached("INSERT INTO commands (delivery_id, installation_id, repository_id, repository_full_name,
                                   issue_number, comment_id, actor, command, comment_created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (comment_id) DO NOTHING RETURNING id").await?,
            &[
                &delivery_id,
                &installation.id,
                &ev.repository.id,
                &ev.repository.full_name,
                &ev.issue.number,
                &ev.comment.id,
                &ev.comment.user.login,
                &command,
                &ev.comment.created_at,
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Ingested::Ignored {
            reason: format!(
                "comment {} was already taken as a command (a replayed delivery)",
                ev.comment.id
            ),
        });
    };
    let command_id: i64 = row.get(0);
    let outbox_id = outbox::insert_command(tx, command_id).await?;
    audit::append(
        tx,
        &format!("github:{}", ev.comment.user.login),
        "command.received",
        &format!("command:{command_id}"),
        &json!({"command": command, "repository": ev.repository.full_name,
                "issue": ev.issue.number, "comment": ev.comment.id}),
    )
    .await?;
    Ok(Ingested::CommandQueued {
        command_id,
        outbox_id,
        command,
    })
}
