//! `/dashboard`: runs, one run's timeline, incidents with MTTR, and quality, rendered on the
//! server from Postgres (docs/dashboard.md). Behind the operators' token
//! (`SELFHEAL_DASHBOARD_TOKEN`): people sign in once for a session cookie, tools send the token
//! as a bearer. Off (404) without a token. Read-only: every page is one read-only transaction.

mod pages;
mod queries;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::AppState;

/// How long a session lasts, on the server's clock (the cookie's own expiry is the browser's).
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// What a wrong token costs its sender (at the sign-in form or as a bearer). Wrong tokens are
/// answered one at a time: another wrong one meanwhile is answered 429 at once, so nothing
/// piles up. The right token never waits, whatever others send.
const WRONG_TOKEN_PENALTY: Duration = Duration::from_secs(1);
/// How long one page may read.
const STATEMENT_TIMEOUT: &str = "5s";
const COOKIE: &str = "selfheal_session";

/// The dashboard's own state: the token and the key sessions are signed with.
#[derive(Clone)]
pub struct Dashboard {
    token: Arc<SecretString>,
    /// Derived from the token, so that rotating the token ends every session.
    session_key: Arc<[u8; 32]>,
    sign_in: Arc<tokio::sync::Mutex<()>>,
    /// Links are made to this GitHub's web host only.
    github: Arc<str>,
}

impl Dashboard {
    pub fn new(token: SecretString, github_web: &str) -> Dashboard {
        let mut mac = Hmac::<Sha256>::new_from_slice(token.expose_secret().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(b"selfheal dashboard session v1");
        Dashboard {
            session_key: Arc::new(mac.finalize().into_bytes().into()),
            token: Arc::new(token),
            sign_in: Arc::new(tokio::sync::Mutex::new(())),
            github: github_web.trim_end_matches('/').into(),
        }
    }

    fn mac(&self, issued: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.session_key[..]).expect("any key length");
        mac.update(issued.to_string().as_bytes());
        mac
    }

    /// `<issued, unix seconds>.<HMAC of it>`.
    fn session(&self, issued: u64) -> String {
        format!(
            "{issued}.{}",
            hex::encode(self.mac(issued).finalize().into_bytes())
        )
    }

    fn valid_session(&self, value: &str, now: u64) -> bool {
        let Some((issued, tag)) = value.split_once('.') else {
            return false;
        };
        let (Ok(issued), Ok(tag)) = (issued.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        // Issued in the future (a minute of clock skew allowed) or too long ago: expired.
        if issued > now + 60 || now.saturating_sub(issued) > SESSION.as_secs() {
            return false;
        }
        self.mac(issued).verify_slice(&tag).is_ok()
    }

    fn valid_token(&self, given: &str) -> bool {
        // Compared through HMACs of both (constant time, whatever the lengths).
        let digest = |v: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.session_key[..]).expect("any key");
            mac.update(v.as_bytes());
            mac
        };
        let expected = digest(self.token.expose_secret()).finalize().into_bytes();
        digest(given).verify_slice(&expected).is_ok()
    }

    /// Checks a token someone sent: the right one at once; a wrong one costs a second, one at
    /// a time.
    async fn check_token(&self, given: &str) -> Checked {
        if self.valid_token(given) {
            return Checked::Valid;
        }
        let Ok(_one_at_a_time) = self.sign_in.try_lock() else {
            return Checked::Busy;
        };
        tokio::time::sleep(WRONG_TOKEN_PENALTY).await;
        tracing::warn!("dashboard: a wrong token was sent");
        Checked::Wrong
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let now = unix_now();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|value| self.valid_session(value, now))
    }
}

enum Checked {
    Valid,
    Wrong,
    /// Wrong, and another wrong token is being answered.
    Busy,
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        "wrong token; another is being answered: try again in a second\n",
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The dashboard's routes, with the token (`None`: none, every path 404s as any unknown one).
pub fn routes(dashboard: Option<Dashboard>) -> Router<AppState> {
    let Some(dashboard) = dashboard else {
        return Router::new();
    };
    let signed_in = Router::new()
        .route("/dashboard", get(runs))
        .route("/dashboard/runs/{id}", get(run))
        .route("/dashboard/incidents", get(incidents))
        .route("/dashboard/quality", get(quality))
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            require_session,
        ));
    Router::new()
        .route("/dashboard/login", get(login_form).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/style.css", get(style))
        .merge(signed_in)
        .layer(axum::Extension(dashboard))
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

async fn require_session(
    State(dashboard): State<Dashboard>,
    request: Request,
    next: Next,
) -> Response {
    // Only a bearer token is the dashboard's: other schemes (a proxy's Basic) are not.
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string());
    match bearer {
        // A tool: its token, checked like a sign-in.
        Some(token) => match dashboard.check_token(&token).await {
            Checked::Valid => next.run(request).await,
            Checked::Wrong => (StatusCode::UNAUTHORIZED, "wrong token\n").into_response(),
            Checked::Busy => too_many(),
        },
        None if dashboard.has_session(request.headers()) => next.run(request).await,
        // A person without a session is sent to sign in.
        None => Redirect::to("/dashboard/login").into_response(),
    }
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE.0,
    )
        .into_response()
}

fn html(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

async fn login_form() -> Response {
    html(pages::login(false))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn login(
    axum::Extension(dashboard): axum::Extension<Dashboard>,
    Form(form): Form<SignIn>,
) -> Response {
    match dashboard.check_token(form.token.trim()).await {
        Checked::Valid => {}
        Checked::Busy => return too_many(),
        Checked::Wrong => {
            let mut response = html(pages::login(true));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/dashboard; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        dashboard.session(unix_now()),
        SESSION.as_secs()
    );
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/dashboard/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "selfheal_session=; Path=/dashboard; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        ),
    );
    response
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
    axum::Extension(dashboard): axum::Extension<Dashboard>,
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
        github: &dashboard.github,
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
    axum::Extension(dashboard): axum::Extension<Dashboard>,
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
        github: &dashboard.github,
    };
    Ok(match page {
        Some(page) => html(pages::run(&links, &page)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_the_servers_for_twelve_hours_and_cannot_be_made_without_the_token() {
        let dashboard = Dashboard::new(SecretString::from("t".repeat(32)), "https://github.com");
        let now = unix_now();
        let cookie = dashboard.session(now);
        assert!(dashboard.valid_session(&cookie, now));
        assert!(dashboard.valid_session(&cookie, now + SESSION.as_secs() - 1));
        assert!(!dashboard.valid_session(&cookie, now + SESSION.as_secs() + 1));
        // Issued later than it says, or by another token, or tampered with.
        let (issued, tag) = cookie.split_once('.').unwrap();
        assert!(!dashboard.valid_session(
            &format!("{}.{tag}", issued.parse::<u64>().unwrap() + 1),
            now
        ));
        let other = Dashboard::new(SecretString::from("u".repeat(32)), "https://github.com");
        assert!(!other.valid_session(&cookie, now));
        assert!(!dashboard.valid_session(&dashboard.session(now + 3600), now));
        assert!(!dashboard.valid_session("garbage", now));
        assert!(dashboard.valid_token(&"t".repeat(32)));
        assert!(!dashboard.valid_token(&"t".repeat(31)));
    }
}
