//! `/dashboard`: runs, one run's timeline, incidents with MTTR, and quality, rendered on the
//! server from Postgres (docs/dashboard.md); operators retry, stop and approve from a run's
//! page, admins read the configuration and policies in force. Who may see what is `access`'s:
//! off (404) when nobody can sign in. Every page is one read-only transaction.

mod actions;
mod admin;
pub mod pages;
mod queries;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use crate::access::{Access, Need, Principal, Routes};
use crate::AppState;
use selfheal_shared::config::AccessRole;

/// How long one page may read.
const STATEMENT_TIMEOUT: &str = "5s";

/// The dashboard's routes (none without a way to sign in: every path 404s as any unknown one).
pub fn routes(access: Option<Access>) -> Routes {
    let Some(access) = access else {
        return Routes::new(None);
    };
    let viewer = Need::Role(AccessRole::Viewer);
    let operator = Need::Role(AccessRole::Operator);
    let admin = Need::Role(AccessRole::Admin);
    Routes::new(Some(access.clone()))
        .route(Method::GET, "/dashboard", viewer, runs)
        .route(Method::GET, "/dashboard/runs/{id}", viewer, run)
        .route(Method::GET, "/dashboard/incidents", viewer, incidents)
        .route(Method::GET, "/dashboard/quality", viewer, quality)
        .route(
            Method::POST,
            "/dashboard/runs/{id}/retry",
            operator,
            actions::retry,
        )
        .route(
            Method::POST,
            "/dashboard/runs/{id}/stop",
            operator,
            actions::stop,
        )
        .route(
            Method::POST,
            "/dashboard/runs/{id}/approve",
            operator,
            actions::approve,
        )
        .route(Method::GET, "/dashboard/admin/config", admin, admin::config)
        .route(
            Method::GET,
            "/dashboard/admin/policies",
            admin,
            admin::policies,
        )
        .route(
            Method::GET,
            "/dashboard/admin/sessions",
            admin,
            admin::sessions,
        )
        .route(
            Method::POST,
            "/dashboard/admin/sessions/{id}/end",
            admin,
            admin::end_session,
        )
        .route(Method::GET, "/dashboard/style.css", Need::Public, style)
        .merge(crate::access::sign_in_routes(&access))
        .layer(axum::Extension(access))
        .layer(axum::middleware::from_fn(secure_headers))
}

/// No script, no frames, nothing from elsewhere; not cached.
async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE.0,
    )
        .into_response()
}

pub(crate) fn html(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::error!(error = %selfheal_shared::cause::Chain(&self), "dashboard: cannot read the page");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the dashboard cannot read Postgres now\n",
        )
            .into_response()
    }
}

/// A read-only transaction with a statement timeout, for one page.
async fn begin(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, PageError> {
    let tx = client.build_transaction().read_only(true).start().await?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .await?;
    Ok(tx)
}

#[derive(Deserialize)]
struct RunFilter {
    status: Option<String>,
    repo: Option<String>,
}

async fn runs(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<Access>,
    Query(filter): Query<RunFilter>,
) -> Result<Response, PageError> {
    let status = filter.status.filter(|s| !s.is_empty());
    let repo = filter
        .repo
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let mut client = state.pool.get().await?;
    let tx = begin(&mut client).await?;
    let rows = queries::runs(&tx, status.as_deref(), repo.as_deref()).await?;
    tx.commit().await?;
    let links = pages::Links {
        github: &access.github,
    };
    Ok(html(pages::runs(
        &links,
        &rows,
        status.as_deref(),
        repo.as_deref(),
    )))
}

async fn run(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<Access>,
    axum::Extension(me): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Ok(id) = Uuid::parse_str(&id) else {
        return Ok((StatusCode::NOT_FOUND, html(pages::not_found())).into_response());
    };
    let mut client = state.pool.get().await?;
    let tx = begin(&mut client).await?;
    let page = queries::run(&tx, id).await?;
    tx.commit().await?;
    let links = pages::Links {
        github: &access.github,
    };
    Ok(match page {
        Some(page) => html(pages::run(&links, &page, me.role)),
        None => (StatusCode::NOT_FOUND, html(pages::not_found())).into_response(),
    })
}

async fn incidents(State(state): State<AppState>) -> Result<Response, PageError> {
    let mut client = state.pool.get().await?;
    let tx = begin(&mut client).await?;
    let rows = queries::incidents(&tx).await?;
    tx.commit().await?;
    Ok(html(pages::incidents(&rows)))
}

async fn quality(State(state): State<AppState>) -> Result<Response, PageError> {
    let mut client = state.pool.get().await?;
    let tx = begin(&mut client).await?;
    let q = queries::quality(&tx).await?;
    tx.commit().await?;
    Ok(html(pages::quality(&q)))
}
