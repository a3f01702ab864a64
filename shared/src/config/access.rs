//! Who may use web's operator routes (docs/access.md): people signed in through the
//! organisation's OpenID Connect provider, machines with its bearer JWTs, and the operators'
//! token; each with a role mapped from the token's claims.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;

use super::{ConfigError, Env};

/// What a person or machine may do, each role including the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AccessRole {
    /// Runs, incidents, reports.
    Viewer,
    /// And retry, stop, approve.
    Operator,
    /// And the configuration and policies in force.
    Admin,
}

impl AccessRole {
    pub const ALL: [AccessRole; 3] = [AccessRole::Viewer, AccessRole::Operator, AccessRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Operator => "operator",
            AccessRole::Admin => "admin",
        }
    }
}

impl fmt::Display for AccessRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "viewer" => Ok(AccessRole::Viewer),
            "operator" => Ok(AccessRole::Operator),
            "admin" => Ok(AccessRole::Admin),
            other => Err(format!("{other:?}: viewer, operator or admin")),
        }
    }
}

/// The OpenID Connect provider web trusts.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `OIDC_PROVIDER_URL`: the issuer; discovery is read from
    /// `{issuer}/.well-known/openid-configuration`, and every token's `iss` must equal it.
    pub issuer: String,
    /// `OIDC_CLIENT_ID`: selfheal's client at the provider; the `aud` of people's ID tokens.
    pub client_id: String,
    /// `OIDC_CLIENT_SECRET`: selfheal is a confidential client (code flow with PKCE and the
    /// secret). Sessions are signed with a key derived from it, so every web replica accepts
    /// the others' and rotating it ends them all.
    pub client_secret: SecretString,
    /// `SELFHEAL_OIDC_AUDIENCE` (the client id): the `aud` machines' bearer tokens must carry.
    pub audience: String,
    /// `SELFHEAL_SESSION_KEY`: what sessions are signed with, at least 32 characters. Never a
    /// credential anyone is given (the client secret is known to the provider's admins, the
    /// operators' token to every operator): whoever holds it can make any session.
    pub session_key: SecretString,
    /// `SELFHEAL_PUBLIC_URL`: where people reach web; the provider sends them back to
    /// `{public_url}/dashboard/oidc/callback`.
    pub public_url: String,
    /// How roles are read from a token's claims.
    pub roles: RoleMap,
}

/// Roles from claims: the claim `claim` (a dotted path into nested objects, e.g.
/// `realm_access.roles`) holds a string or a list of them; a token whose claim holds one of a
/// role's values has that role (the highest one wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    /// `SELFHEAL_OIDC_ROLES_CLAIM` (`groups`).
    pub claim: String,
    /// `SELFHEAL_OIDC_ADMINS`, `SELFHEAL_OIDC_OPERATORS`, `SELFHEAL_OIDC_VIEWERS`: comma-separated
    /// claim values. Unset, nobody has that role through the provider.
    pub grants: Vec<(AccessRole, Vec<String>)>,
}

impl RoleMap {
    /// The highest role the claims grant; `None`: signed in, but no role here.
    pub fn role_of(&self, claims: &serde_json::Value) -> Option<AccessRole> {
        // The whole name first: namespaced claims are URLs (`https://example.com/roles`).
        let value = match claims.get(&self.claim) {
            Some(value) => value,
            None => {
                let mut value = claims;
                for part in self.claim.split('.') {
                    value = value.get(part)?;
                }
                value
            }
        };
        let held: Vec<&str> = match value {
            serde_json::Value::String(s) => vec![s.as_str()],
            serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
            _ => return None,
        };
        self.grants
            .iter()
            .filter(|(_, values)| values.iter().any(|v| held.contains(&v.as_str())))
            .map(|(role, _)| *role)
            .max()
    }
}

/// A token or a session over plain HTTP is one anyone on the path may take: only loopback (a
/// provider or web on this machine) may go without TLS.
pub fn tls_or_loopback(url: &url::Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

/// `None` when `OIDC_PROVIDER_URL` is unset; any other OIDC variable then is a mistake.
pub(super) fn oidc_from_env<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<Option<OidcConfig>, ConfigError> {
    let Some(issuer) = env.optional("OIDC_PROVIDER_URL") else {
        for name in ["OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"] {
            if env.optional(name).is_some() {
                return Err(ConfigError::Malformed {
                    name,
                    reason: "set without OIDC_PROVIDER_URL".into(),
                });
            }
        }
        return Ok(None);
    };
    // Kept as written, trailing slash and all: the discovery document's `issuer` and every
    // token's `iss` are compared with it exactly (Auth0's end in `/`, Keycloak's do not).
    let issuer = issuer.trim().to_string();
    let url_of = |name: &'static str, value: &str| {
        let url = url::Url::parse(value).map_err(|e| ConfigError::Malformed {
            name,
            reason: format!("{value:?}: {e}"),
        })?;
        if !tls_or_loopback(&url) {
            return Err(ConfigError::Malformed {
                name,
                reason: format!("{value:?}: https only (http for loopback)"),
            });
        }
        Ok(())
    };
    url_of("OIDC_PROVIDER_URL", &issuer)?;
    let client_id = env.required("OIDC_CLIENT_ID")?.trim().to_string();
    let client_secret = SecretString::from(env.required("OIDC_CLIENT_SECRET")?);
    let session_key = env.required("SELFHEAL_SESSION_KEY")?;
    if session_key.trim().len() < 32 {
        return Err(ConfigError::Malformed {
            name: "SELFHEAL_SESSION_KEY",
            reason: "at least 32 characters (e.g. `openssl rand -hex 32`)".into(),
        });
    }
    let session_key = SecretString::from(session_key);
    let public_url = env
        .required("SELFHEAL_PUBLIC_URL")?
        .trim()
        .trim_end_matches('/')
        .to_string();
    url_of("SELFHEAL_PUBLIC_URL", &public_url)?;
    let mut grants = Vec::new();
    for (role, name) in [
        (AccessRole::Admin, "SELFHEAL_OIDC_ADMINS"),
        (AccessRole::Operator, "SELFHEAL_OIDC_OPERATORS"),
        (AccessRole::Viewer, "SELFHEAL_OIDC_VIEWERS"),
    ] {
        let values: Vec<String> = env
            .optional(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if !values.is_empty() {
            grants.push((role, values));
        }
    }
    if grants.is_empty() {
        return Err(ConfigError::Malformed {
            name: "SELFHEAL_OIDC_VIEWERS",
            reason: "no role is granted to anyone: set SELFHEAL_OIDC_VIEWERS, _OPERATORS or _ADMINS to claim values".into(),
        });
    }
    Ok(Some(OidcConfig {
        audience: env
            .optional("SELFHEAL_OIDC_AUDIENCE")
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| client_id.clone()),
        issuer,
        client_id,
        client_secret,
        session_key,
        public_url,
        roles: RoleMap {
            claim: env
                .optional("SELFHEAL_OIDC_ROLES_CLAIM")
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|| "groups".into()),
            grants,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map() -> RoleMap {
        RoleMap {
            claim: "realm_access.roles".into(),
            grants: vec![
                (AccessRole::Admin, vec!["platform".into()]),
                (AccessRole::Operator, vec!["sre".into(), "oncall".into()]),
                (AccessRole::Viewer, vec!["eng".into()]),
            ],
        }
    }

    #[test]
    fn the_highest_role_the_claims_name_wins_and_nothing_else_grants_one() {
        let m = map();
        let of = |v: serde_json::Value| m.role_of(&json!({"realm_access": {"roles": v}}));
        assert_eq!(of(json!(["eng", "oncall"])), Some(AccessRole::Operator));
        assert_eq!(of(json!(["eng", "platform"])), Some(AccessRole::Admin));
        assert_eq!(of(json!("eng")), Some(AccessRole::Viewer));
        assert_eq!(of(json!(["Eng", "sre "])), None, "values match exactly");
        assert_eq!(of(json!([["sre"]])), None);
        assert_eq!(of(json!({"sre": true})), None);
        assert_eq!(m.role_of(&json!({"roles": ["sre"]})), None, "another claim");
        assert_eq!(m.role_of(&json!({"realm_access": "sre"})), None);
        let namespaced = RoleMap {
            claim: "https://example.com/roles".into(),
            ..map()
        };
        assert_eq!(
            namespaced.role_of(&json!({"https://example.com/roles": ["sre"]})),
            Some(AccessRole::Operator)
        );
    }

    #[test]
    fn roles_order_and_parse() {
        assert!(AccessRole::Admin > AccessRole::Operator);
        assert!(AccessRole::Operator > AccessRole::Viewer);
        for role in AccessRole::ALL {
            assert_eq!(role.as_str().parse::<AccessRole>(), Ok(role));
        }
        assert!("root".parse::<AccessRole>().is_err());
    }
}
