//! The invariants every fix keeps, whatever made it: tests kept (none removed, skipped or
//! weakened), no failure muted, no protected path, the diff within its cap, no secret added,
//! no network or process call added to test code, lockfiles touched only by dependency fixes.
//! They are Rego (`policies/invariants.rego`, carried inside, with its tests in
//! `policies/invariants_test.rego`) over a structured description of the change: its files,
//! their language and kind, and what each added or removed line does ([`lines`]).
//!
//! A repository may add its own policies in `.github/selfheal/policies/`: each is evaluated
//! in an engine of its own, over the same input, and only its `deny` set is read, so it can
//! add denials and never take one away. They come from the repository, so from anyone who
//! can push: their size, number and evaluation time are capped, and one that cannot be
//! evaluated denies (fail closed) rather than being skipped.

pub mod diff;
pub mod isolated;
pub mod lines;

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use regorus::utils::limits::{ExecutionTimerConfig, PolicyLengthConfig};
use serde::Serialize;

use self::diff::Status;
pub use self::isolated::{Evaluator, InProcess, Isolated};
use self::lines::{Facts, Language, Reader};

pub const DEFAULT_POLICY: &str = include_str!("../../../policies/invariants.rego");
pub const POLICY_TESTS: &str = include_str!("../../../policies/invariants_test.rego");
/// Where a repository keeps policies of its own.
pub const REPOSITORY_DIR: &str = ".github/selfheal/policies";
/// A repository's policies are read up to this many files of this size.
pub const REPOSITORY_MAX_FILES: usize = 16;
pub const REPOSITORY_MAX_BYTES: usize = 64 * 1024;
/// One policy's evaluation may take this long.
const EVALUATION_LIMIT: Duration = Duration::from_secs(2);
/// Denials kept per policy, and characters per message: they are stored, commented and
/// shown in a check run (GitHub refuses bodies past 65,536 characters).
pub const MAX_DENIALS_PER_POLICY: usize = 20;
pub const MAX_MESSAGE_CHARS: usize = 300;

/// What selfheal never changes unless a repository's configuration says otherwise: all of
/// `.github/` (workflows, actions, CODEOWNERS, selfheal's own config) and the other places
/// CODEOWNERS may live.
pub const DEFAULT_PROTECTED_PATHS: [&str; 3] = [".github/", "CODEOWNERS", "docs/CODEOWNERS"];
/// Changed lines a fix may have when no configuration says.
pub const DEFAULT_MAX_DIFF_LINES: usize = 500;

/// The limits a change is checked against: the repository's (or the operator's) protected
/// paths and diff cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub protected_paths: Vec<String>,
    pub max_diff_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            protected_paths: DEFAULT_PROTECTED_PATHS.map(String::from).to_vec(),
            max_diff_lines: DEFAULT_MAX_DIFF_LINES,
        }
    }
}

/// What the file is for, as far as the invariants care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Test,
    /// What a prover checks (Lean, TLA+ and its models, the Lean project's files): a fix that
    /// edits it could weaken the proof it is then checked against.
    Proof,
    Lockfile,
    /// A CI pipeline's definition.
    Ci,
    /// Scripts and build files: lines there are commands.
    Script,
    Source,
    Other,
}

impl Kind {
    pub fn of(path: &str) -> Kind {
        let name = path.rsplit('/').next().unwrap_or(path);
        const LOCKFILES: &[&str] = &[
            "Cargo.lock",
            "package-lock.json",
            "npm-shrinkwrap.json",
            "yarn.lock",
            "pnpm-lock.yaml",
            "bun.lockb",
            "poetry.lock",
            "Pipfile.lock",
            "uv.lock",
            "pdm.lock",
            "go.sum",
            "Gemfile.lock",
            "composer.lock",
            "gradle.lockfile",
            "mix.lock",
            "packages.lock.json",
        ];
        if LOCKFILES.contains(&name) {
            return Kind::Lockfile;
        }
        let extension = name.rsplit_once('.').map(|(_, e)| e);
        // A TLC model is `Module.cfg`, capitalised as TLA+ modules are (`setup.cfg` is not).
        // TLC reads it beside its module, at the root or in `spec/` (engine/src/prove).
        let tlc_model = extension == Some("cfg")
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && (path == name || path == format!("spec/{name}"));
        if matches!(extension, Some("lean" | "tla"))
            || tlc_model
            || matches!(
                name,
                "lakefile.lean" | "lakefile.toml" | "lean-toolchain" | "lake-manifest.json"
            )
        {
            return Kind::Proof;
        }
        if path.starts_with(".github/workflows/")
            || path.starts_with(".circleci/")
            || path.starts_with(".buildkite/")
            || matches!(
                name,
                ".gitlab-ci.yml" | ".travis.yml" | "Jenkinsfile" | "azure-pipelines.yml"
            )
        {
            return Kind::Ci;
        }
        if is_test_path(path) {
            return Kind::Test;
        }
        match Language::of(path) {
            Language::Shell | Language::Make => Kind::Script,
            Language::Yaml | Language::Toml | Language::Json | Language::Ini | Language::Other => {
                if name == "package.json" || name == "tox.ini" || name == "noxfile.py" {
                    Kind::Script
                } else {
                    Kind::Other
                }
            }
            _ => Kind::Source,
        }
    }
}

fn is_test_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.split('.').next().unwrap_or(name);
    path.split('/').any(|dir| {
        matches!(
            dir,
            "tests" | "test" | "__tests__" | "spec" | "testdata" | "testing"
        )
    }) || path.contains("/src/test/")
        || path.starts_with("src/test/")
        || stem.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with("_spec")
        || name.contains(".test.")
        || name.contains(".spec.")
        || stem.ends_with("Test")
        || stem.ends_with("Tests")
        || name == "conftest.py"
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub line: usize,
    pub text: String,
    #[serde(flatten)]
    pub facts: Facts,
}

#[derive(Debug, Clone, Serialize)]
pub struct File {
    pub path: String,
    pub status: Status,
    pub language: Language,
    pub kind: Kind,
    /// Its change is not shown as lines (binary, or too large to diff): nothing in it can be
    /// judged, so the policy denies it.
    pub unreadable: bool,
    pub mode_changed: bool,
    pub added: Vec<Line>,
    pub removed: Vec<Line>,
}

/// The input every invariant policy reads (docs/invariants.md).
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The failure's class (`format`, `dependency`, …).
    pub class: String,
    /// How the fix was made (`format`, `revert`, `ai_patch`, …).
    pub strategy: String,
    /// Added plus removed lines.
    pub diff_lines: usize,
    pub max_diff_lines: usize,
    pub protected_paths: Vec<String>,
    pub files: Vec<File>,
}

impl Change {
    pub fn describe(
        diff: &str,
        class: &str,
        strategy: &str,
        max_diff_lines: usize,
        protected_paths: &[String],
    ) -> Change {
        let files: Vec<File> = diff::parse(diff)
            .into_iter()
            .map(|f| {
                let language = Language::of(&f.path);
                let kind = Kind::of(&f.path);
                let shell_like = matches!(kind, Kind::Ci | Kind::Script);
                let side = |lines: Vec<(usize, String)>| {
                    let mut reader = Reader::new(language, shell_like);
                    lines
                        .into_iter()
                        .map(|(line, text)| Line {
                            facts: reader.read(&text),
                            line,
                            text,
                        })
                        .collect::<Vec<_>>()
                };
                File {
                    path: f.path,
                    status: f.status,
                    language,
                    kind,
                    unreadable: f.unreadable,
                    mode_changed: f.mode_changed,
                    added: side(f.added),
                    removed: side(f.removed),
                }
            })
            .collect();
        Change {
            class: class.into(),
            strategy: strategy.into(),
            diff_lines: files.iter().map(|f| f.added.len() + f.removed.len()).sum(),
            max_diff_lines,
            protected_paths: protected_paths.to_vec(),
            files,
        }
    }
}

/// A policy of the repository's own, as read from `.github/selfheal/policies/`.
#[derive(Debug, Clone)]
pub struct RepositoryPolicy {
    pub path: String,
    /// Its text, or why it could not be read (then it denies).
    pub text: Result<String, String>,
}

/// Why a change may not be delivered, by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// `selfheal` for the built-in invariants, else the repository policy's path.
    pub policy: String,
    /// The invariant's name (the text before the first `: ` of the policy's message), for
    /// reports; `policy` for a repository's denial without one.
    pub invariant: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InvariantError {
    #[error("the invariants policy cannot be evaluated: {0}")]
    Policy(String),
}

/// An engine for one policy; `bounded` for a repository's (their time and prints).
fn engine(bounded: bool) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    if bounded {
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: EVALUATION_LIMIT,
            check_interval: NonZeroU32::new(64).expect("non-zero"),
        });
    }
    // `print()` output is gathered, and dropped, rather than written to the worker's stderr.
    engine.set_gather_prints(true);
    engine.set_policy_length_config(PolicyLengthConfig {
        max_col: NonZeroU32::new(4096).expect("non-zero"),
        max_file_bytes: NonZeroUsize::new(REPOSITORY_MAX_BYTES).expect("non-zero"),
        max_lines: NonZeroUsize::new(5_000).expect("non-zero"),
    });
    engine
}

/// The `deny` set of `package` in `policy`, as strings.
fn denials_of(
    name: &str,
    policy: &str,
    package: &str,
    input: &str,
    bounded: bool,
) -> Result<Vec<String>, String> {
    let mut engine = engine(bounded);
    engine
        .add_policy(name.into(), policy.into())
        .map_err(|e| e.to_string())?;
    engine.set_input_json(input).map_err(|e| e.to_string())?;
    let deny = engine
        .eval_rule(format!("data.{package}.deny"))
        .map_err(|e| e.to_string())?;
    let deny: serde_json::Value =
        serde_json::from_str(&deny.to_json_str().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    match deny {
        // An undefined rule: this policy denies nothing.
        serde_json::Value::Null => Ok(vec![]),
        serde_json::Value::Array(items) => Ok(items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()),
        other => Err(format!("deny must be a set of messages, not {other}")),
    }
}

/// The package a policy declares (`package a.b`).
fn package_of(policy: &str) -> Option<&str> {
    policy
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("package "))
        .map(str::trim)
        .filter(|p| {
            !p.is_empty()
                && p.split('.').all(|s| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        })
}

/// At most [`MAX_DENIALS_PER_POLICY`], each cut to [`MAX_MESSAGE_CHARS`], with a last one
/// saying how many more there were.
fn capped(policy: &str, mut messages: Vec<String>) -> Vec<Denial> {
    messages.sort();
    let more = messages.len().saturating_sub(MAX_DENIALS_PER_POLICY);
    let mut out: Vec<Denial> = messages
        .into_iter()
        .take(MAX_DENIALS_PER_POLICY)
        .map(|m| {
            let m = match m.char_indices().nth(MAX_MESSAGE_CHARS) {
                Some((cut, _)) => format!("{}…", &m[..cut]),
                None => m,
            };
            denial(policy, m)
        })
        .collect();
    if more > 0 {
        out.push(denial(
            policy,
            format!("{} more denial(s) of this policy not listed", more),
        ));
    }
    out
}

fn denial(policy: &str, message: String) -> Denial {
    let invariant = match message.split_once(": ") {
        Some((name, _)) if name.chars().all(|c| c.is_ascii_lowercase() || c == '-') => {
            name.to_string()
        }
        _ => policy.to_string(),
    };
    Denial {
        policy: policy.to_string(),
        invariant,
        message,
    }
}

/// Every denial of the built-in invariants and of the repository's policies, sorted. An
/// error only when selfheal's own policy cannot be evaluated: a repository policy that cannot
/// is itself a denial.
pub fn check(
    change: &Change,
    builtin: &str,
    repository: &[RepositoryPolicy],
    evaluator: &dyn Evaluator,
) -> Result<Vec<Denial>, InvariantError> {
    let input = serde_json::to_string(change).map_err(|e| InvariantError::Policy(e.to_string()))?;
    // selfheal's own policy runs without the time limit: a slow machine must not turn a
    // denial into an error.
    let builtin = denials_of(
        "invariants.rego",
        builtin,
        "selfheal.invariants",
        &input,
        false,
    )
    .map_err(InvariantError::Policy)?;
    let mut out = capped("selfheal", builtin);
    if repository.len() > REPOSITORY_MAX_FILES {
        out.push(denial(
            REPOSITORY_DIR,
            format!(
                "repository-policy: {REPOSITORY_DIR} holds {} policies, over the {REPOSITORY_MAX_FILES} selfheal evaluates; none is skipped silently",
                repository.len()
            ),
        ));
    }
    for p in repository.iter().take(REPOSITORY_MAX_FILES) {
        let result = match &p.text {
            Err(e) => Err(e.clone()),
            Ok(text) if text.len() > REPOSITORY_MAX_BYTES => {
                Err(format!("{} bytes, over {REPOSITORY_MAX_BYTES}", text.len()))
            }
            Ok(text) => match package_of(text) {
                Some(package) => evaluator.denials(&isolated::Request {
                    name: p.path.clone(),
                    policy: text.clone(),
                    package: package.to_string(),
                    input: input.clone(),
                }),
                None => Err("no valid `package` line".into()),
            },
        };
        match result {
            Ok(messages) => out.extend(capped(&p.path, messages)),
            Err(e) => out.push(denial(
                &p.path,
                format!(
                    "repository-policy: {} cannot be evaluated, so it denies: {e}",
                    p.path
                ),
            )),
        }
    }
    out.sort_by(|a, b| (&a.policy, &a.message).cmp(&(&b.policy, &b.message)));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests;
