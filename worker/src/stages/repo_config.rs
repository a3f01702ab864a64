//! `.github/selfheal.yml` on the repository's default branch: what selfheal may deliver
//! there. Unknown keys and bad values are reported (a failed check run), never ignored, and a
//! repository with a broken config gets nothing delivered. Org-wide defaults come from the
//! file `SELFHEAL_REPO_DEFAULTS` names (same keys); a repository's own keys override them.

use selfheal_shared::github::Installation;
use selfheal_shared::github::{GitHubApp, GitHubError};
use selfheal_shared::runs::Run;
use serde::Deserialize;
use serde_json::json;

use super::download::api_error;
use super::report::check_run;
use super::StageError;
use crate::diagnose::Class;
use crate::WorkerContext;

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
    /// Asked to review each pull request selfheal opens: logins, or `org/team` for a team.
    #[serde(default)]
    pub reviewers: Vec<String>,
    /// Commits selfheal may push for one incident (the first fix and the ones made after the
    /// fix's own CI failed); then it comments with what it tried and stops.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How an allowed fix is merged.
    #[serde(default)]
    pub merge_method: MergeMethod,
    /// The repository's CI apps other than GitHub Actions, by slug: a green check suite or
    /// check run of one of them on selfheal's fix re-triggers verify; any other app's (a DCO
    /// or CLA bot going green first) does not.
    #[serde(default)]
    pub external_ci: Vec<String>,
    /// CI that reports commit statuses: context -> the login that posts them (e.g.
    /// `ci/jenkins: jenkins-bot`). Anyone who may write statuses can post any context, so a
    /// green status re-triggers verify only from that login.
    #[serde(default)]
    pub external_statuses: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    #[default]
    Squash,
    Merge,
    Rebase,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Squash => "squash",
            MergeMethod::Merge => "merge",
            MergeMethod::Rebase => "rebase",
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_auto_merge_classes() -> Vec<Class> {
    vec![Class::Format, Class::Lint]
}

fn default_max_diff_lines() -> usize {
    selfheal_engine::invariants::DEFAULT_MAX_DIFF_LINES
}

fn default_protected_paths() -> Vec<String> {
    selfheal_engine::invariants::DEFAULT_PROTECTED_PATHS
        .map(String::from)
        .to_vec()
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            enabled_classes: None,
            max_diff_lines: default_max_diff_lines(),
            protected_paths: default_protected_paths(),
            dry_run: false,
            auto_merge_classes: default_auto_merge_classes(),
            reviewers: Vec::new(),
            max_attempts: default_max_attempts(),
            merge_method: MergeMethod::default(),
            external_ci: Vec::new(),
            external_statuses: Default::default(),
        }
    }
}

#[cfg(test)]
pub fn parse(text: &str) -> Result<RepoConfig, String> {
    parse_with_defaults(&Defaults::default(), text)
}

/// Org-wide defaults: a mapping of the same keys, checked when the worker starts.
#[derive(Debug, Clone, Default)]
pub struct Defaults(serde_yaml_ng::Mapping);

impl Defaults {
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        let mapping = match value {
            serde_yaml_ng::Value::Null => serde_yaml_ng::Mapping::new(),
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => return Err("expected a mapping of selfheal.yml keys".into()),
        };
        let defaults = Defaults(mapping);
        // The same rules as a repository's file: a typo here would silently apply everywhere.
        parse_keys(&defaults.0, &serde_yaml_ng::Value::Null)?;
        Ok(defaults)
    }
}

/// The repository's file over the org-wide defaults. Keys of taste (reviewers, merge method)
/// are the repository's to choose; keys of safety are floors it can tighten but not loosen,
/// since whoever can push to the repository can edit its file: protected paths are the union,
/// limits the minimum, auto-merge classes and enabled classes the intersection, and dry run
/// holds if either says so. Without a defaults file, selfheal's own defaults are the floor.
pub fn parse_with_defaults(defaults: &Defaults, text: &str) -> Result<RepoConfig, String> {
    let mut floor = parse_keys(&defaults.0, &serde_yaml_ng::Value::Null)?;
    // An org that protects one more path still protects selfheal's own defaults.
    for p in default_protected_paths() {
        if !floor.protected_paths.contains(&p) {
            floor.protected_paths.push(p);
        }
    }
    let mut c = parse_keys(&defaults.0, &parse_yaml(text)?)?;
    for p in floor.protected_paths {
        if !c.protected_paths.contains(&p) {
            c.protected_paths.push(p);
        }
    }
    c.max_diff_lines = c.max_diff_lines.min(floor.max_diff_lines);
    c.max_attempts = c.max_attempts.min(floor.max_attempts);
    c.auto_merge_classes
        .retain(|class| floor.auto_merge_classes.contains(class));
    c.enabled_classes = match (c.enabled_classes, floor.enabled_classes) {
        (Some(own), Some(allowed)) => {
            Some(own.into_iter().filter(|x| allowed.contains(x)).collect())
        }
        (own, allowed) => own.or(allowed),
    };
    c.dry_run |= floor.dry_run;
    Ok(c)
}

fn parse_yaml(text: &str) -> Result<serde_yaml_ng::Value, String> {
    if text.trim().is_empty() {
        Ok(serde_yaml_ng::Value::Null)
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
    }
}

/// The repository's keys over the defaults' keys, key by key.
fn parse_keys(
    defaults: &serde_yaml_ng::Mapping,
    own: &serde_yaml_ng::Value,
) -> Result<RepoConfig, String> {
    let mut merged = defaults.clone();
    match own {
        serde_yaml_ng::Value::Null => {}
        serde_yaml_ng::Value::Mapping(m) => merged.extend(m.clone()),
        _ => return Err("expected a mapping of keys, e.g. `max_diff_lines: 200`".into()),
    }
    serde_path_to_error::deserialize(serde_yaml_ng::Value::Mapping(merged)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

impl RepoConfig {
    /// The protected path prefix `path` falls under, if any.
    pub fn protected_by(&self, path: &str) -> Option<&str> {
        self.protected_paths
            .iter()
            .map(String::as_str)
            .find(|p| path.starts_with(p))
    }

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
            if let Some(p) = self.protected_by(&path) {
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

/// The repository's `.github/selfheal.yml` from its default branch (defaults when absent);
/// `Err` carries what is wrong with it.
pub async fn load(
    ctx: &WorkerContext,
    crab: &Installation,
    repo: &str,
) -> Result<Result<RepoConfig, String>, StageError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/vnd.github.raw+json"),
    );
    let response = crab
        ._get_with_headers(format!("/repos/{repo}/contents/{}", PATH), headers)
        .await
        .map_err(|e| api_error(e, PATH))?;
    match response.status().as_u16() {
        404 => Ok(parse_with_defaults(&ctx.repo_defaults, "")),
        200 => {
            let text = crab
                .body_to_string(response)
                .await
                .map_err(|e| api_error(e, PATH))?;
            Ok(parse_with_defaults(&ctx.repo_defaults, &text))
        }
        status => Err(GitHubError::Status {
            status,
            what: PATH.into(),
        }
        .into()),
    }
}

/// A failed check run on the failing commit says what is wrong with the config.
pub async fn report_bad_config(
    github: &GitHubApp,
    run: &Run,
    problem: &str,
) -> Result<(), StageError> {
    check_run(
        github,
        run,
        "selfheal config",
        "failure",
        json!({"title": format!("{PATH} is invalid"), "summary": problem}),
    )
    .await
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
    fn org_defaults_apply_under_the_repository_file() {
        let defaults =
            Defaults::parse("max_attempts: 5\nreviewers: [octocat]\nmerge_method: rebase\n")
                .unwrap();
        let c = parse_with_defaults(&defaults, "max_attempts: 2\n").unwrap();
        assert_eq!(c.max_attempts, 2, "the repository's key wins");
        assert_eq!(c.reviewers, vec!["octocat"]);
        assert_eq!(c.merge_method, MergeMethod::Rebase);
        let c = parse_with_defaults(&defaults, "").unwrap();
        assert_eq!(c.max_attempts, 5);
        assert!(Defaults::parse("max_atempts: 5\n")
            .unwrap_err()
            .contains("unknown field `max_atempts`"));
        assert!(parse("merge_method: fast-forward\n")
            .unwrap_err()
            .contains("fast-forward"));
        assert!(parse("- a\n- b\n").is_err());
    }

    #[test]
    fn org_defaults_are_floors_a_repository_cannot_loosen() {
        let defaults = Defaults::parse(
            "protected_paths: [infra/]\nmax_diff_lines: 100\nmax_attempts: 2\nauto_merge_classes: [format]\nenabled_classes: [format, lint]\ndry_run: true\n",
        )
        .unwrap();
        let c = parse_with_defaults(
            &defaults,
            "protected_paths: []\nmax_diff_lines: 100000\nmax_attempts: 50\nauto_merge_classes: [format, lint, test]\nenabled_classes: [format, test]\ndry_run: false\n",
        )
        .unwrap();
        assert_eq!(
            c.protected_paths,
            vec!["infra/", ".github/", "CODEOWNERS", "docs/CODEOWNERS"]
        );
        assert_eq!((c.max_diff_lines, c.max_attempts), (100, 2));
        assert_eq!(c.auto_merge_classes, vec![Class::Format]);
        assert_eq!(c.enabled_classes, Some(vec![Class::Format]));
        assert!(c.dry_run);
        // Tightening is the repository's right.
        let c = parse_with_defaults(&defaults, "max_diff_lines: 10\nprotected_paths: [src/]\n")
            .unwrap();
        assert_eq!(c.max_diff_lines, 10);
        assert_eq!(
            c.protected_paths,
            vec![
                "src/",
                "infra/",
                ".github/",
                "CODEOWNERS",
                "docs/CODEOWNERS"
            ]
        );
        // With no defaults file, selfheal's own defaults are the floor.
        let c = parse("protected_paths: []\nauto_merge_classes: [test]\n").unwrap();
        assert!(c.protected_paths.contains(&".github/".to_string()));
        assert!(c.protected_paths.contains(&"CODEOWNERS".to_string()));
        assert!(c.auto_merge_classes.is_empty());
        assert!(c
            .refuses(
                Class::Format,
                Some(
                    "--- a/.github/selfheal.yml\n+++ b/.github/selfheal.yml\n@@ -1 +1 @@\n-a\n+b\n"
                )
            )
            .unwrap()
            .contains("protected path .github/"));
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
