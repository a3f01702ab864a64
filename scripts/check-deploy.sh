#!/usr/bin/env bash
# Validates deploy/kubernetes against Kubernetes' own schemas, offline, for the oldest and a
# recent version selfheal supports (1.29: native sidecars; 1.33). kubernetes-validate (PyPI)
# carries the schemas: kubeconform is Go (no module proxy here) and Debian's kubectl needs a
# cluster for --dry-run. KEDA's kinds have no schema offline: tests/suite/deploy.rs checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c 'import jsonpatch' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0' 'jsonpatch==1.33'
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }
builtin=()
for f in deploy/kubernetes/*.yaml deploy/job-sandbox/*.yaml; do
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

# The job-sandbox overlay's patches, applied as kustomize applies JSON 6902 patches, must leave
# valid objects: a worker without the Docker sidecar that runs its sandboxes as Jobs.
patched=$(mktemp -d)
trap 'rm -f "$broken"; rm -rf "$patched"' EXIT
"$venv/bin/python" - "$patched" <<'PY'
import sys, yaml, jsonpatch
out = sys.argv[1]
overlay = yaml.safe_load(open("deploy/job-sandbox/kustomization.yaml"))
assert "../kubernetes" in overlay["resources"], overlay["resources"]
objects = {}
for f in ["worker.yaml", "config.yaml"]:
    for doc in yaml.safe_load_all(open(f"deploy/kubernetes/{f}")):
        objects[(doc["kind"], doc["metadata"]["name"])] = doc
for p in overlay["patches"]:
    key = (p["target"]["kind"], p["target"]["name"])
    objects[key] = jsonpatch.apply_patch(objects[key], yaml.safe_load(p["patch"]))
worker = objects[("Deployment", "selfheal-worker")]["spec"]["template"]["spec"]
assert "initContainers" not in worker, "the Docker sidecar is still there"
assert not any(v.get("name", "").startswith("dind") for v in worker["volumes"])
env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
assert env["SELFHEAL_SANDBOX_BACKEND"] == "kubernetes", env
assert worker["serviceAccountName"] == "selfheal-worker"
assert "DOCKER_HOST" not in objects[("ConfigMap", "selfheal")]["data"]
# The worker makes its Jobs where its Role lets it.
rbac = list(yaml.safe_load_all(open("deploy/job-sandbox/rbac.yaml")))
role = next(d for d in rbac if d["kind"] == "Role")
binding = next(d for d in rbac if d["kind"] == "RoleBinding")
assert env["SELFHEAL_SANDBOX_NAMESPACE"] == role["metadata"]["namespace"] == binding["metadata"]["namespace"], env
assert binding["subjects"][0]["name"] == worker["serviceAccountName"]
for (kind, name), doc in objects.items():
    yaml.safe_dump(doc, open(f"{out}/{kind}-{name}.yaml", "w"))
PY
for version in 1.29.0 1.33.0; do
  validate -k "$version" "$patched"/*.yaml
done
echo "[check-deploy] deploy/job-sandbox's patched worker and config valid (strict)"
