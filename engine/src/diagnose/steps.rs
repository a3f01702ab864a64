//! GitHub's own account of which step failed. The jobs API lists each step with its
//! conclusion and its start and end times; a GitHub log stamps every line. The first step the
//! API calls failed is the failure: its end marker (`##[error]Process completed with exit
//! code`) is the one stamped within that step's times. The log alone cannot tell: a step run
//! `if: always()` after the failure (an upload of test results, say) that fails too writes
//! the last marker, and a `continue-on-error` step that failed earlier writes one as well.

use chrono::{DateTime, Duration, Utc};

/// When the first failed step ran, as the jobs API reports it (`started_at`, `completed_at`;
/// whole seconds, so the end is taken a second late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWindow {
    pub started: DateTime<Utc>,
    pub completed: DateTime<Utc>,
}

impl StepWindow {
    /// From the API's two times; none when either is missing or unreadable, or they are out
    /// of order.
    pub fn parse(started: Option<&str>, completed: Option<&str>) -> Option<StepWindow> {
        let read = |t: Option<&str>| {
            DateTime::parse_from_rfc3339(t?)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        };
        let (started, completed) = (read(started)?, read(completed)?);
        (started <= completed).then_some(StepWindow { started, completed })
    }

    /// Within the step's times: the API truncates to the second, the log's stamps have
    /// fractions, so the step runs until a second after its `completed_at`.
    fn holds(&self, at: DateTime<Utc>) -> bool {
        at >= self.started && at < self.completed + Duration::seconds(1)
    }

    /// In the second the step ended.
    fn ends(&self, at: DateTime<Utc>) -> bool {
        at >= self.completed && at < self.completed + Duration::seconds(1)
    }
}

/// The stamp GitHub puts before each line of a job's log (`2024-01-20T17:42:40.1234567Z `).
fn stamp(raw: &str) -> Option<DateTime<Utc>> {
    let (head, _) = raw.split_once(' ')?;
    DateTime::parse_from_rfc3339(head.trim_start_matches('\u{feff}'))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Where the step of `window` ends in the log (exclusive): at its end marker, the one stamped
/// in the second the step ended (a step that failed just before, under `continue-on-error`,
/// ends within the same second it started), else the first stamped within its times; with no
/// marker there (a timed-out or cancelled step, an action that failed with its own error),
/// after its last stamped line. None when nothing is stamped within it (an unstamped log, a
/// window from another attempt).
pub(super) fn end_within(
    raw: &[&str],
    lines: &[String],
    window: &StepWindow,
    is_marker: impl Fn(&str) -> bool,
) -> Option<usize> {
    let at = |i: usize| raw.get(i).and_then(|r| stamp(r));
    let markers: Vec<usize> = (0..lines.len()).filter(|&i| is_marker(&lines[i])).collect();
    markers
        .iter()
        .find(|&&i| at(i).is_some_and(|t| window.ends(t)))
        .or_else(|| {
            markers
                .iter()
                .find(|&&i| at(i).is_some_and(|t| window.holds(t)))
        })
        .copied()
        .or_else(|| {
            (0..lines.len())
                .rev()
                .find(|&i| at(i).is_some_and(|t| window.holds(t)))
                .map(|i| i + 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{diagnose_github, Class};

    /// A job whose tests failed, then whose `if: always()` upload of their results failed too
    /// (no results to upload), as GitHub stamps it.
    const LOG: &str = "\
2026-11-20T09:00:01.1000000Z ##[group]Run cargo test
2026-11-20T09:00:01.1100000Z cargo test
2026-11-20T09:00:01.1200000Z ##[endgroup]
2026-11-20T09:00:04.5000000Z error[E0308]: mismatched types
2026-11-20T09:00:04.5000001Z  --> src/lib.rs:12:9
2026-11-20T09:00:04.9000000Z ##[error]Process completed with exit code 101.
2026-11-20T09:00:05.2000000Z ##[group]Run ./upload-results.sh
2026-11-20T09:00:05.2100000Z ./upload-results.sh
2026-11-20T09:00:05.2200000Z ##[endgroup]
2026-11-20T09:00:05.6000000Z curl: (6) Could not resolve host: results.example.com
2026-11-20T09:00:05.7000000Z ##[error]Process completed with exit code 6.
";

    fn window(started: &str, completed: &str) -> Option<StepWindow> {
        StepWindow::parse(Some(started), Some(completed))
    }

    #[test]
    fn the_step_the_api_names_is_diagnosed_not_the_last_to_fail() {
        // From the log alone: the upload, the last to fail.
        let alone = diagnose_github(LOG, None);
        assert_eq!(alone.command.as_deref(), Some("./upload-results.sh"));
        // With the API's times of the first failed step (`cargo test`, 09:00:01 to 09:00:04).
        let first = window("2026-11-20T09:00:01Z", "2026-11-20T09:00:04Z");
        let d = diagnose_github(LOG, first);
        assert_eq!(d.command.as_deref(), Some("cargo test"));
        assert_eq!(d.class, Class::Compile);
        assert_eq!(d.culprit_file.as_deref(), Some("src/lib.rs"));
        // The API's times with an offset, as GitHub writes some of them.
        let offset = window("2026-11-20T10:00:01+01:00", "2026-11-20T10:00:04+01:00");
        assert_eq!(offset, first);
    }

    #[test]
    fn times_that_match_no_marker_fall_back_to_the_log() {
        // Another attempt's times, an unreadable time, times out of order.
        let other = window("2026-11-21T09:00:01Z", "2026-11-21T09:00:04Z");
        assert_eq!(
            diagnose_github(LOG, other).command.as_deref(),
            Some("./upload-results.sh")
        );
        assert_eq!(window("yesterday", "2026-11-20T09:00:04Z"), None);
        assert_eq!(window("2026-11-20T09:00:04Z", "2026-11-20T09:00:01Z"), None);
        assert_eq!(StepWindow::parse(None, Some("2026-11-20T09:00:04Z")), None);
        // An unstamped log has nothing to match, even with the right times.
        let plain: String = LOG.lines().map(|l| format!("{}\n", &l[29..])).collect();
        let first = window("2026-11-20T09:00:01Z", "2026-11-20T09:00:04Z");
        assert_eq!(
            diagnose_github(&plain, first).command.as_deref(),
            Some("./upload-results.sh")
        );
    }

    /// A lint step allowed to fail (`continue-on-error`) ends in the second the tests' step
    /// starts: the tests' end is the marker stamped when they ended, not the first one within
    /// their times.
    #[test]
    fn a_step_allowed_to_fail_just_before_is_not_taken_for_it() {
        let log = format!(
            "\
2026-11-20T09:00:00.2000000Z ##[group]Run cargo clippy
2026-11-20T09:00:00.2100000Z cargo clippy
2026-11-20T09:00:00.2200000Z ##[endgroup]
2026-11-20T09:00:01.1000000Z warning: this could be simpler
2026-11-20T09:00:01.1500000Z ##[error]Process completed with exit code 1.
{}",
            &LOG[..LOG.find("2026-11-20T09:00:05.2").unwrap()]
        );
        let d = diagnose_github(&log, window("2026-11-20T09:00:01Z", "2026-11-20T09:00:04Z"));
        assert_eq!(d.command.as_deref(), Some("cargo test"));
        assert_eq!(d.class, Class::Compile);
    }

    /// A step that timed out writes no `Process completed`: it ends after its last line, and
    /// the failing step after it is still not taken for it.
    #[test]
    fn a_step_without_an_end_marker_ends_after_its_last_line() {
        let log = LOG.replace(
            "2026-11-20T09:00:04.9000000Z ##[error]Process completed with exit code 101.",
            "2026-11-20T09:00:04.9000000Z ##[error]The action has timed out.",
        );
        let d = diagnose_github(&log, window("2026-11-20T09:00:01Z", "2026-11-20T09:00:04Z"));
        assert_eq!(d.command.as_deref(), Some("cargo test"));
        assert_eq!(d.culprit_file.as_deref(), Some("src/lib.rs"));
    }
}
