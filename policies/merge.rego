# The default merge policy: selfheal merges its own pull request only when every rule below
# is satisfied. Override with SELFHEAL_MERGE_POLICY=/path/to/policy.rego (same package and
# rule names); the input is documented in docs/policy.md.
package selfheal.merge

import rego.v1

default allow := false

allow if count(deny) == 0

deny contains "the pull request's required checks are not green" if not input.checks_green

deny contains msg if {
	not input.class in input.auto_merge_classes
	msg := sprintf("auto-merge is not enabled for %s failures", [input.class])
}

deny contains msg if {
	input.diff_lines > input.max_diff_lines
	msg := sprintf("the diff changes %d lines, over the limit of %d", [input.diff_lines, input.max_diff_lines])
}

deny contains msg if {
	some path in input.touched_paths
	some prefix in input.protected_paths
	startswith(path, prefix)
	msg := sprintf("the diff touches %s, under protected path %s", [path, prefix])
}

deny contains "the diff deletes or skips a test" if input.tests_deleted

# A model's patch passed selfheal's checks and the sandbox, but what it changes was chosen by
# text nobody reviewed: a person merges it. (A policy of your own may allow some.)
deny contains "a model's fix is merged by a person, not automatically" if input.strategy == "ai_patch"

# Reverting someone's commit on the default branch undoes work people build on: only a
# policy of the operator's own merges that (by branch, by repository, by author).
deny contains "a revert of a commit on the default branch is merged by a person" if {
	input.strategy == "revert_culprit"
	input.base_is_default_branch
}

deny contains msg if {
	some path in input.unreadable_paths
	msg := sprintf("GitHub shows no diff for %s (binary or too large), so nobody can judge it", [path])
}
