//! Running a command N times in one container and telling the runs apart.

use std::path::Path;
use std::time::Duration;

use crate::changes::ChangeSet;
use crate::sandbox::{Execution, Sandbox, SandboxError};

const BEGIN: &str = "::selfheal-run-begin::";
const END: &str = "::selfheal-run-end::";

#[derive(Debug, Clone)]
pub struct RunResult {
    pub passed: bool,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone)]
pub struct Reruns {
    pub runs: Vec<RunResult>,
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

    pub fn first_failure(&self) -> Option<&RunResult> {
        self.runs.iter().find(|r| !r.passed)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `command` `times` times on the checkout with `changes` laid over it (if any). Stops
/// early only when the container itself is killed (timeout, memory).
pub async fn rerun(
    sandbox: &Sandbox,
    repo: &Path,
    command: &str,
    times: usize,
    changes: Option<&ChangeSet>,
) -> Result<Reruns, SandboxError> {
    let mut script = String::from("git config --global --add safe.directory '*' 2>/dev/null\n");
    script.push_str(&format!(
        "i=1\nwhile [ $i -le {times} ]; do\n  echo {BEGIN}$i\n  sh -c {} 2>&1\n  echo {END}$i:$?\n  i=$((i+1))\ndone\n",
        shell_quote(command)
    ));
    let (container, _) = sandbox.run_with(repo, changes, &[], &script, None).await?;
    let duration = container.duration;
    Ok(Reruns {
        runs: split_runs(&container.output),
        container,
        duration,
    })
}

fn split_runs(output: &str) -> Vec<RunResult> {
    let mut runs = Vec::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if line.starts_with(BEGIN) {
            current = Some(String::new());
        } else if let Some(rest) = line.strip_prefix(END) {
            let code = rest
                .split(':')
                .nth(1)
                .and_then(|c| c.trim().parse::<i64>().ok())
                .unwrap_or(-1);
            runs.push(RunResult {
                passed: code == 0,
                exit_code: code,
                output: current.take().unwrap_or_default(),
            });
        } else if let Some(buf) = current.as_mut() {
            buf.push_str(line);
            buf.push('\n');
        }
    }
    // A run cut short by the container's death counts as failed.
    if let Some(buf) = current {
        runs.push(RunResult {
            passed: false,
            exit_code: -1,
            output: buf,
        });
    }
    runs
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_runs_by_markers() {
        let out = "noise\n::selfheal-run-begin::1\nok\n::selfheal-run-end::1:0\n::selfheal-run-begin::2\nboom\n::selfheal-run-end::2:101\n::selfheal-run-begin::3\nhalf";
        let runs = super::split_runs(out);
        assert_eq!(runs.len(), 3);
        assert!(runs[0].passed);
        assert_eq!(runs[1].exit_code, 101);
        assert_eq!(runs[1].output, "boom\n");
        assert!(!runs[2].passed);
    }
}
