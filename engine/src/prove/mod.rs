//! Provers and model checkers, run in the sandbox on the patched tree when the repository
//! carries what they check: Lean 4 (`lake build`), Kani (`cargo kani`), TLA+ (`tlc`) and Miri
//! (`cargo miri test`). A fix that breaks a proof is not delivered (the verify stage reads the
//! outcomes). No prover applicable is `not_applicable`, and a prover the sandbox lacks is
//! `unavailable`: neither is ever counted as a success (docs/proofs.md).

use std::path::Path;

use serde::Serialize;

use crate::changes::ChangeSet;
use crate::heal::rerun;
use crate::sandbox::{Sandbox, SandboxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    /// The repository has proofs, but the sandbox has no such prover, or stopped it (time,
    /// memory, disk): not checked.
    Unavailable,
    /// It fails at the failing commit too, without the fix: not the fix's doing, and not
    /// checked.
    AlreadyFailing,
    /// Nothing here for any prover.
    NotApplicable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Unavailable => "unavailable",
            Outcome::AlreadyFailing => "already_failing",
            Outcome::NotApplicable => "not_applicable",
        }
    }
}

/// One prover's verdict on the patched tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Proof {
    /// `lean`, `kani`, `tlc`, `miri`; `none` for [`Outcome::NotApplicable`].
    pub prover: &'static str,
    pub outcome: Outcome,
    pub command: String,
    /// Why, in the prover's words (the failing lines), or what was missing.
    pub detail: String,
}

/// A checker that plugs in: whether the repository carries its proofs, the command that
/// checks them, and how to read its output.
pub trait Prover: Sync {
    fn name(&self) -> &'static str;
    /// The command to run at the repository's root, if this prover applies.
    fn applies(&self, root: &Path) -> Option<String>;
    fn judge(&self, exit_code: i64, output: &str) -> (Outcome, String);
}

/// The provers selfheal knows, in the order they run.
pub fn all() -> Vec<&'static dyn Prover> {
    vec![&Lean, &Kani, &Tlc, &Miri]
}

/// The shell's "not installed": exit 127, or cargo's for a subcommand it lacks.
fn missing(exit_code: i64, output: &str, tool: &str) -> bool {
    exit_code == 127
        || output.contains(&format!("{tool}: command not found"))
        || output.contains(&format!("{tool}: not found"))
        || output.contains(&format!("no such command: `{tool}`"))
}

/// The lines that say why, at most `n`.
fn lines_with(output: &str, needles: &[&str], n: usize) -> String {
    output
        .lines()
        .filter(|l| needles.iter().any(|k| l.contains(k)))
        .take(n)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

pub struct Lean;

/// `lake build`, with the lines that decide printed after its log's tail: the sandbox keeps
/// only the end of the output, and a `sorry` warning early in a long build would scroll out.
const LAKE: &str = "lake build >/tmp/lake.log 2>&1; s=$?; tail -n 40 /tmp/lake.log; grep -m 20 -e \"declaration uses 'sorry'\" -e 'error:' /tmp/lake.log; exit $s";

impl Prover for Lean {
    fn name(&self) -> &'static str {
        "lean"
    }

    fn applies(&self, root: &Path) -> Option<String> {
        ["lakefile.lean", "lakefile.toml"]
            .iter()
            .any(|f| root.join(f).is_file())
            .then(|| LAKE.to_string())
    }

    fn judge(&self, exit_code: i64, output: &str) -> (Outcome, String) {
        if missing(exit_code, output, "lake") {
            return (Outcome::Unavailable, "lake is not in the sandbox".into());
        }
        // elan asked for the toolchain `lean-toolchain` names, and the sandbox has no network.
        if output.lines().any(|l| {
            l.contains("toolchain") && (l.contains("not installed") || l.contains("failed to"))
        }) {
            return (
                Outcome::Unavailable,
                "the Lean toolchain the repository names is not in the sandbox".into(),
            );
        }
        // `sorry` builds with a warning: a proof left open is not a proof.
        let sorry = lines_with(output, &["declaration uses 'sorry'"], 5);
        if exit_code != 0 {
            let why = lines_with(output, &["error:"], 10);
            return (
                Outcome::Failed,
                if why.is_empty() {
                    format!("lake build exited {exit_code}")
                } else {
                    why
                },
            );
        }
        if !sorry.is_empty() {
            return (Outcome::Failed, sorry);
        }
        (
            Outcome::Passed,
            lines_with(output, &["Build completed successfully"], 1),
        )
    }
}

pub struct Kani;

impl Prover for Kani {
    fn name(&self) -> &'static str {
        "kani"
    }

    fn applies(&self, root: &Path) -> Option<String> {
        (root.join("Cargo.toml").is_file() && any_file_contains(root, &["rs"], "#[kani::proof"))
            .then(|| "cargo kani".to_string())
    }

    fn judge(&self, exit_code: i64, output: &str) -> (Outcome, String) {
        if missing(exit_code, output, "kani") {
            return (
                Outcome::Unavailable,
                "cargo kani is not in the sandbox".into(),
            );
        }
        let failed = output.contains("VERIFICATION:- FAILED");
        if exit_code != 0 || failed {
            let why = lines_with(
                output,
                &[
                    "Status: FAILURE",
                    "Checking harness",
                    "VERIFICATION:- FAILED",
                    "Complete -",
                    "error:",
                ],
                12,
            );
            return (Outcome::Failed, why);
        }
        if output.contains("VERIFICATION:- SUCCESSFUL") {
            return (Outcome::Passed, lines_with(output, &["Complete -"], 1));
        }
        (Outcome::Failed, "cargo kani verified no harness".into())
    }
}

pub struct Tlc;

impl Prover for Tlc {
    fn name(&self) -> &'static str {
        "tlc"
    }

    /// A TLA+ module with its model's `.cfg` beside it, at the root or in `spec/`.
    fn applies(&self, root: &Path) -> Option<String> {
        for dir in ["", "spec"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut modules: Vec<String> = entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter_map(|n| n.strip_suffix(".tla").map(str::to_string))
                .filter(|m| plain_word(m) && root.join(dir).join(format!("{m}.cfg")).is_file())
                .collect();
            modules.sort();
            if let Some(m) = modules.first() {
                let at = if dir.is_empty() {
                    String::new()
                } else {
                    format!("cd {dir} && ")
                };
                return Some(format!("{at}tlc -config {m}.cfg {m}.tla"));
            }
        }
        None
    }

    fn judge(&self, exit_code: i64, output: &str) -> (Outcome, String) {
        if missing(exit_code, output, "tlc") {
            return (Outcome::Unavailable, "tlc is not in the sandbox".into());
        }
        if exit_code == 0 && output.contains("No error has been found") {
            return (
                Outcome::Passed,
                lines_with(output, &["distinct states found"], 1),
            );
        }
        let why = lines_with(output, &["Error:", "is violated", "Deadlock reached"], 6);
        (
            Outcome::Failed,
            if why.is_empty() {
                format!("tlc exited {exit_code}")
            } else {
                why
            },
        )
    }
}

pub struct Miri;

impl Prover for Miri {
    fn name(&self) -> &'static str {
        "miri"
    }

    /// Opt-in by the project itself: its CI runs Miri.
    fn applies(&self, root: &Path) -> Option<String> {
        let workflows = root.join(".github/workflows");
        (root.join("Cargo.toml").is_file()
            && any_file_contains(&workflows, &["yml", "yaml"], "cargo miri test"))
        .then(|| "cargo miri test".to_string())
    }

    fn judge(&self, exit_code: i64, output: &str) -> (Outcome, String) {
        if missing(exit_code, output, "miri") {
            return (
                Outcome::Unavailable,
                "cargo miri is not in the sandbox".into(),
            );
        }
        if exit_code != 0 {
            let why = lines_with(
                output,
                &["error: Undefined Behavior", "error:", "test result: FAILED"],
                8,
            );
            return (Outcome::Failed, why);
        }
        (Outcome::Passed, lines_with(output, &["test result: ok"], 1))
    }
}

fn plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether a regular file ending in one of `exts` under `dir` (links not followed, 2,000 files and
/// 1 MiB each at most: the checkout is the repository's) contains `needle`.
fn any_file_contains(dir: &Path, exts: &[&str], needle: &str) -> bool {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .max_depth(8)
        .into_iter()
        // Build output, dependencies and git's own files are not where proofs are written.
        .filter_entry(|e| {
            !matches!(
                e.file_name().to_str(),
                Some(".git" | "target" | "node_modules" | ".lake" | "vendor")
            )
        })
        .take(20_000)
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file()
                && e.path()
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| exts.contains(&x))
        })
        .take(2000)
        .filter(|e| e.metadata().is_ok_and(|m| m.len() <= 1 << 20))
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(needle)))
}

/// Every applicable prover of `provers`, run once in the sandbox on `repo` with `changes`
/// laid over it. One that fails is run again without the changes: failing there too, it is
/// `already_failing`, not the fix's doing. A run the sandbox stopped (time, memory, disk) or
/// could not start is `unavailable`, never `failed`. `[not_applicable]` when none applies.
pub async fn prove(
    sandbox: &Sandbox,
    repo: &Path,
    changes: &ChangeSet,
    provers: &[&dyn Prover],
) -> Result<Vec<Proof>, SandboxError> {
    let mut out = Vec::new();
    for prover in provers {
        let Some(command) = prover.applies(repo) else {
            continue;
        };
        let (mut outcome, mut detail) =
            run_one(sandbox, repo, &command, Some(changes), *prover).await?;
        if outcome == Outcome::Failed {
            let (before, before_detail) = run_one(sandbox, repo, &command, None, *prover).await?;
            if before == Outcome::Failed && already_said(&detail, &before_detail) {
                outcome = Outcome::AlreadyFailing;
                detail = format!("fails at the failing commit too, without the fix: {detail}");
            }
        }
        out.push(Proof {
            prover: prover.name(),
            outcome,
            command,
            detail,
        });
    }
    if out.is_empty() {
        out.push(Proof {
            prover: "none",
            outcome: Outcome::NotApplicable,
            command: String::new(),
            detail: "no Lean, Kani, TLA+ or Miri proofs in the repository".into(),
        });
    }
    Ok(out)
}

/// Whether every line that says why the fix's proof fails was said before the fix too: one
/// harness or `sorry` already failing must not hide another that the fix breaks.
fn already_said(after: &str, before: &str) -> bool {
    let before: std::collections::HashSet<&str> = before.lines().map(str::trim).collect();
    after.lines().map(str::trim).all(|l| before.contains(l))
}

async fn run_one(
    sandbox: &Sandbox,
    repo: &Path,
    command: &str,
    changes: Option<&ChangeSet>,
    prover: &dyn Prover,
) -> Result<(Outcome, String), SandboxError> {
    let reruns = match rerun(sandbox, repo, command, 1, changes).await {
        Ok(r) => r,
        // A dependency cache that does not match its digest, or a sandbox gone mid-run: the
        // stage is retried, as for the validation's own runs.
        Err(e @ (SandboxError::Tampered(_) | SandboxError::Gone(_))) => return Err(e),
        Err(e) => {
            return Ok((
                Outcome::Unavailable,
                format!("the sandbox could not run it: {e}"),
            ))
        }
    };
    let c = &reruns.container;
    if c.timed_out || c.oom_killed || c.disk_full {
        let why = if c.timed_out {
            "ran past the sandbox's time limit"
        } else if c.oom_killed {
            "ran out of the sandbox's memory"
        } else {
            "filled the sandbox's disk"
        };
        return Ok((Outcome::Unavailable, format!("{} {why}", prover.name())));
    }
    Ok(match reruns.runs.first() {
        Some(run) => prover.judge(run.exit_code, &run.output),
        None => (Outcome::Unavailable, "no run was made".into()),
    })
}

#[cfg(test)]
mod tests;
