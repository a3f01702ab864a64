//! The JVM's tools: javac (alone, through Maven or Gradle), JUnit through Maven's Surefire or
//! Gradle, and scalac/ScalaTest through sbt.

use super::{block, finding, first, regex, rel, Finding};
use crate::diagnose::log::FailedStep;
use crate::diagnose::Class;

regex!(
    JAVAC,
    r"^(?:\[ERROR\] )?(\S+\.java):(?:(\d+): error: (.+)|\[(\d+),\d+\] (.+))$"
);
pub fn javac(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &JAVAC)?;
    let line = c.get(2).or(c.get(4)).and_then(|m| m.as_str().parse().ok());
    let message = c.get(3).or(c.get(5)).map_or("", |m| m.as_str()).to_string();
    Some(Finding {
        culprit_file: Some(rel(&c[1])),
        culprit_line: line,
        // javac prints the source line and a caret under the error: the message says why.
        explains: vec![at],
        ..finding(Class::Compile, "javac", at, message)
    })
}

regex!(
    SUREFIRE_SUMMARY,
    r"^\[ERROR\] Tests run: \d+, Failures: \d+, Errors: \d+"
);
regex!(
    SUREFIRE_TEST,
    r"^\[ERROR\]\s+(\S+?)\.(\w+):(\d+)(?:->\S+)?(?: (.+))?$"
);
regex!(SUREFIRE_CLASS, r"(?:--|-) in ((?:\w+\.)*\w+)$");
/// Surefire's summary names the test class without its package
/// (`[ERROR]   SumTest.adds:14 expected: <4> but was: <5>`); the package comes from the
/// class's own report line (`<<< FAILURE! -- in com.acme.SumTest`). Without it the culprit is
/// the file name the log gives, not a guessed directory.
pub fn junit(step: &FailedStep) -> Option<Finding> {
    if let Some((at, c)) = first(step, &SUREFIRE_TEST) {
        let class = c[1].to_string();
        let qualified = if class.contains('.') {
            Some(class.clone())
        } else {
            step.lines.iter().find_map(|l| {
                let q = SUREFIRE_CLASS.captures(l)?[1].to_string();
                (q == class || q.ends_with(&format!(".{class}"))).then_some(q)
            })
        };
        let file = match &qualified {
            Some(q) => format!("src/test/java/{}.java", q.replace('.', "/")),
            None => format!("{class}.java"),
        };
        return Some(Finding {
            culprit_file: Some(file),
            culprit_line: c[3].parse().ok(),
            failing_tests: vec![format!("{}.{}", qualified.unwrap_or(class), &c[2])],
            explains: vec![at],
            ..finding(
                Class::Test,
                "junit",
                at,
                c.get(4).map_or("test failed", |m| m.as_str()),
            )
        });
    }
    let (at, _) = first(step, &SUREFIRE_SUMMARY)?;
    Some(finding(Class::Test, "junit", at, "tests failed"))
}

regex!(PLATFORM_FAILURES, r"^Failures \((\d+)\):$");
regex!(
    PLATFORM_SOURCE,
    r"^\s+MethodSource \[className = '([\w.$]+)', methodName = '(\w+)'"
);
regex!(PLATFORM_THROWN, r"^\s+=> (\S+?)(?:: (.+))?$");
regex!(
    PLATFORM_FRAME,
    r"^\s+([\w.$]+)\.(\w+)\((\w+)\.(java|kt|scala):(\d+)\)$"
);
/// The JUnit Platform's console launcher (JUnit 5): after the tree, `Failures (N):` lists each
/// failed test with its `MethodSource`, the exception (`=> org.opentest4j.AssertionFailedError:
/// expected: <7> but was: <8>`) and its stack, whose first frame in the test's class is the
/// test's line.
pub fn junit_platform(step: &FailedStep) -> Option<Finding> {
    let (head, _) = first(step, &PLATFORM_FAILURES)?;
    let mut tests = Vec::new();
    let mut explains = Vec::new();
    let mut culprit: Option<(String, u32)> = None;
    let mut message = None;
    let mut class: Option<String> = None;
    for (i, line) in step.lines.iter().enumerate().skip(head + 1) {
        if let Some(c) = PLATFORM_SOURCE.captures(line) {
            tests.push(format!("{}.{}", &c[1], &c[2]));
            class = Some(c[1].to_string());
        } else if let Some(c) = PLATFORM_THROWN.captures(line) {
            if tests.len() <= 3 {
                explains.push(i);
            }
            message.get_or_insert_with(|| c.get(2).map_or(&c[1], |m| m.as_str()).to_string());
        } else if let Some(c) = PLATFORM_FRAME.captures(line) {
            // The first frame in the failed test's own class; the framework's come before it.
            if class.as_deref() == Some(&c[1]) {
                class = None;
                if tests.len() <= 3 {
                    explains.push(i);
                }
                if culprit.is_none() {
                    let path = c[1].split('$').next().unwrap_or(&c[1]);
                    let dir = path
                        .rsplit_once('.')
                        .map_or("", |(p, _)| p)
                        .replace('.', "/");
                    // Maven's and Gradle's layout: the log gives the package, not the root.
                    let (ext, root) = match &c[4] {
                        "kt" => ("kt", "src/test/kotlin"),
                        "scala" => ("scala", "src/test/scala"),
                        _ => ("java", "src/test/java"),
                    };
                    let file = if dir.is_empty() {
                        format!("{root}/{}.{ext}", &c[3])
                    } else {
                        format!("{root}/{dir}/{}.{ext}", &c[3])
                    };
                    culprit = Some((file, c[5].parse().unwrap_or(0)));
                }
            }
        }
    }
    if tests.is_empty() {
        return None;
    }
    let at = explains.first().copied().unwrap_or(head);
    Some(Finding {
        culprit_line: culprit.as_ref().map(|c| c.1),
        culprit_file: culprit.map(|c| c.0),
        failing_tests: tests,
        explains,
        ..finding(
            Class::Test,
            "junit",
            at,
            message.unwrap_or_else(|| "tests failed".into()),
        )
    })
}

// The test as JUnit names it: a method (`addsItems`, `addsItems()`), or on the JUnit Platform
// a display name with spaces (`@DisplayName("adds two items")`), a nested class's
// (`Totals > adds()`) or a parameterised invocation's (`adds(int) > [1] 2`).
regex!(GRADLE_TEST, r"^([\w.$]+) > (.+?)(?:\(\))? FAILED$");
regex!(GRADLE_AT, r"^\s+(?:\S+ )?at (\S+?)\.java:(\d+)\)?$");
/// Gradle's test report: `acme.BasketTest > addsItems FAILED` (or a JUnit 5 display name:
/// `BasketTest > adds two items FAILED`), then the exception and the frame in the test class
/// (`at BasketTest.java:10`).
pub fn gradle_test(step: &FailedStep) -> Option<Finding> {
    let (at, c) = first(step, &GRADLE_TEST)?;
    let class = c[1].to_string();
    let tests: Vec<String> = step
        .lines
        .iter()
        .filter_map(|l| {
            GRADLE_TEST
                .captures(l)
                .map(|c| format!("{}.{}", &c[1], &c[2]))
        })
        .collect();
    let frame = step.lines[at + 1..]
        .iter()
        .take(4)
        .position(|l| GRADLE_AT.is_match(l))
        .map(|p| at + 1 + p);
    let line = frame.and_then(|i| GRADLE_AT.captures(&step.lines[i])?[2].parse().ok());
    let message = step
        .lines
        .get(at + 1)
        .map_or("test failed".into(), |l| l.trim().to_string());
    Some(Finding {
        culprit_file: Some(format!("src/test/java/{}.java", class.replace('.', "/"))),
        culprit_line: line,
        failing_tests: tests,
        // The exception and where it was thrown (the test's name is in `failing_tests`).
        explains: block(step, at, 3).into_iter().skip(1).collect(),
        ..finding(Class::Test, "junit", at, message)
    })
}

regex!(
    SCALAC,
    r"^\[error\] (?:-- (?:\[E\d+\] )?.*?: )?(\S+\.scala):(\d+):(\d+):? ?(.*)$"
);
regex!(SCALATEST_FAILED, r"^\[info\] - (.+) \*\*\* FAILED \*\*\*$");
regex!(SCALA_AT, r"\((\w+\.scala):(\d+)\)");
/// sbt: scalac's `[error] src/main/scala/Basket.scala:7:9: not found: value totl` (Scala 3's
/// layout below), and
/// ScalaTest's `[info] - adds the items *** FAILED ***` then `[info]   8 did not equal 7
/// (BasketSpec.scala:9)` (sbt's documented output; sbt is not packaged by Debian, so no
/// corpus log of it was recorded here).
pub fn scala(step: &FailedStep) -> Option<Finding> {
    if let Some((at, c)) = first(step, &SCALAC) {
        // Scala 3 heads the error with its code and kind (`-- [E006] Not Found Error: …:7:4`,
        // or `-- Error: …:7:4` for an error with no code),
        // then quotes the source (`7 |    totl`), marks it (`  |    ^^^^`) and says what is
        // wrong on the marked lines after (`  |    Not found: totl`).
        let said: Vec<usize> = if step.lines[at].starts_with("[error] -- ") {
            (at + 1..step.lines.len().min(at + 12))
                .take_while(|&i| step.lines[i].starts_with("[error]"))
                .filter(|&i| {
                    let l = step.lines[i].trim_start_matches("[error]").trim_start();
                    l.strip_prefix('|').is_some_and(|rest| {
                        !rest.trim().is_empty() && !rest.trim().chars().all(|c| c == '^')
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(&first_said) = said.first() {
            let words = |i: usize| {
                step.lines[i]
                    .trim_start_matches("[error]")
                    .trim_start()
                    .trim_start_matches('|')
                    .trim()
                    .to_string()
            };
            return Some(Finding {
                culprit_file: Some(rel(&c[1])),
                culprit_line: c[2].parse().ok(),
                explains: std::iter::once(at).chain(said.iter().copied()).collect(),
                ..finding(Class::Compile, "scalac", at, words(first_said))
            });
        }
        let message = if c[4].trim().is_empty() {
            step.lines
                .get(at + 1)
                .map_or("", |l| l.trim_start_matches("[error]").trim())
                .to_string()
        } else {
            c[4].to_string()
        };
        return Some(Finding {
            culprit_file: Some(rel(&c[1])),
            culprit_line: c[2].parse().ok(),
            explains: vec![at],
            ..finding(Class::Compile, "scalac", at, message)
        });
    }
    let (at, c) = first(step, &SCALATEST_FAILED)?;
    let detail = step.lines.get(at + 1);
    let place = detail.and_then(|l| SCALA_AT.captures(l));
    Some(Finding {
        culprit_file: place.as_ref().map(|p| p[1].to_string()),
        culprit_line: place.and_then(|p| p[2].parse().ok()),
        failing_tests: vec![c[1].to_string()],
        explains: vec![at, at + 1],
        ..finding(
            Class::Test,
            "scalatest",
            at,
            detail.map_or("test failed", |l| l.trim_start_matches("[info]").trim()),
        )
    })
}
