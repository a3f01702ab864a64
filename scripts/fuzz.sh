#!/usr/bin/env bash
# Fuzzes what selfheal reads from outside, for a bounded time per target.
#   bash scripts/fuzz.sh [seconds per target, default 60] [target ...]
# With a nightly toolchain and cargo-fuzz installed: libFuzzer on each target (fuzz/), its
# corpus growing in fuzz/corpus/<target>. Otherwise: the same harnesses as property tests on
# stable (tests/suite/fuzz.rs), with as many cases as fit in the time. A crash cargo fuzz finds is
# left in fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/ and tests/suite/fuzz.rs
# replays it in every CI run from then on. Every target runs; the exit status says whether
# any found something.
set -uo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(webhook webhook_signature patch_diff ci_log repo_path sandbox_capture selfheal_yml markdown_text)
fi
# The property tests of each target in tests/suite/fuzz.rs, by name (its module first: the
# suite is one binary).
filter() {
  case "$1" in
    webhook) echo fuzz::webhook_bodies fuzz::recorded_webhooks ;;
    webhook_signature) echo fuzz::webhook_signatures ;;
    patch_diff) echo fuzz::patch_diffs ;;
    ci_log) echo fuzz::ci_logs ;;
    repo_path) echo fuzz::paths_from ;;
    sandbox_capture) echo fuzz::sandbox_captures ;;
    selfheal_yml) echo fuzz::selfheal_yml ;;
    markdown_text) echo fuzz::markdown ;;
    *) echo "unknown target $1" >&2; return 1 ;;
  esac
}
found=()
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    echo "[fuzz] $t: cargo fuzz for ${secs}s"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs") || found+=("$t")
  done
else
  echo "[fuzz] no nightly cargo-fuzz here: the harnesses as property tests on stable (tests/suite/fuzz.rs)"
  # Built first, so that the time below is fuzzing, not compiling.
  cargo test --quiet --test suite --no-run || exit 2
  # Roughly what fits: the cheap harnesses run a few thousand cases a second, a capture
  # (a temporary checkout each) a few hundred.
  export PROPTEST_CASES="${PROPTEST_CASES:-$((secs * 200))}"
  for t in "${targets[@]}"; do
    names=$(filter "$t") || exit 2
    echo "[fuzz] $t: $PROPTEST_CASES cases of each of: $names (at most ${secs}s)"
    # shellcheck disable=SC2086
    timeout "$secs" cargo test --quiet --test suite -- $names
    case $? in
      0) ;;
      124) echo "[fuzz] $t: stopped at ${secs}s, nothing found so far" ;;
      *) found+=("$t") ;;
    esac
  done
fi
if [ ${#found[@]} -gt 0 ]; then
  echo "[fuzz] found something in: ${found[*]} (proptest keeps the failing case in tests/proptest-regressions/)"
  exit 1
fi
echo "[fuzz] nothing found"
