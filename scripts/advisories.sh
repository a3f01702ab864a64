#!/usr/bin/env bash
# cargo deny's advisories check against deny.toml (or the config given), and what it found as
# Prometheus metrics in the text format, for node_exporter's textfile collector
# (docs/supply-chain.md), in $SELFHEAL_ADVISORIES_PROM (target/supply-chain/advisories.prom).
# Exit 0: none found; 1: advisories found (or the check failed); 3: RustSec's database could
# not be fetched, so nothing was checked (the metrics say so: checked 0).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[advisories] %s\n' "$*" >&2; }
config=${1:-deny.toml}
out=${SELFHEAL_ADVISORIES_PROM:-target/supply-chain/advisories.prom}
mkdir -p "$(dirname "$out")"
# cargo deny's JSON summary line, `{"type":"summary","fields":{"advisories":{"errors":N,...}}}`,
# or nothing read: "not checked".
metrics() {
  python3 - "$@" <<'PY' > "$out.tmp"
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
  mv "$out.tmp" "$out"
}
# The database lives in a git repository (RustSec's on GitHub): where it cannot be fetched,
# say so rather than pass.
if ! cargo deny --config "$config" fetch db >/dev/null 2>&1; then
  log "advisories NOT checked: the advisory database (https://github.com/RustSec/advisory-db) cannot be fetched from here"
  metrics
  exit 3
fi
found=0
cargo deny --config "$config" check --hide-inclusion-graph advisories || found=1
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo deny --config "$config" --format json check advisories 2> "$json" || true
metrics "$json"
log "metrics: $out"
exit "$found"
