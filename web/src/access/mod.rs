//! Who may use which route (docs/access.md). Every route is added through [`Routes`], which
//! makes it declare what it needs (nothing, a webhook signature, or a role) and puts the role's
//! gate in front of it; the list it keeps is what the route-walk test checks. People sign in
//! through the organisation's OpenID Connect provider (or with the operators' token) for a
//! signed session cookie; machines send the provider's JWTs (or the token) as bearers.

pub mod oidc;
mod session;
pub(crate) mod session_store;
mod sign_in;

pub use sign_in::sign_in_routes;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use selfheal_shared::config::AccessRole;
use selfheal_shared::Config;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::AppState;

/// How long a session lasts, on the server's clock (the cookie's own expiry is the browser's).
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// How long a person may take at the provider's sign-in page.
const PENDING: Duration = Duration::from_secs(600);
/// What a wrong operators' token costs its sender. Wrong tokens are answered one at a time:
/// another wrong one meanwhile is answered 429 at once, so nothing piles up. The right token
/// never waits, whatever others send.
const WRONG_TOKEN_PENALTY: Duration = Duration::from_secs(1);
/// `__Host-`: browsers take these only from this host, over TLS, for the whole site, so a
/// sibling subdomain cannot plant or overwrite one (RFC 6265bis "cookie prefixes").
pub const COOKIE: &str = "__Host-selfheal_session";
const PENDING_COOKIE: &str = "__Host-selfheal_oidc";
/// The actor the operators' token acts as in the audit log.
const TOKEN_ACTOR: &str = "dashboard-token";

/// What a route needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone: probes, the sign-in pages, the stylesheet, and `/metrics` (which a separate
    /// `SELFHEAL_METRICS_BIND` keeps off the public port).
    Public,
    /// GitHub's HMAC signature, checked by the webhook handler itself.
    WebhookSignature,
    /// A person or machine holding this role or a higher one.
    Role(AccessRole),
}

/// One route as declared.
#[derive(Debug, Clone)]
pub struct Declared {
    pub method: Method,
    pub path: &'static str,
    pub need: Need,
}

/// A router that knows what each of its routes needs.
pub struct Routes {
    router: Router<AppState>,
    declared: Vec<Declared>,
    access: Option<Access>,
}

impl Routes {
    pub fn new(access: Option<Access>) -> Routes {
        Routes {
            router: Router::new(),
            declared: Vec::new(),
            access,
        }
    }

    /// Adds `handler` at `method path`, behind the gate `need` names.
    pub fn route<H, T>(self, method: Method, path: &'static str, need: Need, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.route_with(method, path, need, handler, |r| r)
    }

    /// The same, with `wrap` adding the route's own layers (inside the gate).
    pub fn route_with<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        need: Need,
        handler: H,
        wrap: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
    ) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
        let mut route = wrap(on(filter, handler));
        // The sign-in and sign-out forms are checked for their origin too (no login CSRF):
        // the gate checks the others.
        if need == Need::Public && method != Method::GET {
            let Some(access) = self.access.clone() else {
                unreachable!("public forms are the dashboard's, which has access");
            };
            route = route.route_layer(axum::middleware::from_fn_with_state(access, same_site));
        }
        if let Need::Role(role) = need {
            // A role route without any way to sign in is not served at all (404 as any
            // unknown path), rather than served open.
            let Some(access) = self.access.clone() else {
                return self;
            };
            route = route.route_layer(axum::middleware::from_fn_with_state(
                Gate { access, role },
                gate,
            ));
        }
        self.router = self.router.route(path, route);
        self.declared.push(Declared { method, path, need });
        self
    }

    /// Wraps every route so far in `layer`. A layer, not a function of the router: nothing
    /// can add a route here without declaring it.
    pub fn layer<L>(mut self, layer: L) -> Routes
    where
        L: tower_layer::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower_service::Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as tower_service::Service<Request>>::Error:
            Into<std::convert::Infallible> + 'static,
        <L::Service as tower_service::Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.declared.extend(other.declared);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<Declared>) {
        (self.router, self.declared)
    }
}

/// Who is asking, once signed in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Principal {
    /// In the audit log: `oidc:<sub>` or `dashboard-token`.
    pub actor: String,
    /// What people read: an e-mail, a name, or the subject.
    pub name: String,
    pub role: AccessRole,
    /// Unix seconds.
    pub issued: u64,
    /// The session Postgres holds for a signed-in person (`session_store`); none for a bearer.
    #[serde(default)]
    pub session: Option<uuid::Uuid>,
    /// Sent as a bearer (a machine): no session, no cross-site form to fear.
    #[serde(skip)]
    pub bearer: bool,
}

#[derive(Clone)]
pub struct Access {
    token: Option<Arc<SecretString>>,
    token_role: AccessRole,
    pub oidc: Option<oidc::Oidc>,
    keys: session::Keys,
    wrong_token: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
    /// Links are made to this GitHub's web host only.
    pub github: Arc<str>,
    /// Where refusals of signed-in people are recorded (none when only listing the routes).
    pool: Option<deadpool_postgres::Pool>,
}

enum Found {
    Principal(Principal),
    NotSignedIn,
    Refused(Response),
}

impl Access {
    /// `None` when nobody can sign in (no token, no provider): the operator routes are off.
    pub fn from_config(
        config: &Config,
        metrics: Arc<Metrics>,
        pool: Option<deadpool_postgres::Pool>,
    ) -> Option<Access> {
        if config.dashboard_token.is_none() && config.oidc.is_none() {
            return None;
        }
        // With a provider, sessions are signed with a key nobody is given, and the role
        // mapping is part of the key: changing who holds which role ends every session.
        // With the token alone, the token's holders may sign in anyway, and a token session's
        // role is the token's role now, not the one it was issued with.
        let keys = match (&config.oidc, &config.dashboard_token) {
            // The operators' token too, when there is one: rotating it ends the sessions it
            // opened (and, with them, every other: the key is one).
            (Some(o), token) => session::Keys::derive(&[
                "oidc",
                o.session_key.expose_secret(),
                &format!("{:?}", o.roles),
                token.as_ref().map_or("", |t| t.expose_secret()),
            ]),
            (None, Some(token)) => session::Keys::derive(&["token", token.expose_secret()]),
            (None, None) => unreachable!("checked above"),
        };
        Some(Access {
            keys,
            token: config.dashboard_token.clone().map(Arc::new),
            token_role: config.dashboard_token_role,
            oidc: config.oidc.clone().map(oidc::Oidc::new),
            wrong_token: Arc::new(tokio::sync::Mutex::new(())),
            metrics,
            github: config.github.git_url.trim_end_matches('/').into(),
            pool,
        })
    }

    fn refuse(&self, reason: &str) {
        self.metrics.auth_refused(reason);
    }

    fn token_principal(&self) -> Principal {
        Principal {
            actor: TOKEN_ACTOR.into(),
            name: "the operators' token".into(),
            role: self.token_role,
            issued: unix_now(),
            session: None,
            bearer: false,
        }
    }

    /// Checks the operators' token: the right one at once; a wrong one costs a second, one at
    /// a time.
    async fn check_token(&self, given: &str) -> Result<Principal, Response> {
        if let Some(token) = &self.token {
            if self.keys.same(given, token.expose_secret()) {
                return Ok(self.token_principal());
            }
        }
        self.refuse("wrong_token");
        let Ok(_one_at_a_time) = self.wrong_token.try_lock() else {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "wrong token; another is being answered: try again in a second\n",
            )
                .into_response());
        };
        tokio::time::sleep(WRONG_TOKEN_PENALTY).await;
        tracing::warn!("a wrong operators' token was sent");
        Err((StatusCode::UNAUTHORIZED, "wrong token\n").into_response())
    }

    /// A principal from validated claims, or why not.
    fn principal_of(&self, claims: &serde_json::Value, bearer: bool) -> Result<Principal, String> {
        let oidc = self.oidc.as_ref().expect("claims come from the provider");
        let subject = claims["sub"].as_str().unwrap_or_default();
        let Some(role) = oidc.config.roles.role_of(claims) else {
            return Err(format!(
                "{subject} holds no role here (claim {})",
                oidc.config.roles.claim
            ));
        };
        // An e-mail the provider has not verified could be anyone's.
        let email = (claims["email_verified"] == serde_json::Value::Bool(true))
            .then(|| claims["email"].as_str())
            .flatten();
        let name = email
            .or_else(|| {
                ["preferred_username", "name", "azp", "client_id"]
                    .iter()
                    .find_map(|k| claims[*k].as_str())
            })
            .unwrap_or(subject);
        Ok(Principal {
            actor: format!("oidc:{subject}"),
            name: name.chars().take(200).collect(),
            role,
            issued: unix_now(),
            session: None,
            bearer,
        })
    }

    async fn principal(&self, headers: &HeaderMap) -> Found {
        // Only a bearer token is ours: other schemes (a proxy's Basic) are not.
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.trim().to_string());
        if let Some(token) = bearer {
            let jwt_shaped = token.split('.').count() == 3;
            return match (&self.oidc, jwt_shaped) {
                (Some(oidc), true) => match oidc.bearer(&token).await {
                    // A person's ID token is proof of a sign-in to selfheal, not an API
                    // credential: it carries the sign-in's nonce.
                    Ok(claims) if claims.get("nonce").is_some() => {
                        self.refuse("audience");
                        tracing::warn!("an ID token was sent as a bearer token");
                        Found::Refused(
                            (
                                StatusCode::UNAUTHORIZED,
                                [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
                                "an ID token is not an API token\n",
                            )
                                .into_response(),
                        )
                    }
                    Ok(claims) => match self.principal_of(&claims, true) {
                        Ok(p) => Found::Principal(p),
                        Err(why) => {
                            self.refuse("no_role");
                            tracing::warn!(reason = %why, "a bearer token was refused");
                            Found::Refused(
                                (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
                            )
                        }
                    },
                    Err(e) => {
                        self.refuse(e.label());
                        tracing::warn!(error = %e, "a bearer token was refused");
                        let status = match e {
                            oidc::TokenError::Provider(_) => StatusCode::SERVICE_UNAVAILABLE,
                            _ => StatusCode::UNAUTHORIZED,
                        };
                        Found::Refused(
                            (
                                status,
                                [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
                                format!("{e}\n"),
                            )
                                .into_response(),
                        )
                    }
                },
                _ => match self.check_token(&token).await {
                    Ok(mut p) => {
                        p.bearer = true;
                        Found::Principal(p)
                    }
                    Err(response) => Found::Refused(response),
                },
            };
        }
        let found = match self.session(headers, unix_now()) {
            Some(mut p) if p.actor == TOKEN_ACTOR && self.token.is_some() => {
                p.role = self.token_role;
                p
            }
            Some(p) if p.actor != TOKEN_ACTOR && self.oidc.is_some() => p,
            _ => return Found::NotSignedIn,
        };
        // The cookie is the session's key, not the session: it must still be open.
        let (Some(id), Some(pool)) = (found.session, &self.pool) else {
            return Found::NotSignedIn;
        };
        match session_store::is_open(pool, id).await {
            Ok(true) => Found::Principal(found),
            Ok(false) => Found::NotSignedIn,
            Err(e) => {
                tracing::error!(error = %selfheal_shared::cause::Chain(&e), "cannot check a dashboard session");
                Found::Refused(
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session cannot be checked now; try again shortly\n",
                    )
                        .into_response(),
                )
            }
        }
    }

    /// The session a cookie holds, if it is still within its lifetime at `now`.
    fn session(&self, headers: &HeaderMap, now: u64) -> Option<Principal> {
        cookies(headers, COOKIE)
            .filter_map(|value| self.keys.open::<Principal>(COOKIE, value))
            .find(|p| within(p.issued, now, SESSION))
    }

    /// The sign-in under way that a cookie holds, if it is still within its lifetime at `now`.
    fn pending(&self, headers: &HeaderMap, now: u64) -> Option<oidc::Pending> {
        cookies(headers, PENDING_COOKIE)
            .filter_map(|value| self.keys.open::<oidc::Pending>(PENDING_COOKIE, value))
            .find(|p| within(p.issued, now, PENDING))
    }

    fn session_cookie(&self, principal: &Principal) -> HeaderValue {
        set_cookie(
            COOKIE,
            &self.keys.seal(COOKIE, principal),
            SESSION,
            "Strict",
        )
    }
}

/// A `Set-Cookie` for one of the dashboard's `__Host-` cookies: this host, every path, over TLS
/// only, out of scripts' reach. An empty `value` with no `max_age` clears it, with the same
/// attributes: browsers ignore a `__Host-` cookie's deletion that lacks them.
fn set_cookie(name: &str, value: &str, max_age: Duration, same_site: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite={same_site}",
        max_age.as_secs()
    ))
    .expect("cookie names and sealed values (base64 and hex) are ASCII")
}

/// Issued no more than `lifetime` before `now`, and not in the future (a minute of clock skew
/// allowed, as for tokens).
fn within(issued: u64, now: u64, lifetime: Duration) -> bool {
    issued <= now + 60 && now.saturating_sub(issued) <= lifetime.as_secs()
}

fn cookies<'h>(headers: &'h HeaderMap, name: &'static str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// One row of the audit log, or why it could not be written.
async fn audit(
    pool: &deadpool_postgres::Pool,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    selfheal_shared::audit::append(&client, actor, action, subject, detail)
        .await
        .map(|_| ())
        .map_err(|e| selfheal_shared::cause::Chain(&e).to_string())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone)]
struct Gate {
    access: Access,
    role: AccessRole,
}

async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let principal = match gate.access.principal(request.headers()).await {
        Found::Principal(p) => p,
        Found::Refused(response) => return response,
        // A person without a session is sent to sign in; a form sent without one is refused.
        Found::NotSignedIn if request.method() == Method::GET => {
            return Redirect::to("/dashboard/login").into_response()
        }
        Found::NotSignedIn => {
            gate.access.refuse("not_signed_in");
            return (StatusCode::UNAUTHORIZED, "sign in first\n").into_response();
        }
    };
    if principal.role < gate.role {
        gate.access.refuse("forbidden");
        tracing::warn!(actor = %principal.actor, role = %principal.role, needed = %gate.role, path = %request.uri().path(), "refused: the role is too low");
        // Someone known tried what their role does not allow: that is in the audit log.
        if let Some(pool) = &gate.access.pool {
            let path = request.uri().path().to_string();
            let detail = serde_json::json!({"outcome": "refused", "method": request.method().as_str(),
                "role": principal.role.as_str(), "needed": gate.role.as_str(), "name": principal.name});
            let written = audit(pool, &principal.actor, "dashboard.refused", &path, &detail).await;
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot record a refusal in the audit log");
            }
        }
        return (
            StatusCode::FORBIDDEN,
            format!(
                "this needs the {} role; {} has {}\n",
                gate.role, principal.name, principal.role
            ),
        )
            .into_response();
    }
    // A form a session sends must come from the dashboard's own pages: the session cookie is
    // SameSite=Strict already, and a browser that says otherwise is believed.
    if !principal.bearer && request.method() != Method::GET && cross_site(request.headers()) {
        gate.access.refuse("cross_site");
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

async fn same_site(State(access): State<Access>, request: Request, next: Next) -> Response {
    if cross_site(request.headers()) {
        access.refuse("cross_site");
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    next.run(request).await
}

/// The browser says the request came from another site: `Sec-Fetch-Site`, or else an
/// `Origin` that is not the `Host` it was sent to.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin_host != host
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_shared::config::Role;

    fn access() -> Access {
        let vars = [
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("GITHUB_WEBHOOK_SECRET", "webhook-secret"),
            ("OIDC_PROVIDER_URL", "http://127.0.0.1:9"),
            ("OIDC_CLIENT_ID", "selfheal"),
            ("OIDC_CLIENT_SECRET", "client-secret"),
            (
                "SELFHEAL_SESSION_KEY",
                "session-key-0123456789abcdef0123456789",
            ),
            ("SELFHEAL_PUBLIC_URL", "http://localhost:9"),
            ("SELFHEAL_OIDC_VIEWERS", "eng"),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        let config = Config::from_lookup(Role::Web, lookup).expect("a valid config");
        Access::from_config(&config, Arc::new(Metrics::default()), None).expect("a provider")
    }

    fn cookie(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("other=1; {name}={value}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        headers
    }

    const NOW: u64 = 2_000_000_000;

    #[test]
    fn a_session_lasts_twelve_hours_and_never_starts_in_the_future() {
        let access = access();
        let issued_at = |issued: u64| {
            let principal = Principal {
                actor: "oidc:alice".into(),
                name: "alice".into(),
                role: AccessRole::Viewer,
                issued,
                session: None,
                bearer: false,
            };
            cookie(COOKIE, &access.keys.seal(COOKIE, &principal))
        };
        let opens = |issued| access.session(&issued_at(issued), NOW).is_some();
        assert!(opens(NOW - 12 * 3600));
        assert!(!opens(NOW - 12 * 3600 - 1));
        // A minute of clock skew between replicas, no more.
        assert!(opens(NOW + 60));
        assert!(!opens(NOW + 61));
    }

    #[test]
    fn a_sign_in_must_come_back_within_ten_minutes() {
        let access = access();
        let started_at = |issued: u64| {
            let pending = oidc::Pending {
                state: "s".into(),
                nonce: "n".into(),
                verifier: "v".into(),
                issued,
            };
            cookie(PENDING_COOKIE, &access.keys.seal(PENDING_COOKIE, &pending))
        };
        let opens = |issued| access.pending(&started_at(issued), NOW).is_some();
        assert!(opens(NOW - 600));
        assert!(!opens(NOW - 601));
        assert!(opens(NOW + 60));
        assert!(!opens(NOW + 61));
    }
}
