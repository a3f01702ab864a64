//! Running a command N times, each run in a fresh container from the same prepared state
//! (the checkout, the change laid over it, the dependency cache): nothing one run leaves in
//! `/tmp`, the work tree or a build directory is seen by the next.

use std::path::Path;
use std::time::Duration;

use crate::changes::ChangeSet;
use crate::sandbox::{deps, Execution, Sandbox, SandboxError};

#[derive(Debug, Clone)]
pub struct RunResult {
    pub passed: bool,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone)]
pub struct Reruns {
    pub runs: Vec<RunResult>,
    /// The last container's own account (timeout, memory, disk).
    pub container: Execution,
    pub duration: Duration,
}

impl Reruns {
    pub fn passes(&self) -> usize {
        self.runs.iter().filter(|r| r.passed).count()
    }

    pub fn failures(&self) -> usize {
        self.runs.len() - self.passes()
    }

    /// All `wanted` runs were made and each passed: what a fix must show.
    pub fn every_one_passed(&self, wanted: usize) -> bool {
        self.failures() == 0 && self.runs.len() >= wanted
    }

    pub fn first_failure(&self) -> Option<&RunResult> {
        self.runs.iter().find(|r| !r.passed)
    }
}

/// Runs `command` `times` times on the checkout with `changes` laid over it (if any), each
/// time in a new container. Stops early only when Docker itself fails.
pub async fn rerun(
    sandbox: &Sandbox,
    repo: &Path,
    command: &str,
    times: usize,
    changes: Option<&ChangeSet>,
) -> Result<Reruns, SandboxError> {
    let script = format!("git config --global --add safe.directory '*' 2>/dev/null\n{command}\n");
    let mut runs = Vec::with_capacity(times);
    let mut duration = Duration::ZERO;
    let mut last = None;
    for _ in 0..times.max(1) {
        let (run, _) = sandbox.run_with(repo, changes, &[], &script, None).await?;
        if run.exit_code == deps::TAMPERED_EXIT && run.output.contains(deps::TAMPERED) {
            // Not the command's failure: the stage is retried on a freshly fetched cache.
            sandbox.forget_deps().await;
            return Err(SandboxError::Tampered(
                sandbox.deps_volume().unwrap_or_default(),
            ));
        }
        duration += run.duration;
        runs.push(RunResult {
            passed: run.passed(),
            exit_code: run.exit_code,
            output: run.output.clone(),
        });
        last = Some(run);
    }
    Ok(Reruns {
        runs,
        container: last.expect("at least one run"),
        duration,
    })
}
