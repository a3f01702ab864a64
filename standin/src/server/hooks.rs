//! The App's webhook deliveries and redeliveries.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{fixture_error, Inner};

/// Recorded: octocrab `hooks_delivery_list.json` (one delivery failed with 503, one OK).
pub(super) async fn hook_deliveries(State(inner): State<Arc<Inner>>) -> Response {
    match inner
        .fixtures
        .json("github-rest/octocrab/hooks_delivery_list.json")
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => fixture_error(e),
    }
}

/// GitHub accepts a redelivery request with 202.
pub(super) async fn redeliver(Path(_id): Path<i64>) -> Response {
    (StatusCode::ACCEPTED, Json(json!({}))).into_response()
}
