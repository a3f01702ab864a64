//! `POST /webhooks/github`: verify, persist (the delivery and the outbox row of what it calls
//! for, in one transaction), then try to enqueue. Answers well inside GitHub's 10 s. A failed
//! run is only stored and queued for a worker to admit (`failed_run`): the answer does not
//! wait for its incident and run.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use selfheal_shared::envelope::Envelope;
use selfheal_shared::events::{
    CheckRunEvent, CheckSuiteEvent, IssueCommentEvent, PullRequestEvent, RunVerdict, StatusEvent,
    WorkflowRunEvent,
};
use selfheal_shared::incidents::{self, Delivery, Ingested, Parsed};
use selfheal_shared::installations::InstallationEvent;
use selfheal_shared::job::{AdmitJob, CommandJob, Job};
use selfheal_shared::outbox;
use selfheal_shared::stage::StageJob;
use serde_json::json;
use sha2::Sha256;
use tracing::Instrument;

use crate::{ApiError, AppState};

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let answered = async {
        verify_signature(&state.secrets, &headers, &body)?;
        let event = header(&headers, "x-github-event")?;
        let delivery_id = header(&headers, "x-github-delivery")?;
        let span = tracing::info_span!("webhook", %event, delivery = %delivery_id);
        // Instrumented, never entered with a guard held across `.await`: a guard left entered
        // while the task yields makes every request the thread polls meanwhile open its span
        // inside this one, one level deeper each time, until formatting a log line overflowed
        // the stack under load (tests/suite/ingest_spans.rs).
        ingest(&state, event, delivery_id, &body)
            .instrument(span)
            .await
    }
    .await;
    // The header only names a label here (bounded by `Metrics::delivery`): a refused delivery
    // is counted under the event it claims.
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(e) = &answered {
        state.metrics.delivery(event, e.outcome());
    }
    state.metrics.ingest_took(event, started.elapsed());
    answered
}

async fn ingest(
    state: &AppState,
    event: &str,
    delivery_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let envelope = Envelope::parse(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The envelope skips what it does not read by syntax alone: the bytes are checked here,
    // and Postgres checks the rest as it stores the body (a lone surrogate, a number beyond
    // its range: 400s, error.rs).
    let payload = std::str::from_utf8(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: not UTF-8: {e}")))?;
    let bad = |e: selfheal_shared::events::PayloadError| ApiError::BadRequest(e.to_string());
    let parsed = match event {
        "workflow_run" => {
            let ev = WorkflowRunEvent::parse(body).map_err(bad)?;
            if ev.verdict() == RunVerdict::Failed && ev.installation.is_none() {
                return Err(ApiError::BadRequest(
                    "invalid workflow_run payload: installation.id is missing (is this a GitHub App delivery?)".into(),
                ));
            }
            Parsed::WorkflowRun(ev)
        }
        "installation" | "installation_repositories" => {
            Parsed::Installation(InstallationEvent::parse(event, body).map_err(bad)?)
        }
        "issue_comment" => Parsed::Comment(IssueCommentEvent::parse(body).map_err(bad)?),
        "pull_request" => Parsed::PullRequest(PullRequestEvent::parse(body).map_err(bad)?),
        "check_suite" => Parsed::CheckSuite(CheckSuiteEvent::parse(body).map_err(bad)?),
        "check_run" => Parsed::CheckRun(CheckRunEvent::parse(body).map_err(bad)?),
        "status" => Parsed::Status(StatusEvent::parse(body).map_err(bad)?),
        _ => Parsed::Other,
    };

    let delivery = Delivery {
        id: delivery_id,
        event,
        payload,
        envelope: &envelope,
    };
    let ingested = if incidents::only_accepted(&parsed, &state.gates) {
        state
            .accepts
            .accept(&delivery, state.gates.runs_per_hour)
            .await?
    } else {
        incidents::ingest(state.pool.get().await?, &delivery, &parsed, &state.gates).await?
    };

    let (status, body) = match &ingested {
        Ingested::Duplicate => (StatusCode::OK, json!({"status": "duplicate"})),
        Ingested::Stored if event == "ping" => (StatusCode::OK, json!({"status": "pong"})),
        Ingested::Stored => (StatusCode::ACCEPTED, json!({"status": "stored"})),
        Ingested::Accepted { outbox_id } => {
            let job = AdmitJob {
                delivery_id: delivery_id.to_string(),
                traceparent: selfheal_shared::trace_context::current(),
            };
            let queued = enqueue(state, *outbox_id, job.into()).await;
            (
                StatusCode::ACCEPTED,
                json!({"status": "accepted", "delivery": delivery_id, "queued": queued}),
            )
        }
        Ingested::Installation { outcome } => (StatusCode::ACCEPTED, json!({"status": outcome})),
        Ingested::Ignored { reason } => (
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "reason": reason}),
        ),
        Ingested::Untrusted { reason } => (
            StatusCode::ACCEPTED,
            json!({"status": "ignored_untrusted", "reason": reason}),
        ),
        Ingested::RunExists { run_id } => (
            StatusCode::OK,
            json!({"status": "run_exists", "run_id": run_id}),
        ),
        Ingested::FixClosed {
            incident_id,
            merged,
        } => (
            StatusCode::ACCEPTED,
            json!({"status": if *merged { "fix_merged" } else { "fix_closed" }, "incident_id": incident_id}),
        ),
        Ingested::FixReverted { incident_id } => (
            StatusCode::ACCEPTED,
            json!({"status": "fix_reverted", "incident_id": incident_id}),
        ),
        Ingested::Resolved { incident_id } => (
            StatusCode::ACCEPTED,
            json!({"status": "incident_resolved", "incident_id": incident_id}),
        ),
        Ingested::RunCreated {
            run_id,
            incident_id,
            outbox_id,
            stage,
        } => {
            let job = StageJob {
                run_id: *run_id,
                stage: *stage,
                traceparent: selfheal_shared::trace_context::current(),
            };
            let queued = enqueue(state, *outbox_id, job.into()).await;
            tracing::info!(run = %run_id, incident = %incident_id, queued, "run created");
            (
                StatusCode::ACCEPTED,
                json!({"status": "run_created", "run_id": run_id, "incident_id": incident_id, "stage": stage.as_str(), "queued": queued}),
            )
        }
        Ingested::CommandQueued {
            command_id,
            outbox_id,
            command,
        } => {
            let job = CommandJob {
                command_id: *command_id,
            };
            let queued = enqueue(state, *outbox_id, job.into()).await;
            tracing::info!(command = %command, command_id, queued, "command queued");
            (
                StatusCode::ACCEPTED,
                json!({"status": "command_queued", "command_id": command_id, "command": command, "queued": queued}),
            )
        }
    };
    state
        .metrics
        .delivery(event, body["status"].as_str().unwrap_or("unknown"));
    Ok((status, Json(body)).into_response())
}

/// Pushes a committed outbox row now; when Redis is away, Postgres has it and the relay
/// pushes it later.
pub(crate) async fn enqueue(state: &AppState, outbox_id: i64, job: Job) -> bool {
    match outbox::dispatch_batched(&state.pool, &state.queue, &state.marks, outbox_id, job).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %selfheal_shared::cause::Chain(&e), outbox_id, "enqueue deferred to the outbox relay");
            state.metrics.enqueue_deferred.inc();
            false
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("missing header {name}")))
}

/// HMAC-SHA256 over the raw body, compared in constant time (`verify_slice`) against every
/// configured secret, so a secret can be rotated without dropping deliveries.
pub fn verify_signature(
    secrets: &[SecretString],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let signature = headers
        .get("x-hub-signature-256")
        .ok_or(ApiError::Unauthorized("missing X-Hub-Signature-256"))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid X-Hub-Signature-256"))?;
    let hex_digest = signature
        .strip_prefix("sha256=")
        .ok_or(ApiError::Unauthorized("invalid X-Hub-Signature-256"))?;
    let expected = hex::decode(hex_digest)
        .map_err(|_| ApiError::Unauthorized("invalid X-Hub-Signature-256"))?;
    let matches = secrets.iter().any(|secret| {
        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map(|mut mac| {
                mac.update(body);
                mac.verify_slice(&expected).is_ok()
            })
            .unwrap_or(false)
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("signature does not match"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let mut h = HeaderMap::new();
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        h.insert("x-hub-signature-256", sig.parse().unwrap());
        h
    }

    #[test]
    fn signature_checks() {
        let secrets = vec![SecretString::from("new"), SecretString::from("old")];
        let body = br#"{"zen":"x"}"#;
        assert!(verify_signature(&secrets, &sign("new", body), body).is_ok());
        assert!(verify_signature(&secrets, &sign("old", body), body).is_ok());
        assert!(verify_signature(&secrets, &sign("other", body), body).is_err());
        assert!(verify_signature(&secrets, &sign("new", body), b"{\"zen\":\"y\"}").is_err());
        assert!(verify_signature(&secrets, &HeaderMap::new(), body).is_err());
    }
}
