#!/usr/bin/env bash
# Validates deploy/kubernetes against Kubernetes' own schemas, offline, for the oldest and a
# recent version selfheal supports (1.29: native sidecars; 1.33). kubernetes-validate (PyPI)
# carries the schemas: kubeconform is Go (no module proxy here) and Debian's kubectl needs a
# cluster for --dry-run. KEDA's kinds have no schema offline: tests/deploy.rs checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }
builtin=()
for f in deploy/kubernetes/*.yaml; do
  case "$f" in */kustomization.yaml | */keda-*.yaml) ;; *) builtin+=("$f") ;; esac
done
# The validator must be able to fail: a field Kubernetes does not know is refused.
broken=$(mktemp --suffix=.yaml)
trap 'rm -f "$broken"' EXIT
sed 's/^  replicas: 2$/  replicas: 2\n  replicaz: 2/' deploy/kubernetes/web.yaml >"$broken"
if validate -k 1.29.0 "$broken" >/dev/null 2>&1; then
  echo "[check-deploy] the validator accepted an unknown field: it checks nothing" >&2
  exit 1
fi
for version in 1.29.0 1.33.0; do
  validate -k "$version" "${builtin[@]}"
done
echo "[check-deploy] ${#builtin[@]} files valid against Kubernetes 1.29 and 1.33 (strict)"
