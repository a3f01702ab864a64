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
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{check, rerun, Verdict};
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
    /// Each revert tried, in the order tried, with what it did.
    pub tried: Vec<Tried>,
    /// Commits the caller could not offer (a merge commit, a binary change, history that
    /// could not be read), with why.
    pub skipped: Vec<String>,
    /// Why the search stopped before it could name a culprit, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// One revert tried: a commit alone, or (bisecting) the newest `commits` together, from `sha`
/// (the newest) back to `oldest`.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub sha: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<usize>,
    pub outcome: String,
}

/// A culprit found: the commit, and its revert as a rendered diff and the change itself.
pub(super) type Found = (Candidate, String, ChangeSet);

/// The time a search may spend before it starts another revert: the patch stage has an hour
/// for everything.
pub const SEARCH_TIME: Duration = Duration::from_secs(30 * 60);

/// What reverting some commits did.
enum Outcome {
    /// The command passes every run without them: their revert and its change.
    Passes(String, ChangeSet),
    /// The command ran and still fails.
    Fails(String),
    /// Nothing could be run: the revert does not apply, or is refused.
    Untried(String),
}

/// The search's answer: the culprit found, what was tried, and why it stopped early if it did.
pub(super) struct Search {
    pub found: Option<Found>,
    pub tried: Vec<Tried>,
    pub stopped: Option<String>,
}

/// Why a bisection stopped early.
enum Stop {
    Sandbox(SandboxError),
    Time(String),
    Untried(String),
}

/// Reverts the newest candidates one by one, then bisects the rest; no revert starts once
/// [`SEARCH_TIME`] has passed.
pub(super) async fn find(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    candidates: &[Candidate],
    runs: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Search, SandboxError> {
    let candidates = &candidates[..candidates.len().min(MAX_CANDIDATES)];
    let mut search = Search {
        found: None,
        tried: Vec::new(),
        stopped: None,
    };
    let started = Instant::now();
    let take = |what: &str| {
        let spent = started.elapsed();
        if spent >= SEARCH_TIME {
            return Err(format!(
                "the search stopped before {what}: it had taken {} of its {} minutes",
                spent.as_secs() / 60,
                SEARCH_TIME.as_secs() / 60
            ));
        }
        Ok(())
    };
    let mut all_failed = true;
    for candidate in candidates.iter().take(ONE_BY_ONE) {
        if let Err(why) = take(&format!("reverting {}", short(&candidate.sha))) {
            search.stopped = Some(why);
            return Ok(search);
        }
        progress(&format!(
            "reverting {} ({}) to see whether it broke the build",
            short(&candidate.sha),
            candidate.title
        ));
        let outcome = without(sandbox, repo, command, &[candidate], runs, true, progress).await?;
        all_failed &= matches!(outcome, Outcome::Fails(_));
        if let Some(found) = record(candidate, outcome, runs, &mut search.tried, |why| why) {
            search.found = Some(found);
            return Ok(search);
        }
    }
    if candidates.len() <= ONE_BY_ONE {
        return Ok(search);
    }
    if !all_failed {
        // A newer commit whose revert could not be run may be the culprit: bisecting past it
        // would name an older one.
        search.stopped = Some(
            "not bisecting: a newer commit's revert could not be run, so the culprit may be among the newest".into(),
        );
        return Ok(search);
    }
    // Bisect: does reverting the newest k together make the command pass? With one commit
    // left past the newest few, it is reverted alone straight away.
    let bisected = candidates.len() > ONE_BY_ONE + 1;
    let k = if !bisected {
        candidates.len()
    } else {
        let probes = std::sync::Mutex::new(Vec::new());
        let mut probe = |k: usize| {
            let newest: Vec<&Candidate> = candidates[..k].iter().collect();
            let probes = &probes;
            let take = &take;
            async move {
                take(&format!("reverting the newest {k} commits")).map_err(Stop::Time)?;
                progress(&format!(
                    "reverting the newest {k} commits together ({} back to {})",
                    short(&newest[0].sha),
                    short(&newest[k - 1].sha)
                ));
                // A probe is never delivered: the guards wait for the confirmation.
                let outcome = without(sandbox, repo, command, &newest, runs, false, progress)
                    .await
                    .map_err(Stop::Sandbox)?;
                let (passes, said) = match outcome {
                    Outcome::Passes(..) => (
                        Ok(true),
                        format!("the command passes {runs} of {runs} runs without them"),
                    ),
                    Outcome::Fails(why) => (Ok(false), why),
                    Outcome::Untried(why) => (Err(Stop::Untried(why.clone())), why),
                };
                probes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Tried {
                        sha: newest[0].sha.clone(),
                        oldest: Some(newest[k - 1].sha.clone()),
                        commits: Some(k),
                        outcome: said,
                    });
                passes
            }
        };
        let found = bisect(ONE_BY_ONE + 1, candidates.len(), &mut probe).await;
        search
            .tried
            .extend(probes.into_inner().unwrap_or_else(|e| e.into_inner()));
        match found {
            Ok(Some(k)) => k,
            Ok(None) => return Ok(search),
            Err(Stop::Sandbox(e)) => return Err(e),
            Err(Stop::Time(why)) => {
                search.stopped = Some(why);
                return Ok(search);
            }
            Err(Stop::Untried(why)) => {
                search.stopped = Some(format!(
                    "the bisection stopped: a revert of several commits could not be run ({why})"
                ));
                return Ok(search);
            }
        }
    };
    let culprit = &candidates[k - 1];
    if let Err(why) = take(&format!("reverting {}", short(&culprit.sha))) {
        search.stopped = Some(why);
        return Ok(search);
    }
    progress(&format!(
        "reverting {} ({}) alone: the newest commits' revert passes from it",
        short(&culprit.sha),
        culprit.title
    ));
    let outcome = without(sandbox, repo, command, &[culprit], runs, true, progress).await?;
    search.found = record(culprit, outcome, runs, &mut search.tried, |why| {
        match bisected {
        true => format!(
            "the bisection points at it, but reverting it alone does not pass ({why}): left to people"
        ),
        false => why,
    }
    });
    Ok(search)
}

/// Records what reverting `candidate` alone did; the culprit found when it passed.
fn record(
    candidate: &Candidate,
    outcome: Outcome,
    runs: usize,
    tried: &mut Vec<Tried>,
    failed: impl FnOnce(String) -> String,
) -> Option<Found> {
    let (found, outcome) = match outcome {
        Outcome::Passes(diff, set) => (
            Some((candidate.clone(), diff, set)),
            format!("the command passes {runs} of {runs} runs without it"),
        ),
        Outcome::Fails(why) | Outcome::Untried(why) => (None, failed(why)),
    };
    tried.push(Tried {
        sha: candidate.sha.clone(),
        oldest: None,
        commits: None,
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

/// Reverts `commits` (newest first, one `git apply -R` each: one call undoing several patches
/// reverses their order itself) on the failing commit and runs the command. `guarded`: the
/// revert could be delivered, so the guards of every fix apply (a bisection's probe only
/// asks whether the command passes).
async fn without(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    commits: &[&Candidate],
    runs: usize,
    guarded: bool,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Outcome, SandboxError> {
    let diffs: Vec<&str> = commits.iter().map(|c| c.diff.as_str()).collect();
    // git's own words may be long: enough to say why.
    let cut = |why: String| why.chars().take(300).collect::<String>();
    let made = super::strategy::revert_in_order(sandbox, repo, &diffs).await?;
    let set = match made {
        Err((index, why)) => {
            let what = match index.and_then(|i| commits.get(i)) {
                Some(c) => format!("{} does not revert cleanly", short(&c.sha)),
                None => "the revert could not be made in the sandbox".to_string(),
            };
            return Ok(Outcome::Untried(cut(format!("{what}: {why}"))));
        }
        Ok(Err(refused)) => {
            return Ok(Outcome::Untried(cut(format!(
                "its revert is refused: {refused}"
            ))))
        }
        Ok(Ok(set)) => set,
    };
    if let Some(path) = protected(&set).filter(|_| guarded) {
        return Ok(Outcome::Untried(format!(
            "its revert changes {path}, a protected path"
        )));
    }
    let diff = match set.diff(repo) {
        Err(refused) => {
            return Ok(Outcome::Untried(cut(format!(
                "its revert is refused: {refused}"
            ))))
        }
        Ok(diff) => diff,
    };
    if !guarded {
        if set.is_empty() {
            return Ok(Outcome::Untried("their revert changes nothing".into()));
        }
        let after = rerun(sandbox, repo, &command.script, runs, Some(&set)).await?;
        return Ok(match after.every_one_passed(runs) {
            true => Outcome::Passes(diff, set),
            false => Outcome::Fails(format!(
                "the command still fails without them ({} of {runs} runs)",
                after.failures()
            )),
        });
    }
    if let Some(near_tests) = super::guard::touches_tests(&diff) {
        return Ok(Outcome::Untried(format!(
            "its revert {near_tests}: left to people"
        )));
    }
    let (ran, verdict) = check(sandbox, repo, command, &set, &diff, runs, progress).await?;
    Ok(match (ran, verdict) {
        (_, Verdict::Fixed) => Outcome::Passes(diff, set),
        // Refused before anything ran (nothing changed, a test skipped): not a failure.
        (None, Verdict::Rejected { reason }) => Outcome::Untried(cut(reason)),
        (_, Verdict::Rejected { reason }) => Outcome::Fails(cut(reason)),
        (_, other) => Outcome::Fails(cut(format!("{other:?}"))),
    })
}

fn protected(set: &ChangeSet) -> Option<String> {
    set.paths()
        .find(|p| p.starts_with(".github/"))
        .map(str::to_string)
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
