//! Deterministic patch strategies, chosen per class and tool. Each produces a unified diff by
//! running the project's own tool in the sandbox and asking git what changed.

use std::path::Path;

use serde::Serialize;

use crate::diagnose::{Class, Diagnosis};
use crate::sandbox::{Sandbox, SandboxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Run the formatter and take its diff.
    Format,
    /// The linter's own autofix, safe fixes only.
    LintAutofix,
    /// No code change: rerun the failed jobs.
    Rerun,
    /// Revert the commit that broke a green branch.
    RevertCulprit,
    /// Nothing deterministic applies: for the AI strategies (not built yet).
    HandOff,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Format => "format",
            Strategy::LintAutofix => "lint_autofix",
            Strategy::Rerun => "rerun",
            Strategy::RevertCulprit => "revert_culprit",
            Strategy::HandOff => "hand_off",
        }
    }
}

/// The fixer command for a class and tool, when one exists. Lint autofixes apply only what the
/// tool itself marks safe: clippy's `--fix` applies machine-applicable suggestions only, ruff's
/// `--fix` leaves unsafe fixes unless `--unsafe-fixes` is given (it is not).
pub fn fixer(class: Class, tool: Option<&str>) -> Option<(Strategy, &'static str)> {
    match (class, tool?) {
        (Class::Format, "rustfmt") => Some((Strategy::Format, "cargo fmt --all")),
        (Class::Format, "black") => Some((Strategy::Format, "python3 -m black .")),
        (Class::Format, "gofmt") => Some((Strategy::Format, "gofmt -w .")),
        (Class::Format, "prettier") => {
            Some((Strategy::Format, "npx --no-install prettier --write ."))
        }
        (Class::Lint, "clippy") => Some((
            Strategy::LintAutofix,
            "cargo clippy --fix --allow-dirty --allow-no-vcs --all-targets --offline",
        )),
        (Class::Lint, "ruff") => Some((
            Strategy::LintAutofix,
            "python3 -m ruff check --fix --exit-zero .",
        )),
        (Class::Lint, "eslint") => Some((Strategy::LintAutofix, "npx --no-install eslint --fix .")),
        _ => None,
    }
}

pub fn choose(diagnosis: &Diagnosis, has_history: bool) -> (Strategy, Option<&'static str>) {
    if let Some((strategy, cmd)) = fixer(diagnosis.class, diagnosis.tool.as_deref()) {
        return (strategy, Some(cmd));
    }
    match diagnosis.class {
        Class::Flaky | Class::Infra => (Strategy::Rerun, None),
        Class::Test | Class::Compile if has_history => (Strategy::RevertCulprit, None),
        _ => (Strategy::HandOff, None),
    }
}

const BASELINE: &str = "git config --global --add safe.directory '*' 2>/dev/null
git config --global user.email selfheal@localhost; git config --global user.name selfheal
if [ ! -d .git ]; then git init -q .; fi
git add -A >/dev/null 2>&1 && git commit -qm 'selfheal baseline' --allow-empty --no-verify >/dev/null 2>&1
";

/// Runs `fixer` on a copy of the repository and returns the diff it made (empty: no change).
pub async fn run_fixer(
    sandbox: &Sandbox,
    repo: &Path,
    fixer: &str,
) -> Result<(String, String), SandboxError> {
    let script = format!("{BASELINE}{fixer} 2>&1; git add -A && git diff --cached --binary HEAD > /work/patch.diff\n");
    let (run, diff) = sandbox.run(repo, &script, Some("patch.diff")).await?;
    Ok((
        String::from_utf8_lossy(&diff.unwrap_or_default()).into_owned(),
        run.output,
    ))
}

/// Reverts HEAD on a copy of the repository; returns the revert's diff, or why it does not
/// revert cleanly.
pub async fn revert_head(
    sandbox: &Sandbox,
    repo: &Path,
) -> Result<Result<String, String>, SandboxError> {
    let script = "git config --global --add safe.directory '*' 2>/dev/null
git config --global user.email selfheal@localhost; git config --global user.name selfheal
git rev-parse --verify -q HEAD~1 >/dev/null || { echo 'no parent commit to go back to'; exit 3; }
git diff --quiet HEAD || { echo 'the work tree has uncommitted changes'; exit 3; }
git revert --no-commit HEAD 2>&1 || { echo 'does not revert cleanly'; exit 4; }
git diff --cached --binary HEAD > /work/patch.diff
";
    let (run, diff) = sandbox.run(repo, script, Some("patch.diff")).await?;
    if run.passed() {
        Ok(Ok(
            String::from_utf8_lossy(&diff.unwrap_or_default()).into_owned()
        ))
    } else {
        Ok(Err(run.output.trim().to_string()))
    }
}
