#!/usr/bin/env bash
# The deployment check: builds selfheal's images from a Debian base made here (no registry),
# starts compose.yaml + compose.demo.yaml with Debian's docker-compose (Postgres, Redis, web
# and two workers running the production binary on the host's Docker engine, the GitHub
# stand-in), replays the recorded failing run and requires the bundled example healed by the
# containerised workers: diagnosed, patched and validated in sandboxes they started,
# delivered as a pull request. Exits non-zero with the cause; the services' logs are then in
# target/compose-demo.log.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[compose-demo] %s\n' "$*" >&2; }
fail() { log "FAILED: $*; the services' logs: target/compose-demo.log"; exit 1; }

missing=()
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v curl >/dev/null || missing+=(curl)
command -v objcopy >/dev/null || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Two binaries: the production build (no `dev` feature) for web and workers, and the `dev`
# build for the stand-in and the replay. Debug sections stripped: a tenth of the size.
mkdir -p target/compose-bin
cargo build --quiet --no-default-features --bin selfheal
objcopy --strip-debug target/debug/selfheal target/compose-bin/selfheal
# The production binary carries no stand-in, demo or replay.
if target/compose-bin/selfheal demo --help >/dev/null 2>&1 ||
  grep -q "_standin/codeload" target/compose-bin/selfheal ||
  [ -n "$(cargo tree -q -p selfheal -e normal --no-default-features -i github-standin 2>/dev/null)" ]; then
  fail "the production build still contains the stand-in or the demo"
fi
log "production build: no stand-in, no demo"
cargo build --quiet --bin selfheal
objcopy --strip-debug target/debug/selfheal target/compose-bin/selfheal-dev

# The Rust sandbox image, and with it the minimal Debian system the recipe keeps: the base
# of selfheal's own images.
./target/debug/selfheal sandbox image --language rust >/dev/null
base=${SELFHEAL_DEBOOTSTRAP_CACHE:-/var/cache/selfheal-debootstrap}/base-bookworm-minbase-v1.tar
if ! docker image inspect selfheal-debian:bookworm >/dev/null 2>&1; then
  [ -s "$base" ] || fail "no $base (the sandbox recipe makes it when it builds an image: remove selfheal-sandbox-rust:* to rebuild)"
  docker import "$base" selfheal-debian:bookworm >/dev/null
fi

export SELFHEAL_BINARY=target/compose-bin/selfheal SELFHEAL_TAG=check SELFHEAL_WEB_BIND=127.0.0.1
GITHUB_WEBHOOK_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
POSTGRES_PASSWORD=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export GITHUB_WEBHOOK_SECRET POSTGRES_PASSWORD GITHUB_APP_ID=1 GITHUB_API_URL=http://standin:8080
export GITHUB_APP_PRIVATE_KEY_FILE=$PWD/standin/demo-app-key.pem
SELFHEAL_SANDBOX_RUST_TOOLCHAIN=$(rustc --print sysroot)
export SELFHEAL_SANDBOX_RUST_TOOLCHAIN
export SELFHEAL_WEB_PORT=${SELFHEAL_WEB_PORT:-38030} SELFHEAL_STANDIN_PORT=${SELFHEAL_STANDIN_PORT:-38031}
project=selfheal-compose-check
dc() { docker-compose --ansi never -p "$project" -f compose.yaml -f compose.demo.yaml "$@"; }
finish() {
  dc logs --no-color >target/compose-demo.log 2>&1 || true
  dc down -v --remove-orphans >/dev/null 2>&1 || true
}
# Nothing from an earlier check (its database above all) may answer for this one.
dc down -v --remove-orphans >/dev/null 2>&1 || true
trap finish EXIT

# The observability overlay merges with this file, and refuses to start Grafana without its own
# database role (never the superuser by default). Its images come from a registry, which this
# check cannot reach: it is validated, not run.
GRAFANA_ADMIN_PASSWORD=x GRAFANA_DB_USER=grafana GRAFANA_DB_PASSWORD=x \
  docker-compose -f compose.yaml -f compose.observability.yaml config -q ||
  fail "compose.observability.yaml does not merge with compose.yaml"
if docker-compose -f compose.yaml -f compose.observability.yaml config -q 2>/dev/null; then
  fail "compose.observability.yaml starts Grafana without GRAFANA_DB_USER"
fi

log "building the images (base selfheal-debian:bookworm)"
dc build -q >target/compose-build.log 2>&1 || { tail -30 target/compose-build.log >&2; fail "docker-compose build"; }
log "starting postgres, redis, web, 2 workers, the stand-in"
dc up -d >&2 || fail "docker-compose up"
web=http://localhost:$SELFHEAL_WEB_PORT
standin=http://localhost:$SELFHEAL_STANDIN_PORT
for _ in $(seq 120); do
  curl -fsS "$web/readyz" >/dev/null 2>&1 && curl -fsS "$standin/_standin/head" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "$web/readyz" >/dev/null || fail "web never became ready"
workers=()
for id in $(dc ps -q worker); do
  [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] && workers+=("${id:0:12}")
done
[ ${#workers[@]} -eq 2 ] || fail "expected 2 running worker replicas, found ${#workers[@]}"

log "replaying the recorded failing run"
reply=$(./target/debug/selfheal replay --url "$web/webhooks/github" --standin "$standin" --run-id 4101) ||
  fail "the webhook was refused: $reply"
delivery=$(printf '%s' "$reply" | grep -o '"delivery":"[0-9a-f-]*"' | cut -d'"' -f4)
[ -n "$delivery" ] || fail "no delivery accepted in the answer: $reply"
sql() { dc exec -T postgres psql -h /tmp -U postgres -tA -c "$1"; }
# A worker admits the delivery: its run is named once it is.
run=
for _ in $(seq 60); do
  run=$(sql "SELECT run_id FROM webhook_deliveries WHERE delivery_id = '$delivery' AND outcome <> 'accepted'" 2>/dev/null || true)
  [ -n "$run" ] && break
  sleep 1
done
[ -n "$run" ] || fail "no worker admitted delivery $delivery: $(sql "SELECT outcome || ' ' || coalesce(reason, '') FROM webhook_deliveries WHERE delivery_id = '$delivery'" 2>&1)"
log "run $run"
status=
for _ in $(seq 300); do
  status=$(sql "SELECT status FROM runs WHERE id = '$run'" 2>/dev/null || true)
  case $status in succeeded | failed | incomplete) break ;; esac
  sleep 1
done
sql "SELECT stage || ' ' || outcome || ' ' || coalesce(detail, '') FROM stage_attempts WHERE run_id = '$run' ORDER BY id" >&2 || true
[ "$status" = succeeded ] || fail "run $run ended ${status:-nowhere}"
# Every stage was run by one of this stack's worker containers (their host names are the
# containers' ids; a worker's id starts with its host name).
while read -r worker; do
  printf '%s\n' "${workers[@]}" | grep -qx "${worker%%-*}" || fail "stage run by $worker, not by this stack's workers (${workers[*]})"
done < <(sql "SELECT DISTINCT worker_id FROM stage_attempts WHERE run_id = '$run'")
verdict=$(sql "SELECT verdict FROM validations WHERE run_id = '$run'")
pr=$(sql "SELECT pr_number FROM deliveries WHERE run_id = '$run' AND kind = 'pull_request'")
[ "$verdict" = fixed ] || fail "validation: ${verdict:-none}"
[ -n "$pr" ] || fail "no pull request"
log "validation: $verdict; pull request #$pr; stages run by the stack's workers"
# What Prometheus would scrape: web's fleet figures (from Postgres) count the run, and the
# workers' own figures count the stages they ran (each replica on its metrics port).
public=$(curl -sS -o /dev/null -w '%{http_code}' "$web/metrics" || true)
[ "$public" = 404 ] ||
  fail "/metrics answers $public on web's public port though SELFHEAL_METRICS_BIND is set"
# Read whole before matching: `grep -q` stopping early would fail the pipe (pipefail).
page=$(dc exec -T web curl -fsS http://127.0.0.1:9464/metrics) ||
  fail "web's metrics port does not answer"
grep -qx 'selfheal_runs_finished_total{status="succeeded"} 1.0' <<<"$page" ||
  fail "web's /metrics does not count the finished run: $(grep -E 'runs_finished|fleet_metrics_up' <<<"$page" | tr '\n' ' ')"
delivered=0
for id in "${workers[@]}"; do
  n=$(docker exec "$id" curl -fsS http://127.0.0.1:9464/metrics |
    sed -n 's/^selfheal_stage_duration_seconds_count{stage="deliver",outcome="succeeded"} //p')
  delivered=$((delivered + ${n:-0}))
done
[ "$delivered" -eq 1 ] || fail "the workers' /metrics count $delivered deliver stages, not 1"
log "metrics: web counts the run, the workers count its stages"
log "healed through compose"
