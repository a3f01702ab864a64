#!/usr/bin/env bash
# Builds one language's sandbox image locally (no registry can be reached): debootstrap a
# minimal Debian bookworm with that language's toolchain from Debian's packages, and
# `docker import` it. Rust's toolchain is not baked in: the sandbox mounts the host's
# read-only. The selfheal binary carries this file and runs it (the tag is this file's hash).
# Usage: sandbox-image.sh TAG LANGUAGE   (rust | python | node | go | java)
set -euo pipefail
tag=${1:?usage: sandbox-image.sh TAG LANGUAGE}
lang=${2:?usage: sandbox-image.sh TAG LANGUAGE}
work=$(mktemp -d "${TMPDIR:-/tmp}/selfheal-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
log() { printf '[sandbox-image %s] %s\n' "$lang" "$*" >&2; }

# debootstrap's own resolver is naive (npm's tree of node-* packages fails to configure
# under it): it lays down a minimal system, and apt installs the toolchain inside it.
case "$lang" in
  rust) packages="gcc libc6-dev pkg-config" ;;
  python) packages="python3 python3-pip python3-venv gcc libc6-dev" ;;
  node) packages="nodejs npm" ;;
  go) packages="golang-go gcc libc6-dev" ;;
  java) packages="default-jdk-headless maven" ;;
  *) echo "unknown language $lang (rust, python, node, go, java)" >&2; exit 2 ;;
esac

# Several workers may ask at once on a fresh machine: one builds, the others wait for it
# (one lock for all languages: they share the base system and the package cache).
exec 9>"${TMPDIR:-/tmp}/selfheal-sandbox-image.lock"
flock 9
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi

command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
# Downloaded packages are kept between images (and builds) of the same machine.
cache=${SELFHEAL_DEBOOTSTRAP_CACHE:-/var/cache/selfheal-debootstrap}
mkdir -p "$cache"
# One minimal system serves every language's image: made once, kept as a tarball.
base="$cache/base-bookworm-minbase-v1.tar"
if [ ! -s "$base" ]; then
  log "debootstrap bookworm (minbase)"
  debootstrap --variant=minbase --cache-dir="$cache" --include=ca-certificates,git,patch \
    bookworm "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/base" -cf "$base.partial" . && mv "$base.partial" "$base"
  rm -rf "$work/base"
fi
mkdir "$work/rootfs"
tar -C "$work/rootfs" -xf "$base"

# The host's CA bundle and resolver while packages are installed (the resolver is emptied
# again below: the sandbox has no network).
cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
mount -t proc proc "$work/rootfs/proc"
trap 'umount "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
log "apt-get install $packages"
chroot "$work/rootfs" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends $packages" >"$work/apt.log" 2>&1 ||
  { tail -20 "$work/apt.log" >&2; exit 1; }
chroot "$work/rootfs" apt-get clean
rm -rf "$work/rootfs/var/lib/apt/lists"/*

if [ "$lang" = python ]; then
  # The image's own formatters and test runner, used only where a repository pins none (its
  # pinned versions are fetched into the dependency cache and run instead).
  log "pip install pytest black ruff"
  # The host's CA bundle (copied above) rather than its pip.conf, which may hold index
  # credentials that every sandbox run could then read.
  chroot "$work/rootfs" env PIP_CONFIG_FILE=/dev/null PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    python3 -m pip install --quiet --break-system-packages --no-cache-dir \
    'pytest==8.3.4' 'black==24.10.0' 'ruff==0.8.4' >&2
fi
# The toolchain's own words for its version, kept as a label: the evidence compares it with
# the version the CI's setup step or the repository's pin asks for. Rust's is the host's.
case "$lang" in
  python) version=$(chroot "$work/rootfs" python3 --version 2>&1) ;;
  node) version="node $(chroot "$work/rootfs" node --version 2>&1)" ;;
  go) version=$(chroot "$work/rootfs" go version 2>&1) ;;
  java) version=$(chroot "$work/rootfs" javac -version 2>&1) ;;
  *) version="" ;;
esac
: >"$work/rootfs/etc/resolv.conf"
umount "$work/rootfs/proc"
rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/root/.cache"
mkdir -p "$work/rootfs/work" "$work/rootfs/deps" "$work/rootfs/opt/rust"
# The repository's code runs as this unprivileged user, owner of /work and nothing else;
# /deps is its empty mount point (a fresh dependency volume takes this owner).
echo 'sandbox:x:1000:1000:selfheal sandbox:/tmp:/bin/sh' >>"$work/rootfs/etc/passwd"
echo 'sandbox:x:1000:' >>"$work/rootfs/etc/group"
chown 1000:1000 "$work/rootfs/work" "$work/rootfs/deps"

log "docker import as $tag"
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/opt/rust/bin:/usr/local/bin:/usr/bin:/bin' \
  --change 'WORKDIR /work' --change "LABEL selfheal.toolchain.version=\"$version\"" \
  - "$tag" >/dev/null
log "built $tag"
