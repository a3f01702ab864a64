//! Deterministic patch strategies, chosen per class and tool. Each runs the project's own tool
//! in the sandbox and brings back the files it changed, checked on this side.

use std::path::Path;

use serde::Serialize;

use crate::changes::{ChangeSet, Refused, CAPTURE};
use crate::diagnose::{Class, Diagnosis};
use crate::sandbox::{Execution, Sandbox, SandboxError};

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
    /// A model service's patch, checked and applied in the sandbox.
    AiPatch,
    /// Nothing deterministic applies: a model service's patch when one is configured
    /// ([`Strategy::AiPatch`]), else handed to people.
    HandOff,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Format => "format",
            Strategy::LintAutofix => "lint_autofix",
            Strategy::Rerun => "rerun",
            Strategy::RevertCulprit => "revert_culprit",
            Strategy::AiPatch => "ai_patch",
            Strategy::HandOff => "hand_off",
        }
    }

    /// As stored (`patches.strategy`).
    pub fn parse(name: &str) -> Option<Strategy> {
        [
            Strategy::Format,
            Strategy::LintAutofix,
            Strategy::Rerun,
            Strategy::RevertCulprit,
            Strategy::AiPatch,
            Strategy::HandOff,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The fixer command for a class and tool, when one exists. Lint autofixes apply only what the
/// tool itself marks safe: clippy's `--fix` applies machine-applicable suggestions only, ruff's
/// `--fix` leaves unsafe fixes unless `--unsafe-fixes` is given (it is not).
pub fn fixer(class: Class, tool: Option<&str>) -> Option<(Strategy, &'static str)> {
    match (class, tool?) {
        (Class::Format, "rustfmt") => Some((Strategy::Format, "cargo fmt --all")),
        (Class::Format, "black") => Some((Strategy::Format, "python3 -m black .")),
        (Class::Format, "ruff") => Some((Strategy::Format, "python3 -m ruff format .")),
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

/// What a strategy made: the checked change, or why what the sandbox handed back is refused.
pub type Made = Result<ChangeSet, Refused>;

/// Runs `script` on a copy of the repository, then brings back what it changed as a
/// [`ChangeSet`] checked against the checkout at `repo` (see [`crate::changes`]).
async fn capture_after(
    sandbox: &Sandbox,
    repo: &Path,
    script: &str,
    files: &[(&str, &[u8])],
) -> Result<(Made, Execution), SandboxError> {
    let script = format!("{script}\n{CAPTURE}");
    let (run, archive) = sandbox
        .run_with(repo, None, files, &script, Some("changes.tar"))
        .await?;
    let made = match archive {
        Some(bytes) => ChangeSet::from_capture(&bytes, repo),
        None => Err(Refused::Unreadable(format!(
            "the sandbox wrote no account of the change (exit code {})",
            run.exit_code
        ))),
    };
    Ok((made, run))
}

/// Runs `fixer` on a copy of the repository and returns the change it made, and its output.
pub async fn run_fixer(
    sandbox: &Sandbox,
    repo: &Path,
    fixer: &str,
) -> Result<(Made, String), SandboxError> {
    let script = format!("{BASELINE}{fixer} 2>&1\n");
    let (made, run) = capture_after(sandbox, repo, &script, &[]).await?;
    Ok((made, run.output))
}

/// Reverts HEAD on a copy of the repository; returns the revert's change, or why it does not
/// revert cleanly.
pub async fn revert_head(
    sandbox: &Sandbox,
    repo: &Path,
) -> Result<Result<Made, String>, SandboxError> {
    let script = "git config --global --add safe.directory '*' 2>/dev/null
git config --global user.email selfheal@localhost; git config --global user.name selfheal
git rev-parse --verify -q HEAD~1 >/dev/null || { echo 'no parent commit to go back to'; exit 3; }
git diff --quiet HEAD || { echo 'the work tree has uncommitted changes'; exit 3; }
git revert --no-commit HEAD 2>&1 || { echo 'does not revert cleanly'; exit 4; }
";
    let (made, run) = capture_after(sandbox, repo, script, &[]).await?;
    if run.passed() {
        Ok(Ok(made))
    } else {
        Ok(Err(run.output.trim().to_string()))
    }
}

/// A unified diff from outside the sandbox (a person, a model), applied by `git apply` on a
/// copy of the repository and brought back as a checked change; or why it does not apply.
pub async fn apply_diff(
    sandbox: &Sandbox,
    repo: &Path,
    diff: &str,
) -> Result<Result<Made, String>, SandboxError> {
    let script = format!(
        "{BASELINE}git apply --whitespace=nowarn /work/patch.diff 2>&1 || {{ echo 'patch does not apply'; exit 4; }}\n"
    );
    let (made, run) =
        capture_after(sandbox, repo, &script, &[("patch.diff", diff.as_bytes())]).await?;
    if run.passed() {
        Ok(Ok(made))
    } else {
        Ok(Err(run.output.trim().to_string()))
    }
}

/// Commits undone one after the other (`diffs` newest first, one `git apply -R` each) on a
/// copy of the repository, brought back as a checked change; or which one does not revert
/// (none when the sandbox failed otherwise), and why. One `git apply -R` of several patches would undo them in the reverse of the
/// input's order (git since 2.30) and write deletions before content: each is applied alone.
pub async fn revert_in_order(
    sandbox: &Sandbox,
    repo: &Path,
    diffs: &[&str],
) -> Result<Result<Made, (Option<usize>, String)>, SandboxError> {
    let names: Vec<String> = (0..diffs.len())
        .map(|i| format!("revert-{i}.diff"))
        .collect();
    let mut script = BASELINE.to_string();
    for (i, name) in names.iter().enumerate() {
        script.push_str(&format!(
            "git apply -R --whitespace=nowarn /work/{name} 2>&1 || {{ echo 'selfheal: revert {i} does not apply'; exit 4; }}\n"
        ));
    }
    let files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(diffs)
        .map(|(name, diff)| (name.as_str(), diff.as_bytes()))
        .collect();
    let (made, run) = capture_after(sandbox, repo, &script, &files).await?;
    if run.passed() {
        return Ok(Ok(made));
    }
    let output = run.output.trim().to_string();
    // The script's own last line names the revert that failed; git writes `error:` lines.
    let index = output.lines().rev().find_map(|l| {
        l.strip_prefix("selfheal: revert ")?
            .strip_suffix(" does not apply")?
            .parse()
            .ok()
    });
    Ok(Err((index, output)))
}
