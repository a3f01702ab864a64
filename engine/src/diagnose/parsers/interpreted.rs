//! Interpreted languages' tools: Ruby (the parser, RSpec, Bundler), PHP (the linter,
//! PHPUnit), Elixir (the compiler, ExUnit), and mypy.

use super::{block, finding, first, regex, rel, Finding};
use crate::diagnose::log::FailedStep;
use crate::diagnose::Class;

regex!(
    RUBY_SYNTAX,
    r"^\s*(\S+\.rb):(\d+): (syntax errors? found|syntax error,? ?.*)$"
);
pub fn ruby_syntax(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &RUBY_SYNTAX)?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        explains: vec![at],
        ..finding(Class::Compile, "ruby", at, c[3].to_string())
    })
}

regex!(RSPEC_FAILED, r"^rspec (\S+?\.rb):(\d+) # (.+)$");
regex!(RSPEC_FRAME, r"^\s+# (\S+?\.rb):(\d+):in ");
/// RSpec: `Failure/Error:` with expected/got, the spec's frame `# ./spec/x_spec.rb:5:in …`,
/// and the summary `rspec ./spec/x_spec.rb:4 # Basket adds the items`.
pub fn rspec(step: &FailedStep) -> Option<Finding> {
    let (_, _) = first(step, &RSPEC_FAILED)?;
    let tests = step
        .lines
        .iter()
        .filter_map(|l| RSPEC_FAILED.captures(l).map(|c| c[3].to_string()))
        .collect();
    // Each of the first three failures: its failing line, what was expected and what came,
    // and the spec's frame.
    let failures: Vec<usize> = step
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("Failure/Error:"))
        .map(|(i, _)| i)
        .take(3)
        .collect();
    let frame = first(step, &RSPEC_FRAME);
    let mut explains = Vec::new();
    for &f in &failures {
        let end = (f + 1..step.lines.len())
            .take(8)
            .find(|&i| RSPEC_FRAME.is_match(&step.lines[i]))
            .map_or(f + 1, |i| i + 1);
        // Not the `Failure/Error:` line itself: it quotes the source.
        explains.extend((f + 1..end).filter(|&i| {
            let l = step.lines[i].trim();
            !l.is_empty() && !l.starts_with("(compared using")
        }));
    }
    let failure = failures.first().copied();
    let at = failure.unwrap_or(0);
    let message = failure
        .and_then(|f| step.lines.get(f))
        .map_or("example failed".into(), |l| l.trim().to_string());
    Some(Finding {
        culprit_file: frame.as_ref().map(|(_, c)| rel(&c[1])),
        culprit_line: frame.as_ref().and_then(|(_, c)| c[2].parse().ok()),
        failing_tests: tests,
        explains,
        ..finding(Class::Test, "rspec", at, message)
    })
}

regex!(
    BUNDLER,
    r"^(Could not find gem '.+'|Could not find compatible versions|Bundler could not find compatible versions|Could not find .+ in (?:any of the sources|locally installed gems)|Your bundle is locked to .+)"
);
pub fn bundler(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &BUNDLER)?;
    Some(Finding {
        explains: vec![at],
        ..finding(Class::Dependency, "bundler", at, c[1].to_string())
    })
}

regex!(
    PHP_PARSE,
    r"^(?:PHP )?(?:Parse|Fatal) error:\s+(.+?) in (\S+\.php) on line (\d+)$"
);
pub fn php_parse(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &PHP_PARSE)?;
    Some(Finding {
        culprit_file: Some(rel(&c[2])),
        culprit_line: c[3].parse().ok(),
        explains: vec![at],
        ..finding(Class::Compile, "php", at, c[1].to_string())
    })
}

regex!(
    PHPUNIT_HEAD,
    r"^There (?:was|were) \d+ (?:failure|error)s?:$"
);
// A data provider's case is named by its key (`with data set "two items"` or `#1`), and its
// values follow in brackets: the name keeps the key, as `--filter` takes it.
regex!(
    PHPUNIT_TEST,
    r#"^\d+\) (\S+::\w+(?: with data set (?:#\d+|"[^"]*"))?)(?: \(.*\))?$"#
);
regex!(PHP_AT, r"^(\S+\.php):(\d+)$");
pub fn phpunit(step: &FailedStep) -> Option<Finding> {
    let (head, _) = first(step, &PHPUNIT_HEAD)?;
    let tests: Vec<String> = step.lines[head..]
        .iter()
        .filter_map(|l| PHPUNIT_TEST.captures(l).map(|c| c[1].to_string()))
        .collect();
    let at = step.lines[head..]
        .iter()
        .position(|l| PHPUNIT_TEST.is_match(l))
        .map_or(head, |p| head + p);
    let place = step.lines[at..]
        .iter()
        .position(|l| PHP_AT.is_match(l))
        .map(|p| at + p);
    // For up to three failures, the message under the test's name (the name is in
    // `failing_tests`), and where.
    let mut explains = Vec::new();
    let starts: Vec<usize> = (at..step.lines.len())
        .filter(|&i| PHPUNIT_TEST.is_match(&step.lines[i]))
        .take(3)
        .collect();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(step.lines.len());
        explains.extend(block(step, start, 4).into_iter().skip(1));
        explains.extend((start..end).find(|&i| PHP_AT.is_match(&step.lines[i])));
    }
    if starts.is_empty() {
        explains.extend(block(step, at, 4).into_iter().skip(1));
        explains.extend(place);
    }
    let captures = place.and_then(|i| PHP_AT.captures(&step.lines[i]));
    Some(Finding {
        culprit_file: captures.as_ref().map(|c| rel(&c[1])),
        culprit_line: captures.as_ref().and_then(|c| c[2].parse().ok()),
        failing_tests: tests,
        explains,
        ..finding(
            Class::Test,
            "phpunit",
            at,
            step.lines.get(at + 1).map_or("", |l| l.trim()),
        )
    })
}

regex!(
    ELIXIR_COMPILE,
    r"^\*\* \((CompileError|SyntaxError|TokenMissingError|KeyError|UndefinedFunctionError)\) (\S+\.exs?):(\d+)(?::\d+)?: (.+)$"
);
regex!(ELIXIR_ERROR_HEAD, r"^(?:error|warning): (.+)$");
regex!(
    ELIXIR_AT,
    r"^\s+(?:└─ )?(\S+\.exs?):(\d+)(?::\d+)?(?:: .*)?$"
);
/// Elixir's compiler: `** (CompileError) lib/x.ex:2: undefined function itemz/0` (1.14), or
/// `error:`/`warning:` (with `--warnings-as-errors`) followed by the indented location.
pub fn elixir_compile(step: &FailedStep) -> Option<Finding> {
    if let Some((at, c)) = first(step, &ELIXIR_COMPILE) {
        return Some(Finding {
            culprit_file: Some(rel(&c[2])),
            culprit_line: c[3].parse().ok(),
            explains: vec![at],
            ..finding(
                Class::Compile,
                "elixir",
                at,
                format!("{}: {}", &c[1], &c[4]),
            )
        });
    }
    let compiles = step.lines.iter().any(|l| {
        l.contains("Compilation failed due to warnings") || l.starts_with("== Compilation error")
    });
    if !compiles {
        return None;
    }
    let (at, c) = first(step, &ELIXIR_ERROR_HEAD)?;
    let place = step.lines[at + 1..]
        .iter()
        .take(6)
        .position(|l| ELIXIR_AT.is_match(l))
        .map(|p| at + 1 + p);
    let captures = place.and_then(|i| ELIXIR_AT.captures(&step.lines[i]));
    let mut explains = vec![at];
    explains.extend(place);
    Some(Finding {
        culprit_file: captures.as_ref().map(|c| rel(&c[1])),
        culprit_line: captures.as_ref().and_then(|c| c[2].parse().ok()),
        explains,
        ..finding(Class::Compile, "elixir", at, c[1].to_string())
    })
}

regex!(EXUNIT_TEST, r"^\s+\d+\) test (.+) \((\S+)\)$");
regex!(EXUNIT_AT, r"^\s+(\S+\.exs):(\d+)(?:: .*)?$");
/// ExUnit: `  1) test adds the items (BasketTest)`, the test's location, the assertion with
/// `left:`/`right:`, and the stacktrace whose first test frame is the failing line.
pub fn exunit(step: &FailedStep) -> Option<Finding> {
    let (at, _) = first(step, &EXUNIT_TEST)?;
    let tests = step
        .lines
        .iter()
        .filter_map(|l| {
            EXUNIT_TEST
                .captures(l)
                .map(|c| format!("{}: {}", &c[2], &c[1]))
        })
        .collect();
    let body = block(step, at, 14);
    let frames: Vec<usize> = body
        .iter()
        .copied()
        .filter(|&i| i > at && EXUNIT_AT.is_match(&step.lines[i]))
        .collect();
    // The last location in the block is the stack frame of the failing line.
    let place = frames
        .last()
        .and_then(|&i| EXUNIT_AT.captures(&step.lines[i]));
    let explains: Vec<usize> = body
        .iter()
        .copied()
        .filter(|&i| {
            let l = step.lines[i].trim_start();
            l.starts_with("Assertion")
                || l.starts_with("left:")
                || l.starts_with("right:")
                || l.starts_with("** (")
        })
        .chain(frames.last().copied())
        .collect();
    let message = body
        .iter()
        .map(|&i| step.lines[i].trim())
        .find(|l| l.starts_with("Assertion") || l.starts_with("** ("))
        .unwrap_or("test failed")
        .to_string();
    Some(Finding {
        culprit_file: place.as_ref().map(|c| rel(&c[1])),
        culprit_line: place.as_ref().and_then(|c| c[2].parse().ok()),
        failing_tests: tests,
        explains,
        ..finding(Class::Test, "exunit", at, message)
    })
}

regex!(
    MYPY,
    r"^(\S+\.pyi?):(\d+)(?::\d+)?: error: (.+?)(?:  \[([\w-]+)\])?$"
);
/// mypy's `app/x.py:9: error: Argument 2 … [arg-type]`: a type check, reported as lint.
pub fn mypy(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &MYPY)?;
    let message = match c.get(4) {
        Some(code) => format!("{} [{}]", &c[3], code.as_str()),
        None => c[3].to_string(),
    };
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        explains: vec![at],
        ..finding(Class::Lint, "mypy", at, message)
    })
}
