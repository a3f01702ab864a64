//! A failure's identity across runs and repositories: class + tool + the message with
//! everything that varies between occurrences (paths, numbers, hashes, times) taken out.

use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest, Sha256};

use super::Class;

static VOLATILE: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?",
            "<time>",
        ),
        (r"\b[0-9a-f]{7,64}\b", "<hash>"),
        (r"(?:[A-Za-z]:)?(?:[\w.@+-]*[/\\])+([\w.@+-]+)", "$1"),
        (r":\d+(?::\d+)?\b", ""),
        (r"\b\d+(?:\.\d+)*\b", "<n>"),
        (r"\s+", " "),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("static regex"), r))
    .collect()
});

pub fn normalise(message: &str) -> String {
    let mut s = message.trim().to_string();
    for (re, replacement) in VOLATILE.iter() {
        s = re.replace_all(&s, *replacement).into_owned();
    }
    s.trim().to_string()
}

pub fn fingerprint(
    class: Class,
    tool: Option<&str>,
    message: &str,
    failing_tests: &[String],
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(class.as_str());
    hasher.update([0x1f]);
    hasher.update(tool.unwrap_or(""));
    hasher.update([0x1f]);
    hasher.update(normalise(message));
    for test in failing_tests {
        hasher.update([0x1f]);
        // Parametrised ids vary in their numbers; the test's name does not.
        hasher.update(normalise(test));
    }
    hex::encode(&hasher.finalize()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_varies() {
        assert_eq!(
            normalise("panicked at /home/runner/work/a/a/src/lib.rs:7:9 at 2026-11-20T09:14:04.0960000Z (commit 3484a3fb816e)"),
            "panicked at lib.rs at <time> (commit <hash>)"
        );
        assert_eq!(normalise("assert 98 == 99"), "assert <n> == <n>");
    }
}
