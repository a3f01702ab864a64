use super::*;

fn change(diff: &str, class: &str) -> Change {
    Change::describe(
        diff,
        class,
        "ai_patch",
        500,
        &[".github/workflows/".to_string()],
    )
}

fn denials(diff: &str, class: &str) -> Vec<String> {
    check(&change(diff, class), DEFAULT_POLICY, &[], &InProcess)
        .unwrap()
        .into_iter()
        .map(|d| d.message)
        .collect()
}

/// A one-file diff: `removed` lines then `added` lines, in one hunk at line 10.
fn diff(path: &str, removed: &[&str], added: &[&str]) -> String {
    let mut d = format!(
        "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -10,{} +10,{} @@\n",
        removed.len(),
        added.len()
    );
    for l in removed {
        d.push_str(&format!("-{l}\n"));
    }
    for l in added {
        d.push_str(&format!("+{l}\n"));
    }
    d
}

fn assert_denied(d: &str, class: &str, invariant: &str) {
    let got = denials(d, class);
    assert!(
        got.iter().any(|m| m.starts_with(&format!("{invariant}: "))),
        "expected a {invariant} denial of\n{d}\ngot {got:?}"
    );
}

fn assert_kept(d: &str, class: &str) {
    let got = denials(d, class);
    assert!(got.is_empty(), "expected no denial of\n{d}\ngot {got:?}");
}

fn assert_denied_with(d: &str, class: &str, needle: &str) {
    let got = denials(d, class);
    assert!(
        got.iter().any(|m| m.contains(needle)),
        "expected a denial saying {needle:?} of\n{d}\ngot {got:?}"
    );
}

/// Every `test_` rule of policies/invariants_test.rego, evaluated with the policy it tests.
/// Names are found however the rule is indented, and must be unique: Rego joins the bodies of
/// rules sharing a name with OR, so a passing duplicate would hide a failing test.
#[test]
fn the_policys_own_rego_tests_pass() {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("invariants.rego".into(), DEFAULT_POLICY.into())
        .unwrap();
    engine
        .add_policy("invariants_test.rego".into(), POLICY_TESTS.into())
        .unwrap();
    let rule = regex::Regex::new(r"(?m)^\s*(test_\w+)\b").unwrap();
    let names: Vec<&str> = rule
        .captures_iter(POLICY_TESTS)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "a test name used twice: {names:?}"
    );
    assert_eq!(names.len(), 12, "{names:?}");
    for name in names {
        let result = engine
            .eval_rule(format!("data.selfheal.invariants.{name}"))
            .unwrap();
        assert_eq!(result, regorus::Value::from(true), "{name} is not true");
    }
}

#[test]
fn tests_kept_in_several_languages() {
    // Removed.
    assert_denied(
        &diff(
            "tests/parse.rs",
            &[
                "#[test]",
                "fn parses_empty() {",
                "    assert_eq!(parse(\"\"), None);",
                "}",
            ],
            &[],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "tests/test_parse.py",
            &["def test_empty():", "    assert parse('') is None"],
            &[],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "parse_test.go",
            &[
                "func TestEmpty(t *testing.T) {",
                "\tif parse(\"\") != nil { t.Fatal(\"x\") }",
                "}",
            ],
            &[],
        ),
        "test",
        "tests-kept",
    );
    // Skipped.
    assert_denied(
        &diff("tests/parse.rs", &["#[test]"], &["#[test]", "#[ignore]"]),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "src/parse.test.ts",
            &["it('parses', () => {"],
            &["it.skip('parses', () => {"],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "tests/test_parse.py",
            &[],
            &["@pytest.mark.skip(reason='flaky')"],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff("src/test/java/ParseTest.java", &[], &["    @Disabled"]),
        "test",
        "tests-kept",
    );
    // Weakened: an assertion deleted, an exact one made loose, a tautology.
    assert_denied(
        &diff(
            "tests/test_parse.py",
            &["    assert parse('1') == 1", "    assert parse('2') == 2"],
            &["    assert parse('1') == 1"],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "src/parse.test.js",
            &["  expect(parse('1')).toBe(1);"],
            &["  expect(parse('1')).toBeDefined();"],
        ),
        "test",
        "tests-kept",
    );
    assert_denied(
        &diff(
            "tests/parse.rs",
            &["    assert_eq!(parse(\"1\"), Some(1));"],
            &["    assert!(true);"],
        ),
        "test",
        "tests-kept",
    );
    // Kept: the code under test fixed, an assertion's expected value corrected, a test moved.
    assert_kept(
        &diff(
            "src/parse.rs",
            &["    s.parse().ok()"],
            &["    s.trim().parse().ok()"],
        ),
        "test",
    );
    assert_kept(
        &diff(
            "tests/test_parse.py",
            &["    assert parse('1') == 2"],
            &["    assert parse('1') == 1"],
        ),
        "test",
    );
    let moved = diff(
        "tests/a.rs",
        &[
            "#[test]",
            "fn adds() {",
            "    assert_eq!(add(1, 1), 2);",
            "}",
        ],
        &[],
    ) + &diff(
        "tests/b.rs",
        &[],
        &[
            "#[test]",
            "fn adds() {",
            "    assert_eq!(add(1, 1), 2);",
            "}",
        ],
    );
    assert_kept(&moved, "test");
}

#[test]
fn failures_heard() {
    assert_denied(
        &diff(
            ".github/workflows/ci.yml",
            &["      - run: cargo test"],
            &["      - run: cargo test", "        continue-on-error: true"],
        ),
        "test",
        "failures-heard",
    );
    assert_denied(
        &diff("Makefile", &["\tpytest"], &["\tpytest || true"]),
        "test",
        "failures-heard",
    );
    assert_denied(
        &diff("scripts/check.sh", &[], &["set +e"]),
        "test",
        "failures-heard",
    );
    assert_denied(
        &diff("pyproject.toml", &["fail_under = 90"], &["fail_under = 80"]),
        "test",
        "failures-heard",
    );
    assert_denied(
        &diff(
            "package.json",
            &["    \"lint\": \"eslint --max-warnings 0 .\","],
            &["    \"lint\": \"eslint --max-warnings 20 .\","],
        ),
        "lint",
        "failures-heard",
    );
    assert_denied(
        &diff(
            "src/lib.rs",
            &["fn f(v: &[u8]) {"],
            &["#[allow(clippy::needless_range_loop)]", "fn f(v: &[u8]) {"],
        ),
        "lint",
        "failures-heard",
    );
    assert_denied(
        &diff("app/util.py", &["import os"], &["import os  # noqa: F401"]),
        "lint",
        "failures-heard",
    );
    assert_denied(
        &diff("src/util.ts", &[], &["// @ts-ignore"]),
        "compile",
        "failures-heard",
    );
    // Kept: a threshold raised, a shell `||` that still fails, a lint fixed in the code.
    assert_kept(
        &diff("pyproject.toml", &["fail_under = 80"], &["fail_under = 90"]),
        "test",
    );
    assert_kept(
        &diff("Makefile", &["\tpytest"], &["\tpytest || exit 1"]),
        "test",
    );
    assert_kept(
        &diff(
            "src/lib.rs",
            &["    for i in 0..v.len() { s += v[i]; }"],
            &["    for x in v { s += x; }"],
        ),
        "lint",
    );
}

#[test]
fn scope_secrets_and_offline_tests() {
    assert_denied(
        &diff(".github/workflows/ci.yml", &["on: push"], &["on: [push]"]),
        "infra",
        "scope",
    );
    let big: Vec<String> = (0..300).map(|i| format!("let x{i} = {i};")).collect();
    let big: Vec<&str> = big.iter().map(String::as_str).collect();
    assert_denied(&diff("src/lib.rs", &big, &big), "format", "scope");
    assert_denied(
        &diff(
            "Cargo.lock",
            &["version = \"1.0.0\""],
            &["version = \"1.0.1\""],
        ),
        "compile",
        "scope",
    );
    assert_kept(
        &diff(
            "Cargo.lock",
            &["version = \"1.0.0\""],
            &["version = \"1.0.1\""],
        ),
        "dependency",
    );
    assert_denied(
        &diff(
            "config/settings.py",
            &[],
            &["API = 'sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345'"],
        ),
        "compile",
        "no-secrets",
    );
    assert_denied(
        &diff(
            "src/db.rs",
            &[],
            &["const URL: &str = \"postgres://app:hunter22@db/app\";"],
        ),
        "compile",
        "no-secrets",
    );
    assert_kept(
        &diff(
            "src/db.rs",
            &[],
            &["const URL: &str = \"postgres://db/app\";"],
        ),
        "compile",
    );
    assert_denied(
        &diff(
            "tests/test_api.py",
            &[],
            &["    r = requests.get('https://example.com')"],
        ),
        "test",
        "tests-offline",
    );
    assert_denied(
        &diff(
            "api_test.go",
            &[],
            &["\tout, _ := exec.Command(\"curl\", url).Output()"],
        ),
        "test",
        "tests-offline",
    );
    assert_denied(
        &diff("src/api.test.js", &[], &["  const r = await fetch(url);"]),
        "test",
        "tests-offline",
    );
    // The same call in production code is the code's business.
    assert_kept(
        &diff("src/api.js", &[], &["  const r = await fetch(url);"]),
        "test",
    );
}

#[test]
fn what_a_prover_checks_is_not_the_fixs_to_change() {
    assert_denied_with(
        &diff("Proofs/Basic.lean", &["  simp"], &["  sorry"]),
        "test",
        "proofs-kept: changes Proofs/Basic.lean",
    );
    assert_denied_with(
        &diff("spec/Queue.cfg", &["INVARIANT TypeOK"], &[]),
        "test",
        "proofs-kept: changes spec/Queue.cfg",
    );
    assert_denied_with(
        &diff("lakefile.toml", &["name = \"a\""], &["name = \"b\""]),
        "test",
        "proofs-kept",
    );
    // A Kani harness's mark removed: the harness is no longer checked.
    assert_denied_with(
        &diff("src/proofs.rs", &["#[kani::proof]"], &[]),
        "test",
        "removes a test's mark",
    );
    assert_denied_with(
        &diff("src/proofs.rs", &["#[kani::proof_for_contract(div)]"], &[]),
        "test",
        "removes a test's mark",
    );
    // A Python project's setup.cfg, or a capitalised config elsewhere, is not a TLC model.
    assert_kept(&diff("setup.cfg", &["name = a"], &["name = b"]), "test");
    assert_kept(
        &diff("conf/Release.cfg", &["level = 1"], &["level = 2"]),
        "test",
    );
}

#[test]
fn what_cannot_be_read_is_denied() {
    let binary = "diff --git a/tests/data.bin b/tests/data.bin\n--- a/tests/data.bin\n+++ b/tests/data.bin\nBinary files differ\n";
    assert_denied_with(
        binary,
        "test",
        "scope: the change to tests/data.bin is not shown as lines",
    );
    let mode = "diff --git a/run.sh b/run.sh\nold mode 100644\nnew mode 100755\n";
    assert_denied_with(mode, "test", "scope: changes the file mode of run.sh");
    // A quoted path is still under its protected path.
    let quoted = "diff --git \"a/.github/workflows/a\\\"b.yml\" \"b/.github/workflows/a\\\"b.yml\"\n--- \"a/.github/workflows/a\\\"b.yml\"\n+++ \"b/.github/workflows/a\\\"b.yml\"\n@@ -1 +1 @@\n-a\n+b\n";
    assert_denied_with(quoted, "infra", "under protected path .github/workflows/");
}

#[test]
fn denials_are_capped_in_number_and_length() {
    let noisy = RepositoryPolicy {
        path: "noisy.rego".into(),
        text: Ok("package noisy\nimport rego.v1\ndeny contains sprintf(\"noise: %d %s\", [n, concat(\"\", [\"x\" | some _ in numbers.range(1, 400)])]) if some n in numbers.range(1, 30)\n".into()),
    };
    let d = diff("src/lib.rs", &["a"], &["b"]);
    let got = check(&change(&d, "compile"), DEFAULT_POLICY, &[noisy], &InProcess).unwrap();
    assert_eq!(got.len(), MAX_DENIALS_PER_POLICY + 1, "{got:?}");
    assert!(got
        .iter()
        .all(|d| d.message.chars().count() <= MAX_MESSAGE_CHARS + 1));
    assert!(got
        .iter()
        .any(|d| d.message == "10 more denial(s) of this policy not listed"));
}

#[test]
fn a_repository_policy_adds_denials_and_cannot_take_one_away() {
    let ours = RepositoryPolicy {
        path: ".github/selfheal/policies/no-migrations.rego".into(),
        text: Ok("package acme.fixes\nimport rego.v1\ndeny contains msg if {\n some f in input.files\n startswith(f.path, \"migrations/\")\n msg := sprintf(\"migrations: %s is changed by people only\", [f.path])\n}\n".into()),
    };
    let d = diff("migrations/V2.sql", &["SELECT 1;"], &["SELECT 2;"]);
    let got = check(
        &change(&d, "compile"),
        DEFAULT_POLICY,
        std::slice::from_ref(&ours),
        &InProcess,
    )
    .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].policy, ours.path);
    assert_eq!(got[0].invariant, "migrations");
    // A policy that says `deny := set()` in selfheal's package, or any package, changes only
    // its own answer: the built-in denial stays.
    let sneaky = RepositoryPolicy {
        path: ".github/selfheal/policies/allow.rego".into(),
        text: Ok("package selfheal.invariants\nimport rego.v1\ndeny := set()\n".into()),
    };
    let d = diff("tests/a.rs", &[], &["#[ignore]"]);
    let got = check(&change(&d, "test"), DEFAULT_POLICY, &[sneaky], &InProcess).unwrap();
    assert!(
        got.iter()
            .any(|d| d.policy == "selfheal" && d.invariant == "tests-kept"),
        "{got:?}"
    );
}

#[test]
fn a_repository_policy_that_cannot_be_evaluated_denies() {
    let d = diff("src/lib.rs", &["a"], &["b"]);
    for (text, why) in [
        ("package broken\ndeny contains x if {".to_string(), "expecting expression"),
        ("no package here".to_string(), "no valid `package` line"),
        ("package big\n".to_string() + &"# x\n".repeat(REPOSITORY_MAX_BYTES), "over 65536"),
        // Runs until the evaluation's time limit (checked between the interpreter's steps).
        ("package slow\nimport rego.v1\ndeny contains \"x\" if { some a in numbers.range(1, 3000); some b in numbers.range(1, 3000); a * b < 0 }\n".to_string(), "time"),
        ("package odd\nimport rego.v1\ndeny := 3\n".to_string(), "deny must be a set of messages"),
    ] {
        let p = RepositoryPolicy { path: "p.rego".into(), text: Ok(text) };
        let started = std::time::Instant::now();
        let got = check(&change(&d, "compile"), DEFAULT_POLICY, &[p], &InProcess).unwrap();
        assert!(started.elapsed() < Duration::from_secs(20), "{why}: took {:?}", started.elapsed());
        assert_eq!(got.len(), 1, "{why}: {got:?}");
        assert!(got[0].message.contains("cannot be evaluated, so it denies"), "{why}: {got:?}");
        assert!(got[0].message.to_lowercase().contains(why), "{why}: {got:?}");
    }
    let many: Vec<RepositoryPolicy> = (0..=REPOSITORY_MAX_FILES)
        .map(|i| RepositoryPolicy {
            path: format!("p{i}.rego"),
            text: Ok(format!("package p{i}\n")),
        })
        .collect();
    let got = check(&change(&d, "compile"), DEFAULT_POLICY, &many, &InProcess).unwrap();
    assert!(
        got.iter()
            .any(|d| d.message.contains("over the 16 selfheal evaluates")),
        "{got:?}"
    );
}

#[test]
fn a_broken_builtin_policy_is_an_error_not_an_allow() {
    let d = diff("src/lib.rs", &["a"], &["b"]);
    assert!(check(
        &change(&d, "compile"),
        "package selfheal.invariants\ndeny contains x if {",
        &[],
        &InProcess
    )
    .is_err());
}
