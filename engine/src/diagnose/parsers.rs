//! One parser per tool's output format. Each looks at the failed step's clean lines and
//! returns what it recognises; none guesses. Order matters: a compile error stops tests from
//! running, so compilers are asked before test runners, and both before the generic
//! infrastructure and dependency patterns.

use std::sync::LazyLock;

use regex::Regex;

use super::log::FailedStep;
use super::Class;

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
}

type Parser = fn(&FailedStep) -> Option<Finding>;

pub const PARSERS: &[Parser] = &[
    rustfmt,
    black,
    prettier,
    gofmt,
    rust_diagnostic,
    ruff_or_flake8,
    eslint,
    tsc,
    javac,
    go_build,
    cargo_test,
    pytest,
    jest,
    vitest,
    go_test,
    junit,
    infra,
    dependency,
];

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

macro_rules! regex {
    ($name:ident, $pattern:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| re($pattern));
    };
}

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
    }
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

regex!(BLACK, r"^would reformat (.+)$");
fn black(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &BLACK)?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        ..finding(Class::Format, "black", at, "black would reformat")
    })
}

regex!(PRETTIER, r"^\[warn\] (\S+\.[A-Za-z0-9]+)$");
fn prettier(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &PRETTIER)?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        ..finding(Class::Format, "prettier", at, "prettier code style issues")
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
            ..finding(class, tool, i, message)
        });
    }
    None
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
            return Some(Finding {
                culprit_file: Some(rel(&c[1])),
                culprit_line: c[2].parse().ok(),
                ..finding(Class::Lint, tool, i, format!("{} {}", &c[4], &c[5]))
            });
        }
        if let Some(c) = RUFF_HEAD.captures(line) {
            let loc = step.lines.get(i + 1).and_then(|l| RUST_LOC.captures(l));
            if let Some(loc) = loc {
                return Some(Finding {
                    culprit_file: Some(rel(&loc[1])),
                    culprit_line: loc[2].parse().ok(),
                    ..finding(Class::Lint, tool, i, format!("{} {}", &c[1], &c[2]))
                });
            }
        }
    }
    None
}

regex!(ESLINT_FILE, r"^(\S+\.(?:[cm]?[jt]sx?|vue|svelte))$");
regex!(ESLINT_ROW, r"^\s+(\d+):(\d+)\s+error\s+(.+?)\s{2,}(\S+)$");
fn eslint(step: &FailedStep) -> Option<Finding> {
    let mut file: Option<String> = None;
    for (i, line) in step.lines.iter().enumerate() {
        if let Some(c) = ESLINT_FILE.captures(line) {
            file = Some(rel(&c[1]));
        } else if let (Some(c), Some(f)) = (ESLINT_ROW.captures(line), &file) {
            return Some(Finding {
                culprit_file: Some(f.clone()),
                culprit_line: c[1].parse().ok(),
                ..finding(Class::Lint, "eslint", i, format!("{} {}", &c[4], &c[3]))
            });
        }
    }
    None
}

regex!(
    TSC,
    r"^(\S+?\.[cm]?tsx?)(?:\((\d+),(\d+)\)|:(\d+):(\d+)) ?[:-] error (TS\d+): (.+)$"
);
fn tsc(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &TSC)?;
    let line = c.get(2).or(c.get(4)).and_then(|m| m.as_str().parse().ok());
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: line,
        ..finding(Class::Compile, "tsc", at, format!("{}: {}", &c[6], &c[7]))
    })
}

regex!(
    JAVAC,
    r"^(?:\[ERROR\] )?(\S+\.java):(?:(\d+): error: (.+)|\[(\d+),\d+\] (.+))$"
);
fn javac(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &JAVAC)?;
    let line = c.get(2).or(c.get(4)).and_then(|m| m.as_str().parse().ok());
    let message = c.get(3).or(c.get(5)).map_or("", |m| m.as_str()).to_string();
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: line,
        ..finding(Class::Compile, "javac", at, message)
    })
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
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        ..finding(Class::Compile, "go", at, c[4].to_string())
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
    let (at, file, line, message) = match panic {
        Some((i, c)) => {
            let msg = step
                .lines
                .get(i + 1)
                .map(|l| l.trim().to_string())
                .unwrap_or_default();
            (i, Some(rel(&c[2])), c[3].parse().ok(), msg)
        }
        None => (0, None, None, "test failed".to_string()),
    };
    Some(Finding {
        culprit_file: file,
        culprit_line: line,
        failing_tests: tests,
        ..finding(Class::Test, tool, at, message)
    })
}

regex!(
    PYTEST_FAILED,
    r"^(?:FAILED|ERROR) (\S+?\.py)::(\S+?)(?: - (.+))?$"
);
regex!(PYTEST_LOC, r"^(\S+\.py):(\d+): (\w+)$");
fn pytest(step: &FailedStep) -> Option<Finding> {
    let failed: Vec<(usize, regex::Captures<'_>)> = step
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| PYTEST_FAILED.captures(l).map(|c| (i, c)))
        .collect();
    let (first_at, first_c) = failed.first()?;
    let loc = first(step, &PYTEST_LOC);
    let (file, line) = match &loc {
        Some((_, c)) => (rel(&c[1]), c[2].parse().ok()),
        None => (rel(&first_c[1]), None),
    };
    Some(Finding {
        culprit_file: Some(file),
        culprit_line: line,
        failing_tests: failed
            .iter()
            .map(|(_, c)| format!("{}::{}", &c[1], &c[2]))
            .collect(),
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

regex!(JEST_FAIL, r"^FAIL (\S+)$");
regex!(JEST_TEST, r"^\s*● (.+)$");
regex!(JS_AT, r"^\s*at .*?\(?([^\s()]+?):(\d+):(\d+)\)?$");
fn jest(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &JEST_FAIL)?;
    let tests: Vec<String> = step
        .lines
        .iter()
        .filter_map(|l| JEST_TEST.captures(l).map(|c| c[1].trim().to_string()))
        .filter(|t| t != "Test suite failed to run")
        .collect();
    let loc = step
        .lines
        .iter()
        .filter_map(|l| JS_AT.captures(l))
        .find(|c| !c[1].contains("node_modules"));
    let message = step
        .lines
        .iter()
        .skip(at)
        .find(|l| l.trim_start().starts_with("expect(") || l.trim_start().starts_with("Error"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "test failed".into());
    Some(Finding {
        culprit_file: Some(loc.as_ref().map_or_else(|| rel(&c[1]), |l| rel(&l[1]))),
        culprit_line: loc.and_then(|l| l[2].parse().ok()),
        failing_tests: tests,
        ..finding(Class::Test, "jest", at, message)
    })
}

regex!(
    VITEST_FAIL,
    r"^\s*(?:FAIL|×)\s+(\S+\.[cm]?[jt]sx?) > (.+?)(?: \d+ms)?$"
);
regex!(VITEST_AT, r"^\s*❯ (\S+?):(\d+):(\d+)$");
fn vitest(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &VITEST_FAIL)?;
    let loc = first(step, &VITEST_AT);
    Some(Finding {
        culprit_file: Some(loc.as_ref().map_or_else(|| rel(&c[1]), |(_, l)| rel(&l[1]))),
        culprit_line: loc.and_then(|(_, l)| l[2].parse().ok()),
        failing_tests: vec![c[2].to_string()],
        ..finding(Class::Test, "vitest", at, c[2].to_string())
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
        ..finding(
            Class::Test,
            "go-test",
            at,
            loc.map_or("test failed".into(), |(_, c)| c[3].to_string()),
        )
    })
}

regex!(
    SUREFIRE_SUMMARY,
    r"^\[ERROR\] Tests run: \d+, Failures: \d+, Errors: \d+"
);
regex!(SUREFIRE_TEST, r"^\[ERROR\]\s+(\S+?)\.(\w+):(\d+) (.+)$");
regex!(GRADLE_TEST, r"^(\S+) > (\S+)(?:\(\))? FAILED$");
fn junit(step: &FailedStep) -> Option<Finding> {
    if let Some((at, c)) = first(step, &SUREFIRE_TEST) {
        let class_path = c[1].replace('.', "/");
        return Some(Finding {
            culprit_file: Some(format!("src/test/java/{class_path}.java")),
            culprit_line: c[3].parse().ok(),
            failing_tests: vec![format!("{}.{}", &c[1], &c[2])],
            ..finding(Class::Test, "junit", at, c[4].to_string())
        });
    }
    if let Some((at, c)) = first(step, &GRADLE_TEST) {
        return Some(Finding {
            failing_tests: vec![format!("{}.{}", &c[1], &c[2])],
            ..finding(Class::Test, "junit", at, "test failed")
        });
    }
    let (at, _) = first(step, &SUREFIRE_SUMMARY)?;
    Some(finding(Class::Test, "junit", at, "tests failed"))
}

/// (pattern, what it means) for failures of the machine rather than the code.
static INFRA: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)failed to resolve address|could not resolve host|name or service not known|temporary failure in name resolution|getaddrinfo (?:EAI_AGAIN|ENOTFOUND)", "network: DNS failure"),
        (r"(?i)connection timed out|operation timed out|ETIMEDOUT|ECONNRESET|network failure seems to have happened|TLS handshake timeout", "network: timeout"),
        (r"(?i)the runner has received a shutdown signal|lost communication with the server|the hosted runner encountered an error|runner.*was lost", "runner lost"),
        (r"(?i)no space left on device|ENOSPC|disk quota exceeded", "disk full"),
        (r"(?i)out of memory|oom-?kill|killed signal terminated program|signal: 9, SIGKILL|exit code 137", "out of memory"),
        (r"(?i)api rate limit exceeded|429 too many requests|toomanyrequests|secondary rate limit", "rate limited"),
        (r"(?i)the job running on runner .* has exceeded the maximum execution time|the operation was canceled", "timed out"),
    ]
    .into_iter()
    .map(|(p, m)| (re(p), m))
    .collect()
});

fn infra(step: &FailedStep) -> Option<Finding> {
    for (i, line) in step.lines.iter().enumerate() {
        if let Some((_, what)) = INFRA.iter().find(|(re, _)| re.is_match(line)) {
            return Some(finding(Class::Infra, &tool_of(step), i, *what));
        }
    }
    None
}

static DEPENDENCY: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"npm (?:ERR!|error) code ERESOLVE|ERESOLVE unable to resolve dependency tree|ERESOLVE could not resolve", "npm: ERESOLVE"),
        (r"can only install packages when your package\.json and package-lock\.json .*are in sync|lockfile .*(?:out of date|needs to be updated)|ERR_PNPM_OUTDATED_LOCKFILE|frozen-lockfile", "lockfile out of date"),
        (r"(?:cannot update the lock file .* because --locked was passed|the lock file .* needs to be updated but --locked was passed)", "Cargo.lock out of date"),
        (r"failed to select a version for|no matching package named|failed to select a version for the requirement", "cargo: resolution failed"),
        (r"ResolutionImpossible|Could not find a version that satisfies the requirement|No matching distribution found for|conflicting dependencies", "pip: resolution failed"),
        (r"go: (?:updates to go\.mod needed|missing go\.sum entry)", "go.mod/go.sum out of date"),
    ]
    .into_iter()
    .map(|(p, m)| (re(p), m))
    .collect()
});

fn dependency(step: &FailedStep) -> Option<Finding> {
    for (i, line) in step.lines.iter().enumerate() {
        if let Some((_, what)) = DEPENDENCY.iter().find(|(re, _)| re.is_match(line)) {
            return Some(finding(Class::Dependency, &tool_of(step), i, *what));
        }
    }
    None
}

/// The program the failed step ran (`cargo`, `npm`, `pip`, …), for classes found by
/// message rather than by a tool's format.
fn tool_of(step: &FailedStep) -> String {
    let command = step.command.as_deref().unwrap_or("");
    let mut words = command.split_whitespace().filter(|w| !w.contains('='));
    match words.next() {
        Some("npx") | Some("python3") | Some("python") => words
            .find(|w| !w.starts_with('-'))
            .unwrap_or("unknown")
            .to_string(),
        Some(w) => w.to_string(),
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! Formats the shared fixtures and testdata/ do not cover, as the tools print them
    //! (short samples of each tool's documented output layout).
    use super::super::{diagnose, Class};

    fn step(command: &str, output: &str) -> String {
        format!("##[group]Run {command}\n{command}\n##[endgroup]\n{output}\n##[error]Process completed with exit code 1.\n")
    }

    fn check(
        command: &str,
        output: &str,
        class: Class,
        tool: &str,
        file: Option<&str>,
        line: Option<u32>,
    ) -> super::super::Diagnosis {
        let d = diagnose(&step(command, output));
        assert_eq!(
            (
                d.class,
                d.tool.as_deref(),
                d.culprit_file.as_deref(),
                d.culprit_line
            ),
            (class, Some(tool), file, line),
            "{command}"
        );
        d
    }

    #[test]
    fn go_toolchain_outputs() {
        let d = check(
            "go test ./...",
            "--- FAIL: TestAdd (0.00s)\n    math_test.go:12: Add(2, 2) = 5, want 4\nFAIL\nFAIL\texample.com/calc\t0.002s",
            Class::Test,
            "go-test",
            Some("math_test.go"),
            Some(12),
        );
        assert_eq!(d.failing_tests, vec!["TestAdd"]);
        check(
            "go build ./...",
            "# example.com/calc\n./calc.go:7:9: undefined: Sub",
            Class::Compile,
            "go",
            Some("calc.go"),
            Some(7),
        );
        check(
            "test -z \"$(gofmt -l .)\" || (gofmt -d . && exit 1)",
            "diff -u calc.go.orig calc.go\n--- calc.go.orig\n+++ calc.go",
            Class::Format,
            "gofmt",
            Some("calc.go"),
            None,
        );
    }

    #[test]
    fn vitest_and_junit_outputs() {
        let d = check(
            "npx vitest run",
            " FAIL  src/sum.test.ts > sum > adds numbers\nAssertionError: expected 5 to be 4\n ❯ src/sum.test.ts:5:20",
            Class::Test,
            "vitest",
            Some("src/sum.test.ts"),
            Some(5),
        );
        assert_eq!(d.failing_tests, vec!["sum > adds numbers"]);
        let d = check(
            "mvn -B test",
            "[ERROR] Tests run: 1, Failures: 1, Errors: 0, Skipped: 0\n[ERROR] Failures: \n[ERROR]   com.acme.SumTest.adds:14 expected: <4> but was: <5>",
            Class::Test,
            "junit",
            Some("src/test/java/com/acme/SumTest.java"),
            Some(14),
        );
        assert_eq!(d.failing_tests, vec!["com.acme.SumTest.adds"]);
    }

    #[test]
    fn dependency_outputs() {
        let cases = [
            ("npm ci", "npm error code ERESOLVE\nnpm error ERESOLVE unable to resolve dependency tree", "npm"),
            ("npm ci", "npm ERR! `npm ci` can only install packages when your package.json and package-lock.json or npm-shrinkwrap.json are in sync.", "npm"),
            ("cargo build --locked", "error: the lock file /home/runner/work/a/a/Cargo.lock needs to be updated but --locked was passed to prevent this", "cargo"),
            ("cargo build", "error: failed to select a version for the requirement `serde = \"^9\"`", "cargo"),
            ("pip install -r requirements.txt", "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/", "pip"),
        ];
        for (cmd, out, tool) in cases {
            check(cmd, out, Class::Dependency, tool, None, None);
        }
    }

    #[test]
    fn infrastructure_outputs() {
        let cases = [
            ("cargo build", "error: could not compile `big` (lib)\n\nCaused by:\n  process didn't exit successfully: `rustc ...` (signal: 9, SIGKILL: kill)", "out of memory"),
            ("./deploy.sh", "curl: (6) Could not resolve host: registry.example.com", "network: DNS failure"),
            ("./release.sh", "gh: API rate limit exceeded for installation ID 4242. (HTTP 403)", "rate limited"),
            ("make", "The runner has received a shutdown signal. This can happen when the runner service is stopped", "runner lost"),
        ];
        for (cmd, out, what) in cases {
            let d = diagnose(&step(cmd, out));
            assert_eq!((d.class, d.message.as_str()), (Class::Infra, what), "{cmd}");
        }
    }
}
