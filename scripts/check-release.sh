#!/usr/bin/env bash
# Checks .github/ offline: the workflows and dependabot.yml against the JSON schemas GitHub's
# files are described by (SchemaStore's, carried by check-jsonschema from PyPI: actionlint is
# Go, and no Go module proxy is reachable here), then every `run:` block through shellcheck
# (Debian's), as actionlint would. tests/suite/release.rs checks what the release does.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[check-release] %s\n' "$*" >&2; }
venv=target/release-venv
if [ ! -x "$venv/bin/check-jsonschema" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'check-jsonschema==0.33.0'
fi
if ! command -v shellcheck >/dev/null 2>&1; then
  log "installing shellcheck from Debian"
  apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null
fi
workflows=(.github/workflows/*.yml)
check() { "$venv/bin/check-jsonschema" --builtin-schema "$1" "${@:2}"; }

# The schema must be able to fail: a key a workflow job cannot have is refused.
broken=$(mktemp --suffix=.yml)
trap 'rm -f "$broken"' EXIT
sed 's/^    runs-on: ubuntu-22.04$/    runs-on: ubuntu-22.04\n    runs_on: ubuntu-22.04/' .github/workflows/release.yml >"$broken"
# Refused for that key (exit 1, naming it), not for another reason such as a crash.
status=0
out=$(check vendor.github-workflows "$broken" 2>&1) || status=$?
if cmp -s "$broken" .github/workflows/release.yml || [ "$status" != 1 ] || ! grep -q runs_on <<<"$out"; then
  log "the schema did not refuse a job key GitHub does not know (exit $status): it checks nothing"
  exit 1
fi
check vendor.github-workflows "${workflows[@]}"
check vendor.dependabot .github/dependabot.yml

# Each run block as the runner's bash runs it (`bash -e {0}`), with `${{ ... }}` expressions
# standing as a placeholder word.
scripts=$(mktemp -d)
trap 'rm -f "$broken"; rm -rf "$scripts"' EXIT
"$venv/bin/python" - "$scripts" "${workflows[@]}" <<'PY'
import re, sys
from ruamel.yaml import YAML
out, files = sys.argv[1], sys.argv[2:]
n = 0
for path in files:
    workflow = YAML(typ="safe").load(open(path))
    for job_name, job in workflow["jobs"].items():
        for i, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            body = re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
            name = f"{out}/{path.rsplit('/', 1)[-1]}.{job_name}.{i}.sh"
            with open(name, "w") as f:
                f.write("#!/usr/bin/env bash\nset -e\n" + body)
            n += 1
print(n, file=open(f"{out}/count", "w"))
PY
shopt -s nullglob
blocks=("$scripts"/*.sh)
shellcheck --shell=bash --severity=style "${blocks[@]}"
log "${#workflows[@]} workflow(s) and dependabot.yml valid against their schemas; $(cat "$scripts/count") run block(s) pass shellcheck"
