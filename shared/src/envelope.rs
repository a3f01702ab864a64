//! What ingest reads of every delivery whatever its event: the three columns of its row
//! (`action`, `installation.id`, `repository.id`), and that it is one JSON object. Read in one
//! pass that skips everything else without building it: a `workflow_run` delivery is about
//! 19 KB, and building it as a `serde_json::Value` (then writing it out again for Postgres)
//! cost more than anything else ingest does on the web's side. The payload is stored as the
//! text GitHub sent.
//!
//! Lenient as the `Value` lookups it replaces: a field of another type than expected is
//! absent, not an error. Stricter in one way: a top-level `action`, `installation` or
//! `repository` given twice is a 400 (`Value` kept the last; GitHub never sends one twice,
//! and which one counts would be a guess), and an `id` given twice in one of those is absent.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A delivery's body, checked to be one JSON object, and its row's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed JSON: {0}")]
    Malformed(serde_json::Error),
    #[error("payload is not a JSON object")]
    NotAnObject,
    #[error("invalid payload: {0}")]
    Invalid(serde_json::Error),
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    installation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    repository: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Id<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        // serde reads a struct from an array too (its fields in order): only an object is one.
        if !starts_an_object(body) {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => EnvelopeError::NotAnObject,
                    Err(e) => EnvelopeError::Malformed(e),
                },
            );
        }
        let fields: Fields = serde_json::from_slice(body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => EnvelopeError::Malformed(e),
                Category::Data => EnvelopeError::Invalid(e),
            }
        })?;
        Ok(Envelope {
            action: fields
                .action
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()),
            installation_id: fields.installation.and_then(id_of),
            repository_id: fields.repository.and_then(id_of),
        })
    }
}

fn starts_an_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// `{"id": <i64>, ...}`'s id, if the value is such an object.
fn id_of(raw: &RawValue) -> Option<i64> {
    if !starts_an_object(raw.get().as_bytes()) {
        return None;
    }
    let object: Id = serde_json::from_str(raw.get()).ok()?;
    serde_json::from_str::<i64>(object.id?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The lookups the envelope replaced, as they were.
    fn by_value(body: &[u8]) -> Option<Envelope> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.is_object().then(|| Envelope {
            action: v.get("action").and_then(Value::as_str).map(str::to_string),
            installation_id: v.pointer("/installation/id").and_then(Value::as_i64),
            repository_id: v.pointer("/repository/id").and_then(Value::as_i64),
        })
    }

    #[test]
    fn reads_what_the_value_lookups_read() {
        for payload in [
            json!({"action": "completed", "installation": {"id": 42, "node_id": "x"}, "repository": {"id": 7, "full_name": "o/r", "owner": {"id": 9}}}),
            json!({"zen": "no action"}),
            json!({"action": 3, "installation": [1], "repository": {"id": "7"}}),
            json!({"action": ["completed"], "installation": [{"id": 1}], "repository": [7, 8]}),
            json!({"action": "a\"b\\u00e9", "installation": {"id": 1.5}, "repository": {"id": -3}}),
            json!({"installation": null, "repository": {"id": u64::MAX}}),
            json!({"repository": {"name": "no id"}, "installation": {"id": i64::MIN}}),
            json!({"action": null, "nested": {"action": "not this one", "repository": {"id": 1}}}),
        ] {
            let body = serde_json::to_vec(&payload).unwrap();
            assert_eq!(Envelope::parse(&body).ok(), by_value(&body), "{payload}");
        }
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/github-webhooks/workflow_run/completed.payload.json"
        ))
        .unwrap();
        let envelope = Envelope::parse(&body).unwrap();
        assert_eq!(Some(envelope.clone()), by_value(&body));
        assert_eq!(envelope.action.as_deref(), Some("completed"));
        assert!(envelope.repository_id.is_some());
    }

    #[test]
    fn refuses_what_is_not_one_json_object() {
        for (body, said) in [
            (&b"{\"action\": \"completed\", "[..], "malformed JSON"),
            (b"{\"a\": 1} trailing", "malformed JSON"),
            (b"{\"a\": \"\\x\"}", "malformed JSON"),
            (b"[1, 2]", "payload is not a JSON object"),
            (b"  \"text\"", "payload is not a JSON object"),
            (b"null", "payload is not a JSON object"),
            (b"", "malformed JSON"),
            (
                br#"{"action": "completed", "action": "requested"}"#,
                "invalid payload: duplicate field `action`",
            ),
        ] {
            let e = Envelope::parse(body).unwrap_err();
            assert!(
                e.to_string().starts_with(said),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
