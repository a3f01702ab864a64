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
            // Bounds are checked on this side: strict schemas of some models refuse them.
            "confidence": {"type": "number", "description": "From 0 to 1."},
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
}
