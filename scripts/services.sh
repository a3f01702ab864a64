#!/usr/bin/env bash
# Installs (from Debian's packages) and starts the real services selfheal needs on this machine:
# PostgreSQL, Redis and dockerd, on loopback, with throwaway data under target/services.
# Idempotent: `up` twice leaves one of each running. Must run as root on a fresh Debian machine.
set -euo pipefail

cmd=${1:-up}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${SELFHEAL_SERVICES_DIR:-$root/target/services}
pg_port=${SELFHEAL_PG_PORT:-54329}
redis_port=${SELFHEAL_REDIS_PORT:-63799}
mkdir -p "$dir"

log() { printf '[services] %s\n' "$*" >&2; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

install_missing() {
  local pkgs=()
  pg_bin >/dev/null || pkgs+=(postgresql)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v dockerd >/dev/null || pkgs+=(docker.io)
  command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  # A registry on loopback, for the test of a sandbox image the engine lacks (pulled).
  command -v docker-registry >/dev/null || pkgs+=(docker-registry)
  # promtool, which checks and unit-tests the alert rules (tests/suite/observability.rs).
  command -v promtool >/dev/null || pkgs+=(prometheus)
  # Headless Chromium and its WebDriver, which drive the dashboard's browser test.
  command -v chromium >/dev/null || pkgs+=(chromium)
  command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

postgres_up() {
  local bin data="$dir/pg"
  bin=$(pg_bin)
  id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    mkdir -p "$data"
    chown postgres "$data"
    su postgres -s /bin/sh -c "$bin/initdb -D '$data' -U postgres --auth=trust -E UTF8 >/dev/null"
  fi
  if su postgres -s /bin/sh -c "$bin/pg_ctl -D '$data' status" >/dev/null 2>&1 ||
     "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
    return 0
  fi
  log "starting postgres on 127.0.0.1:$pg_port"
  # Many tests each create their own database at once: leave room for their pools.
  su postgres -s /bin/sh -c "$bin/pg_ctl -D '$data' -l '$data/log' -w -o \"-p $pg_port -k '$data' -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off -c shared_buffers=128MB\" start" >/dev/null
}

redis_up() {
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then return 0; fi
  log "starting redis on 127.0.0.1:$redis_port"
  mkdir -p "$dir/redis"
  redis-server --port "$redis_port" --bind 127.0.0.1 --daemonize yes --dir "$dir/redis" \
    --save '' --appendonly no --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "redis did not come up"; return 1
}

docker_up() {
  if docker info >/dev/null 2>&1; then return 0; fi
  log "starting dockerd"
  # A dockerd that was stopped without cleaning up leaves its pid file; with no dockerd
  # running it is stale, and would stop the new one from starting.
  if [ -f /var/run/docker.pid ] && ! pgrep -x dockerd >/dev/null; then
    rm -f /var/run/docker.pid
  fi
  mkdir -p "$dir/docker"
  nohup dockerd --data-root "$dir/docker" >"$dir/dockerd.log" 2>&1 &
  echo $! >"$dir/dockerd.pid"
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && return 0; sleep 0.2; done
  # The foundation does not need Docker; the sandbox does and reports its own error.
  log "WARNING: dockerd did not come up (see $dir/dockerd.log)"
}

write_env() {
  cat >"$dir/env" <<ENV
export SELFHEAL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
export SELFHEAL_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
export SELFHEAL_REDIS_SERVER=$(command -v redis-server)
ENV
}

case "$cmd" in
  up)
    install_missing
    postgres_up
    redis_up
    docker_up
    write_env
    log "up: postgres :$pg_port, redis :$redis_port (env in $dir/env)"
    ;;
  down)
    if bin=$(pg_bin) && [ -f "$dir/pg/PG_VERSION" ]; then
      su postgres -s /bin/sh -c "$bin/pg_ctl -D '$dir/pg' -m fast stop" >/dev/null 2>&1 || true
    fi
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    if [ -f "$dir/dockerd.pid" ]; then
      pid=$(cat "$dir/dockerd.pid")
      kill "$pid" 2>/dev/null || true
      # Wait for it to exit (it removes its own pid file and socket), at most 20 s.
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      rm -f "$dir/dockerd.pid"
    fi
    log "down"
    ;;
  env)
    write_env; cat "$dir/env" ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
