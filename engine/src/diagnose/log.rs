//! Turning a raw CI job log into clean lines of the step that failed, whichever CI system
//! wrote it: GitHub Actions, GitLab, Jenkins, CircleCI, Travis CI or Buildkite (each by the
//! markers its documented log format carries), or a plain saved log taken whole.

use super::steps::{end_within, StepWindow};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Timestamps CI systems put before each line: GitHub's `2026-11-20T09:14:04.0960000Z `,
/// GitLab's `2026-11-20T09:14:04.096761Z 01O ` (stream `O`/`E`, then ` ` or `+` for a
/// continued line), Jenkins' timestamper `[2026-11-20T09:14:04.096Z] `.
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:\[\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z\] |\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z (?:[0-9a-f]{2}[OE][ +])?)",
    )
    .expect("static regex")
});
/// Buildkite's per-line timestamp: an application program command, `ESC _bk;t=<ms>` ended by
/// BEL (or `ESC \`). Removed before colours: a colour stripper would eat the characters
/// after a lone ESC.
static BUILDKITE_TS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\x1b?_bk;t=\d+(?:\x07|\x1b\\)").expect("static regex"));
/// Each CI's checkout directory, stripped so that culprits are repository-relative: GitHub's
/// `/home/runner/work/<repo>/<repo>/` (`D:\a\…`, `/__w/…`, macOS), GitLab's
/// `/builds/<group>/<project>/`, Jenkins' `…/workspace/<job>/`, CircleCI's
/// `/home/circleci/project/` (or `~/project/`), Travis' `/home/travis/build/<owner>/<repo>/`
/// and Buildkite's `/var/lib/buildkite-agent/builds/<agent>/<org>/<pipeline>/`.
static WORKSPACE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:(?:/home/runner/work|/__w|[A-Za-z]:\\a|/Users/runner/work)[/\\][^/\\\s]+[/\\][^/\\\s]+[/\\]",
        r"|/builds/[^/\s]+/[^/\s]+/",
        r"|/(?:[\w.-]+/)*workspace/[^/\s]+/",
        r"|(?:/home/circleci|~)/project/",
        r"|/home/travis/build/[^/\s]+/[^/\s]+/",
        r"|/var/lib/buildkite-agent/builds/[^/\s]+/[^/\s]+/[^/\s]+/)",
    ))
    .expect("static regex")
});
/// Gradle's plain console prints a task's name and then, on the same line, the compiler's
/// first message (`:compileJava/home/runner/…/Basket.java:9: error: …`).
static GRADLE_TASK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^:[a-z][A-Za-z0-9]*/").expect("static regex"));
/// Where GitLab's script ends: its section's end marker, or the start of `after_script` or of
/// the artifacts' upload, as the runner writes them: ended by a carriage return and the
/// erase-line code. Anywhere in a raw line: after output with no final newline the marker
/// follows it on the same line; text that merely names a section has no such ending.
static GITLAB_SCRIPT_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:section_end:\d+:(?:step|build)_script|section_start:\d+:(?:after_script|upload_artifacts_on_(?:success|failure)))(?:\[[^\]]*\])?\r\x1b\[0K",
    )
    .expect("static regex")
});
/// Travis reports every script command's status (`exited with 0` too), and a failure of an
/// earlier phase as `failed and exited with N during install`.
static TRAVIS_RESULT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^The command "(.*)" (?:failed and )?exited with (\d+)(?: during \S+)?\.$"#)
        .expect("static regex")
});

/// The CI system whose layout a log has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ci {
    GithubActions,
    Gitlab,
    Jenkins,
    Circleci,
    Travis,
    Buildkite,
    /// No CI's markers: a saved terminal log, taken whole.
    #[default]
    Plain,
}

/// The failing step: its command and its output lines.
#[derive(Debug, Clone, Default)]
pub struct FailedStep {
    pub ci: Ci,
    pub command: Option<String>,
    pub lines: Vec<String>,
    /// For each of `lines`, its line number (from 1) in the raw log.
    pub numbers: Vec<usize>,
}

pub fn clean_line(raw: &str) -> String {
    // A carriage return redraws the line: a terminal shows what follows the last one (GitLab's
    // section markers and Travis' folds hide themselves this way, progress bars too).
    let raw = if raw.contains('\r') {
        match raw.rsplit('\r').find(|part| !visible(part).is_empty()) {
            Some(shown) => shown,
            None => raw.rsplit('\r').next().unwrap_or(raw),
        }
    } else {
        raw
    };
    let raw = if raw.contains("_bk;t=") {
        BUILDKITE_TS.replace_all(raw, "")
    } else {
        raw.into()
    };
    // Cheap byte checks first: most lines need only some of the rewrites.
    let no_ts = if raw.as_bytes().get(4) == Some(&b'-') || raw.as_bytes().get(5) == Some(&b'-') {
        TIMESTAMP.replace(&raw, "")
    } else {
        raw.as_ref().into()
    };
    let mut plain = visible(&no_ts);
    if plain.starts_with(':') {
        plain = GRADLE_TASK.replace(&plain, "/").into_owned();
    }
    if plain.contains('/') || plain.contains(":\\a\\") {
        WORKSPACE.replace_all(&plain, "").into_owned()
    } else {
        plain
    }
}

fn visible(s: &str) -> String {
    if s.contains('\u{1b}') {
        // `ESC ( B` (select charset) survives some strippers as a bare `(B`; and the stripper
        // drops tabs (`FAIL\tpkg` would become `FAILpkg`), so each tab's sides are stripped.
        s.replace("\u{1b}(B", "")
            .split('\t')
            .map(strip_ansi_escapes::strip_str)
            .collect::<Vec<_>>()
            .join("\t")
            .trim_end()
            .to_string()
    } else {
        s.trim_end().to_string()
    }
}

/// Which CI wrote the log, from the first marker only that CI prints.
fn which_ci(lines: &[String]) -> Ci {
    for l in lines {
        if l.starts_with("##[group]Run ") || l.starts_with("##[error]Process completed") {
            return Ci::GithubActions;
        }
        if l.starts_with("Running with gitlab-runner") || l.starts_with("ERROR: Job failed") {
            return Ci::Gitlab;
        }
        if l.starts_with("[Pipeline] ")
            || l.starts_with("ERROR: script returned exit code")
            || (l.starts_with("Build step '") && l.ends_with("marked build as failure"))
        {
            return Ci::Jenkins;
        }
        if l.starts_with("Exited with code exit status") || l == "#!/bin/bash -eo pipefail" {
            return Ci::Circleci;
        }
        if TRAVIS_RESULT.is_match(l) || l.starts_with("travis_") {
            return Ci::Travis;
        }
        if l.starts_with("🚨 Error: The command exited with status") || l.starts_with("~~~ ") {
            return Ci::Buildkite;
        }
    }
    Ci::Plain
}

/// Finds the step that failed and keeps its output.
///
/// Each CI marks the end of a failed job (GitHub's `##[error]Process completed with exit
/// code`, GitLab's `ERROR: Job failed`, Jenkins' `ERROR: script returned exit code`,
/// CircleCI's `Exited with code`, Travis' `The command "…" exited with`, Buildkite's
/// `🚨 Error: The command exited`) and echoes each command before running it (`##[group]Run`,
/// `$ `, `+ `, `#!/bin/bash -eo pipefail` then the command): the failing step runs from the
/// last command echoed before the end to the end.
pub fn failed_step(raw: &str) -> FailedStep {
    failed_step_in(raw, None, None)
}

/// [`failed_step`] of a log whose layout is known (the worker's logs all come from GitHub
/// Actions): no output line can then pass for another CI's marker, and a log whose step
/// header was cut off has no command rather than some echoed-looking line.
pub fn failed_step_as(raw: &str, ci: Ci) -> FailedStep {
    failed_step_in(raw, Some(ci), None)
}

/// [`failed_step_as`] a GitHub Actions log, with the times the jobs API gives for its first
/// failed step when known: the step is the one that ended then (see [`super::steps`]).
pub fn failed_step_github(raw: &str, window: Option<StepWindow>) -> FailedStep {
    failed_step_in(raw, Some(Ci::GithubActions), window.as_ref())
}

fn failed_step_in(raw: &str, known: Option<Ci>, window: Option<&StepWindow>) -> FailedStep {
    let raw_lines: Vec<&str> = raw.lines().collect();
    let lines: Vec<String> = raw_lines.iter().map(|l| clean_line(l)).collect();
    let ci = known.unwrap_or_else(|| which_ci(&lines));
    let end = window
        .filter(|_| ci == Ci::GithubActions)
        .and_then(|w| end_within(&raw_lines, &lines, w, github_end))
        .unwrap_or_else(|| end_of_step(ci, &raw_lines, &lines));
    let before = &lines[..end];
    let echoed =
        |i: usize, prefix: &str| (Some(lines[i][prefix.len()..].trim().to_string()), i + 1);
    // (the command, index of the first output line)
    let echo: Option<(Option<String>, usize)> = match ci {
        // The group holds the step's script, shell and environment; output follows it.
        Ci::GithubActions => before
            .iter()
            .rposition(|l| l.starts_with("##[group]Run "))
            .map(|i| {
                let (command, _) = echoed(i, "##[group]Run ");
                let output = (i + 1..end)
                    .find(|&j| lines[j].starts_with("##[endgroup]"))
                    .map_or(i + 1, |j| j + 1);
                (command, output)
            }),
        Ci::Gitlab | Ci::Buildkite => before
            .iter()
            .rposition(|l| l.starts_with("$ "))
            .map(|i| echoed(i, "$ ")),
        Ci::Travis => {
            // Travis names the failed command; it was echoed as `$ <command>`.
            let named = lines
                .get(end)
                .and_then(|l| TRAVIS_RESULT.captures(l))
                .map(|c| format!("$ {}", &c[1]));
            before
                .iter()
                .rposition(|l| Some(l) == named.as_ref())
                .or_else(|| before.iter().rposition(|l| l.starts_with("$ ")))
                .map(|i| echoed(i, "$ "))
        }
        Ci::Jenkins => {
            // The last `sh` (or `bat`, `powershell`) step before the end. `sh -xe` traces
            // its script's commands before their output: the run of `+ ` lines right after
            // the step's marker (a sourced script's own commands included) ends with the
            // command that ran. A script that does not trace has no command, and its output
            // starts after the marker. A freestyle job has no steps: its last `+ ` line is.
            let step = before.iter().rposition(|l| {
                ["sh", "bat", "powershell", "pwsh"]
                    .iter()
                    .any(|s| l.strip_prefix("[Pipeline] ") == Some(s))
            });
            match step {
                Some(i) => {
                    let traced =
                        |j: usize| lines[j].starts_with("+ ") || lines[j].starts_with("++");
                    if !(i + 1 < end && traced(i + 1)) {
                        Some((None, i + 1))
                    } else {
                        // With `-e` the command that failed is the last traced one; a `+ `
                        // line beside a `- ` one is a diff's, not the shell's.
                        let diff = |j: usize| {
                            [j.wrapping_sub(1), j + 1]
                                .iter()
                                .any(|&k| k < end && k > i && lines[k].starts_with("- "))
                        };
                        let command = (i + 1..end)
                            .rev()
                            .find(|&j| lines[j].starts_with("+ ") && !diff(j))
                            .and_then(|j| echoed(j, "+ ").0);
                        let after = (i + 1..end).find(|&j| !traced(j)).unwrap_or(end);
                        Some((command, after))
                    }
                }
                None => before
                    .iter()
                    .rposition(|l| l.starts_with("+ "))
                    .map(|i| echoed(i, "+ ")),
            }
        }
        Ci::Circleci => before
            .iter()
            .rposition(|l| l.starts_with("#!/bin/bash"))
            .and_then(|i| Some((Some(lines.get(i + 1)?.trim().to_string()), i + 2))),
        Ci::Plain => None,
    };
    let (command, from) = echo.unwrap_or((None, 0));
    let mut step = FailedStep {
        ci,
        command,
        ..FailedStep::default()
    };
    for (i, l) in lines.iter().enumerate().take(end).skip(from.min(end)) {
        if is_marker(ci, l) {
            continue;
        }
        let l = l.strip_prefix("##[error]").unwrap_or(l);
        step.lines.push(l.to_string());
        step.numbers.push(i + 1);
    }
    step
}

/// Where the failed step's output ends (exclusive), from each CI's marker for it.
fn end_of_step(ci: Ci, raw: &[&str], lines: &[String]) -> usize {
    let first = |marker: &dyn Fn(&str) -> bool| lines.iter().position(|l| marker(l));
    let end = match ci {
        // The last failure: a `continue-on-error` step that failed earlier reports one too.
        Ci::GithubActions => lines.iter().rposition(|l| github_end(l)),
        // The script's section ends before `after_script` and the artifact upload, which
        // echo commands of their own. The markers hide behind carriage returns and share a
        // line with the next section's header, so the raw lines are searched.
        Ci::Gitlab => raw
            .iter()
            .position(|l| GITLAB_SCRIPT_END.is_match(l))
            .or_else(|| first(&|l| l.starts_with("ERROR: Job failed"))),
        // Post actions and the stages skipped after the failure come before the final
        // `ERROR: script returned exit code`.
        Ci::Jenkins => first(&|l| {
            l == "[Pipeline] { (Declarative: Post Actions)"
                || l.contains("skipped due to earlier failure")
        })
        .or_else(|| first(&|l| l.starts_with("ERROR: script returned exit code")))
        .or_else(|| {
            first(&|l| {
                (l.starts_with("Build step '") && l.ends_with("marked build as failure"))
                    || l.starts_with("Finished: FAILURE")
            })
        }),
        Ci::Circleci => first(&|l| {
            l.starts_with("Exited with code exit status")
                || l.starts_with("CircleCI received exit code")
        }),
        Ci::Travis => first(&|l| TRAVIS_RESULT.captures(l).is_some_and(|c| &c[2] != "0")),
        Ci::Buildkite => first(&|l| l.starts_with("🚨 Error: The command exited")),
        Ci::Plain => None,
    };
    end.unwrap_or(lines.len())
}

/// GitHub's end of a failed step.
fn github_end(l: &str) -> bool {
    l.starts_with("##[error]Process completed with exit code")
}

/// The CI's own lines inside a step (groups, folds, section headers), not the tools' output.
fn is_marker(ci: Ci, l: &str) -> bool {
    match ci {
        Ci::GithubActions => l.starts_with("##[group]") || l.starts_with("##[endgroup]"),
        Ci::Jenkins => l.starts_with("[Pipeline] "),
        // Buildkite's `--- ` and `+++ ` headers are kept: tools print such lines too (unified
        // diffs, `--- FAIL: TestAdd`), and a header left in the output misleads nothing.
        Ci::Buildkite => l.starts_with("~~~ ") || l == "^^^ +++",
        Ci::Travis => l.starts_with("travis_"),
        Ci::Gitlab => l.starts_with("section_start:") || l.starts_with("section_end:"),
        Ci::Circleci | Ci::Plain => false,
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
        for (raw, clean) in [
            ("/builds/acme/widgets/src/lib.rs:3:1", "src/lib.rs:3:1"),
            ("/var/lib/jenkins/workspace/widgets/src/a.c:3", "src/a.c:3"),
            ("/home/circleci/project/src/a.rb:3", "src/a.rb:3"),
            ("/home/travis/build/acme/widgets/a.py:3", "a.py:3"),
            (
                "_bk;t=1795000000000\u{7}/var/lib/buildkite-agent/builds/a-1/acme/widgets/x.go:3",
                "x.go:3",
            ),
            ("[2026-11-20T09:14:04.096Z] + make", "+ make"),
            ("2026-11-20T09:14:04.096761Z 01O $ make", "$ make"),
            (
                "section_start:1795000000:step_script\r\u{1b}[0K\u{1b}[0K\u{1b}[36;1mExecuting",
                "Executing",
            ),
            (
                "section_end:1795000060:step_script\r\u{1b}[0K",
                "section_end:1795000060:step_script",
            ),
            ("  10%\r  55%\r 100%", " 100%"),
        ] {
            assert_eq!(clean_line(raw), clean, "{raw:?}");
        }
    }

    #[test]
    fn finds_the_failed_step() {
        let log = "##[group]Run actions/checkout@v4\nok\n##[endgroup]\n##[group]Run cargo test\ncargo test\n##[endgroup]\nboom\n##[error]Process completed with exit code 101.\n";
        let step = failed_step(log);
        assert_eq!(step.ci, Ci::GithubActions);
        assert_eq!(step.command.as_deref(), Some("cargo test"));
        assert_eq!(step.lines, vec!["boom"]);
        assert_eq!(step.numbers, vec![7]);
    }

    /// Each CI's layout (from its documented format): the step is the last command's output.
    #[test]
    fn finds_the_failed_step_in_every_ci_layout() {
        let cases = [
            (
                Ci::Gitlab,
                "Running with gitlab-runner 17.5.3\nsection_start:1:step_script\r\u{1b}[0KExecuting\n$ pip install .\nok\n$ pytest\nboom\nsection_end:2:step_script\r\u{1b}[0K\nERROR: Job failed: exit code 1\n",
            ),
            (
                Ci::Jenkins,
                "Started by user Ada\n[Pipeline] sh\n+ pip install .\nok\n[Pipeline] sh\n+ pytest\nboom\n[Pipeline] }\nERROR: script returned exit code 1\nFinished: FAILURE\n",
            ),
            (
                Ci::Circleci,
                "#!/bin/bash -eo pipefail\npip install .\nok\n#!/bin/bash -eo pipefail\npytest\nboom\n\nExited with code exit status 1\n",
            ),
            (
                Ci::Travis,
                "travis_time:start:1\r\u{1b}[0K$ pytest\nboom\ntravis_time:end:1\r\u{1b}[0K\nThe command \"pytest\" exited with 1.\n$ echo after\n",
            ),
            (
                Ci::Buildkite,
                "~~~ Running commands\n$ pip install .\nok\n$ pytest\nboom\n🚨 Error: The command exited with status 1\n",
            ),
        ];
        for (ci, log) in cases {
            let step = failed_step(log);
            assert_eq!(step.ci, ci);
            assert_eq!(step.command.as_deref(), Some("pytest"), "{ci:?}");
            let shown: Vec<&str> = step
                .lines
                .iter()
                .map(String::as_str)
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(shown, vec!["boom"], "{ci:?}");
        }
        let plain = failed_step("compiling\nerror: boom\n");
        assert_eq!((plain.ci, plain.command), (Ci::Plain, None));
        assert_eq!(plain.lines.len(), 2);
    }

    /// What runs after the failure, or before it and passed, is not the failed step: each
    /// case's `boom` is the only line kept, and its line number is the raw log's.
    #[test]
    fn steps_around_the_failure_are_left_out() {
        let cases = [
            // GitLab: `after_script` echoes commands too; its section starts on the line that
            // ends the script's (the runner writes no newline after `section_end`).
            (
                Ci::Gitlab,
                "Running with gitlab-runner 17.5.3\n$ pytest\nboom\nsection_end:2:step_script\r\u{1b}[0Ksection_start:2:after_script\r\u{1b}[0K\u{1b}[36;1mRunning after_script\u{1b}[0;m\n$ rm -rf cache\nsection_end:3:after_script\r\u{1b}[0K\nERROR: Job failed: exit code 1\n",
                3,
            ),
            // Jenkins: post actions run an `sh` of their own before the final ERROR line.
            (
                Ci::Jenkins,
                "[Pipeline] sh\n+ pytest\nboom\n[Pipeline] }\n[Pipeline] stage\n[Pipeline] { (Declarative: Post Actions)\n[Pipeline] sh\n+ rm -rf cache\n[Pipeline] }\nERROR: script returned exit code 1\nFinished: FAILURE\n",
                3,
            ),
            // Jenkins: a freestyle job (no pipeline steps).
            (
                Ci::Jenkins,
                "Started by user Ada\n+ pytest\nboom\nBuild step 'Execute shell' marked build as failure\nFinished: FAILURE\n",
                3,
            ),
            // Travis: every script command reports its status, passing ones too.
            (
                Ci::Travis,
                "$ flake8\n\nThe command \"flake8\" exited with 0.\n$ pytest\nboom\n\nThe command \"pytest\" exited with 1.\n",
                5,
            ),
            // GitHub: a `continue-on-error` step failed first; the job failed later.
            (
                Ci::GithubActions,
                "##[group]Run flake8\nflake8\n##[endgroup]\nwarned\n##[error]Process completed with exit code 1.\n##[group]Run pytest\npytest\n##[endgroup]\nboom\n##[error]Process completed with exit code 1.\n",
                9,
            ),
            // Buildkite: timestamps are escape sequences (`ESC _bk;t=… BEL`).
            (
                Ci::Buildkite,
                "\u{1b}_bk;t=1795000000000\u{7}~~~ Running commands\n\u{1b}_bk;t=1795000001000\u{7}$ pytest\n\u{1b}_bk;t=1795000002000\u{7}boom\n\u{1b}_bk;t=1795000003000\u{7}🚨 Error: The command exited with status 1\n",
                3,
            ),
            (
                Ci::Circleci,
                "#!/bin/bash -eo pipefail\npytest\nboom\nCircleCI received exit code 1\n",
                3,
            ),
        ];
        for (ci, log, line) in cases {
            let step = failed_step(log);
            assert_eq!(step.ci, ci, "{log:?}");
            assert_eq!(step.command.as_deref(), Some("pytest"), "{ci:?}");
            let shown: Vec<(usize, &str)> = step
                .numbers
                .iter()
                .copied()
                .zip(step.lines.iter().map(String::as_str))
                .filter(|(_, l)| !l.is_empty() && *l != "Running after_script")
                .collect();
            assert_eq!(shown, vec![(line, "boom")], "{ci:?}");
        }
        let travis = failed_step(
            "$ pip install -r requirements.txt\nno such file\nThe command \"pip install -r requirements.txt\" failed and exited with 1 during install.\n",
        );
        assert_eq!(
            travis.command.as_deref(),
            Some("pip install -r requirements.txt")
        );
        assert_eq!(travis.lines, vec!["no such file"]);
    }

    /// Jenkins' `sh -xe` traces a sourced script's commands too: the command is the last of
    /// the trace's first run; a script that does not trace has its output kept, no command.
    #[test]
    fn jenkins_commands_come_from_the_steps_own_trace() {
        let traced = "[Pipeline] sh\n+ . .venv/bin/activate\n+ deactivate nondestructive\n+ VIRTUAL_ENV=/w/.venv\n+ pytest -q\nboom\n- expected\n+ received\n[Pipeline] }\nERROR: script returned exit code 1\n";
        let step = failed_step(traced);
        assert_eq!(step.command.as_deref(), Some("pytest -q"));
        assert_eq!(step.lines, vec!["boom", "- expected", "+ received"]);
        // Several commands in one step: the last traced one failed (`sh -e`).
        let several = "[Pipeline] sh\n+ pip install -r requirements.txt\nInstalled 3 packages\n+ pytest -q\nboom\n[Pipeline] }\nERROR: script returned exit code 1\n";
        let step = failed_step(several);
        assert_eq!(step.command.as_deref(), Some("pytest -q"));
        let untraced = "[Pipeline] sh\n+ ruff check .\nall good\n[Pipeline] sh\nboom\n[Pipeline] }\nERROR: script returned exit code 1\n";
        let step = failed_step(untraced);
        assert_eq!(step.command, None);
        assert_eq!(step.lines, vec!["boom"]);
    }

    /// GitLab's section markers count only as the runner writes them (a carriage return and
    /// the erase-line code), wherever they fall: after output with no final newline, on the
    /// same line.
    #[test]
    fn gitlab_markers_count_as_the_runner_writes_them() {
        let log = "Running with gitlab-runner 17.5.3\n$ pytest\nassert 'section_end:1:step_script\r' in log\nboom\nsection_end:2:step_script\r\u{1b}[0K\nERROR: Job failed: exit code 1\n";
        let step = failed_step(log);
        assert_eq!(step.lines.last().map(String::as_str), Some("boom"));
        let glued = "Running with gitlab-runner 17.5.3\n$ pytest\nboom\n10%section_end:2:step_script\r\u{1b}[0Ksection_start:2:after_script\r\u{1b}[0KRunning after_script\n$ ./notify.sh\nsent\nERROR: Job failed: exit code 1\n";
        let step = failed_step(glued);
        assert_eq!(step.command.as_deref(), Some("pytest"));
        assert_eq!(step.lines, vec!["boom"]);
    }

    /// A GitHub log is read as one whatever its output says: a cut-off log whose `Run` header
    /// is gone has no command, rather than a line of output that looks like another CI's echo.
    #[test]
    fn a_known_layout_is_not_guessed() {
        let log =
            "~~~ markdown fence\n$ rm -rf /\nboom\n##[error]Process completed with exit code 1.\n";
        assert_eq!(failed_step(log).ci, Ci::Buildkite);
        let step = failed_step_as(log, Ci::GithubActions);
        assert_eq!((step.ci, step.command), (Ci::GithubActions, None));
        assert_eq!(step.lines, vec!["~~~ markdown fence", "$ rm -rf /", "boom"]);
    }

    #[test]
    fn colours_keep_tabs_and_gitlab_timestamps_go() {
        assert_eq!(
            clean_line("\u{1b}[31mFAIL\u{1b}[0m\texample.com/calc\t0.002s"),
            "FAIL\texample.com/calc\t0.002s"
        );
        assert_eq!(
            clean_line("2026-11-20T09:14:04.096761Z 0aE+continued"),
            "continued"
        );
    }
}
