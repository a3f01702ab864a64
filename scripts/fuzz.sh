#!/usr/bin/env bash
# Fuzzes what selfheal reads from outside, for a bounded time per target.
#   bash scripts/fuzz.sh [seconds per target, default 60] [target ...]
# With a nightly toolchain and cargo-fuzz installed: libFuzzer on each target (fuzz/), its
# corpus growing in fuzz/corpus/<target>. Otherwise: the same harnesses as property tests on
# stable, with as many cases as fit. A crash found by cargo fuzz is left in
# fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/ and tests/fuzz.rs replays it
# in every CI run from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(webhook webhook_signature patch_diff ci_log repo_path sandbox_capture selfheal_yml markdown_text)
fi
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  for t in "${targets[@]}"; do
    echo "[fuzz] $t: cargo fuzz for ${secs}s"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs")
  done
else
  echo "[fuzz] no nightly cargo-fuzz here: the harnesses as property tests on stable (tests/fuzz.rs)"
  # About a thousand cases a second for the cheap harnesses; bounded by the timeout below.
  export PROPTEST_CASES="${PROPTEST_CASES:-$((secs * 200))}"
  timeout $((secs * ${#targets[@]} + 120)) cargo test --quiet --test fuzz
fi
