#!/usr/bin/env bash
# Builds the sandbox base image locally (no registry can be reached): debootstrap a minimal
# Debian bookworm, add what the example toolchains need from Debian's packages and PyPI, and
# `docker import` it. The Rust toolchain is not baked in: the sandbox mounts the host's
# read-only. Usage: sandbox-image.sh TAG   (the caller derives TAG from this file's hash).
set -euo pipefail
tag=${1:?usage: sandbox-image.sh TAG}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/selfheal-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
log() { printf '[sandbox-image] %s\n' "$*" >&2; }

# Several workers may ask at once on a fresh machine: one builds, the others wait for it.
exec 9>"${TMPDIR:-/tmp}/selfheal-sandbox-image.lock"
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi

command -v debootstrap >/dev/null || bash "$root/scripts/services.sh" up
log "debootstrap bookworm (minbase) into $work"
debootstrap --variant=minbase \
  --include=python3,python3-pip,gcc,libc6-dev,git,ca-certificates,patch \
  bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# The host's CA bundle and pip settings, so PyPI is reachable the way it is on the host.
cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$work/rootfs/etc/pip.conf"
cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
log "pip install pytest black ruff"
chroot "$work/rootfs" python3 -m pip install --quiet --break-system-packages --no-cache-dir \
  'pytest==8.3.4' 'black==24.10.0' 'ruff==0.8.4' >&2
: >"$work/rootfs/etc/resolv.conf"
rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/root/.cache"
mkdir -p "$work/rootfs/work" "$work/rootfs/opt/rust"
# The repository's code runs as this unprivileged user, owner of /work and nothing else.
echo 'sandbox:x:1000:1000:selfheal sandbox:/tmp:/bin/sh' >>"$work/rootfs/etc/passwd"
echo 'sandbox:x:1000:' >>"$work/rootfs/etc/group"
chown 1000:1000 "$work/rootfs/work"

log "docker import as $tag"
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/opt/rust/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'WORKDIR /work' - "$tag" >/dev/null
log "built $tag"
