//! Formats the shared fixtures and testdata/ do not cover, as the tools print them
//! (short samples of each tool's documented output layout).
use crate::diagnose::{diagnose, Class, Diagnosis};

fn step(command: &str, output: &str) -> String {
    format!("##[group]Run {command}\n{command}\n##[endgroup]\n{output}\n##[error]Process completed with exit code 1.\n")
}

fn check(
    command: &str,
    output: &str,
    class: Class,
    tool: &str,
    file: Option<&str>,
    line: Option<u32>,
) -> Diagnosis {
    let d = diagnose(&step(command, output));
    assert_eq!(
        (
            d.class,
            d.tool.as_deref(),
            d.culprit_file.as_deref(),
            d.culprit_line
        ),
        (class, Some(tool), file, line),
        "{command}"
    );
    d
}

#[test]
fn go_toolchain_outputs() {
    let d = check(
        "go test ./...",
        "--- FAIL: TestAdd (0.00s)\n    math_test.go:12: Add(2, 2) = 5, want 4\nFAIL\nFAIL\texample.com/calc\t0.002s",
        Class::Test,
        "go-test",
        Some("math_test.go"),
        Some(12),
    );
    assert_eq!(d.failing_tests, vec!["TestAdd"]);
    check(
        "go build ./...",
        "# example.com/calc\n./calc.go:7:9: undefined: Sub",
        Class::Compile,
        "go",
        Some("calc.go"),
        Some(7),
    );
    check(
        "test -z \"$(gofmt -l .)\" || (gofmt -d . && exit 1)",
        "diff -u calc.go.orig calc.go\n--- calc.go.orig\n+++ calc.go",
        Class::Format,
        "gofmt",
        Some("calc.go"),
        None,
    );
}

#[test]
fn vitest_and_junit_outputs() {
    let d = check(
        "npx vitest run",
        " FAIL  src/sum.test.ts > sum > adds numbers\nAssertionError: expected 5 to be 4\n ❯ src/sum.test.ts:5:20",
        Class::Test,
        "vitest",
        Some("src/sum.test.ts"),
        Some(5),
    );
    assert_eq!(d.failing_tests, vec!["sum > adds numbers"]);
    let d = check(
        "mvn -B test",
        "[ERROR] Tests run: 1, Failures: 1, Errors: 0, Skipped: 0\n[ERROR] Failures: \n[ERROR]   com.acme.SumTest.adds:14 expected: <4> but was: <5>",
        Class::Test,
        "junit",
        Some("src/test/java/com/acme/SumTest.java"),
        Some(14),
    );
    assert_eq!(d.failing_tests, vec!["com.acme.SumTest.adds"]);
}

#[test]
fn dependency_outputs() {
    let cases = [
        ("npm ci", "npm error code ERESOLVE\nnpm error ERESOLVE unable to resolve dependency tree", "npm"),
        ("npm ci", "npm ERR! `npm ci` can only install packages when your package.json and package-lock.json or npm-shrinkwrap.json are in sync.", "npm"),
        ("cargo build --locked", "error: the lock file /home/runner/work/a/a/Cargo.lock needs to be updated but --locked was passed to prevent this", "cargo"),
        ("cargo build", "error: failed to select a version for the requirement `serde = \"^9\"`", "cargo"),
        ("pip install -r requirements.txt", "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/", "pip"),
    ];
    for (cmd, out, tool) in cases {
        check(cmd, out, Class::Dependency, tool, None, None);
    }
}

#[test]
fn infrastructure_outputs() {
    let cases = [
        ("cargo build", "error: could not compile `big` (lib)\n\nCaused by:\n  process didn't exit successfully: `rustc ...` (signal: 9, SIGKILL: kill)", "out of memory"),
        ("./deploy.sh", "curl: (6) Could not resolve host: registry.example.com", "network: DNS failure"),
        ("./release.sh", "gh: API rate limit exceeded for installation ID 4242. (HTTP 403)", "rate limited"),
        ("make", "The runner has received a shutdown signal. This can happen when the runner service is stopped", "runner lost"),
    ];
    for (cmd, out, what) in cases {
        let d = diagnose(&step(cmd, out));
        assert_eq!((d.class, d.message.as_str()), (Class::Infra, what), "{cmd}");
    }
}

/// Tools Debian does not package (sbt, .NET, Swift) or that cannot run offline here (Bazel's
/// test runner): their documented output layouts, since no corpus log could be recorded for
/// them. Composer's registry is out of reach too; its corpus logs fail on a path repository
/// and a platform extension, and this sample on a registry package.
#[test]
fn tools_without_a_corpus_log() {
    let d = check(
        "sbt test",
        "[info] compiling 1 Scala source to /home/runner/work/a/a/target/scala-2.13/classes ...\n[error] /home/runner/work/a/a/src/main/scala/Basket.scala:7:5: not found: value totl\n[error]     totl\n[error]     ^\n[error] one error found\n[error] (Compile / compileIncremental) Compilation failed",
        Class::Compile,
        "scalac",
        Some("src/main/scala/Basket.scala"),
        Some(7),
    );
    assert_eq!(d.message, "not found: value totl");
    let d = check(
        "sbt test",
        "[info] BasketSpec:\n[info] - adds the items *** FAILED ***\n[info]   8 did not equal 7 (BasketSpec.scala:9)\n[info] Run completed in 120 milliseconds.\n[error] Failed tests:\n[error] \tBasketSpec",
        Class::Test,
        "scalatest",
        Some("BasketSpec.scala"),
        Some(9),
    );
    assert_eq!(d.failing_tests, vec!["adds the items"]);
    check(
        "dotnet build",
        "/home/runner/work/a/a/src/App/Basket.cs(7,20): error CS0103: The name 'summ' does not exist in the current context [/home/runner/work/a/a/src/App/App.csproj]\n\nBuild FAILED.",
        Class::Compile,
        "dotnet",
        Some("src/App/Basket.cs"),
        Some(7),
    );
    let d = check(
        "dotnet test",
        "  Failed App.Tests.BasketTests.AddsItems [4 ms]\n  Error Message:\n   Assert.Equal() Failure: Values differ\nExpected: 7\nActual:   8\n  Stack Trace:\n     at App.Tests.BasketTests.AddsItems() in /home/runner/work/a/a/tests/App.Tests/BasketTests.cs:line 9\n\nFailed!  - Failed:     1, Passed:     0, Skipped:     0, Total:     1",
        Class::Test,
        "dotnet-test",
        Some("tests/App.Tests/BasketTests.cs"),
        Some(9),
    );
    assert_eq!(d.failing_tests, vec!["App.Tests.BasketTests.AddsItems"]);
    assert_eq!(d.message, "Assert.Equal() Failure: Values differ");
    check(
        "swift build",
        "/home/runner/work/a/a/Sources/App/Basket.swift:4:16: error: cannot find 'totl' in scope\n        return totl\n               ^~~~",
        Class::Compile,
        "swiftc",
        Some("Sources/App/Basket.swift"),
        Some(4),
    );
    let d = check(
        "swift test",
        "Test Case 'BasketTests.testAdds' started at 2026-11-20 09:14:04.096\n/home/runner/work/a/a/Tests/AppTests/BasketTests.swift:9: error: BasketTests.testAdds : XCTAssertEqual failed: (\"8\") is not equal to (\"7\") - \nTest Case 'BasketTests.testAdds' failed (0.001 seconds)",
        Class::Test,
        "xctest",
        Some("Tests/AppTests/BasketTests.swift"),
        Some(9),
    );
    assert_eq!(d.failing_tests, vec!["BasketTests.testAdds"]);
    let d = check(
        "swift test",
        "◇ Test run started.\n↳ Testing Library Version: 6.0.3\n◇ Suite BasketTests started.\n◇ Test addsItems() started.\n◇ Test emptyBasket() started.\n✔ Test emptyBasket() passed after 0.001 seconds.\n✘ Test addsItems() recorded an issue at BasketTests.swift:9:5: Expectation failed: (basket.total → 8) == 7\n✘ Test addsItems() failed after 0.002 seconds with 1 issue.\n✘ Suite BasketTests failed after 0.002 seconds with 1 issue.\n✘ Test run with 2 tests failed after 0.002 seconds with 1 issue.",
        Class::Test,
        "swift-testing",
        Some("BasketTests.swift"),
        Some(9),
    );
    assert_eq!(d.failing_tests, vec!["addsItems()"]);
    assert_eq!(d.message, "Expectation failed: (basket.total → 8) == 7");
    // A parameterised test's issue names its argument; its verdict counts its cases.
    let d = check(
        "swift test",
        "✘ Test adds(count:) recorded an issue with 1 argument count → 3 at BasketTests.swift:14:9: Expectation failed: (basket.total → 4) == 3\n✘ Test adds(count:) with 2 test cases failed after 0.002 seconds with 1 issue.\n✘ Test run with 2 tests failed after 0.002 seconds with 1 issue.",
        Class::Test,
        "swift-testing",
        Some("BasketTests.swift"),
        Some(14),
    );
    assert_eq!(d.failing_tests, vec!["adds(count:)"]);
    let d = check(
        "bazel test //...",
        "FAIL: //calc:calc_test (see /home/runner/.cache/bazel/_bazel_runner/0f1e/execroot/_main/bazel-out/k8-fastbuild/testlogs/calc/calc_test/test.log)\nINFO: Elapsed time: 1.2s, Critical Path: 0.9s\n//calc:calc_test                                                         FAILED in 0.1s\nExecuted 1 out of 1 test: 1 fails locally.",
        Class::Test,
        "bazel",
        None,
        None,
    );
    assert_eq!(d.failing_tests, vec!["//calc:calc_test"]);
    // A test past its timeout, beside one that failed and one that never ran.
    let d = check(
        "bazel test //...",
        "//calc:slow_test                                                        TIMEOUT in 60.0s\n  /home/runner/.cache/bazel/_bazel_runner/0f1e/execroot/_main/bazel-out/k8-fastbuild/testlogs/calc/slow_test/test.log\n//calc:calc_test                                                         FAILED in 0.1s\n//calc:other_test                                                    NO STATUS\nExecuted 2 out of 3 tests: 2 fail locally.",
        Class::Test,
        "bazel",
        None,
        None,
    );
    assert_eq!(
        d.failing_tests,
        vec!["//calc:slow_test", "//calc:calc_test"]
    );
    assert_eq!(d.message, "test timed out");
    // Scala 3 says what is wrong under the quoted and marked source.
    let d = check(
        "sbt test",
        "[info] compiling 1 Scala source to /home/runner/work/a/a/target/scala-3.3.4/classes ...\n[error] -- [E006] Not Found Error: /home/runner/work/a/a/src/main/scala/Basket.scala:7:4 \n[error] 7 |    totl\n[error]   |    ^^^^\n[error]   |    Not found: totl\n[error] one error found\n[error] (Compile / compileIncremental) Compilation failed",
        Class::Compile,
        "scalac",
        Some("src/main/scala/Basket.scala"),
        Some(7),
    );
    assert_eq!(d.message, "Not found: totl");
    assert!(d.excerpt.contains("Not found: totl"), "{}", d.excerpt);
    // An error with no code.
    let d = check(
        "sbt compile",
        "[error] -- Error: /home/runner/work/a/a/src/main/scala/Basket.scala:3:8 \n[error] 3 |  given Int = \"x\"\n[error]   |        ^^^\n[error]   |        Found:    (\"x\" : String)\n[error]   |        Required: Int\n[error] one error found",
        Class::Compile,
        "scalac",
        Some("src/main/scala/Basket.scala"),
        Some(3),
    );
    assert_eq!(d.message, "Found:    (\"x\" : String)");
    let d = check(
        "composer install",
        "Loading composer repositories with package information\nUpdating dependencies\nYour requirements could not be resolved to an installable set of packages.\n\n  Problem 1\n    - Root composer.json requires monolog/monolog ^9.0, found monolog/monolog[1.0.0, ..., 3.8.0] but it does not match the constraint.",
        Class::Dependency,
        "composer",
        None,
        None,
    );
    assert!(d
        .excerpt
        .contains("- Root composer.json requires monolog/monolog ^9.0"));
    // Only Composer's problems are read so: another tool's numbered list stays out.
    let d = diagnose(&step(
        "./deploy.sh",
        "curl: (6) Could not resolve host: releases.example.com\n  Problem 1\n    - retry later\n",
    ));
    assert_eq!(d.class, Class::Infra);
    assert!(!d.excerpt.contains("retry later"), "{}", d.excerpt);
}

/// Windows runners: Microsoft's compiler and linker, clang-cl, and GoogleTest built with MSVC,
/// as their documentation and sources print them (no Windows toolchain runs here), under
/// GitHub's `D:\\a\\<repo>\\<repo>\\` checkout.
#[test]
fn windows_toolchain_outputs() {
    let d = check(
        "cmake --build build",
        "  ring.cpp\nD:\\a\\ring\\ring\\src\\ring.cpp(12,5): error C2065: 'totl': undeclared identifier [D:\\a\\ring\\ring\\build\\ring.vcxproj]\nD:\\a\\ring\\ring\\src\\ring.cpp(14): error C2660: 'push': function does not take 2 arguments [D:\\a\\ring\\ring\\build\\ring.vcxproj]",
        Class::Compile,
        "msvc",
        Some("src/ring.cpp"),
        Some(12),
    );
    assert_eq!(d.message, "C2065: 'totl': undeclared identifier");
    check(
        "cl /c src\\main.c",
        "main.c\nsrc\\main.c(1): fatal error C1083: Cannot open include file: 'ring.h': No such file or directory",
        Class::Compile,
        "msvc",
        Some("src/main.c"),
        Some(1),
    );
    check(
        "cmake --build build",
        "D:\\a\\ring\\ring\\src\\ring.cpp(12,5): error: use of undeclared identifier 'totl'\n1 error generated.",
        Class::Compile,
        "clang-cl",
        Some("src/ring.cpp"),
        Some(12),
    );
    let d = check(
        "cmake --build build",
        "main.obj : error LNK2019: unresolved external symbol \"int __cdecl add(int,int)\" (?add@@YAHHH@Z) referenced in function main\nD:\\a\\ring\\ring\\build\\Debug\\ring.exe : fatal error LNK1120: 1 unresolved externals",
        Class::Compile,
        "link",
        None,
        None,
    );
    assert_eq!(
        d.message,
        "undefined reference to \"int __cdecl add(int,int)\" (?add@@YAHHH@Z)"
    );
    for failure in [
        "D:\\a\\ring\\ring\\tests\\ring_test.cc(9): Failure\nExpected equality of these values:\n  r.size()\n    Which is: 3\n  2",
        "D:\\a\\ring\\ring\\tests\\ring_test.cc(9): error: Expected equality of these values:\n  r.size()\n    Which is: 3\n  2",
    ] {
        let d = check(
            "ctest --test-dir build -C Debug --output-on-failure",
            &format!("[ RUN      ] Ring.Grows\n{failure}\n[  FAILED  ] Ring.Grows (0 ms)\n[  FAILED  ] 1 test, listed below:\n[  FAILED  ] Ring.Grows"),
            Class::Test,
            "googletest",
            Some("tests/ring_test.cc"),
            Some(9),
        );
        assert_eq!(d.failing_tests, vec!["Ring.Grows"]);
        assert!(
            d.message.starts_with("Expected equality of these values:"),
            "{}",
            d.message
        );
    }
    // A compile error beside a link error in one parallel build: the compiler's.
    check(
        "msbuild ring.sln",
        "main.obj : error LNK2019: unresolved external symbol \"int __cdecl add(int,int)\" (?add@@YAHHH@Z) referenced in function main [D:\\a\\ring\\ring\\build\\app.vcxproj]\nD:\\a\\ring\\ring\\src\\ring.cpp(12,5): error C2065: 'totl': undeclared identifier [D:\\a\\ring\\ring\\build\\ring.vcxproj]",
        Class::Compile,
        "msvc",
        Some("src/ring.cpp"),
        Some(12),
    );
    // MSBuild's project suffix is no part of the symbol.
    let d = check(
        "msbuild ring.sln",
        "util.obj : error LNK2001: unresolved external symbol _ring_size [D:\\a\\ring\\ring\\build\\app.vcxproj]",
        Class::Compile,
        "link",
        None,
        None,
    );
    assert_eq!(d.message, "undefined reference to _ring_size");
    // Boost.Test prints `file(line): error:` on every platform: an assertion, not a compile
    // error.
    let d = diagnose(&step(
        "ctest --test-dir build --output-on-failure",
        "Running 1 test case...\n/home/runner/work/ring/ring/tests/test.cpp(12): error: in \"ring/grows\": check r.size() == 2 has failed [3 != 2]\n\n*** 1 failure is detected in the test module \"ring\"\n\n0% tests passed, 1 tests failed out of 1\n\nThe following tests FAILED:\n\t  1 - ring_test (Failed)",
    ));
    assert_eq!(d.class, Class::Test, "{d:?}");
}

/// Newer or other layouts of tools in the corpus: Surefire 3's summary with the simple class
/// name, a CMake Find module's `Could NOT find`, GHC 9.6's error codes.
#[test]
fn other_versions_of_corpus_tools() {
    let d = check(
        "mvn -B test",
        "[ERROR] Tests run: 1, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.05 s <<< FAILURE! -- in com.acme.SumTest\n[ERROR] com.acme.SumTest.adds -- Time elapsed: 0.01 s <<< FAILURE!\norg.opentest4j.AssertionFailedError: expected: <4> but was: <5>\n\tat com.acme.SumTest.adds(SumTest.java:14)\n\n[ERROR] Failures: \n[ERROR]   SumTest.adds:14 expected: <4> but was: <5>",
        Class::Test,
        "junit",
        Some("src/test/java/com/acme/SumTest.java"),
        Some(14),
    );
    assert_eq!(d.failing_tests, vec!["com.acme.SumTest.adds"]);
    // Without the class's report line the file is the name the log gives, not a guess.
    check(
        "mvn -B test",
        "[ERROR] Failures: \n[ERROR]   SumTest.adds:14 expected: <4> but was: <5>",
        Class::Test,
        "junit",
        Some("SumTest.java"),
        Some(14),
    );
    check(
        "cmake -S . -B build",
        "CMake Error at /usr/share/cmake-3.25/Modules/FindPackageHandleStandardArgs.cmake:230 (message):\n  Could NOT find OpenSSL, try to set the path to OpenSSL root folder in the\n  system variable OPENSSL_ROOT_DIR (missing: OPENSSL_CRYPTO_LIBRARY\n  OPENSSL_INCLUDE_DIR)\nCall Stack (most recent call first):\n  /usr/share/cmake-3.25/Modules/FindPackageHandleStandardArgs.cmake:600 (_FPHSA_FAILURE_MESSAGE)\n  /usr/share/cmake-3.25/Modules/FindOpenSSL.cmake:670 (find_package_handle_standard_args)\n  CMakeLists.txt:3 (find_package)\n\n-- Configuring incomplete, errors occurred!",
        Class::Dependency,
        "cmake",
        Some("CMakeLists.txt"),
        Some(3),
    );
    let d = check(
        "cabal build",
        "src/Basket.hs:4:15: error: [GHC-83865]\n    • Couldn't match expected type ‘[a0]’ with actual type ‘Int’\n    • In the first argument of ‘(++)’, namely ‘sum items’",
        Class::Compile,
        "ghc",
        Some("src/Basket.hs"),
        Some(4),
    );
    assert_eq!(
        d.message,
        "GHC-83865: Couldn't match expected type ‘[a0]’ with actual type ‘Int’"
    );
    // GoogleTest run directly, a parameterised test, a boolean check with no `Which is:`.
    let d = check(
        "./build/ring_test",
        "[ RUN      ] Sizes/RingTest.Holds/2\ntests/ring_test.cc:31: Failure\nValue of: ring.full()\n  Actual: false\nExpected: true\n[  FAILED  ] Sizes/RingTest.Holds/2, where GetParam() = 8 (1 ms)\n[==========] 4 tests from 1 test suite ran. (1 ms total)\n[  FAILED  ] 1 test, listed below:\n[  FAILED  ] Sizes/RingTest.Holds/2, where GetParam() = 8\n\n 1 FAILED TEST",
        Class::Test,
        "googletest",
        Some("tests/ring_test.cc"),
        Some(31),
    );
    assert_eq!(d.failing_tests, ["Sizes/RingTest.Holds/2"]);
    assert_eq!(
        d.message,
        "Value of: ring.full() Actual: false Expected: true"
    );
    assert_eq!(d.excerpt_lines.len(), 4, "{:?}", d.excerpt_lines);
    // JUnit 5's console launcher on Kotlin tests: the file is the frame's, under Kotlin's root.
    let d = check(
        "java -jar junit-platform-console-standalone.jar -cp build --scan-classpath",
        "Failures (1):\n  JUnit Jupiter:CartTest:totals()\n    MethodSource [className = 'shop.CartTest', methodName = 'totals', methodParameterTypes = '']\n    => org.opentest4j.AssertionFailedError: expected: <3> but was: <4>\n       org.junit.jupiter.api.AssertionUtils.fail(AssertionUtils.java:55)\n       shop.CartTest.totals(CartTest.kt:12)\n       java.base/java.lang.reflect.Method.invoke(Method.java:569)",
        Class::Test,
        "junit",
        Some("src/test/kotlin/shop/CartTest.kt"),
        Some(12),
    );
    assert_eq!(d.failing_tests, ["shop.CartTest.totals"]);
    assert_eq!(d.message, "expected: <3> but was: <4>");
}

/// JUnit 5 on Gradle names a test by its display name, which may hold spaces, a nested class
/// or a parameterised invocation (Gradle's console test logger prints the JUnit Platform's
/// display names).
#[test]
fn gradle_junit5_display_names() {
    let d = check(
        "./gradlew test",
        "BasketTest > adds two items FAILED\n    org.opentest4j.AssertionFailedError at BasketTest.java:21\n\nBasketTest > Totals > rounds down() FAILED\n    org.opentest4j.AssertionFailedError at BasketTest.java:34\n\nBasketTest > discount(int) > [2] 15 FAILED\n    org.opentest4j.AssertionFailedError at BasketTest.java:48\n\n3 tests completed, 3 failed\n\n> Task :test FAILED",
        Class::Test,
        "junit",
        Some("src/test/java/BasketTest.java"),
        Some(21),
    );
    assert_eq!(
        d.failing_tests,
        vec![
            "BasketTest.adds two items",
            "BasketTest.Totals > rounds down",
            "BasketTest.discount(int) > [2] 15"
        ]
    );
}

/// `dotnet test` on Microsoft.Testing.Platform (the runner of .NET 10's `dotnet test`, and of a
/// test project run as an executable): `failed <test> (<duration>)`, the message under it,
/// the stack's frames ending `in <file>:<line>`, then `Test run summary: Failed!`.
#[test]
fn dotnet_testing_platform_outputs() {
    let d = check(
        "dotnet test",
        "failed Shop.Tests.BasketTests.Adds_items (270ms)\n  Assert.Equal() Failure: Values differ\n  Expected: 7\n  Actual:   8\n    at Shop.Tests.BasketTests.Adds_items() in /home/runner/work/shop/shop/tests/Shop.Tests/BasketTests.cs:14\nfailed Shop.Tests.BasketTests.Discounts(percent: 15) (1s 20ms)\n  Assert.True() Failure\n    at Shop.Tests.BasketTests.Discounts(Int32 percent) in /home/runner/work/shop/shop/tests/Shop.Tests/BasketTests.cs:31\n/home/runner/work/shop/shop/tests/Shop.Tests/bin/Debug/net10.0/Shop.Tests.dll (net10.0|x64) failed with 2 error(s) (1s 740ms)\n\nTest run summary: Failed!\n  total: 5\n  failed: 2\n  succeeded: 3\n  skipped: 0\n  duration: 1s 740ms",
        Class::Test,
        "dotnet-test",
        Some("tests/Shop.Tests/BasketTests.cs"),
        Some(14),
    );
    assert_eq!(
        d.failing_tests,
        vec![
            "Shop.Tests.BasketTests.Adds_items",
            "Shop.Tests.BasketTests.Discounts(percent: 15)"
        ]
    );
    assert_eq!(d.message, "Assert.Equal() Failure: Values differ");
}
