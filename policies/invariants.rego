# The invariants every fix keeps, whatever made it (a formatter, a lint fixer, a revert, a
# model). A fix that breaks one is not delivered; the message says which and why. The input is
# described in docs/invariants.md; each message starts with the invariant's name.
#
# A repository adds its own in .github/selfheal/policies/ (each in an engine of its own: they
# can add denials, never remove these).
package selfheal.invariants

import rego.v1

# ---- tests-kept: no test removed, skipped or weakened -------------------------------------

deny contains msg if {
	some f in input.files
	f.kind == "test"
	f.status == "deleted"
	msg := sprintf("tests-kept: deletes the test file %s", [f.path])
}

# A test moved within the change (removed here, added there under its name, in a file of the
# same language and kind) is kept.
added_tests contains [f.language, f.kind, l.test] if {
	some f in input.files
	some l in f.added
	l.test
}

deny contains msg if {
	some f in input.files
	some l in f.removed
	l.test
	not [f.language, f.kind, l.test] in added_tests
	msg := sprintf("tests-kept: removes the test %s from %s", [l.test, f.path])
}

# `#[test]` or `@Test` removed, the function left: no longer a test.
marks(language, side) := count([l |
	some f in input.files
	f.language == language
	some l in f[side]
	l.test_mark
])

deny contains msg if {
	some f in input.files
	some l in f.removed
	l.test_mark
	marks(f.language, "removed") > marks(f.language, "added")
	msg := sprintf("tests-kept: removes a test's mark in %s:%d: %s", [f.path, l.line, trim_space(l.text)])
}

deny contains msg if {
	some f in input.files
	some l in f.added
	l.skip
	msg := sprintf("tests-kept: skips a test in %s:%d: %s", [f.path, l.line, trim_space(l.text)])
}

# Counted per language over the whole change, so that a test moved to another file keeps
# its assertions (and an assertion in another language does not stand in for one removed).
assertions(language, strictness, side) := count([l |
	some f in input.files
	f.language == language
	some l in f[side]
	l.assert in strictness
])

files_losing_assertions(language) := sort({f.path |
	some f in input.files
	f.language == language
	some l in f.removed
	l.assert
})

languages := {f.language | some f in input.files}

deny contains msg if {
	some language in languages
	removed := assertions(language, {"exact", "loose", "tautology"}, "removed")
	added := assertions(language, {"exact", "loose"}, "added")
	removed > added
	msg := sprintf("tests-kept: removes %d assertion(s) (from %s)", [removed - added, concat(", ", files_losing_assertions(language))])
}

# The same number of assertions, but exact comparisons became weaker checks.
deny contains msg if {
	some language in languages
	assertions(language, {"exact"}, "removed") > assertions(language, {"exact"}, "added")
	assertions(language, {"loose", "tautology"}, "added") > 0
	msg := sprintf("tests-kept: loosens an assertion (in %s): an exact comparison became a weaker check", [concat(", ", files_losing_assertions(language))])
}

deny contains msg if {
	some f in input.files
	some l in f.added
	l.assert == "tautology"
	msg := sprintf("tests-kept: adds an assertion that cannot fail in %s:%d: %s", [f.path, l.line, trim_space(l.text)])
}

# ---- proofs-kept: what the provers check is not the fix's to change ---------------------------

deny contains msg if {
	some f in input.files
	f.kind == "proof"
	msg := sprintf("proofs-kept: changes %s, which a prover checks (docs/proofs.md)", [f.path])
}

# ---- failures-heard: no failure muted -------------------------------------------------------

deny contains msg if {
	some f in input.files
	some l in f.added
	l.mute
	msg := sprintf("failures-heard: mutes a failure in %s:%d (%s)", [f.path, l.line, l.mute])
}

# Thresholds a fix might lower (coverage) or raise (warnings allowed, line length, complexity).
lower_is_looser := {
	"fail-under", "cov-fail-under", "min-coverage", "minimum-coverage", "coverage-threshold",
	"branches", "functions", "lines", "statements",
}

higher_is_looser := {"max-warnings", "max-line-length", "line-length", "max-complexity"}

looser(key, old, new) if {
	key in lower_is_looser
	new < old
}

looser(key, old, new) if {
	key in higher_is_looser
	new > old
}

deny contains msg if {
	some f in input.files
	some old in f.removed
	some new in f.added
	old.threshold.key == new.threshold.key
	looser(old.threshold.key, old.threshold.value, new.threshold.value)
	msg := sprintf("failures-heard: loosens %s from %v to %v in %s", [old.threshold.key, old.threshold.value, new.threshold.value, f.path])
}

deny contains msg if {
	some f in input.files
	some l in f.added
	l.suppression
	msg := sprintf("failures-heard: adds the suppression `%s` in %s:%d", [l.suppression, f.path, l.line])
}

# ---- scope: protected paths, the diff's size, lockfiles, what cannot be read ----------------

deny contains msg if {
	some f in input.files
	f.unreadable
	msg := sprintf("scope: the change to %s is not shown as lines (binary, or too large), so it cannot be held to the invariants", [f.path])
}

deny contains msg if {
	some f in input.files
	f.mode_changed
	msg := sprintf("scope: changes the file mode of %s", [f.path])
}

deny contains msg if {
	some f in input.files
	some prefix in input.protected_paths
	startswith(f.path, prefix)
	msg := sprintf("scope: the diff touches %s, under protected path %s", [f.path, prefix])
}

deny contains msg if {
	input.diff_lines > input.max_diff_lines
	msg := sprintf("scope: the diff changes %d lines, over the limit of %d", [input.diff_lines, input.max_diff_lines])
}

deny contains msg if {
	some f in input.files
	f.kind == "lockfile"
	input.class != "dependency"
	msg := sprintf("scope: changes the lockfile %s, and the failure is not a dependency failure (%s)", [f.path, input.class])
}

# ---- no-secrets, tests-offline ----------------------------------------------------------------

deny contains msg if {
	some f in input.files
	some l in f.added
	l.secret
	msg := sprintf("no-secrets: adds what looks like a %s in %s:%d", [l.secret, f.path, l.line])
}

deny contains msg if {
	some f in input.files
	f.kind == "test"
	some l in f.added
	l.network
	msg := sprintf("tests-offline: adds a network call to test code in %s:%d (%s)", [f.path, l.line, l.network])
}

deny contains msg if {
	some f in input.files
	f.kind == "test"
	some l in f.added
	l.process
	msg := sprintf("tests-offline: adds a process call to test code in %s:%d (%s)", [f.path, l.line, l.process])
}
