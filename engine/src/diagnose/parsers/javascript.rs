//! JavaScript and TypeScript tools: prettier, eslint, tsc, and the test runners jest, vitest
//! and mocha.

use super::{all, block, finding, first, regex, rel, Finding};
use crate::diagnose::log::FailedStep;
use crate::diagnose::Class;

regex!(PRETTIER, r"^\[warn\] (\S+\.[A-Za-z0-9]+)$");
pub fn prettier(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &PRETTIER)?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        ..finding(Class::Format, "prettier", at, "prettier code style issues")
    })
}

regex!(ESLINT_FILE, r"^(\S+\.(?:[cm]?[jt]sx?|vue|svelte))$");
regex!(ESLINT_ROW, r"^\s+(\d+):(\d+)\s+error\s+(.+?)\s{2,}(\S+)$");
pub fn eslint(step: &FailedStep) -> Option<Finding> {
    let mut file: Option<(usize, String)> = None;
    for (i, line) in step.lines.iter().enumerate() {
        if let Some(c) = ESLINT_FILE.captures(line) {
            file = Some((i, rel(&c[1])));
        } else if let (Some(c), Some((at_file, f))) = (ESLINT_ROW.captures(line), &file) {
            // The file's name, then its errors (eslint lists them under it).
            let mut explains = vec![*at_file];
            explains.extend(
                (i..step.lines.len())
                    .take_while(|&j| {
                        ESLINT_ROW.is_match(&step.lines[j])
                            || step.lines[j]
                                .trim_start()
                                .starts_with(|c: char| c.is_ascii_digit())
                    })
                    .filter(|&j| ESLINT_ROW.is_match(&step.lines[j]))
                    .take(5),
            );
            return Some(Finding {
                culprit_file: Some(f.clone()),
                culprit_line: c[1].parse().ok(),
                explains,
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
pub fn tsc(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &TSC)?;
    let line = c.get(2).or(c.get(4)).and_then(|m| m.as_str().parse().ok());
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: line,
        explains: all(step, &TSC, 5),
        ..finding(Class::Compile, "tsc", at, format!("{}: {}", &c[6], &c[7]))
    })
}

regex!(JEST_FAIL, r"^FAIL (\S+)$");
regex!(JEST_TEST, r"^\s*● (.+)$");
regex!(JS_AT, r"^\s*at .*?\(?([^\s()]+?):(\d+):(\d+)\)?$");
pub fn jest(step: &FailedStep) -> Option<Finding> {
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
pub fn vitest(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &VITEST_FAIL)?;
    let loc = first(step, &VITEST_AT);
    let line: Option<u32> = loc.as_ref().and_then(|(_, l)| l[2].parse().ok());
    // The error under the FAIL line and the `❯ file:line` (not the quoted source).
    let mut explains: Vec<usize> = (at + 1..step.lines.len())
        .take(4)
        .take_while(|&i| !step.lines[i].trim().is_empty())
        .collect();
    explains.extend(loc.as_ref().map(|(i, _)| *i));
    Some(Finding {
        culprit_file: Some(loc.as_ref().map_or_else(|| rel(&c[1]), |(_, l)| rel(&l[1]))),
        culprit_line: line,
        failing_tests: vec![c[2].to_string()],
        explains,
        ..finding(Class::Test, "vitest", at, c[2].to_string())
    })
}

regex!(MOCHA_FAILING, r"^\s+(\d+) failing$");
regex!(MOCHA_CASE, r"^\s+(\d+)\) (.+?):?$");
/// mocha's spec reporter: `  1 failing`, then per failure `  1) suite` / `test:`, the error
/// and its stack.
pub fn mocha(step: &FailedStep) -> Option<Finding> {
    let (head, _) = first(step, &MOCHA_FAILING)?;
    let case = step.lines[head..]
        .iter()
        .position(|l| MOCHA_CASE.is_match(l))
        .map(|p| head + p)?;
    // The case's title runs until the blank line; the error follows.
    let title_end = block(step, case, 6).last().copied().unwrap_or(case);
    let name = (case..=title_end)
        .map(|i| {
            let l = &step.lines[i];
            MOCHA_CASE.captures(l).map_or_else(
                || l.trim().trim_end_matches(':').to_string(),
                |c| c[2].to_string(),
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let error = step.lines[title_end + 1..]
        .iter()
        .position(|l| !l.trim().is_empty())
        .map(|p| title_end + 1 + p);
    let frame = error.and_then(|e| {
        step.lines[e..]
            .iter()
            .position(|l| {
                JS_AT
                    .captures(l)
                    .is_some_and(|c| !c[1].contains("node_modules") && !c[1].starts_with("node:"))
            })
            .map(|p| e + p)
    });
    let captures = frame.and_then(|i| JS_AT.captures(&step.lines[i]));
    let mut explains: Vec<usize> = error.map(|e| block(step, e, 6)).unwrap_or_default();
    explains.retain(|&i| !step.lines[i].trim_start().starts_with("at "));
    explains.extend(frame);
    Some(Finding {
        culprit_file: captures.as_ref().map(|c| rel(&c[1])),
        culprit_line: captures.as_ref().and_then(|c| c[2].parse().ok()),
        failing_tests: vec![name],
        explains,
        ..finding(
            Class::Test,
            "mocha",
            error.unwrap_or(case),
            error.map_or("test failed", |e| step.lines[e].trim()),
        )
    })
}
