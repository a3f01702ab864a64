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
# What the advisories check found, as Prometheus metrics in the text format for
# node_exporter's textfile collector (docs/supply-chain.md): cargo deny's JSON summary line,
# `{"type":"summary","fields":{"advisories":{"errors":N,"warnings":N,...}}}`, or "not checked".
mkdir -p target/supply-chain
metrics() {
  python3 - "$@" <<'PY' > target/supply-chain/advisories.prom.tmp
import json, sys, time
counts, checked = {}, 0
if len(sys.argv) > 1:
    for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("type") == "summary":
            counts, checked = doc["fields"]["advisories"], 1
    if not checked:
        sys.exit("cargo deny printed no summary of the advisories")
print("# HELP selfheal_supply_chain_advisories Advisories cargo deny reported against the dependencies at its last check, by severity")
print("# TYPE selfheal_supply_chain_advisories gauge")
for severity in ("error", "warning", "note", "help"):
    print(f'selfheal_supply_chain_advisories{{severity="{severity}"}} {int(counts.get(severity + "s", 0))}')
print("# HELP selfheal_supply_chain_advisories_checked 1 when RustSec's database was read, 0 when it could not be fetched")
print("# TYPE selfheal_supply_chain_advisories_checked gauge")
print(f"selfheal_supply_chain_advisories_checked {checked}")
print("# HELP selfheal_supply_chain_checked_at_seconds When the check ran (Unix time)")
print("# TYPE selfheal_supply_chain_checked_at_seconds gauge")
print(f"selfheal_supply_chain_checked_at_seconds {int(time.time())}")
PY
  mv target/supply-chain/advisories.prom.tmp target/supply-chain/advisories.prom
}
# The advisories live in a git repository on GitHub: where it cannot be fetched, say so
# rather than pass.
if cargo deny fetch >/dev/null 2>&1; then
  advisories_failed=0
  cargo deny check --hide-inclusion-graph advisories || advisories_failed=1
  cargo deny --format json check advisories 2> target/supply-chain/advisories.json || true
  metrics target/supply-chain/advisories.json
  [ "$advisories_failed" = 0 ] || { log "advisories found: target/supply-chain/advisories.prom"; exit 1; }
else
  log "advisories NOT checked: RustSec's database (https://github.com/RustSec/advisory-db) cannot be fetched from here"
  metrics
  advisories_unchecked=1
fi
log "metrics: target/supply-chain/advisories.prom"
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
