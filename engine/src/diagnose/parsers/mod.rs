//! One parser per tool's output format. Each looks at the failed step's clean lines and
//! returns what it recognises; none guesses. Order matters: a compile error stops tests from
//! running, so compilers are asked before test runners, and both before the generic
//! infrastructure and dependency patterns.

mod environment;
mod interpreted;
mod javascript;
mod jvm;
mod native;

use regex::Regex;

use super::log::FailedStep;
use super::Class;
use environment::{dependency, infra};
use interpreted::{bundler, elixir_compile, exunit, mypy, php_parse, phpunit, rspec, ruby_syntax};
use javascript::{eslint, jest, mocha, prettier, tsc, vitest};
use jvm::{gradle_test, javac, junit, junit_platform, scala};
use native::{
    bazel_test, c_family, cabal_test, cmake, csharp, ctest, dotnet_test, go_dependency, googletest,
    linker, msvc, swift_testing, xctest,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub class: Class,
    pub tool: String,
    pub culprit_file: Option<String>,
    pub culprit_line: Option<u32>,
    pub failing_tests: Vec<String>,
    /// The tool's own words for the failure, used for the fingerprint.
    pub message: String,
    /// Index of the line the excerpt centres on.
    pub at: usize,
    /// Indices of the lines that say why, when the parser knows them better than the block
    /// that starts at `at`.
    pub explains: Vec<usize>,
}

type Parser = fn(&FailedStep) -> Option<Finding>;

pub const PARSERS: &[Parser] = &[
    rustfmt,
    black,
    prettier,
    gofmt,
    rust_diagnostic,
    ruff_or_flake8,
    mypy,
    eslint,
    tsc,
    javac,
    scala,
    go_dependency,
    go_build,
    csharp,
    cmake,
    // XCTest's failures share the compilers' `file:line: error:` head.
    xctest,
    swift_testing,
    c_family,
    msvc,
    linker,
    ruby_syntax,
    php_parse,
    elixir_compile,
    cargo_test,
    pytest,
    jest,
    vitest,
    mocha,
    go_test,
    junit,
    junit_platform,
    gradle_test,
    rspec,
    phpunit,
    exunit,
    // GoogleTest's own report says why; CTest's summary only which.
    googletest,
    ctest,
    dotnet_test,
    cabal_test,
    bazel_test,
    bundler,
    infra,
    dependency,
];

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// The lines from `at` to the next blank line, at most `max`: a diagnostic and the lines
/// that belong to it.
pub(super) fn block(step: &FailedStep, at: usize, max: usize) -> Vec<usize> {
    (at..step.lines.len())
        .take(max)
        .take_while(|&i| i == at || !step.lines[i].trim().is_empty())
        .collect()
}

macro_rules! regex {
    ($name:ident, $pattern:expr) => {
        static $name: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new($pattern).expect("static regex"));
    };
}

pub(crate) use regex;

fn command_has(step: &FailedStep, word: &str) -> bool {
    step.command.as_deref().is_some_and(|c| c.contains(word))
}

fn rel(path: &str) -> String {
    path.trim().trim_start_matches("./").to_string()
}

fn finding(class: Class, tool: &str, at: usize, message: impl Into<String>) -> Finding {
    Finding {
        class,
        tool: tool.to_string(),
        culprit_file: None,
        culprit_line: None,
        failing_tests: Vec::new(),
        message: message.into(),
        at,
        explains: Vec::new(),
    }
}

/// Every line matching `re`, at most `max`: a tool reporting several errors.
pub(super) fn all(step: &FailedStep, re: &Regex, max: usize) -> Vec<usize> {
    step.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| re.is_match(l))
        .map(|(i, _)| i)
        .take(max)
        .collect()
}

/// First line matching `re`, with its captures.
fn first<'a>(step: &'a FailedStep, re: &Regex) -> Option<(usize, regex::Captures<'a>)> {
    step.lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| re.captures(l).map(|c| (i, c)))
}

regex!(RUSTFMT, r"^Diff in (.+?)(?::(\d+):| at line (\d+):)\s*$");
fn rustfmt(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &RUSTFMT)?;
    let line = c.get(2).or(c.get(3)).and_then(|m| m.as_str().parse().ok());
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: line,
        ..finding(Class::Format, "rustfmt", at, "rustfmt would reformat")
    })
}

regex!(BLACK, r"^(?:would reformat|Would reformat:) (.+)$");
/// black's `would reformat x.py` and `ruff format --check`'s `Would reformat: x.py`.
fn black(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &BLACK)?;
    let tool = if step.lines[at].starts_with("Would") {
        "ruff"
    } else {
        "black"
    };
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        explains: vec![at],
        ..finding(Class::Format, tool, at, format!("{tool} would reformat"))
    })
}

regex!(GOFMT_DIFF, r"^diff (?:-u )?(\S+\.go)(?:\.orig)? ");
regex!(GO_FILE, r"^(\S+\.go)$");
fn gofmt(step: &FailedStep) -> Option<Finding> {
    if !command_has(step, "gofmt") {
        return None;
    }
    let (at, c) = first(step, &GOFMT_DIFF).or_else(|| first(step, &GO_FILE))?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        ..finding(Class::Format, "gofmt", at, "gofmt would reformat")
    })
}

regex!(RUST_HEAD, r"^(error|warning)(?:\[(E\d{4})\])?: (.+)$");
regex!(RUST_LOC, r"^\s*--> (.+?):(\d+):(\d+)$");
fn rust_diagnostic(step: &FailedStep) -> Option<Finding> {
    for (i, line) in step.lines.iter().enumerate() {
        let Some(c) = RUST_HEAD.captures(line) else {
            continue;
        };
        if &c[1] != "error" {
            continue;
        }
        let loc = step
            .lines
            .iter()
            .skip(i + 1)
            .take(3)
            .find_map(|l| RUST_LOC.captures(l));
        let Some(loc) = loc else { continue };
        let block_end = step.lines[i + 1..]
            .iter()
            .position(|l| l.trim().is_empty())
            .map_or(step.lines.len(), |p| i + 1 + p);
        let mentions_clippy = step.lines[i..block_end]
            .iter()
            .any(|l| l.contains("clippy::"));
        let (class, tool) =
            if c.get(2).is_none() && (mentions_clippy || command_has(step, "clippy")) {
                (Class::Lint, "clippy")
            } else {
                (Class::Compile, "rustc")
            };
        let message = match c.get(2) {
            Some(code) => format!("{}: {}", code.as_str(), &c[3]),
            None => c[3].to_string(),
        };
        return Some(Finding {
            culprit_file: Some(rel(&loc[1])),
            culprit_line: loc[2].parse().ok(),
            explains: rust_explains(step, i),
            ..finding(class, tool, i, message)
        });
    }
    None
}

regex!(RUST_LABEL, r"^\s*\|\s*[\^~-]+ \S");
/// For up to three errors from `from`: the head, the `-->` location and the labelled
/// annotations (`^^^ expected u64, found u32`), not the quoted source.
fn rust_explains(step: &FailedStep, from: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut errors = 0;
    let mut in_error = false;
    for i in from..step.lines.len() {
        let l = &step.lines[i];
        if let Some(c) = RUST_HEAD.captures(l) {
            in_error = &c[1] == "error" && !c[3].starts_with("could not compile");
            if in_error {
                errors += 1;
                if errors > 3 {
                    break;
                }
                out.push(i);
            }
        } else if in_error && (RUST_LOC.is_match(l) || RUST_LABEL.is_match(l)) {
            out.push(i);
        } else if l.trim().is_empty() {
            in_error = false;
        }
    }
    out
}

regex!(RUFF_HEAD, r"^([A-Z]{1,4}\d{3,4}) (.+)$");
regex!(
    PY_CONCISE,
    r"^(\S+\.pyi?):(\d+):(\d+): ([A-Z]{1,4}\d{3,4}) (.+)$"
);
fn ruff_or_flake8(step: &FailedStep) -> Option<Finding> {
    let tool = if command_has(step, "flake8") {
        "flake8"
    } else {
        "ruff"
    };
    for (i, line) in step.lines.iter().enumerate() {
        if let Some(c) = PY_CONCISE.captures(line) {
            // Each finding's own line; ruff's code frame under it repeats the source.
            return Some(Finding {
                culprit_file: Some(rel(&c[1])),
                culprit_line: c[2].parse().ok(),
                explains: all(step, &PY_CONCISE, 5),
                ..finding(Class::Lint, tool, i, format!("{} {}", &c[4], &c[5]))
            });
        }
        if let Some(c) = RUFF_HEAD.captures(line) {
            let loc = step.lines.get(i + 1).and_then(|l| RUST_LOC.captures(l));
            if let Some(loc) = loc {
                return Some(Finding {
                    culprit_file: Some(rel(&loc[1])),
                    culprit_line: loc[2].parse().ok(),
                    explains: vec![i, i + 1],
                    ..finding(Class::Lint, tool, i, format!("{} {}", &c[1], &c[2]))
                });
            }
        }
    }
    None
}

regex!(GO_BUILD, r"^(\S+\.go):(\d+):(\d+): (.+)$");
fn go_build(step: &FailedStep) -> Option<Finding> {
    if !(command_has(step, "go build")
        || command_has(step, "go vet")
        || step.lines.iter().any(|l| l.starts_with("# ")))
    {
        return None;
    }
    let (at, c) = first(step, &GO_BUILD)?;
    if c[1].ends_with("_test.go") && command_has(step, "go test") {
        return None;
    }
    let (class, tool) = if command_has(step, "go vet") {
        (Class::Lint, "go-vet")
    } else {
        (Class::Compile, "go")
    };
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        explains: all(step, &GO_BUILD, 5),
        ..finding(class, tool, at, c[4].to_string())
    })
}

regex!(CARGO_TEST_FAILED, r"^\s*test (\S+) \.\.\. FAILED$");
regex!(
    NEXTEST_FAIL,
    r"^\s*FAIL \[\s*[\d.]+s\]\s+(?:\(\S+\)\s+)?\S+ (\S+)$"
);
regex!(
    RUST_PANIC,
    r"^\s*thread '(.+?)'(?: \(\d+\))? panicked at (.+?):(\d+):\d+:$"
);
fn cargo_test(step: &FailedStep) -> Option<Finding> {
    let mut tests: Vec<String> = step
        .lines
        .iter()
        .filter_map(|l| {
            CARGO_TEST_FAILED
                .captures(l)
                .or_else(|| NEXTEST_FAIL.captures(l))
                .map(|c| c[1].to_string())
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    tests.retain(|t| seen.insert(t.clone()));
    let panic = first(step, &RUST_PANIC);
    if tests.is_empty() && panic.is_none() {
        return None;
    }
    let tool = if command_has(step, "nextest") {
        "cargo-nextest"
    } else {
        "cargo-test"
    };
    let (at, file, line, message) = match &panic {
        Some((i, c)) => {
            let msg = step
                .lines
                .get(i + 1)
                .map(|l| l.trim().to_string())
                .unwrap_or_default();
            (*i, Some(rel(&c[2])), c[3].parse().ok(), msg)
        }
        None => (0, None, None, "test failed".to_string()),
    };
    // The panic and its message (`assertion failed`, `left:`, `right:`), not the backtrace.
    let explains = match panic {
        Some(_) => (at..step.lines.len())
            .take(6)
            .take_while(|&i| {
                let l = step.lines[i].trim();
                i == at
                    || !(l.is_empty() || l.starts_with("stack backtrace") || l.starts_with("note:"))
            })
            .collect(),
        None => Vec::new(),
    };
    Some(Finding {
        culprit_file: file,
        culprit_line: line,
        failing_tests: tests,
        explains,
        ..finding(Class::Test, tool, at, message)
    })
}

regex!(
    PYTEST_FAILED,
    r"^(?:FAILED|ERROR) (\S+?\.py)(?:::(\S+?))?(?: - (.+))?$"
);
regex!(PYTEST_LOC, r"^(\S+\.py):(\d+): (\w+)$");
regex!(PYTEST_FRAME, r"^(\S+\.py):(\d+): in ");
/// pytest: the short summary's `FAILED file::test` (or `ERROR file` when collecting failed),
/// the failing source line (`>`), the `E` lines and the `file:line: Error` location.
fn pytest(step: &FailedStep) -> Option<Finding> {
    let failed: Vec<(usize, regex::Captures<'_>)> = step
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| PYTEST_FAILED.captures(l).map(|c| (i, c)))
        .collect();
    let (first_at, first_c) = failed.first()?;
    // The project's last frame: collection errors have no `file:line: Error` line.
    let loc = first(step, &PYTEST_LOC).or_else(|| {
        step.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.starts_with('/'))
            .rev()
            .find_map(|(i, l)| PYTEST_FRAME.captures(l).map(|c| (i, c)))
    });
    let (file, line) = match &loc {
        Some((_, c)) => (rel(&c[1]), c[2].parse().ok()),
        None => (rel(&first_c[1]), None),
    };
    let mut explains: Vec<usize> = step.lines[..*first_at]
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with("E ") && !l[1..].trim().is_empty() && !l.contains("Use -v to")
        })
        .map(|(i, _)| i)
        .take(12)
        .collect();
    explains.extend(loc.as_ref().map(|(i, _)| *i));
    Some(Finding {
        culprit_file: Some(file),
        culprit_line: line,
        failing_tests: failed
            .iter()
            .map(|(_, c)| match c.get(2) {
                Some(t) => format!("{}::{}", &c[1], t.as_str()),
                None => c[1].to_string(),
            })
            .collect(),
        explains,
        ..finding(
            Class::Test,
            "pytest",
            loc.as_ref().map_or(*first_at, |(i, _)| *i),
            first_c
                .get(3)
                .map_or("test failed", |m| m.as_str())
                .to_string(),
        )
    })
}

regex!(GO_TEST_FAIL, r"^\s*--- FAIL: (\S+)");
regex!(GO_TEST_LOC, r"^\s+(\S+_test\.go):(\d+): (.+)$");
fn go_test(step: &FailedStep) -> Option<Finding> {
    let (at, _) = first(step, &GO_TEST_FAIL)?;
    let tests = step
        .lines
        .iter()
        .filter_map(|l| GO_TEST_FAIL.captures(l).map(|c| c[1].to_string()))
        .collect();
    let loc = first(step, &GO_TEST_LOC);
    Some(Finding {
        culprit_file: loc.as_ref().map(|(_, c)| rel(&c[1])),
        culprit_line: loc.as_ref().and_then(|(_, c)| c[2].parse().ok()),
        failing_tests: tests,
        explains: all(step, &GO_TEST_LOC, 5),
        ..finding(
            Class::Test,
            "go-test",
            at,
            loc.map_or("test failed".into(), |(_, c)| c[3].to_string()),
        )
    })
}

#[cfg(test)]
mod samples;
