//! The lines of a failed step that the last green run of the same job did not print: a
//! technique the issue asked to weigh, measured on the corpus's green runs by
//! `selfheal bench diagnose` beside the parsers' excerpts (docs/diagnosis.md).

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::log::{clean_line, FailedStep};

static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+").expect("static regex"));
static HASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9a-f]{7,}\b").expect("static regex"));

/// A line as two runs of one job both print it: hashes and numbers (timings, sizes, ids,
/// speeds) masked, spaces collapsed.
fn normalised(line: &str) -> String {
    let masked = HASH.replace_all(line, "#");
    let masked = NUMBER.replace_all(&masked, "0");
    masked.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Indices into `step.lines` of the non-blank lines the green log never printed.
pub fn new_since_green(step: &FailedStep, green_log: &str) -> Vec<usize> {
    let seen: HashSet<String> = green_log
        .lines()
        .map(|l| normalised(&clean_line(l)))
        .collect();
    step.lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !seen.contains(&normalised(l)))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::new_since_green;
    use crate::diagnose::failed_step;

    #[test]
    fn only_what_the_green_run_did_not_print() {
        let red = "$ pytest\ncollected 2 items in 0.17s\nE   assert 3 == 4\ntests/t.py:9: AssertionError\n1 failed, 1 passed in 0.20s\n";
        let green = "$ pytest\ncollected 2 items in 0.31s\n2 passed in 0.25s\n";
        let step = failed_step(red);
        let new: Vec<&str> = new_since_green(&step, green)
            .into_iter()
            .map(|i| step.lines[i].as_str())
            .collect();
        assert_eq!(
            new,
            vec![
                "E   assert 3 == 4",
                "tests/t.py:9: AssertionError",
                "1 failed, 1 passed in 0.20s"
            ]
        );
    }
}
