#!/usr/bin/env bash
# The whole test suite, against real Postgres and Redis started by services.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
# The Kubernetes manifests against Kubernetes' schemas (tests/suite/deploy.rs checks them against
# selfheal).
bash scripts/check-deploy.sh
# shellcheck disable=SC1091
source target/services/env
cargo build --quiet --workspace --all-targets
# What the build left on disk: a CI machine once ran out of it while linking the test binaries.
df -h . | tail -1 | awk '{print "[test] disk: " $3 " used, " $4 " free"}'
du -sh target 2>/dev/null | awk '{print "[test] target: " $1}'
# The sandbox images (one per language the tests heal) are built once (debootstrap + docker
# import) and reused by their recipe's hash.
./target/debug/selfheal sandbox image --language rust --language python --language node --language go
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
# The deployment: the production binary checked for the stand-in, the images built from a
# local Debian base, the stack started by docker-compose, the bundled example healed through it.
bash scripts/compose-demo.sh
