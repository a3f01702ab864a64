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

# A test moved within the change (removed here, added there under its name) is kept.
added_tests contains l.test if {
	some f in input.files
	some l in f.added
	l.test
}

deny contains msg if {
	some f in input.files
	some l in f.removed
	l.test
	not l.test in added_tests
	msg := sprintf("tests-kept: removes the test %s from %s", [l.test, f.path])
}

deny contains msg if {
	some f in input.files
	some l in f.added
	l.skip
	msg := sprintf("tests-kept: skips a test in %s:%d: %s", [f.path, l.line, trim_space(l.text)])
}

# Counted over the whole change, so that a test moved to another file keeps its assertions.
assertions(strictness, side) := count([l |
	some f in input.files
	some l in f[side]
	l.assert in strictness
])

files_losing_assertions contains f.path if {
	some f in input.files
	some l in f.removed
	l.assert
}

deny contains msg if {
	removed := assertions({"exact", "loose", "tautology"}, "removed")
	added := assertions({"exact", "loose"}, "added")
	removed > added
	msg := sprintf("tests-kept: removes %d assertion(s) (from %s)", [removed - added, concat(", ", sort(files_losing_assertions))])
}

# The same number of assertions, but exact comparisons became weaker checks.
deny contains msg if {
	assertions({"exact"}, "removed") > assertions({"exact"}, "added")
	assertions({"loose", "tautology"}, "added") > 0
	msg := sprintf("tests-kept: loosens an assertion (in %s): an exact comparison became a weaker check", [concat(", ", sort(files_losing_assertions))])
}

deny contains msg if {
	some f in input.files
	some l in f.added
	l.assert == "tautology"
	msg := sprintf("tests-kept: adds an assertion that cannot fail in %s:%d: %s", [f.path, l.line, trim_space(l.text)])
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

# ---- scope: protected paths, the diff's size, lockfiles --------------------------------------

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
