//! Signed cookies: a person's session (who, which role, since when) and a sign-in under way
//! (its OIDC state, nonce and PKCE verifier). Stateless, so every web replica reads what
//! another wrote; signed with a key derived from the configured secrets, so rotating one
//! ends every session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

/// `<base64url JSON>.<hex HMAC-SHA256 of purpose and JSON>`.
#[derive(Clone)]
pub struct Keys {
    key: [u8; 32],
}

impl Keys {
    /// From every secret that grants entry, so none of them can be changed without ending
    /// the sessions it let in.
    pub fn derive(secrets: &[&str]) -> Keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"selfheal dashboard session v2")
            .expect("HMAC takes a key of any length");
        for secret in secrets {
            mac.update(&(secret.len() as u64).to_be_bytes());
            mac.update(secret.as_bytes());
        }
        Keys {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, purpose: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// `purpose` keeps one kind of cookie from being replayed as another.
    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let json = serde_json::to_vec(value).expect("serialisable");
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            hex::encode(self.mac(purpose, &json).finalize().into_bytes())
        )
    }

    pub fn open<T: DeserializeOwned>(&self, purpose: &str, sealed: &str) -> Option<T> {
        let (body, tag) = sealed.split_once('.')?;
        let json = URL_SAFE_NO_PAD.decode(body).ok()?;
        self.mac(purpose, &json)
            .verify_slice(&hex::decode(tag).ok()?)
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Compares a token someone sent with the configured one in constant time, whatever their
    /// lengths (through HMACs of both).
    pub fn same(&self, given: &str, expected: &str) -> bool {
        let digest = |v: &str| self.mac("token", v.as_bytes());
        let expected = digest(expected).finalize().into_bytes();
        digest(given).verify_slice(&expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_purpose_untouched() {
        let keys = Keys::derive(&["secret-a"]);
        let sealed = keys.seal("session", &("alice", 3));
        assert_eq!(
            keys.open::<(String, i32)>("session", &sealed),
            Some(("alice".into(), 3))
        );
        assert_eq!(keys.open::<(String, i32)>("login", &sealed), None);
        assert_eq!(
            Keys::derive(&["secret-b"]).open::<(String, i32)>("session", &sealed),
            None
        );
        // The same secrets split otherwise derive another key.
        assert_eq!(
            Keys::derive(&["secret-", "a"]).open::<(String, i32)>("session", &sealed),
            None
        );
        let (body, tag) = sealed.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(br#"["alice",9]"#);
        assert_eq!(
            keys.open::<(String, i32)>("session", &format!("{forged}.{tag}")),
            None
        );
        assert_eq!(keys.open::<(String, i32)>("session", body), None);
        assert!(keys.same("t0ken", "t0ken"));
        assert!(!keys.same("t0ke", "t0ken"));
    }
}
