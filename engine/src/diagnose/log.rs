//! Turning a raw GitHub Actions job log into clean lines of the step that failed.

use std::sync::LazyLock;

use regex::Regex;

static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z ?").expect("static regex")
});
/// The runner's checkout directory (`/home/runner/work/<repo>/<repo>/`, `D:\a\<repo>\<repo>\`,
/// `/__w/<repo>/<repo>/` in containers): stripped so that culprits are repository-relative.
static WORKSPACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(/home/runner/work|/__w|[A-Za-z]:\\a|/Users/runner/work)[/\\][^/\\\s]+[/\\][^/\\\s]+[/\\]")
        .expect("static regex")
});

/// The failing step: its command (from `##[group]Run …`) and its output lines.
#[derive(Debug, Clone, Default)]
pub struct FailedStep {
    pub command: Option<String>,
    pub lines: Vec<String>,
}

pub fn clean_line(raw: &str) -> String {
    // Cheap byte checks first: most lines need only some of the rewrites.
    let no_ts = if raw.as_bytes().get(4) == Some(&b'-') {
        TIMESTAMP.replace(raw, "")
    } else {
        raw.into()
    };
    let plain = if no_ts.contains('\u{1b}') {
        // `ESC ( B` (select charset) survives some strippers as a bare `(B`.
        strip_ansi_escapes::strip_str(no_ts.as_ref()).replace("(B", "")
    } else {
        no_ts.into_owned()
    };
    let plain = plain.trim_end();
    if plain.contains("work") || plain.contains("/__w") || plain.contains(":\\a\\") {
        WORKSPACE.replace_all(plain, "").into_owned()
    } else {
        plain.to_string()
    }
}

/// Finds the step that failed: the last `##[group]Run` before the first
/// `##[error]Process completed with exit code`. Logs without markers (a saved local log)
/// are taken whole.
pub fn failed_step(raw: &str) -> FailedStep {
    let lines: Vec<String> = raw.lines().map(clean_line).collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("##[error]Process completed with exit code"))
        .unwrap_or(lines.len());
    let start = lines[..end]
        .iter()
        .rposition(|l| l.starts_with("##[group]Run "))
        .unwrap_or(0);
    let command = lines
        .get(start)
        .and_then(|l| l.strip_prefix("##[group]Run "))
        .map(|c| c.trim().to_string());
    let body = lines[start..end]
        .iter()
        .filter(|l| !l.starts_with("##[group]") && !l.starts_with("##[endgroup]"))
        .map(|l| l.strip_prefix("##[error]").unwrap_or(l).to_string())
        .collect();
    FailedStep {
        command,
        lines: body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_timestamps_colours_and_workspace() {
        let raw = "2026-11-20T09:14:04.0960000Z Diff in /home/runner/work/acme/acme/src/lib.rs:1:";
        assert_eq!(clean_line(raw), "Diff in src/lib.rs:1:");
        let raw = "2026-11-20T09:14:04.2330000Z \u{1b}[31m-pub struct X\u{1b}(B\u{1b}[m";
        assert_eq!(clean_line(raw), "-pub struct X");
        assert_eq!(
            clean_line(r"D:\a\widgets\widgets\src\lib.rs:3"),
            r"src\lib.rs:3"
        );
    }

    #[test]
    fn finds_the_failed_step() {
        let log = "##[group]Run actions/checkout@v4\nok\n##[endgroup]\n##[group]Run cargo test\ncargo test\n##[endgroup]\nboom\n##[error]Process completed with exit code 101.\n";
        let step = failed_step(log);
        assert_eq!(step.command.as_deref(), Some("cargo test"));
        assert_eq!(step.lines, vec!["cargo test", "boom"]);
    }
}
