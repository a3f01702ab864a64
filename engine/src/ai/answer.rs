//! The answer a model must give (docs/ai.md): a JSON object with the root cause, the culprit
//! files, a confidence and the fix as a git-format unified diff. Everything in it is the
//! model's and so hostile until checked: the shape here, then (by the caller, before any
//! sandbox) the paths against the failing commit's tree, the diff against the checkout, and the
//! invariants every fix keeps.

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub root_cause: String,
    pub culprit_files: Vec<Culprit>,
    pub confidence: f64,
    pub change: Change,
}

/// The fix, in one of the two forms the contract allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A git-format unified diff.
    Patch(String),
    /// Lazy edits for Morph to merge, one per file (only when Morph is configured).
    Edits(Vec<Edit>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub path: String,
    /// The changed lines, with `// ... existing code ...` for what stays.
    pub update: String,
}

/// The answer as sent; [`parse`] makes an [`Answer`] of it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    root_cause: String,
    culprit_files: Vec<Culprit>,
    confidence: f64,
    patch: Option<String>,
    #[serde(default)]
    edits: Option<Vec<Edit>>,
}

/// At most this many files edited, each update at most this long.
const EDITS: usize = 20;
const UPDATE_CAP: usize = 256 * 1024;

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
/// services' structured outputs take it. With `edits` (Morph configured) the fix is either a
/// patch or lazy edits, the other null.
pub fn schema(edits: bool) -> Value {
    let mut schema = json!({
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
            // Bounds are checked on this side: strict schemas of some models refuse them.
            "confidence": {"type": "number", "description": "From 0 to 1."},
            "patch": {"type": "string", "description": "The fix as a git diff: `diff --git a/P b/P`, `--- a/P`, `+++ b/P`, paths relative to the repository root."},
        },
    });
    if edits {
        schema["required"] = json!([
            "root_cause",
            "culprit_files",
            "confidence",
            "patch",
            "edits"
        ]);
        schema["properties"]["patch"] = json!({"type": ["string", "null"], "description": "The fix as a git diff (`diff --git a/P b/P`, `--- a/P`, `+++ b/P`), or null when edits are given."});
        schema["properties"]["edits"] = json!({
            "type": ["array", "null"],
            "description": "Or the fix as edits of existing files, one per file: the changed lines with `// ... existing code ...` for unchanged code between them; null when a patch is given.",
            "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["path", "update"],
                "properties": {
                    "path": {"type": "string", "description": "Relative to the repository root."},
                    "update": {"type": "string"},
                },
            },
        });
    }
    schema
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
/// despite the schema, is taken off). Edits are taken only when `edits` (Morph configured).
pub fn parse(json: &str, edits: bool) -> Result<Answer, AnswerError> {
    let trimmed = json.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    let raw: Raw = serde_json::from_str(unfenced).map_err(|e| AnswerError::Shape(e.to_string()))?;
    let change = match (raw.patch, raw.edits) {
        (Some(patch), None) => Change::Patch(patch),
        (None, Some(list)) if edits => Change::Edits(list),
        (None, Some(_)) => {
            return Err(AnswerError::Shape(
                "edits are taken only with Morph configured: give a patch".into(),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(AnswerError::Shape(
                "both a patch and edits: give one, the other null".into(),
            ))
        }
        (None, None) => return Err(AnswerError::Shape("no patch and no edits".into())),
    };
    let answer = Answer {
        root_cause: raw.root_cause,
        culprit_files: raw.culprit_files,
        confidence: raw.confidence,
        change,
    };
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
    match &answer.change {
        Change::Patch(patch) => {
            patched_paths(patch)?;
        }
        Change::Edits(list) => {
            if list.is_empty() || list.len() > EDITS {
                return Err(AnswerError::Bounds {
                    field: "edits",
                    why: format!("{} edits: from 1 to {EDITS}", list.len()),
                });
            }
            let mut seen = std::collections::HashSet::new();
            for edit in list {
                if !plain(&edit.path) {
                    return Err(AnswerError::Path(edit.path.clone()));
                }
                if !seen.insert(edit.path.as_str()) {
                    return Err(AnswerError::Bounds {
                        field: "edits",
                        why: format!("{} is edited twice: one edit per file", edit.path),
                    });
                }
                if edit.update.trim().is_empty() || edit.update.len() > UPDATE_CAP {
                    return Err(AnswerError::Bounds {
                        field: "edits",
                        why: format!("the update of {} is empty or over 256 KiB", edit.path),
                    });
                }
            }
        }
    }
    Ok(answer)
}

/// The files a git-format diff touches, each checked to be a plain relative path with matching
/// `diff --git`, `---` and `+++` lines (`/dev/null` for a new or deleted file). The diff is read
/// as `git apply` reads it: a header, then hunks whose lines are counted; anything else (a
/// second old-style section, a rename or copy, a mode change, binary content) is refused, so no
/// file can be changed that this list does not name.
pub fn patched_paths(patch: &str) -> Result<Vec<String>, AnswerError> {
    if patch.len() > 1 << 20 {
        return Err(AnswerError::Patch("over 1 MiB".into()));
    }
    let mut paths = Vec::new();
    let mut lines = patch.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("diff --git ") else {
            return Err(AnswerError::Patch(format!(
                "{:?} is outside any file's section",
                line.chars().take(60).collect::<String>()
            )));
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
        if a != b {
            return Err(AnswerError::Patch(format!("a rename or copy: {header:?}")));
        }
        // Extended header lines: only these (no rename, copy, mode change or binary).
        while let Some(next) = lines.peek() {
            let allowed = next.starts_with("index ")
                || next.starts_with("new file mode 100644")
                || next.starts_with("deleted file mode 100644");
            if !allowed {
                break;
            }
            lines.next();
        }
        let minus = lines.next().unwrap_or_default();
        let plus = lines.next().unwrap_or_default();
        let old = minus
            .strip_prefix("--- ")
            .ok_or_else(|| AnswerError::Patch(format!("{header:?} has no --- line")))?;
        let new = plus
            .strip_prefix("+++ ")
            .ok_or_else(|| AnswerError::Patch(format!("{header:?} has no +++ line")))?;
        let old = old.split('\t').next().unwrap_or_default();
        let new = new.split('\t').next().unwrap_or_default();
        if (old != "/dev/null" && old != format!("a/{a}"))
            || (new != "/dev/null" && new != format!("b/{b}"))
        {
            return Err(AnswerError::Patch(format!(
                "--- {old} / +++ {new} do not match {header:?}"
            )));
        }
        // Hunks, their lines counted as their headers say.
        let mut hunks = 0;
        while lines.peek().is_some_and(|l| l.starts_with("@@ ")) {
            let hunk = lines.next().unwrap_or_default();
            let (mut old_left, mut new_left) = hunk_counts(hunk)
                .ok_or_else(|| AnswerError::Patch(format!("a malformed hunk header {hunk:?}")))?;
            while old_left > 0 || new_left > 0 {
                let Some(body) = lines.next() else {
                    return Err(AnswerError::Patch(format!("{hunk:?} ends early")));
                };
                match body.chars().next() {
                    Some(' ') | None => {
                        old_left = old_left.checked_sub(1).ok_or_else(|| short(hunk))?;
                        new_left = new_left.checked_sub(1).ok_or_else(|| short(hunk))?;
                    }
                    Some('-') => old_left = old_left.checked_sub(1).ok_or_else(|| short(hunk))?,
                    Some('+') => new_left = new_left.checked_sub(1).ok_or_else(|| short(hunk))?,
                    Some('\\') => {}
                    Some(_) => return Err(short(hunk)),
                }
            }
            while lines.peek().is_some_and(|l| l.starts_with("\\ No newline")) {
                lines.next();
            }
            hunks += 1;
        }
        if hunks == 0 {
            return Err(AnswerError::Patch(format!("{header:?} has no hunk")));
        }
        paths.push(b.to_string());
    }
    if paths.is_empty() {
        return Err(AnswerError::Patch("it changes no file".into()));
    }
    Ok(paths)
}

fn short(hunk: &str) -> AnswerError {
    AnswerError::Patch(format!("the lines of {hunk:?} do not match its counts"))
}

/// `@@ -a[,b] +c[,d] @@`: the old and new line counts (1 when left out).
fn hunk_counts(header: &str) -> Option<(usize, usize)> {
    let rest = header.strip_prefix("@@ -")?;
    let (ranges, _) = rest.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let count = |range: &str| -> Option<usize> {
        match range.split_once(',') {
            Some((start, n)) => {
                start.parse::<usize>().ok()?;
                n.parse().ok()
            }
            None => range.parse::<usize>().ok().map(|_| 1),
        }
    };
    Some((count(old)?, count(new)?))
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
        let a = parse(&answer(PATCH, "src/lib.rs", 0.8), false).unwrap();
        assert_eq!(a.culprit_files[0].line, Some(3));
        assert_eq!(a.change, Change::Patch(PATCH.into()));
        let fenced = format!("```json\n{}\n```", answer(PATCH, "src/lib.rs", 0.8));
        assert_eq!(parse(&fenced, false).unwrap(), a);
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
                matches!(
                    parse(&answer(PATCH, path, 0.5), false),
                    Err(AnswerError::Path(_))
                ),
                "{path:?}"
            );
        }
        assert!(matches!(
            parse(&answer(PATCH, "a", 1.5), false),
            Err(AnswerError::Bounds { .. })
        ));
        assert!(matches!(
            parse("{\"root_cause\": \"x\"}", false),
            Err(AnswerError::Shape(_))
        ));
        // Fields the contract does not have are refused, not ignored.
        let extra = json!({"root_cause": "x", "culprit_files": [], "confidence": 0.5,
            "patch": PATCH, "shell": "rm -rf /"});
        assert!(matches!(
            parse(&extra.to_string(), false),
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
        // A second section git would apply but the header list would not name, a rename, and
        // hunk lines that do not match their counts.
        let smuggled = format!("{PATCH}--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n@@ -1 +1 @@\n-a\n+b\n");
        assert!(matches!(
            patched_paths(&smuggled),
            Err(AnswerError::Patch(_))
        ));
        let rename = "diff --git a/tests/it.rs b/src/old.rs\nsimilarity index 100%\nrename from tests/it.rs\nrename to src/old.rs\n";
        assert!(matches!(patched_paths(rename), Err(AnswerError::Patch(_))));
        let miscounted = PATCH.replace("@@ -1 +1 @@", "@@ -1,3 +1,3 @@");
        assert!(matches!(
            patched_paths(&miscounted),
            Err(AnswerError::Patch(_))
        ));
        // A new file is /dev/null on its --- side.
        let new = "diff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(patched_paths(new).unwrap(), vec!["n.txt"]);
    }

    #[test]
    fn edits_are_taken_only_with_morph_one_per_plain_path() {
        let with = |patch: Value, edits: Value| {
            json!({"root_cause": "a call site was not updated", "culprit_files": [],
                "confidence": 0.7, "patch": patch, "edits": edits})
            .to_string()
        };
        let edit =
            json!([{"path": "src/lib.rs", "update": "// ... existing code ...\nfn f() {}\n"}]);
        let a = parse(&with(Value::Null, edit.clone()), true).unwrap();
        let Change::Edits(list) = &a.change else {
            panic!("{a:?}")
        };
        assert_eq!(list[0].path, "src/lib.rs");
        // Without Morph an answer of edits is refused; a patch with null edits is a patch.
        assert!(matches!(
            parse(&with(Value::Null, edit.clone()), false),
            Err(AnswerError::Shape(_))
        ));
        assert!(matches!(
            parse(&with(PATCH.into(), Value::Null), true)
                .unwrap()
                .change,
            Change::Patch(_)
        ));
        for (patch, edits) in [(PATCH.into(), edit.clone()), (Value::Null, Value::Null)] {
            assert!(
                matches!(parse(&with(patch, edits), true), Err(AnswerError::Shape(_))),
                "one of the two, never both or neither"
            );
        }
        let climbing = json!([{"path": "../.ssh/authorized_keys", "update": "x"}]);
        assert!(matches!(
            parse(&with(Value::Null, climbing), true),
            Err(AnswerError::Path(_))
        ));
        let twice = json!([{"path": "a.rs", "update": "x"}, {"path": "a.rs", "update": "y"}]);
        assert!(matches!(
            parse(&with(Value::Null, twice), true),
            Err(AnswerError::Bounds { .. })
        ));
        assert!(matches!(
            parse(&with(Value::Null, json!([])), true),
            Err(AnswerError::Bounds { .. })
        ));
        // The strict schema names both fields, each nullable, only with Morph.
        assert_eq!(schema(true)["required"].as_array().unwrap().len(), 5);
        assert!(schema(false)["properties"].get("edits").is_none());
    }
}
