#!/usr/bin/env bash
# Gives an example the git history its breakage needs: for rust-culprit, a green commit
# followed by the culprit commit (examples/rust-culprit.culprit.patch), so that selfheal can
# find and revert it. Usage: make-history.sh EXAMPLE DIR  (DIR receives a copy with .git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
example=${1:?example}; dir=${2:?dir}
mkdir -p "$dir"; cp -R "$here/$example/." "$dir/"
cd "$dir"
git init -q .
git config user.email dev@example.com; git config user.name "A Developer"
patch="$here/$example.culprit.patch"
if [ -f "$patch" ]; then
  git apply -R "$patch"
  git add -A; git commit -qm "Initial temperature conversions"
  git apply "$patch"
  git add -A; git commit -qm "Tidy up the conversion constant"
else
  git add -A; git commit -qm "Import $example"
fi
