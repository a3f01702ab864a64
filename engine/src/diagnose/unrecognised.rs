//! The excerpt of a log no parser recognises: the first lines that read like an error, each
//! with the line after it, instead of the tail (which is mostly the CI's own epilogue).

use std::sync::LazyLock;

use regex::Regex;

use super::green::new_since_green;
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
/// How many lines are shown when none reads like an error, or when a green run's log tells
/// which are new.
const SHOWN: usize = 12;

/// The lines shown when no parser recognises the failure, and whether the green run's log
/// chose them. With the log of the last green run of the same job: the first lines of the
/// failed step that run did not print (masked as `new_since_green` masks them), error words or
/// not; on the corpus this finds 0.89 of the labelled lines where error words find 0.48, at
/// nearly the same precision (docs/diagnosis.md). Without one, or when it printed every line:
/// the first lines that read like errors (each with the line after it), or the step's last
/// lines.
pub fn lines(step: &FailedStep, green_log: Option<&str>) -> (Vec<usize>, bool) {
    if let Some(green) = green_log {
        let new = new_since_green(step, green);
        if !new.is_empty() {
            return (new.into_iter().take(SHOWN).collect(), true);
        }
    }
    let errors = error_lines(step);
    if errors.is_empty() {
        (
            (step.lines.len().saturating_sub(SHOWN)..step.lines.len()).collect(),
            false,
        )
    } else {
        (errors, false)
    }
}

fn error_lines(step: &FailedStep) -> Vec<usize> {
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

#[cfg(test)]
mod tests {
    use super::{error_lines, lines};
    use crate::diagnose::log::failed_step;

    #[test]
    fn the_lines_that_read_like_errors_not_the_summaries() {
        let step = failed_step(
            "$ ./deploy.sh\nuploading build 42\nError: bucket s3://releases not found\n  check the bucket's name\nmake: *** [Makefile:3: deploy] Error 1\nnpm error A complete log of this run can be found in: /x\nexited with code 1\n",
        );
        let shown: Vec<&str> = error_lines(&step)
            .into_iter()
            .map(|i| step.lines[i].as_str())
            .collect();
        assert_eq!(
            shown,
            vec![
                "Error: bucket s3://releases not found",
                "  check the bucket's name"
            ]
        );
        let quiet = failed_step("$ ./check.sh\nversion 1.2.0 but tag v1.3.0\n");
        assert!(error_lines(&quiet).is_empty());
    }

    #[test]
    fn beside_a_green_log_the_first_lines_it_did_not_print() {
        let step = failed_step(
            "$ ./publish.sh\nchecking error pages: 4 found\nuploading 312 files\nversion 1.4.0 but tag v1.5.0\nrefusing to publish\n",
        );
        let shown = |green: Option<&str>| -> Vec<String> {
            lines(&step, green)
                .0
                .into_iter()
                .map(|i| step.lines[i].clone())
                .collect()
        };
        let green = "$ ./publish.sh\nchecking error pages: 3 found\nuploading 298 files\npublished v1.4.0\n";
        assert_eq!(
            shown(Some(green)),
            vec!["version 1.4.0 but tag v1.5.0", "refusing to publish"]
        );
        // Without it, the error words mislead; with a green log that printed every line, too.
        assert_eq!(
            shown(None),
            vec!["checking error pages: 4 found", "uploading 312 files"]
        );
        let everything = "$ ./publish.sh\nchecking error pages: 4 found\nuploading 312 files\nversion 1.4.0 but tag v1.5.0\nrefusing to publish\n";
        assert_eq!(shown(Some(everything)), shown(None));
        assert!(!lines(&step, Some(everything)).1);
        assert!(lines(&step, Some(green)).1);
    }
}
