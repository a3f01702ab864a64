//! Signing in and out: the token's form, the provider's code flow (start and callback), and
//! the audit rows every sign-in leaves.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::json;

use super::{
    audit, oidc, session_store, set_cookie, unix_now, Access, Found, Need, Principal, Routes,
    COOKIE, PENDING, PENDING_COOKIE, SESSION,
};
use crate::AppState;

/// The sign-in routes: the token's form when there is a token, the provider's when there is one.
pub fn sign_in_routes(access: &Access) -> Routes {
    let mut routes = Routes::new(Some(access.clone()))
        .route(Method::GET, "/dashboard/login", Need::Public, login_page)
        .route(Method::POST, "/dashboard/logout", Need::Public, logout);
    if access.token.is_some() {
        routes = routes.route(Method::POST, "/dashboard/login", Need::Public, token_login);
    }
    if access.oidc.is_some() {
        routes = routes
            .route(
                Method::GET,
                "/dashboard/oidc/login",
                Need::Public,
                oidc_login,
            )
            .route(Method::GET, oidc::CALLBACK, Need::Public, oidc_callback);
    }
    routes
}

/// A sign-in page with its status.
fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, crate::dashboard::html(markup)).into_response()
}

async fn login_page(axum::Extension(access): axum::Extension<Access>) -> Response {
    page(
        StatusCode::OK,
        crate::dashboard::pages::login(None, access.token.is_some(), access.oidc.is_some()),
    )
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn token_login(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<Access>,
    Form(form): Form<SignIn>,
) -> Response {
    match access.check_token(form.token.trim()).await {
        Ok(p) => signed_in(&state, &access, p, "token").await,
        Err(response) if response.status() == StatusCode::UNAUTHORIZED => page(
            StatusCode::UNAUTHORIZED,
            crate::dashboard::pages::login(
                Some("That token is not the dashboard's."),
                true,
                access.oidc.is_some(),
            ),
        ),
        Err(response) => response,
    }
}

/// Records the sign-in and hands out the session. After the provider's sign-in, a page moves
/// on to the dashboard by itself: a redirect would not carry the new SameSite=Strict cookie
/// after the provider's cross-site redirect. The token's form is the dashboard's own page.
async fn signed_in(state: &AppState, access: &Access, mut p: Principal, how: &str) -> Response {
    match session_store::open(&state.pool, &p, how, SESSION).await {
        Ok(id) => p.session = Some(id),
        Err(e) => {
            tracing::error!(error = %selfheal_shared::cause::Chain(&e), "cannot open a dashboard session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the sign-in cannot be recorded now; nothing was done\n",
            )
                .into_response();
        }
    }
    let mut response = match how {
        "token" => Redirect::to("/dashboard").into_response(),
        _ => page(StatusCode::OK, crate::dashboard::pages::signed_in(&p.name)),
    };
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, access.session_cookie(&p));
    if how == "oidc" {
        // The sign-in is spent: its cookie (sent site-wide, as `__Host-` requires) goes.
        headers.append(
            header::SET_COOKIE,
            set_cookie(PENDING_COOKIE, "", Duration::ZERO, "Lax"),
        );
    }
    response
}

async fn logout(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<Access>,
    headers: HeaderMap,
) -> Response {
    if let Found::Principal(p) = access.principal(&headers).await {
        // The session ends on the server, so a copy of the cookie is worth nothing after. One
        // that cannot be ended now still has its cookie cleared, and expires.
        if let Some(id) = p.session {
            if let Err(e) = session_store::end(&state.pool, id, &p.actor, "dashboard.logout").await
            {
                tracing::error!(error = %selfheal_shared::cause::Chain(&e), "cannot end a dashboard session");
            }
        }
    }
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(COOKIE, "", Duration::ZERO, "Strict"),
    );
    response
}

async fn oidc_login(axum::Extension(access): axum::Extension<Access>) -> Response {
    let oidc = access.oidc.as_ref().expect("routed only with a provider");
    match oidc.start(unix_now()).await {
        Ok((url, pending)) => {
            let mut response = Redirect::to(&url).into_response();
            // Lax, not Strict: it must come back with the provider's cross-site redirect.
            let sealed = access.keys.seal(PENDING_COOKIE, &pending);
            response.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(PENDING_COOKIE, &sealed, PENDING, "Lax"),
            );
            response
        }
        Err(e) => {
            access.refuse(e.label());
            tracing::error!(error = %e, "cannot start an OIDC sign-in");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::dashboard::pages::login(Some(shown(&e)), access.token.is_some(), true),
            )
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn oidc_callback(
    State(state): State<AppState>,
    axum::Extension(access): axum::Extension<Access>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let oidc = access.oidc.as_ref().expect("routed only with a provider");
    let pending = access.pending(&headers, unix_now());
    // Until the state matches, the request is anyone's: it is counted, never audited (so
    // nobody can write to the audit log by calling the callback).
    let Some(pending) = pending else {
        return refused(
            &state,
            &access,
            "login_error",
            "the sign-in expired or was not started here",
            None,
        )
        .await;
    };
    // The state ties the answer to the browser that started the sign-in (no login CSRF).
    if !access.keys.same(
        callback.state.as_deref().unwrap_or_default(),
        &pending.state,
    ) {
        return refused(
            &state,
            &access,
            "login_error",
            "the sign-in's state does not match",
            None,
        )
        .await;
    }
    if let Some(error) = &callback.error {
        // The provider's own words are not shown: they come back through the browser.
        let error: String = error
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect();
        let why = format!("the provider refused the sign-in ({error})");
        return refused(&state, &access, "provider_refused", &why, Some("anonymous")).await;
    }
    let Some(code) = callback.code.as_deref() else {
        return refused(&state, &access, "login_error", "no code", Some("anonymous")).await;
    };
    let claims = match oidc.finish(code, &pending).await {
        Ok(claims) => claims,
        Err(e) => return refused(&state, &access, e.label(), shown(&e), Some("anonymous")).await,
    };
    match access.principal_of(&claims, false) {
        Ok(p) => signed_in(&state, &access, p, "oidc").await,
        Err(why) => {
            let actor = format!("oidc:{}", claims["sub"].as_str().unwrap_or_default());
            refused(&state, &access, "no_role", &why, Some(&actor)).await
        }
    }
}

/// What a person is told: the reason, but not the provider's internals (its URLs, DNS and TLS
/// errors stay in the log).
fn shown(e: &oidc::TokenError) -> &str {
    match e {
        oidc::TokenError::Provider(_) => {
            "the identity provider cannot be reached now; try again later"
        }
        _ => {
            "the identity provider's answer was refused; try again, and ask an admin if it persists"
        }
    }
}

/// A refused sign-in: counted, logged, recorded in the audit log when `actor` is known (the
/// sign-in was this browser's), and answered with the sign-in page.
async fn refused(
    state: &AppState,
    access: &Access,
    label: &str,
    why: &str,
    actor: Option<&str>,
) -> Response {
    access.refuse(label);
    tracing::warn!(reason = %why, label, "an OIDC sign-in was refused");
    if let Some(actor) = actor {
        // Recorded when it can be: a refusal must not need Postgres to be answered.
        let detail = json!({"outcome": "refused", "reason": why, "label": label});
        if let Err(e) = audit(&state.pool, actor, "dashboard.login", "dashboard", &detail).await {
            tracing::error!(error = %e, "cannot record a refused sign-in in the audit log");
        }
    }
    let status = if label == "no_role" {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    page(
        status,
        crate::dashboard::pages::login(Some(why), access.token.is_some(), true),
    )
}
