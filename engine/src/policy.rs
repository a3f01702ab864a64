//! The merge decision, evaluated by an embedded Rego engine (regorus) so that teams can read
//! and replace the policy (`policies/merge.rego` is carried inside; the worker takes a file
//! of the operator's instead) without touching selfheal.

use serde::Serialize;

pub const DEFAULT_POLICY: &str = include_str!("../../policies/merge.rego");

#[derive(Debug, Clone, Serialize)]
pub struct MergeInput {
    pub class: String,
    /// How the fix was made (`format`, `lint_autofix`, `ai_patch`, …).
    pub strategy: String,
    pub diff_lines: usize,
    pub touched_paths: Vec<String>,
    /// Files whose change GitHub shows no diff for (binary, too large): nobody can judge them.
    pub unreadable_paths: Vec<String>,
    pub protected_paths: Vec<String>,
    pub max_diff_lines: usize,
    pub auto_merge_classes: Vec<String>,
    pub checks_green: bool,
    pub tests_deleted: bool,
    /// The branch the fix's pull request goes into (the failing branch).
    pub base_branch: String,
    /// Whether that is the repository's default branch (true when it cannot be told: a
    /// policy errs towards the stricter case).
    pub base_is_default_branch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// Why not, in the policy's words (sorted).
    pub reasons: Vec<String>,
}

pub fn decide(policy: &str, input: &MergeInput) -> Result<Decision, String> {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("merge.rego".into(), policy.into())
        .map_err(|e| e.to_string())?;
    let json = serde_json::to_string(input).map_err(|e| e.to_string())?;
    engine.set_input_json(&json).map_err(|e| e.to_string())?;
    let allow = engine
        .eval_rule("data.selfheal.merge.allow".into())
        .map_err(|e| e.to_string())?
        .as_bool()
        .copied()
        .map_err(|e| e.to_string())?;
    let deny = engine
        .eval_rule("data.selfheal.merge.deny".into())
        .map_err(|e| e.to_string())?;
    let deny: serde_json::Value =
        serde_json::from_str(&deny.to_json_str().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let mut reasons: Vec<String> = deny
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    reasons.sort();
    Ok(Decision { allow, reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> MergeInput {
        MergeInput {
            class: "format".into(),
            strategy: "format".into(),
            diff_lines: 20,
            touched_paths: vec!["src/lib.rs".into()],
            unreadable_paths: vec![],
            protected_paths: vec![".github/workflows/".into()],
            max_diff_lines: 500,
            auto_merge_classes: vec!["format".into(), "lint".into()],
            checks_green: true,
            tests_deleted: false,
            base_branch: "main".into(),
            base_is_default_branch: true,
        }
    }

    /// Where an operator auto-merges test failures, a culprit's revert is merged on a branch
    /// of its own but not into the default branch.
    #[test]
    fn a_revert_into_the_default_branch_is_left_to_a_person() {
        let mut i = input();
        i.class = "test".into();
        i.strategy = "revert_culprit".into();
        i.auto_merge_classes.push("test".into());
        let d = decide(DEFAULT_POLICY, &i).unwrap();
        assert!(!d.allow);
        assert_eq!(
            d.reasons,
            ["a revert of a commit on the default branch is merged by a person"]
        );
        i.base_branch = "release/2.x".into();
        i.base_is_default_branch = false;
        assert!(decide(DEFAULT_POLICY, &i).unwrap().allow);
    }

    #[test]
    fn a_models_fix_is_not_merged_even_in_a_class_that_is() {
        let mut i = input();
        i.class = "lint".into();
        i.strategy = "ai_patch".into();
        let d = decide(DEFAULT_POLICY, &i).unwrap();
        assert!(!d.allow);
        assert!(d.reasons[0].contains("model"), "{:?}", d.reasons);
    }

    #[test]
    fn allows_a_small_green_fix_of_an_enabled_class() {
        assert_eq!(
            decide(DEFAULT_POLICY, &input()).unwrap(),
            Decision {
                allow: true,
                reasons: vec![]
            }
        );
    }

    #[test]
    fn denies_a_protected_path() {
        let mut i = input();
        i.touched_paths.push(".github/workflows/ci.yml".into());
        let d = decide(DEFAULT_POLICY, &i).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["the diff touches .github/workflows/ci.yml, under protected path .github/workflows/"]);
    }

    #[test]
    fn denies_a_diff_over_the_limit_and_red_checks_and_other_classes() {
        let mut i = input();
        i.diff_lines = 900;
        i.checks_green = false;
        i.class = "test".into();
        let d = decide(DEFAULT_POLICY, &i).unwrap();
        assert!(!d.allow);
        assert_eq!(
            d.reasons,
            vec![
                "auto-merge is not enabled for test failures",
                "the diff changes 900 lines, over the limit of 500",
                "the pull request's required checks are not green",
            ]
        );
    }

    #[test]
    fn a_broken_policy_is_an_error_not_an_allow() {
        assert!(decide("package selfheal.merge\nallow if {", &input()).is_err());
    }
}
