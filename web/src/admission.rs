//! Admission: at most `max_in_flight` webhook requests are handled at once, and every request
//! is answered within `request_timeout` (408 otherwise), its wait for a slot and a client
//! that trickles its body included. A semaphore and a timeout around both, rather than
//! tower's concurrency and timeout layers: those take the slot in `poll_ready`, outside the
//! timeout's reach, so a queued request could wait for ever.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Admission {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl Admission {
    pub fn new(max_in_flight: usize, timeout: Duration) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            timeout,
        }
    }
}

pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let handled = async {
        // The semaphore is never closed: acquiring only waits.
        let _slot = admission.slots.acquire().await.ok();
        next.run(request).await
    };
    match tokio::time::timeout(admission.timeout, handled).await {
        Ok(response) => response,
        Err(_) => {
            tracing::info!(timeout = ?admission.timeout, "request timed out");
            (
                StatusCode::REQUEST_TIMEOUT,
                Json(
                    json!({"error": format!("request not handled within {:?}", admission.timeout)}),
                ),
            )
                .into_response()
        }
    }
}
