#!/usr/bin/env bash
# The whole test suite, against real Postgres and Redis started by services.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
# shellcheck disable=SC1091
source target/services/env
cargo build --quiet --workspace --all-targets
# The sandbox images (one per language the tests heal) are built once (debootstrap + docker
# import) and reused by their recipe's hash.
./target/debug/selfheal sandbox image --language rust --language python --language node --language go
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The deployment: the images built from a local Debian base, the stack started by
# docker-compose, the bundled example healed through it.
bash scripts/compose-demo.sh
# The production binary (no `dev` feature) carries no stand-in, demo or replay.
cargo build --quiet --no-default-features --bin selfheal
if ./target/debug/selfheal demo --help >/dev/null 2>&1 || grep -q "_standin/codeload" target/debug/selfheal; then
  echo "the production build still contains the stand-in or the demo" >&2
  exit 1
fi
echo "production build: no stand-in, no demo"
cargo build --quiet --bin selfheal
