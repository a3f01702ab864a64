//! The answer a model must give (docs/ai.md): a JSON object with the root cause, the culprit
//! files, a confidence and the fix as a git-format unified diff. Everything in it is the
//! model's and so hostile until checked: the shape here, then (by the caller, before any
//! sandbox) the paths against the failing commit's tree, the diff against the checkout, and the
//! invariants every fix keeps.

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub root_cause: String,
    pub culprit_files: Vec<Culprit>,
    pub confidence: f64,
    pub patch: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Culprit {
    pub path: String,
    pub line: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnswerError {
    #[error("the answer is not the required JSON object: {0}")]
    Shape(String),
    #[error("the answer's {field} is out of bounds: {why}")]
    Bounds { field: &'static str, why: String },
    #[error("the answer names a path that is not a plain path inside the repository: {0:?}")]
    Path(String),
    #[error("the patch is not a git-format unified diff: {0}")]
    Patch(String),
}

/// The answer's JSON schema, strict (every property required, nothing else allowed), as both
/// services' structured outputs take it.
pub fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["root_cause", "culprit_files", "confidence", "patch"],
        "properties": {
            "root_cause": {"type": "string", "description": "Why the build failed, in a few sentences."},
            "culprit_files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["path", "line"],
                    "properties": {
                        "path": {"type": "string", "description": "Relative to the repository root."},
                        "line": {"type": ["integer", "null"]},
                    },
                },
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "patch": {"type": "string", "description": "The fix as a git diff: `diff --git a/P b/P`, `--- a/P`, `+++ b/P`, paths relative to the repository root."},
        },
    })
}

/// A path as the answer may name one: relative, plain, inside the repository.
fn plain(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Parses and checks the answer's shape (a code fence around it, which some local models add
/// despite the schema, is taken off).
pub fn parse(json: &str) -> Result<Answer, AnswerError> {
    let trimmed = json.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    let answer: Answer =
        serde_json::from_str(unfenced).map_err(|e| AnswerError::Shape(e.to_string()))?;
    if !(0.0..=1.0).contains(&answer.confidence) {
        return Err(AnswerError::Bounds {
            field: "confidence",
            why: format!("{} is not between 0 and 1", answer.confidence),
        });
    }
    if answer.root_cause.trim().is_empty() || answer.root_cause.len() > 4000 {
        return Err(AnswerError::Bounds {
            field: "root_cause",
            why: "empty or over 4000 bytes".into(),
        });
    }
    if answer.culprit_files.len() > 50 {
        return Err(AnswerError::Bounds {
            field: "culprit_files",
            why: "more than 50".into(),
        });
    }
    for culprit in &answer.culprit_files {
        if !plain(&culprit.path) {
            return Err(AnswerError::Path(culprit.path.clone()));
        }
    }
    patched_paths(&answer.patch)?;
    Ok(answer)
}

/// The files a git-format diff touches, each checked to be a plain relative path with matching
/// `diff --git`, `---` and `+++` lines (`/dev/null` for a new or deleted file).
pub fn patched_paths(patch: &str) -> Result<Vec<String>, AnswerError> {
    if patch.len() > 1 << 20 {
        return Err(AnswerError::Patch("over 1 MiB".into()));
    }
    let mut paths = Vec::new();
    let mut lines = patch.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("diff --git ") else {
            if paths.is_empty() && !line.trim().is_empty() {
                return Err(AnswerError::Patch(format!(
                    "it starts with {:?}, not `diff --git`",
                    line.chars().take(60).collect::<String>()
                )));
            }
            continue;
        };
        let (a, b) = header
            .split_once(' ')
            .ok_or_else(|| AnswerError::Patch(format!("a header without two paths: {header:?}")))?;
        let (Some(a), Some(b)) = (a.strip_prefix("a/"), b.strip_prefix("b/")) else {
            return Err(AnswerError::Patch(format!(
                "paths without a/ and b/: {header:?}"
            )));
        };
        for path in [a, b] {
            if !plain(path) {
                return Err(AnswerError::Path(path.to_string()));
            }
        }
        // The ---/+++ pair (after index and mode lines) must name the same file.
        for (prefix, side, expected) in [("--- ", "a/", a), ("+++ ", "b/", b)] {
            let found = loop {
                match lines.next() {
                    Some(l) if l.starts_with(prefix) => break l[prefix.len()..].to_string(),
                    Some(l) if l.starts_with("diff --git ") || l.starts_with("@@") => {
                        return Err(AnswerError::Patch(format!(
                            "{header:?} has no {prefix}line"
                        )))
                    }
                    Some(_) => continue,
                    None => return Err(AnswerError::Patch(format!("{header:?} ends early"))),
                }
            };
            let found = found.split('\t').next().unwrap_or_default();
            if found != "/dev/null" && found != format!("{side}{expected}") {
                return Err(AnswerError::Patch(format!(
                    "{prefix}{found} does not match {header:?}"
                )));
            }
        }
        paths.push(b.to_string());
    }
    if paths.is_empty() {
        return Err(AnswerError::Patch("it changes no file".into()));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/src/lib.rs b/src/lib.rs\nindex 1..2 100644\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-old\n+new\n";

    fn answer(patch: &str, path: &str, confidence: f64) -> String {
        json!({"root_cause": "a call site was not updated", "culprit_files": [{"path": path, "line": 3}],
            "confidence": confidence, "patch": patch})
        .to_string()
    }

    #[test]
    fn a_well_formed_answer_is_taken_fenced_or_not() {
        let a = parse(&answer(PATCH, "src/lib.rs", 0.8)).unwrap();
        assert_eq!(a.culprit_files[0].line, Some(3));
        let fenced = format!("```json\n{}\n```", answer(PATCH, "src/lib.rs", 0.8));
        assert_eq!(parse(&fenced).unwrap(), a);
        assert_eq!(patched_paths(PATCH).unwrap(), vec!["src/lib.rs"]);
    }

    #[test]
    fn hostile_or_sloppy_answers_are_refused_with_the_reason() {
        for path in [
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "a\\b",
            "",
            "a/./b",
        ] {
            assert!(
                matches!(parse(&answer(PATCH, path, 0.5)), Err(AnswerError::Path(_))),
                "{path:?}"
            );
        }
        assert!(matches!(
            parse(&answer(PATCH, "a", 1.5)),
            Err(AnswerError::Bounds { .. })
        ));
        assert!(matches!(
            parse("{\"root_cause\": \"x\"}"),
            Err(AnswerError::Shape(_))
        ));
        // Fields the contract does not have are refused, not ignored.
        let extra = json!({"root_cause": "x", "culprit_files": [], "confidence": 0.5,
            "patch": PATCH, "shell": "rm -rf /"});
        assert!(matches!(
            parse(&extra.to_string()),
            Err(AnswerError::Shape(_))
        ));
        // A diff that climbs out, or whose headers disagree, or that is not a git diff.
        let climbing = PATCH.replace("src/lib.rs", "../../etc/cron.d/x");
        assert!(matches!(
            patched_paths(&climbing),
            Err(AnswerError::Path(_))
        ));
        let mismatched = PATCH.replace("+++ b/src/lib.rs", "+++ b/src/other.rs");
        assert!(matches!(
            patched_paths(&mismatched),
            Err(AnswerError::Patch(_))
        ));
        assert!(matches!(
            patched_paths("--- a/x\n+++ b/x\n"),
            Err(AnswerError::Patch(_))
        ));
        assert!(matches!(patched_paths(""), Err(AnswerError::Patch(_))));
        // A new file is /dev/null on its --- side.
        let new = "diff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(patched_paths(new).unwrap(), vec!["n.txt"]);
    }
}
