//! The one mapping from errors to HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use selfheal_shared::cause::Chain;
use serde_json::json;

/// Postgres could not answer: no connection from the pool, or a statement that failed. What
/// web's own reads and writes beside ingest (the dashboard, its sessions and commands, the
/// fleet's figures) return; each caller says what it could not do.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    /// Postgres is down: GitHub can redeliver, so tell it to.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The outcome a refused delivery is counted under (`selfheal_webhook_deliveries_total`).
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "refused_signature",
            ApiError::BadRequest(_) => "refused_malformed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::from_postgres(&e)
    }
}

impl ApiError {
    fn from_postgres(e: &tokio_postgres::Error) -> Self {
        // A payload Postgres cannot store is the sender's fault: a 400 that says why, not a
        // 500.
        if let Some(db) = e
            .as_db_error()
            .filter(|_| selfheal_shared::db::payload_refused(e))
        {
            let detail = db.detail().map(|d| format!(": {d}")).unwrap_or_default();
            return ApiError::BadRequest(format!(
                "the payload cannot be stored: {}{detail}",
                db.message()
            ));
        }
        // A database that cannot take the write now (a full disk, out of memory or
        // connections, shutting down) is an outage: 503, and GitHub's delivery is asked for
        // again later (the redelivery sweep).
        if let Some(code) = e.code() {
            use tokio_postgres::error::SqlState;
            let outage = [
                SqlState::DISK_FULL,
                SqlState::OUT_OF_MEMORY,
                SqlState::INSUFFICIENT_RESOURCES,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::READ_ONLY_SQL_TRANSACTION,
                // A writer's session gave up on a lock or a statement (`accepts`).
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
            ];
            if outage.contains(code) {
                return ApiError::Unavailable(Chain(e).to_string());
            }
        }
        // A closed connection means the database went away mid-request.
        if e.is_closed() || e.as_db_error().is_none() {
            ApiError::Unavailable(Chain(e).to_string())
        } else {
            ApiError::Internal(Chain(e).to_string())
        }
    }
}

impl From<selfheal_shared::accepts::AcceptError> for ApiError {
    fn from(e: selfheal_shared::accepts::AcceptError) -> Self {
        use selfheal_shared::accepts::AcceptError;
        match e {
            AcceptError::Pool(e) => ApiError::Unavailable(Chain(&*e).to_string()),
            AcceptError::Db(e) => ApiError::from_postgres(&e),
            AcceptError::Stopped => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(Chain(&e).to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(error = %self, "request rejected");
        }
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("10"));
        }
        response
    }
}
