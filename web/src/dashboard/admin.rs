//! What an admin reads: the configuration web runs with (secrets redacted by their wrapper's
//! `Debug`) and the policies in force. Both are set where selfheal is deployed (environment,
//! `.github/selfheal.yml`, `.github/selfheal/policies/`), not changed from here. And what an
//! admin does: end anyone's dashboard session (a lost laptop, a person who left).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{html, pages};
use crate::access::{session_store, Principal};
use crate::error::PgError;
use crate::AppState;

pub async fn config(State(state): State<AppState>) -> Response {
    html(pages::layout(
        "Configuration",
        html! {
            p class="muted" { "As web read it from its environment at start; secrets are shown redacted." }
            pre class="excerpt" { (state.config_summary) }
        },
    ))
}

pub async fn policies() -> Response {
    html(pages::layout(
        "Policies",
        html! {
            p class="muted" { "The embedded policies every repository gets. A repository adds its own denials in "
                code { ".github/selfheal/policies/*.rego" } " and its merge settings in " code { ".github/selfheal.yml" } "." }
            h2 { "Invariants (every fix)" }
            pre class="diff" { (selfheal_engine::invariants::DEFAULT_POLICY) }
            h2 { "Merge" }
            pre class="diff" { (selfheal_engine::policy::DEFAULT_POLICY) }
        },
    ))
}

/// Every open session, each with a button that ends it.
pub async fn sessions(State(state): State<AppState>) -> Response {
    match session_store::list_open(&state.pool).await {
        Ok(open) => html(pages::sessions(&open)),
        Err(e) => unavailable(&e),
    }
}

/// Ends a session: its cookie, wherever it was copied to, opens nothing after.
pub async fn end_session(
    State(state): State<AppState>,
    axum::Extension(me): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such open session\n").into_response();
    };
    match session_store::end(&state.pool, id, &me.actor, "dashboard.session_ended").await {
        Ok(true) if me.bearer => StatusCode::NO_CONTENT.into_response(),
        Ok(true) => Redirect::to("/dashboard/admin/sessions").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "no such open session\n").into_response(),
        Err(e) => unavailable(&e),
    }
}

fn unavailable(e: &PgError) -> Response {
    tracing::error!(error = %selfheal_shared::cause::Chain(e), "cannot read or end dashboard sessions");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "Postgres cannot answer now; nothing was done\n",
    )
        .into_response()
}
