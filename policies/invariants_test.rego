# The invariants' own tests, run by `cargo test -p selfheal-engine invariants` (regorus, the
# engine selfheal embeds): every `test_` rule here must be true.
package selfheal.invariants

import rego.v1

change(files) := {
	"class": "test", "strategy": "ai_patch", "diff_lines": 4, "max_diff_lines": 100,
	"protected_paths": [".github/workflows/"], "files": files,
}

file(path, kind, added, removed) := {
	"path": path, "status": "modified", "language": "rust", "kind": kind,
	"added": added, "removed": removed,
}

test_a_plain_source_fix_is_denied_nothing if {
	count(deny) == 0 with input as change([file("src/lib.rs", "source", [{"line": 3, "text": "x + 1"}], [{"line": 3, "text": "x - 1"}])])
}

test_a_removed_test_is_denied if {
	some msg in deny with input as change([file("tests/a.rs", "test", [], [{"line": 9, "text": "fn adds() {", "test": "adds"}])])
	startswith(msg, "tests-kept: removes the test adds")
}

test_a_moved_test_is_kept if {
	count(deny) == 0 with input as change([
		file("tests/a.rs", "test", [], [{"line": 9, "text": "fn adds() {", "test": "adds"}]),
		file("tests/b.rs", "test", [{"line": 1, "text": "fn adds() {", "test": "adds"}], []),
	])
}

test_an_exact_assertion_made_loose_is_denied if {
	some msg in deny with input as change([file(
		"tests/a.rs", "test",
		[{"line": 4, "text": "assert!(x > 0);", "assert": "loose"}],
		[{"line": 4, "text": "assert_eq!(x, 3);", "assert": "exact"}],
	)])
	contains(msg, "loosens an assertion")
}

test_a_coverage_threshold_lowered_is_denied_and_raised_is_kept if {
	lowered := change([file("pyproject.toml", "other",
		[{"line": 2, "text": "fail_under = 70", "threshold": {"key": "fail-under", "value": 70}}],
		[{"line": 2, "text": "fail_under = 90", "threshold": {"key": "fail-under", "value": 90}}],
	)])
	raised := change([file("pyproject.toml", "other",
		[{"line": 2, "text": "fail_under = 95", "threshold": {"key": "fail-under", "value": 95}}],
		[{"line": 2, "text": "fail_under = 90", "threshold": {"key": "fail-under", "value": 90}}],
	)])
	some msg in deny with input as lowered
	startswith(msg, "failures-heard: loosens fail-under from 90 to 70")
	count(deny) == 0 with input as raised
}

test_max_warnings_raised_is_denied if {
	some msg in deny with input as change([file("package.json", "script",
		[{"line": 5, "text": "\"lint\": \"eslint --max-warnings 50 .\"", "threshold": {"key": "max-warnings", "value": 50}}],
		[{"line": 5, "text": "\"lint\": \"eslint --max-warnings 0 .\"", "threshold": {"key": "max-warnings", "value": 0}}],
	)])
	contains(msg, "loosens max-warnings")
}

test_a_lockfile_is_for_dependency_fixes_only if {
	lock := [file("Cargo.lock", "lockfile", [{"line": 1, "text": "version = \"1.0.1\""}], [])]
	some msg in deny with input as change(lock)
	startswith(msg, "scope: changes the lockfile Cargo.lock")
	dependency := object.union(change(lock), {"class": "dependency"})
	count(deny) == 0 with input as dependency
}

test_a_protected_path_and_an_oversized_diff_are_denied if {
	big := object.union(change([file(".github/workflows/ci.yml", "ci", [], [])]), {"diff_lines": 101})
	denied := deny with input as big
	"scope: the diff touches .github/workflows/ci.yml, under protected path .github/workflows/" in denied
	"scope: the diff changes 101 lines, over the limit of 100" in denied
}

test_network_calls_count_in_test_code_only if {
	call := [{"line": 2, "text": "reqwest::get(url)", "network": "reqwest::"}]
	some msg in deny with input as change([file("tests/a.rs", "test", call, [])])
	startswith(msg, "tests-offline: adds a network call")
	count(deny) == 0 with input as change([file("src/client.rs", "source", call, [])])
}

test_a_removed_test_mark_is_denied_and_a_moved_one_kept if {
	mark := {"line": 3, "text": "#[test]", "test_mark": true}
	some msg in deny with input as change([file("tests/a.rs", "test", [], [mark])])
	startswith(msg, "tests-kept: removes a test's mark in tests/a.rs:3")
	count(deny) == 0 with input as change([
		file("tests/a.rs", "test", [], [mark]),
		file("tests/b.rs", "test", [mark], []),
	])
}

test_an_unreadable_file_is_denied if {
	binary := object.union(file("tests/data.bin", "test", [], []), {"unreadable": true})
	some msg in deny with input as change([binary])
	startswith(msg, "scope: the change to tests/data.bin is not shown as lines")
}

test_a_proof_file_is_not_the_fixs_to_change if {
	lean := object.union(file("Proofs/Basic.lean", "proof", [{"line": 3, "text": "  sorry"}], []), {"language": "other"})
	some msg in deny with input as change([lean])
	startswith(msg, "proofs-kept: changes Proofs/Basic.lean")
}
