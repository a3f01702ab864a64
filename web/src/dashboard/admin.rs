//! What an admin reads: the configuration web runs with (secrets redacted by their wrapper's
//! `Debug`) and the policies in force. Both are set where selfheal is deployed (environment,
//! `.github/selfheal.yml`, `.github/selfheal/policies/`), not changed from here.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{html, pages};
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
