#!/usr/bin/env bash
# The deployment check: builds selfheal's images from a Debian base made here (no registry),
# starts compose.yaml + compose.demo.yaml with Debian's docker-compose (Postgres, Redis, web,
# two workers on the host's Docker engine, the GitHub stand-in), replays the recorded failing
# run and waits until the bundled example is healed through that stack: diagnosed, patched and
# validated in a sandbox the containerised worker started, delivered as a pull request.
# Exits non-zero, with the services' logs in target/compose-demo.log, if it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[compose-demo] %s\n' "$*" >&2; }

command -v docker-compose >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
[ -x target/debug/selfheal ] || cargo build --quiet --bin selfheal
# The image takes the binary without its debug sections (a tenth of the size).
mkdir -p target/compose-bin
objcopy --strip-debug target/debug/selfheal target/compose-bin/selfheal

# The Rust sandbox image, and with it the minimal Debian system the recipe keeps: the base
# of selfheal's own images.
./target/debug/selfheal sandbox image --language rust >/dev/null
base=${SELFHEAL_DEBOOTSTRAP_CACHE:-/var/cache/selfheal-debootstrap}/base-bookworm-minbase-v1.tar
docker image inspect selfheal-debian:bookworm >/dev/null 2>&1 ||
  docker import "$base" selfheal-debian:bookworm >/dev/null

export SELFHEAL_BINARY=target/compose-bin/selfheal SELFHEAL_TAG=check
GITHUB_WEBHOOK_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export GITHUB_WEBHOOK_SECRET GITHUB_APP_ID=1 GITHUB_API_URL=http://standin:8080
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
trap finish EXIT

log "building the images (base selfheal-debian:bookworm)"
dc build -q >&2
log "starting postgres, redis, web, 2 workers, the stand-in"
dc up -d >&2
web=http://localhost:$SELFHEAL_WEB_PORT
standin=http://localhost:$SELFHEAL_STANDIN_PORT
for _ in $(seq 120); do
  curl -fsS "$web/readyz" >/dev/null 2>&1 && curl -fsS "$standin/_standin/head" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "$web/readyz" >/dev/null || { log "web never became ready"; exit 1; }
[ "$(dc ps -q worker | wc -l)" -eq 2 ] || { log "expected 2 worker replicas"; dc ps >&2; exit 1; }

log "replaying the recorded failing run"
./target/debug/selfheal replay --url "$web/webhooks/github" --standin "$standin" --run-id 4101 >&2
sql() { dc exec -T postgres psql -h /tmp -U postgres -tA -c "$1"; }
status=
for _ in $(seq 300); do
  status=$(sql "SELECT status FROM runs ORDER BY created_at DESC LIMIT 1" 2>/dev/null || true)
  case $status in succeeded | failed | incomplete) break ;; esac
  sleep 1
done
log "run: ${status:-none}"
sql "SELECT stage || ' ' || outcome || ' ' || coalesce(detail, '') FROM stage_attempts ORDER BY id" >&2 || true
[ "$status" = succeeded ] || exit 1
verdict=$(sql "SELECT verdict FROM validations")
pr=$(sql "SELECT pr_number FROM deliveries WHERE kind = 'pull_request'")
workers=$(sql "SELECT count(DISTINCT worker_id) FROM stage_attempts")
log "validation: $verdict; pull request #$pr; stages run by $workers worker(s)"
[ "$verdict" = fixed ] && [ -n "$pr" ]
log "healed through compose"
