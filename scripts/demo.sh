#!/usr/bin/env bash
# The main job on the bundled example, with no keys and no GitHub: starts the real services,
# then `selfheal demo` (web + two workers + the GitHub stand-in, a recorded failing run replayed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
cargo build --quiet --bin selfheal
# The Rust sandbox image is built once (debootstrap + docker import, about a minute), then reused.
./target/debug/selfheal sandbox image --language rust >/dev/null
RUST_LOG=${RUST_LOG:-warn} ./target/debug/selfheal demo
