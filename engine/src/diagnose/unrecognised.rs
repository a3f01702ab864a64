//! The excerpt of a log no parser recognises: the first lines that read like an error, each
//! with the line after it, instead of the tail (which is mostly the CI's own epilogue).

use std::sync::LazyLock;

use regex::Regex;

use super::log::FailedStep;

static ERROR_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:error|errors|failed|failure|fatal|exception|panic(?:ked)?|traceback|cannot|can't|could not|unable to|not found|no such file|undefined|denied|refused|segmentation fault|aborted)\b",
    )
    .expect("static regex")
});
/// Lines that carry the words but only echo that something failed: summaries, exit codes,
/// and pointers to other logs.
static NOISE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^(?:make(?:\[\d+\])?: \*\*\*|npm (?:err!|error) (?:a complete log|\s*$|lifecycle|failed at the|this is probably not a problem)|error: process completed|.*\bexit(?:ed)? (?:with )?(?:code|status)\b|.*\berror: command failed with exit code|##\[error\]process completed|\s*at |0 errors?\b|.*\b0 failed\b)",
    )
    .expect("static regex")
});
const FIRST: usize = 3;

pub fn error_lines(step: &FailedStep) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, l) in step.lines.iter().enumerate() {
        if out.len() >= FIRST * 2 {
            break;
        }
        if ERROR_WORDS.is_match(l) && !NOISE.is_match(l) && !out.contains(&i) {
            out.push(i);
            if step.lines.get(i + 1).is_some_and(|n| !n.trim().is_empty()) {
                out.push(i + 1);
            }
        }
    }
    out
}
