//! The organisation's OpenID Connect provider: discovery, people's sign-in (authorization code
//! with PKCE, through `openidconnect`), and the validation of every JWT web is shown (people's
//! ID tokens and machines' bearer tokens alike, through `jsonwebtoken` against the provider's
//! JWKS): signature, issuer, audience, expiry and not-before.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse,
};
use secrecy::ExposeSecret;
use selfheal_shared::config::OidcConfig;
use serde_json::Value;
use tokio::sync::RwLock;

/// Where the provider sends people back, under the public URL.
pub const CALLBACK: &str = "/dashboard/oidc/callback";
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 60;
/// A key id the JWKS does not hold makes web read the JWKS again (the provider rotated its
/// keys), but not more often than this: a stream of made-up kids costs the provider nothing.
const JWKS_REFRESH: Duration = Duration::from_secs(30);
/// The JWKS is read again once its `Cache-Control: max-age` has passed (at most this long), so
/// a key the provider retired, after a compromise say, stops being accepted.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Past its age, a key set the provider cannot replace goes on serving this long, so that a
/// short outage of the provider does not lock machines out; then its keys are refused too.
const JWKS_STALE_GRACE: Duration = Duration::from_secs(3600);
/// Discovery and JWKS requests give up after this long.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

type RelyingParty = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a token was not accepted: each is a label of `selfheal_auth_refusals_total`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not for this audience")]
    Audience,
    #[error("the token was issued by another issuer")]
    Issuer,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the sign-in's nonce does not match")]
    Nonce,
    #[error("the identity provider cannot be reached: {0}")]
    Provider(String),
    #[error("the identity provider refused: {0}")]
    Refused(String),
}

impl TokenError {
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::Audience => "audience",
            TokenError::Issuer => "issuer",
            TokenError::Signature => "signature",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Malformed(_) => "malformed",
            TokenError::Nonce => "nonce",
            TokenError::Provider(_) => "provider_unreachable",
            TokenError::Refused(_) => "provider_refused",
        }
    }
}

/// What the provider said at discovery, and its keys.
struct Discovered {
    client: RelyingParty,
    jwks_uri: String,
    jwks: RwLock<Keys>,
    /// Held by the one request reading the JWKS again; the key set's own lock is not held
    /// while the provider answers, so requests with a known key never wait for it.
    refreshing: tokio::sync::Mutex<()>,
}

/// The provider's keys as last read.
struct Keys {
    set: JwkSet,
    /// When they were read, and for how long they may be used without reading them again.
    fetched: Instant,
    max_age: Duration,
    /// When a read was last tried, whether it succeeded or not.
    tried: Instant,
    /// Why the last read failed, when it did: a kid these keys do not hold is then the
    /// provider's outage, not a forgery.
    read_failed: Option<String>,
}

impl Keys {
    fn new((set, max_age): (JwkSet, Duration)) -> Keys {
        let now = Instant::now();
        Keys {
            set,
            fetched: now,
            max_age,
            tried: now,
            read_failed: None,
        }
    }

    /// The key for a token, from these keys as they stand `age` after they were read.
    fn decide(
        &self,
        found: Option<jsonwebtoken::jwk::Jwk>,
        age: Duration,
    ) -> Result<jsonwebtoken::jwk::Jwk, TokenError> {
        match found {
            Some(_) if age >= self.max_age + JWKS_STALE_GRACE => {
                Err(TokenError::Provider(format!(
                    "the provider's keys were last read {}s ago and cannot be read now{}",
                    age.as_secs(),
                    self.read_failed
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )))
            }
            Some(jwk) => Ok(jwk),
            None => match &self.read_failed {
                Some(e) => Err(TokenError::Provider(e.clone())),
                None => Err(TokenError::UnknownKey),
            },
        }
    }
}

/// How long a JWKS response may be cached: its `max-age` less the `Age` a cache in between
/// says it already had (RFC 9111 4.2), between `JWKS_REFRESH` and `JWKS_MAX_AGE`; `no-cache`
/// or `no-store` means as little as possible.
fn cache_for(response: &axum::http::HeaderMap) -> Duration {
    use headers::HeaderMapExt;
    let lifetime = match response.typed_get::<headers::CacheControl>() {
        Some(c) if c.no_cache() || c.no_store() => JWKS_REFRESH,
        Some(c) => c.max_age().unwrap_or(JWKS_MAX_AGE),
        None => JWKS_MAX_AGE,
    };
    let already = response
        .typed_get::<headers::Age>()
        .map_or(Duration::ZERO, |a| Duration::from_secs(a.as_secs()));
    lifetime
        .saturating_sub(already)
        .clamp(JWKS_REFRESH, JWKS_MAX_AGE)
}

#[derive(Clone)]
pub struct Oidc {
    pub config: Arc<OidcConfig>,
    http: openidconnect::reqwest::Client,
    /// Read at first use, not at start: web starts (and serves webhooks) while the provider
    /// is away, and tries again at the next sign-in.
    discovered: Arc<RwLock<Option<Arc<Discovered>>>>,
    /// When discovery last failed: it is not tried again sooner than `DISCOVERY_RETRY`, so
    /// requests while the provider is away are answered at once instead of each waiting for it.
    failed_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

const DISCOVERY_RETRY: Duration = Duration::from_secs(10);

/// A sign-in under way: kept in a signed cookie between the redirect and the callback.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub issued: u64,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        let http = openidconnect::reqwest::Client::builder()
            // Following redirects would let the provider's answers send web anywhere (SSRF).
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .expect("a TLS client builds");
        Oidc {
            config: Arc::new(config),
            http,
            discovered: Arc::new(RwLock::new(None)),
            failed_at: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, TokenError> {
        if let Some(d) = self.discovered.read().await.as_ref() {
            return Ok(d.clone());
        }
        let mut slot = self.discovered.write().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        if let Some(at) = *self.failed_at.lock().expect("not poisoned") {
            if at.elapsed() < DISCOVERY_RETRY {
                return Err(TokenError::Provider(
                    "discovery failed moments ago; not tried again yet".into(),
                ));
            }
        }
        let discovered = self.discover().await;
        *self.failed_at.lock().expect("not poisoned") = discovered.is_err().then(Instant::now);
        let d = discovered?;
        *slot = Some(d.clone());
        Ok(d)
    }

    async fn discover(&self) -> Result<Arc<Discovered>, TokenError> {
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| TokenError::Provider(format!("OIDC_PROVIDER_URL: {e}")))?;
        // Discovery checks that the document's issuer is the one configured.
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| TokenError::Provider(format!("discovery: {}", chain(&e))))?;
        let jwks_uri = metadata.jwks_uri().url().to_string();
        // Keys and tokens over TLS only (plain http for a provider on loopback, as the issuer).
        for (what, url) in [
            ("jwks_uri", Some(metadata.jwks_uri().url())),
            ("token_endpoint", metadata.token_endpoint().map(|u| u.url())),
        ] {
            if let Some(url) = url.filter(|u| !selfheal_shared::config::tls_or_loopback(u)) {
                return Err(TokenError::Provider(format!("{what} {url} is not https")));
            }
        }
        let redirect = RedirectUrl::new(format!("{}{CALLBACK}", self.config.public_url))
            .map_err(|e| TokenError::Provider(format!("SELFHEAL_PUBLIC_URL: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose_secret().to_string(),
            )),
        )
        .set_redirect_uri(redirect);
        let jwks = self.fetch_jwks(&jwks_uri).await?;
        Ok(Arc::new(Discovered {
            client,
            jwks_uri,
            jwks: RwLock::new(Keys::new(jwks)),
            refreshing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The provider's keys, and how long they may be used.
    async fn fetch_jwks(&self, uri: &str) -> Result<(JwkSet, Duration), TokenError> {
        let response = self
            .http
            .get(uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| TokenError::Provider(format!("JWKS: {}", chain(&e))))?;
        let max_age = cache_for(response.headers());
        let set = response
            .json::<JwkSet>()
            .await
            .map_err(|e| TokenError::Provider(format!("JWKS: {}", chain(&e))))?;
        Ok((set, max_age))
    }

    /// Where to send a person to sign in, and what to keep until they come back.
    pub async fn start(&self, now: u64) -> Result<(String, Pending), TokenError> {
        let d = self.discovered().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = d
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.to_string(),
            Pending {
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                issued: now,
            },
        ))
    }

    /// Exchanges the code the provider sent back (with the PKCE verifier and the client's
    /// secret) and returns the ID token's claims, validated and with the sign-in's nonce.
    pub async fn finish(&self, code: &str, pending: &Pending) -> Result<Value, TokenError> {
        let d = self.discovered().await?;
        let request = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| TokenError::Provider(format!("no token endpoint: {e}")))?;
        let answer = request
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                // The provider answered with an OAuth error (a spent code, another verifier).
                RequestTokenError::ServerResponse(answer) => {
                    TokenError::Refused(format!("token endpoint: {}", answer.error()))
                }
                // The answer came, but does not parse (an ID token without `sub`, an `iss`
                // that is no URL): the provider's token is malformed, not unreachable.
                RequestTokenError::Parse(e, _) => {
                    TokenError::Malformed(format!("token endpoint's answer: {e}"))
                }
                e => TokenError::Provider(format!("token endpoint: {}", chain(&e))),
            })?;
        let id_token = answer
            .id_token()
            .ok_or_else(|| TokenError::Malformed("the provider sent no ID token".into()))?
            .to_string();
        let claims = self.validate(&id_token, &self.config.client_id).await?;
        if claims["nonce"].as_str() != Some(pending.nonce.as_str()) {
            return Err(TokenError::Nonce);
        }
        // OpenID Connect Core 3.1.3.7: a token for several audiences names the party it was
        // issued to (`azp`), and that must be selfheal.
        let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
        match claims["azp"].as_str() {
            Some(azp) if azp != self.config.client_id => return Err(TokenError::Audience),
            None if several => return Err(TokenError::Audience),
            _ => {}
        }
        Ok(claims)
    }

    /// A machine's bearer token: for `SELFHEAL_OIDC_AUDIENCE`.
    pub async fn bearer(&self, token: &str) -> Result<Value, TokenError> {
        self.validate(token, &self.config.audience).await
    }

    async fn validate(&self, token: &str, audience: &str) -> Result<Value, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        // Public-key signatures only: never `none`, never an HMAC a public key could be
        // passed off as the secret of.
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(TokenError::Malformed(format!(
                "{:?} is not a public-key signature",
                header.alg
            )));
        }
        let d = self.discovered().await?;
        let key = self.key_for(&d, header.kid.as_deref(), header.alg).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed(e.to_string()),
            })
    }

    /// The provider's key for `kid` (the only key when the token names none and the set
    /// holds one), reading the JWKS again when it is not there or the set is past its age.
    async fn key_for(
        &self,
        d: &Discovered,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, TokenError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let (usable, may_read_again) = {
            let keys = d.jwks.read().await;
            let age = keys.fetched.elapsed();
            match find(&keys.set) {
                Some(jwk) if age < keys.max_age => return Self::checked(jwk, alg),
                found => (
                    found.is_some() && age < keys.max_age + JWKS_STALE_GRACE,
                    keys.tried.elapsed() >= JWKS_REFRESH,
                ),
            }
        };
        // A key that may still serve does not wait for another request's read: it goes on
        // with the keys as they are. An unknown kid, or a key past its grace, waits for it,
        // since the read may bring what it needs.
        let reader = match (may_read_again, usable) {
            (true, true) => d.refreshing.try_lock().ok(),
            _ if usable => None,
            _ => Some(d.refreshing.lock().await),
        };
        if let Some(_one_reader) = reader {
            // Whoever held it before may have read them; a failed read is not retried before
            // the interval either.
            let due = {
                let mut keys = d.jwks.write().await;
                let due = keys.tried.elapsed() >= JWKS_REFRESH;
                if due {
                    keys.tried = Instant::now();
                }
                due
            };
            if due {
                match self.fetch_jwks(&d.jwks_uri).await {
                    Ok(read) => *d.jwks.write().await = Keys::new(read),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the provider's JWKS again; the keys read before serve through the grace period");
                        let why = match e {
                            TokenError::Provider(why) => why,
                            other => other.to_string(),
                        };
                        d.jwks.write().await.read_failed = Some(why);
                    }
                }
            }
        }
        let keys = d.jwks.read().await;
        let jwk = keys.decide(find(&keys.set), keys.fetched.elapsed())?;
        Self::checked(jwk, alg)
    }

    /// A JWK as a key for a token signed with `alg`.
    fn checked(jwk: jsonwebtoken::jwk::Jwk, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        // A key published for one algorithm is not used with another the token names.
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != format!("{alg:?}") {
                return Err(TokenError::Signature);
            }
        }
        DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Malformed(format!("JWKS key: {e}")))
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    selfheal_shared::cause::Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn cached(headers: &[(&'static str, &'static str)]) -> u64 {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        cache_for(&map).as_secs()
    }

    #[test]
    fn stale_keys_serve_an_hour_past_their_age_and_a_failed_read_is_the_providers_outage() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}))
        .unwrap();
        let jwk = set.find("k1").cloned();
        let mut keys = Keys::new((set, Duration::from_secs(600)));
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert!(keys.decide(jwk.clone(), minutes(9)).is_ok());
        // Past its age, for an hour.
        assert!(keys.decide(jwk.clone(), minutes(69)).is_ok());
        assert!(matches!(
            keys.decide(jwk.clone(), minutes(70)),
            Err(TokenError::Provider(_))
        ));
        assert!(matches!(
            keys.decide(None, minutes(1)),
            Err(TokenError::UnknownKey)
        ));
        keys.read_failed = Some("JWKS: 503".into());
        assert!(matches!(
            keys.decide(None, minutes(1)),
            Err(TokenError::Provider(e)) if e == "JWKS: 503"
        ));
        assert!(keys.decide(jwk, minutes(30)).is_ok());
    }

    #[test]
    fn the_jwks_is_kept_as_long_as_its_cache_control_says_within_bounds() {
        let control = "cache-control";
        assert_eq!(
            cached(&[(control, "public, max-age=120, must-revalidate")]),
            120
        );
        // What a cache in between already held it for counts against it.
        assert_eq!(cached(&[(control, "max-age=600"), ("age", "500")]), 100);
        assert_eq!(cached(&[(control, "max-age=600"), ("age", "590")]), 30);
        assert_eq!(cached(&[(control, "no-cache")]), 30);
        assert_eq!(cached(&[(control, "no-store, max-age=600")]), 30);
        assert_eq!(cached(&[(control, "max-age=1")]), 30);
        assert_eq!(cached(&[(control, "public, max-age=21087")]), 3600);
        assert_eq!(cached(&[]), 3600);
        assert_eq!(cached(&[(control, "public")]), 3600);
    }
}
