//! Compiled languages beside Rust, Go and the JVM: gcc and clang (C, C++, Objective-C, and
//! Swift and GHC, which print the same `file:line:col: error:` head), the linker, CMake and
//! CTest, Microsoft's C and C++ compiler and linker, Bazel's test runner, C# compilers and
//! `dotnet test`, XCTest and Swift Testing, and Go's module errors.

use super::{block, command_has, finding, first, regex, rel, Finding};
use crate::diagnose::log::FailedStep;
use crate::diagnose::Class;

regex!(
    C_FAMILY,
    r"^(\S+?\.(?:c|cc|cpp|cxx|c\+\+|h|hh|hpp|hxx|m|mm|swift|hs|lhs|f|f90|f95|zig)):(\d+):(?:(\d+):)? (?:fatal )?error:\s*(.*)$"
);
regex!(CLANG_COUNT, r"^\d+ errors? generated\.$");
pub fn c_family(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &C_FAMILY)?;
    let file = rel(&c[1]);
    let ext = file.rsplit('.').next().unwrap_or("");
    let tool = match ext {
        "swift" => "swiftc",
        "hs" | "lhs" => "ghc",
        "f" | "f90" | "f95" => "gfortran",
        "zig" => "zig",
        _ if step.lines.iter().any(|l| CLANG_COUNT.is_match(l)) || command_has(step, "clang") => {
            "clang"
        }
        _ => "gcc",
    };
    // GHC puts its message on the lines after the head (`    • Couldn't match …`), after an
    // error code since 9.6 (`error: [GHC-83865]`).
    let head = c[4].trim();
    let ghc = head.is_empty() || (head.starts_with("[GHC-") && head.ends_with(']'));
    let message = if ghc {
        let next = step.lines.get(at + 1).map_or("", |l| l.trim());
        let next = next.trim_start_matches("• ");
        match head.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(code) => format!("{code}: {next}"),
            None => next.to_string(),
        }
    } else {
        head.to_string()
    };
    // Every error (up to five), with GHC's first bullet.
    let explains = super::all(step, &C_FAMILY, 5)
        .into_iter()
        .flat_map(|i| if ghc { vec![i, i + 1] } else { vec![i] })
        .collect();
    Some(Finding {
        culprit_file: Some(file),
        culprit_line: c[2].parse().ok(),
        explains,
        ..finding(Class::Compile, tool, at, message)
    })
}

regex!(
    UNDEFINED_SYMBOL,
    r"(?:undefined reference to [`'](.+?)'|ld(?:\.lld)?: error: undefined symbol: (.+)$|Undefined symbols for architecture|: error LNK20(?:19|01): unresolved external symbol (.+?)(?: referenced in function .+?)?(?: \[[^\]]+\])?$)"
);
/// GNU ld, lld and Apple's ld, and Microsoft's `link.exe` (`main.obj : error LNK2019:
/// unresolved external symbol "int __cdecl add(int,int)" (?add@@YAHHH@Z) referenced in
/// function main`).
pub fn linker(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &UNDEFINED_SYMBOL)?;
    let symbol = c
        .get(1)
        .or(c.get(2))
        .or(c.get(3))
        .map_or("", |m| m.as_str());
    let tool = if c.get(3).is_some() { "link" } else { "ld" };
    Some(Finding {
        explains: vec![at],
        ..finding(
            Class::Compile,
            tool,
            at,
            format!("undefined reference to {symbol}"),
        )
    })
}

regex!(
    MSVC,
    r"^(\S+?\.(?:c|cc|cpp|cxx|c\+\+|h|hh|hpp|hxx|ixx|cppm|inl))\((\d+)(?:,(\d+)\) ?: (?:fatal )?error(?: ([A-Z]+\d+))?|\) ?: (?:fatal )?error ([A-Z]+\d+)): (.+?)(?: \[[^\]]+\])?$"
);
/// Microsoft's C and C++ compiler (`cl`, through MSBuild or CMake on a Windows runner):
/// `src\ring.cpp(12,5): error C2065: 'totl': undeclared identifier [build\ring.vcxproj]`,
/// and clang-cl's `src\ring.cpp(12,5): error: use of undeclared identifier 'totl'` (a
/// column, no code). A line with neither is not theirs: Boost.Test's `test.cpp(12): error:
/// in "s/t": check … has failed` and GoogleTest's under MSVC look alike.
pub fn msvc(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &MSVC)?;
    let (tool, message) = match c.get(4).or(c.get(5)) {
        Some(code) => ("msvc", format!("{}: {}", code.as_str(), &c[6])),
        None => ("clang-cl", c[6].to_string()),
    };
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        explains: super::all(step, &MSVC, 5),
        ..finding(Class::Compile, tool, at, message)
    })
}

regex!(CMAKE_ERROR, r"^CMake Error at (\S+):(\d+) \((\w+)\):$");
regex!(CMAKE_CALLER, r"^\s+(\S+):(\d+) \((\w+)\)$");
/// `CMake Error at CMakeLists.txt:3 (find_package):` and its indented explanation; a package
/// that cannot be found (a config file, or a Find module's `Could NOT find`) is a dependency
/// failure, anything else the build's own. An error raised inside CMake's own modules is the
/// project's at the call in its `Call Stack`.
pub fn cmake(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &CMAKE_ERROR)?;
    let (file, line) = if c[1].starts_with('/') {
        let caller = step.lines[at..]
            .iter()
            .take(20)
            .filter_map(|l| CMAKE_CALLER.captures(l))
            .find(|k| !k[1].starts_with('/'));
        match caller {
            Some(k) => (Some(rel(&k[1])), k[2].parse().ok()),
            None => (None, None),
        }
    } else {
        (Some(rel(&c[1])), c[2].parse().ok())
    };
    let explains: Vec<usize> = block(step, at, 12)
        .into_iter()
        .filter(|&i| !step.lines[i].trim().is_empty())
        .collect();
    let text: String = explains
        .iter()
        .skip(1)
        .map(|&i| step.lines[i].trim())
        .collect::<Vec<_>>()
        .join(" ");
    let class = if &c[3] == "find_package"
        || text.contains("Could not find a package")
        || text.contains("Could NOT find")
    {
        Class::Dependency
    } else {
        Class::Compile
    };
    let message = text.split(". ").next().unwrap_or("").to_string();
    Some(Finding {
        culprit_file: file,
        culprit_line: line,
        explains,
        ..finding(class, "cmake", at, message)
    })
}

// `file:line: Failure`, or built with MSVC `file(line): error: <message>`, the message on the
// same line (`file(line): Failure` is taken too).
regex!(
    GTEST_FAILURE,
    r"^(?:(\S+?):(\d+): Failure|(\S+?)\((\d+)\): (?:Failure|error: (.+)))$"
);
regex!(
    GTEST_FAILED,
    r"^\[  FAILED  \] ([A-Za-z_][\w/]*\.[\w/]+)(?:, where .+?)?(?: \(\d+ ms\))?$"
);
/// GoogleTest's runner, alone or under CTest: each failed assertion is `file:line: Failure`
/// followed by what was expected and what was found (and the test's own message) up to the
/// test's `[  FAILED  ] Suite.Name (0 ms)`.
pub fn googletest(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &GTEST_FAILURE)?;
    let mut tests: Vec<String> = Vec::new();
    for line in &step.lines {
        if let Some(t) = GTEST_FAILED.captures(line) {
            if !tests.iter().any(|s| *s == t[1]) {
                tests.push(t[1].to_string());
            }
        }
    }
    if tests.is_empty() {
        return None;
    }
    // Up to three failures, each from its location to the line before the test's verdict.
    let mut explains = Vec::new();
    let mut failures = 0;
    let mut i = at;
    while i < step.lines.len() && failures < 3 {
        if GTEST_FAILURE.is_match(&step.lines[i]) {
            failures += 1;
            let end = step.lines[i + 1..]
                .iter()
                .position(|l| l.starts_with('[') || GTEST_FAILURE.is_match(l))
                .map_or(step.lines.len(), |p| i + 1 + p);
            // Not the compared expressions as written (quoted source): each is followed by
            // its value (`Which is: 8`); a literal has none and is the value itself.
            let quoted = |j: usize| {
                step.lines
                    .get(j + 1)
                    .is_some_and(|next| next.trim_start().starts_with("Which is:"))
            };
            explains.extend(
                (i..end).filter(|&j| !step.lines[j].trim().is_empty() && (j == i || !quoted(j))),
            );
            i = end;
        } else {
            i += 1;
        }
    }
    // The first failure's own words, from what was expected to what was found.
    let first_end = explains
        .iter()
        .skip(1)
        .position(|&j| GTEST_FAILURE.is_match(&step.lines[j]))
        .map_or(explains.len(), |p| p + 1);
    let message = c
        .get(5)
        .map(|head| head.as_str().trim())
        .into_iter()
        .chain(
            explains[1..first_end.max(1)]
                .iter()
                .map(|&j| step.lines[j].trim()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let (file, line) = match (c.get(1), c.get(2)) {
        (Some(file), Some(line)) => (file, line),
        _ => (c.get(3)?, c.get(4)?),
    };
    Some(Finding {
        culprit_file: Some(rel(file.as_str())),
        culprit_line: line.as_str().parse().ok(),
        failing_tests: tests,
        explains,
        ..finding(
            Class::Test,
            "googletest",
            at,
            if message.is_empty() {
                "assertion failed".into()
            } else {
                message
            },
        )
    })
}

regex!(CTEST_FAILED_HEAD, r"^The following tests FAILED:$");
regex!(CTEST_FAILED, r"^\s+\d+ - (\S+) \((.+)\)$");
regex!(
    C_ASSERT,
    r"^\S+: (\S+?\.\w+):(\d+): .*Assertion [`'](.+)' failed\.$"
);
pub fn ctest(step: &FailedStep) -> Option<Finding> {
    let (head, _) = first(step, &CTEST_FAILED_HEAD)?;
    let tests: Vec<String> = step.lines[head..]
        .iter()
        .filter_map(|l| CTEST_FAILED.captures(l).map(|c| c[1].to_string()))
        .collect();
    let assert = first(step, &C_ASSERT);
    let (at, file, line, message) = match &assert {
        Some((i, c)) => (
            *i,
            Some(rel(&c[1])),
            c[2].parse().ok(),
            format!("assertion failed: {}", &c[3]),
        ),
        None => (head, None, None, "tests failed".to_string()),
    };
    Some(Finding {
        culprit_file: file,
        culprit_line: line,
        failing_tests: tests,
        explains: vec![at],
        ..finding(Class::Test, "ctest", at, message)
    })
}

regex!(CABAL_SUITE, r"^Test suite (\S+): (RUNNING\.\.\.|FAIL)$");
/// `cabal test`: the suite's own output between `Test suite spec: RUNNING...` and `FAIL`.
pub fn cabal_test(step: &FailedStep) -> Option<Finding> {
    let fail = step
        .lines
        .iter()
        .position(|l| CABAL_SUITE.captures(l).is_some_and(|c| &c[2] == "FAIL"))?;
    let suite = CABAL_SUITE.captures(&step.lines[fail])?[1].to_string();
    let start = step.lines[..fail]
        .iter()
        .rposition(|l| CABAL_SUITE.is_match(l))
        .map_or(fail, |i| i + 1);
    let explains: Vec<usize> = (start..fail)
        .filter(|&i| !step.lines[i].trim().is_empty())
        .take(8)
        .collect();
    let message = explains
        .first()
        .map_or("test suite failed".to_string(), |&i| {
            step.lines[i].trim().to_string()
        });
    Some(Finding {
        failing_tests: vec![suite],
        explains,
        ..finding(Class::Test, "cabal", fail, message)
    })
}

regex!(BAZEL_TEST, r"^(//\S+)\s+(FAILED|TIMEOUT) in ");
/// `//pkg:test FAILED in 0.4s` or `TIMEOUT in 60.0s` (Bazel's summary); the test's log is in a
/// file Bazel names. `NO STATUS` is a test that never ran (the build failed, or was
/// interrupted): not a failing test.
pub fn bazel_test(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &BAZEL_TEST)?;
    let failed: Vec<(usize, String)> = step
        .lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| BAZEL_TEST.captures(l).map(|c| (i, c[1].to_string())))
        .take(20)
        .collect();
    let message = if &c[2] == "TIMEOUT" {
        "test timed out"
    } else {
        "test failed"
    };
    // With `--test_output=errors` (or `all`) the failing tests' own output is in the log,
    // between Bazel's rules: what the test said comes first, then the summary's lines.
    let mut explains = Vec::new();
    let mut culprit = None;
    let mut lines = step.lines.iter().enumerate();
    while let Some((i, l)) = lines.next() {
        if !BAZEL_TEST_OUTPUT.is_match(l) {
            continue;
        }
        for (j, l) in lines
            .by_ref()
            .take_while(|(_, l)| !l.starts_with("================"))
            .filter(|(_, l)| !l.trim().is_empty())
            .take(8)
        {
            explains.push(j);
            if culprit.is_none() {
                culprit = FILE_LINE
                    .captures(l)
                    .map(|c| (rel(&c[1]), c[2].parse().ok()));
            }
        }
        if explains.len() >= 16 || i >= at {
            break;
        }
    }
    explains.extend(failed.iter().map(|(i, _)| *i));
    let (culprit_file, culprit_line) = culprit.map_or((None, None), |(f, l)| (Some(f), l));
    Some(Finding {
        explains,
        culprit_file,
        culprit_line,
        failing_tests: failed.into_iter().map(|(_, t)| t).collect(),
        ..finding(Class::Test, "bazel", at, message)
    })
}

regex!(BAZEL_TEST_OUTPUT, r"^=+ Test output for //\S+:$");
// `path/file.ext:12:` at the start of a test's line: where it says it failed.
regex!(FILE_LINE, r"^([\w./-]+\.[A-Za-z]+):(\d+):");

regex!(
    CSHARP,
    r"^(\S+?\.(?:cs|vb|fs))\((\d+),(\d+)\): error ([A-Z]+\d+): (.+?)(?: \[[^\]]+\])?$"
);
/// C# compilers (`csc` through `dotnet build` or MSBuild, Mono's `mcs`):
/// `Program.cs(7,16): error CS0103: …` (MSBuild appends the project in brackets).
pub fn csharp(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &CSHARP)?;
    let tool = if command_has(step, "mcs") {
        "mcs"
    } else if command_has(step, "dotnet") {
        "dotnet"
    } else {
        "csc"
    };
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        explains: vec![at],
        ..finding(Class::Compile, tool, at, format!("{}: {}", &c[4], &c[5]))
    })
}

// VSTest's `  Failed Acme.Tests.AddsItems [12 ms]`, or Microsoft.Testing.Platform's
// `failed Acme.Tests.AddsItems (12ms)` (its durations: `(1s 740ms)`; a theory's name carries
// its arguments, spaces and all).
regex!(
    DOTNET_FAILED,
    r"^\s*(?:Failed (\S+) \[[^\]]+\]|failed (.+?) \((?:\d+(?:\.\d+)?\s?(?:ms|s|m|h)\s?)+\))$"
);
// VSTest's frame ends `:line 14`, the platform's `:14`.
regex!(DOTNET_AT, r"^\s+at .+ in (\S+?\.cs):(?:line )?(\d+)$");
/// `dotnet test`, on VSTest's console logger: `  Failed Acme.Tests.AddsItems [12 ms]`, then
/// `Error Message:`, the message, `Stack Trace:` and `at … in /path/Tests.cs:line 14`; or on
/// Microsoft.Testing.Platform (`dotnet test` of .NET 10, or a test project run as an
/// executable): `failed Acme.Tests.AddsItems (12ms)`, the message on the lines under it, the
/// stack's `at … in /path/Tests.cs:14`, then `Test run summary: Failed!`.
pub fn dotnet_test(step: &FailedStep) -> Option<Finding> {
    let (at, _) = first(step, &DOTNET_FAILED)?;
    let tests = step
        .lines
        .iter()
        .filter_map(|l| {
            let c = DOTNET_FAILED.captures(l)?;
            Some(c.get(1).or(c.get(2))?.as_str().to_string())
        })
        .collect();
    let frame = first(step, &DOTNET_AT);
    // VSTest says `Error Message:` before the message; the platform writes it straight under
    // the test's line.
    let message_at = step.lines[at + 1..]
        .iter()
        .take(3)
        .position(|l| l.trim() == "Error Message:")
        .map(|p| at + 1 + p + 1)
        .or_else(|| {
            let next = step.lines.get(at + 1)?.trim();
            (!next.is_empty()
                && !next.starts_with("at ")
                && !next.starts_with("Stack Trace:")
                && !DOTNET_FAILED.is_match(&step.lines[at + 1]))
            .then_some(at + 1)
        });
    let message = message_at
        .and_then(|i| step.lines.get(i))
        .map_or("test failed".to_string(), |l| l.trim().to_string());
    let mut explains = vec![at];
    explains.extend(message_at);
    explains.extend(frame.as_ref().map(|(i, _)| *i));
    Some(Finding {
        culprit_file: frame.as_ref().map(|(_, c)| rel(&c[1])),
        culprit_line: frame.as_ref().and_then(|(_, c)| c[2].parse().ok()),
        failing_tests: tests,
        explains,
        ..finding(Class::Test, "dotnet-test", at, message)
    })
}

regex!(
    XCTEST,
    r"^(\S+\.swift):(\d+): error: (?:-\[)?(\S+?)[ .](\w+)\]? : (.+)$"
);
/// XCTest on Linux and macOS: `Tests/BasketTests.swift:9: error: BasketTests.testAdds :
/// XCTAssertEqual failed: ("8") is not equal to ("7")` (swift is not packaged by Debian;
/// this follows XCTest's documented output and is tested on a sample, not a corpus log).
pub fn xctest(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &XCTEST)?;
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: c[2].parse().ok(),
        failing_tests: vec![format!("{}.{}", &c[3], &c[4])],
        explains: vec![at],
        ..finding(Class::Test, "xctest", at, c[5].to_string())
    })
}

regex!(
    SWIFT_TESTING_ISSUE,
    r"^(?:✘|\x{100884}) Test (\S.*?) recorded an issue(?: with \d+ arguments? .*?)? at (\S+?\.swift):(\d+):(?:\d+:)? (.+)$"
);
regex!(
    SWIFT_TESTING_FAILED,
    r"^(?:✘|\x{100884}) Test (\S.*?)(?: with \d+ test cases?)? failed after "
);
/// Swift Testing (Swift 6's `swift test` beside XCTest): `✘ Test addsItems() recorded an issue
/// at BasketTests.swift:9:5: Expectation failed: (total → 8) == 7`, then `✘ Test addsItems()
/// failed after 0.001 seconds with 1 issue.`; a parameterised test's issue names its
/// arguments (`recorded an issue with 1 argument x → 3 at …`). macOS prints SF Symbols' private
/// character for ✘ where the font is installed. Its documented console output; a sample, as
/// for XCTest.
pub fn swift_testing(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &SWIFT_TESTING_ISSUE)?;
    let mut tests: Vec<String> = Vec::new();
    for line in &step.lines {
        if let Some(t) = SWIFT_TESTING_FAILED.captures(line) {
            // The run's own summary is `✘ Test run with 2 tests failed after …`.
            let summary = t[1].starts_with("run with ");
            if !summary && !tests.iter().any(|s| *s == t[1]) && tests.len() < 20 {
                tests.push(t[1].to_string());
            }
        }
    }
    Some(Finding {
        culprit_file: Some(rel(&c[2])),
        culprit_line: c[3].parse().ok(),
        failing_tests: tests,
        explains: super::all(step, &SWIFT_TESTING_ISSUE, 5),
        ..finding(Class::Test, "swift-testing", at, c[4].to_string())
    })
}

regex!(
    GO_MODULE,
    r"^(?:(\S+\.go):(\d+):\d+: )?(?:go: )?(?:\S+: )?((?:missing go\.sum entry|no required module provides package|module lookup disabled|updates to go\.mod needed|cannot find module providing package).*)$"
);
/// Go's module errors name the importing file but are the dependencies' failure.
pub fn go_dependency(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &GO_MODULE)?;
    Some(Finding {
        culprit_file: c.get(1).map(|m| rel(m.as_str())),
        culprit_line: c.get(2).and_then(|m| m.as_str().parse().ok()),
        explains: vec![at],
        ..finding(Class::Dependency, "go", at, c[3].to_string())
    })
}
