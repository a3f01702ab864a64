//! Heal: reproduce the failure in the sandbox, diagnose it, choose a deterministic strategy
//! (or, where none applies and a model service is configured, ask it: `assist`), produce a
//! patch, and validate it (the command must fail before and pass after, N times). Used by the
//! worker's stages and by `selfheal heal`.

mod assist;
mod context;
mod culprit;
mod guard;
mod lazy_edits;
mod memory;
mod redaction;
mod reruns;
mod strategy;
mod unfixed;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

pub use assist::{http_client as assist_http_client, AiEvidence, Assistant, CONTEXT_TOKENS};
pub use culprit::{Candidate, CulpritEvidence, Tried, MAX_CANDIDATES};
pub use guard::{refuses, touches_tests};
pub use memory::{MemoryEvidence, MemoryUse, Remembered};
pub use redaction::{redact, Redaction};
pub use reruns::{rerun, Reruns};
pub use strategy::{apply_diff, choose, fixer, revert_head, run_fixer, Made, Strategy};

use crate::changes::{ChangeSet, Refused};
use crate::diagnose::{self, Class, Diagnosis};
use crate::sandbox::toolchain::{self, Language, ToolchainEvidence};
use crate::sandbox::{deps, Sandbox, SandboxError};
use crate::workflow::StepCommand;

#[derive(Debug, Clone)]
pub struct HealOptions {
    /// Runs before the patch: a failure that does not reproduce in all of them is flaky.
    pub reproduce_runs: usize,
    /// Runs after the patch: all must pass.
    pub validate_runs: usize,
    /// The model service asked for a fix when no deterministic strategy applies; `None`: such
    /// failures are handed off.
    pub assistant: Option<Assistant>,
    /// The fix that healed this failure's fingerprint before, if one did.
    pub memory: Option<Remembered>,
    /// Commits that may have turned the branch red, newest first, for a test or compile
    /// failure (the worker lists those since the workflow's last green run); empty: none known.
    pub culprits: Vec<Candidate>,
    /// Commits that could not be candidates, with why (for the evidence).
    pub culprits_skipped: Vec<String>,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            reproduce_runs: 3,
            validate_runs: 3,
            assistant: None,
            memory: None,
            culprits: Vec::new(),
            culprits_skipped: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub duration_ms: u128,
    pub excerpt: String,
    /// How the repository's dependencies were prepared for these runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<deps::Outcome>,
    /// The toolchain these runs used against the versions the CI and the repository ask for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<ToolchainEvidence>,
}

impl Evidence {
    fn from(r: &Reruns) -> Evidence {
        let excerpt = r
            .first_failure()
            .or(r.runs.last())
            .map(|run| tail(&run.output, 30))
            .unwrap_or_else(|| tail(&r.container.output, 30));
        Evidence {
            runs: r.runs.len(),
            passed: r.passes(),
            failed: r.failures(),
            duration_ms: r.duration.as_millis(),
            excerpt,
            dependencies: None,
            toolchain: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// A patch was made and waits for validation.
    Pending,
    /// The patch applies, and the command failed before and passes after, every time.
    Fixed,
    /// Intermittent: no code change; rerun the failed jobs.
    Flaky,
    /// Infrastructure: no code change; rerun the failed jobs.
    Rerun,
    /// The sandbox did not see the CI's failure: the command passes, or fails another way.
    NotReproduced { reason: String },
    /// A patch was made but does not fix it (or does not apply, or touches tests).
    Rejected { reason: String },
    /// No deterministic strategy applies.
    HandedOff { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct HealReport {
    /// The failing step's command as its log shows it.
    pub command: String,
    /// What the sandbox ran for it, where that came from, and what it could not reproduce.
    pub step: StepCommand,
    pub diagnosis: Diagnosis,
    pub strategy: Strategy,
    /// The change as a diff rendered on this side, for people, the guard and the policy.
    pub patch: Option<String>,
    /// The change itself: what validation lays over the checkout and delivery commits.
    #[serde(skip)]
    pub changes: Option<ChangeSet>,
    pub before: Evidence,
    pub after: Option<Evidence>,
    pub verdict: Verdict,
    pub elapsed_ms: u128,
    /// What the model service was asked and answered, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiEvidence>,
    /// What the fix memory offered and whether it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryEvidence>,
    /// The commits reverted to find the one that broke the build, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<CulpritEvidence>,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What a saved or reproduced failure looks like to the log parsers: the Actions layout.
pub fn as_job_log(command: &str, output: &str, exit_code: i64) -> String {
    // The sandbox's checkout path is as irrelevant to the repository as the runner's.
    let output = output.replace("/work/repo/", "");
    format!("##[group]Run {command}\n{command}\n##[endgroup]\n{output}\n##[error]Process completed with exit code {exit_code}.\n")
}

/// Heals `command` on the checkout at `repo`: [`propose`], then [`validate`]. `scope` names
/// the repository, so that its dependency cache is shared with its own runs only.
pub async fn heal(
    sandbox: &Sandbox,
    repo: &Path,
    scope: &str,
    command: &StepCommand,
    ci_log: Option<&str>,
    options: &HealOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<HealReport, SandboxError> {
    let started = Instant::now();
    let (sandbox, prepared) = prepare(sandbox, repo, scope, command, progress).await?;
    // `selfheal heal --ci-log`: a log of any CI, recognised by its markers.
    let ci_log = ci_log.map(CiLog::Any);
    let report =
        propose_prepared(&sandbox, prepared, repo, command, ci_log, options, progress).await?;
    if matches!(report.verdict, Verdict::Pending) {
        return validate(&sandbox, repo, report, options, progress, started).await;
    }
    Ok(report)
}

/// How a sandbox was prepared for a repository's runs: its toolchain and its dependencies.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dependencies: deps::Outcome,
    pub toolchain: ToolchainEvidence,
}

/// Chooses the toolchain `command`'s job sets up (else the build files' one) and fetches (or
/// finds cached) the repository's dependencies; the sandbox returned runs in that toolchain's
/// image and mounts them.
pub async fn prepare(
    sandbox: &Sandbox,
    repo: &Path,
    scope: &str,
    command: &StepCommand,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Sandbox, Prepared), SandboxError> {
    let language = Language::choose(repo, &command.toolchains);
    let sandbox = sandbox.clone().for_language(language);
    let version = sandbox
        .toolchain_version(language)
        .await
        .and_then(|v| toolchain::version_number(&v));
    let mut requested = command.toolchains.clone();
    requested.extend(toolchain::pins(repo));
    let toolchain = ToolchainEvidence::new(language, version, requested);
    for note in &toolchain.notes {
        progress(note);
    }
    let (prepared, outcome) = sandbox.prepare(repo, scope).await?;
    match &outcome {
        deps::Outcome::NotNeeded => {}
        deps::Outcome::Ready { plan, cache } => progress(&format!(
            "{} dependencies {} ({} MB, {}{})",
            plan.language.as_str(),
            if cache.hit {
                "found in the cache"
            } else {
                "fetched"
            },
            cache.bytes >> 20,
            if plan.locked {
                "locked by "
            } else {
                "resolved without a lockfile from "
            },
            plan.inputs.join(", ")
        )),
        deps::Outcome::Failed { reason, .. } => progress(&format!(
            "dependencies could not be fetched; running without them: {reason}"
        )),
    }
    Ok((
        prepared,
        Prepared {
            dependencies: outcome,
            toolchain,
        },
    ))
}

/// The failing CI's log, as the caller knows it.
#[derive(Debug, Clone, Copy)]
enum CiLog<'a> {
    /// Any CI's, recognised by its markers.
    Any(&'a str),
    /// A GitHub Actions job's, with the times the jobs API gives its first failed step.
    Github(&'a JobLog<'a>),
}

/// The failing GitHub Actions job's log, with the times of the step the jobs API says failed
/// first (when known), and the same job's log in the workflow's last green run on the branch
/// (when one was found: a failure no parser recognises is then shown by what it did not print).
#[derive(Debug)]
pub struct JobLog<'a> {
    pub log: &'a str,
    pub window: Option<diagnose::StepWindow>,
    pub green: Option<&'a str>,
}

/// Reproduces and diagnoses the failure and makes a patch where a deterministic strategy
/// applies. `ci_log`, when given, is the failing GitHub Actions job's log and is what gets
/// diagnosed; otherwise the sandbox's reproduction is. A patch comes back `Pending` validation.
pub async fn propose(
    sandbox: &Sandbox,
    repo: &Path,
    scope: &str,
    command: &StepCommand,
    ci_log: Option<&JobLog<'_>>,
    options: &HealOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<HealReport, SandboxError> {
    let (sandbox, prepared) = prepare(sandbox, repo, scope, command, progress).await?;
    let ci_log = ci_log.map(CiLog::Github);
    propose_prepared(&sandbox, prepared, repo, command, ci_log, options, progress).await
}

/// The failing CI's diagnosis and the sandbox's describe the same failure: same class, and
/// the same tool where both name one. A CI log nobody could classify matches anything.
fn same_failure(ci: &Diagnosis, sandbox: &Diagnosis) -> bool {
    if ci.class == Class::Unknown {
        return true;
    }
    ci.class == sandbox.class
        && match (ci.tool.as_deref(), sandbox.tool.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

async fn propose_prepared(
    sandbox: &Sandbox,
    prepared: Prepared,
    repo: &Path,
    command: &StepCommand,
    // The CI's log and its layout when known.
    ci_log: Option<CiLog<'_>>,
    options: &HealOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<HealReport, SandboxError> {
    let started = Instant::now();
    progress(&format!(
        "reproducing `{}` in the sandbox ({} runs, a fresh container each)",
        command.display, options.reproduce_runs
    ));
    let before = rerun(sandbox, repo, &command.script, options.reproduce_runs, None).await?;
    let mut before_evidence = Evidence::from(&before);
    before_evidence.dependencies = Some(prepared.dependencies);
    before_evidence.toolchain = Some(prepared.toolchain);
    let report = |diagnosis: Diagnosis,
                  strategy: Strategy,
                  changes: Option<(String, ChangeSet)>,
                  verdict: Verdict| HealReport {
        command: command.display.clone(),
        step: command.clone(),
        diagnosis,
        strategy,
        patch: changes.as_ref().map(|(diff, _)| diff.clone()),
        changes: changes.map(|(_, set)| set),
        before: before_evidence.clone(),
        after: None,
        verdict,
        elapsed_ms: started.elapsed().as_millis(),
        ai: None,
        memory: None,
        culprit: None,
    };

    let mut diagnosis = match (ci_log, before.first_failure()) {
        (Some(CiLog::Github(job)), _) => match job.green {
            Some(green) => diagnose::diagnose_github_since(job.log, job.window, green),
            None => diagnose::diagnose_github(job.log, job.window),
        },
        (Some(CiLog::Any(log)), _) => diagnose::diagnose(log),
        // The sandbox's output, laid out as a GitHub Actions step by `as_job_log`.
        (None, Some(failure)) => diagnose::diagnose_as(
            &as_job_log(&command.display, &failure.output, failure.exit_code),
            diagnose::Ci::GithubActions,
        ),
        (None, None) => diagnose::diagnose_as(
            &as_job_log(&command.display, "", 0),
            diagnose::Ci::GithubActions,
        ),
    };
    progress(&format!(
        "reproduced {} of {} runs; diagnosis: {} ({})",
        before.failures(),
        before.runs.len(),
        diagnosis.class.as_str(),
        diagnosis.tool.as_deref().unwrap_or("unknown tool")
    ));

    if before.failures() == 0 {
        // A CI log says it failed; the sandbox never saw it fail: intermittent.
        return Ok(match ci_log {
            Some(_) => {
                diagnosis.class = Class::Flaky;
                report(diagnosis, Strategy::Rerun, None, Verdict::Flaky)
            }
            None => report(
                diagnosis,
                Strategy::HandOff,
                None,
                Verdict::NotReproduced {
                    reason: format!(
                        "the command passed {} of {} runs",
                        before.passes(),
                        before.runs.len()
                    ),
                },
            ),
        });
    }
    // A failure counts as the CI's only when it is the same failure: a missing dependency or
    // tool in the sandbox is not the lint the CI reported.
    if let (Some(_), Some(failure)) = (ci_log, before.first_failure()) {
        let seen = diagnose::diagnose_as(
            &as_job_log(&command.display, &failure.output, failure.exit_code),
            diagnose::Ci::GithubActions,
        );
        if !same_failure(&diagnosis, &seen) {
            let reason = format!(
                "not reproduced: the CI failed with {} ({}), the sandbox with {} ({}): {}",
                diagnosis.class.as_str(),
                diagnosis.tool.as_deref().unwrap_or("unknown tool"),
                seen.class.as_str(),
                seen.tool.as_deref().unwrap_or("unknown tool"),
                seen.message
            );
            return Ok(report(
                diagnosis,
                Strategy::HandOff,
                None,
                Verdict::NotReproduced { reason },
            ));
        }
    }

    if before.passes() > 0 {
        diagnosis.class = Class::Flaky;
        diagnosis.fingerprint = diagnose::fingerprint(
            Class::Flaky,
            diagnosis.tool.as_deref(),
            &diagnosis.message,
            &diagnosis.failing_tests,
        );
        return Ok(report(diagnosis, Strategy::Rerun, None, Verdict::Flaky));
    }

    let has_history = repo.join(".git").exists();
    let (strategy, fix_cmd) = choose(&diagnosis, has_history);
    progress(&format!("strategy: {}", strategy.as_str()));
    let chosen = options
        .memory
        .as_ref()
        .map(|m| MemoryEvidence::chosen(m, strategy));
    let healed: Result<HealReport, SandboxError> = async {
        let made: Made = match (strategy, fix_cmd) {
            (Strategy::Rerun, _) => return Ok(report(diagnosis, strategy, None, Verdict::Rerun)),
            (Strategy::HandOff, _) => {
                let excerpt = before_evidence.excerpt.clone();
                let failure = assist::Failure {
                    diagnosis: &diagnosis,
                    command,
                    sandbox_excerpt: &excerpt,
                    example: None,
                };
                return unfixed::heal(sandbox, repo, failure, options, &report, progress).await;
            }
            (Strategy::RevertCulprit, _) => match revert_head(sandbox, repo).await? {
                Ok(made) => made,
                Err(why) => {
                    let reason = format!("cannot revert the culprit commit: {why}");
                    return Ok(report(
                        diagnosis,
                        strategy,
                        None,
                        Verdict::HandedOff { reason },
                    ));
                }
            },
            (_, Some(cmd)) => {
                progress(&format!("running `{cmd}`"));
                run_fixer(sandbox, repo, cmd).await?.0
            }
            (_, None) => Err(Refused::Empty),
        };
        // What the sandbox handed back is checked here; a refusal is the reason, never a patch.
        match made.and_then(|set| Ok((set.diff(repo)?, set))) {
            Ok(change) => Ok(report(diagnosis, strategy, Some(change), Verdict::Pending)),
            Err(refused) => {
                let reason = match refused {
                    Refused::Empty => refused.to_string(),
                    other => format!("the change the sandbox made is refused: {other}"),
                };
                Ok(report(
                    diagnosis,
                    strategy,
                    None,
                    Verdict::Rejected { reason },
                ))
            }
        }
    }
    .await;
    let mut healed = healed?;
    if healed.memory.is_none() {
        healed.memory = chosen;
    }
    Ok(healed)
}

/// Applies the report's patch in the sandbox and reruns the command; settles the verdict.
pub async fn validate(
    sandbox: &Sandbox,
    repo: &Path,
    mut report: HealReport,
    options: &HealOptions,
    progress: &(dyn Fn(&str) + Sync),
    started: Instant,
) -> Result<HealReport, SandboxError> {
    let (Some(patch), Some(changes)) = (report.patch.clone(), report.changes.clone()) else {
        report.verdict = Verdict::Rejected {
            reason: "the strategy changed nothing".into(),
        };
        return Ok(report);
    };
    let (after, verdict) = check(
        sandbox,
        repo,
        &report.step.clone(),
        &changes,
        &patch,
        options.validate_runs,
        progress,
    )
    .await?;
    report.after = after;
    report.verdict = verdict;
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// Proves a change: its diff (`patch`, rendered from it) must touch no test, and the
/// checkout with the change laid over it must make `command` pass `runs` times.
pub async fn check(
    sandbox: &Sandbox,
    repo: &Path,
    command: &StepCommand,
    changes: &ChangeSet,
    patch: &str,
    runs: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(Option<Evidence>, Verdict), SandboxError> {
    let reject = |reason: String| Verdict::Rejected { reason };
    if changes.is_empty() {
        return Ok((None, reject("the strategy changed nothing".into())));
    }
    if let Some(why) = refuses(patch) {
        return Ok((None, reject(format!("patch refused: it {why}"))));
    }
    progress(&format!(
        "validating: the change laid over the checkout, run `{}` {runs} times",
        command.display
    ));
    let after = rerun(sandbox, repo, &command.script, runs, Some(changes)).await?;
    let evidence = Some(Evidence::from(&after));
    let verdict = if !after.every_one_passed(runs) {
        reject(format!(
            "the command still fails after the patch ({} of {runs} runs)",
            after.failures()
        ))
    } else {
        Verdict::Fixed
    };
    Ok((evidence, verdict))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(class: Class, tool: Option<&str>) -> Diagnosis {
        Diagnosis {
            class,
            tool: tool.map(str::to_string),
            culprit_file: None,
            culprit_line: None,
            fingerprint: String::new(),
            failing_tests: Vec::new(),
            excerpt: String::new(),
            excerpt_lines: Vec::new(),
            ci: diagnose::Ci::Plain,
            command: None,
            message: String::new(),
            since_green: false,
        }
    }

    /// A format or lint failure is fixed by the project's own tool, never by a model: each
    /// formatter the diagnosis names has its command (ruff's formatter among them).
    #[test]
    fn every_formatter_diagnosed_has_its_fixer() {
        for tool in ["rustfmt", "black", "ruff", "gofmt", "prettier"] {
            let (strategy, command) = fixer(Class::Format, Some(tool)).expect(tool);
            assert_eq!(strategy, Strategy::Format, "{tool}");
            assert!(!command.is_empty());
        }
        assert_eq!(
            fixer(Class::Format, Some("ruff")).map(|(_, c)| c),
            Some("python3 -m ruff format .")
        );
        assert_eq!(fixer(Class::Lint, Some("mypy")), None);
    }

    #[test]
    fn a_failure_is_the_cis_only_with_its_class_and_tool() {
        let clippy = d(Class::Lint, Some("clippy"));
        assert!(same_failure(&clippy, &d(Class::Lint, Some("clippy"))));
        assert!(
            !same_failure(&clippy, &d(Class::Lint, Some("eslint"))),
            "another tool"
        );
        assert!(
            !same_failure(&clippy, &d(Class::Dependency, None)),
            "another class"
        );
        assert!(
            !same_failure(&clippy, &d(Class::Unknown, None)),
            "a failure nobody can read"
        );
        // One side names no tool: the class decides.
        assert!(same_failure(&clippy, &d(Class::Lint, None)));
        assert!(same_failure(
            &d(Class::Test, None),
            &d(Class::Test, Some("pytest"))
        ));
        // A CI log nobody could classify gives nothing to compare with.
        assert!(same_failure(
            &d(Class::Unknown, None),
            &d(Class::Format, Some("black"))
        ));
    }
}
