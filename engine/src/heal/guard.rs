//! A patch that deletes or skips tests is never a fix.

use std::sync::LazyLock;

use regex::Regex;

static TEST_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|/)(tests?|__tests__|spec)/|(^|/)test_[^/]*\.py$|_test\.(go|py)$|\.(test|spec)\.[cm]?[jt]sx?$|Test\.java$")
        .expect("static regex")
});
static TEST_DEF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"#\[(tokio::)?test\]|^\s*(async\s+)?def test_|^\s*(it|test|describe)\(|^func Test|@Test\b"#).expect("static regex")
});
static SKIP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"#\[ignore|@pytest\.mark\.(skip|xfail)|\b(it|test|describe)\.skip\(|\bx(it|describe|test)\(|t\.Skip\(|@Disabled|@Ignore\b"#)
        .expect("static regex")
});

/// Why the unified diff is refused, if it is.
/// Whether a change goes near tests at all: a test file, a test's definition, an assertion.
/// A revert must not (the culprit that added or tightened a test is for people to undo).
pub fn touches_tests(diff: &str) -> Option<String> {
    let mut file = String::new();
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ b/").or(line.strip_prefix("--- a/")) {
            file = path.to_string();
            if TEST_PATH.is_match(&file) {
                return Some(format!("changes the test file {file}"));
            }
            continue;
        }
        let changed = (line.starts_with('+') && !line.starts_with("+++"))
            || (line.starts_with('-') && !line.starts_with("---"));
        if changed
            && (TEST_DEF.is_match(&line[1..]) || line.to_ascii_lowercase().contains("assert"))
        {
            return Some(format!(
                "changes a test or an assertion in {file}: {}",
                line[1..].trim()
            ));
        }
    }
    None
}

pub fn refuses(diff: &str) -> Option<String> {
    let mut file = String::new();
    for line in diff.lines() {
        if let Some(path) = line
            .strip_prefix("+++ ")
            .or_else(|| line.strip_prefix("--- "))
        {
            let path = path.trim_start_matches("a/").trim_start_matches("b/");
            if path != "/dev/null" {
                file = path.to_string();
            }
            if line.starts_with("+++ /dev/null") && TEST_PATH.is_match(&file) {
                return Some(format!("deletes test file {file}"));
            }
            continue;
        }
        if let Some(removed) = line.strip_prefix('-') {
            if TEST_DEF.is_match(removed) {
                return Some(format!("removes a test from {file}: {}", removed.trim()));
            }
        }
        if let Some(added) = line.strip_prefix('+') {
            if SKIP.is_match(added) {
                return Some(format!("skips a test in {file}: {}", added.trim()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{refuses, touches_tests};

    #[test]
    fn refuses_deleting_or_skipping_tests() {
        let delete = "diff --git a/tests/test_x.py b/tests/test_x.py\ndeleted file mode 100644\n--- a/tests/test_x.py\n+++ /dev/null\n@@ -1 +0,0 @@\n-def test_x(): pass\n";
        assert!(refuses(delete)
            .unwrap()
            .contains("deletes test file tests/test_x.py"));
        let remove =
            "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,0 @@\n-    #[test]\n-    fn t() {}\n";
        assert!(refuses(remove).unwrap().contains("removes a test"));
        let skip =
            "--- a/t.py\n+++ b/t.py\n@@ -1 +1,2 @@\n+@pytest.mark.skip\n def test_a(): pass\n";
        assert!(refuses(skip).unwrap().contains("skips a test"));
        let ignore =
            "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,2 @@\n+    #[ignore]\n     #[test]\n";
        assert!(refuses(ignore).is_some());
        let format = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,3 @@\n-pub struct A{x:u8}\n+pub struct A {\n+    x: u8,\n+}\n";
        assert_eq!(refuses(format), None);
    }

    #[test]
    fn a_change_near_tests_is_told_apart_from_one_that_is_not() {
        let code = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -2 +2 @@\n-    (c * 9.0 / 5.0 + 30.0)\n+    (c * 9.0 / 5.0 + 32.0)\n";
        assert_eq!(touches_tests(code), None);
        let assertion = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -9 +9 @@\n-        assert_eq!(f(37.0), 99);\n+        assert_eq!(f(37.0), 98);\n";
        assert!(touches_tests(assertion).unwrap().contains("assertion"));
        let file = "--- a/tests/it.rs\n+++ b/tests/it.rs\n@@ -1 +1 @@\n-a\n+b\n";
        assert!(touches_tests(file).unwrap().contains("tests/it.rs"));
        let definition = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -5,0 +5,2 @@\n+    #[test]\n+    fn more() {}\n";
        assert!(touches_tests(definition).is_some());
    }
}
