//! Culprit revert: when a push turned a branch red with a test or compile failure, the commits
//! since the workflow's last green run are the candidates (the caller lists them newest first,
//! each with its change as a git diff; merge commits are never among them). Each is reverted
//! alone on the failing commit in the sandbox, and the failing command run again in fresh
//! containers: the first whose revert makes it pass every time is the culprit, and its revert
//! is the fix. The failure reproduced in every run before (a flake is found earlier and
//! rerun), so a revert that passes every run is not luck.

use std::path::Path;

use serde::Serialize;

use super::strategy::Made;
use super::{check, Verdict};
use crate::changes::ChangeSet;
use crate::sandbox::{Sandbox, SandboxError};
use crate::workflow::StepCommand;

/// At most this many candidates are tried, newest first.
pub const MAX_CANDIDATES: usize = 3;

/// A commit that may have turned the branch red.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub sha: String,
    pub author: String,
    /// Its message's first line.
    pub title: String,
    /// The commit's change against its parent, as a git diff (not recorded: the revert is).
    #[serde(skip)]
    pub diff: String,
}

/// What was tried, for the run's evidence and the PR.
#[derive(Debug, Clone, Serialize)]
pub struct CulpritEvidence {
    /// The commit whose revert makes the command pass, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Candidate>,
    /// Each candidate tried, with what its revert did.
    pub tried: Vec<Tried>,
    /// Commits the caller could not offer (a merge commit, a binary change), with why.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub sha: String,
    pub outcome: String,
}

/// A culprit found: the commit, and its revert as a rendered diff and the change itself.
pub(super) type Found = (Candidate, String, ChangeSet);

/// Reverts the candidates one by one: the culprit and its revert, or none; and what was tried.
pub(super) async fn find(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    candidates: &[Candidate],
    runs: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Option<Found>, Vec<Tried>), SandboxError> {
    let mut tried = Vec::new();
    for candidate in candidates.iter().take(MAX_CANDIDATES) {
        let short: String = candidate.sha.chars().take(7).collect();
        progress(&format!(
            "reverting {short} ({}) to see whether it broke the build",
            candidate.title
        ));
        let outcome = match revert(sandbox, repo, &candidate.diff).await? {
            Err(why) => format!("does not revert cleanly: {why}"),
            Ok(Err(refused)) => format!("its revert is refused: {refused}"),
            Ok(Ok(set)) => match protected(&set) {
                Some(path) => format!("its revert changes {path}, a protected path"),
                None => match set
                    .diff(repo)
                    .map(|diff| (super::guard::touches_tests(&diff), diff))
                {
                    Err(refused) => format!("its revert is refused: {refused}"),
                    Ok((Some(near_tests), _)) => format!("its revert {near_tests}: left to people"),
                    Ok((None, diff)) => {
                        let (_, verdict) =
                            check(sandbox, repo, command, &set, &diff, runs, progress).await?;
                        match verdict {
                            Verdict::Fixed => {
                                tried.push(Tried {
                                    sha: candidate.sha.clone(),
                                    outcome: format!(
                                        "the command passes {runs} of {runs} runs without it"
                                    ),
                                });
                                return Ok((Some((candidate.clone(), diff, set)), tried));
                            }
                            Verdict::Rejected { reason } => reason,
                            other => format!("{other:?}"),
                        }
                    }
                },
            },
        };
        tried.push(Tried {
            sha: candidate.sha.clone(),
            // git's own words may be long: enough to say why.
            outcome: outcome.chars().take(300).collect(),
        });
    }
    Ok((None, tried))
}

fn protected(set: &ChangeSet) -> Option<String> {
    set.paths()
        .find(|p| p.starts_with(".github/"))
        .map(str::to_string)
}

/// `diff` reversed by `git apply -R` on a copy of the repository, brought back as a checked
/// change; or why it does not apply.
async fn revert(
    sandbox: &Sandbox,
    repo: &Path,
    diff: &str,
) -> Result<Result<Made, String>, SandboxError> {
    super::strategy::apply_diff_with(sandbox, repo, diff, true).await
}
