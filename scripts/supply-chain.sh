#!/usr/bin/env bash
# The supply chain's checks (docs/supply-chain.md): cargo deny against deny.toml (licences,
# banned crates, sources; advisories where RustSec's database can be fetched), then a CycloneDX
# SBOM of the production binary in target/sbom/. Installs both tools from crates.io when
# missing (a few minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[supply-chain] %s\n' "$*" >&2; }
# Pinned: the release runs this, and what it installs runs with the release's build.
for tool in cargo-deny@0.20.2 cargo-cyclonedx@0.5.9; do
  if ! command -v "${tool%@*}" >/dev/null 2>&1; then
    log "installing $tool from crates.io"
    cargo install --quiet --locked "$tool"
  fi
done
cargo deny check --hide-inclusion-graph licenses bans sources
# Advisories, and the metrics of what they found (target/supply-chain/advisories.prom).
advisories=0
bash scripts/advisories.sh || advisories=$?
case "$advisories" in
  0) ;;
  3) advisories_unchecked=1 ;;
  *) exit "$advisories" ;;
esac
# The production binary: `--no-default-features` leaves the stand-in and the demo out.
cargo cyclonedx --format json --no-default-features --describe binaries -q
mkdir -p target/sbom
mv selfheal_bin.cdx.json target/sbom/selfheal.cdx.json
components=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]))' target/sbom/selfheal.cdx.json)
log "SBOM: target/sbom/selfheal.cdx.json (CycloneDX, $components components)"
if [ "${advisories_unchecked:-0}" = 1 ]; then
  log "done, advisories excepted"
  exit 3
fi
