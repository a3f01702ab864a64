#!/usr/bin/env bash
# The whole test suite, against real Postgres and Redis started by services.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# nextest runs each test in a process of its own, which the suite relies on (one test
# installs a global tracing subscriber, others set process-wide state): `cargo test` would run
# them all in one process.
command -v cargo-nextest >/dev/null 2>&1 || {
  echo "[test] installing cargo-nextest from crates.io (a few minutes, once)" >&2
  cargo install --quiet --locked cargo-nextest
}
bash scripts/services.sh up
# The Kubernetes manifests against Kubernetes' schemas (tests/suite/deploy.rs checks them against
# selfheal).
bash scripts/check-deploy.sh
# The release workflow against GitHub's workflow schema and shellcheck (tests/suite/release.rs
# checks what it does).
bash scripts/check-release.sh
# cargo deny (licences, bans, sources; advisories where RustSec's database can be fetched) and
# the SBOM. Exit 3 is "everything passed but advisories were NOT checked": GitHub, where the
# database lives, is out of reach here; the release workflow checks them.
supply=0
bash scripts/supply-chain.sh || supply=$?
if [ "$supply" != 0 ] && [ "$supply" != 3 ]; then
  echo "[test] scripts/supply-chain.sh failed (exit $supply)" >&2
  exit "$supply"
fi
# shellcheck disable=SC1091
source target/services/env
cargo build --quiet --workspace --all-targets
# What the build left on disk: a CI machine once ran out of it while linking the test binaries.
df -h . | tail -1 | awk '{print "[test] disk: " $3 " used, " $4 " free"}'
du -sh target 2>/dev/null | awk '{print "[test] target: " $1}'
# The sandbox images (one per language the tests heal) are built once (debootstrap + docker
# import) and reused by their recipe's hash.
./target/debug/selfheal sandbox image --language rust --language python --language node --language go
cargo nextest run --workspace --no-fail-fast
# The deployment: the production binary checked for the stand-in, the images built from a
# local Debian base, the stack started by docker-compose, the bundled example healed through it.
bash scripts/compose-demo.sh
