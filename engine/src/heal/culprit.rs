//! Culprit revert: when a push turned a branch red with a test or compile failure, the commits
//! since the workflow's last green run are the candidates (the caller lists them newest first,
//! each with its change as a git diff; merge commits are never among them). The newest few are
//! reverted alone on the failing commit in the sandbox, and the failing command run again in
//! fresh containers: the first whose revert makes it pass every time is the culprit, and its
//! revert is the fix. Past those, the search bisects: the newest k commits are reverted
//! together, and the smallest k whose revert passes names the culprit, which is then reverted
//! alone to confirm it and to make the fix. The failure reproduced in every run before (a flake
//! is found earlier and rerun), so a revert that passes every run is not luck.

use std::path::Path;

use serde::Serialize;

use super::strategy::Made;
use super::{check, Verdict};
use crate::changes::ChangeSet;
use crate::sandbox::{Sandbox, SandboxError};
use crate::workflow::StepCommand;

/// The newest candidates reverted one at a time before bisecting the rest.
pub const ONE_BY_ONE: usize = 3;
/// At most this many candidates are considered, newest first.
pub const MAX_CANDIDATES: usize = 8;

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

/// Reverts the newest candidates one by one, then bisects the rest: the culprit and its
/// revert, or none; and what was tried.
pub(super) async fn find(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    candidates: &[Candidate],
    runs: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Option<Found>, Vec<Tried>), SandboxError> {
    let candidates = &candidates[..candidates.len().min(MAX_CANDIDATES)];
    let mut tried = Vec::new();
    for candidate in candidates.iter().take(ONE_BY_ONE) {
        progress(&format!(
            "reverting {} ({}) to see whether it broke the build",
            short(&candidate.sha),
            candidate.title
        ));
        let outcome =
            passes_without(sandbox, repo, command, &candidate.diff, runs, progress).await?;
        if let Some(found) = record(candidate, outcome, runs, &mut tried, |why| why) {
            return Ok((Some(found), tried));
        }
    }
    if candidates.len() <= ONE_BY_ONE {
        return Ok((None, tried));
    }
    // Bisect: does reverting the newest k together make the command pass?
    // A mutex, not a cell: the healing future crosses threads (the worker's jobs are Send).
    let probes = std::sync::Mutex::new(Vec::new());
    let mut probe = |k: usize| {
        let newest = &candidates[..k];
        let probes = &probes;
        async move {
            let range = format!("{}..{}", short(&newest[0].sha), short(&newest[k - 1].sha));
            progress(&format!(
                "reverting the newest {k} commits together ({range})"
            ));
            let diff: String = newest.iter().map(|c| c.diff.as_str()).collect();
            let outcome = passes_without(sandbox, repo, command, &diff, runs, progress).await?;
            let mut probes = probes.lock().unwrap_or_else(|e| e.into_inner());
            probes.push(Tried {
                sha: range,
                outcome: match &outcome {
                    Ok(_) => format!("the command passes {runs} of {runs} runs without them"),
                    Err(why) => why.clone(),
                },
            });
            Ok::<bool, SandboxError>(outcome.is_ok())
        }
    };
    let found = bisect(ONE_BY_ONE + 1, candidates.len(), &mut probe).await?;
    tried.extend(probes.into_inner().unwrap_or_else(|e| e.into_inner()));
    let Some(k) = found else {
        return Ok((None, tried));
    };
    let culprit = &candidates[k - 1];
    progress(&format!(
        "the newest {k} commits' revert passes: reverting {} ({}) alone",
        short(&culprit.sha),
        culprit.title
    ));
    let outcome = passes_without(sandbox, repo, command, &culprit.diff, runs, progress).await?;
    let found = record(culprit, outcome, runs, &mut tried, |why| {
        format!("the bisection points at it, but reverting it alone does not pass ({why}): left to people")
    });
    Ok((found, tried))
}

/// Records what reverting `candidate` alone did; the culprit found when it passed.
fn record(
    candidate: &Candidate,
    outcome: Result<(String, ChangeSet), String>,
    runs: usize,
    tried: &mut Vec<Tried>,
    failed: impl FnOnce(String) -> String,
) -> Option<Found> {
    let (found, outcome) = match outcome {
        Ok((diff, set)) => (
            Some((candidate.clone(), diff, set)),
            format!("the command passes {runs} of {runs} runs without it"),
        ),
        Err(why) => (None, failed(why)),
    };
    tried.push(Tried {
        sha: candidate.sha.clone(),
        outcome,
    });
    found
}

/// The smallest k in `lo..=hi` for which `passes(k)` holds, given that it holds for every k
/// past it (reverting more of the newest commits keeps the culprit reverted); none when even
/// `hi` does not pass. Asks `passes` about log2 of the range's size times, plus once for `hi`.
async fn bisect<F, Fut, E>(lo: usize, hi: usize, passes: &mut F) -> Result<Option<usize>, E>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<bool, E>>,
{
    if lo > hi || !passes(hi).await? {
        return Ok(None);
    }
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if passes(mid).await? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Some(lo))
}

fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// Reverts `diff` (one commit's change, or several newest first) on the failing commit and
/// runs the command: its revert and the change when it passes every run, or why not.
async fn passes_without(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    diff: &str,
    runs: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Result<(String, ChangeSet), String>, SandboxError> {
    let outcome = match revert(sandbox, repo, diff).await? {
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
                        Verdict::Fixed => return Ok(Ok((diff, set))),
                        Verdict::Rejected { reason } => reason,
                        other => format!("{other:?}"),
                    }
                }
            },
        },
    };
    // git's own words may be long: enough to say why.
    Ok(Err(outcome.chars().take(300).collect()))
}

#[cfg(test)]
mod tests {
    use super::bisect;

    /// The search finds the oldest commit whose revert (with the newer ones) passes, asking
    /// about log2 of the candidates, and gives up when reverting them all does not pass.
    #[tokio::test]
    async fn bisection_finds_the_smallest_passing_prefix() {
        for culprit in 4..=8 {
            let mut asked = Vec::new();
            let mut passes = |k: usize| {
                asked.push(k);
                async move { Ok::<bool, ()>(k >= culprit) }
            };
            assert_eq!(bisect(4, 8, &mut passes).await, Ok(Some(culprit)));
            assert!(asked.len() <= 4, "{culprit}: asked {asked:?}");
        }
        let mut never = |_: usize| async { Ok::<bool, ()>(false) };
        assert_eq!(bisect(4, 8, &mut never).await, Ok(None));
        let mut failing = |_: usize| async { Err::<bool, &str>("sandbox down") };
        assert_eq!(bisect(4, 8, &mut failing).await, Err("sandbox down"));
        let mut unused = |_: usize| async { Ok::<bool, ()>(true) };
        assert_eq!(bisect(4, 3, &mut unused).await, Ok(None));
    }
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
