//! `.github/selfheal.yml` on the repository's default branch: what selfheal may deliver
//! there. Unknown keys and bad values are reported (a failed check run), never ignored, and a
//! repository with a broken config gets nothing delivered.

use serde::Deserialize;

use crate::diagnose::Class;

pub const PATH: &str = ".github/selfheal.yml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Classes selfheal may act on (all when absent).
    #[serde(default)]
    pub enabled_classes: Option<Vec<Class>>,
    #[serde(default = "default_max_diff_lines")]
    pub max_diff_lines: usize,
    /// Path prefixes selfheal must never touch.
    #[serde(default = "default_protected_paths")]
    pub protected_paths: Vec<String>,
    /// Diagnose and validate, but write nothing to GitHub.
    #[serde(default)]
    pub dry_run: bool,
    /// Classes whose fixes the merge policy may merge.
    #[serde(default = "default_auto_merge_classes")]
    pub auto_merge_classes: Vec<Class>,
}

fn default_auto_merge_classes() -> Vec<Class> {
    vec![Class::Format, Class::Lint]
}

fn default_max_diff_lines() -> usize {
    500
}

fn default_protected_paths() -> Vec<String> {
    vec![".github/workflows/".into()]
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            enabled_classes: None,
            max_diff_lines: default_max_diff_lines(),
            protected_paths: default_protected_paths(),
            dry_run: false,
            auto_merge_classes: default_auto_merge_classes(),
        }
    }
}

pub fn parse(text: &str) -> Result<RepoConfig, String> {
    if text.trim().is_empty() {
        return Ok(RepoConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

impl RepoConfig {
    /// Why this delivery is not allowed here, if it is not.
    pub fn refuses(&self, class: Class, diff: Option<&str>) -> Option<String> {
        if let Some(enabled) = &self.enabled_classes {
            if !enabled.contains(&class) {
                return Some(format!(
                    "class {} is not in enabled_classes of {PATH}",
                    class.as_str()
                ));
            }
        }
        let diff = diff?;
        let changed = changed_lines(diff);
        if changed > self.max_diff_lines {
            return Some(format!(
                "the diff changes {changed} lines, over max_diff_lines {} of {PATH}",
                self.max_diff_lines
            ));
        }
        for path in touched_paths(diff) {
            if let Some(p) = self
                .protected_paths
                .iter()
                .find(|p| path.starts_with(p.as_str()))
            {
                return Some(format!(
                    "the diff touches {path}, under protected path {p} of {PATH}"
                ));
            }
        }
        None
    }
}

/// Lines a unified diff adds or removes (file headers excluded).
pub fn changed_lines(diff: &str) -> usize {
    diff.lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .count()
}

/// The files a unified diff touches, once each, in order.
pub fn touched_paths(diff: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for line in diff
        .lines()
        .filter(|l| l.starts_with("+++ ") || l.starts_with("--- "))
    {
        let path = line[4..].trim_start_matches("a/").trim_start_matches("b/");
        if path != "/dev/null" && !paths.iter().any(|p| p == path) {
            paths.push(path.to_string());
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_bad_keys_and_values() {
        let c = parse("enabled_classes: [format, lint]\nmax_diff_lines: 10\nprotected_paths: [src/generated/]\n").unwrap();
        assert_eq!(c.enabled_classes, Some(vec![Class::Format, Class::Lint]));
        assert_eq!(parse("").unwrap(), RepoConfig::default());
        let err = parse("auto_merg: true\n").unwrap_err();
        assert!(err.contains("unknown field `auto_merg`"), "{err}");
        let err = parse("max_diff_lines: lots\n").unwrap_err();
        assert!(err.contains("max_diff_lines"), "{err}");
        let err = parse("enabled_classes: [formatting]\n").unwrap_err();
        assert!(err.contains("formatting"), "{err}");
    }

    #[test]
    fn counts_changed_lines_and_touched_paths() {
        let diff = "diff --git a/x b/x\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1 @@\n-a\n+b\n--- a/old.rs\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n";
        assert_eq!(changed_lines(diff), 3);
        assert_eq!(touched_paths(diff), vec!["src/a.rs", "old.rs"]);
    }

    #[test]
    fn refuses_disabled_classes_big_diffs_and_protected_paths() {
        let diff = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1,3 @@\n-a\n+b\n+c\n";
        let c = parse("enabled_classes: [lint]\n").unwrap();
        assert!(c
            .refuses(Class::Format, Some(diff))
            .unwrap()
            .contains("not in enabled_classes"));
        let c = parse("max_diff_lines: 2\n").unwrap();
        assert!(c
            .refuses(Class::Format, Some(diff))
            .unwrap()
            .contains("changes 3 lines"));
        let c = parse("protected_paths: [src/]\n").unwrap();
        assert!(c
            .refuses(Class::Format, Some(diff))
            .unwrap()
            .contains("protected path src/"));
        assert_eq!(
            RepoConfig::default().refuses(Class::Format, Some(diff)),
            None
        );
    }
}
