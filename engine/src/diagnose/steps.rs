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

    fn holds(&self, at: DateTime<Utc>) -> bool {
        // The API truncates to the second; the log's stamps have fractions.
        at >= self.started - Duration::seconds(1) && at < self.completed + Duration::seconds(1)
    }
}

/// The stamp GitHub puts before each line of a job's log (`2024-01-20T17:42:40.1234567Z `).
fn stamp(raw: &str) -> Option<DateTime<Utc>> {
    let (head, _) = raw.split_once(' ')?;
    DateTime::parse_from_rfc3339(head.trim_start_matches('\u{feff}'))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The index of the end marker stamped within `window`, the first if several are; none when
/// no marker is (an unstamped log, a window from another attempt).
pub(super) fn marker_within(
    raw: &[&str],
    lines: &[String],
    window: &StepWindow,
    is_marker: impl Fn(&str) -> bool,
) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| is_marker(l))
        .find(|(i, _)| {
            raw.get(*i)
                .and_then(|r| stamp(r))
                .is_some_and(|at| window.holds(at))
        })
        .map(|(i, _)| i)
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
        // An unstamped log has nothing to match.
        let plain: String = LOG.lines().map(|l| format!("{}\n", &l[29..])).collect();
        assert_eq!(
            diagnose_github(&plain, other).command.as_deref(),
            Some("./upload-results.sh")
        );
    }
}
