//! Who may call: the App by its JWT (RS256, signed by its private key, checked against its
//! public key, with GitHub's `iat`/`exp` rules and the App id as issuer), an installation by a
//! token the stand-in issued, unexpired, unrevoked and scoped to the repository asked about.
//! One layer per kind of caller, on the router; handlers never check credentials themselves.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{fixture_error, github_error, knobs, Inner, Refusal};

/// The App the stand-in believes in: its id and the public half of its key.
pub struct AppIdentity {
    pub id: u64,
    pub key: DecodingKey,
}

impl AppIdentity {
    /// The demo App (id 1), whose private key is `standin/demo-app-key.pem`.
    pub fn demo() -> AppIdentity {
        AppIdentity {
            id: 1,
            key: DecodingKey::from_rsa_pem(include_bytes!("../../demo-app-key.pub.pem"))
                .expect("the demo App's public key parses"),
        }
    }
}

/// An installation token the stand-in issued, as GitHub remembers it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub installation: i64,
    /// `owner/name` of each repository it may touch.
    pub repositories: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Default)]
pub struct Tokens {
    pub issued: HashMap<String, Issued>,
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Credential {
    AppJwt,
    InstallationToken,
    Other,
    None,
}

impl Credential {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Credential::AppJwt => "app-jwt",
            Credential::InstallationToken => "installation-token",
            Credential::Other => "other",
            Credential::None => "none",
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim())
}

/// The password of HTTP Basic credentials (git over HTTP sends the token as one).
pub(super) fn basic_password(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

/// What kind of credential a request carries, by its form only (for the call record):
/// a JWT's three base64url parts, or an installation token's `ghs_` prefix.
pub(super) fn credential(headers: &HeaderMap) -> Credential {
    if headers.get("authorization").is_none() {
        return Credential::None;
    }
    // Git over HTTP carries the token as Basic credentials' password.
    if let Some(password) = basic_password(headers) {
        return match password.starts_with("ghs_") {
            true => Credential::InstallationToken,
            false => Credential::Other,
        };
    }
    match bearer(headers) {
        Some(t) if t.starts_with("ghs_") => Credential::InstallationToken,
        Some(t) if t.starts_with("eyJ") && t.split('.').count() == 3 => Credential::AppJwt,
        _ => Credential::Other,
    }
}

/// GitHub's checks of an App's JWT: RS256 signed by the App's key, `iat` not in the future,
/// `exp` in the future and at most ten minutes after `iat`, `iss` the App's id.
fn verify_jwt(app: &AppIdentity, token: &str) -> Result<(), String> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.validate_exp = true;
    // `iss` is checked below: GitHub takes the App id as a number (jsonwebtoken reads
    // only string issuers) or the client id as a string.
    validation.set_required_spec_claims(&["exp", "iat"]);
    let data = jsonwebtoken::decode::<Value>(token, &app.key, &validation).map_err(|e| match e
        .kind()
    {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".to_string()
        }
        _ => "A JSON web token could not be decoded".to_string(),
    })?;
    let claims = data.claims;
    let now = Utc::now().timestamp();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err("A JSON web token could not be decoded".into());
    };
    // GitHub: issued no later than now (clients backdate `iat` a minute for drift), expiring
    // no more than ten minutes from now.
    if iat > now + 5 {
        return Err("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued".into());
    }
    if exp > now + 600 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    let issuer = match &claims["iss"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    if issuer != Some(app.id) {
        return Err("'Issuer' claim ('iss') must be an Integer".into());
    }
    Ok(())
}

/// The layer on `/app/...`: a valid JWT of the App, or GitHub's 401.
pub(super) async fn require_app(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    // A JWT goes with the `Bearer` scheme only (`token` is for tokens).
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(token) = jwt else {
        return github_error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    match verify_jwt(&inner.app, token) {
        Ok(()) => next.run(request).await,
        Err(why) => github_error(StatusCode::UNAUTHORIZED, &why),
    }
}

/// The layer on `/repos/{owner}/{repo}/...`: a token the stand-in issued, not expired or
/// revoked (401 "Bad credentials", as GitHub), for this repository (404: to a token, a
/// repository outside its installation does not exist); then the rate limits.
pub(super) async fn require_installation(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return github_error(StatusCode::UNAUTHORIZED, "Requires authentication");
    };
    let issued = inner
        .tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .issued
        .get(token)
        .cloned();
    let Some(issued) = issued else {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    if issued.revoked || issued.expires_at <= Utc::now() {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let mut segments = request.uri().path().split('/').skip(2);
    let repository = match (segments.next(), segments.next()) {
        (Some(owner), Some(name)) => format!("{owner}/{name}"),
        _ => return github_error(StatusCode::NOT_FOUND, "Not Found"),
    };
    // Within the token's scope, and the repository this stand-in serves (any other name
    // would be answered with its contents).
    if !issued
        .repositories
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&repository))
        || !repository.eq_ignore_ascii_case(super::REPOSITORY)
    {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    if let Some(refused) = throttle(&inner, issued.installation, request.method()) {
        return refused;
    }
    next.run(request).await
}

/// GitHub's answer to a secondary rate limit when it sends no header: a bare 403 whose
/// message alone says what happened.
fn secondary_limit() -> Response {
    github_error(
        StatusCode::FORBIDDEN,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID.",
    )
}

/// What GitHub answers an installation whose rate limit is spent, as GitHub documents it:
/// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` for the primary limit; 429 +
/// `retry-after` for secondary limits.
fn throttle(inner: &Inner, installation: i64, method: &axum::http::Method) -> Option<Response> {
    let mut knobs = inner.knobs.lock().unwrap_or_else(|p| p.into_inner());
    if knobs.secondary_limit_next > 0 {
        knobs.secondary_limit_next -= 1;
        return Some(secondary_limit());
    }
    if let Some(limit) = knobs
        .write_limit
        .filter(|_| method != axum::http::Method::GET)
    {
        let now = std::time::Instant::now();
        let window = std::time::Duration::from_millis(limit.window_ms);
        let mut writes = inner.writes.lock().unwrap_or_else(|p| p.into_inner());
        let recent = writes.entry(installation).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() as u32 >= limit.max {
            return Some(secondary_limit());
        }
        recent.push_back(now);
    }
    if knobs.rate_limit_next > 0 {
        knobs.rate_limit_next -= 1;
        let message = format!("API rate limit exceeded for installation ID {installation}.");
        let reset = Utc::now().timestamp() + 1;
        let mut response = github_error(StatusCode::FORBIDDEN, &message);
        let h = response.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
            h.insert("x-ratelimit-reset", v);
        }
        return Some(response);
    }
    if knobs.retry_after_next > 0 {
        knobs.retry_after_next -= 1;
        let mut response = github_error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return Some(response);
    }
    None
}

/// Issues a token for `installation`, scoped to `names` (repository names without the
/// owner, as the API takes them) or to all its repositories; remembered with its expiry.
pub(super) fn issue(
    inner: &Inner,
    installation: i64,
    names: Option<&[String]>,
) -> Result<(String, Issued), Refusal> {
    let knobs = knobs(inner);
    let Some(all) = knobs.installations().get(&installation).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "Not Found".into()));
    };
    let repositories = match names {
        None => all,
        Some(names) => {
            let mut scoped = Vec::new();
            for name in names {
                match all.iter().find(|full| {
                    full.rsplit('/')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                }) {
                    Some(full) => scoped.push(full.clone()),
                    None => {
                        return Err(Refusal(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "There is at least one repository that does not exist or is not accessible to the parent installation.".into(),
                        ))
                    }
                }
            }
            scoped
        }
    };
    let issued = Issued {
        installation,
        repositories,
        expires_at: Utc::now() + chrono::Duration::seconds(knobs.token_ttl_secs.unwrap_or(3600)),
        revoked: false,
    };
    let mut tokens = inner.tokens.lock().unwrap_or_else(|p| p.into_inner());
    tokens.count += 1;
    let token = format!("ghs_standin{installation}x{}", tokens.count);
    tokens.issued.insert(token.clone(), issued.clone());
    Ok((token, issued))
}

/// GitHub's documented example (201 with token, expires_at, permissions), with the token
/// issued here, its expiry, and the repositories it was scoped to.
pub(super) async fn access_token(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut requests) = inner.token_requests.lock() {
        requests.push(request.clone());
    }
    let names: Option<Vec<String>> = request["repositories"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    let (token, issued) = match issue(&inner, id, names.as_deref()) {
        Ok(t) => t,
        Err(refused) => return refused.into_response(),
    };
    let mut body = match inner.fixtures.example(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        201,
        "default",
    ) {
        Ok(b) => b,
        Err(e) => return fixture_error(e),
    };
    body["token"] = Value::from(token);
    body["expires_at"] = Value::from(
        issued
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    if let Some(template) = body["repositories"].get(0).cloned() {
        body["repositories"] = Value::Array(
            issued
                .repositories
                .iter()
                .map(|full| {
                    let mut r = template.clone();
                    r["full_name"] = Value::from(full.as_str());
                    r["name"] = Value::from(full.rsplit('/').next().unwrap_or(full));
                    r
                })
                .collect(),
        );
    }
    (StatusCode::CREATED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_as_octocrab_makes_it_verifies() {
        let now = Utc::now().timestamp();
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": 1}),
            &jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../../demo-app-key.pem"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(verify_jwt(&AppIdentity::demo(), &jwt), Ok(()));
    }
}
