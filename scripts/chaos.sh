#!/usr/bin/env bash
# The long chaos run (tests/suite/chaos.rs with more of everything): 40 branches (one every 4 s), 60
# worker kills (one every 3 s or so, among 3 workers), a Redis restart, Postgres down 30 s. Prints its counts; docs/reliability.md explains them.
# Any variable may be set beforehand (SELFHEAL_CHAOS_SEED replays a run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh up
# shellcheck disable=SC1091
source target/services/env
export SELFHEAL_CHAOS_BRANCHES=${SELFHEAL_CHAOS_BRANCHES:-40}
export SELFHEAL_CHAOS_KILLS=${SELFHEAL_CHAOS_KILLS:-60}
export SELFHEAL_CHAOS_KILL_EVERY_MS=${SELFHEAL_CHAOS_KILL_EVERY_MS:-3000}
export SELFHEAL_CHAOS_BRANCH_EVERY_MS=${SELFHEAL_CHAOS_BRANCH_EVERY_MS:-4000}
export SELFHEAL_CHAOS_PG_DOWN_SECS=${SELFHEAL_CHAOS_PG_DOWN_SECS:-30}
export SELFHEAL_CHAOS_DEADLINE_SECS=${SELFHEAL_CHAOS_DEADLINE_SECS:-900}
cargo test --quiet --test suite -- chaos:: --nocapture
