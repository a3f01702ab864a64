//! A local OpenID Connect provider for tests: discovery (OpenID Connect Discovery 1.0), a JWKS,
//! the authorization endpoint (code flow, PKCE required as OAuth 2.1 and RFC 9700 advise) and
//! the token endpoint (RFC 6749 §4.1.3, RFC 7636). It refuses what a real provider refuses: an
//! unregistered redirect URI (never redirected to), a missing or wrong PKCE verifier, a code used
//! twice, expired or sent with another redirect URI, and a client that does not authenticate.
//!
//! The person "at the login page" is whoever the test says with [`Provider::sign_in_as`]; the
//! provider signs their ID token with its key (published in the JWKS under kid `k1`). Tests mint
//! machines' bearer tokens with [`Provider::mint`], and forgeries with [`Provider::forge`] (the
//! same kid, another key).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PROVIDER_KEY: &str = include_str!("../keys/provider.pem");
/// Another key, published nowhere: what a forger signs with.
const IMPOSTOR_KEY: &str = include_str!("../keys/impostor.pem");
/// The key a rotation brings in, published under [`NEXT_KID`] once the test says so.
const NEXT_KEY: &str = include_str!("../keys/next.pem");
const KID: &str = "k1";
const NEXT_KID: &str = "k2";
/// How long a code may wait before it is exchanged (providers use 30 s to 10 min).
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// The one client the provider knows.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

struct Code {
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    claims: Value,
    issued: SystemTime,
}

struct Inner {
    issuer: String,
    client: ClientRegistration,
    /// Who signs in at `/authorize` next; nobody: `access_denied`, as when a person cancels.
    person: Option<Value>,
    codes: HashMap<String, Code>,
    /// Token requests answered, refused or not.
    token_requests: usize,
    /// Claims laid over the next ID token (a null removes one), and whether it is signed with
    /// the impostor's key: what a broken or hostile provider would send.
    next_id_token: Option<(Value, bool)>,
    /// The keys the JWKS publishes, by kid; a rotation adds `k2`, then retires `k1`.
    published: Vec<(&'static str, &'static str)>,
    /// `Cache-Control: max-age` on the JWKS (providers send hours; Google about six).
    jwks_max_age: u64,
    /// The JWKS answers 503, as a provider in an outage does.
    jwks_down: bool,
}

#[derive(Clone)]
pub struct Provider {
    /// The issuer, e.g. `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(pem: &str, claims: &Value) -> String {
    sign_as(KID, pem, claims)
}

fn sign_as(kid: &str, pem: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("the stand-in's key");
    jsonwebtoken::encode(&header, claims, &key).expect("a JWT")
}

fn merge(mut base: Value, extra: &Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

impl Provider {
    /// Serves on an ephemeral loopback port until the runtime stops.
    pub async fn start(client: ClientRegistration) -> Provider {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let provider = Provider {
            url: url.clone(),
            inner: Arc::new(Mutex::new(Inner {
                issuer: url,
                client,
                person: None,
                codes: HashMap::new(),
                token_requests: 0,
                next_id_token: None,
                published: vec![(KID, PROVIDER_KEY)],
                jwks_max_age: 3600,
                jwks_down: false,
            })),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(provider.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        provider
    }

    /// The person who signs in at the next `/authorize`: their claims (`sub`, `email`, groups…).
    pub fn sign_in_as(&self, claims: Value) {
        self.inner.lock().unwrap().person = Some(claims);
    }

    /// Nobody signs in at the next `/authorize`: the person cancelled.
    pub fn nobody_signs_in(&self) {
        self.inner.lock().unwrap().person = None;
    }

    /// The next ID token the token endpoint issues carries `claims` over its own (e.g. an
    /// `exp` in the past, another `aud` or `nonce`), signed with the impostor's key if `forged`.
    pub fn tamper_next_id_token(&self, claims: Value, forged: bool) {
        self.inner.lock().unwrap().next_id_token = Some((claims, forged));
    }

    /// A key rotation's first half: the JWKS publishes the next key beside the current one.
    pub fn publish_next_key(&self) {
        self.inner
            .lock()
            .unwrap()
            .published
            .push((NEXT_KID, NEXT_KEY));
    }

    /// Its second half: the first key is no longer published (as after a compromise).
    pub fn retire_first_key(&self) {
        self.inner
            .lock()
            .unwrap()
            .published
            .retain(|(kid, _)| *kid != KID);
    }

    /// How long the JWKS says it may be cached.
    pub fn set_jwks_max_age(&self, seconds: u64) {
        self.inner.lock().unwrap().jwks_max_age = seconds;
    }

    /// The JWKS answers 503 until told otherwise.
    pub fn set_jwks_down(&self, down: bool) {
        self.inner.lock().unwrap().jwks_down = down;
    }

    /// A token as [`Provider::mint`] makes it, signed with the next key under its kid.
    pub fn mint_with_next_key(&self, claims: Value) -> String {
        sign_as(NEXT_KID, NEXT_KEY, &self.claims(claims))
    }

    pub fn token_requests(&self) -> usize {
        self.inner.lock().unwrap().token_requests
    }

    /// A token as the provider issues it: `iss`, `iat`, an hour's `exp`, and `claims` on top
    /// (a null removes a claim).
    pub fn mint(&self, claims: Value) -> String {
        sign(PROVIDER_KEY, &self.claims(claims))
    }

    /// The same, signed with a key the JWKS does not hold, under the provider's kid.
    pub fn forge(&self, claims: Value) -> String {
        sign(IMPOSTOR_KEY, &self.claims(claims))
    }

    /// Signed with another key under a kid the JWKS does not publish.
    pub fn forge_with_kid(&self, kid: &str, claims: Value) -> String {
        sign_as(kid, IMPOSTOR_KEY, &self.claims(claims))
    }

    fn claims(&self, extra: Value) -> Value {
        let issuer = self.url.clone();
        let t = now();
        merge(
            json!({"iss": issuer, "iat": t, "nbf": t, "exp": t + 3600}),
            &extra,
        )
    }
}

async fn discovery(State(p): State<Provider>) -> Json<Value> {
    let u = &p.url;
    Json(json!({
        "issuer": u,
        "authorization_endpoint": format!("{u}/authorize"),
        "token_endpoint": format!("{u}/token"),
        "jwks_uri": format!("{u}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "email", "profile"],
        "grant_types_supported": ["authorization_code"],
    }))
}

async fn jwks(State(p): State<Provider>) -> Response {
    let (published, max_age) = {
        let inner = p.inner.lock().unwrap();
        if inner.jwks_down {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance\n").into_response();
        }
        (inner.published.clone(), inner.jwks_max_age)
    };
    let keys: Vec<_> = published
        .into_iter()
        .map(|(kid, pem)| {
            let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("the stand-in's key");
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256)
                .expect("an RSA JWK");
            jwk.common.key_id = Some(kid.into());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            jwk
        })
        .collect();
    (
        [(
            header::CACHE_CONTROL,
            format!("public, max-age={max_age}, must-revalidate, no-transform"),
        )],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(State(p): State<Provider>, Query(q): Query<AuthorizeParams>) -> Response {
    let mut inner = p.inner.lock().unwrap();
    // An unknown client or redirect URI is shown an error, never redirected (RFC 6749 §4.1.2.1).
    if q.client_id.as_deref() != Some(inner.client.client_id.as_str()) {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    let Some(redirect) = q
        .redirect_uri
        .clone()
        .filter(|r| inner.client.redirect_uris.contains(r))
    else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not registered").into_response();
    };
    let back = |params: &[(&str, &str)]| {
        let mut url = url::Url::parse(&redirect).expect("a registered URL");
        url.query_pairs_mut().extend_pairs(params);
        if let Some(state) = &q.state {
            url.query_pairs_mut().append_pair("state", state);
        }
        Redirect::to(url.as_str()).into_response()
    };
    let error = |code: &str, why: &str| back(&[("error", code), ("error_description", why)]);
    if q.response_type.as_deref() != Some("code") {
        return error("unsupported_response_type", "code only");
    }
    if !q
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .any(|s| s == "openid")
    {
        return error("invalid_scope", "openid is required");
    }
    let challenge = match (&q.code_challenge, q.code_challenge_method.as_deref()) {
        (Some(c), Some("S256")) if c.len() == 43 => c.clone(),
        _ => return error("invalid_request", "PKCE with S256 is required"),
    };
    let Some(person) = inner.person.clone() else {
        return error("access_denied", "the person did not sign in");
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    inner.codes.insert(
        code.clone(),
        Code {
            redirect_uri: redirect.clone(),
            challenge,
            nonce: q.nonce.clone(),
            claims: person,
            issued: SystemTime::now(),
        },
    );
    drop(inner);
    back(&[("code", &code)])
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, code: &str, why: &str) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({"error": code, "error_description": why})),
    )
        .into_response()
}

/// `client_secret_basic` (the form-encoded id and secret, RFC 6749 §2.3.1) or `client_secret_post`.
/// Never both (§2.3: "MUST NOT use more than one authentication method in each request").
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if headers.contains_key(header::AUTHORIZATION) && form.client_secret.is_some() {
        return None;
    }
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((unescape(id)?, unescape(secret)?));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

async fn token(
    State(p): State<Provider>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let mut inner = p.inner.lock().unwrap();
    inner.token_requests += 1;
    match client_credentials(&headers, &f) {
        Some((id, secret))
            if id == inner.client.client_id && secret == inner.client.client_secret => {}
        _ => {
            let mut refused = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
            // RFC 6749 §5.2: a client that tried Basic is told which scheme to use.
            if headers.contains_key(header::AUTHORIZATION) {
                refused.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"token\""),
                );
            }
            return refused;
        }
    }
    if f.grant_type.is_none() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required",
        );
    }
    if f.grant_type.as_deref() != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "authorization_code only",
        );
    }
    // A code is spent by its first exchange, whatever the outcome (RFC 6749 §4.1.2).
    let Some(code) = f.code.as_deref().and_then(|c| inner.codes.remove(c)) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if code.issued.elapsed().unwrap_or_default() > CODE_LIFETIME {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "expired code");
    }
    if f.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    let verified = f.code_verifier.as_deref().is_some_and(|v| {
        (43..=128).contains(&v.len())
            && URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == code.challenge
    });
    if !verified {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        );
    }
    let client_id = inner.client.client_id.clone();
    let issuer = inner.issuer.clone();
    let tamper = inner.next_id_token.take();
    drop(inner);
    let t = now();
    let mut id = merge(
        json!({"iss": issuer, "aud": client_id, "iat": t, "exp": t + 300}),
        &code.claims,
    );
    if let Some(nonce) = code.nonce {
        id["nonce"] = json!(nonce);
    }
    let (id, id_key) = match tamper {
        Some((claims, forged)) => (
            merge(id, &claims),
            if forged { IMPOSTOR_KEY } else { PROVIDER_KEY },
        ),
        None => (id, PROVIDER_KEY),
    };
    let access = merge(
        json!({"iss": issuer, "aud": client_id, "iat": t, "exp": t + 300, "scope": "openid email"}),
        &code.claims,
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({
            "access_token": sign(PROVIDER_KEY, &access),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": sign(id_key, &id),
            "scope": "openid email",
        })),
    )
        .into_response()
}
