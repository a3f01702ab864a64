//! Deterministic diagnosis of a failed CI job log: class, tool, culprit, failing tests, the
//! excerpt that proves it, and a fingerprint that recognises the same failure elsewhere.

mod evaluate;
mod fingerprint;
mod green;
mod log;
mod parsers;
mod steps;
mod unrecognised;

use serde::{Deserialize, Serialize};

pub use evaluate::{evaluate, EvaluateError, LineScore, Outcome, SinceGreen};
pub use fingerprint::fingerprint;
pub use green::new_since_green;
pub use log::{clean_line, failed_step, failed_step_as, failed_step_github, Ci, FailedStep};
pub use steps::StepWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Format,
    Lint,
    Compile,
    Test,
    Dependency,
    Infra,
    /// Reproduced as intermittent in the sandbox (never from a log alone).
    Flaky,
    Unknown,
}

impl Class {
    pub fn parse(name: &str) -> Option<Class> {
        serde_json::from_value(serde_json::Value::from(name)).ok()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Format => "format",
            Class::Lint => "lint",
            Class::Compile => "compile",
            Class::Test => "test",
            Class::Dependency => "dependency",
            Class::Infra => "infra",
            Class::Flaky => "flaky",
            Class::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub class: Class,
    pub tool: Option<String>,
    pub culprit_file: Option<String>,
    pub culprit_line: Option<u32>,
    pub fingerprint: String,
    pub failing_tests: Vec<String>,
    pub excerpt: String,
    /// The excerpt's line numbers (from 1) in the raw log.
    #[serde(default)]
    pub excerpt_lines: Vec<usize>,
    /// The CI system whose log layout was recognised.
    #[serde(default)]
    pub ci: Ci,
    /// The failed step's command, as the workflow ran it.
    pub command: Option<String>,
    pub message: String,
    /// An unknown failure's excerpt holds the lines the green run's log beside it did not
    /// print (`diagnose_github_since`).
    #[serde(default)]
    pub since_green: bool,
}

/// At most this many lines of the log are quoted: enough for a few errors with their context.
const EXCERPT_MAX: usize = 20;
/// Caps on what a log's text can make a diagnosis carry (into the database, the model's
/// prompt and pull request bodies): a log can print a million failing tests or a megabyte line.
const TESTS_MAX: usize = 50;
const TEXT_MAX: usize = 400;
/// The block a finding's line starts when its parser names no lines of its own.
const BLOCK: usize = 8;

/// Diagnoses a log of any CI, recognised by its markers.
pub fn diagnose(raw_log: &str) -> Diagnosis {
    diagnose_step(failed_step(raw_log), None)
}

/// Diagnoses a log whose CI is known (see [`failed_step_as`]).
pub fn diagnose_as(raw_log: &str, ci: Ci) -> Diagnosis {
    diagnose_step(failed_step_as(raw_log, ci), None)
}

/// Diagnoses a GitHub Actions log, in the step the jobs API says failed first when its times
/// are known (see [`StepWindow`]).
pub fn diagnose_github(raw_log: &str, window: Option<StepWindow>) -> Diagnosis {
    diagnose_step(failed_step_github(raw_log, window), None)
}

/// `diagnose_github`, with the log of the last green run of the same job beside it: a
/// failure no parser recognises is shown by the lines that run did not print
/// ([`unrecognised::lines`]); a recognised one is diagnosed as without it.
pub fn diagnose_github_since(
    raw_log: &str,
    window: Option<StepWindow>,
    green_log: &str,
) -> Diagnosis {
    diagnose_step(failed_step_github(raw_log, window), Some(green_log))
}

fn diagnose_step(step: FailedStep, green_log: Option<&str>) -> Diagnosis {
    let found = parsers::PARSERS.iter().find_map(|parse| parse(&step));
    let (lines, d) = match found {
        Some(f) => {
            let lines = if f.explains.is_empty() {
                parsers::block(&step, f.at, BLOCK)
            } else {
                f.explains.clone()
            };
            let failing_tests: Vec<String> = f
                .failing_tests
                .iter()
                .take(TESTS_MAX)
                .map(|t| capped(t))
                .collect();
            let message = capped(&f.message);
            // A culprit is a path inside the repository or none: the log can name any path.
            // Windows runners' relative paths use backslashes.
            let culprit_file = f
                .culprit_file
                .map(|p| p.replace('\\', "/"))
                .filter(|p| inside_repository(p));
            let d = Diagnosis {
                fingerprint: fingerprint(f.class, Some(&f.tool), &message, &failing_tests),
                class: f.class,
                tool: Some(f.tool),
                culprit_line: culprit_file.as_ref().and(f.culprit_line),
                culprit_file,
                failing_tests,
                excerpt: String::new(),
                excerpt_lines: Vec::new(),
                ci: step.ci,
                command: step.command.clone(),
                message,
                since_green: false,
            };
            (lines, d)
        }
        None => {
            // Unknown stays unknown: the lines that read like errors are shown, or the last
            // lines; nothing is guessed about the class.
            let (lines, since_green) = unrecognised::lines(&step, green_log);
            // The fingerprint is the error-word lines' whether or not a green log was found:
            // the same failure keeps one fingerprint (fix memory, one fix per failure, the
            // reports) whatever GitHub still keeps, and the new lines are often noise.
            let fingerprinted = match since_green {
                true => unrecognised::lines(&step, None).0,
                false => lines.clone(),
            };
            let text: Vec<&str> = fingerprinted
                .iter()
                .map(|&i| step.lines[i].as_str())
                .collect();
            let d = Diagnosis {
                since_green,
                fingerprint: fingerprint(Class::Unknown, None, &text.join("\n"), &[]),
                class: Class::Unknown,
                tool: None,
                culprit_file: None,
                culprit_line: None,
                failing_tests: Vec::new(),
                excerpt: String::new(),
                excerpt_lines: Vec::new(),
                ci: step.ci,
                command: step.command.clone(),
                message: String::new(),
            };
            (lines, d)
        }
    };
    let mut lines: Vec<usize> = lines
        .into_iter()
        .filter(|&i| i < step.lines.len())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    lines.truncate(EXCERPT_MAX);
    Diagnosis {
        excerpt: lines
            .iter()
            .map(|&i| capped(&step.lines[i]))
            .collect::<Vec<_>>()
            .join("\n"),
        excerpt_lines: lines.iter().map(|&i| step.numbers[i]).collect(),
        ..d
    }
}

fn capped(text: &str) -> String {
    match text.char_indices().nth(TEXT_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// A relative path that stays in the repository: no root (nor a UNC one, `\\\\host`, once
/// its backslashes are slashes), drive, scheme or `..`.
fn inside_repository(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains(':')
        && path.split('/').all(|part| part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ci_logs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/ci-logs")
    }

    #[test]
    fn every_labelled_fixture_log_is_diagnosed_exactly() {
        let outcomes = evaluate(&ci_logs()).unwrap();
        assert!(outcomes.len() >= 12);
        let wrong: Vec<String> = outcomes
            .iter()
            .filter(|o| !(o.class_ok && o.tool_ok && o.culprit_file_ok && o.culprit_line_ok))
            .map(|o| format!("{}: got {}, want {}", o.file, o.got, o.want))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    fn corpus() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/corpus")
    }

    /// Real failing runs of real tools in many languages, in six CI systems' layouts
    /// (fixtures/corpus, labelled by hand): class, tool, culprit and CI exactly.
    #[test]
    fn every_corpus_log_is_diagnosed_as_labelled() {
        let outcomes = evaluate(&corpus()).unwrap();
        assert!(outcomes.len() >= 40, "{}", outcomes.len());
        let languages: std::collections::BTreeSet<&str> =
            outcomes.iter().map(|o| o.language.as_str()).collect();
        assert!(languages.len() >= 12, "{languages:?}");
        let wrong: Vec<String> = outcomes
            .iter()
            .filter(|o| !o.exact())
            .map(|o| format!("{}: got {}, want {}", o.file, o.got, o.want))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// Each corpus log's excerpt is the one recorded (fixtures/corpus/excerpts.json): a parser
    /// change that moves any excerpt fails here until it has been checked against the labels
    /// and recorded again (scripts/corpus/snapshot.py).
    #[test]
    fn every_corpus_excerpt_is_the_recorded_one() {
        let recorded: std::collections::BTreeMap<String, Vec<usize>> =
            serde_json::from_str(&std::fs::read_to_string(corpus().join("excerpts.json")).unwrap())
                .unwrap();
        let outcomes = evaluate(&corpus()).unwrap();
        assert_eq!(recorded.len(), outcomes.len());
        for o in &outcomes {
            let now: Vec<usize> = o.excerpt.iter().copied().collect();
            assert_eq!(Some(&now), recorded.get(&o.file), "{}", o.file);
        }
    }

    /// The excerpt holds the lines a person labelled as saying why, and little else: far
    /// better than grep over the same logs. The floors are today's figures rounded down, so
    /// that a parser that stops explaining fails here.
    #[test]
    fn excerpts_find_the_lines_that_explain_the_failure() {
        let outcomes = evaluate(&corpus()).unwrap();
        let (mut ours, mut grep) = (LineScore::default(), LineScore::default());
        for o in &outcomes {
            ours.add(&o.excerpt, &o.labelled);
            grep.add(&o.grep, &o.labelled);
            assert!(
                !o.excerpt.is_disjoint(&o.labelled),
                "{}: the excerpt {:?} misses every labelled line {:?}",
                o.file,
                o.excerpt,
                o.labelled
            );
        }
        eprintln!(
            "excerpt precision {:.2} recall {:.2}; grep precision {:.2} recall {:.2}",
            ours.precision(),
            ours.recall(),
            grep.precision(),
            grep.recall()
        );
        assert!(ours.recall() >= RECALL_FLOOR, "{ours:?}");
        assert!(ours.precision() >= PRECISION_FLOOR, "{ours:?}");
        assert!(
            ours.precision() > 4.0 * grep.precision(),
            "{ours:?} {grep:?}"
        );
    }

    const RECALL_FLOOR: f64 = 0.95;
    const PRECISION_FLOOR: f64 = 0.96;

    /// What the worker shows of a failure no parser knows, measured on the corpus's logs as if
    /// none did: beside the green run's log it finds most labelled lines where the error words
    /// find half, without losing much precision. Floors as above, today's figures rounded down.
    #[test]
    fn beside_the_green_run_an_unknown_failure_shows_what_explains_it() {
        let outcomes = evaluate(&corpus()).unwrap();
        let (mut alone, mut since) = (LineScore::default(), LineScore::default());
        for o in &outcomes {
            if let Some(g) = &o.green {
                alone.add(&g.unrecognised, &o.labelled);
                since.add(&g.unrecognised_since_green, &o.labelled);
            }
        }
        eprintln!("error words {alone:?}; since green {since:?}");
        assert!(since.logs >= 30, "{since:?}");
        assert!(since.recall() >= 0.85, "{since:?}");
        assert!(since.recall() > 1.5 * alone.recall(), "{since:?} {alone:?}");
        assert!(since.precision() >= 0.25, "{since:?}");
    }

    #[test]
    fn failing_tests_and_excerpts_come_from_the_log() {
        let read = |f: &str| std::fs::read_to_string(ci_logs().join(f)).unwrap();
        let d = diagnose(&read("cargo-test-panic.log"));
        assert_eq!(d.failing_tests, vec!["tests::body_temperature"]);
        assert!(
            d.excerpt.contains("panicked at src/lib.rs:7:9"),
            "{}",
            d.excerpt
        );
        assert_eq!(d.command.as_deref(), Some("cargo test"));
        let d = diagnose(&read("pytest-failure.log"));
        assert_eq!(
            d.failing_tests,
            vec!["tests/test_inventory.py::test_restock_adds"]
        );
        let d = diagnose(&read("jest-failure.log"));
        assert_eq!(d.failing_tests, vec!["january has 31 days"]);
    }

    #[test]
    fn the_same_failure_elsewhere_has_the_same_fingerprint() {
        let original = std::fs::read_to_string(ci_logs().join("cargo-test-panic.log")).unwrap();
        // Another repository, another day, another thread id: the same failure.
        let moved = original
            .replace("/home/runner/work/acme/acme", "/home/runner/work/zeta/zeta")
            .replace("2026-11-20T09:", "2027-01-03T17:")
            .replace("(14085)", "(20931)")
            .replace("temps-c2da9d5470d8ba7a", "temps-0f1e2d3c4b5a6978");
        let a = diagnose(&original);
        let b = diagnose(&moved);
        assert_eq!(a.fingerprint, b.fingerprint);
        // A different assertion in a different test is a different failure.
        let other = original.replace("body_temperature", "boiling_point");
        assert_ne!(diagnose(&other).fingerprint, a.fingerprint);
        let rustc = std::fs::read_to_string(ci_logs().join("rustc-e0599.log")).unwrap();
        assert_ne!(diagnose(&rustc).fingerprint, a.fingerprint);
    }

    /// Real output of tools the shared fixtures do not cover (see testdata/README.md).
    #[test]
    fn more_real_tool_outputs() {
        let case = |name: &str| {
            diagnose(
                &std::fs::read_to_string(format!(
                    "{}/src/diagnose/testdata/{name}",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
        };
        let d = case("javac.log");
        assert_eq!(
            (d.class, d.tool.as_deref()),
            (Class::Compile, Some("javac"))
        );
        assert_eq!(
            (d.culprit_file.as_deref(), d.culprit_line),
            (Some("src/main/java/acme/Sum.java"), Some(7))
        );
        let d = case("flake8.log");
        assert_eq!((d.class, d.tool.as_deref()), (Class::Lint, Some("flake8")));
        assert_eq!(
            (d.culprit_file.as_deref(), d.culprit_line),
            (Some("app/util.py"), Some(1))
        );
        assert!(d.message.starts_with("F401"), "{}", d.message);
        let d = case("nextest.log");
        assert_eq!(
            (d.class, d.tool.as_deref()),
            (Class::Test, Some("cargo-nextest"))
        );
        assert_eq!(
            (d.culprit_file.as_deref(), d.culprit_line),
            (Some("src/lib.rs"), Some(5))
        );
        assert_eq!(d.failing_tests, vec!["tests::halves"]);
        let d = case("nospace.log");
        assert_eq!(d.class, Class::Infra);
        assert_eq!(d.message, "disk full");
    }

    /// What a log can make a diagnosis carry is bounded, and a culprit stays inside the
    /// repository (Windows' relative paths turned to slashes).
    #[test]
    fn a_log_cannot_name_a_path_outside_nor_flood_the_diagnosis() {
        let step = |output: &str| {
            format!("##[group]Run make\nmake\n##[endgroup]\n{output}\n##[error]Process completed with exit code 2.\n")
        };
        for outside in [
            "/usr/include/stdio.h:1:1: error: no",
            "../../elsewhere/x.c:1:1: error: no",
            "C:/Windows/x.c:1:1: error: no",
            "..\\..\\x.c:1:1: error: no",
        ] {
            let d = diagnose(&step(outside));
            assert_eq!(d.class, Class::Compile, "{outside}");
            assert_eq!((d.culprit_file, d.culprit_line), (None, None), "{outside}");
        }
        let d = diagnose(&step(r"D:\a\widgets\widgets\src\lib.c:3:1: error: no"));
        assert_eq!(
            (d.culprit_file.as_deref(), d.culprit_line),
            (Some("src/lib.c"), Some(3))
        );
        let tests: String = (0..80)
            .map(|n| format!("test tests::case_{n} ... FAILED\n"))
            .collect();
        let long = "x".repeat(5000);
        let d = diagnose(&step(&format!(
            "{tests}thread 'tests::case_0' panicked at src/lib.rs:1:1:\n{long}"
        )));
        assert_eq!(d.failing_tests.len(), 50);
        assert!(d.message.chars().count() <= 401, "{}", d.message.len());
        assert!(d.excerpt.lines().all(|l| l.chars().count() <= 401));
    }

    #[test]
    fn unknown_stays_unknown() {
        let log = "##[group]Run ./deploy.sh\n./deploy.sh\n##[endgroup]\nsomething odd happened\n##[error]Process completed with exit code 3.\n";
        let d = diagnose(log);
        assert_eq!(d.class, Class::Unknown);
        assert_eq!(d.tool, None);
        assert_eq!(d.culprit_file, None);
        assert!(d.excerpt.contains("something odd happened"));
    }
}
