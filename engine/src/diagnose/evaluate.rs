//! Accuracy over a folder of labelled logs: `manifest.json` (fixtures/ci-logs) or
//! `labels.json` (fixtures/corpus, which also labels the lines that explain each failure).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::{clean_line, diagnose_step, failed_step, new_since_green, unrecognised, Ci};

#[derive(Debug, Deserialize)]
pub struct Labelled {
    pub file: String,
    pub failure_class: String,
    pub tool: Option<String>,
    pub culprit_file: Option<String>,
    pub culprit_line: Option<u32>,
    /// The CI whose layout the log has (corpus only).
    #[serde(default)]
    pub ci: Option<Ci>,
    #[serde(default)]
    pub language: Option<String>,
    /// Text that marks the lines saying why the build failed: every line of the log holding
    /// one of these, once cleaned (`clean_line`), is one; `^text$` marks only lines that are
    /// exactly `text` (a value on its own line, `  0`, is in many others) (corpus only).
    #[serde(default)]
    pub explains: Vec<String>,
    /// The failing tests the log names, in its order (corpus only; unchecked when absent).
    #[serde(default)]
    pub failing_tests: Option<Vec<String>>,
}

/// Whether `label` marks `line`: holds it, or is it when the label is `^line$`.
fn marks(label: &str, line: &str) -> bool {
    match label.strip_prefix('^').and_then(|l| l.strip_suffix('$')) {
        Some(whole) => line == whole,
        None => line.contains(label),
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub file: String,
    pub language: String,
    pub bytes: usize,
    pub class_ok: bool,
    pub tool_ok: bool,
    pub culprit_file_ok: bool,
    pub culprit_line_ok: bool,
    pub ci_ok: bool,
    pub failing_tests_ok: bool,
    pub got: String,
    pub want: String,
    /// Line numbers (from 1) labelled as explaining the failure; empty when not labelled.
    pub labelled: BTreeSet<usize>,
    /// The excerpt's line numbers.
    pub excerpt: BTreeSet<usize>,
    /// Baselines: what `grep -iE 'error|fail'` over the whole log shows, the same grep over
    /// the failed step's output only, and the step's last 20 lines.
    pub grep: BTreeSet<usize>,
    pub grep_step: BTreeSet<usize>,
    pub tail: BTreeSet<usize>,
    /// The excerpt as users and the model see it, line for line with `excerpt`.
    pub excerpt_text: String,
    /// With a green run of the same job beside the log (`<log>.green.log`).
    pub green: Option<SinceGreen>,
}

/// The failed step's lines the green run of the same job did not print, and those of them
/// grep would show.
#[derive(Debug)]
pub struct SinceGreen {
    pub new: BTreeSet<usize>,
    pub new_grepped: BTreeSet<usize>,
    /// What a log no parser knows is shown by, without the green run and with it: how the
    /// worker's excerpt for an unknown failure fares, measured on logs whose lines are labelled.
    pub unrecognised: BTreeSet<usize>,
    pub unrecognised_since_green: BTreeSet<usize>,
}

impl Outcome {
    pub fn exact(&self) -> bool {
        self.class_ok
            && self.tool_ok
            && self.culprit_file_ok
            && self.culprit_line_ok
            && self.ci_ok
            && self.failing_tests_ok
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a list of labelled logs: {source}")]
    Manifest {
        path: String,
        source: serde_json::Error,
    },
    #[error("{file}: the label {label:?} marks no line of the log")]
    Label { file: String, label: String },
}

/// The tail baseline's length, the excerpt's largest size.
const TAIL: usize = super::EXCERPT_MAX;

static GREP_BASELINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)error|fail").expect("static regex"));

pub fn evaluate(dir: &Path) -> Result<Vec<Outcome>, EvaluateError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| EvaluateError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let index = if dir.join("labels.json").exists() {
        "labels.json"
    } else {
        "manifest.json"
    };
    let manifest: Vec<Labelled> =
        serde_json::from_slice(&read(index)?).map_err(|source| EvaluateError::Manifest {
            path: dir.join(index).display().to_string(),
            source,
        })?;
    let mut out = Vec::new();
    for l in manifest {
        let bytes = read(&l.file)?;
        let text = String::from_utf8_lossy(&bytes);
        // One failed step for the diagnosis and the baselines.
        let step = failed_step(&text);
        let d = diagnose_step(step.clone(), None);
        // Labels mark lines as a reader sees them: cleaned as the parsers see them (no
        // timestamps, colours or checkout directory).
        let plain: Vec<String> = text.lines().map(clean_line).collect();
        let mut labelled = BTreeSet::new();
        for label in &l.explains {
            let before = labelled.len();
            labelled.extend(
                plain
                    .iter()
                    .enumerate()
                    .filter(|(_, line)| marks(label, line))
                    .map(|(i, _)| i + 1),
            );
            if labelled.len() == before {
                return Err(EvaluateError::Label {
                    file: l.file.clone(),
                    label: label.clone(),
                });
            }
        }
        let grep = plain
            .iter()
            .enumerate()
            .filter(|(_, line)| GREP_BASELINE.is_match(line))
            .map(|(i, _)| i + 1)
            .collect();
        let grep_step = step
            .numbers
            .iter()
            .zip(&step.lines)
            .filter(|(_, line)| GREP_BASELINE.is_match(line))
            .map(|(n, _)| *n)
            .collect();
        let tail = step.numbers.iter().rev().take(TAIL).copied().collect();
        let green_path = l
            .file
            .strip_suffix(".log")
            .map(|stem| dir.join(format!("{stem}.green.log")));
        let green = match green_path.map(std::fs::read) {
            Some(Ok(bytes)) => {
                let green_log = String::from_utf8_lossy(&bytes);
                let new = new_since_green(&step, &green_log);
                let numbered = |lines: Vec<usize>| -> BTreeSet<usize> {
                    lines.into_iter().map(|i| step.numbers[i]).collect()
                };
                let lines: BTreeSet<usize> = new.iter().map(|&i| step.numbers[i]).collect();
                let grepped = new
                    .iter()
                    .filter(|&&i| GREP_BASELINE.is_match(&step.lines[i]))
                    .map(|&i| step.numbers[i])
                    .collect();
                Some(SinceGreen {
                    new: lines,
                    new_grepped: grepped,
                    unrecognised: numbered(unrecognised::lines(&step, None).0),
                    unrecognised_since_green: numbered(
                        unrecognised::lines(&step, Some(&green_log)).0,
                    ),
                })
            }
            _ => None,
        };
        out.push(Outcome {
            bytes: bytes.len(),
            language: l.language.clone().unwrap_or_else(|| "unlabelled".into()),
            class_ok: d.class.as_str() == l.failure_class,
            tool_ok: d.tool == l.tool,
            culprit_file_ok: d.culprit_file == l.culprit_file,
            culprit_line_ok: d.culprit_line == l.culprit_line,
            ci_ok: l.ci.is_none_or(|ci| ci == d.ci),
            failing_tests_ok: l
                .failing_tests
                .as_ref()
                .is_none_or(|tests| *tests == d.failing_tests),
            got: format!(
                "{} {:?} {:?}:{:?} {:?} {:?}",
                d.class.as_str(),
                d.tool,
                d.culprit_file,
                d.culprit_line,
                d.ci,
                d.failing_tests
            ),
            want: format!(
                "{} {:?} {:?}:{:?} {:?} {:?}",
                l.failure_class,
                l.tool,
                l.culprit_file,
                l.culprit_line,
                l.ci,
                l.failing_tests.as_deref().unwrap_or_default()
            ),
            labelled,
            excerpt: d.excerpt_lines.iter().copied().collect(),
            excerpt_text: d.excerpt.clone(),
            grep,
            grep_step,
            tail,
            green,
            file: l.file,
        });
    }
    Ok(out)
}

/// Precision and recall of chosen lines against labelled ones, summed over outcomes
/// (micro-averaged: every labelled line counts once).
#[derive(Debug, Default, Clone, Copy)]
pub struct LineScore {
    pub chosen: usize,
    pub labelled: usize,
    pub both: usize,
    /// Sums of each log's own precision and recall, and how many logs, for macro averages.
    pub precision_sum: f64,
    pub recall_sum: f64,
    pub logs: usize,
}

impl LineScore {
    pub fn add(&mut self, chosen: &BTreeSet<usize>, labelled: &BTreeSet<usize>) {
        let both = chosen.intersection(labelled).count();
        self.chosen += chosen.len();
        self.labelled += labelled.len();
        self.both += both;
        self.precision_sum += both as f64 / chosen.len().max(1) as f64;
        self.recall_sum += both as f64 / labelled.len().max(1) as f64;
        self.logs += 1;
    }

    /// Precision and recall averaged over logs (each log counts once, however long).
    pub fn macro_averages(&self) -> (f64, f64) {
        let n = self.logs.max(1) as f64;
        (self.precision_sum / n, self.recall_sum / n)
    }

    pub fn precision(&self) -> f64 {
        self.both as f64 / self.chosen.max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.both as f64 / self.labelled.max(1) as f64
    }
}
